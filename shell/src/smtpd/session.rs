//! One SMTP connection: the socket, the TLS stream, the timers and the store around a core
//! [`ServerSession`].
//!
//! On a listener in wrapper mode the TLS handshake runs first, bounded like one after
//! STARTTLS (the session's timeout from the accept, shorter under stress, and giving way
//! when the slot is wanted), and the session starts inside it; a client that sends
//! anything but a TLS handshake is dropped without a byte of SMTP.
//!
//! The connection is any byte stream: a TCP socket from a listener, or standard input and
//! output for `sendmail -bs` (the laptop's local listener).

use super::limits::{Sessions, Slot};
use super::listener::{ListenerConf, Trust};
use super::store::{Receiving, Store};
use super::tlsinfo;
use crate::clock::Clock;
use certrelay_core::enroll::{EnrollAnswer, EnrollRequest};
use certrelay_core::facts::PeerInfo;
use certrelay_core::fingerprint::FingerprintMap;
use certrelay_core::server::{ServerEvent, ServerOutput, ServerSession, ServerTlsHandshake};
use certrelay_core::settings::ServerTlsLevel;
use certrelay_core::Instant;
use futures_rustls::server::TlsStream;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::Timer;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Plaintext, then TLS after STARTTLS.
enum Conn<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
    /// Between the two, and after a failed handshake.
    Gone,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Gone => Poll::Ready(Ok(0)),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_close(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
            Conn::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// What woke the connection up.
enum Wake {
    Read(io::Result<usize>),
    Timeout,
    /// The server entered or left stress: the deadline changes.
    Stress,
    /// Every session slot is taken and this idle session must give way.
    Displaced,
}

/// Waits until `deadline`, or forever without one.
async fn sleep_until(clock: Clock, deadline: Option<Instant>) {
    match deadline {
        Some(d) => {
            Timer::at(clock.at(d)).await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// The certificate trust of a connection's listener as configured now: a relay's reload
/// may replace `relay_clientcerts` while a session is open.
pub type CurrentTrust = Arc<dyn Fn() -> Option<Arc<Trust>> + Send + Sync>;

/// Everything one connection needs.
pub struct Connection {
    /// Its listener, as configured when it was accepted.
    pub listener: Arc<ListenerConf>,
    /// The spool.
    pub store: Store,
    /// The clock.
    pub clock: Clock,
    /// Who answers `XCERTRELAY`, if anyone.
    pub enroll: Option<Arc<dyn super::enroll::Enroller>>,
}

impl Connection {
    /// Serves `stream` from `addr` (whose host name is `name`, or `unknown`) in `slot`
    /// until the session closes, with shorter timeouts while the sessions are under stress,
    /// and giving way when the slot is wanted for a new connection while this one is idle.
    /// Before it reads commands, the session looks its client certificate up again when
    /// `current` holds another `relay_clientcerts` than the one it was judged with.
    pub async fn serve<S>(
        self,
        stream: S,
        addr: IpAddr,
        name: String,
        slot: Slot,
        current: CurrentTrust,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let peer = PeerInfo { addr, name };
        self.serve_with(stream, peer, Some(slot), Some(current))
            .await;
    }

    /// Serves any byte stream whose other end is `peer`, until the session closes.
    pub async fn serve_stream<S>(self, stream: S, peer: PeerInfo)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.serve_with(stream, peer, None, None).await;
    }

    async fn serve_with<S>(
        self,
        stream: S,
        peer: PeerInfo,
        slot: Option<Slot>,
        current_trust: Option<CurrentTrust>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let settings = self.listener.settings.clone();
        let now = self.clock.now();
        let wrappermode = self.listener.wrappermode;
        let tls_unavailable =
            settings.tls_level != ServerTlsLevel::None && self.listener.tls.is_none();
        let mut driver = Driver {
            conn: Conn::Plain(stream),
            out: Vec::new(),
            message: None,
            listed_by: self.listener.trust.fingerprints.clone(),
            current_trust,
            c: self,
            peer: peer.clone(),
            write_timeout: settings.timeout,
            sessions: slot.as_ref().map(|s| s.sessions().clone()),
            slot,
        };
        let session = if wrappermode {
            let (hs, connect) = ServerTlsHandshake::implicit(settings, peer, now);
            log::log!(connect.level, "{}", connect.text);
            // Waiting for a handshake is idle too.
            if let Some(slot) = &driver.slot {
                slot.activity().set_idle_since(Some(now));
            }
            match Box::pin(driver.handshake(hs)).await {
                Some(session) => session,
                None => return,
            }
        } else {
            let mut session = ServerSession::new(settings, peer, now);
            if tls_unavailable {
                session.set_tls_unavailable();
            }
            session
        };
        driver.run(session).await;
    }
}

struct Driver<S> {
    conn: Conn<S>,
    out: Vec<u8>,
    message: Option<Receiving>,
    c: Connection,
    peer: PeerInfo,
    write_timeout: Duration,
    sessions: Option<Sessions>,
    /// This session's place in the counts, kept until the connection ends.
    slot: Option<Slot>,
    /// Where the listener's trust is now, and the map the certificate was last looked up in.
    current_trust: Option<CurrentTrust>,
    listed_by: Arc<FingerprintMap>,
}

/// The read buffer between mail transactions: commands are short, and an idle session keeps
/// this buffer for as long as it stays (1000 idle sessions hold 1000 of them).
const READ_SMALL: usize = 2 * 1024;
/// The read buffer once a read fills the small one (a message's content is coming); it goes
/// back to [`READ_SMALL`] when the transaction ends.
const READ_LARGE: usize = 16 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<S> {
    async fn run(&mut self, mut session: ServerSession) {
        let mut buf = vec![0u8; READ_SMALL];
        loop {
            match self.drain(session).await {
                Some(s) => session = s,
                None => return,
            }
            if self.flush().await.is_err() {
                session.handle_event(ServerEvent::ConnectionLost, self.c.clock.now());
                continue;
            }
            if session.is_closed() {
                return;
            }
            if !session.wants_read() && session.poll_timeout().is_none() {
                log::warn!("session with {} stalled; closing", self.peer.addr);
                return;
            }
            // Listen before reading the flag, so that no notice slips between the two.
            self.publish_idle(&session);
            if buf.len() > READ_SMALL && session.idle_since().is_some() {
                buf = vec![0u8; READ_SMALL];
            }
            let activity = self.slot.as_ref().map(|s| s.activity().clone());
            let displaced = activity.as_ref().map(|a| a.displaced());
            if activity.as_ref().is_some_and(|a| a.is_displaced()) {
                session.displace(self.c.clock.now());
                continue;
            }
            // Listen before reading the state, so that no change slips between the two. A
            // session keeps the cap once it had it, as a Postfix process started under
            // stress does: the clients that caused the stress are the ones still idle.
            let stress_changed = self.sessions.as_ref().map(|s| {
                let changed = s.stress_changed();
                if let Some(cap) = s.timeout_cap() {
                    session.cap_timeout(cap);
                }
                changed
            });
            let deadline = session.poll_timeout();
            let clock = self.c.clock;
            let wake = if session.wants_read() {
                let conn = &mut self.conn;
                let read = async { Wake::Read(conn.read(&mut buf).await) };
                let timer = async {
                    sleep_until(clock, deadline).await;
                    Wake::Timeout
                };
                let stress = async {
                    match stress_changed {
                        Some(changed) => changed.await,
                        None => std::future::pending().await,
                    }
                    Wake::Stress
                };
                let stress_or_displaced = smol::future::or(stress, wait_displaced(displaced));
                smol::future::or(read, smol::future::or(timer, stress_or_displaced)).await
            } else {
                let timer = async {
                    sleep_until(clock, deadline).await;
                    Wake::Timeout
                };
                smol::future::or(timer, wait_displaced(displaced)).await
            };
            let now = self.c.clock.now();
            match wake {
                Wake::Read(Ok(0)) => session.handle_event(ServerEvent::ConnectionLost, now),
                Wake::Read(Ok(n)) => {
                    self.relist(&mut session);
                    session.handle_input(&buf[..n], now);
                    if n == buf.len() && buf.len() < READ_LARGE {
                        buf.resize(READ_LARGE, 0);
                    }
                }
                Wake::Read(Err(e)) => {
                    log::debug!("read from {}: {e}", self.peer.addr);
                    session.handle_event(ServerEvent::ConnectionLost, now);
                }
                Wake::Timeout => session.handle_timeout(now),
                Wake::Stress => {}
                Wake::Displaced => session.displace(now),
            }
        }
    }

    /// Acts on every output the session has. Returns the session to go on with, or `None`
    /// when the connection is finished.
    async fn drain(&mut self, mut session: ServerSession) -> Option<ServerSession> {
        while let Some(output) = session.poll_output() {
            match output {
                ServerOutput::Transmit(bytes) => self.out.extend_from_slice(&bytes),
                ServerOutput::Log(line) => log::log!(line.level, "{}", line.text),
                ServerOutput::MessageBegin(envelope) => {
                    self.message = Some(
                        self.c
                            .store
                            .begin(envelope, &self.c.listener.settings)
                            .await,
                    );
                }
                ServerOutput::BodyChunk(chunk) => {
                    if let Some(m) = self.message.as_mut() {
                        m.append(&chunk).await;
                    }
                }
                ServerOutput::MessageAbort => self.message = None,
                ServerOutput::MessageEnd => {
                    let event = match self.message.take() {
                        Some(m) => m.finish().await,
                        None => ServerEvent::QueueWriteFailed,
                    };
                    // Commands held while storing run now.
                    self.relist(&mut session);
                    session.handle_event(event, self.c.clock.now());
                }
                ServerOutput::StartTls => {
                    // Waiting for a handshake is idle too.
                    self.publish_idle(&session);
                    if self.flush().await.is_err() {
                        session.handle_event(ServerEvent::ConnectionLost, self.c.clock.now());
                        continue;
                    }
                    session = match session.start_tls() {
                        // Boxed, as is the enrollment below: each happens once in a session,
                        // and inline their futures would make every session's task as large
                        // as the largest of them (8.7 KiB, for as long as the session lasts).
                        Ok(handshake) => Box::pin(self.handshake(handshake)).await?,
                        Err(s) => {
                            log::error!("STARTTLS hand-over refused by the session; closing");
                            drop(s);
                            return None;
                        }
                    };
                }
                ServerOutput::Enroll(request) => {
                    let answer = Box::pin(self.enroll(*request)).await;
                    // A new certificate is listed by now: the session sees the table again.
                    self.relist(&mut session);
                    session.handle_event(ServerEvent::Enrolled(answer), self.c.clock.now());
                }
                ServerOutput::Close => {
                    let _ = self.flush().await;
                    let _ = with_timeout(Duration::from_secs(5), self.conn.close()).await;
                    return None;
                }
            }
        }
        Some(session)
    }

    /// The enrollment service's answer to `request`.
    async fn enroll(&mut self, request: EnrollRequest) -> EnrollAnswer {
        let Some(enroller) = self.c.enroll.clone() else {
            return EnrollAnswer::Unavailable;
        };
        let client_cert = match &self.conn {
            Conn::Tls(tls) => tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| leaf.to_vec()),
            _ => None,
        };
        enroller.answer(request, self.peer.addr, client_cert).await
    }

    /// Tells the session counts since when the session is idle (or that it is not).
    fn publish_idle(&self, session: &ServerSession) {
        if let Some(slot) = &self.slot {
            slot.activity().set_idle_since(session.idle_since());
        }
    }

    /// When a reload replaced the listener's `relay_clientcerts`, looks the client
    /// certificate up in the new table, so that a revoked one relays no more.
    fn relist(&mut self, session: &mut ServerSession) {
        let (Some(current), Conn::Tls(tls)) = (&self.current_trust, &self.conn) else {
            return;
        };
        let Some(trust) = current() else {
            return;
        };
        if Arc::ptr_eq(&trust.fingerprints, &self.listed_by) {
            return;
        }
        session.relist_client_cert(tlsinfo::listed(tls.get_ref().1, &trust.fingerprints));
        self.listed_by = trust.fingerprints.clone();
    }

    /// Runs the TLS handshake within the session's deadline.
    async fn handshake(&mut self, hs: ServerTlsHandshake) -> Option<ServerSession> {
        let Conn::Plain(plain) = std::mem::replace(&mut self.conn, Conn::Gone) else {
            log::error!("STARTTLS inside TLS from {}", self.peer.addr);
            return None;
        };
        let Some(config) = self.c.listener.tls.clone() else {
            for line in hs.failed("no TLS configuration") {
                log::log!(line.level, "{}", line.text);
            }
            return None;
        };
        let accept = async {
            futures_rustls::TlsAcceptor::from(config)
                .accept(plain)
                .await
                .map_err(|e| e.to_string())
        };
        let timer = async {
            handshake_deadline(self.c.clock, hs.poll_timeout(), self.sessions.as_ref()).await;
            Err(String::from("timeout"))
        };
        let activity = self.slot.as_ref().map(|s| s.activity().clone());
        let displaced = async {
            if let Some(a) = &activity {
                let notice = a.displaced();
                if !a.is_displaced() {
                    notice.await;
                }
            } else {
                std::future::pending::<()>().await;
            }
            Err(String::from(
                "every session slot is taken: closed to make room for a new connection",
            ))
        };
        match smol::future::or(accept, smol::future::or(timer, displaced)).await {
            Ok(tls) => {
                let listener = &self.c.listener;
                let facts = tlsinfo::facts(
                    tls.get_ref().1,
                    &listener.trust,
                    &self.peer,
                    listener.settings.tls_loglevel,
                );
                if let Some(seen) = self.c.store.listed_seen() {
                    tlsinfo::tell_listed(tls.get_ref().1, &facts, &self.peer, seen);
                }
                if let (Some(enroller), Some(_)) = (&self.c.enroll, &facts.client_cert.listed) {
                    let chain = tls.get_ref().1.peer_certificates();
                    if let Some(leaf) = chain.and_then(|c| c.first()) {
                        enroller.presented(leaf);
                    }
                }
                self.conn = Conn::Tls(Box::new(tls));
                Some(hs.established(facts, self.c.clock.now()))
            }
            Err(reason) => {
                for line in hs.failed(&reason) {
                    log::log!(line.level, "{}", line.text);
                }
                None
            }
        }
    }

    /// Sends what the session queued, within `smtpd_timeout`.
    async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::take(&mut self.out);
        let conn = &mut self.conn;
        with_timeout(self.write_timeout, async {
            conn.write_all(&bytes).await?;
            conn.flush().await
        })
        .await
    }
}

/// Completes when the session must give way; never without a slot.
async fn wait_displaced(notice: Option<event_listener::EventListener>) -> Wake {
    match notice {
        Some(notice) => notice.await,
        None => std::future::pending().await,
    }
    Wake::Displaced
}

/// Waits out a TLS handshake's time: its session deadline, or under stress (now or once it
/// begins) at most the stress timeout from then, so that a client that stalls inside the
/// handshake gives way like an idle one.
async fn handshake_deadline(clock: Clock, deadline: Option<Instant>, sessions: Option<&Sessions>) {
    let Some(sessions) = sessions else {
        return sleep_until(clock, deadline).await;
    };
    let mut deadline = deadline;
    loop {
        let changed = sessions.stress_changed();
        if let Some(cap) = sessions.timeout_cap() {
            let capped = clock.now() + cap;
            deadline = Some(deadline.map_or(capped, |d| d.min(capped)));
        }
        let expired = async {
            sleep_until(clock, deadline).await;
            true
        };
        let stress = async {
            changed.await;
            false
        };
        if smol::future::or(expired, stress).await {
            return;
        }
    }
}

/// Runs `f`, giving up with `TimedOut` after `limit`.
async fn with_timeout<F>(limit: Duration, f: F) -> io::Result<()>
where
    F: std::future::Future<Output = io::Result<()>>,
{
    let timer = async {
        Timer::after(limit).await;
        Err(io::ErrorKind::TimedOut.into())
    };
    smol::future::or(f, timer).await
}
