//! A small private CA for one relay and its laptops, and keys made on a laptop.
//!
//! Everything is ECDSA P-256 (rcgen's default, which webpki and OpenSSL both accept). The CA
//! may sign end certificates only (path length 0). Keys are PEM, unencrypted, mode 0600.

use super::error::PkiError;
use super::files;
use super::map::{add_entry, check_not_listed, MapEdit};
use super::names::check_file_name;
use certrelay_core::cert::{parse_certificates, spki_der};
use certrelay_core::fingerprint::{DigestKind, Fingerprint};
use certrelay_core::time::civil_from_days;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber,
};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Lifetime of the CA and the relay's certificate.
const CA_YEARS: i32 = 10;
/// Lifetime of a laptop's certificate.
const CLIENT_YEARS: i32 = 2;

/// The files `ca_init` wrote, all absolute paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaFiles {
    /// The CA certificate (`ca.pem`), also the relay's `smtpd_tls_CAfile`.
    pub ca_cert: PathBuf,
    /// The CA key (`ca.key`, mode 0600).
    pub ca_key: PathBuf,
    /// The relay's certificate followed by the CA's (`relay.pem`).
    pub relay_cert: PathBuf,
    /// The relay's key (`relay.key`, mode 0600).
    pub relay_key: PathBuf,
}

impl CaFiles {
    /// The relay's `main.cf` lines that use these files.
    pub fn main_cf_lines(&self) -> String {
        format!(
            "smtpd_tls_cert_file = {}\n\
             smtpd_tls_key_file = {}\n\
             smtpd_tls_CAfile = {}\n",
            self.relay_cert.display(),
            self.relay_key.display(),
            self.ca_cert.display()
        )
    }
}

/// A laptop certificate signed by the CA, and the table entry that lets it relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedClient {
    /// The laptop's name: the certificate's CN and the table label.
    pub name: String,
    /// The certificate file; with `key_included`, the key follows the certificate in it.
    pub cert_file: PathBuf,
    /// Whether `cert_file` holds the key too (issued here) or not (signed from a request).
    pub key_included: bool,
    /// A copy of the CA certificate, for the laptop's `smtp_tls_CAfile`.
    pub ca_file: PathBuf,
    /// SHA-256 fingerprint of the certificate, as listed in the table.
    pub fingerprint: Fingerprint,
    /// The table edit.
    pub map_edit: MapEdit,
    /// Why the copy under the CA's `issued/` folder could not be kept, when it could not
    /// (the certificate is issued and listed all the same).
    pub copy_warning: Option<String>,
}

impl IssuedClient {
    /// What to tell the user: the files, the table line, the laptop's `main.cf` lines.
    pub fn report(&self) -> String {
        let name = file_name(&self.cert_file);
        let ca = file_name(&self.ca_file);
        let mut out = format!(
            "certificate for {}: {}{}\nCA certificate for the laptop: {}\n{}",
            self.name,
            self.cert_file.display(),
            if self.key_included {
                " (with its key, mode 0600)"
            } else {
                ""
            },
            self.ca_file.display(),
            self.map_edit.report(),
        );
        out.push_str("laptop main.cf, after copying the files to /etc/certrelay/ there:\n");
        out.push_str(&format!("  smtp_tls_cert_file = /etc/certrelay/{name}\n"));
        if self.key_included {
            out.push_str("  smtp_tls_key_file = $smtp_tls_cert_file\n");
        } else {
            out.push_str(&format!(
                "  smtp_tls_key_file = /etc/certrelay/{}.key\n",
                self.name
            ));
        }
        out.push_str(&format!("  smtp_tls_CAfile = /etc/certrelay/{ca}\n"));
        if let Some(why) = &self.copy_warning {
            out.push_str(&format!(
                "warning: no copy kept for `certrelayd certs`: {why}; it shows this \
                 certificate's expiry once the relay has seen it\n"
            ));
        }
        out
    }
}

