//! DKIM at the relay: the signing keys of `dkim_signing_keys`, read while the relay is still
//! root (and kept for reloads as `mail_owner`, as the TLS key is), the signing of what listed
//! clients submit, and `certrelayd dkim keygen`.
//!
//! Which messages: those of a client whose certificate is listed in `relay_clientcerts`
//! (the clients `permit_tls_clientcerts` lets relay), whose one `From:` address is at a
//! domain of the map, compared exactly (a key for `example.org` does not sign mail from
//! `sub.example.org`: give that domain a line of its own). Mail the relay takes from
//! anyone else (mynetworks, other relays, mail for its alias domains) is never signed.
//!
//! Certificates bound to senders: when the listener the message came in on has
//! `smtpd_sender_ccert_maps`, the `From:` address must also be owned by the certificate's
//! label, by the rule `reject_sender_ccert_mismatch` applies to the envelope sender;
//! otherwise a stolen certificate could send with its own envelope sender and have a
//! `From:` of anyone at a signed domain signed. Such a message is delivered unsigned, with
//! a log line, not refused: the envelope check is where mail is refused, and a From: that
//! is not the sender's own is ordinary (a list, a secretary). The maps are the session's
//! own (the listener's settings of the generation it was accepted under), the same ones its
//! envelope was judged by. Without the maps, any `From:` at a domain with a key is signed
//! for a listed client.
//!
//! When: as the message is received, before the `250`; the field is kept in the envelope
//! record and written before the content at each delivery, so it is made once, and the
//! content file stays what the client sent. A message that cannot be signed (no key for its
//! domain, no single `From:` address, a signing failure) is accepted and delivered unsigned,
//! with a log line, as Postfix with OpenDKIM does by default: signing never loses mail.
//!
//! Not here: canonicalization and the signature field (the core's `dkim`), storing (the
//! shell's store, which calls [`Signer`] through its `Signer` hook).

use certrelay_core::cert;
use certrelay_core::config::{Config, Diagnostic, Location};
use certrelay_core::dkim::{self, Algorithm, KeyLine, MessageHasher, Tags};
use certrelay_core::message::HeaderSection;
use certrelay_core::server::Envelope as Arrival;
use certrelay_core::settings::ServerSettings;
use certrelay_shell::conf;
use certrelay_shell::smtpd::store::{Signer as StoreSigner, Signing};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use rustls::pki_types::PrivateKeyDer;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// The parameter naming the keys map.
pub const PARAMETER: &str = "dkim_signing_keys";

/// A private key, ready to sign.
enum PrivateKey {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PrivateKey::Rsa(_) => "Rsa(..)",
            PrivateKey::Ed25519(_) => "Ed25519(..)",
        })
    }
}

impl PrivateKey {
    fn algorithm(&self) -> Algorithm {
        match self {
            PrivateKey::Rsa(_) => Algorithm::RsaSha256,
            PrivateKey::Ed25519(_) => Algorithm::Ed25519Sha256,
        }
    }

    /// The public key as the DNS record's `p=` gives it for Ed25519; for RSA the PKCS#1
    /// RSAPublicKey (the record holds it wrapped in a SubjectPublicKeyInfo).
    #[cfg(test)]
    fn public_key(&self) -> &[u8] {
        match self {
            PrivateKey::Rsa(k) => k.public().as_ref(),
            PrivateKey::Ed25519(k) => k.public_key().as_ref(),
        }
    }

    fn sign(&self, unsigned: &dkim::Unsigned) -> Result<Vec<u8>, ring::error::Unspecified> {
        match self {
            PrivateKey::Rsa(k) => {
                let mut out = vec![0; k.public().modulus_len()];
                k.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    unsigned.data(),
                    &mut out,
                )?;
                Ok(out)
            }
            PrivateKey::Ed25519(k) => Ok(k.sign(&unsigned.digest()).as_ref().to_vec()),
        }
    }
}

