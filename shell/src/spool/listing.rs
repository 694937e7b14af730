//! The queue listing both roles print (`queue`, `sendmail -bp`, `mailq`): what waits in the
//! maildrop and the spool, read only.
//!
//! Not here: changing the queue (delete, flush), which needs the role's locking, or how a
//! reader that is not the spool's owner reaches its files without following a link (that
//! reader gathers the [`Entry`]s itself and [`render`]s them).

use super::maildrop::Maildrop;
use super::Spool;
use certrelay_core::queue::{listing_entry, listing_footer, Envelope, LISTING_HEADER};
use std::fmt::Write as _;
use std::io;
use std::path::Path;

/// The queue listing (`queue`, `sendmail -bp`): maildrop messages not yet picked up, then
/// the spool, each with its recipients, the reason it waits and its next attempt.
pub fn listing(queue_dir: &Path) -> io::Result<String> {
    let mut entries = Vec::new();
    if queue_dir.join("maildrop").is_dir() {
        let maildrop = Maildrop::open(queue_dir)?;
        for id in maildrop.ids()? {
            if let Ok(text) = maildrop.read_envelope(&id) {
                entries.push(text);
            }
        }
    }
    if queue_dir.join("queue").is_dir() {
        // Read only: the spool belongs to whoever runs the queue.
        let spool = Spool::attach(queue_dir);
        for id in spool.ids()? {
            if let Ok(text) = spool.read_envelope(&id) {
                entries.push(text);
            }
        }
    }
    Ok(render(entries.into_iter().map(Entry::Record)))
}

/// One message of a listing: its envelope record, or why it was not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The envelope record as stored.
    Record(Vec<u8>),
    /// A message file that was not read (a link, a FIFO, a file of another account), shown
    /// as `ID: skipped: WHY` so the listing still says it is there.
    Skipped {
        /// The queue id, or the file name (quoted) when it is none.
        id: String,
        /// Why it was not read.
        why: String,
    },
}

/// The listing text of `entries`, in order: the header, a line per message, the total.
/// Records that do not parse are left out, as a message removed meanwhile would be.
pub fn render(entries: impl IntoIterator<Item = Entry>) -> String {
    let mut out = String::new();
    let mut total = 0u64;
    let mut count = 0usize;
    let mut header = false;
    for entry in entries {
        let line = match entry {
            Entry::Record(text) => {
                let Ok(envelope) = Envelope::parse(&text) else {
                    continue;
                };
                total = total.saturating_add(envelope.size);
                count += 1;
                listing_entry(&envelope, 0)
            }
            Entry::Skipped { id, why } => format!("{id}: skipped: {why}\n"),
        };
        if !header {
            let _ = writeln!(out, "{LISTING_HEADER}");
            header = true;
        }
        out.push_str(&line);
    }
    let _ = writeln!(out, "{}", listing_footer(total, count));
    out
}
