//! Group commit: one directory fsync made durable for every rename that came before it.
//!
//! A message is committed when its synced file was renamed into `queue/` and a sync of
//! `queue/` *that began after the rename* has returned. Messages that finish at about the
//! same moment share that sync: whoever needs one while another is in flight waits for it
//! to end and then, if no one else has, starts the next, which covers every rename made
//! in the meantime. A lone message starts its sync at once: there is no timer and no
//! waiting for company.
//!
//! Not here: the file's own fsync (each message does its own, before the rename), or the
//! files and names of the spool (`spool`). The calls block; they run on the blocking pool.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Set (to anything) in the relay's environment, every commit syncs the directory itself,
/// as before group commit: only for `benches/` to measure what grouping gains.
pub const BENCH_ONLY_NO_GROUP_COMMIT_VAR: &str = "CERTRELAY_BENCH_ONLY_NO_GROUP_COMMIT";

/// What syncs a directory (the real fsync, or a test's stand-in).
pub(crate) type SyncFn = Arc<dyn Fn(&Path) -> io::Result<()> + Send + Sync>;

/// The shared syncs of one directory.
pub(crate) struct GroupSync {
    dir: PathBuf,
    sync: SyncFn,
    grouped: bool,
    state: Mutex<Rounds>,
    ended: Condvar,
}

impl std::fmt::Debug for GroupSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupSync")
            .field("dir", &self.dir)
            .field("grouped", &self.grouped)
            .finish()
    }
}

/// Syncs are numbered from 1 in the order they start; one at a time is in flight.
#[derive(Default)]
struct Rounds {
    /// The number of the last sync started.
    started: u64,
    /// The number of the last sync that returned (equals `started` unless one is in flight).
    ended: u64,
    /// The number of the last sync that succeeded (0: none yet).
    last_ok: u64,
    /// How the last failed sync failed.
    last_error: Option<(io::ErrorKind, Option<i32>)>,
}

impl GroupSync {
    /// Syncs of `dir` with `sync`; `grouped` false makes every caller sync on its own.
    pub(crate) fn new(dir: PathBuf, sync: SyncFn, grouped: bool) -> GroupSync {
        GroupSync {
            dir,
            sync,
            grouped,
            state: Mutex::new(Rounds::default()),
            ended: Condvar::new(),
        }
    }

