//! The laptop's queue commands: deliver (`flush`, the detached attempt after `sendmail`,
//! the `run` daemon), list (`queue`, `sendmail -bp`) and remove (`delete`).
//!
//! Every command that changes the spool holds the run lock ([`crate::runlock`]); listing
//! only reads files, which are always replaced whole.

use crate::laptop::{Delivery, Laptop};
use crate::runlock::{RunKind, RunLock, Served};
use certrelay_core::queue::{Envelope, QueueId, Verdict};
use certrelay_core::tls_policy::TlsPolicyError;
use certrelay_shell::delivery::resolver::Resolver;
use certrelay_shell::delivery::runner::{QueueRunner, RunStats};
use certrelay_shell::spool::maildrop::Maildrop;
use certrelay_shell::spool::Spool;
use std::io;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// How long `flush` and `delete` wait for a run in progress before giving up.
pub const LOCK_WAIT: Duration = Duration::from_secs(120);

/// A delivering process: the run lock, the spool (opened once the lock is held), the
/// runner.
pub struct Deliverer {
    queue_dir: std::path::PathBuf,
    lock: RunLock,
    maildrop: Maildrop,
    delivery: Delivery,
    runner: Option<(Spool, QueueRunner)>,
    unique: AtomicU32,
}

impl Deliverer {
    /// Prepares delivery for `laptop`; the spool is not touched yet.
    pub fn new(laptop: &Laptop, delivery: Delivery) -> io::Result<Deliverer> {
        std::fs::create_dir_all(&laptop.queue_dir)?;
        Ok(Deliverer {
            queue_dir: laptop.queue_dir.clone(),
            lock: RunLock::new(&laptop.queue_dir)?,
            maildrop: Maildrop::open(&laptop.queue_dir)?,
            delivery,
            runner: None,
            unique: AtomicU32::new(std::process::id() << 16),
        })
    }

    /// Delivers with `delivery` from the next run on (a renewed client certificate).
    pub fn use_delivery(&mut self, delivery: Delivery) {
        self.delivery = delivery;
        self.runner = None;
    }

    /// `relayhost`, parsed (empty: delivery by MX).
    pub fn relayhost(&self) -> &[certrelay_shell::delivery::route::NextHop] {
        &self.delivery.runner.relayhost
    }

    /// Asks for a run and does it (and those asked for meanwhile) unless another process
    /// holds the lock past `wait`. Returns what this process did.
    pub fn request(&mut self, kind: RunKind, wait: Duration) -> io::Result<(Served, RunStats)> {
        let lock = self.lock.clone();
        let mut total = RunStats::default();
        let mut failure = None;
        let served = lock.request(kind, wait, |kind| match self.run_locked(kind) {
            Ok(stats) => {
                crate::status::record_run(&self.queue_dir, kind, &stats);
                add(&mut total, &stats)
            }
            Err(e) => failure = Some(e),
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok((served, total)),
        }
    }

    /// One run; the caller holds the lock.
    fn run_locked(&mut self, kind: RunKind) -> io::Result<RunStats> {
        let (spool, runner) = match &self.runner {
            Some(r) => r.clone(),
            None => {
                let (spool, recovery) = Spool::open(&self.queue_dir)?;
                if recovery.removed_partial > 0 || !recovery.moved_aside.is_empty() {
                    log::warn!("queue recovery: {recovery:?}");
                }
                let r = QueueRunner::new(
                    spool.clone(),
                    self.delivery.runner.clone(),
                    self.delivery.tls.clone(),
                    Resolver::system(),
                );
                self.runner = Some((spool.clone(), r.clone()));
                (spool, r)
            }
        };
        let now = certrelay_shell::clock::unix_secs();
        let picked = self.maildrop.pickup(&spool, || {
            QueueId::generate(now, self.unique.fetch_add(1, Ordering::Relaxed))
        });
        log::debug!("picked up {} message(s)", picked.len());
        if let Some(problem) = &self.delivery.config_problem {
            return defer_all(&spool, problem, kind, &self.delivery);
        }
        Ok(smol::block_on(runner.run_once(kind == RunKind::Flush)))
    }
}

fn add(total: &mut RunStats, s: &RunStats) {
    total.attempted += s.attempted;
    total.removed += s.removed;
    total.deferred += s.deferred;
    total.failed += s.failed;
    total.bounces += s.bounces;
    total.moved_aside += s.moved_aside;
}

/// With an invalid per-site value for the relayhost nothing is sent: every due message
/// is deferred with `4.7.5 client TLS configuration problem`, as Postfix defers.
fn defer_all(
    spool: &Spool,
    problem: &TlsPolicyError,
    kind: RunKind,
    delivery: &Delivery,
) -> io::Result<RunStats> {
    log::error!("{problem}: deferring mail until smtp_tls_per_site is fixed");
    let mut stats = RunStats::default();
    let now = certrelay_shell::clock::unix_secs();
    let verdict = Verdict::deferred("4.7.5", "client TLS configuration problem");
    for id in spool.ids()? {
        let Ok(mut envelope) = spool
            .read_envelope(&id)
            .map_err(|e| e.to_string())
            .and_then(|t| Envelope::parse(&t).map_err(|e| e.to_string()))
        else {
            continue;
        };
        if envelope.is_done() || !(kind == RunKind::Flush || envelope.is_due(now)) {
            continue;
        }
        stats.attempted += 1;
        envelope.defer_remaining(&verdict);
        envelope.finish_attempt(now, &delivery.runner.retry);
        spool
            .update_envelope(&id, envelope.to_text().as_bytes())
            .map_err(io::Error::other)?;
        stats.deferred += 1;
    }
    Ok(stats)
}

/// One line about a run, for `flush`.
pub fn describe(stats: &RunStats) -> String {
    format!(
        "{} attempted, {} delivered or finished, {} deferred, {} bounce(s) sent, {} failed",
        stats.attempted, stats.removed, stats.deferred, stats.bounces, stats.failed
    )
}

/// What `delete` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    /// The message was removed.
    Removed,
    /// No message has that id.
    NotFound,
    /// A run held the lock past the wait.
    Busy,
}

