//! Lookup tables, always read from their text source (SPEC A5).
//!
//! `hash:/path`, `btree:/path`, `texthash:/path` and a bare `/path` all mean "the text file at
//! `/path`": certrelay never reads Berkeley DB files, so no `postmap` step is needed. The
//! shell reads the file; this module turns its text into a [`Table`].

use crate::diagnostic::{Diagnostic, Location};
use alloc::borrow::Cow;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// The table type written before the `:` (or none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    /// `hash:`.
    Hash,
    /// `btree:`.
    Btree,
    /// `texthash:`.
    Texthash,
    /// A bare path with no type.
    Bare,
}

/// A table reference as written in a parameter: type and path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSpec {
    /// The type as written.
    pub kind: TableKind,
    /// The path of the text source.
    pub path: String,
}

/// Why a table reference could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TableSpecError {
    /// A type certrelay does not read (`ldap:`, `mysql:`, `regexp:`, ...).
    UnsupportedType {
        /// The type as written.
        kind: String,
        /// The whole reference as written.
        written: String,
    },
    /// No path after the type.
    MissingPath(String),
}

impl fmt::Display for TableSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableSpecError::UnsupportedType { kind, written } => write!(
                f,
                "unsupported table type \"{kind}\" in \"{written}\": certrelay reads tables as \
                 text; use hash:/path, btree:/path, texthash:/path or a plain /path"
            ),
            TableSpecError::MissingPath(w) => {
                write!(f, "table reference \"{w}\" names no file")
            }
        }
    }
}

impl TableSpec {
    /// Reads `hash:/etc/x`, `btree:/etc/x`, `texthash:/etc/x` or `/etc/x`.
    pub fn parse(text: &str) -> Result<TableSpec, TableSpecError> {
        let written = text.trim();
        let (kind, path) = match written.split_once(':') {
            Some((kind, path)) => (parse_kind(kind, written)?, path),
            None => (TableKind::Bare, written),
        };
        if path.is_empty() {
            return Err(TableSpecError::MissingPath(written.into()));
        }
        Ok(TableSpec {
            kind,
            path: path.into(),
        })
    }

    /// Reads a list of references separated by commas and whitespace (`relay_clientcerts`).
    pub fn parse_list(text: &str) -> Result<Vec<TableSpec>, TableSpecError> {
        crate::text::split_list(text)
            .map(TableSpec::parse)
            .collect()
    }

    /// The message for a table whose text source is missing. `db_exists`: whether the
    /// compiled `path.db` is there, the sign of a Postfix setup that ran `postmap`.
    pub fn missing_source_message(&self, db_exists: bool) -> String {
        if db_exists {
            format!(
                "{path} not found (only {path}.db exists): certrelay reads the text source \
                 {path}, not the compiled .db; put the text table back at {path}",
                path = self.path
            )
        } else {
            format!("table source {} not found", self.path)
        }
    }
}

fn parse_kind(kind: &str, written: &str) -> Result<TableKind, TableSpecError> {
    match kind.to_ascii_lowercase().as_str() {
        "hash" => Ok(TableKind::Hash),
        "btree" => Ok(TableKind::Btree),
        "texthash" => Ok(TableKind::Texthash),
        _ => Err(TableSpecError::UnsupportedType {
            kind: kind.into(),
            written: written.into(),
        }),
    }
}

/// One `key value` entry and the line it was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableEntry {
    /// The key as written.
    pub key: String,
    /// The value (continuations joined).
    pub value: String,
    /// The 1-based line the entry starts on.
    pub line: u32,
}

/// One entry read straight from table text by [`entries`], borrowing from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry<'a> {
    /// The key as written.
    pub key: &'a str,
    /// The value; owned only when continuation lines had to be joined.
    pub value: Cow<'a, str>,
    /// The 1-based line the entry starts on.
    pub line: u32,
}

/// Reads the entries of table text in file order, without building a [`Table`].
///
/// Lines are read as [`Table::parse`] reads them (comments, blank lines, continuation lines).
/// An `Err` item is a warning and reading goes on: a key with no value (the entry is
/// skipped) or a first line that starts with whitespace. Unlike [`Table::parse`], equal keys
/// are all handed out: the caller decides which one wins (the fingerprint map does, for keys
/// that differ only in case or colons).
pub fn entries<'a>(file: &'a str, text: &'a str) -> Entries<'a> {
    Entries {
        file,
        at: Cursor {
            rest: text,
            line: 1,
            done: false,
        },
        held: None,
    }
}

