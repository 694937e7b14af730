//! One SMTP client connection on smol: the socket, the TLS stream and the timers around a
//! core [`ClientSession`].
//!
//! The session decides every byte and every state change; this module only moves bytes,
//! runs the TLS handshake when the session asks for it, judges the server certificate with
//! the core's [`cert::verify_server_chain_names`], and turns the session's deadline into a
//! [`Timer`]. The plaintext socket is handed to rustls whole after the server's 220 to
//! STARTTLS, so nothing read before the handshake can reach the TLS dialogue. In wrapper
//! mode (implicit TLS, port 465) the socket goes to rustls as soon as it is connected.

use crate::clock::Clock;
use crate::delivery::route::ServerAddr;
use crate::io::{io_reason, with_timeout};
use crate::tls;
use certrelay_core::cert::{self, CertName};
use certrelay_core::client::{
    line_break_overhead, ClientError, ClientEvent, ClientOutput, ClientSession, ClientTlsHandshake,
    Closing, DeliveryStatus, Envelope, MessageReport, Outcome, ServerCertVerdict,
};
use certrelay_core::settings::ClientSettings;
use certrelay_core::tls_policy::TlsLevel;
use futures_rustls::client::TlsStream;
use futures_rustls::TlsConnector;
use rustls::pki_types::TrustAnchor;
use rustls::pki_types::{ServerName, UnixTime};
use smol::future;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use smol::Timer;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Body bytes handed to the session at a time: memory stays bounded whatever the message.
pub const BODY_CHUNK: usize = 16 * 1024;

/// What the client needs for TLS: one rustls configuration per queue run (so sessions
/// resume) and the trust anchors of `smtp_tls_CAfile` for levels `verify` and `secure`.
#[derive(Clone)]
pub struct ClientTls {
    /// From [`crate::tls::client_config`].
    pub config: Arc<rustls::ClientConfig>,
    /// CAs the server certificate must chain to at `verify` and up.
    pub anchors: Arc<Vec<TrustAnchor<'static>>>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientTls({} trust anchors)", self.anchors.len())
    }
}

/// A connection that could not be opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectError {
    /// `connect to host[addr]:port: Connection refused`, as Postfix logs it.
    pub reason: String,
}

impl ConnectError {
    /// The outcome for messages that could not be offered (`4.4.1`, deferred).
    pub fn outcome(&self) -> Outcome {
        Outcome::local(DeliveryStatus::Deferred, "4.4.1", self.reason.clone())
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ConnectError {}

/// Why a message could not be handed to the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The session refused the envelope (a run-loop mistake or an unsendable address).
    Refused(ClientError),
    /// The connection ended before the message was reported.
    Closed(Closing),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Refused(e) => write!(f, "message not sent: {e}"),
            SendError::Closed(c) => write!(f, "connection closed: {c:?}"),
        }
    }
}

impl std::error::Error for SendError {}

/// What the connection's run loop stopped for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    StartTls,
    Ready,
    NeedBody,
    MessageDone(MessageReport),
    Closed(Closing),
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Gone,
}

impl Stream {
    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Stream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Stream::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
            Stream::Gone => Ok(0),
        }
    }

    async fn close(&mut self) {
        match std::mem::replace(self, Stream::Gone) {
            Stream::Plain(mut s) => {
                let _ = s.close().await;
            }
            Stream::Tls(mut s) => {
                let _ = s.close().await;
            }
            Stream::Gone => {}
        }
    }
}

/// A connection whose session is not yet ready for mail: the greeting, EHLO and STARTTLS
/// are still ahead. [`SmtpConnection::open`] gives one; [`ready`](Self::ready) runs them.
///
/// The set-up is the only part of the dialogue with a TLS hand-over, so it owns its
/// session by value: the session goes into the handshake and comes back out of it.
pub struct OpeningConnection {
    link: Link,
    session: ClientSession,
}

impl OpeningConnection {
    /// Runs the greeting, EHLO and STARTTLS (as the session's TLS level asks) until the
    /// session can take a message, or the connection ends.
    pub async fn ready(self) -> Result<SmtpConnection, Closing> {
        let OpeningConnection {
            mut link,
            mut session,
        } = self;
        loop {
            match link.step(&mut session).await {
                Step::Ready => return Ok(SmtpConnection { link, session }),
                Step::Closed(c) => return Err(c),
                Step::StartTls => session = link.start_tls(session).await,
                // Neither can happen without a message; answer so the session moves on.
                Step::NeedBody => link.event(&mut session, ClientEvent::BodyEnd),
                Step::MessageDone(_) => {}
            }
        }
    }
}

