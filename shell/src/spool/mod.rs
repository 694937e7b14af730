//! The durable spool: one file per queued message, and an envelope file once its envelope
//! changed.
//!
//! Layout under the queue directory, every step visible with `ls`:
//!
//! - `tmp/`: messages being received, and the relay's spare files (`spare-N`: files of
//!   removed messages kept to take new ones, [`Spool::recycling`]). Nothing here was ever
//!   acknowledged; cleared at start.
//! - `queue/ID.msg`: the message content, then the envelope record it arrived with, then a
//!   one-line trailer that says where the content ends (`certrelay-content-length` and 16
//!   hex digits). Never changed once committed.
//! - `queue/ID.env`: the envelope record once a delivery attempt changed it, replaced whole
//!   (write, fsync, rename) on each update; when present, it is the envelope.
//! - `corrupt/`: files that could not be read back, moved aside for a person to look at.
//!
//! A message is committed when its `.msg`, synced, is renamed into `queue/` and the
//! directory is synced: one file written (created, or a spare reused), two fsyncs, per
//! message. A crash at any instant
//! leaves either a complete message or nothing that was acknowledged. Messages committed at
//! about the same moment share the directory's sync (group commit, [`commit`]; a sync about
//! to start waits, briefly, for the commits under way): each still returns only after a
//! sync of `queue/` that began after its own rename.
//!
//! A `.msg` without a trailer is the layout of earlier versions (content only, with its
//! `.env` beside it); it is read as such.
//!
//! These calls block (fsync); the async shells run them on the blocking pool.

pub mod commit;
pub mod listing;
pub mod maildrop;

use commit::{GroupSync, SyncFn};

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The start of the last line of a `.msg` file.
const TRAILER_TAG: &str = "certrelay-content-length ";

/// Length of that line: the tag, 16 hex digits, a line feed.
const TRAILER_LEN: u64 = TRAILER_TAG.len() as u64 + 17;

/// The last line of a `.msg` file whose content is `content_len` bytes long.
fn trailer(content_len: u64) -> String {
    format!("{TRAILER_TAG}{content_len:016x}\n")
}

/// Where the content of an open `.msg` file ends, and where its embedded envelope ends;
/// `None` for a file without a trailer (the earlier layout: content only).
fn content_bounds(file: &File) -> io::Result<Option<(u64, u64)>> {
    let len = file.metadata()?.len();
    if len < TRAILER_LEN {
        return Ok(None);
    }
    let mut last = [0u8; TRAILER_LEN as usize];
    file.read_exact_at(&mut last, len - TRAILER_LEN)?;
    let Some(digits) = last
        .strip_prefix(TRAILER_TAG.as_bytes())
        .and_then(|rest| rest.strip_suffix(b"\n"))
    else {
        return Ok(None);
    };
    let content = std::str::from_utf8(digits)
        .ok()
        .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|d| u64::from_str_radix(d, 16).ok())
        .filter(|&c| c <= len - TRAILER_LEN);
    Ok(content.map(|c| (c, len - TRAILER_LEN)))
}

/// The envelope record inside an open `.msg` file (one without a `.env` beside it), at
/// most `max` bytes; for readers that opened the file themselves (`status`).
pub fn embedded_envelope(file: &File, max: u64) -> io::Result<Vec<u8>> {
    let Some((content, end)) = content_bounds(file)? else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message file without an envelope",
        ));
    };
    if end - content > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "envelope too large",
        ));
    }
    let mut record = vec![0; (end - content) as usize];
    file.read_exact_at(&mut record, content)?;
    Ok(record)
}

/// Why the spool could not take or update a message.
#[derive(Debug)]
pub enum SpoolError {
    /// No space, quota exceeded, or a read-only file system: `452 4.3.1`.
    NoSpace(io::Error),
    /// Any other write failure: `451 4.3.0`.
    Write(io::Error),
}

impl SpoolError {
    fn from_io(e: io::Error) -> Self {
        // ENOSPC 28, EDQUOT 122 (Linux), EROFS 30.
        match e.raw_os_error() {
            Some(28) | Some(122) | Some(30) => SpoolError::NoSpace(e),
            _ => SpoolError::Write(e),
        }
    }

    /// True when the cause is lack of space (or a read-only spool).
    pub fn is_no_space(&self) -> bool {
        matches!(self, SpoolError::NoSpace(_))
    }
}

