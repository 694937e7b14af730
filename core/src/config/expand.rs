//! `$name`, `${name}`, `$(name)`, `${name?text}` and `${name:text}` expansion.
//!
//! Each parameter is expanded once and remembered, so a long chain of references costs one
//! pass; a parameter met again while it is still being expanded is a loop, reported once
//! as an error (and expanded as empty) instead of recursing for ever.

use super::params::is_name_byte;
use crate::diagnostic::{Diagnostic, Location};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Deepest nesting of references (through parameters or inside `${...}`) before giving up.
const MAX_DEPTH: usize = 100;

/// A value before expansion and where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawValue {
    pub text: String,
    pub at: Location,
}

/// Expands the values of one namespace of parameters.
pub(crate) struct Expander<'a> {
    raw: &'a BTreeMap<String, RawValue>,
    done: BTreeMap<String, String>,
    active: Vec<&'a str>,
    depth: usize,
    /// Names referenced by some value (defined or not).
    pub referenced: BTreeSet<String>,
    /// Problems met so far.
    pub diagnostics: Vec<Diagnostic>,
}

impl<'a> Expander<'a> {
    pub fn new(raw: &'a BTreeMap<String, RawValue>) -> Self {
        Expander {
            raw,
            done: BTreeMap::new(),
            active: Vec::new(),
            depth: 0,
            referenced: BTreeSet::new(),
            diagnostics: Vec::new(),
        }
    }

    /// The expanded value of `name`, or `None` when no such parameter exists.
    pub fn value_of(&mut self, name: &str) -> Option<String> {
        if let Some(v) = self.done.get(name) {
            return Some(v.clone());
        }
        let (key, raw) = self.raw.get_key_value(name)?;
        if self.active.contains(&name) {
            let mut chain: Vec<&str> = self.active.clone();
            let start = chain.iter().position(|n| *n == name).unwrap_or(0);
            chain.drain(..start);
            chain.push(name);
            let message = format!("parameter expansion loop: ${}", chain.join(" -> $"));
            self.report(Diagnostic::error(&raw.at, message));
            return Some(String::new());
        }
        if self.depth >= MAX_DEPTH {
            self.report(Diagnostic::error(
                &raw.at,
                format!("${name}: parameter references nested too deeply"),
            ));
            return Some(String::new());
        }
        self.active.push(key);
        self.depth += 1;
        let value = self.expand(&raw.text, &raw.at);
        self.depth -= 1;
        self.active.pop();
        self.done.insert(key.clone(), value.clone());
        Some(value)
    }

    fn report(&mut self, d: Diagnostic) {
        if !self.diagnostics.contains(&d) {
            self.diagnostics.push(d);
        }
    }

    /// Expands every reference in `text`, which was written at `at`.
    pub fn expand(&mut self, text: &str, at: &Location) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            rest = match after.as_bytes().first() {
                Some(b'$') => {
                    out.push('$');
                    &after[1..]
                }
                Some(&open @ (b'{' | b'(')) => self.braced(after, open, at, &mut out),
                Some(&b) if is_name_byte(b) => {
                    let end = after
                        .bytes()
                        .position(|b| !is_name_byte(b))
                        .unwrap_or(after.len());
                    out.push_str(&self.lookup(&after[..end], at, true));
                    &after[end..]
                }
                _ => {
                    self.report(Diagnostic::warning(
                        at,
                        "\"$\" not followed by a parameter name; kept as is (write $$ for a literal $)",
                    ));
                    out.push('$');
                    after
                }
            };
        }
        out.push_str(rest);
        out
    }

    /// Handles `{...}` or `(...)` at the start of `after`; returns the text after it.
    fn braced<'t>(&mut self, after: &'t str, open: u8, at: &Location, out: &mut String) -> &'t str {
        let close = if open == b'{' { b'}' } else { b')' };
        let Some(end) = matching_close(&after[1..], open, close) else {
            self.report(Diagnostic::error(
                at,
                format!("unmatched \"${}\" in \"{after}\"", open as char),
            ));
            out.push('$');
            out.push_str(after);
            return "";
        };
        let inner = &after[1..1 + end];
        if self.depth >= MAX_DEPTH {
            self.report(Diagnostic::error(
                at,
                "parameter references nested too deeply",
            ));
        } else {
            let text = self.reference(inner, at);
            out.push_str(&text);
        }
        &after[end + 2..]
    }

    /// Expands the inside of `${...}`: `name`, `name?text` or `name:text`.
    fn reference(&mut self, inner: &str, at: &Location) -> String {
        let end = inner
            .bytes()
            .position(|b| !is_name_byte(b))
            .unwrap_or(inner.len());
        let (name, tail) = inner.split_at(end);
        if name.is_empty() {
            self.report(Diagnostic::error(
                at,
                format!("\"${{{inner}}}\" names no parameter"),
            ));
            return String::new();
        }
        match tail.as_bytes().first() {
            None => self.lookup(name, at, true),
            Some(&cond @ (b'?' | b':')) => {
                let value = self.lookup(name, at, false);
                if value.is_empty() == (cond == b':') {
                    self.depth += 1;
                    let text = self.expand(&tail[1..], at);
                    self.depth -= 1;
                    text
                } else {
                    String::new()
                }
            }
            Some(_) => {
                self.report(Diagnostic::error(
                    at,
                    format!("invalid parameter reference \"${{{inner}}}\""),
                ));
                String::new()
            }
        }
    }

    fn lookup(&mut self, name: &str, at: &Location, warn_undefined: bool) -> String {
        self.referenced.insert(name.into());
        match self.value_of(name) {
            Some(v) => v,
            None => {
                if warn_undefined {
                    self.report(Diagnostic::warning(
                        at,
                        format!("undefined parameter ${name} expanded as empty"),
                    ));
                }
                String::new()
            }
        }
    }
}

