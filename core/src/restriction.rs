//! The rules a restriction list (`smtpd_relay_restrictions`, `smtpd_recipient_restrictions`)
//! is made of, with their `main.cf` names.
//!
//! Plain vocabulary shared by the typed settings that hold the lists and the policy that
//! evaluates them; what a rule decides for a recipient is in [`crate::policy`], not here.

use core::fmt;

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
    /// `reject_sender_ccert_mismatch`: a client whose certificate is listed in
    /// `relay_clientcerts` must send as a sender its label owns in `smtpd_sender_ccert_maps`
    /// (553 otherwise). It never permits, and says nothing about clients without a listed
    /// certificate, so it does not stop an open relay.
    RejectSenderCcertMismatch,
}

impl Restriction {
    /// The name as written in `main.cf`.
    pub const fn name(&self) -> &'static str {
        match self {
            Restriction::PermitMynetworks => "permit_mynetworks",
            Restriction::PermitTlsClientcerts => "permit_tls_clientcerts",
            Restriction::PermitTlsAllClientcerts => "permit_tls_all_clientcerts",
            Restriction::RejectUnauthDestination => "reject_unauth_destination",
            Restriction::DeferUnauthDestination => "defer_unauth_destination",
            Restriction::Permit => "permit",
            Restriction::Reject => "reject",
            Restriction::RejectSenderCcertMismatch => "reject_sender_ccert_mismatch",
        }
    }

    /// The restriction a `main.cf` name stands for (case-insensitive), if it is one we know.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(name))
    }

    /// Every restriction certrelay knows, in the order `check` lists them.
    pub const ALL: [Restriction; 8] = [
        Restriction::PermitMynetworks,
        Restriction::PermitTlsClientcerts,
        Restriction::PermitTlsAllClientcerts,
        Restriction::RejectUnauthDestination,
        Restriction::DeferUnauthDestination,
        Restriction::Permit,
        Restriction::Reject,
        Restriction::RejectSenderCcertMismatch,
    ];

    /// True for the rules that can refuse any recipient we are not responsible for; a list
    /// without one relays for anybody. (`reject_sender_ccert_mismatch` refuses only
    /// clients with a listed certificate, so it is not one.)
    pub const fn can_reject(&self) -> bool {
        matches!(
            self,
            Restriction::RejectUnauthDestination
                | Restriction::DeferUnauthDestination
                | Restriction::Reject
        )
    }
}

impl fmt::Display for Restriction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
