//! Small IO helpers both roles use: a deadline around a future, and an IO error worded as
//! Postfix words connection failures. Nothing here knows about SMTP.

use smol::future;
use smol::Timer;
use std::io;
use std::time::Duration;

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
