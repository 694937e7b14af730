//! A bounded line accumulator for command and reply lines.
//!
//! Bytes are pushed in whatever chunks the network delivered; a line is handed out once its
//! LF arrives. A line longer than the buffer is not an error that stops the session: its bytes
//! are discarded up to the next LF and the caller is told once, so it can answer and stay in
//! step with the peer.

use heapless::Vec;

/// What [`LineBuffer::push`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    /// All input was taken; no line is complete yet.
    NeedMore,
    /// A line is complete: read it with [`LineBuffer::line`].
    Line,
    /// A line longer than the buffer ended; its bytes were discarded.
    TooLong,
}

/// Accumulates one line of at most `N` octets (terminator excluded).
#[derive(Debug, Default)]
pub struct LineBuffer<const N: usize> {
    buf: Vec<u8, N>,
    overflowed: bool,
    complete: bool,
}

impl<const N: usize> LineBuffer<N> {
    /// An empty buffer.
    pub const fn new() -> Self {
        LineBuffer {
            buf: Vec::new(),
            overflowed: false,
            complete: false,
        }
    }

    /// Takes bytes from `input` up to and including the first LF.
    ///
    /// Returns how many bytes were consumed and what was found. A line that was complete
    /// before this call is forgotten first. The terminator is LF, with one CR before it
    /// removed; CR alone does not end a line.
    pub fn push(&mut self, input: &[u8]) -> (usize, Push) {
        if self.complete {
            self.clear();
        }
        let (chunk, consumed, ended) = match memchr::memchr(b'\n', input) {
            Some(i) => (&input[..i], i + 1, true),
            None => (input, input.len(), false),
        };
        if !self.overflowed && self.buf.extend_from_slice(chunk).is_err() {
            // Keep what fits at the start? No: a cut line would be executed as something it
            // is not. Drop it all and say so when it ends.
            self.overflowed = true;
            self.buf.clear();
        }
        if !ended {
            return (consumed, Push::NeedMore);
        }
        if self.overflowed {
            self.clear();
            return (consumed, Push::TooLong);
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        self.complete = true;
        (consumed, Push::Line)
    }

    /// The whole line at the start of `input`, read in place when no line is under way
    /// (nothing held, nothing being discarded) and it fits: how many bytes it took, LF
    /// included, and the line without its CR LF, borrowed from `input`.
    ///
    /// `None` when that is not the case; nothing was taken then, and [`LineBuffer::push`]
    /// does the rest. Either way the lines found are the same.
    pub fn whole_line<'a>(&mut self, input: &'a [u8]) -> Option<(usize, &'a [u8])> {
        if self.complete {
            self.clear();
        }
        if self.overflowed || !self.buf.is_empty() {
            return None;
        }
        let end = memchr::memchr(b'\n', input)?;
        if end > N {
            return None;
        }
        let line = &input[..end];
        Some((end + 1, line.strip_suffix(b"\r").unwrap_or(line)))
    }

    /// The complete line, without its CR LF (empty unless `push` just returned `Line`).
    pub fn line(&self) -> &[u8] {
        if self.complete {
            &self.buf
        } else {
            &[]
        }
    }

    /// Bytes held for an unfinished line (0 while discarding an over-long one).
    pub fn pending(&self) -> usize {
        if self.complete {
            0
        } else {
            self.buf.len()
        }
    }

    /// Forgets everything, including an over-long line being discarded.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.overflowed = false;
        self.complete = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines<const N: usize>(
        input: &[u8],
        chunk: usize,
    ) -> std::vec::Vec<Result<std::vec::Vec<u8>, ()>> {
        let mut lb = LineBuffer::<N>::new();
        let mut out = std::vec::Vec::new();
        for piece in input.chunks(chunk) {
            let mut rest = piece;
            while !rest.is_empty() {
                let (n, found) = lb.push(rest);
                rest = &rest[n..];
                match found {
                    Push::Line => out.push(Ok(lb.line().to_vec())),
                    Push::TooLong => out.push(Err(())),
                    Push::NeedMore => {}
                }
            }
        }
        out
    }

    #[test]
    fn splits_on_lf_and_strips_one_cr() {
        for chunk in 1..8 {
            let got = lines::<16>(b"EHLO a\r\nNOOP\nX\r\r\n", chunk);
            assert_eq!(
                got,
                [
                    Ok(b"EHLO a".to_vec()),
                    Ok(b"NOOP".to_vec()),
                    Ok(b"X\r".to_vec())
                ]
            );
        }
    }

    #[test]
    fn overlong_line_is_reported_once_and_stream_stays_in_step() {
        for chunk in 1..40 {
            let got = lines::<8>(b"0123456789abcdef\r\nQUIT\r\n", chunk);
            assert_eq!(got, [Err(()), Ok(b"QUIT".to_vec())], "chunk {chunk}");
        }
        // Exactly N octets fit.
        assert_eq!(
            lines::<4>(b"ABCD\r\n", 1),
            [Err(())],
            "CR counts while the line is open"
        );
        assert_eq!(lines::<5>(b"ABCD\r\n", 1), [Ok(b"ABCD".to_vec())]);
    }

    /// Like `lines`, but reading whole lines in place first, as the server session does.
    fn lines_in_place<const N: usize>(
        input: &[u8],
        chunk: usize,
    ) -> std::vec::Vec<Result<std::vec::Vec<u8>, ()>> {
        let mut lb = LineBuffer::<N>::new();
        let mut out = std::vec::Vec::new();
        for piece in input.chunks(chunk) {
            let mut rest = piece;
            while !rest.is_empty() {
                if let Some((n, line)) = lb.whole_line(rest) {
                    assert_eq!(lb.pending(), 0);
                    out.push(Ok(line.to_vec()));
                    rest = &rest[n..];
                    continue;
                }
                let (n, found) = lb.push(rest);
                rest = &rest[n..];
                match found {
                    Push::Line => out.push(Ok(lb.line().to_vec())),
                    Push::TooLong => out.push(Err(())),
                    Push::NeedMore => {}
                }
            }
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn reading_in_place_finds_the_same_lines(
            input in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(b'\r'),
                    proptest::strategy::Just(b'\n'),
                    proptest::strategy::Just(b'a'),
                ],
                0..80,
            ),
            chunk in 1usize..20,
        ) {
            proptest::prop_assert_eq!(lines_in_place::<6>(&input, chunk), lines::<6>(&input, chunk));
        }
    }

    #[test]
    fn pending_counts_partial_line() {
        let mut lb = LineBuffer::<8>::new();
        assert_eq!(lb.push(b"AB"), (2, Push::NeedMore));
        assert_eq!(lb.pending(), 2);
        assert_eq!(lb.push(b"\nC"), (1, Push::Line));
        assert_eq!(lb.pending(), 0);
        assert_eq!(lb.push(b"C"), (1, Push::NeedMore));
        assert_eq!(lb.pending(), 1);
    }
}
