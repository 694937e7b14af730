//! The session state machine and its STARTTLS hand-over.

use super::command::{self, split_line, MailArgs, Verb};
use super::data::{DataProblem, DataReceiver};
use super::envelope::Envelope;
use super::error::ServerError;
use super::events::{LogLine, ServerEvent, ServerOutput};
use super::guard::{self, Guard};
use super::received::{printable, ClientName, Received, ReceivedFacts};
use super::stats::CommandStats;
use crate::address::{parse_path, Path};
use crate::enroll::{self, EnrollAnswer, EnrollRequest, RequestKind, RequestReader, Step};
use crate::facts::{CertVerdict, PeerInfo, TlsFacts};
use crate::fingerprint::CertMatch;
use crate::line::{LineBuffer, Push};
use crate::policy::{self, RcptFacts, Verdict};
use crate::reply::Reply;
use crate::settings::{ServerSettings, ServerTlsLevel};
use crate::time::Instant;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

/// Longest command line, CR LF included (RFC 5321 section 4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;

/// Bytes held while the shell stores a message. A shell that stops reading while
/// [`ServerSession::wants_read`] is false never comes near it; past it the session ends.
pub const MAX_PENDING: usize = 64 * 1024;

/// Line buffer capacity: the CR counts while a line is open, the LF never does.
const LINE_CAPACITY: usize = MAX_COMMAND_LINE - 1;

/// A command line copied out of the line buffer, on the stack.
type CommandCopy = heapless::Vec<u8, LINE_CAPACITY>;

/// What survives STARTTLS: who the client is, and its record so far.
#[derive(Debug)]
pub(super) struct Connection {
    pub(super) settings: Arc<ServerSettings>,
    pub(super) peer: PeerInfo,
    tls_unavailable: bool,
    errors: u32,
    pub(super) stats: CommandStats,
    /// `name[addr]`, written once: most log lines name the client.
    client_name: String,
}

impl Connection {
    /// A connection just accepted from `peer`.
    pub(super) fn new(settings: Arc<ServerSettings>, peer: PeerInfo) -> Connection {
        let client_name = ClientName(&peer).to_string();
        Connection {
            settings,
            peer,
            tls_unavailable: false,
            errors: 0,
            stats: CommandStats::default(),
            client_name,
        }
    }

    pub(super) fn client(&self) -> &str {
        &self.client_name
    }
}

/// The HELO/EHLO the client gave.
#[derive(Clone, Debug)]
struct Helo {
    name: String,
    esmtp: bool,
}

/// A mail transaction between MAIL and the end of DATA.
#[derive(Debug)]
struct Transaction {
    mail: MailArgs,
    recipients: Vec<Path>,
    /// RCPT commands refused by policy: DATA then says "no valid recipients".
    refused: usize,
}

/// What the session does with the next input.
#[derive(Debug)]
enum Mode {
    /// Reading command lines.
    Command,
    /// Receiving message content.
    Data(DataReceiver),
    /// Waiting for the shell to store the message; input is held.
    Storing,
    /// Reading the certificate request lines after `XCERTRELAY`'s `334`.
    EnrollLines(Box<(RequestReader, RequestKind)>),
    /// Waiting for the shell to answer an enrollment request; input is held.
    Enrolling,
    /// `StartTls` was emitted; plaintext input is discarded.
    TlsRequested,
    /// `Close` was emitted.
    Closed,
}

/// One SMTP server session on one connection, before or after STARTTLS.
#[derive(Debug)]
pub struct ServerSession {
    conn: Connection,
    tls: Option<TlsFacts>,
    helo: Option<Helo>,
    txn: Option<Transaction>,
    mode: Mode,
    lines: LineBuffer<LINE_CAPACITY>,
    pending: Vec<u8>,
    outputs: VecDeque<ServerOutput>,
    deadline: Option<Instant>,
    /// When the deadline was last armed: a shortened timeout counts from there.
    armed_at: Instant,
    /// A shorter timeout than `smtpd_timeout` once the shell was under stress.
    timeout_cap: Option<Duration>,
    /// `req_ccert`: the certificate is judged at the first command after the handshake.
    ccert_due: bool,
    /// The last command seen, for `timeout after RCPT`-style logs.
    last: &'static str,
    /// Plaintext that followed STARTTLS.
    discarded: usize,
    /// The rule that permitted the last recipient, and its text for the log: usually the
    /// same rule permits every recipient of a transaction.
    permitted_by: Option<(policy::DecidedBy, String)>,
    /// Paced replies, slow lines and slow DATA, idleness ([`guard`]).
    guard: Guard,
}

impl ServerSession {
    /// A new session on a connection just accepted; the greeting is queued.
    pub fn new(settings: Arc<ServerSettings>, peer: PeerInfo, now: Instant) -> Self {
        let conn = Connection::new(settings, peer);
        let mut s = ServerSession::fresh(conn, None, now);
        s.log(
            log::Level::Info,
            format!("connect from {}", s.conn.client()),
        );
        s.greet();
        s
    }

    /// Queues the `220` greeting.
    pub(super) fn greet(&mut self) {
        let banner = Reply::new(220, self.conn.settings.banner.clone());
        self.transmit(&banner);
        self.last = "CONNECT";
    }