/// One open connection to one server whose session is ready for mail.
///
/// Use: [`open`](Self::open), then [`OpeningConnection::ready`]; while it says `Ok`,
/// [`send`](Self::send) one message and call [`ready`](Self::ready) again; finally
/// [`quit`](Self::quit). An `Err(Closing)` from either tells why the connection ended (see
/// [`Closing`]).
pub struct SmtpConnection {
    link: Link,
    session: ClientSession,
}

/// Everything of a connection but its session: the stream and what moving bytes needs.
struct Link {
    stream: Stream,
    server: ServerAddr,
    settings: ClientSettings,
    /// The names the server certificate must present (empty below `verify`).
    names: Vec<CertName>,
    tls: ClientTls,
    clock: Clock,
    buf: Vec<u8>,
    /// What the session gave to send and is not written yet ([`Link::step`]).
    unsent: Vec<u8>,
    closed: Option<Closing>,
}

/// Content waiting to be written goes out once it reaches this size, or when anything but
/// more content comes next.
const UNSENT_MAX: usize = 64 * 1024;

impl SmtpConnection {
    /// Connects to `server` within `connect_timeout` and starts a session with `settings`
    /// (whose `tls_level` is the level resolved for this next hop). From `verify` up the
    /// server certificate must present one of `names`
    /// ([`tls_policy::cert_names`](certrelay_core::tls_policy::cert_names)). With
    /// `implicit_tls` (wrapper mode) the TLS handshake runs at once, before the greeting; if
    /// it fails, [`OpeningConnection::ready`] says so and nothing was sent in plaintext.
    pub async fn open(
        server: &ServerAddr,
        settings: ClientSettings,
        names: Vec<CertName>,
        tls: &ClientTls,
        connect_timeout: Duration,
        clock: Clock,
        implicit_tls: bool,
    ) -> Result<OpeningConnection, ConnectError> {
        let connect = TcpStream::connect(server.socket_addr());
        let tcp = with_timeout(connect_timeout, connect)
            .await
            .unwrap_or_else(|| Err(io::ErrorKind::TimedOut.into()))
            .map_err(|e| ConnectError {
                reason: format!("connect to {server}: {}", io_reason(&e)),
            })?;
        let _ = tcp.set_nodelay(true);
        let mut link = Link {
            stream: Stream::Plain(tcp),
            server: server.clone(),
            settings,
            names,
            tls: tls.clone(),
            clock,
            buf: vec![0; 8192],
            unsent: Vec::new(),
            closed: None,
        };
        let session = if implicit_tls {
            let handshake =
                ClientTlsHandshake::implicit(link.settings.clone(), server.peer(), clock.now());
            link.handshake(handshake).await
        } else {
            ClientSession::new(link.settings.clone(), server.peer(), clock.now())
        };
        Ok(OpeningConnection { link, session })
    }

    /// The server this connection talks to.
    pub fn server(&self) -> &ServerAddr {
        &self.link.server
    }

    /// Whether an idle connection still looks usable. An idle client is owed nothing, so
    /// any byte from the server (a `421` before it hangs up) or the end of the stream
    /// means it is done with us. Does not wait.
    pub async fn still_open(&mut self) -> bool {
        if self.link.closed.is_some() {
            return false;
        }
        let mut probe = [0u8; 256];
        future::poll_once(self.link.stream.read(&mut probe))
            .await
            .is_none()
    }

    /// True once TLS is established.
    pub fn is_tls(&self) -> bool {
        matches!(self.link.stream, Stream::Tls(_))
    }

    /// Runs the dialogue until the session can take a message, or the connection ends.
    pub async fn ready(&mut self) -> Result<(), Closing> {
        loop {
            match self.link.step(&mut self.session).await {
                Step::Ready => return Ok(()),
                Step::Closed(c) => return Err(c),
                Step::StartTls => self.link.late_tls(&mut self.session).await,
                // Neither can happen without a message; answer so the session moves on.
                Step::NeedBody => self.link.event(&mut self.session, ClientEvent::BodyEnd),
                Step::MessageDone(_) => {}
            }
        }
    }