/// The files `keygen` wrote on the laptop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeygenFiles {
    /// The private key (`NAME.key`, mode 0600).
    pub key: PathBuf,
    /// The signing request for the relay's CA (`NAME.csr`).
    pub csr: PathBuf,
    /// A self-signed client certificate (`NAME.pem`), for set-ups that pin fingerprints only.
    pub cert: PathBuf,
    /// SHA-256 fingerprint of that certificate.
    pub fingerprint: Fingerprint,
    /// SHA-256 fingerprint of the public key; it stays the same when the CA later signs the
    /// request, so it can be listed instead.
    pub pubkey_fingerprint: Fingerprint,
    /// The laptop's name.
    pub name: String,
}

impl KeygenFiles {
    /// What to tell the user: the files, both fingerprints and the relay's table line.
    pub fn report(&self) -> String {
        format!(
            "key: {} (mode 0600, stays on this machine)\n\
             request for the relay's CA: {}\n\
             self-signed certificate: {}\n\
             sha256 Fingerprint={}\n\
             sha256 Public Key Fingerprint={}\n\
             relay_clientcerts line (either fingerprint works):\n{}\n",
            self.key.display(),
            self.csr.display(),
            self.cert.display(),
            self.fingerprint,
            self.pubkey_fingerprint,
            self.fingerprint.relay_clientcerts_line(&self.name),
        )
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn generate_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |err| PkiError::Generate {
        what,
        reason: err.to_string(),
    }
}

/// Makes a CA and the relay's certificate in `dir` (created if missing) and returns the
/// files; [`CaFiles::main_cf_lines`] gives the relay's configuration for them.
///
/// Command line: `certrelayd ca init [--dir DIR] [--name NAME]...` (DIR defaults to the
/// configuration directory, the host name to `myhostname`). The CA is named
/// `<myhostname> certrelay CA` and lives ten years; the relay certificate names `myhostname`
/// and every extra name (an IP address literal becomes an IP SAN) for server authentication.
/// Refuses to overwrite any of `ca.pem`, `ca.key`, `relay.pem`, `relay.key`.
pub fn ca_init(dir: &Path, myhostname: &str, extra_names: &[String]) -> Result<CaFiles, PkiError> {
    if myhostname.trim().is_empty() {
        return Err(PkiError::BadName {
            name: myhostname.to_string(),
            reason: "the relay needs a host name (myhostname) for its certificate",
        });
    }
    let dir = files::absolute_dir(dir)?;
    let out = CaFiles {
        ca_cert: dir.join("ca.pem"),
        ca_key: dir.join("ca.key"),
        relay_cert: dir.join("relay.pem"),
        relay_key: dir.join("relay.key"),
    };
    files::refuse_existing(&[&out.ca_cert, &out.ca_key, &out.relay_cert, &out.relay_key])?;

    let ca_key = KeyPair::generate().map_err(generate_error("the CA key"))?;
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{myhostname} certrelay CA"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut ca_params, CA_YEARS, &ca_key);
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(generate_error("the CA certificate"))?;

    let mut names = vec![myhostname.to_string()];
    names.extend(extra_names.iter().filter(|n| **n != myhostname).cloned());
    let relay_key = KeyPair::generate().map_err(generate_error("the relay key"))?;
    let params = server_params(names, myhostname, &relay_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let relay_cert = params
        .signed_by(&relay_key, &issuer)
        .map_err(generate_error("the relay certificate"))?;

    let chain = format!("{}{}", relay_cert.pem(), ca_cert.pem());
    files::write_new(
        &out.ca_key,
        issuer.key().serialize_pem().as_bytes(),
        files::PRIVATE,
    )?;
    files::write_new(&out.ca_cert, ca_cert.pem().as_bytes(), files::PUBLIC)?;
    files::write_new(
        &out.relay_key,
        relay_key.serialize_pem().as_bytes(),
        files::PRIVATE,
    )?;
    files::write_new(&out.relay_cert, chain.as_bytes(), files::PUBLIC)?;
    Ok(out)
}

/// The CA of `dir`: its certificate PEM and an issuer signing with its key.
fn load_ca(dir: &Path) -> Result<(String, Issuer<'static, KeyPair>), PkiError> {
    load_ca_files(&dir.join("ca.pem"), &dir.join("ca.key"))
}

/// The CA certificate at `cert_path` (PEM) and an issuer signing with the key at `key_path`,
/// refused when the key does not belong to the certificate.
pub(crate) fn load_ca_files(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(String, Issuer<'static, KeyPair>), PkiError> {
    let cert_path = cert_path.to_path_buf();
    let pair = load_pair(&cert_path, key_path, "the CA certificate")?;
    let (cert_pem, cert_der, key) = (pair.pem, pair.der, pair.key);
    let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|err| PkiError::BadInput {
        path: cert_path.clone(),
        reason: format!("cannot sign with this CA certificate: {err}"),
    })?;
    Ok((cert_pem, issuer))
}

/// A certificate file and the key that belongs to it, both made by `ca init`.
struct CertAndKey {
    /// The file's text (the certificate, maybe followed by its chain).
    pem: String,
    /// The first certificate in it.
    der: rustls_pki_types::CertificateDer<'static>,
    /// Its key.
    key: KeyPair,
}

/// Reads the certificate at `cert_path` (`what`, made by `ca init`) and the key at
/// `key_path`, and refuses a key that does not belong to the certificate.
fn load_pair(cert_path: &Path, key_path: &Path, what: &str) -> Result<CertAndKey, PkiError> {
    let pem = text_file(cert_path)?;
    let der = parse_certificates(pem.as_bytes())
        .map_err(|err| PkiError::BadInput {
            path: cert_path.to_path_buf(),
            reason: format!("{err} (expected {what} made by `ca init`)"),
        })?
        .remove(0);
    let key = KeyPair::from_pem(&text_file(key_path)?).map_err(|err| PkiError::BadInput {
        path: key_path.to_path_buf(),
        reason: format!("not a usable private key: {err}"),
    })?;
    if spki_der(&der) != Some(key.subject_public_key_info().as_slice()) {
        return Err(PkiError::BadInput {
            path: key_path.to_path_buf(),
            reason: format!("this key does not belong to {}", cert_path.display()),
        });
    }
    Ok(CertAndKey { pem, der, key })
}

fn text_file(path: &Path) -> Result<String, PkiError> {
    String::from_utf8(files::read(path)?).map_err(|_| PkiError::BadInput {
        path: path.to_path_buf(),
        reason: String::from("not PEM text"),
    })
}

/// Parameters of a laptop certificate: CN = name, client authentication only.
fn client_params(name: &str, key: &impl PublicKeyData) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.is_ca = IsCa::ExplicitNoCa;
    set_validity(&mut params, CLIENT_YEARS, key);
    params
}

/// Issues a laptop certificate with a new key, signed by the CA in `ca_dir`, and lists its
/// SHA-256 fingerprint in the table at `map_path` with `name` as label.
///
/// Command line: `certrelayd ca issue [--dir DIR] [--out OUTDIR] [--map FILE] NAME`. Writes
/// `OUTDIR/NAME.pem` (certificate then key, mode 0600: usable as `smtp_tls_cert_file` with the
/// key in the same file) and `OUTDIR/NAME-ca.pem` (the CA certificate, for the laptop's
/// `smtp_tls_CAfile`). Refuses a name or fingerprint already in the table, and existing files.
pub fn ca_issue(
    ca_dir: &Path,
    name: &str,
    out_dir: &Path,
    map_path: &Path,
) -> Result<IssuedClient, PkiError> {
    check_file_name(name)?;
    let (ca_pem, issuer) = load_ca(ca_dir)?;
    let out_dir = files::absolute_dir(out_dir)?;
    let cert_file = out_dir.join(format!("{name}.pem"));
    let ca_file = out_dir.join(format!("{name}-ca.pem"));
    files::refuse_existing(&[&cert_file, &ca_file])?;
    let table = files::read_text_or_empty(map_path)?;
    let key = KeyPair::generate().map_err(generate_error("the laptop key"))?;
    let cert = client_params(name, &key)
        .signed_by(&key, &issuer)
        .map_err(generate_error("the laptop certificate"))?;
    let print = Fingerprint::of(DigestKind::Sha256, cert.der());
    check_not_listed(map_path, &table, &print, Some(name))?;
    let bundle = format!("{}{}", cert.pem(), key.serialize_pem());
    files::write_new(&cert_file, bundle.as_bytes(), files::PRIVATE)?;
    files::write_new(&ca_file, ca_pem.as_bytes(), files::PUBLIC)?;
    let map_edit = add_entry(map_path, &print, name, true)?;
    Ok(IssuedClient {
        name: name.to_string(),
        cert_file,
        key_included: true,
        ca_file,
        fingerprint: print,
        map_edit,
        copy_warning: keep_issued_copy(ca_dir, &print, &cert.pem()),
    })
}

/// Makes a key, a signing request and a self-signed client certificate on the laptop, in
/// `out_dir`: `NAME.key` (mode 0600), `NAME.csr`, `NAME.pem`.
///
/// Command line: `certrelay keygen [--out OUTDIR] NAME`. The request goes to the relay's
/// administrator (`certrelayd ca sign`); the self-signed certificate serves set-ups that only
/// pin fingerprints (it is for client authentication, not a CA). The key never leaves the
/// laptop. Refuses existing files.
pub fn keygen(out_dir: &Path, name: &str) -> Result<KeygenFiles, PkiError> {
    check_file_name(name)?;
    let out_dir = files::absolute_dir(out_dir)?;
    let key_path = out_dir.join(format!("{name}.key"));
    let csr_path = out_dir.join(format!("{name}.csr"));
    let cert_path = out_dir.join(format!("{name}.pem"));
    files::refuse_existing(&[&key_path, &csr_path, &cert_path])?;
    let key = KeyPair::generate().map_err(generate_error("the key"))?;
    let params = client_params(name, &key);
    // A request carries no serial number: the CA chooses it.
    let mut request = params.clone();
    request.serial_number = None;
    let csr = request
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(generate_error("the signing request"))?;
    let cert = params
        .self_signed(&key)
        .map_err(generate_error("the self-signed certificate"))?;
    files::write_new(&key_path, key.serialize_pem().as_bytes(), files::PRIVATE)?;
    files::write_new(&csr_path, csr.as_bytes(), files::PUBLIC)?;
    files::write_new(&cert_path, cert.pem().as_bytes(), files::PUBLIC)?;
    Ok(KeygenFiles {
        key: key_path,
        csr: csr_path,
        cert: cert_path,
        fingerprint: Fingerprint::of(DigestKind::Sha256, cert.der()),
        pubkey_fingerprint: Fingerprint::of(DigestKind::Sha256, &key.subject_public_key_info()),
        name: name.to_string(),
    })
}

/// Reads a signing request (PEM or DER) and checks its signature; only its public key is
/// used, the names and extensions it asks for are not.
fn read_request(path: &Path) -> Result<CertificateSigningRequestParams, PkiError> {
    use rustls_pki_types::pem::{PemObject, SectionKind};
    let data = files::read(path)?;
    let bad = |reason: String| PkiError::BadInput {
        path: path.to_path_buf(),
        reason,
    };
    let der = if data.windows(11).any(|w| w == b"-----BEGIN ") {
        let sections: Vec<(SectionKind, Vec<u8>)> = <(SectionKind, Vec<u8>)>::pem_slice_iter(&data)
            .collect::<Result<_, _>>()
            .map_err(|err| bad(format!("bad PEM: {err}")))?;
        match sections.iter().find(|(kind, _)| *kind == SectionKind::Csr) {
            Some((_, der)) => der.clone(),
            None => {
                let found = match sections.first().map(|(kind, _)| *kind) {
                    Some(SectionKind::Certificate) => "a certificate",
                    Some(SectionKind::PrivateKey)
                    | Some(SectionKind::EcPrivateKey)
                    | Some(SectionKind::RsaPrivateKey) => "a private key",
                    _ => "PEM text with no request",
                };
                return Err(bad(format!(
                    "{found}, not a certificate request (`certrelay keygen` makes NAME.csr)"
                )));
            }
        }
    } else if data.iter().all(u8::is_ascii_whitespace) {
        return Err(bad(String::from(
            "empty file, no certificate request in it",
        )));
    } else {
        data
    };
    CertificateSigningRequestParams::from_der(&der.into()).map_err(|err| {
        bad(match err {
            rcgen::Error::InvalidCertificationRequestSignature => {
                String::from("the request's signature does not verify")
            }
            rcgen::Error::UnsupportedExtension => String::from(
                "the request asks for an extension this CA cannot read; make it with \
                 `certrelay keygen` or without extensions",
            ),
            other => format!("not a usable certificate request: {other}"),
        })
    })
}

/// Signs the request at `csr_path` with the CA in `ca_dir` as a laptop certificate for
/// `name`, writes `OUTDIR/NAME.pem` (certificate only: the key never left the laptop) and
/// `OUTDIR/NAME-ca.pem`, and lists the certificate's SHA-256 fingerprint under `name`.
///
/// Command line: `certrelayd ca sign [--dir DIR] [--out OUTDIR] [--map FILE] CSR NAME`. The
/// certificate gets CN = NAME and client authentication only, whatever the request asks for.
/// Refuses a name or fingerprint already in the table, and existing files.
pub fn ca_sign(
    ca_dir: &Path,
    csr_path: &Path,
    name: &str,
    out_dir: &Path,
    map_path: &Path,
) -> Result<IssuedClient, PkiError> {
    check_file_name(name)?;
    let (ca_pem, issuer) = load_ca(ca_dir)?;
    let mut request = read_request(csr_path)?;
    let out_dir = files::absolute_dir(out_dir)?;
    let cert_file = out_dir.join(format!("{name}.pem"));
    let ca_file = out_dir.join(format!("{name}-ca.pem"));
    files::refuse_existing(&[&cert_file, &ca_file])?;
    let table = files::read_text_or_empty(map_path)?;
    request.params = client_params(name, &request.public_key);
    let cert = request
        .signed_by(&issuer)
        .map_err(generate_error("the laptop certificate"))?;
    let print = Fingerprint::of(DigestKind::Sha256, cert.der());
    check_not_listed(map_path, &table, &print, Some(name))?;
    files::write_new(&cert_file, cert.pem().as_bytes(), files::PUBLIC)?;
    files::write_new(&ca_file, ca_pem.as_bytes(), files::PUBLIC)?;
    let map_edit = add_entry(map_path, &print, name, true)?;
    Ok(IssuedClient {
        name: name.to_string(),
        cert_file,
        key_included: false,
        ca_file,
        fingerprint: print,
        map_edit,
        copy_warning: keep_issued_copy(ca_dir, &print, &cert.pem()),
    })
}

/// The folder under a CA's directory where a copy of every laptop certificate it issues is
/// kept (certificate only, never a key), as `<sha256 hex>.pem`: `certrelayd certs` reads the
/// expiry of listed certificates there before the relay has seen them.
pub const ISSUED_DIR: &str = "issued";

/// Keeps a copy of an issued laptop certificate under `ca_dir/issued/`; why not, when it
/// cannot.
///
/// Made last, after the table entry, and only warned about when it fails: the copy only
/// lets `certrelayd certs` show an expiry before the relay has met the certificate, so a
/// failure must not leave the laptop's files written and the certificate unlisted (a
/// command writes all its files or none; this one is not among them).
fn keep_issued_copy(ca_dir: &Path, print: &Fingerprint, pem: &str) -> Option<String> {
    write_issued_copy(ca_dir, print, pem)
        .err()
        .map(|e| e.to_string())
}

fn write_issued_copy(ca_dir: &Path, print: &Fingerprint, pem: &str) -> Result<(), PkiError> {
    let dir = files::absolute_dir(&ca_dir.join(ISSUED_DIR))?;
    let hex: String = print
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    files::write_new(
        &dir.join(format!("{hex}.pem")),
        pem.as_bytes(),
        files::PUBLIC,
    )
}

/// What `ca renew-server` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenewedServer {
    /// The certificate file replaced (`relay.pem`).
    pub cert_file: PathBuf,
    /// Where the previous one was kept (`relay.pem.old`).
    pub old_cert_file: PathBuf,
    /// The names the new certificate carries.
    pub names: Vec<String>,
    /// SHA-256 fingerprints of the old and the new certificate.
    pub old_fingerprint: Fingerprint,
    /// The new one's.
    pub new_fingerprint: Fingerprint,
}

