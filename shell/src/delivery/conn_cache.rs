//! Idle SMTP connections kept for a moment after a delivery, for the next delivery to the
//! same server (Postfix's connection cache, with its default of 2 s): under steady mail
//! each message then costs one transaction, not a TCP connection, a greeting, an EHLO and
//! a TLS handshake.

use crate::delivery::connection::SmtpConnection;
use smol::Timer;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an idle connection is kept.
pub const CACHE_TIME: Duration = Duration::from_secs(2);

/// At most this many idle connections are kept; more are closed at once.
const CAPACITY: usize = 32;

struct Parked {
    key: String,
    since: Instant,
    conn: SmtpConnection,
}

#[derive(Default)]
struct State {
    parked: Vec<Parked>,
    /// Whether a sweeper task is running (one at most, only while something is parked).
    sweeping: bool,
}

/// The shared cache. Cloning shares it.
#[derive(Clone, Default)]
pub struct ConnectionCache {
    state: Arc<Mutex<State>>,
}

impl ConnectionCache {
    /// An idle connection for `key` (server and TLS level), the most recently parked
    /// first: it is the least likely to have been closed by the server.
    pub fn take(&self, key: &str) -> Option<SmtpConnection> {
        let mut state = self.lock();
        let at = state.parked.iter().rposition(|p| p.key == key)?;
        Some(state.parked.remove(at).conn)
    }

    /// Keeps `conn`, ready for a message, for about [`CACHE_TIME`]; then it says QUIT.
    pub fn park(&self, key: String, conn: SmtpConnection) {
        let mut state = self.lock();
        if state.parked.len() >= CAPACITY {
            drop(state);
            smol::spawn(async move {
                conn.quit().await;
            })
            .detach();
            return;
        }
        state.parked.push(Parked {
            key,
            since: Instant::now(),
            conn,
        });
        if !state.sweeping {
            state.sweeping = true;
            smol::spawn(self.clone().sweep()).detach();
        }
    }

    /// Closes connections idle for [`CACHE_TIME`], checking a few times per period, and
    /// ends when nothing is left: one task for the whole cache, not one per connection.
    async fn sweep(self) {
        loop {
            Timer::after(CACHE_TIME / 4).await;
            let (expired, done): (Vec<Parked>, bool) = {
                let mut state = self.lock();
                let (old, keep) = std::mem::take(&mut state.parked)
                    .into_iter()
                    .partition(|p| p.since.elapsed() >= CACHE_TIME);
                state.parked = keep;
                // A later park starts a new sweeper.
                state.sweeping = !state.parked.is_empty();
                (old, !state.sweeping)
            };
            for p in expired {
                p.conn.quit().await;
            }
            if done {
                return;
            }
        }
    }

    /// Says QUIT on every idle connection (at shutdown).
    pub async fn close_all(&self) {
        let all: Vec<Parked> = std::mem::take(&mut self.lock().parked);
        for p in all {
            p.conn.quit().await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
