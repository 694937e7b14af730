//! What enrollment keeps beside the relay's spool, owned by `mail_owner` (the running relay
//! has given root up and cannot write root's files): the table of enrolled laptops and the
//! pending pairing codes.
//!
//! - `$queue_directory/enrolled_clientcerts`: a table in `relay_clientcerts` syntax
//!   (`FINGERPRINT label` lines), read with it by the relay's lookup, `check` and `revoke`.
//!   A renewal adds the new fingerprint beside the old one and a comment line
//!   `# renewal: NEW replaces OLD until UNIXTIME` (or `... replaces OLD in relay_clientcerts`
//!   when the old one is listed in root's table, which the relay cannot edit). Comments keep
//!   the table plain for every reader.
//! - `$queue_directory/enroll_codes/ID`: one file per pending code, `salt hash name expires
//!   lifetime` (hex salt, hex SHA-256 of salt and secret, Unix seconds, seconds). Only the
//!   hash is kept; a code is used by renaming its file to `ID.used`, which only one
//!   session can do.
//!
//! Every change of the table (the relay's pairings and renewals, root's `revoke`) reads,
//! edits and replaces it while holding an exclusive `flock` on the directory that holds it
//! ([`TableLock`]), so that two processes editing at once cannot lose one's edit: a revoke
//! undone by a renewal written from the text read before it.
//!
//! Not here: signing ([`super::enroll`]), counting attempts, reloading the relay (its binary).

use super::error::PkiError;
use super::files;
use super::map::{check_not_listed, MapEdit};
use super::names::check_label;
use certrelay_core::fingerprint::{DigestKind, Fingerprint};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The enrolled table's file name in the queue directory.
pub const ENROLLED_MAP: &str = "enrolled_clientcerts";
/// The pending codes' directory in the queue directory.
pub const CODES_DIR: &str = "enroll_codes";
/// A code file is never larger (anything larger was not written by `enroll`).
const CODE_FILE_LIMIT: u64 = 1024;

/// How long an edit of the enrolled table waits for another's to end.
pub const TABLE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// An exclusive lock on the directory of a table, for one read-edit-replace of it. Held on
/// the directory rather than the file because the file is replaced by a rename; released
/// when dropped (and by the kernel should the process die).
#[derive(Debug)]
pub struct TableLock {
    /// The open directory: the lock lives as long as this handle.
    _held: fs::File,
}

impl TableLock {
    /// Waits for the lock of the directory holding `table`, at most [`TABLE_LOCK_WAIT`]:
    /// an edit takes milliseconds, so a lock held longer is a stuck or hostile holder, and
    /// the caller (root's `revoke`, a pairing) gets an error instead of hanging.
    pub fn take(table: &Path) -> Result<TableLock, PkiError> {
        TableLock::take_within(table, TABLE_LOCK_WAIT)
    }

    /// [`TableLock::take`], waiting at most `wait`.
    fn take_within(table: &Path, wait: std::time::Duration) -> Result<TableLock, PkiError> {
        let dir = match table.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let failed = |action| {
            move |err| PkiError::Io {
                path: dir.to_path_buf(),
                action,
                err,
            }
        };
        let handle = fs::File::open(dir).map_err(failed("open for the table lock"))?;
        let until = std::time::Instant::now() + wait;
        loop {
            match handle.try_lock() {
                Ok(()) => return Ok(TableLock { _held: handle }),
                Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < until => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    let why = format!(
                        "another process has held it for {:.1} s",
                        wait.as_secs_f64()
                    );
                    return Err(failed("take the table lock on")(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        why,
                    )));
                }
                Err(fs::TryLockError::Error(err)) => {
                    return Err(failed("take the table lock on")(err))
                }
            }
        }
    }
}

/// The enrolled table of the queue directory `queue_directory`.
pub fn enrolled_map(queue_directory: &Path) -> PathBuf {
    queue_directory.join(ENROLLED_MAP)
}

/// A renewal noted in the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renewal {
    /// The new certificate's fingerprint.
    pub new: Fingerprint,
    /// The one it replaces.
    pub old: Fingerprint,
    /// Until when (Unix seconds) the old one stays listed at most; `None` when it is in
    /// `relay_clientcerts`, where the operator removes it.
    pub until: Option<i64>,
}