impl std::fmt::Display for SpoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpoolError::NoSpace(e) => write!(f, "spool full or read-only: {e}"),
            SpoolError::Write(e) => write!(f, "spool write error: {e}"),
        }
    }
}

impl std::error::Error for SpoolError {}

impl From<io::Error> for SpoolError {
    fn from(e: io::Error) -> Self {
        SpoolError::from_io(e)
    }
}

/// The name [`Spool::probe`] uses in `tmp/` and `queue/`: not a message's, which end in
/// `.msg` or `.env`.
const PROBE: &str = "probe";

/// A directory of the spool in which this process cannot create, rename or remove files.
#[derive(Debug)]
pub struct ProbeError {
    /// The directory (under the spool's root as given).
    pub dir: PathBuf,
    /// What the system said.
    pub source: io::Error,
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.dir.display(), self.source)
    }
}

impl std::error::Error for ProbeError {}

/// An open spool directory. Clones share the syncs of `queue/` and the spare files.
#[derive(Clone, Debug)]
pub struct Spool {
    root: PathBuf,
    queue_sync: Arc<GroupSync>,
    spares: Option<Arc<Spares>>,
}

/// Most spare files kept in `tmp/` for reuse.
const SPARES_MAX: usize = 32;

/// Largest file kept as a spare: larger ones are unlinked as before, so that spares hold at
/// most 8 MiB of disk (a router's flash, a full disk's last megabytes) and a large message's
/// content does not linger; creating a file is cheap next to receiving that much.
const SPARE_LARGEST: u64 = 256 * 1024;

/// The start of a spare file's name in `tmp/`.
const SPARE_PREFIX: &str = "spare-";

/// Files of removed messages, moved to `tmp/` to take new messages instead of being
/// unlinked (see [`Spool::recycling`]), oldest first, each with the round of `queue/`'s
/// syncs that makes its move out of `queue/` durable.
#[derive(Debug, Default)]
struct Spares {
    files: std::sync::Mutex<std::collections::VecDeque<(PathBuf, u64)>>,
    named: std::sync::atomic::AtomicU32,
}

impl Spares {
    fn files(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(PathBuf, u64)>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The oldest spare whose move out of `queue/` is durable, if any. A spare whose move
    /// a failed sync was to make durable never will be (see `GroupSync`): it is unlinked,
    /// never written over, so that the spares behind it are used again.
    fn take(&self, sync: &GroupSync) -> Option<PathBuf> {
        let mut files = self.files();
        loop {
            let &(_, round) = files.front()?;
            match sync.settled(round) {
                None => return None,
                Some(true) => return files.pop_front().map(|(path, _)| path),
                Some(false) => {
                    if let Some((path, _)) = files.pop_front() {
                        let _ = fs::remove_file(path);
                    }
                }
            }
        }
    }

    /// A new name in `tmp/` for a spare, if there is room for one more.
    fn name(&self, tmp: &Path) -> Option<PathBuf> {
        if self.files().len() >= SPARES_MAX {
            return None;
        }
        let n = self
            .named
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(tmp.join(format!("{SPARE_PREFIX}{n}")))
    }
}

/// What opening the spool found and cleaned up.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Partial files removed from `tmp/` (never acknowledged).
    pub removed_partial: usize,
    /// Messages whose files do not make a whole, moved to `corrupt/`: an envelope without
    /// its message, or a message file with neither its last line nor an envelope beside it.
    pub moved_aside: Vec<String>,
}

