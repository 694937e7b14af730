//! Two relays behind Debian's HAProxy (`/usr/sbin/haproxy`, TCP mode, PROXY protocol
//! version 2, SMTP health checks with the header), laptops sending through it while one
//! relay is stopped with SIGTERM and started again: every message reaches the sink exactly
//! once, and the relays see the laptops' address (from the header), not HAProxy's.
//!
//! HAProxy connects to the relays from 127.0.0.2 (`source`), the laptops connect from
//! 127.0.0.1: a relay that logged the TCP peer would show 127.0.0.2, which only HAProxy's
//! health checks (a `LOCAL` header: no client) may show.
//!
//! `#[ignore]`: it needs the haproxy package (CI installs it with apt). Run with
//! `cargo test --test haproxy -- --ignored`.

use certrelay_testkit::daemon::Daemon;
use certrelay_testkit::recipe::{certrelay, laptop, relay};
use certrelay_testkit::sink::{Sink, SinkOptions};
use certrelay_testkit::{binary, free_port, wait_until, TempDir};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const HAPROXY: &str = "/usr/sbin/haproxy";
const LAPTOPS: usize = 3;
const PER_LAPTOP: usize = 20;

/// The HAProxy configuration of the README's "More than one relay", on test ports.
fn haproxy_cfg(front: u16, relays: [u16; 2]) -> String {
    format!(
        "global\n\
         \x20   log stderr format raw local0 info\n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   log global\n\
         \x20   option tcplog\n\
         \x20   option log-health-checks\n\
         \x20   option redispatch\n\
         \x20   retries 3\n\
         \x20   timeout connect 5s\n\
         \x20   timeout client 5m\n\
         \x20   timeout server 5m\n\
         frontend smtp\n\
         \x20   bind 127.0.0.1:{front}\n\
         \x20   default_backend relays\n\
         backend relays\n\
         \x20   balance roundrobin\n\
         \x20   option smtpchk EHLO haproxy.test\n\
         \x20   default-server source 127.0.0.2 send-proxy-v2 check check-send-proxy inter 500ms fall 1 rise 1\n\
         \x20   server relay1 127.0.0.1:{} \n\
         \x20   server relay2 127.0.0.1:{}\n",
        relays[0], relays[1]
    )
}

/// Listens behind HAProxy: the relay's master.cf line with the PROXY header expected.
fn behind_haproxy(dir: &Path, port: u16) {
    std::fs::write(
        dir.join("master.cf"),
        format!(
            "127.0.0.1:{port} inet n - n - - smtpd\n  \
               -o smtpd_upstream_proxy_protocol=haproxy\n"
        ),
    )
    .unwrap();
}

/// A second relay sharing the first one's CA, certificate, map and main.cf, with its own
/// spool and port.
fn second_relay(first: &Path, port: u16) -> TempDir {
    let dir = TempDir::new("haproxy-relay2");
    for entry in std::fs::read_dir(first).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    let main_cf = std::fs::read_to_string(first.join("main.cf")).unwrap();
    let main_cf = main_cf.replace(
        &first.display().to_string(),
        &dir.path().display().to_string(),
    );
    dir.write("main.cf", &main_cf);
    behind_haproxy(dir.path(), port);
    dir
}

fn start_relay(dir: &Path) -> Daemon {
    Daemon::start(
        &binary("certrelayd"),
        &["-c", dir.to_str().unwrap()],
        "daemon started",
    )
}

fn message(laptop: usize, n: usize) -> String {
    format!(
        "From: bob@laptop.test\nTo: friend@elsewhere.example\n\
         Message-ID: <{laptop}.{n}@laptop.test>\nSubject: {laptop}.{n}\n\nhello\n"
    )
}

