//! DKIM signing at the relay, end to end: keys made with `certrelayd dkim keygen`, a listed
//! laptop submitting through the real `certrelayd` over TLS, and the message taken at a
//! sink behind it. The signature is checked here with ring against the DNS record that
//! keygen printed (always run), and by Debian's python3-dkim (`#[ignore]`: needs apt).

use certrelay_core::dkim::{signed_data, MessageHasher};
use certrelay_core::fingerprint::{DigestKind, Fingerprint};
use certrelay_core::message::HeaderSection;
use certrelay_testkit::daemon::Daemon;
use certrelay_testkit::pki::client_config;
use certrelay_testkit::pki::{Ca, Issued};
use certrelay_testkit::sink::{Received, Sink, SinkOptions};
use certrelay_testkit::{binary, certrelayd, certrelayd_ok, free_port, wait_until, TempDir};
use ring::signature::{UnparsedPublicKey, ED25519, RSA_PKCS1_2048_8192_SHA256};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// A small blocking SMTP client, with or without TLS.

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

struct Smtp {
    stream: Option<Stream>,
    pending: Vec<u8>,
}

impl Smtp {
    fn io(&mut self) -> &mut dyn ReadWrite {
        match self.stream.as_mut().expect("stream") {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.as_mut(),
        }
    }

    fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            while !self.pending.windows(2).any(|w| w == b"\r\n") {
                let mut buf = [0u8; 4096];
                let n = self.io().read(&mut buf).expect("read");
                assert!(n > 0, "connection closed; got {lines:?}");
                self.pending.extend_from_slice(&buf[..n]);
            }
            let i = self.pending.windows(2).position(|w| w == b"\r\n").unwrap();
            let line: Vec<u8> = self.pending.drain(..i + 2).collect();
            let line = String::from_utf8_lossy(&line[..i]).into_owned();
            let last = line.len() < 4 || line.as_bytes()[3] != b'-';
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        self.io()
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.reply()
    }

    /// Connects; with `client`, goes into TLS presenting that certificate.
    fn open(port: u16, tls: Option<(&str, &Issued)>) -> Smtp {
        let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut s = Smtp {
            stream: Some(Stream::Plain(tcp)),
            pending: Vec::new(),
        };
        assert!(s.reply().starts_with("220"));
        assert!(s.cmd("EHLO laptop.test").starts_with("250"));
        if let Some((ca_pem, client)) = tls {
            assert!(s.cmd("STARTTLS").starts_with("220"));
            let Some(Stream::Plain(tcp)) = s.stream.take() else {
                unreachable!()
            };
            let name = rustls::pki_types::ServerName::try_from("relay.test").unwrap();
            let conn =
                rustls::ClientConnection::new(client_config(ca_pem, Some(client.pems())), name)
                    .unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(&mut tls.sock).expect("handshake");
            }
            s.stream = Some(Stream::Tls(Box::new(tls)));
            assert!(s.cmd("EHLO laptop.test").starts_with("250"));
        }
        s
    }

    /// Sends one message; returns its queue id.
    fn send(&mut self, from_header: &str, rcpt: &str) -> String {
        self.send_with(from_header, rcpt, "")
    }

    /// As [`send`](Self::send), with `more` (CR LF lines) at the end of the body.
    fn send_with(&mut self, from_header: &str, rcpt: &str, more: &str) -> String {
        self.send_as("me@laptop.test", from_header, rcpt, more)
    }

    /// As [`send_with`](Self::send_with), with the envelope sender `sender`.
    fn send_as(&mut self, sender: &str, from_header: &str, rcpt: &str, more: &str) -> String {
        let r = self.cmd(&format!("MAIL FROM:<{sender}>"));
        assert!(r.starts_with("250"), "{r}");
        let r = self.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert!(r.starts_with("250"), "{r}");
        assert!(self.cmd("DATA").starts_with("354"));
        let message = format!(
            "From: {from_header}\r\nTo: <{rcpt}>\r\nSubject: DKIM  test\r\n\
             Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <{}@laptop.test>\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n\
             Hello  there. \r\n..a dot-stuffed line\r\n{more}\r\n.\r\n",
            free_port()
        );
        self.io().write_all(message.as_bytes()).unwrap();
        let r = self.reply();
        r.strip_prefix("250 2.0.0 Ok: queued as ")
            .unwrap_or_else(|| panic!("{r}"))
            .to_owned()
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

// ---------------------------------------------------------------------------------------
// The relay with two keys: RSA for example.org, Ed25519 for example.net.

struct Setup {
    dir: TempDir,
    ca: Ca,
    laptop: Issued,
    /// The TXT record text (the quoted strings joined) by domain.
    records: Vec<(String, String)>,
    /// The keys-map lines keygen printed.
    map_lines: Vec<String>,
}

/// What `dkim keygen` printed: the DNS record's text and the keys-map line.
fn keygen(dir: &TempDir, domain: &str, selector: &str, ed25519: bool) -> (String, String) {
    let mut args = vec!["dkim", "keygen", domain, "--selector", selector];
    if ed25519 {
        args.push("--ed25519");
    }
    let out = certrelayd_ok(dir.path(), &args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let record_line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{selector}._domainkey.{domain}. IN TXT \"")))
        .unwrap_or_else(|| panic!("no record in {stdout}"));
    let strings = record_line.split_once(" IN TXT ").unwrap().1;
    for s in strings.split("\" \"") {
        assert!(s.trim_matches('"').len() <= 255, "{record_line}");
    }
    let record: String = strings
        .split("\" \"")
        .map(|s| s.trim_matches('"'))
        .collect();
    let map_line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{domain} {selector} /")))
        .unwrap_or_else(|| panic!("no map line in {stdout}"))
        .to_owned();
    (record, map_line)
}