impl Spool {
    /// Opens (creating if needed) the spool at `root` and removes what was never committed.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<(Spool, Recovery)> {
        let spool = Spool::attach(root);
        for dir in ["tmp", "queue", "corrupt"] {
            fs::create_dir_all(spool.root.join(dir))?;
        }
        let mut rec = Recovery::default();
        for entry in fs::read_dir(spool.root.join("tmp"))? {
            let entry = entry?;
            let spare = entry
                .file_name()
                .to_string_lossy()
                .starts_with(SPARE_PREFIX);
            if fs::remove_file(entry.path()).is_ok() && !spare {
                rec.removed_partial += 1;
            }
        }
        let queue = spool.root.join("queue");
        for entry in fs::read_dir(&queue)? {
            let path = entry?.path();
            let Some(id) = id_of(&path) else { continue };
            match path.extension().and_then(|e| e.to_str()) {
                // The earlier layout's crash between its two renames, never acknowledged, or a
                // message file whose last line was damaged: which, nobody can tell, so it is
                // kept for a person rather than removed.
                Some("msg")
                    if !queue.join(format!("{id}.env")).exists()
                        && content_bounds(&File::open(&path)?)?.is_none() =>
                {
                    spool.move_aside(&id)?;
                    rec.moved_aside.push(id);
                }
                Some("env") if !queue.join(format!("{id}.msg")).exists() => {
                    spool.move_aside(&id)?;
                    rec.moved_aside.push(id);
                }
                _ => {}
            }
        }
        sync_dir(&queue)?;
        Ok((spool, rec))
    }

    /// The spool at `root` as another process keeps it: no directory is created and nothing
    /// is cleaned up (files in `tmp/` may be messages that process is receiving).
    pub fn attach(root: impl Into<PathBuf>) -> Spool {
        let grouped = std::env::var_os(commit::BENCH_ONLY_NO_GROUP_COMMIT_VAR).is_none();
        Spool::with_sync(root.into(), Arc::new(|dir: &Path| sync_dir(dir)), grouped)
    }

    /// The spool at `root` whose `queue/` is synced by `sync`, shared (`grouped`) or not.
    fn with_sync(root: PathBuf, sync: SyncFn, grouped: bool) -> Spool {
        let queue_sync = Arc::new(GroupSync::new(root.join("queue"), sync, grouped));
        Spool {
            root,
            queue_sync,
            spares: None,
        }
    }

    /// The same spool, reusing the files of removed messages for new ones, for a process
    /// that alone receives into it and delivers from it (the relay).
    ///
    /// Creating a file and unlinking it again costs an inode each message; ext4 without a
    /// journal also skips, on every create, each inode freed in the last minute: right after
    /// 1000 removals one create cost 0.73 ms of CPU, measured alone, more than writing,
    /// syncing and removing the file together. A
    /// removed message's file is instead renamed to `tmp/spare-N` and the next message is
    /// written over it: no inode is made or freed, and a message of the same size needs no
    /// block either. At most 32 spares of at most 256 KiB each are kept (8 MiB of disk);
    /// larger files are unlinked. Three rules keep this safe:
    ///
    /// - A spare is written over only once a sync of `queue/` that began after it left
    ///   `queue/` has succeeded: a crash can then not bring the old name back over the
    ///   new content (without it, a file system without a journal could show the old
    ///   message's name with the new message's first bytes after a power loss). When a
    ///   sync from that one on failed, no later success vouches for it: it is unlinked.
    /// - The new content is cut to its length before the file's fsync, so nothing of the
    ///   old message stays behind it.
    /// - Spares are never read: `tmp/` is cleared at start, spares with it.
    ///
    /// Another process reading a message while this one removes it may read the next
    /// message in its place, so only the one process that owns the spool recycles (the
    /// relay; `certrelayd queue` and `status` only list). Not with the benches' switch
    /// that turns group commit off: there is no round then to wait for.
    pub fn recycling(mut self) -> Spool {
        if self.queue_sync.round_after_now().is_some() {
            self.spares = Some(Arc::default());
        }
        self
    }

    /// The spool's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Checks that this process can receive into the spool, before it tells any client it
    /// can: creates a file in `tmp/`, renames it into `queue/` under a name that is no
    /// message's, and removes it. The error names the directory that refused.
    pub fn probe(&self) -> Result<(), ProbeError> {
        let tmp = self.root.join("tmp");
        let queue = self.root.join("queue");
        let (from, to) = (tmp.join(PROBE), queue.join(PROBE));
        let fail = |dir: &Path| {
            let dir = dir.to_owned();
            move |source| ProbeError { dir, source }
        };
        // Left by a crash in the middle of an earlier probe.
        remove_if_exists(&from).map_err(fail(&tmp))?;
        remove_if_exists(&to).map_err(fail(&queue))?;
        create_private(&from)
            .and_then(|mut f| f.write_all(b"probe\n"))
            .map_err(fail(&tmp))?;
        if let Err(e) = fs::rename(&from, &to) {
            let _ = fs::remove_file(&from);
            return Err(fail(&queue)(e));
        }
        fs::remove_file(&to).map_err(fail(&queue))
    }

    /// Starts receiving message `id` (which must be new and filename-safe).
    pub fn incoming(&self, id: &str) -> Result<Incoming, SpoolError> {
        // Writers hand over content in large pieces, which pass the buffer by; it gathers
        // the envelope and the last line. A buffer of 64 KiB was allocated for every message.
        let incoming = |tmp_msg, file, recycled| Incoming {
            spool: self.clone(),
            id: id.to_owned(),
            tmp_msg,
            out: Some(BufWriter::with_capacity(8 * 1024, file)),
            size: 0,
            recycled,
        };
        let spare = self.spares.as_ref().and_then(|s| s.take(&self.queue_sync));
        if let Some(spare) = spare {
            // A spare is a file this process moved out of queue/; should something else
            // stand under its name now (a link, a FIFO), the open fails and a new file is
            // made: never written through a link, never blocked on a FIFO.
            let mut opts = OpenOptions::new();
            opts.write(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
            }
            match opts.open(&spare) {
                Ok(file) => return Ok(incoming(spare, file, true)),
                Err(_) => {
                    let _ = fs::remove_file(&spare);
                }
            }
        }
        let tmp_msg = self.root.join("tmp").join(format!("{id}.msg"));
        let file = create_private(&tmp_msg).map_err(SpoolError::from_io)?;
        Ok(incoming(tmp_msg, file, false))
    }

    /// Replaces the envelope of a committed message, durably.
    pub fn update_envelope(&self, id: &str, envelope: &[u8]) -> Result<(), SpoolError> {
        let tmp = self.root.join("tmp").join(format!("{id}.env"));
        write_synced(&tmp, envelope).map_err(SpoolError::from_io)?;
        let queue = self.root.join("queue");
        fs::rename(&tmp, queue.join(format!("{id}.env"))).map_err(SpoolError::from_io)?;
        self.queue_sync.sync_after().map_err(SpoolError::from_io)
    }

    /// Removes a message that needs no more delivery. The message file goes first: a
    /// crash in between leaves an envelope without its message, which the next start
    /// moves aside, and never a message whose newer envelope is lost.
    ///
    /// The directory is not synced: should a crash undo the removal, the message is
    /// delivered once more, which SMTP's at-least-once promise allows, and each delivery
    /// saves a disk write.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        let queue = self.root.join("queue");
        let msg = queue.join(format!("{id}.msg"));
        let small = || fs::symlink_metadata(&msg).is_ok_and(|m| m.len() <= SPARE_LARGEST);
        let spare = match &self.spares {
            Some(spares) if small() => spares.name(&self.root.join("tmp")).map(|to| (spares, to)),
            _ => None,
        };
        match spare {
            Some((spares, to)) => match fs::rename(&msg, &to) {
                Ok(()) => {
                    // Every round from this one on began after the rename.
                    let round = self.queue_sync.round_after_now().unwrap_or(u64::MAX);
                    spares.files().push_back((to, round));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => remove_if_exists(&msg)?,
            },
            None => remove_if_exists(&msg)?,
        }
        remove_if_exists(&queue.join(format!("{id}.env")))
    }

    /// Moves both files of `id` to `corrupt/`, for a person to look at.
    pub fn move_aside(&self, id: &str) -> io::Result<()> {
        let queue = self.root.join("queue");
        let corrupt = self.root.join("corrupt");
        for ext in ["env", "msg"] {
            let from = queue.join(format!("{id}.{ext}"));
            if from.exists() {
                fs::rename(&from, corrupt.join(format!("{id}.{ext}")))?;
            }
        }
        sync_dir(&corrupt)?;
        sync_dir(&queue)
    }

    /// Ids of the committed messages, sorted (ids sort by arrival).
    pub fn ids(&self) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(self.root.join("queue"))? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) == Some("msg") {
                if let Some(id) = id_of(&path) {
                    ids.push(id);
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// The envelope record of `id`: its `.env` when there is one, else the record the
    /// message arrived with.
    pub fn read_envelope(&self, id: &str) -> io::Result<Vec<u8>> {
        match fs::read(self.root.join("queue").join(format!("{id}.env"))) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            read => return read,
        }
        let file = File::open(self.message_path(id))?;
        let Some((content, end)) = content_bounds(&file)? else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message file without an envelope",
            ));
        };
        let mut record = vec![0; (end - content) as usize];
        file.read_exact_at(&mut record, content)?;
        Ok(record)
    }

    /// Opens the content of message `id` for reading (the file up to its envelope).
    pub fn open_message(&self, id: &str) -> io::Result<io::Take<File>> {
        let file = File::open(self.message_path(id))?;
        let content = match content_bounds(&file)? {
            Some((content, _)) => content,
            None => file.metadata()?.len(),
        };
        Ok(file.take(content))
    }

    /// The content of message `id`.
    pub fn read_content(&self, id: &str) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open_message(id)?.read_to_end(&mut out)?;
        Ok(out)
    }

    /// The path of the message file of `id`.
    pub fn message_path(&self, id: &str) -> PathBuf {
        self.root.join("queue").join(format!("{id}.msg"))
    }
}

