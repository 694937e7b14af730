//! What both roles' `status` commands share: reading a file another account may control
//! (no link followed, a plain file of a known owner, bounded), the `name value` status
//! file format, a JSON writer, the queue by state and by deferral reason, certificate
//! expiry, and the delivery counts of the last minute and hour.
//!
//! Not here: what each role puts in its status file or prints (the role's binary), and
//! any decision about the queue (read only: nothing here changes a file).

use crate::spool::maildrop::Maildrop;
use certrelay_core::cert::{parse_certificates, subject_cn};
use certrelay_core::queue::Envelope;
use certrelay_core::time::civil_time;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The most a status file may hold.
pub const MAX_STATUS_BYTES: u64 = 64 * 1024;

/// The most an envelope record read for the queue summary may hold.
const MAX_ENVELOPE_BYTES: u64 = 16 * 1024 * 1024;

/// Certificates that expire within this many days are pointed out by `status` (the logs,
/// `certs` and `check` warn later, at `pki::seen::WARN_DAYS`: see [`expires_within`]).
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// Deferral reasons shown, most frequent first.
pub const TOP_REASONS: usize = 10;

/// The longest reason kept (longer ones are cut, with `...`).
const MAX_REASON_CHARS: usize = 200;

// ---------------------------------------------------------------------------------------
// Reading files another account controls.

/// Why a file was not read.
#[derive(Debug)]
pub enum ClaimError {
    /// It could not be opened (absent, no permission).
    Open(io::Error),
    /// It is a symbolic link.
    Link,
    /// It is not a plain file (a FIFO, a device, a directory).
    NotPlain,
    /// Its owner is none of the accounts allowed.
    Owner {
        /// The file's owner.
        uid: u32,
    },
    /// It is larger than allowed.
    TooBig(u64),
    /// It could not be read, or is not UTF-8 text.
    Read(io::Error),
}

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimError::Open(e) => write!(f, "{e}"),
            ClaimError::Link => f.write_str("a symbolic link (not followed)"),
            ClaimError::NotPlain => f.write_str("not a plain file"),
            ClaimError::Owner { uid } => write!(f, "owned by uid {uid}, not the expected account"),
            ClaimError::TooBig(n) => write!(f, "{n} bytes, more than allowed"),
            ClaimError::Read(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClaimError {}

/// Opens `path` for reading without following a link at its end and without blocking on
/// a FIFO; only a plain file owned by one of `owners` (any owner when empty) of at most
/// `max` bytes is returned.
pub fn open_claim(path: &Path, owners: &[u32], max: u64) -> Result<File, ClaimError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(ClaimError::opening)?;
    claim_file(file, owners, max)
}

impl ClaimError {
    /// What an open with `O_NOFOLLOW` failing with `e` means: `ELOOP` is the link it
    /// refused to follow.
    pub fn opening(e: io::Error) -> ClaimError {
        if e.raw_os_error() == Some(libc::ELOOP) {
            ClaimError::Link
        } else {
            ClaimError::Open(e)
        }
    }
}

/// The checks of [`open_claim`] on a file the caller opened itself (relative to a
/// directory it holds open, say), without following a link and without blocking: only a
/// plain file owned by one of `owners` (any owner when empty) of at most `max` bytes is
/// returned.
pub fn claim_file(file: File, owners: &[u32], max: u64) -> Result<File, ClaimError> {
    let meta = file.metadata().map_err(ClaimError::Read)?;
    if !meta.is_file() {
        return Err(ClaimError::NotPlain);
    }
    if !owners.is_empty() && !owners.contains(&meta.uid()) {
        return Err(ClaimError::Owner { uid: meta.uid() });
    }
    if meta.len() > max {
        return Err(ClaimError::TooBig(meta.len()));
    }
    Ok(file)
}

/// [`open_claim`], then the whole file as text (at most `max` bytes even if it grows).
pub fn read_claim(path: &Path, owners: &[u32], max: u64) -> Result<String, ClaimError> {
    let file = open_claim(path, owners, max)?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(ClaimError::Read)?;
    if bytes.len() as u64 > max {
        return Err(ClaimError::TooBig(bytes.len() as u64));
    }
    String::from_utf8(bytes)
        .map_err(|_| ClaimError::Read(io::Error::new(io::ErrorKind::InvalidData, "not UTF-8")))
}

