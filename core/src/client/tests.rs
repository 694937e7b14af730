//! Dialogue tests: the session against a scripted fake server, bytes in and bytes out, on
//! simulated time.

use super::*;
use crate::settings::ClientSettings;
use crate::tls_policy::TlsLevel;
use crate::Instant;
use core::net::{IpAddr, Ipv4Addr};
use core::time::Duration;
use proptest::prelude::*;
use std::collections::VecDeque;
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

const PEER: &str = "mx.example[192.0.2.7]";

/// What the shell saw, apart from transmitted bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Ready,
    StartTls,
    /// Recipient and the log tail of its outcome.
    Done(Vec<(String, String)>),
    Close(Closing),
}

fn closing_tail(c: &Closing) -> String {
    match c {
        Closing::Done => "done".into(),
        Closing::Dropped(o) => std::format!("dropped: {o}"),
        Closing::Failed(o) => std::format!("failed: {o}"),
        Closing::RetryWithoutTls(o) => std::format!("retry without TLS: {o}"),
    }
}

/// The shell side: drives the session, keeps what it wrote, feeds the body when asked.
struct Shell {
    session: Option<ClientSession>,
    now: Instant,
    wire: Vec<u8>,
    writes: usize,
    seen: Vec<Seen>,
    body: VecDeque<Vec<u8>>,
    body_requests: usize,
    discarded: Option<usize>,
}

impl Shell {
    fn new(level: TlsLevel) -> Self {
        Shell::with(ClientSettings {
            tls_level: level,
            ..ClientSettings::default()
        })
    }

    fn with(settings: ClientSettings) -> Self {
        let settings = ClientSettings {
            helo_name: "laptop.example".into(),
            ..settings
        };
        let peer = ServerPeer {
            name: "mx.example".into(),
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        };
        Shell {
            session: Some(ClientSession::new(settings, peer, Instant(0))),
            now: Instant(0),
            wire: Vec::new(),
            writes: 0,
            seen: Vec::new(),
            body: VecDeque::new(),
            body_requests: 0,
            discarded: None,
        }
    }

    fn s(&mut self) -> &mut ClientSession {
        self.session
            .as_mut()
            .expect("session is in a TLS handshake")
    }

    fn server(&mut self, bytes: &[u8]) {
        let now = self.now;
        self.s().handle_input(bytes, now);
        self.drain();
    }

    fn drain(&mut self) {
        let now = self.now;
        while let Some(out) = self.session.as_mut().and_then(|s| s.poll_output()) {
            match out {
                ClientOutput::Transmit(bytes) => {
                    self.wire.extend_from_slice(&bytes);
                    self.writes += 1;
                }
                ClientOutput::NeedBody => {
                    self.body_requests += 1;
                    match self.body.pop_front() {
                        Some(chunk) => self.s().handle_event(ClientEvent::Body(&chunk), now),
                        None => self.s().handle_event(ClientEvent::BodyEnd, now),
                    }
                }
                ClientOutput::Ready => self.seen.push(Seen::Ready),
                ClientOutput::StartTls => self.seen.push(Seen::StartTls),
                ClientOutput::MessageDone(report) => self.seen.push(Seen::Done(
                    report
                        .recipients
                        .iter()
                        .map(|r| (r.recipient.clone(), r.outcome.to_string()))
                        .collect(),
                )),
                ClientOutput::Close(c) => self.seen.push(Seen::Close(c)),
            }
        }
    }

    /// Takes what the client wrote since the last call.
    fn sent(&mut self) -> String {
        String::from_utf8_lossy(&core::mem::take(&mut self.wire)).into_owned()
    }

    fn seen(&mut self) -> Vec<Seen> {
        core::mem::take(&mut self.seen)
    }

    fn send(&mut self, sender: &str, rcpts: &[&str], body: &[&[u8]]) {
        self.body = body.iter().map(|c| c.to_vec()).collect();
        let envelope = Envelope {
            sender: sender.into(),
            recipients: rcpts.iter().map(|r| String::from(*r)).collect(),
            body_size: None,
            eight_bit: false,
            smtputf8: false,
            utf8_header: false,
        };
        let now = self.now;
        self.s().send_message(envelope, now).expect("session ready");
        self.drain();
    }

    fn handshake(&mut self, verdict: Option<ServerCertVerdict>) {
        let session = self.session.take().unwrap();
        let hs = session.start_tls().expect("the session asked for TLS");
        self.discarded = Some(hs.discarded());
        self.session = Some(match verdict {
            Some(v) => hs.established(v, self.now),
            None => hs.failed(),
        });
        self.drain();
    }

    fn quit(&mut self) {
        let now = self.now;
        self.s().quit(now).unwrap();
        self.drain();
    }

    fn lose_connection(&mut self) {
        let now = self.now;
        self.s().handle_event(ClientEvent::ConnectionLost, now);
        self.drain();
    }

    /// Greeting and EHLO with these keyword lines, up to Ready.
    fn open(level: TlsLevel, keywords: &[&str]) -> Self {
        let mut t = Shell::new(level);
        t.server(b"220 mx.example ESMTP\r\n");
        assert_eq!(t.sent(), "EHLO laptop.example\r\n");
        t.server(&ehlo(keywords));
        assert_eq!(t.seen(), [Seen::Ready]);
        t
    }
}

fn ehlo(keywords: &[&str]) -> Vec<u8> {
    let mut lines = vec![String::from("mx.example")];
    lines.extend(keywords.iter().map(|k| String::from(*k)));
    crate::reply::Reply::multi(250, lines).to_bytes()
}

fn done(pairs: &[(&str, &str)]) -> Seen {
    Seen::Done(
        pairs
            .iter()
            .map(|(r, o)| (String::from(*r), String::from(*o)))
            .collect(),
    )
}

fn failed(seen: &Seen) -> String {
    match seen {
        Seen::Close(c) => closing_tail(c),
        other => std::format!("{other:?}"),
    }
}

const SENT: &str = "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4Xy)";