/// Where [`Entries`] stands in the text.
#[derive(Clone, Copy, Debug)]
struct Cursor<'a> {
    rest: &'a str,
    /// The number of the next physical line.
    line: u32,
    /// The last physical line (the one with no LF after it) has been read.
    done: bool,
}

impl<'a> Cursor<'a> {
    /// The next physical line without its LF and at most one CR before it.
    fn physical(&mut self) -> Option<(u32, &'a str)> {
        if self.done {
            return None;
        }
        let number = self.line;
        self.line = self.line.saturating_add(1);
        let raw = match memchr::memchr(b'\n', self.rest.as_bytes()) {
            Some(end) => {
                let raw = &self.rest[..end];
                self.rest = &self.rest[end + 1..];
                raw
            }
            None => {
                self.done = true;
                self.rest
            }
        };
        Some((number, raw.strip_suffix('\r').unwrap_or(raw)))
    }

    /// True when the next physical line surely starts a new entry, told from its first byte
    /// alone: the common case, which needs no scan for the line's end.
    fn starts_entry_next(&self) -> bool {
        matches!(self.rest.as_bytes().first(), Some(&b) if b > b' ' && b < 0x80 && b != b'#')
    }
}

/// A physical line's text without surrounding whitespace, and whether it continues the
/// entry before it; `None` for blank and comment lines.
fn classify(physical: &str) -> Option<(&str, bool)> {
    let body = physical.trim();
    if body.is_empty() || body.starts_with('#') {
        return None;
    }
    Some((body, physical.starts_with(char::is_whitespace)))
}

/// Splits a line's text at its first whitespace: the key, and the rest without the
/// whitespace that starts it.
fn split_key(body: &str) -> (&str, &str) {
    // Only an ASCII space or control byte, or a byte of a multi-byte character, can start
    // whitespace. Skip whole blocks free of those first: the test compiles to a few vector
    // instructions per block, where decoding characters one by one costs many per byte.
    let may_start_whitespace = |b: u8| b.wrapping_sub(b'!') >= 0x80 - b'!';
    let mut plain = 0;
    for block in body.as_bytes().chunks(16) {
        if block
            .iter()
            .fold(false, |any, &b| any | may_start_whitespace(b))
        {
            break;
        }
        plain += block.len();
    }
    // `plain` follows ASCII bytes only, so it is a character boundary.
    match body[plain..].find(char::is_whitespace) {
        Some(end) => {
            let end = plain + end;
            (&body[..end], body[end..].trim_start())
        }
        None => (body, ""),
    }
}

/// Streaming reader of table entries; see [`entries`].
#[derive(Clone, Debug)]
pub struct Entries<'a> {
    file: &'a str,
    at: Cursor<'a>,
    /// The entry read together with a warning about its first line, handed out next.
    held: Option<Result<RawEntry<'a>, Diagnostic>>,
}

impl<'a> Entries<'a> {
    /// Joins the continuation lines that follow onto `value`, stopping before the next entry.
    fn gather(&mut self, mut value: Cow<'a, str>) -> Cow<'a, str> {
        while !self.at.starts_entry_next() {
            let before = self.at;
            let Some((_, physical)) = self.at.physical() else {
                break;
            };
            match classify(physical) {
                None => {}
                Some((body, true)) if value.is_empty() => value = Cow::Borrowed(body),
                Some((body, true)) => {
                    let joined = value.to_mut();
                    joined.push(' ');
                    joined.push_str(body);
                }
                Some((_, false)) => {
                    self.at = before;
                    break;
                }
            }
        }
        value
    }

    fn warning(&self, line: u32, message: impl Into<String>) -> Diagnostic {
        Diagnostic::warning(&Location::new(self.file, line), message)
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<RawEntry<'a>, Diagnostic>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(held) = self.held.take() {
            return Some(held);
        }
        let (line, body, continues) = loop {
            let (line, physical) = self.at.physical()?;
            if let Some((body, continues)) = classify(physical) {
                break (line, body, continues);
            }
        };
        let (key, first) = split_key(body);
        let value = self.gather(Cow::Borrowed(first));
        let entry = if value.is_empty() {
            Err(self.warning(line, format!("key \"{key}\" has no value; entry ignored")))
        } else {
            Ok(RawEntry { key, value, line })
        };
        // Continuation lines are taken with the entry they continue, so only the first
        // entry of the text can start with whitespace.
        if continues {
            self.held = Some(entry);
            return Some(Err(self.warning(
                line,
                "line starts with whitespace but continues nothing; read as a new entry",
            )));
        }
        Some(entry)
    }
}