// ---------------------------------------------------------------------------------------
// The status file: one `name value` per line.

/// A status file's fields, in file order; a name may repeat (one line per listener).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// No fields yet.
    pub fn new() -> Fields {
        Fields::default()
    }

    /// Adds `name value`; line breaks in the value become spaces, other control
    /// characters `?` (the file is printed on root's terminal).
    pub fn push(&mut self, name: &str, value: impl fmt::Display) {
        let value = value
            .to_string()
            .replace(['\n', '\r'], " ")
            .replace(char::is_control, "?");
        self.0.push((name.to_owned(), value));
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, value) in &self.0 {
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }

    /// Reads [`Fields::render`]'s text; `Err` says which line is not `name value`.
    pub fn parse(text: &str) -> Result<Fields, String> {
        let mut fields = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let (name, value) = line.split_once(' ').unwrap_or((line, ""));
            let good = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !good {
                return Err(format!("line {}: not a `name value` line", n + 1));
            }
            // Never written by the relay: whoever wrote it wants a terminal's attention.
            if value.chars().any(char::is_control) {
                return Err(format!("line {}: a control character", n + 1));
            }
            fields.push((name.to_owned(), value.to_owned()));
        }
        Ok(Fields(fields))
    }

    /// The first value of `name`.
    pub fn get<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.all(name).next()
    }

    /// Every value of `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The number `name`; `Err` names the field when it is missing or not a number.
    pub fn number(&self, name: &str) -> Result<u64, String> {
        let value = self.get(name).ok_or_else(|| format!("no `{name}` line"))?;
        value
            .parse()
            .map_err(|_| format!("`{name}`: {value:?} is not a number"))
    }
}

// ---------------------------------------------------------------------------------------
// JSON.

