//! Where a session hands its `XCERTRELAY` requests: the relay's enrollment service, behind a
//! trait so that the shared server code never calls role code.
//!
//! Not here: checking codes, signing, the tables (the relay's binary implements
//! [`Enroller`]). A listener without one (the laptop's) answers every request as unavailable,
//! though its sessions never offer the extension.

use certrelay_core::enroll::{EnrollAnswer, EnrollRequest};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

/// The answer to a request, computed away from the session's task when it must wait.
pub type AnswerFuture = Pin<Box<dyn Future<Output = EnrollAnswer> + Send>>;

/// Answers `XCERTRELAY` requests and hears of the client certificates that connect.
pub trait Enroller: Send + Sync {
    /// Checks and answers `request` from `client`, whose TLS client certificate (the end
    /// certificate, DER) is `client_cert` when it presented one.
    fn answer(
        &self,
        request: EnrollRequest,
        client: IpAddr,
        client_cert: Option<Vec<u8>>,
    ) -> AnswerFuture;

    /// A client certificate listed for relaying was presented (DER): a renewed one's first
    /// use ends its predecessor's grace.
    fn presented(&self, cert_der: &[u8]);
}
