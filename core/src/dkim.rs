//! DKIM signing without the cryptography (RFC 6376, with RFC 8463's Ed25519): the relaxed
//! canonicalization of header and body, fed as the message streams in; the choice of the
//! signed header fields; the `DKIM-Signature:` field and the exact bytes its signature
//! covers; the DNS TXT record that publishes a key; and the lines of the keys map
//! (`dkim_signing_keys`).
//!
//! Not here: keys, signing and random numbers (the relay's shell, with ring), which
//! messages are signed (the relay signs what its listed clients submit; the rule for a
//! certificate bound to senders, [`check_from_owner`], is here), verification (the
//! receivers do it), and the `simple` canonicalization (never written: `relaxed` survives
//! the whitespace changes that forwarding servers make).

use crate::address::parse_mailbox_with;
use crate::ccert_senders;
use crate::message::{addresses, HeaderSection};
use crate::table::Table;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write as _};
use sha2::{Digest, Sha256};

/// Largest header section looked at; a message whose header is longer is not signed.
pub use crate::message::HEADER_LIMIT;

/// The header fields signed when present, in the order they are listed in `h=`; `From` is
/// always present in a signed message.
pub const SIGNED_FIELDS: [&str; 12] = [
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
];

/// Fields listed once more than they occur ("over-signed"): a receiver then rejects the
/// signature of a copy to which a second `From:` or `Subject:` was added, which a reader
/// could be shown instead of the signed one.
pub const OVERSIGNED_FIELDS: [&str; 2] = ["from", "subject"];

/// The signing algorithm of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// RSA PKCS#1 v1.5 over SHA-256 (`a=rsa-sha256`, `k=rsa`).
    RsaSha256,
    /// Ed25519 over the SHA-256 of the signed data (`a=ed25519-sha256`, `k=ed25519`,
    /// RFC 8463).
    Ed25519Sha256,
}

impl Algorithm {
    /// The `a=` value.
    pub fn tag(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }

    /// The key type of the DNS record (`k=`).
    pub fn key_type(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa",
            Algorithm::Ed25519Sha256 => "ed25519",
        }
    }
}

/// Why a message is not signed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignError {
    /// The header section is longer than [`HEADER_LIMIT`].
    HeaderTooLarge,
    /// A line that is no header field ends the header section without an empty line:
    /// receivers would read a different header than the one signed.
    NoSeparator,
    /// No `From:` field.
    NoFrom,
    /// More than one `From:` field.
    SeveralFrom,
    /// The `From:` field holds no address, or several.
    FromNotOneAddress,
    /// The `From:` address has no domain.
    FromWithoutDomain,
    /// The client's certificate is bound to senders (`smtpd_sender_ccert_maps`) and its
    /// label does not own the `From:` address.
    FromNotOwned {
        /// The `From:` address.
        address: String,
        /// The certificate's `relay_clientcerts` label.
        label: String,
    },
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignError::HeaderTooLarge => "the header section is larger than 100 kB",
            SignError::NoSeparator => "the header section does not end with an empty line",
            SignError::NoFrom => "the message has no From: header",
            SignError::SeveralFrom => "the message has more than one From: header",
            SignError::FromNotOneAddress => "the From: header does not hold exactly one address",
            SignError::FromWithoutDomain => "the From: address has no domain",
            SignError::FromNotOwned { address, label } => {
                return write!(f, "From: <{address}> is not owned by certificate {label}");
            }
        })
    }
}

/// Relaxed body canonicalization (RFC 6376 3.4.4), one byte at a time: runs of blanks
/// become one space, blanks at line ends and empty lines at the end go, and a last line
/// without its CR LF gets one.
#[derive(Clone, Debug, Default)]
pub struct RelaxedBody {
    /// Empty lines seen and not yet written (written only when a line with text follows).
    empty_lines: usize,
    /// Blanks seen in this line after its last text.
    blank: bool,
    /// This line has text.
    started: bool,
    /// A CR was seen; a LF after it ends the line.
    cr: bool,
}

