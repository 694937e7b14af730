//! Checks over a span of message text at once, for the fast paths of the DATA receiver
//! (`server::data`) and the body encoder (`client::body`): whole lines with CR LF ends and no
//! bare CR or LF go through both unchanged but for the dots that start lines (doubled or
//! dropped, found with one search per span), so they can be taken in one copy instead of
//! line by line.
//!
//! These functions only answer questions about a span; what to do with text that fails them
//! stays with the callers' octet-by-octet rules, which remain the reference. Every check is
//! linear in the span it is given, and a caller gives each octet to them at most once; what
//! content shaped against the fast path costs is measured by `benches/smtp_parse.rs`
//! (`smtp_hostile`).

/// The length of `text` up to and including its last LF, `last_lf` (the caller's one search
/// from the end of its input, so that repeated calls on one input do not scan its tail
/// again); 0 when there is none in `text`.
pub fn whole_lines(text: &[u8], last_lf: Option<usize>) -> usize {
    last_lf.filter(|&l| l < text.len()).map_or(0, |l| l + 1)
}

/// One octet value in each of the eight octets of a word.
const fn splat(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}

/// The high bit of each octet of `word` that equals the octet of `splatted` (exactly: no
/// false positives from carries, as the classic zero-octet test has).
fn octets_equal(word: u64, splatted: u64) -> u64 {
    const LOW7: u64 = splat(0x7f);
    let x = word ^ splatted;
    !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7)
}

/// True when every CR in `span` is followed by an LF and every LF is preceded by a CR, all
/// within `span` (so it neither starts with LF nor ends with CR).
///
/// Eight octets at a time in plain integer arithmetic: the release build optimises for size,
/// which leaves loops unvectorised, and an octet-by-octet loop here cost more than the
/// line-by-line path it replaces.
pub fn crlf_only(span: &[u8]) -> bool {
    if span.last() == Some(&b'\r') {
        return false;
    }
    // The high bit of octet 0's place when the octet before the current word was CR.
    let mut carry = 0u64;
    let mut words = span.chunks_exact(8);
    for word in words.by_ref() {
        let mut octets = [0u8; 8];
        octets.copy_from_slice(word);
        let word = u64::from_le_bytes(octets);
        let cr = octets_equal(word, splat(b'\r'));
        let lf = octets_equal(word, splat(b'\n'));
        // Octet i is CR exactly when octet i + 1 is LF. Stopping at the first word that
        // breaks it costs a branch per word, and a span with a bare line end near its start
        // (content shaped against this path) is not read to its end.
        if lf != (cr << 8) | carry {
            return false;
        }
        carry = cr >> 56;
    }
    let mut after_cr = carry != 0;
    for &b in words.remainder() {
        if after_cr != (b == b'\n') {
            return false;
        }
        after_cr = b == b'\r';
    }
    true
}

/// True when no line of `span` has more than `limit` octets before its CR LF (0: no limit),
/// counting `carried` octets already sent of the first one. `span` ends with LF.
///
/// Beyond the first line it looks only for one LF in each block of `limit / 2` octets: a
/// line longer than the limit would leave a whole block without one. So it may answer false
/// for lines within the limit (the caller then goes line by line), never true for a longer
/// one.
pub fn lines_within(span: &[u8], carried: usize, limit: usize) -> bool {
    if limit == 0 {
        return true;
    }
    let Some(first) = memchr::memchr(b'\n', span) else {
        return false;
    };
    // The first line's octets here, less its CR; the other lines as `no_line_longer` sees
    // them (their CR counted too, so never true for a longer one).
    carried.saturating_add(first.saturating_sub(1)) <= limit
        && no_line_longer(&span[first + 1..], limit)
}

