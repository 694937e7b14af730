//! The DATA receiver: finds the end of the message, undoes dot-stuffing, watches for bare
//! newlines and the size limit, and hands the content out in bounded chunks.
//!
//! Only `<CR><LF>.<CR><LF>` ends a message. A "line" for dot-stuffing and for the end marker
//! starts after CR LF and nowhere else, so `\n.\r\n`, `\r\n.\n` and `\r.\r` are content, never
//! an end (the SMTP smuggling attacks of 2023). The receiver holds at most one chunk and a
//! few bytes of state, whatever the line lengths.

use super::hops::HopCounter;
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
    /// Hop header fields in the content handed out.
    hops: HopCounter,
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
            hops: HopCounter::default(),
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

    /// `Received:` and `Delivered-To:` fields in the header of the content handed out so
    /// far (all of it once the end was found).
    pub fn hops(&self) -> u32 {
        self.hops.count()
    }

    /// Content octets held for the next chunk.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.chunk.len()
    }

    /// Scans `input`, calling `emit` with each full chunk and, once the end is found, with
    /// the last partial one. Stops right after the end marker.
    ///
    /// Whole lines with CR LF ends are content as they are, but for the stuffing dot of a
    /// line that starts with one, and are taken in one piece between such dots
    /// ([`crate::crlf`]); inside other lines, everything up to the next CR or LF is taken in
    /// one piece; the octet-by-octet state machine runs only at CR, LF and line starts.
    pub fn feed(&mut self, input: &[u8], emit: &mut dyn FnMut(Vec<u8>)) -> Fed {
        let had_problem = self.problem.is_some();
        let mut fed = Fed::default();
        let mut at = 0;
        // Searched once per call: the whole-lines path never reads past it.
        let last_lf = memchr::memrchr(b'\n', input);
        // Octets before this offset go line by line: a span found not clean is not checked
        // again.
        let mut by_line_until = 0;
        while let Some(&b) = input.get(at) {
            // A plain octet: content whatever follows, and never a line start.
            let plain = match self.scan {
                Scan::InLine => !matches!(b, b'\r' | b'\n'),
                Scan::LineStart => !matches!(b, b'.' | b'\r' | b'\n'),
                Scan::Dot | Scan::Cr | Scan::DotCr => false,
            };
            if plain && at >= by_line_until {
                match self.take_lines(input, at, last_lf, emit) {
                    Ok(next) => {
                        at = next;
                        continue;
                    }
                    Err(until) => by_line_until = until,
                }
            }
            if plain {
                at = self.take_run(input, at, emit);
                continue;
            }
            at += 1;
            if self.step(b, emit) {
                fed.ended = true;
                if self.problem.is_none() && !self.chunk.is_empty() {
                    self.hops.feed(&self.chunk);
                    emit(core::mem::take(&mut self.chunk));
                }
                break;
            }
        }
        fed.consumed = at;
        fed.newly_failed = !had_problem && self.problem.is_some();
        fed
    }

    /// Takes the whole clean lines that start at `input[at..]` (a plain octet, so never a
    /// line's dot), up to the last LF of `input` at `last_lf`, when all of them fit within
    /// the size limit: the content between the dots that start lines in one piece each, the
    /// dots dropped, up to a line that is a lone dot (the end, left to the octet-by-octet
    /// path). The receiver is then at a line start. Otherwise the offset up to which the
    /// octets must go line by line.
    fn take_lines(
        &mut self,
        input: &[u8],
        at: usize,
        last_lf: Option<usize>,
        emit: &mut dyn FnMut(Vec<u8>),
    ) -> Result<usize, usize> {
        let rest = &input[at..];
        let span = crate::crlf::whole_lines(rest, last_lf.and_then(|l| l.checked_sub(at)));
        if span == 0 {
            // No LF ahead: the rest is one line, for the line-by-line path.
            return Err(input.len());
        }
        let lines = &rest[..span];
        // The content is shorter than the span by its stuffing dots.
        if !crate::crlf::crlf_only(lines) || !self.room_for(span) {
            return Err(at + span);
        }
        // Every LF here follows a CR: a dot after one starts a line.
        let mut from = 0;
        for lf in memchr::memmem::find_iter(lines, b"\n.") {
            let dot = lf + 1;
            self.content_run(&lines[from..dot], emit);
            self.scan = Scan::LineStart;
            if lines[dot..].starts_with(b".\r\n") {
                return Ok(at + dot);
            }
            from = dot + 1;
        }
        self.content_run(&lines[from..], emit);
        self.scan = Scan::LineStart;
        Ok(at + span)
    }

    /// Takes the plain octets of a line from `input[at..]` (at least one), up to its next CR
    /// or LF, and
    /// that CR LF too when both are there and no size limit can be crossed (then the CR LF
    /// is counted and kept exactly as [`DataReceiver::step`] would). Returns where it
    /// stopped.
    fn take_run(&mut self, input: &[u8], at: usize, emit: &mut dyn FnMut(Vec<u8>)) -> usize {
        let rest = &input[at..];
        let end = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
        let with_crlf = end + 2;
        if rest.get(end..with_crlf) == Some(b"\r\n") && self.room_for(with_crlf) {
            self.content_run(&rest[..with_crlf], emit);
            self.scan = Scan::LineStart;
            return at + with_crlf;
        }
        self.content_run(&rest[..end], emit);
        self.scan = Scan::InLine;
        at + end
    }

    /// True when `len` more content octets stay within the size limit.
    fn room_for(&self, len: usize) -> bool {
        self.limit == 0 || self.size.saturating_add(len as u64) <= self.limit
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

    /// Content octets that count as one: all kept, or none if they cross the size limit.
    fn content(&mut self, bytes: &[u8], emit: &mut dyn FnMut(Vec<u8>)) {
        self.size = self.size.saturating_add(bytes.len() as u64);
        if self.limit > 0 && self.size > self.limit {
            self.fail(DataProblem::TooBig);
        }
        if self.problem.is_none() {
            self.keep(bytes, emit);
        }
    }

    /// Content octets that count one by one, as if each went through
    /// [`DataReceiver::content`] alone: those within the size limit are kept, the first one
    /// past it refuses the message.
    fn content_run(&mut self, bytes: &[u8], emit: &mut dyn FnMut(Vec<u8>)) {
        let fits = match self.limit {
            0 => bytes.len(),
            limit => usize::try_from(limit.saturating_sub(self.size))
                .unwrap_or(usize::MAX)
                .min(bytes.len()),
        };
        self.size = self.size.saturating_add(bytes.len() as u64);
        if self.problem.is_none() {
            self.keep(&bytes[..fits], emit);
        }
        if fits < bytes.len() {
            self.fail(DataProblem::TooBig);
        }
    }

    /// Appends to the chunk, handing out each chunk as it fills.
    fn keep(&mut self, mut bytes: &[u8], emit: &mut dyn FnMut(Vec<u8>)) {
        while !bytes.is_empty() {
            if self.chunk.capacity() == 0 {
                self.chunk.reserve_exact(CHUNK_SIZE);
            }
            let take = (CHUNK_SIZE - self.chunk.len()).min(bytes.len());
            self.chunk.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.chunk.len() == CHUNK_SIZE {
                self.hops.feed(&self.chunk);
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
    fn crlf_counts_as_one_against_the_limit() {
        // The CR would complete a chunk, but CR LF together cross the limit: nothing is
        // handed out, whether the line arrives whole or octet by octet.
        let mut input = vec![b'x'; CHUNK_SIZE - 1];
        input.extend_from_slice(b"\r\n.\r\n");
        for piece in [1, 7, CHUNK_SIZE - 1, CHUNK_SIZE, input.len()] {
            for limit in [CHUNK_SIZE as u64, CHUNK_SIZE as u64 + 1] {
                let (calls, problem, _, _) =
                    trace(&input, piece, BareNewline::Reject, limit, false);
                let chunks: usize = calls.iter().map(|(_, c)| c.len()).sum();
                let fits = limit > CHUNK_SIZE as u64;
                assert_eq!(chunks, 2 * usize::from(fits), "piece {piece} limit {limit}");
                assert_eq!(problem.is_none(), fits, "piece {piece} limit {limit}");
            }
        }
    }

    #[test]
    fn long_lines_pass_in_bounded_chunks() {
        let mut input = vec![b'x'; 3 * CHUNK_SIZE + 17];
        input.extend_from_slice(b"\r\n.\r\n");
        let (body, ended, _, problem) = receive(&input, 5000, BareNewline::Reject, 0);
        assert!(ended && problem.is_none());
        assert_eq!(body.len(), 3 * CHUNK_SIZE + 19);
    }

    /// The receiver as it was before runs were taken whole: every octet through `step`.
    fn feed_octet_by_octet(
        rx: &mut DataReceiver,
        input: &[u8],
        emit: &mut dyn FnMut(Vec<u8>),
    ) -> Fed {
        let had_problem = rx.problem.is_some();
        let mut fed = Fed::default();
        for &b in input {
            fed.consumed += 1;
            if rx.step(b, emit) {
                fed.ended = true;
                if rx.problem.is_none() && !rx.chunk.is_empty() {
                    emit(core::mem::take(&mut rx.chunk));
                }
                break;
            }
        }
        fed.newly_failed = !had_problem && rx.problem.is_some();
        fed
    }

    /// Every output of a receiver fed `input` in `piece`-octet reads: each call's `Fed` and
    /// chunks, then the problem, the size and what is held.
    type Trace = (Vec<(Fed, Vec<Vec<u8>>)>, Option<DataProblem>, u64, Vec<u8>);

    fn trace(input: &[u8], piece: usize, bare: BareNewline, limit: u64, reference: bool) -> Trace {
        let mut rx = DataReceiver::new(limit, bare);
        let mut calls = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let read = &rest[..piece.min(rest.len())];
            let mut chunks = Vec::new();
            let mut emit = |c: Vec<u8>| chunks.push(c);
            let fed = if reference {
                feed_octet_by_octet(&mut rx, read, &mut emit)
            } else {
                rx.feed(read, &mut emit)
            };
            rest = &rest[fed.consumed..];
            let ended = fed.ended;
            calls.push((fed, chunks));
            if ended {
                break;
            }
        }
        (calls, rx.problem, rx.size, rx.chunk.clone())
    }

    /// Message-like input: lines of `(length, first octet, line end)`, where the first
    /// octet may be a dot and the end may be bare.
    fn wire(lines: &[(usize, u8, u8)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(len, first, end) in lines {
            out.push(first);
            out.extend(core::iter::repeat_n(b'x', len));
            match end {
                0 => out.extend_from_slice(b"\r\n"),
                1 => out.push(b'\n'),
                2 => out.push(b'\r'),
                _ => out.extend_from_slice(b"\r\n.\r\n"),
            }
        }
        out
    }

    proptest! {
        #[test]
        fn runs_taken_whole_match_octet_by_octet(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a'), Just(b'b')], 0..200),
            piece in 1usize..40,
            normalize in any::<bool>(),
            limit in prop_oneof![Just(0u64), 1u64..150],
        ) {
            let mode = if normalize { BareNewline::Normalize } else { BareNewline::Reject };
            prop_assert_eq!(
                trace(&input, piece, mode, limit, false),
                trace(&input, piece, mode, limit, true)
            );
        }

        #[test]
        fn long_messages_cut_chunks_and_limits_alike(
            lines in proptest::collection::vec(
                (0usize..3000, prop_oneof![Just(b'.'), Just(b'y')], prop_oneof![3 => Just(0u8), 1 => 0u8..4]),
                1..40,
            ),
            piece in prop_oneof![Just(16 * 1024), 1usize..9000],
            normalize in any::<bool>(),
            limit in prop_oneof![Just(0u64), 1u64..60_000, (1u64..8).prop_map(|k| k * CHUNK_SIZE as u64 + 1)],
        ) {
            let mode = if normalize { BareNewline::Normalize } else { BareNewline::Reject };
            let input = wire(&lines);
            prop_assert_eq!(
                trace(&input, piece, mode, limit, false),
                trace(&input, piece, mode, limit, true)
            );
        }

        /// Mail-like text: many short CR LF lines, now and then one that starts with a dot
        /// or ends bare, read in pieces that cut lines and blocks anywhere.
        #[test]
        fn whole_lines_match_octet_by_octet(
            lines in proptest::collection::vec(
                (0usize..90, prop_oneof![30 => Just(b'y'), 1 => Just(b'.')],
                    prop_oneof![60 => Just(0u8), 1 => 0u8..4]),
                1..400,
            ),
            piece in prop_oneof![Just(16 * 1024), 1usize..9000],
            normalize in any::<bool>(),
            limit in prop_oneof![Just(0u64), 1u64..40_000],
        ) {
            let mode = if normalize { BareNewline::Normalize } else { BareNewline::Reject };
            let input = wire(&lines);
            prop_assert_eq!(
                trace(&input, piece, mode, limit, false),
                trace(&input, piece, mode, limit, true)
            );
        }

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
