//! Group commit: one directory fsync made durable for every rename that came before it.
//!
//! A message is committed when its synced file was renamed into `queue/` and a sync of
//! `queue/` *that began after the rename* has returned. Messages that finish at about the
//! same moment share that sync: whoever needs one while another is in flight waits for it
//! to end and then, if no one else has, starts the next, which covers every rename made
//! in the meantime.
//!
//! Before it starts a sync, a caller waits for the commits already under way (announced
//! with [`GroupSync::arriving`]: their file is being synced, their rename comes next), at
//! most [`COMPANY_WAIT_MAX`], so that one sync covers them too instead of each needing
//! the next. It never waits for commits that had not begun: a lone message starts its
//! sync at once, with no timer.
//!
//! Not here: the file's own fsync (each message does its own, before the rename), or the
//! files and names of the spool (`spool`). The calls block; they run on the blocking pool.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Set (to anything) in the relay's environment, every commit syncs the directory itself,
/// as before group commit: only for `benches/` to measure what grouping gains.
pub const BENCH_ONLY_NO_GROUP_COMMIT_VAR: &str = "CERTRELAY_BENCH_ONLY_NO_GROUP_COMMIT";

/// What syncs a directory (the real fsync, or a test's stand-in).
pub(crate) type SyncFn = Arc<dyn Fn(&Path) -> io::Result<()> + Send + Sync>;

/// Longest a caller about to start a sync waits for the commits under way: a bound for a
/// disk that stalls, far above a file's fsync on a working one.
pub(crate) const COMPANY_WAIT_MAX: Duration = Duration::from_millis(20);

/// The shared syncs of one directory.
pub(crate) struct GroupSync {
    dir: PathBuf,
    sync: SyncFn,
    grouped: bool,
    state: Mutex<Rounds>,
    ended: Condvar,
    company_wait: Duration,
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
    /// The number of the last sync that failed (0: none yet).
    last_failed: u64,
    /// How the last failed sync failed.
    last_error: Option<(io::ErrorKind, Option<i32>)>,
    /// Commits announced so far ([`GroupSync::arriving`]), and those of them that reached
    /// their sync or gave up.
    announced: u64,
    arrived: u64,
}

impl Rounds {
    /// The round a caller arriving now needs: a sync in flight may have begun before the
    /// caller's rename, so only the next one to start counts.
    fn needed(&self) -> u64 {
        self.started + 1
    }

    /// Starts the next round when none is in flight; its number.
    fn begin(&mut self) -> Option<u64> {
        if self.started != self.ended {
            return None;
        }
        self.started += 1;
        Some(self.started)
    }

    /// Records how round `round` ended (`Err(None)`: its sync panicked).
    fn end(&mut self, round: u64, result: Result<(), Option<&io::Error>>) {
        self.ended = round;
        if let Err(e) = result {
            self.last_failed = round;
            self.last_error = Some(match e {
                Some(e) => (e.kind(), e.raw_os_error()),
                None => (io::ErrorKind::Other, None),
            });
        }
    }

    /// What a caller that needs round `needed` gets, once that round has ended. Every
    /// round from `needed` on began after the call, but a success does not make up for an
    /// earlier failure: a failed fsync may have dropped the dirty state it was to write,
    /// and a later sync then has nothing left to flush. So any failure from `needed` on
    /// fails the caller (a failure after a success fails it too: a safe 4xx, and rare).
    fn outcome(&self, needed: u64) -> Option<io::Result<()>> {
        if self.ended < needed {
            return None;
        }
        if self.last_failed < needed {
            return Some(Ok(()));
        }
        let (kind, raw) = self.last_error.unwrap_or((io::ErrorKind::Other, None));
        Some(Err(match raw {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(kind, "directory sync failed"),
        }))
    }
}

/// Ends a round even when its sync unwinds, so that no one waits for it for ever; the
/// round then counts as failed.
struct RoundGuard<'a> {
    group: &'a GroupSync,
    round: u64,
}

