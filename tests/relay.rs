//! The relay's serving mode end to end: the real `certrelayd` binary, real sockets, real
//! TLS (rustls on the client side), real spool files. Every wait is bounded.

use certrelay_core::cert::{parse_certificates, spki_der};
use certrelay_core::fingerprint::{DigestKind, Fingerprint};
use certrelay_shell::spool::Spool;
use certrelay_testkit::daemon::Daemon;
use certrelay_testkit::pki::client_config;
use certrelay_testkit::pki::{self, Ca, Issued};
use certrelay_testkit::sink::{Sink, SinkOptions};
use certrelay_testkit::wait_until;
use certrelay_testkit::{binary, run_ok, TempDir};
use certrelay_testkit::{free_port, WAIT};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// A small blocking SMTP client with rustls.

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

struct Smtp {
    stream: Option<Stream>,
    pending: Vec<u8>,
}

impl Smtp {
    fn connect(port: u16) -> Smtp {
        let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect to relay");
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Smtp {
            stream: Some(Stream::Plain(tcp)),
            pending: Vec::new(),
        }
    }

    fn stream(&mut self) -> &mut Stream {
        self.stream.as_mut().expect("stream")
    }

    /// One line without CR LF; empty at end of stream.
    fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.pending.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.pending.drain(..i + 2).collect();
                return String::from_utf8_lossy(&line[..i]).into_owned();
            }
            let mut buf = [0u8; 4096];
            let n = match self.stream().read(&mut buf) {
                Ok(n) => n,
                Err(e) => return format!("<read error: {e}>"),
            };
            if n == 0 {
                return String::new();
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// A whole reply, lines joined by `\n`.
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

    fn send(&mut self, bytes: &[u8]) {
        self.stream().write_all(bytes).expect("write");
        self.stream().flush().expect("flush");
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// The TLS handshake (after the `220` to STARTTLS), with an optional client chain.
    fn tls(&mut self, ca_pem: &str, client: Option<(&str, &str)>) -> Result<(), String> {
        self.tls_with(client_config(ca_pem, client))
    }

    /// The TLS handshake with `config`: one shared by several connections resumes the
    /// session of the first.
    fn tls_with(&mut self, config: Arc<rustls::ClientConfig>) -> Result<(), String> {
        assert!(self.pending.is_empty(), "bytes after the 220 to STARTTLS");
        let name = rustls::pki_types::ServerName::try_from("relay.test").unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let Some(Stream::Plain(tcp)) = self.stream.take() else {
            panic!("TLS twice")
        };
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| e.to_string())?;
        }
        self.stream = Some(Stream::Tls(Box::new(tls)));
        Ok(())
    }

    /// Greeting, EHLO, STARTTLS, handshake, EHLO again; returns the second EHLO reply.
    fn start(port: u16, ca_pem: &str, client: Option<&Issued>) -> (Smtp, String) {
        let client = client.map(|c| (c.cert_pem.as_str(), c.key_pem.as_str()));
        Smtp::start_with(port, client_config(ca_pem, client))
    }

    /// As [`Smtp::start`], with a client configuration that may be shared.
    fn start_with(port: u16, config: Arc<rustls::ClientConfig>) -> (Smtp, String) {
        let mut s = Smtp::connect(port);
        let banner = s.reply();
        assert!(banner.starts_with("220 relay.test"), "{banner}");
        let ehlo = s.cmd("EHLO laptop.test");
        assert!(ehlo.contains("STARTTLS"), "{ehlo}");
        let ready = s.cmd("STARTTLS");
        assert_eq!(ready, "220 2.0.0 Ready to start TLS");
        s.tls_with(config).expect("handshake");
        let ehlo = s.cmd("EHLO laptop.test");
        (s, ehlo)
    }

    /// MAIL, RCPT, DATA with a small message: the reply to each step, stopping at the first
    /// refusal.
    fn mail(&mut self, rcpt: &str) -> Result<String, String> {
        self.mail_content(rcpt, b"Subject: test\r\n\r\nhello from the laptop\r\n")
    }

    /// As [`Smtp::mail`] with `content` (CRLF lines, no line starting with a dot).
    fn mail_content(&mut self, rcpt: &str, content: &[u8]) -> Result<String, String> {
        let r = self.cmd("MAIL FROM:<me@laptop.test>");
        if !r.starts_with("250") {
            return Err(r);
        }
        let r = self.cmd(&format!("RCPT TO:<{rcpt}>"));
        if !r.starts_with("250") {
            return Err(r);
        }
        let r = self.cmd("DATA");
        if !r.starts_with("354") {
            return Err(r);
        }
        self.send(content);
        self.send(b".\r\n");
        let r = self.reply();
        match r.strip_prefix("250 2.0.0 Ok: queued as ") {
            Some(id) => Ok(id.to_owned()),
            None => Err(r),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The relay process.

/// certrelayd running on a directory of its own.
struct Relay {
    daemon: Daemon,
    dir: TempDir,
    ports: Vec<u16>,
}

impl std::ops::Deref for Relay {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl Relay {
    fn start(dir: TempDir, ports: Vec<u16>) -> Relay {
        let daemon = Daemon::start(
            &binary("certrelayd"),
            &["-c", dir.path().to_str().unwrap()],
            "daemon started",
        );
        Relay { daemon, dir, ports }
    }

    fn port(&self) -> u16 {
        self.ports[0]
    }

    /// The content of queued message `id`.
    fn spool_message(&self, id: &str) -> String {
        spool_text(id, self.spool().read_content(id))
    }

    /// The envelope record of queued message `id`.
    fn spool_envelope(&self, id: &str) -> String {
        spool_text(id, self.spool().read_envelope(id))
    }

    fn spool(&self) -> Spool {
        Spool::attach(self.dir.path().join("spool"))
    }

    fn stop(self) -> std::process::ExitStatus {
        self.daemon.stop()
    }

    fn stop_waiting(self) -> std::process::ExitStatus {
        self.daemon.stop_waiting()
    }
}

// ---------------------------------------------------------------------------------------
// Fixtures.

struct Pki {
    ca: Ca,
    laptop: Issued,
}

/// A relay directory: the relay's certificate, the CA file, a fingerprint map, main.cf with
/// `extra` appended, and master.cf with one line per listener (`-o` options after the port).
fn setup(label: &str, map: &str, extra: &str, listeners: &[&str]) -> (Relay, Pki) {
    setup_with(label, &|_| map.to_owned(), extra, listeners)
}

/// As [`setup`], with a map made from the laptop's certificate.
fn setup_with(
    label: &str,
    map: &dyn Fn(&Issued) -> String,
    extra: &str,
    listeners: &[&str],
) -> (Relay, Pki) {
    let (dir, ports, pki) = prepare(label, map, extra, listeners);
    (Relay::start(dir, ports), pki)
}

/// The directory of [`setup_with`], without starting the relay: the directory, the
/// listeners' ports, the PKI.
fn prepare(
    label: &str,
    map: &dyn Fn(&Issued) -> String,
    extra: &str,
    listeners: &[&str],
) -> (TempDir, Vec<u16>, Pki) {
    let dir = TempDir::new(label);
    let ca = Ca::new("Test CA");
    let server = ca.issue("relay.test", &["relay.test"], false);
    let laptop = ca.issue("laptop", &[], true);
    dir.write("relay.pem", &server.cert_pem);
    dir.write("relay.key", &server.key_pem);
    dir.write("ca.pem", &ca.cert_pem);
    dir.write("relay_clientcerts", &map(&laptop));
    write_main(&dir, extra);
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
    (dir, ports, Pki { ca, laptop })
}

fn write_main(dir: &TempDir, extra: &str) {
    // certrelay has no mailboxes: postmaster goes to one elsewhere.
    dir.write("virtual", "postmaster admin@elsewhere.example\n");
    let d = dir.path().display();
    dir.write(
        "main.cf",
        &format!(
            "myhostname = relay.test\n\
             mail_owner = nobody\n\
             smtpd_peername_lookup = no\n\
             mydestination = relay.test\n\
             relayhost = [127.0.0.1]:9\n\
             defer_transports = smtp\n\
             mynetworks = 192.0.2.0/24\n\
             queue_directory = {d}/spool\n\
             smtpd_tls_security_level = may\n\
             smtpd_tls_cert_file = {d}/relay.pem\n\
             smtpd_tls_key_file = {d}/relay.key\n\
             smtpd_tls_CAfile = {d}/ca.pem\n\
             smtpd_tls_ask_ccert = yes\n\
             smtpd_tls_loglevel = 2\n\
             relay_clientcerts = hash:{d}/relay_clientcerts\n\
             virtual_alias_maps = hash:{d}/virtual\n\
             smtpd_recipient_restrictions = permit_mynetworks, permit_tls_clientcerts, \
             reject_unauth_destination\n\
             {extra}"
        ),
    );
}

fn md5_line(der: &[u8]) -> String {
    format!("{} laptop\n", Fingerprint::of(DigestKind::Md5, der))
}

/// What was read from the spool for message `id`, as text.
fn spool_text(id: &str, read: std::io::Result<Vec<u8>>) -> String {
    String::from_utf8(read.unwrap_or_else(|e| panic!("{id}: {e}"))).unwrap()
}

// ---------------------------------------------------------------------------------------
// Tests.

#[test]
fn listed_md5_certificate_relays_and_the_message_is_spooled() {
    let (relay, pki) = setup_with(
        "md5",
        &|laptop| md5_line(&laptop.der),
        "smtpd_tls_req_ccert = yes\n",
        &[""],
    );

    let (mut s, ehlo) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(&pki.laptop));
    assert!(ehlo.starts_with("250-relay.test"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    let id = s
        .mail("someone@example.org")
        .unwrap_or_else(|r| panic!("{r}\n{}", relay.log()));
    assert_eq!(s.cmd("QUIT"), "221 2.0.0 Bye");

    let msg = relay.spool_message(&id);
    assert!(
        msg.starts_with("Received: from laptop.test (unknown [127.0.0.1])"),
        "{msg}"
    );
    assert!(msg.contains(&format!("with ESMTPS id {id}")), "{msg}");
    assert!(
        msg.ends_with("Subject: test\r\n\r\nhello from the laptop\r\n"),
        "{msg}"
    );
    let env = relay.spool_envelope(&id);
    assert!(env.contains("sender: me@laptop.test\n"), "{env}");
    assert!(env.contains("rcpt: someone@example.org\n"), "{env}");
    assert!(env.contains("state: pending\n"), "{env}");
    assert!(env.contains("protocol: ESMTPS\n"), "{env}");

    let md5 = Fingerprint::of(DigestKind::Md5, &pki.laptop.der).to_string();
    relay.wait_log(&format!("{id}: from=<me@laptop.test>"));
    let log = relay.log();
    assert!(
        log.contains("Trusted TLS connection established from unknown[127.0.0.1]: TLSv1.3"),
        "{log}"
    );
    assert!(log.contains(&format!("fingerprint={md5}")), "{log}");
    assert!(log.contains("subject_CN=laptop, issuer=Test CA"), "{log}");
    assert!(
        log.contains(&format!("{id}: client=unknown[127.0.0.1]")),
        "{log}"
    );

    let status = relay.stop();
    assert!(status.success(), "{status:?}");
}

/// A message of `lines` CRLF lines, each naming `tag` and its number.
fn numbered_content(tag: &str, lines: usize) -> Vec<u8> {
    let mut content = format!("Subject: {tag}\r\n\r\n").into_bytes();
    for i in 0..lines {
        content.extend_from_slice(format!("{tag} line {i:06} {}\r\n", "x".repeat(60)).as_bytes());
    }
    content
}

#[test]
fn large_and_small_messages_in_turn_on_one_connection_arrive_whole() {
    // The session reads into a small buffer between transactions and a larger one while a
    // message's content comes: switching between them must lose and repeat nothing.
    let (relay, pki) = setup_with("turns", &|laptop| md5_line(&laptop.der), "", &[""]);
    let (mut s, _) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(&pki.laptop));
    let contents = [
        numbered_content("first", 1500),
        numbered_content("second", 1),
        numbered_content("third", 800),
        numbered_content("fourth", 20),
    ];
    let mut ids = Vec::new();
    for content in &contents {
        let id = s
            .mail_content("someone@example.org", content)
            .unwrap_or_else(|r| panic!("{r}\n{}", relay.log()));
        ids.push(id);
    }
    assert_eq!(s.cmd("QUIT"), "221 2.0.0 Bye");
    for (id, content) in ids.iter().zip(&contents) {
        let msg = relay.spool_message(id);
        let body = String::from_utf8_lossy(content);
        assert!(msg.ends_with(&*body), "{id}: content differs");
        assert_eq!(
            msg.matches(" line ").count(),
            body.matches(" line ").count(),
            "{id}"
        );
    }
    assert!(relay.stop().success());
}

#[test]
fn the_client_name_comes_from_the_hosts_file_when_it_leads_back() {
    // What a system resolver reading files first answers for 127.0.0.1.
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let name = hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some("127.0.0.1")).then(|| f.next()).flatten()
        })
        .expect("this test needs a name for 127.0.0.1 in /etc/hosts")
        .to_ascii_lowercase();
    let (relay, pki) = setup_with(
        "peername",
        &|l| md5_line(&l.der),
        "smtpd_peername_lookup = yes\n",
        &[""],
    );
    let (mut s, _) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(&pki.laptop));
    let id = s
        .mail("someone@example.org")
        .unwrap_or_else(|r| panic!("{r}"));
    relay.wait_log(&format!("connect from {name}[127.0.0.1]"));
    relay.wait_log(&format!("{id}: client={name}[127.0.0.1]"));
    let msg = relay.spool_message(&id);
    assert!(
        msg.starts_with(&format!("Received: from laptop.test ({name} [127.0.0.1])")),
        "{msg}"
    );
}