#[test]
fn plain_delivery_one_command_at_a_time() {
    let mut t = Shell::open(TlsLevel::None, &["8BITMIME", "SIZE 10240000"]);
    t.send("a@x", &["b@y"], &[b"Subject: hi\n\nHello\n.dot\n"]);
    assert_eq!(t.sent(), "MAIL FROM:<a@x>\r\n");
    t.server(b"250 2.1.0 Ok\r\n");
    assert_eq!(t.sent(), "RCPT TO:<b@y>\r\n");
    t.server(b"250 2.1.5 Ok\r\n");
    assert_eq!(t.sent(), "DATA\r\n");
    t.server(b"354 End data with <CR><LF>.<CR><LF>\r\n");
    assert_eq!(t.sent(), "Subject: hi\r\n\r\nHello\r\n..dot\r\n.\r\n");
    assert_eq!(t.seen(), []);
    t.server(b"250 2.0.0 Ok: queued as 4Xy\r\n");
    assert_eq!(t.seen(), [done(&[("b@y", SENT)]), Seen::Ready]);
    t.quit();
    assert_eq!(t.sent(), "QUIT\r\n");
    t.server(b"221 2.0.0 Bye\r\n");
    assert_eq!(t.seen(), [Seen::Close(Closing::Done)]);
    assert_eq!(t.s().poll_timeout(), None);
}