impl Drop for RoundGuard<'_> {
    fn drop(&mut self) {
        self.group.rounds().end(self.round, Err(None));
        self.group.ended.notify_all();
    }
}

/// A commit under way: from before its file's fsync until its rename is done and it asks
/// for the directory's sync ([`Arrival::sync_after`]), or gives up (dropped).
pub(crate) struct Arrival<'a> {
    group: &'a GroupSync,
    counted: bool,
}

impl Arrival<'_> {
    /// [`GroupSync::sync_after`], for the commit this announced: it counts as arrived in
    /// the same step as it takes the round it needs, so that a sync it let start covers it.
    pub(crate) fn sync_after(mut self) -> io::Result<()> {
        let counted = std::mem::take(&mut self.counted);
        self.group.sync_after_arriving(counted, |_| ())
    }

    fn arrive(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.group.rounds().arrived += 1;
            self.group.ended.notify_all();
        }
    }
}

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        self.arrive();
    }
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
            company_wait: COMPANY_WAIT_MAX,
        }
    }

    /// Announces a commit that will rename into the directory and then ask for its sync:
    /// a caller about to start a sync waits for it (see the module's text).
    pub(crate) fn arriving(&self) -> Arrival<'_> {
        if self.grouped {
            self.rounds().announced += 1;
        }
        Arrival {
            group: self,
            counted: self.grouped,
        }
    }

    fn rounds(&self) -> MutexGuard<'_, Rounds> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns once a sync of the directory that started after this call began has
    /// succeeded, with no failed one since: what the caller renamed into it before the call
    /// is then durable. The error is the last failed sync's.
    pub(crate) fn sync_after(&self) -> io::Result<()> {
        self.sync_after_noting(|_| ())
    }

    /// The round a sync must have to cover a change made to the directory now; see
    /// [`GroupSync::settled`]. `None` without grouping, where no rounds are kept.
    pub(crate) fn round_after_now(&self) -> Option<u64> {
        self.grouped.then(|| self.rounds().needed())
    }

    /// Whether the change made to the directory when round `needed` was the next (from
    /// [`GroupSync::round_after_now`]) is durable: `Some(true)` once that round ended with
    /// no failed sync since; `Some(false)` once a sync from that round on failed, which no
    /// later success makes good; `None` while it is not known yet.
    pub(crate) fn settled(&self, needed: u64) -> Option<bool> {
        self.rounds().outcome(needed).map(|result| result.is_ok())
    }

    /// [`GroupSync::sync_after`], calling `entered` with the round needed as the call
    /// takes it (0 without grouping), before any sync it may start (for the tests' logs).
    fn sync_after_noting(&self, entered: impl FnOnce(u64)) -> io::Result<()> {
        self.sync_after_arriving(false, entered)
    }

    /// [`GroupSync::sync_after_noting`] for a caller that, when `arriving`, ends its
    /// announced commit as it takes its round.
    fn sync_after_arriving(&self, arriving: bool, entered: impl FnOnce(u64)) -> io::Result<()> {
        if !self.grouped {
            entered(0);
            return (self.sync)(&self.dir);
        }
        let mut rounds = self.rounds();
        if arriving {
            rounds.arrived += 1;
            self.ended.notify_all();
        }
        let needed = rounds.needed();
        entered(needed);
        // The commits under way when this caller first finds no sync in flight, and how
        // long it waits for them at most.
        let mut company: Option<(u64, Instant)> = None;
        loop {
            if let Some(result) = rounds.outcome(needed) {
                return result;
            }
            if rounds.started == rounds.ended {
                let (announced, since) =
                    *company.get_or_insert_with(|| (rounds.announced, Instant::now()));
                let left = self.company_wait.saturating_sub(since.elapsed());
                if rounds.arrived < announced && !left.is_zero() {
                    rounds = self
                        .ended
                        .wait_timeout(rounds, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    continue;
                }
            }
            if let Some(round) = rounds.begin() {
                // None was in flight: this caller runs the next, for everyone waiting.
                drop(rounds);
                let guard = RoundGuard { group: self, round };
                let result = (self.sync)(&self.dir);
                std::mem::forget(guard);
                rounds = self.rounds();
                rounds.end(round, result.as_ref().map_err(Some).copied());
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
        /// Caller `n` entered, needing round `needed` (0 without grouping); logged as the
        /// call takes the round, so no sync can start between the two.
        Called(usize, u64),
        Returned(usize),
    }

    /// A stand-in sync that logs its start, then blocks until the test lets it end (one
    /// message on `gate` per sync), then fails (or panics) when the test said so.
    struct Harness {
        log: Arc<Mutex<Vec<Event>>>,
        gate: Mutex<mpsc::Sender<()>>,
        sync: Arc<GroupSync>,
    }

    fn harness(grouped: bool, fail: Vec<usize>) -> Harness {
        harness_panicking(grouped, fail, vec![])
    }

    fn harness_panicking(grouped: bool, fail: Vec<usize>, panics: Vec<usize>) -> Harness {
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
            if panics.contains(&n) {
                panic!("stand-in sync {n} panics");
            }
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
            thread::spawn(move || {
                let r = sync.sync_after_noting(|needed| {
                    log.lock().unwrap().push(Event::Called(n, needed));
                });
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

        /// Waits until callers `callers` have all taken the round they need.
        fn wait_entered(&self, callers: &[usize]) {
            for _ in 0..1000 {
                let events = self.events();
                let entered = |n: &usize| {
                    events
                        .iter()
                        .any(|e| matches!(e, Event::Called(c, _) if c == n))
                };
                if callers.iter().all(entered) {
                    return;
                }
                thread::sleep(Duration::from_millis(5));
            }
            panic!("callers {callers:?} never entered: {:?}", self.events());
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

    /// Every caller returned only after a sync that started after its call had ended: the
    /// round it needed or a later one (syncs and rounds share their numbers when grouped).
    fn assert_covered(events: &[Event]) {
        for (i, e) in events.iter().enumerate() {
            let Event::Returned(n) = e else { continue };
            let (called, needed) = events
                .iter()
                .enumerate()
                .find_map(|(at, e)| match e {
                    Event::Called(c, needed) if c == n => Some((at, *needed)),
                    _ => None,
                })
                .unwrap();
            let covered = events[called..i].iter().any(|e| match e {
                Event::SyncEnd(s) => {
                    *s as u64 >= needed && events[called..].contains(&Event::SyncStart(*s))
                }
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
                Event::Called(1, 1),
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
        h.wait_entered(&[2, 3, 4]);
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
        h.wait_entered(&[2, 3]);
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

    /// The race no thread schedule can force: sync 2 fails, and sync 3 (started by a later
    /// caller) succeeds before caller 2, who needed sync 2, wakes to look.
    #[test]
    fn a_failed_sync_is_not_made_good_by_a_later_success() {
        let mut rounds = Rounds::default();
        assert_eq!(rounds.begin(), Some(1));
        rounds.end(1, Ok(()));
        let caller_2 = rounds.needed();
        assert_eq!(rounds.begin(), Some(caller_2));
        assert_eq!(rounds.begin(), None, "one in flight at a time");
        rounds.end(caller_2, Err(Some(&io::Error::from_raw_os_error(5))));
        let caller_3 = rounds.needed();
        assert_eq!(rounds.begin(), Some(caller_3));
        assert!(rounds.outcome(caller_3).is_none(), "sync 3 is in flight");
        rounds.end(caller_3, Ok(()));
        let late = rounds.outcome(caller_2).unwrap().unwrap_err();
        assert_eq!(late.raw_os_error(), Some(5));
        assert!(rounds.outcome(caller_3).unwrap().is_ok());
        // A caller of round 1 that looks only after the failure is failed too: the safe
        // side (a 4xx), and only ever when a sync failed.
        assert_eq!(
            rounds.outcome(1).unwrap().unwrap_err().raw_os_error(),
            Some(5)
        );
    }

    #[test]
    fn a_sync_that_panics_ends_its_round_and_later_callers_go_on() {
        let h = harness_panicking(true, vec![], vec![1]);
        let first = h.call(1);
        h.wait_syncs(1);
        let second = h.call(2);
        // Caller 2 waits for sync 1 to end before it starts sync 2.
        h.wait_entered(&[2]);
        h.release();
        assert!(first.join().is_err(), "caller 1's sync panicked");
        h.wait_syncs(2);
        h.release();
        let (done_tx, done_rx) = mpsc::channel();
        thread::spawn(move || done_tx.send(second.join().unwrap().is_ok()));
        // Only a hang makes this wait run out.
        let ok = done_rx.recv_timeout(Duration::from_secs(60));
        assert_eq!(ok, Ok(true), "{:?}", h.events());
        assert_covered(&h.events());
    }

    /// A harness whose callers wait at most `company_wait` for commits under way.
    fn harness_waiting(company_wait: Duration) -> Harness {
        let mut h = harness(true, vec![]);
        Arc::get_mut(&mut h.sync).unwrap().company_wait = company_wait;
        h
    }

    /// A commit under way on a thread of its own, announced before this returns; sent
    /// `true`, it renamed and asks for its sync; `false`, it gives up.
    fn under_way(h: &Harness) -> (mpsc::Sender<bool>, thread::JoinHandle<io::Result<()>>) {
        let (announced_tx, announced_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<bool>();
        let sync = h.sync.clone();
        let t = thread::spawn(move || {
            let arrival = sync.arriving();
            announced_tx.send(()).unwrap();
            match go_rx.recv() {
                Ok(true) => arrival.sync_after(),
                _ => Ok(()),
            }
        });
        announced_rx.recv().unwrap();
        (go_tx, t)
    }

    fn syncs(h: &Harness) -> usize {
        h.events()
            .iter()
            .filter(|e| matches!(e, Event::SyncStart(_)))
            .count()
    }

    #[test]
    fn a_sync_about_to_start_waits_for_a_commit_under_way_and_one_sync_serves_both() {
        let h = harness_waiting(Duration::from_secs(60));
        let (go, other) = under_way(&h);
        let first = h.call(1);
        h.wait_entered(&[1]);
        thread::sleep(Duration::from_millis(100));
        assert_eq!(syncs(&h), 0, "{:?}", h.events());
        go.send(true).unwrap();
        h.wait_syncs(1);
        h.release();
        first.join().unwrap().unwrap();
        other.join().unwrap().unwrap();
        assert_eq!(syncs(&h), 1, "{:?}", h.events());
        assert_covered(&h.events());
    }

    #[test]
    fn a_commit_that_gives_up_lets_the_sync_start_at_once() {
        let h = harness_waiting(Duration::from_secs(60));
        let (go, other) = under_way(&h);
        let first = h.call(1);
        h.wait_entered(&[1]);
        go.send(false).unwrap();
        other.join().unwrap().unwrap();
        h.wait_syncs(1);
        h.release();
        first.join().unwrap().unwrap();
        assert_eq!(syncs(&h), 1);
    }

    /// A disk that stalls one commit's file sync holds the others' directory sync back
    /// for the bound only.
    #[test]
    fn a_commit_that_never_arrives_holds_a_sync_back_for_the_bound_only() {
        let h = harness_waiting(Duration::from_millis(200));
        let (go, other) = under_way(&h);
        let began = Instant::now();
        let first = h.call(1);
        h.wait_syncs(1);
        assert!(began.elapsed() >= Duration::from_millis(200));
        h.release();
        first.join().unwrap().unwrap();
        // It arrives at last: its own sync, after the first.
        go.send(true).unwrap();
        h.wait_syncs(2);
        h.release();
        other.join().unwrap().unwrap();
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
