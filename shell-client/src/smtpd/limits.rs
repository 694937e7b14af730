//! Concurrent session counts, overall and per client address (the part of Postfix's anvil
//! and master process limit that certrelay needs).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

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
}

/// The shared counters. Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct Sessions {
    counts: Arc<Mutex<Counts>>,
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
        if overall > 0 && c.total >= overall {
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
}
