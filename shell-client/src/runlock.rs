//! One queue run at a time per spool, across processes, with no lost requests.
//!
//! Several processes may want a run at once: `sendmail`'s detached delivery, a person's
//! `flush`, the `run` daemon. Each first leaves a request (a new file in `requests/`, whose
//! creation is atomic), then tries the lock (`flock` on `run.lock`, released by the kernel
//! if the holder dies). The holder serves every request it finds, and after unlocking looks
//! once more: a request made while it held the lock is either seen before it unlocks, or
//! seen after, when it tries the lock again. So a process that finds the lock taken can
//! leave at once: its request will be served.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What a run covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunKind {
    /// Messages whose next attempt is due (new mail is due at once).
    Due,
    /// Every message, due or not.
    Flush,
}

/// Whether this process did the runs or left them to the holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// This process held the lock and served every request, its own included.
    Here,
    /// Another process holds the lock and will serve the request.
    ByHolder,
}

/// The lock and request directory of one spool.
#[derive(Clone, Debug)]
pub struct RunLock {
    lock_path: PathBuf,
    requests: PathBuf,
}

impl RunLock {
    /// The lock of the spool at `queue_dir` (created if needed).
    pub fn new(queue_dir: &Path) -> io::Result<RunLock> {
        let requests = queue_dir.join("requests");
        fs::create_dir_all(&requests)?;
        Ok(RunLock {
            lock_path: queue_dir.join("run.lock"),
            requests,
        })
    }

    /// Asks for a run of `kind` and serves requests while this process can hold the lock,
    /// calling `run` once per batch of requests (with `Flush` when any asked for it).
    /// Waits up to `wait` for a busy lock before leaving the request to its holder.
    pub fn request(
        &self,
        kind: RunKind,
        wait: Duration,
        mut run: impl FnMut(RunKind),
    ) -> io::Result<Served> {
        self.leave_request(kind)?;
        let deadline = Instant::now() + wait;
        loop {
            let Some(lock) = self.try_lock()? else {
                if Instant::now() >= deadline || !self.has_requests()? {
                    return Ok(Served::ByHolder);
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            while let Some(kind) = self.take_requests()? {
                run(kind);
            }
            drop(lock);
            if !self.has_requests()? {
                return Ok(Served::Here);
            }
        }
    }

    /// Holds the lock (waiting up to `wait`) for work that must not overlap a run, such
    /// as removing a message. `None` when it stayed busy.
    pub fn hold(&self, wait: Duration) -> io::Result<Option<File>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(lock) = self.try_lock()? {
                return Ok(Some(lock));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn try_lock(&self) -> io::Result<Option<File>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    fn leave_request(&self, kind: RunKind) -> io::Result<()> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tag = match kind {
            RunKind::Due => "due",
            RunKind::Flush => "flush",
        };
        let name = format!(
            "{nanos}.{}.{}.{tag}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.requests.join(name))
            .map(drop)
    }

    fn has_requests(&self) -> io::Result<bool> {
        Ok(fs::read_dir(&self.requests)?.next().is_some())
    }

    /// Removes the pending requests; `Flush` if any asked for it, `None` without any.
    fn take_requests(&self) -> io::Result<Option<RunKind>> {
        let mut found = None;
        for entry in fs::read_dir(&self.requests)? {
            let path = entry?.path();
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            let kind = if path.extension().is_some_and(|e| e == "flush") {
                RunKind::Flush
            } else {
                RunKind::Due
            };
            found = Some(match (found, kind) {
                (Some(RunKind::Flush), _) | (_, RunKind::Flush) => RunKind::Flush,
                _ => RunKind::Due,
            });
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("certrelay-runlock-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn holder_serves_requests_left_while_it_runs() {
        let dir = temp("serve");
        let lock = RunLock::new(&dir).unwrap();
        let other = RunLock::new(&dir).unwrap();
        let mut runs = Vec::new();
        let served = lock
            .request(RunKind::Due, Duration::ZERO, |kind| {
                runs.push(kind);
                if runs.len() == 1 {
                    // Another process asks while this one holds the lock: it leaves.
                    let r = other
                        .request(RunKind::Flush, Duration::ZERO, |_| panic!("not here"))
                        .unwrap();
                    assert_eq!(r, Served::ByHolder);
                }
            })
            .unwrap();
        assert_eq!(served, Served::Here);
        assert_eq!(runs, [RunKind::Due, RunKind::Flush]);
        assert!(!lock.has_requests().unwrap());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn hold_excludes_runs() {
        let dir = temp("hold");
        let lock = RunLock::new(&dir).unwrap();
        let held = lock.hold(Duration::ZERO).unwrap().expect("free");
        assert!(lock.hold(Duration::from_millis(150)).unwrap().is_none());
        let r = lock
            .request(RunKind::Due, Duration::ZERO, |_| panic!("locked"))
            .unwrap();
        assert_eq!(r, Served::ByHolder);
        drop(held);
        let mut ran = 0;
        lock.request(RunKind::Due, Duration::ZERO, |_| ran += 1)
            .unwrap();
        assert_eq!(ran, 1, "the earlier request and this one, served together");
        fs::remove_dir_all(dir).unwrap();
    }
}
