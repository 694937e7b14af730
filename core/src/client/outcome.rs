//! What became of a recipient or a connection, in the words the delivery log uses:
//! `dsn=X.Y.Z, status=sent|deferred|bounced (<reason>)`.

use crate::reply::Reply;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::IpAddr;

/// The server this session talks to, as log texts name it: `name[address]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerPeer {
    /// Host name (from the MX record or the relayhost), or the address when there is none.
    pub name: String,
    /// Address connected to.
    pub addr: IpAddr,
}

impl fmt::Display for ServerPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.name, self.addr)
    }
}

/// The three fates of a recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// The next hop took responsibility for it.
    Sent,
    /// Try again later; the message stays queued for it.
    Deferred,
    /// Permanent failure; a bounce goes to the sender.
    Bounced,
}

impl DeliveryStatus {
    /// The word in `status=`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Deferred => "deferred",
            DeliveryStatus::Bounced => "bounced",
        }
    }

    fn class(self) -> char {
        match self {
            DeliveryStatus::Sent => '2',
            DeliveryStatus::Deferred => '4',
            DeliveryStatus::Bounced => '5',
        }
    }
}

/// A status, its enhanced code and the reason, plus the server reply behind it if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Sent, deferred or bounced.
    pub status: DeliveryStatus,
    /// Enhanced status code `X.Y.Z`; its class always agrees with `status`.
    pub dsn: String,
    /// The text in parentheses of the log line.
    pub reason: String,
    /// The server reply this came from (for a bounce's Diagnostic-Code), if one did.
    pub reply: Option<Reply>,
}

impl Outcome {
    /// An outcome decided here rather than by a server reply.
    pub fn local(status: DeliveryStatus, dsn: &str, reason: impl Into<String>) -> Self {
        Outcome {
            status,
            dsn: with_class(dsn, status),
            reason: reason.into(),
            reply: None,
        }
    }

    /// A delivery the server accepted: the reason is the reply itself.
    pub fn sent(reply: &Reply) -> Self {
        Self::from_reply(DeliveryStatus::Sent, reply, format!("{reply}"))
    }

    /// A command the server refused: 5xx bounces, anything else defers.
    /// The reason reads `host <peer> said: <reply> (in reply to <command> command)`.
    pub fn refused(peer: &ServerPeer, reply: &Reply, command: &str) -> Self {
        let status = if reply.is_permanent() {
            DeliveryStatus::Bounced
        } else {
            DeliveryStatus::Deferred
        };
        Self::deferred_or(status, peer, reply, command)
    }

    /// As [`Outcome::refused`], but always deferred (a 421, or a failure of the whole
    /// connection, which is never permanent).
    pub fn refused_temporarily(peer: &ServerPeer, reply: &Reply, command: &str) -> Self {
        Self::deferred_or(DeliveryStatus::Deferred, peer, reply, command)
    }

    /// A reply-based outcome with a reason of our own, always deferred.
    pub fn deferred_by(reply: &Reply, reason: String) -> Self {
        Self::from_reply(DeliveryStatus::Deferred, reply, reason)
    }

    fn deferred_or(status: DeliveryStatus, peer: &ServerPeer, reply: &Reply, cmd: &str) -> Self {
        let reason = format!("host {peer} said: {reply} (in reply to {cmd} command)");
        Self::from_reply(status, reply, reason)
    }

    fn from_reply(status: DeliveryStatus, reply: &Reply, reason: String) -> Self {
        // The server's own code when it gave one, moved to the class of what we do with it
        // (a 5xx greeting defers, so 5.7.1 is logged as 4.7.1).
        let dsn = reply.enhanced().unwrap_or("0.0.0");
        Outcome {
            status,
            dsn: with_class(dsn, status),
            reason,
            reply: Some(reply.clone()),
        }
    }
}

/// `dsn` with its first digit replaced by the class of `status`.
fn with_class(dsn: &str, status: DeliveryStatus) -> String {
    let rest = dsn
        .get(1..)
        .filter(|r| r.starts_with('.'))
        .unwrap_or(".0.0");
    let mut out = String::with_capacity(rest.len() + 1);
    out.push(status.class());
    out.push_str(rest);
    out
}

/// `dsn=4.4.2, status=deferred (reason)`, the tail of a delivery log line.
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dsn={}, status={} ({})",
            self.dsn,
            self.status.as_str(),
            self.reason
        )
    }
}

/// The fate of one recipient of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientResult {
    /// The recipient address, as given in the envelope.
    pub recipient: String,
    /// What happened to it.
    pub outcome: Outcome,
}

/// The end of one message on this connection: one result per recipient, in envelope order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageReport {
    /// Every recipient of the envelope, each with its outcome.
    pub recipients: Vec<RecipientResult>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use core::net::Ipv4Addr;

    fn peer() -> ServerPeer {
        ServerPeer {
            name: "mx.example".into(),
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        }
    }

    #[test]
    fn dsn_comes_from_the_reply_or_its_class() {
        let table: &[(Reply, &str, &str)] = &[
            (Reply::new(250, "2.0.0 Ok: queued as 4Xy"), "2.0.0", "sent"),
            (Reply::new(250, "Ok"), "2.0.0", "sent"),
            (Reply::new(550, "5.1.1 <u@x>: unknown"), "5.1.1", "bounced"),
            (Reply::new(550, "unknown user"), "5.0.0", "bounced"),
            (Reply::new(451, "4.3.0 try later"), "4.3.0", "deferred"),
            (Reply::new(452, "too many"), "4.0.0", "deferred"),
            (Reply::new(354, "go ahead"), "4.0.0", "deferred"),
        ];
        for (reply, dsn, status) in table {
            let o = if reply.is_positive() {
                Outcome::sent(reply)
            } else {
                Outcome::refused(&peer(), reply, "RCPT TO")
            };
            assert_eq!(
                (o.dsn.as_str(), o.status.as_str()),
                (*dsn, *status),
                "{reply}"
            );
        }
    }

    #[test]
    fn log_tail_shapes() {
        let sent = Outcome::sent(&Reply::new(250, "2.0.0 Ok: queued as 4Xy"));
        assert_eq!(
            sent.to_string(),
            "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4Xy)"
        );
        let bounced = Outcome::refused(&peer(), &Reply::new(550, "5.1.1 <u@x>: no"), "RCPT TO");
        assert_eq!(
            bounced.to_string(),
            "dsn=5.1.1, status=bounced (host mx.example[192.0.2.7] said: 550 5.1.1 <u@x>: no \
             (in reply to RCPT TO command))"
        );
        let greeting = Outcome::refused_temporarily(&peer(), &Reply::new(554, "5.7.1 no"), "X");
        assert_eq!(greeting.dsn, "4.7.1");
        let local = Outcome::local(DeliveryStatus::Deferred, "4.7.4", "TLS is required");
        assert_eq!(
            local.to_string(),
            "dsn=4.7.4, status=deferred (TLS is required)"
        );
    }
}