const RENEWAL: &str = "# renewal: ";

impl Renewal {
    fn line(&self) -> String {
        match self.until {
            Some(until) => format!("{RENEWAL}{} replaces {} until {until}", self.new, self.old),
            None => format!(
                "{RENEWAL}{} replaces {} in relay_clientcerts",
                self.new, self.old
            ),
        }
    }

    fn parse(line: &str) -> Option<Renewal> {
        let rest = line.trim().strip_prefix(RENEWAL)?;
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.as_slice() {
            [new, "replaces", old, "until", until] => Some(Renewal {
                new: new.parse().ok()?,
                old: old.parse().ok()?,
                until: Some(until.parse().ok()?),
            }),
            [new, "replaces", old, "in", "relay_clientcerts"] => Some(Renewal {
                new: new.parse().ok()?,
                old: old.parse().ok()?,
                until: None,
            }),
            _ => None,
        }
    }
}

/// The renewals noted in a table's text.
pub fn renewals(text: &str) -> Vec<Renewal> {
    text.lines().filter_map(Renewal::parse).collect()
}

/// Entries of a table text: (fingerprint, label), continuation lines joined.
pub fn entries(text: &str) -> Vec<(Fingerprint, String)> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let body = line.trim();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        match out.last_mut() {
            Some(last) if line.starts_with(char::is_whitespace) => {
                last.push(' ');
                last.push_str(body);
            }
            _ => out.push(body.to_string()),
        }
    }
    out.iter()
        .filter_map(|entry| {
            let (key, value) = entry.split_once(char::is_whitespace)?;
            Some((key.parse().ok()?, value.trim().to_string()))
        })
        .collect()
}

/// Replaces the table's text, keeping its owner (root's `revoke` edits mail_owner's file).
fn replace_keeping_owner(path: &Path, text: &str) -> Result<(), PkiError> {
    let owner = fs::symlink_metadata(path).ok().map(|m| (m.uid(), m.gid()));
    files::replace(path, text)?;
    if let Some((uid, gid)) = owner {
        // lchown: a link planted in its place by mail_owner is not followed.
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|err| PkiError::Io {
            path: path.to_path_buf(),
            action: "give back to its owner",
            err,
        })?;
    }
    Ok(())
}

/// Removes the entries labelled or fingerprinted `what` (as `certrelayd revoke` does in
/// root's table), keeping the file's owner.
pub fn revoke(path: &Path, what: &str) -> Result<MapEdit, PkiError> {
    let _lock = TableLock::take(path)?;
    let owner = fs::symlink_metadata(path).ok().map(|m| (m.uid(), m.gid()));
    let edit = super::map::revoke(path, what)?;
    if let Some((uid, gid)) = owner {
        // lchown: a link planted in its place by mail_owner is not followed.
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|err| PkiError::Io {
            path: path.to_path_buf(),
            action: "give back to its owner",
            err,
        })?;
    }
    Ok(edit)
}

/// Lists `print` under `label` in the enrolled table at `path` (created if missing), as a
/// pairing does.
pub fn list(path: &Path, print: &Fingerprint, label: &str) -> Result<MapEdit, PkiError> {
    check_label(label)?;
    let _lock = TableLock::take(path)?;
    let text = files::read_text_or_empty(path)?;
    // The name too: of two codes issued for one name, the second laptop would share the
    // first one's label, and each one's renewal would unlist the other's certificate.
    check_not_listed(path, &text, print, Some(label.trim()))?;
    let line = print.relay_clientcerts_line(label.trim());
    let text = with_lines(text, std::slice::from_ref(&line));
    replace_keeping_owner(path, &text)?;
    Ok(MapEdit {
        path: path.to_path_buf(),
        added: vec![line],
        removed: Vec::new(),
    })
}