/// A JSON value, written by [`Json::render`].
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object, its members in this order.
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// An object from `(name, value)` pairs.
    pub fn obj<const N: usize>(members: [(&str, Json); N]) -> Json {
        Json::Obj(
            members
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        )
    }

    /// A string.
    pub fn str(s: impl Into<String>) -> Json {
        Json::Str(s.into())
    }

    /// A whole number (clamped to `i64`).
    pub fn num(n: impl TryInto<i64>) -> Json {
        Json::Int(n.try_into().unwrap_or(i64::MAX))
    }

    /// A string, or `null` for `None`.
    pub fn opt_str(s: Option<impl Into<String>>) -> Json {
        s.map_or(Json::Null, |s| Json::Str(s.into()))
    }

    /// The compact text, one line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Json::Str(s) => json_string(s, out),
            Json::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Obj(members) => {
                out.push('{');
                for (i, (name, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json_string(name, out);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// `s` as a JSON string: quotes, backslashes and control characters escaped; other
/// characters as they are (the output is UTF-8).
fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------------------
// Times.

/// `2026-05-01 12:00 UTC`; a time before 1970 is only said to be so (no date is made up).
pub fn utc_text(unix: i64) -> String {
    let Ok(unix) = u64::try_from(unix) else {
        return String::from("before 1970");
    };
    let t = civil_time(unix, 0);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year, t.month, t.day, t.hour, t.minute
    )
}

/// Whether a certificate ending at `not_after` expires within `days` days of `now`, or has
/// expired (times in unix seconds): the one test behind every expiry warning.
pub fn expires_within(not_after: i64, now: i64, days: i64) -> bool {
    not_after.saturating_sub(now) < days.saturating_mul(86_400)
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
pub fn span_text(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

// ---------------------------------------------------------------------------------------
// The queue.

/// The queue by state and by deferral reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueSummary {
    /// The queue directory.
    pub directory: PathBuf,
    /// Handed in, not yet picked up into the queue (the laptop's sendmail).
    pub maildrop: usize,
    /// Queued and not tried yet.
    pub active: usize,
    /// Tried, and waiting for the next attempt.
    pub deferred: usize,
    /// Finished with bounced recipients whose notice could not be sent; kept for a person.
    pub failed: usize,
    /// Files moved aside as unreadable (`corrupt/`).
    pub corrupt: usize,
    /// Queued messages whose envelope could not be read just now.
    pub unreadable: usize,
    /// Bytes of the queued messages.
    pub bytes: u64,
    /// Arrival of the oldest queued message (unix seconds).
    pub oldest_arrival: Option<u64>,
    /// The earliest next attempt among messages waiting.
    pub next_attempt: Option<u64>,
    /// Deferred messages by the reason of their recipients' last failure, most first (a
    /// message with several reasons counts under each); at most [`TOP_REASONS`].
    pub reasons: Vec<(String, usize)>,
    /// Reasons not shown.
    pub more_reasons: usize,
}

impl QueueSummary {
    /// Messages in the queue, maildrop included.
    pub fn messages(&self) -> usize {
        self.maildrop + self.active + self.deferred + self.failed + self.unreadable
    }

    /// The JSON object.
    pub fn json(&self) -> Json {
        Json::obj([
            ("directory", Json::str(self.directory.display().to_string())),
            ("messages", Json::num(self.messages())),
            ("bytes", Json::num(self.bytes)),
            (
                "states",
                Json::obj([
                    ("maildrop", Json::num(self.maildrop)),
                    ("active", Json::num(self.active)),
                    ("deferred", Json::num(self.deferred)),
                    ("failed", Json::num(self.failed)),
                    ("corrupt", Json::num(self.corrupt)),
                    ("unreadable", Json::num(self.unreadable)),
                ]),
            ),
            (
                "oldest_arrival",
                self.oldest_arrival.map_or(Json::Null, Json::num),
            ),
            (
                "next_attempt",
                self.next_attempt.map_or(Json::Null, Json::num),
            ),
            (
                "deferral_reasons",
                Json::Arr(
                    self.reasons
                        .iter()
                        .map(|(reason, n)| {
                            Json::obj([
                                ("reason", Json::str(reason.clone())),
                                ("messages", Json::num(*n)),
                            ])
                        })
                        .collect(),
                ),
            ),
            ("more_reasons", Json::num(self.more_reasons)),
        ])
    }

    /// The human lines (each ends with a line feed), indented by two spaces.
    pub fn text(&self, now: u64) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "queue {}: {} message(s), {} Kbytes",
            self.directory.display(),
            self.messages(),
            self.bytes.div_ceil(1024)
        );
        if let Some(oldest) = self.oldest_arrival {
            let _ = write!(
                out,
                ", oldest {} old",
                span_text(now.saturating_sub(oldest))
            );
        }
        out.push('\n');
        let _ = writeln!(
            out,
            "  active {}, deferred {}, failed {}, maildrop {}, corrupt {}{}",
            self.active,
            self.deferred,
            self.failed,
            self.maildrop,
            self.corrupt,
            if self.unreadable > 0 {
                format!(", unreadable {}", self.unreadable)
            } else {
                String::new()
            }
        );
        if let Some(next) = self.next_attempt {
            let _ = writeln!(
                out,
                "  next attempt {}",
                if next <= now {
                    "due now".to_owned()
                } else {
                    format!("in {}", span_text(next - now))
                }
            );
        }
        if !self.reasons.is_empty() {
            let _ = writeln!(out, "  deferred by reason (messages):");
            for (reason, n) in &self.reasons {
                let _ = writeln!(out, "  {n:>5}  {reason}");
            }
            if self.more_reasons > 0 {
                let _ = writeln!(out, "         ({} more reasons)", self.more_reasons);
            }
        }
        out
    }
}

/// One line of a reason: control characters become spaces; long ones are cut.
fn clean_reason(reason: &str) -> String {
    let mut out: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON_CHARS + 1)
        .collect();
    if out.chars().count() > MAX_REASON_CHARS {
        out = out.chars().take(MAX_REASON_CHARS).collect();
        out.push_str("...");
    }
    out
}

/// How [`queue_summary_with`] reads the spool's `queue/` folder.
pub trait QueueFolder {
    /// The queue ids of the message files (`ID.msg`) in it.
    fn message_ids(&self) -> io::Result<Vec<String>>;
    /// Opens `name` in it as a claim (no link, plain files only, at most `max` bytes).
    fn claim(&self, name: &str, max: u64) -> Result<File, ClaimError>;
}

/// `queue/` reached by its path, each file opened without following a link: for a queue
/// the caller owns (the laptop's). A caller reading another account's spool as root passes
/// [`queue_summary_with`] a folder it holds open instead, so that a folder swapped for a
/// link after the check below is never read.
struct QueueByPath(PathBuf);

