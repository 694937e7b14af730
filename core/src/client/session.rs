//! The client dialogue: greeting, EHLO, STARTTLS decision, then messages until QUIT.

use super::body::BodyEncoder;
use super::capabilities::Capabilities;
use super::envelope::{ClientError, Envelope};
use super::events::{ClientEvent, ClientOutput, Closing};
use super::outcome::{DeliveryStatus, MessageReport, Outcome, RecipientResult, ServerPeer};
use super::reply_parser::{ReplyError, ReplyParser};
use crate::reply::Reply;
use crate::settings::ClientSettings;
use crate::tls_policy::TlsLevel;
use crate::Instant;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// A command whose reply is awaited, in sending order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Mail,
    Rcpt(usize),
    Data,
    /// The final dot of a body.
    Dot,
    /// A lone dot after DATA was accepted although no recipient was.
    EmptyDot,
    Rset,
    Quit,
}

impl Cmd {
    /// As in `(in reply to <name> command)`.
    fn name(self) -> &'static str {
        match self {
            Cmd::Greeting => "initial greeting",
            Cmd::Ehlo => "EHLO",
            Cmd::Helo => "HELO",
            Cmd::StartTls => "STARTTLS",
            Cmd::Mail => "MAIL FROM",
            Cmd::Rcpt(_) => "RCPT TO",
            Cmd::Data => "DATA",
            Cmd::Dot | Cmd::EmptyDot => "end of DATA",
            Cmd::Rset => "RSET",
            Cmd::Quit => "QUIT",
        }
    }

    /// As in `timed out while <doing>`.
    fn doing(self) -> &'static str {
        match self {
            Cmd::Greeting => "receiving the initial server greeting",
            Cmd::Ehlo => "performing the EHLO handshake",
            Cmd::Helo => "performing the HELO handshake",
            Cmd::StartTls => "receiving the STARTTLS response",
            Cmd::Mail => "sending MAIL FROM",
            Cmd::Rcpt(_) => "sending RCPT TO",
            Cmd::Data => "sending DATA command",
            Cmd::Dot => "sending end of data -- message may be sent more than once",
            Cmd::EmptyDot => "sending end of data",
            Cmd::Rset => "sending RSET",
            Cmd::Quit => "sending QUIT",
        }
    }
}

#[derive(Debug)]
enum Phase {
    /// Greeting, EHLO/HELO, STARTTLS: not ready for a message yet.
    Setup,
    /// The server said 220 to STARTTLS; the shell must call `start_tls`.
    WantTls,
    /// Ready for a message.
    Idle,
    /// A message is in flight (`txn` is set).
    Message,
    /// RSET after a transaction that did not end with a reply to the final dot.
    Rset,
    /// QUIT sent; the closing is decided.
    Quitting(Closing),
    /// Close was emitted.
    Closed,
}

/// One message in flight.
#[derive(Debug)]
struct Transaction {
    envelope: Envelope,
    results: Vec<Option<Outcome>>,
    accepted: Vec<bool>,
    mail_failed: bool,
    pipelined: bool,
    /// Set while the body is being fed.
    body: Option<BodyEncoder>,
}

impl Transaction {
    fn any_accepted(&self) -> bool {
        !self.mail_failed && self.accepted.iter().any(|&a| a)
    }

    /// Gives every accepted recipient still without a result the same outcome.
    fn settle_accepted(&mut self, outcome: impl Fn() -> Outcome) {
        for (result, &accepted) in self.results.iter_mut().zip(&self.accepted) {
            if accepted && result.is_none() {
                *result = Some(outcome());
            }
        }
    }

    fn settle_all(&mut self, outcome: &Outcome) {
        for result in self.results.iter_mut().filter(|r| r.is_none()) {
            *result = Some(outcome.clone());
        }
    }

    fn report(self) -> MessageReport {
        let recipients = self
            .envelope
            .recipients
            .into_iter()
            .zip(self.results)
            .map(|(recipient, outcome)| RecipientResult {
                recipient,
                outcome: outcome.unwrap_or_else(|| {
                    Outcome::local(DeliveryStatus::Deferred, "4.3.0", "delivery status unknown")
                }),
            })
            .collect();
        MessageReport { recipients }
    }
}

