//! Mail for the relay's own domains and mail that loops, end to end: the real `certrelayd`
//! over loopback, a client with no certificate, a sink as the next hop.
//!
//! certrelay has no mailboxes. What it cannot send onward must be refused while the client
//! is still there, never accepted and then bounced to a sender who may be forged
//! (backscatter) or sent round to itself.

use certrelay_testkit::daemon::Daemon;
use certrelay_testkit::sink::{Sink, SinkOptions};
use certrelay_testkit::{binary, free_port, run, wait_until, TempDir};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A plaintext SMTP client, one command and one reply at a time.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Client {
        let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect to the relay");
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let writer = tcp.try_clone().unwrap();
        let mut c = Client {
            reader: BufReader::new(tcp),
            writer,
        };
        let banner = c.reply();
        assert!(banner.starts_with("220 "), "{banner}");
        c
    }

    /// A whole reply, lines joined by `\n`, without CR LF.
    fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("read a reply");
            let line = line.trim_end_matches(['\r', '\n']).to_owned();
            let last = line.len() < 4 || line.as_bytes()[3] != b'-';
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.reply()
    }

    /// DATA with `text` (lines ending in CR LF, no dot-stuffing needed), then the reply to
    /// the final dot.
    fn data(&mut self, text: &str) -> String {
        let go = self.cmd("DATA");
        assert!(go.starts_with("354"), "{go}");
        self.writer.write_all(text.as_bytes()).unwrap();
        self.writer.write_all(b".\r\n").unwrap();
        self.reply()
    }
}

/// A relay whose next hop is `sink`, with a listener on a fresh port and `extra` main.cf
/// lines. The test client at 127.0.0.1 is outside `mynetworks` and has no certificate.
struct Relay {
    dir: TempDir,
    port: u16,
    daemon: Daemon,
}

impl Relay {
    fn start(label: &str, sink: &Sink, extra: &str) -> Relay {
        let next_hop = format!("[127.0.0.1]:{}", sink.port());
        Relay::start_on(label, free_port(), &next_hop, extra)
    }

    /// A relay listening on `port` whose `relayhost` is `next_hop`.
    fn start_on(label: &str, port: u16, next_hop: &str, extra: &str) -> Relay {
        let dir = TempDir::new(label);
        let d = dir.path().display().to_string();
        dir.write(
            "main.cf",
            &format!(
                "myhostname = relay.test\n\
                 mydestination = $myhostname, localhost\n\
                 mail_owner = nobody\n\
                 smtpd_peername_lookup = no\n\
                 mynetworks = 192.0.2.0/24\n\
                 queue_directory = {d}/spool\n\
                 relayhost = {next_hop}\n\
                 {extra}"
            ),
        );
        dir.write(
            "master.cf",
            &format!("127.0.0.1:{port} inet n - n - - smtpd\n"),
        );
        let daemon = Daemon::start(&binary("certrelayd"), &["-c", &d], "daemon started");
        Relay { dir, port, daemon }
    }

