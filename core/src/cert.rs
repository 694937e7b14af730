//! Certificates: PEM/DER input, the names and key inside them, and chain trust.
//!
//! Trust is webpki's: path building, signatures, validity times, extended key usage and name
//! constraints. The signature algorithms are injected by the shell (it owns the crypto
//! provider), so this module stays provider-free. Names and the public key are read with a
//! small DER walk of our own, which also works on X.509 v1 certificates that webpki refuses:
//! an old self-signed client certificate can still be listed by fingerprint.
//!
//! Chain depth follows SPEC A4: `smtpd_tls_ccert_verifydepth = N` accepts a chain whose CA
//! count above the leaf, trust anchor included, is at most N. webpki never builds a path
//! through more than [`WEBPKI_MAX_INTERMEDIATES`] intermediate CAs, so limits above 7 behave
//! like 7 (Postfix's default is 9; real chains have 0 to 2 intermediates).

use crate::facts::{CertVerdict, ClientCert};
use crate::fingerprint::FingerprintMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt;
use core::net::IpAddr;
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime,
};
use webpki::{EndEntityCert, KeyUsage, VerifiedPath};

/// The most intermediate CAs webpki puts in a path (its internal limit).
pub const WEBPKI_MAX_INTERMEDIATES: u32 = 6;

/// Why certificate or key input was refused.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertError {
    /// The input is neither PEM nor DER.
    NotPemOrDer,
    /// The PEM text is broken.
    Pem(String),
    /// The input holds no certificate; `found` says what it holds instead, if anything.
    NoCertificate {
        /// What was found instead (`a private key`), or `None` for nothing at all.
        found: Option<&'static str>,
    },
    /// The input holds no private key; `found` says what it holds instead, if anything.
    NoPrivateKey {
        /// What was found instead (`a certificate`), or `None` for nothing at all.
        found: Option<&'static str>,
    },
    /// The private key is protected by a passphrase.
    EncryptedKey,
    /// A certificate (numbered from 1 in file order) is not valid DER X.509.
    BadCertificate {
        /// Which certificate, from 1.
        index: usize,
        /// What the parser said.
        reason: String,
    },
    /// A DER private key of no known format.
    BadKey(String),
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::NotPemOrDer => f.write_str("neither PEM text nor DER data"),
            CertError::Pem(err) => write!(f, "bad PEM: {err}"),
            CertError::NoCertificate { found: None } => f.write_str("no certificate in PEM"),
            CertError::NoCertificate { found: Some(found) } => {
                write!(f, "{found}, not a certificate")
            }
            CertError::NoPrivateKey { found: None } => f.write_str("no private key in PEM"),
            CertError::NoPrivateKey { found: Some(found) } => {
                write!(f, "{found}, not a private key")
            }
            CertError::EncryptedKey => f.write_str(
                "the private key is encrypted; store it without a passphrase (mode 0600)",
            ),
            CertError::BadCertificate { index, reason } => {
                write!(f, "certificate {index} is malformed: {reason}")
            }
            CertError::BadKey(reason) => write!(f, "bad private key: {reason}"),
        }
    }
}

fn is_pem(input: &[u8]) -> bool {
    input.windows(11).any(|w| w == b"-----BEGIN ")
}

fn describe_section(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::Certificate => "a certificate",
        SectionKind::PublicKey => "a public key",
        SectionKind::RsaPrivateKey | SectionKind::PrivateKey | SectionKind::EcPrivateKey => {
            "a private key"
        }
        SectionKind::Crl => "a certificate revocation list",
        SectionKind::Csr => "a certificate request",
        _ => "an unsupported PEM section",
    }
}

/// All PEM sections of the kinds pki-types knows, in file order (others are skipped).
fn pem_sections(input: &[u8]) -> Result<Vec<(SectionKind, Vec<u8>)>, CertError> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(input)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| CertError::Pem(format!("{err}")))
}

/// Checks the X.509 structure only: trust, extensions and times are judged where the
/// certificate is used (a CA file may hold extensions an end entity must not).
fn check_certificate(index: usize, der: &CertificateDer<'_>) -> Result<(), CertError> {
    match tbs_parts(der) {
        Some(_) => Ok(()),
        None => Err(CertError::BadCertificate {
            index,
            reason: String::from("not an X.509 certificate"),
        }),
    }
}

/// True when a PEM text holds a passphrase-protected key: a PKCS#8 `ENCRYPTED PRIVATE KEY`
/// section, or an old-style key with a `Proc-Type: 4,ENCRYPTED` header.
fn has_encrypted_key(input: &[u8]) -> bool {
    input
        .split(|&b| b == b'\n' || b == b'\r')
        .filter(|line| line.starts_with(b"-----BEGIN ") || line.starts_with(b"Proc-Type:"))
        .any(|line| line.windows(9).any(|w| w == b"ENCRYPTED"))
}

/// The certificates in `input` (PEM, or one DER certificate), leaf first as written.
///
/// Other PEM sections (a private key in the same file, as `smtpd_tls_cert_file` allows) are
/// skipped; a file with no certificate at all is an error that says what it holds.
pub fn parse_certificates(input: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    if input.iter().all(u8::is_ascii_whitespace) {
        return Err(CertError::NoCertificate { found: None });
    }
    if !is_pem(input) {
        if input.first() != Some(&0x30) {
            return Err(CertError::NotPemOrDer);
        }
        if PrivateKeyDer::try_from(input).is_ok() {
            return Err(CertError::NoCertificate {
                found: Some("a private key"),
            });
        }
        let der = CertificateDer::from(input.to_vec());
        check_certificate(1, &der)?;
        return Ok(alloc::vec![der]);
    }
    let sections = pem_sections(input)?;
    let certs: Vec<CertificateDer<'static>> = sections
        .iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der.clone()))
        .collect();
    if certs.is_empty() {
        let found = sections.first().map(|(kind, _)| describe_section(*kind));
        return Err(CertError::NoCertificate { found });
    }
    for (i, der) in certs.iter().enumerate() {
        check_certificate(i + 1, der)?;
    }
    Ok(certs)
}

