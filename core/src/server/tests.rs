//! Whole dialogues against a simulated shell, and properties over arbitrary input.

use super::*;
use crate::facts::{CertVerdict, ClientCert, PeerInfo, TlsFacts};
use crate::fingerprint::CertMatch;
use crate::fingerprint::DigestKind;
use crate::net::Cidr;
use crate::settings::{BareNewline, ServerSettings, ServerTlsLevel};
use crate::time::Instant;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;
use proptest::prelude::*;

mod enroll;
mod hostile;
mod wrapper;

const T0: Instant = Instant::from_millis(1_000);

fn settings() -> ServerSettings {
    ServerSettings {
        myhostname: "relay.example".into(),
        banner: "relay.example ESMTP certrelay".into(),
        mynetworks: vec![Cidr {
            addr: "127.0.0.0".parse().unwrap(),
            prefix: 8,
        }],
        // Mail for relay.example goes onward: certrelay has no local mailboxes (the local
        // domain tests at the end of this file set mydestination themselves).
        relay_domains: vec!["relay.example".into()],
        ..ServerSettings::default()
    }
}

/// Only `smtpd_timeout` bounds the client (no command time limit, no DATA rate).
fn without_slow_client_limits() -> ServerSettings {
    ServerSettings {
        command_time_limit: Duration::ZERO,
        data_min_rate: 0,
        ..settings()
    }
}

fn tls_settings(level: ServerTlsLevel, req_ccert: bool) -> ServerSettings {
    ServerSettings {
        tls_level: level,
        ask_ccert: true,
        req_ccert,
        tls_loglevel: 1,
        tls_received_header: true,
        ..settings()
    }
}

fn outsider() -> PeerInfo {
    PeerInfo {
        addr: "192.0.2.7".parse().unwrap(),
        name: "unknown".into(),
    }
}

fn insider() -> PeerInfo {
    PeerInfo {
        addr: "127.0.0.1".parse().unwrap(),
        name: "localhost".into(),
    }
}

fn tls_facts(verdict: CertVerdict, listed: bool) -> TlsFacts {
    TlsFacts {
        protocol: "TLSv1.3".into(),
        cipher: "TLS_AES_256_GCM_SHA384".into(),
        bits: 256,
        resumed: false,
        client_cert: ClientCert {
            verdict,
            listed: listed.then(|| CertMatch {
                label: "*.montravail.com".into(),
                digest: DigestKind::Md5,
                public_key: false,
            }),
            subject_cn: Some("laptop".into()),
            issuer_cn: Some("Example CA".into()),
        },
    }
}

/// What the shell would do with the outputs, recorded.
struct Shell {
    session: Option<ServerSession>,
    /// Bytes sent to the client, not yet checked.
    wire: Vec<u8>,
    /// Every output, in order, with body chunks and transmits as they came.
    outputs: Vec<ServerOutput>,
    logs: Vec<String>,
    /// Messages stored: (envelope, content).
    stored: Vec<(Envelope, Vec<u8>)>,
    open: Option<(Envelope, Vec<u8>)>,
    aborted: usize,
    /// Answer to each `MessageEnd`; `None` stores with ids Q1, Q2, ...
    storage_result: Option<ServerEvent>,
    /// Facts the next handshake ends with.
    tls: TlsFacts,
    discarded: Vec<usize>,
    closed: bool,
    now: Instant,
    /// `XCERTRELAY` requests, to be answered by the test.
    enroll_requests: Vec<crate::enroll::EnrollRequest>,
}

impl Shell {
    fn new(settings: ServerSettings, peer: PeerInfo) -> Self {
        let mut sh = Shell {
            session: Some(ServerSession::new(Arc::new(settings), peer, T0)),
            wire: Vec::new(),
            outputs: Vec::new(),
            logs: Vec::new(),
            stored: Vec::new(),
            open: None,
            aborted: 0,
            storage_result: None,
            tls: tls_facts(CertVerdict::Trusted, true),
            discarded: Vec::new(),
            closed: false,
            now: T0,
            enroll_requests: Vec::new(),
        };
        sh.drain();
        sh
    }

    fn s(&mut self) -> &mut ServerSession {
        self.session.as_mut().expect("session present")
    }

    fn feed(&mut self, bytes: &[u8]) {
        let now = self.now;
        self.s().handle_input(bytes, now);
        self.drain();
    }

    fn event(&mut self, e: ServerEvent) {
        let now = self.now;
        self.s().handle_event(e, now);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(out) = self.s().poll_output() {
            self.outputs.push(out.clone());
            match out {
                ServerOutput::Transmit(b) => self.wire.extend_from_slice(&b),
                ServerOutput::Log(l) => self.logs.push(l.text),
                ServerOutput::MessageBegin(env) => {
                    assert!(self.open.is_none(), "message begun twice");
                    self.open = Some((*env, Vec::new()));
                }
                ServerOutput::BodyChunk(c) => {
                    assert!(c.len() <= CHUNK_SIZE);
                    self.open
                        .as_mut()
                        .expect("chunk outside message")
                        .1
                        .extend(c);
                }
                ServerOutput::MessageAbort => {
                    self.open.take().expect("abort outside message");
                    self.aborted += 1;
                }
                ServerOutput::MessageEnd => {
                    let msg = self.open.take().expect("end outside message");
                    let now = self.now;
                    let event = match self.storage_result.clone() {
                        Some(e) => e,
                        None => {
                            self.stored.push(msg);
                            ServerEvent::MessageStored {
                                queue_id: format!("Q{}", self.stored.len()),
                            }
                        }
                    };
                    assert!(!self.s().wants_read());
                    self.s().handle_event(event, now);
                }
                ServerOutput::StartTls => {
                    let s = self.session.take().unwrap();
                    let hs = s.start_tls().expect("session asked for TLS");
                    self.discarded.push(hs.discarded());
                    self.session = Some(hs.established(self.tls.clone(), self.now));
                }
                ServerOutput::Enroll(request) => {
                    assert!(!self.s().wants_read());
                    self.enroll_requests.push(*request);
                }
                ServerOutput::Close => self.closed = true,
            }
        }
    }

    fn take_wire(&mut self) -> String {
        String::from_utf8(core::mem::take(&mut self.wire)).unwrap()
    }

    /// Runs a dialogue: `C:` lines are sent (consecutive ones in one read, pipelined),
    /// `S:` lines are the replies expected since the last check.
    fn script(&mut self, script: &str) {
        let mut input = String::new();
        let mut expected = String::new();
        for raw in script.lines() {
            let line = raw.trim_start();
            if let Some(c) = line.strip_prefix("C:") {
                if !expected.is_empty() {
                    self.check(&mut input, &mut expected);
                }
                input.push_str(c.strip_prefix(' ').unwrap_or(c));
                input.push_str("\r\n");
            } else if let Some(s) = line.strip_prefix("S:") {
                if !input.is_empty() {
                    self.feed(input.as_bytes());
                    input.clear();
                }
                expected.push_str(s.strip_prefix(' ').unwrap_or(s));
                expected.push_str("\r\n");
            } else {
                assert!(line.is_empty(), "script line {line:?}");
            }
        }
        self.check(&mut input, &mut expected);
    }

