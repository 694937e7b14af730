#![no_main]
//! The body encoder (what DATA carries for a message: dot-stuffed, CR LF line ends, long
//! lines broken), fed arbitrary content in arbitrary pieces with a line length limit, and
//! its SIZE= estimate. The output must equal a plain octet-at-a-time encoding written here
//! from the rules, whatever the cuts; the estimate must equal what breaking added. Whole
//! clean lines take a fast path in the encoder (`certrelay_core::crlf`), so this compares
//! that path with the rules on hostile content.
//!
//! Input: see `certrelay_fuzz::Input`; the payload is the message content, the pick chooses
//! the limit (none, 998, or a small one that breaks often).
use certrelay_core::client::{line_break_overhead, BodyEncoder};
use certrelay_fuzz::{pieces, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Input {
        pick,
        cuts,
        payload,
    } = Input::new(input);
    let limit = match pick % 4 {
        0 => 0,
        1 => 998,
        2 => 2 + usize::from(pick / 4 % 14),
        _ => 60 + usize::from(pick / 4),
    };
    let mut encoder = BodyEncoder::with_line_limit(limit);
    let mut cut = Vec::new();
    for piece in pieces(payload, cuts) {
        encoder.encode(piece, &mut cut);
    }
    encoder.finish(&mut cut);
    let expected = by_the_rules(payload, limit);
    assert_eq!(cut, expected, "the encoding, cut anywhere, follows the rules");
    let unbroken = by_the_rules(payload, 0);
    assert_eq!(
        (expected.len() - unbroken.len()) as u64,
        line_break_overhead(payload, limit),
        "the SIZE= estimate counts what breaking adds"
    );
});

/// The rules one octet at a time: a bare CR or LF becomes CR LF; a line that reaches the
/// limit (an inserted space counting) goes on after CR LF and a space; a dot that starts a
/// line is doubled; the end is CR LF (when missing), a dot and CR LF.
fn by_the_rules(content: &[u8], limit: usize) -> Vec<u8> {
    let limit = if limit == 1 { 2 } else { limit };
    let mut out = Vec::new();
    let mut line_start = true;
    let mut cr_pending = false;
    let mut len = 0;
    for &b in content {
        if cr_pending {
            cr_pending = false;
            out.push(b'\n');
            line_start = true;
            if b == b'\n' {
                continue;
            }
        }
        if b == b'\r' {
            out.push(b'\r');
            cr_pending = true;
            len = 0;
            continue;
        }
        if b == b'\n' {
            out.extend_from_slice(b"\r\n");
            line_start = true;
            len = 0;
            continue;
        }
        if limit > 0 && len == limit {
            out.extend_from_slice(b"\r\n ");
            len = 1;
            line_start = false;
        }
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        len += 1;
        line_start = false;
    }
    if cr_pending {
        out.push(b'\n');
    } else if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}
