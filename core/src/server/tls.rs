//! The STARTTLS hand-over: a session in the middle of a TLS handshake takes no input. Also
//! the start of a session on a listener in wrapper mode (`smtpd_tls_wrappermode`, the
//! `smtps`/`submissions` port 465), where the handshake comes first and the greeting is
//! sent inside TLS ([`ServerTlsHandshake::implicit`]).
//!
//! [`ServerSession::start_tls`] consumes the session once it asked for TLS and returns a
//! [`ServerTlsHandshake`], which has no input method: plaintext the client pipelined after
//! STARTTLS is dropped and counted there, and can never run inside the TLS session. The
//! handshake gives the session back, reset to before EHLO, or the lines to log on failure.
//!
//! Not here: the handshake itself (the shell runs rustls) and the judgement of the client
//! certificate (the shell hands it in with [`TlsFacts`]).

use super::events::LogLine;
use super::received::{printable, ClientName};
use super::session::{Connection, ServerSession};
use crate::facts::{CertVerdict, PeerInfo, TlsFacts};
use crate::settings::ServerSettings;
use crate::time::Instant;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

/// A server session between [`ServerOutput::StartTls`](super::ServerOutput::StartTls) and
/// the end of the TLS handshake.
///
/// It takes no input: plaintext can never reach the TLS session. The shell bounds the
/// handshake by [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct ServerTlsHandshake {
    conn: Connection,
    discarded: usize,
    deadline: Option<Instant>,
    /// Wrapper mode: no STARTTLS came before, and the greeting follows the handshake.
    implicit: bool,
}

impl ServerSession {
    /// Hands the connection to TLS, after [`ServerOutput::StartTls`](super::ServerOutput::StartTls)
    /// was polled.
    ///
    /// Any plaintext that followed the STARTTLS line, buffered or fed since, is dropped here
    /// and counted in [`ServerTlsHandshake::discarded`]. Returns the session unchanged if it
    /// did not ask for TLS or has outputs not yet polled.
    // Moved once per STARTTLS at most; boxing the session would cost every call instead.
    #[allow(clippy::result_large_err)]
    pub fn start_tls(self) -> Result<ServerTlsHandshake, ServerSession> {
        if !self.waits_for_tls() {
            return Err(self);
        }
        let (conn, discarded, deadline) = self.into_tls_parts();
        Ok(ServerTlsHandshake {
            conn,
            discarded,
            deadline,
            implicit: false,
        })
    }
}

impl ServerTlsHandshake {
    /// A connection just accepted on a listener in wrapper mode: TLS from the first byte.
    /// Nothing is sent before the handshake; once [`established`](Self::established), the
    /// session greets inside TLS, where STARTTLS is neither offered nor accepted. The
    /// handshake must end within `smtpd_timeout` of the accept, however the client paces
    /// its bytes. Returns the `connect from` line to log now.
    pub fn implicit(
        settings: Arc<ServerSettings>,
        peer: PeerInfo,
        now: Instant,
    ) -> (ServerTlsHandshake, LogLine) {
        let deadline = Some(now + settings.timeout);
        let conn = Connection::new(settings, peer);
        let connect = LogLine {
            level: log::Level::Info,
            text: format!("connect from {}", conn.client()),
        };
        let handshake = ServerTlsHandshake {
            conn,
            discarded: 0,
            deadline,
            implicit: true,
        };
        (handshake, connect)
    }

    /// True on a listener in wrapper mode (see [`implicit`](Self::implicit)).
    pub fn is_implicit(&self) -> bool {
        self.implicit
    }

    /// Plaintext octets the client sent after STARTTLS, dropped.
    pub fn discarded(&self) -> usize {
        self.discarded
    }

    /// The latest time the handshake may end (`smtpd_timeout` after the last input).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The handshake succeeded: the session resumes inside TLS, reset to before EHLO.
    pub fn established(self, tls: TlsFacts, now: Instant) -> ServerSession {
        let mut log = Vec::new();
        if self.discarded > 0 {
            log.push(LogLine {
                level: log::Level::Warn,
                text: format!(
                    "{}: discarded {} bytes of plaintext sent after STARTTLS",
                    self.conn.client(),
                    self.discarded
                ),
            });
        }
        if self.conn.settings.tls_loglevel >= 1 {
            log.push(LogLine {
                level: log::Level::Info,
                text: established_line(&self.conn.peer, &tls),
            });
        }
        let mut session = ServerSession::inside_tls(self.conn, tls, log, now);
        if self.implicit {
            session.greet();
        }
        session
    }

    /// The handshake failed; the shell closes the connection after logging these lines.
    pub fn failed(self, reason: &str) -> Vec<LogLine> {
        let client = self.conn.client().to_string();
        let summary = self.conn.stats.summary();
        let after = if self.implicit { "CONNECT" } else { "STARTTLS" };
        vec![
            LogLine {
                level: log::Level::Warn,
                text: format!("TLS handshake failed from {client}: {}", printable(reason)),
            },
            LogLine {
                level: log::Level::Info,
                text: format!("lost connection after {after} from {client}"),
            },
            LogLine {
                level: log::Level::Info,
                text: format!("disconnect from {client}{summary}"),
            },
        ]
    }
}

/// `Trusted TLS connection established from name[ip]: TLSv1.3 with cipher X (256/256 bits)`.
fn established_line(peer: &PeerInfo, tls: &TlsFacts) -> String {
    let kind = match tls.client_cert.verdict {
        CertVerdict::Absent => "Anonymous",
        CertVerdict::Untrusted(_) => "Untrusted",
        CertVerdict::Trusted => "Trusted",
    };
    let how = if tls.resumed { "reused" } else { "established" };
    format!(
        "{kind} TLS connection {how} from {}: {} with cipher {} ({}/{} bits)",
        ClientName(peer),
        tls.protocol,
        tls.cipher,
        tls.bits,
        tls.bits
    )
}