/// The first private key in `input` (PEM: PKCS#8, PKCS#1 or SEC1; or one DER key).
pub fn parse_private_key(input: &[u8]) -> Result<PrivateKeyDer<'static>, CertError> {
    if input.iter().all(u8::is_ascii_whitespace) {
        return Err(CertError::NoPrivateKey { found: None });
    }
    if !is_pem(input) {
        if input.first() != Some(&0x30) {
            return Err(CertError::NotPemOrDer);
        }
        return PrivateKeyDer::try_from(input.to_vec()).map_err(|err| {
            if parse_certificates(input).is_ok() {
                CertError::NoPrivateKey {
                    found: Some("a certificate"),
                }
            } else {
                CertError::BadKey(String::from(err))
            }
        });
    }
    // The PEM reader skips sections it does not know, so an encrypted key would otherwise
    // look like no key at all.
    if has_encrypted_key(input) {
        return Err(CertError::EncryptedKey);
    }
    let sections = pem_sections(input)?;
    for (kind, der) in &sections {
        let key = match kind {
            SectionKind::PrivateKey => PrivateKeyDer::Pkcs8(der.clone().into()),
            SectionKind::RsaPrivateKey => PrivateKeyDer::Pkcs1(der.clone().into()),
            SectionKind::EcPrivateKey => PrivateKeyDer::Sec1(der.clone().into()),
            _ => continue,
        };
        return Ok(key);
    }
    let found = sections.first().map(|(kind, _)| describe_section(*kind));
    Err(CertError::NoPrivateKey { found })
}

/// Trust anchors made from CA certificates (the contents of a `CAfile`).
pub fn trust_anchors(certs: &[CertificateDer<'_>]) -> Result<Vec<TrustAnchor<'static>>, CertError> {
    certs
        .iter()
        .enumerate()
        .map(|(i, der)| {
            webpki::anchor_from_trusted_cert(der)
                .map(|anchor| anchor.to_owned())
                .map_err(|err| CertError::BadCertificate {
                    index: i + 1,
                    reason: webpki_reason(&err),
                })
        })
        .collect()
}

/// A minimal DER reader: enough of X.509 to find names, the public key and the SANs.
mod der {
    /// ASN.1 tags we look for.
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    pub const OID: u8 = 0x06;
    pub const BOOLEAN: u8 = 0x01;
    pub const OCTET_STRING: u8 = 0x04;
    pub const INTEGER: u8 = 0x02;

    /// One tag-length-value; `whole` includes the header.
    pub struct Tlv<'a> {
        pub tag: u8,
        pub content: &'a [u8],
        pub whole: &'a [u8],
    }

    /// Reads one element off the front of `input`. Only single-byte tags and definite lengths
    /// up to four bytes occur in certificates.
    pub fn read<'a>(input: &mut &'a [u8]) -> Option<Tlv<'a>> {
        let all = *input;
        let (&tag, rest) = all.split_first()?;
        if tag & 0x1f == 0x1f {
            return None;
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = match first {
            0..=0x7f => usize::from(first),
            0x81..=0x84 => {
                let count = usize::from(first & 0x7f);
                let (bytes, after) = rest.split_at_checked(count)?;
                rest = after;
                bytes
                    .iter()
                    .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
            }
            _ => return None,
        };
        let (content, after) = rest.split_at_checked(len)?;
        *input = after;
        let whole = &all[..all.len() - after.len()];
        Some(Tlv {
            tag,
            content,
            whole,
        })
    }

    /// Reads one element that must have `tag`.
    pub fn expect<'a>(input: &mut &'a [u8], tag: u8) -> Option<Tlv<'a>> {
        let tlv = read(input)?;
        (tlv.tag == tag).then_some(tlv)
    }

    /// The elements inside `content`, until it ends or turns malformed.
    pub fn elements(mut content: &[u8]) -> impl Iterator<Item = Tlv<'_>> {
        core::iter::from_fn(move || read(&mut content))
    }
}

/// The parts of a TBSCertificate we use.
struct TbsParts<'a> {
    /// Contents of the issuer Name SEQUENCE.
    issuer: &'a [u8],
    /// Contents of the subject Name SEQUENCE.
    subject: &'a [u8],
    /// The whole SubjectPublicKeyInfo, header included (what public-key fingerprints hash).
    spki: &'a [u8],
    /// Contents of the Extensions SEQUENCE, when there is one.
    extensions: Option<&'a [u8]>,
}

fn tbs_parts(cert_der: &[u8]) -> Option<TbsParts<'_>> {
    let mut outer = cert_der;
    let mut cert = der::expect(&mut outer, der::SEQUENCE)?.content;
    if !outer.is_empty() {
        return None;
    }
    let mut tbs = der::expect(&mut cert, der::SEQUENCE)?.content;
    if tbs.first() == Some(&0xa0) {
        der::read(&mut tbs)?; // explicit version
    }
    der::expect(&mut tbs, der::INTEGER)?; // serial
    der::expect(&mut tbs, der::SEQUENCE)?; // signature algorithm
    let issuer = der::expect(&mut tbs, der::SEQUENCE)?.content;
    der::expect(&mut tbs, der::SEQUENCE)?; // validity
    let subject = der::expect(&mut tbs, der::SEQUENCE)?.content;
    let spki = der::expect(&mut tbs, der::SEQUENCE)?.whole;
    let mut extensions = None;
    for field in der::elements(tbs) {
        if field.tag == 0xa3 {
            let mut wrapped = field.content;
            extensions = Some(der::expect(&mut wrapped, der::SEQUENCE)?.content);
        }
    }
    Some(TbsParts {
        issuer,
        subject,
        spki,
        extensions,
    })
}

/// The DER SubjectPublicKeyInfo of a certificate: the bytes public-key fingerprints digest.
pub fn spki_der(cert_der: &[u8]) -> Option<&[u8]> {
    Some(tbs_parts(cert_der)?.spki)
}

/// The subject's common name, for logs and the Received header.
pub fn subject_cn(cert_der: &[u8]) -> Option<String> {
    common_name(tbs_parts(cert_der)?.subject)
}

/// The issuer's common name, for logs and the Received header.
pub fn issuer_cn(cert_der: &[u8]) -> Option<String> {
    common_name(tbs_parts(cert_der)?.issuer)
}

/// The first common name (OID 2.5.4.3) in the contents of a Name.
fn common_name(name: &[u8]) -> Option<String> {
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    der::elements(name)
        .filter(|rdn| rdn.tag == der::SET)
        .flat_map(|rdn| der::elements(rdn.content))
        .find_map(|attribute| {
            let mut fields = attribute.content;
            let oid = der::expect(&mut fields, der::OID)?;
            if oid.content != COMMON_NAME {
                return None;
            }
            let value = der::read(&mut fields)?;
            directory_string(value.tag, value.content)
        })
}

