//! A session's defences against clients that are not mail programs, or not honest ones:
//! lines of another protocol (a web page posting to an SMTP port), clients that make error
//! after error, and clients that send so slowly that they hold a session without using it.
//!
//! - [`is_non_smtp`]: `smtpd_forbidden_commands` and header-shaped lines, which end the
//!   session with `221 2.7.0` as Postfix does;
//! - [`Pacer`]: `smtpd_error_sleep_time`, every reply held back once the client has made
//!   `smtpd_soft_error_limit` errors; the session keeps the replies and asks for a timer
//!   rather than sleeping;
//! - [`Progress`]: `certrelay_command_time_limit` (a command line must be complete soon after
//!   its first byte) and `certrelay_data_min_rate` (DATA must keep up a minimum rate).
//!
//! Not here: how many sessions a server runs at once or which one gives way when every
//! slot is taken (the shell's session limits); the session only says since when it is idle
//! and closes when told. No clock is read: every time is a parameter.

use crate::settings::{ForbiddenCommands, ServerSettings};
use crate::time::Instant;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use core::time::Duration;

/// True when `line`, a command line whose verb is not one the server knows, shows a client
/// speaking another protocol: its first word is a forbidden verb, is shaped like a message
/// header (`Host:`), or, with Postfix's default regexp entry, does not begin with a letter.
pub fn is_non_smtp(line: &[u8], forbidden: &ForbiddenCommands) -> bool {
    let line = line.trim_ascii();
    let end = line
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let word = &line[..end];
    let Some(first) = word.first() else {
        return false;
    };
    header_shaped(word)
        || (forbidden.not_a_letter && !first.is_ascii_alphabetic())
        || forbidden
            .verbs
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(word))
}

/// A header's name: printable ASCII other than `:`, then the colon.
fn header_shaped(word: &[u8]) -> bool {
    match word.iter().position(|&b| b == b':') {
        Some(colon) if colon > 0 => word[..colon].iter().all(|b| (33..=126).contains(b)),
        _ => false,
    }
}

/// Replies held back by `smtpd_error_sleep_time`. Outputs are numbered in the order they
/// are queued; a pause holds the output with its number, and every one after it, until
/// its time. Pauses queued together follow one another, one sleep each, as a server that
/// sleeps before each reply would send them.
#[derive(Debug, Default)]
pub struct Pacer {
    /// (number of the first output held, when it may go), in order.
    pauses: VecDeque<(u64, Instant)>,
}

impl Pacer {
    /// Holds output number `seq` (and those after it) for `sleep`, counted from the end of
    /// the last pause, or from `now` without one.
    pub fn pause(&mut self, seq: u64, now: Instant, sleep: Duration) {
        let from = self.pauses.back().map_or(now, |&(_, until)| until.max(now));
        self.pauses.push_back((seq, from + sleep));
    }

    /// True while output number `seq` must wait.
    pub fn holds(&self, seq: u64) -> bool {
        self.pauses.front().is_some_and(|&(first, _)| first <= seq)
    }

    /// True while any pause is pending: the session then reads nothing.
    pub fn is_active(&self) -> bool {
        !self.pauses.is_empty()
    }

    /// When the next pause ends.
    pub fn next_release(&self) -> Option<Instant> {
        self.pauses.front().map(|&(_, until)| until)
    }

    /// Ends the pauses due at `now`.
    pub fn release(&mut self, now: Instant) {
        while self.pauses.front().is_some_and(|&(_, until)| until <= now) {
            self.pauses.pop_front();
        }
    }

    /// Ends every pause at once (the connection is lost or being closed).
    pub fn clear(&mut self) {
        self.pauses.clear();
    }
}

/// How far a slow client has got: the command line under way, or the DATA being received.
#[derive(Debug, Default)]
pub struct Progress {
    /// The first byte of the command line under way arrived then.
    line_since: Option<Instant>,
    /// DATA began then, and this many octets arrived since.
    data: Option<(Instant, u64)>,
}

impl Progress {
    /// Bytes of a command line arrived and the line is not complete yet.
    pub fn line_begun(&mut self, now: Instant) {
        self.line_since.get_or_insert(now);
    }

    /// The command line under way is complete.
    pub fn line_ended(&mut self) {
        self.line_since = None;
    }

    /// True while a command line has begun and not ended.
    pub fn line_open(&self) -> bool {
        self.line_since.is_some()
    }

    /// DATA begins now.
    pub fn data_begun(&mut self, now: Instant) {
        self.line_since = None;
        self.data = Some((now, 0));
    }

    /// `n` octets of DATA arrived.
    pub fn data_received(&mut self, n: usize) {
        if let Some((_, bytes)) = &mut self.data {
            *bytes = bytes.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        }
    }

    /// When the command line under way is too late (`certrelay_command_time_limit` after
    /// its first byte).
    pub fn line_deadline(&self, settings: &ServerSettings) -> Option<Instant> {
        let limit = settings.command_time_limit;
        self.line_since
            .filter(|_| !limit.is_zero())
            .map(|since| since + limit)
    }

    /// When DATA falls behind `certrelay_data_min_rate`: the grace period from its start,
    /// plus the time the octets received so far are worth at that rate.
    pub fn data_deadline(&self, settings: &ServerSettings) -> Option<Instant> {
        let rate = settings.data_min_rate;
        let (since, bytes) = self.data.filter(|_| rate > 0)?;
        let earned = Duration::from_millis(bytes.saturating_mul(1000) / rate);
        Some(since + settings.data_rate_grace + earned)
    }

