//! `certrelay probe` against a real certrelayd: what it reports, and its verdict.

use certrelay_testkit::daemon::Daemon;
use certrelay_testkit::free_port;
use certrelay_testkit::{binary, certrelayd_ok, TempDir};
use std::process::{Command, Stdio};

#[test]
fn probe_reports_the_relay_and_the_verdict_of_the_laptop_policy() {
    let relay = TempDir::new("probe-relay");
    let d = relay.path().display().to_string();
    relay.write("relay_clientcerts", "");
    let port = free_port();
    relay.write(
        "main.cf",
        &format!(
            "myhostname = relay.test\nmail_owner = nobody\nqueue_directory = {d}/spool\nrelayhost = [127.0.0.1]:9\n\
             defer_transports = smtp\nsmtpd_use_tls = yes\nsmtpd_tls_cert_file = {d}/relay.pem\n\
             smtpd_tls_key_file = {d}/relay.key\nsmtpd_tls_CAfile = {d}/ca.pem\n\
             smtpd_tls_ask_ccert = yes\nrelay_clientcerts = hash:{d}/relay_clientcerts\n"
        ),
    );
    relay.write(
        "master.cf",
        &format!("127.0.0.1:{port} inet n - n - - smtpd\n"),
    );
    certrelayd_ok(
        relay.path(),
        &[
            "ca",
            "init",
            "--hostname",
            "relay.test",
            "--name",
            "127.0.0.1",
        ],
    );
    certrelayd_ok(relay.path(), &["ca", "issue", "--out", &d, "bob"]);
    let _daemon = Daemon::start(&binary("certrelayd"), &["-c", &d], "daemon started");

    let laptop = TempDir::new("probe-laptop");
    let l = laptop.path().display().to_string();
    let probe = |ca: &str| {
        laptop.write(
            "main.cf",
            &format!(
                "smtp_tls_security_level = verify\nsmtp_tls_cert_file = {d}/bob.pem\n\
                 smtp_tls_CAfile = {ca}\nqueue_directory = {l}/queue\n"
            ),
        );
        Command::new(binary("certrelay"))
            .args(["-c", &l, "probe", &format!("[127.0.0.1]:{port}")])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = probe(&format!("{d}/ca.pem"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("banner: 220 relay.test ESMTP certrelay"),
        "{text}"
    );
    assert!(text.contains("STARTTLS"), "{text}");
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
    let out = probe(&format!("{}/ca.pem", other.path().display()));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("server certificate not verified"), "{text}");
    assert!(
        text.contains("would NOT deliver here: 4.7.5 Server certificate not verified"),
        "{text}"
    );
}
