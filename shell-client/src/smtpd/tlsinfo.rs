//! What a finished server handshake established, in the words Postfix logs.

use super::listener::Trust;
use certrelay_core::cert::{self, judge_client_cert};
use certrelay_core::facts::{CertVerdict, PeerInfo, TlsFacts};
use certrelay_core::fingerprint::{DigestKind, Fingerprint};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::{CipherSuite, HandshakeKind, ProtocolVersion, ServerConnection};

/// Reads the protocol, cipher and client certificate of `conn`, and judges the certificate
/// against `trust` now. Loglevel 2 lines go to the log here.
pub fn facts(conn: &ServerConnection, trust: &Trust, peer: &PeerInfo, loglevel: u8) -> TlsFacts {
    let chain: &[CertificateDer<'static>] = conn.peer_certificates().unwrap_or(&[]);
    let algs = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all;
    let client_cert = judge_client_cert(
        chain,
        &trust.anchors,
        trust.verify_depth,
        &trust.fingerprints,
        UnixTime::now(),
        algs,
    );
    let (cipher, bits) = conn
        .negotiated_cipher_suite()
        .map_or((String::from("unknown"), 0), |s| cipher_name(s.suite()));
    let facts = TlsFacts {
        protocol: protocol_name(conn.protocol_version()),
        cipher,
        bits,
        resumed: conn.handshake_kind() == Some(HandshakeKind::Resumed),
        client_cert,
    };
    if loglevel >= 2 {
        if let Some(leaf) = chain.first() {
            log_peer_cert(peer, leaf, &facts, trust);
        }
    }
    facts
}

/// `name[ip]: Trusted: subject_CN=..., issuer=..., fingerprint=..., pkey_fingerprint=...`,
/// once per digest the map uses (SHA-256 when it is empty), so the values can be pasted into
/// `relay_clientcerts` as they are.
fn log_peer_cert(peer: &PeerInfo, leaf: &CertificateDer<'_>, facts: &TlsFacts, trust: &Trust) {
    let verdict = &facts.client_cert.verdict;
    let kind = if verdict.is_trusted() {
        "Trusted"
    } else {
        "Untrusted"
    };
    let subject = cert::subject_cn(leaf).unwrap_or_default();
    let issuer = cert::issuer_cn(leaf).unwrap_or_default();
    let spki = cert::spki_der(leaf).unwrap_or(leaf);
    let map = &trust.fingerprints;
    let mut kinds: Vec<DigestKind> = match map.fixed_digest() {
        Some(k) => vec![k],
        None => map.kinds().collect(),
    };
    if kinds.is_empty() {
        kinds.push(DigestKind::Sha256);
    }
    for digest in kinds {
        log::info!(
            "{}[{}]: {kind}: subject_CN={subject}, issuer={issuer}, fingerprint={}, \
             pkey_fingerprint={}",
            peer.name,
            peer.addr,
            Fingerprint::of(digest, leaf),
            Fingerprint::of(digest, spki)
        );
    }
    if let CertVerdict::Untrusted(reason) = verdict {
        log::info!(
            "{}[{}]: certificate not trusted: {reason}",
            peer.name,
            peer.addr
        );
    }
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
