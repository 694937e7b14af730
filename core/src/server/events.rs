//! What a server session and its shell tell each other: [`ServerOutput`] (session to
//! shell, drained in order) and [`ServerEvent`] (shell to session), with the log lines the
//! session asks the shell to write.
//!
//! Not here: when each is produced or acted on (the session, the shell).

use super::envelope::Envelope;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

/// Something the shell must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerOutput {
    /// Send these bytes to the client.
    Transmit(Vec<u8>),
    /// The `220` to STARTTLS has been queued before this: call
    /// [`ServerSession::start_tls`](super::ServerSession::start_tls) and run the handshake.
    StartTls,
    /// A message begins: open a queue file for this envelope.
    MessageBegin(Box<Envelope>),
    /// Message content to append.
    BodyChunk(Vec<u8>),
    /// The message is complete: make it durable and report with an event.
    MessageEnd,
    /// The message is refused or the client went away: discard it.
    MessageAbort,
    /// A complete `XCERTRELAY` request: check and answer it, then call `handle_event` with
    /// [`ServerEvent::Enrolled`]; input is held meanwhile.
    Enroll(Box<crate::enroll::EnrollRequest>),
    /// A line for the mail log.
    Log(LogLine),
    /// Close the connection.
    Close,
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
    /// The answer to the last [`ServerOutput::Enroll`].
    Enrolled(crate::enroll::EnrollAnswer),
}