    /// Marks TLS as configured but unusable (the shell could not load its key or
    /// certificate): STARTTLS then answers `454 4.7.0`.
    pub fn set_tls_unavailable(&mut self) {
        self.conn.tls_unavailable = true;
    }

    fn fresh(conn: Connection, tls: Option<TlsFacts>, now: Instant) -> Self {
        let deadline = Some(now + conn.settings.timeout);
        ServerSession {
            conn,
            tls,
            helo: None,
            txn: None,
            mode: Mode::Command,
            lines: LineBuffer::new(),
            pending: Vec::new(),
            outputs: VecDeque::new(),
            deadline,
            armed_at: now,
            timeout_cap: None,
            ccert_due: false,
            last: "CONNECT",
            discarded: 0,
            permitted_by: None,
            guard: Guard::new(now),
        }
    }

    /// Bytes from the client. Everything is taken; see [`ServerSession::wants_read`].
    pub fn handle_input(&mut self, input: &[u8], now: Instant) {
        self.guard.now = now;
        if matches!(self.mode, Mode::Data(_)) {
            self.guard.progress.data_received(input.len());
        }
        // A command must arrive whole within the timeout: bytes that continue a started
        // line do not extend it, so a client cannot hold a session by dribbling one byte at
        // a time. DATA extends it on any progress; plaintext after STARTTLS never does.
        let extends = match self.mode {
            Mode::Command | Mode::EnrollLines(_) => !self.guard.progress.line_open(),
            Mode::Data(_) | Mode::Storing | Mode::Enrolling => true,
            Mode::TlsRequested | Mode::Closed => false,
        };
        if !input.is_empty() && extends {
            self.arm(now);
        }
        self.consume(input);
    }

    /// A fact from the shell: the message is stored (or not), or the client went away.
    pub fn handle_event(&mut self, event: ServerEvent, now: Instant) {
        self.guard.now = now;
        if matches!(event, ServerEvent::ConnectionLost) {
            // Nobody is left to read the replies held back.
            self.guard.pacer.clear();
        }
        if matches!(self.mode, Mode::Closed) {
            return;
        }
        let stored = match event {
            ServerEvent::ConnectionLost => return self.lost_connection(),
            ServerEvent::Enrolled(answer) => return self.enrolled(answer, now),
            _ if !matches!(self.mode, Mode::Storing) => return,
            ServerEvent::MessageStored { queue_id } => Ok(queue_id),
            ServerEvent::QueueWriteFailed => Err(ServerError::QueueWriteError),
            ServerEvent::QueueFull => Err(ServerError::InsufficientStorage),
        };
        let reply = match stored {
            Ok(id) => Reply::new(250, format!("2.0.0 Ok: queued as {}", printable(&id))),
            Err(e) => e.reply(&self.conn.settings.myhostname),
        };
        self.transmit(&reply);
        self.txn = None;
        self.mode = Mode::Command;
        self.arm(now);
        let held = core::mem::take(&mut self.pending);
        self.consume(&held);
    }

