//! Certificates coming to an end, with the real binaries: `certrelayd certs` (expiry, last
//! seen, address), the relay's warnings about client certificates and its own, the
//! laptop's warnings about its certificate, and `ca renew-server` with a laptop that pins
//! the relay by its CA and name.

use certrelay_core::fingerprint::{DigestKind, Fingerprint};
use certrelay_testkit::client::Client;
use certrelay_testkit::daemon::Daemon;
use certrelay_testkit::pki::{client_config, Ca};
use certrelay_testkit::recipe::{certrelay, laptop, relay, RelayFiles};
use certrelay_testkit::sink::{Sink, SinkOptions};
use certrelay_testkit::{binary, certrelayd, certrelayd_ok, free_port, wait_until, TempDir};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const MESSAGE: &[u8] =
    b"From: bob@laptop.test\nTo: friend@elsewhere.example\nSubject: x\n\nhello\n";

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The block `certrelayd certs` prints for `label`, up to its `last seen:` line.
fn block<'a>(listing: &'a str, label: &str) -> &'a str {
    let start = listing
        .find(&format!("{label}\n  listed: "))
        .unwrap_or_else(|| panic!("no entry {label} in:\n{listing}"));
    let rest = &listing[start..];
    let seen = rest.find("  last seen: ").expect("a last seen line");
    let end = seen + rest[seen..].find('\n').expect("its end");
    &rest[..end]
}

/// Sends one message from `laptop` and waits until the sink has it.
fn send(laptop: &TempDir, sink: &Sink) {
    let out = certrelay(laptop, &["sendmail", "-t"], MESSAGE);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the sink to receive the message", || sink.messages().pop());
}

#[test]
fn certs_lists_expiry_and_last_seen_after_a_listed_laptop_sends() {
    let sink = Sink::start(SinkOptions::default());
    let (relay_dir, daemon, port) = relay("certs-relay", &["127.0.0.1"], sink.port());
    let d = relay_dir.path();
    // Listed by hand, never seen, no copy issued here.
    let stranger = Fingerprint::of(DigestKind::Sha1, b"stranger");
    let table = std::fs::read_to_string(d.join("relay_clientcerts")).unwrap();
    relay_dir.write(
        "relay_clientcerts",
        &format!("{table}{stranger} stranger\n"),
    );

    let before = stdout(&certrelayd_ok(d, &["certs"]));
    let bob = block(&before, "bob");
    assert!(bob.contains("digest: sha256 certificate "), "{bob}");
    assert!(
        bob.contains("(the certificate the CA issued)") && bob.contains("expiry: expires 20"),
        "the copy kept under issued/ gives the expiry before any visit: {bob}"
    );
    assert!(bob.contains("last seen: never"), "{bob}");
    let other = block(&before, "stranger");
    assert!(
        other.contains("digest: sha1 certificate or public key")
            && other.contains("expiry: unknown (not seen yet)")
            && other.contains("last seen: never"),
        "{other}"
    );

    let laptop = laptop("certs-laptop", &relay_dir, port, "MUST");
    send(&laptop, &sink);
    // Written at stop (and once a minute, and at reload): never per connection.
    assert!(daemon.stop().success());
    let seen = std::fs::read_to_string(d.join("spool/clientcerts.seen")).unwrap();
    assert_eq!(
        seen.lines().filter(|l| !l.starts_with('#')).count(),
        1,
        "{seen}"
    );

    let after = stdout(&certrelayd_ok(d, &["certs"]));
    let bob = block(&after, "bob");
    assert!(bob.contains("(as the relay saw it)"), "{bob}");
    assert!(bob.contains(" UTC from 127.0.0.1"), "{bob}");
    assert!(!bob.contains("WARNING"), "two years left: {bob}");
    let other = block(&after, "stranger");
    assert!(other.contains("last seen: never"), "{other}");
}

