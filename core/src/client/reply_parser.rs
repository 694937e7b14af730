//! A push parser for server replies, one or many lines (`250-...` then `250 ...`).
//!
//! Bytes arrive in whatever pieces the network made; the parser keeps the unfinished line
//! and the lines of an unfinished reply. Lines longer than [`MAX_REPLY_LINE`] and replies of
//! more than [`MAX_REPLY_LINES`] lines are errors, never panics: a server that sends them is
//! not one we can stay in step with.

use crate::line::{LineBuffer, Push};
use crate::reply::Reply;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Longest reply line taken, CR included. RFC 5321 allows 512 octets; servers that send a
/// little more are common enough to be tolerated.
pub const MAX_REPLY_LINE: usize = 2048;

/// Most lines in one reply. A large EHLO reply has about twenty.
pub const MAX_REPLY_LINES: usize = 100;

/// Why the server's bytes are not a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyError {
    /// A line exceeded [`MAX_REPLY_LINE`] octets.
    LineTooLong,
    /// A reply had more than [`MAX_REPLY_LINES`] lines.
    TooManyLines,
    /// A line did not start with a reply code from 200 to 599 followed by space, hyphen or
    /// end of line. Holds the start of the line, made printable.
    Malformed(String),
    /// A continuation line changed the code (`250-a` then `550 b`).
    CodeChanged {
        /// Code of the first line.
        first: u16,
        /// Code of the offending line.
        then: u16,
    },
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::LineTooLong => {
                write!(f, "reply line longer than {MAX_REPLY_LINE} octets")
            }
            ReplyError::TooManyLines => write!(f, "reply of more than {MAX_REPLY_LINES} lines"),
            ReplyError::Malformed(start) => write!(f, "malformed reply line \"{start}\""),
            ReplyError::CodeChanged { first, then } => {
                write!(
                    f,
                    "reply code changed from {first} to {then} within one reply"
                )
            }
        }
    }
}

/// Accumulates reply lines until a last line (`NNN ` or a bare `NNN`) ends the reply.
#[derive(Debug, Default)]
pub struct ReplyParser {
    line: LineBuffer<MAX_REPLY_LINE>,
    code: Option<u16>,
    lines: Vec<String>,
    held: usize,
}

impl ReplyParser {
    /// An empty parser.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes bytes from `input` up to the end of one line.
    ///
    /// Returns how many bytes were taken, and a reply or an error when that line ended one.
    /// After an error the parser starts afresh with the next line.
    pub fn push(&mut self, input: &[u8]) -> (usize, Option<Result<Reply, ReplyError>>) {
        let (taken, found) = self.line.push(input);
        let result = match found {
            Push::NeedMore => return (taken, None),
            Push::TooLong => Some(Err(ReplyError::LineTooLong)),
            Push::Line => self.take_line(),
        };
        if result.is_some() {
            self.code = None;
            self.lines.clear();
            self.held = 0;
        }
        (taken, result)
    }

    /// Octets held for a reply not yet complete.
    pub fn pending(&self) -> usize {
        self.held + self.line.pending()
    }

    fn take_line(&mut self) -> Option<Result<Reply, ReplyError>> {
        let raw = self.line.line();
        let (code, last, text) = match split_line(raw) {
            Some(parts) => parts,
            None => {
                return Some(Err(ReplyError::Malformed(printable(
                    &raw[..raw.len().min(40)],
                ))))
            }
        };
        let first = *self.code.get_or_insert(code);
        if first != code {
            return Some(Err(ReplyError::CodeChanged { first, then: code }));
        }
        if self.lines.len() == MAX_REPLY_LINES {
            return Some(Err(ReplyError::TooManyLines));
        }
        self.held += raw.len() + 2;
        self.lines.push(printable(text));
        last.then(|| Ok(Reply::multi(code, core::mem::take(&mut self.lines))))
    }
}

