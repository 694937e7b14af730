//! Facts about a peer that the shell learns (address, TLS, certificate) and hands to a session.

use crate::fingerprint::CertMatch;
use alloc::string::String;
use core::net::IpAddr;

/// The connected client, as the server sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its address.
    pub addr: IpAddr,
    /// Its verified host name, or `unknown` (as Postfix logs it).
    pub name: String,
}

/// What the TLS handshake established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFacts {
    /// Protocol name as logged (`TLSv1.3`).
    pub protocol: String,
    /// Cipher suite name as logged (`TLS_AES_256_GCM_SHA384`).
    pub cipher: String,
    /// Secret bits of the cipher (256 for AES-256).
    pub bits: u16,
    /// True when the session was resumed rather than fully negotiated.
    pub resumed: bool,
    /// The client certificate and its verdict (server side).
    pub client_cert: ClientCert,
}

/// The client certificate, as judged after the handshake.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientCert {
    /// Absent, untrusted or trusted.
    pub verdict: CertVerdict,
    /// The `relay_clientcerts` entry that its certificate or public-key digest matched.
    pub listed: Option<CertMatch>,
    /// Subject common name, for logs and the Received header.
    pub subject_cn: Option<String>,
    /// Issuer common name, for logs and the Received header.
    pub issuer_cn: Option<String>,
}

/// Whether the client presented a certificate and whether it chains to a trusted CA within
/// the depth limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CertVerdict {
    /// No certificate was presented (or TLS is not active).
    #[default]
    Absent,
    /// A certificate was presented but did not verify; the reason is for logs.
    Untrusted(String),
    /// A certificate was presented and verified.
    Trusted,
}

impl CertVerdict {
    /// True when some certificate was presented.
    pub fn is_present(&self) -> bool {
        !matches!(self, CertVerdict::Absent)
    }

    /// True when the certificate verified.
    pub fn is_trusted(&self) -> bool {
        matches!(self, CertVerdict::Trusted)
    }
}
