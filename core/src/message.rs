//! Messages handed to the `sendmail` interface: line endings, long lines, the header
//! section, and the addresses of `To:`/`Cc:`/`Bcc:`.
//!
//! Submission reads text a person or a mail program wrote, so it is lenient where SMTP is
//! strict: any of LF, CR LF or a lone CR ends a line, and every line leaves here ending in
//! CR LF. Three things are refused or changed, as Postfix does: a NUL byte refuses the
//! message; a line longer than [`MAX_LINE`] octets is broken by inserting CR LF and a space
//! (so a broken header stays one folded header); a first line `From ` (an mbox separator)
//! is dropped.
//!
//! The body is never held whole: [`LineNormalizer`] keeps at most one line. Only the header
//! section is parsed into memory ([`HeaderSection`]); the shell bounds its size.

use crate::time::civil_time;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Largest header section looked at (Postfix's `header_size_limit`, 102400 octets): what
/// follows counts as body for the server's header checks, `sendmail`'s parsing, the
/// SMTPUTF8 scan before delivery and DKIM signing alike.
pub const HEADER_LIMIT: usize = 102_400;

/// Longest line sent, without its CR LF (RFC 5322's limit, Postfix's `smtp_line_length_limit`).
pub const MAX_LINE: usize = 998;

/// Why a submitted message is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageError {
    /// A NUL byte, which no mail transport carries.
    NulByte {
        /// 1-based input line where it was found.
        line: u64,
    },
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::NulByte { line } => write!(
                f,
                "the message contains a NUL byte (input line {line}); mail cannot carry it"
            ),
        }
    }
}

/// Whether more input is wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Keep feeding.
    Reading,
    /// A line holding only `.` ended the message; what follows it is ignored.
    Ended,
}

/// Turns submitted bytes into CR LF lines of at most [`MAX_LINE`] octets, chunk by chunk.
///
/// Any chunking of the same input gives the same output.
#[derive(Clone, Debug)]
pub struct LineNormalizer {
    line: Vec<u8>,
    after_cr: bool,
    line_no: u64,
    dot_ends: bool,
    first: bool,
    ended: bool,
}

impl LineNormalizer {
    /// A normalizer; with `dot_ends` a line holding only `.` ends the message (sendmail
    /// without `-i`).
    pub fn new(dot_ends: bool) -> LineNormalizer {
        LineNormalizer {
            line: Vec::with_capacity(MAX_LINE + 1),
            after_cr: false,
            line_no: 1,
            dot_ends,
            first: true,
            ended: false,
        }
    }

    /// Appends the complete lines found in `input` to `out`. After [`Status::Ended`] input
    /// is ignored.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Status, MessageError> {
        for &b in input {
            if self.ended {
                break;
            }
            if core::mem::take(&mut self.after_cr) && b == b'\n' {
                continue;
            }
            match b {
                b'\n' => self.end_line(out),
                b'\r' => {
                    self.end_line(out);
                    self.after_cr = true;
                }
                0 => return Err(MessageError::NulByte { line: self.line_no }),
                _ => self.push(b, out),
            }
        }
        Ok(if self.ended {
            Status::Ended
        } else {
            Status::Reading
        })
    }

    /// The input ended: emits the last line if it had no line ending.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.ended && !self.line.is_empty() {
            self.end_line(out);
        }
    }

    fn push(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.line.len() == MAX_LINE {
            let at = split_point(&self.line, b);
            out.extend_from_slice(&self.line[..at]);
            out.extend_from_slice(b"\r\n");
            let rest: Vec<u8> = self.line[at..].to_vec();
            self.line.clear();
            self.line.push(b' ');
            self.line.extend_from_slice(&rest);
        }
        self.line.push(b);
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        let first = core::mem::replace(&mut self.first, false);
        self.line_no += 1;
        if self.dot_ends && self.line == b"." {
            self.ended = true;
        } else if !(first && self.line.starts_with(b"From ")) {
            out.extend_from_slice(&self.line);
            out.extend_from_slice(b"\r\n");
        }
        self.line.clear();
    }
}

