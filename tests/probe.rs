//! `certrelay probe` against a real certrelayd (what it reports, its verdict, and with
//! `--rcpt` whether the relay would relay, without a message ever being queued) and against
//! hostile fake servers (garbage, huge lines, terminal escape sequences, silence, a trickle,
//! a flood): a clean error, escaped output, exit 2, never a hang.

use certrelay_testkit::daemon::Daemon;
use certrelay_testkit::free_port;
use certrelay_testkit::sink::{Sink, SinkOptions};
use certrelay_testkit::{binary, certrelayd_ok, TempDir};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one run of `certrelay probe` left: exit code, stdout, stderr (raw bytes, so that a
/// test can look for control characters).
struct Ran {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Ran {
    fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    fn both(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.out(), self.err())
    }
}

/// Runs `certrelay -c DIR probe ARGS...` with `USER=alice`; output goes to files (no pipe
/// to fill), and a run past 60 s is killed and fails the test: a probe must never hang.
fn probe(dir: &Path, args: &[&str]) -> Ran {
    let out_path = dir.join("probe.out");
    let err_path = dir.join("probe.err");
    let mut child = Command::new(binary("certrelay"))
        .arg("-c")
        .arg(dir)
        .arg("probe")
        .args(args)
        .env("USER", "alice")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("start certrelay");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "certrelay probe did not finish within 60 s:\n{}",
                String::from_utf8_lossy(&std::fs::read(&out_path).unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran {
        code: status.code(),
        stdout: std::fs::read(&out_path).unwrap(),
        stderr: std::fs::read(&err_path).unwrap(),
    }
}

/// A relay on a free port with its own CA; `bob` is listed in relay_clientcerts, `carol`
/// (same CA) is not. The relay forwards to `relayhost`.
struct Relay {
    dir: TempDir,
    port: u16,
    daemon: Daemon,
}

fn relay(label: &str, relayhost: &str) -> Relay {
    let dir = TempDir::new(label);
    let d = dir.path().display().to_string();
    dir.write("relay_clientcerts", "");
    dir.write("unlisted", "");
    let port = free_port();
    dir.write(
        "main.cf",
        &format!(
            "myhostname = relay.test\nmail_owner = nobody\nqueue_directory = {d}/spool\n\
             smtpd_peername_lookup = no\nrelayhost = {relayhost}\nmynetworks = 192.0.2.0/24\n\
             smtpd_use_tls = yes\nsmtpd_tls_cert_file = {d}/relay.pem\n\
             smtpd_tls_key_file = {d}/relay.key\nsmtpd_tls_CAfile = {d}/ca.pem\n\
             smtpd_tls_ask_ccert = yes\nrelay_clientcerts = hash:{d}/relay_clientcerts\n"
        ),
    );
    dir.write(
        "master.cf",
        &format!("127.0.0.1:{port} inet n - n - - smtpd\n"),
    );
    certrelayd_ok(
        dir.path(),
        &[
            "ca",
            "init",
            "--hostname",
            "relay.test",
            "--name",
            "127.0.0.1",
        ],
    );
    certrelayd_ok(dir.path(), &["ca", "issue", "--out", &d, "bob"]);
    let unlisted = format!("{d}/unlisted");
    certrelayd_ok(
        dir.path(),
        &["ca", "issue", "--out", &d, "--map", &unlisted, "carol"],
    );
    let daemon = Daemon::start(&binary("certrelayd"), &["-c", &d], "daemon started");
    Relay { dir, port, daemon }
}

/// A laptop directory whose main.cf verifies the relay against `ca` and offers `cert`.
fn laptop_dir(label: &str, cert: &str, ca: &str) -> TempDir {
    let laptop = TempDir::new(label);
    let l = laptop.path().display().to_string();
    laptop.write(
        "main.cf",
        &format!(
            "myhostname = laptop.test\nsmtp_tls_security_level = verify\n\
             smtp_tls_cert_file = {cert}\nsmtp_tls_CAfile = {ca}\nqueue_directory = {l}/queue\n"
        ),
    );
    laptop
}

/// Message files in the relay's spool (committed or being received).
fn spool_messages(relay: &Relay) -> usize {
    ["queue", "tmp"]
        .iter()
        .filter_map(|sub| std::fs::read_dir(relay.dir.path().join("spool").join(sub)).ok())
        .flatten()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".msg"))
        })
        .count()
}

