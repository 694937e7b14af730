//! Pairing a laptop with one command and renewing its certificate without a gap, with the
//! real binaries over loopback: `certrelayd enroll` on the relay, `certrelay enroll` and
//! `certrelay renew` (and `run`) on the laptop, `XCERTRELAY` between them.

use certrelay_core::cert::{parse_certificates, parse_private_key};
use certrelay_core::enroll::{request_lines, Code, Secret};
use certrelay_shell::pki::enroll::{EnrollCa, LaptopKey};
use certrelay_testkit::client::Client;
use certrelay_testkit::daemon::Daemon;
use certrelay_testkit::enroll_relay::{Answer, FakeRelay};
use certrelay_testkit::pki::client_config;
use certrelay_testkit::recipe::certrelay;
use certrelay_testkit::sink::{Sink, SinkOptions};
use certrelay_testkit::{binary, certrelayd, certrelayd_ok, free_port, wait_until, TempDir};
use std::process::Output;
use std::sync::Arc;

/// A relay that enrolls, with its CA from `ca init`, forwarding to a sink. Its spool lies
/// under a folder only root may enter (started as root, the relay works from inside the
/// spool as `mail_owner`, so the enrolled table and the codes must be reached from there).
struct Relay {
    dir: TempDir,
    daemon: Daemon,
    port: u16,
    sink: Sink,
}

impl Relay {
    fn start(label: &str, extra: &str) -> Relay {
        Relay::start_with(label, extra, true)
    }