/// Where to break a full line before `next`: before the UTF-8 character `next` continues,
/// when that character started within the last few octets; else at the end.
fn split_point(line: &[u8], next: u8) -> usize {
    let is_continuation = |b: u8| b & 0xC0 == 0x80;
    if !is_continuation(next) {
        return line.len();
    }
    let lead = line
        .iter()
        .rev()
        .take(3)
        .position(|&b| !is_continuation(b))
        .map(|back| line.len() - 1 - back);
    match lead {
        Some(i) if line[i] >= 0xC0 && i > 0 => i,
        _ => line.len(),
    }
}

/// Where the header section of normalized text ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderEnd {
    /// Octets of header lines.
    pub header_len: usize,
    /// Where the body starts: after the empty line, or at the first line that is not a
    /// header (the shell then writes the empty line itself).
    pub body_start: usize,
}

impl HeaderEnd {
    /// True when the text had its own empty line between header and body.
    pub fn has_separator(&self) -> bool {
        self.body_start > self.header_len
    }
}

/// Finds the end of the header section in `text` (complete CR LF lines from
/// [`LineNormalizer`]). `None` when more lines are needed; with `complete` (input ended, or
/// the section grew too large) every line seen so far that is a header counts.
pub fn find_header_end(text: &[u8], complete: bool) -> Option<HeaderEnd> {
    let mut at = 0;
    while let Some(len) = text[at..].windows(2).position(|w| w == b"\r\n") {
        let line = &text[at..at + len];
        if line.is_empty() {
            return Some(HeaderEnd {
                header_len: at,
                body_start: at + 2,
            });
        }
        let continues = at > 0 && matches!(line[0], b' ' | b'\t');
        if !continues && field_name(line).is_none() {
            return Some(HeaderEnd {
                header_len: at,
                body_start: at,
            });
        }
        at += len + 2;
    }
    complete.then_some(HeaderEnd {
        header_len: at,
        body_start: at,
    })
}

/// The field name of a header line (`Name:` with optional blanks before the colon).
fn field_name(line: &[u8]) -> Option<&[u8]> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = trim_end_blanks(&line[..colon]);
    let ok = !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b));
    ok.then_some(name)
}

fn trim_end_blanks(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// One header field: its first line and its continuation lines, CR LF included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    raw: Vec<u8>,
    name_len: usize,
}

impl Field {
    /// A field `name: value` (the value as given, one line).
    pub fn new(name: &str, value: &str) -> Field {
        let mut raw = Vec::with_capacity(name.len() + value.len() + 4);
        raw.extend_from_slice(name.as_bytes());
        raw.extend_from_slice(b": ");
        raw.extend_from_slice(value.as_bytes());
        raw.extend_from_slice(b"\r\n");
        Field {
            raw,
            name_len: name.len(),
        }
    }

    /// The name as written.
    pub fn name(&self) -> &[u8] {
        &self.raw[..self.name_len]
    }

    /// True when the name is `name`, in any case.
    pub fn is(&self, name: &str) -> bool {
        self.name().eq_ignore_ascii_case(name.as_bytes())
    }

    /// The value unfolded (line breaks removed) and trimmed, as text (invalid UTF-8 is
    /// replaced).
    pub fn value(&self) -> String {
        let colon = self.raw[self.name_len..]
            .iter()
            .position(|&b| b == b':')
            .map_or(self.raw.len(), |p| self.name_len + p + 1);
        let unfolded: Vec<u8> = self.raw[colon..]
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect();
        String::from(String::from_utf8_lossy(&unfolded).trim())
    }

    /// The field as written, CR LF included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }
}

/// A message's header fields in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderSection {
    fields: Vec<Field>,
}

impl HeaderSection {
    /// Parses header lines (up to [`HeaderEnd::header_len`]). A continuation line joins the
    /// field above it; lines that are neither are kept as fields of their own (nothing is
    /// lost).
    pub fn parse(text: &[u8]) -> HeaderSection {
        let mut fields: Vec<Field> = Vec::new();
        for line in text.split_inclusive(|&b| b == b'\n') {
            let continues = matches!(line.first(), Some(b' ' | b'\t'));
            match fields.last_mut() {
                Some(last) if continues => last.raw.extend_from_slice(line),
                _ => fields.push(Field {
                    raw: line.to_vec(),
                    name_len: field_name(line).map_or(0, <[u8]>::len),
                }),
            }
        }
        HeaderSection { fields }
    }

