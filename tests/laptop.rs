//! The laptop side end to end: the real `certrelay` binary submitting with its sendmail
//! interface, listing, deleting, and delivering to a plaintext SMTP sink on loopback.

use certrelay_core::queue::{Envelope, RecipientState};
use certrelay_shell::spool::Spool;
use certrelay_testkit::daemon::Daemon;
use certrelay_testkit::free_port;
use certrelay_testkit::sink::{Sink, SinkOptions};
use certrelay_testkit::wait_until;
use certrelay_testkit::{binary, TempDir};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{ChildStdin, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---- the laptop's configuration and commands ------------------------------------------

struct Laptop {
    dir: TempDir,
    port: u16,
}

impl Laptop {
    /// A configuration directory relaying through `[127.0.0.1]:port`, with `extra` lines.
    fn new(label: &str, port: u16, extra: &str) -> Laptop {
        let dir = TempDir::new(label);
        let queue = dir.path().join("queue");
        dir.write(
            "main.cf",
            &format!(
                "myhostname = laptop.test\n\
                 queue_directory = {}\n\
                 relayhost = [127.0.0.1]:{port}\n\
                 smtp_connect_timeout = 5s\n\
                 {extra}\n",
                queue.display()
            ),
        );
        Laptop { dir, port }
    }

    fn cfg(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn queue_dir(&self) -> PathBuf {
        self.dir.path().join("queue")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(binary("certrelay"));
        c.arg("-c").arg(self.dir.path()).args(args);
        c.env("USER", "alice")
            .env("HOME", self.dir.path())
            .env_remove("NAME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        run_bounded(self.command(args), None)
    }

    fn sendmail(&self, args: &[&str], message: &[u8]) -> Output {
        let mut all = vec!["sendmail"];
        all.extend_from_slice(args);
        run_bounded(self.command(&all), Some(message))
    }

    /// Committed envelopes in the spool (not the maildrop).
    fn queued(&self) -> Vec<Envelope> {
        let spool = Spool::attach(self.queue_dir());
        let Ok(ids) = spool.ids() else {
            return Vec::new();
        };
        let mut out: Vec<Envelope> = ids
            .iter()
            .filter_map(|id| Envelope::parse(&spool.read_envelope(id).ok()?).ok())
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The envelopes once the detached attempt has recorded one (bounded wait).
    fn after_first_attempt(&self) -> Vec<Envelope> {
        wait_until("the detached delivery attempt", || {
            let q = self.queued();
            (!q.is_empty() && q.iter().all(|e| e.attempts > 0)).then_some(q)
        })
    }

    fn message_text(&self, id: &str) -> String {
        let content = Spool::attach(self.queue_dir()).read_content(id).unwrap();
        String::from_utf8(content).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.queue_dir().join("delivery.log")).unwrap_or_default()
    }
}

/// Runs a command with an optional stdin, killing it after 60 s.
fn run_bounded(mut cmd: Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start certrelay");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        // The program may stop reading early (a dot line, a NUL): ignore a broken pipe.
        let _ = pipe.write_all(bytes);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("certrelay did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const MESSAGE: &[u8] = b"To: Bob <bob@example.org>, carol@example.org\n\
Cc: undisclosed-recipients:;\n\
Bcc: dave@example.org\n\
Subject: hello\n\
\n\
first line\n\
.\n\
after the dot\n";

// ---- tests ----------------------------------------------------------------------------

#[test]
fn relay_down_queues_then_flush_delivers_once() {
    let port = free_port();
    let laptop = Laptop::new("down", port, "");
    let started = Instant::now();
    let out = laptop.sendmail(&["-t"], MESSAGE);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "returns at once"
    );

    let queued = laptop.after_first_attempt();
    assert_eq!(queued.len(), 1);
    let env = &queued[0];
    assert_eq!(env.sender, "alice@laptop.test");
    let rcpts: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(
        rcpts,
        ["bob@example.org", "carol@example.org", "dave@example.org"]
    );
    assert!(env
        .recipients
        .iter()
        .all(|r| r.state == RecipientState::Deferred && r.reason.contains("Connection refused")));

    let msg = laptop.message_text(env.id.as_str());
    assert!(!msg.to_ascii_lowercase().contains("bcc:"), "{msg}");
    assert!(!msg.contains("dave"), "{msg}");
    for field in [
        "\r\nDate: ",
        "\r\nMessage-ID: <",
        "\r\nFrom: alice@laptop.test\r\n",
    ] {
        assert!(msg.contains(field), "{field:?} missing in {msg}");
    }
    assert!(msg.starts_with("Received: by laptop.test"), "{msg}");
    assert!(
        msg.ends_with("\r\n\r\nfirst line\r\n"),
        "the dot ends input: {msg}"
    );
    assert!(!msg.contains("after the dot"));

    // The listing says why it waits.
    let listing = text(&laptop.run(&["queue"]).stdout);
    assert!(listing.contains(env.id.as_str()), "{listing}");
    assert!(listing.contains("Connection refused"), "{listing}");
    assert!(listing.contains("next attempt"), "{listing}");

    // The relay comes up: flush delivers it, once.
    let sink = Sink::start_on(laptop.port, SinkOptions::default());
    let out = laptop.run(&["flush"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let got = sink.messages();
    assert_eq!(got.len(), 1, "{}", laptop.log());
    assert_eq!(got[0].sender, "alice@laptop.test");
    assert_eq!(got[0].recipients.len(), 3);
    assert!(got[0].text().contains("Subject: hello\r\n"));
    assert!(laptop.queued().is_empty());
    let out = laptop.run(&["flush"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(sink.messages().len(), 1, "delivered only once");
    let listing = text(&laptop.run(&["queue"]).stdout);
    assert!(listing.contains("Mail queue is empty"), "{listing}");
}

#[test]
fn relay_up_detached_attempt_delivers() {
    let sink = Sink::start(SinkOptions::default());
    let port = sink.port();
    let laptop = Laptop::new("up", port, "");
    let out = laptop.sendmail(
        &[
            "-i",
            "-f",
            "me@laptop.test",
            "-F",
            "Me Myself",
            "bob@example.org",
        ],
        b"Subject: detached\n\n.\nstill body\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let got = wait_until("the sink to receive the message", || {
        let got = sink.messages();
        (!got.is_empty()).then_some(got)
    });
    assert_eq!(got[0].sender, "me@laptop.test");
    assert_eq!(got[0].recipients, ["bob@example.org"]);
    // -i: the lone dot is text (dot-stuffed on the wire).
    assert!(
        got[0].wire().contains("\r\n..\r\nstill body\r\n"),
        "{:?}",
        got[0].wire()
    );
    assert!(got[0]
        .text()
        .contains("From: Me Myself <me@laptop.test>\r\n"));
    wait_until("the queue to empty", || {
        laptop.queued().is_empty().then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.messages().len(), 1);
}

#[test]
fn nul_byte_is_refused() {
    let laptop = Laptop::new("nul", free_port(), "");
    let out = laptop.sendmail(&["bob@example.org"], b"Subject: x\n\nbad \0 byte\n");
    assert_eq!(out.status.code(), Some(65), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("NUL"), "{}", text(&out.stderr));
    let listing = text(&laptop.run(&["queue"]).stdout);
    assert!(listing.contains("Mail queue is empty"), "{listing}");
}

#[test]
fn usage_errors() {
    let laptop = Laptop::new("usage", free_port(), "");
    let out = laptop.sendmail(&[], b"Subject: x\n\n");
    assert_eq!(out.status.code(), Some(64), "no recipient");
    let out = laptop.sendmail(&["-bz"], b"");
    assert_eq!(out.status.code(), Some(64));
    let out = laptop.sendmail(&["-t"], b"Subject: no recipients\n\nx\n");
    assert_eq!(out.status.code(), Some(65));
    let out = laptop.run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn listing_and_delete() {
    let laptop = Laptop::new("delete", free_port(), "");
    let out = laptop.sendmail(
        &["-oi", "-oem", "-odb", "-B", "8BITMIME", "carol@example.org"],
        b"Subject: to delete\n\nx\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let queued = laptop.after_first_attempt();
    let id = queued[0].id.as_str().to_owned();

    let bp = laptop.sendmail(&["-bp"], b"");
    let listing = text(&bp.stdout);
    assert!(
        listing.contains(&id) && listing.contains("carol@example.org"),
        "{listing}"
    );
    assert!(listing.contains("-- 1 Kbytes in 1 Request."), "{listing}");
    assert_eq!(listing, text(&laptop.run(&["queue"]).stdout));

    // Invoked as `sendmail` (program name), with -C.
    let link = laptop.dir.path().join("sendmail");
    std::os::unix::fs::symlink(binary("certrelay"), &link).unwrap();
    let mut as_sendmail = Command::new(&link);
    as_sendmail.args(["-C", &laptop.cfg(), "-bp"]);
    assert_eq!(text(&run_bounded(as_sendmail, None).stdout), listing);

    let out = laptop.run(&["delete", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(laptop.queued().is_empty());
    let out = laptop.run(&["delete", &id]);
    assert_eq!(out.status.code(), Some(1), "already gone");
    let listing = text(&laptop.run(&["queue"]).stdout);
    assert!(listing.contains("Mail queue is empty"), "{listing}");
}

fn per_site(label: &str, value: &str, port: u16) -> Laptop {
    let laptop = Laptop::new(label, port, "");
    let table = laptop
        .dir
        .write("tls_per_site", &format!("[127.0.0.1]:{port}    {value}\n"));
    laptop.dir.write(
        "main.cf",
        &format!(
            "myhostname = laptop.test\n\
             queue_directory = {}\n\
             relayhost = [127.0.0.1]:{port}\n\
             smtp_use_tls = yes\n\
             smtp_enforce_tls = yes\n\
             smtp_tls_per_site = texthash:{}\n",
            laptop.queue_dir().display(),
            table.display()
        ),
    );
    laptop
}

#[test]
fn per_site_none_overrides_enforce_tls() {
    let sink = Sink::start(SinkOptions::default());
    let port = sink.port();
    let laptop = per_site("none", "NONE", port);
    let out = laptop.sendmail(&["bob@example.org"], b"Subject: plain\n\nx\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    wait_until("plaintext delivery", || {
        (!sink.messages().is_empty()).then_some(())
    });
}

#[test]
fn per_site_may_does_not_weaken_enforce_tls() {
    let sink = Sink::start(SinkOptions::default());
    let port = sink.port();
    let laptop = per_site("may", "may", port);
    let out = laptop.sendmail(&["bob@example.org"], b"Subject: tls\n\nx\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let queued = laptop.after_first_attempt();
    let r = &queued[0].recipients[0];
    assert_eq!(r.dsn, "4.7.4", "{r:?}");
    assert!(r.reason.contains("TLS is required"), "{r:?}");
    assert!(sink.messages().is_empty());
}

#[test]
fn invalid_per_site_value_defers_with_config_problem() {
    let sink = Sink::start(SinkOptions::default());
    let port = sink.port();
    let laptop = per_site("invalid", "SOMETIMES", port);
    let out = laptop.sendmail(&["bob@example.org"], b"Subject: tls\n\nx\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let queued = laptop.after_first_attempt();
    let r = &queued[0].recipients[0];
    assert_eq!(
        (r.dsn.as_str(), r.reason.as_str()),
        ("4.7.5", "client TLS configuration problem")
    );
    assert!(sink.messages().is_empty());
}

#[test]
fn concurrent_submissions_are_each_delivered_once() {
    let sink = Sink::start(SinkOptions::default());
    let port = sink.port();
    let laptop = Laptop::new("concurrent", port, "");
    let children: Vec<_> = (0..6)
        .map(|i| {
            let mut c = laptop.command(&["sendmail", &format!("r{i}@example.org")]);
            c.stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut child = c.spawn().unwrap();
            let body = format!("Subject: number {i}\n\nx\n");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(body.as_bytes())
                .unwrap();
            child
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    wait_until("six deliveries", || {
        (sink.messages().len() >= 6).then_some(())
    });
    wait_until("the queue to empty", || {
        let empty = laptop.queued().is_empty()
            && text(&laptop.run(&["queue"]).stdout).contains("Mail queue is empty");
        empty.then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut rcpts: Vec<String> = sink
        .messages()
        .iter()
        .flat_map(|a| a.recipients.clone())
        .collect();
    rcpts.sort();
    let want: Vec<String> = (0..6).map(|i| format!("r{i}@example.org")).collect();
    assert_eq!(rcpts, want, "each exactly once; log:\n{}", laptop.log());
}

/// The user `nobody` (uid and gid 65534), as which the root-run test submits.
const NOBODY: u32 = 65534;

/// Gives `path` and everything under it to `nobody`.
fn give_to_nobody(path: &std::path::Path) {
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            give_to_nobody(&entry.unwrap().path());
        }
    }
}

#[test]
fn user_defaults_come_from_xdg_directories() {
    let is_root = std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    let home = TempDir::new("xdg");
    let config = home.path().join("cfg/certrelay");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("main.cf"),
        format!(
            "myhostname = laptop.test\nrelayhost = [127.0.0.1]:{}\n",
            free_port()
        ),
    )
    .unwrap();
    let mut c = if is_root {
        // Root's defaults are /etc/certrelay and the system spool: the user defaults are
        // seen by submitting as an ordinary user, `nobody`, from a copy of the binary that
        // user can run (the build directory may be closed to others).
        let exe = home.path().join("certrelay");
        std::fs::copy(binary("certrelay"), &exe).unwrap();
        give_to_nobody(home.path());
        let mut c = Command::new(exe);
        std::os::unix::process::CommandExt::uid(&mut c, NOBODY);
        std::os::unix::process::CommandExt::gid(&mut c, NOBODY);
        c
    } else {
        Command::new(binary("certrelay"))
    };
    c.args(["sendmail", "bob@example.org"])
        .env("USER", "alice")
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("cfg"))
        .env("XDG_DATA_HOME", home.path().join("data"));
    let out = run_bounded(c, Some(b"Subject: x\n\ny\n"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let queue = home.path().join("data/certrelay/queue");
    wait_until("the message in the XDG queue", || {
        let n = std::fs::read_dir(queue.join("queue"))
            .map(|d| d.count())
            .unwrap_or(0)
            + std::fs::read_dir(queue.join("maildrop"))
                .map(|d| d.count())
                .unwrap_or(0);
        (n > 0).then_some(())
    });
}

// ---- local SMTP: the listener of `run`, and `sendmail -bs` ------------------------------

/// A bounded SMTP dialogue over any pair of byte streams: replies are read whole
/// (continuation lines included).
struct Dialogue<R: BufRead, W: Write> {
    replies: R,
    commands: W,
}

impl<R: BufRead, W: Write> Dialogue<R, W> {
    /// The next reply, all its lines.
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.replies.read_line(&mut line).expect("read a reply");
            assert!(n > 0, "the server closed after {all:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    /// Sends `line` and returns the reply, which must start with `code`.
    fn expect(&mut self, line: &str, code: &str) -> String {
        self.commands
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.commands.flush().unwrap();
        let reply = self.reply();
        assert!(reply.starts_with(code), "{line:?} got {reply:?}");
        reply
    }

    /// One message: MAIL, each RCPT, DATA, the text, the end; returns the final reply.
    fn send(&mut self, from: &str, to: &[&str], text: &str) -> String {
        self.expect(&format!("MAIL FROM:<{from}>"), "250");
        for r in to {
            self.expect(&format!("RCPT TO:<{r}>"), "250");
        }
        self.expect("DATA", "354");
        self.expect(&format!("{text}\r\n."), "250")
    }
}

/// The laptop of `sink_port` with a master.cf listener on 127.0.0.1:`smtp_port`.
fn laptop_listening(label: &str, sink_port: u16, smtp_port: u16) -> Laptop {
    let laptop = Laptop::new(label, sink_port, "");
    laptop.dir.write(
        "master.cf",
        &format!("127.0.0.1:{smtp_port} inet n - n - - smtpd\n"),
    );
    laptop
}

/// `certrelay run` on a laptop whose relay is on `relay_port` and whose local SMTP
/// listener gets a port of its own. Returns the laptop, the daemon and that port.
fn start_run(label: &str, relay_port: u16) -> (Laptop, Daemon, u16) {
    let smtp_port = free_port();
    let laptop = laptop_listening(label, relay_port, smtp_port);
    let run = Daemon::start(
        &binary("certrelay"),
        &["-c", &laptop.cfg(), "run"],
        &format!("listening on 127.0.0.1:{smtp_port}"),
    );
    (laptop, run, smtp_port)
}

fn connect(port: u16) -> Dialogue<BufReader<TcpStream>, TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut d = Dialogue {
        replies: BufReader::new(stream.try_clone().unwrap()),
        commands: stream,
    };
    let banner = d.reply();
    assert!(banner.starts_with("220 "), "{banner:?}");
    d.expect("EHLO client.laptop.test", "250");
    d
}

#[test]
fn run_listener_takes_mail_from_loopback_for_any_domain_and_delivers_it() {
    let sink = Sink::start(SinkOptions::default());
    let sink_port = sink.port();
    let (laptop, run, smtp_port) = start_run("listen", sink_port);
    let mut smtp = connect(smtp_port);
    let done = smtp.send(
        "alice@laptop.test",
        &["bob@example.org", "carol@elsewhere.example"],
        "Subject: from a mail program\r\n\r\nhello",
    );
    assert!(done.contains("queued as"), "{done:?}");
    smtp.expect("QUIT", "221");
    let got = wait_until("the sink to receive the message", || {
        let got = sink.messages();
        (!got.is_empty()).then_some(got)
    });
    assert_eq!(got[0].sender, "alice@laptop.test");
    assert_eq!(
        got[0].recipients,
        ["bob@example.org", "carol@elsewhere.example"]
    );
    assert!(got[0].text().contains("Subject: from a mail program\r\n"));
    assert!(
        got[0]
            .text()
            .starts_with("Received: from client.laptop.test"),
        "{:?}",
        got[0].text()
    );
    wait_until("the queue to empty", || {
        laptop.queued().is_empty().then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.messages().len(), 1, "{}", run.log());
}

#[test]
fn run_listener_and_concurrent_flushes_deliver_each_message_once() {
    let sink = Sink::start(SinkOptions::default());
    let sink_port = sink.port();
    let (laptop, run, smtp_port) = start_run("listen-flush", sink_port);
    let mut flushes = Vec::new();
    let mut smtp = connect(smtp_port);
    for i in 0..4 {
        let to = format!("r{i}@example.org");
        smtp.send(
            "alice@laptop.test",
            &[&to],
            &format!("Subject: {i}\r\n\r\nx"),
        );
        // A person's `flush` right after the 250, racing the daemon's own run.
        let mut flush = laptop.command(&["flush"]);
        flush.stdout(Stdio::null()).stderr(Stdio::null());
        flushes.push(flush.spawn().unwrap());
    }
    smtp.expect("QUIT", "221");
    for mut f in flushes {
        let status = wait_until("a flush to finish", || f.try_wait().unwrap());
        assert!(status.success());
    }
    wait_until("four deliveries", || {
        (sink.messages().len() >= 4).then_some(())
    });
    wait_until("the queue to empty", || {
        let empty = laptop.queued().is_empty()
            && text(&laptop.run(&["queue"]).stdout).contains("Mail queue is empty");
        empty.then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut rcpts: Vec<String> = sink
        .messages()
        .iter()
        .flat_map(|a| a.recipients.clone())
        .collect();
    rcpts.sort();
    let want: Vec<String> = (0..4).map(|i| format!("r{i}@example.org")).collect();
    assert_eq!(rcpts, want, "each exactly once; log:\n{}", run.log());
}

type BsDialogue = Dialogue<BufReader<ChildStdout>, ChildStdin>;

/// Runs `sendmail -bs` for `laptop`, talks to it with `talk`, and returns its exit status.
/// Bounded: whatever happens, the process is killed after 60 s (blocked reads see EOF).
fn sendmail_bs(laptop: &Laptop, talk: impl FnOnce(&mut BsDialogue)) -> ExitStatus {
    let mut cmd = laptop.command(&["sendmail", "-bs"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start sendmail -bs");
    let pid = child.id().to_string();
    let finished = Arc::new(AtomicBool::new(false));
    let watch = finished.clone();
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if watch.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
    });
    let mut bs = Dialogue {
        replies: BufReader::new(child.stdout.take().unwrap()),
        commands: child.stdin.take().unwrap(),
    };
    talk(&mut bs);
    drop(bs);
    let status = wait_until("sendmail -bs to exit", || child.try_wait().unwrap());
    finished.store(true, Ordering::Relaxed);
    status
}

#[test]
fn sendmail_bs_queues_a_dialogue_and_delivers_it() {
    let sink = Sink::start(SinkOptions::default());
    let port = sink.port();
    let laptop = Laptop::new("bs", port, "");
    let status = sendmail_bs(&laptop, |bs| {
        let banner = bs.reply();
        assert!(banner.starts_with("220 laptop.test "), "{banner:?}");
        bs.expect("EHLO localhost", "250");
        let done = bs.send(
            "alice@laptop.test",
            &["bob@example.org"],
            "Subject: via -bs\r\n\r\n..dot-stuffed line",
        );
        assert!(done.contains("queued as"), "{done:?}");
        bs.expect("QUIT", "221");
    });
    assert_eq!(status.code(), Some(0));
    let got = wait_until("the sink to receive the message", || {
        let got = sink.messages();
        (!got.is_empty()).then_some(got)
    });
    assert_eq!(got[0].sender, "alice@laptop.test");
    assert_eq!(got[0].recipients, ["bob@example.org"]);
    assert!(got[0].text().contains("Subject: via -bs\r\n"));
    // Undone on receipt, stuffed again on the way out.
    assert!(
        got[0].wire().contains("\r\n..dot-stuffed line\r\n"),
        "{:?}",
        got[0].wire()
    );
}

/// The header section of a message as the sink got it.
fn header_of(data: &str) -> &str {
    data.split_once("\r\n\r\n").map_or(data, |(h, _)| h)
}

#[test]
fn local_smtp_submissions_are_completed_like_sendmail_ones() {
    let sink = Sink::start(SinkOptions::default());
    let sink_port = sink.port();
    let (laptop, run, smtp_port) = start_run("complete", sink_port);
    let mut smtp = connect(smtp_port);
    smtp.send("alice", &["bob"], "Subject: bare\r\n\r\nbody");
    smtp.send(
        "alice@laptop.test",
        &["carol@example.org"],
        "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <kept@x>\r\n\
         From: Carol <c@x>\r\nSubject: whole\r\n\r\nbody",
    );
    // No header at all: the body's first line is not a header line.
    smtp.send("alice", &["dave@example.org"], "just a body line");
    smtp.expect("QUIT", "221");
    let status = sendmail_bs(&laptop, |bs| {
        bs.reply();
        bs.expect("HELO localhost", "250");
        bs.send(
            "erin",
            &["frank@example.org"],
            "Subject: bs bare\r\n\r\nbody",
        );
        bs.expect("QUIT", "221");
    });
    assert_eq!(status.code(), Some(0));
    let got = wait_until("four deliveries", || {
        let got = sink.messages();
        (got.len() >= 4).then_some(got)
    });
    let by_rcpt = |r: &str| {
        got.iter()
            .find(|a| a.recipients == [r])
            .unwrap_or_else(|| panic!("no message to {r}: {got:?}\n{}", run.log()))
    };

    let bare = by_rcpt("bob@laptop.test");
    assert_eq!(bare.sender, "alice@laptop.test", "qualified with myorigin");
    let text = bare.text();
    let head = header_of(&text);
    assert!(head.contains("\r\nSubject: bare\r\nDate: "), "{head}");
    assert!(head.contains("\r\nMessage-ID: <"), "{head}");
    assert!(
        head.contains("@laptop.test>\r\nFrom: alice@laptop.test"),
        "{head}"
    );
    assert!(text.ends_with("\r\n\r\nbody\r\n"), "{text:?}");

    let whole = by_rcpt("carol@example.org");
    let text = whole.text();
    let head = header_of(&text);
    for (field, value) in [
        ("Date:", "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"),
        ("Message-ID:", "Message-ID: <kept@x>\r\n"),
        ("From:", "From: Carol <c@x>\r\n"),
    ] {
        assert_eq!(head.matches(field).count(), 1, "{head}");
        assert!(text.contains(value), "{head}");
    }

    let headless = by_rcpt("dave@example.org");
    let text = headless.text();
    assert!(
        text.contains("\r\nFrom: alice@laptop.test\r\n\r\njust a body line\r\n"),
        "an empty line separates the added fields from the body: {text:?}"
    );

    let bs = by_rcpt("frank@example.org");
    assert_eq!(bs.sender, "erin@laptop.test");
    let text = bs.text();
    let head = header_of(&text);
    assert!(head.contains("\r\nDate: "), "{head}");
    assert!(head.contains("\r\nMessage-ID: <"), "{head}");
    assert!(head.contains("\r\nFrom: erin@laptop.test"), "{head}");
}

#[test]
fn run_drains_sessions_on_sigterm_and_keeps_the_queue() {
    let relay_port = free_port();
    let (laptop, run, smtp_port) = start_run("sigterm", relay_port);
    // The relay is down: the first message is tried and deferred.
    let mut smtp = connect(smtp_port);
    smtp.send(
        "alice@laptop.test",
        &["bob@example.org"],
        "Subject: first\r\n\r\nx",
    );
    smtp.expect("QUIT", "221");
    run.wait_log("status=deferred");

    // A second session is in the middle of its DATA when SIGTERM comes.
    let mut late = connect(smtp_port);
    late.expect("MAIL FROM:<alice@laptop.test>", "250");
    late.expect("RCPT TO:<carol@example.org>", "250");
    late.expect("DATA", "354");
    late.commands
        .write_all(b"Subject: during the drain\r\n\r\n")
        .unwrap();
    run.signal("TERM");
    run.wait_log("local SMTP closed; waiting up to 10s for 1 session(s)");
    // No new sessions once stopping (the listening socket closes as its task ends).
    let until = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", smtp_port)).is_ok() {
        assert!(Instant::now() < until, "still accepting:\n{}", run.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let done = late.expect("finished after the signal\r\n.", "250");
    assert!(done.contains("queued as"), "{done:?}");
    late.expect("QUIT", "221");
    drop(late);
    let quit = Instant::now();
    let status = run.stop_waiting();
    assert_eq!(status.code(), Some(0));
    assert!(
        quit.elapsed() < Duration::from_secs(5),
        "exits promptly once the session is over: {:?}",
        quit.elapsed()
    );

    // Nothing lost: both wait in the queue, and once the relay is up a flush (which
    // needs the run lock) delivers them.
    let listing = text(&laptop.run(&["queue"]).stdout);
    assert!(listing.contains("bob@example.org"), "{listing}");
    assert!(listing.contains("carol@example.org"), "{listing}");
    let sink = Sink::start_on(relay_port, SinkOptions::default());
    let out = laptop.run(&["flush"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("2 attempted"),
        "{}",
        text(&out.stdout)
    );
    let mut rcpts: Vec<String> = sink
        .messages()
        .iter()
        .flat_map(|a| a.recipients.clone())
        .collect();
    rcpts.sort();
    assert_eq!(rcpts, ["bob@example.org", "carol@example.org"]);
}

/// `certrelay run` with one message submitted over its listener while the relay is down,
/// tried and deferred. Returns the laptop, the running daemon and the relay's port.
fn run_with_a_deferred_message(label: &str) -> (Laptop, Daemon, u16) {
    let relay_port = free_port();
    let (laptop, run, smtp_port) = start_run(label, relay_port);
    let mut smtp = connect(smtp_port);
    smtp.send(
        "alice@laptop.test",
        &["bob@example.org"],
        &format!("Subject: {label}\r\n\r\nx"),
    );
    smtp.expect("QUIT", "221");
    run.wait_log("status=deferred");
    (laptop, run, relay_port)
}

#[test]
fn run_flushes_at_once_on_sigusr1() {
    let (_laptop, run, relay_port) = run_with_a_deferred_message("sigusr1");
    // The next scheduled attempt is minutes away (minimal_backoff_time, queue_run_delay).
    let sink = Sink::start_on(relay_port, SinkOptions::default());
    std::thread::sleep(Duration::from_secs(1));
    assert!(sink.messages().is_empty(), "nothing goes before the signal");
    run.signal("USR1");
    wait_until("delivery after SIGUSR1", || {
        (!sink.messages().is_empty()).then_some(())
    });
    run.wait_log("flush requested");
}

/// An address on `lo` for the length of a test (root only).
struct LoopbackAlias(&'static str);

impl LoopbackAlias {
    fn add(cidr: &'static str) -> LoopbackAlias {
        let out = Command::new("ip")
            .args(["addr", "add", cidr, "dev", "lo"])
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip addr add {cidr} dev lo: {}",
            text(&out.stderr)
        );
        LoopbackAlias(cidr)
    }
}

impl Drop for LoopbackAlias {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["addr", "del", self.0, "dev", "lo"])
            .output();
    }
}

#[test]
#[ignore = "needs root: adds 203.0.113.77/32 to lo with `ip addr add` (CI runs it as root)"]
fn run_retries_at_once_when_the_network_changes() {
    let (_laptop, run, relay_port) = run_with_a_deferred_message("netchange");
    let sink = Sink::start_on(relay_port, SinkOptions::default());
    // More than one look at the network (every 5 s) with nothing changed: no retry.
    std::thread::sleep(Duration::from_secs(7));
    assert!(sink.messages().is_empty(), "{}", run.log());
    assert!(!run.log().contains("network changed"), "{}", run.log());
    let _alias = LoopbackAlias::add("203.0.113.77/32");
    run.wait_log("network changed (added 203.0.113.77");
    wait_until("delivery after the change", || {
        (!sink.messages().is_empty()).then_some(())
    });
}