fn setup(label: &str) -> Setup {
    let dir = TempDir::new(label);
    let ca = Ca::new("Test CA");
    let server = ca.issue("relay.test", &["relay.test"], false);
    let laptop = ca.issue("laptop", &[], true);
    dir.write("relay.pem", &server.cert_pem);
    dir.write("relay.key", &server.key_pem);
    dir.write("ca.pem", &ca.cert_pem);
    dir.write(
        "relay_clientcerts",
        &format!("{} laptop\n", Fingerprint::of(DigestKind::Md5, &laptop.der)),
    );
    dir.write("virtual", "postmaster admin@elsewhere.example\n");
    let (org, org_line) = keygen(&dir, "example.org", "mail", false);
    let (net, net_line) = keygen(&dir, "example.net", "ed", true);
    Setup {
        dir,
        ca,
        laptop,
        records: vec![("example.org".into(), org), ("example.net".into(), net)],
        map_lines: vec![org_line, net_line],
    }
}

fn write_config(s: &Setup, sink_port: u16, port: u16) {
    write_config_with(s, sink_port, port, "");
}

/// [`write_config`] with `more` at the end of main.cf.
fn write_config_with(s: &Setup, sink_port: u16, port: u16, more: &str) {
    let d = s.dir.path().display();
    s.dir.write("dkim_keys", &(s.map_lines.join("\n") + "\n"));
    s.dir.write(
        "main.cf",
        &format!(
            "myhostname = relay.test\nmail_owner = nobody\nsmtpd_peername_lookup = no\n\
             mydestination = relay.test\nmynetworks = 127.0.0.0/8\n\
             relayhost = [127.0.0.1]:{sink_port}\nqueue_directory = {d}/spool\n\
             smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {d}/relay.pem\n\
             smtpd_tls_key_file = {d}/relay.key\nsmtpd_tls_CAfile = {d}/ca.pem\n\
             smtpd_tls_ask_ccert = yes\nrelay_clientcerts = hash:{d}/relay_clientcerts\n\
             virtual_alias_maps = hash:{d}/virtual\n\
             smtpd_recipient_restrictions = permit_mynetworks, permit_tls_clientcerts, \
             reject_unauth_destination\n\
             dkim_signing_keys = texthash:{d}/dkim_keys\n{more}"
        ),
    );
    s.dir.write(
        "master.cf",
        &format!("127.0.0.1:{port} inet n - n - - smtpd\n"),
    );
}

/// The message the sink took for queue id `id` (its `Received:` names it).
fn taken(sink: &Sink, id: &str) -> Received {
    wait_until(&format!("message {id} at the sink"), || {
        sink.messages()
            .into_iter()
            .find(|m| m.text().contains(&format!(" id {id}")))
    })
}

