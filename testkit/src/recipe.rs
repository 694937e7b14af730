//! The recipe's pair, ready to run: a `certrelayd` with its own CA that lists laptop `bob`
//! and forwards to a sink, a laptop directory configured for it, and `certrelay` run in that
//! directory. For the end-to-end tests that need both binaries together.
//!
//! Not here: the sink (`sink`) or anything that asserts; the tests do that.

use crate::daemon::Daemon;
use crate::free_port;
use crate::{binary, certrelayd_ok, TempDir};
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// A relay whose certificate names `names`, listing laptop `bob`, forwarding to `sink_port`.
pub fn relay(label: &str, names: &[&str], sink_port: u16) -> (TempDir, Daemon, u16) {
    let dir = TempDir::new(label);
    let d = dir.path().display().to_string();
    dir.write("relay_clientcerts", "");
    let port = free_port();
    dir.write(
        "main.cf",
        &format!(
            "myhostname = relay.test\nmail_owner = nobody\nmydestination = relay.test\nmynetworks = 192.0.2.0/24\n\
             queue_directory = {d}/spool\nrelayhost = [127.0.0.1]:{sink_port}\n\
             smtpd_use_tls = yes\nsmtpd_tls_cert_file = {d}/relay.pem\n\
             smtpd_tls_key_file = {d}/relay.key\nsmtpd_tls_CAfile = {d}/ca.pem\n\
             smtpd_tls_ask_ccert = yes\nsmtpd_tls_req_ccert = yes\nsmtpd_tls_loglevel = 1\n\
             relay_clientcerts = hash:{d}/relay_clientcerts\n"
        ),
    );
    dir.write(
        "master.cf",
        &format!("127.0.0.1:{port} inet n - n - - smtpd\n"),
    );
    let mut init = vec!["ca", "init", "--hostname", "relay.test"];
    for n in names {
        init.extend(["--name", n]);
    }
    certrelayd_ok(dir.path(), &init);
    certrelayd_ok(dir.path(), &["ca", "issue", "--out", &d, "bob"]);
    let daemon = Daemon::start(&binary("certrelayd"), &["-c", &d], "daemon started");
    (dir, daemon, port)
}

/// The recipe's laptop: verify through smtp_enforce_tls, and a per-site entry.
pub fn laptop(label: &str, relay_dir: &TempDir, port: u16, site_policy: &str) -> TempDir {
    let dir = TempDir::new(label);
    let (d, r) = (
        dir.path().display().to_string(),
        relay_dir.path().display().to_string(),
    );
    dir.write(
        "tls_per_site",
        &format!("[127.0.0.1]:{port} {site_policy}\n"),
    );
    dir.write(
        "main.cf",
        &format!(
            "myhostname = laptop.test\nqueue_directory = {d}/queue\n\
             relayhost = [127.0.0.1]:{port}\nsmtp_tls_cert_file = {r}/bob.pem\n\
             smtp_tls_CAfile = {r}/bob-ca.pem\nsmtp_use_tls = yes\nsmtp_enforce_tls = yes\n\
             smtp_tls_per_site = hash:{d}/tls_per_site\n"
        ),
    );
    dir
}

/// Runs `certrelay -c DIR ARGS` as user `bob`, with `stdin` as its standard input.
pub fn certrelay(dir: &TempDir, args: &[&str], stdin: &[u8]) -> Output {
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
