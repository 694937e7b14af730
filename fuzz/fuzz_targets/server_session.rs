#![no_main]
//! Arbitrary client bytes, split at arbitrary points, against a server session that stores
//! every message at once: never a panic.
use certrelay_core::facts::PeerInfo;
use certrelay_core::server::{ServerEvent, ServerOutput, ServerSession};
use certrelay_core::settings::ServerSettings;
use certrelay_core::Instant;
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (bytes, cuts) = input;
    let peer = PeerInfo { addr: [192, 0, 2, 1].into(), name: "unknown".into() };
    let mut s = ServerSession::new(Arc::new(ServerSettings::default()), peer, Instant(0));
    let mut rest = &bytes[..];
    let mut cuts = cuts.into_iter();
    let mut now = 0u64;
    while !rest.is_empty() {
        let n = (cuts.next().unwrap_or(255) as usize).clamp(1, rest.len());
        s.handle_input(&rest[..n], Instant(now));
        rest = &rest[n..];
        now += 10;
        let mut stored = false;
        while let Some(out) = s.poll_output() {
            stored |= matches!(out, ServerOutput::MessageEnd);
        }
        if stored {
            s.handle_event(ServerEvent::MessageStored { queue_id: "F".into() }, Instant(now));
        }
        if s.is_closed() {
            break;
        }
    }
});
