//! The message body as DATA carries it: dot-stuffed, CR LF line ends, long lines broken,
//! ended by `.`.
//!
//! The body comes in chunks that may split a line, or a CR LF pair, anywhere; the encoder
//! keeps the few facts it needs across chunks (at the start of a line? was the last octet
//! CR? how long is the line so far?) and nothing else, so memory does not grow with the
//! message. It does not read the message's structure: headers and body lines are broken
//! alike.
//!
//! ## Long lines
//!
//! With a line length limit (`smtp_line_length_limit`, 998 by default) a longer line goes
//! out as its first `limit` octets, CR LF, then a space and the next `limit - 1` octets, and
//! so on: the space counts towards the limit of the line it starts. In a header the space
//! makes the rest a continuation line of the same header. Dot-stuffing applies to each
//! resulting line (a piece after a break starts with the space, so never needs it) and does
//! not count towards the limit: the receiver removes it. [`line_break_overhead`] tells how
//! many octets the breaking adds to a message held whole.

use alloc::vec::Vec;

/// The smallest limit that lets a broken line progress: a piece after a break holds the
/// space and at least one octet of the line. Smaller non-zero limits are raised to it.
const MIN_LIMIT: usize = 2;

/// Turns message octets into the DATA stream.
#[derive(Clone, Debug)]
pub struct BodyEncoder {
    at_line_start: bool,
    after_cr: bool,
    /// Octets of the current output line, an inserted space included, stuffing excluded.
    line_len: usize,
    /// Longest line; 0: no limit.
    limit: usize,
}

impl Default for BodyEncoder {
    fn default() -> Self {
        BodyEncoder::with_line_limit(0)
    }
}

impl BodyEncoder {
    /// An encoder at the start of a message, breaking no line.
    pub fn new() -> Self {
        Self::default()
    }

    /// An encoder at the start of a message that breaks lines longer than `limit` octets
    /// (0: never; 1 is taken as 2).
    pub fn with_line_limit(limit: usize) -> Self {
        BodyEncoder {
            at_line_start: true,
            after_cr: false,
            line_len: 0,
            limit: if limit == 0 { 0 } else { limit.max(MIN_LIMIT) },
        }
    }

    /// Appends `chunk` to `out`: a `.` that starts a line is doubled, a bare LF or a bare CR
    /// becomes CR LF, a line reaching the limit is broken. RFC 5321 forbids bare line ends on
    /// the wire, and a receiver that took them for line ends could be made to see an end of
    /// data inside the message.
    ///
    /// Whole lines that need no more than their leading dots doubled (CR LF ends, within the
    /// limit) go out in one copy between such dots ([`crate::crlf`]); the rest line by
    /// line.
    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 32 + 2);
        // Searched once per call: the whole-lines path never reads past it.
        let last_lf = memchr::memrchr(b'\n', chunk);
        // Octets of `rest` to go line by line before whole lines are tried again: a span
        // found not clean is not checked twice.
        let mut by_line = 0usize;
        let mut rest = chunk;
        while !rest.is_empty() {
            let offset = chunk.len() - rest.len();
            if by_line == 0 && !self.after_cr {
                let span =
                    crate::crlf::whole_lines(rest, last_lf.and_then(|l| l.checked_sub(offset)));
                let lines = &rest[..span];
                if span > 0
                    && crate::crlf::crlf_only(lines)
                    && crate::crlf::lines_within(lines, self.line_len, self.limit)
                {
                    stuffed(lines, self.at_line_start, out);
                    self.at_line_start = true;
                    self.line_len = 0;
                    rest = &rest[span..];
                    continue;
                }
                // No LF ahead: the rest is one line, for the line-by-line path.
                by_line = if span == 0 { rest.len() } else { span };
            }
            let before = rest.len();
            self.encode_some(&mut rest, out);
            by_line = by_line.saturating_sub(before - rest.len());
        }
    }

    /// Encodes the start of `rest` (at least one octet), line by line, and advances it.
    fn encode_some(&mut self, rest: &mut &[u8], out: &mut Vec<u8>) {
        let Some(&first) = rest.first() else {
            return;
        };
        if self.after_cr {
            self.after_cr = false;
            out.push(b'\n');
            self.at_line_start = true;
            if first == b'\n' {
                *rest = &rest[1..];
                return;
            }
        }
        match first {
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                self.at_line_start = true;
                self.line_len = 0;
                *rest = &rest[1..];
            }
            b'\r' => {
                out.push(b'\r');
                self.after_cr = true;
                self.line_len = 0;
                *rest = &rest[1..];
            }
            _ => {
                if self.limit > 0 && self.line_len >= self.limit {
                    // More of this line is coming: break it here.
                    out.extend_from_slice(b"\r\n ");
                    self.line_len = 1;
                    self.at_line_start = false;
                }
                if first == b'.' && self.at_line_start {
                    out.push(b'.');
                }
                // The rest of the line's octets go as they are, in one copy, up to the
                // limit.
                let mut end = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                if self.limit > 0 {
                    end = end.min(self.limit - self.line_len);
                }
                out.extend_from_slice(&rest[..end]);
                self.line_len += end;
                self.at_line_start = false;
                *rest = &rest[end..];
            }
        }
    }

    /// Appends the end of data: a CR LF when the body did not end with one, then `.` CR LF.
    /// The encoder is then ready for the next message, with the same limit.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.after_cr {
            out.push(b'\n');
        } else if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        *self = BodyEncoder::with_line_limit(self.limit);
    }
}

