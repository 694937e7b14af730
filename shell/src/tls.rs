//! rustls configurations for both roles, always with the ring provider.
//!
//! Trust decisions are not taken here. The server asks for a client certificate and accepts
//! any (the client must still prove it holds the key); the core judges the chain afterwards,
//! so an untrusted certificate never aborts the handshake (Postfix's `ask_ccert` behaviour).
//! The client likewise accepts any server certificate during the handshake and lets the core
//! judge it afterwards, so that a refusal can be sent politely (QUIT inside TLS) and reported
//! with Postfix's reason. The one exception is a caller's [`ServerCheck`] (pairing's pin,
//! renewal's verification): it is applied inside the handshake, so that nothing, not even the
//! client certificate, reaches a server that fails it.

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

/// A check of the server's chain (end certificate first) applied inside the handshake; `Err`
/// says why the server is refused, and becomes the handshake's error text.
pub type ServerCheck = Arc<dyn Fn(&[CertificateDer<'_>]) -> Result<(), String> + Send + Sync>;

/// Accepts any server certificate during the handshake, still checking the handshake
/// signature; the core judges the chain and name afterwards. With a [`ServerCheck`], that
/// check decides in the handshake instead.
struct JudgeServerLater {
    algs: WebPkiSupportedAlgorithms,
    check: Option<ServerCheck>,
}

impl std::fmt::Debug for JudgeServerLater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JudgeServerLater")
            .field("check", &self.check.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for JudgeServerLater {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(check) = &self.check else {
            return Ok(ServerCertVerified::assertion());
        };
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        check(&chain).map_err(rustls::Error::General)?;
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
    let mut cfg = client_config_inner(cert, None)?;
    cfg.resumption = rustls::client::Resumption::in_memory_sessions(256);
    Ok(Arc::new(cfg))
}

/// A client configuration for one connection to a server that must pass `check` inside the
/// handshake (pairing pins the relay by its code; renewal verifies it as delivery would),
/// with the client certificate when one is given: a server that fails gets nothing.
pub fn client_config_checked(
    cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    check: ServerCheck,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    Ok(Arc::new(client_config_inner(cert, Some(check))?))
}

fn client_config_inner(
    cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    check: Option<ServerCheck>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let builder = client_builder(check)?;
    Ok(match cert {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    })
}

/// TLS 1.2 and 1.3 with ring, server certificates judged after the handshake (or by
/// `check` inside it): everything of a client configuration but the client certificate.
fn client_builder(
    check: Option<ServerCheck>,
) -> Result<
    rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    rustls::Error,
> {
    let provider = provider();
    let verifier = Arc::new(JudgeServerLater {
        algs: provider.signature_verification_algorithms,
        check,
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
        client_builder(None)?.with_client_cert_resolver(resolver),
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
    use rustls::{ClientConnection, ServerConnection};
    use std::sync::Mutex;

    fn self_signed(name: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let key = PrivateKeyDer::try_from(made.signing_key.serialize_der()).unwrap();
        (made.cert.der().clone(), key)
    }

    /// Feeds `bytes` to `conn`; the first error it raises.
    fn feed<D>(conn: &mut rustls::ConnectionCommon<D>, bytes: &[u8]) -> Result<(), rustls::Error> {
        let mut rest = bytes;
        while !rest.is_empty() {
            conn.read_tls(&mut rest).unwrap();
            conn.process_new_packets()?;
        }
        Ok(())
    }

    /// Runs a handshake in memory; the client's error, if any, and the server side.
    fn handshake(
        client: Arc<rustls::ClientConfig>,
        server: Arc<rustls::ServerConfig>,
    ) -> (Result<(), rustls::Error>, ServerConnection) {
        let name = ServerName::try_from("relay.test").unwrap();
        let mut client = ClientConnection::new(client, name).unwrap();
        let mut server = ServerConnection::new(server).unwrap();
        for _ in 0..20 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            let _ = feed(&mut server, &wire);
            wire.clear();
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
            if let Err(e) = feed(&mut client, &wire) {
                // The client's alert still goes out.
                let mut alert = Vec::new();
                while client.wants_write() {
                    client.write_tls(&mut alert).unwrap();
                }
                let _ = feed(&mut server, &alert);
                return (Err(e), server);
            }
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
        }
        (Ok(()), server)
    }

    /// A server that fails the caller's check gets no client certificate and no data; one
    /// that passes gets the handshake, and the check saw its certificate.
    #[test]
    fn a_server_check_decides_inside_the_handshake() {
        let (server_cert, server_key) = self_signed("relay.test");
        let server = server_config(ServerTls {
            chain: vec![server_cert.clone()],
            key: server_key,
            ca_subjects: Vec::new(),
            ask_ccert: true,
            session_cache_timeout: Duration::from_secs(60),
        })
        .unwrap();
        let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let checker = |accept: bool| -> ServerCheck {
            let seen = seen.clone();
            Arc::new(move |chain: &[CertificateDer<'_>]| {
                seen.lock().unwrap().push(chain[0].to_vec());
                if accept {
                    Ok(())
                } else {
                    Err(String::from("not the relay we paired with"))
                }
            })
        };
        let (client_cert, client_key) = self_signed("laptop");
        let cert = || Some((vec![client_cert.clone()], client_key.clone_key()));
        let refused = client_config_checked(cert(), checker(false)).unwrap();
        let (result, server_side) = handshake(refused, server.clone());
        let err = result.unwrap_err().to_string();
        assert!(err.contains("not the relay we paired with"), "{err}");
        assert!(server_side.peer_certificates().is_none());
        assert_eq!(seen.lock().unwrap().as_slice(), &[server_cert.to_vec()]);
        let accepted = client_config_checked(cert(), checker(true)).unwrap();
        let (result, server_side) = handshake(accepted, server);
        result.unwrap();
        let presented = server_side.peer_certificates().unwrap();
        assert_eq!(presented[0], client_cert);
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

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
