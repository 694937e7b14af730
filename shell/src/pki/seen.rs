//! What the relay remembers of the listed client certificates it met: when each was last
//! seen, from which address, and when it expires, kept in memory ([`SeenBook`]) and in a
//! small text file beside the spool ([`SEEN_FILE`]); and the expiry arithmetic the warnings
//! share ([`expiry_note`]).
//!
//! The file has one line per listed fingerprint (the one in the table that matched):
//! `FINGERPRINT cert|pubkey LAST_SEEN NOT_AFTER|- ADDRESS`, times in unix seconds. It is
//! written by the relay as `mail_owner`; a reader takes it as untrusted text: a line that
//! does not parse is counted and skipped, never a failure.
//!
//! Not here: when the file is written (the relay's serve loop), how it is read without
//! following a link (the caller uses `status::read_claim`), or the listing (`certs`).

use crate::status;
use certrelay_core::fingerprint::Fingerprint;
use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

/// The file's name, in the queue directory.
pub const SEEN_FILE: &str = "clientcerts.seen";
/// The most bytes of it read back: well above what any table of laptops needs.
pub const SEEN_MAX_BYTES: u64 = 8 << 20;
/// The most certificates remembered; past it, new ones are not (the file stays bounded).
pub const SEEN_MAX_ENTRIES: usize = 100_000;
/// A certificate that expires within this many days is warned about (in the logs, by
/// `certrelayd certs` and by `certrelay check`; `status` points it out earlier, at
/// `status::EXPIRY_WARNING_DAYS`).
pub const WARN_DAYS: i64 = 14;

const DAY: i64 = 86_400;

/// The range of times X.509 can express (0000-01-01 to 9999-12-31 23:59:59 UTC): a time
/// outside it in the file was not written by the relay.
const X509_TIMES: std::ops::RangeInclusive<i64> = -62_167_219_200..=253_402_300_799;

/// What the relay saw of one listed certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// True when the table lists the public key's digest, not the certificate's.
    pub public_key: bool,
    /// When a TLS session with it was last established (unix seconds).
    pub last_seen: i64,
    /// The client's address then.
    pub addr: IpAddr,
    /// The certificate's end of validity (unix seconds), when it could be read.
    pub not_after: Option<i64>,
}

/// The records of a seen file, and how many of its lines were unreadable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeenRecords {
    /// By the listed fingerprint.
    pub records: HashMap<Fingerprint, Seen>,
    /// Lines skipped because they did not parse.
    pub bad_lines: usize,
}

/// Reads the text of a seen file; never fails (bad lines are counted and skipped).
pub fn parse(text: &str) -> SeenRecords {
    let mut out = SeenRecords::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Some((print, seen)) if out.records.len() < SEEN_MAX_ENTRIES => {
                out.records.insert(print, seen);
            }
            Some(_) => {}
            None => out.bad_lines += 1,
        }
    }
    out
}

fn parse_line(line: &str) -> Option<(Fingerprint, Seen)> {
    let mut fields = line.split_ascii_whitespace();
    let print: Fingerprint = fields.next()?.parse().ok()?;
    let public_key = match fields.next()? {
        "cert" => false,
        "pubkey" => true,
        _ => return None,
    };
    let last_seen: i64 = fields.next()?.parse().ok()?;
    let not_after = match fields.next()? {
        "-" => None,
        n => Some(n.parse().ok().filter(|t| X509_TIMES.contains(t))?),
    };
    let addr: IpAddr = fields.next()?.parse().ok()?;
    if fields.next().is_some() || !(0..=*X509_TIMES.end()).contains(&last_seen) {
        return None;
    }
    Some((
        print,
        Seen {
            public_key,
            last_seen,
            addr,
            not_after,
        },
    ))
}

