//! rustls configurations for both roles, always with the ring provider.
//!
//! Trust decisions are not taken here. The server asks for a client certificate and accepts
//! any (the client must still prove it holds the key); the core judges the chain afterwards,
//! so an untrusted certificate never aborts the handshake (Postfix's `ask_ccert` behaviour).
//! The client likewise accepts any server certificate during the handshake and lets the core
//! judge it afterwards, so that a refusal can be sent politely (QUIT inside TLS) and reported
//! with Postfix's reason.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, GetRandomFailed, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ProducesTickets;
use rustls::{
    CipherSuite, DigitallySignedStruct, DistinguishedName, ProtocolVersion, SignatureScheme,
};
use std::sync::Arc;
use std::time::Duration;

/// The process's one crypto provider (ring), passed explicitly rather than installed globally.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Asks for a client certificate and records nothing: the chain is read back from the
/// connection after the handshake and judged by the core.
#[derive(Debug)]
struct AskClientCert {
    ask: bool,
    hints: Vec<DistinguishedName>,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AskClientCert {
    fn offer_client_auth(&self) -> bool {
        self.ask
    }

    fn client_auth_mandatory(&self) -> bool {
        // With req_ccert the session answers 421 after the handshake, as Postfix does.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Accepts any server certificate during the handshake, still checking the handshake
/// signature; the core judges the chain and name afterwards.
#[derive(Debug)]
struct JudgeServerLater {
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for JudgeServerLater {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// What the server side needs to build its TLS configuration.
pub struct ServerTls {
    /// Leaf first, then the chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// The key of the leaf.
    pub key: PrivateKeyDer<'static>,
    /// Subjects of the CAs in `smtpd_tls_CAfile`, sent as hints to the client.
    pub ca_subjects: Vec<DistinguishedName>,
    /// `smtpd_tls_ask_ccert` (or `req_ccert`).
    pub ask_ccert: bool,
    /// `smtpd_tls_session_cache_timeout`: lifetime of resumption tickets.
    pub session_cache_timeout: Duration,
}

/// Builds the server configuration: TLS 1.2 and 1.3, in-memory session cache and stateless
/// tickets (the job Postfix gives tlsmgr).
pub fn server_config(t: ServerTls) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = provider();
    let verifier = Arc::new(AskClientCert {
        ask: t.ask_ccert,
        hints: t.ca_subjects,
        algs: provider.signature_verification_algorithms,
    });
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(t.chain, t.key)?;
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(1024);
    // A rotator accepts tickets for up to twice its period: rotate at half the timeout.
    let period = u32::try_from(t.session_cache_timeout.as_secs() / 2)
        .unwrap_or(u32::MAX)
        .max(1);
    cfg.ticketer = Arc::new(rustls::ticketer::TicketRotator::new(
        period,
        fresh_ticketer,
    )?);
    Ok(Arc::new(cfg))
}

/// A ticket key generation with fresh random keys, for the rotator.
fn fresh_ticketer() -> Result<Box<dyn ProducesTickets>, GetRandomFailed> {
    let inner = rustls::crypto::ring::Ticketer::new().map_err(|_| GetRandomFailed)?;
    Ok(Box::new(Generation(inner)))
}

#[derive(Debug)]
struct Generation(Arc<dyn ProducesTickets>);

impl ProducesTickets for Generation {
    fn enabled(&self) -> bool {
        self.0.enabled()
    }
    fn lifetime(&self) -> u32 {
        self.0.lifetime()
    }
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.0.encrypt(plain)
    }
    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.0.decrypt(cipher)
    }
}

/// Builds the client configuration, with the client certificate when one is configured.
/// One configuration should serve a whole queue run so that sessions resume.
pub fn client_config(
    cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let builder = client_builder()?;
    let mut cfg = match cert {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    cfg.resumption = rustls::client::Resumption::in_memory_sessions(256);
    Ok(Arc::new(cfg))
}

/// TLS 1.2 and 1.3 with ring, server certificates judged after the handshake: everything
/// of a client configuration but the client certificate.
fn client_builder() -> Result<
    rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    rustls::Error,
> {
    let provider = provider();
    let verifier = Arc::new(JudgeServerLater {
        algs: provider.signature_verification_algorithms,
    });
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(verifier))
}

/// A client configuration whose client certificate comes from `resolver` (`probe` uses it
/// to learn whether the server asks for one); server certificates are judged afterwards,
/// as with [`client_config`].
pub fn client_config_with_resolver(
    resolver: Arc<dyn rustls::client::ResolvesClientCert>,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    Ok(Arc::new(
        client_builder()?.with_client_cert_resolver(resolver),
    ))
}

/// `TLSv1.3`, `TLSv1.2`.
pub fn protocol_name(v: Option<ProtocolVersion>) -> String {
    match v {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
        Some(other) => format!("{other:?}"),
        None => "unknown".into(),
    }
}

/// The cipher as OpenSSL (and so Postfix's logs) names it, and its secret bits.
pub fn cipher_name(suite: CipherSuite) -> (String, u16) {
    let name = match suite {
        CipherSuite::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => {
            "ECDHE-ECDSA-CHACHA20-POLY1305"
        }
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        other => return (format!("{other:?}"), 0),
    };
    let bits = if name.contains("128") { 128 } else { 256 };
    (name.to_owned(), bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_names_are_openssl_names() {
        let cases = [
            (
                CipherSuite::TLS13_AES_256_GCM_SHA384,
                "TLS_AES_256_GCM_SHA384",
                256,
            ),
            (
                CipherSuite::TLS13_AES_128_GCM_SHA256,
                "TLS_AES_128_GCM_SHA256",
                128,
            ),
            (
                CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
                "TLS_CHACHA20_POLY1305_SHA256",
                256,
            ),
            (
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                "ECDHE-RSA-AES128-GCM-SHA256",
                128,
            ),
        ];
        for (suite, name, bits) in cases {
            assert_eq!(cipher_name(suite), (name.to_owned(), bits));
        }
        assert_eq!(protocol_name(Some(ProtocolVersion::TLSv1_3)), "TLSv1.3");
    }
}