#[test]
fn pipelining_sends_one_batch_and_reads_replies_in_order() {
    let mut t = Shell::open(TlsLevel::None, &["PIPELINING", "SIZE 1000", "8BITMIME"]);
    let envelope = Envelope {
        sender: "a@x".into(),
        recipients: vec!["b@y".into(), "c@z".into()],
        body_size: Some(500),
        eight_bit: true,
        smtputf8: false,
        utf8_header: false,
    };
    t.body = [b"body".to_vec()].into();
    t.s().send_message(envelope, Instant(0)).unwrap();
    t.drain();
    assert_eq!(t.writes, 2, "EHLO, then the whole batch as one write");
    assert_eq!(
        t.sent(),
        "MAIL FROM:<a@x> SIZE=500 BODY=8BITMIME\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@z>\r\nDATA\r\n"
    );
    t.server(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <c@z>: Recipient address rejected\r\n");
    assert_eq!(t.sent(), "");
    t.server(b"354 go ahead\r\n");
    assert_eq!(t.sent(), "body\r\n.\r\n");
    t.server(b"250 2.0.0 Ok: queued as 4Xy\r\n");
    assert_eq!(
        t.seen(),
        [
            done(&[
                ("b@y", SENT),
                (
                    "c@z",
                    "dsn=5.1.1, status=bounced (host mx.example[192.0.2.7] said: 550 5.1.1 \
                     <c@z>: Recipient address rejected (in reply to RCPT TO command))"
                ),
            ]),
            Seen::Ready
        ]
    );
}

#[test]
fn several_messages_on_one_connection() {
    for pipelining in [false, true] {
        let keywords: &[&str] = if pipelining { &["PIPELINING"] } else { &[] };
        let mut t = Shell::open(TlsLevel::None, keywords);
        for n in 0..3 {
            let rcpt = std::format!("r{n}@y");
            t.send("a@x", &[&rcpt], &[b"x\r\n"]);
            if pipelining {
                t.server(b"250 Ok\r\n250 Ok\r\n354 go\r\n");
            } else {
                t.server(b"250 Ok\r\n");
                t.server(b"250 Ok\r\n");
                t.server(b"354 go\r\n");
            }
            t.server(b"250 2.0.0 Ok: queued as 4Xy\r\n");
            assert_eq!(t.seen(), [done(&[(&rcpt, SENT)]), Seen::Ready]);
            let wire = t.sent();
            assert!(!wire.contains("RSET"), "{wire}");
            assert!(wire.ends_with("x\r\n.\r\n"), "{wire}");
        }
    }
}

fn bounced_550(rcpt: &str) -> (String, String) {
    (
        rcpt.into(),
        std::format!(
            "dsn=5.0.0, status=bounced (host {PEER} said: 550 no such user (in reply to RCPT TO \
             command))"
        ),
    )
}

#[test]
fn one_recipient_refused_without_pipelining() {
    let mut t = Shell::open(TlsLevel::None, &[]);
    t.send("a@x", &["b@y", "c@z"], &[b"x"]);
    t.server(b"250 Ok\r\n");
    assert_eq!(t.sent(), "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n");
    t.server(b"550 no such user\r\n");
    assert_eq!(t.sent(), "RCPT TO:<c@z>\r\n");
    t.server(b"250 Ok\r\n");
    assert_eq!(t.sent(), "DATA\r\n");
    t.server(b"354 go\r\n");
    assert_eq!(t.sent(), "x\r\n.\r\n");
    t.server(b"250 2.0.0 Ok: queued as 4Xy\r\n");
    let want = Seen::Done(vec![bounced_550("b@y"), ("c@z".into(), SENT.into())]);
    assert_eq!(t.seen(), [want, Seen::Ready]);
}

#[test]
fn no_recipient_accepted_without_pipelining_sends_no_data() {
    let mut t = Shell::open(TlsLevel::None, &[]);
    t.send("a@x", &["b@y", "c@z"], &[b"x"]);
    t.server(b"250 Ok\r\n");
    t.server(b"550 no such user\r\n");
    t.server(b"451 4.3.0 try later\r\n");
    assert_eq!(
        t.sent(),
        "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@z>\r\nRSET\r\n"
    );
    let deferred = std::format!(
        "dsn=4.3.0, status=deferred (host {PEER} said: 451 4.3.0 try later (in reply to RCPT TO \
         command))"
    );
    assert_eq!(
        t.seen(),
        [Seen::Done(vec![
            bounced_550("b@y"),
            ("c@z".into(), deferred)
        ])]
    );
    assert_eq!(t.body_requests, 0);
    t.server(b"250 2.0.0 Ok\r\n");
    assert_eq!(t.seen(), [Seen::Ready]);
}

#[test]
fn no_recipient_accepted_with_pipelining() {
    // DATA was already sent. 354 → a lone dot, as Postfix does; anything else → RSET.
    let cases: &[(&[u8], &str, &[u8])] = &[
        (
            b"354 go\r\n",
            ".\r\n",
            b"554 5.5.1 Error: no valid recipients\r\n",
        ),
        (
            b"554 5.5.1 Error: no valid recipients\r\n",
            "RSET\r\n",
            b"250 2.0.0 Ok\r\n",
        ),
    ];
    for (data_reply, then, last) in cases {
        let mut t = Shell::open(TlsLevel::None, &["PIPELINING"]);
        t.send("a@x", &["b@y"], &[b"never sent"]);
        t.sent();
        t.server(b"250 Ok\r\n550 no such user\r\n");
        t.server(data_reply);
        assert_eq!(t.sent(), *then);
        assert_eq!(t.body_requests, 0);
        let first = t.seen();
        t.server(last);
        let mut all = first;
        all.extend(t.seen());
        assert_eq!(all, [Seen::Done(vec![bounced_550("b@y")]), Seen::Ready]);
        assert_eq!(t.sent(), "");
    }
}

#[test]
fn refused_rset_drops_the_connection_without_blame() {
    let mut t = Shell::open(TlsLevel::None, &[]);
    t.send("a@x", &["b@y"], &[b"x"]);
    t.server(b"250 Ok\r\n550 no such user\r\n");
    assert_eq!(t.seen(), [Seen::Done(vec![bounced_550("b@y")])]);
    t.server(b"500 5.5.1 what\r\n");
    assert!(t.sent().ends_with("RSET\r\nQUIT\r\n"));
    t.server(b"221 Bye\r\n");
    assert_eq!(
        failed(&t.seen()[0]),
        std::format!(
            "dropped: dsn=4.5.1, status=deferred (host {PEER} said: 500 5.5.1 what (in reply to \
             RSET command))"
        )
    );
}

#[test]
fn mail_refused_settles_every_recipient_and_resets() {
    for pipelining in [false, true] {
        let keywords: &[&str] = if pipelining { &["PIPELINING"] } else { &[] };
        let mut t = Shell::open(TlsLevel::None, keywords);
        t.send("a@x", &["b@y", "c@z"], &[b"x"]);
        if pipelining {
            t.server(b"553 5.7.1 <a@x>: Sender address rejected\r\n503 5.5.1 Error: need MAIL\r\n");
            t.server(b"503 5.5.1 Error: need MAIL\r\n554 5.5.1 Error: no valid recipients\r\n");
        } else {
            t.server(b"553 5.7.1 <a@x>: Sender address rejected\r\n");
        }
        assert!(t.sent().ends_with("RSET\r\n"));
        let why = std::format!(
            "dsn=5.7.1, status=bounced (host {PEER} said: 553 5.7.1 <a@x>: Sender address \
             rejected (in reply to MAIL FROM command))"
        );
        assert_eq!(
            t.seen(),
            [done(&[("b@y", &why), ("c@z", &why)])],
            "pipelining {pipelining}"
        );
        t.server(b"250 Ok\r\n");
        assert_eq!(t.seen(), [Seen::Ready]);
    }
}

#[test]
fn data_refused_settles_accepted_recipients() {
    let mut t = Shell::open(TlsLevel::None, &["PIPELINING"]);
    t.send("a@x", &["b@y"], &[b"x"]);
    t.server(b"250 Ok\r\n250 Ok\r\n451 4.3.0 queue full\r\n");
    assert!(t.sent().ends_with("RSET\r\n"));
    let why = std::format!(
        "dsn=4.3.0, status=deferred (host {PEER} said: 451 4.3.0 queue full (in reply to DATA \
         command))"
    );
    assert_eq!(t.seen(), [done(&[("b@y", &why)])]);
}

#[test]
fn end_of_data_refused() {
    let mut t = Shell::open(TlsLevel::None, &["PIPELINING"]);
    t.send("a@x", &["b@y", "c@z"], &[b"x"]);
    t.server(b"250 Ok\r\n250 Ok\r\n250 Ok\r\n354 go\r\n");
    t.server(b"554 5.7.1 Message rejected: spam\r\n");
    let why = std::format!(
        "dsn=5.7.1, status=bounced (host {PEER} said: 554 5.7.1 Message rejected: spam (in \
         reply to end of DATA command))"
    );
    assert_eq!(
        t.seen(),
        [done(&[("b@y", &why), ("c@z", &why)]), Seen::Ready]
    );
    assert!(!t.sent().contains("RSET"));
}

#[test]
fn failed_greeting_fails_the_connection() {
    // (greeting, QUIT expected, log tail)
    let cases: &[(&[u8], bool, &str)] = &[
        (
            b"421 4.3.2 Service shutting down\r\n",
            false,
            "failed: dsn=4.3.2, status=deferred (host mx.example[192.0.2.7] refused to talk to \
             me: 421 4.3.2 Service shutting down)",
        ),
        (
            b"450 busy\r\n",
            true,
            "failed: dsn=4.0.0, status=deferred (host mx.example[192.0.2.7] refused to talk to \
             me: 450 busy)",
        ),
        (
            b"554-5.7.1 go away\r\n554 5.7.1 really\r\n",
            true,
            "failed: dsn=4.7.1, status=deferred (host mx.example[192.0.2.7] refused to talk to \
             me: 554 5.7.1 go away 5.7.1 really)",
        ),
    ];
    for (greeting, quit, want) in cases {
        let mut t = Shell::new(TlsLevel::May);
        t.server(greeting);
        if *quit {
            assert_eq!(t.sent(), "QUIT\r\n");
            assert_eq!(t.seen(), []);
            t.server(b"221 Bye\r\n");
        } else {
            assert_eq!(t.sent(), "");
        }
        let seen = t.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(failed(&seen[0]), *want);
    }
}

#[test]
fn ehlo_refused_falls_back_to_helo() {
    let mut t = Shell::new(TlsLevel::None);
    t.server(b"220 old.example SMTP\r\n");
    t.server(b"502 5.5.2 Error: command not recognized\r\n");
    assert_eq!(t.sent(), "EHLO laptop.example\r\nHELO laptop.example\r\n");
    t.server(b"250 old.example\r\n");
    assert_eq!(t.seen(), [Seen::Ready]);
    assert_eq!(*t.s().capabilities(), Capabilities::default());
    t.send("a@x", &["b@y"], &[b"x"]);
    assert_eq!(t.sent(), "MAIL FROM:<a@x>\r\n");

    // At encrypt, HELO cannot lead to TLS.
    let mut t = Shell::new(TlsLevel::Encrypt);
    t.server(b"220 old.example SMTP\r\n500 no EHLO\r\n250 old.example\r\n");
    assert!(t.sent().ends_with("HELO laptop.example\r\nQUIT\r\n"));
    t.server(b"221 Bye\r\n");
    let seen = t.seen();
    assert_eq!(
        failed(&seen[0]),
        std::format!(
            "failed: dsn=4.7.4, status=deferred (TLS is required, but was not offered by host \
             {PEER})"
        )
    );
}

#[test]
fn ehlo_and_helo_refusals() {
    // 421 to EHLO ends it; any other refusal of EHLO tries HELO; a refused HELO ends it.
    let mut t = Shell::new(TlsLevel::None);
    t.server(b"220 mx\r\n421 4.3.2 shutting down\r\n");
    assert_eq!(t.sent(), "EHLO laptop.example\r\n");
    assert_eq!(
        failed(&t.seen()[0]),
        std::format!(
            "failed: dsn=4.3.2, status=deferred (host {PEER} refused to talk to me: 421 4.3.2 \
             shutting down)"
        )
    );

    let mut t = Shell::new(TlsLevel::None);
    t.server(b"220 mx\r\n451 4.3.0 not now\r\n");
    assert_eq!(t.sent(), "EHLO laptop.example\r\nHELO laptop.example\r\n");
    t.server(b"550 5.7.1 go away\r\n");
    assert_eq!(t.sent(), "QUIT\r\n");
    t.server(b"221 Bye\r\n");
    assert_eq!(
        failed(&t.seen()[0]),
        std::format!(
            "failed: dsn=4.7.1, status=deferred (host {PEER} refused to talk to me: 550 5.7.1 \
             go away)"
        )
    );
}

#[test]
fn starttls_decision_per_level() {
    // (level, offered, what follows EHLO)
    let cases: &[(TlsLevel, bool, &str)] = &[
        (TlsLevel::None, true, "ready"),
        (TlsLevel::None, false, "ready"),
        (TlsLevel::May, true, "starttls"),
        (TlsLevel::May, false, "ready"),
        (TlsLevel::Encrypt, true, "starttls"),
        (TlsLevel::Encrypt, false, "refuse"),
        (TlsLevel::Verify, true, "starttls"),
        (TlsLevel::Verify, false, "refuse"),
        (TlsLevel::Secure, true, "starttls"),
        (TlsLevel::Secure, false, "refuse"),
    ];
    for &(level, offered, want) in cases {
        let mut t = Shell::new(level);
        t.server(b"220 mx ESMTP\r\n");
        t.sent();
        let keywords: &[&str] = if offered {
            &["PIPELINING", "STARTTLS"]
        } else {
            &["PIPELINING"]
        };
        t.server(&ehlo(keywords));
        let (wire, seen) = (t.sent(), t.seen());
        let label = std::format!("{level:?} offered={offered}");
        match want {
            "ready" => assert_eq!((wire.as_str(), seen), ("", vec![Seen::Ready]), "{label}"),
            "starttls" => {
                assert_eq!((wire.as_str(), seen), ("STARTTLS\r\n", vec![]), "{label}");
                t.server(b"220 2.0.0 Ready to start TLS\r\n");
                assert_eq!(t.seen(), [Seen::StartTls], "{label}");
                assert_eq!(t.s().poll_timeout(), None, "the handshake has the deadline");
            }
            _ => {
                assert_eq!((wire.as_str(), seen), ("QUIT\r\n", vec![]), "{label}");
                t.server(b"221 2.0.0 Bye\r\n");
                let seen = t.seen();
                assert_eq!(
                    failed(&seen[0]),
                    std::format!(
                        "failed: dsn=4.7.4, status=deferred (TLS is required, but was not \
                         offered by host {PEER})"
                    ),
                    "{label}"
                );
            }
        }
    }
}

/// Up to the server's 220 to STARTTLS.
fn at_starttls(level: TlsLevel) -> Shell {
    let mut t = Shell::new(level);
    t.server(b"220 mx ESMTP\r\n");
    t.server(&ehlo(&["STARTTLS"]));
    assert_eq!(t.sent(), "EHLO laptop.example\r\nSTARTTLS\r\n");
    t.server(b"220 2.0.0 Ready to start TLS\r\n");
    assert_eq!(t.seen(), [Seen::StartTls]);
    t
}

#[test]
fn certificate_verdict_per_level() {
    use ServerCertVerdict::{NotVerified, Verified};
    let cases: &[(TlsLevel, ServerCertVerdict, bool)] = &[
        (TlsLevel::May, NotVerified, true),
        (TlsLevel::Encrypt, NotVerified, true),
        (TlsLevel::Verify, NotVerified, false),
        (TlsLevel::Secure, NotVerified, false),
        (TlsLevel::May, Verified, true),
        (TlsLevel::Verify, Verified, true),
        (TlsLevel::Secure, Verified, true),
    ];
    for &(level, verdict, goes_on) in cases {
        let label = std::format!("{level:?} {verdict:?}");
        let mut t = at_starttls(level);
        t.handshake(Some(verdict));
        if goes_on {
            assert_eq!(t.sent(), "EHLO laptop.example\r\n", "{label}");
            // A server that still offers STARTTLS inside TLS does not get it twice.
            t.server(&ehlo(&["PIPELINING", "STARTTLS"]));
            assert_eq!(t.seen(), [Seen::Ready], "{label}");
            assert!(t.s().is_tls() && t.s().capabilities().pipelining, "{label}");
        } else {
            assert_eq!(t.sent(), "QUIT\r\n", "{label}");
            t.server(b"221 Bye\r\n");
            let seen = t.seen();
            assert_eq!(
                failed(&seen[0]),
                "failed: dsn=4.7.5, status=deferred (Server certificate not verified)",
                "{label}"
            );
        }
    }
}

#[test]
fn handshake_failure_closes_without_quit() {
    let why = "dsn=4.7.5, status=deferred (Cannot start TLS: handshake failure)";
    for level in [TlsLevel::May, TlsLevel::Encrypt, TlsLevel::Verify] {
        let mut t = at_starttls(level);
        t.handshake(None);
        assert_eq!(t.sent(), "");
        let seen = t.seen();
        let how = if level == TlsLevel::May {
            "retry without TLS"
        } else {
            "failed"
        };
        assert_eq!(failed(&seen[0]), std::format!("{how}: {why}"));
        assert_eq!(seen.len(), 1);
    }
}

#[test]
fn starttls_refused() {
    // At may: go on in plaintext on the same connection, without a new EHLO.
    let mut t = Shell::new(TlsLevel::May);
    t.server(b"220 mx ESMTP\r\n");
    t.server(&ehlo(&["STARTTLS"]));
    t.sent();
    t.server(b"454 4.7.0 TLS not available due to local problem\r\n");
    assert_eq!(t.seen(), [Seen::Ready]);
    assert_eq!(t.sent(), "");
    assert!(!t.s().is_tls());
    t.send("a@x", &["b@y"], &[b"x"]);
    assert_eq!(t.sent(), "MAIL FROM:<a@x>\r\n");

    // At encrypt and up: never plaintext.
    for level in [TlsLevel::Encrypt, TlsLevel::Verify] {
        let mut t = Shell::new(level);
        t.server(b"220 mx ESMTP\r\n");
        t.server(&ehlo(&["STARTTLS"]));
        t.sent();
        t.server(b"454 4.7.0 TLS not available due to local problem\r\n");
        assert_eq!(t.sent(), "QUIT\r\n");
        t.server(b"221 Bye\r\n");
        assert_eq!(
            failed(&t.seen()[0]),
            std::format!(
                "failed: dsn=4.7.0, status=deferred (TLS is required, but host {PEER} refused \
                 to start TLS: 454 4.7.0 TLS not available due to local problem)"
            )
        );
    }
}

#[test]
fn bytes_after_the_220_are_never_replies() {
    let mut t = Shell::new(TlsLevel::Verify);
    t.server(b"220 mx ESMTP\r\n");
    t.server(&ehlo(&["STARTTLS"]));
    t.sent();
    t.server(b"220 2.0.0 Ready to start TLS\r\n250-mx\r\n250 PIPELINING\r\n250 2.1.0 O");
    t.server(b"k\r\n");
    assert_eq!(t.seen(), [Seen::StartTls]);
    t.handshake(Some(ServerCertVerdict::Verified));
    assert_eq!(t.discarded, Some(38));
    assert_eq!(t.sent(), "EHLO laptop.example\r\n");
    assert_eq!(t.seen(), []);
    t.server(&ehlo(&[]));
    assert_eq!(t.seen(), [Seen::Ready]);
    assert!(!t.s().capabilities().pipelining);
}

#[test]
fn reply_421_defers_what_is_unfinished() {
    let mut t = Shell::open(TlsLevel::None, &["PIPELINING"]);
    t.send("a@x", &["b@y", "c@z", "d@w"], &[b"x"]);
    t.sent();
    t.server(
        b"250 Ok\r\n250 Ok\r\n550 no such user\r\n421 4.4.2 mx.example Error: timeout exceeded\r\n",
    );
    assert_eq!(t.sent(), "", "no QUIT after 421");
    let why = std::format!(
        "dsn=4.4.2, status=deferred (host {PEER} said: 421 4.4.2 mx.example Error: timeout \
         exceeded (in reply to RCPT TO command))"
    );
    let seen = t.seen();
    assert_eq!(
        seen[0],
        Seen::Done(vec![
            ("b@y".into(), why.clone()),
            bounced_550("c@z"),
            ("d@w".into(), why.clone())
        ])
    );
    assert_eq!(failed(&seen[1]), std::format!("failed: {why}"));
    assert_eq!(seen.len(), 2);
}

#[test]
fn reply_421_between_messages_drops_the_connection() {
    let mut t = Shell::open(TlsLevel::None, &[]);
    t.server(b"421 4.4.2 mx.example Error: timeout exceeded\r\n");
    assert_eq!(
        failed(&t.seen()[0]),
        std::format!(
            "dropped: dsn=4.4.2, status=deferred (host {PEER} said: 421 4.4.2 mx.example Error: \
             timeout exceeded (unexpected reply while idle))"
        )
    );
}

#[test]
fn lost_connection() {
    // Between messages: nothing lost.
    let mut t = Shell::open(TlsLevel::None, &[]);
    t.lose_connection();
    assert_eq!(
        failed(&t.seen()[0]),
        std::format!(
            "dropped: dsn=4.4.2, status=deferred (lost connection with {PEER} while idle)"
        )
    );
    // During a message: its recipients are deferred.
    let mut t = Shell::open(TlsLevel::None, &[]);
    t.send("a@x", &["b@y"], &[b"x"]);
    t.lose_connection();
    let why = std::format!(
        "dsn=4.4.2, status=deferred (lost connection with {PEER} while sending MAIL FROM)"
    );
    let seen = t.seen();
    assert_eq!(seen[0], done(&[("b@y", &why)]));
    assert_eq!(failed(&seen[1]), std::format!("failed: {why}"));
    // During setup.
    let mut t = Shell::new(TlsLevel::None);
    t.lose_connection();
    assert_eq!(
        failed(&t.seen()[0]),
        std::format!(
            "failed: dsn=4.4.2, status=deferred (lost connection with {PEER} while receiving \
             the initial server greeting)"
        )
    );
    t.lose_connection();
    t.server(b"220 late\r\n");
    assert_eq!(
        (t.seen(), t.sent()),
        (vec![], String::new()),
        "closed stays closed"
    );
}

#[test]
fn timeouts() {
    let mut t = Shell::new(TlsLevel::None);
    let greeting_due = Instant(0) + Duration::from_secs(300);
    assert_eq!(t.s().poll_timeout(), Some(greeting_due));
    t.s().handle_timeout(Instant(299_999));
    t.drain();
    assert_eq!(t.seen(), []);
    t.s().handle_timeout(greeting_due);
    t.drain();
    assert_eq!(
        failed(&t.seen()[0]),
        std::format!(
            "failed: dsn=4.4.2, status=deferred (conversation with {PEER} timed out while \
             receiving the initial server greeting)"
        )
    );
    assert_eq!(t.s().poll_timeout(), None);

    // After the final dot the longer data_done_timeout applies.
    let mut t = Shell::open(TlsLevel::None, &["PIPELINING"]);
    t.now = Instant(10_000);
    t.send("a@x", &["b@y"], &[b"x"]);
    assert_eq!(t.s().poll_timeout(), Some(Instant(10_000 + 300_000)));
    t.now = Instant(20_000);
    t.server(b"250 Ok\r\n250 Ok\r\n354 go\r\n");
    assert_eq!(t.s().poll_timeout(), Some(Instant(20_000 + 600_000)));
    t.s().handle_timeout(Instant(620_000));
    t.drain();
    let why = std::format!(
        "dsn=4.4.2, status=deferred (conversation with {PEER} timed out while sending end of \
         data -- message may be sent more than once)"
    );
    let seen = t.seen();
    assert_eq!(seen[0], done(&[("b@y", &why)]));
    assert_eq!(failed(&seen[1]), std::format!("failed: {why}"));

    // Idle: no timer; the shell decides how long to keep the connection.
    let mut t = Shell::open(TlsLevel::None, &[]);
    assert_eq!(t.s().poll_timeout(), None);
    t.quit();
    assert!(t.s().poll_timeout().is_some());
    t.s().handle_timeout(Instant(300_000));
    t.drain();
    assert_eq!(t.seen(), [Seen::Close(Closing::Done)]);
}

#[test]
fn body_is_pulled_chunk_by_chunk() {
    let mut t = Shell::open(TlsLevel::None, &["PIPELINING"]);
    let chunks: [&[u8]; 4] = [b"a\n.", b"b\r", b"\n", b"c"];
    t.send("a@x", &["b@y"], &chunks);
    t.sent();
    t.server(b"250 Ok\r\n250 Ok\r\n354 go\r\n");
    assert_eq!(t.sent(), "a\r\n..b\r\nc\r\n.\r\n");
    assert_eq!(t.body_requests, 5, "one request per chunk, one for the end");
}

#[test]
fn long_lines_are_broken_per_the_settings() {
    let x = |n: usize| "x".repeat(n);
    let body = std::format!("Subject: {}\n\n{}\n", x(991), x(1200));
    let (head, tail) = body.as_bytes().split_at(700);
    for (limit, want) in [
        (
            998,
            std::format!(
                "Subject: {}\r\n xx\r\n\r\n{}\r\n {}\r\n.\r\n",
                x(989),
                x(998),
                x(202)
            ),
        ),
        (
            0,
            std::format!("Subject: {}\r\n\r\n{}\r\n.\r\n", x(991), x(1200)),
        ),
    ] {
        let mut t = Shell::with(ClientSettings {
            line_length_limit: limit,
            ..ClientSettings::default()
        });
        t.server(b"220 mx.example ESMTP\r\n");
        t.server(&ehlo(&["PIPELINING"]));
        t.send("a@x", &["b@y"], &[head, tail]);
        t.sent();
        t.server(b"250 Ok\r\n250 Ok\r\n354 go\r\n");
        assert_eq!(t.sent(), want, "limit {limit}");
    }
    assert_eq!(ClientSettings::default().line_length_limit, 998);
}

#[test]
fn size_limit_refuses_before_sending() {
    let mut t = Shell::open(TlsLevel::None, &["SIZE 1000"]);
    let envelope = Envelope {
        sender: "a@x".into(),
        recipients: vec!["b@y".into()],
        body_size: Some(1001),
        eight_bit: true,
        smtputf8: false,
        utf8_header: false,
    };
    t.s().send_message(envelope, Instant(0)).unwrap();
    t.drain();
    assert_eq!(t.sent(), "");
    let why = std::format!(
        "dsn=5.3.4, status=bounced (message size 1001 exceeds size limit 1000 of server {PEER})"
    );
    assert_eq!(t.seen(), [done(&[("b@y", &why)]), Seen::Ready]);
}

#[test]
fn shell_mistakes_are_errors_not_panics() {
    let mut t = Shell::new(TlsLevel::None);
    let env = Envelope {
        sender: "a@x".into(),
        recipients: vec!["b@y".into()],
        body_size: None,
        eight_bit: false,
        smtputf8: false,
        utf8_header: false,
    };
    assert_eq!(
        t.s().send_message(env.clone(), Instant(0)),
        Err(ClientError::NotReady)
    );
    // quit during setup waits for the session to be ready, then says QUIT.
    t.quit();
    t.server(b"220 mx\r\n250 mx\r\n");
    assert_eq!(t.sent(), "EHLO laptop.example\r\nQUIT\r\n");
    assert_eq!(
        t.s().send_message(env.clone(), Instant(0)),
        Err(ClientError::Closed)
    );

    let mut t = Shell::open(TlsLevel::None, &[]);
    t.send("a@x", &["b@y"], &[]);
    assert_eq!(t.s().quit(Instant(0)), Err(ClientError::Busy));
    assert_eq!(
        t.s().send_message(env, Instant(0)),
        Err(ClientError::NotReady)
    );
    // Body events out of turn are ignored.
    t.s().handle_event(ClientEvent::Body(b"stray"), Instant(0));
    t.s().handle_event(ClientEvent::BodyEnd, Instant(0));
    t.drain();
    assert_eq!(t.sent(), "MAIL FROM:<a@x>\r\n");

    // start_tls when the server never agreed: the session comes back unchanged.
    let mut t = Shell::open(TlsLevel::May, &[]);
    let s = t.session.take().unwrap();
    t.session = Some(
        s.start_tls()
            .expect_err("the server never agreed to STARTTLS"),
    );
    t.send("a@x", &["b@y"], &[]);
    assert_eq!(t.sent(), "MAIL FROM:<a@x>\r\n");
    assert_eq!(t.seen(), []);
}

#[test]
fn start_tls_waits_for_every_output_and_hands_over_the_deadline() {
    let settings = ClientSettings {
        tls_level: TlsLevel::Encrypt,
        command_timeout: Duration::from_secs(60),
        ..ClientSettings::default()
    };
    let peer = ServerPeer {
        name: "mx.example".into(),
        addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
    };
    let mut s = ClientSession::new(settings, peer, Instant(0));
    s.handle_input(b"220 mx ESMTP\r\n", Instant(0));
    s.handle_input(&ehlo(&["STARTTLS"]), Instant(0));
    s.handle_input(b"220 2.0.0 Ready to start TLS\r\n", Instant(5_000));
    // Outputs not yet polled (the EHLO and STARTTLS writes): no hand-over yet.
    let mut s = s.start_tls().expect_err("outputs are pending");
    let mut last = None;
    while let Some(out) = s.poll_output() {
        last = Some(out);
    }
    assert_eq!(last, Some(ClientOutput::StartTls));
    // Waiting for the hand-over, the session has no timer of its own...
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(Instant(1_000_000));
    assert_eq!(s.poll_output(), None);
    // ...the handshake has it, counted from the 220.
    let hs = s.start_tls().expect("the server agreed to STARTTLS");
    assert_eq!(hs.poll_timeout(), Some(Instant(5_000 + 60_000)));
    assert_eq!(hs.discarded(), 0);
}

#[test]
fn malformed_reply_defers() {
    let mut t = Shell::open(TlsLevel::None, &[]);
    t.send("a@x", &["b@y"], &[b"x"]);
    t.server(b"hello there\r\n");
    let why = std::format!(
        "dsn=4.5.0, status=deferred (host {PEER} sent a malformed reply while sending MAIL \
         FROM: malformed reply line \"hello there\")"
    );
    let seen = t.seen();
    assert_eq!(seen[0], done(&[("b@y", &why)]));
    assert_eq!(failed(&seen[1]), std::format!("failed: {why}"));
}

/// A whole dialogue with STARTTLS and two messages, as the server's steps.
const DIALOGUE: &[&[u8]] = &[
    b"220-mx.example ESMTP\r\n220 welcome\r\n",
    b"250-mx.example\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n",
    b"220 2.0.0 Ready to start TLS\r\n",
    b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 ENHANCEDSTATUSCODES\r\n",
    b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550-5.1.1 <c@z>: Recipient\r\n550 5.1.1 address rejected\r\n354 End data\r\n",
    b"250 2.0.0 Ok: queued as 4Xy\r\n",
    b"250 2.1.0 Ok\r\n451 4.3.0 later\r\n554 5.5.1 Error: no valid recipients\r\n",
    b"250 2.0.0 Ok\r\n",
    b"221 2.0.0 Bye\r\n",
];

/// Runs [`DIALOGUE`], each step cut at `cuts`; returns what the client wrote and saw.
fn run_dialogue(cuts: &[usize]) -> (String, Vec<Seen>) {
    let mut t = Shell::new(TlsLevel::Verify);
    let mut wire = String::new();
    for (i, step) in DIALOGUE.iter().enumerate() {
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (step.len() + 1)).collect();
        bounds.push(step.len());
        bounds.sort_unstable();
        let mut start = 0;
        for end in bounds {
            t.server(&step[start..end]);
            start = end;
        }
        if t.seen.last() == Some(&Seen::StartTls) {
            t.handshake(Some(ServerCertVerdict::Verified));
        }
        match i {
            3 => t.send("a@x", &["b@y", "c@z"], &[b"hello\n"]),
            5 => t.send("a@x", &["d@w"], &[b"again\n"]),
            7 => t.quit(),
            _ => {}
        }
        wire.push_str(&t.sent());
    }
    (wire, t.seen())
}