    fn check(&mut self, input: &mut String, expected: &mut String) {
        if !input.is_empty() {
            self.feed(input.as_bytes());
            input.clear();
        }
        assert_eq!(self.take_wire(), *expected);
        expected.clear();
    }
}

#[test]
fn relay_from_mynetworks_with_pipelining() {
    let mut sh = Shell::new(settings(), insider());
    sh.script(
        "S: 220 relay.example ESMTP certrelay
         C: EHLO laptop.example
         S: 250-relay.example
         S: 250-PIPELINING
         S: 250-SIZE 10240000
         S: 250-ENHANCEDSTATUSCODES
         S: 250-8BITMIME
         S: 250 SMTPUTF8
         C: MAIL FROM:<me@laptop.example> BODY=8BITMIME SIZE=100
         C: RCPT TO:<you@far.example>
         C: RCPT TO:<Friend@relay.example>
         C: DATA
         S: 250 2.1.0 Ok
         S: 250 2.1.5 Ok
         S: 250 2.1.5 Ok
         S: 354 End data with <CR><LF>.<CR><LF>
         C: Subject: hello
         C:
         C: ..leading dot
         C: .
         C: QUIT
         S: 250 2.0.0 Ok: queued as Q1
         S: 221 2.0.0 Bye",
    );
    assert!(sh.closed);
    assert_eq!(sh.stored.len(), 1);
    let (env, body) = &sh.stored[0];
    assert_eq!(body, b"Subject: hello\r\n\r\n.leading dot\r\n");
    assert_eq!(env.sender.to_string(), "me@laptop.example");
    let rcpts: Vec<String> = env.recipients.iter().map(|r| r.to_string()).collect();
    assert_eq!(rcpts, ["you@far.example", "Friend@relay.example"]);
    assert_eq!(
        (env.size_hint, env.body),
        (Some(100), BodyType::EightBitMime)
    );
    assert_eq!(env.protocol, "ESMTP");
    assert_eq!(
        env.received.render(Some("Q1"), "DATE"),
        "Received: from laptop.example (localhost [127.0.0.1])\r\n\tby relay.example (certrelay) with ESMTP id Q1; DATE\r\n"
    );
    assert_eq!(
        sh.logs.first().unwrap(),
        "connect from localhost[127.0.0.1]"
    );
    assert_eq!(
        sh.logs.last().unwrap(),
        "disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=2 data=1 quit=1 commands=6"
    );
}

#[test]
fn relay_denied_is_logged_like_postfix() {
    let mut sh = Shell::new(settings(), outsider());
    sh.script(
        "S: 220 relay.example ESMTP certrelay
         C: HELO laptop
         S: 250 relay.example
         C: MAIL FROM:<me@laptop.example>
         S: 250 2.1.0 Ok
         C: RCPT TO:<you@far.example>
         S: 554 5.7.1 <you@far.example>: Relay access denied
         C: RCPT TO:<u@relay.example>
         S: 250 2.1.5 Ok
         C: RCPT TO:<u%far.example@relay.example>
         S: 554 5.7.1 <u%far.example@relay.example>: Relay access denied",
    );
    assert!(sh.logs.contains(
        &"NOQUEUE: reject: RCPT from unknown[192.0.2.7]: 554 5.7.1 <you@far.example>: Relay access denied; from=<me@laptop.example> to=<you@far.example> proto=SMTP helo=<laptop>".to_string()
    ));
}

#[test]
fn sequence_and_syntax_errors() {
    // More errors than smtpd_soft_error_limit: no pause in the replies here.
    let paced_not = ServerSettings {
        error_sleep_time: Duration::ZERO,
        ..settings()
    };
    let mut sh = Shell::new(paced_not, insider());
    let long = "NOOP ".to_string() + &"x".repeat(600);
    sh.script(&format!(
        "S: 220 relay.example ESMTP certrelay
         C: RCPT TO:<a@relay.example>
         S: 503 5.5.1 Error: need MAIL command
         C: DATA
         S: 503 5.5.1 Error: need RCPT command
         C: EHLO
         S: 501 5.5.4 Syntax: EHLO hostname
         C: MAIL FROM:<a@b.example>
         C: MAIL FROM:<a@b.example>
         C: DATA
         C: RCPT TO:<>
         C: RCPT TO:<a@relay.example> NOTIFY=NEVER
         C: RCPT TO:<a@relay.example>
         C: DATA extra
         S: 250 2.1.0 Ok
         S: 503 5.5.1 Error: nested MAIL command
         S: 503 5.5.1 Error: need RCPT command
         S: 501 5.1.3 Bad recipient address syntax
         S: 555 5.5.4 Unsupported option: NOTIFY=NEVER
         S: 250 2.1.5 Ok
         S: 501 5.5.4 Syntax: DATA
         C: RSET
         C: RSET now
         C: RCPT TO:<a@relay.example>
         S: 250 2.0.0 Ok
         S: 501 5.5.4 Syntax: RSET
         S: 503 5.5.1 Error: need MAIL command
         C: MAIL FROM:<a@b.example> SMTPUTF8=yes
         C: MAIL FROM:<a@b.example> SIZE=10240001
         C: MAIL FROM:<a b>
         C: MAIL TO:<a@b.example>
         S: 555 5.5.4 Unsupported option: SMTPUTF8=yes
         S: 552 5.3.4 Message size exceeds fixed limit
         S: 501 5.1.7 Bad sender address syntax
         S: 501 5.5.4 Syntax: MAIL FROM:<address>
         C: NOOP
         C: VRFY <someone@relay.example>
         C: VRFY
         C: HELP
         C: XYZZY
         C:
         C: {long}
         C: STARTTLS
         S: 250 2.0.0 Ok
         S: 252 2.0.0 someone@relay.example
         S: 501 5.5.4 Syntax: VRFY address
         S: 214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY STARTTLS
         S: 500 5.5.2 Error: command not recognized
         S: 500 5.5.2 Error: bad syntax
         S: 500 5.5.0 Error: line too long
         S: 502 5.5.1 Error: command not implemented
         C: QUIT
         S: 221 2.0.0 Bye"
    ));
    assert!(sh.closed);
}

