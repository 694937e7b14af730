//! Submission ports end to end: a relay listener in wrapper mode (`smtpd_tls_wrappermode`,
//! Postfix's `smtps` line: TLS from the first byte), a laptop speaking implicit TLS to it
//! (`smtp_tls_wrappermode`, port 465 entries), and a `relayhost` list tried in order with
//! the entry that last worked remembered in the laptop's queue directory. Real binaries,
//! loopback, real TLS; every wait is bounded.

use certrelay_core::cert::{parse_certificates, parse_private_key};
use certrelay_core::fingerprint::{DigestKind, Fingerprint};
use certrelay_testkit::daemon::Daemon;
use certrelay_testkit::pki::{Ca, Issued};
use certrelay_testkit::sink::{Sink, SinkOptions};
use certrelay_testkit::{binary, free_port, wait_until, TempDir};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Certificates and the relay.

struct Pki {
    ca: Ca,
    relay: Issued,
    laptop: Issued,
    stranger: Issued,
}

impl Pki {
    fn new() -> Pki {
        let ca = Ca::new("Test CA");
        let relay = ca.issue("relay.test", &["127.0.0.1", "relay.test"], false);
        let laptop = ca.issue("laptop", &[], true);
        let stranger = ca.issue("stranger", &[], true);
        Pki {
            ca,
            relay,
            laptop,
            stranger,
        }
    }
}

/// A relay directory listing `pki.laptop` only, forwarding to `sink_port`, with one
/// listener per entry of `listeners` (its `-o` options); `extra` ends main.cf.
fn relay_dir(pki: &Pki, sink_port: u16, extra: &str, listeners: &[&str]) -> (TempDir, Vec<u16>) {
    let dir = TempDir::new("submission-relay");
    let d = dir.path().display().to_string();
    dir.write("relay.pem", &pki.relay.cert_pem);
    dir.write("relay.key", &pki.relay.key_pem);
    dir.write("ca.pem", &pki.ca.cert_pem);
    dir.write(
        "relay_clientcerts",
        &format!(
            "{} laptop\n",
            Fingerprint::of(DigestKind::Md5, &pki.laptop.der)
        ),
    );
    dir.write(
        "main.cf",
        &format!(
            "myhostname = relay.test\nmail_owner = nobody\nsmtpd_peername_lookup = no\n\
             mydestination = relay.test\nmynetworks = 192.0.2.0/24\n\
             relayhost = [127.0.0.1]:{sink_port}\nqueue_directory = {d}/spool\n\
             smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {d}/relay.pem\n\
             smtpd_tls_key_file = {d}/relay.key\nsmtpd_tls_CAfile = {d}/ca.pem\n\
             smtpd_tls_ask_ccert = yes\nsmtpd_tls_loglevel = 1\n\
             smtpd_tls_received_header = yes\n\
             relay_clientcerts = hash:{d}/relay_clientcerts\n{extra}"
        ),
    );
    let mut master = String::new();
    let mut ports = Vec::new();
    for opts in listeners {
        let port = free_port();
        ports.push(port);
        master.push_str(&format!("127.0.0.1:{port} inet n - n - - smtpd\n"));
        for o in opts.split_whitespace() {
            master.push_str(&format!("  -o {o}\n"));
        }
    }
    dir.write("master.cf", &master);
    (dir, ports)
}

fn start_relay(dir: &TempDir) -> Daemon {
    Daemon::start(
        &binary("certrelayd"),
        &["-c", dir.path().to_str().unwrap()],
        "daemon started",
    )
}

// ---------------------------------------------------------------------------------------
// A blocking client that speaks TLS from the first byte.

struct Implicit {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    pending: Vec<u8>,
}

impl Implicit {
    fn connect(port: u16, ca_pem: &str, client: &Issued) -> Implicit {
        let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for der in parse_certificates(ca_pem.as_bytes()).unwrap() {
            roots.add(der).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                parse_certificates(client.cert_pem.as_bytes()).unwrap(),
                parse_private_key(client.key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("relay.test").unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).expect("handshake");
        }
        Implicit {
            tls,
            pending: Vec::new(),
        }
    }

    fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.pending.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.pending.drain(..i + 2).collect();
                return String::from_utf8_lossy(&line[..i]).into_owned();
            }
            let mut buf = [0u8; 4096];
            match self.tls.read(&mut buf) {
                Ok(0) | Err(_) => return String::new(),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            let last = line.len() < 4 || line.as_bytes()[3] != b'-';
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        self.tls
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.tls.flush().unwrap();
        self.reply()
    }
}

/// Everything a plaintext client gets from `port` after sending `bytes`, until the server
/// closes (or the read times out, which fails the test).
fn plaintext_exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    if !bytes.is_empty() {
        tcp.write_all(bytes).unwrap();
    }
    let mut got = Vec::new();
    match tcp.read_to_end(&mut got) {
        Ok(_) => got,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => got,
        Err(e) => panic!("the relay did not close the connection: {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// The relay's wrapper-mode listener.

#[test]
fn wrappermode_listener_greets_inside_tls_and_relays_for_a_listed_certificate() {
    let pki = Pki::new();
    let sink = Sink::start(SinkOptions::default());
    let (dir, ports) = relay_dir(&pki, sink.port(), "", &["smtpd_tls_wrappermode=yes"]);
    let relay = start_relay(&dir);
    let mut s = Implicit::connect(ports[0], &pki.ca.cert_pem, &pki.laptop);
    let banner = s.reply();
    assert!(banner.starts_with("220 relay.test"), "{banner}");
    let ehlo = s.cmd("EHLO laptop.test");
    assert!(ehlo.starts_with("250-relay.test"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(s.cmd("STARTTLS"), "554 5.5.1 Error: TLS already active");
    assert!(s.cmd("MAIL FROM:<bob@laptop.test>").starts_with("250"));
    assert!(s
        .cmd("RCPT TO:<friend@elsewhere.example>")
        .starts_with("250"));
    assert!(s.cmd("DATA").starts_with("354"));
    let queued = s.cmd("Subject: over 465\r\n\r\nhello\r\n.");
    assert!(queued.starts_with("250 2.0.0 Ok: queued as"), "{queued}");
    let got = wait_until("the sink to receive the message", || sink.messages().pop());
    let wire = got.wire();
    assert!(
        wire.contains("by relay.test (certrelay) with ESMTPS"),
        "{wire}"
    );
    assert!(wire.contains("(Client CN \"laptop\""), "{wire}");
    relay.wait_log("Trusted TLS connection established from unknown[127.0.0.1]");
    // `certrelayd status` names the listener's TLS as wrapper mode.
    let listed = wait_until("status to list the wrapper-mode listener", || {
        let out = certrelay_testkit::certrelayd(dir.path(), &["status"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains(&format!("127.0.0.1:{}", ports[0]))
            .then_some(text)
    });
    assert!(listed.contains("tls-wrapper"), "{listed}");
}

#[test]
fn wrappermode_listener_refuses_relay_to_an_unlisted_certificate() {
    let pki = Pki::new();
    let sink = Sink::start(SinkOptions::default());
    let (dir, ports) = relay_dir(&pki, sink.port(), "", &["smtpd_tls_wrappermode=yes"]);
    let _relay = start_relay(&dir);
    let mut s = Implicit::connect(ports[0], &pki.ca.cert_pem, &pki.stranger);
    assert!(s.reply().starts_with("220 relay.test"));
    s.cmd("EHLO stranger.test");
    assert!(s.cmd("MAIL FROM:<x@stranger.test>").starts_with("250"));
    assert_eq!(
        s.cmd("RCPT TO:<friend@elsewhere.example>"),
        "554 5.7.1 <friend@elsewhere.example>: Relay access denied"
    );
}

#[test]
fn wrappermode_req_ccert_refuses_a_client_without_a_certificate_like_after_starttls() {
    let pki = Pki::new();
    let (dir, ports) = relay_dir(
        &pki,
        9,
        "",
        &["smtpd_tls_wrappermode=yes smtpd_tls_req_ccert=yes smtpd_tls_security_level=encrypt"],
    );
    let _relay = start_relay(&dir);
    let self_signed = certrelay_testkit::pki::self_signed_client("nobody");
    let mut s = Implicit::connect(ports[0], &pki.ca.cert_pem, &self_signed);
    assert!(s.reply().starts_with("220 relay.test"));
    assert_eq!(
        s.cmd("EHLO x"),
        "421 4.7.1 relay.test Error: Client certificate not trusted"
    );
}

#[test]
fn a_plaintext_client_on_the_wrappermode_port_gets_no_greeting_and_the_relay_carries_on() {
    let pki = Pki::new();
    let (dir, ports) = relay_dir(&pki, 9, "", &["smtpd_tls_wrappermode=yes"]);
    let relay = start_relay(&dir);
    let got = plaintext_exchange(ports[0], b"EHLO plain.test\r\nMAIL FROM:<a@b.example>\r\n");
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains("220") && !text.contains("250"), "{text:?}");
    relay.wait_log("TLS handshake failed from unknown[127.0.0.1]");
    relay.wait_log("lost connection after CONNECT from unknown[127.0.0.1]");
    // Still serving: a TLS client is greeted.
    let mut s = Implicit::connect(ports[0], &pki.ca.cert_pem, &pki.laptop);
    assert!(s.reply().starts_with("220 relay.test"));
}

#[test]
fn a_silent_or_dribbling_client_on_the_wrappermode_port_is_dropped() {
    let pki = Pki::new();
    let (dir, ports) = relay_dir(
        &pki,
        9,
        "smtpd_timeout = 1s\n",
        &["smtpd_tls_wrappermode=yes"],
    );
    let relay = start_relay(&dir);
    // Connects and sends nothing.
    assert!(plaintext_exchange(ports[0], b"").is_empty());
    relay.wait_log("TLS handshake failed from unknown[127.0.0.1]: timeout");
    // Dribbles the start of a ClientHello, a byte at a time: the time to finish the
    // handshake is counted from the accept, so the bytes buy nothing.
    let mut tcp = TcpStream::connect(("127.0.0.1", ports[0])).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let hello = [
        0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let mut dropped = false;
    for byte in hello.iter().cycle().take(100) {
        if tcp.write_all(&[*byte]).is_err() {
            dropped = true;
            break;
        }
        let mut buf = [0u8; 64];
        match tcp.read(&mut buf) {
            Ok(0) => {
                dropped = true;
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            _ => {
                dropped = true;
                break;
            }
        }
    }
    assert!(dropped, "a dribbling client kept its connection");
}

#[test]
fn a_wrappermode_listener_without_a_certificate_refuses_to_start() {
    let pki = Pki::new();
    let (dir, _) = relay_dir(
        &pki,
        9,
        "smtpd_tls_cert_file =\n",
        &["", "smtpd_tls_wrappermode=yes"],
    );
    let out = Command::new(binary("certrelayd"))
        .args(["-c", dir.path().to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let master = dir.path().join("master.cf");
    assert!(
        err.contains(&format!("{}:", master.display())) && err.contains("smtpd_tls_wrappermode"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// The laptop.

/// A laptop relaying through `relayhost` with `pki.laptop`, at level verify; `extra` ends
/// main.cf.
fn laptop(pki: &Pki, relayhost: &str, extra: &str) -> TempDir {
    let dir = TempDir::new("submission-laptop");
    let d = dir.path().display().to_string();
    dir.write(
        "laptop.pem",
        &format!("{}{}", pki.laptop.cert_pem, pki.laptop.key_pem),
    );
    dir.write("ca.pem", &pki.ca.cert_pem);
    dir.write(
        "main.cf",
        &format!(
            "myhostname = laptop.test\nqueue_directory = {d}/queue\nrelayhost = {relayhost}\n\
             smtp_connect_timeout = 5s\nsmtp_tls_security_level = verify\n\
             smtp_tls_cert_file = {d}/laptop.pem\nsmtp_tls_CAfile = {d}/ca.pem\n{extra}"
        ),
    );
    dir
}

fn certrelay(dir: &TempDir, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(binary("certrelay"))
        .arg("-c")
        .arg(dir.path())
        .args(args)
        .env("USER", "bob")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn send(dir: &TempDir, subject: &str) {
    let message =
        format!("From: bob@laptop.test\nTo: friend@elsewhere.example\nSubject: {subject}\n\nhi\n");
    let out = certrelay(dir, &["sendmail", "-t"], message.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn arrived(sink: &Sink, subject: &str) -> String {
    wait_until(&format!("the sink to receive {subject:?}"), || {
        sink.messages()
            .into_iter()
            .map(|m| m.wire())
            .find(|w| w.contains(&format!("Subject: {subject}")))
    })
}

fn remembered(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.path().join("queue/relayhost.last")).unwrap_or_default()
}

/// A port that accepts connections and closes them at once, counting them: a relay that
/// is there but never talks.
fn dead_relay() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    (port, count)
}

#[test]
fn laptop_delivers_over_implicit_tls_to_a_wrappermode_listener() {
    let pki = Pki::new();
    let sink = Sink::start(SinkOptions::default());
    let (dir, ports) = relay_dir(&pki, sink.port(), "", &["smtpd_tls_wrappermode=yes"]);
    let relay = start_relay(&dir);
    let relayhost = format!("[127.0.0.1]:{}", ports[0]);
    let laptop = laptop(&pki, &relayhost, "smtp_tls_wrappermode = yes\n");
    send(&laptop, "implicit");
    let wire = arrived(&sink, "implicit");
    assert!(wire.contains("with ESMTPS"), "{wire}");
    relay.wait_log("Trusted TLS connection established from unknown[127.0.0.1]");
}

#[test]
fn implicit_tls_never_falls_back_to_plaintext() {
    // The laptop expects TLS from the first byte of a port that greets in plaintext (a
    // STARTTLS listener); at level may a STARTTLS failure would retry in plaintext, this
    // must not.
    let pki = Pki::new();
    let sink = Sink::start(SinkOptions::default());
    let (dir, ports) = relay_dir(&pki, sink.port(), "", &[""]);
    let _relay = start_relay(&dir);
    let relayhost = format!("[127.0.0.1]:{}", ports[0]);
    let laptop = laptop(
        &pki,
        &relayhost,
        "smtp_tls_wrappermode = yes\nsmtp_tls_security_level = may\n",
    );
    send(&laptop, "no fallback");
    let listing = wait_until("the deferral", || {
        let out = certrelay(&laptop, &["queue"], b"");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("Cannot start TLS").then_some(text)
    });
    assert!(listing.contains("friend@elsewhere.example"), "{listing}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(sink.messages().is_empty(), "nothing went out in plaintext");
}

#[test]
fn laptop_fails_over_from_a_dead_entry_and_remembers_the_one_that_worked() {
    let pki = Pki::new();
    let sink = Sink::start(SinkOptions::default());
    // 587-style STARTTLS and 465-style wrapper mode listeners on the relay.
    let (dir, ports) = relay_dir(&pki, sink.port(), "", &["", "smtpd_tls_wrappermode=yes"]);
    let _relay = start_relay(&dir);
    let closed = free_port();
    let (dead, dead_count) = dead_relay();
    let working = format!("[127.0.0.1]:{}", ports[0]);
    let relayhost = format!("[127.0.0.1]:{closed}, [127.0.0.1]:{dead}, {working}");
    let laptop = laptop(&pki, &relayhost, "");
    send(&laptop, "failover one");
    arrived(&sink, "failover one");
    assert_eq!(
        dead_count.load(Ordering::SeqCst),
        1,
        "the dead entry was tried"
    );
    assert_eq!(remembered(&laptop).trim(), working);
    // The next message goes to the remembered entry first: the dead one is not tried.
    send(&laptop, "failover two");
    arrived(&sink, "failover two");
    assert_eq!(
        dead_count.load(Ordering::SeqCst),
        1,
        "the dead entry was skipped"
    );
}

#[test]
fn a_state_file_naming_a_host_outside_relayhost_is_ignored() {
    let pki = Pki::new();
    let sink = Sink::start(SinkOptions::default());
    let elsewhere = Sink::start(SinkOptions::default());
    let (dir, ports) = relay_dir(&pki, sink.port(), "", &[""]);
    let _relay = start_relay(&dir);
    let (dead, _) = dead_relay();
    let relayhost = format!("[127.0.0.1]:{dead}, [127.0.0.1]:{}", ports[0]);
    let laptop = laptop(&pki, &relayhost, "smtp_tls_security_level = may\n");
    std::fs::create_dir_all(laptop.path().join("queue")).unwrap();
    laptop.write(
        "queue/relayhost.last",
        &format!("[127.0.0.1]:{}\n", elsewhere.port()),
    );
    send(&laptop, "not elsewhere");
    arrived(&sink, "not elsewhere");
    assert!(elsewhere.messages().is_empty());
    assert_eq!(elsewhere.connection_count(), 0);
    assert_eq!(
        remembered(&laptop).trim(),
        format!("[127.0.0.1]:{}", ports[0])
    );
}
