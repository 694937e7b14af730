//! The core's SMTP client against the core's SMTP server: no socket, simulated time.
//!
//! A small driver plays both shells: it moves bytes between the sessions in chunks of a
//! chosen size, performs a pretend TLS handshake when both sides ask for it, stores what
//! the server accepts, and advances a simulated clock to the next deadline when both sides
//! wait. Whole dialogues (STARTTLS, relay decisions, timeouts) are checked end to end.

use certrelay_core::client::{
    ClientEvent, ClientOutput, ClientSession, ClientTlsHandshake, Closing, DeliveryStatus,
    Envelope as ClientEnvelope, MessageReport, ServerCertVerdict, ServerPeer,
};
use certrelay_core::facts::{CertVerdict, ClientCert, PeerInfo, TlsFacts};
use certrelay_core::fingerprint::CertMatch;
use certrelay_core::fingerprint::DigestKind;
use certrelay_core::server::{ServerEvent, ServerOutput, ServerSession, ServerTlsHandshake};
use certrelay_core::settings::{ClientSettings, ServerSettings, ServerTlsLevel};
use certrelay_core::tls_policy::TlsLevel;
use certrelay_core::Instant;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

#[allow(clippy::large_enum_variant)] // one per test; boxing would only add noise
enum Server {
    Plain(ServerSession),
    Handshaking(ServerTlsHandshake),
    Gone,
}

enum Client {
    Plain(ClientSession),
    Handshaking(ClientTlsHandshake),
    Gone,
}

/// What one run of the pair produced.
#[derive(Debug, Default, PartialEq)]
struct Transcript {
    /// Messages the server stored: (sender, recipients, body).
    stored: Vec<(String, Vec<String>, Vec<u8>)>,
    /// The client's per-message reports.
    reports: Vec<MessageReport>,
    /// How the client's connection ended.
    closing: Option<Closing>,
    /// Server log lines.
    server_log: Vec<String>,
    /// Simulated time at the end, in ms.
    end: u64,
}

struct Pair {
    server: Server,
    client: Client,
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    chunk: usize,
    now: Instant,
    outbox: Vec<(ClientEnvelope, Vec<u8>)>,
    body_left: Option<Vec<u8>>,
    storing: Option<(String, Vec<String>, Vec<u8>)>,
    client_cert: ClientCert,
    t: Transcript,
    client_wants_tls: bool,
    server_wants_tls: bool,
    quit_when_idle: bool,
}

fn peer() -> PeerInfo {
    PeerInfo {
        addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        name: "laptop.test".into(),
    }
}

fn server_settings() -> Arc<ServerSettings> {
    Arc::new(ServerSettings {
        myhostname: "relay.test".into(),
        banner: "relay.test ESMTP certrelay".into(),
        tls_level: ServerTlsLevel::May,
        ask_ccert: true,
        tls_loglevel: 1,
        ..ServerSettings::default()
    })
}

fn client_settings(level: TlsLevel) -> ClientSettings {
    ClientSettings {
        helo_name: "laptop.test".into(),
        tls_level: level,
        ..ClientSettings::default()
    }
}

fn listed() -> ClientCert {
    ClientCert {
        verdict: CertVerdict::Trusted,
        listed: Some(CertMatch {
            label: "laptop".into(),
            digest: DigestKind::Md5,
            public_key: false,
        }),
        subject_cn: Some("laptop".into()),
        issuer_cn: Some("Test CA".into()),
    }
}

fn unlisted() -> ClientCert {
    ClientCert {
        listed: None,
        ..listed()
    }
}

impl Pair {
    fn new(level: TlsLevel, client_cert: ClientCert, chunk: usize) -> Pair {
        let now = Instant::from_millis(0);
        let server = ServerSession::new(server_settings(), peer(), now);
        let client = ClientSession::new(
            client_settings(level),
            ServerPeer {
                name: "relay.test".into(),
                addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            },
            now,
        );
        Pair {
            server: Server::Plain(server),
            client: Client::Plain(client),
            to_server: Vec::new(),
            to_client: Vec::new(),
            chunk: chunk.max(1),
            now,
            outbox: Vec::new(),
            body_left: None,
            storing: None,
            client_cert,
            t: Transcript::default(),
            client_wants_tls: false,
            server_wants_tls: false,
            quit_when_idle: true,
        }
    }