impl QueueFolder for QueueByPath {
    fn message_ids(&self) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.0)? {
            let name = entry?.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".msg")) {
                ids.push(id.to_owned());
            }
        }
        Ok(ids)
    }

    fn claim(&self, name: &str, max: u64) -> Result<File, ClaimError> {
        open_claim(&self.0.join(name), &[], max)
    }
}

/// Reads the queue at `queue_dir` (the spool's `queue/` and `corrupt/`, the maildrop),
/// without following links or opening anything but plain files: the directory may belong
/// to another account than the caller's.
pub fn queue_summary(queue_dir: &Path) -> io::Result<QueueSummary> {
    let queue = queue_dir.join("queue");
    refuse_link(&queue)?;
    let folder = std::fs::symlink_metadata(&queue)
        .is_ok()
        .then_some(QueueByPath(queue));
    queue_summary_with(queue_dir, folder.as_ref().map(|f| f as &dyn QueueFolder))
}

/// [`queue_summary`], with `queue/` read through `queue` (`None`: there is none yet).
pub fn queue_summary_with(
    queue_dir: &Path,
    queue: Option<&dyn QueueFolder>,
) -> io::Result<QueueSummary> {
    let mut summary = QueueSummary {
        directory: queue_dir.to_owned(),
        ..QueueSummary::default()
    };
    for dir in ["maildrop", "corrupt"] {
        refuse_link(&queue_dir.join(dir))?;
    }
    if queue_dir.join("maildrop").is_dir() {
        summary.maildrop = Maildrop::open(queue_dir)?.ids()?.len();
    }
    summary.corrupt = count_entries(&queue_dir.join("corrupt"))?;
    let Some(queue) = queue else {
        return Ok(summary);
    };
    let ids = queue.message_ids()?;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for id in ids {
        let envelope = match envelope_record(|name, max| queue.claim(name, max), &id) {
            Ok(bytes) => Envelope::parse(&bytes).ok(),
            // Removed meanwhile (delivered).
            Err(ClaimError::Open(e)) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => None,
        };
        let Some(envelope) = envelope else {
            summary.unreadable += 1;
            continue;
        };
        summary.bytes = summary.bytes.saturating_add(envelope.size);
        summary.oldest_arrival = Some(
            summary
                .oldest_arrival
                .map_or(envelope.arrival, |o| o.min(envelope.arrival)),
        );
        if envelope.is_done() {
            summary.failed += 1;
            continue;
        }
        summary.next_attempt = Some(
            summary
                .next_attempt
                .map_or(envelope.next_attempt, |n| n.min(envelope.next_attempt)),
        );
        if envelope.attempts == 0 {
            summary.active += 1;
            continue;
        }
        summary.deferred += 1;
        let mut mine: Vec<String> = envelope
            .remaining()
            .map(|i| envelope.recipients[i].reason.as_str())
            .filter(|r| !r.is_empty())
            .map(clean_reason)
            .collect();
        if mine.is_empty() && !envelope.last_error.is_empty() {
            mine.push(clean_reason(&envelope.last_error));
        }
        if mine.is_empty() {
            mine.push("(no reason recorded)".to_owned());
        }
        mine.sort();
        mine.dedup();
        for reason in mine {
            *reasons.entry(reason).or_default() += 1;
        }
    }
    let mut reasons: Vec<(String, usize)> = reasons.into_iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    summary.more_reasons = reasons.len().saturating_sub(TOP_REASONS);
    reasons.truncate(TOP_REASONS);
    summary.reasons = reasons;
    Ok(summary)
}

/// An error when `path` is a symbolic link: a folder of the spool that a link replaced is
/// not listed (root's `status` would read wherever it points). A missing one is fine.
fn refuse_link(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(io::Error::other(format!(
            "{} is a symbolic link; not followed",
            path.display()
        ))),
        _ => Ok(()),
    }
}