/// Reads a PEM (or DER) private key: PKCS#8 RSA (2048 to 8192 bits) or Ed25519, or a
/// PKCS#1 RSA key.
fn parse_key(bytes: &[u8]) -> Result<PrivateKey, String> {
    let der = cert::parse_private_key(bytes).map_err(|e| e.to_string())?;
    let unusable = |e: ring::error::KeyRejected| format!("unusable key: {e}");
    match der {
        PrivateKeyDer::Pkcs8(p) => {
            let der = p.secret_pkcs8_der();
            match RsaKeyPair::from_pkcs8(der) {
                Ok(k) => Ok(PrivateKey::Rsa(k)),
                Err(rsa) => Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map(PrivateKey::Ed25519)
                    .map_err(|ed| {
                        format!(
                            "neither an RSA key of 2048 to 8192 bits ({rsa}) nor an Ed25519 \
                             key ({ed})"
                        )
                    }),
            }
        }
        PrivateKeyDer::Pkcs1(p) => RsaKeyPair::from_der(p.secret_pkcs1_der())
            .map(PrivateKey::Rsa)
            .map_err(unusable),
        _ => Err("an EC key: DKIM signs with RSA or Ed25519 keys".to_owned()),
    }
}

/// One domain's key.
#[derive(Debug)]
struct DomainKey {
    line: KeyLine,
    key: PrivateKey,
}

/// The keys in effect, by `From:` domain (lower case).
#[derive(Debug, Default)]
pub struct Keys {
    by_domain: HashMap<String, DomainKey>,
}

/// Reads `dkim_signing_keys` and every key file it names. Each line that cannot be used is
/// an error at its file:line (a relay that would sign with some keys and not others should
/// not start unnoticed).
pub fn load(config: &Config) -> (Keys, Vec<Diagnostic>) {
    let (tables, mut diags) = conf::read_tables(config, PARAMETER);
    let mut keys = Keys::default();
    for table in &tables {
        for entry in table.entries() {
            let at = Location::new(table.file(), entry.line);
            let line = match KeyLine::parse(&entry.key, &entry.value) {
                Ok(l) => l,
                Err(e) => {
                    diags.push(Diagnostic::error(&at, e.to_string()));
                    continue;
                }
            };
            let key = conf::read_secret_file(&line.key_file)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::PermissionDenied => format!(
                        "{}: cannot read: {e} (a relay started as root reads new keys at a \
                         restart: restart it)",
                        line.key_file
                    ),
                    _ => format!("{}: cannot read: {e}", line.key_file),
                })
                .and_then(|bytes| parse_key(&bytes).map_err(|e| format!("{}: {e}", line.key_file)));
            match key {
                Ok(key) => {
                    if keys.by_domain.contains_key(&line.domain) {
                        diags.push(Diagnostic::warning(
                            &at,
                            format!(
                                "a second key for {}: the first one listed is used",
                                line.domain
                            ),
                        ));
                        continue;
                    }
                    keys.by_domain
                        .insert(line.domain.clone(), DomainKey { line, key });
                }
                Err(msg) => diags.push(Diagnostic::error(&at, msg)),
            }
        }
    }
    (keys, diags)
}

/// The relay's signer: the keys of the configuration in effect, swapped at each reload.
#[derive(Debug)]
pub struct Signer {
    keys: RwLock<Arc<Keys>>,
}

impl Signer {
    /// A signer with `keys`.
    pub fn new(keys: Arc<Keys>) -> Signer {
        Signer {
            keys: RwLock::new(keys),
        }
    }

    /// Messages that begin from now on are signed with `keys`.
    pub fn replace(&self, keys: Arc<Keys>) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
    }
}

/// The label of the client's certificate when it is listed in `relay_clientcerts`.
fn listed_label(arrival: &Arrival) -> Option<&str> {
    let cert = &arrival.tls.as_ref()?.client_cert;
    let listed = cert.listed.as_ref().filter(|_| cert.verdict.is_present())?;
    Some(&listed.label)
}