    /// Delivers one message (after [`ready`](Self::ready) said `Ok`), reading its body
    /// from `body` in chunks of [`BODY_CHUNK`]. A body that cannot be read drops the
    /// connection, which defers the message's recipients.
    pub async fn send(
        &mut self,
        envelope: Envelope,
        body: &mut (impl AsyncRead + Unpin),
    ) -> Result<MessageReport, SendError> {
        let chunk = vec![0; BODY_CHUNK];
        self.send_from(envelope, Body::Reader(body, chunk)).await
    }

    /// Runs one message through the session, taking its content from `body`.
    async fn send_from<R: AsyncRead + Unpin>(
        &mut self,
        envelope: Envelope,
        mut body: Body<'_, R>,
    ) -> Result<MessageReport, SendError> {
        let (link, session) = (&mut self.link, &mut self.session);
        let now = link.clock.now();
        session
            .send_message(envelope, now)
            .map_err(SendError::Refused)?;
        loop {
            match link.step(session).await {
                Step::NeedBody => match body.next().await {
                    Ok([]) => link.event(session, ClientEvent::BodyEnd),
                    Ok(bytes) => {
                        let now = link.clock.now();
                        session.handle_event(ClientEvent::Body(bytes), now);
                    }
                    Err(e) => {
                        log::error!("cannot read message body for {}: {e}", link.server);
                        link.stream.close().await;
                        link.event(session, ClientEvent::ConnectionLost);
                    }
                },
                Step::MessageDone(report) => return Ok(report),
                Step::Closed(c) => return Err(SendError::Closed(c)),
                Step::StartTls => link.late_tls(session).await,
                Step::Ready => {}
            }
        }
    }

    /// Delivers one message whose content is held whole, as [`send`](Self::send) does. Its
    /// `SIZE=` estimate (the stored size) grows by the octets that breaking lines longer
    /// than `smtp_line_length_limit` will add, so that it stays an honest estimate.
    pub async fn send_whole(
        &mut self,
        mut envelope: Envelope,
        content: &[u8],
    ) -> Result<MessageReport, SendError> {
        let added = line_break_overhead(content, self.link.settings.line_length_limit);
        envelope.body_size = envelope.body_size.map(|size| size.saturating_add(added));
        self.send_from(envelope, Body::<&[u8]>::Whole(content))
            .await
    }

    /// Ends the connection politely (QUIT when the session is idle) and closes it.
    pub async fn quit(self) -> Closing {
        let SmtpConnection {
            mut link,
            mut session,
        } = self;
        if let Some(closed) = &link.closed {
            return closed.clone();
        }
        let _ = session.quit(link.clock.now());
        loop {
            match link.step(&mut session).await {
                Step::Closed(c) => return c,
                Step::StartTls => session = link.start_tls(session).await,
                Step::NeedBody => link.event(&mut session, ClientEvent::BodyEnd),
                Step::Ready | Step::MessageDone(_) => {
                    let _ = session.quit(link.clock.now());
                }
            }
        }
    }
}

/// Where [`SmtpConnection::send_from`] takes a message's content from.
enum Body<'a, R> {
    /// Read in chunks into the buffer.
    Reader(&'a mut R, Vec<u8>),
    /// Held whole: handed to the session in pieces of [`WHOLE_PIECE`], without a copy.
    Whole(&'a [u8]),
}

/// Content handed to the session at a time from a message held whole: the encoder makes
/// one copy of it, and it goes out in one write (fewer writes than [`BODY_CHUNK`]s; below
/// the size at which musl's allocator maps memory of its own).
const WHOLE_PIECE: usize = 64 * 1024;

impl<R: AsyncRead + Unpin> Body<'_, R> {
    /// The next content octets; empty at the end.
    async fn next(&mut self) -> io::Result<&[u8]> {
        match self {
            Body::Reader(reader, chunk) => {
                let n = reader.read(chunk).await?;
                Ok(&chunk[..n])
            }
            Body::Whole(rest) => {
                let (piece, after) = rest.split_at(rest.len().min(WHOLE_PIECE));
                *rest = after;
                Ok(piece)
            }
        }
    }
}