#[test]
fn self_signed_listed_certificate_relays_unless_a_trusted_one_is_required() {
    let me = pki::self_signed_client("selfie");
    let (relay, pki) = setup(
        "selfsigned",
        &md5_line(&me.der),
        "",
        &["", "smtpd_tls_req_ccert=yes"],
    );
    let (mut s, _) = Smtp::start(relay.ports[0], &pki.ca.cert_pem, Some(&me));
    let r = s.mail("someone@example.org");
    assert!(r.is_ok(), "{r:?}\n{}", relay.log());

    let (mut s, ehlo) = Smtp::start(relay.ports[1], &pki.ca.cert_pem, Some(&me));
    assert_eq!(
        ehlo,
        "421 4.7.1 relay.test Error: Client certificate not trusted"
    );
    assert_eq!(s.line(), "", "the connection closes");
    // The log arrives through a pipe: wait for it rather than race it.
    relay.wait_log("Untrusted TLS connection established");
}

#[test]
fn no_certificate_with_req_ccert_gets_421() {
    let (relay, pki) = setup("nocert", "", "smtpd_tls_req_ccert = yes\n", &[""]);
    let (mut s, ehlo) = Smtp::start(relay.port(), &pki.ca.cert_pem, None);
    assert_eq!(
        ehlo,
        "421 4.7.1 relay.test Error: No client certificate presented"
    );
    assert_eq!(s.line(), "");
    relay.wait_log("Anonymous TLS connection established");
}

#[test]
fn unlisted_trusted_certificate_is_denied_relay() {
    let (relay, pki) = setup("unlisted", "", "smtpd_tls_req_ccert = yes\n", &[""]);
    let (mut s, _) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(&pki.laptop));
    let r = s.mail("someone@example.org");
    assert_eq!(
        r,
        Err("554 5.7.1 <someone@example.org>: Relay access denied".to_owned())
    );
    relay.wait_log(
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 <someone@example.org>: \
         Relay access denied; from=<me@laptop.test> to=<someone@example.org> proto=ESMTP \
         helo=<laptop.test>",
    );
}

