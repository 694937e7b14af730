#![no_main]
//! A submitted message (what `sendmail` reads), in arbitrary chunks: line normalization,
//! the end of the header section, its fields, their addresses and the fields added for a
//! local submission. Never a panic; the chunking does not change the text; every line of it
//! ends in CR LF and is at most `MAX_LINE` octets; the header section written back is the
//! text it was parsed from; the added fields are there afterwards.
//!
//! Input: see `certrelay_fuzz::Input`; the payload is the message, an odd pick makes a
//! line holding only `.` end it.
use certrelay_core::message::{
    add_missing_origin, find_header_end, HeaderSection, LineNormalizer, LocalOrigin, Status,
    MAX_LINE,
};
use certrelay_fuzz::{pieces, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Input {
        pick,
        cuts,
        payload: data,
    } = Input::new(input);
    let dot_ends = pick & 1 == 1;
    let whole = normalize(dot_ends, data.chunks(data.len().max(1)));
    let pieces = pieces(data, cuts);
    assert_eq!(
        normalize(dot_ends, pieces.into_iter()),
        whole,
        "chunking changed the text"
    );
    let Some(text) = whole else { return };
    let body = text.strip_suffix(b"\r\n").unwrap_or(&text);
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(
            !line.contains(&b'\r') && line.len() <= MAX_LINE,
            "line {line:?}"
        );
    }
    assert!(text.is_empty() || text.ends_with(b"\r\n"));

    let end = find_header_end(&text, true).expect("complete text has a header end");
    assert!(end.header_len <= end.body_start && end.body_start <= text.len());
    let mut header = HeaderSection::parse(&text[..end.header_len]);
    let mut written = Vec::new();
    header.write_to(&mut written);
    assert_eq!(
        written,
        &text[..end.header_len],
        "nothing in the header is lost"
    );
    assert_eq!(header.len(), end.header_len);
    for f in header.fields() {
        let _ = f.value();
    }
    let _ = header.recipients();
    let origin = LocalOrigin {
        unix: 1_700_000_000,
        queue_id: "4Xy",
        myhostname: "h.example",
        sender: "a@h.example",
        full_name: "A \"B\" C",
    };
    add_missing_origin(&mut header, &origin);
    assert!(header.has("Date") && header.has("Message-ID") && header.has("From"));
    header.remove("Bcc");
});

/// The normalized text, or `None` for a refused message.
fn normalize<'a>(dot_ends: bool, pieces: impl Iterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let mut n = LineNormalizer::new(dot_ends);
    let mut out = Vec::new();
    for piece in pieces {
        if n.feed(piece, &mut out).ok()? == Status::Ended {
            return Some(out);
        }
    }
    n.finish(&mut out);
    Some(out)
}
