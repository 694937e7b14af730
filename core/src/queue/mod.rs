//! The envelope record kept beside each queued message, and what delivery does to it.
//!
//! The spool itself (directories, `fsync`, `rename`, timers) belongs to the shells; this
//! module decides what the record says and when the next attempt is due. A message is a
//! pair of files: the message bytes, written once, and its [`Envelope`], rewritten (written
//! to a temporary name, synced, renamed) after every delivery attempt. The record is plain
//! text ([`record`]) so that a person can read and, in an emergency, repair it.
//!
//! Life of a record: every recipient starts [`RecipientState::Pending`]. Each attempt feeds
//! one [`Verdict`] per recipient ([`Envelope::record`]), or one for all that remain
//! ([`Envelope::defer_remaining`]) when no server could be reached, then closes with
//! [`Envelope::finish_attempt`], which schedules the next attempt or, past the queue
//! lifetime, gives up on the rest. When [`Envelope::is_done`], the shell sends a bounce for
//! [`Envelope::bounced`] recipients if [`crate::dsn::bounce_wanted`] says so, and deletes
//! the message. A crash between queueing the bounce and deleting the message can send the
//! bounce twice; that is the safe side.

mod envelope;
mod id;
mod log;
pub mod record;
mod schedule;

pub use envelope::{ClientFacts, Envelope, Recipient, RecipientState, Verdict};
pub use id::{QueueId, QUEUE_ID_LEN};
pub use log::{
    delivery_line, expired_line, format_delay, listing_entry, listing_footer, Relay, LISTING_HEADER,
};
pub use record::RecordError;
pub use schedule::{next_attempt, AttemptEnd, RetrySettings};

#[cfg(test)]
mod tests;