#[test]
fn the_whole_dialogue() {
    let (wire, seen) = run_dialogue(&[]);
    assert_eq!(
        wire,
        "EHLO laptop.example\r\nSTARTTLS\r\nEHLO laptop.example\r\n\
         MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@z>\r\nDATA\r\nhello\r\n.\r\n\
         MAIL FROM:<a@x>\r\nRCPT TO:<d@w>\r\nDATA\r\nRSET\r\nQUIT\r\n"
    );
    let rejected = std::format!(
        "dsn=5.1.1, status=bounced (host {PEER} said: 550 5.1.1 <c@z>: Recipient 5.1.1 address \
         rejected (in reply to RCPT TO command))"
    );
    let later = std::format!(
        "dsn=4.3.0, status=deferred (host {PEER} said: 451 4.3.0 later (in reply to RCPT TO \
         command))"
    );
    assert_eq!(
        seen,
        [
            Seen::StartTls,
            Seen::Ready,
            done(&[("b@y", SENT), ("c@z", &rejected)]),
            Seen::Ready,
            done(&[("d@w", &later)]),
            Seen::Ready,
            Seen::Close(Closing::Done),
        ]
    );
}

#[test]
fn every_single_cut_gives_the_same_dialogue() {
    let whole = run_dialogue(&[]);
    let longest = DIALOGUE.iter().map(|s| s.len()).max().unwrap();
    for cut in 0..=longest {
        assert_eq!(run_dialogue(&[cut]), whole, "cut at {cut}");
    }
}