#[test]
fn certs_and_the_relay_survive_a_corrupt_or_hostile_seen_file() {
    let sink = Sink::start(SinkOptions::default());
    let (relay_dir, daemon, port) = relay("certs-hostile", &["127.0.0.1"], sink.port());
    let d = relay_dir.path().to_owned();
    assert!(daemon.stop().success());
    let spool = d.join("spool");
    let owner = std::fs::metadata(&spool).unwrap();
    let seen = spool.join("clientcerts.seen");
    let _ = std::fs::remove_file(&seen);

    // A link to a file the spool's owner may not read: named, not followed.
    let secret = d.join("secret");
    std::fs::write(&secret, "AA:BB cert 1 - 127.0.0.1\n").unwrap();
    std::os::unix::fs::symlink(&secret, &seen).unwrap();
    let out = certrelayd_ok(&d, &["certs"]);
    let text = stdout(&out);
    assert!(text.contains("a symbolic link (not followed)"), "{text}");
    assert!(text.contains("last seen: never"), "{text}");

    // Garbage, binary and overlong lines: counted and skipped, never a crash.
    std::fs::remove_file(&seen).unwrap();
    let mut junk = b"garbage line\n\x00\x01\xff\xfe\n".to_vec();
    junk.extend(std::iter::repeat_n(b'9', 100_000));
    junk.extend(b"\n1 2 3 4 5 6 7 8\n");
    std::fs::write(&seen, &junk).unwrap();
    let out = certrelayd(&d, &["certs"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("not UTF-8"), "{}", stdout(&out));
    let text_junk =
        "garbage line\n\u{1b}[2J\nZZ cert 1 - 127.0.0.1\n".to_string() + &"9".repeat(100_000);
    std::fs::write(&seen, text_junk).unwrap();
    std::os::unix::fs::chown(&seen, Some(owner.uid()), Some(owner.gid())).unwrap_or(());
    let text = stdout(&certrelayd_ok(&d, &["certs"]));
    assert!(text.contains("4 unreadable line(s) skipped"), "{text}");

    // The relay starts on it, serves, and replaces it with good records.
    let daemon = Daemon::start(
        &binary("certrelayd"),
        &["-c", d.to_str().unwrap()],
        "daemon started",
    );
    daemon.wait_log("unreadable line(s) skipped");
    let laptop = laptop("certs-hostile-laptop", &relay_dir, port, "MUST");
    send(&laptop, &sink);
    assert!(daemon.stop().success());
    let text = stdout(&certrelayd_ok(&d, &["certs"]));
    assert!(text.contains(" UTC from 127.0.0.1"), "{text}");
    assert!(!text.contains("unreadable"), "{text}");
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "AA:BB cert 1 - 127.0.0.1\n"
    );
}

