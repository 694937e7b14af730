//! Adding and removing `relay_clientcerts` entries, leaving every other line as it was.
//!
//! The table is read the way the relay reads it (a line starting with whitespace continues the
//! entry above it; blank lines and `#` lines are skipped), so an entry is removed together with
//! its continuation lines, and comments stay where they were.

use super::error::PkiError;
use super::files;
use super::names::check_label;
use certrelay_core::fingerprint::Fingerprint;
use std::path::{Path, PathBuf};

/// What an edit did to a table; a change needs a relay reload (SIGHUP) to take effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEdit {
    /// The table file.
    pub path: PathBuf,
    /// Lines added, as written.
    pub added: Vec<String>,
    /// Lines removed, as they were (continuation lines included).
    pub removed: Vec<String>,
}

impl MapEdit {
    /// True when the file changed (and a running relay should reload).
    pub fn changed(&self) -> bool {
        !self.added.is_empty() || !self.removed.is_empty()
    }

    /// A short account for the user, one line per added or removed line.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for line in &self.added {
            out.push_str(&format!("{}: added: {line}\n", self.path.display()));
        }
        for line in &self.removed {
            out.push_str(&format!("{}: removed: {line}\n", self.path.display()));
        }
        out
    }
}

/// One entry of the table: its physical lines (from 0) and its key and value.
struct Entry {
    lines: Vec<usize>,
    key: String,
    value: String,
}

impl Entry {
    fn fingerprint(&self) -> Option<Fingerprint> {
        self.key.parse().ok()
    }

    /// Line number for messages, from 1.
    fn line(&self) -> usize {
        self.lines[0] + 1
    }
}

/// The entries of a table text, with the physical lines each one spans.
fn entries(lines: &[&str]) -> Vec<Entry> {
    let mut out: Vec<(Vec<usize>, String)> = Vec::new();
    for (number, physical) in lines.iter().enumerate() {
        let body = physical.trim();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let continues = physical.starts_with(char::is_whitespace);
        match out.last_mut() {
            Some((numbers, text)) if continues => {
                numbers.push(number);
                text.push(' ');
                text.push_str(body);
            }
            _ => out.push((vec![number], body.to_string())),
        }
    }
    out.into_iter()
        .map(|(lines, text)| {
            let (key, value) = text.split_once(char::is_whitespace).unwrap_or((&text, ""));
            Entry {
                lines,
                key: key.to_string(),
                value: value.trim().to_string(),
            }
        })
        .collect()
}

fn physical_lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

/// One listed certificate of a table text, with where its entry starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The entry's fingerprint.
    pub fingerprint: Fingerprint,
    /// Its label (the value column; continuation lines joined).
    pub label: String,
    /// The line its entry starts on, from 1.
    pub line: usize,
}

/// The entries of a table text whose key is a fingerprint, in file order.
pub fn listed(text: &str) -> Vec<Listed> {
    entries(&physical_lines(text))
        .into_iter()
        .filter_map(|entry| {
            Some(Listed {
                fingerprint: entry.fingerprint()?,
                line: entry.line(),
                label: entry.value,
            })
        })
        .collect()
}

/// Adds `<fingerprint> <label>` at the end of the table at `path` (created if missing).
///
/// Refuses a fingerprint that is listed already, and with `unique_label` also a label that is
/// (a name that stands for one laptop, so that it can be revoked by name).
pub(crate) fn add_entry(
    path: &Path,
    print: &Fingerprint,
    label: &str,
    unique_label: bool,
) -> Result<MapEdit, PkiError> {
    check_label(label)?;
    let label = label.trim();
    let text = files::read_text_or_empty(path)?;
    check_not_listed(path, &text, print, unique_label.then_some(label))?;
    let line = print.relay_clientcerts_line(label);
    let mut new_text = text;
    if !new_text.is_empty() && !new_text.ends_with('\n') {
        new_text.push('\n');
    }
    new_text.push_str(&line);
    new_text.push('\n');
    files::replace(path, &new_text)?;
    Ok(MapEdit {
        path: path.to_path_buf(),
        added: vec![line],
        removed: Vec::new(),
    })
}

