//! The certificates of pairing and renewal: the relay's CA signing a laptop's request, and
//! the laptop making its key and request and checking what came back.
//!
//! The relay decides everything in the certificate it signs: CN = the laptop's name, client
//! authentication only, its own lifetime. From the request it takes the public key alone,
//! after checking the request's signature (proof that the sender holds the key) and the key
//! type. Not here: the dialogue (the binaries), codes and tables ([`super::enrolled`]).

use super::ca::{load_ca_files, set_validity_secs};
use super::error::PkiError;
use super::files::pem_text;
use super::names::check_file_name;
use certrelay_core::cert::{
    assess_client_chain, parse_certificates, spki_der, verify_server_chain,
};
use certrelay_core::enroll::MAX_REQUEST_DER;
use certrelay_core::facts::CertVerdict;
use certrelay_core::fingerprint::{DigestKind, Fingerprint};
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use std::path::Path;
use std::time::Duration;
use x509_parser::prelude::FromDer;

/// The relay's CA, read once (as root, before the privilege drop) when enrollment is on.
pub struct EnrollCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for EnrollCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnrollCa(..)")
    }
}

/// A certificate signed for a laptop.
#[derive(Clone, Debug)]
pub struct Signed {
    /// The certificate then the CA certificate, PEM.
    pub chain_pem: String,
    /// SHA-256 fingerprint of the certificate, as listed.
    pub fingerprint: Fingerprint,
}

impl EnrollCa {
    /// Reads the CA certificate and key (`certrelay_enroll_ca_cert_file`,
    /// `certrelay_enroll_ca_key_file`) and checks that they belong together.
    pub fn load(cert: &Path, key: &Path) -> Result<EnrollCa, PkiError> {
        let (cert_pem, issuer) = load_ca_files(cert, key)?;
        Ok(EnrollCa { cert_pem, issuer })
    }

    /// Checks a request as [`EnrollCa::sign`] would, signing nothing: a bad request is
    /// refused before a code is spent. `Err` holds the reason for the client.
    pub fn check(&self, csr_der: &[u8]) -> Result<(), String> {
        check_request(csr_der).map(|_| ())
    }

    /// Signs the request `csr_der` for laptop `name`, valid for `lifetime`. `Err` holds the
    /// reason for the client (the request is not trusted input: nothing here panics on it).
    pub fn sign(&self, csr_der: &[u8], name: &str, lifetime: Duration) -> Result<Signed, String> {
        check_file_name(name).map_err(|e| e.to_string())?;
        let mut request = check_request(csr_der)?;
        request.params = laptop_params(name, &request.public_key, lifetime);
        let cert = request
            .signed_by(&self.issuer)
            .map_err(|e| format!("cannot sign: {e}"))?;
        Ok(Signed {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            fingerprint: Fingerprint::of(DigestKind::Sha256, cert.der()),
        })
    }
}

/// Checks a request from the network: size, DER, signature, and a key type we issue for
/// (ECDSA P-256 or P-384, Ed25519). Only its public key is used afterwards.
fn check_request(der: &[u8]) -> Result<CertificateSigningRequestParams, String> {
    if der.len() > MAX_REQUEST_DER {
        return Err(format!("longer than {MAX_REQUEST_DER} octets"));
    }
    let request =
        CertificateSigningRequestParams::from_der(&der.to_vec().into()).map_err(|e| match e {
            rcgen::Error::InvalidCertificationRequestSignature => {
                String::from("its signature does not verify")
            }
            rcgen::Error::CouldNotParseCertificationRequest => {
                String::from("not a certificate request (PKCS#10, DER)")
            }
            other => format!("not usable: {other}"),
        })?;
    let alg = request.public_key.algorithm();
    let allowed = [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
    ];
    if !allowed.contains(&alg) {
        return Err(String::from(
            "key type not accepted (ECDSA P-256 or P-384, or Ed25519)",
        ));
    }
    // The key as it will be written must be the key the request carries (a signature
    // algorithm that names another curve than the key's would otherwise slip through).
    let carried = x509_parser::certification_request::X509CertificationRequest::from_der(der)
        .map(|(_, csr)| csr.certification_request_info.subject_pki.raw.to_vec())
        .map_err(|_| String::from("not a certificate request (PKCS#10, DER)"))?;
    if carried != request.public_key.subject_public_key_info() {
        return Err(String::from(
            "its key does not match its signature algorithm",
        ));
    }
    Ok(request)
}

/// A laptop certificate's parameters: CN = name, client authentication, `lifetime`.
fn laptop_params(name: &str, key: &impl PublicKeyData, lifetime: Duration) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.is_ca = IsCa::ExplicitNoCa;
    set_validity_secs(&mut params, lifetime, key);
    params
}

/// A key made on the laptop, and its request.
pub struct LaptopKey {
    key: KeyPair,
}

impl LaptopKey {
    /// A new ECDSA P-256 key.
    pub fn generate() -> Result<LaptopKey, PkiError> {
        let key = KeyPair::generate().map_err(|e| PkiError::Generate {
            what: "the key",
            reason: e.to_string(),
        })?;
        Ok(LaptopKey { key })
    }

    /// A request for `name` signed by the key, DER. The relay takes its key only.
    pub fn request_der(&self, name: &str) -> Result<Vec<u8>, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .serialize_request(&self.key)
            .map(|csr| csr.der().to_vec())
            .map_err(|e| PkiError::Generate {
                what: "the certificate request",
                reason: e.to_string(),
            })
    }

    /// The key, PEM (PKCS#8).
    pub fn pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The public key, DER SubjectPublicKeyInfo.
    pub fn spki(&self) -> Vec<u8> {
        self.key.subject_public_key_info()
    }
}