/// A relay from [`RelayFiles`] whose own certificate and a listed client's both expire in
/// an hour.
#[test]
fn the_relay_warns_of_short_lived_client_and_server_certificates_once_a_day() {
    let files = RelayFiles::new("certs-short");
    let server = files
        .ca
        .issue_for_secs("relay.test", &["relay.test"], false, 3600);
    files.dir.write("relay.pem", &server.cert_pem);
    files.dir.write("relay.key", &server.key_pem);
    let short = files.ca.issue_for_secs("shortlived", &[], true, 3600);
    let print = Fingerprint::of(DigestKind::Sha256, &short.der);
    let table = std::fs::read_to_string(files.dir.path().join("relay_clientcerts")).unwrap();
    files
        .dir
        .write("relay_clientcerts", &format!("{table}{print} shortlived\n"));
    files.dir.write("main.cf", &files.main_cf(""));
    let port = free_port();
    files.dir.write(
        "master.cf",
        &format!("127.0.0.1:{port} inet n - n - - smtpd\n"),
    );
    let daemon = Daemon::start(
        &binary("certrelayd"),
        &["-c", files.dir.path().to_str().unwrap()],
        "daemon started",
    );
    let server_warning = "relay.pem expires ";
    daemon.wait_log(server_warning);
    // Issued for an hour: at most an hour left, more than half of it on any machine. The
    // span reads like "59m 58s" or "1h 0m".
    let log = daemon.log();
    let span = log
        .split("(in ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_default();
    let minutes: u64 = span
        .split_whitespace()
        .map(|part| {
            let (n, unit) = part.split_at(part.len() - 1);
            let n: u64 = n.parse().unwrap_or(0);
            match unit {
                "d" => n * 1440,
                "h" => n * 60,
                "m" => n,
                _ => 0,
            }
        })
        .sum();
    assert!((30..=60).contains(&minutes), "{span:?} in {log}");

    let visit = |cert: &certrelay_testkit::pki::Issued| {
        let mut client = Client::greeted(port);
        client.tls(client_config(&files.ca.cert_pem, Some(cert.pems())));
        assert!(client.cmd("EHLO laptop.test").starts_with("250"));
        assert!(client.cmd("QUIT").starts_with("221"));
    };
    let warning = "client certificate \"shortlived\"";
    visit(&short);
    daemon.wait_log(warning);
    visit(&short);
    // The long-lived listed laptop: no warning for it.
    visit(&files.laptop);
    daemon.wait_log_count("disconnect from", 3);
    let log = daemon.log();
    assert_eq!(log.matches(warning).count(), 1, "once a day:\n{log}");
    assert!(!log.contains("client certificate \"laptop\""), "{log}");
    assert!(log.contains(&format!("sha256 {print}")), "{log}");

    // A reload looks at the server certificate again.
    daemon.signal("HUP");
    daemon.wait_log_count(server_warning, 2);
    drop(daemon);
}

#[test]
fn the_laptop_warns_of_its_own_certificate_in_check_and_queue() {
    let ca = Ca::new("Laptop test CA");
    let cases = [
        (
            "soon",
            ca.issue_for_secs("bob", &[], true, 3 * 3600),
            Some("expires "),
        ),
        (
            "gone",
            ca.issue_for_days("bob", &[], true, -1),
            Some("expired "),
        ),
        ("fine", ca.issue_for_days("bob", &[], true, 300), None),
    ];
    for (label, cert, want) in cases {
        let dir = TempDir::new(&format!("certs-laptop-{label}"));
        let d = dir.path().display().to_string();
        dir.write("bob.pem", &cert.cert_pem);
        dir.write("bob.key", &cert.key_pem);
        dir.write("ca.pem", &ca.cert_pem);
        dir.write(
            "main.cf",
            &format!(
                "myhostname = laptop.test\nqueue_directory = {d}/queue\n\
                 relayhost = [127.0.0.1]:9\nsmtp_tls_cert_file = {d}/bob.pem\n\
                 smtp_tls_key_file = {d}/bob.key\nsmtp_tls_CAfile = {d}/ca.pem\n"
            ),
        );
        let check = certrelay(&dir, &["check"], b"");
        let check_text = format!(
            "{}{}",
            stdout(&check),
            String::from_utf8_lossy(&check.stderr)
        );
        let queue = certrelay(&dir, &["queue"], b"");
        assert!(queue.status.success(), "{label}");
        let queue_err = String::from_utf8_lossy(&queue.stderr).into_owned();
        match want {
            Some(word) => {
                let said = format!("this laptop's certificate {word}");
                assert!(check_text.contains(&said), "{label}: {check_text}");
                assert!(check_text.contains("bob.pem"), "{label}: {check_text}");
                assert!(
                    check.status.success(),
                    "a warning, not an error: {check_text}"
                );
                assert!(queue_err.contains(&said), "{label}: {queue_err}");
                assert!(
                    queue_err.contains(" UTC ("),
                    "the date is said: {queue_err}"
                );
            }
            None => {
                assert!(
                    !check_text.contains("this laptop's certificate"),
                    "{check_text}"
                );
                assert!(
                    !queue_err.contains("this laptop's certificate"),
                    "{queue_err}"
                );
            }
        }
    }
}

/// The relay's certificate as a client sees it now.
fn presented(port: u16, ca_pem: &str) -> Fingerprint {
    let mut client = Client::greeted(port);
    client.tls(client_config(ca_pem, None));
    let der = client.server_cert();
    client.cmd("QUIT");
    Fingerprint::of(DigestKind::Sha256, &der)
}

fn first_cert(path: &Path) -> Fingerprint {
    let pem = std::fs::read(path).unwrap();
    let certs = certrelay_core::cert::parse_certificates(&pem).unwrap();
    Fingerprint::of(DigestKind::Sha256, &certs[0])
}

#[test]
fn renew_server_keeps_a_must_laptop_delivering_with_the_new_certificate() {
    let sink = Sink::start(SinkOptions::default());
    let (relay_dir, daemon, port) = relay("certs-renew", &["127.0.0.1"], sink.port());
    let d = relay_dir.path();
    let ca_pem = std::fs::read_to_string(d.join("ca.pem")).unwrap();
    let laptop = laptop("certs-renew-laptop", &relay_dir, port, "MUST");
    send(&laptop, &sink);
    let old = presented(port, &ca_pem);
    assert_eq!(old, first_cert(&d.join("relay.pem")));
    let key_before = std::fs::read(d.join("relay.key")).unwrap();

    let out = certrelayd_ok(d, &["ca", "renew-server", "--name", "mail.relay.test"]);
    let text = stdout(&out);
    assert!(text.contains("loaded the change"), "{text}");
    assert!(
        text.contains("relay.test, 127.0.0.1, mail.relay.test"),
        "the names of the current certificate, and the one added: {text}"
    );
    let new = first_cert(&d.join("relay.pem"));
    assert_ne!(new, old);
    assert_eq!(first_cert(&d.join("relay.pem.old")), old);
    assert_eq!(
        std::fs::read(d.join("relay.key")).unwrap(),
        key_before,
        "same key"
    );
    assert_eq!(
        presented(port, &ca_pem),
        new,
        "new sessions get the new certificate"
    );

    // The laptop pins the CA and the name (MUST), not the leaf: it still delivers.
    send(&laptop, &sink);
    let cert_pem = std::fs::read(d.join("relay.pem")).unwrap();
    let cert = &certrelay_core::cert::parse_certificates(&cert_pem).unwrap()[0];
    assert!(certrelay_core::cert::matches_server_name(
        cert,
        "mail.relay.test"
    ));
    drop(daemon);
}

/// A relay's configuration (not started) whose certificate and key are `cert_dir`'s
/// `relay.pem` and `relay.key`.
fn relay_conf(dir: &TempDir, cert_dir: &Path) {
    let (d, c) = (dir.path().display(), cert_dir.display());
    dir.write(
        "main.cf",
        &format!(
            "myhostname = relay.test\nmail_owner = nobody\nmydestination = relay.test\n\
             queue_directory = {d}/spool\nsmtpd_use_tls = yes\n\
             smtpd_tls_cert_file = {c}/relay.pem\nsmtpd_tls_key_file = {c}/relay.key\n\
             smtpd_tls_CAfile = {c}/ca.pem\n"
        ),
    );
    dir.write("master.cf", "127.0.0.1:2525 inet n - n - - smtpd\n");
}

#[test]
fn renew_server_refuses_files_the_relay_does_not_present_and_defaults_to_its_folder() {
    let dir = TempDir::new("certs-renew-where");
    let d = dir.path();
    let tls = d.join("tls");
    let tls_arg = tls.display().to_string();
    certrelayd_ok(
        d,
        &["ca", "init", "--dir", &tls_arg, "--hostname", "relay.test"],
    );
    // main.cf names copies elsewhere: renewing tls/relay.pem would change nothing the
    // relay presents.
    let other = d.join("other");
    std::fs::create_dir(&other).unwrap();
    for f in ["relay.pem", "relay.key", "ca.pem"] {
        std::fs::copy(tls.join(f), other.join(f)).unwrap();
    }
    relay_conf(&dir, &other);
    let before = std::fs::read(tls.join("relay.pem")).unwrap();
    let out = certrelayd(d, &["ca", "renew-server", "--dir", &tls_arg]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        err.contains("smtpd_tls_cert_file") && err.contains("smtpd_tls_key_file"),
        "{err}"
    );
    assert_eq!(std::fs::read(tls.join("relay.pem")).unwrap(), before);
    assert!(!tls.join("relay.pem.old").exists());

    // Pointed at tls/, and with no --dir, it renews the files main.cf names.
    relay_conf(&dir, &tls);
    let out = certrelayd_ok(d, &["ca", "renew-server"]);
    assert!(stdout(&out).contains(&tls_arg), "{}", stdout(&out));
    assert_eq!(std::fs::read(tls.join("relay.pem.old")).unwrap(), before);
    assert_ne!(std::fs::read(tls.join("relay.pem")).unwrap(), before);
}