/// Decodes the string types a Name may use; control characters become `?` because the
/// result goes into log lines and mail headers.
fn directory_string(tag: u8, bytes: &[u8]) -> Option<String> {
    let text: String = match tag {
        0x0c => String::from_utf8_lossy(bytes).into_owned(),
        // PrintableString, IA5String, VisibleString: ASCII.
        0x13 | 0x16 | 0x1a => bytes
            .iter()
            .map(|&b| if b.is_ascii() { char::from(b) } else { '?' })
            .collect(),
        // T61String: in practice Latin-1.
        0x14 => bytes.iter().map(|&b| char::from(b)).collect(),
        // BMPString: UTF-16BE.
        0x1e => char::decode_utf16(
            bytes
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]])),
        )
        .map(|unit| unit.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect(),
        // UniversalString: UTF-32BE.
        0x1c => bytes
            .chunks_exact(4)
            .map(|quad| {
                char::from_u32(u32::from_be_bytes([quad[0], quad[1], quad[2], quad[3]]))
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
        _ => return None,
    };
    Some(
        text.chars()
            .map(|ch| if ch.is_control() { '?' } else { ch })
            .collect(),
    )
}

/// One entry of the subjectAltName extension that matters for host names.
enum AltName<'a> {
    Dns(&'a [u8]),
    Ip(&'a [u8]),
}

fn alt_names(cert_der: &[u8]) -> Vec<AltName<'_>> {
    const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
    let Some(extensions) = tbs_parts(cert_der).and_then(|parts| parts.extensions) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for extension in der::elements(extensions) {
        let mut fields = extension.content;
        let Some(oid) = der::expect(&mut fields, der::OID) else {
            continue;
        };
        if oid.content != SUBJECT_ALT_NAME {
            continue;
        }
        if fields.first() == Some(&der::BOOLEAN) {
            der::read(&mut fields);
        }
        let Some(value) = der::expect(&mut fields, der::OCTET_STRING) else {
            continue;
        };
        let mut value = value.content;
        let Some(general_names) = der::expect(&mut value, der::SEQUENCE) else {
            continue;
        };
        for name in der::elements(general_names.content) {
            match name.tag {
                0x82 => names.push(AltName::Dns(name.content)),
                0x87 => names.push(AltName::Ip(name.content)),
                _ => {}
            }
        }
    }
    names
}

/// The DNS names in the certificate's subjectAltName (ASCII ones; others cannot match).
pub fn dns_names(cert_der: &[u8]) -> Vec<String> {
    alt_names(cert_der)
        .into_iter()
        .filter_map(|name| match name {
            AltName::Dns(bytes) => core::str::from_utf8(bytes).ok().map(String::from),
            AltName::Ip(_) => None,
        })
        .collect()
}

/// A host name in the form we compare: lower case, no trailing dot.
fn normalize_host(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Whether a name presented in a certificate (`pattern`) names `host` (already normalized).
/// A `*` is allowed only as the whole left-most label, over at least two more labels, and
/// stands for exactly one non-empty label.
fn dns_pattern_matches(pattern: &[u8], host: &str) -> bool {
    let Ok(pattern) = core::str::from_utf8(pattern) else {
        return false;
    };
    if !pattern.is_ascii() || host.is_empty() {
        return false;
    }
    let pattern = normalize_host(pattern);
    if let Some(parent) = pattern.strip_prefix("*.") {
        if parent.contains('*') || !parent.contains('.') {
            return false;
        }
        return match host.split_once('.') {
            Some((label, rest)) => !label.is_empty() && rest == parent,
            None => false,
        };
    }
    !pattern.contains('*') && pattern == host
}

/// Whether the certificate names `host` (SPEC C; next-hop brackets are ignored): an IP
/// literal matches an IP address SAN; a host name matches a DNS SAN, and the subject CN only when the
/// certificate has no DNS SAN at all.
pub fn matches_server_name(cert_der: &[u8], host: &str) -> bool {
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let literal = literal
        .get(..5)
        .filter(|p| p.eq_ignore_ascii_case("ipv6:"))
        .map_or(literal, |_| &literal[5..]);
    let names = alt_names(cert_der);
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return names.iter().any(|name| match (name, ip) {
            (AltName::Ip(bytes), IpAddr::V4(v4)) => *bytes == v4.octets(),
            (AltName::Ip(bytes), IpAddr::V6(v6)) => *bytes == v6.octets(),
            _ => false,
        });
    }
    let host = normalize_host(literal);
    let mut has_dns = false;
    for name in &names {
        if let AltName::Dns(pattern) = name {
            has_dns = true;
            if dns_pattern_matches(pattern, &host) {
                return true;
            }
        }
    }
    !has_dns && subject_cn(cert_der).is_some_and(|cn| dns_pattern_matches(cn.as_bytes(), &host))
}

/// A name the server certificate must present (one of several), at `verify` or `secure`.
///
/// Names are compared case-insensitively, without a trailing dot. [`CertName::Host`] is
/// matched as [`matches_server_name`] matches a host (IP literals against IP SANs);
/// [`CertName::Subdomain`] is matched by any certificate name that ends in `.` and the
/// domain (a wildcard `*.domain` counts: it names subdomains only).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CertName {
    /// The certificate must name exactly this host (or cover it by a wildcard).
    Host(String),
    /// The certificate must name a host below this domain.
    Subdomain(String),
}

impl fmt::Display for CertName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertName::Host(host) => f.write_str(host),
            CertName::Subdomain(domain) => write!(f, "a subdomain of {domain}"),
        }
    }
}

/// Whether a name presented in a certificate (`presented`) is a host strictly below `domain`
/// (already normalized).
fn presented_below(presented: &[u8], domain: &str) -> bool {
    let Ok(presented) = core::str::from_utf8(presented) else {
        return false;
    };
    if !presented.is_ascii() || domain.is_empty() {
        return false;
    }
    let presented = normalize_host(presented);
    let Some(head) = presented.strip_suffix(domain) else {
        return false;
    };
    // At least one label of its own, and a whole label boundary before the domain.
    let Some(label) = head.strip_suffix('.') else {
        return false;
    };
    if label.is_empty() || label.split('.').any(str::is_empty) {
        return false;
    }
    // A wildcard stands only as a whole left-most label.
    match label.strip_prefix('*') {
        Some(rest) => (rest.is_empty() || rest.starts_with('.')) && !rest.contains('*'),
        None => !label.contains('*'),
    }
}

/// Whether the certificate names a host below `domain`: a DNS SAN, or the subject CN only
/// when the certificate has no DNS SAN at all (as for [`matches_server_name`]).
fn names_a_subdomain(cert_der: &[u8], domain: &str) -> bool {
    let domain = normalize_host(domain);
    if domain.parse::<IpAddr>().is_ok() {
        return false;
    }
    let mut has_dns = false;
    for name in alt_names(cert_der) {
        if let AltName::Dns(presented) = name {
            has_dns = true;
            if presented_below(presented, &domain) {
                return true;
            }
        }
    }
    !has_dns && subject_cn(cert_der).is_some_and(|cn| presented_below(cn.as_bytes(), &domain))
}

