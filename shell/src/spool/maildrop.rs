//! The maildrop: where `sendmail` leaves messages for the queue runner.
//!
//! The spool ([`crate::spool`]) belongs to one process at a time: opening it clears what
//! another process may be writing. So `sendmail` never opens it. It writes into
//! `maildrop/` beside it, where each message has files of its own and nothing is ever
//! cleared that a live writer could own; the process holding the run lock moves committed
//! messages into the spool (Postfix's pickup).
//!
//! A message is `ID.part` while written, then `ID.msg` with its envelope `ID.env`; it
//! counts once `ID.env` is there and the directory is synced.

use crate::spool::Spool;
use certrelay_core::queue::{Envelope, QueueId};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Age after which a half-written file is a crashed writer's leftover.
const STALE: Duration = Duration::from_secs(24 * 3600);

/// The maildrop of one queue directory.
#[derive(Clone, Debug)]
pub struct Maildrop {
    dir: PathBuf,
}

impl Maildrop {
    /// Opens (creating) `queue_dir/maildrop`.
    pub fn open(queue_dir: &Path) -> io::Result<Maildrop> {
        let dir = queue_dir.join("maildrop");
        fs::create_dir_all(&dir)?;
        Ok(Maildrop { dir })
    }

    /// Starts writing message `id`; fails if the id is taken.
    pub fn create(&self, id: &str) -> io::Result<Dropping> {
        let part = self.dir.join(format!("{id}.part"));
        let file = create_private(&part)?;
        if self.dir.join(format!("{id}.env")).exists() {
            let _ = fs::remove_file(&part);
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "id in use"));
        }
        Ok(Dropping {
            dir: self.dir.clone(),
            id: id.to_owned(),
            part,
            out: Some(BufWriter::with_capacity(64 * 1024, file)),
            size: 0,
        })
    }

    /// Ids of the committed messages waiting here, sorted.
    pub fn ids(&self) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "env") {
                if let Some(id) = path.file_stem().and_then(|s| s.to_str()) {
                    ids.push(id.to_owned());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// The envelope of waiting message `id`.
    pub fn read_envelope(&self, id: &str) -> io::Result<Vec<u8>> {
        fs::read(self.dir.join(format!("{id}.env")))
    }

    /// Removes waiting message `id`; false when it was not here.
    pub fn remove(&self, id: &str) -> io::Result<bool> {
        let found = remove_if_exists(&self.dir.join(format!("{id}.env")))?;
        remove_if_exists(&self.dir.join(format!("{id}.msg")))?;
        sync_dir(&self.dir)?;
        Ok(found)
    }

    /// Moves every committed message into `spool` (only the run-lock holder may call this);
    /// returns the ids they have there. A message whose id the spool already uses gets a
    /// new one.
    pub fn pickup(&self, spool: &Spool, mut new_id: impl FnMut() -> QueueId) -> Vec<String> {
        let mut moved = Vec::new();
        let ids = match self.ids() {
            Ok(ids) => ids,
            Err(e) => {
                log::error!("cannot list {}: {e}", self.dir.display());
                return moved;
            }
        };
        for id in ids {
            match self.pickup_one(spool, &id, &mut new_id) {
                Ok(Some(queued)) => {
                    log::info!("{queued}: picked up from the maildrop");
                    moved.push(queued);
                }
                Ok(None) => {}
                Err(e) => log::error!("{id}: cannot move from the maildrop to the queue: {e}"),
            }
        }
        self.remove_stale();
        moved
    }

    fn pickup_one(
        &self,
        spool: &Spool,
        id: &str,
        new_id: &mut impl FnMut() -> QueueId,
    ) -> io::Result<Option<String>> {
        let text = match self.read_envelope(id) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut envelope = Envelope::parse(&text)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let mut message = File::open(self.dir.join(format!("{id}.msg")))?;
        while spool.message_path(envelope.id.as_str()).exists() {
            envelope.id = new_id();
        }
        let mut incoming = spool
            .incoming(envelope.id.as_str())
            .map_err(io::Error::other)?;
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = message.read(&mut buf)?;
            if n == 0 {
                break;
            }
            incoming.write(&buf[..n]).map_err(io::Error::other)?;
        }
        incoming
            .commit(envelope.to_text().as_bytes())
            .map_err(io::Error::other)?;
        self.remove(id)?;
        Ok(Some(envelope.id.as_str().to_owned()))
    }

    /// Removes what crashed writers left: parts and envelope-less messages a day old.
    fn remove_stale(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > STALE);
            let orphan = match path.extension().and_then(|e| e.to_str()) {
                Some("part") => true,
                Some("msg") => !path.with_extension("env").exists(),
                _ => false,
            };
            if stale && orphan && fs::remove_file(&path).is_ok() {
                log::warn!("removed a stale maildrop file {}", path.display());
            }
        }
    }
}