impl RelaxedBody {
    /// Canonicalizes `input` (the body as it continues) into `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if self.cr {
                self.cr = false;
                if b == b'\n' {
                    self.end_line(out);
                    continue;
                }
                // A CR of its own is text.
                self.text(b'\r', out);
            }
            match b {
                b'\r' => self.cr = true,
                b' ' | b'\t' => self.blank = true,
                _ => self.text(b, out),
            }
        }
    }

    /// Ends the body: completes the last line.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.cr {
            self.cr = false;
            self.text(b'\r', out);
        }
        if self.started {
            out.extend_from_slice(b"\r\n");
            self.started = false;
        }
        self.empty_lines = 0;
        self.blank = false;
    }

    fn text(&mut self, b: u8, out: &mut Vec<u8>) {
        if !self.started {
            for _ in 0..self.empty_lines {
                out.extend_from_slice(b"\r\n");
            }
            self.empty_lines = 0;
            self.started = true;
        }
        if self.blank {
            out.push(b' ');
            self.blank = false;
        }
        out.push(b);
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        if self.started {
            out.extend_from_slice(b"\r\n");
        } else {
            self.empty_lines += 1;
        }
        self.started = false;
        self.blank = false;
    }
}

/// Appends the relaxed canonical form of one header field (RFC 6376 3.4.2), given as
/// written (`Name: value`, continuation lines, CR LF included): the name in lower case, no
/// blanks around the colon, the value unfolded with runs of blanks made one space and none
/// at either end, then CR LF.
pub fn relaxed_header(field: &[u8], out: &mut Vec<u8>) {
    let colon = field.iter().position(|&b| b == b':').unwrap_or(field.len());
    let name = trim_blanks(&field[..colon]);
    out.extend(name.iter().map(u8::to_ascii_lowercase));
    out.push(b':');
    let value = field.get(colon + 1..).unwrap_or_default();
    let mut blank = false;
    let mut any = false;
    for &b in value {
        match b {
            b'\r' | b'\n' => {}
            b' ' | b'\t' => blank = true,
            _ => {
                if blank && any {
                    out.push(b' ');
                }
                blank = false;
                any = true;
                out.push(b);
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn trim_blanks(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Where the message hasher is.
#[derive(Debug)]
enum Phase {
    /// Gathering the header section; `checked` octets are whole header lines.
    Header { text: Vec<u8>, checked: usize },
    /// In the body, hashing.
    Body,
    /// The message cannot be signed.
    Failed(SignError),
}

/// Reads a message as it streams in (CR LF lines, as the SMTP server stores them): keeps
/// its header section and hashes its relaxed-canonical body.
#[derive(Debug)]
pub struct MessageHasher {
    phase: Phase,
    header: Option<HeaderSection>,
    body: RelaxedBody,
    hash: Sha256,
    scratch: Vec<u8>,
}

impl Default for MessageHasher {
    fn default() -> Self {
        MessageHasher::new()
    }
}

impl MessageHasher {
    /// Ready for the first octet of the message.
    pub fn new() -> MessageHasher {
        MessageHasher {
            phase: Phase::Header {
                text: Vec::new(),
                checked: 0,
            },
            header: None,
            body: RelaxedBody::default(),
            hash: Sha256::new(),
            scratch: Vec::new(),
        }
    }

    /// The header section, once it has ended.
    pub fn header(&self) -> Option<&HeaderSection> {
        self.header.as_ref()
    }

    /// Why the message cannot be signed, known before its end.
    pub fn failure(&self) -> Option<&SignError> {
        match &self.phase {
            Phase::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Takes the next octets of the message.
    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.phase {
            Phase::Body => self.hash_body(bytes),
            Phase::Failed(_) => {}
            Phase::Header { text, checked } => {
                text.extend_from_slice(bytes);
                match scan_header(text, checked) {
                    Scan::More if text.len() > HEADER_LIMIT => {
                        self.phase = Phase::Failed(SignError::HeaderTooLarge);
                    }
                    Scan::More => {}
                    Scan::Failed(e) => self.phase = Phase::Failed(e),
                    Scan::Ended { header_len } if header_len > HEADER_LIMIT => {
                        self.phase = Phase::Failed(SignError::HeaderTooLarge);
                    }
                    Scan::Ended { header_len } => {
                        let text = core::mem::take(text);
                        self.header = Some(HeaderSection::parse(&text[..header_len]));
                        self.phase = Phase::Body;
                        self.hash_body(&text[header_len + 2..]);
                    }
                }
            }
        }
    }

    fn hash_body(&mut self, bytes: &[u8]) {
        self.body.feed(bytes, &mut self.scratch);
        self.hash.update(&self.scratch);
        self.scratch.clear();
    }

    /// Ends the message: its header and body hash, or why it cannot be signed.
    pub fn finish(mut self) -> Result<Hashed, SignError> {
        match core::mem::replace(&mut self.phase, Phase::Body) {
            Phase::Failed(e) => return Err(e),
            Phase::Header { text, checked } => {
                // The message ended inside its header: all of it is header, the body empty.
                if checked != text.len() {
                    // A last line without CR LF; the server never stores one.
                    return Err(SignError::NoSeparator);
                }
                self.header = Some(HeaderSection::parse(&text));
            }
            Phase::Body => {}
        }
        self.body.finish(&mut self.scratch);
        self.hash.update(&self.scratch);
        let header = self.header.take().unwrap_or_default();
        let domain = from_domain(&header)?;
        Ok(Hashed {
            header,
            from_domain: domain,
            body_hash: self.hash.finalize().into(),
        })
    }
}

enum Scan {
    More,
    Ended { header_len: usize },
    Failed(SignError),
}

/// Looks at the whole lines of `text` past `checked`: an empty line ends the header, a
/// line that is neither a field nor a continuation is refused.
fn scan_header(text: &[u8], checked: &mut usize) -> Scan {
    while let Some(len) = text[*checked..].windows(2).position(|w| w == b"\r\n") {
        let line = &text[*checked..*checked + len];
        if line.is_empty() {
            return Scan::Ended {
                header_len: *checked,
            };
        }
        let continues = *checked > 0 && matches!(line[0], b' ' | b'\t');
        if !continues && !is_field_start(line) {
            return Scan::Failed(SignError::NoSeparator);
        }
        *checked += len + 2;
    }
    Scan::More
}

fn is_field_start(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let name = trim_blanks(&line[..colon]);
    !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b))
}

/// The one address in the one `From:` field, as written there (without display name or
/// angle brackets).
pub fn from_address(header: &HeaderSection) -> Result<String, SignError> {
    let mut from = header.fields().iter().filter(|f| f.is("from"));
    let field = from.next().ok_or(SignError::NoFrom)?;
    if from.next().is_some() {
        return Err(SignError::SeveralFrom);
    }
    let mut found = addresses(&field.value());
    match found.pop() {
        Some(address) if found.is_empty() => Ok(address),
        _ => Err(SignError::FromNotOneAddress),
    }
}

/// The domain of the one address in the one `From:` field, in lower case.
pub fn from_domain(header: &HeaderSection) -> Result<String, SignError> {
    let address = from_address(header)?;
    match address.rsplit_once('@') {
        Some((_, domain)) if !domain.is_empty() => Ok(domain.trim_end_matches('.').to_lowercase()),
        _ => Err(SignError::FromWithoutDomain),
    }
}

/// Whether the certificate labelled `label` owns the one `From:` address of `header`, by
/// the rule `reject_sender_ccert_mismatch` applies to envelope senders
/// ([`ccert_senders::lookup`] in the sender maps `tables`): the relay signs a bound
/// certificate's mail only for the addresses it may send as. An address that does not
/// read as `local@domain` is owned by no one.
pub fn check_from_owner(
    header: &HeaderSection,
    tables: &[Table],
    label: &str,
) -> Result<(), SignError> {
    let address = from_address(header)?;
    let owned = parse_mailbox_with(&address, true)
        .is_ok_and(|mailbox| ccert_senders::lookup(tables, label, &mailbox).is_owned());
    if owned {
        Ok(())
    } else {
        Err(SignError::FromNotOwned {
            address,
            label: String::from(label),
        })
    }
}

/// A message read whole: what its signature needs.
#[derive(Clone, Debug)]
pub struct Hashed {
    header: HeaderSection,
    from_domain: String,
    body_hash: [u8; 32],
}

/// The tags of a signature besides the hashes.
#[derive(Clone, Copy, Debug)]
pub struct Tags<'a> {
    /// The key's algorithm.
    pub algorithm: Algorithm,
    /// `d=`: the signing domain.
    pub domain: &'a str,
    /// `s=`: the selector.
    pub selector: &'a str,
    /// `t=`: when the signature was made, unix seconds.
    pub timestamp: u64,
}

impl Hashed {
    /// The header section.
    pub fn header(&self) -> &HeaderSection {
        &self.header
    }

    /// The domain of the `From:` address, in lower case.
    pub fn from_domain(&self) -> &str {
        &self.from_domain
    }

    /// The SHA-256 of the relaxed-canonical body (`bh=`).
    pub fn body_hash(&self) -> [u8; 32] {
        self.body_hash
    }

    /// The names listed in `h=`: each field of [`SIGNED_FIELDS`] as often as it occurs, the
    /// [`OVERSIGNED_FIELDS`] once more (so a `Subject:` cannot be added to a message
    /// signed without one either).
    pub fn signed_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        for name in SIGNED_FIELDS {
            let mut times = self.header.fields().iter().filter(|f| f.is(name)).count();
            if OVERSIGNED_FIELDS.contains(&name) {
                times += 1;
            }
            names.extend(core::iter::repeat_n(name, times));
        }
        names
    }

    /// The signature field without its signature, and the octets to sign.
    pub fn prepare(&self, tags: &Tags<'_>) -> Unsigned {
        let names = self.signed_names();
        let mut field = Folded::new("DKIM-Signature:");
        field.tag(&["v=1"]);
        field.tag(&[&alloc::format!("a={}", tags.algorithm.tag())]);
        field.tag(&["c=relaxed/relaxed"]);
        field.tag(&[&alloc::format!("d={}", tags.domain)]);
        field.tag(&[&alloc::format!("s={}", tags.selector)]);
        field.tag(&[&alloc::format!("t={}", tags.timestamp)]);
        let mut h: Vec<String> = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let sep = if i == 0 { "h=" } else { ":" };
            h.push(alloc::format!("{sep}{name}"));
        }
        let pieces: Vec<&str> = h.iter().map(String::as_str).collect();
        field.tag(&pieces);
        field.tag(&[&alloc::format!("bh={}", base64(&self.body_hash))]);
        field.tag(&["b="]);
        let data = signed_data(&self.header, &names, field.text.as_bytes());
        Unsigned { field, data }
    }
}

/// The octets a signature covers (RFC 6376 3.7): the fields named in `names`, each taken
/// from the bottom up among those of its name (a name listed more often than it occurs adds
/// nothing), in relaxed form, then the signature field itself in relaxed form without its
/// final CR LF, its `b=` value empty.
pub fn signed_data(header: &HeaderSection, names: &[&str], signature_field: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    // Per name: its fields from the bottom up, gathered once, and how many are taken. A
    // header of thousands of fields of one name stays linear.
    let mut seen: Vec<(String, Vec<&[u8]>, usize)> = Vec::new();
    for name in names {
        let lower = name.trim().to_ascii_lowercase();
        let i = match seen.iter().position(|(n, _, _)| *n == lower) {
            Some(i) => i,
            None => {
                let fields = header
                    .fields()
                    .iter()
                    .rev()
                    .filter(|f| f.is(&lower))
                    .map(|f| f.as_bytes())
                    .collect();
                seen.push((lower, fields, 0));
                seen.len() - 1
            }
        };
        let (_, fields, taken) = &mut seen[i];
        if let Some(f) = fields.get(*taken) {
            relaxed_header(f, &mut out);
        }
        *taken += 1;
    }
    relaxed_header(signature_field, &mut out);
    out.truncate(out.len() - 2);
    out
}

/// A `DKIM-Signature:` field waiting for its signature.
#[derive(Clone, Debug)]
pub struct Unsigned {
    field: Folded,
    data: Vec<u8>,
}

impl Unsigned {
    /// The octets to sign: `rsa-sha256` signs them (hashing them itself), `ed25519-sha256`
    /// signs their [`digest`](Self::digest).
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The SHA-256 of [`data`](Self::data).
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(&self.data).into()
    }

    /// The whole field with `signature`, folded, CR LF at the end: ready to go before the
    /// message.
    pub fn complete(mut self, signature: &[u8]) -> String {
        let encoded = base64(signature);
        let mut rest = encoded.as_str();
        while !rest.is_empty() {
            let (piece, more) = rest.split_at(rest.len().min(64));
            self.field.piece(piece, "");
            rest = more;
        }
        self.field.text.push_str("\r\n");
        self.field.text
    }
}