fn with_lines(mut text: String, lines: &[String]) -> String {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// Lists `new` under `label` as the renewal of `old` (the certificate that asked), noted
/// `until` when `old` is listed in this table, else as a renewal of a `relay_clientcerts`
/// entry. Bounded: of `label`'s entries here only `old` and `new` remain, so an earlier
/// renewal still pending (its answer lost, or asked for again with the same certificate) is
/// replaced, never added to, and one certificate cannot gather listed certificates. Only
/// entries a renewal note links to `old` go so: one that none links to is another laptop's
/// under the same label (root's `relay_clientcerts` may give several laptops one label), and
/// the renewal is refused ([`PkiError::SharedLabel`]) rather than unlisting it. Returns the
/// edit and the renewal noted.
pub fn list_renewal(
    path: &Path,
    label: &str,
    old: &Fingerprint,
    new: &Fingerprint,
    until: i64,
) -> Result<(MapEdit, Renewal), PkiError> {
    check_label(label)?;
    let label = label.trim();
    let _lock = TableLock::take(path)?;
    let text = files::read_text_or_empty(path)?;
    check_not_listed(path, &text, new, None)?;
    let listed = entries(&text);
    let renewal = Renewal {
        new: *new,
        old: *old,
        until: listed.iter().any(|(p, _)| p == old).then_some(until),
    };
    let doomed: Vec<Fingerprint> = listed
        .into_iter()
        .filter(|(p, l)| l == label && p != old)
        .map(|(p, _)| p)
        .collect();
    // An earlier renewal of `old`, or the certificate `old` itself renewed.
    let notes = renewals(&text);
    let linked = |p: &Fingerprint| {
        notes
            .iter()
            .any(|r| (r.old == *old && r.new == *p) || (r.new == *old && r.old == *p))
    };
    if let Some(other) = doomed.iter().find(|p| !linked(p)) {
        return Err(PkiError::SharedLabel {
            path: path.to_path_buf(),
            line: super::map::listed(&text)
                .iter()
                .find(|l| l.fingerprint == *other)
                .map_or(0, |l| l.line),
            label: label.to_owned(),
        });
    }
    let (kept, removed) = drop_lines(&text, &doomed, |r| {
        r.old == *old || doomed.contains(&r.new) || doomed.contains(&r.old)
    });
    let added = vec![renewal.line(), new.relay_clientcerts_line(label)];
    let text = with_lines(kept, &added);
    replace_keeping_owner(path, &text)?;
    Ok((
        MapEdit {
            path: path.to_path_buf(),
            added,
            removed,
        },
        renewal,
    ))
}

/// `text` without the entries of `doomed` (continuation lines too) and without the renewal
/// notes `note_goes` picks; the kept text and the removed lines.
fn drop_lines(
    text: &str,
    doomed: &[Fingerprint],
    note_goes: impl Fn(&Renewal) -> bool,
) -> (String, Vec<String>) {
    let mut kept = String::with_capacity(text.len());
    let mut removed = Vec::new();
    let mut dropping_entry = false;
    for line in text.lines() {
        let continues = line.starts_with(char::is_whitespace) && !line.trim().is_empty();
        let drop = if let Some(r) = Renewal::parse(line) {
            note_goes(&r)
        } else if line.trim().is_empty() || line.trim_start().starts_with('#') {
            false
        } else if continues {
            dropping_entry
        } else {
            let key = line.split_whitespace().next().unwrap_or("");
            dropping_entry = key
                .parse::<Fingerprint>()
                .is_ok_and(|p| doomed.contains(&p));
            dropping_entry
        };
        if drop {
            removed.push(line.to_string());
        } else {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    (kept, removed)
}

/// Ends the renewals of the table at `path` whose new certificate is `used`, or whose time is
/// up at `now`: the old fingerprint's entry and the note go. Renewals of certificates in
/// `relay_clientcerts` stay noted (the operator removes the old one there). `None` when
/// nothing changed.
pub fn end_renewals(
    path: &Path,
    used: Option<&Fingerprint>,
    now: i64,
) -> Result<Option<MapEdit>, PkiError> {
    let _lock = TableLock::take(path)?;
    let text = files::read_text_or_empty(path)?;
    let done: Vec<Renewal> = renewals(&text)
        .into_iter()
        .filter(|r| {
            r.until
                .is_some_and(|until| Some(&r.new) == used || until <= now)
        })
        .collect();
    if done.is_empty() {
        return Ok(None);
    }
    let doomed: Vec<Fingerprint> = done.iter().map(|r| r.old).collect();
    let (kept, removed) = drop_lines(&text, &doomed, |r| done.contains(r));
    replace_keeping_owner(path, &kept)?;
    Ok(Some(MapEdit {
        path: path.to_path_buf(),
        added: Vec::new(),
        removed,
    }))
}

/// A pending code as its file holds it.
#[derive(Clone, Debug)]
struct CodeFile {
    salt: Vec<u8>,
    hash: Vec<u8>,
    name: String,
    expires: i64,
    lifetime: u64,
}

impl CodeFile {
    fn render(&self) -> String {
        format!(
            "{} {} {} {} {}\n",
            hex(&self.salt),
            hex(&self.hash),
            self.name,
            self.expires,
            self.lifetime
        )
    }

    fn parse(text: &str) -> Option<CodeFile> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let [salt, hash, name, expires, lifetime] = words.as_slice() else {
            return None;
        };
        Some(CodeFile {
            salt: unhex(salt)?,
            hash: unhex(hash)?,
            name: name.to_string(),
            expires: expires.parse().ok()?,
            lifetime: lifetime.parse().ok()?,
        })
    }

    fn matches(&self, secret: &[u8]) -> bool {
        constant_time_eq(&hash_secret(&self.salt, secret), &self.hash)
    }
}

fn hash_secret(salt: &[u8], secret: &[u8]) -> Vec<u8> {
    let mut data = salt.to_vec();
    data.extend_from_slice(secret);
    Fingerprint::of(DigestKind::Sha256, &data)
        .as_bytes()
        .to_vec()
}

/// Equal lengths and contents, in a time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// A new pending code, as the root `enroll` command writes it.
pub struct NewCode<'a> {
    /// The queue directory.
    pub queue_directory: &'a Path,
    /// 8 random octets naming the file.
    pub id: [u8; 8],
    /// 16 random octets of salt.
    pub salt: [u8; 16],
    /// The secret (5 octets).
    pub secret: [u8; 5],
    /// The laptop's name.
    pub name: &'a str,
    /// When the code expires, Unix seconds.
    pub expires: i64,
    /// The lifetime of the certificate it gets, seconds.
    pub lifetime: u64,
    /// Owner (uid, gid) to give the directory and the file (`mail_owner`), when run as root.
    pub owner: Option<(u32, u32)>,
}

/// Writes a pending code (only its salted hash), mode 0600 in a 0700 directory, owned by
/// `owner`. Returns the file.
pub fn write_code(code: &NewCode<'_>) -> Result<PathBuf, PkiError> {
    super::names::check_file_name(code.name)?;
    let dir = code.queue_directory.join(CODES_DIR);
    match fs::symlink_metadata(&dir) {
        Err(_) => {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(|err| PkiError::Io {
                    path: dir.clone(),
                    action: "create directory",
                    err,
                })?;
            own(&open_no_follow(&dir, false)?, &dir, 0o700, code.owner)?;
        }
        Ok(meta) if !meta.is_dir() => {
            return Err(PkiError::BadInput {
                path: dir,
                reason: String::from("is not a directory (a link is not followed)"),
            })
        }
        Ok(_) => {}
    }
    let path = dir.join(hex(&code.id));
    let file = CodeFile {
        salt: code.salt.to_vec(),
        hash: hash_secret(&code.salt, &code.secret),
        name: code.name.to_string(),
        expires: code.expires,
        lifetime: code.lifetime,
    };
    let mut out = open_no_follow(&path, true)?;
    own(&out, &path, 0o600, code.owner)?;
    std::io::Write::write_all(&mut out, file.render().as_bytes())
        .and_then(|()| out.sync_all())
        .map_err(|err| PkiError::Io {
            path: path.clone(),
            action: "write",
            err,
        })?;
    Ok(path)
}

/// Opens `path` without following a link in its last part: a new private file (`create`),
/// or the directory just made. Root works here in a folder `mail_owner` may write.
fn open_no_follow(path: &Path, create: bool) -> Result<fs::File, PkiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = fs::OpenOptions::new();
    if create {
        options.write(true).create_new(true).mode(0o600);
    } else {
        options.read(true).custom_flags(libc::O_DIRECTORY);
    }
    options
        .custom_flags(libc::O_NOFOLLOW | if create { 0 } else { libc::O_DIRECTORY })
        .open(path)
        .map_err(|err| PkiError::Io {
            path: path.to_path_buf(),
            action: "open",
            err,
        })
}