proptest! {
    #[test]
    fn any_cuts_give_the_same_dialogue(cuts in proptest::collection::vec(0usize..200, 0..10)) {
        prop_assert_eq!(run_dialogue(&cuts), run_dialogue(&[]));
    }

    #[test]
    fn injected_bytes_after_the_220_are_dropped(
        injected in proptest::collection::vec(
            prop_oneof![
                Just(b"250 2.1.0 Ok\r\n".to_vec()),
                Just(b"250-mx\r\n250 PIPELINING\r\n".to_vec()),
                Just(b"354 go\r\n".to_vec()),
                Just(b"421 bye\r\n".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..40),
            ],
            0..5,
        ),
        cuts in proptest::collection::vec(0usize..200, 0..6),
    ) {
        let mut t = Shell::new(TlsLevel::Encrypt);
        t.server(b"220 mx\r\n");
        t.server(&ehlo(&["STARTTLS"]));
        t.sent();
        let mut stream = b"220 2.0.0 Ready to start TLS\r\n".to_vec();
        let injected: Vec<u8> = injected.concat();
        stream.extend_from_slice(&injected);
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        bounds.push(stream.len());
        bounds.sort_unstable();
        let mut start = 0;
        for end in bounds {
            t.server(&stream[start..end]);
            start = end;
        }
        prop_assert_eq!(t.seen(), vec![Seen::StartTls]);
        prop_assert_eq!(t.sent(), "");
        t.handshake(Some(ServerCertVerdict::NotVerified));
        prop_assert_eq!(t.discarded, Some(injected.len()));
        prop_assert_eq!(t.sent(), "EHLO laptop.example\r\n");
        prop_assert_eq!(t.seen(), vec![]);
        t.server(&ehlo(&[]));
        prop_assert_eq!(t.seen(), vec![Seen::Ready]);
    }

    #[test]
    fn arbitrary_server_bytes_never_panic(
        chunks in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                Just(b"250 Ok\r\n".to_vec()),
                Just(b"354 go\r\n".to_vec()),
                Just(b"250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n".to_vec()),
                Just(b"220 go\r\n".to_vec()),
                Just(b"550 no\r\n".to_vec()),
            ],
            0..30,
        ),
        level in prop_oneof![Just(TlsLevel::None), Just(TlsLevel::May), Just(TlsLevel::Verify)],
    ) {
        let mut t = Shell::new(level);
        for (i, chunk) in chunks.iter().enumerate() {
            t.now = Instant(i as u64 * 1000);
            t.server(chunk);
            match t.seen.last() {
                Some(Seen::Ready) => {
                    t.seen.pop();
                    if i % 3 == 2 {
                        t.quit();
                    } else {
                        t.send("a@x", &["b@y", "c@z"], &[b".x\n", b"y"]);
                    }
                }
                Some(Seen::StartTls) => {
                    t.seen.pop();
                    t.handshake(Some(ServerCertVerdict::Verified));
                }
                _ => {}
            }
        }
        let now = Instant(1_000_000_000);
        t.s().handle_timeout(now);
        t.drain();
        let closes = t.seen.iter().filter(|s| matches!(s, Seen::Close(_))).count();
        prop_assert!(closes <= 1);
        if closes == 1 {
            prop_assert!(matches!(t.seen.last(), Some(Seen::Close(_))));
        }
        // Every message got a result for each recipient.
        for seen in &t.seen {
            if let Seen::Done(results) = seen {
                prop_assert_eq!(results.len(), 2);
            }
        }
    }
}

