//! Interop with a real Postfix (Debian's 3.7) on loopback, in both roles of the recipe:
//! Postfix as the laptop delivering through `certrelayd`, and Postfix as the relay taking
//! mail from `certrelay`. Each test runs its own Postfix instance (see
//! `certrelay_testkit::postfix`) and its own sink; every wait is bounded.
//!
//! Run with `cargo test -p certrelay-suite --test interop_postfix -- --ignored`, as root
//! (Postfix's master must start as root), with `postfix` installed.

use certrelay_core::fingerprint::{DigestKind, Fingerprint};
use certrelay_core::queue::{Envelope, RecipientState};
use certrelay_shell::spool::Spool;
use certrelay_testkit::daemon::Daemon;
use certrelay_testkit::free_port;
use certrelay_testkit::pki::{Ca, Issued};
use certrelay_testkit::postfix::{Postfix, PostfixSetup};
use certrelay_testkit::sink::{Sink, SinkOptions};
use certrelay_testkit::wait_until;
use certrelay_testkit::{binary, TempDir};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Certificates: one CA; the relay's certificate names 127.0.0.1 (IP SAN), the name both
// clients check when the relayhost is `[127.0.0.1]:port`.

struct Pki {
    ca: Ca,
    relay: Issued,
    laptop: Issued,
}

impl Pki {
    fn new() -> Pki {
        let ca = Ca::new("Test CA");
        let relay = ca.issue("relay.test", &["127.0.0.1"], false);
        let laptop = ca.issue("laptop", &[], true);
        Pki { ca, relay, laptop }
    }
}