/// Header field text folded before 78 columns where it can be.
#[derive(Clone, Debug)]
struct Folded {
    text: String,
    column: usize,
}

const WIDTH: usize = 78;

impl Folded {
    fn new(name: &str) -> Folded {
        Folded {
            text: String::from(name),
            column: name.len(),
        }
    }

    /// One `tag=value` made of pieces between which the value may be folded.
    fn tag(&mut self, pieces: &[&str]) {
        if !self.text.ends_with(':') {
            self.text.push(';');
            self.column += 1;
        }
        for (i, piece) in pieces.iter().enumerate() {
            self.piece(piece, if i == 0 { " " } else { "" });
        }
    }

    fn piece(&mut self, piece: &str, space: &str) {
        if self.column + space.len() + piece.len() > WIDTH {
            self.text.push_str("\r\n\t");
            self.column = 8;
        } else {
            self.text.push_str(space);
            self.column += space.len();
        }
        self.text.push_str(piece);
        self.column += piece.len();
    }
}

/// Standard base64 with padding (RFC 4648 4).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The DNS record that publishes a key, as a zone-file line: `p=` holds `public_key`
/// (for RSA the DER SubjectPublicKeyInfo, for Ed25519 the 32 raw octets) in base64, and the
/// text is cut into quoted strings of at most 255 octets, as a TXT record needs.
pub fn dns_record(selector: &str, domain: &str, algorithm: Algorithm, public_key: &[u8]) -> String {
    let text = alloc::format!(
        "v=DKIM1; k={}; p={}",
        algorithm.key_type(),
        base64(public_key)
    );
    let mut out = alloc::format!("{selector}._domainkey.{domain}. IN TXT");
    let mut rest = text.as_str();
    while !rest.is_empty() {
        // The text is ASCII: any index is a character boundary.
        let (piece, more) = rest.split_at(rest.len().min(255));
        let _ = write!(out, " \"{piece}\"");
        rest = more;
    }
    out
}

