//! The envelope record as text: one `key: value` per line, readable with `cat`.
//!
//! ```text
//! certrelay-envelope 1
//! id: 0Q4M3J8000002D
//! arrival: 1700000000
//! sender: alice@example.org
//! size: 1834
//! bounce: no
//! smtputf8: yes
//! attempts: 1
//! next-attempt: 1700000360
//! last-error: connect to mx.example.net[192.0.2.7]:25: Connection refused
//! client-name: laptop.example.org
//! client-addr: 192.0.2.1
//! helo: laptop
//! protocol: ESMTPS
//! tls: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)
//! dkim-signature: DKIM-Signature: v=1; a=rsa-sha256; ...%0D%0A
//! rcpt: bob@example.net
//! state: deferred
//! dsn: 4.4.1
//! reason: connect to mx.example.net[192.0.2.7]:25: Connection refused
//! remote-mta:
//! end
//! ```
//!
//! `smtputf8:` is written only for a message that asked for SMTPUTF8, and read as `no` when
//! absent, so records written before it existed read as they did.
//!
//! The first line names the format and its version. Message-level keys come first, then
//! each `rcpt:` line opens a recipient whose keys follow it. `end` closes the record, so a
//! cut-off file is recognised rather than read as a message with fewer recipients.
//!
//! Values are escaped: `%`, control characters, and every non-ASCII byte are written as
//! `%XX`, and so is a space at either end of a value (editors strip those). An address
//! carrying CR LF, or a Unicode line separator, therefore cannot start a line of its own and
//! forge a key. Non-ASCII text stays recoverable exactly (it is UTF-8, byte for byte).

use super::envelope::{ClientFacts, Envelope, Recipient, RecipientState};
use super::id::QueueId;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write as _};
use core::net::IpAddr;

/// First line of every record this version writes.
const MAGIC: &str = "certrelay-envelope";
const VERSION: &str = "1";

/// A record that cannot be read: where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    /// 1-based line number (one past the last line for a cut-off record).
    pub line: usize,
    /// What was wrong there.
    pub kind: RecordErrorKind,
}

/// What was wrong with a record line.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordErrorKind {
    /// The first line is not `certrelay-envelope <version>`.
    NotARecord,
    /// A version this program does not know (written by a newer one?).
    UnsupportedVersion(String),
    /// A line without `key: value` shape.
    NoColon,
    /// A key this version does not know.
    UnknownKey(String),
    /// A key given twice for the message or for one recipient.
    DuplicateKey(String),
    /// A message key after the first `rcpt:`, or a recipient key before it.
    OutOfPlace(String),
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// The line (or an unescaped value) is not UTF-8.
    NotUtf8,
    /// A number that does not parse (the key is given).
    BadNumber(String),
    /// `bounce:` other than `yes`/`no`.
    BadFlag,
    /// `state:` other than `pending`, `sent`, `deferred`, `bounced`.
    BadState,
    /// An `id:` not in queue-id shape.
    BadQueueId,
    /// A `client-addr:` that is not an IP address.
    BadAddress,
    /// A required message key is missing.
    MissingKey(&'static str),
    /// The record lists no recipient.
    NoRecipients,
    /// The file ends before `end`.
    Truncated,
    /// Something follows `end`.
    TrailingData,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use RecordErrorKind as K;
        write!(f, "line {}: ", self.line)?;
        match &self.kind {
            K::NotARecord => write!(
                f,
                "not a certrelay envelope record (expected \"{MAGIC} {VERSION}\")"
            ),
            K::UnsupportedVersion(v) => write!(
                f,
                "unsupported record version {v:?} (this program reads {VERSION})"
            ),
            K::NoColon => f.write_str("expected \"key: value\""),
            K::UnknownKey(k) => write!(f, "unknown key {k:?}"),
            K::DuplicateKey(k) => write!(f, "key {k:?} given twice"),
            K::OutOfPlace(k) => write!(
                f,
                "key {k:?} is out of place (message keys come before the first \"rcpt:\")"
            ),
            K::BadEscape => f.write_str("bad %-escape (expected % and two hex digits)"),
            K::NotUtf8 => f.write_str("text is not valid UTF-8"),
            K::BadNumber(k) => write!(f, "value of {k:?} is not a number"),
            K::BadFlag => f.write_str("\"bounce:\" and \"smtputf8:\" must be yes or no"),
            K::BadState => f.write_str("\"state:\" must be pending, sent, deferred or bounced"),
            K::BadQueueId => f.write_str("\"id:\" is not a queue id"),
            K::BadAddress => f.write_str("\"client-addr:\" is not an IP address"),
            K::MissingKey(k) => write!(f, "required key \"{k}:\" is missing"),
            K::NoRecipients => f.write_str("the record lists no recipient"),
            K::Truncated => f.write_str("record is cut off (no \"end\" line)"),
            K::TrailingData => f.write_str("text after \"end\""),
        }
    }
}