#[test]
fn starttls_then_listed_certificate_relays() {
    let mut sh = Shell::new(tls_settings(ServerTlsLevel::Encrypt, false), outsider());
    sh.tls = tls_facts(CertVerdict::Untrusted("self-signed".into()), true);
    sh.script(
        "S: 220 relay.example ESMTP certrelay
         C: EHLO laptop
         S: 250-relay.example
         S: 250-PIPELINING
         S: 250-SIZE 10240000
         S: 250-STARTTLS
         S: 250-ENHANCEDSTATUSCODES
         S: 250-8BITMIME
         S: 250 SMTPUTF8
         C: MAIL FROM:<me@laptop.example>
         C: NOOP
         C: STARTTLS now
         S: 530 5.7.0 Must issue a STARTTLS command first
         S: 250 2.0.0 Ok
         S: 501 5.5.4 Syntax: STARTTLS
         C: STARTTLS
         C: MAIL FROM:<smuggled@evil.example>
         S: 220 2.0.0 Ready to start TLS
         C: RCPT TO:<you@far.example>
         S: 503 5.5.1 Error: need MAIL command
         C: EHLO laptop
         S: 250-relay.example
         S: 250-PIPELINING
         S: 250-SIZE 10240000
         S: 250-ENHANCEDSTATUSCODES
         S: 250-8BITMIME
         S: 250 SMTPUTF8
         C: STARTTLS
         S: 554 5.5.1 Error: TLS already active
         C: MAIL FROM:<me@laptop.example>
         C: RCPT TO:<you@far.example>
         C: DATA
         S: 250 2.1.0 Ok
         S: 250 2.1.5 Ok
         S: 354 End data with <CR><LF>.<CR><LF>
         C: hi
         C: .
         S: 250 2.0.0 Ok: queued as Q1",
    );
    assert_eq!(sh.discarded, [35]);
    assert!(sh.logs.iter().any(|l| l
        == "Untrusted TLS connection established from unknown[192.0.2.7]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"));
    assert!(sh
        .logs
        .iter()
        .any(|l| l == "unknown[192.0.2.7]: discarded 35 bytes of plaintext sent after STARTTLS"));
    let env = &sh.stored[0].0;
    assert_eq!(env.protocol, "ESMTPS");
    assert_eq!(
        env.received.render(None, "DATE"),
        "Received: from laptop (unknown [192.0.2.7])\r\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n\t(Client CN \"laptop\", Issuer \"Example CA\" (not verified))\r\n\tby relay.example (certrelay) with ESMTPS\r\n\tfor <you@far.example>; DATE\r\n"
    );
}

#[test]
fn unlisted_certificate_is_denied_relay() {
    let mut sh = Shell::new(tls_settings(ServerTlsLevel::May, false), outsider());
    sh.tls = tls_facts(CertVerdict::Trusted, false);
    sh.feed(b"EHLO a\r\nSTARTTLS\r\n");
    sh.take_wire();
    sh.script(
        "C: EHLO a
         C: MAIL FROM:<me@laptop.example>
         C: RCPT TO:<you@far.example>
         S: 250-relay.example
         S: 250-PIPELINING
         S: 250-SIZE 10240000
         S: 250-ENHANCEDSTATUSCODES
         S: 250-8BITMIME
         S: 250 SMTPUTF8
         S: 250 2.1.0 Ok
         S: 554 5.7.1 <you@far.example>: Relay access denied",
    );
}

#[test]
fn a_certificate_taken_out_of_the_table_relays_no_more_in_the_same_session() {
    let mut sh = Shell::new(tls_settings(ServerTlsLevel::May, false), outsider());
    sh.feed(b"EHLO a\r\nSTARTTLS\r\nEHLO a\r\n");
    sh.take_wire();
    sh.script(
        "C: MAIL FROM:<me@laptop.example>
         C: RCPT TO:<you@far.example>
         S: 250 2.1.0 Ok
         S: 250 2.1.5 Ok
         C: RSET
         S: 250 2.0.0 Ok",
    );
    // The same answer again changes nothing and says nothing.
    let listed = sh.tls.client_cert.listed.clone();
    sh.s().relist_client_cert(listed.clone());
    sh.drain();
    assert!(!sh.logs.iter().any(|l| l.contains("relay_clientcerts")));
    // Revoked: the next transaction is refused relay.
    sh.s().relist_client_cert(None);
    sh.drain();
    assert!(sh.logs.iter().any(
        |l| l == "unknown[192.0.2.7]: client certificate no longer listed in relay_clientcerts"
    ));
    sh.script(
        "C: MAIL FROM:<me@laptop.example>
         C: RCPT TO:<you@far.example>
         S: 250 2.1.0 Ok
         S: 554 5.7.1 <you@far.example>: Relay access denied
         C: RSET
         S: 250 2.0.0 Ok",
    );
    // Listed again (a new label): relays again.
    sh.s().relist_client_cert(listed);
    sh.drain();
    sh.script(
        "C: MAIL FROM:<me@laptop.example>
         C: RCPT TO:<you@far.example>
         S: 250 2.1.0 Ok
         S: 250 2.1.5 Ok",
    );
}

#[test]
fn relisting_without_a_client_certificate_changes_nothing() {
    let mut sh = Shell::new(tls_settings(ServerTlsLevel::May, false), outsider());
    sh.tls = tls_facts(CertVerdict::Absent, false);
    sh.s().relist_client_cert(None);
    sh.feed(b"EHLO a\r\nSTARTTLS\r\nEHLO a\r\n");
    sh.take_wire();
    sh.s()
        .relist_client_cert(tls_facts(CertVerdict::Trusted, true).client_cert.listed);
    sh.drain();
    assert!(!sh.logs.iter().any(|l| l.contains("relay_clientcerts")));
    sh.script(
        "C: MAIL FROM:<me@laptop.example>
         C: RCPT TO:<you@far.example>
         S: 250 2.1.0 Ok
         S: 554 5.7.1 <you@far.example>: Relay access denied",
    );
}

#[test]
fn req_ccert_closes_at_next_command() {
    let table: &[(CertVerdict, &str)] = &[
        (
            CertVerdict::Absent,
            "421 4.7.1 relay.example Error: No client certificate presented\r\n",
        ),
        (
            CertVerdict::Untrusted("expired".into()),
            "421 4.7.1 relay.example Error: Client certificate not trusted\r\n",
        ),
        (CertVerdict::Trusted, "250 relay.example\r\n"),
    ];
    for (verdict, want) in table {
        let mut sh = Shell::new(tls_settings(ServerTlsLevel::Encrypt, true), outsider());
        sh.tls = tls_facts(verdict.clone(), false);
        sh.feed(b"STARTTLS\r\n");
        sh.take_wire();
        sh.feed(b"HELO a\r\nNOOP\r\n");
        let got = sh.take_wire();
        assert!(got.starts_with(want), "{verdict:?}: {got}");
        assert_eq!(sh.closed, !verdict.is_trusted(), "{verdict:?}");
        // The refusal is logged in the reject shape fail2ban matches, with the address.
        let reject = format!(
            "NOQUEUE: reject: TLS from unknown[192.0.2.7]: {}; proto=ESMTP",
            want.trim_end()
        );
        assert_eq!(
            sh.logs.contains(&reject),
            !verdict.is_trusted(),
            "{verdict:?}: {:?}",
            sh.logs
        );
    }
}

