#![no_main]
//! The DATA receiver, through a server session that has just answered `DATA`: arbitrary
//! bytes in arbitrary chunks. The message ends only at the first `CR LF . CR LF` (the data
//! counts as starting after a CR LF), right in the chunk that completes it; the content
//! handed out is the data before that marker with dot-stuffing undone and bare CR or LF
//! turned into CR LF; the message is kept only when that content has no bare newline (in
//! reject mode) and fits the size limit; and no output depends on how the input was cut.
//!
//! Input: see `certrelay_fuzz::Input`; the payload is the data after `DATA`, the low two
//! bits of the pick choose bare newline handling and a size limit.
use certrelay_core::facts::PeerInfo;
use certrelay_core::server::{ServerEvent, ServerOutput, ServerSession};
use certrelay_core::settings::{BareNewline, ServerSettings};
use certrelay_core::Instant;
use certrelay_fuzz::{pieces, Input};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};

const LIMIT: u64 = 600;

/// Normalize or reject bare newlines, with or without a size limit.
static SETTINGS: LazyLock<[Arc<ServerSettings>; 4]> = LazyLock::new(|| {
    [
        (BareNewline::Reject, 0),
        (BareNewline::Normalize, 0),
        (BareNewline::Reject, LIMIT),
        (BareNewline::Normalize, LIMIT),
    ]
    .map(|(bare_newline, message_size_limit)| {
        Arc::new(ServerSettings {
            bare_newline,
            message_size_limit,
            ..ServerSettings::default()
        })
    })
});

fuzz_target!(|input: &[u8]| {
    let Input {
        pick,
        cuts,
        payload: data,
    } = Input::new(input);
    let pieces = pieces(data, cuts);
    let settings = &SETTINGS[usize::from(pick % 4)];
    let (outputs, end_piece) = receive(settings, &pieces);
    // Where the marker ends, if it is there; and which piece holds its last octet.
    let framed = [b"\r\n", data].concat();
    let marker = framed.windows(5).position(|w| w == b"\r\n.\r\n");
    let expect_piece = marker.map(|at| {
        let last = at + 5 - 2 - 1;
        let mut upto = 0;
        pieces.iter().position(|p| {
            upto += p.len();
            upto > last
        })
    });
    assert_eq!(
        end_piece,
        expect_piece.flatten(),
        "the end is CR LF . CR LF, where it arrives"
    );
    let Some(at) = marker else { return };
    let (content, bare) = unstuff(&framed[2..at + 2]);
    let refused = (bare && settings.bare_newline == BareNewline::Reject)
        || (settings.message_size_limit > 0 && content.len() as u64 > settings.message_size_limit);
    let mut body = Vec::new();
    let mut stored = false;
    for out in &outputs {
        match out {
            ServerOutput::BodyChunk(c) if !stored => body.extend_from_slice(c),
            ServerOutput::MessageEnd => stored = true,
            ServerOutput::MessageAbort if !stored => break,
            _ => {}
        }
    }
    assert_eq!(
        stored, !refused,
        "kept only when clean and within the limit"
    );
    if stored {
        assert_eq!(body, content, "the content of the message");
    }
    // Cut differently (all at once), the outputs are the same.
    assert_eq!(
        receive(settings, &[data]).0,
        outputs,
        "outputs depend on the cuts"
    );
});

/// A session that has just answered DATA, fed the pieces; every MessageEnd is reported
/// stored at once. Returns its outputs after the 354 and the index of the piece after which
/// the message ended (MessageEnd, or the refusal that takes its place).
fn receive(settings: &Arc<ServerSettings>, pieces: &[&[u8]]) -> (Vec<ServerOutput>, Option<usize>) {
    let peer = PeerInfo {
        addr: [192, 0, 2, 1].into(),
        name: "unknown".into(),
    };
    let mut s = ServerSession::new(Arc::clone(settings), peer, Instant(0));
    s.handle_input(
        b"EHLO c\r\nMAIL FROM:<a@c>\r\nRCPT TO:<u@localhost>\r\nDATA\r\n",
        Instant(0),
    );
    while s.poll_output().is_some() {}
    let mut outputs = Vec::new();
    let mut end = None;
    for (i, piece) in pieces.iter().enumerate() {
        s.handle_input(piece, Instant(0));
        while let Some(out) = s.poll_output() {
            if end.is_none() && matches!(out, ServerOutput::MessageEnd | ServerOutput::Transmit(_))
            {
                end = Some(i);
            }
            if out == ServerOutput::MessageEnd {
                s.handle_event(
                    ServerEvent::MessageStored {
                        queue_id: "Q".into(),
                    },
                    Instant(0),
                );
            }
            outputs.push(out);
        }
    }
    (outputs, end)
}

/// The content of data that comes before its end marker: dot-stuffing undone, each bare CR
/// or LF turned into CR LF. Also whether there was a bare one.
fn unstuff(data: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut bare = false;
    let mut rest = data;
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(rest.len());
        let line = &rest[..end];
        for &b in line.strip_prefix(b".").unwrap_or(line) {
            if b == b'\r' || b == b'\n' {
                bare = true;
                out.extend_from_slice(b"\r\n");
            } else {
                out.push(b);
            }
        }
        if end < rest.len() {
            out.extend_from_slice(b"\r\n");
        }
        rest = &rest[(end + 2).min(rest.len())..];
    }
    (out, bare)
}
