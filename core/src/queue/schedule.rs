//! When to try again, and when to give up.
//!
//! The wait before the next attempt grows with the message's age, between a floor and a
//! ceiling: a message that just failed is retried soon, one that has failed for a day no more
//! than about once an hour. Past the queue lifetime the remaining recipients are bounced.

use super::envelope::{Envelope, RecipientState};
use core::time::Duration;

/// Retry and lifetime settings (Postfix parameter names in the field docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetrySettings {
    /// `minimal_backoff_time` (300s): the shortest wait between attempts.
    pub minimal_backoff: Duration,
    /// `maximal_backoff_time` (4000s): the longest wait between attempts.
    pub maximal_backoff: Duration,
    /// `queue_run_delay` (300s): how often the shell scans the queue for due messages.
    pub queue_run_delay: Duration,
    /// `maximal_queue_lifetime` (5d): after this age, remaining recipients are bounced.
    pub maximal_queue_lifetime: Duration,
    /// `bounce_queue_lifetime` (5d): the same for bounces, which are then dropped.
    pub bounce_queue_lifetime: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        RetrySettings {
            minimal_backoff: Duration::from_secs(300),
            maximal_backoff: Duration::from_secs(4000),
            queue_run_delay: Duration::from_secs(300),
            maximal_queue_lifetime: Duration::from_secs(5 * DAY),
            bounce_queue_lifetime: Duration::from_secs(5 * DAY),
        }
    }
}

impl RetrySettings {
    /// The lifetime that applies to a message (bounces have their own).
    pub fn lifetime(&self, is_bounce: bool) -> u64 {
        let d = if is_bounce {
            self.bounce_queue_lifetime
        } else {
            self.maximal_queue_lifetime
        };
        d.as_secs()
    }
}

/// The unix second of the next attempt for a message that arrived at `arrival` and just
/// failed at `now`: `now + clamp(age, minimal_backoff, maximal_backoff)`.
///
/// A ceiling below the floor (a misconfiguration) yields the floor rather than a panic.
pub fn next_attempt(arrival: u64, now: u64, settings: &RetrySettings) -> u64 {
    let floor = settings.minimal_backoff.as_secs();
    let ceiling = settings.maximal_backoff.as_secs().max(floor);
    let age = now.saturating_sub(arrival);
    now.saturating_add(age.clamp(floor, ceiling))
}

/// What [`Envelope::finish_attempt`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptEnd {
    /// Nothing remains: send the bounce if one is wanted, then delete the message.
    Done,
    /// Some recipients remain; try again at this unix second.
    RetryAt(u64),
    /// The queue lifetime ran out: the remaining recipients (this many) are now bounced and
    /// the message is done.
    Expired(usize),
}

impl Envelope {
    /// Closes an attempt made at `now`: counts it, then schedules the next one or, when the
    /// message has outlived its lifetime, bounces what remains.
    ///
    /// Expired recipients keep the status and reason of their last temporary failure, so the
    /// bounce report says why delivery never succeeded.
    pub fn finish_attempt(&mut self, now: u64, settings: &RetrySettings) -> AttemptEnd {
        self.attempts = self.attempts.saturating_add(1);
        if self.is_done() {
            return AttemptEnd::Done;
        }
        if self.age(now) >= settings.lifetime(self.is_bounce) {
            return AttemptEnd::Expired(self.expire());
        }
        self.next_attempt = next_attempt(self.arrival, now, settings);
        AttemptEnd::RetryAt(self.next_attempt)
    }

    /// True when the message has outlived its lifetime at `now`, whether or not an attempt
    /// is due (the shell can expire such messages without another attempt).
    pub fn is_expired(&self, now: u64, settings: &RetrySettings) -> bool {
        !self.is_done() && self.age(now) >= settings.lifetime(self.is_bounce)
    }

    /// Bounces every remaining recipient; returns how many.
    pub fn expire(&mut self) -> usize {
        let mut n = 0;
        for r in self
            .recipients
            .iter_mut()
            .filter(|r| r.state.is_remaining())
        {
            r.state = RecipientState::Bounced;
            if r.dsn.is_empty() {
                // Never tried (e.g. the queue was stopped): "delivery time expired".
                r.dsn = "4.4.7".into();
            }
            if r.reason.is_empty() {
                r.reason = "message expired before any delivery attempt".into();
            }
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{QueueId, Recipient, Verdict};
    use alloc::vec;

    #[test]
    fn retry_schedule_table() {
        let s = RetrySettings::default();
        let arrival = 1_000_000;
        // (age at failure, expected wait)
        let table = [
            (0, 300),
            (1, 300),
            (299, 300),
            (300, 300),
            (301, 301),
            (1800, 1800),
            (3999, 3999),
            (4000, 4000),
            (4001, 4000),
            (86_400, 4000),
            (5 * 86_400, 4000),
        ];
        for (age, wait) in table {
            let now = arrival + age;
            assert_eq!(next_attempt(arrival, now, &s), now + wait, "age {age}");
        }
        // Clock went backwards: age counts as zero.
        assert_eq!(next_attempt(arrival, arrival - 10, &s), arrival - 10 + 300);
        // Saturates instead of overflowing.
        assert_eq!(next_attempt(0, u64::MAX, &s), u64::MAX);
        // Ceiling below floor: the floor wins.
        let odd = RetrySettings {
            maximal_backoff: Duration::from_secs(10),
            ..s
        };
        assert_eq!(
            next_attempt(arrival, arrival + 9999, &odd),
            arrival + 9999 + 300
        );
    }

    fn envelope(arrival: u64) -> Envelope {
        Envelope::new(
            QueueId::generate(arrival, 1),
            "a@example.org",
            arrival,
            vec![
                Recipient::new("b@example.net"),
                Recipient::new("c@example.net"),
            ],
        )
    }

    #[test]
    fn finish_attempt_schedules_expires_or_ends() {
        let s = RetrySettings::default();
        let t0 = 1_700_000_000;
        let mut e = envelope(t0);
        e.record(
            0,
            &Verdict::deferred("4.4.1", "connect to mx: Connection refused"),
        );
        assert_eq!(e.finish_attempt(t0 + 60, &s), AttemptEnd::RetryAt(t0 + 360));
        assert_eq!(e.attempts, 1);
        assert!(!e.is_due(t0 + 359) && e.is_due(t0 + 360));

        let five_days = 5 * 86_400;
        assert!(!e.is_expired(t0 + five_days - 1, &s));
        assert!(e.is_expired(t0 + five_days, &s));
        assert_eq!(e.finish_attempt(t0 + five_days, &s), AttemptEnd::Expired(2));
        assert!(e.is_done() && !e.is_due(u64::MAX));
        assert_eq!(e.recipients[0].dsn, "4.4.1", "keeps the last reason");
        assert_eq!(e.recipients[1].dsn, "4.4.7", "never tried");
        assert_eq!(e.bounced().count(), 2);

        let mut done = envelope(t0);
        done.record(0, &Verdict::bounced("5.1.1", "no such user"));
        done.record(1, &Verdict::deferred("4.0.0", "x"));
        done.record(1, &Verdict::bounced("5.0.0", "y"));
        assert_eq!(done.finish_attempt(t0 + 1, &s), AttemptEnd::Done);
    }

    #[test]
    fn bounces_have_their_own_lifetime() {
        let s = RetrySettings {
            bounce_queue_lifetime: Duration::from_secs(3600),
            ..RetrySettings::default()
        };
        let mut e = envelope(0);
        assert!(!e.is_expired(3600, &s));
        e.is_bounce = true;
        assert!(e.is_expired(3600, &s));
    }
}
