//! The shell's two clocks: a monotonic one for the sessions' timers, the wall clock for the
//! queue records (unix seconds survive a restart; monotonic readings do not).

use certrelay_core::Instant;
use std::time::{SystemTime, UNIX_EPOCH};

/// A monotonic clock whose readings are the core's [`Instant`]s.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    /// A clock whose origin is now.
    pub fn new() -> Clock {
        Clock {
            origin: std::time::Instant::now(),
        }
    }

    /// Milliseconds since the origin, as the core counts time.
    pub fn now(&self) -> Instant {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        Instant::from_millis(ms)
    }

    /// A core deadline on the system's monotonic clock, for timers.
    pub fn at(&self, deadline: Instant) -> std::time::Instant {
        self.origin + std::time::Duration::from_millis(deadline.as_millis())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// The wall clock in unix milliseconds (zero if the clock is before 1970).
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The wall clock in unix seconds.
pub fn unix_secs() -> u64 {
    unix_millis() / 1000
}
