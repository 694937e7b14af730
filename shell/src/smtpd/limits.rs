//! Concurrent session counts, overall and per client address (the part of Postfix's anvil
//! and master process limit that certrelay needs), and the stress state that follows from
//! them.
//!
//! When a connection comes and every session slot is taken, the session idle longest among
//! those with no mail transaction under way gives way to it (each session publishes since
//! when it is idle in its [`Activity`]; sessions inside a TLS handshake count as idle since
//! their STARTTLS). Only when every session has reached MAIL FROM is the connection refused.
//! So idle connections, however many, cannot keep out a client that sends mail.
//!
//! From then on the server is also under stress, until the count falls back to three
//! quarters of the limit. Every session that sees the stress waits at most
//! [`STRESS_TIMEOUT`] for each command from then on (Postfix's stress-mode
//! `smtpd_timeout`), so that clients that hold a connection and say nothing give way to
//! clients that send mail.

use certrelay_core::Instant;
use event_listener::{Event, EventListener};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long a session may wait for the client while the server is under stress.
pub const STRESS_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// As many sessions as the relay takes are running.
    Overall {
        /// The sessions running.
        active: usize,
    },
    /// This client already has as many sessions as it may.
    Client {
        /// Its sessions counting this one.
        count: usize,
    },
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
    /// The overall limit as of the last admission (it changes on reload).
    limit: usize,
    /// The sessions counted, by admission number (oldest first).
    running: BTreeMap<u64, Running>,
    next_id: u64,
    /// Connections refused by a limit since the start (for `status`).
    refused: u64,
    /// Sessions that gave way to a new connection since the start (for `status`).
    displaced: u64,
}

/// A session being counted.
#[derive(Debug)]
struct Running {
    client: IpAddr,
    activity: Arc<Activity>,
}

/// A `u64` that one session writes and the counts read, each whole: an `AtomicU64` where the
/// target has one, else under a mutex (32-bit MIPS and PowerPC have no 64-bit atomics;
/// milliseconds do not fit 32 bits: they wrap after 49 days).
#[cfg(target_has_atomic = "64")]
#[derive(Debug)]
struct SharedU64(std::sync::atomic::AtomicU64);

#[cfg(target_has_atomic = "64")]
impl SharedU64 {
    fn new(v: u64) -> Self {
        SharedU64(std::sync::atomic::AtomicU64::new(v))
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

#[cfg(not(target_has_atomic = "64"))]
#[derive(Debug)]
struct SharedU64(Mutex<u64>);

#[cfg(not(target_has_atomic = "64"))]
impl SharedU64 {
    fn new(v: u64) -> Self {
        SharedU64(Mutex::new(v))
    }

    fn get(&self) -> u64 {
        // A store cannot panic half-way: the value is whole whatever a poisoner did.
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, v: u64) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = v;
    }
}

/// `idle_since` of a session with a mail transaction under way.
const BUSY: u64 = u64::MAX;

/// What one session tells the counts (since when it is idle), and how it is told to give
/// way to a new connection.
#[derive(Debug)]
pub struct Activity {
    /// Milliseconds of the sessions' clock, or [`BUSY`].
    idle_since: SharedU64,
    displaced: AtomicBool,
    event: Event,
}

impl Activity {
    fn new(now: Instant) -> Self {
        Activity {
            idle_since: SharedU64::new(now.as_millis()),
            displaced: AtomicBool::new(false),
            event: Event::new(),
        }
    }

    /// Since when the session is idle; `None` while it has a mail transaction under way
    /// (it never gives way then).
    pub fn set_idle_since(&self, since: Option<Instant>) {
        let ms = since.map_or(BUSY, |t| t.as_millis().min(BUSY - 1));
        self.idle_since.set(ms);
    }

    /// True once the session must give way.
    pub fn is_displaced(&self) -> bool {
        self.displaced.load(Ordering::Acquire)
    }

    /// A future that completes when the session must give way. Take it before reading
    /// [`Activity::is_displaced`], so that no notice falls between the two.
    pub fn displaced(&self) -> EventListener {
        self.event.listen()
    }

    fn displace(&self) {
        self.displaced.store(true, Ordering::Release);
        self.event.notify(usize::MAX);
    }
}

impl Counts {
    fn uncount(&mut self, client: IpAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_client.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&client);
            }
        }
    }

    /// Makes room for `needed` sessions by telling the longest idle ones to give way; false
    /// (and nobody told) when too few are idle.
    fn displace_idle(&mut self, needed: usize) -> bool {
        let mut idle: Vec<(u64, u64)> = self
            .running
            .iter()
            .map(|(id, r)| (r.activity.idle_since.get(), *id))
            .filter(|(since, _)| *since != BUSY)
            .collect();
        if idle.len() < needed {
            return false;
        }
        idle.sort_unstable();
        for (_, id) in idle.into_iter().take(needed) {
            if let Some(r) = self.running.remove(&id) {
                self.uncount(r.client);
                r.activity.displace();
            }
        }
        true
    }
}

