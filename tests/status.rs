//! `certrelayd status` and `certrelay status` end to end: the real binaries, a real relay
//! with real sessions and deliveries, the status file it writes, and what the command
//! makes of it, in words and in JSON (checked with python3's parser).

use certrelay_core::fingerprint::{DigestKind, Fingerprint};
use certrelay_testkit::daemon::Daemon;
use certrelay_testkit::pki::Ca;
use certrelay_testkit::sink::{Sink, SinkOptions};
use certrelay_testkit::{binary, free_port, wait_until, TempDir};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// `python3` reads `json` and prints the value at `path` (keys and indexes, `.`-joined).
fn json_value(json: &str, path: &str) -> String {
    let script = format!(
        "import json,sys\nv=json.load(sys.stdin)\nfor k in {path:?}.split('.'):\n    \
         v=v[int(k)] if isinstance(v,list) else v[k]\nprint(json.dumps(v))"
    );
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{path}: {}\n{json}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn relay_status(dir: &Path, json: bool) -> Output {
    let mut args = vec!["-c", dir.to_str().unwrap(), "status"];
    if json {
        args.push("--json");
    }
    Command::new(binary("certrelayd"))
        .args(&args)
        .output()
        .unwrap()
}

/// A relay directory: certificates (a laptop's valid 10 more days, kept in the directory
/// and listed), main.cf relaying for loopback to `[127.0.0.1]:onward`, one listener.
fn relay_dir(label: &str, onward: u16) -> (TempDir, u16) {
    let dir = TempDir::new(label);
    let ca = Ca::new("Test CA");
    let server = ca.issue("relay.test", &["relay.test"], false);
    let alice = ca.issue_for_days("alice", &[], true, 10);
    dir.write("relay.pem", &server.cert_pem);
    dir.write("relay.key", &server.key_pem);
    dir.write("ca.pem", &ca.cert_pem);
    dir.write("alice.pem", &alice.cert_pem);
    dir.write(
        "relay_clientcerts",
        &format!(
            "{} alice\n",
            Fingerprint::of(DigestKind::Sha256, &alice.der)
        ),
    );
    let d = dir.path().display();
    dir.write(
        "main.cf",
        &format!(
            "myhostname = relay.test\n\
             mail_owner = nobody\n\
             smtpd_peername_lookup = no\n\
             mydestination = relay.test\n\
             relayhost = [127.0.0.1]:{onward}\n\
             mynetworks = 127.0.0.0/8\n\
             queue_directory = {d}/spool\n\
             smtpd_tls_security_level = may\n\
             smtpd_tls_cert_file = {d}/relay.pem\n\
             smtpd_tls_key_file = {d}/relay.key\n\
             smtpd_tls_CAfile = {d}/ca.pem\n\
             smtpd_tls_fingerprint_digest = sha256\n\
             relay_clientcerts = hash:{d}/relay_clientcerts\n\
             smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination\n"
        ),
    );
    let port = free_port();
    dir.write(
        "master.cf",
        &format!("127.0.0.1:{port} inet n - n - - smtpd\n"),
    );
    (dir, port)
}

/// A plain SMTP session; `send` gives a message to the relay.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Client {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = Client {
            reader: BufReader::new(tcp.try_clone().unwrap()),
            writer: tcp,
        };
        assert!(c.reply().starts_with("220"));
        c
    }

    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.reply()
    }

    fn send(&mut self, to: &str) {
        assert!(self.cmd("EHLO client.test").starts_with("250"));
        assert!(self.cmd("MAIL FROM:<me@client.test>").starts_with("250"));
        assert!(self.cmd(&format!("RCPT TO:<{to}>")).starts_with("250"));
        assert!(self.cmd("DATA").starts_with("354"));
        let r = self.cmd("Subject: status\r\n\r\nhello\r\n.");
        assert!(r.starts_with("250"), "{r}");
        assert!(self.cmd("QUIT").starts_with("221"));
    }
}