    fn rounds(&self) -> MutexGuard<'_, Rounds> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns once a sync of the directory that started after this call began has
    /// succeeded: what the caller renamed into it before the call is then durable. The
    /// error is that sync's (or, when several failed since, the last one's).
    pub(crate) fn sync_after(&self) -> io::Result<()> {
        if !self.grouped {
            return (self.sync)(&self.dir);
        }
        let mut rounds = self.rounds();
        // A sync in flight now may have begun before the caller's rename: only the next
        // one to start counts.
        let needed = rounds.started + 1;
        loop {
            if rounds.ended >= needed {
                // Every sync from `needed` on began after the call; one success is enough.
                if rounds.last_ok >= needed {
                    return Ok(());
                }
                let (kind, raw) = rounds.last_error.unwrap_or((io::ErrorKind::Other, None));
                return Err(match raw {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(kind, "directory sync failed"),
                });
            }
            if rounds.started == rounds.ended {
                // None in flight: this caller starts the next, for everyone waiting.
                rounds.started += 1;
                let round = rounds.started;
                drop(rounds);
                let result = (self.sync)(&self.dir);
                rounds = self.rounds();
                rounds.ended = round;
                match result {
                    Ok(()) => rounds.last_ok = round,
                    Err(e) => rounds.last_error = Some((e.kind(), e.raw_os_error())),
                }
                self.ended.notify_all();
            } else {
                rounds = self.ended.wait(rounds).unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    /// What the stand-in sync and the callers did, in order.
    #[derive(Debug, Clone, PartialEq)]
    enum Event {
        SyncStart(usize),
        SyncEnd(usize),
        Called(usize),
        Returned(usize),
    }

    /// A stand-in sync that logs its start, then blocks until the test lets it end (one
    /// message on `gate` per sync), then fails when the test said so.
    struct Harness {
        log: Arc<Mutex<Vec<Event>>>,
        gate: Mutex<mpsc::Sender<()>>,
        sync: Arc<GroupSync>,
    }

    fn harness(grouped: bool, fail: Vec<usize>) -> Harness {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<()>();
        let rx = Mutex::new(rx);
        let count = Mutex::new(0usize);
        let l = log.clone();
        let sync: SyncFn = Arc::new(move |_: &Path| {
            let n = {
                let mut c = count.lock().unwrap();
                *c += 1;
                *c
            };
            l.lock().unwrap().push(Event::SyncStart(n));
            rx.lock().unwrap().recv().unwrap();
            l.lock().unwrap().push(Event::SyncEnd(n));
            if fail.contains(&n) {
                Err(io::Error::from_raw_os_error(5))
            } else {
                Ok(())
            }
        });
        Harness {
            log,
            gate: Mutex::new(tx),
            sync: Arc::new(GroupSync::new(PathBuf::from("queue"), sync, grouped)),
        }
    }

    impl Harness {
        /// Caller `n` asks for a sync on a thread of its own.
        fn call(&self, n: usize) -> thread::JoinHandle<io::Result<()>> {
            let (sync, log) = (self.sync.clone(), self.log.clone());
            log.lock().unwrap().push(Event::Called(n));
            thread::spawn(move || {
                let r = sync.sync_after();
                log.lock().unwrap().push(Event::Returned(n));
                r
            })
        }

        fn release(&self) {
            self.gate.lock().unwrap().send(()).unwrap();
        }

        fn events(&self) -> Vec<Event> {
            self.log.lock().unwrap().clone()
        }

        /// Waits until the log holds `count` sync starts.
        fn wait_syncs(&self, count: usize) {
            for _ in 0..1000 {
                let started = self
                    .events()
                    .iter()
                    .filter(|e| matches!(e, Event::SyncStart(_)))
                    .count();
                if started >= count {
                    return;
                }
                thread::sleep(Duration::from_millis(5));
            }
            panic!("no sync {count}: {:?}", self.events());
        }
    }

    /// Every caller returned only after a sync that started after its call had ended.
    fn assert_covered(events: &[Event]) {
        for (i, e) in events.iter().enumerate() {
            let Event::Returned(n) = e else { continue };
            let called = events.iter().position(|e| *e == Event::Called(*n)).unwrap();
            let covered = events[called..i].iter().any(|e| match e {
                Event::SyncEnd(s) => events[called..].contains(&Event::SyncStart(*s)),
                _ => false,
            });
            assert!(covered, "caller {n} returned uncovered: {events:?}");
        }
    }

    #[test]
    fn a_lone_caller_syncs_at_once() {
        let h = harness(true, vec![]);
        let t = h.call(1);
        h.wait_syncs(1);
        h.release();
        t.join().unwrap().unwrap();
        assert_eq!(
            h.events(),
            [
                Event::Called(1),
                Event::SyncStart(1),
                Event::SyncEnd(1),
                Event::Returned(1)
            ]
        );
    }

    #[test]
    fn callers_arriving_during_a_sync_share_the_next_one_and_not_the_one_in_flight() {
        let h = harness(true, vec![]);
        let first = h.call(1);
        h.wait_syncs(1);
        // Three more arrive while sync 1 is in flight: it may have begun before their
        // renames, so it must not count for them.
        let more: Vec<_> = (2..=4).map(|n| h.call(n)).collect();
        thread::sleep(Duration::from_millis(50));
        assert!(
            !h.events()
                .iter()
                .any(|e| matches!(e, Event::Returned(2..=4))),
            "{:?}",
            h.events()
        );
        h.release();
        first.join().unwrap().unwrap();
        // One sync for the three of them.
        h.wait_syncs(2);
        h.release();
        for t in more {
            t.join().unwrap().unwrap();
        }
        let events = h.events();
        let syncs = events
            .iter()
            .filter(|e| matches!(e, Event::SyncStart(_)))
            .count();
        assert_eq!(syncs, 2, "{events:?}");
        assert_covered(&events);
    }

    #[test]
    fn without_grouping_each_caller_syncs_on_its_own() {
        let h = harness(false, vec![]);
        let first = h.call(1);
        h.wait_syncs(1);
        let second = h.call(2);
        // The second does not wait for the first: its own sync starts beside it.
        h.wait_syncs(2);
        h.release();
        h.release();
        first.join().unwrap().unwrap();
        second.join().unwrap().unwrap();
        assert_covered(&h.events());
    }

    #[test]
    fn a_failed_sync_fails_those_it_covered_and_the_next_one_serves_later_callers() {
        let h = harness(true, vec![2]);
        let first = h.call(1);
        h.wait_syncs(1);
        let (a, b) = (h.call(2), h.call(3));
        h.release();
        first.join().unwrap().unwrap();
        h.wait_syncs(2);
        // Sync 2 (for callers 2 and 3) fails: both hear of it.
        h.release();
        assert_eq!(a.join().unwrap().unwrap_err().raw_os_error(), Some(5));
        assert_eq!(b.join().unwrap().unwrap_err().raw_os_error(), Some(5));
        // A later caller gets a sync of its own, which succeeds.
        let c = h.call(4);
        h.wait_syncs(3);
        h.release();
        c.join().unwrap().unwrap();
        assert_covered(&h.events());
    }

    #[test]
    fn many_callers_all_return_covered() {
        let h = Arc::new(harness(true, vec![]));
        // Let every sync through as soon as it starts.
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let opener = {
            let h = h.clone();
            thread::spawn(move || {
                while stop_rx.try_recv().is_err() {
                    h.release();
                    thread::sleep(Duration::from_millis(1));
                }
            })
        };
        let threads: Vec<_> = (0..32).map(|n| h.call(n)).collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        stop_tx.send(()).unwrap();
        opener.join().unwrap();
        assert_covered(&h.events());
    }
}