/// Refuses when `print` (or `label`, if given) is in the table text already.
pub(crate) fn check_not_listed(
    path: &Path,
    text: &str,
    print: &Fingerprint,
    label: Option<&str>,
) -> Result<(), PkiError> {
    for entry in entries(&physical_lines(text)) {
        let what = if entry.fingerprint().as_ref() == Some(print) {
            format!("fingerprint {print} (as {:?})", entry.value)
        } else if label.is_some_and(|label| entry.value == label) {
            format!("name {:?}", entry.value)
        } else {
            continue;
        };
        return Err(PkiError::Duplicate {
            path: path.to_path_buf(),
            line: entry.line(),
            what,
        });
    }
    Ok(())
}

/// Lists a fingerprint in the table at `path` (created if missing) with `label`.
///
/// Command line: `certrelayd allow [--map FILE] FINGERPRINT LABEL` (the map defaults to the
/// first table of `relay_clientcerts`). Any digest length is accepted (MD5, SHA-1, SHA-256,
/// SHA-512; hex pairs with or without colons), written in the canonical upper-case, colon
/// form. A fingerprint already listed is refused; labels may repeat (the classic table gives
/// many laptops the same domain label).
pub fn allow(path: &Path, fingerprint_text: &str, label: &str) -> Result<MapEdit, PkiError> {
    let text = fingerprint_text.trim();
    let print: Fingerprint = text.parse().map_err(|err| PkiError::BadFingerprint {
        text: text.to_string(),
        err,
    })?;
    add_entry(path, &print, label, false)
}