impl StoreSigner for Signer {
    fn begin(&self, arrival: &Arrival, settings: &Arc<ServerSettings>) -> Option<Box<dyn Signing>> {
        let label = listed_label(arrival)?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        if keys.by_domain.is_empty() {
            return None;
        }
        let bound = (!settings.sender_ccert_maps.is_empty()).then(|| Bound {
            settings: settings.clone(),
            label: label.to_owned(),
        });
        Some(Box::new(MessageSigning {
            keys,
            bound,
            hasher: Some(MessageHasher::new()),
            checked_domain: false,
            skipped: None,
        }))
    }
}

/// A certificate bound to senders: the session's `smtpd_sender_ccert_maps` (in its
/// settings) and the certificate's label.
#[derive(Debug)]
struct Bound {
    settings: Arc<ServerSettings>,
    label: String,
}

/// One message being signed.
#[derive(Debug)]
struct MessageSigning {
    keys: Arc<Keys>,
    /// Set when the `From:` address must be owned by the certificate's label.
    bound: Option<Bound>,
    /// `None` once the message is known not to be signed.
    hasher: Option<MessageHasher>,
    /// The `From:` domain was looked up once the header ended.
    checked_domain: bool,
    /// Why it is not signed, said at the end.
    skipped: Option<String>,
}

/// Why a message with `header` is not signed, when that is known from the header: no key
/// for its `From:` domain, or (for a certificate `bound` to senders) a `From:` its label
/// does not own. A `From:` that cannot be signed at all is said by the hasher at the end.
fn refusal(keys: &Keys, bound: Option<&Bound>, header: &HeaderSection) -> Option<String> {
    let domain = dkim::from_domain(header).ok()?;
    if !keys.by_domain.contains_key(&domain) {
        return Some(format!("no key for the From: domain {domain}"));
    }
    let bound = bound?;
    dkim::check_from_owner(header, &bound.settings.sender_ccert_maps, &bound.label)
        .err()
        .map(|e| e.to_string())
}

impl Signing for MessageSigning {
    fn update(&mut self, content: &[u8]) {
        let Some(hasher) = self.hasher.as_mut() else {
            return;
        };
        hasher.update(content);
        if self.checked_domain {
            return;
        }
        let Some(header) = hasher.header() else {
            return;
        };
        self.checked_domain = true;
        // Not to be signed: stop hashing now rather than at the end.
        if let Some(why) = refusal(&self.keys, self.bound.as_ref(), header) {
            self.skipped = Some(why);
            self.hasher = None;
        }
    }

    fn finish(self: Box<Self>, queue_id: &str) -> Option<String> {
        let Some(hasher) = self.hasher else {
            log::info!(
                "{queue_id}: not DKIM-signed: {}",
                self.skipped.as_deref().unwrap_or("")
            );
            return None;
        };
        let hashed = match hasher.finish() {
            Ok(h) => h,
            Err(e) => {
                log::info!("{queue_id}: not DKIM-signed: {e}");
                return None;
            }
        };
        // Again on the whole header: a message may end inside its header.
        if let Some(why) = refusal(&self.keys, self.bound.as_ref(), hashed.header()) {
            log::info!("{queue_id}: not DKIM-signed: {why}");
            return None;
        }
        let Some(key) = self.keys.by_domain.get(hashed.from_domain()) else {
            log::info!(
                "{queue_id}: not DKIM-signed: no key for the From: domain {}",
                hashed.from_domain()
            );
            return None;
        };
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let tags = Tags {
            algorithm: key.key.algorithm(),
            domain: &key.line.domain,
            selector: &key.line.selector,
            timestamp,
        };
        let unsigned = hashed.prepare(&tags);
        match key.key.sign(&unsigned) {
            Ok(signature) => {
                log::info!(
                    "{queue_id}: DKIM-Signature added: d={} s={} a={}",
                    tags.domain,
                    tags.selector,
                    tags.algorithm.tag()
                );
                Some(unsigned.complete(&signature))
            }
            Err(_) => {
                log::warn!(
                    "{queue_id}: not DKIM-signed: signing with {} failed; the message goes \
                     unsigned",
                    key.line.key_file
                );
                None
            }
        }
    }
}