#[test]
fn tls_unavailable_and_handshake_failure() {
    let mut sh = Shell::new(tls_settings(ServerTlsLevel::May, false), outsider());
    sh.s().set_tls_unavailable();
    sh.script(
        "C: STARTTLS
         S: 220 relay.example ESMTP certrelay
         S: 454 4.7.0 TLS not available due to local problem",
    );
    // A session that did not ask for TLS cannot be handed over.
    let s = sh.session.take().unwrap();
    let s = s.start_tls().expect_err("no STARTTLS was accepted");
    // Handshake failure: the shell logs and closes.
    let mut s2 = ServerSession::new(
        Arc::new(tls_settings(ServerTlsLevel::May, false)),
        outsider(),
        T0,
    );
    s2.handle_input(b"STARTTLS\r\nNOOP\r\n", T0);
    while s2.poll_output().is_some() {}
    s2.handle_input(b"NOOP\r\n", T0);
    assert!(!s2.wants_read());
    let hs = s2.start_tls().unwrap();
    assert_eq!(hs.discarded(), 12);
    let lines = hs.failed("peer sent an alert");
    assert_eq!(
        lines[1].text,
        "lost connection after STARTTLS from unknown[192.0.2.7]"
    );
    assert_eq!(
        lines[2].text,
        "disconnect from unknown[192.0.2.7] starttls=1 commands=1"
    );
    drop(s);
}

#[test]
fn start_tls_waits_for_every_output_and_hands_over_the_deadline() {
    let mut s = ServerSession::new(
        Arc::new(tls_settings(ServerTlsLevel::May, false)),
        outsider(),
        T0,
    );
    let at = T0 + Duration::from_secs(7);
    s.handle_input(b"STARTTLS\r\n", at);
    // The greeting, the 220 and StartTls are not yet polled: no hand-over yet.
    let mut s = s.start_tls().expect_err("outputs are pending");
    let mut last = None;
    while let Some(out) = s.poll_output() {
        last = Some(out);
    }
    assert_eq!(last, Some(ServerOutput::StartTls));
    // Plaintext after STARTTLS neither runs nor moves the deadline.
    s.handle_input(b"NOOP\r\n", at + Duration::from_secs(100));
    assert_eq!(s.poll_output(), None);
    assert_eq!(s.poll_timeout(), None);
    let hs = s.start_tls().expect("the client asked for TLS");
    assert_eq!(hs.poll_timeout(), Some(at + Duration::from_secs(300)));
    assert_eq!(hs.discarded(), 6);
}

#[test]
fn too_many_errors_closes() {
    let mut set = settings();
    set.hard_error_limit = 3;
    let mut sh = Shell::new(set, outsider());
    sh.script(
        "C: BOGUS
         C: BOGUS
         C: BOGUS
         C: NOOP
         S: 220 relay.example ESMTP certrelay
         S: 500 5.5.2 Error: command not recognized
         S: 500 5.5.2 Error: command not recognized
         S: 500 5.5.2 Error: command not recognized
         S: 421 4.7.0 relay.example Error: too many errors",
    );
    assert!(sh.closed);
    assert!(sh
        .logs
        .contains(&"too many errors after UNKNOWN from unknown[192.0.2.7]".to_string()));
}

#[test]
fn capped_timeout_counts_from_the_last_progress() {
    let mut sh = Shell::new(settings(), outsider());
    sh.now = T0 + Duration::from_secs(4);
    sh.feed(b"EHLO a\r\n");
    let armed = sh.now;
    sh.now = T0 + Duration::from_secs(6);
    // A cap above smtpd_timeout changes nothing.
    sh.s().cap_timeout(Duration::from_secs(900));
    assert_eq!(
        sh.s().poll_timeout(),
        Some(armed + Duration::from_secs(300))
    );
    sh.s().cap_timeout(Duration::from_secs(10));
    assert_eq!(sh.s().poll_timeout(), Some(armed + Duration::from_secs(10)));
    // A cap never raises it again.
    sh.s().cap_timeout(Duration::from_secs(900));
    assert_eq!(sh.s().poll_timeout(), Some(armed + Duration::from_secs(10)));
    // A new command re-arms with the cap in force.
    sh.now = T0 + Duration::from_secs(9);
    sh.feed(b"NOOP\r\n");
    let deadline = sh.now + Duration::from_secs(10);
    assert_eq!(sh.s().poll_timeout(), Some(deadline));
    sh.take_wire();
    sh.s().handle_timeout(deadline);
    sh.drain();
    assert_eq!(
        sh.take_wire(),
        "421 4.4.2 relay.example Error: timeout exceeded\r\n"
    );
    assert!(sh.closed);
}

#[test]
fn idle_timeout() {
    let mut sh = Shell::new(without_slow_client_limits(), outsider());
    let deadline = T0 + Duration::from_secs(300);
    assert_eq!(sh.s().poll_timeout(), Some(deadline));
    sh.now = T0 + Duration::from_secs(100);
    sh.feed(b"EHLO a\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@relay.example>\r\nDATA\r\npartial");
    let deadline = sh.now + Duration::from_secs(300);
    assert_eq!(sh.s().poll_timeout(), Some(deadline));
    sh.take_wire();
    sh.s()
        .handle_timeout(Instant::from_millis(deadline.as_millis() - 1));
    sh.drain();
    assert!(!sh.closed);
    sh.s().handle_timeout(deadline);
    sh.drain();
    assert_eq!(
        sh.take_wire(),
        "421 4.4.2 relay.example Error: timeout exceeded\r\n"
    );
    assert!(sh.closed && sh.aborted == 1);
    assert!(sh
        .logs
        .contains(&"timeout after DATA from unknown[192.0.2.7]".to_string()));
    assert_eq!(sh.s().poll_timeout(), None);
}

#[test]
fn recipient_limit() {
    let mut set = settings();
    set.recipient_limit = 2;
    let mut sh = Shell::new(set, insider());
    sh.script(
        "S: 220 relay.example ESMTP certrelay
         C: MAIL FROM:<>
         C: RCPT TO:<a@x.example>
         C: RCPT TO:<b@x.example>
         C: RCPT TO:<c@x.example>
         S: 250 2.1.0 Ok
         S: 250 2.1.5 Ok
         S: 250 2.1.5 Ok
         S: 452 4.5.3 Error: too many recipients",
    );
}

#[test]
fn oversize_message_is_aborted_while_streaming() {
    let mut set = settings();
    set.message_size_limit = 100;
    let mut sh = Shell::new(set, insider());
    sh.feed(b"EHLO a\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@relay.example>\r\nDATA\r\n");
    assert!(sh.take_wire().contains("250-SIZE 100\r\n"));
    sh.feed(&[b'x'; 99]);
    assert_eq!(sh.aborted, 0);
    sh.feed(b"xx");
    assert_eq!(sh.aborted, 1, "abort as soon as the limit is passed");
    sh.feed(&[b'y'; 5000]);
    sh.feed(b"\r\n.\r\nNOOP\r\n");
    assert_eq!(
        sh.take_wire(),
        "552 5.3.4 Error: message file too big\r\n250 2.0.0 Ok\r\n"
    );
    assert!(sh.stored.is_empty());
}

