//! Hostile clients against the real binaries over loopback: web requests posted to an SMTP
//! port, restriction classes that would do nothing, error after error, clients that send
//! slowly, and a full house of idle connections. Every wait is bounded.

use certrelay_testkit::client::Client;
use certrelay_testkit::daemon::Daemon;
use certrelay_testkit::pki::client_config;
use certrelay_testkit::pki::{Ca, Issued};
use certrelay_testkit::recipe::RelayFiles;
use certrelay_testkit::sink::{Sink, SinkOptions};
use certrelay_testkit::{binary, free_port, wait_until, TempDir};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GOODBYE: &str = "221 2.7.0 Error: I can break rules, too. Goodbye.";
const DISPLACED: &str = "421 4.7.0 relay.test Error: too many connections; closing idle session";
const TIMEOUT: &str = "421 4.4.2 relay.test Error: timeout exceeded";

// ---------------------------------------------------------------------------------------
// The client's one transaction.

/// MAIL, RCPT, DATA with a small message; the final reply, or the first refusal.
fn mail(c: &mut Client, rcpt: &str) -> Result<String, String> {
    for (line, code) in [
        ("MAIL FROM:<me@laptop.test>".to_owned(), "250"),
        (format!("RCPT TO:<{rcpt}>"), "250"),
        ("DATA".to_owned(), "354"),
    ] {
        let r = c.cmd(&line);
        if !r.starts_with(code) {
            return Err(r);
        }
    }
    let r = c.cmd("Subject: test\r\n\r\nhello\r\n.");
    if r.starts_with("250 2.0.0 Ok: queued as ") {
        Ok(r)
    } else {
        Err(r)
    }
}

// ---------------------------------------------------------------------------------------
// The relay.

struct Relay {
    dir: TempDir,
    port: u16,
    ca: Ca,
    laptop: Issued,
}

/// A relay directory (`RelayFiles`): main.cf with `extra` last, and one master.cf
/// listener.
fn relay_dir(label: &str, extra: &str) -> Relay {
    let files = RelayFiles::new(label);
    files.dir.write(
        "main.cf",
        &files.main_cf(&format!("smtpd_client_connection_count_limit = 0\n{extra}")),
    );
    let RelayFiles { dir, ca, laptop } = files;
    let port = free_port();
    dir.write(
        "master.cf",
        &format!("127.0.0.1:{port} inet n - n - - smtpd\n"),
    );
    Relay {
        dir,
        port,
        ca,
        laptop,
    }
}

fn start(relay: &Relay) -> Daemon {
    Daemon::start(
        &binary("certrelayd"),
        &["-c", relay.dir.path().to_str().unwrap()],
        "daemon started",
    )
}

fn main_cf_line(dir: &Path, name: &str) -> usize {
    let text = std::fs::read_to_string(dir.join("main.cf")).unwrap();
    1 + text
        .lines()
        .position(|l| l.starts_with(name))
        .expect("the line")
}

// ---------------------------------------------------------------------------------------
// Other protocols (item 3).

#[test]
fn web_requests_and_header_lines_end_a_relay_session_at_once() {
    let relay = relay_dir("hostile-web", "");
    let daemon = start(&relay);
    let mut c = Client::greeted(relay.port);
    c.send(b"GET / HTTP/1.1\r\nHost: relay.test\r\nUser-Agent: x\r\n\r\n");
    assert_eq!(c.reply(), GOODBYE);
    assert_eq!(c.line(), "", "closed after the first line");
    daemon.wait_log("non-SMTP command from unknown[127.0.0.1]: GET / HTTP/1.1");
    daemon.wait_log("disconnect from unknown[127.0.0.1] unknown=0/1 commands=0/1");

    let mut c = Client::greeted(relay.port);
    // On the relay an unknown command is only an error, before EHLO too...
    assert_eq!(c.cmd("XYZZY"), "500 5.5.2 Error: command not recognized");
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    // ...but a header where a command belongs ends the session.
    assert_eq!(c.cmd("Content-Type: text/plain"), GOODBYE);
    assert_eq!(c.line(), "");
}