/// Sets the mode and owner of the open `file` (never of whatever its path names later).
fn own(file: &fs::File, path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<(), PkiError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |err| PkiError::Io {
        path: path.to_path_buf(),
        action: "set the owner and mode of",
        err,
    };
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(err)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(file, Some(uid), Some(gid)).map_err(err)?;
    }
    Ok(())
}

/// What became of a presented secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redeemed {
    /// A pending code, now used: the laptop's name and its certificate's lifetime (seconds).
    Valid {
        /// The name the code was made for.
        name: String,
        /// Lifetime of the certificate, seconds.
        lifetime: u64,
    },
    /// No pending code has this secret.
    Unknown,
    /// The code for `name` has expired.
    Expired(String),
    /// The code for `name` was used already.
    Used(String),
}

/// Reads one code file without following links; `None` for anything that is not a small
/// regular file in the shape `write_code` writes.
fn read_code(path: &Path) -> Option<CodeFile> {
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_file() || meta.len() > CODE_FILE_LIMIT {
        return None;
    }
    let mut text = String::new();
    fs::File::open(path)
        .ok()?
        .take(CODE_FILE_LIMIT)
        .read_to_string(&mut text)
        .ok()?;
    CodeFile::parse(&text)
}

/// Looks `secret` up among the pending codes of `queue_directory` at `now` and uses the one
/// it opens (renamed to `ID.used`, which only one caller can do). Used and expired files
/// older than a day past their expiry are removed on the way.
pub fn redeem(queue_directory: &Path, secret: &[u8], now: i64) -> io::Result<Redeemed> {
    let dir = queue_directory.join(CODES_DIR);
    let listing = match fs::read_dir(&dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Redeemed::Unknown),
        Err(e) => return Err(e),
    };
    let mut found = Redeemed::Unknown;
    for entry in listing {
        let entry = entry?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let (id, used) = match file_name.strip_suffix(".used") {
            Some(id) => (id.to_string(), true),
            None => (file_name.clone(), false),
        };
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let path = entry.path();
        let Some(code) = read_code(&path) else {
            continue;
        };
        if code.expires + 86_400 < now {
            let _ = fs::remove_file(&path);
        }
        if found != Redeemed::Unknown || !code.matches(secret) {
            continue;
        }
        found = if used {
            Redeemed::Used(code.name)
        } else if code.expires <= now {
            Redeemed::Expired(code.name)
        } else {
            match fs::rename(&path, dir.join(format!("{id}.used"))) {
                Ok(()) => Redeemed::Valid {
                    name: code.name,
                    lifetime: code.lifetime,
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => Redeemed::Used(code.name),
                Err(e) => return Err(e),
            }
        };
    }
    Ok(found)
}

