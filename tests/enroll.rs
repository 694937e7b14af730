//! Pairing a laptop with one command and renewing its certificate without a gap, with the
//! real binaries over loopback: `certrelayd enroll` on the relay, `certrelay enroll` and
//! `certrelay renew` (and `run`) on the laptop, `XCERTRELAY` between them.

use certrelay_core::enroll::{request_lines, Code};
use certrelay_core::fingerprint::{DigestKind, Fingerprint};
use certrelay_testkit::client::Client;
use certrelay_testkit::daemon::Daemon;
use certrelay_testkit::pki::{client_config, Ca};
use certrelay_testkit::recipe::certrelay;
use certrelay_testkit::sink::{Sink, SinkOptions};
use certrelay_testkit::{binary, certrelayd, certrelayd_ok, free_port, wait_until, TempDir};
use std::process::Output;

/// A relay that enrolls, with its CA from `ca init`, forwarding to a sink.
struct Relay {
    dir: TempDir,
    daemon: Daemon,
    port: u16,
    sink: Sink,
}

impl Relay {
    fn start(label: &str, extra: &str) -> Relay {
        let sink = Sink::start(SinkOptions::default());
        let dir = TempDir::new(label);
        let d = dir.path().display().to_string();
        dir.write("relay_clientcerts", "# root's table\n");
        let port = free_port();
        dir.write(
            "main.cf",
            &format!(
                "myhostname = relay.test\nmail_owner = nobody\nmydestination = relay.test\n\
                 mynetworks = 192.0.2.0/24\nsmtpd_peername_lookup = no\n\
                 queue_directory = {d}/spool\nrelayhost = [127.0.0.1]:{}\n\
                 smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {d}/relay.pem\n\
                 smtpd_tls_key_file = {d}/relay.key\nsmtpd_tls_CAfile = {d}/ca.pem\n\
                 smtpd_tls_ask_ccert = yes\nsmtpd_tls_loglevel = 1\n\
                 relay_clientcerts = hash:{d}/relay_clientcerts\n\
                 certrelay_enroll_ca_cert_file = {d}/ca.pem\n\
                 certrelay_enroll_ca_key_file = {d}/ca.key\n{extra}\n",
                sink.port()
            ),
        );
        dir.write(
            "master.cf",
            &format!("127.0.0.1:{port} inet n - n - - smtpd\n"),
        );
        certrelayd_ok(
            dir.path(),
            &["ca", "init", "--hostname", "relay.test", "--name", "127.0.0.1"],
        );
        let daemon = Daemon::start(&binary("certrelayd"), &["-c", &d], "daemon started");
        Relay {
            dir,
            daemon,
            port,
            sink,
        }
    }

    /// `certrelayd enroll ARGS`: the code on the first line, the rest.
    fn code(&self, args: &[&str]) -> (String, String) {
        let mut all = vec!["enroll"];
        all.extend_from_slice(args);
        let out = certrelayd_ok(self.dir.path(), &all);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (first, rest) = text.split_once('\n').unwrap();
        (first.to_string(), rest.to_string())
    }

    fn enrolled(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("spool/enrolled_clientcerts"))
            .unwrap_or_default()
    }

    fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn laptop(label: &str) -> TempDir {
    let dir = TempDir::new(label);
    let d = dir.path().display().to_string();
    dir.write(
        "main.cf",
        &format!(
            "# the laptop's own notes\nmyhostname = laptop.test\nqueue_directory = {d}/queue\n\
             relayhost = [old.example]:25\n    \n"
        ),
    );
    dir
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn send(laptop: &TempDir, subject: &str) {
    let message = format!(
        "From: bob@laptop.test\nTo: friend@elsewhere.example\nSubject: {subject}\n\nhello\n"
    );
    let out = certrelay(laptop, &["sendmail", "-t"], message.as_bytes());
    assert!(out.status.success(), "{}", text(&out));
}

fn flush(laptop: &TempDir) -> Output {
    certrelay(laptop, &["flush"], b"")
}

fn delivered(relay: &Relay, subject: &str) {
    wait_until(&format!("the sink to receive {subject:?}"), || {
        relay
            .sink
            .messages()
            .into_iter()
            .find(|m| m.text().contains(&format!("Subject: {subject}")))
    });
}

#[test]
fn a_laptop_pairs_with_one_command_and_relays_with_its_new_certificate() {
    let relay = Relay::start("enroll-pair", "");
    let (code, rest) = relay.code(&["alice", "--valid", "10m"]);
    assert!(Code::parse(&code).is_ok(), "{code:?}");
    assert!(
        rest.contains(&format!("certrelay -c /etc/certrelay enroll relay.test:{}", relay.port)),
        "{rest}"
    );
    assert!(rest.contains(&code), "{rest}");
    let laptop = laptop("enroll-pair-laptop");
    let out = certrelay(&laptop, &["enroll", &relay.target(), &code], b"");
    let said = text(&out);
    assert!(out.status.success(), "{said}\n{}", relay.daemon.log());
    assert!(said.contains("replaced: relayhost = [old.example]:25"), "{said}");
    let main_cf = std::fs::read_to_string(laptop.path().join("main.cf")).unwrap();
    assert!(main_cf.starts_with("# the laptop's own notes\nmyhostname = laptop.test\n"));
    assert!(
        main_cf.contains(&format!("relayhost = [127.0.0.1]:{}\n", relay.port)),
        "{main_cf}"
    );
    assert!(main_cf.contains("smtp_tls_key_file = $smtp_tls_cert_file\n"));
    let per_site = std::fs::read_to_string(laptop.path().join("tls_per_site")).unwrap();
    assert_eq!(per_site, format!("[127.0.0.1]:{} MUST\n", relay.port));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(laptop.path().join("client.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let enrolled = relay.enrolled();
    assert!(enrolled.ends_with(" alice\n"), "{enrolled}");
    relay.daemon.wait_log("enroll: alice paired from 127.0.0.1");
    send(&laptop, "paired");
    let out = flush(&laptop);
    assert!(out.status.success(), "{}", text(&out));
    delivered(&relay, "paired");
    relay.daemon.wait_log("status=sent");
    // Used: the same code pairs nothing more, and says nothing of why.
    let again = laptop_pairing(&relay, &code, "enroll-pair-again");
    assert!(again.contains("535 5.7.8 Enrollment code not accepted"), "{again}");
    relay.daemon.wait_log("code for alice used already");
    // `check` sees the enrolled table; `revoke` finds the name there.
    let check = certrelayd(relay.dir.path(), &["check"]);
    assert!(text(&check).contains("enrollment on"), "{}", text(&check));
    let out = certrelayd_ok(relay.dir.path(), &["revoke", "alice"]);
    assert!(text(&out).contains("enrolled_clientcerts: removed"), "{}", text(&out));
    assert!(!relay.enrolled().contains("alice"));
}

/// A second laptop trying `code`; returns what it said, and checks that it wrote nothing.
fn laptop_pairing(relay: &Relay, code: &str, label: &str) -> String {
    let laptop = laptop(label);
    let before = std::fs::read_to_string(laptop.path().join("main.cf")).unwrap();
    let out = certrelay(&laptop, &["enroll", &relay.target(), code], b"");
    assert!(!out.status.success());
    let after = std::fs::read_to_string(laptop.path().join("main.cf")).unwrap();
    assert_eq!(before, after, "main.cf untouched");
    assert!(!laptop.path().join("client.pem").exists());
    text(&out)
}