/// Removes every entry of the table at `path` whose label is `name_or_fingerprint`, or whose
/// fingerprint equals it (any spelling: case and colons do not matter).
///
/// Command line: `certrelayd revoke [--map FILE] NAME|FINGERPRINT`. Comments and other
/// entries stay as they were; nothing matching is an error and leaves the file untouched.
pub fn revoke(path: &Path, name_or_fingerprint: &str) -> Result<MapEdit, PkiError> {
    let wanted = name_or_fingerprint.trim();
    let print: Option<Fingerprint> = wanted.parse().ok();
    let text = files::read(path).and_then(|bytes| {
        String::from_utf8(bytes).map_err(|_| PkiError::BadInput {
            path: path.to_path_buf(),
            reason: String::from("not UTF-8 text; a table is a text file"),
        })
    })?;
    let lines = physical_lines(&text);
    let doomed: Vec<usize> = entries(&lines)
        .into_iter()
        .filter(|entry| entry.value == wanted || (print.is_some() && entry.fingerprint() == print))
        .flat_map(|entry| entry.lines)
        .collect();
    if doomed.is_empty() {
        return Err(PkiError::NotListed {
            path: path.to_path_buf(),
            wanted: wanted.to_string(),
        });
    }
    let mut kept = String::with_capacity(text.len());
    let mut removed = Vec::new();
    for (number, line) in lines.iter().enumerate() {
        if doomed.contains(&number) {
            removed.push(line.to_string());
        } else {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    if !text.ends_with('\n') && kept.ends_with('\n') && !doomed.contains(&(lines.len() - 1)) {
        kept.pop();
    }
    files::replace(path, &kept)?;
    Ok(MapEdit {
        path: path.to_path_buf(),
        added: Vec::new(),
        removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use certrelay_core::fingerprint::FingerprintMap;
    use std::fs;

    const SHA256: &str =
        "C8:18:67:93:73:09:17:EF:E4:17:55:01:78:86:01:CA:BD:DF:4F:43:48:8C:79:DE:71:D4:84:13:11:B6:CB:5C";
    const MD5: &str = "9A:A2:08:62:85:79:93:04:88:3A:36:28:76:A3:82:11";

    #[test]
    fn listed_entries_give_the_line_they_start_on_and_their_whole_label() {
        let text = format!("# table\n\n{MD5} alice\n{SHA256}\n   laptop of bob\nnot-a-print x\n");
        let listed = listed(&text);
        let lines: Vec<(usize, &str)> = listed.iter().map(|l| (l.line, l.label.as_str())).collect();
        assert_eq!(lines, [(3, "alice"), (4, "laptop of bob")]);
        assert_eq!(listed[0].fingerprint, MD5.parse().unwrap());
    }

    /// A directory removed when the guard drops.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A fresh directory and the table path inside it.
    fn scratch(label: &str) -> (Scratch, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("certrelay-pki-map-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let table = dir.join("relay_clientcerts");
        (Scratch(dir), table)
    }

    const SEED: &str = "# laptops of the office\n\
                        D7:04:76:2B:0E:E5:7C:A4:28:C2:A7:7E:F9:0E:9D:3B *.montravail.com\n\
                        \n\
                        # Bob, second laptop\n\
                        5B:57:01:8D:3C:1E:9C:74:5C:1B:4B:0A:61:59:95:60 bob\n\
                        \t  bob-laptop\n\
                        # end\n";

    #[test]
    fn allow_appends_canonical_form_and_keeps_the_rest() {
        let (_dir, path) = scratch("allow");
        fs::write(&path, SEED.trim_end_matches('\n')).unwrap();
        let lower = SHA256.to_ascii_lowercase().replace(':', "");
        let edit = allow(&path, &lower, "alice").unwrap();
        assert!(edit.changed());
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{SEED}{SHA256} alice\n"));
        // The relay's own parser finds it.
        let (table, _) = certrelay_core::table::Table::parse("rc", &text);
        assert_eq!(table.lookup(SHA256), Some("alice"));
        let rows = table
            .entries()
            .map(|e| (e.key.clone(), e.value.clone(), e.line as usize));
        let (map, notes) = FingerprintMap::from_table("rc", rows);
        assert_eq!(map.find(&SHA256.parse().unwrap()), Some("alice"));
        assert_eq!(map.len(), 3, "{notes:?}");
    }

    #[test]
    fn allow_refuses_duplicates_and_bad_input() {
        let (_dir, path) = scratch("dup");
        fs::write(&path, SEED).unwrap();
        let md5_lower = MD5.to_ascii_lowercase();
        allow(&path, &md5_lower, "new").unwrap();
        let err = allow(&path, MD5, "other").unwrap_err().to_string();
        assert!(
            err.contains(":8: fingerprint") && err.contains("\"new\""),
            "{err}"
        );
        // A shared label is fine for allow.
        allow(&path, SHA256, "*.montravail.com").unwrap();
        let fresh = MD5.replace("9A", "9B");
        let cases = [
            ("12:34", "x", "no digest length"),
            ("zz", "x", "not a hex digit"),
            ("", "x", "empty fingerprint"),
            (fresh.as_str(), "", "non-empty name"),
            (fresh.as_str(), "a\nb", "line breaks"),
        ];
        for (print, label, want) in cases {
            let err = allow(&path, print, label).unwrap_err().to_string();
            assert!(err.contains(want), "{print} {label:?}: {err}");
        }
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{SEED}{MD5} new\n{SHA256} *.montravail.com\n")
        );
    }

    #[test]
    fn allow_creates_a_missing_table() {
        let (_dir, path) = scratch("fresh");
        allow(&path, MD5, "first").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{MD5} first\n"));
    }

    #[test]
    fn revoke_by_name_takes_continuation_lines_and_keeps_comments() {
        let (_dir, path) = scratch("revoke-name");
        fs::write(&path, SEED).unwrap();
        let edit = revoke(&path, "bob bob-laptop").unwrap();
        assert_eq!(edit.removed.len(), 2, "{edit:?}");
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "# laptops of the office\n\
             D7:04:76:2B:0E:E5:7C:A4:28:C2:A7:7E:F9:0E:9D:3B *.montravail.com\n\
             \n\
             # Bob, second laptop\n\
             # end\n"
        );
        let err = revoke(&path, "bob bob-laptop").unwrap_err().to_string();
        assert!(err.contains("no entry has the name"), "{err}");
    }

    #[test]
    fn revoke_by_fingerprint_in_any_spelling() {
        let (_dir, path) = scratch("revoke-fp");
        fs::write(&path, format!("{SEED}{SHA256} a\n{SHA256} again\n")).unwrap();
        let spelled = SHA256.to_ascii_lowercase().replace(':', "");
        let edit = revoke(&path, &spelled).unwrap();
        assert_eq!(
            edit.removed,
            [format!("{SHA256} a"), format!("{SHA256} again")]
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), SEED);
        // Every entry with the shared label goes.
        revoke(&path, "*.montravail.com").unwrap();
        assert!(!fs::read_to_string(&path).unwrap().contains("D7:04"));
        let missing = revoke(&path.with_file_name("absent"), "x").unwrap_err();
        assert!(matches!(missing, PkiError::Io { .. }), "{missing}");
    }

    #[test]
    fn revoke_keeps_a_missing_final_newline() {
        let (_dir, path) = scratch("revoke-nl");
        fs::write(&path, format!("{MD5} a\n# tail")).unwrap();
        revoke(&path, "a").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "# tail");
    }
}