impl Link {
    fn event(&mut self, session: &mut ClientSession, event: ClientEvent<'_>) {
        session.handle_event(event, self.clock.now());
    }

    /// Drains the session's outputs, acting on each, and waits for the server when there
    /// is nothing to do, until something the caller must decide on comes up.
    async fn step(&mut self, session: &mut ClientSession) -> Step {
        if let Some(closed) = &self.closed {
            return Step::Closed(closed.clone());
        }
        enum Next {
            Return(Step),
            Close(Closing),
            Wait,
        }
        loop {
            // Content waits for what follows it, up to UNSENT_MAX, so that the end of a
            // message and its final dot leave in one write (one system call and one packet
            // fewer per message); anything else first writes what waits, in order.
            let next = match session.poll_output() {
                Some(ClientOutput::Transmit(bytes)) => {
                    if self.unsent.is_empty() {
                        self.unsent = bytes;
                    } else {
                        self.unsent.extend_from_slice(&bytes);
                    }
                    continue;
                }
                Some(ClientOutput::NeedBody) if self.unsent.len() < UNSENT_MAX => {
                    return Step::NeedBody;
                }
                Some(ClientOutput::NeedBody) => Next::Return(Step::NeedBody),
                Some(ClientOutput::StartTls) => Next::Return(Step::StartTls),
                Some(ClientOutput::Ready) => Next::Return(Step::Ready),
                Some(ClientOutput::MessageDone(report)) => Next::Return(Step::MessageDone(report)),
                Some(ClientOutput::Close(closing)) => Next::Close(closing),
                None => Next::Wait,
            };
            let written = self.unsent.is_empty() || self.write_unsent(session).await;
            match next {
                Next::Return(step) => return step,
                Next::Close(closing) => {
                    self.stream.close().await;
                    self.closed = Some(closing.clone());
                    return Step::Closed(closing);
                }
                // The connection is gone: the session has something new to say.
                Next::Wait if !written => {}
                Next::Wait => self.wait_for_server(session).await,
            }
        }
    }

    /// Writes what waits, within `smtp_*_timeout`; false (the connection closed and the
    /// session told) when that fails. Its buffer goes: a cached connection holds none.
    async fn write_unsent(&mut self, session: &mut ClientSession) -> bool {
        let bytes = std::mem::take(&mut self.unsent);
        let limit = self.settings.command_timeout;
        let written = with_timeout(limit, self.stream.write_all(&bytes)).await;
        if matches!(written, Some(Ok(()))) {
            return true;
        }
        self.stream.close().await;
        self.event(session, ClientEvent::ConnectionLost);
        false
    }

    /// Reads what the server sends, or fires the session's timer, whichever comes first.
    async fn wait_for_server(&mut self, session: &mut ClientSession) {
        enum Got {
            Bytes(usize),
            Lost,
            Timer,
        }
        let deadline = session.poll_timeout();
        let now = self.clock.now();
        // No deadline with nothing to do would be a run-loop bug: bound it anyway.
        let wait = deadline.map_or(self.settings.command_timeout, |d| d.saturating_since(now));
        let read = async {
            match self.stream.read(&mut self.buf).await {
                Ok(0) | Err(_) => Got::Lost,
                Ok(n) => Got::Bytes(n),
            }
        };
        let timer = async {
            Timer::after(wait).await;
            Got::Timer
        };
        let got = future::or(read, timer).await;
        let now = self.clock.now();
        match got {
            Got::Bytes(n) => session.handle_input(&self.buf[..n], now),
            Got::Lost => {
                self.stream.close().await;
                self.event(session, ClientEvent::ConnectionLost);
            }
            Got::Timer if deadline.is_some() => session.handle_timeout(now),
            Got::Timer => {
                log::warn!("SMTP session with {} stalled; closing", self.server);
                self.stream.close().await;
                self.event(session, ClientEvent::ConnectionLost);
            }
        }
    }