    fn send(&mut self, sender: &str, rcpts: &[&str], body: &[u8]) {
        let env = ClientEnvelope {
            sender: sender.into(),
            recipients: rcpts.iter().map(|r| r.to_string()).collect(),
            body_size: Some(body.len() as u64),
            eight_bit: false,
            smtputf8: false,
            utf8_header: false,
        };
        self.outbox.push((env, body.to_vec()));
    }

    /// Runs until both sides are gone, or `limit_ms` of simulated time passed.
    fn run(mut self, limit_ms: u64) -> Transcript {
        for _ in 0..100_000 {
            let mut progress = self.drain_server();
            progress |= self.drain_client();
            progress |= self.tls_handover();
            progress |= self.deliver_bytes();
            if matches!((&self.server, &self.client), (Server::Gone, Client::Gone)) {
                break;
            }
            if !progress && !self.advance_clock(limit_ms) {
                break;
            }
        }
        self.t.end = self.now.as_millis();
        self.t
    }

    fn drain_server(&mut self) -> bool {
        let Server::Plain(s) = &mut self.server else {
            return false;
        };
        let mut progress = false;
        let mut stored = false;
        let mut close = false;
        while let Some(out) = s.poll_output() {
            progress = true;
            match out {
                ServerOutput::Transmit(b) => self.to_client.extend_from_slice(&b),
                ServerOutput::StartTls => self.server_wants_tls = true,
                ServerOutput::MessageBegin(env) => {
                    let rcpts = env.recipients.iter().map(|r| r.to_string()).collect();
                    self.storing = Some((env.sender.to_string(), rcpts, Vec::new()));
                }
                ServerOutput::BodyChunk(c) => {
                    self.storing.as_mut().unwrap().2.extend_from_slice(&c)
                }
                ServerOutput::MessageEnd => stored = true,
                ServerOutput::MessageAbort => self.storing = None,
                ServerOutput::Log(l) => self.t.server_log.push(l.text),
                ServerOutput::Close => close = true,
                // No transcript enrolls (settings.enroll is off).
                ServerOutput::Enroll(_) => {}
            }
        }
        if stored {
            self.t.stored.push(self.storing.take().unwrap());
            let id = format!("Q{}", self.t.stored.len());
            s.handle_event(ServerEvent::MessageStored { queue_id: id }, self.now);
        }
        if close {
            self.server = Server::Gone;
        }
        progress
    }

    fn drain_client(&mut self) -> bool {
        let Client::Plain(c) = &mut self.client else {
            return false;
        };
        let mut progress = false;
        while let Some(out) = c.poll_output() {
            progress = true;
            match out {
                ClientOutput::Transmit(b) => self.to_server.extend_from_slice(&b),
                ClientOutput::StartTls => self.client_wants_tls = true,
                ClientOutput::Ready => {
                    if self.outbox.is_empty() {
                        if self.quit_when_idle {
                            c.quit(self.now).expect("quit");
                        }
                    } else {
                        let (env, body) = self.outbox.remove(0);
                        self.body_left = Some(body);
                        c.send_message(env, self.now).expect("send");
                    }
                }
                ClientOutput::NeedBody => {
                    let body = self.body_left.as_mut().expect("body");
                    if body.is_empty() {
                        c.handle_event(ClientEvent::BodyEnd, self.now);
                    } else {
                        let n = body.len().min(7);
                        let piece: Vec<u8> = body.drain(..n).collect();
                        c.handle_event(ClientEvent::Body(&piece), self.now);
                    }
                }
                ClientOutput::MessageDone(r) => self.t.reports.push(r),
                ClientOutput::Close(closing) => {
                    self.t.closing = Some(closing);
                    self.client = Client::Gone;
                    return true;
                }
            }
        }
        progress
    }