/// A message being received. Dropping it without [`Incoming::commit`] discards it.
#[derive(Debug)]
pub struct Incoming {
    spool: Spool,
    id: String,
    tmp_msg: PathBuf,
    out: Option<BufWriter<File>>,
    size: u64,
    /// Written over a spare file, which may be longer than what it now holds.
    recycled: bool,
}

impl Incoming {
    /// The message's queue id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends message bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        let out = self.out.as_mut().expect("write after commit");
        out.write_all(bytes).map_err(SpoolError::from_io)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Appends the envelope record and the trailer, and makes the message durable in
    /// `queue/`: fsync of the file, rename, then a sync of `queue/` begun after the rename
    /// (shared with the messages committed beside it). Only after this returns `Ok` may the
    /// message be acknowledged.
    pub fn commit(mut self, envelope: &[u8]) -> Result<(), SpoolError> {
        let mut out = self.out.take().expect("commit twice");
        let queue = self.spool.root.join("queue");
        let committed = queue.join(format!("{}.msg", self.id));
        // A sync of queue/ about to start waits for this commit's rename.
        let arrival = self.spool.queue_sync.arriving();
        let result = (|| {
            out.write_all(envelope)?;
            let trailer = trailer(self.size);
            out.write_all(trailer.as_bytes())?;
            let file = out.into_inner().map_err(|e| e.into_error())?;
            if self.recycled {
                file.set_len(self.size + (envelope.len() + trailer.len()) as u64)?;
            }
            file.sync_all()?;
            drop(file);
            fs::rename(&self.tmp_msg, &committed)?;
            arrival.sync_after()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&self.tmp_msg);
            let _ = fs::remove_file(&committed);
        }
        result.map_err(SpoolError::from_io)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.tmp_msg);
        }
    }
}

