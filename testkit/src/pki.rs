//! The test PKI, made with rcgen: certificate authorities, intermediates, and the server
//! and client certificates they sign, in PEM and DER, and the rustls configuration of a
//! test client that trusts them. The relay's own configurations are the shell's, built from
//! these bytes; nothing here reads or writes files.

use certrelay_core::cert::{parse_certificates, parse_private_key};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// A certificate authority.
pub struct Ca {
    /// Its certificate, PEM.
    pub cert_pem: String,
    /// Its certificate, DER.
    pub cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key.
pub struct Issued {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM (PKCS#8).
    pub key_pem: String,
    /// Certificate, DER.
    pub der: Vec<u8>,
}

impl Issued {
    fn new(cert: &rcgen::Certificate, key: &KeyPair) -> Issued {
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// The certificate and its key, PEM, as [`client_config`] takes them.
    pub fn pems(&self) -> (&str, &str) {
        (&self.cert_pem, &self.key_pem)
    }

    /// The certificate, for rustls.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        CertificateDer::from(self.der.clone())
    }

    /// The private key, for rustls.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        parse_private_key(self.key_pem.as_bytes()).expect("the key of a test certificate")
    }
}

fn params(cn: &str, sans: &[&str]) -> CertificateParams {
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("certificate parameters");
    params.distinguished_name.push(DnType::CommonName, cn);
    params
}

impl Ca {
    /// A self-signed CA named `cn`.
    pub fn new(cn: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = params(cn, &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("self-sign");
        Ca::made(&cert, params, key)
    }

    fn made(cert: &rcgen::Certificate, params: CertificateParams, key: KeyPair) -> Ca {
        Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (subject alternative names: DNS names, or IP addresses
    /// where a name parses as one) signed by this CA, for server or client use.
    pub fn issue(&self, cn: &str, names: &[&str], client: bool) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut params = params(cn, names);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Issued::new(&cert, &key)
    }

    /// As [`Ca::issue`], valid from yesterday until `days` days from now (UTC dates).
    pub fn issue_for_days(&self, cn: &str, names: &[&str], client: bool, days: i64) -> Issued {
        let today = now_secs() / 86_400;
        self.issue_between(
            cn,
            names,
            client,
            (today - 1) * 86_400,
            (today + days) * 86_400,
        )
    }

    /// As [`Ca::issue`], valid from yesterday until `secs` seconds from now (a certificate
    /// about to expire, for the expiry warnings).
    pub fn issue_for_secs(&self, cn: &str, names: &[&str], client: bool, secs: u64) -> Issued {
        let now = now_secs();
        let secs = i64::try_from(secs).expect("seconds");
        self.issue_between(cn, names, client, now - 86_400, now + secs)
    }

    /// As [`Ca::issue`], valid from `not_before` to `not_after` (unix seconds, from 1970).
    fn issue_between(
        &self,
        cn: &str,
        names: &[&str],
        client: bool,
        not_before: i64,
        not_after: i64,
    ) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut params = params(cn, names);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let at = |unix: i64| {
            let unix = u64::try_from(unix).expect("a time after 1970");
            rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(unix)
        };
        params.not_before = at(not_before);
        params.not_after = at(not_after);
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Issued::new(&cert, &key)
    }

    /// An intermediate CA named `cn`, signed by this CA. Certificates it issues need its
    /// `cert_pem` appended to their own to form a chain.
    pub fn intermediate(&self, cn: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = params(cn, &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Ca::made(&cert, params, key)
    }
}

/// A self-signed client certificate named `cn` (no CA vouches for it).
pub fn self_signed_client(cn: &str) -> Issued {
    let key = KeyPair::generate().expect("key");
    let mut params = params(cn, &[]);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key).expect("self-sign");
    Issued::new(&cert, &key)
}

/// The rustls configuration of a test client that trusts the certificates in `ca_pem` and,
/// when `client` is given (certificate chain PEM, key PEM), presents it.
pub fn client_config(ca_pem: &str, client: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for der in parse_certificates(ca_pem.as_bytes()).expect("CA PEM") {
        roots.add(der).expect("a CA certificate rustls takes");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring's protocol versions")
        .with_root_certificates(roots);
    Arc::new(match client {
        Some((chain, key)) => builder
            .with_client_auth_cert(
                parse_certificates(chain.as_bytes()).expect("client certificate PEM"),
                parse_private_key(key.as_bytes()).expect("client key PEM"),
            )
            .expect("a client certificate and key that match"),
        None => builder.with_no_client_auth(),
    })
}

/// Now, in unix seconds.
fn now_secs() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    i64::try_from(secs).expect("clock")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};
    use std::sync::Arc;

    /// The certificates pass the same checks a TLS peer makes: a server certificate for a
    /// name and an address under its CA, and not under another.
    #[test]
    fn a_server_certificate_verifies_under_its_ca_only() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca = Ca::new("Kit CA");
        let leaf = ca.issue("localhost", &["localhost", "127.0.0.1"], false);
        let verifier = |ca: &Ca| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.cert_der.clone()).unwrap();
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .unwrap()
        };
        let leaf_der = leaf.cert_der();
        for name in ["localhost", "127.0.0.1"] {
            let name = ServerName::try_from(name).unwrap();
            verifier(&ca)
                .verify_server_cert(&leaf_der, &[], &name, &[], UnixTime::now())
                .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        }
        let name = ServerName::try_from("localhost").unwrap();
        let other = Ca::new("Other CA");
        assert!(verifier(&other)
            .verify_server_cert(&leaf_der, &[], &name, &[], UnixTime::now())
            .is_err());
    }
}
