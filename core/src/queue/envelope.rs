//! The envelope record of one queued message: its recipients, where each stands, and how
//! one attempt's results are written into it.
//!
//! Not here: the record's text form ([`super::record`]), the retry schedule
//! ([`super::schedule`]) or log lines ([`super::log`]).

use super::id::QueueId;
use crate::reply::Reply;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::IpAddr;

/// Where a recipient stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecipientState {
    /// Not tried yet.
    #[default]
    Pending,
    /// Delivered (2xx after DATA).
    Sent,
    /// Failed temporarily; will be tried again.
    Deferred,
    /// Failed permanently, or still failing when the queue lifetime ran out.
    Bounced,
}

impl RecipientState {
    /// True while the recipient still needs a delivery attempt.
    pub fn is_remaining(self) -> bool {
        matches!(self, RecipientState::Pending | RecipientState::Deferred)
    }

    /// The word used in the record and in log lines (`status=`).
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientState::Pending => "pending",
            RecipientState::Sent => "sent",
            RecipientState::Deferred => "deferred",
            RecipientState::Bounced => "bounced",
        }
    }

    pub(super) fn from_word(word: &str) -> Option<RecipientState> {
        [
            RecipientState::Pending,
            RecipientState::Sent,
            RecipientState::Deferred,
            RecipientState::Bounced,
        ]
        .into_iter()
        .find(|s| s.as_str() == word)
    }
}

/// One envelope recipient and the outcome of its latest attempt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recipient {
    /// The address as given in `RCPT TO` (without angle brackets).
    pub address: String,
    /// The original recipient (`ORCPT`, RFC 3461), as `type;address`, when the client gave one.
    pub original: Option<String>,
    /// Where it stands.
    pub state: RecipientState,
    /// Enhanced status of the latest result (`4.4.1`), empty before the first attempt.
    pub dsn: String,
    /// The server reply or local reason of the latest result, as logged in parentheses.
    pub reason: String,
    /// Host name of the server that gave the latest result, empty when none answered.
    pub remote_mta: String,
}

impl Recipient {
    /// A recipient not yet tried.
    pub fn new(address: impl Into<String>) -> Recipient {
        Recipient {
            address: address.into(),
            ..Recipient::default()
        }
    }
}

/// Who handed the message to us, kept only for log lines and the `queue` listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientFacts {
    /// The client's verified host name, or `unknown`; empty for local submission.
    pub name: String,
    /// The client's address; `None` for local submission.
    pub addr: Option<IpAddr>,
    /// The HELO/EHLO argument.
    pub helo: String,
    /// `SMTP`, `ESMTP`, `ESMTPS`, or `local` for the sendmail interface.
    pub protocol: String,
    /// One-line TLS summary (`TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`),
    /// empty without TLS.
    pub tls: String,
}

/// The envelope record of one queued message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The message's queue id (also its file name).
    pub id: QueueId,
    /// `MAIL FROM` address without brackets; empty for the null sender (`<>`).
    pub sender: String,
    /// When the message became durable, unix seconds.
    pub arrival: u64,
    /// Size of the message file in bytes.
    pub size: u64,
    /// True when this message is itself a bounce (never bounced again).
    pub is_bounce: bool,
    /// The message asked for SMTPUTF8 (MAIL carried it, or `sendmail` found UTF-8 in its
    /// envelope or header): the next hop must offer it when the envelope or the header
    /// actually holds UTF-8.
    pub smtputf8: bool,
    /// Who sent it to us.
    pub client: ClientFacts,
    /// The recipients, in `RCPT TO` order.
    pub recipients: Vec<Recipient>,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// Unix second from which the next attempt is due (the arrival for a new message).
    pub next_attempt: u64,
    /// Why the latest attempt did not finish the message, empty when nothing failed.
    pub last_error: String,
    /// A header field made at receipt to go before the content at each delivery (the
    /// relay's `DKIM-Signature:`, CR LF included); empty for none.
    pub signature: String,
}

/// The result for one recipient of one attempt, before it is written into the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `Sent`, `Deferred` or `Bounced` (`Pending` is treated as `Deferred`).
    pub state: RecipientState,
    /// Enhanced status (`X.Y.Z`).
    pub dsn: String,
    /// Reply text or local reason, as it goes in parentheses in the log.
    pub reason: String,
    /// Host name of the server that answered, empty when none did.
    pub remote_mta: String,
}