/// What the laptop received, checked.
#[derive(Clone, Debug)]
pub struct Received {
    /// The laptop's certificate, PEM.
    pub cert_pem: String,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// SHA-256 fingerprint of the laptop's certificate.
    pub fingerprint: Fingerprint,
    /// When the certificate's validity begins and ends, Unix seconds.
    pub validity: (i64, i64),
}

/// Checks the relay's answer on the laptop: the first certificate is for `key` and chains to
/// the CA that follows it for client authentication; with `relay` (the relay's chain as its
/// TLS handshake showed it, and the host name or address the laptop connected to) the relay's
/// certificate also chains to that CA and names `host`. `Err` says what failed.
pub fn check_received(
    chain_pem: &str,
    key_spki: &[u8],
    relay: Option<(&[CertificateDer<'static>], &str)>,
) -> Result<Received, String> {
    let certs = parse_certificates(chain_pem.as_bytes())
        .map_err(|e| format!("the relay's answer holds no usable certificate: {e}"))?;
    let [leaf, ca] = certs.as_slice() else {
        return Err(format!(
            "the relay's answer holds {} certificates, not the laptop's and the CA's",
            certs.len()
        ));
    };
    if spki_der(leaf) != Some(key_spki) {
        return Err(String::from(
            "the certificate the relay sent is not for the key made here",
        ));
    }
    let anchors = certrelay_core::cert::trust_anchors(std::slice::from_ref(ca))
        .map_err(|e| format!("the CA certificate the relay sent is unusable: {e}"))?;
    let algs = crate::tls::provider().signature_verification_algorithms.all;
    let now = UnixTime::now();
    if let CertVerdict::Untrusted(why) =
        assess_client_chain(std::slice::from_ref(leaf), &anchors, 1, now, algs)
    {
        return Err(format!(
            "the certificate the relay sent does not chain to the CA it sent: {why}"
        ));
    }
    if let Some((relay_chain, host)) = relay {
        verify_server_chain(relay_chain, &anchors, host, now, algs).map_err(|e| {
            format!(
                "the relay's own certificate does not pass with the CA it sent ({e}); a \
                 delivery that verifies the relay (MUST) would fail"
            )
        })?;
    }
    let validity = validity(leaf).ok_or("the certificate's validity cannot be read")?;
    Ok(Received {
        cert_pem: pem_text("CERTIFICATE", leaf),
        ca_pem: pem_text("CERTIFICATE", ca),
        fingerprint: Fingerprint::of(DigestKind::Sha256, leaf),
        validity,
    })
}

/// The validity of a certificate, Unix seconds (not before, not after).
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let v = cert.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use certrelay_core::cert::subject_cn;

    fn ca(name: &str) -> (EnrollCa, tempdir::Dir) {
        let dir = tempdir::Dir::new(name);
        let files = super::super::ca_init(&dir.0, "relay.test", &["127.0.0.1".into()]).unwrap();
        (EnrollCa::load(&files.ca_cert, &files.ca_key).unwrap(), dir)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new(name: &str) -> Dir {
                let p = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&p);
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn the_relay_decides_the_certificate_and_the_laptop_checks_it() {
        let (ca, _dir) = ca("enroll-ca-decides");
        let key = LaptopKey::generate().unwrap();
        let csr = key.request_der("root-of-everything").unwrap();
        let signed = ca.sign(&csr, "alice", Duration::from_secs(90)).unwrap();
        let got = check_received(&signed.chain_pem, &key.spki(), None).unwrap();
        assert_eq!(got.fingerprint, signed.fingerprint);
        let der = parse_certificates(got.cert_pem.as_bytes())
            .unwrap()
            .remove(0);
        assert_eq!(subject_cn(&der).as_deref(), Some("alice"));
        let (from, to) = got.validity;
        assert_eq!(to - from, 99, "90 s and a tenth of it before now");
        // Another key: refused.
        let other = LaptopKey::generate().unwrap();
        let err = check_received(&signed.chain_pem, &other.spki(), None).unwrap_err();
        assert!(err.contains("not for the key made here"), "{err}");
    }

    #[test]
    fn hostile_requests_are_refused_with_a_reason() {
        let (ca, _dir) = ca("enroll-ca-hostile");
        let key = LaptopKey::generate().unwrap();
        let mut csr = key.request_der("alice").unwrap();
        let last = csr.len() - 1;
        csr[last] ^= 0x55;
        let life = Duration::from_secs(60);
        let err = ca.sign(&csr, "alice", life).unwrap_err();
        assert!(
            err.contains("signature") || err.contains("not a certificate request"),
            "{err}"
        );
        let err = ca.sign(b"garbage", "alice", life).unwrap_err();
        assert!(err.contains("not a certificate request"), "{err}");
        let err = ca.sign(&[0x30; 10_000], "alice", life).unwrap_err();
        assert!(err.contains("longer than"), "{err}");
        let err = ca.sign(&[], "alice", life).unwrap_err();
        assert!(err.contains("not a certificate request"), "{err}");
        let good = key.request_der("alice").unwrap();
        assert!(ca.sign(&good, "../etc", life).is_err());
        // The check alone says the same, signing nothing.
        assert_eq!(ca.check(&good), Ok(()));
        assert_eq!(ca.check(&csr), ca.sign(&csr, "alice", life).map(|_| ()));
        assert!(ca
            .check(b"garbage")
            .unwrap_err()
            .contains("not a certificate request"));
        let over = vec![0x30; MAX_REQUEST_DER + 1];
        assert!(ca.check(&over).unwrap_err().contains("longer than 6144"));
    }
}