#[test]
fn a_browser_posting_smtp_to_the_laptops_listener_queues_nothing() {
    let sink = Sink::start(SinkOptions::default());
    let dir = TempDir::new("hostile-laptop");
    let smtp_port = free_port();
    dir.write(
        "main.cf",
        &format!(
            "myhostname = laptop.test\nqueue_directory = {}/queue\n\
             relayhost = [127.0.0.1]:{}\n",
            dir.path().display(),
            sink.port()
        ),
    );
    dir.write(
        "master.cf",
        &format!("127.0.0.1:{smtp_port} inet n - n - - smtpd\n"),
    );
    let run = Daemon::start(
        &binary("certrelay"),
        &["-c", dir.path().to_str().unwrap(), "run"],
        &format!("listening on 127.0.0.1:{smtp_port}"),
    );
    // What a page's fetch('http://127.0.0.1:2525/', {method: 'POST', body}) sends.
    let body = "EHLO evil.example\r\nMAIL FROM:<spam@evil.example>\r\n\
                RCPT TO:<victim@example.org>\r\nDATA\r\nSubject: spam\r\n\r\nbuy\r\n.\r\nQUIT\r\n";
    let request = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{smtp_port}\r\nUser-Agent: Mozilla/5.0\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\
         Origin: http://evil.example\r\n\r\n{body}",
        body.len()
    );
    let mut c = Client::connect(smtp_port);
    c.send(request.as_bytes());
    assert!(c.reply().starts_with("220 "));
    assert_eq!(c.reply(), GOODBYE);
    assert_eq!(c.line(), "", "closed after the first line");
    run.wait_log("non-SMTP command from unknown[127.0.0.1]: POST / HTTP/1.1");
    run.wait_log("disconnect from unknown[127.0.0.1] unknown=0/1 commands=0/1");

    // On the laptop any unknown command before EHLO ends the session.
    let mut c = Client::greeted(smtp_port);
    assert_eq!(c.cmd("XYZZY"), GOODBYE);
    assert_eq!(c.line(), "");

    // A mail program is served; then nothing else was queued or sent.
    let mut c = Client::greeted(smtp_port);
    assert!(c.cmd("EHLO mua.test").starts_with("250"));
    mail(&mut c, "friend@example.org").unwrap();
    let got = wait_until("the sink to get the message", || {
        let got = sink.messages();
        (!got.is_empty()).then_some(got)
    });
    std::thread::sleep(Duration::from_millis(500));
    let got_now = sink.messages();
    assert_eq!(got_now.len(), 1, "{}", run.log());
    assert_eq!(got[0].recipients, ["friend@example.org"]);
    assert!(!run.log().contains("victim@example.org"), "{}", run.log());
}

// ---------------------------------------------------------------------------------------
// No silent drops (item 7).

