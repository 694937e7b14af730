//! The SMTP server session (RFC 5321 with ESMTP), its DATA receiver and the STARTTLS
//! hand-over.
//!
//! ## What this module does not do
//!
//! It reads no socket, writes no queue file, speaks no TLS and reads no clock. It does not
//! assign queue ids or date headers. The shell does all of that and tells the session about it.
//!
//! ## Driving a session
//!
//! ```text
//! let mut s = ServerSession::new(settings, peer, now);      // queues the 220 greeting
//! loop {
//!     while let Some(out) = s.poll_output() { act on it, in order }
//!     if s.is_closed() { break }
//!     wait for: input (only while s.wants_read()), the shell's storage result,
//!               or the timer armed at s.poll_timeout()
//!     s.handle_input(bytes, now) | s.handle_event(event, now) | s.handle_timeout(now)
//! }
//! ```
//!
//! Outputs, in the order they must be acted on ([`ServerOutput`]):
//! - `Transmit(bytes)`: write to the client. Consecutive ones may be written together.
//! - `MessageBegin(envelope)`: create a queue file; write the `Received:` header first
//!   ([`Received::render`] with the queue id and the date).
//! - `BodyChunk(bytes)`: append to it (chunks are at most [`CHUNK_SIZE`] octets, CR LF line
//!   ends, dot-stuffing undone).
//! - `MessageEnd`: make it durable, then call `handle_event` with
//!   [`ServerEvent::MessageStored`] (or one of the failures). The `250` is only sent then.
//!   While the shell stores, [`ServerSession::wants_read`] is false; bytes already fed are held
//!   (at most [`MAX_PENDING`]) and run once the result arrives.
//! - `MessageAbort`: delete it; no `MessageEnd` follows.
//! - `Log(line)`: log it (mail facility, Postfix's shapes).
//! - `StartTls`: stop reading plaintext, call [`ServerSession::start_tls`] and run the
//!   handshake; then [`TlsHandshake::established`] gives the session back. On a failed
//!   handshake, log [`TlsHandshake::failed`] and close the connection.
//! - `Close`: close the connection. Nothing follows.
//!
//! One reply is one `Transmit`, and body chunks are cut at fixed sizes, so the outputs do not
//! depend on how the network split the input.

mod command;
mod data;
mod error;
mod received;
mod session;
mod stats;
#[cfg(test)]
mod tests;

pub use command::{BodyType, Verb};
pub use data::CHUNK_SIZE;
pub use error::ServerError;
pub use received::{Received, ReceivedFacts};
pub use session::{ServerSession, TlsHandshake, MAX_COMMAND_LINE, MAX_PENDING};

use crate::address::Path;
use crate::facts::{PeerInfo, TlsFacts};
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

/// Something the shell must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerOutput {
    /// Send these bytes to the client.
    Transmit(Vec<u8>),
    /// The `220` to STARTTLS has been queued before this; start the TLS handshake now.
    StartTls,
    /// A message begins: open a queue file for this envelope.
    MessageBegin(Box<Envelope>),
    /// Message content to append.
    BodyChunk(Vec<u8>),
    /// The message is complete: make it durable and report with an event.
    MessageEnd,
    /// The message is refused or the client went away: discard it.
    MessageAbort,
    /// A line for the mail log.
    Log(LogLine),
    /// Close the connection.
    Close,
}

/// Who sent a message to whom, and how it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse-path (`<>` for bounces).
    pub sender: Path,
    /// The accepted recipients, in order.
    pub recipients: Vec<Path>,
    /// `SIZE=` from MAIL, if given.
    pub size_hint: Option<u64>,
    /// `BODY=` from MAIL.
    pub body: BodyType,
    /// The client.
    pub client: PeerInfo,
    /// Its HELO/EHLO name.
    pub helo: Option<String>,
    /// `SMTP`, `ESMTP` or `ESMTPS`, as in the Received header.
    pub protocol: &'static str,
    /// The TLS session, if any.
    pub tls: Option<TlsFacts>,
    /// The `Received:` header to write before the content.
    pub received: Received,
}

/// One log line and its level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// How serious it is.
    pub level: log::Level,
    /// The text, without a trailing newline.
    pub text: String,
}

/// What the shell tells the session.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// The message of the last `MessageEnd` is durable under this queue id.
    MessageStored {
        /// The queue id, shown in the `250` reply.
        queue_id: String,
    },
    /// Writing the message failed (`451 4.3.0`).
    QueueWriteFailed,
    /// No space for the message (`452 4.3.1`).
    QueueFull,
    /// The client closed the connection or it broke.
    ConnectionLost,
}
