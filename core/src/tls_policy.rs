//! TLS security levels and the per-site policy (`smtp_tls_per_site`).

/// The client's TLS security level for one delivery, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsLevel {
    /// Never use TLS.
    None,
    /// Use TLS when offered; fall back to plaintext otherwise.
    May,
    /// TLS required; the server certificate is not checked.
    Encrypt,
    /// TLS required; the server certificate must chain to a trusted CA and name the host.
    Verify,
    /// As `Verify`; also never trusts names learned from DNS MX records.
    Secure,
}