    fn check(&self) -> String {
        let out = run(
            "certrelayd",
            &["-c", self.dir.path().to_str().unwrap(), "check"],
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

fn unknown(rcpt: &str) -> String {
    format!("550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in local recipient table")
}

#[test]
fn local_recipients_without_an_alias_are_refused_at_rcpt() {
    let sink = Sink::start(SinkOptions::default());
    let relay = Relay::start("local-refused", &sink, "");
    let mut c = Client::connect(relay.port);
    assert!(c.cmd("EHLO outside.test").starts_with("250-relay.test"));
    assert_eq!(c.cmd("MAIL FROM:<victim@example.net>"), "250 2.1.0 Ok");
    for rcpt in [
        "zzz@relay.test",
        "root@relay.test",
        "root@localhost",
        "root",
        "postmaster",
        "Postmaster@relay.test",
    ] {
        assert_eq!(c.cmd(&format!("RCPT TO:<{rcpt}>")), unknown(rcpt));
    }
    // Mail for elsewhere is still no business of a client without a certificate.
    assert_eq!(
        c.cmd("RCPT TO:<x@far.example>"),
        "554 5.7.1 <x@far.example>: Relay access denied"
    );
    assert_eq!(c.cmd("DATA"), "554 5.5.1 Error: no valid recipients");
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye");
    relay.daemon.wait_log(&format!(
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: {}; from=<victim@example.net> \
         to=<zzz@relay.test> proto=ESMTP helo=<outside.test>",
        unknown("zzz@relay.test")
    ));
    // Nothing was accepted, so nothing goes anywhere.
    assert_eq!(sink.messages().len(), 0);
    // `check` says why postmaster is refused and how to fix it.
    let check = relay.check();
    assert!(
        check.contains("warning:")
            && check.contains("virtual_alias_maps")
            && check.contains("postmaster admin@example.org"),
        "{check}"
    );
}

#[test]
fn aliases_send_local_mail_onward_and_reload_with_sighup() {
    let sink = Sink::start(SinkOptions::default());
    let probe = TempDir::new("local-aliases-path");
    let table = probe.write(
        "virtual",
        "root        admin@example.org\n\
         postmaster  admin@example.org\n\
         @localhost  ops@example.org, admin@example.org\n",
    );
    let relay = Relay::start(
        "local-aliases",
        &sink,
        &format!("virtual_alias_maps = hash:{}\n", table.display()),
    );
    let mut c = Client::connect(relay.port);
    c.cmd("EHLO outside.test");
    assert_eq!(c.cmd("MAIL FROM:<cron@relay.test>"), "250 2.1.0 Ok");
    for rcpt in ["root@relay.test", "postmaster", "cron@localhost"] {
        assert_eq!(
            c.cmd(&format!("RCPT TO:<{rcpt}>")),
            "250 2.1.5 Ok",
            "{rcpt}"
        );
    }
    assert_eq!(c.cmd("RCPT TO:<zzz@relay.test>"), unknown("zzz@relay.test"));
    let done = c.data("Subject: cron\r\n\r\nit ran\r\n");
    assert!(done.starts_with("250 2.0.0 Ok: queued as "), "{done}");
    let got = wait_until("the aliased message at the sink", || {
        sink.messages().into_iter().next()
    });
    // Stored and sent to the rewritten addresses, each once.
    let mut rcpts = got.recipients.clone();
    rcpts.sort();
    assert_eq!(rcpts, ["admin@example.org", "ops@example.org"]);
    assert!(got.text().contains("it ran"));
    relay.daemon.wait_log(
        "<cron@localhost> rewritten by virtual_alias_maps to <ops@example.org>, <admin@example.org>",
    );
    // With postmaster aliased, `check` has nothing to say about it.
    let check = relay.check();
    assert!(!check.contains("postmaster"), "{check}");

    // A new table applies at SIGHUP.
    probe.write("virtual", "zzz@relay.test someone@example.org\n");
    relay.daemon.signal("HUP");
    relay.daemon.wait_log("configuration reloaded");
    let mut c = Client::connect(relay.port);
    c.cmd("HELO outside.test");
    c.cmd("MAIL FROM:<>");
    assert_eq!(c.cmd("RCPT TO:<zzz@relay.test>"), "250 2.1.5 Ok");
    assert_eq!(
        c.cmd("RCPT TO:<root@relay.test>"),
        unknown("root@relay.test")
    );
}

/// A header of `n` hop fields, half `Received:`, half `Delivered-To:`.
fn hops(n: usize) -> String {
    (0..n)
        .map(|i| {
            if i % 2 == 0 {
                format!("Received: from hop{i}.example by hop{i}.example\r\n")
            } else {
                format!("Delivered-To: list{i}@example.org\r\n")
            }
        })
        .collect()
}

#[test]
fn a_message_that_went_round_too_often_is_refused_after_data() {
    let sink = Sink::start(SinkOptions::default());
    let probe = TempDir::new("hops-table");
    let table = probe.write("virtual", "root admin@example.org\n");
    let relay = Relay::start(
        "hops",
        &sink,
        &format!("virtual_alias_maps = {}\n", table.display()),
    );
    let mut c = Client::connect(relay.port);
    c.cmd("HELO outside.test");
    // 49 hops and this one: within Postfix's default of 50.
    c.cmd("MAIL FROM:<a@example.net>");
    c.cmd("RCPT TO:<root@relay.test>");
    let ok = c.data(&format!("{}Subject: 49\r\n\r\nbody\r\n", hops(49)));
    assert!(ok.starts_with("250 2.0.0 Ok: queued as "), "{ok}");
    // 50 and this one: over it; the session goes on.
    c.cmd("MAIL FROM:<a@example.net>");
    c.cmd("RCPT TO:<root@relay.test>");
    let refused = c.data(&format!("{}Subject: 50\r\n\r\nbody\r\n", hops(50)));
    assert_eq!(refused, "554 5.4.0 Error: too many hops");
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok");
    relay.daemon.wait_log(
        "NOQUEUE: reject: END-OF-MESSAGE from unknown[127.0.0.1]: 554 5.4.0 Error: too many hops",
    );
    // Only the first reached the next hop.
    let first = wait_until("the first message", || sink.messages().into_iter().next());
    assert!(first.text().contains("Subject: 49"));

    // A lower limit from main.cf applies.
    let relay = Relay::start(
        "hops-low",
        &sink,
        &format!(
            "virtual_alias_maps = {}\nhopcount_limit = 3\n",
            table.display()
        ),
    );
    let mut c = Client::connect(relay.port);
    c.cmd("HELO outside.test");
    c.cmd("MAIL FROM:<a@example.net>");
    c.cmd("RCPT TO:<root@relay.test>");
    assert_eq!(
        c.data(&format!("{}\r\nbody\r\n", hops(3))),
        "554 5.4.0 Error: too many hops"
    );
}

/// Sends one message from `<>` to `root@relay.test` (aliased elsewhere) and returns its
/// queue id.
fn send_to_root(port: u16) -> String {
    let mut c = Client::connect(port);
    c.cmd("HELO outside.test");
    assert_eq!(c.cmd("MAIL FROM:<>"), "250 2.1.0 Ok");
    assert_eq!(c.cmd("RCPT TO:<root@relay.test>"), "250 2.1.5 Ok");
    let done = c.data("Subject: round\r\n\r\nand round\r\n");
    done.strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("{done}"))
        .to_owned()
}

#[test]
fn a_next_hop_that_greets_with_our_own_name_is_a_loop() {
    let sink = Sink::start(SinkOptions {
        greeting: "220 relay.test ESMTP certrelay".into(),
        ..SinkOptions::default()
    });
    let probe = TempDir::new("loop-greeting-table");
    let table = probe.write("virtual", "root admin@example.org\n");
    let relay = Relay::start(
        "loop-greeting",
        &sink,
        &format!("virtual_alias_maps = {}\n", table.display()),
    );
    let id = send_to_root(relay.port);
    relay.daemon.wait_log(&format!(
        "{id}: to=<admin@example.org>, relay=127.0.0.1[127.0.0.1]:{}, delay=",
        sink.port()
    ));
    relay.daemon.wait_log(&format!(
        "dsn=5.4.6, status=bounced (mail for [127.0.0.1]:{} loops back to myself)",
        sink.port()
    ));
    // The sink never got past the greeting.
    assert!(sink.messages().is_empty());
}

#[test]
fn a_next_hop_that_is_our_own_listener_is_a_loop() {
    let probe = TempDir::new("loop-self-table");
    let table = probe.write("virtual", "root admin@example.org\n");
    let port = free_port();
    let relay = Relay::start_on(
        "loop-self",
        port,
        &format!("[127.0.0.1]:{port}"),
        &format!("virtual_alias_maps = {}\n", table.display()),
    );
    let id = send_to_root(port);
    relay
        .daemon
        .wait_log(&format!("{id}: to=<admin@example.org>, relay=none, delay="));
    relay.daemon.wait_log(&format!(
        "dsn=5.4.6, status=bounced (mail for [127.0.0.1]:{port} loops back to myself)"
    ));
    // The relay never connected to itself: one client only, the test's.
    let log = relay.daemon.log();
    let connects = log
        .lines()
        .filter(|l| l.starts_with("connect from"))
        .count();
    assert_eq!(connects, 1, "{log}");
}
