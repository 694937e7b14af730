#![no_main]
//! The line splitter: arbitrary bytes in arbitrary chunks, read in place first as the server
//! session does. It finds exactly the lines between LFs, one CR before the LF removed, and
//! reports each line longer than the buffer once, in place of the line; it never takes
//! nothing from input, and says it needs more only when the input is used up.
//!
//! Input: see `certrelay_fuzz::Input`; the pick chooses the buffer size (1, 16 or the
//! server's 511 octets).
use certrelay_core::line::{LineBuffer, Push};
use certrelay_fuzz::{pieces, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Input::new(data);
    let pieces = pieces(input.payload, input.cuts);
    match input.pick % 3 {
        0 => check::<1>(input.payload, &pieces),
        1 => check::<16>(input.payload, &pieces),
        _ => check::<511>(input.payload, &pieces),
    }
});

fn check<const N: usize>(data: &[u8], pieces: &[&[u8]]) {
    // The lines as split at LF (None: too long), compared as they are found.
    let mut want = data
        .split(|&b| b == b'\n')
        .map(|l| (l.len() <= N).then(|| l.strip_suffix(b"\r").unwrap_or(l)));
    let mut lb = LineBuffer::<N>::new();
    for piece in pieces {
        let mut rest = *piece;
        while !rest.is_empty() {
            if let Some((n, line)) = lb.whole_line(rest) {
                assert_eq!(lb.pending(), 0);
                assert_eq!(Some(Some(line)), want.next(), "a line read in place");
                rest = &rest[n..];
                continue;
            }
            let (n, found) = lb.push(rest);
            assert!(n > 0 && n <= rest.len());
            rest = &rest[n..];
            match found {
                Push::Line => assert_eq!(Some(Some(lb.line())), want.next(), "a line"),
                Push::TooLong => assert_eq!(Some(None), want.next(), "a line too long"),
                Push::NeedMore => assert!(rest.is_empty()),
            }
        }
    }
    // What follows the last LF is no line yet.
    assert!(
        want.next().is_some() && want.next().is_none(),
        "lines missed"
    );
}