#[test]
fn bare_newlines_rejected_or_normalized() {
    let body = b"EHLO a\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@relay.example>\r\nDATA\r\nline one\nline two\r\n.\r\n";
    let mut sh = Shell::new(settings(), insider());
    sh.feed(body);
    assert!(sh
        .take_wire()
        .ends_with("354 End data with <CR><LF>.<CR><LF>\r\n550 5.5.2 relay.example Error: bare <LF> received\r\n"));
    assert_eq!((sh.aborted, sh.stored.len()), (1, 0));

    let mut set = settings();
    set.bare_newline = BareNewline::Normalize;
    let mut sh = Shell::new(set, insider());
    sh.feed(body);
    assert!(sh.take_wire().ends_with("250 2.0.0 Ok: queued as Q1\r\n"));
    assert_eq!(sh.stored[0].1, b"line one\r\nline two\r\n");
}

#[test]
fn smuggled_end_of_data_is_content() {
    for (smuggle, mode) in [
        (&b"\n.\r\n"[..], BareNewline::Normalize),
        (b"\r\n.\n", BareNewline::Normalize),
        (b"\r.\r", BareNewline::Normalize),
        (b"\n.\r\n", BareNewline::Reject),
        (b"\r\n.\n", BareNewline::Reject),
        (b"\r.\r", BareNewline::Reject),
    ] {
        let mut set = settings();
        set.bare_newline = mode;
        let mut sh = Shell::new(set, insider());
        let mut input =
            b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@relay.example>\r\nDATA\r\nhi".to_vec();
        input.extend_from_slice(smuggle);
        input.extend_from_slice(
            b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<v@relay.example>\r\nDATA\r\nevil\r\n.\r\n",
        );
        sh.feed(&input);
        let wire = sh.take_wire();
        assert!(
            !wire.contains("2.1.0 Ok\r\n250 2.1.0"),
            "{smuggle:?}: {wire}"
        );
        assert_eq!(
            wire.matches("250 2.1.0 Ok").count(),
            1,
            "{smuggle:?}: {wire}"
        );
        match mode {
            BareNewline::Normalize => {
                assert_eq!(sh.stored.len(), 1);
                let body = &sh.stored[0].1;
                assert!(body.windows(10).any(|w| w == b"MAIL FROM:"), "{smuggle:?}");
            }
            BareNewline::Reject => {
                assert!(wire.ends_with("550 5.5.2 relay.example Error: bare <LF> received\r\n"));
                assert!(sh.stored.is_empty());
            }
        }
    }
}

#[test]
fn storage_failures_and_held_input() {
    for (event, want) in [
        (
            ServerEvent::QueueWriteFailed,
            "451 4.3.0 Error: queue file write error\r\n",
        ),
        (
            ServerEvent::QueueFull,
            "452 4.3.1 Insufficient system storage\r\n",
        ),
    ] {
        let mut sh = Shell::new(settings(), insider());
        sh.storage_result = Some(event);
        sh.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@relay.example>\r\nDATA\r\nhi\r\n.\r\nRCPT TO:<y@relay.example>\r\n");
        let wire = sh.take_wire();
        // The transaction is gone: the pipelined RCPT finds no MAIL.
        assert!(
            wire.ends_with(&format!("{want}503 5.5.1 Error: need MAIL command\r\n")),
            "{wire}"
        );
    }
    // Input held while the shell stores is run in order once it reports.
    let mut s = ServerSession::new(Arc::new(settings()), insider(), T0);
    s.handle_input(
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@relay.example>\r\nDATA\r\nhi\r\n.\r\nNO",
        T0,
    );
    s.handle_input(b"OP\r\nQUIT\r\n", T0);
    let mut wire = Vec::new();
    while let Some(o) = s.poll_output() {
        if let ServerOutput::Transmit(b) = o {
            wire.extend(b);
        }
    }
    assert!(wire.ends_with(b"354 End data with <CR><LF>.<CR><LF>\r\n"));
    assert_eq!(s.poll_timeout(), None);
    s.handle_event(
        ServerEvent::MessageStored {
            queue_id: "4XyZ".into(),
        },
        T0,
    );
    let mut wire = Vec::new();
    while let Some(o) = s.poll_output() {
        if let ServerOutput::Transmit(b) = o {
            wire.extend(b);
        }
    }
    assert_eq!(
        wire,
        b"250 2.0.0 Ok: queued as 4XyZ\r\n250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n"
    );
}

#[test]
fn input_piling_up_while_storing_ends_the_session() {
    let mut s = ServerSession::new(Arc::new(settings()), insider(), T0);
    let mut input =
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@relay.example>\r\nDATA\r\nhi\r\n.\r\n".to_vec();
    input.extend_from_slice(&[b'n'; MAX_PENDING]);
    s.handle_input(&input[..input.len() - 1], T0);
    assert!(!s.is_closed());
    s.handle_input(b"nn", T0);
    assert!(s.is_closed());
    let outs: Vec<ServerOutput> = core::iter::from_fn(|| s.poll_output()).collect();
    assert_eq!(outs.last(), Some(&ServerOutput::Close));
    assert!(outs.iter().any(|o| matches!(o, ServerOutput::MessageEnd)));
    assert_eq!(s.buffered(), 0);
}

#[test]
fn accepted_recipient_says_which_rule() {
    let mut set = tls_settings(ServerTlsLevel::May, false);
    set.tls_loglevel = 0;
    let mut sh = Shell::new(set, outsider());
    sh.feed(b"STARTTLS\r\n");
    sh.feed(b"EHLO a\r\nMAIL FROM:<>\r\nRCPT TO:<x@far.example>\r\n");
    assert!(sh.logs.contains(
        &"RCPT from unknown[192.0.2.7]: <x@far.example> permitted by permit_tls_clientcerts (item 2 of smtpd_recipient_restrictions)".to_string()
    ));
}

#[test]
fn lost_connection_aborts_the_message() {
    let mut sh = Shell::new(settings(), insider());
    sh.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@relay.example>\r\nDATA\r\nhello");
    sh.event(ServerEvent::ConnectionLost);
    assert!(sh.closed && sh.aborted == 1);
    assert!(sh
        .logs
        .contains(&"lost connection after DATA (5 bytes) from localhost[127.0.0.1]".to_string()));
}

#[test]
fn long_data_lines_pass_through_bounded() {
    let mut sh = Shell::new(settings(), insider());
    sh.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@relay.example>\r\nDATA\r\n");
    let line = vec![b'z'; 50_000];
    for piece in line.chunks(3_000) {
        sh.feed(piece);
        assert!(sh.s().buffered() <= CHUNK_SIZE);
    }
    sh.feed(b"\r\n.\r\n");
    assert_eq!(sh.stored[0].1.len(), 50_002);
}

// ---------------------------------------------------------------------------------------
// Properties