/// A hash of `text`, the same for texts that differ only in ASCII case when `fold_case`.
pub(crate) fn hash_text(text: &[u8], fold_case: bool) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut hash = (text.len() as u64).wrapping_mul(K);
    let mut chunks = text.chunks_exact(8);
    let mut mix = |word: [u8; 8]| {
        let word = if fold_case {
            word.map(|b| b.to_ascii_lowercase())
        } else {
            word
        };
        hash = (hash ^ u64::from_le_bytes(word))
            .wrapping_mul(K)
            .rotate_left(29);
    };
    for chunk in &mut chunks {
        mix(chunk.try_into().unwrap_or([0; 8]));
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    mix(tail);
    hash ^ (hash >> 32)
}

/// An open-addressed index of numbered texts kept elsewhere (table keys, map labels): a
/// lookup hashes the text once and compares it with one or two candidates, with no
/// allocation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TextIndex {
    /// `(number, low bits of the hash)`; `EMPTY` marks a free slot. The length is 0 or a
    /// power of two.
    slots: Vec<(u32, u32)>,
    len: usize,
}

const EMPTY: u32 = u32::MAX;

impl TextIndex {
    /// The number whose text `is_text` accepts, among those stored with `hash`.
    pub(crate) fn find(&self, hash: u64, mut is_text: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut at = hash as usize & mask;
        loop {
            let (number, low) = self.slots[at];
            if number == EMPTY {
                return None;
            }
            if low == hash as u32 && is_text(number) {
                return Some(number);
            }
            at = (at + 1) & mask;
        }
    }

    /// Stores `number` (not yet stored) under `hash`.
    pub(crate) fn insert(&mut self, hash: u64, number: u32) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        self.place(hash as u32, number);
        self.len += 1;
    }

    fn place(&mut self, low: u32, number: u32) {
        let mask = self.slots.len() - 1;
        let mut at = low as usize & mask;
        while self.slots[at].0 != EMPTY {
            at = (at + 1) & mask;
        }
        self.slots[at] = (number, low);
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(16);
        let old = core::mem::replace(&mut self.slots, alloc::vec![(EMPTY, 0); size]);
        for (number, low) in old {
            if number != EMPTY {
                self.place(low, number);
            }
        }
    }
}

/// A lookup table read from text; keys match case-insensitively, the first entry for a key
/// wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    file: String,
    entries: Vec<TableEntry>,
    index: TextIndex,
}

impl Table {
    /// Reads the text of table source `file`.
    ///
    /// A key with no value is ignored with a warning; a key seen again is ignored with a
    /// warning (the first one stays).
    pub fn parse(file: &str, text: &str) -> (Table, Vec<Diagnostic>) {
        let mut table = Table {
            file: file.into(),
            ..Table::default()
        };
        let mut diagnostics = Vec::new();
        for entry in entries(file, text) {
            match entry {
                Ok(entry) => table.insert(entry, &mut diagnostics),
                Err(warning) => diagnostics.push(warning),
            }
        }
        (table, diagnostics)
    }

    fn insert(&mut self, entry: RawEntry<'_>, diags: &mut Vec<Diagnostic>) {
        let hash = hash_text(entry.key.as_bytes(), true);
        if let Some(first) = self.find(hash, entry.key) {
            let earlier = first.line;
            diags.push(Diagnostic::warning(
                &Location::new(&self.file, entry.line),
                format!(
                    "duplicate key \"{}\" ignored; the entry at line {earlier} is used",
                    entry.key
                ),
            ));
            return;
        }
        self.index.insert(hash, self.entries.len() as u32);
        self.entries.push(TableEntry {
            key: entry.key.to_string(),
            value: entry.value.into_owned(),
            line: entry.line,
        });
    }