    /// Why a session timed out at `now`, for the log, when it was one of these two limits
    /// (`in_data`: the session was receiving DATA).
    pub fn overdue(
        &self,
        settings: &ServerSettings,
        in_data: bool,
        now: Instant,
    ) -> Option<String> {
        if in_data {
            let due = self.data_deadline(settings)?;
            let (since, bytes) = self.data?;
            return (now >= due).then(|| {
                format!(
                    "DATA slower than certrelay_data_min_rate = {} bytes/s: {bytes} bytes in \
                     {}s",
                    settings.data_min_rate,
                    now.saturating_since(since).as_secs()
                )
            });
        }
        let due = self.line_deadline(settings)?;
        (now >= due).then(|| {
            format!(
                "command line not complete {}s after its first byte \
                 (certrelay_command_time_limit)",
                settings.command_time_limit.as_secs()
            )
        })
    }
}

/// What the session keeps for its defences.
#[derive(Debug)]
pub struct Guard {
    /// The time of the call being handled (an error reply is paced from it).
    pub now: Instant,
    /// Outputs polled so far: the number of the next one.
    pub polled: u64,
    /// Error replies held back.
    pub pacer: Pacer,
    /// The command line or DATA under way.
    pub progress: Progress,
    /// The last command line, the connection or the TLS handshake: the session is idle
    /// since then.
    pub last_command: Instant,
}

impl Guard {
    /// The defences of a session that starts at `now`.
    pub fn new(now: Instant) -> Self {
        Guard {
            now,
            polled: 0,
            pacer: Pacer::default(),
            progress: Progress::default(),
            last_command: now,
        }
    }
}

/// The earlier of two optional times.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn lines_of_other_protocols() {
        let postfix = ForbiddenCommands::default();
        let names_only = ForbiddenCommands {
            verbs: vec![String::from("CONNECT")],
            not_a_letter: false,
        };
        // (line, with Postfix's default, with CONNECT alone)
        let table: &[(&[u8], bool, bool)] = &[
            (b"POST / HTTP/1.1", true, false),
            (b"post /", true, false),
            (b"GET /index.html HTTP/1.0", true, false),
            (b"CONNECT relay.example:25 HTTP/1.1", true, true),
            (b"Host: 127.0.0.1:2525", true, true),
            (b"host:x", true, true),
            (b"Content-Type: text/plain", true, true),
            (b"  User-Agent: x", true, true),
            (b"X-Header:", true, true),
            (b"1abc", true, false),
            (b"\x16\x03\x01\x02\x00", true, false),
            (b"{\"json\": 1}", true, true),
            // Not shaped like a header: the name is followed by a space.
            (b"Host : x", false, false),
            (b":x", true, false),
            (b"XYZZY", false, false),
            (b"POSTAL", false, false),
            (b"BDAT 10 LAST", false, false),
            (b"", false, false),
            (b"   ", false, false),
        ];
        for &(line, default, names) in table {
            let shown = String::from_utf8_lossy(line);
            assert_eq!(is_non_smtp(line, &postfix), default, "{shown}");
            assert_eq!(is_non_smtp(line, &names_only), names, "{shown}");
        }
    }

    #[test]
    fn pauses_follow_one_another() {
        let t0 = Instant::from_millis(1_000);
        let sleep = Duration::from_secs(1);
        let mut p = Pacer::default();
        assert!(!p.holds(0) && !p.is_active());
        p.pause(3, t0, sleep);
        p.pause(4, t0, sleep);
        assert!(!p.holds(2) && p.holds(3) && p.holds(4));
        assert_eq!(p.next_release(), Some(t0 + sleep));
        p.release(t0 + Duration::from_millis(999));
        assert!(p.holds(3));
        p.release(t0 + sleep);
        assert!(!p.holds(3) && p.holds(4));
        assert_eq!(p.next_release(), Some(t0 + sleep * 2));
        p.release(t0 + sleep * 5);
        assert!(!p.is_active());
    }

    #[test]
    fn deadlines_of_slow_lines_and_slow_data() {
        let t0 = Instant::from_millis(1_000);
        let settings = ServerSettings {
            command_time_limit: Duration::from_secs(10),
            data_min_rate: 1000,
            data_rate_grace: Duration::from_secs(30),
            ..ServerSettings::default()
        };
        let mut p = Progress::default();
        assert_eq!(p.line_deadline(&settings), None);
        p.line_begun(t0);
        // More bytes of the same line do not move it.
        p.line_begun(t0 + Duration::from_secs(5));
        assert_eq!(
            p.line_deadline(&settings),
            Some(t0 + Duration::from_secs(10))
        );
        assert!(p
            .overdue(&settings, false, t0 + Duration::from_secs(10))
            .is_some());
        assert!(p
            .overdue(&settings, false, t0 + Duration::from_secs(9))
            .is_none());
        p.line_ended();
        assert_eq!(p.line_deadline(&settings), None);

        p.data_begun(t0);
        assert_eq!(
            p.data_deadline(&settings),
            Some(t0 + Duration::from_secs(30))
        );
        p.data_received(5_000);
        assert_eq!(
            p.data_deadline(&settings),
            Some(t0 + Duration::from_secs(35))
        );
        let late = t0 + Duration::from_secs(35);
        let why = p.overdue(&settings, true, late).unwrap();
        assert!(why.contains("5000 bytes in 35s"), "{why}");

        let off = ServerSettings {
            command_time_limit: Duration::ZERO,
            data_min_rate: 0,
            ..settings
        };
        p.line_begun(t0);
        assert_eq!(p.line_deadline(&off), None);
        assert_eq!(p.data_deadline(&off), None);
    }
}