#[test]
fn probe_reports_the_relay_and_the_verdict_of_the_laptop_policy() {
    let relay = relay("probe-relay", "[127.0.0.1]:9");
    let d = relay.dir.path().display().to_string();
    let target = format!("[127.0.0.1]:{}", relay.port);
    let laptop = laptop_dir(
        "probe-laptop",
        &format!("{d}/bob.pem"),
        &format!("{d}/ca.pem"),
    );
    let ran = probe(laptop.path(), &[&target]);
    let text = ran.out();
    assert_eq!(ran.code, Some(0), "{}", ran.both());
    assert!(
        text.contains("banner: 220 relay.test ESMTP certrelay"),
        "{text}"
    );
    assert!(text.contains("STARTTLS"), "{text}");
    // Protocol and cipher named as the logs name them (OpenSSL's names).
    assert!(text.contains("TLS: TLSv1.3 with cipher TLS_AES_"), "{text}");
    assert!(text.contains(" (256/256 bits)\n") || text.contains(" (128/128 bits)\n"));
    assert!(
        text.contains("the server asked for a client certificate"),
        "{text}"
    );
    assert!(
        text.contains("server certificate 0: subject CN relay.test"),
        "{text}"
    );
    assert!(text.contains("server certificate verified"), "{text}");
    assert!(text.contains("=> this laptop would deliver here"), "{text}");
    assert!(
        !text.contains("MAIL FROM"),
        "no --rcpt, no envelope: {text}"
    );

    // The same relay judged against the wrong CA: verify would not deliver.
    let other = TempDir::new("probe-other-ca");
    certrelayd_ok(
        other.path(),
        &[
            "ca",
            "init",
            "--dir",
            other.path().to_str().unwrap(),
            "--hostname",
            "x.test",
        ],
    );
    let laptop = laptop_dir(
        "probe-laptop-other",
        &format!("{d}/bob.pem"),
        &format!("{}/ca.pem", other.path().display()),
    );
    let ran = probe(laptop.path(), &[&target, "--rcpt", "someone@example.org"]);
    let text = ran.out();
    assert_eq!(ran.code, Some(1), "{}", ran.both());
    assert!(text.contains("server certificate not verified"), "{text}");
    assert!(
        text.contains("would NOT deliver here: 4.7.5 Server certificate not verified"),
        "{text}"
    );
    // The laptop would not deliver there, so the probe does not try the envelope either.
    assert!(
        text.contains("MAIL FROM and RCPT TO not tried: this laptop would not deliver here"),
        "{text}"
    );
    relay
        .daemon
        .wait_log_count("disconnect from unknown[127.0.0.1]", 2);
    assert!(
        !relay.daemon.log().contains("mail="),
        "{}",
        relay.daemon.log()
    );
}