#[test]
fn a_restriction_class_certrelay_does_not_apply_refuses_start_check_and_reload() {
    let relay = relay_dir(
        "hostile-classes",
        "smtpd_helo_restrictions = reject_invalid_helo_hostname",
    );
    let dir = relay.dir.path();
    let line = main_cf_line(dir, "smtpd_helo_restrictions");
    let want = format!(
        "{}:{line}: smtpd_helo_restrictions = reject_invalid_helo_hostname",
        dir.join("main.cf").display()
    );
    let out = Command::new(binary("certrelayd"))
        .args(["-c", dir.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&want), "{err}");
    let out = Command::new(binary("certrelayd"))
        .args(["-c", dir.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("does not apply this restriction class"),
        "{said}"
    );

    // `permit` alone is harmless; a reload that brings a rule back is refused.
    let main_cf = dir.join("main.cf");
    let text = std::fs::read_to_string(&main_cf).unwrap();
    let permit = text.replace("reject_invalid_helo_hostname", "permit");
    std::fs::write(&main_cf, &permit).unwrap();
    let daemon = start(&relay);
    std::fs::write(
        &main_cf,
        permit.replace(
            "smtpd_helo_restrictions = permit",
            "smtpd_sender_restrictions = reject",
        ),
    )
    .unwrap();
    daemon.signal("HUP");
    daemon.wait_log("configuration not reloaded");
    assert!(
        daemon
            .log()
            .contains("smtpd_sender_restrictions = reject: certrelay does not apply"),
        "{}",
        daemon.log()
    );
    let mut c = Client::greeted(relay.port);
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye");
}

#[test]
fn error_replies_wait_past_the_soft_limit_and_the_hard_limit_closes() {
    let relay = relay_dir(
        "hostile-errors",
        "smtpd_soft_error_limit = 2\nsmtpd_error_sleep_time = 1s\nsmtpd_hard_error_limit = 4",
    );
    let _daemon = start(&relay);
    let mut c = Client::greeted(relay.port);
    for _ in 0..2 {
        assert_eq!(c.cmd("XYZZY"), "500 5.5.2 Error: command not recognized");
    }
    // From the third error on, each reply, an OK one too, waits smtpd_error_sleep_time.
    for (line, want) in [
        ("XYZZY", "500 5.5.2 Error: command not recognized"),
        ("NOOP", "250 2.0.0 Ok"),
    ] {
        let sent = Instant::now();
        assert_eq!(c.cmd(line), want);
        assert!(
            sent.elapsed() >= Duration::from_millis(900),
            "{line}: no wait"
        );
    }
    let sent = Instant::now();
    assert_eq!(c.cmd("XYZZY"), "500 5.5.2 Error: command not recognized");
    assert_eq!(c.reply(), "421 4.7.0 relay.test Error: too many errors");
    assert!(sent.elapsed() >= Duration::from_millis(1900), "two waits");
    assert_eq!(c.line(), "");
}

// ---------------------------------------------------------------------------------------
// Slow clients (item 9).

#[test]
fn a_client_dribbling_a_command_is_cut_off_at_the_command_time_limit() {
    let relay = relay_dir("hostile-drip", "certrelay_command_time_limit = 2s");
    let daemon = start(&relay);
    let mut c = Client::greeted(relay.port);
    let mut writer = c.tcp().try_clone().unwrap();
    // One byte every 300 ms, for longer than the limit (smtpd_timeout is 300 s).
    let drip = std::thread::spawn(move || {
        for b in b"NOOP and then some more words that never end".iter() {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    assert_eq!(c.reply(), TIMEOUT);
    assert_eq!(c.line(), "");
    daemon.wait_log("command line not complete 2s after its first byte");
    drip.join().unwrap();
}

#[test]
fn data_slower_than_the_minimum_rate_is_cut_off_and_not_queued() {
    let relay = relay_dir(
        "hostile-slowdata",
        "mynetworks = 127.0.0.0/8\ncertrelay_data_min_rate = 100\ncertrelay_data_rate_grace = 1s",
    );
    let daemon = start(&relay);
    let mut c = Client::greeted(relay.port);
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@client.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@example.org>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    // 10 bytes a second, where 100 are asked for after a 1 s head start.
    let mut writer = c.tcp().try_clone().unwrap();
    let drip = std::thread::spawn(move || {
        for _ in 0..40 {
            if writer.write_all(b"0123456789").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    assert_eq!(c.reply(), TIMEOUT);
    assert_eq!(c.line(), "");
    daemon.wait_log("DATA slower than certrelay_data_min_rate = 100 bytes/s");
    let queued = std::fs::read_dir(relay.dir.path().join("spool/queue"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(queued, 0);
    drip.join().unwrap();
}

// ---------------------------------------------------------------------------------------
// A full house (item 10).

/// How an idle connection of the flood waits.
#[derive(Clone, Copy, PartialEq)]
enum Idle {
    AfterBanner,
    InsideTlsHandshake,
    InsideTls,
}

#[test]
fn a_laptop_with_mail_is_served_while_ten_times_the_session_limit_sit_idle() {
    let relay = relay_dir("hostile-full", "default_process_limit = 100");
    let daemon = start(&relay);
    let anonymous = client_config(&relay.ca.cert_pem, None);
    // A client in the middle of a transaction never gives way.
    let mut busy = Client::greeted(relay.port);
    assert!(busy.cmd("EHLO busy.test").starts_with("250"));
    assert!(busy.cmd("MAIL FROM:<a@busy.test>").starts_with("250"));

    let mut open: std::collections::VecDeque<(Client, Idle)> = Default::default();
    let mut displaced = 0;
    let mut timed_out = 0;
    for i in 0..1000 {
        let mut c = Client::greeted(relay.port);
        let kind = match i % 10 {
            3 => Idle::InsideTlsHandshake,
            7 => Idle::InsideTls,
            _ => Idle::AfterBanner,
        };
        match kind {
            Idle::AfterBanner => {}
            Idle::InsideTlsHandshake => {
                assert!(c.cmd("EHLO stall.test").starts_with("250"));
                assert_eq!(c.cmd("STARTTLS"), "220 2.0.0 Ready to start TLS");
            }
            Idle::InsideTls => c.tls(anonymous.clone()),
        }
        open.push_back((c, kind));
        // 99 slots besides the busy one: each newcomer makes the oldest idle one go.
        if open.len() > 99 {
            let (mut old, kind) = open.pop_front().unwrap();
            let said = old.line();
            match (kind, said.as_str()) {
                (Idle::InsideTlsHandshake, "") => displaced += 1,
                (_, DISPLACED) => {
                    displaced += 1;
                    assert_eq!(old.line(), "");
                }
                // A slow machine may let the stress timeout (10 s) come first.
                (_, TIMEOUT) => timed_out += 1,
                (_, other) => panic!("connection {}: {other:?}", i - 99),
            }
        }
    }
    assert_eq!(displaced + timed_out, 901);
    assert!(displaced > 0, "{}", daemon.log());
    daemon.wait_log("to make room for a new connection");
    daemon.wait_log("TLS handshake failed from unknown[127.0.0.1]: every session slot is taken");

    // A laptop with mail gets a slot at once, and its message is queued.
    let mut laptop = Client::greeted(relay.port);
    laptop.tls(client_config(&relay.ca.cert_pem, Some(relay.laptop.pems())));
    let queued = mail(&mut laptop, "someone@example.org");
    assert!(queued.is_ok(), "{queued:?}\n{}", daemon.log());
    // The busy client kept its session.
    assert_eq!(busy.cmd("NOOP"), "250 2.0.0 Ok");
}

#[test]
fn with_every_session_in_a_transaction_a_new_connection_is_refused() {
    let relay = relay_dir("hostile-allbusy", "default_process_limit = 3");
    let _daemon = start(&relay);
    let mut busy: Vec<Client> = (0..3)
        .map(|_| {
            let mut c = Client::greeted(relay.port);
            assert!(c.cmd("EHLO busy.test").starts_with("250"));
            assert!(c.cmd("MAIL FROM:<a@busy.test>").starts_with("250"));
            c
        })
        .collect();
    let mut late = Client::connect(relay.port);
    assert_eq!(
        late.reply(),
        "421 4.7.0 relay.test Error: too many connections"
    );
    for c in &mut busy {
        assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok");
    }
}

#[test]
fn the_relay_raises_its_open_files_limit_and_says_when_it_is_too_low() {
    let relay = relay_dir("hostile-nofile", "default_process_limit = 1000");
    let certrelayd = binary("certrelayd");
    let args = |limits: &'static str| {
        vec![
            limits.to_owned(),
            certrelayd.display().to_string(),
            "-c".to_owned(),
            relay.dir.path().display().to_string(),
        ]
    };
    let raised = args("--nofile=128:4096");
    let raised: Vec<&str> = raised.iter().map(String::as_str).collect();
    let daemon = Daemon::start(Path::new("prlimit"), &raised, "daemon started");
    daemon.wait_log("open files limit raised from 128 to 4096");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        ["Max", "open", "files", "4096", "4096", "files"]
    );
    assert!(!daemon.log().contains("is below"), "{}", daemon.log());
    drop(daemon);

    let low = args("--nofile=256:256");
    let low: Vec<&str> = low.iter().map(String::as_str).collect();
    let daemon = Daemon::start(Path::new("prlimit"), &low, "daemon started");
    daemon.wait_log(
        "open files limit 256 (hard limit 256) is below the 2064 that default_process_limit = \
         1000 may need",
    );
}