    /// A relay whose main.cf has the enrollment lines, commented out unless `enrolling`.
    fn start_with(label: &str, extra: &str, enrolling: bool) -> Relay {
        let off = if enrolling { "" } else { "#" };
        let sink = Sink::start(SinkOptions::default());
        let dir = TempDir::new(label);
        let d = dir.path().display().to_string();
        dir.write("relay_clientcerts", "# root's table\n");
        let private = dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(
            &private,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let port = free_port();
        dir.write(
            "main.cf",
            &format!(
                "myhostname = relay.test\nmail_owner = nobody\nmydestination = relay.test\n\
                 mynetworks = 192.0.2.0/24\nsmtpd_peername_lookup = no\n\
                 queue_directory = {d}/private/spool\nrelayhost = [127.0.0.1]:{}\n\
                 smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {d}/relay.pem\n\
                 smtpd_tls_key_file = {d}/relay.key\nsmtpd_tls_CAfile = {d}/ca.pem\n\
                 smtpd_tls_ask_ccert = yes\nsmtpd_tls_loglevel = 1\n\
                 relay_clientcerts = hash:{d}/relay_clientcerts\n\
                 {off}certrelay_enroll_ca_cert_file = {d}/ca.pem\n\
                 {off}certrelay_enroll_ca_key_file = {d}/ca.key\n{extra}\n",
                sink.port()
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
        std::fs::read_to_string(self.dir.path().join("private/spool/enrolled_clientcerts"))
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

/// Whether a client with the certificate and key in `pem` (trusting `ca`) may relay through
/// the relay on `port`.
fn relays_with(port: u16, ca: &str, pem: &str) -> bool {
    let mut c = Client::greeted(port);
    c.tls(client_config(ca, Some((pem, pem))));
    c.cmd("EHLO laptop.test");
    c.cmd("MAIL FROM:<bob@laptop.test>");
    let rcpt = c.cmd("RCPT TO:<friend@elsewhere.example>");
    c.cmd("QUIT");
    rcpt.starts_with("250")
}

#[test]
fn a_laptop_pairs_with_one_command_and_relays_with_its_new_certificate() {
    let relay = Relay::start("enroll-pair", "");
    let (code, rest) = relay.code(&["alice", "--valid", "10m"]);
    assert!(Code::parse(&code).is_ok(), "{code:?}");
    assert!(
        rest.contains(&format!(
            "certrelay -c /etc/certrelay enroll relay.test:{}",
            relay.port
        )),
        "{rest}"
    );
    assert!(rest.contains(&code), "{rest}");
    let laptop = laptop("enroll-pair-laptop");
    let out = certrelay(&laptop, &["enroll", &relay.target(), &code], b"");
    let said = text(&out);
    assert!(out.status.success(), "{said}\n{}", relay.daemon.log());
    assert!(
        said.contains("replaced: relayhost = [old.example]:25"),
        "{said}"
    );
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
    assert!(
        again.contains("535 5.7.8 Enrollment code not accepted"),
        "{again}"
    );
    relay.daemon.wait_log("code for alice used already");
    // `check` sees the enrolled table; `revoke` finds the name there.
    let check = certrelayd(relay.dir.path(), &["check"]);
    assert!(text(&check).contains("enrollment on"), "{}", text(&check));
    let out = certrelayd_ok(relay.dir.path(), &["revoke", "alice"]);
    assert!(
        text(&out).contains("enrolled_clientcerts: removed"),
        "{}",
        text(&out)
    );
    assert!(!relay.enrolled().contains("alice"));
}

#[test]
fn two_codes_for_one_name_pair_one_laptop_and_refuse_the_second_clearly() {
    let relay = Relay::start("enroll-samename", "");
    let (first, _) = relay.code(&["alice", "--valid", "10m"]);
    let (second, _) = relay.code(&["alice", "--valid", "10m"]);
    let laptop = laptop("enroll-samename-laptop");
    let out = certrelay(&laptop, &["enroll", &relay.target(), &first], b"");
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        relay.daemon.log()
    );
    let refused = laptop_pairing(&relay, &second, "enroll-samename-second");
    assert!(
        refused.contains("554 5.7.0 Certificate request refused: alice is paired already"),
        "{refused}"
    );
    assert_eq!(
        relay.enrolled().matches(" alice").count(),
        1,
        "{}",
        relay.enrolled()
    );
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

/// The last 8 symbols of a code: what the laptop sends.
fn secret_of(code: &str) -> String {
    Code::parse(code).unwrap().secret.to_string()
}

#[test]
fn expired_wrong_and_repeated_codes_are_refused_alike_and_then_the_address_waits() {
    let relay = Relay::start("enroll-refusals", "");
    let (expired, _) = relay.code(&["early", "--valid", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let said = laptop_pairing(&relay, &expired, "enroll-refusals-expired");
    assert!(
        said.contains("535 5.7.8 Enrollment code not accepted"),
        "{said}"
    );
    relay.daemon.wait_log("expired code for early");
    let (good, _) = relay.code(&["alice"]);
    // Right pin, wrong secret: the same answer.
    let mut wrong = good.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    for round in 0..4 {
        let said = laptop_pairing(&relay, &wrong, &format!("enroll-refusals-wrong{round}"));
        assert!(
            said.contains("535 5.7.8 Enrollment code not accepted"),
            "{said}"
        );
    }
    relay
        .daemon
        .wait_log("enroll: code refused from 127.0.0.1: no such code");
    // Five failures: even the right code waits now, and is not spent.
    let said = laptop_pairing(&relay, &good, "enroll-refusals-blocked");
    assert!(
        said.contains("454 4.7.0 Too many failed enrollment attempts"),
        "{said}"
    );
    relay
        .daemon
        .wait_log("enroll: refused from 127.0.0.1: 5 failed codes");
    assert!(!relay.enrolled().contains("alice"));
    let pending = std::fs::read_dir(relay.dir.path().join("private/spool/enroll_codes"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".used"))
        .count();
    assert_eq!(
        pending, 2,
        "alice's code and the expired one (kept a day) remain"
    );
}

#[test]
fn a_relay_whose_certificate_is_not_the_code_s_is_refused_and_nothing_is_written() {
    let relay = Relay::start("enroll-pin", "");
    let (good, _) = relay.code(&["alice"]);
    let secret = Code::parse(&good).unwrap().secret;
    let other = Code::new(b"another relay's certificate", secret).to_string();
    let said = laptop_pairing(&relay, &other, "enroll-pin-laptop");
    assert!(said.contains("does not match the code"), "{said}");
    assert!(said.contains("nothing was written"), "{said}");
    // The code was never shown to the impostor: still usable.
    let laptop = laptop("enroll-pin-good");
    let out = certrelay(&laptop, &["enroll", &relay.target(), &good], b"");
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn the_extension_is_only_inside_tls_and_hostile_requests_get_clear_replies() {
    let relay = Relay::start("enroll-hostile", "");
    let (code, _) = relay.code(&["alice"]);
    let secret = secret_of(&code);
    let mut c = Client::greeted(relay.port);
    let ehlo = c.cmd("EHLO hostile.example");
    assert!(!ehlo.contains("XCERTRELAY"), "{ehlo}");
    assert!(c
        .cmd(&format!("XCERTRELAY ENROLL {secret}"))
        .starts_with("530 5.7.0 Must issue a STARTTLS command first"));
    let ca = std::fs::read_to_string(relay.dir.path().join("ca.pem")).unwrap();
    c.tls(client_config(&ca, None));
    assert!(c.cmd("EHLO hostile.example").contains("250 XCERTRELAY"));
    let start = format!("XCERTRELAY ENROLL {secret}");
    // Garbage base64.
    assert!(c.cmd(&start).starts_with("334 "));
    c.send(b"!!!not base64!!!\r\n");
    assert!(c
        .cmd(".")
        .starts_with("501 5.5.2 Certificate request is not valid base64"));
    // Base64 of something that is no request.
    assert!(c.cmd(&start).starts_with("334 "));
    for line in request_lines(b"this is not a certificate request") {
        c.send(format!("{line}\r\n").as_bytes());
    }
    let reply = c.reply();
    assert!(
        reply.starts_with("554 5.7.0 Certificate request refused: not a certificate request"),
        "{reply}"
    );
    // A request whose signature does not verify.
    let key = LaptopKey::generate().unwrap();
    let mut der = key.request_der("alice").unwrap();
    let last = der.len() - 1;
    der[last] ^= 0x5a;
    assert!(c.cmd(&start).starts_with("334 "));
    for line in request_lines(&der) {
        c.send(format!("{line}\r\n").as_bytes());
    }
    let reply = c.reply();
    assert!(
        reply.starts_with("554 5.7.0 Certificate request refused"),
        "{reply}"
    );
    // Huge, and a line over 512 octets.
    assert!(c.cmd(&start).starts_with("334 "));
    for _ in 0..40 {
        c.send(format!("{}\r\n", "QUFB".repeat(100)).as_bytes());
    }
    assert!(c.cmd(".").starts_with("552 5.3.4"));
    assert!(c.cmd(&start).starts_with("334 "));
    c.send(format!("{}\r\n", "A".repeat(3000)).as_bytes());
    assert!(c
        .cmd(".")
        .starts_with("500 5.5.2 Certificate request line too long"));
    assert!(c.cmd("NOOP").starts_with("250"));
    relay.daemon.wait_log("certificate request refused");
    // None of that spent the code.
    let laptop = laptop("enroll-hostile-good");
    let out = certrelay(&laptop, &["enroll", &relay.target(), &code], b"");
    assert!(out.status.success(), "{}", text(&out));
    // A renewal without a certificate is refused.
    let mut c = Client::greeted(relay.port);
    c.tls(client_config(&ca, None));
    c.cmd("EHLO hostile.example");
    assert!(c
        .cmd("XCERTRELAY RENEW")
        .starts_with("530 5.7.0 Renewal needs a trusted client certificate"));
}

/// Whether the relay offers `XCERTRELAY` inside TLS, and how it answers the command with
/// `secret`.
fn offered_and_answer(relay: &Relay, secret: &str) -> (bool, String) {
    let ca = std::fs::read_to_string(relay.dir.path().join("ca.pem")).unwrap();
    let mut c = Client::greeted(relay.port);
    c.tls(client_config(&ca, None));
    let ehlo = c.cmd("EHLO laptop.test");
    let answer = c.cmd(&format!("XCERTRELAY ENROLL {secret}"));
    (ehlo.contains("XCERTRELAY"), answer)
}

#[test]
fn enrollment_turned_on_by_a_reload_is_not_offered_until_a_restart_reads_the_ca() {
    let mut relay = Relay::start_with("enroll-reload", "", false);
    let (offered, answer) = offered_and_answer(&relay, "ABCDEFGH");
    assert!(!offered);
    assert!(answer.starts_with("500 5.5.2"), "{answer}");
    // Turned on by a reload: the relay, no longer root, cannot read the CA key. It says so
    // and goes on answering as a relay that does not enroll, not 451 to every try.
    let main = std::fs::read_to_string(relay.dir.path().join("main.cf")).unwrap();
    relay.dir.write(
        "main.cf",
        &main.replace("#certrelay_enroll", "certrelay_enroll"),
    );
    relay.daemon.signal("HUP");
    relay.daemon.wait_log("configuration reloaded");
    relay.daemon.wait_log(
        "certrelay_enroll_ca_cert_file set by a reload: enrollment starts at the next restart",
    );
    let (offered, answer) = offered_and_answer(&relay, "ABCDEFGH");
    assert!(!offered, "{}", relay.daemon.log());
    assert!(answer.starts_with("500 5.5.2"), "{answer}");
    // A restart reads the CA: offered, and a code goes ahead.
    let d = relay.dir.path().display().to_string();
    relay.daemon.stop();
    relay.daemon = Daemon::start(&binary("certrelayd"), &["-c", &d], "daemon started");
    let (code, _) = relay.code(&["alice"]);
    let (offered, answer) = offered_and_answer(&relay, &secret_of(&code));
    assert!(offered);
    assert!(answer.starts_with("334 "), "{answer}");
    // A reload that changes what the service read at start says it waits for a restart.
    let main = std::fs::read_to_string(relay.dir.path().join("main.cf")).unwrap();
    relay.dir.write(
        "main.cf",
        &format!("{main}certrelay_enroll_cert_lifetime = 30d\n"),
    );
    relay.daemon.signal("HUP");
    relay.daemon.wait_log(
        "certrelay_enroll_* parameters changed: laptops are enrolled with those read at start",
    );
}

/// A relay and a laptop paired with it, whose certificate lives `cert_valid`.
fn paired(label: &str, cert_valid: &str, laptop_extra: &str) -> (Relay, TempDir) {
    let relay = Relay::start(label, "certrelay_enroll_grace_time = 1h");
    let (code, _) = relay.code(&["alice", "--cert-valid", cert_valid]);
    let laptop = laptop(&format!("{label}-laptop"));
    if !laptop_extra.is_empty() {
        let main_cf = std::fs::read_to_string(laptop.path().join("main.cf")).unwrap();
        laptop.write("main.cf", &format!("{main_cf}{laptop_extra}\n"));
    }
    let out = certrelay(&laptop, &["enroll", &relay.target(), &code], b"");
    assert!(out.status.success(), "{}", text(&out));
    (relay, laptop)
}

fn listed_for_alice(relay: &Relay) -> usize {
    relay
        .enrolled()
        .lines()
        .filter(|l| !l.starts_with('#') && l.ends_with(" alice"))
        .count()
}

#[test]
fn renewal_overlaps_while_mail_flows_and_the_old_certificate_goes_at_the_new_one_s_first_use() {
    let (relay, laptop) = paired("enroll-renew", "30d", "");
    send(&laptop, "before");
    assert!(flush(&laptop).status.success());
    delivered(&relay, "before");
    let old_pem = std::fs::read_to_string(laptop.path().join("client.pem")).unwrap();
    // Sent while the renewal runs, and after it: every one delivered, none refused.
    let renewing = {
        let dir = laptop.path().to_owned();
        std::thread::spawn(move || {
            std::process::Command::new(binary("certrelay"))
                .arg("-c")
                .arg(dir)
                .arg("renew")
                .output()
                .unwrap()
        })
    };
    send(&laptop, "during");
    let out = renewing.join().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("renewed: certificate"),
        "{}",
        text(&out)
    );
    assert_eq!(listed_for_alice(&relay), 2, "{}", relay.enrolled());
    assert!(relay.enrolled().contains("# renewal: "));
    relay
        .daemon
        .wait_log("enroll: alice renewed from 127.0.0.1");
    let new_pem = std::fs::read_to_string(laptop.path().join("client.pem")).unwrap();
    assert_ne!(old_pem, new_pem);
    // The old certificate still relays until the new one is used.
    let ca = std::fs::read_to_string(relay.dir.path().join("ca.pem")).unwrap();
    let relays_with = |pem: &str| relays_with(relay.port, &ca, pem);
    assert!(relays_with(&old_pem));
    assert!(flush(&laptop).status.success());
    delivered(&relay, "during");
    send(&laptop, "after");
    assert!(flush(&laptop).status.success());
    delivered(&relay, "after");
    let log = relay.daemon.log();
    assert!(!log.contains("reject:"), "no message refused: {log}");
    relay.daemon.wait_log("enroll: renewal complete; removed");
    wait_until("the old entry to go", || {
        (listed_for_alice(&relay) == 1).then_some(())
    });
    assert!(!relay.enrolled().contains("# renewal: "));
    wait_until("the old certificate to be refused", || {
        (!relays_with(&old_pem)).then_some(())
    });
    assert!(relays_with(&new_pem));
}

#[test]
fn certrelay_run_renews_a_short_lived_certificate_by_itself() {
    let (relay, laptop) = paired("enroll-auto", "30s", "queue_run_delay = 1s");
    let d = laptop.path().display().to_string();
    let daemon = Daemon::start(
        &binary("certrelay"),
        &["-c", &d, "run"],
        "queue runner started",
    );
    // A third of 33 s (30 s and a tenth before now) is left after about 22 s.
    wait_until("certrelay run to renew", || {
        daemon.log().contains("renewed: certificate").then_some(())
    });
    send(&laptop, "auto");
    delivered(&relay, "auto");
    relay.daemon.wait_log("enroll: renewal complete; removed");
    assert_eq!(listed_for_alice(&relay), 1, "{}", relay.enrolled());
    drop(daemon);
}

/// One listed certificate renewing again and again (a laptop whose answer got lost, or a
/// stolen key): each renewal replaces the pending one, so the table never lists more than
/// the old certificate and one new one, and the replaced certificate no longer relays.
#[test]
fn renewing_twice_from_one_certificate_replaces_the_first_renewal() {
    let (relay, laptop) = paired("enroll-twice", "30d", "");
    let client_pem = laptop.path().join("client.pem");
    let old_pem = std::fs::read_to_string(&client_pem).unwrap();
    let mut issued = Vec::new();
    for round in 0..3 {
        // The old certificate again, as if the last answer never arrived.
        std::fs::write(&client_pem, &old_pem).unwrap();
        let out = certrelay(&laptop, &["renew"], b"");
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(
            listed_for_alice(&relay),
            2,
            "round {round}: {}",
            relay.enrolled()
        );
        assert_eq!(relay.enrolled().matches("# renewal: ").count(), 1);
        issued.push(std::fs::read_to_string(&client_pem).unwrap());
    }
    relay
        .daemon
        .wait_log("enroll: renewal of alice replaces an earlier one; removed:");
    let ca = std::fs::read_to_string(relay.dir.path().join("ca.pem")).unwrap();
    let relays_with = |pem: &str| relays_with(relay.port, &ca, pem);
    assert!(
        !relays_with(&issued[0]),
        "the replaced renewal is not listed"
    );
    // The old one first: the new one's first use ends the renewal and removes it.
    assert!(relays_with(&old_pem), "until the new one is used");
    assert!(relays_with(&issued[2]));
}

/// Root's `relay_clientcerts` may give a second laptop the label an enrolled one has (its
/// second column is free text in Postfix's recipe). Before, that laptop's renewal unlisted
/// the enrolled laptop's certificate, which then could no longer relay.
#[test]
fn a_renewal_under_a_label_another_laptop_holds_is_refused_and_unlists_nothing() {
    let (relay, laptop) = paired("enroll-shared", "30d", "");
    let reloads = relay.daemon.log().matches("configuration reloaded").count();
    let other = TempDir::new("enroll-shared-other");
    let out_dir = other.path().display().to_string();
    certrelayd_ok(
        relay.dir.path(),
        &["ca", "issue", "--out", &out_dir, "alice"],
    );
    relay.daemon.signal("HUP");
    relay
        .daemon
        .wait_log_count("configuration reloaded", reloads + 1);
    let ca = std::fs::read_to_string(relay.dir.path().join("ca.pem")).unwrap();
    let other_pem = std::fs::read_to_string(other.path().join("alice.pem")).unwrap();
    let paired_pem = std::fs::read_to_string(laptop.path().join("client.pem")).unwrap();
    assert!(relays_with(relay.port, &ca, &other_pem));
    // The second laptop asks for a renewal with its certificate of root's table.
    let mut c = Client::greeted(relay.port);
    c.tls(client_config(&ca, Some((&other_pem, &other_pem))));
    c.cmd("EHLO other.test");
    assert!(c.cmd("XCERTRELAY RENEW").starts_with("334 "));
    let key = LaptopKey::generate().unwrap();
    for line in request_lines(&key.request_der("alice").unwrap()) {
        c.send(format!("{line}\r\n").as_bytes());
    }
    let reply = c.reply();
    assert!(
        reply.starts_with(
            "554 5.7.1 Certificate not renewed: the label alice names another laptop's certificate too"
        ),
        "{reply}"
    );
    relay
        .daemon
        .wait_log("enroll: renewal of alice (127.0.0.1) refused:");
    // Nothing was written, and both laptops relay as before.
    assert_eq!(listed_for_alice(&relay), 1, "{}", relay.enrolled());
    assert!(!relay.enrolled().contains("# renewal: "));
    assert!(relays_with(relay.port, &ca, &paired_pem));
    assert!(relays_with(relay.port, &ca, &other_pem));
}

/// A relay certificate and key from `ca init` in `dir` with `names`, as a server
/// configuration, and the CA that signs.
fn fake_relay_pki(
    dir: &std::path::Path,
    host: &str,
    names: &[&str],
) -> (Arc<rustls::ServerConfig>, EnrollCa, Vec<u8>) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let files = certrelay_shell::pki::ca_init(dir, host, &names).unwrap();
    let chain = parse_certificates(&std::fs::read(&files.relay_cert).unwrap()).unwrap();
    let key = parse_private_key(&std::fs::read(&files.relay_key).unwrap()).unwrap();
    let leaf = chain[0].to_vec();
    let tls = certrelay_shell::tls::server_config(certrelay_shell::tls::ServerTls {
        chain,
        key,
        ca_subjects: Vec::new(),
        ask_ccert: true,
        session_cache_timeout: std::time::Duration::from_secs(60),
    })
    .unwrap();
    (
        tls,
        EnrollCa::load(&files.ca_cert, &files.ca_key).unwrap(),
        leaf,
    )
}

/// A hostile relay's answers: more certificates than the laptop's and the CA's, a
/// certificate for another key, a relay certificate that does not name the host. Each is
/// refused and nothing is written.
#[test]
fn a_hostile_relay_s_answers_are_refused_and_nothing_is_written() {
    let work = TempDir::new("enroll-fake-answers");
    let cases: [(&str, &str, &[&str], &str); 3] = [
        (
            "three",
            "relay.test",
            &["127.0.0.1"],
            "holds 3 certificates",
        ),
        (
            "other-key",
            "relay.test",
            &["127.0.0.1"],
            "not for the key made here",
        ),
        (
            "unnamed",
            "elsewhere.test",
            &[],
            "the relay's own certificate does not pass",
        ),
    ];
    for (case, host, names, expected) in cases {
        let (tls, ca, leaf) = fake_relay_pki(&work.path().join(case), host, names);
        let ca_pem = std::fs::read_to_string(work.path().join(case).join("ca.pem")).unwrap();
        let answer: Answer = match case {
            "three" => Box::new(move |csr: &[u8]| {
                let signed = ca
                    .sign(csr, "alice", std::time::Duration::from_secs(3600))
                    .unwrap();
                format!("{}{ca_pem}", signed.chain_pem)
            }),
            "other-key" => Box::new(move |_: &[u8]| {
                let other = LaptopKey::generate().unwrap().request_der("x").unwrap();
                ca.sign(&other, "alice", std::time::Duration::from_secs(3600))
                    .unwrap()
                    .chain_pem
            }),
            _ => Box::new(move |csr: &[u8]| {
                ca.sign(csr, "alice", std::time::Duration::from_secs(3600))
                    .unwrap()
                    .chain_pem
            }),
        };
        let fake = FakeRelay::start(tls, answer);
        let secret = Secret::from_bytes([1, 2, 3, 4, 5]);
        let code = Code::new(&leaf, secret).to_string();
        let laptop = laptop(&format!("enroll-fake-{case}"));
        let before = std::fs::read_to_string(laptop.path().join("main.cf")).unwrap();
        let target = format!("127.0.0.1:{}", fake.port());
        let out = certrelay(&laptop, &["enroll", &target, &code], b"");
        let said = text(&out);
        assert!(!out.status.success(), "{case}: {said}");
        assert!(said.contains(expected), "{case}: {said}");
        assert!(said.contains("Nothing was written here"), "{case}: {said}");
        let seen = fake.finish();
        assert!(
            String::from_utf8_lossy(&seen.inside_tls)
                .contains(&format!("XCERTRELAY ENROLL {secret}")),
            "{case}: the relay was asked"
        );
        let after = std::fs::read_to_string(laptop.path().join("main.cf")).unwrap();
        assert_eq!(before, after, "{case}: main.cf untouched");
        for file in ["client.pem", "relay-ca.pem", "tls_per_site"] {
            assert!(!laptop.path().join(file).exists(), "{case}: {file} written");
        }
    }
}

/// Renewal judges the relay inside the handshake: an impostor (a certificate that does not
/// chain to smtp_tls_CAfile) gets no client certificate and nothing inside TLS, and the
/// laptop's files stay; the same fake relay trusted gets the renewal.
#[test]
fn renewal_sends_nothing_to_a_relay_that_does_not_pass() {
    let work = TempDir::new("enroll-impostor");
    let (_, real_ca, _) = fake_relay_pki(&work.path().join("real"), "relay.test", &["127.0.0.1"]);
    let (tls, _, _) = fake_relay_pki(&work.path().join("impostor"), "relay.test", &["127.0.0.1"]);
    // The laptop's current certificate, signed by the real CA.
    let key = LaptopKey::generate().unwrap();
    let signed = real_ca
        .sign(
            &key.request_der("alice").unwrap(),
            "alice",
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    let laptop = TempDir::new("enroll-impostor-laptop");
    let d = laptop.path().display().to_string();
    let client_pem = format!("{}{}", signed.chain_pem, key.pem());
    laptop.write("client.pem", &client_pem);
    for (trusted, answers) in [("real", false), ("impostor", true)] {
        let fake = FakeRelay::start(
            tls.clone(),
            Box::new({
                let ca = EnrollCa::load(
                    &work.path().join("impostor/ca.pem"),
                    &work.path().join("impostor/ca.key"),
                )
                .unwrap();
                move |csr: &[u8]| {
                    ca.sign(csr, "alice", std::time::Duration::from_secs(3600))
                        .unwrap()
                        .chain_pem
                }
            }),
        );
        laptop.write(
            "main.cf",
            &format!(
                "queue_directory = {d}/queue\nrelayhost = [127.0.0.1]:{}\n\
                 smtp_tls_cert_file = {d}/client.pem\nsmtp_tls_key_file = $smtp_tls_cert_file\n\
                 smtp_tls_CAfile = {}/{trusted}/ca.pem\n",
                fake.port(),
                work.path().display()
            ),
        );
        let out = certrelay(&laptop, &["renew"], b"");
        let said = text(&out);
        let seen = fake.finish();
        if answers {
            assert!(out.status.success(), "{said}");
            assert!(seen.handshake_done && seen.client_cert.is_some());
            assert!(String::from_utf8_lossy(&seen.inside_tls).contains("XCERTRELAY RENEW"));
        } else {
            assert!(!out.status.success(), "{said}");
            assert!(said.contains("does not pass smtp_tls_CAfile"), "{said}");
            assert!(said.contains("nothing sent to it"), "{said}");
            assert!(!seen.handshake_done, "{seen:?}");
            assert_eq!(seen.client_cert, None);
            assert!(seen.inside_tls.is_empty(), "{seen:?}");
            let now = std::fs::read_to_string(laptop.path().join("client.pem")).unwrap();
            assert_eq!(now, client_pem, "nothing written");
        }
    }
}