    fn find(&self, hash: u64, key: &str) -> Option<&TableEntry> {
        let entries = &self.entries;
        let number = self
            .index
            .find(hash, |n| entries[n as usize].key.eq_ignore_ascii_case(key))?;
        entries.get(number as usize)
    }

    /// The value for `key`, compared case-insensitively.
    pub fn lookup(&self, key: &str) -> Option<&str> {
        self.lookup_entry(key).map(|e| e.value.as_str())
    }

    /// The whole entry for `key` (with its line number), compared case-insensitively.
    pub fn lookup_entry(&self, key: &str) -> Option<&TableEntry> {
        self.find(hash_text(key.as_bytes(), true), key)
    }

    /// All entries in file order.
    pub fn entries(&self) -> impl Iterator<Item = &TableEntry> {
        self.entries.iter()
    }

    /// The file name the table was read from.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_forms() {
        let ok = [
            (
                "hash:/etc/postfix/relay_clientcerts",
                TableKind::Hash,
                "/etc/postfix/relay_clientcerts",
            ),
            ("btree:/x", TableKind::Btree, "/x"),
            ("texthash:/x", TableKind::Texthash, "/x"),
            ("HASH:/x", TableKind::Hash, "/x"),
            ("/etc/x", TableKind::Bare, "/etc/x"),
            (" hash:relative ", TableKind::Hash, "relative"),
        ];
        for (text, kind, path) in ok {
            assert_eq!(
                TableSpec::parse(text),
                Ok(TableSpec {
                    kind,
                    path: path.into()
                }),
                "{text}"
            );
        }
        let bad = [
            ("ldap:/etc/ldap.cf", "unsupported table type \"ldap\""),
            (
                "regexp:/x",
                "use hash:/path, btree:/path, texthash:/path or a plain /path",
            ),
            ("hash:", "names no file"),
            ("", "names no file"),
        ];
        for (text, want) in bad {
            let err = TableSpec::parse(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn spec_list() {
        let list = TableSpec::parse_list("hash:/a, texthash:/b\n /c").unwrap();
        let paths: Vec<&str> = list.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, ["/a", "/b", "/c"]);
        assert!(TableSpec::parse_list("hash:/a, cidr:/b").is_err());
        assert!(TableSpec::parse_list("").unwrap().is_empty());
    }

    #[test]
    fn missing_source_names_the_text_file() {
        let spec = TableSpec::parse("hash:/etc/postfix/rc").unwrap();
        let m = spec.missing_source_message(true);
        assert!(m.contains("/etc/postfix/rc.db") && m.contains("text source /etc/postfix/rc"));
        assert_eq!(
            spec.missing_source_message(false),
            "table source /etc/postfix/rc not found"
        );
    }

    #[test]
    fn parses_entries_with_diagnostics() {
        let text = "# fingerprints\n\
                    D7:04:76:2B *.montravail.com\n\
                    \n\
                    alpha  one\n  two   # still value\n\
                    lonely\n\
                    ALPHA later\n\
                    beta\tb\r\n";
        let (t, d) = Table::parse("rc", text);
        let entries: Vec<(&str, &str, u32)> = t
            .entries()
            .map(|e| (e.key.as_str(), e.value.as_str(), e.line))
            .collect();
        assert_eq!(
            entries,
            [
                ("D7:04:76:2B", "*.montravail.com", 2),
                ("alpha", "one two   # still value", 4),
                ("beta", "b", 8),
            ]
        );
        let shown: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "rc:6: warning: key \"lonely\" has no value; entry ignored",
                "rc:7: warning: duplicate key \"ALPHA\" ignored; the entry at line 4 is used",
            ]
        );
        assert_eq!(t.file(), "rc");
        assert_eq!(t.len(), 3);
    }

    /// The parser as it was before [`entries`]: logical lines first, then key and value.
    fn reference_parse(file: &str, text: &str) -> (Vec<(String, String, u32)>, Vec<Diagnostic>) {
        use crate::text::logical_lines;
        let mut kept: Vec<(String, String, u32)> = Vec::new();
        let mut diagnostics = Vec::new();
        let (lines, orphans) = logical_lines(text);
        for line in orphans {
            diagnostics.push(Diagnostic::warning(
                &Location::new(file, line),
                "line starts with whitespace but continues nothing; read as a new entry",
            ));
        }
        for line in lines {
            let at = Location::new(file, line.line);
            let (key, value) = match line.text.split_once(char::is_whitespace) {
                Some((k, v)) => (k, v.trim()),
                None => (line.text.as_str(), ""),
            };
            if value.is_empty() {
                diagnostics.push(Diagnostic::warning(
                    &at,
                    format!("key \"{key}\" has no value; entry ignored"),
                ));
                continue;
            }
            if let Some(first) = kept.iter().find(|e| e.0.eq_ignore_ascii_case(key)) {
                diagnostics.push(Diagnostic::warning(
                    &at,
                    format!(
                        "duplicate key \"{key}\" ignored; the entry at line {} is used",
                        first.2
                    ),
                ));
                continue;
            }
            kept.push((key.to_string(), value.to_string(), line.line));
        }
        (kept, diagnostics)
    }

    proptest::proptest! {
        #[test]
        fn parse_agrees_with_logical_lines(
            pieces in proptest::collection::vec(
                proptest::sample::select(&[
                    "a", "B", "b", "k1", " ", "\t", "\n", "\r", "\r\n", "#", ":", "\u{a0}", "é",
                ][..]),
                0..40,
            ),
        ) {
            let text: String = pieces.concat();
            let (table, diagnostics) = Table::parse("t", &text);
            let (want, want_diagnostics) = reference_parse("t", &text);
            let got: Vec<(String, String, u32)> = table
                .entries()
                .map(|e| (e.key.clone(), e.value.clone(), e.line))
                .collect();
            proptest::prop_assert_eq!(&got, &want);
            proptest::prop_assert_eq!(diagnostics, want_diagnostics);
            for (key, value, _) in &want {
                proptest::prop_assert_eq!(table.lookup(&key.to_ascii_uppercase()), Some(value.as_str()));
            }
        }
    }

    #[test]
    fn entries_borrow_unless_lines_are_joined() {
        let text = "k1 v1\nk2\n  v2\nk3 a\n # note\n\tb\nk4\n";
        let got: Vec<Result<RawEntry<'_>, String>> = entries("t", text)
            .map(|e| e.map_err(|d| d.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                Ok(RawEntry {
                    key: "k1",
                    value: Cow::Borrowed("v1"),
                    line: 1
                }),
                Ok(RawEntry {
                    key: "k2",
                    value: Cow::Borrowed("v2"),
                    line: 2
                }),
                Ok(RawEntry {
                    key: "k3",
                    value: Cow::Owned("a b".into()),
                    line: 4
                }),
                Err("t:7: warning: key \"k4\" has no value; entry ignored".into()),
            ]
        );
        assert!(matches!(
            got[0],
            Ok(RawEntry {
                value: Cow::Borrowed(_),
                ..
            })
        ));
        assert!(matches!(
            got[1],
            Ok(RawEntry {
                value: Cow::Borrowed(_),
                ..
            })
        ));
        let orphan: Vec<bool> = entries("t", "  k v\nk2 w\n").map(|e| e.is_ok()).collect();
        assert_eq!(orphan, [false, true, true]);
    }

    #[test]
    fn many_keys_stay_findable() {
        let text: String = (0..5000).map(|i| format!("Key{i} v{i}\n")).collect();
        let (t, d) = Table::parse("t", &text);
        assert!(d.is_empty());
        for i in (0..5000).step_by(7) {
            assert_eq!(t.lookup(&format!("kEY{i}")), Some(format!("v{i}").as_str()));
        }
        assert_eq!(t.lookup("key5000"), None);
    }

    #[test]
    fn lookup_is_case_insensitive() {
        let (t, _) = Table::parse("t", "Kaoru.Asyd.Net MUST\n[127.0.0.1]:2526 may\n");
        let cases = [
            ("kaoru.asyd.net", Some("MUST")),
            ("KAORU.ASYD.NET", Some("MUST")),
            ("[127.0.0.1]:2526", Some("may")),
            ("127.0.0.1", None),
            ("", None),
        ];
        for (key, want) in cases {
            assert_eq!(t.lookup(key), want, "{key}");
        }
        assert_eq!(t.lookup_entry("KAORU.asyd.net").map(|e| e.line), Some(1));
        assert!(Table::default().is_empty());
    }
}