impl Envelope {
    /// The record as text, ready to be written to the sidecar file.
    pub fn to_text(&self) -> String {
        let mut w = Writer(String::with_capacity(512));
        w.0.push_str(MAGIC);
        w.0.push(' ');
        w.0.push_str(VERSION);
        w.0.push('\n');
        w.field("id", self.id.as_str());
        w.number("arrival", self.arrival);
        w.field("sender", &self.sender);
        w.number("size", self.size);
        w.field("bounce", if self.is_bounce { "yes" } else { "no" });
        if self.smtputf8 {
            w.field("smtputf8", "yes");
        }
        w.number("attempts", u64::from(self.attempts));
        w.number("next-attempt", self.next_attempt);
        w.field("last-error", &self.last_error);
        let c = &self.client;
        w.field("client-name", &c.name);
        match c.addr {
            Some(addr) => w.field("client-addr", &alloc::format!("{addr}")),
            None => w.field("client-addr", ""),
        }
        w.field("helo", &c.helo);
        w.field("protocol", &c.protocol);
        w.field("tls", &c.tls);
        // Only when there is one: records of unsigned messages read as before.
        if !self.signature.is_empty() {
            w.field("dkim-signature", &self.signature);
        }
        for r in &self.recipients {
            w.field("rcpt", &r.address);
            if let Some(o) = &r.original {
                w.field("orcpt", o);
            }
            w.field("state", r.state.as_str());
            w.field("dsn", &r.dsn);
            w.field("reason", &r.reason);
            w.field("remote-mta", &r.remote_mta);
        }
        w.0.push_str("end\n");
        w.0
    }

    /// Reads a record written by [`Envelope::to_text`] (or by a careful person).
    ///
    /// Never panics; any defect is reported with its line number.
    pub fn parse(text: &[u8]) -> Result<Envelope, RecordError> {
        Parser::default().run(text)
    }
}

struct Writer(String);

impl Writer {
    fn field(&mut self, key: &str, value: &str) {
        self.0.push_str(key);
        self.0.push(':');
        if !value.is_empty() {
            self.0.push(' ');
            escape_into(&mut self.0, value);
        }
        self.0.push('\n');
    }

    fn number(&mut self, key: &str, n: u64) {
        let _ = writeln!(self.0, "{key}: {n}");
    }
}

/// Appends `value` with every byte that could break the line structure written as `%XX`.
fn escape_into(out: &mut String, value: &str) {
    let bytes = value.as_bytes();
    let last = bytes.len().saturating_sub(1);
    for (i, &b) in bytes.iter().enumerate() {
        let edge_space = b == b' ' && (i == 0 || i == last);
        if b == b'%' || !(0x20..0x7f).contains(&b) || edge_space {
            let _ = write!(out, "%{b:02X}");
        } else {
            out.push(char::from(b));
        }
    }
}