/// Appends whole clean `lines` to `out` with each dot that starts a line doubled (the first
/// octet starts one when `at_line_start`).
fn stuffed(lines: &[u8], at_line_start: bool, out: &mut Vec<u8>) {
    if at_line_start && lines.first() == Some(&b'.') {
        out.push(b'.');
    }
    let mut from = 0;
    for lf in memchr::memmem::find_iter(lines, b"\n.") {
        out.extend_from_slice(&lines[from..=lf]);
        out.push(b'.');
        from = lf + 1;
    }
    out.extend_from_slice(&lines[from..]);
}

/// The octets that breaking lines longer than `limit` adds to `content` (a whole message):
/// CR LF and a space per break. 0 when `limit` is 0. For a `SIZE=` estimate.
pub fn line_break_overhead(content: &[u8], limit: usize) -> u64 {
    if limit == 0 {
        return 0;
    }
    let limit = limit.max(MIN_LIMIT);
    // Mail rarely has a line over the limit: a few looks per block settle it, where the
    // count below visits every line end.
    if crate::crlf::no_line_longer(content, limit) {
        return 0;
    }
    let mut added = 0;
    let mut start = 0;
    // Line ends found with memchr: a scan octet by octet was the hottest spot of the
    // relay's delivery of 100 KiB messages.
    let ends = memchr::memchr2_iter(b'\r', b'\n', content).chain(core::iter::once(content.len()));
    for end in ends {
        let len = end - start;
        if len > limit {
            // The first piece takes `limit` octets, each further one `limit - 1`.
            let breaks = 1 + (len - limit - 1) / (limit - 1);
            added += 3 * breaks as u64;
        }
        start = end + 1;
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The encoder's rules applied one octet at a time, as a reference.
    fn encode_octetwise(body: &[u8], limit: usize) -> Vec<u8> {
        let limit = if limit == 1 { 2 } else { limit };
        let mut out = Vec::new();
        let (mut at_line_start, mut after_cr, mut line_len) = (true, false, 0);
        for &b in body {
            if after_cr {
                after_cr = false;
                out.push(b'\n');
                at_line_start = true;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    line_len = 0;
                }
                b'\r' => {
                    out.push(b'\r');
                    after_cr = true;
                    line_len = 0;
                    continue;
                }
                _ => {
                    if limit > 0 && line_len == limit {
                        out.extend_from_slice(b"\r\n ");
                        line_len = 1;
                        at_line_start = false;
                    }
                    if b == b'.' && at_line_start {
                        out.push(b'.');
                    }
                    out.push(b);
                    line_len += 1;
                }
            }
            at_line_start = b == b'\n';
        }
        if after_cr {
            out.push(b'\n');
        } else if !at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    fn encode_in_pieces(body: &[u8], piece: usize) -> Vec<u8> {
        encode_limited(body, piece, 0)
    }

    fn encode_limited(body: &[u8], piece: usize, limit: usize) -> Vec<u8> {
        let mut enc = BodyEncoder::with_line_limit(limit);
        let mut out = Vec::new();
        for chunk in body.chunks(piece.max(1)) {
            enc.encode(chunk, &mut out);
        }
        enc.finish(&mut out);
        out
    }

    #[test]
    fn table() {
        let table: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"Hi\r\n", b"Hi\r\n.\r\n"),
            (b"Hi", b"Hi\r\n.\r\n"),
            (b"Hi\n", b"Hi\r\n.\r\n"),
            (b"a\nb\r\nc", b"a\r\nb\r\nc\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b".hidden\r\n..two\r\n", b"..hidden\r\n...two\r\n.\r\n"),
            (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"x.y\r\n", b"x.y\r\n.\r\n"),
            (b"bare\rcr\r\n", b"bare\r\ncr\r\n.\r\n"),
            (b"ends in cr\r", b"ends in cr\r\n.\r\n"),
            (b"\r.\r\n", b"\r\n..\r\n.\r\n"),
            (b"a\n.\r.\r\n", b"a\r\n..\r\n..\r\n.\r\n"),
            (b"\r\r\n", b"\r\n\r\n.\r\n"),
            (b"a\n\n", b"a\r\n\r\n.\r\n"),
        ];
        for (body, want) in table {
            for piece in 1..=body.len().max(1) {
                assert_eq!(
                    encode_in_pieces(body, piece),
                    *want,
                    "{:?} in pieces of {piece}",
                    std::string::String::from_utf8_lossy(body)
                );
            }
        }
    }

    /// The wire lines of `stream` (each without CR LF), the final dot left out.
    fn wire_lines(stream: &[u8]) -> Vec<&[u8]> {
        let body = stream
            .strip_suffix(b".\r\n")
            .expect("ends with the final dot");
        let mut lines: Vec<&[u8]> = body
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .collect();
        // What follows the last CR LF: nothing.
        lines.pop();
        lines
    }

    #[test]
    fn long_lines_break_as_debian_postfix_does() {
        let x = |n: usize| alloc::vec![b'x'; n];
        let mut long = x(2500);
        long.extend_from_slice(b"\r\n");
        let stream = encode_limited(&long, long.len(), 998);
        let lines = wire_lines(&stream);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], &x(998)[..]);
        assert_eq!(lines[1][0], b' ');
        assert_eq!(&lines[1][1..], &x(997)[..]);
        assert_eq!(lines[2][0], b' ');
        assert_eq!(&lines[2][1..], &x(2500 - 998 - 997)[..]);
        assert_eq!(line_break_overhead(&long, 998), 6);
        assert_eq!(stream.len() - encode_in_pieces(&long, 1).len(), 6);

        // At the limit nothing happens; one octet over, a piece of a space and that octet.
        for (len, pieces) in [(997, 1), (998, 1), (999, 2), (1995, 2), (1996, 3)] {
            let mut body = x(len);
            body.extend_from_slice(b"\n");
            let stream = encode_limited(&body, 7, 998);
            let lines = wire_lines(&stream);
            assert_eq!(lines.len(), pieces, "{len}");
            assert!(lines.iter().all(|l| l.len() <= 998), "{len}");
            let overhead = line_break_overhead(&body, 998);
            assert_eq!(overhead, 3 * (pieces as u64 - 1), "{len}");
        }

        // A header: the rest becomes continuation lines of the same header.
        let mut header = b"Subject: ".to_vec();
        header.extend(x(1491));
        header.extend_from_slice(b"\r\n\r\n.body\r\n");
        let stream = encode_limited(&header, 100, 998);
        let lines = wire_lines(&stream);
        assert_eq!(lines[0].len(), 998);
        assert!(lines[0].starts_with(b"Subject: "));
        assert_eq!(lines[1], [&b" "[..], &x(1500 - 998)[..]].concat());
        assert_eq!(&lines[2..], [&b""[..], b"..body"]);

        // Stuffing applies to the first piece and is not counted; pieces start with a space.
        let mut dotted = b".".to_vec();
        dotted.extend(alloc::vec![b'.'; 1199]);
        let stream = encode_limited(&dotted, 3, 998);
        let lines = wire_lines(&stream);
        assert_eq!(lines[0].len(), 999, "the stuffing dot and 998 octets");
        assert_eq!(lines[1].len(), 1 + 1200 - 998);
        assert!(lines[1].starts_with(b" ."));

        // Limit 0: never broken.
        let stream = encode_limited(&long, 64, 0);
        assert_eq!(wire_lines(&stream), [&x(2500)[..]]);
        assert_eq!(line_break_overhead(&long, 0), 0);
    }

    #[test]
    fn the_limit_survives_finish() {
        let mut enc = BodyEncoder::with_line_limit(4);
        let mut out = Vec::new();
        enc.encode(b"abcdef", &mut out);
        enc.finish(&mut out);
        enc.encode(b"ghijkl", &mut out);
        enc.finish(&mut out);
        assert_eq!(out, b"abcd\r\n ef\r\n.\r\nghij\r\n kl\r\n.\r\n");
        // A limit of 1 could not progress: it is taken as 2.
        let mut enc = BodyEncoder::with_line_limit(1);
        let mut out = Vec::new();
        enc.encode(b"abc", &mut out);
        enc.finish(&mut out);
        assert_eq!(out, b"ab\r\n c\r\n.\r\n");
        assert_eq!(line_break_overhead(b"abc", 1), 3);
    }

    proptest! {
        #[test]
        fn long_lines_break_the_same_in_any_chunking(
            body in proptest::collection::vec(
                prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b' '), any::<u8>()],
                0..300,
            ),
            piece in 1usize..40,
            limit in 0usize..12,
        ) {
            let whole = encode_limited(&body, body.len().max(1), limit);
            prop_assert_eq!(encode_limited(&body, piece, limit), whole.clone());
            prop_assert_eq!(&whole, &encode_octetwise(&body, limit));
            // Only CR LF SP was added, exactly as counted.
            let plain = encode_in_pieces(&body, body.len().max(1));
            let added = (whole.len() - plain.len()) as u64;
            prop_assert_eq!(added, line_break_overhead(&body, limit));
            // No wire line longer than the limit, once stuffing is undone.
            if limit > 0 {
                for line in wire_lines(&whole) {
                    let line = line.strip_prefix(b".").unwrap_or(line);
                    prop_assert!(line.len() <= limit.max(2));
                }
            }
        }

        /// Mail-like bodies: many CR LF lines, now and then one that starts with a dot, ends
        /// bare or runs past the limit, in pieces that cut lines anywhere.
        #[test]
        fn whole_lines_encode_as_octet_by_octet(
            lines in proptest::collection::vec(
                (prop_oneof![30 => 0usize..90, 1 => 90usize..1200],
                    prop_oneof![30 => Just(b'y'), 1 => Just(b'.')],
                    prop_oneof![40 => Just(&b"\r\n"[..]), 1 => Just(&b"\n"[..]), 1 => Just(&b"\r"[..]),
                        1 => Just(&b""[..])]),
                1..300,
            ),
            piece in prop_oneof![Just(64 * 1024), 1usize..9000],
            limit in prop_oneof![Just(0usize), Just(998), 2usize..12, 60usize..120],
        ) {
            let mut body = Vec::new();
            for (len, first, end) in lines {
                body.push(first);
                body.extend(core::iter::repeat_n(b'x', len));
                body.extend_from_slice(end);
            }
            prop_assert_eq!(encode_limited(&body, piece, limit), encode_octetwise(&body, limit));
        }

        #[test]
        fn chunking_never_changes_the_stream(
            body in proptest::collection::vec(prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), any::<u8>()], 0..200),
            piece in 1usize..50,
        ) {
            let whole = encode_in_pieces(&body, body.len().max(1));
            prop_assert_eq!(encode_in_pieces(&body, piece), whole.clone());
            prop_assert_eq!(&whole, &encode_octetwise(&body, 0));
            // The stream ends only at its end, and every LF has its CR.
            let end = whole.windows(5).position(|w| w == b"\r\n.\r\n");
            prop_assert!(end.is_none() || end == Some(whole.len() - 5));
            prop_assert!(whole.starts_with(b".\r\n") && whole.len() == 3 || end.is_some());
            for (i, &b) in whole.iter().enumerate() {
                if b == b'\n' {
                    prop_assert_eq!(whole[i - 1], b'\r');
                }
                if b == b'\r' {
                    prop_assert_eq!(whole[i + 1], b'\n');
                }
            }
        }
    }
}