impl RenewedServer {
    /// What to tell the user.
    pub fn report(&self) -> String {
        format!(
            "renewed {} for {} (same key, same CA); the previous certificate is kept as {}
             old sha256 Fingerprint={}
new sha256 Fingerprint={}
",
            self.cert_file.display(),
            self.names.join(", "),
            self.old_cert_file.display(),
            self.old_fingerprint,
            self.new_fingerprint
        )
    }
}

/// A new certificate for the relay's key in `dir` (`relay.pem`, `relay.key`, made by
/// `ca init`), signed by the CA there, with the names of the current one and `extra_names`.
///
/// Command line: `certrelayd ca renew-server [--dir DIR] [--name NAME]...`. The key stays:
/// a relay that dropped root keeps the key it read at start, so a new key could never pair
/// with a new certificate at a reload; with the same key, every state of the files is a
/// matching pair. Only `relay.pem` changes, replaced by rename (a reader sees the old file
/// or the new); the previous one is kept as `relay.pem.old`. Laptops trust the CA and the
/// name, not this certificate, so nothing changes on their side.
pub fn ca_renew_server(dir: &Path, extra_names: &[String]) -> Result<RenewedServer, PkiError> {
    let dir = files::absolute_dir(dir)?;
    let (ca_pem, issuer) = load_ca(&dir)?;
    let cert_file = dir.join("relay.pem");
    let pair = load_pair(&cert_file, &dir.join("relay.key"), "the relay certificate")?;
    let (current_pem, current, key) = (pair.pem, pair.der, pair.key);
    let cn = certrelay_core::cert::subject_cn(&current);
    let mut names = server_names(&current);
    if let Some(cn) = &cn {
        if !names.contains(cn) {
            names.insert(0, cn.clone());
        }
    }
    for extra in extra_names {
        if !names.contains(extra) {
            names.push(extra.clone());
        }
    }
    let Some(first) = names.first().cloned() else {
        return Err(PkiError::BadInput {
            path: cert_file,
            reason: String::from("it names no host (no CN, no subject alternative name)"),
        });
    };
    let cert = server_params(names.clone(), cn.as_deref().unwrap_or(&first), &key)?
        .signed_by(&key, &issuer)
        .map_err(generate_error("the relay certificate"))?;
    let old_cert_file = dir.join("relay.pem.old");
    let _ = std::fs::remove_file(&old_cert_file);
    files::write_new(&old_cert_file, current_pem.as_bytes(), files::PUBLIC)?;
    // Durable (the directory is flushed after the rename), and the file keeps its mode.
    files::replace(&cert_file, &format!("{}{ca_pem}", cert.pem()))?;
    Ok(RenewedServer {
        cert_file,
        old_cert_file,
        names,
        old_fingerprint: Fingerprint::of(DigestKind::Sha256, &current),
        new_fingerprint: Fingerprint::of(DigestKind::Sha256, cert.der()),
    })
}