    /// The fields in order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// True when a field `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.is(name))
    }

    /// Removes every field `name`; returns how many there were.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.fields.len();
        self.fields.retain(|f| !f.is(name));
        before - self.fields.len()
    }

    /// Adds a field at the end.
    pub fn append(&mut self, field: Field) {
        self.fields.push(field);
    }

    /// Adds a field at the top (trace fields such as `Received:`).
    pub fn prepend(&mut self, field: Field) {
        self.fields.insert(0, field);
    }

    /// Addresses in the fields `names`, in field order.
    pub fn addresses(&self, names: &[&str]) -> Vec<String> {
        self.fields
            .iter()
            .filter(|f| names.iter().any(|n| f.is(n)))
            .flat_map(|f| addresses(&f.value()))
            .collect()
    }

    /// The recipients `sendmail -t` takes: from `Resent-To/Cc/Bcc` when any is present
    /// (a resent message goes to its new recipients only), else from `To/Cc/Bcc`.
    pub fn recipients(&self) -> Vec<String> {
        const RESENT: [&str; 3] = ["Resent-To", "Resent-Cc", "Resent-Bcc"];
        if RESENT.iter().any(|n| self.has(n)) {
            self.addresses(&RESENT)
        } else {
            self.addresses(&["To", "Cc", "Bcc"])
        }
    }

    /// Octets the section takes when written.
    pub fn len(&self) -> usize {
        self.fields.iter().map(|f| f.raw.len()).sum()
    }

    /// True without fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Writes the fields (not the empty line after them).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        for f in &self.fields {
            out.extend_from_slice(&f.raw);
        }
    }
}

/// The addresses of an address-list header value: comma lists, display names, angle
/// addresses, quoted strings, comments and groups (`undisclosed-recipients:;`). Practical
/// rather than complete RFC 5322: anything unreadable is skipped, never guessed at.
pub fn addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut plain = String::new();
    let mut angle: Option<String> = None;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '(' => skip_comment(&mut chars),
            '"' => {
                plain.push('"');
                read_quoted(&mut chars, &mut plain);
            }
            '<' => angle = Some(read_angle(&mut chars)),
            ',' | ';' => finish_mailbox(&mut plain, &mut angle, &mut out),
            // A group's name: what came before is no address.
            ':' => {
                plain.clear();
                angle = None;
            }
            c if c.is_whitespace() => {}
            c => plain.push(c),
        }
    }
    finish_mailbox(&mut plain, &mut angle, &mut out);
    out
}

type Chars<'a> = core::iter::Peekable<core::str::Chars<'a>>;

fn skip_comment(chars: &mut Chars<'_>) {
    let mut depth = 1;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return;
                }
            }
            _ => {}
        }
    }
}

/// Copies a quoted string after its opening quote, quotes and escapes kept.
fn read_quoted(chars: &mut Chars<'_>, into: &mut String) {
    while let Some(c) = chars.next() {
        into.push(c);
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    into.push(n);
                }
            }
            '"' => return,
            _ => {}
        }
    }
}

/// The address between `<` and `>`, without a source route (`@a,@b:`).
fn read_angle(chars: &mut Chars<'_>) -> String {
    let mut inner = String::new();
    while let Some(c) = chars.next() {
        match c {
            '>' => break,
            '"' => {
                inner.push('"');
                read_quoted(chars, &mut inner);
            }
            '(' => skip_comment(chars),
            c if c.is_whitespace() => {}
            c => inner.push(c),
        }
    }
    if inner.starts_with('@') {
        if let Some(colon) = inner.find(':') {
            inner.drain(..=colon);
        }
    }
    inner
}

fn finish_mailbox(plain: &mut String, angle: &mut Option<String>, out: &mut Vec<String>) {
    let address = angle.take().unwrap_or_else(|| core::mem::take(plain));
    plain.clear();
    if !address.is_empty() {
        out.push(address);
    }
}

/// A `Message-ID:` value, `<YYYYMMDDhhmmss.QUEUEID@host>` as Postfix makes them.
pub fn message_id(unix: u64, queue_id: &str, host: &str) -> String {
    let t = civil_time(unix, 0);
    alloc::format!(
        "<{:04}{:02}{:02}{:02}{:02}{:02}.{queue_id}@{host}>",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second
    )
}

