//! A real Postfix instance (Debian's) on loopback, for interop tests: its own configuration,
//! queue and data directories in a temporary directory, the master in the foreground as our
//! child, its log captured, stopped when dropped. Nothing of the machine's own instance
//! (`/etc/postfix`, `/var/spool/postfix`, port 25) is touched.
//!
//! What it takes to run one beside the machine's instance:
//! - every service unchrooted (the private queue has no `/etc` or libraries inside);
//! - the `smtp inet` listener (port 25) replaced by `127.0.0.1:PORT`;
//! - `queue_directory` and `data_directory` of its own (the master's lock lives in the
//!   latter), the data directory owned by `postfix`;
//! - `postfix -c DIR check` once to create the queue's subdirectories;
//! - there is no syslog: `maillog_file = /dev/stdout` with the master run as `master -s`
//!   (the `postlog` service of Debian's master.cf writes the log to the master's stdout).
//!
//! As root, `-c DIR` needs no `alternate_config_directories` in `/etc/postfix/main.cf`.

use crate::{TempDir, WAIT};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where Debian keeps Postfix's programs and default configuration.
const ETC: &str = "/etc/postfix";

/// A Postfix configuration being prepared; [`PostfixSetup::start`] runs it.
pub struct PostfixSetup {
    dir: TempDir,
    port: u16,
}

impl PostfixSetup {
    /// A copy of Debian's configuration in a fresh directory, listening on
    /// `127.0.0.1:port` only, with a private queue, no local delivery and no syslog.
    pub fn new(label: &str, port: u16) -> PostfixSetup {
        let dir = TempDir::new(&format!("postfix-{label}"));
        let setup = PostfixSetup { dir, port };
        let cfg = setup.config_dir();
        std::fs::create_dir_all(&cfg).expect("create the configuration directory");
        for file in ["main.cf", "master.cf"] {
            std::fs::copy(Path::new(ETC).join(file), cfg.join(file))
                .unwrap_or_else(|e| panic!("copy {ETC}/{file} (is postfix installed?): {e}"));
        }
        let data = setup.dir.path().join("data");
        std::fs::create_dir_all(&data).expect("create the data directory");
        command_ok(Command::new("chown").arg("postfix").arg(&data));
        std::fs::create_dir_all(setup.queue_dir()).expect("create the queue directory");

        let queue = format!("queue_directory = {}", setup.queue_dir().display());
        let data = format!("data_directory = {}", data.display());
        setup.postconf(&[
            &queue,
            &data,
            "inet_interfaces = 127.0.0.1",
            "inet_protocols = ipv4",
            "maillog_file = /dev/stdout",
            "mydestination =",
            "alias_maps =",
            "alias_database =",
            // Debian's main.cf sets the TLS levels, which would hide the legacy
            // `smtp(d)_use_tls` / `smtp(d)_enforce_tls` settings of the recipes.
            "smtp_tls_security_level =",
            "smtpd_tls_security_level =",
            "smtp_tls_CApath =",
            // A failed attempt is retried soon, not in five minutes.
            "minimal_backoff_time = 2s",
            "maximal_backoff_time = 4s",
            "queue_run_delay = 2s",
        ]);
        // No chroot anywhere; port 25 belongs to the machine's instance.
        postconf_ok(&cfg, &["-F", "*/*/chroot = n"]);
        postconf_ok(&cfg, &["-M#", "smtp/inet"]);
        let listener = format!("127.0.0.1:{port}/inet = 127.0.0.1:{port} inet n - n - - smtpd");
        postconf_ok(&cfg, &["-M", &listener]);
        setup
    }

    /// The directory holding main.cf and master.cf.
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// The private queue directory.
    pub fn queue_dir(&self) -> PathBuf {
        self.dir.path().join("queue")
    }

    /// The temporary directory everything lives in (write certificates and tables here).
    pub fn dir(&self) -> &TempDir {
        &self.dir
    }

    /// Sets main.cf parameters (`name = value` each) with `postconf -e`.
    pub fn postconf(&self, settings: &[&str]) {
        let mut args = vec!["-e"];
        args.extend_from_slice(settings);
        postconf_ok(&self.config_dir(), &args);
    }

    /// Writes a lookup table and builds its `.db` with `postmap`; returns `hash:PATH`.
    pub fn hash_table(&self, name: &str, text: &str) -> String {
        let path = self.dir.write(name, text);
        command_ok(
            Command::new("postmap")
                .arg("-c")
                .arg(self.config_dir())
                .arg(format!("hash:{}", path.display())),
        );
        format!("hash:{}", path.display())
    }

    /// Checks the configuration (creating the queue's subdirectories) and runs the master
    /// until it says it started and the listener answers.
    pub fn start(self) -> Postfix {
        command_ok(
            Command::new("postfix")
                .arg("-c")
                .arg(self.config_dir())
                .arg("check"),
        );
        let master =
            Path::new(&postconf_value(&self.config_dir(), "daemon_directory")).join("master");
        // `-s` keeps the master's stdout, where postlogd writes the log; stdout joins stderr
        // so that one pipe carries everything.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" -c \"$1\" -s 2>&1")
            .arg(&master)
            .arg(self.config_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the postfix master");
        let log = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("piped stdout");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let postfix = Postfix {
            child: Mutex::new(child),
            log,
            setup: self,
        };
        postfix.wait_log("daemon started");
        let until = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", postfix.port())).is_err() {
            assert!(
                Instant::now() < until,
                "postfix does not listen:\n{}",
                postfix.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        postfix
    }
}

/// A running Postfix master and its services; stopped (SIGTERM, which the master passes
/// on to its children) when dropped.
pub struct Postfix {
    child: Mutex<Child>,
    log: Arc<Mutex<String>>,
    setup: PostfixSetup,
}

impl Postfix {
    /// The SMTP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.setup.port
    }

    /// Its configuration, directories included.
    pub fn setup(&self) -> &PostfixSetup {
        &self.setup
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to [`WAIT`] until the log contains `needle`; panics with the log if not.
    pub fn wait_log(&self, needle: &str) {
        let until = Instant::now() + WAIT;
        while !self.log().contains(needle) {
            if let Ok(Some(status)) = self.child.lock().unwrap().try_wait() {
                panic!(
                    "postfix exited ({status}) before {needle:?}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < until,
                "no {needle:?} in the postfix log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Injects a message with Postfix's own `sendmail -C DIR args...`.
    pub fn sendmail(&self, args: &[&str], message: &[u8]) -> Output {
        let mut child = Command::new("sendmail")
            .arg("-C")
            .arg(self.setup.config_dir())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run postfix's sendmail");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(message)
            .expect("write the message to sendmail");
        wait_bounded(child, "postfix's sendmail")
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Waits up to 60 s for `child`, killing it past that.
fn wait_bounded(mut child: Child, what: &str) -> Output {
    let until = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("{what} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

/// Runs `postconf -c DIR args...`, which must succeed.
fn postconf_ok(cfg: &Path, args: &[&str]) {
    command_ok(Command::new("postconf").arg("-c").arg(cfg).args(args));
}

/// `postconf -c DIR -h name`.
fn postconf_value(cfg: &Path, name: &str) -> String {
    let out = command_ok(
        Command::new("postconf")
            .arg("-c")
            .arg(cfg)
            .args(["-h", name]),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs a command to completion (bounded) and panics with its output unless it succeeded.
fn command_ok(cmd: &mut Command) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e} (is postfix installed?)"));
    let out = wait_bounded(child, &what);
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