    /// Both sides asked for TLS: pretend the handshake succeeded.
    fn tls_handover(&mut self) -> bool {
        let mut progress = false;
        if self.server_wants_tls && matches!(self.server, Server::Plain(_)) {
            if let Server::Plain(s) = std::mem::replace(&mut self.server, Server::Gone) {
                self.server = match s.start_tls() {
                    Ok(h) => {
                        // Plaintext still arriving belongs to no TLS stream.
                        self.to_server.clear();
                        Server::Handshaking(h)
                    }
                    Err(s) => Server::Plain(s),
                };
                progress = matches!(self.server, Server::Handshaking(_));
            }
        }
        if self.client_wants_tls && matches!(self.client, Client::Plain(_)) {
            if let Client::Plain(c) = std::mem::replace(&mut self.client, Client::Gone) {
                self.client = match c.start_tls() {
                    Ok(h) => {
                        // Plaintext still arriving belongs to no TLS stream.
                        self.to_client.clear();
                        Client::Handshaking(h)
                    }
                    Err(c) => Client::Plain(c),
                };
                progress = matches!(self.client, Client::Handshaking(_));
            }
        }
        if matches!(
            (&self.server, &self.client),
            (Server::Handshaking(_), Client::Handshaking(_))
        ) {
            let Server::Handshaking(h) = std::mem::replace(&mut self.server, Server::Gone) else {
                unreachable!()
            };
            let Client::Handshaking(ch) = std::mem::replace(&mut self.client, Client::Gone) else {
                unreachable!()
            };
            let facts = TlsFacts {
                protocol: "TLSv1.3".into(),
                cipher: "TLS_AES_256_GCM_SHA384".into(),
                bits: 256,
                resumed: false,
                client_cert: self.client_cert.clone(),
            };
            self.server = Server::Plain(h.established(facts, self.now));
            self.client = Client::Plain(ch.established(ServerCertVerdict::Verified, self.now));
            self.server_wants_tls = false;
            self.client_wants_tls = false;
            progress = true;
        }
        progress
    }

    fn deliver_bytes(&mut self) -> bool {
        let mut progress = false;
        if let Server::Plain(s) = &mut self.server {
            if !self.to_server.is_empty() && s.wants_read() {
                let n = self.to_server.len().min(self.chunk);
                let piece: Vec<u8> = self.to_server.drain(..n).collect();
                s.handle_input(&piece, self.now);
                progress = true;
            }
        }
        if let Client::Plain(c) = &mut self.client {
            if !self.to_client.is_empty() {
                let n = self.to_client.len().min(self.chunk);
                let piece: Vec<u8> = self.to_client.drain(..n).collect();
                c.handle_input(&piece, self.now);
                progress = true;
            }
        }
        // A side that left closes the connection for the other.
        if matches!(self.server, Server::Gone) && self.to_client.is_empty() {
            if let Client::Plain(c) = &mut self.client {
                c.handle_event(ClientEvent::ConnectionLost, self.now);
                progress = true;
            }
        }
        if matches!(self.client, Client::Gone) && self.to_server.is_empty() {
            if let Server::Plain(s) = &mut self.server {
                s.handle_event(ServerEvent::ConnectionLost, self.now);
                progress = true;
            }
        }
        progress
    }

    /// Jumps to the earliest deadline and fires it; false when there is none.
    fn advance_clock(&mut self, limit_ms: u64) -> bool {
        let s_deadline = match &self.server {
            Server::Plain(s) => s.poll_timeout(),
            _ => None,
        };
        let c_deadline = match &self.client {
            Client::Plain(c) => c.poll_timeout(),
            _ => None,
        };
        let Some(next) = [s_deadline, c_deadline].into_iter().flatten().min() else {
            return false;
        };
        if next.as_millis() > limit_ms {
            return false;
        }
        self.now = self.now.max(next);
        if let Server::Plain(s) = &mut self.server {
            if s_deadline.is_some_and(|d| d <= self.now) {
                s.handle_timeout(self.now);
            }
        }
        if let Client::Plain(c) = &mut self.client {
            if c_deadline.is_some_and(|d| d <= self.now) {
                c.handle_timeout(self.now);
            }
        }
        true
    }
}

const BODY: &[u8] =
    b"Subject: hello\r\n\r\n.leading dot\r\n..two dots\r\nlast line without newline";

fn sent_body() -> Vec<u8> {
    // What arrives: the same lines, CR LF added at the end.
    let mut b = BODY.to_vec();
    b.extend_from_slice(b"\r\n");
    b
}

#[test]
fn listed_certificate_relays_over_starttls() {
    let mut pair = Pair::new(TlsLevel::Verify, listed(), 64);
    pair.send("me@laptop.test", &["friend@elsewhere.example"], BODY);
    let t = pair.run(3_600_000);
    assert_eq!(t.stored.len(), 1, "{:?}", t.server_log);
    let (sender, rcpts, body) = &t.stored[0];
    assert_eq!(sender, "me@laptop.test");
    assert_eq!(rcpts, &["friend@elsewhere.example"]);
    assert_eq!(body, &sent_body());
    let outcome = &t.reports[0].recipients[0].outcome;
    assert_eq!(outcome.status, DeliveryStatus::Sent);
    assert_eq!(outcome.dsn, "2.0.0");
    assert!(
        outcome.reason.contains("queued as Q1"),
        "{}",
        outcome.reason
    );
    assert_eq!(t.closing, Some(Closing::Done));
    assert!(
        t.server_log
            .iter()
            .any(|l| l
                .starts_with("Trusted TLS connection established from laptop.test[192.0.2.10]")),
        "{:?}",
        t.server_log
    );
    assert_eq!(t.end, 0, "no timer should have fired");
}