fn count_entries(dir: &Path) -> io::Result<usize> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries.count()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// The envelope record of queued message `id`: its `.env`, else the record inside its
/// `.msg`, at most [`MAX_ENVELOPE_BYTES`]. `open` opens a file of the spool's `queue/`
/// folder by name as a claim, given the most it may hold: how the caller reaches the
/// folder (a path, a directory it holds open) is its own.
pub fn envelope_record(
    mut open: impl FnMut(&str, u64) -> Result<File, ClaimError>,
    id: &str,
) -> Result<Vec<u8>, ClaimError> {
    match open(&format!("{id}.env"), MAX_ENVELOPE_BYTES) {
        Ok(file) => {
            let mut bytes = Vec::new();
            file.take(MAX_ENVELOPE_BYTES)
                .read_to_end(&mut bytes)
                .map_err(ClaimError::Read)?;
            Ok(bytes)
        }
        Err(ClaimError::Open(e)) if e.kind() == io::ErrorKind::NotFound => {
            // The message file holds the content too: only its envelope is bounded.
            let file = open(&format!("{id}.msg"), u64::MAX)?;
            crate::spool::embedded_envelope(&file, MAX_ENVELOPE_BYTES).map_err(ClaimError::Read)
        }
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------
// Certificates.

/// One certificate and when it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertStatus {
    /// What it is for: `server`, `CA`, `client`, `laptop NAME`.
    pub role: String,
    /// The file it is in.
    pub file: PathBuf,
    /// Its subject's common name (empty without one).
    pub subject: String,
    /// Its end of validity (unix seconds); `None` when the file could not be read.
    pub not_after: Option<i64>,
    /// Why it could not be read.
    pub error: Option<String>,
}

impl CertStatus {
    /// Whole days from `now` to the end of validity (negative once expired).
    pub fn days_left(&self, now: u64) -> Option<i64> {
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        self.not_after.map(|t| (t - now).div_euclid(86_400))
    }

    /// True when it expires within [`EXPIRY_WARNING_DAYS`] (or has expired).
    pub fn expiring(&self, now: u64) -> bool {
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        self.not_after
            .is_some_and(|t| expires_within(t, now, EXPIRY_WARNING_DAYS))
    }

    /// The JSON object.
    pub fn json(&self, now: u64) -> Json {
        Json::obj([
            ("role", Json::str(self.role.clone())),
            ("file", Json::str(self.file.display().to_string())),
            ("subject", Json::str(self.subject.clone())),
            ("not_after", self.not_after.map_or(Json::Null, Json::num)),
            (
                "not_after_text",
                Json::opt_str(self.not_after.map(utc_text)),
            ),
            (
                "days_left",
                self.days_left(now).map_or(Json::Null, Json::num),
            ),
            ("expiring", Json::Bool(self.expiring(now))),
            ("error", Json::opt_str(self.error.clone())),
        ])
    }

    /// One human line (no line feed).
    pub fn text(&self, now: u64) -> String {
        let what = format!("{:<14} {}", self.role, self.file.display());
        match (self.not_after, &self.error) {
            (Some(t), _) => {
                let days = self.days_left(now).unwrap_or(0);
                let when = if days < 0 {
                    format!("EXPIRED {}", utc_text(t))
                } else if self.expiring(now) {
                    format!("EXPIRES SOON {} ({days} days)", utc_text(t))
                } else {
                    format!("expires {} ({days} days)", utc_text(t))
                };
                let subject = if self.subject.is_empty() {
                    String::new()
                } else {
                    format!(" CN={}", self.subject)
                };
                format!("{what}{subject}: {when}")
            }
            (None, Some(e)) => format!("{what}: unreadable: {e}"),
            (None, None) => format!("{what}: unreadable"),
        }
    }
}

/// The certificates in `path` (PEM with one or more, or one DER), each as `role`.
pub fn certificates_in(role: &str, path: &Path) -> Vec<CertStatus> {
    let failed = |e: String| {
        vec![CertStatus {
            role: role.to_owned(),
            file: path.to_owned(),
            subject: String::new(),
            not_after: None,
            error: Some(e),
        }]
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return failed(e.to_string()),
    };
    let certs = match parse_certificates(&bytes) {
        Ok(c) => c,
        Err(e) => return failed(e.to_string()),
    };
    certs
        .iter()
        .map(|der| CertStatus {
            role: role.to_owned(),
            file: path.to_owned(),
            subject: subject_cn(der).unwrap_or_default(),
            not_after: not_after(der),
            error: None,
        })
        .collect()
}

/// The end of a certificate's validity (unix seconds).
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

// ---------------------------------------------------------------------------------------
// Delivery counts over time.

/// What became of one recipient's delivery attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered.
    Sent,
    /// Failed for now; will be tried again.
    Deferred,
    /// Failed for good.
    Bounced,
}