#[test]
fn mail_before_starttls_at_encrypt_gets_530() {
    let (relay, _pki) = setup("encrypt", "", "smtpd_tls_security_level = encrypt\n", &[""]);
    let mut s = Smtp::connect(relay.port());
    s.reply();
    s.cmd("EHLO laptop.test");
    assert_eq!(
        s.cmd("MAIL FROM:<me@laptop.test>"),
        "530 5.7.0 Must issue a STARTTLS command first"
    );
}

#[test]
fn chain_deeper_than_verifydepth_is_untrusted() {
    let (relay, pki) = setup(
        "depth",
        "",
        "smtpd_tls_req_ccert = yes\nsmtpd_tls_ccert_verifydepth = 1\n",
        &["", "smtpd_tls_ccert_verifydepth=2"],
    );
    let sub = pki.ca.intermediate("Sub CA");
    let leaf = sub.issue("deep-laptop", &[], true);
    let chained = Issued {
        cert_pem: format!("{}{}", leaf.cert_pem, sub.cert_pem),
        key_pem: leaf.key_pem.clone(),
        der: leaf.der.clone(),
    };
    let (_s, ehlo) = Smtp::start(relay.ports[0], &pki.ca.cert_pem, Some(&chained));
    assert_eq!(
        ehlo,
        "421 4.7.1 relay.test Error: Client certificate not trusted"
    );
    relay.wait_log("certificate not trusted: chain is 2 CAs deep, limit 1");
    // One CA more allowed: the same chain is trusted.
    let (mut s, ehlo) = Smtp::start(relay.ports[1], &pki.ca.cert_pem, Some(&chained));
    assert!(ehlo.starts_with("250-relay.test"), "{ehlo}");
    assert!(s.cmd("MAIL FROM:<me@laptop.test>").starts_with("250"));
}

#[test]
fn sha256_and_public_key_entries_match() {
    let ca = Ca::new("Other CA");
    let by_cert = ca.issue("by-cert", &[], true);
    let by_key = ca.issue("by-key", &[], true);
    let map = format!(
        "{} cert-entry\n{} key-entry\n",
        Fingerprint::of(DigestKind::Sha256, &by_cert.der),
        Fingerprint::of(DigestKind::Sha256, spki_der(&by_key.der).unwrap())
    );
    let (relay, pki) = setup("sha256", &map, "", &[""]);
    for client in [&by_cert, &by_key] {
        let (mut s, _) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(client));
        let r = s.mail("someone@example.org");
        assert!(r.is_ok(), "{r:?}\n{}", relay.log());
    }
    // The relay's own CA's laptop is not listed.
    let (mut s, _) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(&pki.laptop));
    assert!(s
        .mail("someone@example.org")
        .unwrap_err()
        .starts_with("554 5.7.1"));
}

#[test]
fn commands_pipelined_after_starttls_are_not_executed() {
    let (relay, pki) = setup("pipelined", "", "", &[""]);
    let mut s = Smtp::connect(relay.port());
    s.reply();
    s.cmd("EHLO laptop.test");
    s.send(b"STARTTLS\r\nNOOP\r\n");
    assert_eq!(s.reply(), "220 2.0.0 Ready to start TLS");
    match s.tls(&pki.ca.cert_pem, None) {
        Ok(()) => {
            // The first reply inside TLS answers our EHLO, not the NOOP.
            let ehlo = s.cmd("EHLO laptop.test");
            assert!(ehlo.starts_with("250-relay.test"), "{ehlo}");
            relay.wait_log("discarded 6 bytes of plaintext sent after STARTTLS");
            assert_eq!(s.cmd("QUIT"), "221 2.0.0 Bye");
            // The session's command counts: no NOOP ran.
            relay.wait_log("disconnect from unknown[127.0.0.1] ehlo=2 starttls=1 quit=1");
        }
        // Had the NOOP arrived after the server's read, it broke the handshake instead:
        // still never executed.
        Err(_) => relay.wait_log("TLS handshake failed"),
    }
    assert!(!relay.log().contains("noop"), "{}", relay.log());
}

#[test]
fn local_mail_needs_no_certificate_on_a_listener_that_allows_it() {
    let (relay, _pki) = setup(
        "twolisteners",
        "",
        "",
        &["smtpd_tls_req_ccert=yes", "smtpd_tls_security_level=may"],
    );
    // Listener 2: plaintext, mail for mydestination accepted (postmaster, which an alias
    // sends elsewhere), other mail refused.
    let mut s = Smtp::connect(relay.ports[1]);
    s.reply();
    assert!(s.cmd("EHLO outside.test").starts_with("250-relay.test"));
    let id = s
        .mail("postmaster@relay.test")
        .unwrap_or_else(|r| panic!("{r}\n{}", relay.log()));
    let env = relay.spool_envelope(&id);
    assert!(env.contains("protocol: ESMTP\n"), "{env}");
    assert_eq!(
        s.mail("someone@example.org"),
        Err("554 5.7.1 <someone@example.org>: Relay access denied".to_owned())
    );
    // Listener 1: TLS first.
    let mut s = Smtp::connect(relay.ports[0]);
    s.reply();
    s.cmd("EHLO outside.test");
    assert_eq!(
        s.cmd("MAIL FROM:<me@outside.test>"),
        "530 5.7.0 Must issue a STARTTLS command first"
    );
}

#[test]
fn sighup_applies_a_new_map_and_keeps_the_old_one_when_the_new_is_broken() {
    let (relay, pki) = setup("sighup", "", "", &[""]);
    let (mut s, _) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(&pki.laptop));
    assert!(s
        .mail("someone@example.org")
        .unwrap_err()
        .starts_with("554 5.7.1"));
    drop(s);

    relay
        .dir
        .write("relay_clientcerts", &md5_line(&pki.laptop.der));
    relay.signal("HUP");
    relay.wait_log("configuration reloaded");
    let (mut s, _) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(&pki.laptop));
    assert!(s.mail("someone@example.org").is_ok(), "{}", relay.log());
    drop(s);

    // A map that cannot be read: refused, the old map keeps serving.
    let missing = relay.dir.path().join("no-such-map");
    let main = std::fs::read_to_string(relay.dir.path().join("main.cf")).unwrap();
    let line = main.lines().count() + 1;
    relay.dir.write(
        "main.cf",
        &format!("{main}relay_clientcerts = hash:{}\n", missing.display()),
    );
    relay.signal("HUP");
    relay.wait_log("configuration not reloaded");
    // The refusal names the file and line of the parameter, and the missing map.
    let main_cf = relay.dir.path().join("main.cf");
    let log = relay.log();
    let refusal = log
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "error: {}:{line}: relay_clientcerts",
                main_cf.display()
            ))
        })
        .unwrap_or_else(|| panic!("no refusal naming main.cf:{line} in\n{log}"));
    assert!(refusal.contains("no-such-map"), "{refusal}");
    let (mut s, _) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(&pki.laptop));
    assert!(s.mail("someone@example.org").is_ok(), "{}", relay.log());
}