    /// The timer armed at [`ServerSession::poll_timeout`] fired.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.guard.now = now;
        if self.guard.pacer.is_active() {
            return self.end_pause(now);
        }
        if self.poll_timeout().is_some_and(|d| now >= d) {
            let in_data = matches!(self.mode, Mode::Data(_));
            let settings = &self.conn.settings;
            if let Some(why) = self.guard.progress.overdue(settings, in_data, now) {
                let text = format!("{}: {why}", self.conn.client());
                self.log(log::Level::Info, text);
            }
            self.abort_message();
            self.log(
                log::Level::Info,
                format!("timeout after {} from {}", self.last, self.conn.client()),
            );
            self.refuse(ServerError::Timeout);
        }
    }

    /// Caps the command and DATA timeout at `cap` for the rest of the session, counted
    /// from the last time the client made progress; a cap only ever lowers it. The shell
    /// caps it while it holds as many sessions as it may, so that idle clients give way to
    /// working ones.
    pub fn cap_timeout(&mut self, cap: Duration) {
        let cap = self.timeout_cap.map_or(cap, |old| old.min(cap));
        if Some(cap) == self.timeout_cap {
            return;
        }
        self.timeout_cap = Some(cap);
        if self.deadline.is_some() {
            self.deadline = Some(self.armed_at + self.timeout());
        }
    }

    fn timeout(&self) -> Duration {
        let full = self.conn.settings.timeout;
        self.timeout_cap.map_or(full, |cap| cap.min(full))
    }

    fn arm(&mut self, now: Instant) {
        self.armed_at = now;
        self.deadline = Some(now + self.timeout());
    }

    /// The next output, in order; `None` when there is nothing more to do now.
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        if self.guard.pacer.holds(self.guard.polled) {
            return None;
        }
        let output = self.outputs.pop_front()?;
        self.guard.polled += 1;
        Some(output)
    }

    /// When [`ServerSession::handle_timeout`] is due: the end of a pause in the replies
    /// (`smtpd_error_sleep_time`) while one is pending, else the earliest of the idle
    /// timeout, the command line's time limit and the DATA rate's; `None` while the shell
    /// stores a message or after the session closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some(release) = self.guard.pacer.next_release() {
            return Some(release);
        }
        let progress = &self.guard.progress;
        let settings = &self.conn.settings;
        match self.mode {
            Mode::Command | Mode::EnrollLines(_) => {
                guard::earliest(self.deadline, progress.line_deadline(settings))
            }
            Mode::Data(_) => guard::earliest(self.deadline, progress.data_deadline(settings)),
            Mode::Storing | Mode::Enrolling | Mode::TlsRequested | Mode::Closed => None,
        }
    }

    /// False while the shell should not read from the client: the session waits for a
    /// storage result, for the TLS handshake, for the end of a pause in its replies, or
    /// has closed.
    pub fn wants_read(&self) -> bool {
        matches!(
            self.mode,
            Mode::Command | Mode::Data(_) | Mode::EnrollLines(_)
        ) && !self.guard.pacer.is_active()
    }

    /// True once `Close` was emitted and no reply before it is held back.
    pub fn is_closed(&self) -> bool {
        matches!(self.mode, Mode::Closed) && !self.guard.pacer.is_active()
    }

    /// True once TLS is active.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The shell looked the client certificate up again in `relay_clientcerts` as the table
    /// is now (a reload changed it): the commands that follow decide with `listed`, so a
    /// certificate removed from the table relays no more in a session opened before. Logged
    /// when the answer changed; nothing to do without a client certificate.
    pub fn relist_client_cert(&mut self, listed: Option<CertMatch>) {
        let client = self.conn.client().to_string();
        let Some(tls) = self.tls.as_mut() else {
            return;
        };
        let cert = &mut tls.client_cert;
        if !cert.verdict.is_present() || cert.listed == listed {
            return;
        }
        let text = match &listed {
            Some(m) => format!(
                "{client}: client certificate now listed in relay_clientcerts as {}",
                m.label
            ),
            None => format!("{client}: client certificate no longer listed in relay_clientcerts"),
        };
        cert.listed = listed;
        self.log(log::Level::Info, text);
    }

    /// True when `StartTls` was emitted and every output before it polled: the moment for
    /// [`ServerSession::start_tls`].
    pub(super) fn waits_for_tls(&self) -> bool {
        matches!(self.mode, Mode::TlsRequested) && self.outputs.is_empty()
    }

    /// What the handshake keeps: the connection, the plaintext octets dropped (fed since
    /// STARTTLS, and whatever was still buffered), and the deadline.
    pub(super) fn into_tls_parts(self) -> (Connection, usize, Option<Instant>) {
        let buffered = self.pending.len() + self.lines.pending();
        (self.conn, self.discarded + buffered, self.deadline)
    }

    /// The session after a TLS handshake: reset to before EHLO, with `log` queued.
    pub(super) fn inside_tls(
        conn: Connection,
        tls: TlsFacts,
        log: Vec<LogLine>,
        now: Instant,
    ) -> Self {
        let mut s = ServerSession::fresh(conn, None, now);
        s.outputs.extend(log.into_iter().map(ServerOutput::Log));
        s.ccert_due = s.conn.settings.req_ccert;
        s.last = "STARTTLS";
        s.tls = Some(tls);
        s
    }

    /// Runs input through the line reader or the DATA receiver until it is used up or the
    /// session has to wait.
    fn consume(&mut self, mut rest: &[u8]) {
        while !rest.is_empty() {
            let reading = matches!(
                self.mode,
                Mode::Command | Mode::Data(_) | Mode::EnrollLines(_)
            );
            if reading && self.guard.pacer.is_active() {
                // Like a server asleep before its reply: the next command waits.
                return self.hold(rest);
            }
            match &mut self.mode {
                Mode::Command | Mode::EnrollLines(_) => {
                    // Pipelined commands usually arrive whole: read them in place.
                    if let Some((n, line)) = self.lines.whole_line(rest) {
                        rest = &rest[n..];
                        self.on_line(line);
                        continue;
                    }
                    let (n, found) = self.lines.push(rest);
                    rest = &rest[n..];
                    match found {
                        Push::NeedMore => self.guard.progress.line_begun(self.guard.now),
                        Push::TooLong => {
                            self.guard.progress.line_ended();
                            if let Mode::EnrollLines(state) = &mut self.mode {
                                state.0.oversized_line();
                            } else {
                                self.refuse(ServerError::LineTooLong);
                            }
                        }
                        Push::Line => {
                            // A complete line always fits the buffer, hence the copy.
                            let line =
                                CommandCopy::from_slice(self.lines.line()).unwrap_or_default();
                            self.on_line(&line);
                        }
                    }
                }
                Mode::Data(rx) => {
                    let outputs = &mut self.outputs;
                    let fed = rx.feed(rest, &mut |c| outputs.push_back(ServerOutput::BodyChunk(c)));
                    rest = &rest[fed.consumed..];
                    if fed.newly_failed {
                        self.outputs.push_back(ServerOutput::MessageAbort);
                    }
                    if fed.ended {
                        self.end_of_data();
                    }
                }
                Mode::Storing | Mode::Enrolling => return self.hold(rest),
                Mode::TlsRequested => {
                    // The one place plaintext after STARTTLS is dropped; `start_tls` adds
                    // what was already buffered.
                    self.discarded = self.discarded.saturating_add(rest.len());
                    return;
                }
                Mode::Closed => return,
            }
        }
    }

    /// Keeps input that arrived while the shell stores a message.
    fn hold(&mut self, rest: &[u8]) {
        if self.pending.len() + rest.len() > MAX_PENDING {
            self.log(
                log::Level::Warn,
                format!(
                    "{} sent more than {MAX_PENDING} bytes while a message was being stored",
                    self.conn.client()
                ),
            );
            self.pending = Vec::new();
            return self.close();
        }
        self.pending.extend_from_slice(rest);
    }

    /// One complete command line.
    fn on_line(&mut self, line: &[u8]) {
        self.guard.progress.line_ended();
        self.guard.last_command = self.guard.now;
        if matches!(self.mode, Mode::EnrollLines(_)) {
            return self.enroll_line(line);
        }
        if core::mem::take(&mut self.ccert_due) {
            if let Some(refusal) = self.missing_client_cert() {
                self.log_tls_reject(&refusal);
                return self.refuse(refusal);
            }
        }
        if self.conn.settings.smtputf8_enable && core::str::from_utf8(line).is_err() {
            // Postfix checks every command line once SMTPUTF8 is on, before the verb.
            self.conn.stats.record_unknown();
            self.last = "UNKNOWN";
            return self.refuse(ServerError::BadUtf8);
        }
        let cmd = match split_line(line) {
            Ok(cmd) => cmd,
            Err(e) => {
                self.conn.stats.record_unknown();
                self.last = "UNKNOWN";
                return self.refuse_unknown(line, e);
            }
        };
        self.last = upper_name(cmd.verb);
        let gated = self.conn.settings.tls_level == ServerTlsLevel::Encrypt
            && self.tls.is_none()
            && !cmd.verb.allowed_before_tls();
        if cmd.verb == Verb::Quit {
            // Counted first: QUIT closes, and the disconnect line shows it.
            self.conn.stats.record(Verb::Quit, true);
        }
        let result = if gated {
            Err(ServerError::StartTlsFirst)
        } else {
            self.run(cmd.verb, &cmd.args)
        };
        if cmd.verb != Verb::Quit {
            self.conn.stats.record(cmd.verb, result.is_ok());
        }
        if let Err(e) = result {
            self.refuse(e);
        }
    }

    /// `req_ccert`: the refusal due when the client has no trusted certificate.
    fn missing_client_cert(&self) -> Option<ServerError> {
        if !self.conn.settings.req_ccert {
            return None;
        }
        match self.tls.as_ref().map(|t| &t.client_cert.verdict) {
            Some(CertVerdict::Trusted) => None,
            Some(CertVerdict::Untrusted(_)) => Some(ServerError::UntrustedClientCert),
            Some(CertVerdict::Absent) | None => Some(ServerError::NoClientCert),
        }
    }

    /// A line that is no command: answered with its error, unless it shows a client
    /// speaking another protocol (`smtpd_forbidden_commands`, a header-shaped line, and on
    /// the laptop's listener any unknown command before EHLO/HELO), which ends the session.
    fn refuse_unknown(&mut self, line: &[u8], e: ServerError) {
        let settings = &self.conn.settings;
        let foreign = e == ServerError::Unrecognized
            && (guard::is_non_smtp(line, &settings.forbidden_commands)
                || (settings.unknown_before_helo_ends && self.helo.is_none()));
        if !foreign {
            return self.refuse(e);
        }
        let shown: String = printable(&String::from_utf8_lossy(line))
            .chars()
            .take(100)
            .collect();
        let text = format!("non-SMTP command from {}: {shown}", self.conn.client());
        self.log(log::Level::Warn, text);
        self.refuse(ServerError::NonSmtpCommand);
    }

    /// Since when the client has sent no command, while it has no mail transaction under
    /// way; `None` from MAIL FROM to the end of the message, and once closed. When every
    /// session slot is taken, the shell closes the session idle longest
    /// ([`ServerSession::displace`]) to make room for a new connection.
    pub fn idle_since(&self) -> Option<Instant> {
        match self.mode {
            Mode::Command | Mode::TlsRequested if self.txn.is_none() => {
                Some(self.guard.last_command)
            }
            _ => None,
        }
    }

    /// Closes an idle session to make room for a new connection:
    /// `421 4.7.0 <myhostname> Error: too many connections; closing idle session`, sent at
    /// once (replies held back for errors go first, without their wait).
    pub fn displace(&mut self, now: Instant) {
        self.guard.now = now;
        self.guard.pacer.clear();
        if matches!(self.mode, Mode::Closed) {
            return;
        }
        let idle = now.saturating_since(self.guard.last_command).as_secs();
        let text = format!(
            "{}: closing idle session after {idle}s to make room for a new connection",
            self.conn.client()
        );
        self.log(log::Level::Info, text);
        self.abort_message();
        self.refuse(ServerError::Displaced);
        self.guard.pacer.clear();
    }

    /// The last pause in the replies ended: the commands held meanwhile run, and the
    /// client's time to send the next one starts now.
    fn end_pause(&mut self, now: Instant) {
        self.guard.pacer.release(now);
        let reading = matches!(
            self.mode,
            Mode::Command | Mode::Data(_) | Mode::EnrollLines(_)
        );
        if self.guard.pacer.is_active() || !reading {
            return;
        }
        self.arm(now);
        let held = core::mem::take(&mut self.pending);
        self.consume(&held);
    }

    /// `smtpd_error_sleep_time`: once the client has made `smtpd_soft_error_limit` errors,
    /// every reply waits, as Postfix sleeps before each.
    fn pace_reply(&mut self) {
        let settings = &self.conn.settings;
        if self.conn.errors < settings.soft_error_limit || settings.error_sleep_time.is_zero() {
            return;
        }
        let seq = self.guard.polled + self.outputs.len() as u64;
        let (now, sleep) = (self.guard.now, settings.error_sleep_time);
        self.guard.pacer.pause(seq, now, sleep);
    }

    /// Executes one command; `Err` is answered by the caller.
    fn run(&mut self, verb: Verb, args: &str) -> Result<(), ServerError> {
        match verb {
            Verb::Helo | Verb::Ehlo => self.helo(verb, args),
            Verb::StartTls => self.starttls(args),
            Verb::Mail => self.mail(args),
            Verb::Rcpt => self.rcpt(args),
            Verb::Data => self.data(args),
            Verb::Rset => {
                no_args(args, "RSET")?;
                self.txn = None;
                self.transmit_ok("2.0.0 Ok");
                Ok(())
            }
            Verb::Noop => {
                self.transmit_ok("2.0.0 Ok");
                Ok(())
            }
            Verb::Vrfy => self.vrfy(args),
            Verb::Help => {
                let text = "2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY STARTTLS";
                self.transmit(&Reply::new(214, text));
                Ok(())
            }
            Verb::Quit => {
                self.transmit(&Reply::new(221, "2.0.0 Bye"));
                self.close();
                Ok(())
            }
            Verb::XCertRelay => self.xcertrelay(args),
        }
    }

    /// `XCERTRELAY ENROLL secret | RENEW`: asks for the request lines. Unknown where the
    /// relay does not enroll; before TLS, refused as every command that needs it is.
    fn xcertrelay(&mut self, args: &str) -> Result<(), ServerError> {
        if !self.conn.settings.enroll {
            return Err(ServerError::Unrecognized);
        }
        let Some(tls) = &self.tls else {
            return Err(ServerError::StartTlsFirst);
        };
        if self.helo.is_none() {
            return Err(ServerError::Policy(Reply::new(
                503,
                "5.5.1 Error: send EHLO first",
            )));
        }
        if self.txn.is_some() {
            return Err(ServerError::NestedMail);
        }
        let command = enroll::parse_command(args).map_err(|e| ServerError::Policy(e.reply()))?;
        let kind = match command {
            enroll::Command::Enroll(secret) => RequestKind::Code(secret),
            enroll::Command::Renew => match (&tls.client_cert.verdict, &tls.client_cert.listed) {
                (CertVerdict::Trusted, Some(listed)) => RequestKind::Renew {
                    label: listed.label.clone(),
                },
                _ => {
                    return Err(ServerError::Policy(Reply::new(
                        530,
                        "5.7.0 Renewal needs a trusted client certificate that is listed",
                    )))
                }
            },
        };
        self.transmit(&enroll::go_ahead());
        self.mode = Mode::EnrollLines(Box::new((RequestReader::new(), kind)));
        Ok(())
    }

    /// One line of a certificate request.
    fn enroll_line(&mut self, line: &[u8]) {
        let Mode::EnrollLines(state) = &mut self.mode else {
            return;
        };
        let Step::Done(done) = state.0.line(line) else {
            return;
        };
        let kind = state.1.clone();
        match done {
            Ok(csr_der) => {
                self.mode = Mode::Enrolling;
                self.last = "XCERTRELAY";
                self.outputs
                    .push_back(ServerOutput::Enroll(Box::new(EnrollRequest {
                        kind,
                        csr_der,
                    })));
            }
            Err(e) => {
                self.mode = Mode::Command;
                let text = format!(
                    "{}: certificate request refused: {}",
                    self.conn.client(),
                    e.reply().lines.join(" ")
                );
                self.log(log::Level::Info, text);
                self.refuse(ServerError::Policy(e.reply()));
            }
        }
    }

    /// The shell's answer to the request: sent, and the session reads commands again.
    fn enrolled(&mut self, answer: EnrollAnswer, now: Instant) {
        if !matches!(self.mode, Mode::Enrolling) {
            return;
        }
        self.mode = Mode::Command;
        self.arm(now);
        if matches!(answer, EnrollAnswer::Issued { .. }) {
            self.transmit(&answer.reply());
        } else {
            // Counted like any refusal: a client guessing codes is slowed and then closed.
            self.refuse(ServerError::Policy(answer.reply()));
        }
        let held = core::mem::take(&mut self.pending);
        self.consume(&held);
    }

    fn helo(&mut self, verb: Verb, args: &str) -> Result<(), ServerError> {
        let name = command::parse_helo(args, verb)?;
        let esmtp = verb == Verb::Ehlo;
        self.helo = Some(Helo { name, esmtp });
        self.txn = None;
        let host = self.conn.settings.myhostname.clone();
        let reply = if esmtp {
            Reply::multi(250, self.ehlo_lines(host))
        } else {
            Reply::new(250, host)
        };
        self.transmit(&reply);
        Ok(())
    }

    fn ehlo_lines(&self, host: String) -> Vec<String> {
        let settings = &self.conn.settings;
        let mut lines = vec![host, String::from("PIPELINING")];
        lines.push(match settings.message_size_limit {
            0 => String::from("SIZE"),
            n => format!("SIZE {n}"),
        });
        if settings.tls_level != ServerTlsLevel::None && self.tls.is_none() {
            lines.push(String::from("STARTTLS"));
        }
        lines.push(String::from("ENHANCEDSTATUSCODES"));
        lines.push(String::from("8BITMIME"));
        if settings.smtputf8_enable {
            lines.push(String::from("SMTPUTF8"));
        }
        if settings.enroll && self.tls.is_some() {
            lines.push(String::from(enroll::KEYWORD));
        }
        lines
    }

    fn starttls(&mut self, args: &str) -> Result<(), ServerError> {
        no_args(args, "STARTTLS")?;
        if self.tls.is_some() {
            return Err(ServerError::TlsAlreadyActive);
        }
        if self.conn.settings.tls_level == ServerTlsLevel::None {
            return Err(ServerError::TlsNotImplemented);
        }
        if self.conn.tls_unavailable {
            return Err(ServerError::TlsUnavailable);
        }
        self.transmit(&Reply::new(220, "2.0.0 Ready to start TLS"));
        self.outputs.push_back(ServerOutput::StartTls);
        self.mode = Mode::TlsRequested;
        Ok(())
    }

    fn mail(&mut self, args: &str) -> Result<(), ServerError> {
        if self.txn.is_some() {
            return Err(ServerError::NestedMail);
        }
        let settings = &self.conn.settings;
        let parsed =
            command::parse_mail(args, settings.message_size_limit, settings.smtputf8_enable);
        let mail = match parsed {
            Ok(mail) => mail,
            Err(e) => {
                if e == ServerError::SizeExceedsLimit {
                    self.log_reject("MAIL", &e, "", None);
                }
                return Err(e);
            }
        };
        self.txn = Some(Transaction {
            mail,
            recipients: Vec::new(),
            refused: 0,
        });
        self.transmit_ok("2.1.0 Ok");
        Ok(())
    }

    fn rcpt(&mut self, args: &str) -> Result<(), ServerError> {
        let txn = self.txn.as_ref().ok_or(ServerError::NeedMail)?;
        let rcpt =
            command::parse_rcpt(args, self.conn.settings.smtputf8_enable, txn.mail.smtputf8)?;
        let limit = self.conn.settings.recipient_limit;
        if limit > 0 && txn.recipients.len() >= limit {
            return Err(ServerError::TooManyRecipients);
        }
        let facts = RcptFacts {
            client: &self.conn.peer,
            tls: self.tls.as_ref(),
            recipient: &rcpt,
            sender: &txn.mail.sender,
        };
        let decision = policy::check_recipient(&self.conn.settings, &facts);
        if let Verdict::Reject(reply) = decision.verdict {
            if let Some(txn) = self.txn.as_mut() {
                txn.refused += 1;
            }
            let e = ServerError::Policy(reply);
            let sender = self
                .txn
                .as_ref()
                .map(|t| t.mail.sender.to_string())
                .unwrap_or_default();
            self.log_reject("RCPT", &e, &sender, Some(&rcpt));
            return Err(e);
        }
        let why = self.permitted_line(&rcpt, decision.decided_by);
        self.log(log::Level::Debug, why);
        let (recipients, rewritten) = self.resolve_recipient(&rcpt)?;
        if let Some(txn) = self.txn.as_mut() {
            for r in recipients {
                // Aliases of two recipients often meet (root and postmaster both to the
                // admin): the message goes there once.
                if !(rewritten && txn.recipients.contains(&r)) {
                    txn.recipients.push(r);
                }
            }
        }
        self.transmit_ok("2.1.5 Ok");
        Ok(())
    }

    /// A recipient the lists permitted, rewritten by `virtual_alias_maps`; refused (and
    /// logged like any other refusal) when its mail would stay on this host.
    /// Returns the recipients to store and whether aliases applied.
    fn resolve_recipient(&mut self, rcpt: &Path) -> Result<(Vec<Path>, bool), ServerError> {
        match policy::resolve_recipient(&self.conn.settings, rcpt) {
            Ok(resolved) => {
                if resolved.rewritten {
                    let to: Vec<String> = resolved
                        .recipients
                        .iter()
                        .map(|r| format!("<{r}>"))
                        .collect();
                    let line = format!(
                        "RCPT from {}: <{rcpt}> rewritten by virtual_alias_maps to {}",
                        self.conn.client(),
                        to.join(", ")
                    );
                    self.log(log::Level::Info, line);
                }
                Ok((resolved.recipients, resolved.rewritten))
            }
            Err(unresolved) => {
                let sender = match self.txn.as_mut() {
                    Some(txn) => {
                        txn.refused += 1;
                        txn.mail.sender.to_string()
                    }
                    None => String::new(),
                };
                let e = ServerError::Policy(unresolved.reply);
                self.log_reject("RCPT", &e, &sender, Some(rcpt));
                let line = format!("RCPT <{rcpt}> refused: {}", unresolved.detail);
                self.log(log::Level::Info, line);
                Err(e)
            }
        }
    }

    fn data(&mut self, args: &str) -> Result<(), ServerError> {
        let Some(txn) = self.txn.as_ref().filter(|t| !t.recipients.is_empty()) else {
            let refused = self.txn.as_ref().is_some_and(|t| t.refused > 0);
            return Err(if refused {
                ServerError::NoValidRecipients
            } else {
                ServerError::NeedRcpt
            });
        };
        no_args(args, "DATA")?;
        let envelope = self.envelope(txn);
        self.transmit(&Reply::new(354, "End data with <CR><LF>.<CR><LF>"));
        self.outputs
            .push_back(ServerOutput::MessageBegin(Box::new(envelope)));
        let settings = &self.conn.settings;
        self.mode = Mode::Data(DataReceiver::new(
            settings.message_size_limit,
            settings.bare_newline,
        ));
        self.guard.progress.data_begun(self.guard.now);
        Ok(())
    }

    fn envelope(&self, txn: &Transaction) -> Envelope {
        let settings = &self.conn.settings;
        let protocol = match (txn.mail.smtputf8, self.protocol()) {
            // RFC 6531's names, as Postfix writes them in Received: for SMTPUTF8 mail.
            (true, "ESMTPS") => "UTF8SMTPS",
            (true, _) => "UTF8SMTP",
            (false, p) => p,
        };
        let names: Vec<String> = txn.recipients.iter().map(|r| r.to_string()).collect();
        let received = Received::new(&ReceivedFacts {
            peer: &self.conn.peer,
            helo: self.helo.as_ref().map(|h| h.name.as_str()),
            protocol,
            tls: self.tls.as_ref(),
            tls_details: settings.tls_received_header,
            asked_ccert: settings.ask_ccert || settings.req_ccert,
            myhostname: &settings.myhostname,
            recipients: &names,
        });
        Envelope {
            sender: txn.mail.sender.clone(),
            recipients: txn.recipients.clone(),
            size_hint: txn.mail.size,
            body: txn.mail.body,
            smtputf8: txn.mail.smtputf8,
            client: self.conn.peer.clone(),
            helo: self.helo.as_ref().map(|h| h.name.clone()),
            protocol,
            tls: self.tls.clone(),
            received,
        }
    }

    /// `ESMTPS` under TLS, else `ESMTP` after EHLO, else `SMTP`.
    fn protocol(&self) -> &'static str {
        match (&self.tls, &self.helo) {
            (Some(_), _) => "ESMTPS",
            (None, Some(Helo { esmtp: true, .. })) => "ESMTP",
            (None, _) => "SMTP",
        }
    }

    fn vrfy(&mut self, args: &str) -> Result<(), ServerError> {
        if args.is_empty() {
            return Err(ServerError::Syntax("VRFY address"));
        }
        match parse_path(args) {
            Ok((path, "")) if !path.is_null() => {
                self.transmit(&Reply::new(252, format!("2.0.0 {path}")));
                Ok(())
            }
            _ => Err(ServerError::BadRecipient),
        }
    }

    /// The end marker of DATA arrived.
    fn end_of_data(&mut self) {
        let Mode::Data(rx) = &self.mode else {
            return;
        };
        let refusal = match rx.problem() {
            None if self.too_many_hops(rx.hops()) => {
                self.outputs.push_back(ServerOutput::MessageAbort);
                ServerError::TooManyHops
            }
            None => {
                self.outputs.push_back(ServerOutput::MessageEnd);
                self.mode = Mode::Storing;
                self.last = "END-OF-MESSAGE";
                return;
            }
            Some(DataProblem::BareNewline) => ServerError::BareNewline,
            Some(DataProblem::TooBig) => ServerError::MessageTooBig,
        };
        self.mode = Mode::Command;
        let sender = self
            .txn
            .take()
            .map(|t| t.mail.sender.to_string())
            .unwrap_or_default();
        self.log_reject("END-OF-MESSAGE", &refusal, &sender, None);
        self.refuse(refusal);
    }

    /// True when a message whose header holds `hops` `Received:` and `Delivered-To:`
    /// fields is over `hopcount_limit`, counting the `Received:` this host adds: it has
    /// gone round too often and is refused rather than sent round once more.
    fn too_many_hops(&self, hops: u32) -> bool {
        hops.saturating_add(1) > self.conn.settings.hopcount_limit
    }

    /// Drops a message being received, if there is one the shell still keeps.
    fn abort_message(&mut self) {
        if let Mode::Data(rx) = &self.mode {
            if rx.problem().is_none() {
                self.outputs.push_back(ServerOutput::MessageAbort);
            }
            self.mode = Mode::Command;
        }
    }

    fn lost_connection(&mut self) {
        let after = match &self.mode {
            Mode::Data(rx) => format!("DATA ({} bytes)", rx.size()),
            _ => String::from(self.last),
        };
        self.abort_message();
        self.log(
            log::Level::Info,
            format!("lost connection after {after} from {}", self.conn.client()),
        );
        self.close();
    }

    /// Sends the refusal, counts it, and ends the session when it must.
    fn refuse(&mut self, e: ServerError) {
        let host = self.conn.settings.myhostname.clone();
        self.transmit(&e.reply(&host));
        if e.closes_session() {
            return self.close();
        }
        self.conn.errors = self.conn.errors.saturating_add(1);
        if self.conn.errors >= self.conn.settings.hard_error_limit.max(1) {
            self.log(
                log::Level::Info,
                format!(
                    "too many errors after {} from {}",
                    self.last,
                    self.conn.client()
                ),
            );
            self.transmit(&ServerError::TooManyErrors.reply(&host));
            self.close();
        }
    }

    /// `NOQUEUE: reject: TLS from name[ip]: 421 4.7.1 <host> Error: No client certificate
    /// presented; proto=ESMTP helo=<h>`: `req_ccert` ends the session for its certificate
    /// (the shape fail2ban's filter in dist/fail2ban matches).
    fn log_tls_reject(&mut self, e: &ServerError) {
        let mut text = format!(
            "NOQUEUE: reject: TLS from {}: {}; proto=ESMTP",
            self.conn.client(),
            e.reply(&self.conn.settings.myhostname)
        );
        if let Some(h) = &self.helo {
            text.push_str(&format!(" helo=<{}>", h.name));
        }
        self.log(log::Level::Info, text);
    }

    /// `NOQUEUE: reject: RCPT from name[ip]: <reply>; from=<s> to=<r> proto=ESMTP helo=<h>`.
    fn log_reject(&mut self, stage: &str, e: &ServerError, sender: &str, rcpt: Option<&Path>) {
        let mut text = format!(
            "NOQUEUE: reject: {stage} from {}: {}; from=<{sender}>",
            self.conn.client(),
            e.reply(&self.conn.settings.myhostname)
        );
        if let Some(r) = rcpt {
            text.push_str(&format!(" to=<{r}>"));
        }
        let proto = if self.protocol() == "SMTP" {
            "SMTP"
        } else {
            "ESMTP"
        };
        text.push_str(&format!(" proto={proto}"));
        if let Some(h) = &self.helo {
            text.push_str(&format!(" helo=<{}>", h.name));
        }
        self.log(log::Level::Info, text);
    }

    fn close(&mut self) {
        if matches!(self.mode, Mode::Closed) {
            return;
        }
        let summary = self.conn.stats.summary();
        self.log(
            log::Level::Info,
            format!("disconnect from {}{summary}", self.conn.client()),
        );
        self.outputs.push_back(ServerOutput::Close);
        self.mode = Mode::Closed;
        self.deadline = None;
        self.pending = Vec::new();
    }

    /// `RCPT from name[ip]: <rcpt> permitted by <rule>`, in one allocation, with the rule's
    /// text written once per rule rather than once per recipient.
    fn permitted_line(&mut self, rcpt: &Path, decided_by: policy::DecidedBy) -> String {
        use core::fmt::Write as _;
        let rule = match &mut self.permitted_by {
            Some((last, text)) if *last == decided_by => text,
            cache => {
                let text = decided_by.to_string();
                &cache.insert((decided_by, text)).1
            }
        };
        let client = &self.conn.client_name;
        let mut line = String::with_capacity(client.len() + rule.len() + 80);
        line.push_str("RCPT from ");
        line.push_str(client);
        // Writing to a String cannot fail.
        let _ = write!(line, ": <{rcpt}> permitted by ");
        line.push_str(rule);
        line
    }

    fn transmit(&mut self, reply: &Reply) {
        self.pace_reply();
        let size = reply.lines.iter().map(|line| line.len() + 6).sum();
        let mut bytes = Vec::with_capacity(size);
        reply.write_to(&mut bytes);
        self.outputs.push_back(ServerOutput::Transmit(bytes));
    }

    /// A one-line `250` reply, written straight to the wire form.
    fn transmit_ok(&mut self, text: &str) {
        self.pace_reply();
        let mut bytes = Vec::with_capacity(text.len() + 6);
        bytes.extend_from_slice(b"250 ");
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.outputs.push_back(ServerOutput::Transmit(bytes));
    }

    fn log(&mut self, level: log::Level, text: String) {
        self.outputs
            .push_back(ServerOutput::Log(LogLine { level, text }));
    }

    /// Octets held inside the session (line, held input, DATA chunk), for the tests that
    /// check buffering stays bounded.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        let chunk = match &self.mode {
            Mode::Data(rx) => rx.held(),
            _ => 0,
        };
        self.lines.pending() + self.pending.len() + chunk
    }
}

fn upper_name(verb: Verb) -> &'static str {
    match verb {
        Verb::Helo => "HELO",
        Verb::Ehlo => "EHLO",
        Verb::StartTls => "STARTTLS",
        Verb::Mail => "MAIL",
        Verb::Rcpt => "RCPT",
        Verb::Data => "DATA",
        Verb::Rset => "RSET",
        Verb::Noop => "NOOP",
        Verb::Vrfy => "VRFY",
        Verb::Help => "HELP",
        Verb::Quit => "QUIT",
        Verb::XCertRelay => "XCERTRELAY",
    }
}

fn no_args(args: &str, usage: &'static str) -> Result<(), ServerError> {
    if args.is_empty() {
        Ok(())
    } else {
        Err(ServerError::Syntax(usage))
    }
}
