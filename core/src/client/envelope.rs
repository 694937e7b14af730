//! What the shell hands over for one message, and the mistakes it can make doing so.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// The envelope of one queued message, for one next hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Envelope sender; empty for the null sender of a bounce (`MAIL FROM:<>`).
    pub sender: String,
    /// Recipients at this next hop, in queue order. Results come back in the same order.
    pub recipients: Vec<String>,
    /// Size of the message body in octets, sent as `SIZE=` when the server offers SIZE.
    pub body_size: Option<u64>,
    /// The body has 8-bit octets: `BODY=8BITMIME` when the server offers 8BITMIME.
    pub eight_bit: bool,
}

impl Envelope {
    /// Refuses envelopes that would put something other than an address on the wire: no
    /// recipients, an empty recipient, or a control character (CR, LF, ...) anywhere.
    pub(crate) fn check(&self) -> Result<(), ClientError> {
        if self.recipients.is_empty() {
            return Err(ClientError::NoRecipients);
        }
        let unsafe_addr = |a: &String| a.chars().any(|c| c.is_control());
        if let Some(bad) = core::iter::once(&self.sender)
            .chain(&self.recipients)
            .find(|a| unsafe_addr(a))
        {
            return Err(ClientError::BadAddress(bad.escape_debug().collect()));
        }
        if self.recipients.iter().any(String::is_empty) {
            return Err(ClientError::BadAddress(String::new()));
        }
        Ok(())
    }
}

/// A request the session cannot take in its present state. These are mistakes of the
/// shell's run loop, not of the server; the session is left as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// `send_message` before `Ready` (still greeting, in EHLO or TLS, or resetting).
    NotReady,
    /// `quit` while a message is in flight; wait for its `MessageDone`.
    Busy,
    /// The connection is closed or closing.
    Closed,
    /// An envelope without recipients.
    NoRecipients,
    /// An address that is empty where it may not be, or holds a control character (shown
    /// escaped).
    BadAddress(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NotReady => {
                f.write_str("SMTP client session is not ready for a message yet (wait for Ready)")
            }
            ClientError::Busy => {
                f.write_str("SMTP client session has a message in flight (wait for MessageDone)")
            }
            ClientError::Closed => f.write_str("SMTP client session is closed"),
            ClientError::NoRecipients => f.write_str("envelope has no recipients"),
            ClientError::BadAddress(a) => write!(f, "envelope address \"{a}\" cannot be sent"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(sender: &str, rcpts: &[&str]) -> Envelope {
        Envelope {
            sender: sender.into(),
            recipients: rcpts.iter().map(|r| String::from(*r)).collect(),
            body_size: None,
            eight_bit: false,
        }
    }

    #[test]
    fn checks() {
        assert_eq!(env("", &["a@b"]).check(), Ok(()));
        assert_eq!(env("a@b", &[]).check(), Err(ClientError::NoRecipients));
        assert_eq!(
            env("a@b\r\nRSET", &["c@d"]).check(),
            Err(ClientError::BadAddress("a@b\\r\\nRSET".into()))
        );
        assert_eq!(
            env("a@b", &["c@d", ""]).check(),
            Err(ClientError::BadAddress("".into()))
        );
    }
}