/// A client that knows it is `relay.example`, talking to a server that greets with `greeting`
/// and answers EHLO with `ehlo_name`; returns what it wrote after the greeting and its end.
fn meets(greeting: &[u8], ehlo_name: &str) -> (String, Vec<Seen>) {
    let mut t = Shell::new(TlsLevel::None);
    if let Some(s) = t.session.as_mut() {
        s.settings.self_check = Some(crate::settings::SelfCheck {
            myhostname: "Relay.Example".into(),
            nexthop: "[192.0.2.7]:25".into(),
        });
    }
    t.server(greeting);
    let mut sent = t.sent();
    if sent.starts_with("EHLO") {
        let reply = crate::reply::Reply::multi(250, vec![String::from(ehlo_name)]).to_bytes();
        t.server(&reply);
        sent.push_str(&t.sent());
    }
    (sent, t.seen())
}

#[test]
fn a_server_that_greets_with_our_own_name_is_a_loop() {
    let loops = "failed: dsn=5.4.6, status=bounced (mail for [192.0.2.7]:25 loops back to myself)";
    // The 220 banner names us: no EHLO, QUIT at once, everything bounces.
    let (sent, seen) = meets(b"220 relay.example. ESMTP certrelay\r\n", "mx.example");
    assert_eq!(sent, "QUIT\r\n");
    assert!(seen.is_empty(), "{seen:?}");
    // The banner hides it, the EHLO reply does not.
    let (sent, _) = meets(b"220 mx.example ESMTP\r\n", "RELAY.example");
    assert_eq!(sent, "EHLO laptop.example\r\nQUIT\r\n");
    // Another name: ready to send.
    let (sent, seen) = meets(b"220 mx.example ESMTP\r\n", "mx.example");
    assert_eq!(sent, "EHLO laptop.example\r\n");
    assert_eq!(seen, [Seen::Ready]);
    // The outcome, as the delivery engine sees it once the QUIT is answered.
    let mut t = Shell::new(TlsLevel::None);
    if let Some(s) = t.session.as_mut() {
        s.settings.self_check = Some(crate::settings::SelfCheck {
            myhostname: "relay.example".into(),
            nexthop: "[192.0.2.7]:25".into(),
        });
    }
    t.server(b"220 relay.example ESMTP\r\n");
    t.server(b"221 2.0.0 Bye\r\n");
    let seen = t.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(failed(&seen[0]), loops);
}