#[test]
fn too_many_connections_from_one_client_get_421() {
    let (relay, _pki) = setup(
        "toomany",
        "",
        "smtpd_client_connection_count_limit = 1\n",
        &[""],
    );
    let mut first = Smtp::connect(relay.port());
    assert!(first.reply().starts_with("220 "));
    let mut second = Smtp::connect(relay.port());
    assert_eq!(
        second.reply(),
        "421 4.7.0 relay.test Error: too many connections from 127.0.0.1"
    );
    assert_eq!(second.line(), "");
    relay.wait_log("Connection concurrency limit exceeded: 2 from unknown[127.0.0.1]");
    assert_eq!(first.cmd("QUIT"), "221 2.0.0 Bye");
    // Once the first session is over, a new one is welcome.
    let until = Instant::now() + WAIT;
    loop {
        let mut third = Smtp::connect(relay.port());
        let r = third.reply();
        if r.starts_with("220 ") {
            break;
        }
        assert!(Instant::now() < until, "still refused: {r}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn broken_configuration_refuses_to_start_with_file_and_line() {
    let dir = TempDir::new("broken");
    dir.write(
        "main.cf",
        "myhostname = relay.test\nsmtpd_tls_ask_ccert = perhaps\n",
    );
    let out = Command::new(binary("certrelayd"))
        .args(["-c", dir.path().to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let main_cf: PathBuf = dir.path().join("main.cf");
    assert!(
        err.contains(&format!("error: {}:2:", main_cf.display())),
        "{err}"
    );
}

#[test]
fn sigterm_lets_the_session_in_progress_finish_and_exits_0() {
    let (relay, pki) = setup_with("sigterm", &|l| md5_line(&l.der), "", &[""]);
    let (mut s, _) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(&pki.laptop));
    relay.signal("TERM");
    relay.wait_log("terminating on signal 15");
    // No new connections...
    let until = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", relay.port())).is_ok() {
        assert!(Instant::now() < until, "still accepting:\n{}", relay.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...but the session in progress completes its mail.
    let id = s
        .mail("someone@example.org")
        .unwrap_or_else(|r| panic!("{r}"));
    assert!(relay
        .spool_envelope(&id)
        .contains("rcpt: someone@example.org"));
    assert_eq!(s.cmd("QUIT"), "221 2.0.0 Bye");
    let status = relay.stop_waiting();
    assert!(status.success(), "{status:?}");
}

#[test]
fn idle_clients_and_stalled_handshakes_time_out() {
    let (relay, _pki) = setup("timeout", "", "smtpd_timeout = 1s\n", &[""]);
    let mut idle = Smtp::connect(relay.port());
    assert!(idle.reply().starts_with("220 "));
    assert_eq!(idle.reply(), "421 4.4.2 relay.test Error: timeout exceeded");
    assert_eq!(idle.line(), "");
    relay.wait_log("timeout after CONNECT from unknown[127.0.0.1]");

    let mut stalled = Smtp::connect(relay.port());
    stalled.reply();
    stalled.cmd("EHLO laptop.test");
    assert_eq!(stalled.cmd("STARTTLS"), "220 2.0.0 Ready to start TLS");
    // No ClientHello follows: the relay gives up after smtpd_timeout and closes.
    assert_eq!(stalled.line(), "");
    relay.wait_log("TLS handshake failed from unknown[127.0.0.1]: timeout");
}

#[test]
fn hundreds_of_idle_connections_leave_room_for_a_client_that_sends_mail() {
    let (relay, pki) = setup_with(
        "idle300",
        &|l| md5_line(&l.der),
        "default_process_limit = 400\nsmtpd_client_connection_count_limit = 0\n",
        &[""],
    );
    let mut idle = Vec::new();
    for i in 0..300 {
        let mut s = Smtp::connect(relay.port());
        assert!(s.reply().starts_with("220 "), "{}", relay.log());
        // A third of them sit inside TLS, which costs the relay more.
        if i % 3 == 0 {
            s.cmd("EHLO idle.test");
            assert_eq!(s.cmd("STARTTLS"), "220 2.0.0 Ready to start TLS");
            s.tls(&pki.ca.cert_pem, None).expect("idle handshake");
        }
        idle.push(s);
    }
    let (mut s, _) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(&pki.laptop));
    let id = s
        .mail("someone@example.org")
        .unwrap_or_else(|r| panic!("{r}\n{}", relay.log()));
    assert!(relay
        .spool_envelope(&id)
        .contains("rcpt: someone@example.org"));
    // The idle ones were not pushed out to make room.
    for s in idle.iter_mut().step_by(25) {
        assert_eq!(s.cmd("NOOP"), "250 2.0.0 Ok");
    }
}

#[test]
fn when_every_session_is_taken_idle_clients_give_way_and_working_ones_stay() {
    let (relay, pki) = setup_with(
        "stress",
        &|l| md5_line(&l.der),
        "default_process_limit = 20\nsmtpd_client_connection_count_limit = 0\n",
        &[""],
    );
    let mut idle = Vec::new();
    for _ in 0..18 {
        let mut s = Smtp::connect(relay.port());
        assert!(s.reply().starts_with("220 "));
        idle.push(s);
    }
    // One stalls inside the TLS handshake: no ClientHello after the 220 to STARTTLS.
    let mut stalled = Smtp::connect(relay.port());
    assert!(stalled.reply().starts_with("220 "));
    stalled.cmd("EHLO stalled.test");
    assert_eq!(stalled.cmd("STARTTLS"), "220 2.0.0 Ready to start TLS");
    let mut working = Smtp::connect(relay.port());
    assert!(working.reply().starts_with("220 "));
    // A newcomer takes the slot of the client idle longest, which is told why.
    let mut newcomer = Smtp::connect(relay.port());
    assert!(newcomer.reply().starts_with("220 "));
    let mut oldest = idle.remove(0);
    assert_eq!(
        oldest.reply(),
        "421 4.7.0 relay.test Error: too many connections; closing idle session"
    );
    assert_eq!(oldest.line(), "");
    relay.wait_log("all 20 sessions in use");
    // Under stress a session may wait 10 s for a command (smtpd_timeout is 300 s): the
    // client that keeps working is not cut off meanwhile.
    let stressed = Instant::now();
    while stressed.elapsed() < Duration::from_secs(12) {
        assert_eq!(working.cmd("NOOP"), "250 2.0.0 Ok");
        std::thread::sleep(Duration::from_secs(2));
    }
    for s in &mut idle {
        assert_eq!(s.reply(), "421 4.4.2 relay.test Error: timeout exceeded");
        assert_eq!(s.line(), "");
    }
    relay.wait_log("timeout after CONNECT from unknown[127.0.0.1]");
    assert_eq!(stalled.line(), "", "the stalled handshake is closed too");
    relay.wait_log("TLS handshake failed from unknown[127.0.0.1]: timeout");
    let (mut s, _) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(&pki.laptop));
    assert!(s.mail("someone@example.org").is_ok(), "{}", relay.log());
    assert_eq!(working.cmd("QUIT"), "221 2.0.0 Bye");
}

/// The `Uid:` or `Gid:` line of a process: real, effective, saved, filesystem.
fn proc_ids(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn assert_root() {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    assert_eq!(
        uid, 0,
        "this test starts certrelayd as root: run it as root"
    );
}

#[test]
#[ignore = "needs root: drops to mail_owner (run by .ci/run)"]
fn started_as_root_the_relay_serves_as_mail_owner_and_reloads_with_its_root_only_key() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_root();
    let (relay, pki) = setup("owner", "", "", &[""]);
    relay.wait_log("running as mail_owner nobody (uid 65534, gid 65534)");
    let pid = relay.pid();
    assert_eq!(proc_ids(pid, "Uid:"), "65534 65534 65534 65534");
    assert_eq!(proc_ids(pid, "Gid:"), "65534 65534 65534 65534");
    assert_eq!(proc_ids(pid, "Groups:"), "65534");
    let spool = relay.dir.path().join("spool");
    assert_eq!(std::fs::metadata(&spool).unwrap().uid(), 65534);

    // The key becomes root's alone; a reload as mail_owner adds a fingerprint and keeps
    // the key read at start.
    let key = relay.dir.path().join("relay.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    relay
        .dir
        .write("relay_clientcerts", &md5_line(&pki.laptop.der));
    relay.signal("HUP");
    relay.wait_log("configuration reloaded");
    relay.wait_log(&format!(
        "{}: Permission denied (os error 13); keeping the copy read at start",
        key.display()
    ));
    let (mut s, _) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(&pki.laptop));
    let id = s
        .mail("someone@example.org")
        .unwrap_or_else(|r| panic!("{r}\n{}", relay.log()));
    let msg = spool.join(format!("queue/{id}.msg"));
    assert_eq!(std::fs::metadata(&msg).unwrap().uid(), 65534);

    // A table only root can read cannot be reloaded: refused, with what to do.
    let table = relay.dir.path().join("relay_clientcerts");
    std::fs::set_permissions(&table, std::fs::Permissions::from_mode(0o600)).unwrap();
    relay.signal("HUP");
    relay.wait_log("configuration not reloaded");
    relay.wait_log("make the table readable by that account");
}

#[test]
#[ignore = "needs root: looks mail_owner up (run by .ci/run)"]
fn started_as_root_without_the_mail_owner_account_the_relay_refuses_to_start() {
    assert_root();
    for (owner, says) in [
        (
            "no-such-account",
            "mail_owner = no-such-account: no such account",
        ),
        ("root", "mail_owner = root: user id 0"),
    ] {
        let dir = TempDir::new("noowner");
        write_main(&dir, &format!("mail_owner = {owner}\n"));
        dir.write("relay_clientcerts", "");
        let ca = Ca::new("Test CA");
        let server = ca.issue("relay.test", &["relay.test"], false);
        dir.write("relay.pem", &server.cert_pem);
        dir.write("relay.key", &server.key_pem);
        dir.write("ca.pem", &ca.cert_pem);
        dir.write(
            "master.cf",
            &format!("127.0.0.1:{} inet n - n - - smtpd\n", free_port()),
        );
        let out = Command::new(binary("certrelayd"))
            .args(["-c", dir.path().to_str().unwrap()])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(says), "{err}");
    }
}

/// mail_owner `nobody`'s user and group id.
const NOBODY: u32 = 65534;

/// Gives `path` itself (never what a link names) to `nobody`.
fn give_to_nobody(path: &std::path::Path) {
    std::os::unix::fs::lchown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

/// A spool of `nobody`'s at `spool`, as a relay would leave it.
fn nobodys_spool(spool: &std::path::Path) {
    for sub in ["", "tmp", "queue", "corrupt"] {
        std::fs::create_dir_all(spool.join(sub)).unwrap();
        give_to_nobody(&spool.join(sub));
    }
}

/// Starts certrelayd on `dir`, which must refuse to start: returns what it said.
fn refused_start(dir: &TempDir) -> String {
    let out = Command::new(binary("certrelayd"))
        .args(["-c", dir.path().to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("daemon started"), "{err}");
    err
}

#[test]
#[ignore = "needs root: hands the spool to mail_owner (run by .ci/run)"]
fn started_as_root_the_relay_serves_from_a_spool_under_a_folder_mail_owner_cannot_enter() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_root();
    // A folder only root may enter, as the folders above a spool may be.
    let holder = TempDir::new("private-parent");
    let private = holder.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let spool = private.join("spool");
    let extra = format!("queue_directory = {}\n", spool.display());
    let (relay, pki) = setup_with("private-spool", &|l| md5_line(&l.der), &extra, &[""]);
    relay.wait_log("running as mail_owner nobody");
    // Made by root, handed to mail_owner: only mail_owner may enter it.
    let meta = std::fs::metadata(&spool).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (NOBODY, NOBODY, 0o700)
    );
    // The pid file is mail_owner's, written after the drop.
    let pid_file = std::fs::metadata(spool.join("certrelayd.pid")).unwrap();
    assert_eq!(pid_file.uid(), NOBODY);

    let (mut s, _) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(&pki.laptop));
    let id = s
        .mail("someone@example.org")
        .unwrap_or_else(|r| panic!("{r}\n{}", relay.log()));
    let msg = std::fs::metadata(spool.join(format!("queue/{id}.msg"))).unwrap();
    assert_eq!(msg.uid(), NOBODY);
    // The commands, as root, find the relay there and hear its reload.
    let out = certrelayd(&relay.dir, &["revoke", "laptop"]);
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("loaded the change"), "{}", said(&out));
    assert_eq!(
        rcpt_reply(&mut s, "b@elsewhere.example"),
        "554 5.7.1 <b@elsewhere.example>: Relay access denied"
    );
}

