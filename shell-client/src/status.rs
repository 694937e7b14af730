//! `certrelay status`: whether `certrelay run` serves this queue and whether a queue run is
//! under way, the queue by state and deferral reason, the last queue run and what came of
//! it, the relayhost, and the expiry of the laptop's certificate and of the relay CA it
//! trusts. Also the two marks it reads: the daemon lock `certrelay run` holds for its life,
//! and the last-run file every delivering process writes after a run.
//!
//! Whether a process holds a lock is read from `/proc/locks`, without trying the lock:
//! trying the run lock, even for an instant, could make a process that wants a run leave
//! its request to this one (see [`crate::runlock`]).
//!
//! Not here: delivering or changing the queue.

use crate::laptop::Laptop;
use crate::runlock::RunKind;
use certrelay_core::nexthop::parse_relayhost;
use certrelay_shell::clock::unix_secs;
use certrelay_shell::delivery::last_relay;
use certrelay_shell::delivery::runner::RunStats;
use certrelay_shell::status::{
    certificates_in, queue_summary, read_claim, span_text, utc_text, CertStatus, Fields, Json,
    QueueSummary, MAX_STATUS_BYTES,
};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Held by `certrelay run` for its life, its pid inside; in the queue directory.
pub const DAEMON_LOCK: &str = "daemon.lock";

/// The queue run lock ([`crate::runlock`]).
const RUN_LOCK: &str = "run.lock";

/// The last queue run, in the queue directory.
pub const LAST_RUN: &str = "last-run";

/// show whether `certrelay run` serves the queue, the queue by state and deferral reason,
/// the last queue run and its result, the relayhost, and the certificates' expiry
#[derive(argh::FromArgs)]
#[argh(subcommand, name = "status")]
pub struct StatusCmd {
    /// one JSON object on standard output, for scripts and monitoring
    #[argh(switch)]
    pub json: bool,
}

/// For `certrelay run`: takes the daemon lock of `queue_dir` and writes this process's id
/// in it. `None` (and a warning) when another `run` holds it or it cannot be made.
pub fn hold_daemon_lock(queue_dir: &Path) -> Option<File> {
    let path = queue_dir.join(DAEMON_LOCK);
    let mut file = match OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => {
            log::warn!(
                "{}: {e}; `certrelay status` cannot tell that this runs",
                path.display()
            );
            return None;
        }
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            log::warn!(
                "another `certrelay run` serves {} already (see `certrelay status`)",
                queue_dir.display()
            );
            return None;
        }
        Err(TryLockError::Error(e)) => {
            log::warn!("{}: {e}", path.display());
            return None;
        }
    }
    let _ = file
        .set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    Some(file)
}

/// For the delivering processes: what the run just made of the queue.
pub fn record_run(queue_dir: &Path, kind: RunKind, stats: &RunStats) {
    let mut f = Fields::new();
    f.push("finished", unix_secs());
    f.push("pid", std::process::id());
    f.push(
        "kind",
        match kind {
            RunKind::Due => "due",
            RunKind::Flush => "flush",
        },
    );
    f.push("attempted", stats.attempted);
    f.push("removed", stats.removed);
    f.push("deferred", stats.deferred);
    f.push("bounces", stats.bounces);
    f.push("failed", stats.failed);
    let tmp = queue_dir.join(format!("{LAST_RUN}.{}.tmp", std::process::id()));
    let written = std::fs::write(&tmp, f.render())
        .and_then(|()| std::fs::rename(&tmp, queue_dir.join(LAST_RUN)));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        log::debug!("{LAST_RUN}: {e}");
    }
}

/// The last run as read back.
struct LastRun {
    finished: u64,
    kind: String,
    attempted: u64,
    removed: u64,
    deferred: u64,
    bounces: u64,
    failed: u64,
}

