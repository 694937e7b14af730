//! The envelope of a message received by the server: who sent it to whom, and how.
//!
//! Not here: the message content (the shell stores it from the body chunks) or the queue
//! file's record of the envelope ([`crate::queue`]).

use super::command::BodyType;
use super::received::Received;
use crate::address::Path;
use crate::facts::{PeerInfo, TlsFacts};
use alloc::string::String;
use alloc::vec::Vec;

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
    /// MAIL carried `SMTPUTF8`: the message may need it on the next hop too.
    pub smtputf8: bool,
    /// The client.
    pub client: PeerInfo,
    /// Its HELO/EHLO name.
    pub helo: Option<String>,
    /// `SMTP`, `ESMTP` or `ESMTPS` (`UTF8SMTP`, `UTF8SMTPS` with SMTPUTF8), as in the
    /// Received header.
    pub protocol: &'static str,
    /// The TLS session, if any.
    pub tls: Option<TlsFacts>,
    /// The `Received:` header to write before the content.
    pub received: Received,
}