#[test]
#[ignore = "needs root: spools of other accounts (run by .ci/run)"]
fn started_as_root_the_relay_refuses_a_spool_with_links_foreign_files_or_no_room_to_write() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_root();
    let start = |label: &str, spoil: &dyn Fn(&std::path::Path, &std::path::Path)| {
        let (dir, _, _) = prepare(label, &|_| String::new(), "", &[""]);
        let spool = dir.path().join("spool");
        spoil(&spool, dir.path());
        let said = refused_start(&dir);
        (dir, spool, said)
    };
    let root_file = |path: &std::path::Path| {
        std::fs::write(path, "root's\n").unwrap();
        assert_eq!(std::fs::metadata(path).unwrap().uid(), 0);
    };

    // queue_directory is a link (to a new, empty folder of root's, which would be handed
    // over): not followed, nothing handed over.
    let (dir, spool, said) = start("spool-link", &|spool, dir| {
        std::fs::create_dir(dir.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(dir.join("elsewhere"), spool).unwrap();
    });
    assert!(
        said.contains(&format!(
            "queue_directory {}: is a symbolic link, which the relay does not follow as root",
            spool.display()
        )),
        "{said}"
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("elsewhere"))
            .unwrap()
            .uid(),
        0
    );

    // A link inside, to a file of root's: named, and the file is left alone.
    let (dir, spool, said) = start("link-inside", &|spool, dir| {
        nobodys_spool(spool);
        root_file(&dir.join("secret"));
        std::os::unix::fs::symlink(dir.join("secret"), spool.join("queue/A1.msg")).unwrap();
    });
    let link = spool.join("queue/A1.msg");
    assert!(
        said.contains(&format!(
            "{}: a symbolic link; remove it: `rm {}`",
            link.display(),
            link.display()
        )),
        "{said}"
    );
    let secret = std::fs::metadata(dir.path().join("secret")).unwrap();
    assert_eq!(secret.uid(), 0);
    assert!(std::fs::symlink_metadata(&link).is_ok(), "the link is left");

    // A file of root's inside (say a copy made as root): named with the chown that fixes
    // it, and not removed although it sits in tmp/.
    let (_dir, spool, said) = start("foreign-file", &|spool, _| {
        nobodys_spool(spool);
        root_file(&spool.join("tmp/B2.msg"));
    });
    let foreign = spool.join("tmp/B2.msg");
    assert!(
        said.contains(&format!(
            "{}: owned by user id 0; give it to nobody: `chown nobody: {}`",
            foreign.display(),
            foreign.display()
        )),
        "{said}"
    );
    assert!(foreign.exists());

    // A spool of root's that is not empty: not taken over.
    let (_dir, spool, said) = start("root-spool", &|spool, _| {
        std::fs::create_dir_all(spool.join("queue")).unwrap();
    });
    assert!(
        said.contains(&format!(
            "queue_directory {}: owned by user id 0, not by mail_owner nobody",
            spool.display()
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!("`chown nobody: {}`", spool.display())),
        "{said}"
    );
    assert_eq!(std::fs::metadata(&spool).unwrap().uid(), 0);

    // mail_owner's spool, but its queue/ is read-only to it: refused at start rather than
    // answering 451 to every message.
    let (_dir, spool, said) = start("read-only", &|spool, _| {
        nobodys_spool(spool);
        let queue = spool.join("queue");
        std::fs::set_permissions(queue, std::fs::Permissions::from_mode(0o500)).unwrap();
    });
    assert!(
        said.contains(&format!(
            "mail_owner nobody cannot write in {}: Permission denied",
            spool.join("queue").display()
        )),
        "{said}"
    );
}

