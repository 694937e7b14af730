//! The SMTP client session: delivers queued mail to the next hop.
//!
//! ## What this module does not do
//!
//! It does not connect, resolve MX records, pick the next server, speak TLS or verify
//! certificates, read the queue or keep time. The shell does all that and tells the session
//! (peer name and address in [`ClientSession::new`], the certificate verdict in
//! [`ClientTlsHandshake::established`], body chunks, timer expiry, a lost connection).
//!
//! ## Run loop
//!
//! 1. Open a connection and create a [`ClientSession`] with the settings for this next hop.
//! 2. Drain [`ClientSession::poll_output`] until `None`, in order:
//!    - [`ClientOutput::Transmit`]: write the bytes.
//!    - [`ClientOutput::StartTls`]: stop reading plaintext and call
//!      [`ClientSession::start_tls`]; run the handshake within
//!      [`ClientTlsHandshake::poll_timeout`], then [`ClientTlsHandshake::established`] with
//!      the certificate verdict, or [`ClientTlsHandshake::failed`]; continue with the
//!      session they return.
//!    - [`ClientOutput::Ready`]: [`ClientSession::send_message`] the next message for this
//!      server, or [`ClientSession::quit`].
//!    - [`ClientOutput::NeedBody`]: read the next chunk of the body (a few KiB) and pass it
//!      as [`ClientEvent::Body`], or [`ClientEvent::BodyEnd`] at its end. The session asks
//!      for the next chunk only after the last one's bytes were queued, so memory stays
//!      bounded by the chunk size.
//!    - [`ClientOutput::MessageDone`]: record each recipient's [`Outcome`] (and log it:
//!      `Outcome`'s `Display` is the `dsn=..., status=... (...)` tail).
//!    - [`ClientOutput::Close`]: close the socket; see [`Closing`] for what it means for the
//!      messages still waiting.
//! 3. Arm one timer for [`ClientSession::poll_timeout`].
//! 4. Feed server bytes with [`ClientSession::handle_input`], shell facts with
//!    [`ClientSession::handle_event`], or the timer's expiry with
//!    [`ClientSession::handle_timeout`], whichever comes first; go to 2.
//!
//! ## Dialogue
//!
//! Greeting, EHLO (HELO when EHLO gets a 5xx), STARTTLS according to the [`TlsLevel`] of
//! the next hop (`none` never; `may` when offered, going on in plaintext otherwise or when
//! the server refuses it; `encrypt` and up require it), then EHLO again inside TLS. Each
//! message: MAIL, RCPT for each recipient and DATA, in one batch when the server offers
//! PIPELINING, one at a time otherwise; the body, dot-stuffed; the final dot. A transaction
//! that did not end at the final dot is cleared with RSET before the next one.
//!
//! The files mirror [`crate::server`]'s: `events` (what session and shell tell each other),
//! `session` (the dialogue), `tls` (the STARTTLS hand-over), `envelope`, and the parts only
//! a client has (reply parser, capabilities, body encoder, outcomes).
//!
//! [`TlsLevel`]: crate::tls_policy::TlsLevel

mod body;
mod capabilities;
mod envelope;
mod events;
mod outcome;
mod reply_parser;
mod session;
mod tls;

#[cfg(test)]
mod tests;

pub use body::{line_break_overhead, BodyEncoder};
pub use capabilities::Capabilities;
pub use envelope::{header_is_ascii, ClientError, Envelope};
pub use events::{ClientEvent, ClientOutput, Closing};
pub use outcome::{DeliveryStatus, MessageReport, Outcome, RecipientResult, ServerPeer};
pub use reply_parser::{ReplyError, ReplyParser, MAX_REPLY_LINE, MAX_REPLY_LINES};
pub use session::ClientSession;
pub use tls::{ClientTlsHandshake, ServerCertVerdict};