#[test]
fn unlisted_certificate_is_refused_relay_and_bounces() {
    let mut pair = Pair::new(TlsLevel::Verify, unlisted(), 64);
    pair.send("me@laptop.test", &["friend@elsewhere.example"], BODY);
    let t = pair.run(3_600_000);
    assert!(t.stored.is_empty());
    let outcome = &t.reports[0].recipients[0].outcome;
    assert_eq!(outcome.status, DeliveryStatus::Bounced);
    assert_eq!(outcome.dsn, "5.7.1");
    assert!(
        outcome
            .reason
            .contains("<friend@elsewhere.example>: Relay access denied"),
        "{}",
        outcome.reason
    );
    let expected = "NOQUEUE: reject: RCPT from laptop.test[192.0.2.10]: 554 5.7.1 \
        <friend@elsewhere.example>: Relay access denied; from=<me@laptop.test> \
        to=<friend@elsewhere.example> proto=ESMTP helo=<laptop.test>";
    assert!(
        t.server_log.iter().any(|l| l == expected),
        "{:?}",
        t.server_log
    );
}

#[test]
fn tls_level_none_never_starts_tls_and_is_refused_relay() {
    let mut pair = Pair::new(TlsLevel::None, listed(), 64);
    pair.send("me@laptop.test", &["friend@elsewhere.example"], BODY);
    let t = pair.run(3_600_000);
    assert!(t.stored.is_empty());
    assert_eq!(
        t.reports[0].recipients[0].outcome.status,
        DeliveryStatus::Bounced
    );
    assert!(!t
        .server_log
        .iter()
        .any(|l| l.contains("TLS connection established")));
}

#[test]
fn several_messages_share_one_connection() {
    let mut pair = Pair::new(TlsLevel::Encrypt, listed(), 1024);
    for i in 0..3 {
        pair.send(
            "me@laptop.test",
            &[&format!("r{i}@elsewhere.example")],
            BODY,
        );
    }
    let t = pair.run(3_600_000);
    assert_eq!(t.stored.len(), 3);
    assert_eq!(t.reports.len(), 3);
    let connects = t
        .server_log
        .iter()
        .filter(|l| l.starts_with("connect from"))
        .count();
    assert_eq!(connects, 1, "{:?}", t.server_log);
}

#[test]
fn idle_client_is_dropped_by_the_server_timeout_on_simulated_time() {
    let mut pair = Pair::new(TlsLevel::May, listed(), 64);
    pair.quit_when_idle = false;
    let t = pair.run(24 * 3_600_000);
    // smtpd_timeout is 300 s by default: the server gives up first, and the client sees the
    // connection go between messages, which is not a failure of any message.
    assert_eq!(t.end, 300_000, "{:?}", t.server_log);
    assert!(
        matches!(t.closing, Some(Closing::Dropped(_))),
        "{:?}",
        t.closing
    );
    assert!(
        t.server_log.iter().any(|l| l.contains("timeout")),
        "{:?}",
        t.server_log
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// However the network splits the bytes, the dialogue ends the same way.
    #[test]
    fn any_chunking_gives_the_same_transcript(
        chunk in 1usize..200,
        lines in proptest::collection::vec("[ -~]{0,80}", 0..8),
    ) {
        let mut body = b"Subject: x\r\n\r\n".to_vec();
        for l in &lines {
            body.extend_from_slice(l.as_bytes());
            body.extend_from_slice(b"\r\n");
        }
        let run = |chunk: usize| {
            let mut pair = Pair::new(TlsLevel::Verify, listed(), chunk);
            pair.send("me@laptop.test", &["a@elsewhere.example", "b@elsewhere.example"], &body);
            pair.run(3_600_000)
        };
        let whole = run(usize::MAX);
        let split = run(chunk);
        prop_assert_eq!(&whole.stored, &split.stored);
        prop_assert_eq!(&whole.reports, &split.reports);
        prop_assert_eq!(&whole.stored[0].2, &body);
    }
}
