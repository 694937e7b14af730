//! Lookup tables, always read from their text source (SPEC A5).
//!
//! `hash:/path`, `btree:/path`, `texthash:/path` and a bare `/path` all mean "the text file at
//! `/path`": certrelay never reads Berkeley DB files, so no `postmap` step is needed. The
//! shell reads the file; this module turns its text into a [`Table`].

use crate::config::diagnostic::{Diagnostic, Location};
use crate::config::lines::logical_lines;
use alloc::collections::BTreeMap;
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
        crate::config::split_list(text)
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

/// A lookup table read from text; keys match case-insensitively, the first entry for a key
/// wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    file: String,
    entries: Vec<TableEntry>,
    index: BTreeMap<String, usize>,
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
            table.insert(key, value, &at, &mut diagnostics);
        }
        (table, diagnostics)
    }

    fn insert(&mut self, key: &str, value: &str, at: &Location, diags: &mut Vec<Diagnostic>) {
        let folded = key.to_ascii_lowercase();
        if let Some(&first) = self.index.get(&folded) {
            let earlier = self.entries[first].line;
            diags.push(Diagnostic::warning(
                at,
                format!("duplicate key \"{key}\" ignored; the entry at line {earlier} is used"),
            ));
            return;
        }
        self.index.insert(folded, self.entries.len());
        self.entries.push(TableEntry {
            key: key.to_string(),
            value: value.to_string(),
            line: at.line,
        });
    }

    /// The value for `key`, compared case-insensitively.
    pub fn lookup(&self, key: &str) -> Option<&str> {
        self.lookup_entry(key).map(|e| e.value.as_str())
    }

    /// The whole entry for `key` (with its line number), compared case-insensitively.
    pub fn lookup_entry(&self, key: &str) -> Option<&TableEntry> {
        let i = *self.index.get(&key.to_ascii_lowercase())?;
        self.entries.get(i)
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
