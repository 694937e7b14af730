//! Relay restrictions, evaluated over the facts the session knows.

/// One element of `smtpd_relay_restrictions` / `smtpd_recipient_restrictions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restriction {
    /// `permit_mynetworks`: the client address is in `mynetworks`.
    PermitMynetworks,
    /// `permit_tls_clientcerts`: a presented certificate's digest is in `relay_clientcerts`.
    PermitTlsClientcerts,
    /// `permit_tls_all_clientcerts`: any trusted client certificate.
    PermitTlsAllClientcerts,
    /// `reject_unauth_destination`: reject (554) a recipient we are not responsible for.
    RejectUnauthDestination,
    /// `defer_unauth_destination`: as above, with a temporary 454.
    DeferUnauthDestination,
    /// `permit`.
    Permit,
    /// `reject`.
    Reject,
}
