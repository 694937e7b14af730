//! The STARTTLS hand-over: a session in the middle of a handshake takes no input.

use super::outcome::{DeliveryStatus, Outcome};
use super::session::{ClientSession, Closing, ServerCertVerdict};
use crate::tls_policy::TlsLevel;
use crate::Instant;

/// A client session between the server's 220 to STARTTLS and the end of the TLS handshake.
///
/// It has no input method: nothing the server sent in plaintext after its 220 can reach the
/// dialogue that continues inside TLS. The shell bounds the handshake with its own timer and
/// calls [`failed`](Self::failed) when it runs out.
#[derive(Debug)]
pub struct ClientTlsHandshake {
    session: ClientSession,
    requested: bool,
}

impl ClientSession {
    /// Hands the connection to TLS, after [`ClientOutput::StartTls`](super::ClientOutput::StartTls).
    ///
    /// Any server bytes received after the 220, buffered or fed later, are dropped here and
    /// counted in [`ClientTlsHandshake::discarded`]. Called at any other time, the session
    /// that comes out of the handshake fails the connection rather than go on in a state it
    /// did not choose.
    pub fn start_tls(mut self) -> ClientTlsHandshake {
        self.discarded += self.parser.pending();
        self.parser = Default::default();
        let requested = self.wants_tls();
        ClientTlsHandshake {
            session: self,
            requested,
        }
    }
}

impl ClientTlsHandshake {
    /// Octets the server sent after its 220 and before the handshake, never read.
    pub fn discarded(&self) -> usize {
        self.session.discarded
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
        if !self.requested {
            let reason = "TLS was started although the server did not agree to STARTTLS";
            session.fail(
                Outcome::local(DeliveryStatus::Deferred, "4.7.5", reason),
                false,
            );
        } else if must_verify && verdict != ServerCertVerdict::Verified {
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
        if self.requested && session.settings.tls_level == TlsLevel::May {
            session.close_with(Closing::RetryWithoutTls(outcome));
        } else {
            session.fail(outcome, false);
        }
        session
    }
}
