//! The SMTP server session (RFC 5321 with ESMTP), its DATA receiver and the STARTTLS
//! hand-over.
//!
//! ## What this module does not do
//!
//! It reads no socket, writes no queue file, speaks no TLS and reads no clock. It does not
//! assign queue ids or date headers. The shell does all of that and tells the session about it.
//!
//! ## Run loop
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
//! - `StartTls`: stop reading plaintext and call [`ServerSession::start_tls`]; run the
//!   handshake within [`ServerTlsHandshake::poll_timeout`], then
//!   [`ServerTlsHandshake::established`] gives the session back. On a failed handshake, log
//!   [`ServerTlsHandshake::failed`] and close the connection.
//! - `Close`: close the connection. Nothing follows.
//!
//! Once the client has made `smtpd_soft_error_limit` errors, each reply is held back for
//! `smtpd_error_sleep_time`: `poll_output` then returns `None` before it, `wants_read` is
//! false and `poll_timeout` says when it may go. The time limits on slow clients
//! (`certrelay_command_time_limit`, `certrelay_data_min_rate`) are deadlines of
//! `poll_timeout` too; the shell sleeps on nothing but that one timer.
//!
//! One reply is one `Transmit`, and body chunks are cut at fixed sizes, so the outputs do not
//! depend on how the network split the input.
//!
//! The files mirror [`crate::client`]'s: `events` (what session and shell tell each other),
//! `session` (the dialogue), `tls` (the STARTTLS hand-over), `envelope`, and the parts only
//! a server has (command parser, DATA receiver, reply table, `Received:` header).

mod command;
mod data;
mod envelope;
mod error;
mod events;
mod guard;
mod hops;
mod received;
mod session;
mod stats;
#[cfg(test)]
mod tests;
mod tls;

pub use command::{BodyType, Verb};
pub use data::CHUNK_SIZE;
pub use envelope::Envelope;
pub use error::ServerError;
pub use events::{LogLine, ServerEvent, ServerOutput};
pub use received::{Received, ReceivedFacts};
pub use session::{ServerSession, MAX_COMMAND_LINE, MAX_PENDING};
pub use tls::ServerTlsHandshake;
