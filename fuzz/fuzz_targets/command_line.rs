#![no_main]
//! One arbitrary command line, in one of four session states (fresh, after EHLO, after MAIL,
//! after RCPT): never a panic, exactly one reply, and that reply well formed (three digits,
//! `-` on every line but the last, no CR or LF inside a line).
//!
//! The first input byte picks the state and the settings; the line is the rest, cut at its
//! first LF (the session adds nothing: the target appends CR LF).
use certrelay_core::facts::PeerInfo;
use certrelay_core::server::{ServerOutput, ServerSession};
use certrelay_core::settings::{ServerSettings, ServerTlsLevel};
use certrelay_core::Instant;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};

static PLAIN: LazyLock<Arc<ServerSettings>> = LazyLock::new(|| Arc::new(ServerSettings::default()));
static TLS: LazyLock<Arc<ServerSettings>> = LazyLock::new(|| {
    Arc::new(ServerSettings {
        tls_level: ServerTlsLevel::May,
        ..ServerSettings::default()
    })
});

const PREFIX: [&[u8]; 3] = [
    b"EHLO c.example\r\n",
    b"MAIL FROM:<a@c.example>\r\n",
    b"RCPT TO:<u@localhost>\r\n",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, line)) = data.split_first() else {
        return;
    };
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    let settings = if pick & 4 == 0 { &PLAIN } else { &TLS };
    let peer = PeerInfo {
        addr: [192, 0, 2, 1].into(),
        name: "unknown".into(),
    };
    let mut s = ServerSession::new(Arc::clone(settings), peer, Instant(0));
    for cmd in &PREFIX[..usize::from(pick % 4).min(PREFIX.len())] {
        s.handle_input(cmd, Instant(0));
    }
    while s.poll_output().is_some() {}
    s.handle_input(line, Instant(1));
    s.handle_input(b"\r\n", Instant(2));
    let mut replies = 0;
    while let Some(out) = s.poll_output() {
        if let ServerOutput::Transmit(bytes) = out {
            replies += 1;
            check_reply(&bytes);
        }
    }
    assert_eq!(replies, 1, "one line, one reply: {line:?}");
});

fn check_reply(bytes: &[u8]) {
    let text = bytes
        .strip_suffix(b"\r\n")
        .expect("a reply ends with CR LF");
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let line = if i + 1 < lines.len() {
            line.strip_suffix(b"\r").expect("CR LF between reply lines")
        } else {
            line
        };
        assert!(!line.contains(&b'\r'), "a bare CR in a reply: {bytes:?}");
        let sep = if i + 1 < lines.len() { b'-' } else { b' ' };
        assert!(
            line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit) && line[3] == sep,
            "{bytes:?}"
        );
        assert_eq!(line[..3], lines[0][..3], "one code in a reply: {bytes:?}");
    }
}