/// Whether the certificate presents any of `names`. An empty list matches nothing.
pub fn matches_any_name(cert_der: &[u8], names: &[CertName]) -> bool {
    names.iter().any(|name| match name {
        CertName::Host(host) => matches_server_name(cert_der, host),
        CertName::Subdomain(domain) => names_a_subdomain(cert_der, domain),
    })
}

/// A person-readable reason for a webpki refusal, as it appears in logs.
fn webpki_reason(err: &webpki::Error) -> String {
    use webpki::Error as E;
    let text = match err {
        E::UnknownIssuer => "unknown issuer",
        E::CertExpired { .. } => "certificate expired",
        E::CertNotValidYet { .. } => "certificate not yet valid",
        E::InvalidCertValidity => "certificate validity period is invalid",
        E::RequiredEkuNotFoundContext(_) => {
            "certificate not valid for this purpose (extended key usage)"
        }
        E::InvalidSignatureForPublicKey => "bad signature",
        E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            "unsupported signature algorithm"
        }
        E::MaximumPathDepthExceeded => "chain has more than 6 intermediate CAs, the most followed",
        E::CaUsedAsEndEntity => "a CA certificate used as an end-entity certificate",
        E::EndEntityUsedAsCa => "an end-entity certificate used as a CA",
        E::PathLenConstraintViolated => "a CA's path length constraint is violated",
        E::NameConstraintViolation => "a CA's name constraints are violated",
        E::CertDistrusted => "certificate is distrusted",
        E::UnsupportedCertVersion => "unsupported certificate version (X.509 v3 is required)",
        E::UnsupportedCriticalExtension => "unsupported critical extension",
        E::BadDer | E::BadDerTime | E::TrailingData(_) => "malformed certificate",
        other => return format!("{other}"),
    };
    String::from(text)
}

fn cas_phrase(count: usize) -> String {
    match count {
        1 => String::from("1 CA"),
        n => format!("{n} CAs"),
    }
}

/// Judges a client's chain (leaf first, then what it sent): trusted when it chains to one of
/// `anchors` for client authentication at `now` with at most `verify_depth` CAs above the leaf,
/// the anchor included (SPEC A4; 0 trusts nothing). Never fails: an untrusted certificate is a
/// verdict with a reason for the log, not an error.
pub fn assess_client_chain(
    chain: &[CertificateDer<'_>],
    anchors: &[TrustAnchor<'_>],
    verify_depth: u32,
    now: UnixTime,
    algs: &[&dyn SignatureVerificationAlgorithm],
) -> CertVerdict {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return CertVerdict::Absent;
    };
    let leaf = match EndEntityCert::try_from(leaf) {
        Ok(leaf) => leaf,
        Err(err) => return CertVerdict::Untrusted(webpki_reason(&err)),
    };
    // The shortest path refused for depth alone, to explain a refusal better than webpki's
    // generic error would.
    let refused_depth: Cell<Option<usize>> = Cell::new(None);
    let limit = usize::try_from(verify_depth).unwrap_or(usize::MAX);
    let within_depth = |path: &VerifiedPath<'_>| {
        let cas = path.intermediate_certificates().count() + 1;
        if cas <= limit {
            return Ok(());
        }
        let shortest = refused_depth.get().map_or(cas, |seen| seen.min(cas));
        refused_depth.set(Some(shortest));
        Err(webpki::Error::MaximumPathDepthExceeded)
    };
    let result = leaf.verify_for_usage(
        algs,
        anchors,
        intermediates,
        now,
        KeyUsage::client_auth(),
        None,
        Some(&within_depth),
    );
    match (result, refused_depth.get()) {
        (Ok(_), _) => CertVerdict::Trusted,
        (Err(_), Some(cas)) => CertVerdict::Untrusted(format!(
            "chain is {} deep, limit {verify_depth}",
            cas_phrase(cas)
        )),
        (Err(err), None) => CertVerdict::Untrusted(webpki_reason(&err)),
    }
}

/// Why the server's certificate was not accepted (the delivery defers with
/// `4.7.5 Server certificate not verified`).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerCertError {
    /// The server sent no certificate.
    NoCertificate,
    /// The chain does not verify; the reason is for logs.
    Untrusted(String),
    /// The chain verifies but does not name the host we connected to.
    NameMismatch {
        /// The name or address that was checked.
        host: String,
    },
}

impl fmt::Display for ServerCertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerCertError::NoCertificate => f.write_str("no server certificate"),
            ServerCertError::Untrusted(reason) => write!(f, "untrusted certificate: {reason}"),
            ServerCertError::NameMismatch { host } => {
                write!(f, "certificate does not name {host}")
            }
        }
    }
}