/// Code, whether this is the last line, and the text.
fn split_line(raw: &[u8]) -> Option<(u16, bool, &[u8])> {
    let digits = raw.get(..3)?;
    let ok = (b'2'..=b'5').contains(&digits[0])
        && digits[1].is_ascii_digit()
        && digits[2].is_ascii_digit();
    if !ok {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match raw.get(3) {
        None => Some((code, true, &[])),
        Some(b' ') => Some((code, true, &raw[4..])),
        Some(b'-') => Some((code, false, &raw[4..])),
        Some(_) => None,
    }
}

/// Text for logs: invalid UTF-8 and control characters become `?`, so a server cannot
/// forge log lines.
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| {
            if c.is_control() || c == char::REPLACEMENT_CHARACTER {
                '?'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;
    use std::vec::Vec as StdVec;

    fn parse_all(input: &[u8], cuts: &[usize]) -> StdVec<Result<Reply, ReplyError>> {
        let mut parser = ReplyParser::new();
        let mut out = StdVec::new();
        let mut start = 0;
        let mut bounds: StdVec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        bounds.push(input.len());
        bounds.sort_unstable();
        for end in bounds {
            let mut piece = &input[start..end];
            while !piece.is_empty() {
                let (n, got) = parser.push(piece);
                piece = &piece[n..];
                out.extend(got);
            }
            start = end;
        }
        out
    }

    #[test]
    fn parses_single_and_multi_line_replies() {
        let got = parse_all(
            b"220 mx.example ESMTP\r\n250-mx.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n354\r\n",
            &[],
        );
        assert_eq!(
            got,
            [
                Ok(Reply::new(220, "mx.example ESMTP")),
                Ok(Reply::multi(
                    250,
                    vec!["mx.example".into(), "PIPELINING".into(), "8BITMIME".into()]
                )),
                Ok(Reply::new(354, "")),
            ]
        );
    }

    #[test]
    fn errors_are_values_and_parser_recovers() {
        let table: &[(&[u8], ReplyError)] = &[
            (b"hello\r\n", ReplyError::Malformed("hello".into())),
            (b"25\r\n", ReplyError::Malformed("25".into())),
            (b"150 x\r\n", ReplyError::Malformed("150 x".into())),
            (b"250x\r\n", ReplyError::Malformed("250x".into())),
            (
                b"250-a\r\n550 b\r\n",
                ReplyError::CodeChanged {
                    first: 250,
                    then: 550,
                },
            ),
        ];
        for (input, want) in table {
            let mut bytes = input.to_vec();
            bytes.extend_from_slice(b"221 bye\r\n");
            let got = parse_all(&bytes, &[]);
            assert_eq!(got.first(), Some(&Err(want.clone())), "{input:?}");
            assert_eq!(got.last(), Some(&Ok(Reply::new(221, "bye"))), "{input:?}");
        }
    }

    #[test]
    fn limits_on_line_length_and_line_count() {
        let mut long = vec![b'2', b'5', b'0', b' '];
        long.resize(MAX_REPLY_LINE + 10, b'x');
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse_all(&long, &[]), [Err(ReplyError::LineTooLong)]);

        let mut lenient = vec![b'2', b'5', b'0', b' '];
        lenient.resize(1000, b'x');
        lenient.extend_from_slice(b"\r\n");
        assert!(parse_all(&lenient, &[])[0].is_ok());

        let many: StdVec<u8> = b"250-x\r\n".repeat(MAX_REPLY_LINES + 1);
        assert_eq!(parse_all(&many, &[]), [Err(ReplyError::TooManyLines)]);
    }

    #[test]
    fn control_characters_do_not_reach_logs() {
        let got = parse_all(b"550 bad\x1b[1m \xff\r\r\n", &[]);
        assert_eq!(got, [Ok(Reply::new(550, "bad?[1m ??"))]);
    }

    #[test]
    fn pending_counts_held_lines() {
        let mut parser = ReplyParser::new();
        assert_eq!(parser.push(b"250-ab\r\n"), (8, None));
        assert_eq!(parser.push(b"25"), (2, None));
        assert_eq!(parser.pending(), 10);
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_replies(
            lines in proptest::collection::vec("[ -~]{0,30}", 1..6),
            code in 200u16..600,
            cuts in proptest::collection::vec(0usize..400, 0..12),
        ) {
            let mut wire = StdVec::new();
            Reply::multi(code, lines.clone()).write_to(&mut wire);
            wire.extend_from_slice(b"250 2.0.0 Ok\r\n");
            let whole = parse_all(&wire, &[]);
            prop_assert_eq!(parse_all(&wire, &cuts), whole.clone());
            for cut in 0..=wire.len() {
                prop_assert_eq!(parse_all(&wire, &[cut]), whole.clone());
            }
            let one_by_one: StdVec<usize> = (0..wire.len()).collect();
            prop_assert_eq!(parse_all(&wire, &one_by_one), whole);
        }
    }
}
