//! Where the relay's log goes and what it looks like, with the real `certrelayd` over
//! loopback: `maillog_file` lines in syslog's shape (kept across the privilege drop and
//! reopened on SIGHUP), syslog datagrams on a test socket in place of /dev/log, and, with
//! Debian's fail2ban (`#[ignore]`), the filter in dist/fail2ban matching every hostile
//! client and no line of a listed laptop's session.

use certrelay_shell::logging::TEST_ONLY_DEV_LOG_VAR;
use certrelay_testkit::client::{Client, IO_TIMEOUT};
use certrelay_testkit::pki::client_config;
use certrelay_testkit::pki::{self, Ca, Issued};
use certrelay_testkit::recipe::RelayFiles;
use certrelay_testkit::{binary, free_port, wait_until, workspace_root, TempDir};
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

// ---------------------------------------------------------------------------------------
// The relay.

struct Relay {
    dir: TempDir,
    /// The `may` listener, asking for certificates.
    port: u16,
    /// The `encrypt` listener requiring a trusted certificate (`smtpd_tls_req_ccert`).
    req_port: u16,
    ca: Ca,
    laptop: Issued,
}

/// A relay directory (`RelayFiles`): main.cf with `extra` last, and two master.cf
/// listeners. 127.0.0.1 is not in mynetworks, and mail_owner is `nobody`, so a relay
/// started as root gives up root before any client speaks.
fn relay_dir(label: &str, extra: &str) -> Relay {
    let files = RelayFiles::new(label);
    files.dir.write(
        "main.cf",
        &files.main_cf(&format!(
            "smtpd_tls_loglevel = 1\n\
             smtpd_client_connection_count_limit = 0\n\
             smtpd_hard_error_limit = 3\n\
             smtpd_error_sleep_time = 0s\n\
             {extra}"
        )),
    );
    let RelayFiles { dir, ca, laptop } = files;
    let port = free_port();
    let req_port = free_port();
    dir.write(
        "master.cf",
        &format!(
            "127.0.0.1:{port} inet n - n - - smtpd\n\
             127.0.0.1:{req_port} inet n - n - - smtpd\n  \
             -o smtpd_tls_security_level=encrypt\n  -o smtpd_tls_req_ccert=yes\n"
        ),
    );
    Relay {
        dir,
        port,
        req_port,
        ca,
        laptop,
    }
}

/// `certrelayd run`, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }
}

