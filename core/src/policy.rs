//! Relay restrictions, evaluated over the facts the session knows.
//!
//! Pure functions: the session hands in the client, its TLS facts and the recipient, and gets
//! back a [`Decision`] that says what to answer and which rule decided, so logs (and a later
//! `explain` command) can show why a recipient was accepted or refused.

use crate::address::{domain_eq, domain_within, Domain, Mailbox, Path};
use crate::alias::{self, AliasError};
use crate::ccert_senders::{self, Lookup};
use crate::facts::{PeerInfo, TlsFacts};
use crate::net::Cidr;
use crate::reply::Reply;
/// The rules evaluated here, re-exported beside the evaluation for callers' convenience.
pub use crate::restriction::Restriction;
use crate::settings::ServerSettings;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::net::IpAddr;

/// What the session knows when a recipient arrives.
#[derive(Clone, Copy, Debug)]
pub struct RcptFacts<'a> {
    /// The connected client.
    pub client: &'a PeerInfo,
    /// The TLS session, once STARTTLS has completed.
    pub tls: Option<&'a TlsFacts>,
    /// The recipient as given in `RCPT TO:`.
    pub recipient: &'a Path,
    /// The envelope sender of the transaction (`MAIL FROM:`).
    pub sender: &'a Path,
}

/// Which restriction list a rule came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListName {
    /// `smtpd_relay_restrictions`.
    Relay,
    /// `smtpd_recipient_restrictions`.
    Recipient,
}

impl fmt::Display for ListName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ListName::Relay => "smtpd_relay_restrictions",
            ListName::Recipient => "smtpd_recipient_restrictions",
        })
    }
}

/// Accept the recipient, or refuse it with this reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Accept.
    Permit,
    /// Refuse with this reply (4xx or 5xx).
    Reject(Reply),
}

/// What decided the outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecidedBy {
    /// `postmaster` at one of our domains (or unqualified), accepted before any list.
    Postmaster,
    /// A rule of a list; `index` counts from 0.
    Rule {
        /// The list the rule is in.
        list: ListName,
        /// Its position in that list.
        index: usize,
        /// The rule.
        rule: Restriction,
    },
    /// No rule of the recipient list permitted or rejected: end of list permits.
    EndOfLists,
}

impl fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecidedBy::Postmaster => f.write_str("postmaster is always accepted"),
            DecidedBy::Rule { list, index, rule } => {
                write!(f, "{rule} (item {} of {list})", index + 1)
            }
            DecidedBy::EndOfLists => f.write_str("end of restriction lists"),
        }
    }
}

/// The outcome of the restriction lists for one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Accept or refuse.
    pub verdict: Verdict,
    /// Why.
    pub decided_by: DecidedBy,
}

/// Evaluates the relay list, then the recipient list, for one recipient.
///
/// The first permit or reject ends a list and the end of a list permits; a reject from
/// either list wins. When both permit, the recipient list's deciding rule is reported.
pub fn check_recipient(settings: &ServerSettings, facts: &RcptFacts<'_>) -> Decision {
    if is_local_postmaster(settings, facts.recipient) {
        return Decision {
            verdict: Verdict::Permit,
            decided_by: DecidedBy::Postmaster,
        };
    }
    let relay = evaluate_list(
        settings,
        ListName::Relay,
        &settings.relay_restrictions,
        facts,
    );
    if matches!(relay.verdict, Verdict::Reject(_)) {
        return relay;
    }
    evaluate_list(
        settings,
        ListName::Recipient,
        &settings.recipient_restrictions,
        facts,
    )
}

/// Evaluates one list left to right.
pub fn evaluate_list(
    settings: &ServerSettings,
    list: ListName,
    rules: &[Restriction],
    facts: &RcptFacts<'_>,
) -> Decision {
    for (index, rule) in rules.iter().enumerate() {
        if let Some(verdict) = apply(settings, rule, facts) {
            return Decision {
                verdict,
                decided_by: DecidedBy::Rule {
                    list,
                    index,
                    rule: rule.clone(),
                },
            };
        }
    }
    Decision {
        verdict: Verdict::Permit,
        decided_by: DecidedBy::EndOfLists,
    }
}