/// Index in `text` of the `close` that matches an already-consumed `open`.
fn matching_close(text: &str, open: u8, close: u8) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in text.bytes().enumerate() {
        if b == open {
            depth += 1;
        } else if b == close {
            if depth == 0 {
                return Some(i);
            }
            depth -= 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn namespace(entries: &[(&str, &str)]) -> BTreeMap<String, RawValue> {
        entries
            .iter()
            .enumerate()
            .map(|(i, (n, v))| {
                let line = u32::try_from(i + 1).unwrap();
                (
                    n.to_string(),
                    RawValue {
                        text: v.to_string(),
                        at: Location::new("main.cf", line),
                    },
                )
            })
            .collect()
    }

    fn expand_one(entries: &[(&str, &str)], name: &str) -> (String, Vec<String>) {
        let raw = namespace(entries);
        let mut e = Expander::new(&raw);
        let v = e.value_of(name).unwrap();
        (v, e.diagnostics.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn forms() {
        let base = [("host", "mx.example"), ("empty", ""), ("name", "certrelay")];
        let cases: &[(&str, &str)] = &[
            ("$host", "mx.example"),
            ("${host}", "mx.example"),
            ("$(host)", "mx.example"),
            ("$host ESMTP $name", "mx.example ESMTP certrelay"),
            ("${host}x", "mx.examplex"),
            ("$host.x", "mx.example.x"),
            ("a${host?yes}b", "ayesb"),
            ("a${empty?yes}b", "ab"),
            ("a${host:no}b", "ab"),
            ("a${empty:no}b", "anob"),
            ("${host?[$name]}", "[certrelay]"),
            ("${host?{x}}", "{x}"),
            ("$(empty:($host))", "(mx.example)"),
            ("cost $$5", "cost $5"),
            ("no refs # here", "no refs # here"),
            ("héllo $host ünï", "héllo mx.example ünï"),
        ];
        for (text, want) in cases {
            let mut entries = base.to_vec();
            entries.push(("v", text));
            let (got, diags) = expand_one(&entries, "v");
            assert_eq!(got, *want, "{text}");
            assert!(diags.is_empty(), "{text}: {diags:?}");
        }
    }

    #[test]
    fn recursive_and_memoised() {
        let (v, d) = expand_one(&[("a", "$b-$b"), ("b", "$c$c"), ("c", "x")], "a");
        assert_eq!(v, "xx-xx");
        assert!(d.is_empty());
    }

    /// (namespace, parameter, expanded value, diagnostics)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str, &'a [&'a str]);

    #[test]
    fn problems() {
        let cases: &[Case<'_>] = &[
            (
                &[("v", "a $nope b")],
                "v",
                "a  b",
                &["main.cf:1: warning: undefined parameter $nope expanded as empty"],
            ),
            (&[("v", "${nope?x}${nope:y}")], "v", "y", &[]),
            (
                &[("v", "$v")],
                "v",
                "",
                &["main.cf:1: error: parameter expansion loop: $v -> $v"],
            ),
            (
                &[("a", "x$b"), ("b", "y$a")],
                "a",
                "xy",
                &["main.cf:1: error: parameter expansion loop: $a -> $b -> $a"],
            ),
            (
                &[("v", "a ${oops")],
                "v",
                "a ${oops",
                &["main.cf:1: error: unmatched \"${\" in \"{oops\""],
            ),
            (
                &[("v", "${}")],
                "v",
                "",
                &["main.cf:1: error: \"${}\" names no parameter"],
            ),
            (
                &[("v", "${a-b}")],
                "v",
                "",
                &["main.cf:1: error: invalid parameter reference \"${a-b}\""],
            ),
            (
                &[("v", "5 $ more $")],
                "v",
                "5 $ more $",
                &["main.cf:1: warning: \"$\" not followed by a parameter name; kept as is (write $$ for a literal $)"],
            ),
        ];
        for (entries, name, want, diags) in cases {
            let (got, d) = expand_one(entries, name);
            assert_eq!(got, *want, "{entries:?}");
            assert_eq!(d, *diags, "{entries:?}");
        }
    }

    #[test]
    fn deep_chains_stop() {
        let names: Vec<String> = (0..300).map(|i| alloc::format!("p{i}")).collect();
        let values: Vec<String> = (0..300)
            .map(|i| alloc::format!("${{p{}}}", i + 1))
            .collect();
        let entries: Vec<(&str, &str)> = names
            .iter()
            .zip(values.iter())
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let (_, d) = expand_one(&entries, "p0");
        assert!(d.iter().any(|m| m.contains("nested too deeply")), "{d:?}");
        let nested = "${a?".repeat(500) + &"}".repeat(500);
        let (_, d) = expand_one(&[("a", "x"), ("v", &nested)], "v");
        assert!(d.iter().any(|m| m.contains("nested too deeply")), "{d:?}");
    }
}