fn id_of(path: &Path) -> Option<String> {
    path.file_stem().and_then(|s| s.to_str()).map(str::to_owned)
}

fn create_private(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    remove_if_exists(path)?;
    let mut file = create_private(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Set once the process works from inside its queue directory.
static INSIDE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Notes that the process made its queue directory its working directory (the relay, once it
/// dropped root): files beside the spool are from now on reached by relative paths.
pub fn working_inside() {
    INSIDE.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether this process works from inside its queue directory: then files beside the spool
/// are reached by relative paths (the folders above may be closed to `mail_owner`).
pub fn in_queue_directory() -> bool {
    INSIDE.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_spool(name: &str) -> (Spool, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("certrelay-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (spool, _) = Spool::open(&dir).unwrap();
        (spool, dir)
    }

    #[test]
    fn commit_makes_message_and_envelope_visible() {
        let (spool, dir) = temp_spool("commit");
        let mut inc = spool.incoming("A1").unwrap();
        inc.write(b"Subject: x\r\n\r\nbody\r\n").unwrap();
        assert_eq!(inc.size(), 20);
        assert!(spool.ids().unwrap().is_empty(), "not visible before commit");
        inc.commit(b"env v1").unwrap();
        assert_eq!(spool.ids().unwrap(), ["A1"]);
        assert_eq!(spool.read_envelope("A1").unwrap(), b"env v1");
        assert_eq!(
            spool.read_content("A1").unwrap(),
            b"Subject: x\r\n\r\nbody\r\n"
        );
        // One file: content, envelope, trailer.
        assert_eq!(
            fs::read(spool.message_path("A1")).unwrap(),
            b"Subject: x\r\n\r\nbody\r\nenv v1certrelay-content-length 0000000000000014\n"
        );
        assert_eq!(fs::read_dir(dir.join("queue")).unwrap().count(), 1);
        spool.update_envelope("A1", b"env v2").unwrap();
        assert_eq!(spool.read_envelope("A1").unwrap(), b"env v2");
        assert_eq!(
            spool.read_content("A1").unwrap(),
            b"Subject: x\r\n\r\nbody\r\n"
        );
        spool.remove("A1").unwrap();
        assert!(spool.ids().unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.join("queue")).unwrap().count(), 0);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn dropped_message_leaves_nothing() {
        let (spool, dir) = temp_spool("drop");
        let mut inc = spool.incoming("B1").unwrap();
        inc.write(b"partial").unwrap();
        drop(inc);
        assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        assert!(spool.ids().unwrap().is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reopen_removes_uncommitted_and_moves_incomplete_messages_aside() {
        let (spool, dir) = temp_spool("recover");
        // A crash during DATA: a partial file in tmp/.
        fs::write(dir.join("tmp/C1.msg"), b"half").unwrap();
        // The earlier layout, crashed between its two renames (or a damaged last line):
        // content without envelope.
        fs::write(dir.join("queue/C2.msg"), b"never acknowledged").unwrap();
        // An envelope whose message vanished (or a crash inside `remove`).
        fs::write(dir.join("queue/C3.env"), b"env").unwrap();
        // A committed message survives, and so does one of the earlier layout.
        spool.incoming("C4").unwrap().commit(b"env").unwrap();
        fs::write(dir.join("queue/C5.msg"), b"old content").unwrap();
        fs::write(dir.join("queue/C5.env"), b"old env").unwrap();
        let (spool, rec) = Spool::open(&dir).unwrap();
        assert_eq!(rec.removed_partial, 1);
        let mut aside = rec.moved_aside.clone();
        aside.sort();
        assert_eq!(aside, ["C2", "C3"]);
        assert_eq!(spool.ids().unwrap(), ["C4", "C5"]);
        assert!(dir.join("corrupt/C2.msg").exists());
        assert!(dir.join("corrupt/C3.env").exists());
        assert_eq!(spool.read_envelope("C5").unwrap(), b"old env");
        assert_eq!(spool.read_content("C5").unwrap(), b"old content");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn content_ending_like_a_trailer_stays_content() {
        let (spool, dir) = temp_spool("trailer");
        // Content that ends with text shaped like a trailer, even a well-formed one.
        let content = trailer(3);
        let mut inc = spool.incoming("E1").unwrap();
        inc.write(content.as_bytes()).unwrap();
        inc.commit(b"env").unwrap();
        assert_eq!(spool.read_content("E1").unwrap(), content.as_bytes());
        assert_eq!(spool.read_envelope("E1").unwrap(), b"env");
        // A trailer pointing past the end is no trailer: the file is content only.
        fs::write(dir.join("queue/E2.msg"), trailer(1 << 40)).unwrap();
        assert_eq!(
            spool.read_content("E2").unwrap(),
            trailer(1 << 40).as_bytes()
        );
        assert!(spool.read_envelope("E2").is_err());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_probe_passes_in_a_writable_spool_and_names_a_directory_it_cannot_write() {
        let (spool, dir) = temp_spool("probe");
        spool.probe().unwrap();
        // It leaves nothing, and nothing the queue would take for a message.
        assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(dir.join("queue")).unwrap().count(), 0);
        // A queue/ nobody can rename into (root included: it is not a directory).
        fs::remove_dir(dir.join("queue")).unwrap();
        fs::write(dir.join("queue"), b"").unwrap();
        let e = spool.probe().unwrap_err();
        assert_eq!(e.dir, dir.join("queue"));
        assert!(e
            .to_string()
            .starts_with(&format!("{}: ", dir.join("queue").display())));
        assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0, "{e}");
        fs::remove_dir_all(dir).unwrap();
    }

    /// A spool whose `queue/` syncs run `sync` (grouped).
    fn spool_syncing(name: &str, sync: SyncFn) -> (Spool, PathBuf) {
        let (_, dir) = temp_spool(name);
        (Spool::with_sync(dir.clone(), sync, true), dir)
    }

    #[test]
    fn a_commit_returns_after_a_directory_sync_that_saw_its_rename() {
        // Each sync notes which messages were in queue/ when it began.
        let seen = Arc::new(std::sync::Mutex::new(Vec::<Vec<String>>::new()));
        let s = seen.clone();
        let (spool, dir) = spool_syncing(
            "ordered",
            Arc::new(move |queue: &Path| {
                let mut names: Vec<String> = fs::read_dir(queue)?
                    .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<io::Result<_>>()?;
                names.sort();
                s.lock().unwrap().push(names);
                sync_dir(queue)
            }),
        );
        spool.incoming("G1").unwrap().commit(b"env").unwrap();
        assert_eq!(*seen.lock().unwrap(), [vec!["G1.msg".to_owned()]]);
        spool.update_envelope("G1", b"env v2").unwrap();
        assert_eq!(seen.lock().unwrap()[1], ["G1.env", "G1.msg"]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failed_directory_sync_fails_the_commit_and_leaves_nothing() {
        let (spool, dir) = spool_syncing(
            "syncfail",
            Arc::new(|_: &Path| Err(io::Error::from_raw_os_error(5))),
        );
        let mut inc = spool.incoming("H1").unwrap();
        inc.write(b"x").unwrap();
        assert!(matches!(inc.commit(b"env"), Err(SpoolError::Write(_))));
        assert!(spool.ids().unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn concurrent_commits_share_directory_syncs_and_all_land() {
        let syncs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = syncs.clone();
        let (spool, dir) = spool_syncing(
            "group",
            Arc::new(move |queue: &Path| {
                let first = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
                // The first sync lasts until every commit has renamed its file (at most 10 s,
                // never a hang), so all the others pile up behind it whatever the timing.
                let began = std::time::Instant::now();
                while first
                    && fs::read_dir(queue).map_or(0, |d| d.count()) < 16
                    && began.elapsed() < std::time::Duration::from_secs(10)
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                sync_dir(queue)
            }),
        );
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let spool = spool.clone();
                std::thread::spawn(move || {
                    spool.incoming(&format!("K{i:02}")).unwrap().commit(b"e")
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert_eq!(spool.ids().unwrap().len(), 16);
        let syncs = syncs.load(std::sync::atomic::Ordering::SeqCst);
        // One for every commit announced before the first sync began (it waits for their
        // renames), and one more for those announced later, renamed while it ran.
        assert!(
            (1..=2).contains(&syncs),
            "{syncs} directory syncs for 16 commits"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    /// The one file in the spool's `tmp/`: the spare of the message just removed.
    fn only_spare(dir: &Path) -> PathBuf {
        let mut tmp = fs::read_dir(dir.join("tmp")).unwrap();
        let spare = tmp.next().unwrap().unwrap().path();
        assert!(tmp.next().is_none(), "one file in tmp/");
        spare
    }

    /// The inode number of a path.
    fn inode(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn a_removed_message_file_takes_a_later_message_once_its_removal_was_synced() {
        let (spool, dir) = temp_spool("recycle");
        let spool = spool.recycling();
        let mut long = spool.incoming("R1").unwrap();
        long.write(&[b'o'; 5000]).unwrap();
        long.commit(b"old envelope").unwrap();
        let old_inode = inode(&spool.message_path("R1"));
        spool.remove("R1").unwrap();
        assert!(spool.ids().unwrap().is_empty());
        let tmp: Vec<_> = fs::read_dir(dir.join("tmp")).unwrap().collect();
        assert_eq!(tmp.len(), 1, "the removed file waits in tmp/ as a spare");

        // No sync of queue/ has begun since the removal: the spare is not written over,
        // the next message gets a file of its own.
        spool.incoming("R2").unwrap().commit(b"e2").unwrap();
        assert_ne!(inode(&spool.message_path("R2")), old_inode);
        // R2's commit synced queue/ after R1 left it: the spare now takes the next one,
        // shorter than what it held, and keeps nothing of it.
        let mut short = spool.incoming("R3").unwrap();
        short.write(b"new").unwrap();
        short.commit(b"e3").unwrap();
        assert_eq!(inode(&spool.message_path("R3")), old_inode);
        assert_eq!(
            fs::read(spool.message_path("R3")).unwrap(),
            b"newe3certrelay-content-length 0000000000000003\n"
        );
        assert_eq!(spool.read_content("R3").unwrap(), b"new");
        assert_eq!(spool.read_envelope("R3").unwrap(), b"e3");
        assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_spare_a_failed_sync_left_in_doubt_is_unlinked_and_the_next_ones_serve() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = fail.clone();
        let (spool, dir) = spool_syncing(
            "recyclefail",
            Arc::new(move |queue: &Path| {
                if f.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(io::Error::from_raw_os_error(5));
                }
                sync_dir(queue)
            }),
        );
        let spool = spool.recycling();
        let mut s1 = spool.incoming("S1").unwrap();
        s1.write(b"first message").unwrap();
        s1.commit(b"e").unwrap();
        let held = fs::read(spool.message_path("S1")).unwrap();
        spool.remove("S1").unwrap();
        let spare = only_spare(&dir);
        // Held open, the spare's file shows whether anything was written into it.
        let spare_file = File::open(&spare).unwrap();
        // The sync that would have made the removal durable fails.
        fail.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(spool.incoming("S2").unwrap().commit(b"e").is_err());
        fail.store(false, std::sync::atomic::Ordering::SeqCst);
        spool.incoming("S3").unwrap().commit(b"e").unwrap();
        spool.incoming("S4").unwrap().commit(b"e").unwrap();
        assert!(!spare.exists(), "the spare left in doubt is unlinked");
        assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        let mut now = Vec::new();
        io::Read::read_to_end(&mut &spare_file, &mut now).unwrap();
        assert_eq!(now, held, "and never written over");
        // Spares work again: S3's file, once S4's commit synced queue/ after S3 left it,
        // takes S5.
        let s3_inode = inode(&spool.message_path("S3"));
        spool.remove("S3").unwrap();
        spool.incoming("S6").unwrap().commit(b"e").unwrap();
        spool.incoming("S5").unwrap().commit(b"e").unwrap();
        assert_eq!(inode(&spool.message_path("S5")), s3_inode);
        // A new start clears tmp/, spares with it, and counts them as nothing lost.
        spool.remove("S4").unwrap();
        assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 1);
        let (_, rec) = Spool::open(&dir).unwrap();
        assert_eq!(rec.removed_partial, 0);
        assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_link_or_fifo_put_in_a_spare_s_place_is_never_written_through() {
        let (spool, dir) = temp_spool("recyclelink");
        let spool = spool.recycling();
        let outside = dir.join("outside");
        fs::write(&outside, b"keep me").unwrap();
        for (n, plant) in ["link", "fifo"].into_iter().enumerate() {
            let id = format!("U{n}");
            spool.incoming(&id).unwrap().commit(b"e").unwrap();
            spool.remove(&id).unwrap();
            let spare = only_spare(&dir);
            fs::remove_file(&spare).unwrap();
            match plant {
                "link" => std::os::unix::fs::symlink(&outside, &spare).unwrap(),
                _ => assert!(std::process::Command::new("mkfifo")
                    .arg(&spare)
                    .status()
                    .unwrap()
                    .success()),
            }
            // A sync of queue/ after the removal, so that the spare is due.
            spool
                .incoming(&format!("V{n}"))
                .unwrap()
                .commit(b"e")
                .unwrap();
            let mut next = spool.incoming(&format!("W{n}")).unwrap();
            next.write(b"new").unwrap();
            next.commit(b"e").unwrap();
            assert_eq!(spool.read_content(&format!("W{n}")).unwrap(), b"new");
            assert_eq!(fs::read(&outside).unwrap(), b"keep me", "{plant}");
            let _ = fs::remove_file(&spare);
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_large_message_s_file_is_unlinked_not_kept() {
        let (spool, dir) = temp_spool("recyclelarge");
        let spool = spool.recycling();
        let mut large = spool.incoming("X1").unwrap();
        large
            .write(&vec![b'x'; SPARE_LARGEST as usize + 1])
            .unwrap();
        large.commit(b"e").unwrap();
        spool.remove("X1").unwrap();
        assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(dir.join("queue")).unwrap().count(), 0);
        spool.incoming("X2").unwrap().commit(b"e").unwrap();
        spool.remove("X2").unwrap();
        assert_eq!(
            fs::read_dir(dir.join("tmp")).unwrap().count(),
            1,
            "a small one is kept"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn without_recycling_a_removed_message_leaves_no_file() {
        let (spool, dir) = temp_spool("norecycle");
        spool.incoming("T1").unwrap().commit(b"e").unwrap();
        spool.remove("T1").unwrap();
        assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(dir.join("queue")).unwrap().count(), 0);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn incoming_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let (spool, dir) = temp_spool("mode");
        spool.incoming("D1").unwrap().commit(b"e").unwrap();
        let mode = fs::metadata(spool.message_path("D1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::remove_dir_all(dir).unwrap();
    }
}