/// Reverses [`escape_into`].
fn unescape(value: &str) -> Result<String, RecordErrorKind> {
    if !value.contains('%') {
        return Ok(String::from(value));
    }
    let mut bytes = Vec::with_capacity(value.len());
    let mut it = value.bytes();
    while let Some(b) = it.next() {
        if b != b'%' {
            bytes.push(b);
            continue;
        }
        let hi = it.next().and_then(hex_digit);
        let lo = it.next().and_then(hex_digit);
        match (hi, lo) {
            (Some(h), Some(l)) => bytes.push(h << 4 | l),
            _ => return Err(RecordErrorKind::BadEscape),
        }
    }
    String::from_utf8(bytes).map_err(|_| RecordErrorKind::NotUtf8)
}

fn hex_digit(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// Keys of the message part, in the order written.
const MESSAGE_KEYS: &[&str] = &[
    "id",
    "arrival",
    "sender",
    "size",
    "bounce",
    "smtputf8",
    "attempts",
    "next-attempt",
    "last-error",
    "client-name",
    "client-addr",
    "helo",
    "protocol",
    "tls",
    "dkim-signature",
];
/// Keys of a recipient, after its `rcpt:` line.
const RECIPIENT_KEYS: &[&str] = &["orcpt", "state", "dsn", "reason", "remote-mta"];

#[derive(Default)]
struct Parser {
    id: Option<QueueId>,
    arrival: Option<u64>,
    sender: Option<String>,
    size: u64,
    is_bounce: bool,
    smtputf8: bool,
    attempts: u32,
    next_attempt: Option<u64>,
    last_error: String,
    client: ClientFacts,
    signature: String,
    recipients: Vec<Recipient>,
    /// Keys seen for the message (bit per `MESSAGE_KEYS` entry) and the current recipient.
    seen_message: u32,
    seen_recipient: u32,
}

impl Parser {
    fn run(mut self, text: &[u8]) -> Result<Envelope, RecordError> {
        let mut lines = text
            .split(|&b| b == b'\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l));
        let (_, first) = lines.next().unwrap_or((1, b""));
        check_magic(first).map_err(|kind| RecordError { line: 1, kind })?;
        let mut last_line = 1;
        let mut lines = lines.peekable();
        while let Some((n, raw)) = lines.next() {
            let at = |kind| RecordError { line: n, kind };
            let line = core::str::from_utf8(raw.strip_suffix(b"\r").unwrap_or(raw))
                .map_err(|_| at(RecordErrorKind::NotUtf8))?;
            if line == "end" {
                return self.finish(n, lines);
            }
            if lines.peek().is_none() {
                // The piece after the last LF: empty for a whole file, else a line cut short.
                if !raw.is_empty() {
                    last_line = n;
                }
                break;
            }
            last_line = n;
            self.line(line).map_err(at)?;
        }
        // `split` yields a final empty piece after the last LF: the cut is after the line
        // before it.
        Err(RecordError {
            line: last_line,
            kind: RecordErrorKind::Truncated,
        })
    }

    fn line(&mut self, line: &str) -> Result<(), RecordErrorKind> {
        let (key, raw) = match line.split_once(':') {
            Some((k, v)) => (k, v.strip_prefix(' ').unwrap_or(v)),
            None => return Err(RecordErrorKind::NoColon),
        };
        let value = unescape(raw)?;
        if key == "rcpt" {
            self.recipients.push(Recipient::new(value));
            self.seen_recipient = 0;
            return Ok(());
        }
        if let Some(bit) = MESSAGE_KEYS.iter().position(|k| *k == key) {
            if !self.recipients.is_empty() {
                return Err(RecordErrorKind::OutOfPlace(short(key)));
            }
            mark(&mut self.seen_message, bit, key)?;
            return self.message_field(key, value);
        }
        if let Some(bit) = RECIPIENT_KEYS.iter().position(|k| *k == key) {
            let Some(r) = self.recipients.last_mut() else {
                return Err(RecordErrorKind::OutOfPlace(short(key)));
            };
            mark(&mut self.seen_recipient, bit, key)?;
            return recipient_field(r, key, value);
        }
        Err(RecordErrorKind::UnknownKey(short(key)))
    }

    fn message_field(&mut self, key: &str, value: String) -> Result<(), RecordErrorKind> {
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| RecordErrorKind::BadNumber(short(key)))
        };
        match key {
            "id" => self.id = Some(QueueId::parse(&value).ok_or(RecordErrorKind::BadQueueId)?),
            "arrival" => self.arrival = Some(number(&value)?),
            "sender" => self.sender = Some(value),
            "size" => self.size = number(&value)?,
            "bounce" => self.is_bounce = flag(&value)?,
            "smtputf8" => self.smtputf8 = flag(&value)?,
            "attempts" => {
                self.attempts = value
                    .parse()
                    .map_err(|_| RecordErrorKind::BadNumber(short(key)))?
            }
            "next-attempt" => self.next_attempt = Some(number(&value)?),
            "last-error" => self.last_error = value,
            "client-name" => self.client.name = value,
            "client-addr" if value.is_empty() => self.client.addr = None,
            "client-addr" => {
                self.client.addr = Some(
                    value
                        .parse::<IpAddr>()
                        .map_err(|_| RecordErrorKind::BadAddress)?,
                )
            }
            "helo" => self.client.helo = value,
            "protocol" => self.client.protocol = value,
            "dkim-signature" => self.signature = value,
            _ => self.client.tls = value,
        }
        Ok(())
    }

    fn finish<'a>(
        self,
        end_line: usize,
        mut rest: impl Iterator<Item = (usize, &'a [u8])>,
    ) -> Result<Envelope, RecordError> {
        let at = |line, kind| RecordError { line, kind };
        // Only the empty piece after the final LF may follow `end`.
        if let Some((n, _)) = rest.find(|(_, l)| !l.is_empty() && *l != b"\r") {
            return Err(at(n, RecordErrorKind::TrailingData));
        }
        let id = self
            .id
            .ok_or(at(end_line, RecordErrorKind::MissingKey("id")))?;
        let arrival = self
            .arrival
            .ok_or(at(end_line, RecordErrorKind::MissingKey("arrival")))?;
        let sender = self
            .sender
            .ok_or(at(end_line, RecordErrorKind::MissingKey("sender")))?;
        if self.recipients.is_empty() {
            return Err(at(end_line, RecordErrorKind::NoRecipients));
        }
        Ok(Envelope {
            id,
            sender,
            arrival,
            size: self.size,
            is_bounce: self.is_bounce,
            smtputf8: self.smtputf8,
            client: self.client,
            recipients: self.recipients,
            attempts: self.attempts,
            next_attempt: self.next_attempt.unwrap_or(arrival),
            last_error: self.last_error,
            signature: self.signature,
        })
    }
}