/// Pieces of client input that exercise every path but STARTTLS.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"EHLO laptop\r\n".to_vec()),
        Just(b"HELO x\r\n".to_vec()),
        Just(b"MAIL FROM:<a@b.example>\r\n".to_vec()),
        Just(b"MAIL FROM:<a@b.example> SIZE=999999999\r\n".to_vec()),
        Just(b"RCPT TO:<x@relay.example>\r\n".to_vec()),
        Just(b"RCPT TO:<x@far.example>\r\n".to_vec()),
        Just(b"DATA\r\n".to_vec()),
        Just(b"Subject: hi\r\n".to_vec()),
        Just(b"..dot\r\n".to_vec()),
        Just(b"\r\n.\r\n".to_vec()),
        Just(b"a\n.\r\n".to_vec()),
        Just(b"a\r.\r".to_vec()),
        Just(b"RSET\r\n".to_vec()),
        Just(b"NOOP\r\n".to_vec()),
        Just(b"VRFY <u@x>\r\n".to_vec()),
        Just(b"BOGUS\r\n".to_vec()),
        Just([vec![b'X'; 600], b"\r\n".to_vec()].concat()),
        Just(vec![b'y'; 9000]),
        proptest::collection::vec(any::<u8>(), 0..20),
    ]
}

fn script() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(fragment(), 0..30).prop_map(|v| v.concat())
}