fn start_relay(dir: &TempDir) -> Daemon {
    Daemon::start(
        &binary("certrelayd"),
        &["-c", dir.path().to_str().unwrap()],
        "daemon started",
    )
}

/// Runs `status --json` until `path` has the value `want`; returns that JSON.
fn json_until(dir: &Path, path: &str, want: &str) -> String {
    wait_until(&format!("status {path} = {want}"), || {
        let out = relay_status(dir, true);
        let json = String::from_utf8(out.stdout).unwrap();
        (json_value(&json, path) == want).then_some(json)
    })
}

#[test]
fn relay_status_shows_listener_sessions_queue_deliveries_and_expiring_certificates() {
    let onward = free_port();
    let (dir, port) = relay_dir("status-relay", onward);
    let relay = start_relay(&dir);
    // A session held open counts.
    let held = Client::connect(port);
    let json = json_until(dir.path(), "sessions.open", "1");
    assert_eq!(json_value(&json, "relay.state"), "\"running\"");
    assert_eq!(json_value(&json, "relay.generation"), "1");
    assert_eq!(json_value(&json, "listeners.0.port"), port.to_string());
    assert_eq!(json_value(&json, "listeners.0.tls"), "\"starttls\"");
    assert_eq!(json_value(&json, "sessions.limit"), "100");
    assert_eq!(json_value(&json, "sessions.stress"), "false");
    let out = relay_status(dir.path(), false);
    assert!(out.status.success(), "{}", text(&out));
    let human = text(&out);
    assert!(human.contains(&format!("127.0.0.1:{port}")), "{human}");
    assert!(human.contains("sessions: 1 open of 100"), "{human}");
    drop(held);
    // The next hop is down: the message waits, deferred, with its reason.
    Client::connect(port).send("someone@elsewhere.example");
    let json = json_until(dir.path(), "queue.states.deferred", "1");
    let reason = json_value(&json, "queue.deferral_reasons.0.reason");
    assert!(reason.contains(&format!("127.0.0.1]:{onward}")), "{reason}");
    assert_eq!(json_value(&json, "queue.deferral_reasons.0.messages"), "1");
    let json = json_until(dir.path(), "deliveries.last_minute.deferred", "1");
    assert_eq!(json_value(&json, "deliveries.last_minute.sent"), "0");
    let human = text(&relay_status(dir.path(), false));
    assert!(human.contains("deferred 1"), "{human}");
    assert!(
        human.contains(&format!("1  {}", reason.trim_matches('"'))),
        "{human}"
    );
    // Up again: a flush delivers it, and it is counted.
    let sink = Sink::start_on(onward, SinkOptions::default());
    let flushed = Command::new(binary("certrelayd"))
        .args(["-c", dir.path().to_str().unwrap(), "flush"])
        .output()
        .unwrap();
    assert!(flushed.status.success(), "{}", text(&flushed));
    wait_until("delivered", || (sink.count() == 1).then_some(()));
    let json = json_until(dir.path(), "deliveries.last_minute.sent", "1");
    assert_eq!(json_value(&json, "deliveries.last_hour.sent"), "1");
    assert_eq!(json_value(&json, "deliveries.since_start.deferred"), "1");
    let json = json_until(dir.path(), "queue.messages", "0");
    // The laptop's certificate runs out in 10 days; the relay's does not.
    let certs = json_value(&json, "certificates");
    let alice = (0..4)
        .find(|i| json_value(&json, &format!("certificates.{i}.role")) == "\"laptop alice\"")
        .unwrap_or_else(|| panic!("alice among {certs}"));
    assert_eq!(
        json_value(&json, &format!("certificates.{alice}.expiring")),
        "true"
    );
    let days: i64 = json_value(&json, &format!("certificates.{alice}.days_left"))
        .parse()
        .unwrap();
    assert!((9..=10).contains(&days), "{days}");
    assert_eq!(json_value(&json, "certificates.0.role"), "\"server\"");
    assert_eq!(json_value(&json, "certificates.0.expiring"), "false");
    let human = text(&relay_status(dir.path(), false));
    assert!(human.contains("laptop alice"), "{human}");
    assert!(human.contains("EXPIRES SOON"), "{human}");
    assert!(human.contains("last minute: 1 sent, 1 deferred"), "{human}");
    relay.stop();
}