    /// The STARTTLS hand-over: the session becomes a handshake (no input), the socket goes
    /// to rustls, and the session comes back with the handshake's result.
    async fn start_tls(&mut self, session: ClientSession) -> ClientSession {
        let handshake = match session.start_tls() {
            Ok(handshake) => handshake,
            Err(mut session) => {
                log::error!(
                    "{}: STARTTLS hand-over refused by the session; closing",
                    self.server
                );
                self.stream.close().await;
                self.event(&mut session, ClientEvent::ConnectionLost);
                return session;
            }
        };
        if handshake.discarded() > 0 {
            log::warn!(
                "{}: discarded {} octets sent after the 220 to STARTTLS",
                self.server,
                handshake.discarded()
            );
        }
        self.handshake(handshake).await
    }

    /// Runs the TLS handshake on the plaintext socket (after STARTTLS, or at once in
    /// wrapper mode) within the handshake's deadline; the session comes back with its
    /// result.
    async fn handshake(&mut self, handshake: ClientTlsHandshake) -> ClientSession {
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return handshake.failed();
        };
        let host = handshake.server_name().to_owned();
        let connector = TlsConnector::from(self.tls.config.clone());
        let connect = connector.connect(server_name(&host, self.server.addr), tcp);
        let now = self.clock.now();
        let limit = handshake
            .poll_timeout()
            .map_or(self.settings.command_timeout, |d| d.saturating_since(now));
        let result = with_timeout(limit, connect).await;
        let now = self.clock.now();
        match result {
            Some(Ok(tls)) => {
                let verdict = self.judge(&tls, &host);
                log_established(&self.server, &tls, verdict);
                self.stream = Stream::Tls(Box::new(tls));
                handshake.established(verdict, now)
            }
            Some(Err(e)) => {
                log::info!("{}: TLS handshake failed: {e}", self.server);
                handshake.failed()
            }
            None => {
                log::info!("{}: TLS handshake timed out", self.server);
                handshake.failed()
            }
        }
    }

    /// A session asks for TLS only while it sets up, which [`OpeningConnection`] drives; one
    /// that asks later is out of step with its server, and the connection is dropped.
    async fn late_tls(&mut self, session: &mut ClientSession) {
        log::error!("{}: STARTTLS asked for after set-up; closing", self.server);
        self.stream.close().await;
        self.event(session, ClientEvent::ConnectionLost);
    }

    /// The core's judgement of the server's chain and names. Below `verify` nothing depends
    /// on it but the log line, which judges the host name as `verify` would.
    fn judge(&self, tls: &TlsStream<TcpStream>, host: &str) -> ServerCertVerdict {
        let chain = tls.get_ref().1.peer_certificates().unwrap_or(&[]);
        let algs = rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .all;
        let logged_only = [CertName::Host(host.to_owned())];
        let names = match self.settings.tls_level >= TlsLevel::Verify {
            true => &self.names[..],
            false => &logged_only[..],
        };
        let anchors = &self.tls.anchors;
        match cert::verify_server_chain_names(chain, anchors, names, UnixTime::now(), algs) {
            Ok(()) => ServerCertVerdict::Verified,
            Err(e) => {
                log::info!("{}: server certificate not verified: {e}", self.server);
                ServerCertVerdict::NotVerified
            }
        }
    }
}

impl fmt::Debug for SmtpConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SmtpConnection({}, tls={})",
            self.link.server,
            self.is_tls()
        )
    }
}

/// The name sent in SNI and checked in the certificate: the host, or its address when the
/// host is not a valid DNS name.
fn server_name(host: &str, addr: IpAddr) -> ServerName<'static> {
    ServerName::try_from(host.to_owned()).unwrap_or_else(|_| ServerName::IpAddress(addr.into()))
}

fn log_established(server: &ServerAddr, tls: &TlsStream<TcpStream>, verdict: ServerCertVerdict) {
    let conn = tls.get_ref().1;
    let kind = match verdict {
        ServerCertVerdict::Verified => "Verified",
        ServerCertVerdict::NotVerified => "Untrusted",
    };
    // Named as the relay's own logs and Postfix's name them (OpenSSL's names).
    let proto = tls::protocol_name(conn.protocol_version());
    let (cipher, bits) = conn
        .negotiated_cipher_suite()
        .map_or((String::from("unknown"), 0), |s| {
            tls::cipher_name(s.suite())
        });
    log::info!(
        "{kind} TLS connection established to {server}: {proto} with cipher {cipher} \
         ({bits}/{bits} bits)"
    );
}