/// One rule: `Some` when it decides, `None` to go on with the next.
fn apply(settings: &ServerSettings, rule: &Restriction, facts: &RcptFacts<'_>) -> Option<Verdict> {
    let cert = facts.tls.map(|t| &t.client_cert);
    let decides = match rule {
        Restriction::Permit => return Some(Verdict::Permit),
        Restriction::Reject => return Some(Verdict::Reject(access_denied(facts.recipient))),
        Restriction::PermitMynetworks => in_networks(&settings.mynetworks, facts.client.addr),
        Restriction::PermitTlsClientcerts => {
            cert.is_some_and(|c| c.verdict.is_present() && c.listed.is_some())
        }
        Restriction::PermitTlsAllClientcerts => cert.is_some_and(|c| c.verdict.is_trusted()),
        Restriction::RejectUnauthDestination | Restriction::DeferUnauthDestination => {
            if is_authorized_destination(settings, facts.recipient) {
                return None;
            }
            let code = if *rule == Restriction::RejectUnauthDestination {
                (554, "5.7.1")
            } else {
                (454, "4.7.1")
            };
            return Some(Verdict::Reject(relay_denied(code, facts.recipient)));
        }
        Restriction::RejectSenderCcertMismatch => {
            let (label, lookup) = sender_ownership(settings, facts)?;
            if lookup.is_owned() {
                return None;
            }
            return Some(Verdict::Reject(sender_not_owned(facts.sender, label)));
        }
    };
    decides.then_some(Verdict::Permit)
}

/// What `reject_sender_ccert_mismatch` looks at: the label of the client's listed
/// certificate and whether that label owns the envelope sender in `smtpd_sender_ccert_maps`.
///
/// `None` when the rule does not apply and the next rule decides: the client presented no
/// certificate listed in `relay_clientcerts` (such clients are left to the other rules), or
/// the sender is the null sender `<>` (a bounce is nobody's address; Postfix's
/// `reject_sender_login_mismatch` lets it pass too).
pub fn sender_ownership<'a>(
    settings: &ServerSettings,
    facts: &RcptFacts<'a>,
) -> Option<(&'a str, Lookup)> {
    let cert = &facts.tls?.client_cert;
    let listed = cert.listed.as_ref().filter(|_| cert.verdict.is_present())?;
    let sender = facts.sender.mailbox.as_ref()?;
    let lookup = ccert_senders::lookup(&settings.sender_ccert_maps, &listed.label, sender);
    Some((&listed.label, lookup))
}

/// The refusal of a sender the certificate's label does not own, in the shape of Postfix's
/// `reject_sender_login_mismatch` (`... not owned by user NAME`).
fn sender_not_owned(sender: &Path, label: &str) -> Reply {
    Reply::new(
        553,
        format!("5.7.1 <{sender}>: Sender address rejected: not owned by certificate {label}"),
    )
}

/// `<rcpt>: Relay access denied` with the given code.
fn relay_denied((code, status): (u16, &str), rcpt: &Path) -> Reply {
    Reply::new(code, format!("{status} <{rcpt}>: Relay access denied"))
}

/// The reply of a plain `reject`.
fn access_denied(rcpt: &Path) -> Reply {
    Reply::new(
        554,
        format!("5.7.1 <{rcpt}>: Recipient address rejected: Access denied"),
    )
}

/// True when the recipient is ours to deliver or relay: its domain is in `mydestination`
/// (exactly) or `relay_domains` (subdomains too), and the sender chose no route.
///
/// An unqualified address is taken as being at `myhostname`, as Postfix qualifies it.
pub fn is_authorized_destination(settings: &ServerSettings, rcpt: &Path) -> bool {
    let Some(mailbox) = &rcpt.mailbox else {
        return false;
    };
    if rcpt.has_sender_routing() {
        return false;
    }
    match &mailbox.domain {
        None => is_mydestination(settings, &settings.myhostname),
        Some(Domain::Name(name)) => {
            is_mydestination(settings, name)
                || settings
                    .relay_domains
                    .iter()
                    .any(|parent| domain_within(name, parent))
        }
        Some(literal @ Domain::Literal(_)) => {
            let text = format!("{literal}");
            is_mydestination(settings, &text)
        }
    }
}

/// `postmaster`, unqualified or at a `mydestination` domain.
fn is_local_postmaster(settings: &ServerSettings, rcpt: &Path) -> bool {
    let Some(mailbox) = &rcpt.mailbox else {
        return false;
    };
    if !mailbox.is_postmaster() || !rcpt.route.is_empty() {
        return false;
    }
    match &mailbox.domain {
        None => true,
        Some(d) => is_mydestination(settings, &format!("{d}")),
    }
}