#[test]
fn status_of_a_stopped_relay_says_so_and_still_shows_the_queue_and_certificates() {
    let (dir, _) = relay_dir("status-stopped", free_port());
    let out = relay_status(dir.path(), false);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let human = text(&out);
    assert!(human.contains("relay: not running"), "{human}");
    assert!(human.contains("EXPIRES SOON"), "{human}");
    assert!(human.contains("0 message(s)"), "{human}");
    let out = relay_status(dir.path(), true);
    assert_eq!(out.status.code(), Some(3));
    let json = String::from_utf8(out.stdout).unwrap();
    assert_eq!(json_value(&json, "relay.running"), "false");
    assert_eq!(json_value(&json, "sessions"), "null");
    assert_eq!(json_value(&json, "queue.messages"), "0");
}

/// Sends `sig` to process `pid`.
fn kill(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn a_status_file_that_is_a_link_a_fifo_foreign_or_garbage_is_refused_cleanly() {
    let (dir, _) = relay_dir("status-hostile", free_port());
    let relay = start_relay(&dir);
    let status_file = dir.path().join("spool/certrelayd.status");
    let good = wait_until("status file", || std::fs::read_to_string(&status_file).ok());
    // Stopped, the relay rewrites nothing: what is put in its place stays there.
    kill("STOP", relay.pid());
    // A link, even to a good status text, is not followed.
    let elsewhere = dir.write("elsewhere", &good);
    std::fs::remove_file(&status_file).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &status_file).unwrap();
    let mut cases = vec![("a symbolic link", relay_status(dir.path(), false))];
    std::fs::remove_file(&status_file).unwrap();
    let made = Command::new("mkfifo").arg(&status_file).status().unwrap();
    assert!(made.success());
    cases.push(("not a plain file", relay_status(dir.path(), false)));
    std::fs::remove_file(&status_file).unwrap();
    std::fs::write(&status_file, "\u{0}\u{1}\u{2} garbage\n").unwrap();
    cases.push(("not a `name value` line", relay_status(dir.path(), false)));
    std::fs::write(&status_file, &good).unwrap();
    let is_root = std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    if is_root.unwrap_or(false) {
        let chowned = Command::new("chown")
            .args(["54321", status_file.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(chowned.success());
        cases.push(("owned by uid 54321", relay_status(dir.path(), false)));
    }
    kill("CONT", relay.pid());
    for (why, out) in cases {
        let human = text(&out);
        assert_eq!(out.status.code(), Some(3), "{why}: {human}");
        assert!(human.contains("status file unreadable"), "{why}: {human}");
        assert!(human.contains(why), "{why}: {human}");
        assert!(!human.contains("panicked"), "{human}");
        // The queue and the certificates still show.
        assert!(human.contains("message(s)"), "{human}");
    }
    relay.stop();
}

/// `certrelay -c DIR ARGS` with the environment of tests/laptop.rs; stdin from `input`.
fn laptop_cmd(dir: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(binary("certrelay"))
        .arg("-c")
        .arg(dir)
        .args(args)
        .env("USER", "alice")
        .env("HOME", dir)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn laptop_status_shows_the_deferred_message_its_reason_the_last_run_and_the_daemon() {
    let relay_port = free_port();
    let dir = TempDir::new("status-laptop");
    let ca = Ca::new("Relay CA");
    let mine = ca.issue_for_days("alice-laptop", &[], true, 20);
    dir.write("alice.pem", &mine.cert_pem);
    dir.write("alice.key", &mine.key_pem);
    dir.write("relay-ca.pem", &ca.cert_pem);
    let d = dir.path().display();
    let smtp_port = free_port();
    dir.write(
        "main.cf",
        &format!(
            "myhostname = laptop.test\n\
             queue_directory = {d}/queue\n\
             relayhost = [127.0.0.1]:{relay_port}\n\
             smtp_connect_timeout = 5s\n\
             smtp_tls_cert_file = {d}/alice.pem\n\
             smtp_tls_key_file = {d}/alice.key\n\
             smtp_tls_CAfile = {d}/relay-ca.pem\n"
        ),
    );
    dir.write(
        "master.cf",
        &format!("127.0.0.1:{smtp_port} inet n - n - - smtpd\n"),
    );
    // The relay is down: the detached attempt defers the message.
    let sent = laptop_cmd(
        dir.path(),
        &["sendmail", "-t"],
        b"From: alice@laptop.test\nTo: bob@example.org\nSubject: s\n\nhi\n",
    );
    assert!(sent.status.success(), "{}", text(&sent));
    let json = wait_until("the attempt", || {
        let out = laptop_cmd(dir.path(), &["status", "--json"], b"");
        let json = String::from_utf8(out.stdout).unwrap();
        (json_value(&json, "queue.states.deferred") == "1"
            && json_value(&json, "last_run") != "null")
            .then_some(json)
    });
    let reason = json_value(&json, "queue.deferral_reasons.0.reason");
    assert!(reason.contains("Connection refused"), "{reason}");
    assert_eq!(json_value(&json, "last_run.deferred"), "1");
    assert_eq!(json_value(&json, "daemon_running"), "false");
    assert_eq!(json_value(&json, "certificates.0.role"), "\"client\"");
    assert_eq!(json_value(&json, "certificates.0.expiring"), "true");
    assert_eq!(json_value(&json, "certificates.1.role"), "\"relay CA\"");
    assert_eq!(json_value(&json, "certificates.1.expiring"), "false");
    let out = laptop_cmd(dir.path(), &["status"], b"");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let human = text(&out);
    assert!(human.contains("certrelay run: not running"), "{human}");
    assert!(human.contains("deferred 1"), "{human}");
    assert!(human.contains("Connection refused"), "{human}");
    assert!(
        human.contains(&format!("relayhost: [127.0.0.1]:{relay_port}")),
        "{human}"
    );
    assert!(human.contains("EXPIRES SOON"), "{human}");
    // Nothing took mail yet, so no entry is remembered; one that is not in relayhost is
    // not shown; the one that is, is.
    assert!(!human.contains("relayhost last used"), "{human}");
    let remembered = dir.path().join("queue/relayhost.last");
    std::fs::write(&remembered, "[192.0.2.1]:25\n").unwrap();
    let human = text(&laptop_cmd(dir.path(), &["status"], b""));
    assert!(!human.contains("relayhost last used"), "{human}");
    std::fs::write(&remembered, format!("[127.0.0.1]:{relay_port}\n")).unwrap();
    let human = text(&laptop_cmd(dir.path(), &["status"], b""));
    assert!(
        human.contains(&format!(
            "relayhost last used: [127.0.0.1]:{relay_port} (tried first)"
        )),
        "{human}"
    );
    let json =
        String::from_utf8(laptop_cmd(dir.path(), &["status", "--json"], b"").stdout).unwrap();
    assert_eq!(
        json_value(&json, "relayhost_last_used"),
        format!("\"[127.0.0.1]:{relay_port}\"")
    );
    std::fs::remove_file(&remembered).unwrap();
    // `certrelay run` serves the queue: status says so, with its pid.
    let run = Daemon::start(
        &binary("certrelay"),
        &["-c", dir.path().to_str().unwrap(), "run"],
        &format!("listening on 127.0.0.1:{smtp_port}"),
    );
    let out = laptop_cmd(dir.path(), &["status", "--json"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let json = String::from_utf8(out.stdout).unwrap();
    assert_eq!(json_value(&json, "daemon_running"), "true");
    assert_eq!(json_value(&json, "daemon_pid"), run.pid().to_string());
    run.stop();
}