/// Counts of outcomes: sent, deferred, bounced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Delivered.
    pub sent: u64,
    /// Deferred.
    pub deferred: u64,
    /// Bounced.
    pub bounced: u64,
}

impl Tally {
    fn add(&mut self, outcome: Outcome, n: u64) {
        match outcome {
            Outcome::Sent => self.sent += n,
            Outcome::Deferred => self.deferred += n,
            Outcome::Bounced => self.bounced += n,
        }
    }

    fn plus(&mut self, other: &Tally) {
        self.sent += other.sent;
        self.deferred += other.deferred;
        self.bounced += other.bounced;
    }
}

/// Buckets of one time unit in a ring.
const BUCKETS: usize = 60;

#[derive(Debug)]
struct Recent {
    /// By second: (the second, its tally).
    seconds: [(u64, Tally); BUCKETS],
    /// By minute: (the minute, its tally).
    minutes: [(u64, Tally); BUCKETS],
    total: Tally,
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            seconds: [(u64::MAX, Tally::default()); BUCKETS],
            minutes: [(u64::MAX, Tally::default()); BUCKETS],
            total: Tally::default(),
        }
    }
}

/// Delivery outcomes of the last minute and the last hour, and since the start. Clones
/// share the counts. Each update takes a short lock; nothing here waits on IO.
#[derive(Clone, Debug, Default)]
pub struct RecentCounts(Arc<Mutex<Recent>>);

/// What [`RecentCounts::snapshot`] returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecentTallies {
    /// The last 60 seconds.
    pub minute: Tally,
    /// The last 60 minutes (this one and the 59 before it).
    pub hour: Tally,
    /// Since the counts began.
    pub total: Tally,
}

impl RecentCounts {
    /// Counts one outcome at `now` (unix seconds).
    pub fn add(&self, outcome: Outcome, now: u64) {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let r = &mut *guard;
        for (ring, unit) in [(&mut r.seconds, now), (&mut r.minutes, now / 60)] {
            let slot = &mut ring[(unit % BUCKETS as u64) as usize];
            if slot.0 != unit {
                *slot = (unit, Tally::default());
            }
            slot.1.add(outcome, 1);
        }
        r.total.add(outcome, 1);
    }

