//! The text conventions every Postfix-style file shares: logical lines and lists.
//!
//! [`logical_lines`] turns physical lines into logical ones: blank lines and lines whose
//! first non-blank character is `#` are skipped; a line that starts with whitespace continues
//! the logical line before it. A `#` anywhere else is ordinary text. [`split_list`] splits a
//! list value on commas and whitespace. Used for `main.cf`, `master.cf`, lookup table
//! sources and next-hop lists alike.
//!
//! Not here: what any line or item means (that belongs to the module reading the file).

use alloc::string::String;
use alloc::vec::Vec;

/// One logical line: its text (continuations joined by one space) and where it started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogicalLine {
    /// 1-based number of the physical line the logical line starts on.
    pub line: u32,
    /// The joined text, without leading or trailing whitespace.
    pub text: String,
}

/// Splits a list on commas and whitespace, dropping empty items.
pub fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
}

/// Splits `text` into logical lines.
///
/// The second list holds the numbers of lines that start with whitespace but have no earlier
/// line to continue; each of those is read as the start of a new logical line.
pub fn logical_lines(text: &str) -> (Vec<LogicalLine>, Vec<u32>) {
    let mut out: Vec<LogicalLine> = Vec::new();
    let mut orphans = Vec::new();
    for (index, raw) in text.split('\n').enumerate() {
        let number = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let physical = raw.strip_suffix('\r').unwrap_or(raw);
        let body = physical.trim();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let continues = physical.starts_with(|c: char| c.is_whitespace());
        match out.last_mut() {
            Some(last) if continues => {
                last.text.push(' ');
                last.text.push_str(body);
            }
            _ => {
                if continues {
                    orphans.push(number);
                }
                out.push(LogicalLine {
                    line: number,
                    text: String::from(body),
                });
            }
        }
    }
    (out, orphans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(input: &str) -> Vec<(u32, &'static str)> {
        let (lines, _) = logical_lines(input);
        lines
            .into_iter()
            .map(|l| (l.line, &*alloc::boxed::Box::leak(l.text.into_boxed_str())))
            .collect()
    }

    #[test]
    fn joins_skips_and_numbers() {
        let cases: &[(&str, &[(u32, &str)])] = &[
            ("", &[]),
            ("a = b", &[(1, "a = b")]),
            (
                "# c\n\na = b # not a comment\n",
                &[(3, "a = b # not a comment")],
            ),
            (
                "a = b,\n  c,\n\td\ne = f",
                &[(1, "a = b, c, d"), (4, "e = f")],
            ),
            ("a = b\n  # comment inside\n  c", &[(1, "a = b c")]),
            ("a = b\r\n  c\r\nd = e\r\n", &[(1, "a = b c"), (3, "d = e")]),
            ("   \n\t\n", &[]),
        ];
        for (input, want) in cases {
            assert_eq!(texts(input), *want, "input {input:?}");
        }
    }

    #[test]
    fn lists() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("a", &["a"]),
            ("a, b c,,d\te", &["a", "b", "c", "d", "e"]),
            (" ,a , ", &["a"]),
        ];
        for (text, want) in cases {
            assert_eq!(split_list(text).collect::<Vec<_>>(), *want, "{text:?}");
        }
    }

    #[test]
    fn orphan_continuation_is_reported() {
        let (lines, orphans) = logical_lines("# head\n  a = b\n  c\n");
        assert_eq!(orphans, [2]);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text, "a = b c");
    }
}
