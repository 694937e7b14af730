#![no_main]
//! A message as a listed client sends it, read for DKIM signing (the relay signs what the
//! client wrote): its header section kept, its body hashed in relaxed form, the signature
//! field prepared. Never a panic; the chunking changes neither the outcome nor the hash;
//! the relaxed body has no tab, no run of spaces, no blank before a line end and no empty
//! line at its end, ends in CR LF unless empty, and is its own canonical form; the data to
//! sign ends in the signature field's empty `b=`; the finished field is one header field of
//! lines no longer than 998 octets, ending in CR LF.
//!
//! Input: see `certrelay_fuzz::Input`; the payload is the message (CR LF lines, as the SMTP
//! server stores it), an odd pick chooses Ed25519 instead of RSA.
use certrelay_core::dkim::{Algorithm, MessageHasher, RelaxedBody, SignError, Tags};
use certrelay_fuzz::{pieces, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Input {
        pick,
        cuts,
        payload,
    } = Input::new(input);
    let whole = hash(std::iter::once(payload));
    assert_eq!(
        hash(pieces(payload, cuts).into_iter()),
        whole,
        "chunking changed the outcome"
    );

    let body = relaxed(&[payload]);
    assert!(body.is_empty() || body.ends_with(b"\r\n"), "{body:?}");
    assert!(!body.ends_with(b"\r\n\r\n"), "an empty line at the end: {body:?}");
    assert!(!body.contains(&b'\t'), "{body:?}");
    assert!(!body.windows(2).any(|w| w == b"  "), "{body:?}");
    assert!(!body.windows(3).any(|w| w == b" \r\n"), "{body:?}");
    assert_eq!(relaxed(&[&body]), body, "not its own canonical form");
    assert_eq!(relaxed(&pieces(payload, cuts)), body, "chunking changed the body");

    let Ok(_) = whole else { return };
    let mut hasher = MessageHasher::new();
    hasher.update(payload);
    let hashed = hasher.finish().expect("hashed once already");
    let algorithm = if pick & 1 == 1 {
        Algorithm::Ed25519Sha256
    } else {
        Algorithm::RsaSha256
    };
    let unsigned = hashed.prepare(&Tags {
        algorithm,
        domain: "example.org",
        selector: "s1",
        timestamp: 1_700_000_000,
    });
    assert!(unsigned.data().ends_with(b"; b="), "{:?}", unsigned.data());
    let _ = unsigned.digest();
    let field = unsigned.complete(&[0xA5; 64]);
    assert!(field.starts_with("DKIM-Signature:") && field.ends_with("\r\n"));
    let lines: Vec<&str> = field.trim_end_matches("\r\n").split("\r\n").collect();
    for (i, line) in lines.iter().enumerate() {
        assert!(line.len() <= 998, "{line:?}");
        assert!(!line.contains(['\r', '\n']), "{line:?}");
        if i > 0 {
            assert!(line.starts_with([' ', '\t']), "a line that is not a fold: {line:?}");
        }
    }
});

/// What signing needs from the message, comparably: the header section as written, the
/// From: domain and the body hash; or why it cannot be signed.
fn hash<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> Result<(Vec<u8>, String, [u8; 32]), SignError> {
    let mut hasher = MessageHasher::new();
    for piece in pieces {
        hasher.update(piece);
    }
    let hashed = hasher.finish()?;
    let mut header = Vec::new();
    hashed.header().write_to(&mut header);
    Ok((header, hashed.from_domain().to_owned(), hashed.body_hash()))
}

/// The relaxed canonical form of a body given in pieces.
fn relaxed(pieces: &[&[u8]]) -> Vec<u8> {
    let mut canon = RelaxedBody::default();
    let mut out = Vec::new();
    for piece in pieces {
        canon.feed(piece, &mut out);
    }
    canon.finish(&mut out);
    out
}