#[test]
fn probe_rcpt_through_a_relay_that_lists_the_certificate_would_relay_and_sends_nothing() {
    let sink = Sink::start(SinkOptions::default());
    let relay = relay("probe-rcpt-yes", &format!("[127.0.0.1]:{}", sink.port()));
    let d = relay.dir.path().display().to_string();
    let laptop = laptop_dir(
        "probe-rcpt-yes-laptop",
        &format!("{d}/bob.pem"),
        &format!("{d}/ca.pem"),
    );
    let target = format!("[127.0.0.1]:{}", relay.port);
    let ran = probe(laptop.path(), &[&target, "--rcpt", "someone@example.org"]);
    let text = ran.out();
    assert_eq!(ran.code, Some(0), "{}", ran.both());
    // The default sender is the one sendmail would use: $USER@myorigin.
    assert!(
        text.contains("MAIL FROM:<alice@laptop.test>: 250 2.1.0 Ok"),
        "{text}"
    );
    assert!(
        text.contains("RCPT TO:<someone@example.org>: 250 2.1.5 Ok"),
        "{text}"
    );
    assert!(text.contains("RSET: 250 2.0.0 Ok"), "{text}");
    assert!(
        text.contains("=> the relay would relay to <someone@example.org> for this certificate\n"),
        "{text}"
    );
    // The relay saw an envelope, a reset and a goodbye: never DATA, nothing queued, nothing
    // forwarded.
    relay.daemon.wait_log("disconnect from unknown[127.0.0.1]");
    let log = relay.daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("disconnect from unknown[127.0.0.1]"))
        .unwrap();
    assert!(
        line.contains("ehlo=2 starttls=1 mail=1 rcpt=1 rset=1 quit=1 commands=7"),
        "{log}"
    );
    assert!(!line.contains("data"), "{log}");
    assert_eq!(spool_messages(&relay), 0, "{log}");
    assert_eq!(sink.connection_count(), 0);

    // An explicit sender, the null one.
    let ran = probe(
        laptop.path(),
        &[&target, "--rcpt", "someone@example.org", "--from", ""],
    );
    assert_eq!(ran.code, Some(0), "{}", ran.both());
    assert!(
        ran.out().contains("MAIL FROM:<>: 250 2.1.0 Ok"),
        "{}",
        ran.out()
    );

    // An address that would smuggle a second command is refused before any connection.
    let ran = probe(
        laptop.path(),
        &[&target, "--rcpt", "a@example.org>\r\nDATA"],
    );
    assert_eq!(ran.code, Some(2), "{}", ran.both());
    assert!(ran.err().contains("--rcpt "), "{}", ran.both());
    assert!(!ran.out().contains("connected to"), "{}", ran.both());
    relay
        .daemon
        .wait_log_count("disconnect from unknown[127.0.0.1]", 2);
    assert_eq!(spool_messages(&relay), 0);
    assert_eq!(sink.connection_count(), 0);
}

#[test]
fn probe_rcpt_through_a_relay_that_does_not_list_the_certificate_shows_the_refusal() {
    let relay = relay("probe-rcpt-no", "[127.0.0.1]:9");
    let d = relay.dir.path().display().to_string();
    let laptop = laptop_dir(
        "probe-rcpt-no-laptop",
        &format!("{d}/carol.pem"),
        &format!("{d}/ca.pem"),
    );
    let target = format!("[127.0.0.1]:{}", relay.port);
    let ran = probe(
        laptop.path(),
        &[
            &target,
            "--rcpt",
            "someone@example.org",
            "--from",
            "carol@laptop.test",
        ],
    );
    let text = ran.out();
    assert_eq!(ran.code, Some(1), "{}", ran.both());
    assert!(text.contains("=> this laptop would deliver here"), "{text}");
    assert!(
        text.contains(
            "RCPT TO:<someone@example.org>: 554 5.7.1 <someone@example.org>: Relay access denied"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "=> the relay would NOT relay to <someone@example.org> for this certificate: \
             554 5.7.1 <someone@example.org>: Relay access denied"
        ),
        "{text}"
    );
    assert!(text.contains("RSET: 250 2.0.0 Ok"), "{text}");
    relay.daemon.wait_log("disconnect from unknown[127.0.0.1]");
    assert!(
        relay.daemon.log().contains("rcpt=0/1 rset=1 quit=1"),
        "{}",
        relay.daemon.log()
    );
    assert_eq!(spool_messages(&relay), 0);
}

// ---------------------------------------------------------------------------------------
// Hostile servers.