#[test]
#[ignore = "needs root: a table only root can read (run by .ci/run)"]
fn started_as_root_revoke_fails_when_the_relay_refuses_the_new_table() {
    use std::os::unix::fs::PermissionsExt;
    assert_root();
    // The table in a folder only root may enter: the command (root) reads it, the relay
    // (mail_owner) cannot once it has dropped.
    let (dir, ports, pki) = prepare("revoke-refused", &|_| String::new(), "", &[""]);
    let secret = dir.path().join("secret");
    std::fs::create_dir(&secret).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o700)).unwrap();
    let table = secret.join("relay_clientcerts");
    std::fs::write(&table, md5_line(&pki.laptop.der)).unwrap();
    let main = std::fs::read_to_string(dir.path().join("main.cf")).unwrap();
    dir.write(
        "main.cf",
        &format!("{main}relay_clientcerts = hash:{}\n", table.display()),
    );
    let relay = Relay::start(dir, ports);
    let (mut s, _) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(&pki.laptop));
    assert_eq!(rcpt_reply(&mut s, "a@elsewhere.example"), "250 2.1.5 Ok");

    let out = certrelayd(&relay.dir, &["revoke", "laptop"]);
    let text = said(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "the running relay (pid {}) refused the new configuration",
            relay.pid()
        )),
        "{text}"
    );
    assert!(
        text.contains("make the table readable by that account"),
        "{text}"
    );
    // What the failure means: the old table still serves.
    assert_eq!(rcpt_reply(&mut s, "a@elsewhere.example"), "250 2.1.5 Ok");
}

// ---------------------------------------------------------------------------------------
// Interop with a real peer: swaks (run by .ci/run, which installs it).

/// Runs swaks against the relay with STARTTLS, with or without a client certificate.
fn swaks(relay: &Relay, cert: Option<(&std::path::Path, &std::path::Path)>) -> String {
    let port = relay.port().to_string();
    let server = format!("127.0.0.1:{port}");
    let mut args = vec![
        "--server",
        &server,
        "--tls",
        "--ehlo",
        "laptop.test",
        "--from",
        "me@laptop.test",
        "--to",
        "friend@elsewhere.example",
        "--timeout",
        "15",
    ];
    let (c, k);
    if let Some((cert, key)) = cert {
        c = cert.display().to_string();
        k = key.display().to_string();
        args.extend(["--tls-cert", &c, "--tls-key", &k]);
    }
    let out = Command::new("swaks")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("swaks is installed (apt-get install swaks)");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
#[ignore = "interop: needs swaks (installed by .ci/run)"]
fn interop_swaks_with_a_listed_certificate_relays_and_without_one_is_refused() {
    let (relay, pki) = setup_with("swaks", &|laptop| md5_line(&laptop.der), "", &[""]);
    let cert = relay.dir.write("laptop.pem", &pki.laptop.cert_pem);
    let key = relay.dir.write("laptop.key", &pki.laptop.key_pem);

    let with = swaks(&relay, Some((&cert, &key)));
    assert!(
        with.contains("<~  250 2.0.0 Ok: queued as"),
        "{with}\n{}",
        relay.log()
    );
    relay.wait_log("Trusted TLS connection established");

    let without = swaks(&relay, None);
    assert!(
        without.contains("<~* 554 5.7.1 <friend@elsewhere.example>: Relay access denied"),
        "{without}\n{}",
        relay.log()
    );
    assert!(relay.stop().success());
}

// ---------------------------------------------------------------------------------------
// Certificates made by certrelayd itself.

fn certrelayd(dir: &TempDir, args: &[&str]) -> std::process::Output {
    certrelay_testkit::certrelayd(dir.path(), args)
}

fn certrelayd_ok(dir: &TempDir, args: &[&str]) -> std::process::Output {
    certrelay_testkit::certrelayd_ok(dir.path(), args)
}

/// A relay whose CA, certificate and key `certrelayd ca init` made, with an empty
/// `relay_clientcerts`. Returns the relay, its port and its directory as text.
fn relay_with_its_own_ca(label: &str) -> (Relay, u16, String) {
    let dir = TempDir::new(label);
    dir.write("relay_clientcerts", "# laptops\n");
    write_main(&dir, "");
    let port = free_port();
    dir.write(
        "master.cf",
        &format!("127.0.0.1:{port} inet n - n - - smtpd\n"),
    );
    let d = dir.path().to_str().unwrap().to_owned();
    let init = certrelayd_ok(&dir, &["ca", "init", "--hostname", "relay.test"]);
    assert!(String::from_utf8_lossy(&init.stdout).contains("smtpd_tls_CAfile = "));
    (Relay::start(dir, vec![port]), port, d)
}

/// A laptop identity from PEM files: the first certificate of `cert_file`, the key of
/// `key_file` (they may be one file).
fn laptop_from_files(cert_file: &str, key_file: &str) -> Issued {
    let cert_pem = std::fs::read_to_string(cert_file).unwrap();
    Issued {
        der: parse_certificates(cert_pem.as_bytes()).unwrap()[0].to_vec(),
        key_pem: std::fs::read_to_string(key_file).unwrap(),
        cert_pem,
    }
}

#[test]
fn an_issued_laptop_relays_and_is_refused_once_revoked() {
    let (relay, port, d) = relay_with_its_own_ca("issue-revoke");
    let issue = certrelayd_ok(&relay.dir, &["ca", "issue", "--out", &d, "bob"]);
    let said = String::from_utf8_lossy(&issue.stdout).into_owned();
    assert!(said.contains("the running relay (pid "), "{said}");
    assert!(said.contains("loaded the change"), "{said}");
    relay.wait_log("configuration reloaded");
    let bob = laptop_from_files(&format!("{d}/bob.pem"), &format!("{d}/bob.pem"));
    let ca_pem = std::fs::read_to_string(format!("{d}/ca.pem")).unwrap();
    let (mut s, _) = Smtp::start(port, &ca_pem, Some(&bob));
    assert!(s.mail("someone@example.org").is_ok(), "{}", relay.log());
    relay.wait_log("Trusted TLS connection established");

    certrelayd_ok(&relay.dir, &["revoke", "bob"]);
    relay.wait_log_count("configuration reloaded", 2);
    let (mut s, _) = Smtp::start(port, &ca_pem, Some(&bob));
    assert_eq!(
        s.mail("someone@example.org"),
        Err("554 5.7.1 <someone@example.org>: Relay access denied".to_owned())
    );
}

#[test]
fn a_laptop_csr_signed_with_ca_sign_and_a_fingerprint_given_to_allow_both_relay() {
    let (relay, port, d) = relay_with_its_own_ca("sign-allow");
    let ca_pem = std::fs::read_to_string(format!("{d}/ca.pem")).unwrap();
    // certrelay keygen: NAME.key, NAME.csr and a self-signed NAME.pem.
    let keygen = |name: &str| run_ok("certrelay", &["keygen", "--out", &d, name]);

    // The laptop keeps its key; the relay signs its request.
    keygen("alice");
    let signed_dir = TempDir::new("sign-allow-out");
    let out_dir = signed_dir.path().to_str().unwrap();
    let csr = format!("{d}/alice.csr");
    certrelayd_ok(
        &relay.dir,
        &["ca", "sign", "--out", out_dir, "--name", "alice", &csr],
    );
    relay.wait_log("configuration reloaded");
    let alice = laptop_from_files(&format!("{out_dir}/alice.pem"), &format!("{d}/alice.key"));
    let (mut s, _) = Smtp::start(port, &ca_pem, Some(&alice));
    assert!(s.mail("someone@example.org").is_ok(), "{}", relay.log());
    relay.wait_log("Trusted TLS connection established");

    // A self-signed laptop certificate, listed by its fingerprint.
    keygen("carol");
    let carol = laptop_from_files(&format!("{d}/carol.pem"), &format!("{d}/carol.key"));
    let (mut s, _) = Smtp::start(port, &ca_pem, Some(&carol));
    assert!(s
        .mail("someone@example.org")
        .unwrap_err()
        .starts_with("554 5.7.1"));
    let fp = Fingerprint::of(DigestKind::Sha256, &carol.der).to_string();
    certrelayd_ok(&relay.dir, &["allow", &fp, "carol"]);
    relay.wait_log_count("configuration reloaded", 2);
    let table = std::fs::read_to_string(format!("{d}/relay_clientcerts")).unwrap();
    assert!(table.contains(&format!("{fp} carol")), "{table}");
    let (mut s, _) = Smtp::start(port, &ca_pem, Some(&carol));
    assert!(s.mail("someone@example.org").is_ok(), "{}", relay.log());
}

// ---------------------------------------------------------------------------------------
// Changes to the map reach the running relay, and the commands say whether they did.

/// The text of a command's standard output and error, together.
fn said(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// MAIL and RCPT only: the RCPT reply (the transaction is reset after).
fn rcpt_reply(s: &mut Smtp, rcpt: &str) -> String {
    let mail = s.cmd("MAIL FROM:<me@laptop.test>");
    assert_eq!(mail, "250 2.1.0 Ok");
    let reply = s.cmd(&format!("RCPT TO:<{rcpt}>"));
    assert_eq!(s.cmd("RSET"), "250 2.0.0 Ok");
    reply
}

#[test]
fn a_revoked_certificate_relays_no_more_in_sessions_opened_before_the_revoke() {
    let (relay, pki) = setup_with("revoke-open", &|l| md5_line(&l.der), "", &[""]);
    let config = client_config(
        &pki.ca.cert_pem,
        Some((&pki.laptop.cert_pem, &pki.laptop.key_pem)),
    );
    // A full handshake, then a second connection that resumes its TLS session.
    let (mut full, _) = Smtp::start_with(relay.port(), config.clone());
    assert_eq!(rcpt_reply(&mut full, "a@elsewhere.example"), "250 2.1.5 Ok");
    let (mut resumed, _) = Smtp::start_with(relay.port(), config);
    relay.wait_log("Trusted TLS connection reused from");
    assert_eq!(
        rcpt_reply(&mut resumed, "a@elsewhere.example"),
        "250 2.1.5 Ok"
    );

    let out = certrelayd(&relay.dir, &["revoke", "laptop"]);
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains("loaded the change (configuration generation 2)"),
        "{}",
        said(&out)
    );
    // Both sessions stay open; their next transaction is refused relay.
    for s in [&mut full, &mut resumed] {
        assert_eq!(
            rcpt_reply(s, "b@elsewhere.example"),
            "554 5.7.1 <b@elsewhere.example>: Relay access denied",
            "{}",
            relay.log()
        );
    }
    relay.wait_log_count(
        "client certificate no longer listed in relay_clientcerts",
        2,
    );
    // Mail for the relay's own domain needs no certificate and still goes.
    assert_eq!(
        rcpt_reply(&mut full, "postmaster@relay.test"),
        "250 2.1.5 Ok"
    );
}

#[test]
fn revoke_changes_nothing_while_the_configuration_has_an_error() {
    // Not watched: no reload but the one `revoke` would ask for.
    let no_watch = "certrelay_config_watch = no\n";
    let (relay, pki) = setup_with("revoke-broken", &|l| md5_line(&l.der), no_watch, &[""]);
    let main = std::fs::read_to_string(relay.dir.path().join("main.cf")).unwrap();
    let line = main.lines().count() + 1;
    relay
        .dir
        .write("main.cf", &format!("{main}smtpd_timeout = banana\n"));
    let table = std::fs::read_to_string(relay.dir.path().join("relay_clientcerts")).unwrap();

    let out = certrelayd(&relay.dir, &["revoke", "laptop"]);
    let text = said(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let main_cf = relay.dir.path().join("main.cf");
    assert!(
        text.contains(&format!(
            "{}:{line}: error: smtpd_timeout",
            main_cf.display()
        )),
        "{text}"
    );
    assert!(text.contains("nothing was changed"), "{text}");
    assert_eq!(
        std::fs::read_to_string(relay.dir.path().join("relay_clientcerts")).unwrap(),
        table
    );
    let (mut s, _) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(&pki.laptop));
    assert_eq!(rcpt_reply(&mut s, "a@elsewhere.example"), "250 2.1.5 Ok");
    assert!(!relay.log().contains("reload --"), "{}", relay.log());
}

#[test]
fn allow_fails_when_the_running_relay_does_not_report_the_reload() {
    let (relay, pki) = setup("allow-silent", "", "", &[""]);
    relay.signal("STOP");
    let fp = Fingerprint::of(DigestKind::Sha256, &pki.laptop.der).to_string();
    let out = certrelayd(&relay.dir, &["allow", &fp, "laptop"]);
    relay.signal("CONT");
    let text = said(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "the running relay (pid {}) did not report loading the change within 5 s",
            relay.pid()
        )),
        "{text}"
    );
    // The signal was sent: once it runs again, the relay loads the change.
    relay.wait_log("configuration reloaded");
    let (mut s, _) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(&pki.laptop));
    assert_eq!(rcpt_reply(&mut s, "a@elsewhere.example"), "250 2.1.5 Ok");
}