/// One SMTP client connection to one server, sans IO.
///
/// Drive it as the crate-level run loop describes: feed server bytes with
/// [`handle_input`](Self::handle_input), shell facts with [`handle_event`](Self::handle_event),
/// expired timers with [`handle_timeout`](Self::handle_timeout); after each, drain
/// [`poll_output`](Self::poll_output) and re-arm the timer from
/// [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct ClientSession {
    pub(super) settings: ClientSettings,
    pub(super) peer: ServerPeer,
    parser: ReplyParser,
    out: VecDeque<ClientOutput>,
    expect: VecDeque<Cmd>,
    phase: Phase,
    txn: Option<Transaction>,
    caps: Capabilities,
    pub(super) tls_active: bool,
    quit_wanted: bool,
    deadline: Option<Instant>,
    /// Octets the server sent after its 220 to STARTTLS, dropped unread.
    discarded: usize,
}

impl ClientSession {
    /// A session on a freshly opened connection to `peer`, awaiting the server greeting.
    /// `settings.tls_level` is the level already resolved for this next hop.
    pub fn new(settings: ClientSettings, peer: ServerPeer, now: Instant) -> Self {
        let mut session = ClientSession {
            settings,
            peer,
            parser: ReplyParser::new(),
            out: VecDeque::new(),
            expect: VecDeque::new(),
            phase: Phase::Setup,
            txn: None,
            caps: Capabilities::default(),
            tls_active: false,
            quit_wanted: false,
            deadline: None,
            discarded: 0,
        };
        session.expect.push_back(Cmd::Greeting);
        session.rearm(now);
        session
    }

    /// The server this session talks to.
    pub fn peer(&self) -> &ServerPeer {
        &self.peer
    }

    /// What the server announced in its latest EHLO reply.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// True once TLS is established on this connection.
    pub fn is_tls(&self) -> bool {
        self.tls_active
    }

    /// Bytes from the server. After the server's 220 to STARTTLS nothing more is read:
    /// the rest is dropped and counted (see [`ClientTlsHandshake::discarded`](super::ClientTlsHandshake::discarded)).
    pub fn handle_input(&mut self, mut input: &[u8], now: Instant) {
        while !input.is_empty() {
            match self.phase {
                Phase::WantTls => {
                    // The one place plaintext after the 220 is dropped; `start_tls` adds
                    // what the reply parser still held.
                    self.discarded = self.discarded.saturating_add(input.len());
                    return;
                }
                Phase::Closed => return,
                _ => {}
            }
            let (taken, found) = self.parser.push(input);
            input = &input[taken..];
            match found {
                None => {}
                Some(Ok(reply)) => self.on_reply(reply),
                Some(Err(error)) => self.on_malformed(&error),
            }
            self.rearm(now);
        }
    }

    /// A fact from the shell: body data, end of body, or a lost connection.
    pub fn handle_event(&mut self, event: ClientEvent<'_>, now: Instant) {
        match event {
            ClientEvent::Body(chunk) => {
                let Some(encoder) = self.txn.as_mut().and_then(|t| t.body.as_mut()) else {
                    return;
                };
                let mut bytes = Vec::new();
                encoder.encode(chunk, &mut bytes);
                self.transmit_owned(bytes);
                self.out.push_back(ClientOutput::NeedBody);
            }
            ClientEvent::BodyEnd => {
                let Some(mut encoder) = self.txn.as_mut().and_then(|t| t.body.take()) else {
                    return;
                };
                let mut bytes = Vec::new();
                encoder.finish(&mut bytes);
                self.send(&bytes, Cmd::Dot);
            }
            ClientEvent::ConnectionLost => match self.phase {
                Phase::Closed => {}
                Phase::Quitting(_) => self.close_now(),
                _ => {
                    let reason =
                        format!("lost connection with {} while {}", self.peer, self.doing());
                    self.fail(
                        Outcome::local(DeliveryStatus::Deferred, "4.4.2", reason),
                        false,
                    );
                }
            },
        }
        self.rearm(now);
    }