// ---------------------------------------------------------------------------------------
// Verification with ring, over the core's canonicalization.

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for b in text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
    {
        let v = ALPHABET.iter().position(|&a| a == b).expect("base64") as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// One DER element at the start of `der`: (tag, contents, rest).
fn der(der: &[u8]) -> (u8, &[u8], &[u8]) {
    let (tag, first) = (der[0], der[1]);
    let (len, at) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        let len = der[2..2 + n]
            .iter()
            .fold(0usize, |a, &b| a << 8 | b as usize);
        (len, 2 + n)
    };
    (tag, &der[at..at + len], &der[at + len..])
}

/// The RSAPublicKey inside a SubjectPublicKeyInfo.
fn rsa_public_key(spki: &[u8]) -> Vec<u8> {
    let (_, seq, _) = der(spki);
    let (_, _algorithm, rest) = der(seq);
    let (tag, bits, _) = der(rest);
    assert_eq!(tag, 0x03);
    bits[1..].to_vec()
}

/// The tags of a DKIM-Signature value, whitespace removed.
fn tags(value: &str) -> Vec<(String, String)> {
    value
        .split(';')
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            let (k, v) = t.split_once('=').unwrap();
            (k.trim().to_owned(), v.split_whitespace().collect())
        })
        .collect()
}

fn tag<'a>(tags: &'a [(String, String)], name: &str) -> &'a str {
    &tags.iter().find(|(k, _)| k == name).unwrap().1
}

/// Verifies the first header field of `message`, a DKIM-Signature, against `record` (the
/// TXT text), as a receiver does. Returns the signature's tags.
fn verify(message: &str, record: &str) -> Result<Vec<(String, String)>, String> {
    let (head, _) = message.split_once("\r\n\r\n").unwrap();
    let header = HeaderSection::parse(format!("{head}\r\n").as_bytes());
    let field = header
        .fields()
        .iter()
        .find(|f| f.is("DKIM-Signature"))
        .ok_or("no DKIM-Signature")?;
    let raw = String::from_utf8(field.as_bytes().to_vec()).unwrap();
    let t = tags(raw.split_once(':').unwrap().1);
    // The body hash over the message as received.
    let mut hasher = MessageHasher::new();
    hasher.update(message.as_bytes());
    let hashed = hasher.finish().map_err(|e| e.to_string())?;
    if certrelay_core::dkim::base64(&hashed.body_hash()) != tag(&t, "bh") {
        return Err("body hash differs".into());
    }
    // The field with its b= value taken out.
    let b_at = raw.rfind("b=").unwrap() + 2;
    let without_b = format!("{}\r\n", &raw[..b_at]);
    assert!(
        raw[..b_at - 2].trim_end().ends_with(';'),
        "b= is the last tag"
    );
    let names: Vec<&str> = tag(&t, "h").split(':').collect();
    let data = signed_data(&header, &names, without_b.as_bytes());
    let signature = base64_decode(tag(&t, "b"));
    let rec = tags(record);
    let p = base64_decode(tag(&rec, "p"));
    let checked = match (tag(&t, "a"), tag(&rec, "k")) {
        ("rsa-sha256", "rsa") => {
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, rsa_public_key(&p))
                .verify(&data, &signature)
        }
        ("ed25519-sha256", "ed25519") => {
            let digest = ring::digest::digest(&ring::digest::SHA256, &data);
            UnparsedPublicKey::new(&ED25519, &p).verify(digest.as_ref(), &signature)
        }
        other => return Err(format!("algorithm and key type {other:?}")),
    };
    checked.map_err(|_| "bad signature".to_owned())?;
    Ok(t)
}

/// The relay running with [`setup`]'s keys in front of a sink.
fn start(label: &str) -> (Setup, Sink, Daemon, u16) {
    start_with(label, |_| String::new())
}