/// Where an accepted recipient's mail goes: the envelope recipients to store for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The recipients to store, in order (the recipient itself when no alias applied).
    pub recipients: Vec<Path>,
    /// True when `virtual_alias_maps` rewrote the recipient.
    pub rewritten: bool,
}

/// Why [`resolve_recipient`] refused a recipient: the reply, and a detail for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    /// The reply to send.
    pub reply: Reply,
    /// What the log should add (the alias problem or the local address left over).
    pub detail: alloc::string::String,
}

/// Rewrites an accepted recipient through `virtual_alias_maps` and, with
/// `refuse_local_recipients` (the relay), refuses what would stay local.
///
/// A recipient at a `mydestination` domain, or unqualified, is accepted
/// only when the tables send it to addresses elsewhere: certrelay has no mailboxes, so
/// anything else would be accepted only to bounce (to a sender who may well be forged) or to loop. The
/// refusal is Postfix's for an unknown local user (`550 5.1.1`). A rewrite that leads back
/// to a local address is refused the same way; tables that loop, nest too deep or hold a
/// value that is not an address get `451 4.3.0` (the sender retries once they are fixed).
pub fn resolve_recipient(settings: &ServerSettings, rcpt: &Path) -> Result<Resolved, Unresolved> {
    let Some(mailbox) = &rcpt.mailbox else {
        return Ok(Resolved {
            recipients: vec![rcpt.clone()],
            rewritten: false,
        });
    };
    let is_local = |domain: &str| is_home(settings, domain);
    let expansion = alias::expand(
        &settings.virtual_alias_maps,
        mailbox,
        &settings.myhostname,
        &is_local,
    )
    .map_err(|e| lookup_failure(rcpt, &e))?;
    let stays_here = expansion
        .addresses
        .iter()
        .find(|m| is_local_mailbox(settings, m));
    if let Some(stays) = stays_here.filter(|_| settings.refuse_local_recipients) {
        let detail = if expansion.rewritten {
            format!("virtual_alias_maps sends it to local address <{stays}>, which has no mailbox")
        } else {
            format!("no virtual_alias_maps entry for <{stays}>, and there is no local delivery")
        };
        return Err(Unresolved {
            reply: unknown_local_user(rcpt),
            detail,
        });
    }
    if !expansion.rewritten {
        return Ok(Resolved {
            recipients: vec![rcpt.clone()],
            rewritten: false,
        });
    }
    Ok(Resolved {
        recipients: expansion
            .addresses
            .into_iter()
            .map(alias::to_path)
            .collect(),
        rewritten: true,
    })
}

/// True when `mailbox` is unqualified or at a `mydestination` domain.
fn is_local_mailbox(settings: &ServerSettings, mailbox: &Mailbox) -> bool {
    match &mailbox.domain {
        None => true,
        Some(d) => is_mydestination(settings, &format!("{d}")),
    }
}

/// Where a bare `user` alias key applies: a `mydestination` domain, or `myhostname`
/// (where unqualified addresses are taken to be, as Postfix takes them to `$myorigin`).
fn is_home(settings: &ServerSettings, domain: &str) -> bool {
    is_mydestination(settings, domain) || domain_eq(domain, &settings.myhostname)
}

/// Postfix's reply for a local user it does not know.
fn unknown_local_user(rcpt: &Path) -> Reply {
    Reply::new(
        550,
        format!(
            "5.1.1 <{rcpt}>: Recipient address rejected: User unknown in local recipient table"
        ),
    )
}

/// The temporary refusal for tables that cannot be followed.
fn lookup_failure(rcpt: &Path, e: &AliasError) -> Unresolved {
    Unresolved {
        reply: Reply::new(451, format!("4.3.0 <{rcpt}>: Temporary lookup failure")),
        detail: format!("{e}"),
    }
}

fn is_mydestination(settings: &ServerSettings, domain: &str) -> bool {
    settings.mydestination.iter().any(|d| domain_eq(d, domain))
}

