//! The DATA receiver: finds the end of the message, undoes dot-stuffing, watches for bare
//! newlines and the size limit, and hands the content out in bounded chunks.
//!
//! Only `<CR><LF>.<CR><LF>` ends a message. A "line" for dot-stuffing and for the end marker
//! starts after CR LF and nowhere else, so `\n.\r\n`, `\r\n.\n` and `\r.\r` are content, never
//! an end (the SMTP smuggling attacks of 2023). The receiver holds at most one chunk and a
//! few bytes of state, whatever the line lengths.

use crate::settings::BareNewline;
use alloc::vec::Vec;

/// Size of the body chunks handed to the shell. Chunks are cut at fixed sizes, so how the
/// network split the input never shows in the output.
pub const CHUNK_SIZE: usize = 8 * 1024;

/// Where the scanner stands relative to the SMTP line structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scan {
    /// After CR LF (or at the start of the data).
    LineStart,
    /// Inside a line.
    InLine,
    /// A `.` at the start of a line, held back.
    Dot,
    /// A CR, held back until we see whether LF follows.
    Cr,
    /// `.` CR at the start of a line: LF now ends the message.
    DotCr,
}

/// Why the message will be refused when its end arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataProblem {
    /// A bare LF or CR, with `BareNewline::Reject`.
    BareNewline,
    /// More than `message_size_limit` octets.
    TooBig,
}

/// What one call to [`DataReceiver::feed`] produced, besides the bytes it consumed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fed {
    /// Input octets consumed (everything up to and including the end marker, if found).
    pub consumed: usize,
    /// The end marker was found.
    pub ended: bool,
    /// A problem appeared during this call: the shell should drop the message now.
    pub newly_failed: bool,
}

/// Receives one message body.
#[derive(Debug)]
pub struct DataReceiver {
    scan: Scan,
    chunk: Vec<u8>,
    size: u64,
    limit: u64,
    bare: BareNewline,
    problem: Option<DataProblem>,
}

impl DataReceiver {
    /// A receiver for one message; `limit` 0 means no size limit.
    pub fn new(limit: u64, bare: BareNewline) -> Self {
        DataReceiver {
            scan: Scan::LineStart,
            chunk: Vec::new(),
            size: 0,
            limit,
            bare,
            problem: None,
        }
    }

    /// The problem found so far, if any.
    pub fn problem(&self) -> Option<DataProblem> {
        self.problem
    }