/// As [`start`], with what `more` returns (given the setup) at the end of main.cf.
fn start_with(label: &str, more: impl FnOnce(&Setup) -> String) -> (Setup, Sink, Daemon, u16) {
    let s = setup(label);
    let sink = Sink::start(SinkOptions::default());
    let port = free_port();
    let more = more(&s);
    write_config_with(&s, sink.port(), port, &more);
    let d = s.dir.path().display().to_string();
    let daemon = Daemon::start(&binary("certrelayd"), &["-c", &d], "daemon started");
    (s, sink, daemon, port)
}

fn record<'a>(s: &'a Setup, domain: &str) -> &'a str {
    &s.records.iter().find(|(d, _)| d == domain).unwrap().1
}

#[test]
fn a_listed_clients_mail_is_signed_and_verifies_with_the_published_keys() {
    let (s, sink, relay, port) = start("dkim-sign");
    let mut smtp = Smtp::open(port, Some((&s.ca.cert_pem, &s.laptop)));
    let rsa_id = smtp.send("Alice <alice@Example.ORG>", "friend@elsewhere.example");
    let ed_id = smtp.send("bob@example.net", "friend@elsewhere.example");
    smtp.cmd("QUIT");

    let rsa = taken(&sink, &rsa_id).text();
    assert!(
        rsa.starts_with("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;"),
        "{rsa}"
    );
    let t = verify(&rsa, record(&s, "example.org")).unwrap_or_else(|e| panic!("{e}\n{rsa}"));
    assert_eq!(tag(&t, "d"), "example.org");
    assert_eq!(tag(&t, "s"), "mail");
    assert_eq!(
        tag(&t, "h"),
        "from:from:to:subject:subject:date:message-id:mime-version:content-type"
    );
    // The content after the signature is what the client sent, with the relay's Received:.
    let after = rsa.split_once("\r\nReceived: ").unwrap().1;
    assert!(
        after.contains("\r\nHello  there. \r\n.a dot-stuffed line\r\n"),
        "{rsa}"
    );

    let ed = taken(&sink, &ed_id).text();
    let t = verify(&ed, record(&s, "example.net")).unwrap_or_else(|e| panic!("{e}\n{ed}"));
    assert_eq!(tag(&t, "a"), "ed25519-sha256");
    assert_eq!(tag(&t, "d"), "example.net");
    // Another key does not verify it: the check above can fail.
    assert!(verify(
        &ed,
        &record(&s, "example.org").replace("k=rsa", "k=ed25519")
    )
    .is_err());
    let tampered = rsa.replace("Hello  there.", "Hello  There.");
    assert_eq!(
        verify(&tampered, record(&s, "example.org")),
        Err("body hash differs".to_owned())
    );
    relay.wait_log(&format!(
        "{rsa_id}: DKIM-Signature added: d=example.org s=mail a=rsa-sha256"
    ));

    // After a reload (as mail_owner, when started as root: the 0600 keys are kept from the
    // start), mail is still signed.
    relay.signal("HUP");
    relay.wait_log("configuration reloaded");
    let uid = std::process::Command::new("id")
        .arg("-u")
        .output()
        .unwrap()
        .stdout;
    if uid == b"0\n" {
        // Dropped to nobody: the key file is root's, and the copy read at start is used.
        relay.wait_log("keeping the copy read at start");
    }
    let mut smtp = Smtp::open(port, Some((&s.ca.cert_pem, &s.laptop)));
    let later = smtp.send("Alice <alice@example.org>", "friend@elsewhere.example");
    smtp.cmd("QUIT");
    let later = taken(&sink, &later).text();
    verify(&later, record(&s, "example.org")).unwrap_or_else(|e| panic!("{e}\n{later}"));
}

#[test]
fn mail_not_submitted_by_a_listed_client_or_without_a_key_is_not_signed() {
    let (s, sink, relay, port) = start("dkim-unsigned");
    // Permitted by mynetworks, with no certificate: relayed, not signed.
    let mut plain = Smtp::open(port, None);
    let mynetworks_id = plain.send("alice@example.org", "friend@elsewhere.example");
    plain.cmd("QUIT");
    // A listed client, but the From: domain is a subdomain of a key's domain: exact only.
    let mut listed = Smtp::open(port, Some((&s.ca.cert_pem, &s.laptop)));
    let sub_id = listed.send("carol@sub.example.org", "friend@elsewhere.example");
    listed.cmd("QUIT");

    for id in [&mynetworks_id, &sub_id] {
        let text = taken(&sink, id).text();
        assert!(!text.contains("DKIM-Signature"), "{text}");
        assert!(text.starts_with("Received: "), "{text}");
    }
    relay.wait_log(&format!(
        "{sub_id}: not DKIM-signed: no key for the From: domain sub.example.org"
    ));
    assert!(!relay.log().contains(&format!("{mynetworks_id}: DKIM")));
}