/// `yes` or `no`.
fn flag(value: &str) -> Result<bool, RecordErrorKind> {
    match value {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(RecordErrorKind::BadFlag),
    }
}

fn check_magic(first: &[u8]) -> Result<(), RecordErrorKind> {
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let text = core::str::from_utf8(first).map_err(|_| RecordErrorKind::NotARecord)?;
    match text.split_once(' ') {
        Some((MAGIC, VERSION)) => Ok(()),
        Some((MAGIC, other)) => Err(RecordErrorKind::UnsupportedVersion(short(other))),
        _ => Err(RecordErrorKind::NotARecord),
    }
}

fn recipient_field(r: &mut Recipient, key: &str, value: String) -> Result<(), RecordErrorKind> {
    match key {
        "orcpt" => r.original = Some(value),
        "state" => r.state = RecipientState::from_word(&value).ok_or(RecordErrorKind::BadState)?,
        "dsn" => r.dsn = value,
        "reason" => r.reason = value,
        _ => r.remote_mta = value,
    }
    Ok(())
}

fn mark(seen: &mut u32, bit: usize, key: &str) -> Result<(), RecordErrorKind> {
    let mask = 1u32 << bit;
    if *seen & mask != 0 {
        return Err(RecordErrorKind::DuplicateKey(short(key)));
    }
    *seen |= mask;
    Ok(())
}

/// A bounded copy of text from the file for an error message.
fn short(s: &str) -> String {
    s.chars().take(40).collect()
}
