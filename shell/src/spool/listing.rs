//! The queue listing both roles print (`queue`, `sendmail -bp`, `mailq`): what waits in the
//! maildrop and the spool, read only.
//!
//! Not here: changing the queue (delete, flush), which needs the role's locking.

use super::maildrop::Maildrop;
use super::Spool;
use certrelay_core::queue::{listing_entry, listing_footer, Envelope, LISTING_HEADER};
use std::fmt::Write as _;
use std::io;
use std::path::Path;

/// The queue listing (`queue`, `sendmail -bp`): maildrop messages not yet picked up, then
/// the spool, each with its recipients, the reason it waits and its next attempt.
pub fn listing(queue_dir: &Path) -> io::Result<String> {
    let mut out = String::new();
    let mut total = 0u64;
    let mut count = 0usize;
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
    for text in entries {
        let Ok(envelope) = Envelope::parse(&text) else {
            continue;
        };
        if count == 0 {
            let _ = writeln!(out, "{LISTING_HEADER}");
        }
        out.push_str(&listing_entry(&envelope, 0));
        total += envelope.size;
        count += 1;
    }
    let _ = writeln!(out, "{}", listing_footer(total, count));
    Ok(out)
}