#[test]
fn a_pid_file_naming_another_program_is_not_signalled() {
    let dir = TempDir::new("pid-other");
    write_main(&dir, "");
    let ca = Ca::new("Test CA");
    let server = ca.issue("relay.test", &["relay.test"], false);
    dir.write("relay.pem", &server.cert_pem);
    dir.write("relay.key", &server.key_pem);
    dir.write("ca.pem", &ca.cert_pem);
    dir.write("relay_clientcerts", "");
    // No relay runs, and the pid file names a process that a signal would end.
    binary("certrelayd");
    let mut victim = Command::new("sleep").arg("600").spawn().unwrap();
    std::fs::create_dir_all(dir.path().join("spool")).unwrap();
    dir.write("spool/certrelayd.pid", &format!("{}\n", victim.id()));

    let laptop = ca.issue("laptop", &[], true);
    let fp = Fingerprint::of(DigestKind::Sha256, &laptop.der).to_string();
    let out = certrelayd(&dir, &["allow", &fp, "laptop"]);
    let text = said(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "no running relay found ({}: process {} is not a running certrelayd)",
            dir.path().join("spool/certrelayd.pid").display(),
            victim.id()
        )),
        "{text}"
    );
    let out = certrelayd(&dir, &["flush"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(said(&out).contains("no running relay"), "{}", said(&out));
    std::thread::sleep(Duration::from_millis(200));
    let status = victim.try_wait().unwrap();
    assert!(
        status.is_none(),
        "the process named by the pid file was signalled: {status:?}"
    );
    let _ = victim.kill();
    let _ = victim.wait();
    // The change was made: it applies at the next start.
    let table = std::fs::read_to_string(dir.path().join("relay_clientcerts")).unwrap();
    assert!(table.contains(&format!("{fp} laptop")), "{table}");
}

// ---------------------------------------------------------------------------------------
// Onward delivery through the queue runner, and what a crash leaves.

/// Lets the relay deliver to the sink on `port` (the fixtures hold mail by default).
fn deliver_to(port: u16) -> String {
    format!("relayhost = [127.0.0.1]:{port}\ndefer_transports =\n")
}

#[test]
fn accepted_mail_is_delivered_onward_to_the_relayhost() {
    let sink = Sink::start(SinkOptions::default());
    let sink_port = sink.port();
    let (relay, pki) = setup_with(
        "onward",
        &|l| md5_line(&l.der),
        &deliver_to(sink_port),
        &[""],
    );
    let (mut s, _) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(&pki.laptop));
    let id = s
        .mail("friend@elsewhere.example")
        .unwrap_or_else(|r| panic!("{r}"));
    let got = wait_until("the sink to receive the message", || sink.messages().pop());
    assert_eq!(got.sender, "me@laptop.test");
    assert_eq!(got.recipients, ["friend@elsewhere.example"]);
    assert!(
        got.text().contains(&format!("with ESMTPS id {id}")),
        "{}",
        got.text()
    );
    assert!(
        got.text().ends_with("hello from the laptop\r\n"),
        "{}",
        got.text()
    );
    relay.wait_log(&format!(
        "{id}: to=<friend@elsewhere.example>, relay=127.0.0.1[127.0.0.1]:{sink_port}"
    ));
    relay.wait_log("status=sent");
    // Delivered: nothing left in the queue.
    wait_until("the queue to empty", || {
        let left = std::fs::read_dir(relay.dir.path().join("spool/queue"))
            .ok()?
            .count();
        (left == 0).then_some(())
    });
}