#[test]
#[ignore = "needs /usr/sbin/haproxy (apt install haproxy)"]
fn two_relays_behind_haproxy_lose_and_double_nothing_while_one_restarts() {
    let began = Instant::now();
    let sink = Sink::start(SinkOptions::default());
    let (dir1, first, port1) = relay("haproxy-relay1", &["127.0.0.1"], sink.port());
    // The recipe's relay listens without the header; stopped and configured for HAProxy.
    assert!(first.stop().success());
    behind_haproxy(dir1.path(), port1);
    let mut relay1 = start_relay(dir1.path());
    let port2 = free_port();
    let dir2 = second_relay(dir1.path(), port2);
    let relay2 = start_relay(dir2.path());

    let front = free_port();
    let ha_dir = TempDir::new("haproxy");
    let cfg = ha_dir.write("haproxy.cfg", &haproxy_cfg(front, [port1, port2]));
    let haproxy = Daemon::start(
        Path::new(HAPROXY),
        &["-f", cfg.to_str().unwrap(), "-db"],
        "",
    );
    // HAProxy's health checks arrive with a LOCAL header: their client is HAProxy itself.
    relay1.wait_log("connect from unknown[127.0.0.2]");
    relay2.wait_log("connect from unknown[127.0.0.2]");
    assert!(!relay1.log().contains("haproxy read"), "{}", relay1.log());

    let laptops: Vec<TempDir> = (0..LAPTOPS)
        .map(|i| laptop(&format!("haproxy-laptop{i}"), &dir1, front, "MUST"))
        .collect();
    let total = LAPTOPS * PER_LAPTOP;
    let mut relay1_log = String::new();
    std::thread::scope(|s| {
        for (i, dir) in laptops.iter().enumerate() {
            s.spawn(move || {
                for n in 0..PER_LAPTOP {
                    let out = certrelay(dir, &["sendmail", "-t"], message(i, n).as_bytes());
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        // A third of the mail through, stop relay 1 (sessions in progress finish, mail it
        // queued stays in its spool), then start it again with the same spool.
        wait_until("a third of the messages", || {
            (sink.messages().len() >= total / 3).then_some(())
        });
        relay1.signal("TERM");
        relay1.wait_log("terminating on signal 15");
        let pid = relay1.pid();
        wait_until("relay 1 to exit", || exited(pid).then_some(()));
        std::thread::sleep(Duration::from_millis(300));
        relay1_log = relay1.log();
        let stopped = std::mem::replace(&mut relay1, start_relay(dir1.path()));
        assert!(stopped.stop_waiting().success());
    });

    // Whatever a laptop deferred (a connection HAProxy had sent to the stopping relay)
    // goes now.
    let got = wait_until("every message at the sink", || {
        for dir in &laptops {
            certrelay(dir, &["flush"], b"");
        }
        let m = sink.messages();
        (m.len() >= total).then_some(m)
    });
    std::thread::sleep(Duration::from_secs(1));
    let got = if sink.messages().len() > got.len() {
        sink.messages()
    } else {
        got
    };
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for m in &got {
        let text = m.text();
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: "))
            .expect("a Message-ID")
            .to_owned();
        *ids.entry(id).or_default() += 1;
    }
    let doubled: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "delivered twice: {doubled:?}");
    assert_eq!(ids.len(), total, "{ids:?}");

    let relay1_log = relay1_log + &relay1.log();
    let relay2_log = relay2.log();
    // `ID: client=NAME[ADDRESS]` lines, by address.
    let clients = |log: &str, addr: &str| {
        log.lines()
            .filter(|l| l.contains(": client=") && l.ends_with(&format!("[{addr}]")))
            .count()
    };
    for log in [&relay1_log, &relay2_log] {
        // Mail came from the laptops' 127.0.0.1 (the header's), never from HAProxy's own
        // 127.0.0.2, which only the health checks show.
        assert!(clients(log, "127.0.0.1") > 0, "{log}");
        assert_eq!(clients(log, "127.0.0.2"), 0, "{log}");
        assert!(!log.contains("haproxy read"), "{log}");
    }
    assert!(
        relay1_log.contains("terminating on signal 15"),
        "{relay1_log}"
    );
    let queued = |log: &str| clients(log, "127.0.0.1");
    eprintln!(
        "{total} messages sent, {} received ({} through relay 1, {} through relay 2) in {:?}",
        got.len(),
        queued(&relay1_log),
        queued(&relay2_log),
        began.elapsed()
    );
    drop(haproxy);
}

/// Whether process `pid` has exited (a zombie not yet waited for).
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}
