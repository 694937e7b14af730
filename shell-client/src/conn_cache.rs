//! Idle SMTP connections kept for a moment after a delivery, for the next delivery to the
//! same server (Postfix's connection cache, with its default of 2 s): under steady mail
//! each message then costs one transaction, not a TCP connection, a greeting, an EHLO and
//! a TLS handshake.

use crate::smtp_conn::SmtpConnection;
use smol::Timer;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long an idle connection is kept.
pub const CACHE_TIME: Duration = Duration::from_secs(2);

/// At most this many idle connections are kept; more are closed at once.
const CAPACITY: usize = 32;

struct Parked {
    key: String,
    token: u64,
    conn: SmtpConnection,
}

/// The shared cache. Cloning shares it.
#[derive(Clone, Default)]
pub struct ConnectionCache {
    parked: Arc<Mutex<Vec<Parked>>>,
    tokens: Arc<AtomicU64>,
}

impl ConnectionCache {
    /// An idle connection for `key` (server and TLS level), the most recently parked
    /// first: it is the least likely to have been closed by the server.
    pub fn take(&self, key: &str) -> Option<SmtpConnection> {
        let mut parked = self.lock();
        let at = parked.iter().rposition(|p| p.key == key)?;
        Some(parked.remove(at).conn)
    }

    /// Keeps `conn`, ready for a message, for [`CACHE_TIME`]; then it says QUIT.
    pub fn park(&self, key: String, conn: SmtpConnection) {
        let token = self.tokens.fetch_add(1, Ordering::Relaxed);
        {
            let mut parked = self.lock();
            if parked.len() >= CAPACITY {
                drop(parked);
                smol::spawn(async move {
                    conn.quit().await;
                })
                .detach();
                return;
            }
            parked.push(Parked { key, token, conn });
        }
        let cache = self.clone();
        smol::spawn(async move {
            Timer::after(CACHE_TIME).await;
            let expired = {
                let mut parked = cache.lock();
                let at = parked.iter().position(|p| p.token == token);
                at.map(|at| parked.remove(at).conn)
            };
            if let Some(conn) = expired {
                conn.quit().await;
            }
        })
        .detach();
    }

    /// Says QUIT on every idle connection (at shutdown).
    pub async fn close_all(&self) {
        let all: Vec<Parked> = std::mem::take(&mut *self.lock());
        for p in all {
            p.conn.quit().await;
        }
    }

    /// Idle connections held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Parked>> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }
}