impl Verdict {
    /// Classifies a server reply: 2xx sent, 4xx deferred, 5xx (or anything else) bounced.
    ///
    /// The enhanced status is taken from the reply when it carries one that agrees with the
    /// code, else the generic `X.0.0` of its class.
    pub fn from_reply(reply: &Reply, remote_mta: &str) -> Verdict {
        let (state, generic) = match reply.class() {
            2 => (RecipientState::Sent, "2.0.0"),
            4 => (RecipientState::Deferred, "4.0.0"),
            _ => (RecipientState::Bounced, "5.0.0"),
        };
        Verdict {
            state,
            dsn: String::from(reply.enhanced().unwrap_or(generic)),
            reason: alloc::format!("{reply}"),
            remote_mta: String::from(remote_mta),
        }
    }

    /// A temporary failure with a local reason (connection refused, TLS required, ...).
    pub fn deferred(dsn: &str, reason: impl Into<String>) -> Verdict {
        Verdict::local(RecipientState::Deferred, dsn, reason.into())
    }

    /// A permanent failure with a local reason (null MX, domain not found, ...).
    pub fn bounced(dsn: &str, reason: impl Into<String>) -> Verdict {
        Verdict::local(RecipientState::Bounced, dsn, reason.into())
    }

    fn local(state: RecipientState, dsn: &str, reason: String) -> Verdict {
        Verdict {
            state,
            dsn: String::from(dsn),
            reason,
            remote_mta: String::new(),
        }
    }
}

impl Envelope {
    /// A freshly received message, all recipients pending and due at once.
    pub fn new(
        id: QueueId,
        sender: impl Into<String>,
        arrival: u64,
        recipients: Vec<Recipient>,
    ) -> Envelope {
        Envelope {
            id,
            sender: sender.into(),
            arrival,
            size: 0,
            is_bounce: false,
            smtputf8: false,
            client: ClientFacts::default(),
            recipients,
            attempts: 0,
            next_attempt: arrival,
            last_error: String::new(),
            signature: String::new(),
        }
    }

    /// Writes one recipient's result. Returns false (and changes nothing) when `index` is out
    /// of range or the recipient is already final (sent or bounced): a late reply cannot undo
    /// a delivery.
    pub fn record(&mut self, index: usize, verdict: &Verdict) -> bool {
        let Some(r) = self.recipients.get_mut(index) else {
            return false;
        };
        if !r.state.is_remaining() {
            return false;
        }
        r.state = match verdict.state {
            RecipientState::Pending => RecipientState::Deferred,
            s => s,
        };
        r.dsn.clone_from(&verdict.dsn);
        r.reason.clone_from(&verdict.reason);
        r.remote_mta.clone_from(&verdict.remote_mta);
        if r.state == RecipientState::Deferred {
            self.last_error.clone_from(&verdict.reason);
        }
        true
    }

    /// Writes the same result for every recipient still remaining (the whole attempt failed
    /// before any recipient was answered). Returns how many were changed.
    pub fn defer_remaining(&mut self, verdict: &Verdict) -> usize {
        let remaining: Vec<usize> = self.remaining().collect();
        remaining
            .iter()
            .filter(|&&i| self.record(i, verdict))
            .count()
    }

    /// Indexes of the recipients that still need an attempt.
    pub fn remaining(&self) -> impl Iterator<Item = usize> + '_ {
        self.indexes_where(RecipientState::is_remaining)
    }

    /// Indexes of the recipients that failed permanently (the bounce report lists them).
    pub fn bounced(&self) -> impl Iterator<Item = usize> + '_ {
        self.indexes_where(|s| s == RecipientState::Bounced)
    }

    fn indexes_where(&self, keep: fn(RecipientState) -> bool) -> impl Iterator<Item = usize> + '_ {
        self.recipients
            .iter()
            .enumerate()
            .filter(move |(_, r)| keep(r.state))
            .map(|(i, _)| i)
    }

    /// True when no recipient needs another attempt: the message can leave the queue (after
    /// its bounce, if any).
    pub fn is_done(&self) -> bool {
        self.remaining().next().is_none()
    }

    /// True when some recipient bounced.
    pub fn has_bounced(&self) -> bool {
        self.bounced().next().is_some()
    }

    /// True when an attempt is due at `now` (unix seconds).
    pub fn is_due(&self, now: u64) -> bool {
        !self.is_done() && self.next_attempt <= now
    }

    /// Seconds since arrival, zero if the clock went back.
    pub fn age(&self, now: u64) -> u64 {
        now.saturating_sub(self.arrival)
    }
}
