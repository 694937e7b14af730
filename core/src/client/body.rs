//! The message body as DATA carries it: dot-stuffed, CR LF line ends, ended by `.`.
//!
//! The body comes in chunks that may split a line, or a CR LF pair, anywhere; the encoder
//! keeps the two facts it needs across chunks (at the start of a line? was the last octet
//! CR?) and nothing else, so memory does not grow with the message.

use alloc::vec::Vec;

/// Turns message octets into the DATA stream.
#[derive(Clone, Debug)]
pub struct BodyEncoder {
    at_line_start: bool,
    after_cr: bool,
}

impl Default for BodyEncoder {
    fn default() -> Self {
        BodyEncoder {
            at_line_start: true,
            after_cr: false,
        }
    }
}

impl BodyEncoder {
    /// An encoder at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `chunk` to `out`: a `.` that starts a line is doubled, a bare LF or a bare CR
    /// becomes CR LF. RFC 5321 forbids bare line ends on the wire, and a receiver that took
    /// them for line ends could be made to see an end of data inside the message.
    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 32 + 2);
        let mut rest = chunk;
        while let Some(&first) = rest.first() {
            if self.after_cr {
                self.after_cr = false;
                out.push(b'\n');
                self.at_line_start = true;
                if first == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            match first {
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.at_line_start = true;
                    rest = &rest[1..];
                }
                b'\r' => {
                    out.push(b'\r');
                    self.after_cr = true;
                    rest = &rest[1..];
                }
                _ => {
                    if first == b'.' && self.at_line_start {
                        out.push(b'.');
                    }
                    // The rest of the line's octets go as they are, in one copy.
                    let end = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                    out.extend_from_slice(&rest[..end]);
                    self.at_line_start = false;
                    rest = &rest[end..];
                }
            }
        }
    }

    /// Appends the end of data: a CR LF when the body did not end with one, then `.` CR LF.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.after_cr {
            out.push(b'\n');
        } else if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        *self = BodyEncoder::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The encoder's rules applied one octet at a time, as a reference.
    fn encode_octetwise(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut at_line_start, mut after_cr) = (true, false);
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
                b'\n' => out.extend_from_slice(b"\r\n"),
                b'\r' => {
                    out.push(b'\r');
                    after_cr = true;
                    continue;
                }
                b'.' if at_line_start => out.extend_from_slice(b".."),
                _ => out.push(b),
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
        let mut enc = BodyEncoder::new();
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

    proptest! {
        #[test]
        fn chunking_never_changes_the_stream(
            body in proptest::collection::vec(prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), any::<u8>()], 0..200),
            piece in 1usize..50,
        ) {
            let whole = encode_in_pieces(&body, body.len().max(1));
            prop_assert_eq!(encode_in_pieces(&body, piece), whole.clone());
            prop_assert_eq!(&whole, &encode_octetwise(&body));
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