/// A `From:` value for `address` with a full name: `Full Name <address>`, the name quoted
/// when it holds characters a phrase may not; just the address without a name.
pub fn from_value(full_name: &str, address: &str) -> String {
    let name = full_name.trim();
    if name.is_empty() {
        return String::from(address);
    }
    let plain = name
        .chars()
        .all(|c| c.is_alphanumeric() || " !#$%&'*+-/=?^_`{|}~".contains(c));
    if plain {
        return alloc::format!("{name} <{address}>");
    }
    let mut quoted = String::from("\"");
    for c in name.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    alloc::format!("{quoted}\" <{address}>")
}

/// `address` with `@myorigin` appended when it has no domain (Postfix's
/// `append_at_myorigin`); the null sender stays empty.
pub fn qualify(address: &str, myorigin: &str) -> String {
    if address.is_empty() || address.contains('@') {
        String::from(address)
    } else {
        alloc::format!("{address}@{myorigin}")
    }
}

/// What a message submitted on this machine is completed with when it lacks the fields:
/// the facts of its arrival.
#[derive(Clone, Copy, Debug)]
pub struct LocalOrigin<'a> {
    /// Arrival, Unix seconds (UTC).
    pub unix: u64,
    /// Its queue id (part of the `Message-ID:`).
    pub queue_id: &'a str,
    /// `myhostname` (the right side of the `Message-ID:`).
    pub myhostname: &'a str,
    /// The envelope sender, qualified; empty for the null sender.
    pub sender: &'a str,
    /// The submitter's full name for a `From:` that is added (may be empty).
    pub full_name: &'a str,
}