/// True when `addr` is inside one of `networks`.
///
/// Kept behind one function so that it can switch to `Cidr::contains` once net.rs has it.
fn in_networks(networks: &[Cidr], addr: IpAddr) -> bool {
    networks.iter().any(|net| net.contains(addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::parse_path;
    use crate::facts::{CertVerdict, ClientCert};
    use crate::fingerprint::CertMatch;
    use crate::fingerprint::DigestKind;
    use alloc::string::{String, ToString};
    use alloc::vec;
    use alloc::vec::Vec;

    fn settings() -> ServerSettings {
        ServerSettings {
            myhostname: "relay.example".into(),
            mynetworks: vec![
                Cidr {
                    addr: "127.0.0.0".parse().unwrap(),
                    prefix: 8,
                },
                Cidr {
                    addr: "2001:db8::".parse().unwrap(),
                    prefix: 32,
                },
            ],
            mydestination: vec!["relay.example".into(), "localhost".into()],
            relay_domains: vec!["partner.example".into()],
            ..ServerSettings::default()
        }
    }

    fn tls(verdict: CertVerdict, listed: bool) -> TlsFacts {
        TlsFacts {
            protocol: "TLSv1.3".into(),
            cipher: "TLS_AES_256_GCM_SHA384".into(),
            bits: 256,
            resumed: false,
            client_cert: ClientCert {
                verdict,
                listed: listed.then(|| CertMatch {
                    label: "laptop".into(),
                    digest: DigestKind::Sha256,
                    public_key: false,
                }),
                subject_cn: None,
                issuer_cn: None,
            },
        }
    }

    fn peer(ip: &str) -> PeerInfo {
        PeerInfo {
            addr: ip.parse().unwrap(),
            name: "unknown".into(),
        }
    }

    /// Runs the default lists; returns the reply code (250 for permit) and the rule name.
    fn run(s: &ServerSettings, ip: &str, tls: Option<&TlsFacts>, rcpt: &str) -> (u16, String) {
        let client = peer(ip);
        let recipient = parse_path(rcpt).unwrap().0;
        let sender = parse_path("<me@laptop.test>").unwrap().0;
        let d = check_recipient(
            s,
            &RcptFacts {
                client: &client,
                tls,
                recipient: &recipient,
                sender: &sender,
            },
        );
        let code = match d.verdict {
            Verdict::Permit => 250,
            Verdict::Reject(r) => r.code,
        };
        let by = match d.decided_by {
            DecidedBy::Rule { rule, .. } => rule.name().to_string(),
            other => other.to_string(),
        };
        (code, by)
    }

    #[test]
    fn default_recipient_restrictions() {
        let s = settings();
        let listed = tls(CertVerdict::Untrusted("self-signed".into()), true);
        let trusted_unlisted = tls(CertVerdict::Trusted, false);
        let no_cert = tls(CertVerdict::Absent, false);
        let table: &[(&str, Option<&TlsFacts>, &str, u16, &str)] = &[
            (
                "127.0.0.1",
                None,
                "<x@far.example>",
                250,
                "permit_mynetworks",
            ),
            (
                "2001:db8::5",
                None,
                "<x@far.example>",
                250,
                "permit_mynetworks",
            ),
            (
                "::ffff:127.0.0.2",
                None,
                "<x@far.example>",
                250,
                "permit_mynetworks",
            ),
            (
                "192.0.2.9",
                None,
                "<x@far.example>",
                554,
                "reject_unauth_destination",
            ),
            // A listed certificate relays even when its chain is not trusted.
            (
                "192.0.2.9",
                Some(&listed),
                "<x@far.example>",
                250,
                "permit_tls_clientcerts",
            ),
            (
                "192.0.2.9",
                Some(&trusted_unlisted),
                "<x@far.example>",
                554,
                "reject_unauth_destination",
            ),
            (
                "192.0.2.9",
                Some(&no_cert),
                "<x@far.example>",
                554,
                "reject_unauth_destination",
            ),
            (
                "192.0.2.9",
                None,
                "<x@relay.example>",
                250,
                "end of restriction lists",
            ),
            (
                "192.0.2.9",
                None,
                "<x@RELAY.example.>",
                250,
                "end of restriction lists",
            ),
            (
                "192.0.2.9",
                None,
                "<x@sub.relay.example>",
                554,
                "reject_unauth_destination",
            ),
            (
                "192.0.2.9",
                None,
                "<x@partner.example>",
                250,
                "end of restriction lists",
            ),
            (
                "192.0.2.9",
                None,
                "<x@mx.partner.example>",
                250,
                "end of restriction lists",
            ),
            (
                "192.0.2.9",
                None,
                "<x@notpartner.example>",
                554,
                "reject_unauth_destination",
            ),
            (
                "192.0.2.9",
                None,
                "<x%far.example@relay.example>",
                554,
                "reject_unauth_destination",
            ),
            (
                "192.0.2.9",
                None,
                "<far.example!x@relay.example>",
                554,
                "reject_unauth_destination",
            ),
            (
                "192.0.2.9",
                None,
                "<\"x@far.example\"@relay.example>",
                554,
                "reject_unauth_destination",
            ),
            (
                "192.0.2.9",
                None,
                "<@relay.example:x@relay.example>",
                554,
                "reject_unauth_destination",
            ),
            ("192.0.2.9", None, "<x>", 250, "end of restriction lists"),
            (
                "192.0.2.9",
                None,
                "<x@[192.0.2.1]>",
                554,
                "reject_unauth_destination",
            ),
            (
                "192.0.2.9",
                None,
                "<postmaster>",
                250,
                "postmaster is always accepted",
            ),
            (
                "192.0.2.9",
                None,
                "<Postmaster@relay.example>",
                250,
                "postmaster is always accepted",
            ),
            (
                "192.0.2.9",
                None,
                "<postmaster@far.example>",
                554,
                "reject_unauth_destination",
            ),
        ];
        for &(ip, tls, rcpt, code, by) in table {
            assert_eq!(
                run(&s, ip, tls, rcpt),
                (code, by.to_string()),
                "{ip} {rcpt}"
            );
        }
    }

    #[test]
    fn relay_list_reject_wins_and_all_clientcerts() {
        let mut s = settings();
        s.relay_restrictions = vec![
            Restriction::PermitTlsAllClientcerts,
            Restriction::DeferUnauthDestination,
        ];
        s.recipient_restrictions = vec![Restriction::Permit];
        let trusted = tls(CertVerdict::Trusted, false);
        let untrusted = tls(CertVerdict::Untrusted("expired".into()), true);
        let table: &[(Option<&TlsFacts>, &str, u16, &str)] = &[
            (Some(&trusted), "<x@far.example>", 250, "permit"),
            (
                Some(&untrusted),
                "<x@far.example>",
                454,
                "defer_unauth_destination",
            ),
            (None, "<x@far.example>", 454, "defer_unauth_destination"),
            (None, "<x@partner.example>", 250, "permit"),
        ];
        for &(tls, rcpt, code, by) in table {
            assert_eq!(
                run(&s, "192.0.2.9", tls, rcpt),
                (code, by.to_string()),
                "{rcpt}"
            );
        }
        s.recipient_restrictions = vec![Restriction::Reject, Restriction::Permit];
        assert_eq!(
            run(&s, "192.0.2.9", Some(&trusted), "<x@far.example>").0,
            554
        );
        // postmaster is never refused.
        assert_eq!(run(&s, "192.0.2.9", None, "<postmaster>").0, 250);
    }

    #[test]
    fn reply_texts() {
        let s = settings();
        let client = peer("192.0.2.9");
        let reply = |rules: Vec<Restriction>| {
            let recipient = parse_path("<x@far.example>").unwrap().0;
            let sender = Path::null();
            let facts = RcptFacts {
                client: &client,
                tls: None,
                recipient: &recipient,
                sender: &sender,
            };
            match evaluate_list(&s, ListName::Recipient, &rules, &facts).verdict {
                Verdict::Reject(r) => r.to_string(),
                Verdict::Permit => "permit".to_string(),
            }
        };
        assert_eq!(
            reply(vec![Restriction::RejectUnauthDestination]),
            "554 5.7.1 <x@far.example>: Relay access denied"
        );
        assert_eq!(
            reply(vec![Restriction::DeferUnauthDestination]),
            "454 4.7.1 <x@far.example>: Relay access denied"
        );
        assert_eq!(
            reply(vec![Restriction::Reject]),
            "554 5.7.1 <x@far.example>: Recipient address rejected: Access denied"
        );
        assert_eq!(reply(vec![]), "permit");
    }

    /// A listed laptop with `label`, as a TLS session's facts.
    fn listed_as(label: &str, verdict: CertVerdict) -> TlsFacts {
        let mut t = tls(verdict, true);
        if let Some(m) = t.client_cert.listed.as_mut() {
            m.label = label.into();
        }
        t
    }

    #[test]
    fn sender_ccert_mismatch_refuses_senders_the_label_does_not_own() {
        let mut s = settings();
        s.relay_restrictions = vec![
            Restriction::PermitMynetworks,
            Restriction::RejectSenderCcertMismatch,
            Restriction::PermitTlsClientcerts,
            Restriction::RejectUnauthDestination,
        ];
        let (t, d) = crate::table::Table::parse(
            "senders",
            "alice alice@example.net, @alice.example\nnobody-here\n",
        );
        assert_eq!(d.len(), 1, "{d:?}");
        s.sender_ccert_maps = vec![t];
        let alice = listed_as("alice", CertVerdict::Untrusted("self-signed".into()));
        let carol = listed_as("carol", CertVerdict::Trusted);
        let unlisted = tls(CertVerdict::Trusted, false);
        let client_in_mynetworks = "127.0.0.1";
        let far = "192.0.2.9";
        let table: &[(&str, Option<&TlsFacts>, &str, &str)] = &[
            (far, Some(&alice), "<alice@example.net>", "250 permit_tls_clientcerts"),
            (far, Some(&alice), "<Alice@EXAMPLE.net>", "250 permit_tls_clientcerts"),
            (far, Some(&alice), "<x@alice.example>", "250 permit_tls_clientcerts"),
            // Bounces are nobody's: the null sender passes on to the next rule.
            (far, Some(&alice), "<>", "250 permit_tls_clientcerts"),
            (
                far,
                Some(&alice),
                "<bob@example.net>",
                "553 5.7.1 <bob@example.net>: Sender address rejected: not owned by certificate alice",
            ),
            (
                far,
                Some(&alice),
                "<alice+tag@example.net>",
                "553 5.7.1 <alice+tag@example.net>: Sender address rejected: not owned by certificate alice",
            ),
            (
                far,
                Some(&alice),
                "<@relay.example:bob@example.net>",
                "553 5.7.1 <bob@example.net>: Sender address rejected: not owned by certificate alice",
            ),
            // A label with no entry owns nothing.
            (
                far,
                Some(&carol),
                "<alice@example.net>",
                "553 5.7.1 <alice@example.net>: Sender address rejected: not owned by certificate carol",
            ),
            // Clients without a listed certificate are left to the other rules.
            (
                far,
                Some(&unlisted),
                "<bob@example.net>",
                "554 5.7.1 <x@far.example>: Relay access denied",
            ),
            (far, None, "<bob@example.net>", "554 5.7.1 <x@far.example>: Relay access denied"),
            // Rules before it still decide first.
            (client_in_mynetworks, Some(&alice), "<bob@example.net>", "250 permit_mynetworks"),
        ];
        for &(ip, tls, sender, want) in table {
            let client = peer(ip);
            let recipient = parse_path("<x@far.example>").unwrap().0;
            let sender_path = parse_path(sender).unwrap().0;
            let d = check_recipient(
                &s,
                &RcptFacts {
                    client: &client,
                    tls,
                    recipient: &recipient,
                    sender: &sender_path,
                },
            );
            let got = match (d.verdict, d.decided_by) {
                (Verdict::Permit, DecidedBy::Rule { rule, .. }) => format!("250 {rule}"),
                (Verdict::Reject(r), DecidedBy::Rule { rule, list, index }) => {
                    if r.code == 553 {
                        assert_eq!(
                            (rule, list, index),
                            (Restriction::RejectSenderCcertMismatch, ListName::Relay, 1)
                        );
                    }
                    r.to_string()
                }
                other => format!("{other:?}"),
            };
            assert_eq!(got, want, "{ip} {sender}");
        }
        // An absent certificate never matches, whatever `listed` holds.
        let absent = listed_as("alice", CertVerdict::Absent);
        let client = peer(far);
        let rcpt = parse_path("<x@partner.example>").unwrap().0;
        let bob = parse_path("<bob@example.net>").unwrap().0;
        let facts = RcptFacts {
            client: &client,
            tls: Some(&absent),
            recipient: &rcpt,
            sender: &bob,
        };
        assert_eq!(sender_ownership(&s, &facts), None);
        assert_eq!(check_recipient(&s, &facts).verdict, Verdict::Permit);
        // The same rule in the recipient list refuses the same way.
        s.relay_restrictions = Vec::new();
        s.recipient_restrictions = vec![
            Restriction::RejectSenderCcertMismatch,
            Restriction::PermitTlsClientcerts,
            Restriction::RejectUnauthDestination,
        ];
        let facts = RcptFacts {
            tls: Some(&alice),
            ..facts
        };
        let d = check_recipient(&s, &facts);
        assert_eq!(d.verdict, Verdict::Reject(sender_not_owned(&bob, "alice")));
        assert_eq!(
            d.decided_by.to_string(),
            "reject_sender_ccert_mismatch (item 1 of smtpd_recipient_restrictions)"
        );
    }

    #[test]
    fn local_recipients_need_an_alias_that_leaves() {
        let mut s = settings();
        let (t, _) = crate::table::Table::parse(
            "va",
            "root admin@example.org\n@localhost root@relay.example\nself@relay.example self@relay.example\n",
        );
        s.virtual_alias_maps = vec![t];
        s.refuse_local_recipients = true;
        let resolve = |rcpt: &str| {
            let path = parse_path(rcpt).unwrap().0;
            match resolve_recipient(&s, &path) {
                Ok(r) => {
                    let list: Vec<String> = r.recipients.iter().map(|p| p.to_string()).collect();
                    format!("{} {}", r.rewritten, list.join(","))
                }
                Err(u) => u.reply.to_string(),
            }
        };
        let unknown = |r: &str| {
            format!("550 5.1.1 <{r}>: Recipient address rejected: User unknown in local recipient table")
        };
        let table: &[(&str, String)] = &[
            ("<root@relay.example>", "true admin@example.org".into()),
            ("<root>", "true admin@example.org".into()),
            // The catch-all of localhost leads to root, which leads out.
            ("<anyone@localhost>", "true admin@example.org".into()),
            ("<x@relay.example>", unknown("x@relay.example")),
            ("<x>", unknown("x")),
            ("<postmaster>", unknown("postmaster")),
            // An address kept as itself stays local: refused, not accepted and bounced.
            ("<self@relay.example>", unknown("self@relay.example")),
            // Mail for other domains passes untouched.
            ("<x@far.example>", "false x@far.example".into()),
            ("<x@partner.example>", "false x@partner.example".into()),
            ("<>", "false ".into()),
        ];
        for (rcpt, want) in table {
            assert_eq!(&resolve(rcpt), want, "{rcpt}");
        }
        // The laptop's listener sends local mail on, aliased or not.
        s.refuse_local_recipients = false;
        let path = parse_path("<x@relay.example>").unwrap().0;
        assert_eq!(
            resolve_recipient(&s, &path).map(|r| r.recipients),
            Ok(vec![path.clone()])
        );
        let root = parse_path("<root>").unwrap().0;
        assert!(resolve_recipient(&s, &root).is_ok_and(|r| r.rewritten));
    }

    #[test]
    fn networks() {
        let net = |a: &str, p| Cidr {
            addr: a.parse().unwrap(),
            prefix: p,
        };
        let table: &[(Cidr, &str, bool)] = &[
            (net("192.0.2.0", 24), "192.0.2.255", true),
            (net("192.0.2.0", 24), "192.0.3.0", false),
            (net("192.0.2.7", 32), "192.0.2.7", true),
            (net("0.0.0.0", 0), "203.0.113.1", true),
            (net("0.0.0.0", 0), "2001:db8::1", false),
            (net("2001:db8::", 32), "2001:db8:ffff::1", true),
            (net("2001:db8::", 32), "2001:db9::1", false),
            (net("10.0.0.0", 8), "::ffff:10.1.2.3", true),
        ];
        for (n, ip, want) in table {
            assert_eq!(in_networks(&[*n], ip.parse().unwrap()), *want, "{n:?} {ip}");
        }
    }

    #[test]
    fn names_round_trip() {
        for r in Restriction::ALL {
            assert_eq!(Restriction::from_name(r.name()), Some(r.clone()));
            assert_eq!(
                Restriction::from_name(&r.name().to_ascii_uppercase()),
                Some(r)
            );
        }
        assert_eq!(Restriction::from_name("reject_unknown_sender"), None);
    }
}