/// The text of a seen file for `records`, sorted by fingerprint so that equal contents
/// give equal files.
pub fn render(records: &HashMap<Fingerprint, Seen>) -> String {
    let mut lines: Vec<String> = records
        .iter()
        .map(|(print, s)| {
            format!(
                "{print} {} {} {} {}",
                if s.public_key { "pubkey" } else { "cert" },
                s.last_seen,
                s.not_after
                    .map_or_else(|| "-".to_string(), |n| n.to_string()),
                s.addr
            )
        })
        .collect();
    lines.sort();
    let mut out = String::from(
        "# listed client certificates the relay saw: fingerprint, kind, last seen, \
         not after, address\n# rewritten by certrelayd; `certrelayd certs` shows it\n",
    );
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Replaces the seen file at `path` with `text`: a fresh temporary file beside it (any
/// link or file of that name removed first, never followed), then a rename, so that a
/// reader sees the old file or the new.
pub fn write(path: &Path, text: &str) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    match fs::remove_file(tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_data()?;
    drop(file);
    fs::rename(tmp, path)
}

/// Whether a certificate ending at `not_after` is to be warned about at `now`: it expires
/// within [`WARN_DAYS`] or has expired.
pub fn expires_soon(not_after: i64, now: i64) -> bool {
    status::expires_within(not_after, now, WARN_DAYS)
}

/// `expires 2026-05-01 12:00 UTC (in 3d 0h)`, or `expired ... (2d 4h ago)`.
pub fn expiry_note(not_after: i64, now: i64) -> String {
    let when = status::utc_text(not_after);
    let left = not_after.saturating_sub(now);
    let span = status::span_text(left.unsigned_abs());
    if left < 0 {
        format!("expired {when} ({span} ago)")
    } else {
        format!("expires {when} (in {span})")
    }
}

/// The running relay's records: updated as listed certificates connect, written out by
/// the caller now and then ([`SeenBook::take_changed`]).
#[derive(Debug, Default)]
pub struct SeenBook {
    state: Mutex<BookState>,
}

#[derive(Debug, Default)]
struct BookState {
    records: HashMap<Fingerprint, Seen>,
    changed: bool,
    /// The day (unix days) each certificate was last warned about.
    warned: HashMap<Fingerprint, i64>,
}

impl SeenBook {
    /// A book starting from what the file held.
    pub fn new(records: HashMap<Fingerprint, Seen>) -> SeenBook {
        SeenBook {
            state: Mutex::new(BookState {
                records,
                ..BookState::default()
            }),
        }
    }

    /// Notes that the certificate listed as `print` was seen from `addr` at `now`. Returns
    /// true when it expires within [`WARN_DAYS`] (or has expired) and was not warned
    /// about yet today: the caller logs the warning.
    pub fn record(&self, print: Fingerprint, seen: Seen, now: i64) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let known = state.records.contains_key(&print);
        if known || state.records.len() < SEEN_MAX_ENTRIES {
            state.records.insert(print, seen);
            state.changed = true;
        }
        let Some(not_after) = seen.not_after else {
            return false;
        };
        if !expires_soon(not_after, now) {
            return false;
        }
        let today = now.div_euclid(DAY);
        if state.warned.get(&print) == Some(&today) {
            return false;
        }
        if state.warned.len() >= SEEN_MAX_ENTRIES {
            state.warned.clear();
        }
        state.warned.insert(print, today);
        true
    }

    /// The file's new text when something changed since the last call, else `None`.
    pub fn take_changed(&self) -> Option<String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.changed {
            return None;
        }
        state.changed = false;
        Some(render(&state.records))
    }

    /// Marks the records changed again (after a write that failed).
    pub fn mark_changed(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).changed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use certrelay_core::fingerprint::DigestKind;

    fn seen(last_seen: i64, not_after: Option<i64>) -> Seen {
        Seen {
            public_key: false,
            last_seen,
            addr: "127.0.0.1".parse().unwrap(),
            not_after,
        }
    }

    #[test]
    fn render_and_parse_round_trip() {
        let a = Fingerprint::of(DigestKind::Sha256, b"a");
        let b = Fingerprint::of(DigestKind::Md5, b"b");
        let mut records = HashMap::new();
        records.insert(a, seen(1_700_000_000, Some(1_800_000_000)));
        let mut pubkey = seen(5, None);
        pubkey.public_key = true;
        pubkey.addr = "::1".parse().unwrap();
        records.insert(b, pubkey);
        let text = render(&records);
        let back = parse(&text);
        assert_eq!(back.records, records);
        assert_eq!(back.bad_lines, 0);
    }

    #[test]
    fn hostile_lines_are_skipped_and_counted() {
        let a = Fingerprint::of(DigestKind::Sha256, b"a");
        let text = format!(
            "{a} cert 10 - 127.0.0.1\n\
             garbage\n\
             {a} weird 10 - 127.0.0.1\n\
             {a} cert -5 - 127.0.0.1\n\
             {a} cert 10 99999999999999999999999 127.0.0.1\n\
             {a} cert 10 - 127.0.0.1 extra\n\
             {a} cert 10 - not-an-address\n\
             ZZ cert 10 - 127.0.0.1\n\
             \u{0}\u{1b}[2J cert\n"
        );
        let got = parse(&text);
        assert_eq!(got.bad_lines, 8, "{got:?}");
        assert_eq!(got.records.len(), 1);
    }

    #[test]
    fn warns_once_a_day_and_only_when_expiry_is_near() {
        let book = SeenBook::new(HashMap::new());
        let near = Fingerprint::of(DigestKind::Sha256, b"near");
        let far = Fingerprint::of(DigestKind::Sha256, b"far");
        let now = 1_700_000_000 - 1_700_000_000 % DAY + 3600;
        assert!(book.record(near, seen(now, Some(now + 3600)), now));
        assert!(!book.record(near, seen(now, Some(now + 3600)), now + 60));
        assert!(book.record(near, seen(now, Some(now + 3600)), now + DAY));
        assert!(!book.record(far, seen(now, Some(now + 30 * DAY)), now));
        assert!(!book.record(far, seen(now, None), now));
        assert!(book.take_changed().is_some());
        assert!(book.take_changed().is_none(), "nothing changed since");
        book.record(far, seen(now + 1, None), now + 1);
        let text = book.take_changed().unwrap();
        assert_eq!(parse(&text).records.len(), 2);
    }

    #[test]
    fn expiry_words() {
        assert!(expires_soon(100, 100 + 5));
        assert!(expires_soon(13 * DAY, 0));
        assert!(!expires_soon(15 * DAY, 0));
        assert_eq!(
            expiry_note(3 * DAY, 0),
            "expires 1970-01-04 00:00 UTC (in 3d 0h)"
        );
        assert!(expiry_note(0, 7200).ends_with("(2h 0m ago)"));
        assert!(expiry_note(90, 0).ends_with("(in 1m 30s)"));
    }

    #[test]
    fn extreme_times_neither_overflow_nor_print_a_wrong_date() {
        let a = Fingerprint::of(DigestKind::Sha256, b"a");
        // Outside what X.509 can say: not written by the relay, so not believed.
        for bad in [i64::MIN, i64::MAX, -62_167_219_201, 253_402_300_800] {
            let got = parse(&format!("{a} cert 10 {bad} 127.0.0.1\n"));
            assert_eq!((got.records.len(), got.bad_lines), (0, 1), "{bad}");
            let got = parse(&format!("{a} cert {bad} - 127.0.0.1\n"));
            assert_eq!((got.records.len(), got.bad_lines), (0, 1), "{bad}");
        }
        // The ends of the range are read, and their notes neither panic nor lie.
        let oldest = -62_167_219_200;
        let got = parse(&format!("{a} cert 10 {oldest} 127.0.0.1\n"));
        assert_eq!(got.records[&a].not_after, Some(oldest));
        assert_eq!(
            expiry_note(oldest, 1_700_000_000),
            "expired before 1970 (739203d 22h ago)"
        );
        assert!(expiry_note(-1, 0).starts_with("expired before 1970 ("));
        assert_eq!(
            expiry_note(253_402_300_799, 0),
            "expires 9999-12-31 23:59 UTC (in 2932896d 23h)"
        );
        // Whatever a caller passes, the arithmetic holds.
        assert!(expiry_note(i64::MIN, i64::MAX).starts_with("expired before 1970 ("));
        assert!(expiry_note(i64::MAX, i64::MIN).starts_with("expires "));
        assert!(expires_soon(i64::MIN, i64::MAX));
        assert!(!expires_soon(i64::MAX, i64::MIN));
    }

    #[test]
    fn write_replaces_a_planted_link_without_following_it() {
        let dir = std::env::temp_dir().join(format!("certrelay-seen-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let target = dir.join("victim");
        fs::write(&target, "keep").unwrap();
        let path = dir.join(SEEN_FILE);
        std::os::unix::fs::symlink(&target, dir.join(format!("{SEEN_FILE}.tmp"))).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        write(&path, "new\n").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        assert!(!fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        fs::remove_dir_all(&dir).unwrap();
    }
}