/// Verifies a server's chain (leaf first) for the `verify` level: it must chain to `anchors`
/// for server authentication at `now`, and name `host` per [`matches_server_name`].
pub fn verify_server_chain(
    chain: &[CertificateDer<'_>],
    anchors: &[TrustAnchor<'_>],
    host: &str,
    now: UnixTime,
    algs: &[&dyn SignatureVerificationAlgorithm],
) -> Result<(), ServerCertError> {
    let names = [CertName::Host(String::from(host))];
    verify_server_chain_names(chain, anchors, &names, now, algs)
}

/// Verifies a server's chain (leaf first): it must chain to `anchors` for server
/// authentication at `now`, and present one of `names` ([`matches_any_name`]). The names
/// come from the match strategy of the TLS level (see
/// [`crate::tls_policy::cert_names`]).
pub fn verify_server_chain_names(
    chain: &[CertificateDer<'_>],
    anchors: &[TrustAnchor<'_>],
    names: &[CertName],
    now: UnixTime,
    algs: &[&dyn SignatureVerificationAlgorithm],
) -> Result<(), ServerCertError> {
    let (leaf_der, intermediates) = chain.split_first().ok_or(ServerCertError::NoCertificate)?;
    let leaf = EndEntityCert::try_from(leaf_der)
        .map_err(|err| ServerCertError::Untrusted(webpki_reason(&err)))?;
    leaf.verify_for_usage(
        algs,
        anchors,
        intermediates,
        now,
        KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|err| ServerCertError::Untrusted(webpki_reason(&err)))?;
    if matches_any_name(leaf_der, names) {
        return Ok(());
    }
    let wanted: Vec<String> = names.iter().map(|n| format!("{n}")).collect();
    let host = match wanted.is_empty() {
        true => String::from("any name the match strategy allows (none applies)"),
        false => wanted.join(" or "),
    };
    Err(ServerCertError::NameMismatch { host })
}

/// Everything the server session needs to know about a client's certificate: the trust
/// verdict, the `relay_clientcerts` entry it matches, and its names. The fingerprint lookup
/// runs for untrusted certificates too, as in Postfix: a listed fingerprint needs no CA.
pub fn judge_client_cert(
    chain: &[CertificateDer<'_>],
    anchors: &[TrustAnchor<'_>],
    verify_depth: u32,
    relay_clientcerts: &FingerprintMap,
    now: UnixTime,
    algs: &[&dyn SignatureVerificationAlgorithm],
) -> ClientCert {
    let Some(leaf) = chain.first() else {
        return ClientCert::default();
    };
    // Without a readable public key only the certificate digest can match; looking the
    // certificate up twice keeps that meaning.
    let spki = spki_der(leaf).unwrap_or(leaf);
    ClientCert {
        verdict: assess_client_chain(chain, anchors, verify_depth, now, algs),
        listed: relay_clientcerts.lookup_cert(leaf, spki),
        subject_cn: subject_cn(leaf),
        issuer_cn: issuer_cn(leaf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::CertMatch;
    use crate::fingerprint::{DigestKind, Fingerprint};
    use alloc::string::ToString;
    use alloc::vec;
    use core::time::Duration;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    const ALGS: &[&dyn SignatureVerificationAlgorithm] = webpki::ALL_VERIFICATION_ALGS;

    /// 2027-01-15, inside rcgen's default validity (1975..4096).
    fn now() -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000))
    }

    /// A CA made with rcgen: its parameters and key sign the next certificate down.
    struct TestCa {
        params: CertificateParams,
        key: KeyPair,
        der: CertificateDer<'static>,
    }

    fn ca_params(cn: &str) -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
    }

    fn root(cn: &str) -> TestCa {
        let params = ca_params(cn);
        let key = KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().clone();
        TestCa { params, key, der }
    }

    fn intermediate(cn: &str, parent: &TestCa) -> TestCa {
        let params = ca_params(cn);
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&parent.params, &parent.key);
        let der = params.signed_by(&key, &issuer).unwrap().der().clone();
        TestCa { params, key, der }
    }

    fn leaf_params(cn: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> CertificateParams {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        params
    }

    fn sign(params: &CertificateParams, parent: &TestCa) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&parent.params, &parent.key);
        params.signed_by(&key, &issuer).unwrap().der().clone()
    }

    fn client_leaf(cn: &str, parent: &TestCa) -> CertificateDer<'static> {
        sign(
            &leaf_params(cn, &[], ExtendedKeyUsagePurpose::ClientAuth),
            parent,
        )
    }

    fn self_signed(params: &CertificateParams) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn anchors(cas: &[&TestCa]) -> Vec<TrustAnchor<'static>> {
        let ders: Vec<CertificateDer<'static>> = cas.iter().map(|ca| ca.der.clone()).collect();
        trust_anchors(&ders).unwrap()
    }

    /// A client chain with `intermediates` CAs between the root and the leaf.
    fn client_chain(intermediates: usize) -> (TestCa, Vec<CertificateDer<'static>>) {
        let root = root("Test Root");
        let mut cas: Vec<TestCa> = Vec::new();
        for i in 0..intermediates {
            let ca = intermediate(
                &format!("Test Intermediate {i}"),
                cas.last().unwrap_or(&root),
            );
            cas.push(ca);
        }
        let leaf = client_leaf("laptop.example.com", cas.last().unwrap_or(&root));
        let mut chain = vec![leaf];
        chain.extend(cas.iter().rev().map(|ca| ca.der.clone()));
        (root, chain)
    }

    #[test]
    fn depth_limit_counts_cas_above_the_leaf_anchor_included() {
        for intermediates in 0..=2 {
            let (root, chain) = client_chain(intermediates);
            let anchors = anchors(&[&root]);
            let cas = intermediates + 1;
            for depth in 0u32..=4 {
                let verdict = assess_client_chain(&chain, &anchors, depth, now(), ALGS);
                if cas <= depth as usize {
                    assert_eq!(verdict, CertVerdict::Trusted, "{cas} CAs at depth {depth}");
                } else {
                    let reason = format!("chain is {} deep, limit {depth}", cas_phrase(cas));
                    assert_eq!(
                        verdict,
                        CertVerdict::Untrusted(reason),
                        "{cas} CAs at {depth}"
                    );
                }
            }
        }
        let (root, chain) = client_chain(2);
        let verdict = assess_client_chain(&chain, &anchors(&[&root]), 2, now(), ALGS);
        assert_eq!(
            verdict,
            CertVerdict::Untrusted(String::from("chain is 3 CAs deep, limit 2"))
        );
    }

    #[test]
    fn webpki_follows_at_most_six_intermediates() {
        let (root, chain) = client_chain(6);
        let anchors_ = anchors(&[&root]);
        assert_eq!(
            assess_client_chain(&chain, &anchors_, 9, now(), ALGS),
            CertVerdict::Trusted
        );
        let (root, chain) = client_chain(7);
        let verdict = assess_client_chain(&chain, &anchors(&[&root]), 9, now(), ALGS);
        assert_eq!(
            verdict,
            CertVerdict::Untrusted(String::from(
                "chain has more than 6 intermediate CAs, the most followed"
            ))
        );
    }

    #[test]
    fn intermediates_sent_in_any_order_with_extras() {
        let (root_ca, mut chain) = client_chain(2);
        chain[1..].reverse();
        chain.push(root("Unrelated").der);
        let verdict = assess_client_chain(&chain, &anchors(&[&root_ca]), 3, now(), ALGS);
        assert_eq!(verdict, CertVerdict::Trusted);
    }

    #[test]
    fn untrusted_verdicts_say_why() {
        let root_ca = root("Test Root");
        let other = root("Other Root");
        let mut expired = leaf_params("old", &[], ExtendedKeyUsagePurpose::ClientAuth);
        expired.not_before = rcgen::date_time_ymd(2020, 1, 1);
        expired.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let server_only = leaf_params("server", &[], ExtendedKeyUsagePurpose::ServerAuth);
        let cases: Vec<(&str, Vec<CertificateDer<'static>>, &str)> = vec![
            (
                "self-signed leaf",
                vec![self_signed(&leaf_params(
                    "me",
                    &[],
                    ExtendedKeyUsagePurpose::ClientAuth,
                ))],
                "unknown issuer",
            ),
            (
                "wrong anchor",
                vec![client_leaf("me", &other)],
                "unknown issuer",
            ),
            (
                "expired",
                vec![sign(&expired, &root_ca)],
                "certificate expired",
            ),
            (
                "server-only usage",
                vec![sign(&server_only, &root_ca)],
                "certificate not valid for this purpose (extended key usage)",
            ),
            (
                "garbage",
                vec![CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00])],
                "malformed certificate",
            ),
        ];
        let anchors = anchors(&[&root_ca]);
        for (what, chain, reason) in cases {
            let verdict = assess_client_chain(&chain, &anchors, 9, now(), ALGS);
            assert_eq!(
                verdict,
                CertVerdict::Untrusted(String::from(reason)),
                "{what}"
            );
        }
        assert_eq!(
            assess_client_chain(&[], &anchors, 9, now(), ALGS),
            CertVerdict::Absent
        );
    }

    #[test]
    fn server_chain_must_verify_and_name_the_host() {
        let root_ca = root("Relay Root");
        let server = leaf_params(
            "relay.example.com",
            &["relay.example.com"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let chain = vec![sign(&server, &root_ca)];
        let good = anchors(&[&root_ca]);
        let wrong = anchors(&[&root("Other")]);
        let verify = |anchors: &[TrustAnchor<'_>], host: &str| {
            verify_server_chain(&chain, anchors, host, now(), ALGS)
        };
        assert_eq!(verify(&good, "relay.example.com"), Ok(()));
        assert_eq!(verify(&good, "Relay.Example.com."), Ok(()));
        assert_eq!(
            verify(&good, "mx.example.com"),
            Err(ServerCertError::NameMismatch {
                host: String::from("mx.example.com")
            })
        );
        assert_eq!(
            verify(&wrong, "relay.example.com"),
            Err(ServerCertError::Untrusted(String::from("unknown issuer")))
        );
        let client_only = leaf_params(
            "relay.example.com",
            &["relay.example.com"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let chain = vec![sign(&client_only, &root_ca)];
        let result = verify_server_chain(&chain, &good, "relay.example.com", now(), ALGS);
        assert!(
            matches!(result, Err(ServerCertError::Untrusted(_))),
            "{result:?}"
        );
        assert_eq!(
            verify_server_chain(&[], &good, "relay.example.com", now(), ALGS),
            Err(ServerCertError::NoCertificate)
        );
        assert_eq!(
            ServerCertError::NameMismatch {
                host: String::from("h")
            }
            .to_string(),
            "certificate does not name h"
        );
    }

    #[test]
    fn server_name_matching() {
        let cert = |cn: &str, sans: &[&str]| {
            self_signed(&leaf_params(cn, sans, ExtendedKeyUsagePurpose::ServerAuth))
        };
        let exact = cert("cn.example.com", &["relay.example.com", "mx.example.net"]);
        let wildcard = cert("cn.example.com", &["*.example.com"]);
        let short_wildcard = cert("x", &["*.com"]);
        let partial_wildcard = cert("x", &["f*.example.com"]);
        let cn_only = cert("relay.example.com", &[]);
        let cn_wildcard = cert("*.example.com", &[]);
        let with_ip = cert("relay.example.com", &["192.0.2.7", "2001:db8::1"]);
        let ip_cn = cert("192.0.2.7", &[]);
        let table: &[(&CertificateDer<'_>, &str, bool)] = &[
            (&exact, "relay.example.com", true),
            (&exact, "RELAY.example.COM", true),
            (&exact, "relay.example.com.", true),
            (&exact, "[relay.example.com]", true),
            (&exact, "mx.example.net", true),
            (&exact, "cn.example.com", false), // CN ignored when DNS SANs exist
            (&exact, "example.com", false),
            (&exact, "x.relay.example.com", false),
            (&wildcard, "a.example.com", true),
            (&wildcard, "a.b.example.com", false),
            (&wildcard, "example.com", false),
            (&wildcard, ".example.com", false),
            (&short_wildcard, "a.com", false),
            (&partial_wildcard, "foo.example.com", false),
            (&cn_only, "relay.example.com", true),
            (&cn_only, "other.example.com", false),
            (&cn_wildcard, "a.example.com", true),
            (&cn_wildcard, "a.b.example.com", false),
            (&with_ip, "192.0.2.7", true),
            (&with_ip, "[192.0.2.7]", true),
            (&with_ip, "192.0.2.8", false),
            (&with_ip, "[ipv6:2001:db8::1]", true),
            (&with_ip, "2001:db8::1", true),
            (&with_ip, "2001:db8::2", false),
            // Only IP SANs: no DNS SAN, so the CN still names the host (as OpenSSL does).
            (&with_ip, "relay.example.com", true),
            // An IP literal is never compared with the CN.
            (&ip_cn, "192.0.2.7", false),
        ];
        for &(cert, host, expected) in table {
            let cn = subject_cn(cert);
            assert_eq!(
                matches_server_name(cert, host),
                expected,
                "{host} vs {cn:?} {:?}",
                dns_names(cert)
            );
        }
        assert_eq!(dns_names(&exact), ["relay.example.com", "mx.example.net"]);
    }

    #[test]
    fn subdomain_and_host_names() {
        let cert = |cn: &str, sans: &[&str]| {
            self_signed(&leaf_params(cn, sans, ExtendedKeyUsagePurpose::ServerAuth))
        };
        let host = |h: &str| CertName::Host(String::from(h));
        let below = |d: &str| CertName::Subdomain(String::from(d));
        let mx = cert("x", &["mx1.example.test"]);
        let deep = cert("x", &["a.b.Example.TEST."]);
        let apex = cert("x", &["example.test"]);
        let wildcard = cert("x", &["*.example.test"]);
        let bad_wildcards = cert("x", &["f*.example.test", "a.*.example.test", "*"]);
        let lookalike = cert("x", &["mx.badexample.test", "example.test.evil"]);
        let cn_only = cert("mx.example.test", &[]);
        let cn_with_san = cert("mx.example.test", &["other.test"]);
        let with_ip = cert("x", &["192.0.2.7"]);
        let table: &[(&CertificateDer<'_>, Vec<CertName>, bool)] = &[
            (&mx, vec![below("example.test")], true),
            (&mx, vec![below("EXAMPLE.test.")], true),
            (&mx, vec![host("example.test")], false),
            (&mx, vec![host("example.test"), below("example.test")], true),
            (&mx, vec![below("mx1.example.test")], false),
            (&mx, vec![], false),
            (&deep, vec![below("example.test")], true),
            (&deep, vec![below("b.example.test")], true),
            (&apex, vec![below("example.test")], false),
            (&apex, vec![host("example.test")], true),
            (&wildcard, vec![below("example.test")], true),
            (&wildcard, vec![host("example.test")], false),
            (&bad_wildcards, vec![below("example.test")], false),
            (&lookalike, vec![below("example.test")], false),
            (&cn_only, vec![below("example.test")], true),
            (&cn_with_san, vec![below("example.test")], false),
            (&with_ip, vec![below("0.2.7")], false),
            (&with_ip, vec![below("192.0.2.7")], false),
            (&with_ip, vec![host("192.0.2.7")], true),
        ];
        for (cert, names, expected) in table {
            assert_eq!(
                matches_any_name(cert, names),
                *expected,
                "{names:?} vs {:?}",
                dns_names(cert)
            );
        }
    }

    #[test]
    fn chain_must_present_one_of_the_names() {
        let root_ca = root("Relay Root");
        let server = leaf_params(
            "mail.example.test",
            &["mail.example.test"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let chain = vec![sign(&server, &root_ca)];
        let good = anchors(&[&root_ca]);
        let verify =
            |names: &[CertName]| verify_server_chain_names(&chain, &good, names, now(), ALGS);
        let domain = CertName::Host(String::from("example.test"));
        let below = CertName::Subdomain(String::from("example.test"));
        assert_eq!(verify(&[domain.clone(), below.clone()]), Ok(()));
        let err = verify(&[domain]).unwrap_err();
        assert_eq!(err.to_string(), "certificate does not name example.test");
        let err = verify(&[]).unwrap_err();
        assert!(matches!(err, ServerCertError::NameMismatch { .. }), "{err}");
        assert_eq!(
            verify_server_chain_names(&chain, &anchors(&[&root("Other")]), &[below], now(), ALGS),
            Err(ServerCertError::Untrusted(String::from("unknown issuer")))
        );
    }

    #[test]
    fn names_and_public_key_come_from_the_certificate() {
        let root_ca = root("Montravail CA");
        let leaf = client_leaf("laptop.montravail.com", &root_ca);
        assert_eq!(subject_cn(&leaf).as_deref(), Some("laptop.montravail.com"));
        assert_eq!(issuer_cn(&leaf).as_deref(), Some("Montravail CA"));
        let webpki_spki = EndEntityCert::try_from(&leaf)
            .unwrap()
            .subject_public_key_info();
        assert_eq!(spki_der(&leaf), Some(webpki_spki.as_ref()));
        assert_eq!(spki_der(b"\x30\x03junk"), None);
        assert_eq!(subject_cn(b""), None);
    }

    #[test]
    fn directory_strings_decode() {
        let cases: &[(u8, &[u8], Option<&str>)] = &[
            (0x0c, "Zoë".as_bytes(), Some("Zoë")),
            (0x13, b"Relay CA", Some("Relay CA")),
            (0x16, b"a@b", Some("a@b")),
            (0x14, b"Zo\xeb", Some("Zoë")),
            (0x1e, b"\x00Z\x00o\x00\xeb", Some("Zoë")),
            (0x1c, b"\x00\x00\x00Z\x00\x00\x00\xeb", Some("Zë")),
            (0x0c, b"a\nb\x00", Some("a?b?")),
            (0x13, b"\xff", Some("?")),
            (0x04, b"octets", None),
        ];
        for &(tag, bytes, expected) in cases {
            assert_eq!(
                directory_string(tag, bytes).as_deref(),
                expected,
                "{tag:#x}"
            );
        }
    }

    /// An X.509 v1 certificate made with `openssl x509 -req -signkey`: webpki refuses v1, but
    /// it can still be listed by fingerprint.
    const V1_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBJTCBzQIUNISDs++SkO+xs0jyMuOFWLtLuUwwCgYIKoZIzj0EAwIwFTETMBEG
A1UEAwwKb2xkIGxhcHRvcDAgFw0yNjExMjkwNDQ3MjhaGA8yMTI2MTEwNTA0NDcy
OFowFTETMBEGA1UEAwwKb2xkIGxhcHRvcDBZMBMGByqGSM49AgEGCCqGSM49AwEH
A0IABB66RKguG2RoVlMqBSQE0+FngyBFL6o9b386gbmqYd7UtFmY5NxREdFiAtc9
mwOxVe7+tsvTpamZnst9rJfU1TAwCgYIKoZIzj0EAwIDRwAwRAIgfTkvigw/UpEL
eubYHn2Y0mVPHcAUyIjZwur2v1mJP3QCIEpRHj7zPDUX44qe1NRivqLmAj58742Q
b0raTh5x09rK
-----END CERTIFICATE-----
";
    /// `openssl x509 -fingerprint -sha256` of [`V1_CERT`], and of its DER public key.
    const V1_SHA256: &str = "E7:B8:1C:10:5C:85:EF:83:CD:FD:74:5F:44:8B:42:ED:BB:30:79:60:02:F3:\
                             3C:FB:8A:B3:6A:5A:18:C5:5B:4E";
    const V1_KEY_SHA256: &str = "2d:b0:18:07:80:7a:37:e5:67:e3:d2:83:6d:5a:49:91:19:00:44:80:84:\
                                 86:c6:e5:a3:f5:7b:c7:b0:9f:ca:d9";

    #[test]
    fn v1_certificate_is_untrusted_but_listable() {
        let chain = parse_certificates(V1_CERT.as_bytes()).unwrap();
        let leaf = &chain[0];
        assert_eq!(
            Fingerprint::of(DigestKind::Sha256, leaf).to_string(),
            V1_SHA256
        );
        let (map, _) = FingerprintMap::from_table("t", [(V1_KEY_SHA256, "old", 1)]);
        let judged = judge_client_cert(&chain, &[], 9, &map, now(), ALGS);
        assert_eq!(
            judged,
            ClientCert {
                verdict: CertVerdict::Untrusted(String::from(
                    "unsupported certificate version (X.509 v3 is required)"
                )),
                listed: Some(CertMatch {
                    label: String::from("old"),
                    digest: DigestKind::Sha256,
                    public_key: true,
                }),
                subject_cn: Some(String::from("old laptop")),
                issuer_cn: Some(String::from("old laptop")),
            }
        );
    }

    #[test]
    fn judge_combines_verdict_listing_and_names() {
        let (root_ca, chain) = client_chain(1);
        let leaf_sha256 = Fingerprint::of(DigestKind::Sha256, &chain[0]).to_string();
        let (map, _) = FingerprintMap::from_table("t", [(leaf_sha256.as_str(), "laptop", 1)]);
        let judged = judge_client_cert(&chain, &anchors(&[&root_ca]), 2, &map, now(), ALGS);
        assert_eq!(judged.verdict, CertVerdict::Trusted);
        assert_eq!(
            judged.listed.as_ref().map(|m| m.label.as_str()),
            Some("laptop")
        );
        assert_eq!(judged.subject_cn.as_deref(), Some("laptop.example.com"));
        assert_eq!(judged.issuer_cn.as_deref(), Some("Test Intermediate 0"));
        // The same certificate against no CA: untrusted, and still listed.
        let judged = judge_client_cert(&chain, &[], 2, &map, now(), ALGS);
        assert_eq!(
            judged.verdict,
            CertVerdict::Untrusted(String::from("unknown issuer"))
        );
        assert!(judged.listed.is_some());
        let empty = FingerprintMap::default();
        let judged = judge_client_cert(&[], &[], 2, &empty, now(), ALGS);
        assert_eq!(judged, ClientCert::default());
    }

    /// A PEM block of any label (rcgen writes only certificates and keys).
    fn pem_block(label: &str, der: &[u8]) -> String {
        let encoded = crate::dkim::base64(der);
        format!("-----BEGIN {label}-----\n{encoded}\n-----END {label}-----\n")
    }

    #[test]
    fn certificate_files_in_pem_and_der() {
        let root_ca = root("Root");
        let key = KeyPair::generate().unwrap();
        let leaf = leaf_params("leaf", &[], ExtendedKeyUsagePurpose::ClientAuth)
            .signed_by(&key, &Issuer::from_params(&root_ca.params, &root_ca.key))
            .unwrap();
        let root_pem = pem_block("CERTIFICATE", &root_ca.der);
        // Postfix allows the key in the certificate file, before or after the chain.
        let bundle = format!("{}{}{root_pem}", key.serialize_pem(), leaf.pem());
        let certs = parse_certificates(bundle.as_bytes()).unwrap();
        assert_eq!(certs, [leaf.der().clone(), root_ca.der.clone()]);
        assert_eq!(
            parse_certificates(leaf.der()).unwrap(),
            [leaf.der().clone()]
        );
        assert_eq!(
            parse_private_key(bundle.as_bytes()).unwrap().secret_der(),
            key.serialized_der()
        );
        assert_eq!(
            parse_private_key(key.serialized_der())
                .unwrap()
                .secret_der(),
            key.serialized_der()
        );

        let junk_cert = pem_block("CERTIFICATE", b"\x30\x03\x02\x01\x00");
        let cases: Vec<(Vec<u8>, CertError, &str)> = vec![
            (
                key.serialize_pem().into_bytes(),
                CertError::NoCertificate {
                    found: Some("a private key"),
                },
                "a private key, not a certificate",
            ),
            (
                key.serialized_der().to_vec(),
                CertError::NoCertificate {
                    found: Some("a private key"),
                },
                "a private key, not a certificate",
            ),
            (
                b"\n\n".to_vec(),
                CertError::NoCertificate { found: None },
                "no certificate in PEM",
            ),
            (
                b"-----BEGIN SOMETHING-----\nAAAA\n-----END SOMETHING-----\n".to_vec(),
                CertError::NoCertificate { found: None },
                "no certificate in PEM",
            ),
            (
                b"hello".to_vec(),
                CertError::NotPemOrDer,
                "neither PEM text nor DER data",
            ),
            (
                format!("{root_pem}{junk_cert}").into_bytes(),
                CertError::BadCertificate {
                    index: 2,
                    reason: String::from("not an X.509 certificate"),
                },
                "certificate 2 is malformed: not an X.509 certificate",
            ),
        ];
        for (input, error, message) in cases {
            let result = parse_certificates(&input);
            assert_eq!(result, Err(error), "{message}");
            assert_eq!(result.unwrap_err().to_string(), message);
        }
        let broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n";
        let err = parse_certificates(broken).unwrap_err();
        assert!(matches!(err, CertError::Pem(_)), "{err:?}");
        assert!(err.to_string().starts_with("bad PEM: "), "{err}");
    }

    #[test]
    fn private_key_errors_say_what_was_found() {
        let root_ca = root("Root");
        let cert_pem = pem_block("CERTIFICATE", &root_ca.der);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (cert_pem.into_bytes(), "a certificate, not a private key"),
            (root_ca.der.to_vec(), "a certificate, not a private key"),
            (
                pem_block("ENCRYPTED PRIVATE KEY", b"\x30\x00").into_bytes(),
                "the private key is encrypted; store it without a passphrase (mode 0600)",
            ),
            (b"".to_vec(), "no private key in PEM"),
            (
                b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n".to_vec(),
                "the private key is encrypted; store it without a passphrase (mode 0600)",
            ),
            (
                b"\x30\x03\x02\x01\x07".to_vec(),
                "bad private key: unknown or invalid key format",
            ),
        ];
        for (input, message) in cases {
            let err = parse_private_key(&input).unwrap_err();
            assert_eq!(err.to_string(), message, "{err:?}");
        }
    }

    #[test]
    fn ca_certificate_as_client_certificate_is_untrusted_by_webpki() {
        // `openssl req -x509` marks its certificates CA:TRUE; webpki refuses such a leaf even
        // when it is its own trust anchor, where OpenSSL would accept it.
        let ca = root("self");
        let verdict = assess_client_chain(
            core::slice::from_ref(&ca.der),
            &anchors(&[&ca]),
            9,
            now(),
            ALGS,
        );
        assert_eq!(
            verdict,
            CertVerdict::Untrusted(String::from(
                "a CA certificate used as an end-entity certificate"
            ))
        );
    }

    #[test]
    fn client_certificate_anchored_as_itself_is_trusted_at_depth_one() {
        let key = KeyPair::generate().unwrap();
        let params = leaf_params("me", &[], ExtendedKeyUsagePurpose::ClientAuth);
        let der = params.self_signed(&key).unwrap().der().clone();
        let anchors = trust_anchors(core::slice::from_ref(&der)).unwrap();
        let chain = [der];
        assert_eq!(
            assess_client_chain(&chain, &anchors, 1, now(), ALGS),
            CertVerdict::Trusted
        );
        assert_eq!(
            assess_client_chain(&chain, &anchors, 0, now(), ALGS),
            CertVerdict::Untrusted(String::from("chain is 1 CA deep, limit 0"))
        );
    }

    #[test]
    fn trust_anchor_errors_name_the_certificate() {
        let root_ca = root("Root");
        let junk = CertificateDer::from(vec![0x30, 0x00]);
        let err = trust_anchors(&[root_ca.der.clone(), junk]).unwrap_err();
        assert!(
            matches!(err, CertError::BadCertificate { index: 2, .. }),
            "{err:?}"
        );
    }
}
