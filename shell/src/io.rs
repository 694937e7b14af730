//! Small IO helpers both roles use: a deadline around a future, an IO error worded as
//! Postfix words connection failures, and a few spare buffers for message contents.
//! Nothing here knows about SMTP.

use smol::future;
use smol::Timer;
use std::io;
use std::sync::Mutex;
use std::time::Duration;

/// Spare buffers kept for reuse ([`spare_buffer`], [`recycle_buffer`]).
static SPARES: Spares = Spares::new();

/// Most spare buffers kept. Freed buffers beyond these go to the allocator's own store of
/// large blocks ([`crate::alloc`]), so two suffice: with four, the relay's peak memory
/// under 100 KiB messages at C=8 stood 0.4 MiB higher in six alternating runs, at the same
/// speed (and eight was no faster than four).
const SPARES_KEPT: usize = 2;

/// Buffers smaller than this are not worth keeping: the allocator serves them from its
/// own free lists.
const SPARE_MIN: usize = 32 * 1024;

/// Buffers larger than this are given back to the allocator, so that one huge message
/// leaves nothing behind.
const SPARE_MAX: usize = 512 * 1024;

/// A pool of empty message buffers (the process has one; tests make their own).
struct Spares(Mutex<Vec<Vec<u8>>>);

impl Spares {
    const fn new() -> Spares {
        Spares(Mutex::new(Vec::new()))
    }

    fn take(&self) -> Vec<u8> {
        let mut spares = self.0.lock().unwrap_or_else(|e| e.into_inner());
        spares.pop().unwrap_or_default()
    }

    fn give(&self, mut buf: Vec<u8>) {
        if !worth_keeping(buf.capacity()) {
            return;
        }
        buf.clear();
        let mut spares = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if spares.len() < SPARES_KEPT {
            spares.push(buf);
        }
    }
}

/// An empty buffer for a message's content: a spare one when there is one. Message
/// buffers of 100 KiB asked from the allocator and given back once per message cost a
/// mapping and an unmapping each with musl's allocator (page faults and page clearing).
pub fn spare_buffer() -> Vec<u8> {
    SPARES.take()
}

/// Whether a buffer of `capacity` octets is kept as a spare.
fn worth_keeping(capacity: usize) -> bool {
    (SPARE_MIN..=SPARE_MAX).contains(&capacity)
}

/// Keeps `buf` for [`spare_buffer`] when it is worth it; its content is cleared first, so
/// nothing of one message can show in another.
pub fn recycle_buffer(buf: Vec<u8>) {
    SPARES.give(buf);
}

/// `fut`, or `None` once `limit` has passed.
pub async fn with_timeout<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        Timer::after(limit).await;
        None
    })
    .await
}

/// The error as Postfix words connection failures, without Rust's `(os error N)`.
pub fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "Connection refused".into(),
        io::ErrorKind::TimedOut => "Connection timed out".into(),
        io::ErrorKind::ConnectionReset => "Connection reset by peer".into(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_owned(),
                None => text,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recycled_buffer_comes_back_empty() {
        // A pool of the test's own: other tests use the process's at the same time.
        let spares = Spares::new();
        let mut buf = Vec::with_capacity(SPARE_MIN);
        buf.extend_from_slice(b"secret of the last message");
        spares.give(buf);
        let back = spares.take();
        assert!(back.is_empty(), "a spare buffer held {} octets", back.len());
        assert!(back.capacity() >= SPARE_MIN);
        assert_eq!(spares.take().capacity(), 0, "one buffer given, one kept");
    }

    #[test]
    fn no_more_spares_are_kept_than_the_limit() {
        let spares = Spares::new();
        for _ in 0..SPARES_KEPT + 3 {
            spares.give(Vec::with_capacity(SPARE_MIN));
        }
        let kept = (0..SPARES_KEPT + 3)
            .filter(|_| spares.take().capacity() > 0)
            .count();
        assert_eq!(kept, SPARES_KEPT);
    }

    #[test]
    fn small_and_huge_buffers_are_not_kept() {
        assert!(!worth_keeping(SPARE_MIN - 1));
        assert!(worth_keeping(SPARE_MIN));
        assert!(worth_keeping(100 * 1024));
        assert!(!worth_keeping(SPARE_MAX + 1));
    }
}
