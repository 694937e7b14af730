//! The one test kit of the workspace, shared by the end-to-end tests (`tests/`), the shell's
//! tests (`shell/tests/`, `shell/src` unit tests) and the load tool (`benches/load.rs`):
//! an SMTP sink, a test PKI, a loopback name server, a fake `XCERTRELAY` relay, the real
//! binaries and their daemons, a private Postfix, and the fixtures (certificates OpenSSL
//! made, with what it printed).
//!
//! It does not know the shell: it depends on the core, rcgen and rustls only, so that the
//! shell can dev-depend on it without a second copy of itself. Helpers that need the shell's
//! types (spools, runners, its rustls configurations) stay beside the tests that use them.
//! Everything here talks to 127.0.0.1 only, and every wait is bounded.

pub mod binaries;
pub mod client;
pub mod daemon;
pub mod dns;
pub mod enroll_relay;
pub mod fixtures;
pub mod pki;
pub mod postfix;
pub mod recipe;
pub mod sink;

pub use binaries::{binary, certrelayd, certrelayd_ok, run, run_ok, workspace_root};

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long any wait of a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// Polls `f` every 50 ms until it gives a value; fails the test after [`WAIT`].
pub fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago: nobody listens there until a test
/// starts something on it.
///
/// It is taken from below the kernel's ephemeral range, so that neither another test's
/// port-0 listener nor the local end of any client connection can take it between this
/// call and the daemon's bind (a CI run once lost a test that way). Within one test binary
/// a counter never hands the same port out twice; the starting point depends on the
/// process id, so test binaries run side by side start apart, and each port is checked by
/// binding it. Where the ephemeral range starts too low for that, the kernel chooses.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = u32::from(ephemeral_low());
    if low >= 12_000 {
        let first = low.saturating_sub(16_384).max(10_000);
        let span = low - first;
        let start = std::process::id().wrapping_mul(7919) % span;
        for _ in 0..span {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = (first + (start + n) % span) as u16;
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind a port on 127.0.0.1")
        .port()
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Makes a new empty directory named after `label`.
    pub fn new(label: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("certrelay-test-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to `name` inside it and returns the full path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write test file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_dirs_are_distinct_hold_what_is_written_and_go_when_dropped() {
        let (a, b) = (TempDir::new("kit"), TempDir::new("kit"));
        assert_ne!(a.path(), b.path());
        let file = a.write("f", "text");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "text");
        let gone = a.path().to_path_buf();
        drop(a);
        assert!(!gone.exists());
        assert!(b.path().is_dir());
    }

    #[test]
    fn a_free_port_can_be_bound() {
        let port = free_port();
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("the port is free");
    }

    #[test]
    fn free_ports_are_never_handed_out_twice_and_lie_outside_the_ephemeral_range() {
        let low = ephemeral_low();
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "a port was handed out twice");
        if low >= 12_000 {
            assert!(ports.iter().all(|&p| p < low), "{ports:?} reach {low}");
        }
    }
}