    /// The tallies as of `now` (unix seconds).
    pub fn snapshot(&self, now: u64) -> RecentTallies {
        let r = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = RecentTallies {
            total: r.total,
            ..RecentTallies::default()
        };
        let within = |unit: u64, current: u64| unit <= current && current - unit < BUCKETS as u64;
        for (unit, tally) in &r.seconds {
            if within(*unit, now) {
                out.minute.plus(tally);
            }
        }
        for (unit, tally) in &r.minutes {
            if within(*unit, now / 60) {
                out.hour.plus(tally);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_spool_folder_replaced_by_a_link_is_not_listed() {
        let base =
            std::env::temp_dir().join(format!("certrelay-status-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (spool, elsewhere) = (base.join("spool"), base.join("elsewhere"));
        std::fs::create_dir_all(&spool).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("X1.msg"), "not ours").unwrap();
        assert!(super::queue_summary(&spool).is_ok());
        std::os::unix::fs::symlink(&elsewhere, spool.join("queue")).unwrap();
        let err = super::queue_summary(&spool).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        std::fs::remove_dir_all(&base).unwrap();
    }

    use super::*;
    use std::os::unix::fs::symlink;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("certrelay-status-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn json_escapes_what_must_be_escaped() {
        let v = Json::obj([
            ("a\"b", Json::str("line\nbreak \\ \"quoted\" \u{1} tab\t é")),
            ("n", Json::num(-3i64)),
            (
                "list",
                Json::Arr(vec![Json::Null, Json::Bool(true), Json::num(7u64)]),
            ),
            ("empty", Json::Obj(Vec::new())),
        ]);
        assert_eq!(
            v.render(),
            "{\"a\\\"b\":\"line\\nbreak \\\\ \\\"quoted\\\" \\u0001 tab\\t é\",\"n\":-3,\
             \"list\":[null,true,7],\"empty\":{}}"
        );
    }

    #[test]
    fn fields_read_back_and_garbage_is_refused() {
        let mut f = Fields::new();
        f.push("pid", 42);
        f.push("listener", "127.0.0.1:25 starttls");
        f.push("listener", "[::1]:25 none\nforged 1");
        let back = Fields::parse(&f.render()).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.number("pid"), Ok(42));
        assert_eq!(back.all("listener").count(), 2);
        assert!(back.number("sessions").is_err());
        assert!(back.get("forged").is_none());
        assert!(Fields::parse("pid 1\n\u{0}\u{1}garbage").is_err());
        assert!(Fields::parse("Pid 1").is_err());
        assert!(Fields::parse("pid x").unwrap().number("pid").is_err());
        // An escape sequence meant for root's terminal: refused when read, never written.
        assert_eq!(
            Fields::parse("reload_error \u{1b}]0;owned\u{7}"),
            Err("line 1: a control character".to_owned())
        );
        let mut f = Fields::new();
        f.push("reload_error", "a\u{1b}[2Jb");
        assert_eq!(f.render(), "reload_error a?[2Jb\n");
    }

    #[test]
    fn claims_refuse_links_special_files_foreign_owners_and_big_files() {
        let dir = temp("claims");
        let target = dir.join("secret");
        std::fs::write(&target, "pid 1\n").unwrap();
        let link = dir.join("link");
        symlink(&target, &link).unwrap();
        assert!(matches!(read_claim(&link, &[], 100), Err(ClaimError::Link)));
        assert!(matches!(
            read_claim(&dir, &[], 100),
            Err(ClaimError::NotPlain)
        ));
        let uid = std::fs::metadata(&target).unwrap().uid();
        assert_eq!(read_claim(&target, &[uid], 100).unwrap(), "pid 1\n");
        assert!(matches!(
            read_claim(&target, &[uid.wrapping_add(1)], 100),
            Err(ClaimError::Owner { .. })
        ));
        assert!(matches!(
            read_claim(&target, &[], 3),
            Err(ClaimError::TooBig(6))
        ));
        std::fs::write(&target, [0xffu8, 0xfe]).unwrap();
        assert!(matches!(
            read_claim(&target, &[], 100),
            Err(ClaimError::Read(_))
        ));
        // A FIFO is refused without blocking on it.
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            assert!(matches!(
                read_claim(&fifo, &[], 100),
                Err(ClaimError::NotPlain)
            ));
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn recent_counts_forget_what_is_older_than_a_minute_or_an_hour() {
        let c = RecentCounts::default();
        let t = 1_000_000u64;
        c.add(Outcome::Sent, t);
        c.add(Outcome::Deferred, t + 30);
        c.add(Outcome::Bounced, t + 61);
        let s = c.snapshot(t + 61);
        assert_eq!(
            (s.minute.sent, s.minute.deferred, s.minute.bounced),
            (0, 1, 1)
        );
        assert_eq!((s.hour.sent, s.hour.deferred, s.hour.bounced), (1, 1, 1));
        let later = c.snapshot(t + 2 * 3600);
        assert_eq!(later.minute, Tally::default());
        assert_eq!(later.hour, Tally::default());
        assert_eq!(
            later.total.sent + later.total.deferred + later.total.bounced,
            3
        );
        // A bucket reused a minute later starts from zero.
        c.add(Outcome::Sent, t + 60);
        assert_eq!(c.snapshot(t + 60).minute.sent, 1);
    }

    #[test]
    fn reasons_are_one_clean_line_of_bounded_length() {
        assert_eq!(clean_reason("a\r\nb"), "a  b");
        let long = "x".repeat(500);
        assert_eq!(clean_reason(&long).chars().count(), MAX_REASON_CHARS + 3);
    }

    #[test]
    fn spans_and_dates_read_well() {
        assert_eq!(span_text(12), "12s");
        assert_eq!(span_text(250), "4m 10s");
        assert_eq!(span_text(7500), "2h 5m");
        assert_eq!(span_text(3 * 86_400 + 4 * 3600), "3d 4h");
        assert_eq!(utc_text(0), "1970-01-01 00:00 UTC");
    }
}