/// Why a line of `dkim_signing_keys` cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyLineError {
    /// The key column is no domain name.
    BadDomain(String),
    /// The value is not `SELECTOR KEYFILE`.
    Shape,
    /// The selector is not a dot-separated list of letters, digits and hyphens.
    BadSelector(String),
    /// The key file is not an absolute path.
    RelativePath(String),
}

impl fmt::Display for KeyLineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyLineError::BadDomain(d) => write!(f, "\"{d}\" is not a domain name"),
            KeyLineError::Shape => f.write_str(
                "expected \"DOMAIN SELECTOR KEYFILE\" (for example \"example.org mail \
                 /etc/certrelay/dkim/example.org.mail.pem\")",
            ),
            KeyLineError::BadSelector(s) => write!(
                f,
                "selector \"{s}\" must be letters, digits and hyphens, in dot-separated labels"
            ),
            KeyLineError::RelativePath(p) => {
                write!(f, "key file \"{p}\" must be an absolute path")
            }
        }
    }
}

/// One line of the keys map: the domain (the key column) and its `SELECTOR KEYFILE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLine {
    /// The `From:` domain it signs, in lower case.
    pub domain: String,
    /// `s=`.
    pub selector: String,
    /// The PKCS#8 PEM file of the private key.
    pub key_file: String,
}

impl KeyLine {
    /// Reads a table entry `key` → `value`.
    pub fn parse(key: &str, value: &str) -> Result<KeyLine, KeyLineError> {
        let domain = key.trim_end_matches('.').to_ascii_lowercase();
        if !is_dns_name(&domain) {
            return Err(KeyLineError::BadDomain(key.into()));
        }
        let mut words = value.split_ascii_whitespace();
        let (Some(selector), Some(key_file), None) = (words.next(), words.next(), words.next())
        else {
            return Err(KeyLineError::Shape);
        };
        if !is_dns_name(selector) {
            return Err(KeyLineError::BadSelector(selector.into()));
        }
        if !key_file.starts_with('/') {
            return Err(KeyLineError::RelativePath(key_file.into()));
        }
        Ok(KeyLine {
            domain,
            selector: selector.to_ascii_lowercase(),
            key_file: key_file.into(),
        })
    }
}

/// Dot-separated labels of letters, digits, hyphens and underscores (not at a label's
/// ends but for the underscore), at most 253 octets.
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests;