/// The stolen-certificate forgery: a laptop bound to `alice@example.net` sends with that
/// envelope sender and `From: ceo@example.net`. With `smtpd_sender_ccert_maps` the relay
/// signs only From: addresses the certificate's label owns; the forged one is delivered
/// unsigned, and the log says why.
#[test]
fn a_certificate_bound_to_senders_gets_only_its_own_from_addresses_signed() {
    let (s, sink, relay, port) = start_with("dkim-bound", |s| {
        let d = s.dir.path().display();
        s.dir.write(
            "relay_clientcerts",
            &format!(
                "{} alice\n",
                Fingerprint::of(DigestKind::Md5, &s.laptop.der)
            ),
        );
        s.dir.write("senders", "alice alice@example.net\n");
        // The envelope check first: the laptop on 127.0.0.1 is in mynetworks too.
        format!(
            "smtpd_sender_ccert_maps = texthash:{d}/senders\n\
             smtpd_recipient_restrictions = reject_sender_ccert_mismatch, permit_mynetworks, \
             permit_tls_clientcerts, reject_unauth_destination\n"
        )
    });
    let mut smtp = Smtp::open(port, Some((&s.ca.cert_pem, &s.laptop)));
    let rcpt = "friend@elsewhere.example";
    let own = smtp.send_as("alice@example.net", "Alice <alice@example.net>", rcpt, "");
    let forged = smtp.send_as("alice@example.net", "CEO <ceo@example.net>", rcpt, "");
    // The envelope sender is where mail is refused.
    let r = smtp.cmd("MAIL FROM:<ceo@example.net>");
    assert!(r.starts_with("250"), "{r}");
    let r = smtp.cmd(&format!("RCPT TO:<{rcpt}>"));
    assert!(
        r.starts_with(
            "553 5.7.1 <ceo@example.net>: Sender address rejected: not owned by \
             certificate alice"
        ),
        "{r}"
    );
    smtp.cmd("RSET");
    smtp.cmd("QUIT");

    let signed = taken(&sink, &own).text();
    let t = verify(&signed, record(&s, "example.net")).unwrap_or_else(|e| panic!("{e}\n{signed}"));
    assert_eq!(tag(&t, "d"), "example.net");
    relay.wait_log(&format!("{own}: DKIM-Signature added: d=example.net"));

    let text = taken(&sink, &forged).text();
    assert!(!text.contains("DKIM-Signature"), "{text}");
    assert!(text.starts_with("Received: "), "{text}");
    assert!(
        text.contains("\r\nFrom: CEO <ceo@example.net>\r\n"),
        "{text}"
    );
    relay.wait_log(&format!(
        "{forged}: not DKIM-signed: From: <ceo@example.net> is not owned by certificate alice"
    ));
    assert!(!relay
        .log()
        .contains(&format!("{forged}: DKIM-Signature added")));
}

#[test]
fn keygen_writes_a_private_key_file_and_refuses_to_overwrite_it() {
    let s = setup("dkim-keygen");
    let path = s.map_lines[0].split_whitespace().nth(2).unwrap().to_owned();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let pem = std::fs::read_to_string(&path).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");

    let again = certrelayd(
        s.dir.path(),
        &["dkim", "keygen", "example.org", "--selector", "mail"],
    );
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        pem,
        "left as it was"
    );

    certrelayd_ok(
        s.dir.path(),
        &[
            "dkim",
            "keygen",
            "example.org",
            "--selector",
            "mail",
            "--force",
        ],
    );
    assert_ne!(std::fs::read_to_string(&path).unwrap(), pem, "replaced");
    let bad = certrelayd(
        s.dir.path(),
        &["dkim", "keygen", "exa mple", "--selector", "x"],
    );
    assert_eq!(bad.status.code(), Some(64));
}