fn last_run(queue_dir: &Path, owners: &[u32]) -> Result<Option<LastRun>, String> {
    let path = queue_dir.join(LAST_RUN);
    let text = match read_claim(&path, owners, MAX_STATUS_BYTES) {
        Ok(t) => t,
        Err(certrelay_shell::status::ClaimError::Open(e))
            if e.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(None)
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let f = Fields::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let n = |name: &str| {
        f.number(name)
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    Ok(Some(LastRun {
        finished: n("finished")?,
        kind: f.get("kind").unwrap_or("").to_owned(),
        attempted: n("attempted")?,
        removed: n("removed")?,
        deferred: n("deferred")?,
        bounces: n("bounces")?,
        failed: n("failed")?,
    }))
}

/// The process holding a `flock` on `path`, from `/proc/locks`; `None` when none does.
fn lock_holder(path: &Path) -> Option<u32> {
    let meta = std::fs::metadata(path).ok()?;
    let (dev, ino) = (meta.dev(), meta.ino());
    // The kernel's encoding of a device number into major and minor.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        // `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`; blocked waiters have `->`.
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.get(1) != Some(&"FLOCK") {
            return None;
        }
        let pid: u32 = words.get(4)?.parse().ok()?;
        let mut id = words.get(5)?.split(':');
        let (ma, mi, i) = (id.next()?, id.next()?, id.next()?);
        let same = u64::from_str_radix(ma, 16).ok()? == major
            && u64::from_str_radix(mi, 16).ok()? == minor
            && i.parse::<u64>().ok()? == ino;
        same.then_some(pid)
    })
}

/// `certrelay -c DIR status [--json]`: prints the status; returns the exit code (0 when
/// `certrelay run` serves the queue, 3 when not, 1 when the configuration is unreadable).
pub fn main(laptop: &Laptop, json: bool) -> i32 {
    let queue_dir = &laptop.queue_dir;
    let config = laptop.config();
    let now = unix_secs();
    let me = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
    let owners = [me, 0];
    let daemon = lock_holder(&queue_dir.join(DAEMON_LOCK));
    let running = lock_holder(&queue_dir.join(RUN_LOCK));
    let last = last_run(queue_dir, &owners);
    let queue = queue_summary(queue_dir).map_err(|e| format!("{}: {e}", queue_dir.display()));
    let relayhost = config.text("relayhost").to_owned();
    // The entry that last took mail, tried first: only when it is still one of relayhost's.
    let last_used = parse_relayhost(&relayhost)
        .ok()
        .and_then(|hops| last_relay::remembered(queue_dir, &hops).map(|i| hops[i].written.clone()));
    let mut certs = Vec::new();
    for (role, name) in [
        ("client", "smtp_tls_cert_file"),
        ("relay CA", "smtp_tls_CAfile"),
    ] {
        let file = config.text(name);
        if !file.is_empty() {
            certs.extend(certificates_in(role, Path::new(file)));
        }
    }
    if json {
        let last = match &last {
            Ok(Some(l)) => Json::obj([
                ("finished", Json::num(l.finished)),
                ("kind", Json::str(l.kind.clone())),
                ("attempted", Json::num(l.attempted)),
                ("delivered_or_finished", Json::num(l.removed)),
                ("deferred", Json::num(l.deferred)),
                ("bounces", Json::num(l.bounces)),
                ("failed", Json::num(l.failed)),
            ]),
            Ok(None) => Json::Null,
            Err(e) => Json::obj([("error", Json::str(e.clone()))]),
        };
        let report = Json::obj([
            ("role", Json::str("laptop")),
            ("now", Json::num(now)),
            ("daemon_running", Json::Bool(daemon.is_some())),
            ("daemon_pid", daemon.map_or(Json::Null, Json::num)),
            ("queue_run_in_progress", Json::Bool(running.is_some())),
            ("queue_run_pid", running.map_or(Json::Null, Json::num)),
            ("relayhost", Json::str(relayhost)),
            ("relayhost_last_used", Json::opt_str(last_used)),
            ("last_run", last),
            ("queue", queue_json(&queue)),
            (
                "certificates",
                Json::Arr(certs.iter().map(|c| c.json(now)).collect()),
            ),
        ]);
        println!("{}", report.render());
    } else {
        print!(
            "{}",
            text(
                daemon,
                running,
                (&relayhost, last_used.as_deref()),
                &last,
                &queue,
                &certs,
                now
            )
        );
    }
    if daemon.is_some() {
        0
    } else {
        3
    }
}

