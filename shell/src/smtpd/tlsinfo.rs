//! What a finished server handshake established, in the words Postfix logs.

use super::listener::Trust;
use crate::tls::{cipher_name, protocol_name};
use certrelay_core::cert::{self, judge_client_cert};
use certrelay_core::facts::{CertVerdict, PeerInfo, TlsFacts};
use certrelay_core::fingerprint::CertMatch;
use certrelay_core::fingerprint::{DigestKind, Fingerprint, FingerprintMap};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::{HandshakeKind, ServerConnection};

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

/// Told of each TLS session established with a client certificate listed in
/// `relay_clientcerts` (the relay keeps when each was last seen and warns of expiry; the
/// role's code implements it). Called on the session's task for every such handshake: it
/// must be quick and never wait on a file.
pub trait ListedSeen: Send + Sync + std::fmt::Debug {
    /// `leaf` is the client's certificate, `listed` the entry it matched, `peer` the client.
    fn seen(&self, leaf: &[u8], listed: &CertMatch, peer: &PeerInfo);
}

/// Tells `seen` about the session on `conn` when its client certificate is listed.
pub fn tell_listed(
    conn: &ServerConnection,
    facts: &TlsFacts,
    peer: &PeerInfo,
    seen: &dyn ListedSeen,
) {
    let (Some(listed), Some(leaf)) = (
        &facts.client_cert.listed,
        conn.peer_certificates().and_then(|c| c.first()),
    ) else {
        return;
    };
    seen.seen(leaf, listed, peer);
}

/// The entry of `map` that the client certificate of `conn` matches, if any (a session
/// resumed from a ticket shows the certificate of its first handshake).
pub fn listed(conn: &ServerConnection, map: &FingerprintMap) -> Option<CertMatch> {
    let leaf = conn.peer_certificates()?.first()?;
    map.lookup_cert(leaf, cert::spki_der(leaf).unwrap_or(leaf))
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