#[test]
fn check_names_the_keys_map_line_that_cannot_be_used() {
    let s = setup("dkim-check");
    write_config(&s, 9, free_port());
    let d = s.dir.path().display();
    s.dir.write(
        "dkim_keys",
        &format!(
            "{}\nexample.com onlyselector\nexample.edu sel {d}/missing.pem\nexample.int sel {d}/relay.pem\n",
            s.map_lines[0]
        ),
    );
    let out = certrelayd(s.dir.path(), &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("{d}/dkim_keys:2: ")), "{text}");
    assert!(
        text.contains("expected \"DOMAIN SELECTOR KEYFILE\""),
        "{text}"
    );
    assert!(text.contains(&format!("{d}/dkim_keys:3: ")), "{text}");
    assert!(text.contains("missing.pem: cannot read"), "{text}");
    assert!(text.contains(&format!("{d}/dkim_keys:4: ")), "{text}");
    assert!(!text.contains("dkim_keys:1:"), "{text}");
    // With only the good line, the configuration checks clean.
    s.dir.write("dkim_keys", &format!("{}\n", s.map_lines[0]));
    let out = certrelayd(s.dir.path(), &["check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Debian's python3-dkim (and python3-nacl for Ed25519) verifies the signatures against the
/// records `dkim keygen` printed. Needs `apt-get install python3-dkim python3-nacl`.
#[test]
#[ignore = "needs Debian's python3-dkim and python3-nacl"]
fn python_dkim_verifies_the_signatures() {
    let (s, sink, _relay, port) = start("dkim-python");
    let mut smtp = Smtp::open(port, Some((&s.ca.cert_pem, &s.laptop)));
    let ids = [
        (
            smtp.send("Alice <alice@example.org>", "friend@elsewhere.example"),
            "example.org",
        ),
        (
            smtp.send("bob@example.net", "friend@elsewhere.example"),
            "example.net",
        ),
    ];
    smtp.cmd("QUIT");
    for (id, domain) in ids {
        let message = taken(&sink, &id).text();
        let file = s.dir.write(&format!("{id}.eml"), &message);
        let script = "import sys, dkim\n\
            msg = open(sys.argv[1], 'rb').read()\n\
            record = sys.argv[2].encode()\n\
            ok = dkim.verify(msg, dnsfunc=lambda name, timeout=5: record)\n\
            print('verified' if ok else 'failed')\n\
            sys.exit(0 if ok else 1)\n";
        let out = std::process::Command::new("/usr/bin/python3")
            .args(["-c", script, file.to_str().unwrap(), record(&s, domain)])
            .output()
            .expect("run /usr/bin/python3");
        assert!(
            out.status.success(),
            "{domain}: {}{}\n{message}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The same check fails on a changed message: it can fail.
        let changed = s.dir.write(
            &format!("{id}.changed.eml"),
            &message.replace("DKIM  test", "DKIM test!"),
        );
        let out = std::process::Command::new("/usr/bin/python3")
            .args(["-c", script, changed.to_str().unwrap(), record(&s, domain)])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{domain}: a changed subject verified"
        );
    }
}

#[test]
fn large_messages_are_signed_over_all_their_content() {
    let (s, sink, _relay, port) = start("dkim-large");
    let line = "0123456789 abcdefghijklmnopqrstuvwxyz\t ABCDEFGHIJKLMNOPQRSTUVWXYZ  \r\n";
    let mut smtp = Smtp::open(port, Some((&s.ca.cert_pem, &s.laptop)));
    // Past the size kept in memory (read back whole from the spool), and past the size read
    // whole (streamed from the spool file, and written to it in several batches).
    let ids: Vec<String> = [600, 6000]
        .iter()
        .map(|&n| {
            let more = line.repeat(n);
            smtp.send_with("alice@example.org", "friend@elsewhere.example", &more)
        })
        .collect();
    smtp.cmd("QUIT");
    for id in ids {
        let text = taken(&sink, &id).text();
        assert!(text.len() > 40_000, "{}", text.len());
        verify(&text, record(&s, "example.org")).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert!(
            text.ends_with(&format!("{line}\r\n")),
            "the content is whole"
        );
    }
}