fn queue_json(queue: &Result<QueueSummary, String>) -> Json {
    match queue {
        Ok(q) => q.json(),
        Err(e) => Json::obj([("error", Json::str(e.clone()))]),
    }
}

fn text(
    daemon: Option<u32>,
    running: Option<u32>,
    (relayhost, last_used): (&str, Option<&str>),
    last: &Result<Option<LastRun>, String>,
    queue: &Result<QueueSummary, String>,
    certs: &[CertStatus],
    now: u64,
) -> String {
    let mut out = String::new();
    match daemon {
        Some(pid) => {
            let _ = writeln!(out, "certrelay run: running, pid {pid}");
        }
        None => {
            let _ = writeln!(
                out,
                "certrelay run: not running (mail goes only at sendmail, flush, or a start)"
            );
        }
    }
    if let Some(pid) = running {
        let _ = writeln!(out, "queue run: in progress, pid {pid}");
    }
    let _ = writeln!(
        out,
        "relayhost: {}",
        if relayhost.is_empty() {
            "(none: delivery by MX)"
        } else {
            relayhost
        }
    );
    if let Some(entry) = last_used {
        let _ = writeln!(out, "relayhost last used: {entry} (tried first)");
    }
    match last {
        Ok(Some(l)) => {
            let _ = writeln!(
                out,
                "last queue run ({}): {} ago, {}: {} attempted, {} delivered or finished, {} \
                 deferred, {} bounce(s) sent, {} failed",
                l.kind,
                span_text(now.saturating_sub(l.finished)),
                utc_text(i64::try_from(l.finished).unwrap_or(0)),
                l.attempted,
                l.removed,
                l.deferred,
                l.bounces,
                l.failed
            );
        }
        Ok(None) => {
            let _ = writeln!(out, "last queue run: none recorded");
        }
        Err(e) => {
            let _ = writeln!(out, "last queue run: unreadable: {e}");
        }
    }
    match queue {
        Ok(q) => out.push_str(&q.text(now)),
        Err(e) => {
            let _ = writeln!(out, "queue: unreadable: {e}");
        }
    }
    let _ = writeln!(
        out,
        "certificates: {} checked, {} expiring within {} days or unreadable",
        certs.len(),
        certs
            .iter()
            .filter(|c| c.expiring(now) || c.error.is_some())
            .count(),
        certrelay_shell::status::EXPIRY_WARNING_DAYS
    );
    for c in certs {
        let _ = writeln!(out, "  {}", c.text(now));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_flock_is_found_in_proc_locks_and_a_free_one_is_not() {
        let dir = std::env::temp_dir().join(format!("certrelay-lockholder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let held = hold_daemon_lock(&dir).expect("free");
        assert_eq!(
            lock_holder(&dir.join(DAEMON_LOCK)),
            Some(std::process::id())
        );
        let pid = std::fs::read_to_string(dir.join(DAEMON_LOCK)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        drop(held);
        assert_eq!(lock_holder(&dir.join(DAEMON_LOCK)), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_last_run_reads_back_and_garbage_is_an_error() {
        let dir = std::env::temp_dir().join(format!("certrelay-lastrun-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(matches!(last_run(&dir, &[]), Ok(None)));
        let stats = RunStats {
            attempted: 2,
            removed: 1,
            deferred: 1,
            ..RunStats::default()
        };
        record_run(&dir, RunKind::Flush, &stats);
        let l = last_run(&dir, &[]).unwrap().unwrap();
        assert_eq!(
            (l.attempted, l.removed, l.deferred, l.kind.as_str()),
            (2, 1, 1, "flush")
        );
        std::fs::write(dir.join(LAST_RUN), "attempted lots\n").unwrap();
        assert!(last_run(&dir, &[]).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
