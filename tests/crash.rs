//! The relay killed (`SIGKILL`) in the middle of a load from several concurrent clients,
//! then started again: every message that got its `250` after DATA is delivered, once, and
//! no message is delivered twice. Real binaries, real TLS with the laptop's certificate,
//! real spool; every wait is bounded.
//!
//! What it proves, exactly: the next hop (the test sink) refuses every message with a 4xx
//! until the relay is killed, so nothing has been delivered before the kill and each queued
//! message has exactly one delivery ahead of it; after the restart nothing is interrupted,
//! so a message missing at the sink is an acknowledged message the relay lost, and a
//! message seen twice is a duplicate the relay made. Messages that were in flight at the
//! kill (DATA ended, no reply read) may be delivered or not, but also at most once.
//!
//! What it does not prove: that the fsyncs reach the disk. A killed process leaves its
//! writes in the kernel's page cache, so the test sees the order of renames and replies,
//! not durability across a power cut; the unit tests of `spool::commit` show that each
//! commit returns only after a directory sync that began after its rename.

use certrelay_testkit::client::Client;
use certrelay_testkit::daemon::Daemon;
use certrelay_testkit::pki::client_config;
use certrelay_testkit::recipe::RelayFiles;
use certrelay_testkit::sink::{Sink, SinkOptions};
use certrelay_testkit::{binary, free_port, wait_until};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Concurrent clients, each on one TLS connection, sending message after message.
const CLIENTS: usize = 8;
/// Messages acknowledged before the kill.
const BEFORE_KILL: usize = 40;
/// Upper bound per client, so that a relay that never dies cannot keep the test going.
const MOST: usize = 5_000;

/// One message on `c`; true when the relay said 250 after DATA.
fn send(c: &mut Client, token: &str) -> bool {
    for (line, code) in [
        ("MAIL FROM:<me@laptop.test>".to_owned(), "250"),
        ("RCPT TO:<someone@example.org>".to_owned(), "250"),
        ("DATA".to_owned(), "354"),
    ] {
        if !c.cmd(&line).starts_with(code) {
            return false;
        }
    }
    let text = format!("Subject: {token}\r\n\r\n{}\r\n.", "x".repeat(200));
    c.cmd(&text).starts_with("250 2.0.0 Ok: queued as ")
}

fn start(files: &RelayFiles) -> Daemon {
    Daemon::start(
        &binary("certrelayd"),
        &["-c", files.dir.path().to_str().unwrap()],
        "daemon started",
    )
}

/// The `Subject:` of a message the sink took.
fn token(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    text.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or("")
        .to_owned()
}

#[test]
fn a_relay_killed_under_load_delivers_every_acknowledged_message_once() {
    let sink = Sink::start(SinkOptions {
        data_reply: Some("451 4.3.0 not yet".to_owned()),
        ..SinkOptions::default()
    });
    let files = RelayFiles::new("crash");
    files.dir.write(
        "main.cf",
        &files.main_cf(&format!(
            "smtpd_client_connection_count_limit = 0\n\
             relayhost = [127.0.0.1]:{}\n\
             defer_transports =\n\
             minimal_backoff_time = 1s\n\
             maximal_backoff_time = 1s\n\
             queue_run_delay = 1s\n",
            sink.port()
        )),
    );
    let port = free_port();
    files.dir.write(
        "master.cf",
        &format!("127.0.0.1:{port} inet n - n - - smtpd\n"),
    );
    let relay = start(&files);
    let tls = client_config(&files.ca.cert_pem, Some(files.laptop.pems()));

    // Phase 1: load, then the kill.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let sent = Arc::new(Mutex::new(Vec::<String>::new()));
    let killed = Arc::new(AtomicBool::new(false));
    let early = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let (acked, sent, killed, early, tls) = (
                acked.clone(),
                sent.clone(),
                killed.clone(),
                early.clone(),
                tls.clone(),
            );
            std::thread::spawn(move || {
                let ran = catch_unwind(AssertUnwindSafe(|| {
                    let mut c = Client::greeted(port);
                    c.tls(tls);
                    for n in 0..MOST {
                        let t = format!("crash-{k}-{n}");
                        sent.lock().unwrap().push(t.clone());
                        if !send(&mut c, &t) {
                            return Some(t);
                        }
                        acked.lock().unwrap().push(t);
                    }
                    None
                }));
                // Before the kill every message must go through.
                let refused = match ran {
                    Ok(refused) => refused,
                    Err(_) => Some(format!("client {k} panicked")),
                };
                if let Some(what) = refused.filter(|_| !killed.load(Ordering::SeqCst)) {
                    early.lock().unwrap().push(what);
                }
            })
        })
        .collect();
    wait_until("acknowledged messages before the kill", || {
        (acked.lock().unwrap().len() >= BEFORE_KILL).then_some(())
    });
    killed.store(true, Ordering::SeqCst);
    relay.signal("KILL");
    let status = relay.stop_waiting();
    assert!(!status.success(), "{status:?}");
    for c in clients {
        c.join().unwrap();
    }
    let early = early.lock().unwrap().clone();
    assert!(early.is_empty(), "refused before the kill: {early:?}");
    // The precondition of an exact check: nothing was delivered before the kill.
    assert_eq!(sink.count(), 0);
    assert!(sink.messages().is_empty());
    let acked = acked.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    assert!(acked.len() >= BEFORE_KILL);
    let per_client = |k: usize| {
        acked
            .iter()
            .filter(|t| t.starts_with(&format!("crash-{k}-")))
            .count()
    };
    assert!((0..CLIENTS).all(|k| per_client(k) > 0), "{acked:?}");

    // Phase 2: the next hop takes mail, the relay starts again and empties its queue.
    sink.set(|o| o.data_reply = None);
    let relay = start(&files);
    let queue = files.dir.path().join("spool/queue");
    wait_until("the queue emptied after the restart", || {
        let left = std::fs::read_dir(&queue)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().ends_with(".msg")
            })
            .count();
        (left == 0).then_some(())
    });
    // Whatever was still on its way has landed: a message leaves the queue only after the
    // sink's 250, and the sink records a message before it answers; the relay stops cleanly.
    assert!(relay.stop().success());

    let mut delivered: HashMap<String, usize> = HashMap::new();
    for m in sink.messages() {
        *delivered.entry(token(&m.data)).or_default() += 1;
    }
    let twice: Vec<_> = delivered.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let lost: Vec<_> = acked
        .iter()
        .filter(|t| !delivered.contains_key(*t))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged, never delivered: {lost:?} of {}",
        acked.len()
    );
    // Nothing arrived that no client sent; at most the in-flight ones beyond the acked.
    assert!(delivered.keys().all(|t| sent.contains(t)), "{delivered:?}");
    assert!(delivered.len() <= acked.len() + CLIENTS);
}