/// Adds `Date:`, `Message-ID:` and `From:` (from the envelope sender) when missing, at the
/// end of the section. Postfix adds them for its local clients only, because a message
/// from a remote client that lacks them is that client's business, not this machine's.
pub fn add_missing_origin(header: &mut HeaderSection, origin: &LocalOrigin<'_>) {
    if !header.has("Date") {
        header.append(Field::new(
            "Date",
            &crate::time::rfc5322_date(origin.unix, 0),
        ));
    }
    if !header.has("Message-ID") {
        let id = message_id(origin.unix, origin.queue_id, origin.myhostname);
        header.append(Field::new("Message-ID", &id));
    }
    if !header.has("From") {
        let from = if origin.sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            origin.sender
        };
        header.append(Field::new("From", &from_value(origin.full_name, from)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn normalize(input: &[u8], dot_ends: bool) -> Result<Vec<u8>, MessageError> {
        let mut n = LineNormalizer::new(dot_ends);
        let mut out = Vec::new();
        n.feed(input, &mut out)?;
        n.finish(&mut out);
        Ok(out)
    }

    #[test]
    fn line_endings_become_crlf() {
        let cases: [(&[u8], &[u8]); 7] = [
            (b"a\nb\n", b"a\r\nb\r\n"),
            (b"a\r\nb\r\n", b"a\r\nb\r\n"),
            (b"a\rb\r", b"a\r\nb\r\n"),
            (b"a\r\rb", b"a\r\n\r\nb\r\n"),
            (b"a\n\r\nb", b"a\r\n\r\nb\r\n"),
            (b"no end", b"no end\r\n"),
            (b"", b""),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input, false).unwrap(), want, "{input:?}");
        }
    }

    #[test]
    fn dot_line_ends_only_when_asked() {
        let input = b"a\n.\nafter\n";
        assert_eq!(normalize(input, true).unwrap(), b"a\r\n");
        assert_eq!(normalize(input, false).unwrap(), b"a\r\n.\r\nafter\r\n");
        assert_eq!(
            normalize(b"a\n..\n. \n", true).unwrap(),
            b"a\r\n..\r\n. \r\n"
        );
        assert_eq!(normalize(b"a\n.", true).unwrap(), b"a\r\n");
        let mut n = LineNormalizer::new(true);
        let mut out = Vec::new();
        assert_eq!(n.feed(b"x\r\n.\r\nrest", &mut out), Ok(Status::Ended));
        assert_eq!(n.feed(b"more\n", &mut out), Ok(Status::Ended));
        n.finish(&mut out);
        assert_eq!(out, b"x\r\n");
    }

    #[test]
    fn nul_is_refused_with_its_line() {
        assert_eq!(
            normalize(b"a\nb\nc\0d\n", false),
            Err(MessageError::NulByte { line: 3 })
        );
        let e = MessageError::NulByte { line: 3 }.to_string();
        assert!(e.contains("NUL") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn mbox_from_line_is_dropped_only_first() {
        let out = normalize(b"From alice Mon Jan 1\nFrom: a@b\n\nFrom x\n", false).unwrap();
        assert_eq!(out, b"From: a@b\r\n\r\nFrom x\r\n");
    }

    #[test]
    fn long_lines_break_with_crlf_space() {
        let line = vec![b'x'; 2500];
        let out = normalize(&line, false).unwrap();
        let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
        assert_eq!(lines.len(), 4, "3 lines and the empty tail");
        assert_eq!(lines[0].len(), MAX_LINE + 1);
        assert!(lines[1].starts_with(b" x"));
        let back: Vec<u8> = out
            .split(|&b| b == b'\n')
            .flat_map(|l| {
                l.strip_suffix(b"\r")
                    .unwrap_or(l)
                    .strip_prefix(b" ")
                    .unwrap_or(l)
            })
            .copied()
            .collect();
        // Every x is kept; only CR LF SP were inserted.
        assert_eq!(back.iter().filter(|&&b| b == b'x').count(), 2500);
        assert!(out.split(|&b| b == b'\n').all(|l| l.len() <= MAX_LINE + 1));
    }

    #[test]
    fn long_line_is_not_split_inside_a_character() {
        let mut line = vec![b'a'; MAX_LINE - 1];
        line.extend_from_slice("é".as_bytes());
        line.extend_from_slice(b"z");
        let out = normalize(&line, false).unwrap();
        let first = out.split(|&b| b == b'\n').next().unwrap();
        assert_eq!(first.len(), MAX_LINE - 1 + 1, "split before the é");
        assert!(core::str::from_utf8(&out).is_ok());
    }

    #[test]
    fn header_end_variants() {
        let t = b"A: 1\r\n b\r\nB: 2\r\n\r\nbody\r\n";
        assert_eq!(
            find_header_end(t, false),
            Some(HeaderEnd {
                header_len: 16,
                body_start: 18
            })
        );
        // A line that is no header starts the body without an empty line.
        let t = b"A: 1\r\nhello world\r\n";
        let end = find_header_end(t, false).unwrap();
        assert_eq!((end.header_len, end.has_separator()), (6, false));
        // Leading continuation: no headers at all.
        assert_eq!(find_header_end(b" x\r\n", false).unwrap().header_len, 0);
        // Not known yet, unless complete.
        assert_eq!(find_header_end(b"A: 1\r\n", false), None);
        assert_eq!(find_header_end(b"A: 1\r\n", true).unwrap().body_start, 6);
        assert_eq!(
            find_header_end(b"Name : v\r\n\r\n", false)
                .unwrap()
                .header_len,
            10
        );
    }

    #[test]
    fn header_section_edits() {
        let text = b"To: a@x\r\nBCC: secret@x,\r\n  other@x\r\nSubject: hi\r\n";
        let mut h = HeaderSection::parse(text);
        assert_eq!(h.fields().len(), 3);
        assert_eq!(h.fields()[1].value(), "secret@x,  other@x");
        assert_eq!(h.recipients(), ["a@x", "secret@x", "other@x"]);
        assert_eq!(h.remove("bcc"), 1);
        assert!(!h.has("Bcc"));
        h.append(Field::new("Date", "now"));
        h.prepend(Field::new("Received", "by me"));
        let mut out = Vec::new();
        h.write_to(&mut out);
        assert_eq!(
            out,
            b"Received: by me\r\nTo: a@x\r\nSubject: hi\r\nDate: now\r\n".to_vec()
        );
        assert_eq!(h.len(), out.len());
    }

    #[test]
    fn missing_origin_fields_are_added_present_ones_kept() {
        let origin = LocalOrigin {
            unix: 1_700_000_000,
            queue_id: "ABC",
            myhostname: "laptop.example",
            sender: "a@x",
            full_name: "Al",
        };
        let mut h = HeaderSection::parse(b"Subject: hi\r\n");
        add_missing_origin(&mut h, &origin);
        let mut out = Vec::new();
        h.write_to(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Subject: hi\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n\
             Message-ID: <20231114221320.ABC@laptop.example>\r\nFrom: Al <a@x>\r\n"
        );
        let text = b"date: then\r\nMESSAGE-ID: <m@x>\r\nFrom: b@y\r\n";
        let mut h = HeaderSection::parse(text);
        add_missing_origin(&mut h, &origin);
        assert_eq!(h, HeaderSection::parse(text));
        let mut h = HeaderSection::default();
        add_missing_origin(
            &mut h,
            &LocalOrigin {
                sender: "",
                full_name: "",
                ..origin
            },
        );
        assert_eq!(h.fields()[2].value(), "MAILER-DAEMON");
    }

    #[test]
    fn qualify_appends_myorigin_to_bare_local_parts() {
        assert_eq!(qualify("alice", "example.org"), "alice@example.org");
        assert_eq!(qualify("a@b", "example.org"), "a@b");
        assert_eq!(qualify("", "example.org"), "");
    }

    #[test]
    fn resent_headers_win() {
        let h = HeaderSection::parse(b"To: old@x\r\nResent-To: new@x\r\nResent-Bcc: b@x\r\n");
        assert_eq!(h.recipients(), ["new@x", "b@x"]);
    }

    #[test]
    fn address_lists() {
        let cases: &[(&str, &[&str])] = &[
            ("a@x", &["a@x"]),
            ("a@x, b@y", &["a@x", "b@y"]),
            ("Alice <a@x>", &["a@x"]),
            ("\"Doe, John\" <j@x>, b@y", &["j@x", "b@y"]),
            ("a@x (Alice, the first)", &["a@x"]),
            ("undisclosed-recipients:;", &[]),
            ("friends: a@x, Bob <b@y>;, c@z", &["a@x", "b@y", "c@z"]),
            ("<@relay.example,@r2:c@z>", &["c@z"]),
            ("\"john doe\"@example.com", &["\"john doe\"@example.com"]),
            ("<>", &[]),
            ("  ,  , ", &[]),
            ("Nested (a (b) c) <n@x>", &["n@x"]),
            ("a@x,\tb@y ,c@z", &["a@x", "b@y", "c@z"]),
        ];
        for (value, want) in cases {
            assert_eq!(addresses(value), *want, "{value}");
        }
    }

    #[test]
    fn generated_fields() {
        assert_eq!(
            message_id(1_700_000_000, "ABC", "laptop.example"),
            "<20231114221320.ABC@laptop.example>"
        );
        assert_eq!(from_value("", "a@x"), "a@x");
        assert_eq!(from_value("Alice Smith", "a@x"), "Alice Smith <a@x>");
        assert_eq!(
            from_value("Smith, \"Al\"", "a@x"),
            "\"Smith, \\\"Al\\\"\" <a@x>"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_chunking_gives_the_same_lines(
            input in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(b'\r'),
                    proptest::strategy::Just(b'\n'),
                    proptest::strategy::Just(b'.'),
                    proptest::strategy::Just(0xC3u8),
                    proptest::strategy::Just(0xA9u8),
                    1u8..=255,
                ],
                0..3000,
            ),
            cut in 0usize..3000,
            dot_ends: bool,
        ) {
            let whole = normalize(&input, dot_ends);
            let cut = cut.min(input.len());
            let mut n = LineNormalizer::new(dot_ends);
            let mut out = Vec::new();
            let chunked = n
                .feed(&input[..cut], &mut out)
                .and_then(|_| n.feed(&input[cut..], &mut out))
                .map(|_| {
                    n.finish(&mut out);
                    out
                });
            proptest::prop_assert_eq!(&whole, &chunked);
            if let Ok(out) = whole {
                // Only CR LF line ends, none too long, no NUL.
                let mut rest = &out[..];
                while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
                    let line = &rest[..i];
                    proptest::prop_assert!(line.len() <= MAX_LINE);
                    proptest::prop_assert!(!line.contains(&b'\r') && !line.contains(&b'\n'));
                    rest = &rest[i + 2..];
                }
                proptest::prop_assert!(rest.is_empty());
            }
        }
    }
}
