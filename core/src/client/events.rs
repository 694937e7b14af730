//! What a client session and its shell tell each other: [`ClientOutput`] (session to
//! shell, drained in order) and [`ClientEvent`] (shell to session), with the [`Closing`]
//! that says why a connection ended.
//!
//! Not here: when each is produced or acted on (the session, the shell).

use super::outcome::{MessageReport, Outcome};
use alloc::vec::Vec;

/// What the shell must do next, drained in order with
/// [`ClientSession::poll_output`](super::ClientSession::poll_output).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOutput {
    /// Write these bytes to the server (one pipelined batch is one `Transmit`).
    Transmit(Vec<u8>),
    /// The server agreed to STARTTLS: call
    /// [`ClientSession::start_tls`](super::ClientSession::start_tls) and run the handshake.
    StartTls,
    /// The session is idle: hand it a message with
    /// [`ClientSession::send_message`](super::ClientSession::send_message), or call
    /// [`ClientSession::quit`](super::ClientSession::quit).
    Ready,
    /// The session can take more of the message body: feed the next chunk with
    /// [`ClientEvent::Body`], or [`ClientEvent::BodyEnd`] after the last one.
    NeedBody,
    /// The message is finished: one result per recipient.
    MessageDone(MessageReport),
    /// Close the connection (after writing what was transmitted before); nothing follows.
    Close(Closing),
}

/// Why the connection ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closing {
    /// The shell asked to quit and the dialogue ended normally.
    Done,
    /// The server went away (or misbehaved) while no message was in flight. Nothing was
    /// lost; the reason is for logs. Open a new connection for the next message and do not
    /// count this against any message.
    Dropped(Outcome),
    /// The connection failed while setting up (greeting, EHLO, TLS) or during a message
    /// (whose recipients were already reported, deferred). Messages still meant for this
    /// server are deferred with this outcome, or tried at the next server.
    Failed(Outcome),
    /// TLS was optional (level `may`) and its handshake failed. As Postfix does, connect
    /// to the same server again and deliver in plaintext (this next hop at
    /// [`TlsLevel::None`](crate::tls_policy::TlsLevel::None)); the outcome is for logs. No message was in flight.
    RetryWithoutTls(Outcome),
}

/// Something the shell learned or wants, other than bytes from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientEvent<'a> {
    /// The next chunk of the message body, as stored (LF or CR LF line ends, not
    /// dot-stuffed). Only after [`ClientOutput::NeedBody`]; ignored otherwise.
    Body(&'a [u8]),
    /// The body is complete. Only after [`ClientOutput::NeedBody`]; ignored otherwise.
    BodyEnd,
    /// The server closed the connection, or reading or writing failed.
    ConnectionLost,
}
