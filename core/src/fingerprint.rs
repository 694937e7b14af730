//! Certificate and public-key fingerprints, their text forms, and the fingerprint map.

/// A digest algorithm usable for fingerprints; the key length in a map tells which.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DigestKind {
    /// 16 bytes; weak, kept for existing maps.
    Md5,
    /// 20 bytes; weak, kept for existing maps.
    Sha1,
    /// 32 bytes.
    Sha256,
    /// 64 bytes.
    Sha512,
}

impl DigestKind {
    /// Digest length in bytes.
    pub const fn output_len(self) -> usize {
        match self {
            DigestKind::Md5 => 16,
            DigestKind::Sha1 => 20,
            DigestKind::Sha256 => 32,
            DigestKind::Sha512 => 64,
        }
    }
}
