//! The recipe's pair, ready to run: a `certrelayd` with its own CA that lists laptop `bob`
//! and forwards to a sink, a laptop directory configured for it, and `certrelay` run in that
//! directory. For the end-to-end tests that need both binaries together.
//!
//! Also the relay files most single-relay tests start from ([`RelayFiles`]).
//!
//! Not here: the sink (`sink`) or anything that asserts; the tests do that.

use crate::daemon::Daemon;
use crate::free_port;
use crate::pki::{Ca, Issued};
use crate::{binary, certrelayd_ok, TempDir};
use certrelay_core::fingerprint::{DigestKind, Fingerprint};
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

/// A relay's directory with its certificates: a CA, the relay's certificate for
/// `relay.test` (`relay.pem`, `relay.key`, `ca.pem`), and a laptop's client certificate
/// listed in `relay_clientcerts` as `laptop` by its SHA-256 fingerprint. The test writes
/// main.cf (usually [`RelayFiles::main_cf`]) and master.cf.
pub struct RelayFiles {
    /// The directory, removed when dropped.
    pub dir: TempDir,
    /// The CA of the relay's and the laptop's certificates.
    pub ca: Ca,
    /// The listed laptop's certificate.
    pub laptop: Issued,
}

impl RelayFiles {
    /// The files, in a new directory named after `label`.
    pub fn new(label: &str) -> RelayFiles {
        let dir = TempDir::new(label);
        let ca = Ca::new("Test CA");
        let server = ca.issue("relay.test", &["relay.test"], false);
        let laptop = ca.issue("laptop", &[], true);
        dir.write("relay.pem", &server.cert_pem);
        dir.write("relay.key", &server.key_pem);
        dir.write("ca.pem", &ca.cert_pem);
        let fp = Fingerprint::of(DigestKind::Sha256, &laptop.der);
        dir.write("relay_clientcerts", &format!("{fp} laptop\n"));
        RelayFiles { dir, ca, laptop }
    }

    /// The main.cf these tests share, then `extra` (a later line wins, so `extra` may
    /// change any of them): `relay.test`, `mail_owner = nobody` (a relay started as root
    /// gives root up), no name lookups, onward delivery held (`defer_transports = smtp`),
    /// `mynetworks` that 127.0.0.1 is not in, TLS offered with certificates asked for.
    pub fn main_cf(&self, extra: &str) -> String {
        let d = self.dir.path().display();
        format!(
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
             relay_clientcerts = hash:{d}/relay_clientcerts\n\
             {extra}\n"
        )
    }
}