/// Runs `input` cut at the given sizes (cycled); returns every output.
fn outputs_for(input: &[u8], sizes: &[usize], settings: &ServerSettings) -> Vec<ServerOutput> {
    let mut sh = Shell::new(settings.clone(), outsider());
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() && !sh.closed {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        sh.feed(&rest[..n]);
        assert!(
            sh.s().buffered() <= MAX_COMMAND_LINE + MAX_PENDING + CHUNK_SIZE,
            "buffering is bounded"
        );
        rest = &rest[n..];
        i += 1;
    }
    sh.outputs
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_chunking_gives_the_same_outputs(
        input in script(),
        sizes in proptest::collection::vec(1usize..64, 1..8),
        normalize in any::<bool>(),
    ) {
        let mut set = settings();
        set.hard_error_limit = 1000;
        set.message_size_limit = 20_000;
        if normalize {
            set.bare_newline = BareNewline::Normalize;
        }
        let whole = outputs_for(&input, &[usize::MAX], &set);
        let cut = outputs_for(&input, &sizes, &set);
        prop_assert_eq!(whole, cut);
    }

    #[test]
    fn nothing_after_starttls_in_the_same_read_runs(
        prefix in proptest::collection::vec(
            prop_oneof![Just(&b"EHLO a\r\n"[..]), Just(&b"NOOP\r\n"[..]), Just(&b"RSET\r\n"[..])], 0..4),
        split in 0usize..10,
        injected in proptest::collection::vec(
            prop_oneof![
                Just(b"MAIL FROM:<evil@x.example>\r\n".to_vec()),
                Just(b"RCPT TO:<victim@far.example>\r\n".to_vec()),
                Just(b"EHLO evil\r\n".to_vec()),
                Just(b"QUIT\r\n".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..30),
            ], 0..6).prop_map(|v| v.concat()),
    ) {
        let mut sh = Shell::new(tls_settings(ServerTlsLevel::May, false), outsider());
        sh.tls = tls_facts(CertVerdict::Trusted, true);
        let mut head = prefix.concat();
        head.extend_from_slice(b"STARTTLS\r\n");
        let cut = head.len() - 1 - split.min(head.len() - 1);
        sh.feed(&head[..cut]);
        let mut last = head[cut..].to_vec();
        last.extend_from_slice(&injected);
        sh.feed(&last);
        let wire = sh.take_wire();
        prop_assert!(wire.ends_with("220 2.0.0 Ready to start TLS\r\n"), "{}", wire);
        prop_assert_eq!(&sh.discarded, &vec![injected.len()]);
        prop_assert!(!sh.closed);
        // Had the smuggled MAIL run, this RCPT would be accepted.
        sh.feed(b"RCPT TO:<victim@far.example>\r\n");
        prop_assert_eq!(sh.take_wire(), "503 5.5.1 Error: need MAIL command\r\n");
        prop_assert!(sh.stored.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic_or_pile_up(
        input in proptest::collection::vec(
            prop_oneof![
                4 => any::<u8>(),
                1 => Just(b'\r'),
                1 => Just(b'\n'),
                1 => Just(b'.'),
            ], 0..6000),
        sizes in proptest::collection::vec(1usize..2000, 1..6),
        prelude in any::<bool>(),
    ) {
        let mut full = if prelude {
            b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@relay.example>\r\nDATA\r\n".to_vec()
        } else {
            Vec::new()
        };
        full.extend_from_slice(&input);
        let outputs = outputs_for(&full, &sizes, &settings());
        let body: usize = outputs.iter().map(|o| match o {
            ServerOutput::BodyChunk(c) => c.len(),
            _ => 0,
        }).sum();
        // Normalizing doubles at most; rejecting passes nothing on.
        prop_assert!(body <= 2 * full.len());
    }
}

#[test]
fn a_command_dribbled_byte_by_byte_gets_no_more_time() {
    let mut sh = Shell::new(without_slow_client_limits(), outsider());
    sh.now = T0 + Duration::from_secs(10);
    sh.feed(b"N");
    let deadline = sh.now + Duration::from_secs(300);
    for (i, b) in b"OOP".iter().enumerate() {
        sh.now = T0 + Duration::from_secs(100 * (i as u64 + 1));
        sh.feed(&[*b]);
        assert_eq!(
            sh.s().poll_timeout(),
            Some(deadline),
            "byte {i} extended the deadline"
        );
    }
    // The command completes; the next one gets a fresh deadline.
    sh.now = T0 + Duration::from_secs(305);
    sh.feed(b"\r\n");
    sh.now = T0 + Duration::from_secs(306);
    sh.feed(b"N");
    assert_eq!(
        sh.s().poll_timeout(),
        Some(sh.now + Duration::from_secs(300))
    );
}

#[test]
fn data_after_every_recipient_was_refused_says_no_valid_recipients() {
    let mut sh = Shell::new(settings(), outsider());
    sh.script(
        "S: 220 relay.example ESMTP certrelay
         C: EHLO laptop
         S: 250-relay.example
         S: 250-PIPELINING
         S: 250-SIZE 10240000
         S: 250-ENHANCEDSTATUSCODES
         S: 250-8BITMIME
         S: 250 SMTPUTF8
         C: DATA
         S: 503 5.5.1 Error: need RCPT command
         C: MAIL FROM:<me@laptop.example>
         S: 250 2.1.0 Ok
         C: DATA
         S: 503 5.5.1 Error: need RCPT command
         C: RCPT TO:<you@far.example>
         S: 554 5.7.1 <you@far.example>: Relay access denied
         C: DATA
         S: 554 5.5.1 Error: no valid recipients",
    );
}

#[test]
fn each_accepted_recipient_names_its_own_rule() {
    // Rules alternate between recipients: the log text of one must never leak into the next.
    let recipients = [
        "you@far.example",
        "Postmaster",
        "u@relay.example",
        "me@far.example",
        "postmaster@relay.example",
        "them@far.example",
    ];
    let mut sh = Shell::new(settings(), insider());
    sh.feed(b"EHLO a\r\nMAIL FROM:<a@b.example>\r\n");
    for rcpt in recipients {
        sh.feed(format!("RCPT TO:<{rcpt}>\r\n").as_bytes());
    }
    let settings = settings();
    let peer = insider();
    let mut rules = alloc::collections::BTreeSet::new();
    for rcpt in recipients {
        let (path, _) = crate::address::parse_path(&format!("<{rcpt}>")).unwrap();
        let facts = crate::policy::RcptFacts {
            client: &peer,
            tls: None,
            recipient: &path,
            sender: &crate::address::Path::null(),
        };
        let rule = crate::policy::check_recipient(&settings, &facts)
            .decided_by
            .to_string();
        let want = format!("RCPT from localhost[127.0.0.1]: <{path}> permitted by {rule}");
        assert!(sh.logs.contains(&want), "{want} not in {:?}", sh.logs);
        rules.insert(rule);
    }
    assert!(rules.len() >= 2, "{rules:?}");
}

// ---------------------------------------------------------------------------------------
// Local domains and hops

/// relay.example is local; `virtual_alias_maps` sends some of its users elsewhere.
fn local_settings() -> ServerSettings {
    let (aliases, _) = crate::table::Table::parse(
        "virtual",
        "root@relay.example  admin@example.org\n\
         postmaster          admin@example.org, ops@example.org\n\
         back@relay.example  nobody@relay.example\n\
         loop1@relay.example loop2@relay.example\n\
         loop2@relay.example loop1@relay.example\n\
         bob@far.example     robert@elsewhere.example\n",
    );
    ServerSettings {
        mydestination: vec!["relay.example".into(), "localhost".into()],
        relay_domains: Vec::new(),
        virtual_alias_maps: vec![aliases],
        refuse_local_recipients: true,
        ..settings()
    }
}

#[test]
fn local_recipients_without_an_alias_are_refused_at_rcpt() {
    // An outsider, no certificate: what used to be accepted and then bounced or looped.
    let mut sh = Shell::new(local_settings(), outsider());
    sh.script(
        "S: 220 relay.example ESMTP certrelay
         C: HELO outside
         S: 250 relay.example
         C: MAIL FROM:<forged@victim.example>
         S: 250 2.1.0 Ok
         C: RCPT TO:<zzz@relay.example>
         S: 550 5.1.1 <zzz@relay.example>: Recipient address rejected: User unknown in local recipient table
         C: RCPT TO:<root@localhost>
         S: 550 5.1.1 <root@localhost>: Recipient address rejected: User unknown in local recipient table
         C: RCPT TO:<daemon>
         S: 550 5.1.1 <daemon>: Recipient address rejected: User unknown in local recipient table
         C: RCPT TO:<back@relay.example>
         S: 550 5.1.1 <back@relay.example>: Recipient address rejected: User unknown in local recipient table
         C: RCPT TO:<loop1@relay.example>
         S: 451 4.3.0 <loop1@relay.example>: Temporary lookup failure
         C: DATA
         S: 554 5.5.1 Error: no valid recipients",
    );
    assert!(sh.logs.contains(
        &"NOQUEUE: reject: RCPT from unknown[192.0.2.7]: 550 5.1.1 <zzz@relay.example>: Recipient address rejected: User unknown in local recipient table; from=<forged@victim.example> to=<zzz@relay.example> proto=SMTP helo=<outside>".to_string()
    ), "{:?}", sh.logs);
    assert!(sh.logs.iter().any(|l| l.contains("<back@relay.example> refused: virtual_alias_maps sends it to local address <nobody@relay.example>")));
    assert!(sh
        .logs
        .iter()
        .any(|l| l.contains("virtual_alias_maps loop")));
    // Without an alias, postmaster is refused too.
    let mut set = local_settings();
    set.virtual_alias_maps = Vec::new();
    let mut sh = Shell::new(set, outsider());
    sh.feed(
        b"HELO x\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nRCPT TO:<Postmaster@relay.example>\r\n",
    );
    let wire = sh.take_wire();
    assert!(wire.ends_with(
        "550 5.1.1 <postmaster>: Recipient address rejected: User unknown in local recipient table\r\n\
         550 5.1.1 <Postmaster@relay.example>: Recipient address rejected: User unknown in local recipient table\r\n"
    ), "{wire}");
}

#[test]
fn aliases_rewrite_the_stored_recipients() {
    let mut sh = Shell::new(local_settings(), outsider());
    sh.script(
        "S: 220 relay.example ESMTP certrelay
         C: EHLO outside
         C: MAIL FROM:<someone@example.net>
         C: RCPT TO:<root@relay.example>
         C: RCPT TO:<postmaster>
         C: DATA
         S: 250-relay.example
         S: 250-PIPELINING
         S: 250-SIZE 10240000
         S: 250-ENHANCEDSTATUSCODES
         S: 250-8BITMIME
         S: 250 SMTPUTF8
         S: 250 2.1.0 Ok
         S: 250 2.1.5 Ok
         S: 250 2.1.5 Ok
         S: 354 End data with <CR><LF>.<CR><LF>
         C: hi
         C: .
         S: 250 2.0.0 Ok: queued as Q1",
    );
    let rcpts: Vec<String> = sh.stored[0]
        .0
        .recipients
        .iter()
        .map(ToString::to_string)
        .collect();
    // root and postmaster both lead to the admin: stored once.
    assert_eq!(rcpts, ["admin@example.org", "ops@example.org"]);
    assert!(sh.logs.contains(
        &"RCPT from unknown[192.0.2.7]: <postmaster> rewritten by virtual_alias_maps to <admin@example.org>, <ops@example.org>".to_string()
    ), "{:?}", sh.logs);
    // A domain that is not ours is rewritten too, once the lists let it through.
    let mut sh = Shell::new(local_settings(), insider());
    sh.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<bob@far.example>\r\nRCPT TO:<carol@far.example>\r\nDATA\r\nx\r\n.\r\n");
    let rcpts: Vec<String> = sh.stored[0]
        .0
        .recipients
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(rcpts, ["robert@elsewhere.example", "carol@far.example"]);
    // ...but not an outsider's relay attempt: the lists refuse it first.
    let mut sh = Shell::new(local_settings(), outsider());
    sh.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<bob@far.example>\r\n");
    assert!(sh
        .take_wire()
        .ends_with("554 5.7.1 <bob@far.example>: Relay access denied\r\n"));
}

fn hop_message(hops: u32) -> Vec<u8> {
    let mut m = b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@relay.example>\r\nDATA\r\n".to_vec();
    for i in 0..hops {
        let name = if i % 2 == 0 {
            "Received"
        } else {
            "Delivered-To"
        };
        m.extend_from_slice(format!("{name}: hop {i}\r\n").as_bytes());
    }
    m.extend_from_slice(b"Subject: s\r\n\r\nReceived: in the body\r\n.\r\n");
    m
}

#[test]
fn too_many_hops_is_refused_at_end_of_data() {
    let mut set = settings();
    set.hopcount_limit = 5;
    // Four in the header and ours make five: within the limit.
    let mut sh = Shell::new(set.clone(), insider());
    sh.feed(&hop_message(4));
    assert!(sh.take_wire().ends_with("250 2.0.0 Ok: queued as Q1\r\n"));
    // Five and ours: over it. The message is dropped, the session goes on.
    let mut sh = Shell::new(set, insider());
    sh.feed(&hop_message(5));
    sh.feed(b"NOOP\r\n");
    assert!(sh.take_wire().ends_with(
        "354 End data with <CR><LF>.<CR><LF>\r\n554 5.4.0 Error: too many hops\r\n250 2.0.0 Ok\r\n"
    ));
    assert_eq!((sh.stored.len(), sh.aborted), (0, 1));
    assert!(
        sh.logs.iter().any(|l| {
            l.starts_with(
        "NOQUEUE: reject: END-OF-MESSAGE from localhost[127.0.0.1]: 554 5.4.0 Error: too many hops"
    )
        }),
        "{:?}",
        sh.logs
    );
    // The default is Postfix's 50.
    let mut sh = Shell::new(settings(), insider());
    sh.feed(&hop_message(49));
    assert!(sh.take_wire().ends_with("queued as Q1\r\n"));
    let mut sh = Shell::new(settings(), insider());
    sh.feed(&hop_message(50));
    assert!(sh
        .take_wire()
        .ends_with("554 5.4.0 Error: too many hops\r\n"));
}

#[test]
fn smtputf8_transaction_with_utf8_addresses() {
    let mut sh = Shell::new(settings(), insider());
    sh.script(
        "S: 220 relay.example ESMTP certrelay
         C: EHLO laptop.example
         S: 250-relay.example
         S: 250-PIPELINING
         S: 250-SIZE 10240000
         S: 250-ENHANCEDSTATUSCODES
         S: 250-8BITMIME
         S: 250 SMTPUTF8
         C: MAIL FROM:<josé@exemple.fr>
         S: 553 5.6.7 Must declare SMTPUTF8 to send unicode address
         C: MAIL FROM:<a@exemplé.fr>
         S: 501 5.1.7 Bad sender address syntax
         C: MAIL FROM:<a@b.example>
         C: RCPT TO:<josé@exemple.fr>
         C: RCPT TO:<a@exemplé.fr>
         C: RSET
         S: 250 2.1.0 Ok
         S: 553 5.6.7 Must declare SMTPUTF8 to send unicode address
         S: 501 5.1.3 Bad recipient address syntax
         S: 250 2.0.0 Ok
         C: MAIL FROM:<josé@exemple.fr> SMTPUTF8
         C: RCPT TO:<chloé@exemplé.fr>
         C: DATA
         S: 250 2.1.0 Ok
         S: 250 2.1.5 Ok
         S: 354 End data with <CR><LF>.<CR><LF>
         C: Subject: café
         C:
         C: voilà
         C: .
         S: 250 2.0.0 Ok: queued as Q1",
    );
    let (env, body) = &sh.stored[0];
    assert!(env.smtputf8);
    assert_eq!(env.sender.to_string(), "josé@exemple.fr");
    assert_eq!(env.recipients[0].to_string(), "chloé@exemplé.fr");
    assert_eq!(body, "Subject: café\r\n\r\nvoilà\r\n".as_bytes());
    // RFC 6531's protocol name, as Postfix writes it.
    assert_eq!(env.protocol, "UTF8SMTP");
    assert!(env
        .received
        .render(Some("Q1"), "D")
        .contains(" with UTF8SMTP id Q1"));
    // An ASCII transaction without SMTPUTF8 is remembered as such.
    sh.script(
        "C: MAIL FROM:<a@b.example>
         C: RCPT TO:<c@d.example>
         C: DATA
         S: 250 2.1.0 Ok
         S: 250 2.1.5 Ok
         S: 354 End data with <CR><LF>.<CR><LF>
         C: Subject: café
         C:
         C: .
         S: 250 2.0.0 Ok: queued as Q2",
    );
    assert!(!sh.stored[1].0.smtputf8);
    assert_eq!(sh.stored[1].0.protocol, "ESMTP");
}

#[test]
fn malformed_utf8_command_lines_are_refused() {
    let mut sh = Shell::new(settings(), insider());
    sh.script("S: 220 relay.example ESMTP certrelay");
    let bad: &[&[u8]] = &[
        b"MAIL FROM:<a\xff@b.example> SMTPUTF8\r\n",
        // Truncated sequence, overlong '/', a UTF-16 surrogate, past U+10FFFF.
        b"MAIL FROM:<a\xc3(@b.example> SMTPUTF8\r\n",
        b"MAIL FROM:<a\xc0\xaf@b.example> SMTPUTF8\r\n",
        b"MAIL FROM:<\xed\xa0\x80@b.example> SMTPUTF8\r\n",
        b"MAIL FROM:<\xf4\x90\x80\x80@b.example> SMTPUTF8\r\n",
        b"NOOP \xff\r\n",
        b"XYZZY \xfe\r\n",
    ];
    for line in bad {
        sh.feed(line);
        assert_eq!(
            sh.take_wire(),
            "500 5.5.2 Error: bad UTF-8 syntax\r\n",
            "{line:?}"
        );
    }
    // The session goes on: a good MAIL is accepted afterwards.
    sh.script(
        "C: EHLO laptop.example
         S: 250-relay.example
         S: 250-PIPELINING
         S: 250-SIZE 10240000
         S: 250-ENHANCEDSTATUSCODES
         S: 250-8BITMIME
         S: 250 SMTPUTF8
         C: MAIL FROM:<zoë@b.example> SMTPUTF8
         S: 250 2.1.0 Ok",
    );
}

#[test]
fn smtputf8_disabled_is_an_unknown_option() {
    let mut set = settings();
    set.smtputf8_enable = false;
    let mut sh = Shell::new(set, insider());
    sh.script(
        "S: 220 relay.example ESMTP certrelay
         C: EHLO laptop.example
         S: 250-relay.example
         S: 250-PIPELINING
         S: 250-SIZE 10240000
         S: 250-ENHANCEDSTATUSCODES
         S: 250 8BITMIME
         C: MAIL FROM:<a@b.example> SMTPUTF8
         S: 555 5.5.4 Unsupported option: SMTPUTF8
         C: MAIL FROM:<josé@exemple.fr>
         S: 501 5.1.7 Bad sender address syntax",
    );
    // Without SMTPUTF8 the line is not checked as UTF-8 (Postfix neither), and the
    // mangled address is still refused.
    sh.feed(b"MAIL FROM:<a\xff@b.example>\r\n");
    assert_eq!(sh.take_wire(), "501 5.1.7 Bad sender address syntax\r\n");
}
