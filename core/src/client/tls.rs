//! The STARTTLS hand-over: a session in the middle of a TLS handshake takes no input.
//!
//! [`ClientSession::start_tls`] consumes the session once the server said 220 to STARTTLS
//! and returns a [`ClientTlsHandshake`], which has no input method: whatever the server sent
//! in plaintext after its 220 is dropped and counted there, and can never be read as a
//! reply inside TLS. The handshake gives the session back, established or failed.
//!
//! Not here: the handshake itself (the shell runs rustls) and the check of the server's
//! certificate chain and name (the shell hands its verdict in as [`ServerCertVerdict`]).

use super::events::Closing;
use super::outcome::{DeliveryStatus, Outcome};
use super::session::ClientSession;
use crate::tls_policy::TlsLevel;
use crate::Instant;

/// The shell's judgement of the server certificate after a TLS handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerCertVerdict {
    /// It chains to a trusted CA and names the server host.
    Verified,
    /// It does not chain, or does not name the host.
    NotVerified,
}

/// A client session between [`ClientOutput::StartTls`](super::ClientOutput::StartTls) and
/// the end of the TLS handshake.
///
/// It takes no input: nothing the server sent in plaintext after its 220 can reach the
/// dialogue that continues inside TLS. The shell bounds the handshake by
/// [`poll_timeout`](Self::poll_timeout) and calls [`failed`](Self::failed) when it passes.
#[derive(Debug)]
pub struct ClientTlsHandshake {
    session: ClientSession,
    discarded: usize,
    deadline: Option<Instant>,
}

impl ClientSession {
    /// Hands the connection to TLS, after [`ClientOutput::StartTls`](super::ClientOutput::StartTls)
    /// was polled.
    ///
    /// Any server bytes received after the 220, buffered or fed since, are dropped here and
    /// counted in [`ClientTlsHandshake::discarded`]. Returns the session unchanged if the
    /// server did not agree to STARTTLS or outputs are not yet polled.
    // Moved once per STARTTLS at most; boxing the session would cost every call instead.
    #[allow(clippy::result_large_err)]
    pub fn start_tls(self) -> Result<ClientTlsHandshake, ClientSession> {
        if !self.waits_for_tls() {
            return Err(self);
        }
        let (session, discarded, deadline) = self.into_tls_parts();
        Ok(ClientTlsHandshake {
            session,
            discarded,
            deadline,
        })
    }
}

impl ClientTlsHandshake {
    /// Octets the server sent after its 220 and before the handshake, dropped.
    pub fn discarded(&self) -> usize {
        self.discarded
    }

    /// The latest time the handshake may end (the command timeout after the server's 220).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The server name to verify the certificate against (and to send in SNI).
    pub fn server_name(&self) -> &str {
        &self.session.peer.name
    }

    /// The TLS level of this delivery: from `Verify` up, the shell must check the chain
    /// and the name and report it in [`established`](Self::established).
    pub fn tls_level(&self) -> TlsLevel {
        self.session.settings.tls_level
    }

    /// The handshake succeeded. At `verify` and `secure` an unverified certificate ends the
    /// connection (`4.7.5 Server certificate not verified`, after QUIT); otherwise the
    /// session sends EHLO again, inside TLS.
    pub fn established(self, verdict: ServerCertVerdict, now: Instant) -> ClientSession {
        let mut session = self.session;
        session.leave_tls_wait();
        session.tls_active = true;
        let must_verify = session.settings.tls_level >= TlsLevel::Verify;
        if must_verify && verdict != ServerCertVerdict::Verified {
            let reason = "Server certificate not verified";
            session.fail(
                Outcome::local(DeliveryStatus::Deferred, "4.7.5", reason),
                true,
            );
        } else {
            session.restart_with_ehlo();
        }
        session.rearm(now);
        session
    }

    /// The handshake failed: the connection is unusable, and the session closes with
    /// `4.7.5 Cannot start TLS: handshake failure`, as [`Closing::RetryWithoutTls`] at
    /// level `may`, else as [`Closing::Failed`].
    pub fn failed(self) -> ClientSession {
        let mut session = self.session;
        session.leave_tls_wait();
        let reason = "Cannot start TLS: handshake failure";
        let outcome = Outcome::local(DeliveryStatus::Deferred, "4.7.5", reason);
        if session.settings.tls_level == TlsLevel::May {
            session.close_with(Closing::RetryWithoutTls(outcome));
        } else {
            session.fail(outcome, false);
        }
        session
    }
}