/// The DNS names and IP addresses of a certificate's subject alternative names.
fn server_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Parameters of the relay's certificate: `names` as subject alternative names (an IP
/// address literal becomes an IP SAN), CN `cn`, server authentication only.
fn server_params(
    names: Vec<String>,
    cn: &str,
    key: &impl PublicKeyData,
) -> Result<CertificateParams, PkiError> {
    let mut params =
        CertificateParams::new(names).map_err(generate_error("the relay certificate"))?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, CA_YEARS, key);
    Ok(params)
}

/// The longest lifetime a certificate is given: a century.
pub const MAX_LIFETIME: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);

/// Valid for `lifetime` from now, begun a little earlier for clocks that differ (a tenth of
/// the lifetime, at most an hour, so that a third of a short lifetime is still a third), with
/// a serial number as [`set_validity`] draws it.
pub(crate) fn set_validity_secs(
    params: &mut CertificateParams,
    lifetime: std::time::Duration,
    key: &impl PublicKeyData,
) {
    set_validity(params, 0, key);
    // Dates past year 9999 cannot be written (and would panic): a century at most.
    let lifetime = lifetime.min(MAX_LIFETIME);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let early = (lifetime / 10).min(std::time::Duration::from_secs(3600));
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(early);
    params.not_after = epoch + now + lifetime;
}

