#![no_main]
//! Arbitrary client bytes, split at arbitrary points, against a server session that stores
//! every message at once: never a panic.
//!
//! Input: see `certrelay_fuzz::Input` (the payload is what the client sends).
use certrelay_core::facts::PeerInfo;
use certrelay_core::server::{ServerEvent, ServerOutput, ServerSession};
use certrelay_core::settings::ServerSettings;
use certrelay_core::Instant;
use certrelay_fuzz::{pieces, Input};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};

static SETTINGS: LazyLock<Arc<ServerSettings>> =
    LazyLock::new(|| Arc::new(ServerSettings::default()));

fuzz_target!(|data: &[u8]| {
    let input = Input::new(data);
    let peer = PeerInfo {
        addr: [192, 0, 2, 1].into(),
        name: "unknown".into(),
    };
    let mut s = ServerSession::new(Arc::clone(&SETTINGS), peer, Instant(0));
    let mut now = 0u64;
    for piece in pieces(input.payload, input.cuts) {
        s.handle_input(piece, Instant(now));
        now += 10;
        let mut stored = false;
        while let Some(out) = s.poll_output() {
            stored |= matches!(out, ServerOutput::MessageEnd);
        }
        if stored {
            s.handle_event(
                ServerEvent::MessageStored {
                    queue_id: "F".into(),
                },
                Instant(now),
            );
        }
        if s.is_closed() {
            break;
        }
    }
});