/// The stress state: changed under the counts' lock, read without it on every command.
#[derive(Debug, Default)]
struct Stress {
    on: AtomicBool,
    changed: Event,
}

impl Stress {
    fn set(&self, on: bool) -> bool {
        let was = self.on.swap(on, Ordering::Relaxed);
        if was != on {
            self.changed.notify(usize::MAX);
        }
        was != on
    }
}

/// The shared counters. Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct Sessions {
    counts: Arc<Mutex<Counts>>,
    stress: Arc<Stress>,
    /// Connections still reading a balancer's PROXY header: not sessions yet (the client
    /// the header names is not known), but each holds a socket and a task.
    awaiting_header: Arc<std::sync::atomic::AtomicUsize>,
}

/// A connection counted while it reads its PROXY header; dropping it ends the count.
#[derive(Debug)]
pub struct AwaitingHeader(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for AwaitingHeader {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Sessions {
    /// Counts a connection that reads its PROXY header, unless `limit` of them (0: no limit)
    /// do already: then `Err` with that number, and the connection is to be closed.
    pub fn await_header(&self, limit: usize) -> Result<AwaitingHeader, usize> {
        use std::sync::atomic::Ordering;
        let before = self.awaiting_header.fetch_add(1, Ordering::Relaxed);
        let guard = AwaitingHeader(self.awaiting_header.clone());
        if limit != 0 && before >= limit {
            return Err(before);
        }
        Ok(guard)
    }
}

/// A session being counted; dropping it ends the count.
#[derive(Debug)]
pub struct Slot {
    sessions: Sessions,
    client: IpAddr,
    id: u64,
    activity: Arc<Activity>,
}

impl Slot {
    /// The counts this slot is part of (for the stress state).
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Where the session says since when it is idle, and hears that it must give way.
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, Counts> {
        // A panic elsewhere cannot leave the counts half-updated: each update is one step.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new session from `client`, arriving `now`, unless a limit is reached.
    /// `client_limit` 0 means no per-client limit (also used for exempt clients). With every
    /// slot taken, the longest idle sessions without a mail transaction give way to it; it
    /// is refused only when there are none.
    pub fn enter(
        &self,
        client: IpAddr,
        overall: usize,
        client_limit: usize,
        now: Instant,
    ) -> Result<Slot, Refusal> {
        let mut c = self.lock();
        c.limit = overall;
        let mine = c.per_client.get(&client).copied().unwrap_or(0);
        if client_limit > 0 && mine >= client_limit {
            c.refused += 1;
            return Err(Refusal::Client { count: mine + 1 });
        }
        if overall > 0 && c.total >= overall {
            if self.stress.set(true) {
                log::warn!(
                    "all {overall} sessions in use: the longest idle gives way to each new \
                     connection, and idle clients now get {}s to send a command",
                    STRESS_TIMEOUT.as_secs()
                );
            }
            let needed = c.total + 1 - overall;
            if !c.displace_idle(needed) {
                c.refused += 1;
                return Err(Refusal::Overall { active: c.total });
            }
            c.displaced += needed as u64;
        }
        let mine = c.per_client.get(&client).copied().unwrap_or(0);
        c.total += 1;
        c.per_client.insert(client, mine + 1);
        let id = c.next_id;
        c.next_id += 1;
        let activity = Arc::new(Activity::new(now));
        let running = Running {
            client,
            activity: activity.clone(),
        };
        c.running.insert(id, running);
        Ok(Slot {
            sessions: self.clone(),
            client,
            id,
            activity,
        })
    }

    /// Sessions running now.
    pub fn active(&self) -> usize {
        self.lock().total
    }

    /// True while the server is under stress (every slot was taken; see the module notes).
    pub fn under_stress(&self) -> bool {
        self.stress.on.load(Ordering::Relaxed)
    }

    /// Connections refused by a limit, and sessions that gave way to a new connection,
    /// since the start.
    pub fn refused_and_displaced(&self) -> (u64, u64) {
        let c = self.lock();
        (c.refused, c.displaced)
    }

    /// The cap on a session's command timeout now: [`STRESS_TIMEOUT`] under stress.
    pub fn timeout_cap(&self) -> Option<Duration> {
        self.stress
            .on
            .load(Ordering::Relaxed)
            .then_some(STRESS_TIMEOUT)
    }

    /// A future that completes at the next change of the stress state. Take it before
    /// reading [`Sessions::timeout_cap`], so that no change falls between the two.
    pub fn stress_changed(&self) -> EventListener {
        self.stress.changed.listen()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.sessions.lock();
        // A session that gave way was uncounted then.
        if c.running.remove(&self.id).is_some() {
            c.uncount(self.client);
        }
        if c.total * 4 <= c.limit * 3 && self.sessions.stress.set(false) {
            log::info!("{} of {} sessions in use: stress over", c.total, c.limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn ips(n: u8) -> Vec<IpAddr> {
        (1..=n)
            .map(|i| format!("192.0.2.{i}").parse().unwrap())
            .collect()
    }

    #[test]
    fn limits_apply_and_release() {
        let s = Sessions::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = s.enter(a, 3, 2, at(0)).unwrap();
        let a2 = s.enter(a, 3, 2, at(0)).unwrap();
        assert_eq!(
            s.enter(a, 3, 2, at(0)).unwrap_err(),
            Refusal::Client { count: 3 }
        );
        let b1 = s.enter(b, 3, 2, at(0)).unwrap();
        // Every session has a mail transaction under way: nobody gives way.
        for slot in [&a1, &a2, &b1] {
            slot.activity().set_idle_since(None);
        }
        assert_eq!(
            s.enter(b, 3, 2, at(0)).unwrap_err(),
            Refusal::Overall { active: 3 }
        );
        assert!(!a1.activity().is_displaced());
        assert_eq!(s.active(), 3);
        assert_eq!(
            s.refused_and_displaced(),
            (2, 0),
            "one per-client, one overall"
        );
        drop(a1);
        assert_eq!(s.active(), 2);
        let _a3 = s.enter(a, 3, 2, at(0)).unwrap();
        // 0: no per-client limit.
        drop(_a3);
        let _x = s.enter(a, 0, 0, at(0)).unwrap();
        assert_eq!(s.active(), 3);
    }

    #[test]
    fn with_every_slot_taken_the_longest_idle_session_gives_way() {
        let s = Sessions::default();
        let ip = ips(6);
        let slots: Vec<Slot> = (0..4)
            .map(|i| s.enter(ip[i], 4, 0, at(i as u64)).unwrap())
            .collect();
        // 0 sends mail; 1 was idle longest then; 2 and 3 worked since.
        slots[0].activity().set_idle_since(None);
        slots[2].activity().set_idle_since(Some(at(50)));
        slots[3].activity().set_idle_since(Some(at(60)));
        let mut told = slots[1].activity().displaced();
        let new = s.enter(ip[4], 4, 0, at(100)).unwrap();
        assert!(slots[1].activity().is_displaced());
        assert!(smol::future::block_on(smol::future::poll_once(&mut told)).is_some());
        assert!(slots
            .iter()
            .enumerate()
            .all(|(i, slot)| slot.activity().is_displaced() == (i == 1)));
        assert_eq!(s.active(), 4, "the one giving way is no longer counted");
        assert_eq!(s.refused_and_displaced(), (0, 1));
        assert!(s.under_stress());
        // Its end does not count it out twice.
        let mut slots = slots;
        drop(slots.remove(1));
        assert_eq!(s.active(), 4);
        // Next: the oldest of the idle ones left, the new connection included.
        new.activity().set_idle_since(Some(at(100)));
        let _newer = s.enter(ip[5], 4, 0, at(110)).unwrap();
        assert!(slots[1].activity().is_displaced(), "idle since 50");
        assert!(!new.activity().is_displaced());
        assert_eq!(s.active(), 4);
    }

    #[test]
    fn stress_begins_when_full_and_ends_at_three_quarters() {
        let s = Sessions::default();
        let ips = ips(5);
        let mut slots: Vec<Slot> = ips[..4]
            .iter()
            .map(|ip| s.enter(*ip, 4, 0, at(0)).unwrap())
            .collect();
        for slot in &slots {
            slot.activity().set_idle_since(None);
        }
        assert_eq!(s.timeout_cap(), None);
        let mut changed = s.stress_changed();
        assert!(s.enter(ips[4], 4, 0, at(0)).is_err());
        assert_eq!(s.timeout_cap(), Some(STRESS_TIMEOUT));
        assert!(smol::future::block_on(smol::future::poll_once(&mut changed)).is_some());
        // 3 of 4 is three quarters: over.
        let mut changed = s.stress_changed();
        slots.pop();
        assert_eq!(s.timeout_cap(), None);
        assert!(smol::future::block_on(smol::future::poll_once(&mut changed)).is_some());
        // A refusal by the per-client limit is not stress.
        let _again = s.enter(ips[0], 4, 1, at(0));
        assert_eq!(s.timeout_cap(), None);
    }
}
