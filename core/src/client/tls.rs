//! The STARTTLS hand-over: a session in the middle of a TLS handshake takes no input.
//!
//! [`ClientSession::start_tls`] consumes the session once the server said 220 to STARTTLS
//! and returns a [`ClientTlsHandshake`], which has no input method: whatever the server sent
//! in plaintext after its 220 is dropped and counted there, and can never be read as a
//! reply inside TLS. The handshake gives the session back, established or failed.
//!
//! A connection in wrapper mode (`smtp_tls_wrappermode`, port 465) starts as a handshake
//! ([`ClientTlsHandshake::implicit`]) and never falls back to plaintext.
//!
//! Not here: the handshake itself (the shell runs rustls) and the check of the server's
//! certificate chain and name (the shell hands its verdict in as [`ServerCertVerdict`]).

use super::events::Closing;
use super::outcome::{DeliveryStatus, Outcome, ServerPeer};
use super::session::ClientSession;
use crate::settings::ClientSettings;
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
    /// Wrapper mode: the greeting follows the handshake, and a failure never retries in
    /// plaintext.
    implicit: bool,
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
            implicit: false,
        })
    }
}

impl ClientTlsHandshake {
    /// A connection just opened to a server in wrapper mode (port 465, `submissions`):
    /// TLS from the first byte, then the greeting and EHLO inside it. `settings.tls_level`
    /// is the level for this next hop; the shell never gives less than `encrypt` here, and
    /// whatever the level a failed handshake ends the connection without a plaintext retry.
    pub fn implicit(settings: ClientSettings, peer: ServerPeer, now: Instant) -> Self {
        let mut session = ClientSession::new(settings, peer, now);
        session.wait_for_implicit_tls(now);
        let (session, _, deadline) = session.into_tls_parts();
        ClientTlsHandshake {
            session,
            discarded: 0,
            deadline,
            implicit: true,
        }
    }

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
        } else if !self.implicit {
            session.restart_with_ehlo();
        }
        session.rearm(now);
        session
    }

    /// The handshake failed: the connection is unusable, and the session closes with
    /// `4.7.5 Cannot start TLS: handshake failure`, as [`Closing::RetryWithoutTls`] at
    /// level `may` after STARTTLS, else (and always in wrapper mode) as [`Closing::Failed`].
    pub fn failed(self) -> ClientSession {
        let mut session = self.session;
        session.leave_tls_wait();
        let reason = "Cannot start TLS: handshake failure";
        let outcome = Outcome::local(DeliveryStatus::Deferred, "4.7.5", reason);
        if session.settings.tls_level == TlsLevel::May && !self.implicit {
            session.close_with(Closing::RetryWithoutTls(outcome));
        } else {
            session.fail(outcome, false);
        }
        session
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientOutput;
    use alloc::string::String;
    use alloc::vec::Vec;
    use core::net::{IpAddr, Ipv4Addr};
    use core::time::Duration;

    fn implicit(level: TlsLevel) -> ClientTlsHandshake {
        let settings = ClientSettings {
            tls_level: level,
            helo_name: "laptop.example".into(),
            ..ClientSettings::default()
        };
        let peer = ServerPeer {
            name: "relay.example".into(),
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        };
        ClientTlsHandshake::implicit(settings, peer, Instant(0))
    }

    fn outputs(session: &mut ClientSession) -> Vec<ClientOutput> {
        core::iter::from_fn(|| session.poll_output()).collect()
    }

    fn sent(outputs: &[ClientOutput]) -> String {
        outputs
            .iter()
            .filter_map(|o| match o {
                ClientOutput::Transmit(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn wrapper_mode_waits_for_the_greeting_inside_tls_and_sends_no_starttls() {
        let hs = implicit(TlsLevel::Encrypt);
        assert_eq!(
            hs.poll_timeout(),
            Some(Instant(0) + Duration::from_secs(300))
        );
        let mut s = hs.established(ServerCertVerdict::NotVerified, Instant(5));
        assert!(s.is_tls());
        assert!(outputs(&mut s).is_empty(), "nothing before the greeting");
        s.handle_input(b"220 relay.example ESMTP\r\n", Instant(6));
        assert_eq!(sent(&outputs(&mut s)), "EHLO laptop.example\r\n");
        // The server offers STARTTLS (it should not): the client does not take it up.
        s.handle_input(b"250-relay.example\r\n250 STARTTLS\r\n", Instant(7));
        assert_eq!(outputs(&mut s), [ClientOutput::Ready]);
    }

    #[test]
    fn wrapper_mode_verifies_at_verify_and_never_falls_back_to_plaintext() {
        let mut s =
            implicit(TlsLevel::Verify).established(ServerCertVerdict::NotVerified, Instant(0));
        s.handle_input(b"220 relay.example ESMTP\r\n", Instant(1));
        let out = outputs(&mut s);
        assert_eq!(sent(&out), "QUIT\r\n");
        s.handle_input(b"221 bye\r\n", Instant(2));
        match outputs(&mut s).last() {
            Some(ClientOutput::Close(Closing::Failed(o))) => {
                assert_eq!(o.dsn, "4.7.5");
                assert!(o.reason.contains("not verified"), "{o:?}");
            }
            other => panic!("{other:?}"),
        }
        // At may, a STARTTLS failure retries in plaintext; a wrapper-mode one does not.
        let mut s = implicit(TlsLevel::May).failed();
        match outputs(&mut s).last() {
            Some(ClientOutput::Close(Closing::Failed(o))) => assert_eq!(o.dsn, "4.7.5"),
            other => panic!("{other:?}"),
        }
    }
}