    /// Octets of content so far (after unstuffing and newline normalization).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Content octets held for the next chunk.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.chunk.len()
    }

    /// Scans `input`, calling `emit` with each full chunk and, once the end is found, with
    /// the last partial one. Stops right after the end marker.
    pub fn feed(&mut self, input: &[u8], emit: &mut dyn FnMut(Vec<u8>)) -> Fed {
        let had_problem = self.problem.is_some();
        let mut fed = Fed::default();
        for &b in input {
            fed.consumed += 1;
            if self.step(b, emit) {
                fed.ended = true;
                if self.problem.is_none() && !self.chunk.is_empty() {
                    emit(core::mem::take(&mut self.chunk));
                }
                break;
            }
        }
        fed.newly_failed = !had_problem && self.problem.is_some();
        fed
    }

    /// One octet; true when it completed the end marker.
    fn step(&mut self, b: u8, emit: &mut dyn FnMut(Vec<u8>)) -> bool {
        match (self.scan, b) {
            (Scan::LineStart, b'.') => self.scan = Scan::Dot,
            (Scan::DotCr, b'\n') => return true,
            (Scan::Cr, b'\n') => {
                self.content(b"\r\n", emit);
                self.scan = Scan::LineStart;
            }
            (Scan::Cr, _) => {
                self.bare_newline(b'\r', emit);
                self.scan = Scan::InLine;
                return self.step(b, emit);
            }
            (Scan::Dot, b'\r') => self.scan = Scan::DotCr,
            (Scan::Dot, _) => {
                // The stuffing dot is dropped; what follows is ordinary line content.
                self.scan = Scan::InLine;
                return self.step(b, emit);
            }
            (Scan::DotCr, _) => {
                // `.` then a bare CR: drop the dot, the CR is bare.
                self.bare_newline(b'\r', emit);
                self.scan = Scan::InLine;
                return self.step(b, emit);
            }
            (Scan::LineStart | Scan::InLine, b'\r') => self.scan = Scan::Cr,
            (Scan::LineStart | Scan::InLine, b'\n') => {
                self.bare_newline(b'\n', emit);
                self.scan = Scan::InLine;
            }
            (Scan::LineStart | Scan::InLine, _) => {
                self.content(&[b], emit);
                self.scan = Scan::InLine;
            }
        }
        false
    }

    /// A bare LF or CR: refused, or turned into CR LF. Never a line start either way.
    fn bare_newline(&mut self, b: u8, emit: &mut dyn FnMut(Vec<u8>)) {
        match self.bare {
            BareNewline::Reject => {
                self.fail(DataProblem::BareNewline);
                self.content(&[b], emit);
            }
            BareNewline::Normalize => self.content(b"\r\n", emit),
        }
    }

    fn fail(&mut self, problem: DataProblem) {
        if self.problem.is_none() {
            self.problem = Some(problem);
            self.chunk = Vec::new();
        }
    }

    /// Content octets: counted, and kept unless the message is already refused.
    fn content(&mut self, bytes: &[u8], emit: &mut dyn FnMut(Vec<u8>)) {
        self.size = self.size.saturating_add(bytes.len() as u64);
        if self.limit > 0 && self.size > self.limit {
            self.fail(DataProblem::TooBig);
        }
        if self.problem.is_some() {
            return;
        }
        for &b in bytes {
            if self.chunk.capacity() == 0 {
                self.chunk.reserve_exact(CHUNK_SIZE);
            }
            self.chunk.push(b);
            if self.chunk.len() == CHUNK_SIZE {
                emit(core::mem::take(&mut self.chunk));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    /// Runs `input` in pieces of `piece` octets; returns (body, ended, consumed, problem).
    fn receive(
        input: &[u8],
        piece: usize,
        bare: BareNewline,
        limit: u64,
    ) -> (Vec<u8>, bool, usize, Option<DataProblem>) {
        let mut rx = DataReceiver::new(limit, bare);
        let mut body = Vec::new();
        let mut consumed = 0;
        for p in input.chunks(piece.max(1)) {
            let fed = rx.feed(p, &mut |c| {
                assert!(c.len() <= CHUNK_SIZE);
                body.extend_from_slice(&c)
            });
            consumed += fed.consumed;
            if fed.ended {
                return (body, true, consumed, rx.problem());
            }
        }
        body.extend_from_slice(&rx.chunk);
        (body, false, consumed, rx.problem())
    }

    #[test]
    fn end_marker_and_unstuffing() {
        use BareNewline::{Normalize, Reject};
        // (input, mode, body, ended, problem)
        type Case = (
            &'static [u8],
            BareNewline,
            &'static [u8],
            bool,
            Option<DataProblem>,
        );
        let table: &[Case] = &[
            (b".\r\n", Reject, b"", true, None),
            (b"a\r\n.\r\n", Reject, b"a\r\n", true, None),
            (b"a\r\n.\r\nQUIT\r\n", Reject, b"a\r\n", true, None),
            (b"..a\r\n.\r\n", Reject, b".a\r\n", true, None),
            (b"a\r\n..\r\n.\r\n", Reject, b"a\r\n.\r\n", true, None),
            (b"a\r\n.b\r\n.\r\n", Reject, b"a\r\nb\r\n", true, None),
            (b"a.\r\n.\r\n", Reject, b"a.\r\n", true, None),
            // Smuggling: none of these is an end.
            (b"a\n.\r\nMAIL", Normalize, b"a\r\n.\r\nMAIL", false, None),
            (b"a\r\n.\nMAIL", Normalize, b"a\r\n\r\nMAIL", false, None),
            (b"a\r.\rMAIL", Normalize, b"a\r\n.\r\nMAIL", false, None),
            (b"a\n.\nMAIL", Normalize, b"a\r\n.\r\nMAIL", false, None),
            (
                b"a\n.\r\n",
                Reject,
                b"",
                false,
                Some(DataProblem::BareNewline),
            ),
            (
                b"a\r\n.\n",
                Reject,
                b"",
                false,
                Some(DataProblem::BareNewline),
            ),
            (
                b"a\r.\r",
                Reject,
                b"",
                false,
                Some(DataProblem::BareNewline),
            ),
            // Bare newlines, then a real end.
            (
                b"a\nb\r\n.\r\n",
                Reject,
                b"",
                true,
                Some(DataProblem::BareNewline),
            ),
            (b"a\nb\r\n.\r\n", Normalize, b"a\r\nb\r\n", true, None),
            (b"a\rb\r\n.\r\n", Normalize, b"a\r\nb\r\n", true, None),
            (b"a\r\r\n.\r\n", Normalize, b"a\r\n\r\n", true, None),
            (b".\rx\r\n.\r\n", Normalize, b"\r\nx\r\n", true, None),
            (b"\r\n.\r\n", Reject, b"\r\n", true, None),
        ];
        for &(input, mode, body, ended, problem) in table {
            for piece in 1..=input.len() {
                let got = receive(input, piece, mode, 0);
                assert_eq!(
                    (got.0.as_slice(), got.1, got.3),
                    (body, ended, problem),
                    "{input:?} {mode:?} piece {piece}"
                );
            }
        }
    }

    #[test]
    fn stops_right_after_the_end() {
        let got = receive(b"x\r\n.\r\nNOOP\r\n", 100, BareNewline::Reject, 0);
        assert_eq!(got.2, 6);
    }

    #[test]
    fn size_limit_counts_content_not_stuffing() {
        // 11 octets of content: "..a" unstuffs to ".a", the end marker is not content.
        let input = b"..abcdef\r\n\r\n.\r\n";
        assert_eq!(receive(input, 3, BareNewline::Reject, 12).3, None);
        assert_eq!(receive(input, 3, BareNewline::Reject, 11).3, None);
        assert_eq!(
            receive(input, 3, BareNewline::Reject, 10).3,
            Some(DataProblem::TooBig)
        );
    }

    #[test]
    fn long_lines_pass_in_bounded_chunks() {
        let mut input = vec![b'x'; 3 * CHUNK_SIZE + 17];
        input.extend_from_slice(b"\r\n.\r\n");
        let (body, ended, _, problem) = receive(&input, 5000, BareNewline::Reject, 0);
        assert!(ended && problem.is_none());
        assert_eq!(body.len(), 3 * CHUNK_SIZE + 19);
    }

    proptest! {
        #[test]
        fn chunking_never_matters(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a')], 0..64),
            piece in 1usize..10,
            normalize in any::<bool>(),
        ) {
            let mode = if normalize { BareNewline::Normalize } else { BareNewline::Reject };
            prop_assert_eq!(receive(&input, piece, mode, 40), receive(&input, input.len().max(1), mode, 40));
        }

        #[test]
        fn only_crlf_dot_crlf_ends(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a')], 0..64),
        ) {
            let (_, ended, consumed, _) = receive(&input, 7, BareNewline::Normalize, 0);
            let mut framed = b"\r\n".to_vec();
            framed.extend_from_slice(&input);
            let first = framed.windows(5).position(|w| w == b"\r\n.\r\n");
            // The data starts at a line start, as if after "\r\n".
            prop_assert_eq!(ended, first.is_some());
            if let Some(at) = first {
                prop_assert_eq!(consumed, at + 5 - 2);
            }
        }
    }
}