/// A server on 127.0.0.1 that runs `script` on the first connection, in its own thread
/// (left behind when the test ends; its writes fail once the probe hung up).
fn fake(script: impl FnOnce(TcpStream) + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            script(stream);
        }
    });
    format!("[127.0.0.1]:{port}")
}

/// Reads one command line (up to LF), or nothing when the client hung up.
fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while let Ok(1) = s.read(&mut b) {
        line.push(b[0]);
        if b[0] == b'\n' {
            break;
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

fn plain_laptop(label: &str) -> TempDir {
    let laptop = TempDir::new(label);
    let l = laptop.path().display().to_string();
    laptop.write(
        "main.cf",
        &format!("myhostname = laptop.test\nqueue_directory = {l}/queue\n"),
    );
    laptop
}

/// No byte that drives a terminal (escape, bell, other C0/C1 controls but line feed) and
/// no direction override reached the terminal.
fn assert_terminal_safe(ran: &Ran) {
    for (name, bytes) in [("stdout", &ran.stdout), ("stderr", &ran.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        let bad: Vec<char> = text
            .chars()
            .filter(|&c| (c.is_control() && c != '\n') || c == '\u{202e}')
            .collect();
        assert!(bad.is_empty(), "{name} carries {bad:?}: {}", ran.both());
    }
}

#[test]
fn garbage_from_the_server_is_a_clean_error() {
    let target = fake(|mut s| {
        let _ = s.write_all(b"\x00\xff\x1b[31mgarbage\x07 and more\r\n");
        let _ = read_line(&mut s);
    });
    let laptop = plain_laptop("probe-garbage");
    let ran = probe(laptop.path(), &[&target, "--timeout", "10"]);
    assert_eq!(ran.code, Some(2), "{}", ran.both());
    assert!(
        ran.err()
            .contains(&format!("certrelay: probe {target}: malformed reply line")),
        "{}",
        ran.both()
    );
    assert_terminal_safe(&ran);
}

#[test]
fn a_100_kb_reply_line_is_refused() {
    let target = fake(|mut s| {
        let mut line = b"220 ".to_vec();
        line.extend(std::iter::repeat_n(b'A', 100 * 1024));
        line.extend_from_slice(b"\r\n");
        let _ = s.write_all(&line);
        let _ = read_line(&mut s);
    });
    let laptop = plain_laptop("probe-huge-line");
    let ran = probe(laptop.path(), &[&target, "--timeout", "10"]);
    assert_eq!(ran.code, Some(2), "{}", ran.both());
    assert!(
        ran.err().contains("reply line longer than 2048 octets"),
        "{}",
        ran.both()
    );
    assert!(ran.stdout.len() < 4096, "{}", ran.both());
}

#[test]
fn escape_sequences_in_the_banner_and_ehlo_are_shown_escaped() {
    let target = fake(|mut s| {
        let _ = s.write_all(
            "220 evil.test \x1b[2J\x1b]0;owned\x07 invoice\u{202e}fdp.exe\r\n".as_bytes(),
        );
        let _ = read_line(&mut s);
        let _ = s.write_all(
            "250-evil.test\r\n250-\x1b[5mBLINK\u{202e}\u{200b}\r\n250 8BITMIME\r\n".as_bytes(),
        );
        // Then hang up at MAIL FROM, unanswered.
        let _ = read_line(&mut s);
    });
    let laptop = plain_laptop("probe-escapes");
    let ran = probe(
        laptop.path(),
        &[&target, "--timeout", "10", "--rcpt", "someone@example.org"],
    );
    assert_eq!(ran.code, Some(2), "{}", ran.both());
    let out = ran.out();
    assert!(
        out.contains("banner: 220 evil.test ?[2J?]0;owned? invoice\\u{202e}fdp.exe"),
        "{out}"
    );
    assert!(
        out.contains("EHLO: ?[5mBLINK\\u{202e}\\u{200b}, 8BITMIME"),
        "{out}"
    );
    assert!(
        ran.err().contains("the server closed the connection"),
        "{}",
        ran.both()
    );
    assert_terminal_safe(&ran);
}

#[test]
fn a_server_that_floods_the_probe_is_cut_off() {
    // Replies as large as the reply parser allows (100 lines of about 2 KB), one after
    // another: the probe stops at its byte budget.
    let target = fake(|mut s| {
        let big = |code: &str| {
            let mut r = Vec::new();
            for i in 0..100 {
                let sep = if i == 99 { ' ' } else { '-' };
                r.extend_from_slice(format!("{code}{sep}{}\r\n", "x".repeat(2000)).as_bytes());
            }
            r
        };
        let _ = s.write_all(&big("220"));
        let _ = read_line(&mut s);
        let _ = s.write_all(&big("250"));
        let _ = read_line(&mut s);
    });
    let laptop = plain_laptop("probe-flood");
    let ran = probe(laptop.path(), &[&target, "--timeout", "10"]);
    assert_eq!(ran.code, Some(2), "{}", ran.both());
    assert!(
        ran.err().contains("the server sent more than 262144 bytes"),
        "{}",
        ran.both()
    );
    // What was shown of the banner was cut: 30 lines of 200 characters at most.
    assert!(ran.out().contains("(and 70 more lines)"), "{}", ran.out());
    assert!(
        ran.out().contains("... (1800 more characters)"),
        "{}",
        ran.out()
    );
    assert!(ran.stdout.len() < 16 * 1024, "{}", ran.stdout.len());
}

#[test]
fn a_silent_server_times_out() {
    let target = fake(|mut s| {
        // Say nothing; wait until the probe gives up.
        let _ = read_line(&mut s);
    });
    let laptop = plain_laptop("probe-silent");
    let ran = probe(laptop.path(), &[&target, "--timeout", "1"]);
    assert_eq!(ran.code, Some(2), "{}", ran.both());
    assert!(
        ran.err()
            .contains(&format!("certrelay: probe {target}: no banner within 1 s")),
        "{}",
        ran.both()
    );
}

#[test]
fn a_trickling_server_times_out_per_step_not_per_byte() {
    // A byte every 20 ms keeps each read alive; the step's deadline still ends it, long
    // before the 100-line limit of a reply would.
    let target = fake(|mut s| {
        s.set_nodelay(true).unwrap();
        for _ in 0..600 {
            for b in b"220-x\r\n" {
                if s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    let laptop = plain_laptop("probe-trickle");
    let ran = probe(laptop.path(), &[&target, "--timeout", "1"]);
    assert_eq!(ran.code, Some(2), "{}", ran.both());
    assert!(ran.err().contains("no banner within 1 s"), "{}", ran.both());
}

// ---------------------------------------------------------------------------------------
// Implicit TLS.

/// An SMTP server speaking TLS from the first byte with `chain`: it answers EHLO, MAIL,
/// RCPT, RSET and QUIT, and tells each command it heard (and the first byte's value).
fn implicit_tls_server(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> (String, std::sync::mpsc::Receiver<String>) {
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap(),
    );
    let (said, heard) = std::sync::mpsc::channel();
    let target = fake(move |tcp| {
        // The first byte must open a TLS handshake (a TLS record of type handshake, 22).
        let mut first = [0u8; 1];
        tcp.peek(&mut first).unwrap();
        let _ = said.send(format!("first byte {}", first[0]));
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        let reply = |s: &mut rustls::StreamOwned<rustls::ServerConnection, TcpStream>,
                     text: &str| {
            let _ = s.write_all(text.as_bytes());
            let _ = s.flush();
        };
        reply(&mut s, "220 implicit.test ESMTP\r\n");
        let read = |s: &mut rustls::StreamOwned<rustls::ServerConnection, TcpStream>| {
            let mut l = Vec::new();
            let mut b = [0u8; 1];
            while let Ok(1) = s.read(&mut b) {
                l.push(b[0]);
                if b[0] == b'\n' {
                    break;
                }
            }
            String::from_utf8_lossy(&l).trim_end().to_owned()
        };
        loop {
            let command = read(&mut s);
            let _ = said.send(command.clone());
            let answer = match command.split([' ', ':']).next().unwrap_or("") {
                "EHLO" => "250-implicit.test\r\n250 8BITMIME\r\n",
                "MAIL" => "250 2.1.0 Ok\r\n",
                "RCPT" => "250 2.1.5 Ok\r\n",
                "RSET" => "250 2.0.0 Ok\r\n",
                "QUIT" => {
                    reply(&mut s, "221 2.0.0 Bye\r\n");
                    return;
                }
                _ => return,
            };
            reply(&mut s, answer);
        }
    });
    (target, heard)
}

/// An implicit-TLS server with a certificate of a new CA, and a laptop whose main.cf
/// verifies it against that CA, plus `extra` lines.
fn implicit_tls_server_and_laptop(
    label: &str,
    extra: &str,
) -> (String, std::sync::mpsc::Receiver<String>, TempDir) {
    let ca = certrelay_testkit::pki::Ca::new("Wrapper CA");
    let server = ca.issue("implicit.test", &["127.0.0.1"], false);
    let (target, heard) = implicit_tls_server(vec![server.cert_der()], server.key_der());
    let laptop = TempDir::new(label);
    let l = laptop.path().display().to_string();
    laptop.write("ca.pem", &ca.cert_pem);
    laptop.write(
        "main.cf",
        &format!(
            "myhostname = laptop.test\nsmtp_tls_security_level = verify\n\
             smtp_tls_CAfile = {l}/ca.pem\nqueue_directory = {l}/queue\n{extra}"
        ),
    );
    (target, heard, laptop)
}

#[test]
fn tls_wrapper_speaks_tls_from_the_first_byte_and_tries_the_envelope() {
    let (target, heard, laptop) = implicit_tls_server_and_laptop("probe-wrapper", "");
    let ran = probe(
        laptop.path(),
        &[
            &target,
            "--tls-wrapper",
            "--timeout",
            "10",
            "--rcpt",
            "someone@example.org",
        ],
    );
    let text = ran.out();
    assert_eq!(ran.code, Some(0), "{}", ran.both());
    assert!(
        text.contains("TLS from the first byte (--tls-wrapper)"),
        "{text}"
    );
    assert!(text.contains("banner: 220 implicit.test ESMTP"), "{text}");
    assert!(text.contains("TLS: TLSv1."), "{text}");
    assert!(
        text.contains("the server did not ask for a client certificate"),
        "{text}"
    );
    assert!(
        text.contains("server certificate verified against smtp_tls_CAfile for 127.0.0.1"),
        "{text}"
    );
    assert!(
        text.contains(
            "=> the relay would relay to <someone@example.org> without a client certificate"
        ),
        "{text}"
    );
    let heard: Vec<String> = heard.try_iter().collect();
    assert_eq!(
        heard,
        [
            "first byte 22",
            "EHLO laptop.test",
            "MAIL FROM:<alice@laptop.test>",
            "RCPT TO:<someone@example.org>",
            "RSET",
            "QUIT"
        ]
    );
}

#[test]
fn smtp_tls_wrappermode_makes_the_probe_speak_tls_first_as_the_queue_would() {
    let (target, heard, laptop) =
        implicit_tls_server_and_laptop("probe-wrappermode", "smtp_tls_wrappermode = yes\n");
    let ran = probe(laptop.path(), &[&target, "--timeout", "10"]);
    let text = ran.out();
    assert_eq!(ran.code, Some(0), "{}", ran.both());
    assert!(
        text.contains("TLS from the first byte (smtp_tls_wrappermode = yes)"),
        "{text}"
    );
    assert!(text.contains("banner: 220 implicit.test ESMTP"), "{text}");
    let heard: Vec<String> = heard.try_iter().collect();
    assert_eq!(
        heard.first().map(String::as_str),
        Some("first byte 22"),
        "{heard:?}"
    );
}

#[test]
fn a_long_server_chain_is_shown_cut() {
    let ca = certrelay_testkit::pki::Ca::new("Long CA");
    let server = ca.issue("long.test", &["127.0.0.1"], false);
    let mut chain = vec![server.cert_der()];
    chain.extend(std::iter::repeat_n(ca.cert_der.clone(), 11));
    let (target, _heard) = implicit_tls_server(chain, server.key_der());
    let laptop = plain_laptop("probe-long-chain");
    let ran = probe(
        laptop.path(),
        &[&target, "--tls-wrapper", "--timeout", "10"],
    );
    let text = ran.out();
    assert_eq!(ran.code, Some(0), "{}", ran.both());
    let shown = text
        .lines()
        .filter(|l| l.starts_with("server certificate ") && l.contains(": subject CN "))
        .count();
    assert_eq!(shown, 10, "{text}");
    assert!(
        text.contains("server certificate 9: subject CN Long CA"),
        "{text}"
    );
    assert!(text.contains("(and 2 more server certificates)"), "{text}");
}

/// A plain SMTP server (no STARTTLS) answering MAIL and RCPT as told; it reports each
/// command it heard.
fn plain_server(
    mail: &'static str,
    rcpt: &'static str,
) -> (String, std::sync::mpsc::Receiver<String>) {
    let (said, heard) = std::sync::mpsc::channel();
    let target = fake(move |mut s| {
        let _ = s.write_all(b"220 plain.test ESMTP\r\n");
        loop {
            let command = read_line(&mut s).trim_end().to_owned();
            let _ = said.send(command.clone());
            let answer = match command.split([' ', ':']).next().unwrap_or("") {
                "EHLO" => "250-plain.test\r\n250 8BITMIME",
                "MAIL" => mail,
                "RCPT" => rcpt,
                "RSET" => "250 2.0.0 Ok",
                "QUIT" => {
                    let _ = s.write_all(b"221 2.0.0 Bye\r\n");
                    return;
                }
                _ => return,
            };
            let _ = s.write_all(format!("{answer}\r\n").as_bytes());
        }
    });
    (target, heard)
}

#[test]
fn a_4xx_to_rcpt_is_not_now_and_a_refused_sender_is_no() {
    let laptop = plain_laptop("probe-4xx");
    let (target, heard) = plain_server("250 2.1.0 Ok", "451 4.3.0 Try again later");
    let ran = probe(laptop.path(), &[&target, "--rcpt", "someone@example.org"]);
    assert_eq!(ran.code, Some(1), "{}", ran.both());
    assert!(
        ran.out().contains(
            "=> the relay would not take <someone@example.org> now (try later): \
             451 4.3.0 Try again later"
        ),
        "{}",
        ran.out()
    );
    let heard: Vec<String> = heard.try_iter().collect();
    assert_eq!(
        heard[1..],
        [
            "MAIL FROM:<alice@laptop.test>",
            "RCPT TO:<someone@example.org>",
            "RSET",
            "QUIT"
        ]
    );

    // The sender refused: no RCPT at all, and the refusal is the answer.
    let (target, heard) = plain_server(
        "553 5.7.1 <alice@laptop.test>: Sender address rejected",
        "250 2.1.5 Ok",
    );
    let ran = probe(laptop.path(), &[&target, "--rcpt", "someone@example.org"]);
    assert_eq!(ran.code, Some(1), "{}", ran.both());
    assert!(
        ran.out().contains(
            "=> the relay would NOT relay to <someone@example.org> without TLS: \
             553 5.7.1 <alice@laptop.test>: Sender address rejected"
        ),
        "{}",
        ran.out()
    );
    let heard: Vec<String> = heard.try_iter().collect();
    assert_eq!(
        heard[1..],
        ["MAIL FROM:<alice@laptop.test>", "RSET", "QUIT"]
    );
}
