//! The relay reloads when its configuration files change, without a SIGHUP
//! (`certrelay_config_watch`): the real `certrelayd` on loopback, its files changed as an
//! editor, a Kubernetes volume or a loop would change them. Every wait is bounded.

use certrelay_core::fingerprint::{DigestKind, Fingerprint};
use certrelay_testkit::client::Client;
use certrelay_testkit::daemon::Daemon;
use certrelay_testkit::pki::client_config;
use certrelay_testkit::pki::{Ca, Issued};
use certrelay_testkit::{binary, free_port, wait_until, TempDir};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A laptop's session in a new connection, with its certificate: the reply to RCPT TO for
/// an address elsewhere (250 when the relay lists it, 554 when it does not).
fn rcpt(port: u16, ca_pem: &str, laptop: &Issued) -> String {
    let mut c = Client::greeted(port);
    c.tls(client_config(ca_pem, Some(laptop.pems())));
    for line in ["EHLO laptop.test", "MAIL FROM:<me@laptop.test>"] {
        let reply = c.cmd(line);
        assert!(reply.starts_with("250"), "{line}: {reply}");
    }
    c.cmd("RCPT TO:<someone@example.org>")
}

fn md5_line(laptop: &Issued) -> String {
    format!("{} laptop\n", Fingerprint::of(DigestKind::Md5, &laptop.der))
}

/// How the files of the configuration are laid out.
#[derive(Clone, Copy, PartialEq)]
enum Layout {
    /// Plain files in the configuration directory.
    Plain,
    /// As a Kubernetes ConfigMap volume: main.cf, master.cf, the tables in
    /// `..2026_01/`, `..data -> ..2026_01`, and each visible name a link into `..data`.
    Kubernetes,
}

/// The relay, its directory and the PKI.
struct Setup {
    relay: Daemon,
    dir: TempDir,
    ca: Ca,
    laptop: Issued,
    port: u16,
}

impl Setup {
    /// A relay that does not list the laptop yet, with `extra` in main.cf.
    fn start(label: &str, extra: &str, layout: Layout) -> Setup {
        let dir = TempDir::new(label);
        let ca = Ca::new("Test CA");
        let server = ca.issue("relay.test", &["relay.test"], false);
        let laptop = ca.issue("laptop", &[], true);
        dir.write("relay.pem", &server.cert_pem);
        dir.write("relay.key", &server.key_pem);
        dir.write("ca.pem", &ca.cert_pem);
        let port = free_port();
        let files = [
            ("main.cf", main_cf(dir.path(), extra)),
            (
                "master.cf",
                format!("127.0.0.1:{port} inet n - n - - smtpd\n"),
            ),
            ("relay_clientcerts", String::new()),
            ("virtual", "postmaster admin@elsewhere.example\n".to_owned()),
        ];
        match layout {
            Layout::Plain => {
                for (name, text) in &files {
                    dir.write(name, text);
                }
            }
            Layout::Kubernetes => {
                let files: Vec<(&str, &str)> =
                    files.iter().map(|(n, t)| (*n, t.as_str())).collect();
                kubernetes_update(dir.path(), "..2026_01", &files);
                for (name, _) in &files {
                    symlink(format!("..data/{name}"), dir.path().join(name)).unwrap();
                }
            }
        }
        let relay = Daemon::start(
            &binary("certrelayd"),
            &["-c", dir.path().to_str().unwrap()],
            "daemon started",
        );
        Setup {
            relay,
            dir,
            ca,
            laptop,
            port,
        }
    }

    fn rcpt(&self) -> String {
        rcpt(self.port, &self.ca.cert_pem, &self.laptop)
    }

    /// Waits until the laptop's RCPT gets `want` (a new session each try).
    fn wait_rcpt(&self, want: &str) {
        wait_until(&format!("RCPT answered {want}"), || {
            self.rcpt().starts_with(want).then_some(())
        });
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The reload report the relay keeps in its queue directory.
    fn report(&self) -> String {
        std::fs::read_to_string(self.path("spool/certrelayd.reload")).unwrap_or_default()
    }
}

fn main_cf(dir: &Path, extra: &str) -> String {
    let d = dir.display();
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
         virtual_alias_maps = hash:{d}/virtual\n\
         {extra}"
    )
}

