//! Counts the hops a message has already made: the `Received:` and `Delivered-To:` header
//! fields of its header section, as its content streams past (`hopcount_limit`).
//!
//! A mail loop adds one `Received:` per pass, so a message that carries too many is
//! refused rather than sent round once more.
//!
//! Not here: deciding what the limit is or how the refusal reads (the session does). Only
//! the header section is read; the body is never scanned, and a message without a blank
//! line is all header.

/// The longest field name counted, in bytes (`delivered-to:`).
const LONGEST: usize = 13;

/// Streaming counter of hop header fields; feed it the content in order, in any pieces.
#[derive(Clone, Debug, Default)]
pub struct HopCounter {
    /// Hop fields seen so far.
    count: u32,
    /// The header section has ended (a blank line was seen).
    body: bool,
    /// The start of the current line, lower case, up to [`LONGEST`] bytes.
    start: heapless::Vec<u8, LONGEST>,
    /// Bytes of the current line seen so far (saturating).
    seen: usize,
}

impl HopCounter {
    /// Takes the next piece of content.
    pub fn feed(&mut self, mut content: &[u8]) {
        while !self.body && !content.is_empty() {
            let end = memchr::memchr(b'\n', content);
            let line = &content[..end.unwrap_or(content.len())];
            self.line_part(line);
            match end {
                Some(at) => {
                    self.line_end();
                    content = &content[at + 1..];
                }
                None => return,
            }
        }
    }

    /// Hop fields counted so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    fn line_part(&mut self, part: &[u8]) {
        for &b in part.iter().take(LONGEST - self.start.len().min(LONGEST)) {
            // Cannot fail: the loop takes no more than the room left.
            let _ = self.start.push(b.to_ascii_lowercase());
        }
        self.seen = self.seen.saturating_add(part.len());
    }

    fn line_end(&mut self) {
        let line = self.start.as_slice();
        // A blank line (CR LF, or a bare LF) ends the header section.
        if self.seen == 0 || (self.seen == 1 && line == b"\r") {
            self.body = true;
        } else if line.starts_with(b"received:") || line.starts_with(b"delivered-to:") {
            self.count = self.count.saturating_add(1);
        }
        self.start.clear();
        self.seen = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(text: &[u8], piece: usize) -> u32 {
        let mut c = HopCounter::default();
        for p in text.chunks(piece.max(1)) {
            c.feed(p);
        }
        c.count()
    }

    #[test]
    fn counts_header_fields_only() {
        let text: &[u8] = b"Received: from a\r\n\tby b\r\n\
                           RECEIVED:from c\r\n\
                           Delivered-To: x@example.org\r\n\
                           X-Received: no\r\n\
                           Received-SPF: no\r\n\
                           Subject: Received: no\r\n\
                           \x20Received: continuation, no\r\n\
                           \r\n\
                           Received: in the body, no\r\n";
        for piece in [1, 2, 5, 13, 14, 1000] {
            assert_eq!(count(text, piece), 3, "piece {piece}");
        }
        assert_eq!(count(b"Received: a\nreceived: b\n\nReceived: c\n", 3), 2);
        assert_eq!(count(b"", 1), 0);
        // No blank line: all of it is header.
        assert_eq!(count(b"Received: a\r\nReceived: b", 4), 1);
    }

    proptest::proptest! {
        #[test]
        fn pieces_do_not_change_the_count(n in 0u32..70, piece in 1usize..40) {
            let mut text = std::vec::Vec::new();
            for i in 0..n {
                let name: &[u8] = if i % 2 == 0 { b"Received" } else { b"Delivered-To" };
                text.extend_from_slice(name);
                text.extend_from_slice(b": hop\r\n");
            }
            text.extend_from_slice(b"\r\nReceived: body\r\n");
            proptest::prop_assert_eq!(count(&text, piece), n);
        }
    }
}