/// The pending codes (not used, not expired) of `queue_directory` at `now`: name and expiry.
pub fn pending_codes(queue_directory: &Path, now: i64) -> Vec<(String, i64)> {
    let Ok(listing) = fs::read_dir(queue_directory.join(CODES_DIR)) else {
        return Vec::new();
    };
    let mut out: Vec<(String, i64)> = listing
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().contains('.'))
        .filter_map(|e| read_code(&e.path()))
        .filter(|c| c.expires > now)
        .map(|c| (c.name, c.expires))
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("enrolled-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn print(n: u8) -> Fingerprint {
        Fingerprint::of(DigestKind::Sha256, &[n])
    }

    #[test]
    fn edits_of_two_processes_at_once_lose_nothing() {
        // Two writers as root's revoke and the relay would be: each its own open of the
        // directory, so the flocks exclude each other as between processes.
        let dir = temp("locked");
        let path = dir.join(ENROLLED_MAP);
        let lister = {
            let path = path.clone();
            std::thread::spawn(move || {
                for n in 0..60u8 {
                    list(&path, &print(n), &format!("keep{n}")).unwrap();
                }
            })
        };
        for n in 100..160u8 {
            list(&path, &print(n), &format!("gone{n}")).unwrap();
            revoke(&path, &format!("gone{n}")).unwrap();
        }
        lister.join().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let listed = entries(&text);
        for n in 0..60u8 {
            assert!(
                listed.iter().any(|(p, _)| *p == print(n)),
                "keep{n} lost:\n{text}"
            );
        }
        assert!(!text.contains("gone"), "{text}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_second_pairing_under_a_listed_name_is_refused() {
        let dir = temp("samename");
        let path = dir.join(ENROLLED_MAP);
        list(&path, &print(1), "alice").unwrap();
        let refused = list(&path, &print(2), "alice").unwrap_err();
        assert!(matches!(refused, PkiError::Duplicate { .. }), "{refused}");
        // Where the name stands already.
        assert!(
            refused
                .to_string()
                .contains(":1: name \"alice\" is listed already"),
            "{refused}"
        );
        assert_eq!(entries(&fs::read_to_string(&path).unwrap()).len(), 1);
        list(&path, &print(2), "bob").unwrap();
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_lock_held_too_long_is_an_error_that_says_so() {
        let dir = temp("lockheld");
        let path = dir.join(ENROLLED_MAP);
        let held = TableLock::take(&path).unwrap();
        let refused = TableLock::take_within(&path, std::time::Duration::from_millis(100))
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("cannot take the table lock on"),
            "{refused}"
        );
        assert!(
            refused.contains("another process has held it for 0.1 s"),
            "{refused}"
        );
        drop(held);
        TableLock::take_within(&path, std::time::Duration::from_millis(100)).unwrap();
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_revoke_waits_while_another_holds_the_table() {
        let dir = temp("lockwait");
        let path = dir.join(ENROLLED_MAP);
        list(&path, &print(1), "alice").unwrap();
        let held = TableLock::take(&path).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let revoking = {
            let path = path.clone();
            std::thread::spawn(move || {
                revoke(&path, "alice").unwrap();
                done.send(()).unwrap();
            })
        };
        assert!(
            finished
                .recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "revoked while the table was held"
        );
        assert!(fs::read_to_string(&path).unwrap().contains("alice"));
        drop(held);
        finished
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap();
        revoking.join().unwrap();
        assert!(!fs::read_to_string(&path).unwrap().contains("alice"));
        fs::remove_dir_all(dir).unwrap();
    }

    fn new_code<'a>(dir: &'a Path, id: u8, secret: [u8; 5], expires: i64) -> NewCode<'a> {
        NewCode {
            queue_directory: dir,
            id: [id; 8],
            salt: [id; 16],
            secret,
            name: "alice",
            expires,
            lifetime: 3600,
            owner: None,
        }
    }

    /// Root writes codes in a folder mail_owner may change: a link put where the codes'
    /// folder or a code file goes is refused, and what it points at is left alone.
    #[test]
    fn root_writes_no_code_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp("enroll-link");
        let elsewhere = temp("enroll-link-target");
        fs::write(elsewhere.join("precious"), "keep\n").unwrap();
        fs::set_permissions(
            elsewhere.join("precious"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join(CODES_DIR)).unwrap();
        assert!(write_code(&new_code(&dir, 1, [1; 5], i64::MAX)).is_err());
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 1);
        // A code file's name taken by a link to another file: refused, the file untouched.
        fs::remove_file(dir.join(CODES_DIR)).unwrap();
        fs::create_dir(dir.join(CODES_DIR)).unwrap();
        let code = new_code(&dir, 2, [2; 5], i64::MAX);
        std::os::unix::fs::symlink(
            elsewhere.join("precious"),
            dir.join(CODES_DIR).join(hex(&code.id)),
        )
        .unwrap();
        assert!(write_code(&code).is_err());
        assert_eq!(
            fs::read_to_string(elsewhere.join("precious")).unwrap(),
            "keep\n"
        );
        let mode = fs::metadata(elsewhere.join("precious"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn a_code_is_stored_hashed_and_used_once() {
        let dir = temp("codes");
        let path = write_code(&new_code(&dir, 1, [1, 2, 3, 4, 5], 1000)).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&hex(&[1, 2, 3, 4, 5])), "{text}");
        assert_eq!(pending_codes(&dir, 10), [("alice".to_string(), 1000)]);
        assert_eq!(
            redeem(&dir, &[9, 9, 9, 9, 9], 10).unwrap(),
            Redeemed::Unknown
        );
        assert_eq!(
            redeem(&dir, &[1, 2, 3, 4, 5], 10).unwrap(),
            Redeemed::Valid {
                name: "alice".into(),
                lifetime: 3600
            }
        );
        assert_eq!(
            redeem(&dir, &[1, 2, 3, 4, 5], 11).unwrap(),
            Redeemed::Used("alice".into())
        );
        assert!(pending_codes(&dir, 10).is_empty());
        write_code(&new_code(&dir, 2, [7; 5], 1000)).unwrap();
        assert_eq!(
            redeem(&dir, &[7; 5], 1000).unwrap(),
            Redeemed::Expired("alice".into())
        );
        // Long expired: cleaned up.
        redeem(&dir, &[0; 5], 1_000_000).unwrap();
        assert_eq!(fs::read_dir(dir.join(CODES_DIR)).unwrap().count(), 0);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn garbage_and_links_in_the_codes_directory_are_skipped() {
        let dir = temp("garbage");
        write_code(&new_code(&dir, 3, [3; 5], 1000)).unwrap();
        let codes = dir.join(CODES_DIR);
        fs::write(codes.join("00000000000000ff"), "not a code").unwrap();
        fs::write(codes.join("00000000000000fe"), "x".repeat(5000)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", codes.join("00000000000000fd")).unwrap();
        assert_eq!(redeem(&dir, &[4; 5], 10).unwrap(), Redeemed::Unknown);
        assert!(matches!(
            redeem(&dir, &[3; 5], 10).unwrap(),
            Redeemed::Valid { .. }
        ));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_renewal_lists_both_until_the_new_one_is_used() {
        let dir = temp("renewal");
        let map = dir.join(ENROLLED_MAP);
        fs::write(&map, "# enrolled laptops\n").unwrap();
        list(&map, &print(1), "alice").unwrap();
        list(&map, &print(7), "bob").unwrap();
        let (_, renewal) = list_renewal(&map, "alice", &print(1), &print(2), 500).unwrap();
        assert_eq!(
            renewal,
            Renewal {
                new: print(2),
                old: print(1),
                until: Some(500),
            }
        );
        let text = fs::read_to_string(&map).unwrap();
        assert_eq!(entries(&text).len(), 3);
        assert_eq!(renewals(&text), std::slice::from_ref(&renewal));
        assert!(list(&map, &print(2), "alice").is_err());
        // Another certificate's use changes nothing.
        assert_eq!(end_renewals(&map, Some(&print(7)), 10).unwrap(), None);
        let edit = end_renewals(&map, Some(&print(2)), 10).unwrap().unwrap();
        assert_eq!(edit.removed.len(), 2);
        let text = fs::read_to_string(&map).unwrap();
        assert_eq!(
            entries(&text),
            [
                (print(7), "bob".to_string()),
                (print(2), "alice".to_string())
            ]
        );
        assert!(text.starts_with("# enrolled laptops\n"));
        assert!(renewals(&text).is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_renewal_ends_when_its_time_is_up_but_not_one_of_root_s_table() {
        let dir = temp("grace");
        let map = dir.join(ENROLLED_MAP);
        list(&map, &print(1), "alice").unwrap();
        list_renewal(&map, "alice", &print(1), &print(2), 500).unwrap();
        // print(3) is not in this table: it is in root's.
        let (_, roots) = list_renewal(&map, "carol", &print(3), &print(4), 500).unwrap();
        assert_eq!(roots.until, None);
        assert_eq!(end_renewals(&map, None, 499).unwrap(), None);
        assert!(end_renewals(&map, Some(&print(4)), 499).unwrap().is_none());
        end_renewals(&map, None, 500).unwrap().unwrap();
        let text = fs::read_to_string(&map).unwrap();
        assert_eq!(renewals(&text), [roots]);
        assert_eq!(entries(&text).len(), 2);
        let _ = fs::remove_dir_all(&dir);
    }

    /// The attack of a stolen (or any) listed certificate: renewing again and again. Each
    /// renewal replaces the pending one, so the table never lists more than the old
    /// certificate and one new one for the label; the same holds for a certificate of root's
    /// table, and for a chain of renewals from it.
    #[test]
    fn renewing_again_replaces_the_pending_renewal_and_never_adds() {
        let dir = temp("renew-again");
        let map = dir.join(ENROLLED_MAP);
        list(&map, &print(1), "alice").unwrap();
        list(&map, &print(7), "bob").unwrap();
        let alice = |text: &str| -> Vec<Fingerprint> {
            entries(text)
                .into_iter()
                .filter(|(_, l)| l == "alice")
                .map(|(p, _)| p)
                .collect()
        };
        for n in 2..6 {
            let (edit, _) = list_renewal(&map, "alice", &print(1), &print(n), 500).unwrap();
            let text = fs::read_to_string(&map).unwrap();
            assert_eq!(alice(&text), [print(1), print(n)], "{text}");
            assert_eq!(renewals(&text).len(), 1, "{text}");
            assert_eq!(edit.removed.len(), if n == 2 { 0 } else { 2 }, "{edit:?}");
        }
        // The renewed certificate renewing in turn: the first renewal is over (it is in use).
        list_renewal(&map, "alice", &print(5), &print(6), 900).unwrap();
        let text = fs::read_to_string(&map).unwrap();
        assert_eq!(alice(&text), [print(5), print(6)], "{text}");
        assert_eq!(renewals(&text).len(), 1, "{text}");
        assert!(entries(&text).contains(&(print(7), "bob".to_string())));
        // Root's certificate print(20) for carol, renewed again and again: one new at a time.
        let carol = |text: &str| -> Vec<Fingerprint> {
            entries(text)
                .into_iter()
                .filter(|(_, l)| l == "carol")
                .map(|(p, _)| p)
                .collect()
        };
        for n in 21..24 {
            list_renewal(&map, "carol", &print(20), &print(n), 500).unwrap();
            let text = fs::read_to_string(&map).unwrap();
            assert_eq!(carol(&text), [print(n)], "{text}");
        }
        // The new one renewed and in use: root's print(20) renewing once more would unlist
        // the certificate in use, which no note links to it now: refused, nothing written.
        list_renewal(&map, "carol", &print(23), &print(24), 500).unwrap();
        end_renewals(&map, Some(&print(24)), 10).unwrap().unwrap();
        let before = fs::read_to_string(&map).unwrap();
        assert_eq!(carol(&before), [print(24)], "{before}");
        let refused = list_renewal(&map, "carol", &print(20), &print(25), 500).unwrap_err();
        assert!(matches!(refused, PkiError::SharedLabel { .. }), "{refused}");
        assert_eq!(fs::read_to_string(&map).unwrap(), before);
        let _ = fs::remove_dir_all(&dir);
    }

    /// Root's `relay_clientcerts` may give several laptops one label (its second column is
    /// free text in Postfix's recipe): each one's renewal must not unlist another's.
    #[test]
    fn a_renewal_never_unlists_another_laptop_s_certificate_under_the_same_label() {
        let dir = temp("shared-label");
        let map = dir.join(ENROLLED_MAP);
        fs::write(&map, "# enrolled laptops\n").unwrap();
        // print(30) and print(40): two laptops listed in root's table, both as "ok".
        list_renewal(&map, "ok", &print(30), &print(31), 500).unwrap();
        let before = fs::read_to_string(&map).unwrap();
        let refused = list_renewal(&map, "ok", &print(40), &print(41), 500).unwrap_err();
        match &refused {
            PkiError::SharedLabel { line, label, .. } => {
                assert_eq!(label, "ok");
                assert!(before
                    .lines()
                    .nth(line - 1)
                    .unwrap()
                    .contains(&print(31).to_string()));
            }
            other => panic!("{other}"),
        }
        assert!(
            refused.to_string().contains("a label of its own"),
            "{refused}"
        );
        assert_eq!(fs::read_to_string(&map).unwrap(), before);
        // The first laptop renews on as before: its pending renewal is replaced, and its
        // new certificate renews in turn.
        list_renewal(&map, "ok", &print(30), &print(32), 500).unwrap();
        list_renewal(&map, "ok", &print(32), &print(33), 500).unwrap();
        let text = fs::read_to_string(&map).unwrap();
        let ok: Vec<_> = entries(&text).into_iter().map(|(p, _)| p).collect();
        assert_eq!(ok, [print(32), print(33)], "{text}");
        let _ = fs::remove_dir_all(&dir);
    }
}