/// A `relay_clientcerts` line for `cert`, with the MD5 fingerprint as the recipe has it.
fn md5_line(cert: &Issued) -> String {
    format!("{} laptop\n", Fingerprint::of(DigestKind::Md5, &cert.der))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------------------
// certrelayd, configured as the recipe's relay, delivering onward to a sink.

fn start_certrelayd(pki: &Pki, port: u16, sink_port: u16) -> (Daemon, TempDir) {
    start_certrelayd_with(pki, port, sink_port, "")
}

/// As [`start_certrelayd`], with `-o` options (`name=value`, space-separated) on its
/// master.cf line.
fn start_certrelayd_with(pki: &Pki, port: u16, sink_port: u16, options: &str) -> (Daemon, TempDir) {
    let dir = TempDir::new("interop-relay");
    let d = dir.path().display().to_string();
    dir.write("relay.pem", &pki.relay.cert_pem);
    dir.write("relay.key", &pki.relay.key_pem);
    dir.write("ca.pem", &pki.ca.cert_pem);
    dir.write("relay_clientcerts", &md5_line(&pki.laptop));
    dir.write(
        "main.cf",
        &format!(
            "myhostname = relay.test\n\
             mail_owner = nobody\n\
             mydestination = relay.test\n\
             relayhost = [127.0.0.1]:{sink_port}\n\
             defer_transports =\n\
             mynetworks = 192.0.2.0/24\n\
             queue_directory = {d}/spool\n\
             smtpd_use_tls = yes\n\
             smtpd_tls_cert_file = {d}/relay.pem\n\
             smtpd_tls_key_file = {d}/relay.key\n\
             smtpd_tls_CAfile = {d}/ca.pem\n\
             smtpd_tls_ask_ccert = yes\n\
             smtpd_tls_req_ccert = yes\n\
             smtpd_tls_loglevel = 2\n\
             relay_clientcerts = hash:{d}/relay_clientcerts\n\
             smtpd_recipient_restrictions = permit_mynetworks, permit_tls_clientcerts, \
             reject_unauth_destination\n"
        ),
    );
    let mut master = format!("127.0.0.1:{port} inet n - n - - smtpd\n");
    for o in options.split_whitespace() {
        master.push_str(&format!("  -o {o}\n"));
    }
    dir.write("master.cf", &master);
    let daemon = Daemon::start(
        &binary("certrelayd"),
        &["-c", dir.path().to_str().unwrap()],
        "daemon started",
    );
    (daemon, dir)
}

// ---------------------------------------------------------------------------------------
// certrelay, configured as the recipe's laptop.

struct Laptop {
    dir: TempDir,
}

impl Laptop {
    /// Relays through `[127.0.0.1]:port` with `cert`, requiring a verified TLS session.
    fn new(label: &str, port: u16, pki: &Pki, cert: &Issued) -> Laptop {
        let dir = TempDir::new(label);
        let d = dir.path().display().to_string();
        dir.write("laptop.pem", &format!("{}{}", cert.cert_pem, cert.key_pem));
        dir.write("ca.pem", &pki.ca.cert_pem);
        dir.write(
            "main.cf",
            &format!(
                "myhostname = laptop.test\n\
                 queue_directory = {d}/queue\n\
                 relayhost = [127.0.0.1]:{port}\n\
                 smtp_connect_timeout = 5s\n\
                 smtp_use_tls = yes\n\
                 smtp_enforce_tls = yes\n\
                 smtp_tls_cert_file = {d}/laptop.pem\n\
                 smtp_tls_CAfile = {d}/ca.pem\n"
            ),
        );
        Laptop { dir }
    }

    fn queue_dir(&self) -> PathBuf {
        self.dir.path().join("queue")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(binary("certrelay"));
        c.arg("-c").arg(self.dir.path()).args(args);
        c.env("USER", "alice")
            .env("HOME", self.dir.path())
            .env_remove("NAME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME");
        c
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        run_bounded(self.command(args), stdin)
    }

    /// Committed envelopes in the spool.
    fn queued(&self) -> Vec<Envelope> {
        let spool = Spool::attach(self.queue_dir());
        let Ok(ids) = spool.ids() else {
            return Vec::new();
        };
        let mut out: Vec<Envelope> = ids
            .iter()
            .filter_map(|id| Envelope::parse(&spool.read_envelope(id).ok()?).ok())
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    fn message_text(&self, id: &str) -> String {
        text(
            &Spool::attach(self.queue_dir())
                .read_content(id)
                .unwrap_or_default(),
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.queue_dir().join("delivery.log")).unwrap_or_default()
    }

    /// `sendmail -t` with `message`, then `flush`; both must succeed. Returns what the
    /// flush printed.
    fn submit_and_flush(&self, message: &[u8]) -> String {
        let out = self.run(&["sendmail", "-t"], Some(message));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let out = self.run(&["flush"], None);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout) + &text(&out.stderr)
    }
}

/// Runs a command with an optional stdin, killing it after 60 s.
fn run_bounded(mut cmd: Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start certrelay");
    if let Some(bytes) = stdin {
        let _ = child.stdin.take().unwrap().write_all(bytes);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("certrelay did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

// ---------------------------------------------------------------------------------------
// Postfix as the relay of the recipe, delivering onward to a sink.

fn start_postfix_relay(label: &str, pki: &Pki, sink_port: u16) -> Postfix {
    let setup = PostfixSetup::new(label, free_port());
    let dir = setup.dir();
    let cert = dir.write("relay.pem", &pki.relay.cert_pem);
    let key = dir.write("relay.key", &pki.relay.key_pem);
    let ca = dir.write("ca.pem", &pki.ca.cert_pem);
    let map = dir.write("relay_clientcerts", &md5_line(&pki.laptop));
    setup.postconf(&[
        "myhostname = relay.test",
        &format!("relayhost = [127.0.0.1]:{sink_port}"),
        // Loopback is NOT in mynetworks: only the certificate can permit relaying.
        "mynetworks = 127.0.0.2/32",
        "smtpd_use_tls = yes",
        &format!("smtpd_tls_cert_file = {}", cert.display()),
        &format!("smtpd_tls_key_file = {}", key.display()),
        &format!("smtpd_tls_CAfile = {}", ca.display()),
        "smtpd_tls_ask_ccert = yes",
        "smtpd_tls_loglevel = 1",
        // Postfix 3.7 defaults to sha256; the recipe's map holds MD5 fingerprints.
        "smtpd_tls_fingerprint_digest = md5",
        &format!("relay_clientcerts = texthash:{}", map.display()),
        "smtpd_recipient_restrictions = permit_mynetworks, permit_tls_clientcerts, \
         reject_unauth_destination",
        // Postfix 3.6+'s default relay restrictions lack permit_tls_clientcerts.
        "smtpd_relay_restrictions =",
    ]);
    setup.start()
}

const MESSAGE: &[u8] = b"From: alice@laptop.test\n\
To: Bob <bob@example.org>\n\
Subject: through postfix\n\
\n\
hello from the laptop\n";

// ---------------------------------------------------------------------------------------
// Tests.

/// Issue 4: Postfix as the recipe's laptop (`smtp_enforce_tls`, a per-site `MUST`, a client
/// certificate) delivers through certrelayd, which trusts the certificate by its MD5
/// fingerprint and delivers onward.
#[test]
#[ignore = "interop: needs Debian's postfix (installed by .ci/run)"]
fn postfix_laptop_delivers_through_certrelayd() {
    let pki = Pki::new();
    let sink = Sink::start(SinkOptions::default());
    let sink_port = sink.port();
    let relay_port = free_port();
    let (relay, _relay_dir) = start_certrelayd(&pki, relay_port, sink_port);

    let setup = PostfixSetup::new("laptop", free_port());
    let dir = setup.dir();
    let cert = dir.write("laptop.pem", &pki.laptop.cert_pem);
    let key = dir.write("laptop.key", &pki.laptop.key_pem);
    let ca = dir.write("ca.pem", &pki.ca.cert_pem);
    let per_site = setup.hash_table("tls_per_site", &format!("[127.0.0.1]:{relay_port} MUST\n"));
    setup.postconf(&[
        "myhostname = laptop.test",
        &format!("relayhost = [127.0.0.1]:{relay_port}"),
        &format!("smtp_tls_cert_file = {}", cert.display()),
        &format!("smtp_tls_key_file = {}", key.display()),
        &format!("smtp_tls_CAfile = {}", ca.display()),
        "smtp_use_tls = yes",
        "smtp_enforce_tls = yes",
        &format!("smtp_tls_per_site = {per_site}"),
        "smtp_tls_loglevel = 1",
    ]);
    let postfix = setup.start();

    let out = postfix.sendmail(&["-f", "alice@laptop.test", "bob@example.org"], MESSAGE);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let got = wait_until("the sink to receive the message", || sink.messages().pop());
    assert_eq!(got.sender, "alice@laptop.test");
    assert_eq!(got.recipients, ["bob@example.org"]);
    assert!(
        got.text().contains("Subject: through postfix\r\n"),
        "{}",
        got.text()
    );
    assert!(
        got.text().contains("hello from the laptop\r\n"),
        "{}",
        got.text()
    );
    // certrelayd's own Received: line, over TLS.
    assert!(got.text().contains("by relay.test"), "{}", got.text());
    assert!(got.text().contains("with ESMTPS id"), "{}", got.text());

    let md5 = Fingerprint::of(DigestKind::Md5, &pki.laptop.der).to_string();
    relay.wait_log("status=sent");
    let log = relay.log();
    assert!(
        log.contains("Trusted TLS connection established from"),
        "{log}"
    );
    assert!(log.contains(&format!("fingerprint={md5}")), "{log}");
    postfix.wait_log(&format!(
        "to=<bob@example.org>, relay=127.0.0.1[127.0.0.1]:{relay_port}"
    ));
    let plog = postfix.log();
    assert!(
        plog.contains(&format!(
            "Verified TLS connection established to 127.0.0.1[127.0.0.1]:{relay_port}"
        )),
        "{plog}"
    );
    assert!(plog.contains("status=sent"), "{plog}");
    assert_eq!(sink.messages().len(), 1);
}

/// Issue 5, accepted: Postfix as the recipe's relay takes mail from `certrelay` whose
/// certificate's MD5 fingerprint is listed, and delivers it onward.
#[test]
#[ignore = "interop: needs Debian's postfix (installed by .ci/run)"]
fn postfix_relay_accepts_certrelay_with_a_listed_certificate() {
    let pki = Pki::new();
    let sink = Sink::start(SinkOptions::default());
    let sink_port = sink.port();
    let postfix = start_postfix_relay("relay-ok", &pki, sink_port);
    let laptop = Laptop::new("interop-laptop-ok", postfix.port(), &pki, &pki.laptop);

    let flushed = laptop.submit_and_flush(MESSAGE);
    let got = wait_until("the sink to receive the message", || sink.messages().pop());
    assert_eq!(got.sender, "alice@laptop.test");
    assert_eq!(got.recipients, ["bob@example.org"]);
    assert!(
        got.text().contains("Subject: through postfix\r\n"),
        "{}",
        got.text()
    );
    assert!(got.text().contains("by relay.test"), "{}", got.text());
    assert!(got.text().contains("with ESMTPS id"), "{}", got.text());
    wait_until("the laptop's queue to empty", || {
        laptop.queued().is_empty().then_some(())
    });

    postfix.wait_log(&format!(
        "to=<bob@example.org>, relay=127.0.0.1[127.0.0.1]:{sink_port}"
    ));
    let plog = postfix.log();
    assert!(
        plog.contains("Trusted TLS connection established from"),
        "{plog}"
    );
    assert!(plog.contains("status=sent"), "{plog}");
    assert!(!plog.contains("reject:"), "{plog}");
    let llog = laptop.log() + &flushed;
    assert!(llog.contains("status=sent"), "{llog}");
}

/// Issue 5, refused: Postfix refuses to relay for a certificate it does not list (`554
/// 5.7.1 Relay access denied` at RCPT); certrelay bounces the recipient. The bounce goes
/// to the sender through the same Postfix, which refuses it too, so it stays in the queue
/// as failed and the listing says why.
#[test]
#[ignore = "interop: needs Debian's postfix (installed by .ci/run)"]
fn postfix_relay_refuses_an_unlisted_certificate_and_certrelay_bounces() {
    let pki = Pki::new();
    let sink = Sink::start(SinkOptions::default());
    let sink_port = sink.port();
    let postfix = start_postfix_relay("relay-refuse", &pki, sink_port);
    let stranger = pki.ca.issue("stranger", &[], true);
    let laptop = Laptop::new("interop-laptop-refused", postfix.port(), &pki, &stranger);

    let flushed = laptop.submit_and_flush(MESSAGE);
    postfix.wait_log(
        "NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 554 5.7.1 <bob@example.org>: \
         Relay access denied",
    );
    let queued = wait_until("the bounce to be tried and kept as failed", || {
        let q = laptop.queued();
        (q.len() == 1 && q[0].is_bounce && q[0].attempts > 0).then_some(q)
    });
    let bounce = &queued[0];
    assert_eq!(bounce.sender, "", "a bounce has the null sender");
    assert_eq!(bounce.recipients.len(), 1, "{bounce:?}");
    let r = &bounce.recipients[0];
    assert_eq!(r.address, "alice@laptop.test");
    assert_eq!(r.state, RecipientState::Bounced, "{r:?}");
    assert_eq!(r.dsn, "5.7.1", "{r:?}");
    assert!(r.reason.contains("Relay access denied"), "{r:?}");

    // The bounce reports bob's failure with Postfix's words.
    let report = laptop.message_text(bounce.id.as_str());
    assert!(
        report.contains("Final-Recipient: rfc822; bob@example.org"),
        "{report}"
    );
    assert!(report.contains("Status: 5.7.1"), "{report}");
    assert!(report.contains("Relay access denied"), "{report}");
    assert!(report.contains("Subject: through postfix"), "{report}");

    // The listing shows the kept bounce (it lists only recipients still to be tried, so
    // neither alice nor the reason appear there: the envelope above has them).
    let listing = text(&laptop.run(&["queue"], None).stdout);
    assert!(listing.contains(bounce.id.as_str()), "{listing}");
    assert!(listing.contains("MAILER-DAEMON"), "{listing}");
    assert!(listing.contains("-- 2 Kbytes in 1 Request."), "{listing}");

    let llog = laptop.log() + &flushed;
    assert!(
        llog.contains("to=<bob@example.org>") && llog.contains("status=bounced"),
        "{llog}"
    );
    assert!(sink.messages().is_empty(), "nothing was relayed");
    let plog = postfix.log();
    assert!(
        plog.contains("Trusted TLS connection established from"),
        "the certificate is trusted, only not listed: {plog}"
    );
}

// ---------------------------------------------------------------------------------------
// Submission ports: TLS from the first byte (issue 14).

/// Postfix as the laptop with `smtp_tls_wrappermode = yes` delivers through certrelayd's
/// wrapper-mode listener (the `smtps` line) with its client certificate.
#[test]
#[ignore = "interop: needs Debian's postfix (installed by .ci/run)"]
fn postfix_laptop_in_wrappermode_delivers_through_certrelayds_smtps_listener() {
    let pki = Pki::new();
    let sink = Sink::start(SinkOptions::default());
    let relay_port = free_port();
    let (relay, _relay_dir) =
        start_certrelayd_with(&pki, relay_port, sink.port(), "smtpd_tls_wrappermode=yes");
    let setup = PostfixSetup::new("laptop-smtps", free_port());
    let dir = setup.dir();
    let cert = dir.write("laptop.pem", &pki.laptop.cert_pem);
    let key = dir.write("laptop.key", &pki.laptop.key_pem);
    let ca = dir.write("ca.pem", &pki.ca.cert_pem);
    setup.postconf(&[
        "myhostname = laptop.test",
        &format!("relayhost = [127.0.0.1]:{relay_port}"),
        &format!("smtp_tls_cert_file = {}", cert.display()),
        &format!("smtp_tls_key_file = {}", key.display()),
        &format!("smtp_tls_CAfile = {}", ca.display()),
        "smtp_tls_security_level = verify",
        "smtp_tls_wrappermode = yes",
        "smtp_tls_loglevel = 1",
    ]);
    let postfix = setup.start();
    let out = postfix.sendmail(&["-f", "alice@laptop.test", "bob@example.org"], MESSAGE);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got = wait_until("the sink to receive the message", || sink.messages().pop());
    assert_eq!(got.recipients, ["bob@example.org"]);
    assert!(got.text().contains("with ESMTPS id"), "{}", got.text());
    relay.wait_log("Trusted TLS connection established from");
    postfix.wait_log("status=sent");
    let plog = postfix.log();
    assert!(
        plog.contains(&format!(
            "Verified TLS connection established to 127.0.0.1[127.0.0.1]:{relay_port}"
        )),
        "{plog}"
    );
}

/// certrelay as the laptop with `smtp_tls_wrappermode = yes` delivers through a Postfix
/// relay's `smtps`-style listener (`-o smtpd_tls_wrappermode=yes`).
#[test]
#[ignore = "interop: needs Debian's postfix (installed by .ci/run)"]
fn certrelay_in_wrappermode_delivers_through_a_postfix_smtps_listener() {
    let pki = Pki::new();
    let sink = Sink::start(SinkOptions::default());
    let postfix = {
        // The relay of start_postfix_relay, with its one listener in wrapper mode.
        let relay = start_postfix_relay("relay-smtps", &pki, sink.port());
        let cfg = relay.setup().config_dir();
        let port = relay.port();
        let entry = format!("127.0.0.1:{port}/inet/smtpd_tls_wrappermode=yes");
        let out = Command::new("postconf")
            .arg("-c")
            .arg(&cfg)
            .args(["-P", &entry])
            .output()
            .expect("postconf -P");
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = Command::new("postfix")
            .arg("-c")
            .arg(&cfg)
            .arg("reload")
            .output()
            .expect("postfix reload");
        assert!(out.status.success(), "{}", text(&out.stderr));
        relay.wait_log("reload");
        relay
    };
    let laptop = Laptop::new("interop-laptop-smtps", postfix.port(), &pki, &pki.laptop);
    let main_cf = laptop.dir.path().join("main.cf");
    let mut cf = std::fs::read_to_string(&main_cf).unwrap();
    cf.push_str("smtp_tls_wrappermode = yes\n");
    std::fs::write(&main_cf, cf).unwrap();
    let flushed = laptop.submit_and_flush(MESSAGE);
    let got = wait_until("the sink to receive the message", || sink.messages().pop());
    assert_eq!(got.recipients, ["bob@example.org"]);
    assert!(got.text().contains("with ESMTPS id"), "{}", got.text());
    postfix.wait_log("status=sent");
    let plog = postfix.log();
    assert!(
        plog.contains("Trusted TLS connection established from"),
        "{plog}"
    );
    let llog = laptop.log() + &flushed;
    assert!(llog.contains("status=sent"), "{llog}");
}

// ---------------------------------------------------------------------------------------
// SMTPUTF8 (issue 14): a UTF-8 address and header through each pair of peers.

const UTF8_MESSAGE: &str = "From: alice@laptop.test\n\
To: José <josé@exemple.fr>\n\
Subject: café\n\
\n\
Ça marche.\n";

/// Postfix as the laptop sends to a UTF-8 address (its sendmail marks the message as
/// SMTPUTF8); certrelayd accepts it with SMTPUTF8 and delivers it to a sink that offers it.
#[test]
#[ignore = "interop: needs Debian's postfix (installed by .ci/run)"]
fn postfix_laptop_sends_a_utf8_address_through_certrelayd() {
    let pki = Pki::new();
    let sink = Sink::start(SinkOptions {
        smtputf8: true,
        ..SinkOptions::default()
    });
    let relay_port = free_port();
    let (relay, _relay_dir) = start_certrelayd(&pki, relay_port, sink.port());
    let setup = PostfixSetup::new("laptop-utf8", free_port());
    let dir = setup.dir();
    let cert = dir.write("laptop.pem", &pki.laptop.cert_pem);
    let key = dir.write("laptop.key", &pki.laptop.key_pem);
    let ca = dir.write("ca.pem", &pki.ca.cert_pem);
    setup.postconf(&[
        "myhostname = laptop.test",
        "smtputf8_enable = yes",
        &format!("relayhost = [127.0.0.1]:{relay_port}"),
        &format!("smtp_tls_cert_file = {}", cert.display()),
        &format!("smtp_tls_key_file = {}", key.display()),
        &format!("smtp_tls_CAfile = {}", ca.display()),
        "smtp_tls_security_level = verify",
    ]);
    let postfix = setup.start();
    let out = postfix.sendmail(
        &["-f", "alice@laptop.test", "josé@exemple.fr"],
        UTF8_MESSAGE.as_bytes(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got = wait_until("the sink to receive the message", || sink.messages().pop());
    assert_eq!(got.recipients, ["josé@exemple.fr"]);
    let params: Vec<&str> = got.mail_params.split_whitespace().collect();
    assert!(params.contains(&"SMTPUTF8"), "{}", got.mail_params);
    let message = got.text();
    assert!(message.contains("Subject: café\r\n"), "{message}");
    // certrelayd took it from Postfix with SMTPUTF8, inside TLS.
    assert!(message.contains("with UTF8SMTPS id"), "{message}");
    relay.wait_log("to=<josé@exemple.fr>");
    postfix.wait_log("status=sent");
}

/// certrelay sends to a UTF-8 address through a Postfix relay, which accepts it with
/// SMTPUTF8 (certrelay's sendmail marked it) and delivers it onward with SMTPUTF8.
#[test]
#[ignore = "interop: needs Debian's postfix (installed by .ci/run)"]
fn certrelay_sends_a_utf8_address_through_a_postfix_relay() {
    let pki = Pki::new();
    let sink = Sink::start(SinkOptions {
        smtputf8: true,
        ..SinkOptions::default()
    });
    let postfix = start_postfix_relay("relay-utf8", &pki, sink.port());
    let laptop = Laptop::new("interop-laptop-utf8", postfix.port(), &pki, &pki.laptop);
    let flushed = laptop.submit_and_flush(UTF8_MESSAGE.as_bytes());
    let got = wait_until("the sink to receive the message", || sink.messages().pop());
    assert_eq!(got.recipients, ["josé@exemple.fr"]);
    let params: Vec<&str> = got.mail_params.split_whitespace().collect();
    assert!(params.contains(&"SMTPUTF8"), "{}", got.mail_params);
    let message = got.text();
    assert!(message.contains("Subject: café\r\n"), "{message}");
    // Postfix's Received: line names the protocol certrelay used with it.
    assert!(message.contains("with UTF8SMTPS id"), "{message}");
    postfix.wait_log("status=sent");
    let llog = laptop.log() + &flushed;
    assert!(llog.contains("status=sent"), "{llog}");
}
