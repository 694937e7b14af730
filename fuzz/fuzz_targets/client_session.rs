#![no_main]
//! Arbitrary server bytes, split at arbitrary points, against a client session that sends
//! two messages of two recipients and then quits, at any TLS level, with any handshake
//! result; a cut of length 0 fires the timer instead. Never a panic; every message handed
//! over is reported exactly once, with one result per recipient in order, before `Close`;
//! nothing follows `Close`; a lost connection always ends in `Close`.
//!
//! Input: see `certrelay_fuzz::Input`; the payload is what the server sends, a cut `c` is
//! a read of `c` octets; the pick chooses the TLS level (mod 5), the certificate verdict
//! (bit 3), a failed handshake (bit 4), 8-bit bodies (bit 5) and SMTPUTF8 asked for (bit 6)
//! with a UTF-8 header (bit 7).
use certrelay_core::client::{
    ClientEvent, ClientOutput, ClientSession, Envelope, ServerCertVerdict, ServerPeer,
};
use certrelay_core::settings::ClientSettings;
use certrelay_core::tls_policy::TlsLevel;
use certrelay_core::Instant;
use certrelay_fuzz::Input;
use libfuzzer_sys::fuzz_target;

const LEVELS: [TlsLevel; 5] = [
    TlsLevel::None,
    TlsLevel::May,
    TlsLevel::Encrypt,
    TlsLevel::Verify,
    TlsLevel::Secure,
];
const RCPTS: [&str; 2] = ["b@y.example", "c@y.example"];
const BODY: &[u8] = b"Subject: hi\n\n.leading dot\nline\r\n.\n";

struct Shell {
    session: Option<ClientSession>,
    pick: u8,
    now: u64,
    sent: usize,
    reported: usize,
    closed: bool,
    body_left: usize,
}

impl Shell {
    fn s(&mut self) -> &mut ClientSession {
        self.session
            .as_mut()
            .expect("session is back after the handshake")
    }

    fn drain(&mut self) {
        let now = Instant(self.now);
        while let Some(out) = self.s().poll_output() {
            assert!(!self.closed, "output after Close: {out:?}");
            match out {
                ClientOutput::Transmit(_) => {}
                ClientOutput::StartTls => {
                    let Ok(hs) = self.session.take().unwrap().start_tls() else {
                        panic!("start_tls refused right after StartTls was polled");
                    };
                    let verdict = if self.pick & 8 == 0 {
                        ServerCertVerdict::Verified
                    } else {
                        ServerCertVerdict::NotVerified
                    };
                    self.session = Some(if self.pick & 16 == 0 {
                        hs.established(verdict, now)
                    } else {
                        hs.failed()
                    });
                }
                ClientOutput::Ready if self.sent < 2 => {
                    let envelope = Envelope {
                        sender: "a@x.example".into(),
                        recipients: RCPTS.iter().map(|r| String::from(*r)).collect(),
                        body_size: Some(BODY.len() as u64),
                        eight_bit: self.pick & 32 != 0,
                        smtputf8: self.pick & 64 != 0,
                        utf8_header: self.pick & 128 != 0,
                    };
                    // A Ready queued before the session closed is stale: the shell gets
                    // an error then, as here.
                    if self.s().send_message(envelope, now).is_ok() {
                        self.sent += 1;
                        self.body_left = 2;
                    }
                }
                ClientOutput::Ready => {
                    let _ = self.s().quit(now);
                }
                ClientOutput::NeedBody => {
                    let event = match self.body_left {
                        2 => ClientEvent::Body(&BODY[..7]),
                        1 => ClientEvent::Body(&BODY[7..]),
                        _ => ClientEvent::BodyEnd,
                    };
                    self.body_left = self.body_left.saturating_sub(1);
                    self.s().handle_event(event, now);
                }
                ClientOutput::MessageDone(report) => {
                    self.reported += 1;
                    assert!(self.reported <= self.sent, "a report for no message");
                    let got: Vec<&str> = report
                        .recipients
                        .iter()
                        .map(|r| r.recipient.as_str())
                        .collect();
                    assert_eq!(got, RCPTS, "one result per recipient, in order");
                }
                ClientOutput::Close(_) => {
                    assert_eq!(
                        self.reported, self.sent,
                        "every message reported before Close"
                    );
                    self.closed = true;
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Input {
        pick,
        cuts,
        payload,
    } = Input::new(data);
    let settings = ClientSettings {
        helo_name: "laptop.example".into(),
        tls_level: LEVELS[usize::from(pick % 5)],
        ..ClientSettings::default()
    };
    let peer = ServerPeer {
        name: "mx.example".into(),
        addr: [192, 0, 2, 7].into(),
    };
    let session = ClientSession::new(settings, peer, Instant(0));
    let mut shell = Shell {
        session: Some(session),
        pick,
        now: 0,
        sent: 0,
        reported: 0,
        closed: false,
        body_left: 0,
    };
    let mut rest = payload;
    let mut cuts = cuts.iter().copied();
    while !rest.is_empty() && !shell.closed {
        match cuts.next().unwrap_or(255) {
            0 => {
                let Some(deadline) = shell.s().poll_timeout() else {
                    continue;
                };
                shell.now = shell.now.max(deadline.0);
                let now = Instant(shell.now);
                shell.s().handle_timeout(now);
            }
            n => {
                let n = usize::from(n).min(rest.len());
                shell.now += 10;
                let now = Instant(shell.now);
                shell.s().handle_input(&rest[..n], now);
                rest = &rest[n..];
            }
        }
        shell.drain();
    }
    if !shell.closed {
        let now = Instant(shell.now);
        shell.s().handle_event(ClientEvent::ConnectionLost, now);
        shell.drain();
        assert!(shell.closed, "a lost connection closes the session");
    }
});
