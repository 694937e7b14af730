//! The durable spool: one message file and one envelope file per queued message.
//!
//! Layout under the queue directory, every step visible with `ls`:
//!
//! - `tmp/`: messages being received. Nothing here was ever acknowledged; cleared at start.
//! - `queue/ID.msg`: the message, never changed once committed.
//! - `queue/ID.env`: its envelope record, replaced whole (write, fsync, rename) on each update.
//! - `corrupt/`: files that could not be read back, moved aside for a person to look at.
//!
//! A message is committed when its `.env` is renamed into `queue/` and the directory is
//! synced: the `.msg` was renamed and synced before that, so a crash at any instant leaves
//! either a complete message with its envelope, or an orphan `.msg` that was never
//! acknowledged and is removed at the next start.
//!
//! These calls block (fsync); the async shells run them on the blocking pool.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

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

/// An open spool directory.
#[derive(Clone, Debug)]
pub struct Spool {
    root: PathBuf,
}

/// What opening the spool found and cleaned up.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Partial files removed from `tmp/` (never acknowledged).
    pub removed_partial: usize,
    /// Message files without an envelope removed from `queue/` (never acknowledged).
    pub removed_orphans: usize,
    /// Envelopes without a message, moved to `corrupt/`.
    pub moved_aside: Vec<String>,
}

impl Spool {
    /// Opens (creating if needed) the spool at `root` and removes what was never committed.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<(Spool, Recovery)> {
        let spool = Spool { root: root.into() };
        for dir in ["tmp", "queue", "corrupt"] {
            fs::create_dir_all(spool.root.join(dir))?;
        }
        let mut rec = Recovery::default();
        for entry in fs::read_dir(spool.root.join("tmp"))? {
            let entry = entry?;
            if fs::remove_file(entry.path()).is_ok() {
                rec.removed_partial += 1;
            }
        }
        let queue = spool.root.join("queue");
        for entry in fs::read_dir(&queue)? {
            let path = entry?.path();
            let Some(id) = id_of(&path) else { continue };
            match path.extension().and_then(|e| e.to_str()) {
                Some("msg") if !queue.join(format!("{id}.env")).exists() => {
                    fs::remove_file(&path)?;
                    rec.removed_orphans += 1;
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
        Spool { root: root.into() }
    }

    /// The spool's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts receiving message `id` (which must be new and filename-safe).
    pub fn incoming(&self, id: &str) -> Result<Incoming, SpoolError> {
        let tmp_msg = self.root.join("tmp").join(format!("{id}.msg"));
        let file = create_private(&tmp_msg).map_err(SpoolError::from_io)?;
        Ok(Incoming {
            spool: self.clone(),
            id: id.to_owned(),
            tmp_msg,
            out: Some(BufWriter::with_capacity(64 * 1024, file)),
            size: 0,
        })
    }

    /// Replaces the envelope of a committed message, durably.
    pub fn update_envelope(&self, id: &str, envelope: &[u8]) -> Result<(), SpoolError> {
        let tmp = self.root.join("tmp").join(format!("{id}.env"));
        write_synced(&tmp, envelope).map_err(SpoolError::from_io)?;
        let queue = self.root.join("queue");
        fs::rename(&tmp, queue.join(format!("{id}.env"))).map_err(SpoolError::from_io)?;
        sync_dir(&queue).map_err(SpoolError::from_io)
    }

    /// Removes a message that needs no more delivery (envelope first: a crash in between
    /// leaves an orphan message file, which the next start removes).
    ///
    /// The directory is not synced: should a crash undo the removal, the message is
    /// delivered once more, which SMTP's at-least-once promise allows, and each delivery
    /// saves a journal commit.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        let queue = self.root.join("queue");
        remove_if_exists(&queue.join(format!("{id}.env")))?;
        remove_if_exists(&queue.join(format!("{id}.msg")))
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
            if path.extension().and_then(|e| e.to_str()) == Some("env") {
                if let Some(id) = id_of(&path) {
                    ids.push(id);
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// The envelope record of `id`.
    pub fn read_envelope(&self, id: &str) -> io::Result<Vec<u8>> {
        fs::read(self.root.join("queue").join(format!("{id}.env")))
    }

    /// Opens the message of `id` for reading.
    pub fn open_message(&self, id: &str) -> io::Result<File> {
        File::open(self.root.join("queue").join(format!("{id}.msg")))
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

    /// Makes the message and its envelope durable. Only after this returns `Ok` may the
    /// message be acknowledged.
    pub fn commit(mut self, envelope: &[u8]) -> Result<(), SpoolError> {
        let out = self.out.take().expect("commit twice");
        let file = out
            .into_inner()
            .map_err(|e| SpoolError::from_io(e.into_error()))?;
        file.sync_all().map_err(SpoolError::from_io)?;
        drop(file);
        let root = &self.spool.root;
        let tmp_env = root.join("tmp").join(format!("{}.env", self.id));
        let result = (|| {
            write_synced(&tmp_env, envelope)?;
            let queue = root.join("queue");
            fs::rename(&self.tmp_msg, queue.join(format!("{}.msg", self.id)))?;
            fs::rename(&tmp_env, queue.join(format!("{}.env", self.id)))?;
            sync_dir(&queue)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp_env);
            let _ = fs::remove_file(&self.tmp_msg);
            let _ = fs::remove_file(root.join("queue").join(format!("{}.msg", self.id)));
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
            fs::read(spool.message_path("A1")).unwrap(),
            b"Subject: x\r\n\r\nbody\r\n"
        );
        spool.update_envelope("A1", b"env v2").unwrap();
        assert_eq!(spool.read_envelope("A1").unwrap(), b"env v2");
        spool.remove("A1").unwrap();
        assert!(spool.ids().unwrap().is_empty());
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
    fn reopen_removes_uncommitted_and_moves_orphan_envelopes_aside() {
        let (spool, dir) = temp_spool("recover");
        // A crash during DATA: a partial file in tmp/.
        fs::write(dir.join("tmp/C1.msg"), b"half").unwrap();
        // A crash between the two renames: message without envelope.
        fs::write(dir.join("queue/C2.msg"), b"never acknowledged").unwrap();
        // An envelope whose message vanished.
        fs::write(dir.join("queue/C3.env"), b"env").unwrap();
        // A committed message survives.
        spool.incoming("C4").unwrap().commit(b"env").unwrap();
        let (spool, rec) = Spool::open(&dir).unwrap();
        assert_eq!(rec.removed_partial, 1);
        assert_eq!(rec.removed_orphans, 1);
        assert_eq!(rec.moved_aside, ["C3"]);
        assert_eq!(spool.ids().unwrap(), ["C4"]);
        assert!(dir.join("corrupt/C3.env").exists());
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