/// What `dkim keygen` made.
#[derive(Debug)]
pub struct NewKey {
    /// The key file, PKCS#8 PEM.
    pub pem: String,
    /// The DNS record to publish.
    pub record: String,
}

/// Makes a key for `selector._domainkey.domain`: RSA-2048, or Ed25519.
pub fn generate(domain: &str, selector: &str, ed25519: bool) -> Result<NewKey, String> {
    let (pem, algorithm, public) = if ed25519 {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| "cannot generate an Ed25519 key".to_owned())?;
        let pem = certrelay_shell::pki::pem_text("PRIVATE KEY", pkcs8.as_ref());
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|e| format!("the new key does not load: {e}"))?;
        (
            pem,
            Algorithm::Ed25519Sha256,
            pair.public_key().as_ref().to_vec(),
        )
    } else {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let mut rng = getrandom::SysRng;
        let key = rsa::PrivateKey::new(&mut rng, 2048)
            .map_err(|e| format!("cannot generate an RSA key: {e}"))?;
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| format!("cannot encode the RSA key: {e}"))?
            .to_string();
        let spki = key
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| format!("cannot encode the RSA public key: {e}"))?;
        (pem, Algorithm::RsaSha256, spki.as_bytes().to_vec())
    };
    // What the relay will sign with must load as the relay loads it.
    if parse_key(pem.as_bytes())?.algorithm() != algorithm {
        return Err("the new key loads as another kind of key".to_owned());
    }
    Ok(NewKey {
        record: dkim::dns_record(selector, domain, algorithm, &public),
        pem,
    })
}

/// Why `dkim keygen` made no key.
#[derive(Debug)]
pub enum KeygenError {
    /// The domain or selector is not a DNS name.
    BadName(String),
    /// A key file is already there (`--force` replaces it).
    Exists(PathBuf),
    /// The key could not be made.
    Generate(String),
    /// The key file or its directory could not be written.
    Write {
        /// What could not be written.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
}

impl fmt::Display for KeygenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeygenError::BadName(name) => write!(
                f,
                "\"{name}\" is not a DNS name (letters, digits, hyphens, dot-separated labels)"
            ),
            KeygenError::Exists(path) => write!(
                f,
                "{} exists: the relay may be signing with it and its DNS record published; \
                 choose another selector, or replace it with --force",
                path.display()
            ),
            KeygenError::Generate(msg) => f.write_str(msg),
            KeygenError::Write { path, source } => {
                write!(f, "{}: cannot write: {source}", path.display())
            }
        }
    }
}