/// Valid from yesterday (clocks differ) for `years` years, with a serial number drawn from
/// the key and the time, so re-signing the same key never repeats a serial.
fn set_validity(params: &mut CertificateParams, years: i32, key: &impl PublicKeyData) {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let today = i64::try_from(since.as_secs() / 86_400).unwrap_or(0);
    let (y, m, d) = civil_from_days(today - 1);
    let y = i32::try_from(y).unwrap_or(9999);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    params.not_after = rcgen::date_time_ymd(y + years, m, d.min(28));
    let mut seed = key.der_bytes().to_vec();
    seed.extend_from_slice(&since.as_nanos().to_be_bytes());
    seed.extend_from_slice(&std::process::id().to_be_bytes());
    let hash = Fingerprint::of(DigestKind::Sha256, &seed);
    let mut serial = hash.as_bytes()[..16].to_vec();
    // Positive and exactly 16 bytes long.
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("certrelay-ca-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// `certrelayd enroll --cert-valid 99999999d` reaches this from a laptop's request: a
    /// lifetime past year 9999 is cut to a century, never a panic (the relay aborts on one).
    #[test]
    fn an_endless_lifetime_is_cut_to_a_century() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        set_validity_secs(&mut params, std::time::Duration::MAX, &key);
        let years = params.not_after.year() - params.not_before.year();
        assert!((99..=101).contains(&years), "{years}");
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn renew_server_keeps_the_mode_and_leaves_no_temporary_file() {
        let dir = scratch("renew");
        let made = ca_init(&dir, "relay.example", &[]).unwrap();
        fs::set_permissions(&made.relay_cert, fs::Permissions::from_mode(0o640)).unwrap();
        let before = fs::read_to_string(&made.relay_cert).unwrap();
        let renewed = ca_renew_server(&dir, &["mx.example".to_string()]).unwrap();
        assert_eq!(renewed.names, ["relay.example", "mx.example"]);
        assert_eq!(fs::read_to_string(&renewed.old_cert_file).unwrap(), before);
        let mode = fs::metadata(&made.relay_cert).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            names_in(&dir),
            [
                "ca.key",
                "ca.pem",
                "relay.key",
                "relay.pem",
                "relay.pem.old"
            ]
        );
        // The new pair still matches, and a mismatched key is refused as at load_ca.
        load_pair(&made.relay_cert, &made.relay_key, "the relay certificate").unwrap();
        fs::copy(&made.ca_key, &made.relay_key).unwrap();
        let err = ca_renew_server(&dir, &[]).unwrap_err().to_string();
        assert!(err.contains("does not belong to"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_issued_copy_leaves_the_certificate_listed_with_a_warning() {
        let dir = scratch("issued");
        ca_init(&dir, "relay.example", &[]).unwrap();
        // `issued` is a file, not a folder: the copy cannot be made.
        fs::write(dir.join(ISSUED_DIR), "in the way").unwrap();
        let out = dir.join("out");
        let map = dir.join("relay_clientcerts");
        let issued = ca_issue(&dir, "bob", &out, &map).unwrap();
        assert!(issued.copy_warning.is_some());
        assert!(
            issued.report().contains("warning: no copy kept"),
            "{}",
            issued.report()
        );
        let table = fs::read_to_string(&map).unwrap();
        assert!(table.contains(&issued.fingerprint.to_string()), "{table}");
        assert_eq!(names_in(&out), ["bob-ca.pem", "bob.pem"]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