/// Starts the relay with standard error going to `stderr` and `env` set.
fn start(relay: &Relay, stderr: Stdio, env: &[(&str, &Path)]) -> Running {
    let mut cmd = Command::new(binary("certrelayd"));
    cmd.args(["-c", relay.dir.path().to_str().unwrap(), "run"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Running(cmd.spawn().expect("start certrelayd"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until `path` holds `needle` at least `count` times.
fn wait_file(path: &Path, needle: &str, count: usize) -> String {
    wait_until(
        &format!("{count} × {needle:?} in {}", path.display()),
        || {
            let text = read(path);
            (text.matches(needle).count() >= count).then_some(text)
        },
    )
}

/// `2025-12-04T01:02:03.000042+00:00 HOST ` in front of a line: the time and the host.
fn has_time_and_host(line: &str) -> bool {
    let b = line.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    b.len() > 34
        && digits(0..4)
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && digits(20..26)
        && &line[26..33] == "+00:00 "
        && line[33..].split(' ').next().is_some_and(|h| !h.is_empty())
}

// ---------------------------------------------------------------------------------------
// maillog_file.

#[test]
fn maillog_file_gets_postfix_lines_after_the_privilege_drop_and_reopens_on_sighup() {
    let relay = relay_dir("log-file", "");
    // A world-writable folder: whatever account the relay becomes may create the file
    // again after a rotation.
    let logs = relay.dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::set_permissions(&logs, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let log = logs.join("mail.log");
    let main_cf = relay.dir.path().join("main.cf");
    let mut text = read(&main_cf);
    text.push_str(&format!("maillog_file = {}\n", log.display()));
    std::fs::write(&main_cf, text).unwrap();
    let relay_proc = start(&relay, Stdio::null(), &[]);
    let pid = relay_proc.pid();
    wait_file(&log, "daemon started", 1);

    // A session: TLS (smtpd_tls_loglevel = 1 logs the handshake) and a refused relaying.
    let mut c = Client::greeted(relay.port);
    c.tls(client_config(&relay.ca.cert_pem, None));
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@client.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@far.example>").starts_with("554"));
    c.cmd("QUIT");
    let text = wait_file(&log, "disconnect from", 1);

    let master = format!("certrelay/master[{pid}]: ");
    let smtpd = format!("certrelay/smtpd[{pid}]: ");
    for line in text.lines() {
        assert!(has_time_and_host(line), "{line}");
    }
    let find = |tag: &str, rest: &str| {
        text.lines()
            .find(|l| {
                l[33..]
                    .split_once(' ')
                    .is_some_and(|(_, t)| t.starts_with(&format!("{tag}{rest}")))
            })
            .unwrap_or_else(|| panic!("no {tag}{rest} in\n{text}"))
            .to_owned()
    };
    find(&master, "daemon started -- version");
    find(&smtpd, "connect from unknown[127.0.0.1]");
    find(
        &smtpd,
        "Anonymous TLS connection established from unknown[127.0.0.1]",
    );
    find(
        &smtpd,
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 <b@far.example>: Relay \
         access denied",
    );
    if nix_root() {
        // Started as root: the lines after the drop still reach the file root opened.
        let dropped = find(&master, "running as mail_owner nobody");
        assert!(text.find(&dropped).unwrap() < text.find("connect from").unwrap());
    }

    // Log rotation: the file is moved away, SIGHUP opens the path again.
    let rotated = logs.join("mail.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    relay_proc.signal("HUP");
    let fresh = wait_file(&log, "configuration reloaded", 1);
    assert!(
        fresh.contains(&format!("{master}configuration reloaded")),
        "{fresh}"
    );
    assert!(!read(&rotated).contains("configuration reloaded"));
}

fn nix_root() -> bool {
    // Whether the test runs as root (the relay then drops to mail_owner).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|ids| ids.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------
// syslog.

/// Receives datagrams until one contains `needle`; all of them, in order.
fn receive_until(socket: &UnixDatagram, needle: &str) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let d = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = d.contains(needle);
                got.push(d);
                if done {
                    return got;
                }
            }
            Err(e) => panic!("no datagram with {needle:?} ({e}); got {got:#?}"),
        }
    }
}

#[test]
fn syslog_gets_datagrams_when_stderr_is_not_kept_and_stderr_keeps_the_log_otherwise() {
    let relay = relay_dir(
        "log-syslog",
        "syslog_name = certrelay-test\nsyslog_facility = local0\n",
    );
    let path = relay.dir.path().join("dev-log");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    // The relay may become `nobody`: it keeps the connected socket, but may need to
    // connect again.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();

    // Standard error to /dev/null, as a daemon started in the background has it.
    let relay_proc = start(&relay, Stdio::null(), &[(TEST_ONLY_DEV_LOG_VAR, &path)]);
    let pid = relay_proc.pid();
    let got = receive_until(&socket, "daemon started");
    // local0 = 16: info is <134>, warning <132>.
    let started = format!("<134>certrelay-test/master[{pid}]: daemon started -- version");
    assert!(got.iter().any(|d| d.starts_with(&started)), "{got:#?}");
    let mut c = Client::greeted(relay.port);
    assert!(c.cmd("GET / HTTP/1.1").starts_with("221 "));
    let got = receive_until(&socket, "disconnect from");
    let want = format!(
        "<132>certrelay-test/smtpd[{pid}]: warning: non-SMTP command from \
         unknown[127.0.0.1]: GET / HTTP/1.1"
    );
    assert!(got.contains(&want), "{got:#?}");
    drop(relay_proc);

    // Standard error kept (a pipe, as a service manager or this suite has it): the lines
    // stay there, plain, and nothing reaches the socket.
    let out = relay.dir.path().join("stderr");
    let file = std::fs::File::create(&out).unwrap();
    let relay_proc = start(&relay, Stdio::from(file), &[(TEST_ONLY_DEV_LOG_VAR, &path)]);
    let text = wait_file(&out, "daemon started", 1);
    assert!(
        text.lines()
            .any(|l| l.starts_with("daemon started -- version")),
        "{text}"
    );
    drop(relay_proc);
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    assert!(
        socket.recv(&mut buf).is_err(),
        "a datagram while stderr was kept"
    );
}

// ---------------------------------------------------------------------------------------
// fail2ban.

/// The stock `common.conf` beside the project's filter, as fail2ban-regex resolves a
/// filter's includes from the filter's own folder.
fn filter_dir(tmp: &Path) -> PathBuf {
    let dir = tmp.join("filter.d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        "/etc/fail2ban/filter.d/common.conf",
        dir.join("common.conf"),
    )
    .expect("Debian's fail2ban (apt-get install fail2ban) for /etc/fail2ban/filter.d/common.conf");
    let filter = dir.join("certrelayd.conf");
    std::fs::copy(
        workspace_root().join("dist/fail2ban/filter.d/certrelayd.conf"),
        &filter,
    )
    .unwrap();
    filter
}

#[test]
#[ignore = "needs Debian's fail2ban (fail2ban-regex)"]
fn fail2ban_matches_every_hostile_client_and_no_line_of_a_listed_laptop() {
    let relay = relay_dir("log-fail2ban", "");
    let log = relay.dir.path().join("mail.log");
    let main_cf = relay.dir.path().join("main.cf");
    let mut text = read(&main_cf);
    text.push_str(&format!("maillog_file = {}\n", log.display()));
    std::fs::write(&main_cf, text).unwrap();
    let _relay_proc = start(&relay, Stdio::null(), &[]);
    wait_file(&log, "daemon started", 1);

    // Each client in turn; the lines each session added to the log.
    let mut sessions: Vec<(&str, &str, Vec<String>)> = Vec::new();
    let mut run = |name: &'static str, marker: &'static str, session: &dyn Fn()| {
        let before = read(&log).lines().count();
        let disconnects = read(&log).matches("disconnect from").count();
        session();
        let text = wait_file(&log, "disconnect from", disconnects + 1);
        let lines = text.lines().skip(before).map(str::to_owned).collect();
        sessions.push((name, marker, lines));
    };
    run("listed laptop", "", &|| {
        let mut c = Client::greeted(relay.port);
        c.tls(client_config(&relay.ca.cert_pem, Some(relay.laptop.pems())));
        assert!(c.cmd("EHLO laptop.test").starts_with("250"));
        assert!(c.cmd("MAIL FROM:<me@laptop.test>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<you@far.example>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        let queued = c.cmd("Subject: hi\r\n\r\nhello\r\n.");
        assert!(queued.starts_with("250 2.0.0 Ok: queued as"), "{queued}");
        c.cmd("QUIT");
    });
    run("relaying", "Relay access denied", &|| {
        let mut c = Client::greeted(relay.port);
        assert!(c.cmd("EHLO spammer.test").starts_with("250"));
        assert!(c.cmd("MAIL FROM:<a@spammer.test>").starts_with("250"));
        let r = c.cmd("RCPT TO:<victim@far.example>");
        assert!(r.contains("Relay access denied"), "{r}");
        c.cmd("QUIT");
    });
    run("no certificate", "No client certificate presented", &|| {
        let mut c = Client::greeted(relay.req_port);
        c.tls(client_config(&relay.ca.cert_pem, None));
        let r = c.cmd("EHLO prober.test");
        assert!(r.starts_with("421 4.7.1"), "{r}");
    });
    run(
        "untrusted certificate",
        "Client certificate not trusted",
        &|| {
            let stranger = pki::self_signed_client("stranger");
            let mut c = Client::greeted(relay.req_port);
            c.tls(client_config(&relay.ca.cert_pem, Some(stranger.pems())));
            let r = c.cmd("EHLO prober.test");
            assert!(r.starts_with("421 4.7.1"), "{r}");
        },
    );
    run("web request", "non-SMTP command", &|| {
        let mut c = Client::greeted(relay.port);
        assert!(c.cmd("GET / HTTP/1.1").starts_with("221 "));
    });
    run("errors", "too many errors after", &|| {
        let mut c = Client::greeted(relay.port);
        assert!(c.cmd("EHLO fuzzer.test").starts_with("250"));
        c.cmd("XYZZY");
        c.cmd("XYZZY");
        // The third error's reply, then the farewell.
        assert!(c.cmd("XYZZY").starts_with("500 "));
        let r = c.reply();
        assert!(r.contains("too many errors"), "{r}");
    });

    let tmp = TempDir::new("log-fail2ban-filter");
    let filter = filter_dir(tmp.path());
    let out = Command::new("fail2ban-regex")
        .args(["-o", "<ip>|<msg>"])
        .arg(&log)
        .arg(&filter)
        .output()
        .expect("run fail2ban-regex (apt-get install fail2ban)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let matched: Vec<(&str, &str)> = stdout.lines().filter_map(|l| l.split_once('|')).collect();
    let all = read(&log);
    for (ip, line) in &matched {
        assert_eq!(*ip, "127.0.0.1", "{line}");
    }
    for (name, marker, lines) in &sessions {
        let hits: Vec<&&str> = matched
            .iter()
            .map(|(_, l)| l)
            .filter(|l| lines.iter().any(|s| s == *l))
            .collect();
        if marker.is_empty() {
            assert!(hits.is_empty(), "{name}: matched {hits:?}\n{all}");
        } else {
            assert!(
                hits.iter().any(|l| l.contains(marker)),
                "{name}: no matched line with {marker:?}; matched {matched:?}\n{all}"
            );
        }
    }
    // One line per hostile client, nothing else.
    assert_eq!(matched.len(), sessions.len() - 1, "{matched:#?}\n{all}");
    // fail2ban-regex's own summary says the same.
    let out = Command::new("fail2ban-regex")
        .arg(&log)
        .arg(&filter)
        .output()
        .expect("run fail2ban-regex");
    let report = String::from_utf8_lossy(&out.stdout);
    let summary = report
        .lines()
        .find(|l| l.starts_with("Lines: "))
        .unwrap_or_else(|| panic!("no summary in\n{report}"));
    println!("fail2ban-regex: {summary}");
    assert!(
        summary.contains(&format!(" {} matched,", sessions.len() - 1)),
        "{report}"
    );
}

// ---------------------------------------------------------------------------------------
// The laptop.

#[test]
fn the_laptops_delivery_run_writes_maillog_file_and_sendmail_stays_quiet() {
    let sink = certrelay_testkit::sink::Sink::start(Default::default());
    let dir = TempDir::new("log-laptop");
    let log = dir.path().join("mail.log");
    dir.write(
        "main.cf",
        &format!(
            "myhostname = laptop.test\n\
             queue_directory = {}/queue\n\
             relayhost = [127.0.0.1]:{}\n\
             smtp_connect_timeout = 5s\n\
             maillog_file = {}\n",
            dir.path().display(),
            sink.port(),
            log.display()
        ),
    );
    let mut child = Command::new(binary("certrelay"))
        .arg("-c")
        .arg(dir.path())
        .args(["sendmail", "bob@example.org"])
        .env("USER", "alice")
        .env("HOME", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start certrelay sendmail");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Subject: hi\n\nhello\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // The mail program sees nothing on its terminal.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The delivery run it started in the background logs to maillog_file, in the shape
    // Postfix's pickup and smtp use.
    let text = wait_file(&log, "status=sent", 1);
    for line in text.lines() {
        assert!(has_time_and_host(line), "{line}");
    }
    let tagged = |service: &str, rest: &str| {
        text.lines().any(|l| {
            l.split_once(&format!(" certrelay/{service}["))
                .and_then(|(_, t)| t.split_once("]: "))
                .is_some_and(|(pid, t)| pid.parse::<u32>().is_ok() && t.contains(rest))
        })
    };
    assert!(tagged("pickup", ": picked up from the maildrop"), "{text}");
    assert!(
        tagged(
            "smtp",
            ": to=<bob@example.org>, relay=127.0.0.1[127.0.0.1]:"
        ),
        "{text}"
    );
    assert_eq!(sink.count(), 1);
}