    /// The timer armed from [`poll_timeout`](Self::poll_timeout) fired. Early calls are
    /// ignored.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_none_or(|d| now < d) {
            return;
        }
        if let Phase::Quitting(_) = self.phase {
            self.close_now();
        } else {
            let reason = format!(
                "conversation with {} timed out while {}",
                self.peer,
                self.doing()
            );
            self.fail(
                Outcome::local(DeliveryStatus::Deferred, "4.4.2", reason),
                false,
            );
        }
        self.rearm(now);
    }

    /// The next output, oldest first; `None` when there is nothing to do.
    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due, if a reply or body data is
    /// awaited; `None` while the session waits for [`start_tls`](Self::start_tls) (the
    /// handshake has its own [`poll_timeout`](super::ClientTlsHandshake::poll_timeout)) and
    /// after it closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::WantTls => None,
            _ => self.deadline,
        }
    }

    /// Starts delivering one message. Only after [`ClientOutput::Ready`].
    pub fn send_message(&mut self, envelope: Envelope, now: Instant) -> Result<(), ClientError> {
        match self.phase {
            Phase::Idle => {}
            Phase::Quitting(_) | Phase::Closed => return Err(ClientError::Closed),
            _ => return Err(ClientError::NotReady),
        }
        envelope.check()?;
        let n = envelope.recipients.len();
        let mut txn = Transaction {
            envelope,
            results: alloc::vec![None; n],
            accepted: alloc::vec![false; n],
            mail_failed: false,
            pipelined: self.caps.pipelining,
            body: None,
        };
        let refusal = self
            .smtputf8_refusal(&txn.envelope)
            .or_else(|| self.size_refusal(&txn.envelope));
        if let Some(refused) = refusal {
            txn.settle_all(&refused);
            self.out.push_back(ClientOutput::MessageDone(txn.report()));
            self.out.push_back(ClientOutput::Ready);
            return Ok(());
        }
        let mail = self.mail_command(&txn.envelope);
        self.send(mail.as_bytes(), Cmd::Mail);
        if txn.pipelined {
            for (i, rcpt) in txn.envelope.recipients.iter().enumerate() {
                self.send(rcpt_command(rcpt).as_bytes(), Cmd::Rcpt(i));
            }
            self.send(b"DATA\r\n", Cmd::Data);
        }
        self.txn = Some(txn);
        self.phase = Phase::Message;
        self.rearm(now);
        Ok(())
    }

    /// Ends the session with QUIT: now when idle, or as soon as the session would become
    /// ready (during setup or a reset). Refused while a message is in flight.
    pub fn quit(&mut self, now: Instant) -> Result<(), ClientError> {
        match self.phase {
            Phase::Message => return Err(ClientError::Busy),
            Phase::Quitting(_) | Phase::Closed => return Ok(()),
            Phase::Idle => self.send_quit(Closing::Done),
            Phase::Setup | Phase::WantTls | Phase::Rset => self.quit_wanted = true,
        }
        self.rearm(now);
        Ok(())
    }

    // ---- replies -------------------------------------------------------------------

    fn on_reply(&mut self, reply: Reply) {
        let Some(cmd) = self.expect.pop_front() else {
            return self.on_unsolicited(&reply);
        };
        if let Phase::Quitting(_) = self.phase {
            if cmd == Cmd::Quit {
                self.close_now();
            }
            return;
        }
        match cmd {
            Cmd::Greeting | Cmd::Ehlo | Cmd::Helo => return self.on_hello(cmd, &reply),
            _ => {}
        }
        if reply.code == 421 {
            let outcome = Outcome::refused_temporarily(&self.peer, &reply, cmd.name());
            return self.fail(outcome, false);
        }
        match cmd {
            Cmd::StartTls => self.on_starttls(&reply),
            Cmd::Mail => self.on_mail(&reply),
            Cmd::Rcpt(i) => self.on_rcpt(i, &reply),
            Cmd::Data => self.on_data(&reply),
            Cmd::Dot => self.on_dot(&reply),
            Cmd::EmptyDot => self.finish_message(false),
            Cmd::Rset => self.on_rset(&reply),
            Cmd::Greeting | Cmd::Ehlo | Cmd::Helo | Cmd::Quit => {}
        }
    }

    /// Greeting, EHLO and HELO. Any refusal of EHLO but 421 falls back to HELO; any other
    /// refusal fails the connection as `refused to talk to me` (deferred even for 5xx:
    /// another server, or a later try, may do better).
    fn on_hello(&mut self, cmd: Cmd, reply: &Reply) {
        let next = if reply.is_positive() {
            if let Some(outcome) = self.loops_back(cmd, reply) {
                return self.fail(outcome, true);
            }
            match cmd {
                Cmd::Ehlo => self.caps = Capabilities::from_ehlo(reply),
                Cmd::Helo => self.caps = Capabilities::default(),
                _ => {}
            }
            match cmd {
                Cmd::Greeting => Some(("EHLO", Cmd::Ehlo)),
                _ => return self.after_hello(),
            }
        } else if cmd == Cmd::Ehlo && reply.code != 421 {
            Some(("HELO", Cmd::Helo))
        } else {
            None
        };
        match next {
            Some((verb, next)) => {
                let line = format!("{verb} {}\r\n", self.settings.helo_name);
                self.send(line.as_bytes(), next);
            }
            None => {
                let reason = format!("host {} refused to talk to me: {reply}", self.peer);
                self.fail(Outcome::deferred_by(reply, reason), reply.code != 421);
            }
        }
    }

    /// A positive greeting or EHLO reply that names this very host (`myhostname`): the
    /// mail would come back here. Every recipient bounces with 5.4.6, as Postfix's do.
    fn loops_back(&self, cmd: Cmd, reply: &Reply) -> Option<Outcome> {
        let check = self.settings.self_check.as_ref()?;
        if !matches!(cmd, Cmd::Greeting | Cmd::Ehlo) {
            return None;
        }
        let name = reply.lines.first()?.split_ascii_whitespace().next()?;
        let me = check.myhostname.trim_end_matches('.');
        if !name.trim_end_matches('.').eq_ignore_ascii_case(me) {
            return None;
        }
        let reason = format!("mail for {} loops back to myself", check.nexthop);
        Some(Outcome::local(DeliveryStatus::Bounced, "5.4.6", reason))
    }

    /// The STARTTLS decision, per TLS level.
    fn after_hello(&mut self) {
        let level = self.settings.tls_level;
        if self.tls_active || level == TlsLevel::None {
            return self.ready();
        }
        if self.caps.starttls {
            return self.send(b"STARTTLS\r\n", Cmd::StartTls);
        }
        if level == TlsLevel::May {
            return self.ready();
        }
        let reason = format!("TLS is required, but was not offered by host {}", self.peer);
        self.fail(
            Outcome::local(DeliveryStatus::Deferred, "4.7.4", reason),
            true,
        );
    }

    fn on_starttls(&mut self, reply: &Reply) {
        if reply.is_positive() {
            self.phase = Phase::WantTls;
            self.out.push_back(ClientOutput::StartTls);
        } else if self.settings.tls_level == TlsLevel::May {
            // The server state is as before STARTTLS: carry on in plaintext.
            self.ready();
        } else {
            let reason = format!(
                "TLS is required, but host {} refused to start TLS: {reply}",
                self.peer
            );
            self.fail(Outcome::deferred_by(reply, reason), true);
        }
    }

    fn on_mail(&mut self, reply: &Reply) {
        let peer = self.peer.clone();
        let Some(txn) = self.txn.as_mut() else { return };
        if !reply.is_positive() {
            txn.mail_failed = true;
            txn.settle_all(&Outcome::refused(&peer, reply, Cmd::Mail.name()));
            if !txn.pipelined {
                self.finish_message(true);
            }
            return;
        }
        if !txn.pipelined {
            let rcpt = rcpt_command(&txn.envelope.recipients[0]);
            self.send(rcpt.as_bytes(), Cmd::Rcpt(0));
        }
    }

    fn on_rcpt(&mut self, i: usize, reply: &Reply) {
        let peer = self.peer.clone();
        let Some(txn) = self.txn.as_mut() else { return };
        if txn.mail_failed || i >= txn.results.len() {
            return;
        }
        if reply.is_positive() {
            txn.accepted[i] = true;
        } else {
            txn.results[i] = Some(Outcome::refused(&peer, reply, Cmd::Rcpt(i).name()));
        }
        if txn.pipelined {
            return;
        }
        if let Some(next) = txn.envelope.recipients.get(i + 1) {
            let rcpt = rcpt_command(next);
            self.send(rcpt.as_bytes(), Cmd::Rcpt(i + 1));
        } else if txn.any_accepted() {
            self.send(b"DATA\r\n", Cmd::Data);
        } else {
            self.finish_message(true);
        }
    }

    fn on_data(&mut self, reply: &Reply) {
        let peer = self.peer.clone();
        let Some(txn) = self.txn.as_mut() else { return };
        if reply.class() == 3 {
            if txn.any_accepted() {
                txn.body = Some(BodyEncoder::with_line_limit(
                    self.settings.line_length_limit,
                ));
                self.out.push_back(ClientOutput::NeedBody);
            } else {
                // Pipelined DATA went out before the RCPT replies said no: end it empty.
                self.send(b".\r\n", Cmd::EmptyDot);
            }
            return;
        }
        txn.settle_accepted(|| Outcome::refused(&peer, reply, Cmd::Data.name()));
        self.finish_message(true);
    }

    fn on_dot(&mut self, reply: &Reply) {
        let peer = self.peer.clone();
        let Some(txn) = self.txn.as_mut() else { return };
        txn.settle_accepted(|| {
            if reply.is_positive() {
                Outcome::sent(reply)
            } else {
                Outcome::refused(&peer, reply, Cmd::Dot.name())
            }
        });
        self.finish_message(false);
    }

    fn on_rset(&mut self, reply: &Reply) {
        if reply.is_positive() {
            return self.ready();
        }
        let outcome = Outcome::refused_temporarily(&self.peer, reply, Cmd::Rset.name());
        self.fail(outcome, true);
    }

    /// A reply to no command: the server is out of step (or closing with 421).
    fn on_unsolicited(&mut self, reply: &Reply) {
        let reason = format!(
            "host {} said: {reply} (unexpected reply while {})",
            self.peer,
            self.doing()
        );
        self.fail(Outcome::deferred_by(reply, reason), false);
    }

    fn on_malformed(&mut self, error: &ReplyError) {
        let reason = format!(
            "host {} sent a malformed reply while {}: {error}",
            self.peer,
            self.doing()
        );
        self.fail(
            Outcome::local(DeliveryStatus::Deferred, "4.5.0", reason),
            false,
        );
    }

    // ---- transitions ---------------------------------------------------------------

    fn ready(&mut self) {
        if self.quit_wanted {
            return self.send_quit(Closing::Done);
        }
        self.phase = Phase::Idle;
        self.out.push_back(ClientOutput::Ready);
    }

    fn finish_message(&mut self, reset: bool) {
        let Some(txn) = self.txn.take() else { return };
        self.out.push_back(ClientOutput::MessageDone(txn.report()));
        if reset {
            self.phase = Phase::Rset;
            self.send(b"RSET\r\n", Cmd::Rset);
        } else {
            self.ready();
        }
    }

    /// Ends the connection with `outcome`: recipients without a result are deferred with
    /// it, then QUIT is sent (when the server is still in step) or the connection closed.
    pub(super) fn fail(&mut self, outcome: Outcome, quit: bool) {
        if let Phase::Quitting(_) | Phase::Closed = self.phase {
            return self.close_now();
        }
        if let Some(mut txn) = self.txn.take() {
            txn.settle_all(&outcome);
            self.out.push_back(ClientOutput::MessageDone(txn.report()));
        }
        let closing = match self.phase {
            Phase::Idle | Phase::Rset => Closing::Dropped(outcome),
            _ => Closing::Failed(outcome),
        };
        if quit {
            self.send_quit(closing);
        } else {
            self.phase = Phase::Quitting(closing);
            self.close_now();
        }
    }

    fn send_quit(&mut self, closing: Closing) {
        self.phase = Phase::Quitting(closing);
        self.send(b"QUIT\r\n", Cmd::Quit);
    }

    /// Closes at once with `closing`, no QUIT (the connection is unusable).
    pub(super) fn close_with(&mut self, closing: Closing) {
        self.phase = Phase::Quitting(closing);
        self.close_now();
    }

    fn close_now(&mut self) {
        let phase = core::mem::replace(&mut self.phase, Phase::Closed);
        if let Phase::Quitting(closing) = phase {
            self.out.push_back(ClientOutput::Close(closing));
        }
        self.expect.clear();
        self.txn = None;
        self.deadline = None;
    }

    // ---- helpers -------------------------------------------------------------------

    fn send(&mut self, bytes: &[u8], cmd: Cmd) {
        self.transmit(bytes);
        self.expect.push_back(cmd);
    }

    /// Queues bytes, joining them to a `Transmit` just before so a batch is one write.
    fn transmit(&mut self, bytes: &[u8]) {
        if let Some(ClientOutput::Transmit(pending)) = self.out.back_mut() {
            pending.extend_from_slice(bytes);
        } else {
            self.out.push_back(ClientOutput::Transmit(bytes.to_vec()));
        }
    }

    /// As [`transmit`](Self::transmit), taking the bytes without a copy when nothing is
    /// pending (a body chunk: the one copy of each message octet the encoder made).
    fn transmit_owned(&mut self, bytes: Vec<u8>) {
        if let Some(ClientOutput::Transmit(pending)) = self.out.back_mut() {
            pending.extend_from_slice(&bytes);
        } else {
            self.out.push_back(ClientOutput::Transmit(bytes));
        }
    }

    pub(super) fn rearm(&mut self, now: Instant) {
        self.deadline = match (&self.phase, self.expect.front()) {
            (Phase::Closed, _) => None,
            // The handshake's deadline, counted from the server's 220.
            (Phase::WantTls, _) => Some(now + self.settings.command_timeout),
            (_, Some(Cmd::Dot)) => Some(now + self.settings.data_done_timeout),
            (_, Some(_)) => Some(now + self.settings.command_timeout),
            (_, None) if self.in_body() => Some(now + self.settings.command_timeout),
            (_, None) => None,
        };
    }

    fn in_body(&self) -> bool {
        self.txn.as_ref().is_some_and(|t| t.body.is_some())
    }

    /// What the session was doing, for `timed out while ...` and `lost connection ... while ...`.
    fn doing(&self) -> &'static str {
        if let Some(cmd) = self.expect.front() {
            return cmd.doing();
        }
        match self.phase {
            _ if self.in_body() => "sending message body",
            Phase::WantTls => "performing the TLS handshake",
            _ => "idle",
        }
    }

    fn mail_command(&self, envelope: &Envelope) -> String {
        let mut mail = format!("MAIL FROM:<{}>", envelope.sender);
        if let (Some(_), Some(size)) = (self.caps.size, envelope.body_size) {
            mail.push_str(&format!(" SIZE={size}"));
        }
        if envelope.eight_bit && self.caps.eight_bit_mime {
            mail.push_str(" BODY=8BITMIME");
        }
        if envelope.smtputf8 && self.caps.smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        mail.push_str("\r\n");
        mail
    }

    /// A message that needs SMTPUTF8 bounces without being offered to a server that does
    /// not announce it (Postfix's 5.6.7).
    fn smtputf8_refusal(&self, envelope: &Envelope) -> Option<Outcome> {
        if self.caps.smtputf8 || !envelope.requires_smtputf8() {
            return None;
        }
        let reason = format!(
            "SMTPUTF8 is required, but was not offered by host {}",
            self.peer
        );
        Some(Outcome::local(DeliveryStatus::Bounced, "5.6.7", reason))
    }

    /// A message larger than the server's announced limit bounces without being offered.
    fn size_refusal(&self, envelope: &Envelope) -> Option<Outcome> {
        let limit = self.caps.size_limit()?;
        let size = envelope.body_size.filter(|&s| s > limit)?;
        let reason = format!(
            "message size {size} exceeds size limit {limit} of server {}",
            self.peer
        );
        Some(Outcome::local(DeliveryStatus::Bounced, "5.3.4", reason))
    }

    /// A session that sends a fresh EHLO, as after a TLS handshake.
    pub(super) fn restart_with_ehlo(&mut self) {
        self.phase = Phase::Setup;
        self.caps = Capabilities::default();
        let ehlo = format!("EHLO {}\r\n", self.settings.helo_name);
        self.send(ehlo.as_bytes(), Cmd::Ehlo);
    }

    /// True when the server said 220 to STARTTLS and every output before it was polled:
    /// the moment for [`ClientSession::start_tls`].
    pub(super) fn waits_for_tls(&self) -> bool {
        matches!(self.phase, Phase::WantTls) && self.out.is_empty()
    }

    /// What the handshake keeps: the session, the octets dropped (fed since the 220, and
    /// whatever the reply parser still held), and the handshake's deadline.
    pub(super) fn into_tls_parts(mut self) -> (ClientSession, usize, Option<Instant>) {
        let discarded = self.discarded.saturating_add(self.parser.pending());
        self.discarded = 0;
        self.parser = ReplyParser::new();
        let deadline = self.deadline;
        (self, discarded, deadline)
    }

    /// A new session on a connection in wrapper mode (implicit TLS): the handshake comes
    /// before the greeting, within the command timeout.
    pub(super) fn wait_for_implicit_tls(&mut self, now: Instant) {
        self.phase = Phase::WantTls;
        self.rearm(now);
    }

    /// Leaves the TLS wait so that `fail` reports a setup failure.
    pub(super) fn leave_tls_wait(&mut self) {
        if let Phase::WantTls = self.phase {
            self.phase = Phase::Setup;
        }
    }
}

fn rcpt_command(rcpt: &str) -> String {
    format!("RCPT TO:<{rcpt}>\r\n")
}
