//! Concurrent session counts, overall and per client address (the part of Postfix's anvil
//! and master process limit that certrelay needs), and the stress state that follows from
//! them.
//!
//! When a connection is refused because every session slot is taken, the server is under
//! stress until the count falls back to three quarters of the limit. Every session that
//! sees the stress waits at most [`STRESS_TIMEOUT`] for each command from then on
//! (Postfix's stress-mode `smtpd_timeout`), so that clients that hold a connection and say
//! nothing give way to clients that send mail.

use event_listener::{Event, EventListener};
use std::collections::HashMap;
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
}

/// A session being counted; dropping it ends the count.
#[derive(Debug)]
pub struct Slot {
    sessions: Sessions,
    client: IpAddr,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, Counts> {
        // A panic elsewhere cannot leave the counts half-updated: each update is one step.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new session from `client`, unless a limit is reached. `client_limit` 0 means
    /// no per-client limit (also used for exempt clients).
    pub fn enter(
        &self,
        client: IpAddr,
        overall: usize,
        client_limit: usize,
    ) -> Result<Slot, Refusal> {
        let mut c = self.lock();
        c.limit = overall;
        if overall > 0 && c.total >= overall {
            if self.stress.set(true) {
                log::warn!(
                    "all {overall} sessions in use: idle clients now get {}s to send a command",
                    STRESS_TIMEOUT.as_secs()
                );
            }
            return Err(Refusal::Overall { active: c.total });
        }
        let mine = c.per_client.get(&client).copied().unwrap_or(0);
        if client_limit > 0 && mine >= client_limit {
            return Err(Refusal::Client { count: mine + 1 });
        }
        c.total += 1;
        c.per_client.insert(client, mine + 1);
        Ok(Slot {
            sessions: self.clone(),
            client,
        })
    }

    /// Sessions running now.
    pub fn active(&self) -> usize {
        self.lock().total
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
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                c.per_client.remove(&self.client);
            }
        }
        if c.total * 4 <= c.limit * 3 && self.sessions.stress.set(false) {
            log::info!("{} of {} sessions in use: stress over", c.total, c.limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_apply_and_release() {
        let s = Sessions::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = s.enter(a, 3, 2).unwrap();
        let _a2 = s.enter(a, 3, 2).unwrap();
        assert_eq!(s.enter(a, 3, 2).unwrap_err(), Refusal::Client { count: 3 });
        let _b1 = s.enter(b, 3, 2).unwrap();
        assert_eq!(
            s.enter(b, 3, 2).unwrap_err(),
            Refusal::Overall { active: 3 }
        );
        assert_eq!(s.active(), 3);
        drop(a1);
        assert_eq!(s.active(), 2);
        let _a3 = s.enter(a, 3, 2).unwrap();
        // 0: no per-client limit.
        drop(_a3);
        let _x = s.enter(a, 0, 0).unwrap();
        assert_eq!(s.active(), 3);
    }

    #[test]
    fn stress_begins_when_full_and_ends_at_three_quarters() {
        let s = Sessions::default();
        let ips: Vec<IpAddr> = (1..=5)
            .map(|i| format!("192.0.2.{i}").parse().unwrap())
            .collect();
        let mut slots: Vec<Slot> = ips[..4]
            .iter()
            .map(|ip| s.enter(*ip, 4, 0).unwrap())
            .collect();
        assert_eq!(s.timeout_cap(), None);
        let mut changed = s.stress_changed();
        assert!(s.enter(ips[4], 4, 0).is_err());
        assert_eq!(s.timeout_cap(), Some(STRESS_TIMEOUT));
        assert!(smol::future::block_on(smol::future::poll_once(&mut changed)).is_some());
        // 3 of 4 is three quarters: over.
        let mut changed = s.stress_changed();
        slots.pop();
        assert_eq!(s.timeout_cap(), None);
        assert!(smol::future::block_on(smol::future::poll_once(&mut changed)).is_some());
        // A refusal by the per-client limit is not stress.
        let _again = s.enter(ips[0], 4, 1);
        assert_eq!(s.timeout_cap(), None);
    }
}