#[test]
fn sighup_applies_new_onward_delivery_settings() {
    // Held at first (defer_transports = smtp, relayhost the discard port).
    let (relay, pki) = setup_with("onward-reload", &|l| md5_line(&l.der), "", &[""]);
    let (mut s, _) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(&pki.laptop));
    let id = s
        .mail("friend@elsewhere.example")
        .unwrap_or_else(|r| panic!("{r}"));
    drop(s);
    let sink = Sink::start(SinkOptions::default());
    let sink_port = sink.port();
    // A broken relayhost is refused and changes nothing.
    let main = std::fs::read_to_string(relay.dir.path().join("main.cf")).unwrap();
    relay.dir.write(
        "main.cf",
        &format!("{main}relayhost = [127.0.0.1]:notaport\n"),
    );
    relay.signal("HUP");
    relay.wait_log("configuration not reloaded (onward delivery settings)");
    assert!(relay.log().contains("relayhost"), "{}", relay.log());
    // A new relayhost and no more hold: the queued message leaves without a flush.
    relay
        .dir
        .write("main.cf", &format!("{main}{}", deliver_to(sink_port)));
    relay.signal("HUP");
    relay.wait_log("new sessions and deliveries use it");
    let got = wait_until("the sink to receive the held message", || {
        sink.messages().pop()
    });
    assert!(
        got.text().contains(&format!("with ESMTPS id {id}")),
        "{}",
        got.text()
    );
    relay.wait_log(&format!(
        "{id}: to=<friend@elsewhere.example>, relay=127.0.0.1[127.0.0.1]:{sink_port}"
    ));
}

#[test]
fn a_message_acknowledged_before_a_crash_is_delivered_once_after_restart() {
    let sink = Sink::start(SinkOptions::default());
    let sink_port = sink.port();
    let (relay, pki) = setup_with("crash-after-250", &|l| md5_line(&l.der), "", &[""]);
    let (mut s, _) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(&pki.laptop));
    let id = s
        .mail("friend@elsewhere.example")
        .unwrap_or_else(|r| panic!("{r}"));
    drop(s);
    relay.signal("KILL");
    let Relay { daemon, dir, ports } = relay;
    let _ = daemon.stop_waiting();
    // The same directory, now allowed to deliver.
    write_main(&dir, &deliver_to(sink_port));
    let relay = Relay::start(dir, ports);
    let got = wait_until("the sink to receive the message", || sink.messages().pop());
    assert!(got.text().contains(&format!("id {id}")), "{}", got.text());
    relay.wait_log("status=sent");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.messages().len(), 1, "delivered exactly once");
}

#[test]
fn a_crash_during_data_delivers_nothing() {
    let sink = Sink::start(SinkOptions::default());
    let sink_port = sink.port();
    let (relay, pki) = setup_with("crash-in-data", &|l| md5_line(&l.der), "", &[""]);
    let (mut s, _) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(&pki.laptop));
    assert!(s.cmd("MAIL FROM:<me@laptop.test>").starts_with("250"));
    assert!(s
        .cmd("RCPT TO:<friend@elsewhere.example>")
        .starts_with("250"));
    assert!(s.cmd("DATA").starts_with("354"));
    s.send(b"Subject: half\r\n\r\nthe first half of a message that never ends\r\n");
    std::thread::sleep(Duration::from_millis(300));
    relay.signal("KILL");
    let Relay { daemon, dir, ports } = relay;
    let _ = daemon.stop_waiting();
    write_main(&dir, &deliver_to(sink_port));
    let relay = Relay::start(dir, ports);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        sink.messages().is_empty(),
        "nothing was acknowledged, nothing is delivered"
    );
    let tmp = std::fs::read_dir(relay.dir.path().join("spool/tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp, 0, "the partial file was removed at start");
}

#[test]
fn queue_delete_and_flush_commands_act_on_the_running_relay() {
    let sink = Sink::start(SinkOptions::default());
    let sink_port = sink.port();
    // Held (defer_transports = smtp) until a flush.
    let hold = format!("relayhost = [127.0.0.1]:{sink_port}\n");
    let (relay, pki) = setup_with("queue-cmds", &|l| md5_line(&l.der), &hold, &[""]);
    let (mut s, _) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(&pki.laptop));
    let first = s.mail("one@elsewhere.example").unwrap();
    let second = s.mail("two@elsewhere.example").unwrap();
    drop(s);

    let listing = certrelayd(&relay.dir, &["queue"]);
    let text = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(text.contains(&first) && text.contains(&second), "{text}");
    assert!(text.contains("one@elsewhere.example"), "{text}");
    assert!(text.contains("in 2 Requests"), "{text}");

    let deleted = certrelayd(&relay.dir, &["delete", &first]);
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    let again = certrelayd(&relay.dir, &["delete", &first]);
    assert_eq!(again.status.code(), Some(1));

    std::thread::sleep(Duration::from_millis(300));
    assert!(
        sink.messages().is_empty(),
        "held mail left before the flush"
    );
    let flushed = certrelayd(&relay.dir, &["flush"]);
    assert!(
        flushed.status.success(),
        "{}",
        String::from_utf8_lossy(&flushed.stderr)
    );
    let got = wait_until("the flushed message", || sink.messages().pop());
    assert_eq!(got.recipients, ["two@elsewhere.example"]);
    relay.wait_log("status=sent");
    assert_eq!(sink.messages().len(), 1, "the deleted message never left");
}

/// A tiny file system mounted for one test, unmounted when dropped.
struct TinyFs(std::path::PathBuf);

impl TinyFs {
    fn mount(label: &str, size: &str) -> TinyFs {
        let dir =
            std::env::temp_dir().join(format!("certrelay-tinyfs-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                dir.to_str().unwrap(),
            ])
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        TinyFs(dir)
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
#[ignore = "needs root: mounts a tmpfs (run by .ci/run)"]
fn a_full_spool_answers_452_and_never_250() {
    let fs = TinyFs::mount("full", "256k");
    let spool = fs.0.join("spool");
    let extra = format!("queue_directory = {}\n", spool.display());
    let (relay, pki) = setup_with("full-spool", &|l| md5_line(&l.der), &extra, &[""]);
    // Leave almost no room.
    let filler = vec![b'x'; 200 * 1024];
    let _ = std::fs::write(fs.0.join("filler"), &filler);
    let (mut s, _) = Smtp::start(relay.port(), &pki.ca.cert_pem, Some(&pki.laptop));
    assert!(s.cmd("MAIL FROM:<me@laptop.test>").starts_with("250"));
    assert!(s
        .cmd("RCPT TO:<friend@elsewhere.example>")
        .starts_with("250"));
    assert!(s.cmd("DATA").starts_with("354"));
    let line = "y".repeat(998) + "\r\n";
    let mut body = String::from("Subject: big\r\n\r\n");
    while body.len() < 200 * 1024 {
        body.push_str(&line);
    }
    body.push_str(".\r\n");
    s.send(body.as_bytes());
    let reply = s.reply();
    assert_eq!(
        reply,
        "452 4.3.1 Insufficient system storage",
        "{}",
        relay.log()
    );
    // The session goes on, and nothing is left half-written.
    assert!(s.cmd("NOOP").starts_with("250"));
    let queued = std::fs::read_dir(spool.join("queue")).unwrap().count();
    assert_eq!(queued, 0);
}