/// A message being written to the maildrop. Dropped without [`Dropping::commit`], it is
/// removed.
#[derive(Debug)]
pub struct Dropping {
    dir: PathBuf,
    id: String,
    part: PathBuf,
    out: Option<BufWriter<File>>,
    size: u64,
}

impl Dropping {
    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Octets written.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends message bytes.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let out = self.out.as_mut().expect("write after commit");
        out.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Makes the message durable with its envelope.
    pub fn commit(mut self, envelope: &[u8]) -> io::Result<()> {
        let out = self.out.take().expect("commit twice");
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        let env_part = self.dir.join(format!("{}.env.part", self.id));
        let result = (|| {
            let mut f = create_private(&env_part)?;
            f.write_all(envelope)?;
            f.sync_all()?;
            fs::rename(&self.part, self.dir.join(format!("{}.msg", self.id)))?;
            fs::rename(&env_part, self.dir.join(format!("{}.env", self.id)))?;
            sync_dir(&self.dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&env_part);
            let _ = fs::remove_file(&self.part);
            let _ = fs::remove_file(self.dir.join(format!("{}.msg", self.id)));
        }
        result
    }
}

impl Drop for Dropping {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.part);
        }
    }
}

fn create_private(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

fn remove_if_exists(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use certrelay_core::queue::Recipient;

    #[test]
    fn dropped_message_is_picked_up_into_the_spool() {
        let dir = std::env::temp_dir().join(format!("certrelay-maildrop-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let drop_box = Maildrop::open(&dir).unwrap();
        let id = QueueId::generate(1_700_000_000, 7);
        let mut d = drop_box.create(id.as_str()).unwrap();
        d.write(b"Subject: x\r\n\r\nhi\r\n").unwrap();
        let mut env = Envelope::new(
            id.clone(),
            "a@x",
            1_700_000_000,
            vec![Recipient::new("b@y")],
        );
        env.size = d.size();
        d.commit(env.to_text().as_bytes()).unwrap();
        assert_eq!(drop_box.ids().unwrap(), [id.as_str()]);
        // Half-written messages are neither listed nor picked up.
        let half = drop_box.create("HALF").unwrap();
        let (spool, _) = Spool::open(&dir).unwrap();
        // The spool already holds this id: the picked-up message gets a new one.
        spool
            .incoming(id.as_str())
            .unwrap()
            .commit(b"other")
            .unwrap();
        let fresh = QueueId::generate(1_700_000_000, 8);
        let moved = drop_box.pickup(&spool, || fresh.clone());
        assert_eq!(moved, [fresh.as_str()]);
        assert!(drop_box.ids().unwrap().is_empty());
        let back = Envelope::parse(&spool.read_envelope(fresh.as_str()).unwrap()).unwrap();
        assert_eq!(back.recipients[0].address, "b@y");
        assert_eq!(
            spool.read_content(fresh.as_str()).unwrap(),
            b"Subject: x\r\n\r\nhi\r\n"
        );
        drop(half);
        fs::remove_dir_all(dir).unwrap();
    }
}
