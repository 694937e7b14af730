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
    /// The message asked for SMTPUTF8 (the queue record's `smtputf8:`): `SMTPUTF8` on MAIL
    /// when the server offers it.
    pub smtputf8: bool,
    /// The message's header section holds non-ASCII octets (see [`header_is_ascii`]).
    pub utf8_header: bool,
}

impl Envelope {
    /// True when this message cannot go to a server without SMTPUTF8: it asked for it and
    /// its envelope or header really holds UTF-8. One that asked but is all ASCII goes
    /// anyway, as Postfix sends it.
    pub fn requires_smtputf8(&self) -> bool {
        self.smtputf8
            && (self.utf8_header
                || !self.sender.is_ascii()
                || self.recipients.iter().any(|r| !r.is_ascii()))
    }

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

/// True when the header section at the start of `content` (up to its first empty line, or
/// all of `content` when it has none) is ASCII. The body is not looked at: 8-bit body text
/// needs 8BITMIME, not SMTPUTF8.
pub fn header_is_ascii(content: &[u8]) -> bool {
    let mut line_start = 0;
    for (i, &b) in content.iter().enumerate() {
        if b == b'\n' {
            let line = &content[line_start..i];
            if line.is_empty() || line == b"\r" {
                return true;
            }
            line_start = i + 1;
        } else if !b.is_ascii() {
            return false;
        }
    }
    true
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
            smtputf8: false,
            utf8_header: false,
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
        // C1 controls are control characters too.
        assert_eq!(
            env("a\u{85}b@c", &["c@d"]).check(),
            Err(ClientError::BadAddress("a\\u{85}b@c".into()))
        );
    }

    #[test]
    fn smtputf8_is_required_only_for_real_utf8() {
        let mut e = env("a@b.example", &["c@d.example"]);
        assert!(!e.requires_smtputf8());
        e.smtputf8 = true;
        // Asked for, but all ASCII: goes to any server.
        assert!(!e.requires_smtputf8());
        let mut utf8_rcpt = e.clone();
        utf8_rcpt.recipients.push("josé@exemple.fr".into());
        assert!(utf8_rcpt.requires_smtputf8());
        let mut utf8_sender = e.clone();
        utf8_sender.sender = "a@exemplé.fr".into();
        assert!(utf8_sender.requires_smtputf8());
        let mut utf8_header = e.clone();
        utf8_header.utf8_header = true;
        assert!(utf8_header.requires_smtputf8());
        // Not asked for: never required (the sender's mistake is not ours to bounce).
        utf8_rcpt.smtputf8 = false;
        assert!(!utf8_rcpt.requires_smtputf8());
    }

    #[test]
    fn only_the_header_section_is_looked_at() {
        assert!(header_is_ascii(
            b"Subject: cafe\r\n\r\nbody caf\xc3\xa9\r\n"
        ));
        assert!(header_is_ascii(b"Subject: cafe\n\ncaf\xc3\xa9"));
        assert!(!header_is_ascii(b"Subject: caf\xc3\xa9\r\n\r\nbody\r\n"));
        assert!(!header_is_ascii(b"From: a\r\nSubject: \xff"));
        assert!(header_is_ascii(b""));
        assert!(header_is_ascii(b"\r\n\xff"));
    }
}