/// What the kubelet does to a ConfigMap volume: the files in a new timestamped folder, a
/// new `..data` link to it renamed over the old one, then the old folder removed.
fn kubernetes_update(dir: &Path, stamp: &str, files: &[(&str, &str)]) {
    let data = dir.join(stamp);
    std::fs::create_dir(&data).unwrap();
    for (name, text) in files {
        std::fs::write(data.join(name), text).unwrap();
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    symlink(stamp, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

/// Writes `name` as editors do: a new file renamed over the old one.
fn replace(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.swp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[test]
fn a_newly_listed_laptop_may_relay_without_any_signal() {
    let s = Setup::start("watch-list", "", Layout::Plain);
    s.relay.wait_log("watching the configuration for changes");
    s.relay.wait_log("with inotify");
    assert!(s.rcpt().starts_with("554 5.7.1"), "{}", s.relay.log());
    // Written in place (closed after writing).
    s.dir.write("relay_clientcerts", &md5_line(&s.laptop));
    s.wait_rcpt("250");
    let log = s.relay.log();
    let changed = format!(
        "{}: changed; reloading the configuration",
        s.path("relay_clientcerts").display()
    );
    assert!(log.contains(&changed), "{log}");
    // The reload is the SIGHUP one: the same lines, the same report.
    assert!(log.contains("reload -- version"), "{log}");
    assert!(log.contains("configuration reloaded"), "{log}");
    wait_until("the reload report", || {
        let report = s.report();
        (report.contains("generation 2\n") && report.contains("result loaded\n")).then_some(())
    });

    // Unlisted again by an editor's rename: refused again.
    replace(s.dir.path(), "relay_clientcerts", "");
    s.wait_rcpt("554 5.7.1");
}

#[test]
fn a_broken_main_cf_keeps_the_running_configuration_and_says_why() {
    let s = Setup::start("watch-broken", "", Layout::Plain);
    s.dir.write("relay_clientcerts", &md5_line(&s.laptop));
    s.wait_rcpt("250");
    s.relay.wait_log_count("configuration reloaded", 1);

    let main = std::fs::read_to_string(s.path("main.cf")).unwrap();
    let line = main.lines().count() + 1;
    replace(
        s.dir.path(),
        "main.cf",
        &format!("{main}smtpd_timeout = banana\n"),
    );
    s.relay.wait_log("configuration not reloaded");
    let log = s.relay.log();
    let why = format!("{}:{line}: smtpd_timeout", s.path("main.cf").display());
    assert!(
        log.lines()
            .any(|l| l.starts_with("error: ") && l.contains(&why)),
        "no {why} in\n{log}"
    );
    wait_until("the refusal in the reload report", || {
        let report = s.report();
        (report.contains("result refused\n") && report.contains("smtpd_timeout")).then_some(())
    });
    // The running configuration still lists the laptop.
    assert!(s.rcpt().starts_with("250"), "{}", s.relay.log());

    // Fixed: loaded, and the broken file was reported once.
    replace(s.dir.path(), "main.cf", &main);
    s.relay.wait_log_count("configuration reloaded", 2);
    assert_eq!(
        s.relay.log().matches("configuration not reloaded").count(),
        1,
        "{}",
        s.relay.log()
    );
}

#[test]
fn a_kubernetes_data_swap_is_applied() {
    let s = Setup::start("watch-k8s", "", Layout::Kubernetes);
    assert!(s.rcpt().starts_with("554 5.7.1"), "{}", s.relay.log());
    let dir = s.dir.path();
    // The same files, but the laptop listed.
    let names = ["main.cf", "master.cf", "virtual"];
    let texts: Vec<String> = names
        .iter()
        .map(|n| std::fs::read_to_string(dir.join(n)).unwrap())
        .collect();
    let mut files: Vec<(&str, &str)> = names
        .iter()
        .zip(&texts)
        .map(|(n, t)| (*n, t.as_str()))
        .collect();
    let listed = md5_line(&s.laptop);
    files.push(("relay_clientcerts", &listed));
    kubernetes_update(dir, "..2026_02", &files);
    s.wait_rcpt("250");
    s.relay
        .wait_log("..data: changed; reloading the configuration");

    // And the next swap is seen as well (the watch follows the new folder).
    files.pop();
    files.push(("relay_clientcerts", ""));
    kubernetes_update(dir, "..2026_03", &files);
    s.wait_rcpt("554 5.7.1");
}

#[test]
fn polling_applies_a_change_too() {
    let s = Setup::start(
        "watch-poll",
        "certrelay_config_watch = poll\n",
        Layout::Plain,
    );
    s.relay.wait_log("looked at every 2 s");
    assert!(s.rcpt().starts_with("554 5.7.1"), "{}", s.relay.log());
    s.dir.write("relay_clientcerts", &md5_line(&s.laptop));
    s.wait_rcpt("250");
    s.relay.wait_log(&format!(
        "{}: changed; reloading the configuration",
        s.path("relay_clientcerts").display()
    ));
}

#[test]
fn a_file_touched_in_a_loop_reloads_at_most_once_per_quiet_interval() {
    let s = Setup::start("watch-flood", "", Layout::Plain);
    let listed = md5_line(&s.laptop);
    let began = Instant::now();
    let mut writes = 0u32;
    while began.elapsed() < Duration::from_secs(3) {
        // A change each time: the size alternates.
        let text = if writes.is_multiple_of(2) {
            ""
        } else {
            "# x\n"
        };
        s.dir.write("relay_clientcerts", text);
        writes += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    s.dir.write("relay_clientcerts", &listed);
    let elapsed = began.elapsed();
    // The last content is read, in the end.
    s.wait_rcpt("250");
    let reloads = s.relay.log().matches("reload -- version").count();
    // At most one reload per 500 ms of the flood, and the one after it.
    let most = usize::try_from(elapsed.as_millis() / 500).unwrap() + 2;
    assert!(
        reloads <= most,
        "{reloads} reloads for {writes} writes in {elapsed:?}:\n{}",
        s.relay.log()
    );
    assert!(writes > 100, "{writes}");
}

#[test]
#[ignore = "needs root: drops to mail_owner (run by .ci/run)"]
fn started_as_root_a_changed_root_only_key_keeps_the_copy_read_at_start_once_per_change() {
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        nix_uid(),
        0,
        "this test starts certrelayd as root: run it as root"
    );
    let s = Setup::start("watch-root", "", Layout::Plain);
    s.relay
        .wait_log("running as mail_owner nobody (uid 65534, gid 65534)");
    let key = s.path("relay.key");
    // The key, rewritten by root for root alone (renamed in whole): seen, reloaded, and
    // the copy read at start kept.
    let text = std::fs::read_to_string(&key).unwrap();
    let tmp = s.path(".relay.key.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, &key).unwrap();
    let kept = format!(
        "{}: Permission denied (os error 13); keeping the copy read at start",
        key.display()
    );
    s.relay.wait_log(&kept);
    s.relay.wait_log("configuration reloaded");
    // A listed laptop, later: one more reload, one more word about the key.
    s.dir.write("relay_clientcerts", &md5_line(&s.laptop));
    s.wait_rcpt("250");
    let log = s.relay.log();
    // One reload per change, and the key's word with each (a reload reads the key twice,
    // building the listener and checking it, as at SIGHUP), never with a poll.
    assert_eq!(log.matches("reload -- version").count(), 2, "{log}");
    assert!(log.matches(&kept).count() <= 4, "{log}");
}

fn nix_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u32::MAX)
}

#[test]
fn check_refuses_an_unknown_watch_mode_at_its_line() {
    let dir = TempDir::new("watch-check");
    let main = main_cf(dir.path(), "certrelay_config_watch = sometimes\n");
    let line = main.lines().count();
    dir.write("main.cf", &main);
    dir.write("relay_clientcerts", "");
    dir.write("virtual", "postmaster admin@elsewhere.example\n");
    let out = std::process::Command::new(binary("certrelayd"))
        .args(["-c", dir.path().to_str().unwrap(), "check"])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{said}");
    let want = format!(
        "{}:{line}: error: certrelay_config_watch = sometimes: expected inotify, poll or no",
        dir.path().join("main.cf").display()
    );
    assert!(said.contains(&want), "no {want:?} in\n{said}");
}