fn utf8_envelope(sender: &str, rcpt: &str, smtputf8: bool, utf8_header: bool) -> Envelope {
    Envelope {
        sender: sender.into(),
        recipients: vec![rcpt.into()],
        body_size: None,
        eight_bit: false,
        smtputf8,
        utf8_header,
    }
}

#[test]
fn smtputf8_goes_on_mail_when_offered_and_asked_for() {
    let cases = [
        // (asked for, offered, MAIL line)
        (true, true, "MAIL FROM:<josé@exemple.fr> SMTPUTF8\r\n"),
        (false, true, "MAIL FROM:<a@x>\r\n"),
        (false, false, "MAIL FROM:<a@x>\r\n"),
    ];
    for (asked, offered, want) in cases {
        let keywords: &[&str] = if offered { &["SMTPUTF8"] } else { &[] };
        let mut t = Shell::open(TlsLevel::None, keywords);
        let sender = if asked { "josé@exemple.fr" } else { "a@x" };
        let envelope = utf8_envelope(sender, "b@y", asked, false);
        t.s().send_message(envelope, Instant(0)).unwrap();
        t.drain();
        assert_eq!(t.sent(), want, "asked {asked}, offered {offered}");
    }
}

#[test]
fn smtputf8_needed_but_not_offered_bounces_with_5_6_7() {
    let needy = [
        utf8_envelope("a@x", "josé@exemple.fr", true, false),
        utf8_envelope("a@exemplé.fr", "b@y", true, false),
        utf8_envelope("a@x", "b@y", true, true),
    ];
    for envelope in needy {
        let mut t = Shell::open(TlsLevel::None, &["8BITMIME"]);
        let rcpt = envelope.recipients[0].clone();
        t.s().send_message(envelope.clone(), Instant(0)).unwrap();
        t.drain();
        assert_eq!(t.sent(), "", "nothing is offered: {envelope:?}");
        let why = std::format!(
            "dsn=5.6.7, status=bounced (SMTPUTF8 is required, but was not offered by host {PEER})"
        );
        assert_eq!(t.seen(), [done(&[(&rcpt, &why)]), Seen::Ready]);
    }
    // Asked for but all ASCII, header included: goes without SMTPUTF8, as Postfix sends it.
    let mut t = Shell::open(TlsLevel::None, &["8BITMIME"]);
    let envelope = utf8_envelope("a@x", "b@y", true, false);
    t.s().send_message(envelope, Instant(0)).unwrap();
    t.drain();
    assert_eq!(t.sent(), "MAIL FROM:<a@x>\r\n");
}