/// True only when no run of `text` without LF is longer than `limit` octets (0: no
/// limit), a CR counting as one of them: then no line of `text` needs breaking. It looks for
/// one LF in each block of `limit / 2` octets and measures only the text after the last LF,
/// so it may answer false for text within the limit, never true for text beyond it.
pub fn no_line_longer(text: &[u8], limit: usize) -> bool {
    if limit == 0 {
        return true;
    }
    let Some(last) = memchr::memrchr(b'\n', text) else {
        return text.len() <= limit;
    };
    if text.len() - last - 1 > limit {
        return false;
    }
    // A run without LF of 2 * block - 1 octets or more holds a whole block; so with an LF in
    // every block no run is longer than 2 * block - 2, at most the limit.
    let block = (limit / 2).max(1);
    text[..=last]
        .chunks(block)
        .all(|piece| memchr::memchr(b'\n', piece).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    fn last_lf(text: &[u8]) -> Option<usize> {
        memchr::memrchr(b'\n', text)
    }

    #[test]
    fn whole_lines_end_at_the_last_lf() {
        let cases: &[(&[u8], usize)] = &[
            (b"", 0),
            (b"abc", 0),
            (b"a\r\nb", 3),
            (b"a\r\nb\r\n", 6),
            (b"a\r\n.b\r\nc", 7),
        ];
        for &(text, want) in cases {
            assert_eq!(whole_lines(text, last_lf(text)), want, "{text:?}");
        }
        // The caller's last LF bounds the span.
        assert_eq!(whole_lines(b"a\r\nb\r\n", Some(2)), 3);
        assert_eq!(whole_lines(b"a\r\n", Some(9)), 0);
    }

    #[test]
    fn crlf_only_finds_any_bare_line_end() {
        let cases: &[(&[u8], bool)] = &[
            (b"", true),
            (b"abc", true),
            (b"a\r\nb\r\n", true),
            (b"\r\n\r\n", true),
            (b"\n", false),
            (b"a\n", false),
            (b"a\r", false),
            (b"a\rb\r\n", false),
            (b"a\r\r\n", false),
            (b"a\r\n\n", false),
            (b"a\n\r\n", false),
        ];
        for &(text, want) in cases {
            assert_eq!(crlf_only(text), want, "{text:?}");
        }
    }

    #[test]
    fn crlf_only_looks_across_its_words() {
        // A bare LF or CR at each place of a word, near the start and far in.
        for at in (8..24).chain(4090..4110) {
            for bare in [b'\n', b'\r'] {
                let mut text = Vec::new();
                while text.len() < 3 * 4096 {
                    text.extend_from_slice(b"abcdefg\r\n");
                }
                assert!(crlf_only(&text));
                // Somewhere inside a line, away from its CR LF.
                let at = (at..)
                    .find(|&i| {
                        text[i - 1] != b'\r'
                            && text[i] != b'\r'
                            && text[i] != b'\n'
                            && text[i + 1] != b'\n'
                    })
                    .unwrap();
                text[at] = bare;
                assert!(!crlf_only(&text), "bare {bare} at {at}");
            }
        }
        // A CR LF split by a word edge, or ending in the last partial word, is whole.
        for len in 1..24 {
            let mut text = vec![b'a'; len];
            text.extend_from_slice(b"\r\n");
            assert!(crlf_only(&text), "{len}");
        }
    }

    /// The longest line's octets, with `carried` added to the first.
    fn longest(span: &[u8], carried: usize) -> usize {
        let mut lines = span.split(|&b| b == b'\n');
        let first = lines.next().map_or(0, |l| l.len().saturating_sub(1)) + carried;
        lines
            .map(|l| l.len().saturating_sub(1))
            .fold(first, usize::max)
    }

    #[test]
    fn lines_within_examples() {
        assert!(lines_within(b"abc\r\n", 0, 0));
        assert!(lines_within(b"abc\r\n", 0, 3));
        assert!(!lines_within(b"abc\r\n", 0, 2));
        assert!(!lines_within(b"abc\r\n", 1, 3));
        assert!(lines_within(b"abc\r\n", 7, 10));
        let mut long = Vec::new();
        long.extend_from_slice(b"a\r\n");
        long.resize(long.len() + 999, b'x');
        long.extend_from_slice(b"\r\n");
        assert!(!lines_within(&long, 0, 998));
        assert!(lines_within(&long, 0, 0));
    }

    #[test]
    fn no_line_longer_examples() {
        assert!(no_line_longer(b"", 1));
        assert!(no_line_longer(b"abc", 3));
        assert!(!no_line_longer(b"abcd", 3));
        assert!(no_line_longer(b"abcdef", 0));
        assert!(no_line_longer(b"ab\nab\nab\n", 6));
        assert!(!no_line_longer(b"ab\nabcdefgh\nab", 4));
        assert!(!no_line_longer(b"ab\nab\nabcdefgh", 4));
    }

    proptest! {
        /// Never true when a run without LF is longer than the limit; true when every run is
        /// short enough to leave an LF in each block.
        #[test]
        fn no_line_longer_is_safe(
            text in proptest::collection::vec(
                prop_oneof![10 => Just(b'x'), 1 => Just(b'\n'), 1 => Just(b'\r')], 0..400),
            limit in 0usize..40,
        ) {
            let longest = text.split(|&b| b == b'\n').map(<[u8]>::len).max().unwrap_or(0);
            let answer = no_line_longer(&text, limit);
            if limit > 0 && longest > limit {
                prop_assert!(!answer);
            }
            let block = (limit / 2).max(1);
            if limit == 0 || longest < block {
                prop_assert!(answer);
            }
        }

        /// Never true for a span with a line over the limit; true whenever every line is
        /// short enough to leave an LF in each block.
        #[test]
        fn lines_within_is_safe(
            lens in proptest::collection::vec(0usize..40, 1..30),
            carried in 0usize..20,
            limit in 1usize..50,
        ) {
            let mut span = Vec::new();
            for len in lens {
                span.resize(span.len() + len, b'x');
                span.extend_from_slice(b"\r\n");
            }
            let longest = longest(&span, carried);
            let answer = lines_within(&span, carried, limit);
            if longest > limit {
                prop_assert!(!answer);
            }
            let block = (limit / 2).max(1);
            let rest_short = span.split(|&b| b == b'\n').skip(1).all(|l| l.len() < block);
            let first = span.iter().position(|&b| b == b'\n').unwrap();
            if rest_short && carried + first.saturating_sub(1) <= limit {
                prop_assert!(answer);
            }
        }

        /// The same answer as the rule applied octet by octet.
        #[test]
        fn crlf_only_matches_the_rule(tokens in proptest::collection::vec(
            prop_oneof![20 => Just(&b"\r\n"[..]), 20 => Just(&b"abc"[..]), 1 => Just(&b"\r"[..]),
                1 => Just(&b"\n"[..])], 0..3000)) {
            let text = tokens.concat();
            let rule = text.iter().enumerate().all(|(i, &b)| match b {
                b'\r' => text.get(i + 1) == Some(&b'\n'),
                b'\n' => i > 0 && text[i - 1] == b'\r',
                _ => true,
            });
            prop_assert_eq!(crlf_only(&text), rule);
        }
    }
}