/// `certrelayd -c DIR dkim keygen DOMAIN --selector S [--ed25519] [--force]`: writes
/// `DIR/dkim/DOMAIN.S.pem` (mode 0600) and prints the DNS record and the keys-map line.
pub fn keygen(
    dir: &Path,
    domain: &str,
    selector: &str,
    ed25519: bool,
    force: bool,
) -> Result<(), KeygenError> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let selector = selector.to_ascii_lowercase();
    for name in [&domain, &selector] {
        if !dkim::is_dns_name(name) {
            return Err(KeygenError::BadName(name.clone()));
        }
    }
    let keys_dir = std::path::absolute(dir.join("dkim")).unwrap_or_else(|_| dir.join("dkim"));
    let path = keys_dir.join(format!("{domain}.{selector}.pem"));
    if path.exists() && !force {
        return Err(KeygenError::Exists(path));
    }
    let new = generate(&domain, &selector, ed25519).map_err(KeygenError::Generate)?;
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| KeygenError::Write { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&keys_dir)
        .map_err(write_err(&keys_dir))?;
    // Written beside and renamed over: a replaced key is never seen half written, and the
    // file is 0600 from its first byte.
    let temp = keys_dir.join(format!(".{domain}.{selector}.pem.new"));
    let _ = std::fs::remove_file(&temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(write_err(&temp))?;
    file.write_all(new.pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(write_err(&temp))?;
    if force {
        std::fs::rename(&temp, &path).map_err(write_err(&path))?;
    } else {
        // Not over a key made meanwhile.
        let linked = std::fs::hard_link(&temp, &path);
        let _ = std::fs::remove_file(&temp);
        linked.map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => KeygenError::Exists(path.clone()),
            _ => KeygenError::Write {
                path: path.clone(),
                source: e,
            },
        })?;
    }
    let kind = if ed25519 { "Ed25519" } else { "RSA-2048" };
    println!("wrote {} ({kind} private key, mode 0600)", path.display());
    println!();
    println!("Publish this DNS record:");
    println!("{}", new.record);
    println!();
    println!("Add this line to the {PARAMETER} table (for example /etc/certrelay/dkim_keys, with");
    println!("{PARAMETER} = texthash:/etc/certrelay/dkim_keys in main.cf), then reload:");
    println!("{domain} {selector} {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use certrelay_core::dkim::signed_data;
    use ring::signature::{UnparsedPublicKey, ED25519, RSA_PKCS1_2048_8192_SHA256};

    fn sign_and_check(key: &PrivateKey) {
        let message = b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\n\
            Subject: hi\r\n\r\nHello.\r\n";
        let mut h = MessageHasher::new();
        h.update(message);
        let hashed = h.finish().unwrap();
        let unsigned = hashed.prepare(&Tags {
            algorithm: key.algorithm(),
            domain: "example.org",
            selector: "mail",
            timestamp: 1,
        });
        let data = unsigned.data().to_vec();
        let digest = unsigned.digest();
        let signature = key.sign(&unsigned).unwrap();
        let field = unsigned.complete(&signature);
        assert!(field.contains(key.algorithm().tag()));
        let (alg, signed): (&'static dyn ring::signature::VerificationAlgorithm, &[u8]) = match key
        {
            PrivateKey::Rsa(_) => (&RSA_PKCS1_2048_8192_SHA256, &data),
            PrivateKey::Ed25519(_) => (&ED25519, &digest),
        };
        UnparsedPublicKey::new(alg, key.public_key())
            .verify(signed, &signature)
            .unwrap();
        // And not over anything else.
        let other = signed_data(&Default::default(), &["from"], b"DKIM-Signature: b=\r\n");
        assert!(UnparsedPublicKey::new(alg, key.public_key())
            .verify(&other, &signature)
            .is_err());
    }

    #[test]
    fn generated_keys_load_and_sign() {
        for ed in [true, false] {
            let new = generate("example.org", "mail", ed).unwrap();
            assert!(new.pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
            let key = parse_key(new.pem.as_bytes()).unwrap();
            sign_and_check(&key);
            let k = if ed { "ed25519" } else { "rsa" };
            assert!(
                new.record.starts_with(&format!(
                    "mail._domainkey.example.org. IN TXT \"v=DKIM1; k={k}; p="
                )),
                "{}",
                new.record
            );
        }
    }

    #[test]
    fn keys_that_cannot_sign_are_refused() {
        assert!(parse_key(b"not a key").is_err());
        // A P-256 key (PKCS#8) is a key, but not one DKIM signs with.
        let ec = rcgen_free_p256();
        let e = parse_key(ec.as_bytes()).err().unwrap();
        assert!(e.contains("neither an RSA key"), "{e}");
    }

    /// A P-256 PKCS#8 key made with ring.
    fn rcgen_free_p256() -> String {
        use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                .unwrap();
        certrelay_shell::pki::pem_text("PRIVATE KEY", doc.as_ref())
    }
}