/// Removes message `id` from the maildrop or the spool, holding the run lock.
pub fn delete(queue_dir: &Path, id: &str, wait: Duration) -> io::Result<Deleted> {
    if QueueId::parse(id).is_none() {
        return Ok(Deleted::NotFound);
    }
    std::fs::create_dir_all(queue_dir)?;
    let lock = RunLock::new(queue_dir)?;
    let Some(_held) = lock.hold(wait)? else {
        return Ok(Deleted::Busy);
    };
    if Maildrop::open(queue_dir)?.remove(id)? {
        return Ok(Deleted::Removed);
    }
    // Holding the lock, this process may open (and recover) the spool.
    let (spool, _) = Spool::open(queue_dir)?;
    if !spool.message_path(id).exists() && spool.read_envelope(id).is_err() {
        return Ok(Deleted::NotFound);
    }
    spool.remove(id)?;
    Ok(Deleted::Removed)
}

/// Starts `certrelay -c DIR flush --due --quiet` in its own process group, its output
/// appended to `queue_dir/delivery.log`, and does not wait for it.
pub fn spawn_detached(config_dir: &Path, queue_dir: &Path) -> io::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(queue_dir.join("delivery.log"))?;
    // Through the same emulator when this program runs under one (a cross-built binary).
    certrelay_shell::reexec::spawn(&exe, &certrelay_shell::reexec::emulator(), |command| {
        command
            .arg("-c")
            .arg(config_dir)
            .args(["flush", "--due", "--quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.try_clone().map_or_else(|_| Stdio::null(), Stdio::from))
            .process_group(0);
    })
    .map(drop)
}

/// What the `run` daemon's delivering loop is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DaemonWake {
    /// The local SMTP listener committed a message to the maildrop: deliver what is due.
    NewMail,
    /// Try every message now, due or not (SIGUSR1, a change of network).
    Flush,
    /// Return once no run is in progress (SIGTERM, SIGINT).
    Stop,
}

/// The `run` daemon's delivering loop: a run now, one every `queue_run_delay`, and one
/// soon after each wake-up on `wakeups` (wake-ups that pile up during a run make one run,
/// a flush when any asked for one). Returns on [`DaemonWake::Stop`], or when every sender
/// is gone, always between runs, so the run lock is free then. Failed runs are logged and
/// tried again.
pub fn serve(
    deliverer: &mut Deliverer,
    delay: Duration,
    wakeups: &mpsc::Receiver<DaemonWake>,
    before_run: &mut dyn FnMut(&mut Deliverer),
) {
    let mut kind = RunKind::Due;
    loop {
        before_run(deliverer);
        // Wake-ups sent before this point are served by this run: the messages committed
        // before them are in the maildrop already.
        loop {
            match wakeups.try_recv() {
                Ok(DaemonWake::Stop) | Err(mpsc::TryRecvError::Disconnected) => return,
                Ok(DaemonWake::Flush) => kind = RunKind::Flush,
                Ok(DaemonWake::NewMail) => {}
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        match deliverer.request(kind, Duration::ZERO) {
            Ok((Served::Here, stats)) => log::debug!("queue run: {}", describe(&stats)),
            Ok((Served::ByHolder, _)) => log::debug!("queue run left to another process"),
            Err(e) => log::error!("queue run failed: {e}"),
        }
        kind = RunKind::Due;
        match wakeups.recv_timeout(delay) {
            Ok(DaemonWake::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Ok(DaemonWake::Flush) => kind = RunKind::Flush,
            Ok(DaemonWake::NewMail) | Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}
