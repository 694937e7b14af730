//! TLS security levels and the per-site policy (`smtp_tls_per_site`).
//!
//! The per-site decision is returned with the steps that led to it, so that an `explain`
//! command can show a person why a next hop gets the level it gets.

use crate::cert::CertName;
use crate::table::Table;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// The client's TLS security level for one delivery, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsLevel {
    /// Never use TLS.
    None,
    /// Use TLS when offered; fall back to plaintext otherwise.
    May,
    /// TLS required; the server certificate is not checked.
    Encrypt,
    /// TLS required; the server certificate must chain to a trusted CA and name the host.
    Verify,
    /// As `Verify`; also never trusts names learned from DNS MX records.
    Secure,
}

impl TlsLevel {
    /// Reads `none`, `may`, `encrypt`, `verify` or `secure` (any case).
    pub fn parse(text: &str) -> Result<TlsLevel, TlsPolicyError> {
        let level = match text.trim().to_ascii_lowercase().as_str() {
            "none" => TlsLevel::None,
            "may" => TlsLevel::May,
            "encrypt" => TlsLevel::Encrypt,
            "verify" => TlsLevel::Verify,
            "secure" => TlsLevel::Secure,
            "fingerprint" | "dane" | "dane-only" => {
                return Err(TlsPolicyError::UnsupportedLevel(text.trim().into()))
            }
            _ => return Err(TlsPolicyError::BadLevel(text.trim().into())),
        };
        Ok(level)
    }

    /// The level's name as written in `main.cf`.
    pub const fn as_str(self) -> &'static str {
        match self {
            TlsLevel::None => "none",
            TlsLevel::May => "may",
            TlsLevel::Encrypt => "encrypt",
            TlsLevel::Verify => "verify",
            TlsLevel::Secure => "secure",
        }
    }
}

impl fmt::Display for TlsLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of `smtp_tls_secure_cert_match` or `smtp_tls_verify_cert_match`: which names
/// the server certificate may present.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MatchStrategy {
    /// `nexthop`: the next-hop domain itself.
    Nexthop,
    /// `dot-nexthop`: any host below the next-hop domain.
    DotNexthop,
    /// `hostname`: the server's host name.
    Hostname,
    /// `dot-hostname`: any host below the server's host name.
    DotHostname,
    /// Any other word: that host name (lower case); with a leading `.`, any host below it.
    Literal(String),
}

/// `smtp_tls_secure_cert_match`'s default.
pub const SECURE_MATCH_DEFAULT: &str = "nexthop, dot-nexthop";
/// `smtp_tls_verify_cert_match`'s default.
pub const VERIFY_MATCH_DEFAULT: &str = "hostname";

/// Reads a match list: entries separated by commas, colons or whitespace, case-insensitive.
/// An empty list or an entry that is not a strategy nor a host name is an error.
pub fn parse_cert_match(text: &str) -> Result<Vec<MatchStrategy>, TlsPolicyError> {
    let entries = text
        .split(|c: char| c == ',' || c == ':' || c.is_ascii_whitespace())
        .filter(|e| !e.is_empty());
    let mut out = Vec::new();
    for entry in entries {
        let lower = entry.to_ascii_lowercase();
        let strategy = match lower.as_str() {
            "nexthop" => MatchStrategy::Nexthop,
            "dot-nexthop" => MatchStrategy::DotNexthop,
            "hostname" => MatchStrategy::Hostname,
            "dot-hostname" => MatchStrategy::DotHostname,
            name if is_match_name(name) => {
                MatchStrategy::Literal(String::from(name.strip_suffix('.').unwrap_or(name)))
            }
            _ => return Err(TlsPolicyError::BadCertMatch(entry.into())),
        };
        if !out.contains(&strategy) {
            out.push(strategy);
        }
    }
    if out.is_empty() {
        return Err(TlsPolicyError::BadCertMatch(String::new()));
    }
    Ok(out)
}

/// A host name as a literal match entry: letters, digits, `-` and `.`, no empty label (a
/// leading dot asks for hosts below the name).
fn is_match_name(name: &str) -> bool {
    let bare = name.strip_prefix('.').unwrap_or(name);
    let bare = bare.strip_suffix('.').unwrap_or(bare);
    !bare.is_empty()
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// What the certificate names are decided from, for one server of one next hop.
#[derive(Clone, Copy, Debug)]
pub struct CertNameQuery<'a> {
    /// The TLS level of the delivery.
    pub level: TlsLevel,
    /// The next-hop domain: the recipient domain, or the relayhost's host without brackets
    /// or port.
    pub nexthop: &'a str,
    /// The server's host name (or its address text).
    pub host: &'a str,
    /// True when `host` was learned from an MX record rather than written in the next hop.
    pub host_from_mx: bool,
    /// `smtp_tls_secure_cert_match`.
    pub secure_match: &'a [MatchStrategy],
    /// `smtp_tls_verify_cert_match`.
    pub verify_match: &'a [MatchStrategy],
}

/// The names the server certificate may present; empty below `verify` (no name is checked).
///
/// At `secure` no name learned from an MX record is ever trusted: `hostname` and
/// `dot-hostname` stand for the server's host only when it was not found through MX (a
/// bracketed relayhost, or a domain without MX records, where host and next hop are one);
/// for an MX host they add nothing. At `verify` they name the host as found, MX included.
pub fn cert_names(query: &CertNameQuery<'_>) -> Vec<CertName> {
    let strategies = match query.level {
        TlsLevel::Secure => query.secure_match,
        TlsLevel::Verify => query.verify_match,
        _ => return Vec::new(),
    };
    let trust_host = query.level == TlsLevel::Verify || !query.host_from_mx;
    let domain = |name: &str| String::from(name.strip_suffix('.').unwrap_or(name));
    let mut names = Vec::new();
    for strategy in strategies {
        let name = match strategy {
            MatchStrategy::Nexthop => CertName::Host(domain(query.nexthop)),
            MatchStrategy::DotNexthop => CertName::Subdomain(domain(query.nexthop)),
            MatchStrategy::Hostname if trust_host => CertName::Host(domain(query.host)),
            MatchStrategy::DotHostname if trust_host => CertName::Subdomain(domain(query.host)),
            MatchStrategy::Hostname | MatchStrategy::DotHostname => continue,
            MatchStrategy::Literal(name) => match name.strip_prefix('.') {
                Some(below) => CertName::Subdomain(domain(below)),
                None => CertName::Host(domain(name)),
            },
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The client parameters that decide the global level, already read as text and booleans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalTlsParams<'a> {
    /// `smtp_tls_security_level`; empty when not set.
    pub security_level: &'a str,
    /// `smtp_enforce_tls`.
    pub enforce_tls: bool,
    /// `smtp_tls_enforce_peername` (default yes).
    pub enforce_peername: bool,
    /// `smtp_use_tls`.
    pub use_tls: bool,
}

/// The global client level: the explicit level when set, else the older boolean switches.
pub fn global_level(params: &GlobalTlsParams<'_>) -> Result<TlsLevel, TlsPolicyError> {
    if !params.security_level.trim().is_empty() {
        return TlsLevel::parse(params.security_level);
    }
    Ok(
        match (params.enforce_tls, params.enforce_peername, params.use_tls) {
            (true, true, _) => TlsLevel::Verify,
            (true, false, _) => TlsLevel::Encrypt,
            (false, _, true) => TlsLevel::May,
            (false, _, false) => TlsLevel::None,
        },
    )
}

/// A value in `smtp_tls_per_site`, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PerSitePolicy {
    /// `NONE`: no TLS.
    None,
    /// `MAY`: TLS when offered.
    May,
    /// `MUST_NOPEERMATCH`: TLS required, certificate not checked (encrypt).
    MustNopeermatch,
    /// `MUST`: TLS required and the certificate verified (verify).
    Must,
}

impl PerSitePolicy {
    /// Reads `NONE`, `MAY`, `MUST_NOPEERMATCH` or `MUST` (any case); `None` otherwise.
    pub fn parse(text: &str) -> Option<PerSitePolicy> {
        match text.trim().to_ascii_uppercase().as_str() {
            "NONE" => Some(PerSitePolicy::None),
            "MAY" => Some(PerSitePolicy::May),
            "MUST_NOPEERMATCH" => Some(PerSitePolicy::MustNopeermatch),
            "MUST" => Some(PerSitePolicy::Must),
            _ => None,
        }
    }

    /// The level this value stands for.
    pub const fn level(self) -> TlsLevel {
        match self {
            PerSitePolicy::None => TlsLevel::None,
            PerSitePolicy::May => TlsLevel::May,
            PerSitePolicy::MustNopeermatch => TlsLevel::Encrypt,
            PerSitePolicy::Must => TlsLevel::Verify,
        }
    }

    /// The value's name as written in the table.
    pub const fn as_str(self) -> &'static str {
        match self {
            PerSitePolicy::None => "NONE",
            PerSitePolicy::May => "MAY",
            PerSitePolicy::MustNopeermatch => "MUST_NOPEERMATCH",
            PerSitePolicy::Must => "MUST",
        }
    }
}

impl fmt::Display for PerSitePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Folds one lookup result into the result so far (`None` = nothing found yet).
///
/// `NONE` wins over nothing and over `MAY`; `MAY` only fills an empty result; the `MUST`
/// values only ever raise the result.
pub fn combine(so_far: Option<PerSitePolicy>, found: PerSitePolicy) -> Option<PerSitePolicy> {
    match found {
        PerSitePolicy::None if so_far <= Some(PerSitePolicy::May) => Some(PerSitePolicy::None),
        PerSitePolicy::None => so_far,
        PerSitePolicy::May => so_far.or(Some(PerSitePolicy::May)),
        raise => so_far.max(Some(raise)),
    }
}

/// The final level from the global level and the combined per-site result.
///
/// A site `MAY` never weakens a stronger global level; any other site result (even `NONE`)
/// replaces the global level; no result keeps it.
pub fn apply_site(global: TlsLevel, site: Option<PerSitePolicy>) -> TlsLevel {
    match site {
        None => global,
        Some(PerSitePolicy::May) if global > TlsLevel::May => global,
        Some(policy) => policy.level(),
    }
}

/// The deferral text for a broken per-site policy (the delivery stays queued).
pub const CONFIG_PROBLEM_REASON: &str = "4.7.5 client TLS configuration problem";

/// What to decide the level of one delivery from.
#[derive(Clone, Copy, Debug)]
pub struct PerSiteQuery<'a> {
    /// The global level (see [`global_level`]).
    pub global: TlsLevel,
    /// The next hop as written (`kaoru.asyd.net`, `[127.0.0.1]:2526`).
    pub next_hop: &'a str,
    /// The server's host name, or its IP address when there is no name.
    pub host: &'a str,
    /// The `smtp_tls_per_site` tables, searched in order (first hit wins).
    pub tables: &'a [Table],
    /// True when `smtp_tls_policy_maps` is set, which switches the per-site tables off.
    pub policy_maps_set: bool,
}

/// A per-site table hit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteHit {
    /// The table's file.
    pub file: String,
    /// The line of the entry.
    pub line: u32,
    /// The value as written.
    pub value: String,
}

/// One step of the decision, for `explain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyStep {
    /// The global level the decision starts from.
    Global(TlsLevel),
    /// The per-site tables were not consulted because `smtp_tls_policy_maps` is set.
    PerSiteIgnored,
    /// A key was looked up; `hit` is what was found, if anything.
    Lookup {
        /// The key.
        key: String,
        /// The entry found.
        hit: Option<SiteHit>,
    },
    /// The host key was not looked up because it equals the next-hop key.
    SameKeySkipped(String),
    /// A found value was folded into the result.
    Combined {
        /// The result before.
        before: Option<PerSitePolicy>,
        /// The value found.
        found: PerSitePolicy,
        /// The result after.
        after: Option<PerSitePolicy>,
    },
    /// The combined per-site result was applied to the global level.
    Applied {
        /// The combined per-site result.
        site: Option<PerSitePolicy>,
        /// The level used.
        level: TlsLevel,
    },
}

impl fmt::Display for PolicyStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyStep::Global(level) => write!(f, "global level: {level}"),
            PolicyStep::PerSiteIgnored => {
                f.write_str("smtp_tls_per_site ignored because smtp_tls_policy_maps is set")
            }
            PolicyStep::Lookup { key, hit: None } => write!(f, "lookup {key}: not found"),
            PolicyStep::Lookup { key, hit: Some(h) } => {
                write!(f, "lookup {key}: {} ({}:{})", h.value, h.file, h.line)
            }
            PolicyStep::SameKeySkipped(key) => {
                write!(f, "lookup of host {key} skipped: same as the next hop")
            }
            PolicyStep::Combined {
                before,
                found,
                after,
            } => write!(
                f,
                "combine {} with {found}: {}",
                site_name(*before),
                site_name(*after)
            ),
            PolicyStep::Applied { site, level } => match site {
                None => write!(f, "no per-site policy: level {level}"),
                Some(PerSitePolicy::May) if *level > TlsLevel::May => {
                    write!(f, "site MAY is weaker than the global level: level {level}")
                }
                Some(p) => write!(f, "site {p} replaces the global level: level {level}"),
            },
        }
    }
}

fn site_name(site: Option<PerSitePolicy>) -> &'static str {
    site.map_or("NOTFOUND", PerSitePolicy::as_str)
}

/// The level for one delivery, or why it must be deferred, with the steps taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsDecision {
    /// The level to deliver with, or the configuration problem that defers the delivery.
    pub result: Result<TlsLevel, TlsPolicyError>,
    /// How the result came about, in order.
    pub steps: Vec<PolicyStep>,
}

/// Decides the TLS level for one delivery from the global level and `smtp_tls_per_site`.
pub fn decide(query: &PerSiteQuery<'_>) -> TlsDecision {
    let mut steps = alloc::vec![PolicyStep::Global(query.global)];
    if query.policy_maps_set {
        steps.push(PolicyStep::PerSiteIgnored);
        return TlsDecision {
            result: Ok(query.global),
            steps,
        };
    }
    let mut site = None;
    let mut keys = alloc::vec![query.next_hop];
    if query.host.eq_ignore_ascii_case(query.next_hop) {
        steps.push(PolicyStep::SameKeySkipped(query.host.into()));
    } else {
        keys.push(query.host);
    }
    for key in keys {
        let hit = find(query.tables, key);
        steps.push(PolicyStep::Lookup {
            key: key.into(),
            hit: hit.clone(),
        });
        let Some(hit) = hit else { continue };
        let Some(found) = PerSitePolicy::parse(&hit.value) else {
            return TlsDecision {
                result: Err(TlsPolicyError::BadPerSiteValue(hit)),
                steps,
            };
        };
        let after = combine(site, found);
        steps.push(PolicyStep::Combined {
            before: site,
            found,
            after,
        });
        site = after;
    }
    let level = apply_site(query.global, site);
    steps.push(PolicyStep::Applied { site, level });
    TlsDecision {
        result: Ok(level),
        steps,
    }
}

fn find(tables: &[Table], key: &str) -> Option<SiteHit> {
    tables.iter().find_map(|t| {
        t.lookup_entry(key).map(|e| SiteHit {
            file: t.file().into(),
            line: e.line,
            value: e.value.clone(),
        })
    })
}

/// Why a TLS level or policy could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsPolicyError {
    /// Not a TLS level name.
    BadLevel(String),
    /// A Postfix level certrelay does not implement (`fingerprint`, `dane`, `dane-only`).
    UnsupportedLevel(String),
    /// A per-site value other than `NONE`, `MAY`, `MUST_NOPEERMATCH`, `MUST`: the delivery is
    /// deferred with [`CONFIG_PROBLEM_REASON`].
    BadPerSiteValue(SiteHit),
    /// An entry of `smtp_tls_secure_cert_match` or `smtp_tls_verify_cert_match` that is
    /// neither a strategy nor a host name (empty: the list is empty).
    BadCertMatch(String),
}

impl TlsPolicyError {
    /// The deferral reason for a delivery that hit this problem.
    pub const fn deferral_reason(&self) -> &'static str {
        CONFIG_PROBLEM_REASON
    }
}

impl fmt::Display for TlsPolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsPolicyError::BadLevel(t) => write!(
                f,
                "invalid TLS security level \"{t}\"; use none, may, encrypt, verify or secure"
            ),
            TlsPolicyError::UnsupportedLevel(t) => write!(
                f,
                "TLS security level \"{t}\" is not supported by certrelay; use verify or secure \
                 with smtp_tls_CAfile"
            ),
            TlsPolicyError::BadPerSiteValue(hit) => write!(
                f,
                "{}:{}: invalid smtp_tls_per_site value \"{}\"; use NONE, MAY, \
                 MUST_NOPEERMATCH or MUST",
                hit.file, hit.line, hit.value
            ),
            TlsPolicyError::BadCertMatch(t) if t.is_empty() => f.write_str(
                "empty certificate match list; use nexthop, dot-nexthop, hostname, \
                 dot-hostname or host names",
            ),
            TlsPolicyError::BadCertMatch(t) => write!(
                f,
                "invalid certificate match \"{t}\"; use nexthop, dot-nexthop, hostname, \
                 dot-hostname or a host name"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use PerSitePolicy as P;

    #[test]
    fn level_names() {
        for level in [
            TlsLevel::None,
            TlsLevel::May,
            TlsLevel::Encrypt,
            TlsLevel::Verify,
            TlsLevel::Secure,
        ] {
            assert_eq!(TlsLevel::parse(level.as_str()), Ok(level));
            assert_eq!(TlsLevel::parse(&level.as_str().to_uppercase()), Ok(level));
        }
        assert!(matches!(
            TlsLevel::parse("fingerprint"),
            Err(TlsPolicyError::UnsupportedLevel(_))
        ));
        assert!(matches!(
            TlsLevel::parse("dane"),
            Err(TlsPolicyError::UnsupportedLevel(_))
        ));
        assert!(matches!(
            TlsLevel::parse("must"),
            Err(TlsPolicyError::BadLevel(_))
        ));
        assert!(matches!(
            TlsLevel::parse(""),
            Err(TlsPolicyError::BadLevel(_))
        ));
    }

    #[test]
    fn cert_match_lists() {
        use MatchStrategy as M;
        assert_eq!(
            parse_cert_match(SECURE_MATCH_DEFAULT),
            Ok(vec![M::Nexthop, M::DotNexthop])
        );
        assert_eq!(
            parse_cert_match(VERIFY_MATCH_DEFAULT),
            Ok(vec![M::Hostname])
        );
        assert_eq!(
            parse_cert_match(" NextHop:dot-HOSTNAME\tMail.Example.COM. , .Example.net nexthop"),
            Ok(vec![
                M::Nexthop,
                M::DotHostname,
                M::Literal("mail.example.com".into()),
                M::Literal(".example.net".into()),
            ])
        );
        for bad in [
            "",
            " , ",
            "exa_mple.com",
            "a..b",
            "*.example.com",
            "fingerprint!",
        ] {
            let err = parse_cert_match(bad).unwrap_err();
            assert!(matches!(err, TlsPolicyError::BadCertMatch(_)), "{bad:?}");
        }
        assert_eq!(
            parse_cert_match("nexthop x_y").unwrap_err().to_string(),
            "invalid certificate match \"x_y\"; use nexthop, dot-nexthop, hostname, \
             dot-hostname or a host name"
        );
    }

    #[test]
    fn names_per_level_never_trust_an_mx_host_at_secure() {
        use CertName::{Host, Subdomain};
        let secure = parse_cert_match(SECURE_MATCH_DEFAULT).unwrap();
        let verify = parse_cert_match(VERIFY_MATCH_DEFAULT).unwrap();
        let all =
            parse_cert_match("hostname dot-hostname nexthop relay.Example.org .corp.test").unwrap();
        let names = |level, secure_match: &[MatchStrategy], from_mx| {
            cert_names(&CertNameQuery {
                level,
                nexthop: "example.test.",
                host: "mx.attacker.test",
                host_from_mx: from_mx,
                secure_match,
                verify_match: &verify,
            })
        };
        let s = |t: &str| String::from(t);
        assert_eq!(
            names(TlsLevel::Secure, &secure, true),
            [Host(s("example.test")), Subdomain(s("example.test"))]
        );
        assert_eq!(
            names(TlsLevel::Verify, &secure, true),
            [Host(s("mx.attacker.test"))]
        );
        assert_eq!(
            names(TlsLevel::Secure, &all, true),
            [
                Host(s("example.test")),
                Host(s("relay.example.org")),
                Subdomain(s("corp.test")),
            ],
            "the MX host is never a name at secure"
        );
        assert_eq!(
            names(TlsLevel::Secure, &all, false),
            [
                Host(s("mx.attacker.test")),
                Subdomain(s("mx.attacker.test")),
                Host(s("example.test")),
                Host(s("relay.example.org")),
                Subdomain(s("corp.test")),
            ]
        );
        let host_only = parse_cert_match("hostname").unwrap();
        assert!(names(TlsLevel::Secure, &host_only, true).is_empty());
        for level in [TlsLevel::None, TlsLevel::May, TlsLevel::Encrypt] {
            assert!(names(level, &secure, false).is_empty(), "{level}");
        }
    }

    #[test]
    fn global_level_resolution() {
        // (security_level, enforce_tls, enforce_peername, use_tls) -> level
        let cases: &[(&str, bool, bool, bool, TlsLevel)] = &[
            ("", false, true, false, TlsLevel::None),
            ("", false, true, true, TlsLevel::May),
            ("", true, true, false, TlsLevel::Verify),
            ("", true, true, true, TlsLevel::Verify),
            ("", true, false, false, TlsLevel::Encrypt),
            ("", true, false, true, TlsLevel::Encrypt),
            ("", false, false, true, TlsLevel::May),
            ("may", true, true, false, TlsLevel::May),
            ("none", true, true, true, TlsLevel::None),
            ("encrypt", false, true, false, TlsLevel::Encrypt),
            ("verify", false, true, false, TlsLevel::Verify),
            ("Secure", false, true, false, TlsLevel::Secure),
            ("  ", false, true, true, TlsLevel::May),
        ];
        for &(level, enforce, peername, use_tls, want) in cases {
            let params = GlobalTlsParams {
                security_level: level,
                enforce_tls: enforce,
                enforce_peername: peername,
                use_tls,
            };
            assert_eq!(global_level(&params), Ok(want), "{params:?}");
        }
        let bad = GlobalTlsParams {
            security_level: "sometimes",
            enforce_tls: false,
            enforce_peername: true,
            use_tls: false,
        };
        assert!(global_level(&bad).is_err());
    }

    #[test]
    fn per_site_values() {
        let cases = [
            ("NONE", Some(P::None)),
            ("none", Some(P::None)),
            ("May", Some(P::May)),
            ("must_nopeermatch", Some(P::MustNopeermatch)),
            ("MUST", Some(P::Must)),
            (" MUST ", Some(P::Must)),
            ("VERIFY", None),
            ("encrypt", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(PerSitePolicy::parse(text), want, "{text}");
        }
        assert_eq!(P::MustNopeermatch.level(), TlsLevel::Encrypt);
        assert_eq!(P::Must.level(), TlsLevel::Verify);
    }

    /// Every (so far, found) pair, written out by hand from the SPEC rules.
    #[test]
    fn combine_all_pairs() {
        let nf: Option<P> = None;
        let cases: &[(Option<P>, P, Option<P>)] = &[
            (nf, P::None, Some(P::None)),
            (nf, P::May, Some(P::May)),
            (nf, P::MustNopeermatch, Some(P::MustNopeermatch)),
            (nf, P::Must, Some(P::Must)),
            (Some(P::None), P::None, Some(P::None)),
            (Some(P::None), P::May, Some(P::None)),
            (Some(P::None), P::MustNopeermatch, Some(P::MustNopeermatch)),
            (Some(P::None), P::Must, Some(P::Must)),
            (Some(P::May), P::None, Some(P::None)),
            (Some(P::May), P::May, Some(P::May)),
            (Some(P::May), P::MustNopeermatch, Some(P::MustNopeermatch)),
            (Some(P::May), P::Must, Some(P::Must)),
            (Some(P::MustNopeermatch), P::None, Some(P::MustNopeermatch)),
            (Some(P::MustNopeermatch), P::May, Some(P::MustNopeermatch)),
            (
                Some(P::MustNopeermatch),
                P::MustNopeermatch,
                Some(P::MustNopeermatch),
            ),
            (Some(P::MustNopeermatch), P::Must, Some(P::Must)),
            (Some(P::Must), P::None, Some(P::Must)),
            (Some(P::Must), P::May, Some(P::Must)),
            (Some(P::Must), P::MustNopeermatch, Some(P::Must)),
            (Some(P::Must), P::Must, Some(P::Must)),
        ];
        assert_eq!(cases.len(), 20);
        for &(so_far, found, want) in cases {
            assert_eq!(combine(so_far, found), want, "{so_far:?} + {found:?}");
        }
    }

    /// Every (global, site) pair.
    #[test]
    fn apply_site_all_pairs() {
        use TlsLevel as L;
        let globals = [L::None, L::May, L::Encrypt, L::Verify, L::Secure];
        for g in globals {
            assert_eq!(apply_site(g, None), g, "NOTFOUND keeps {g}");
            assert_eq!(apply_site(g, Some(P::None)), L::None, "NONE overrides {g}");
            let may = if g > L::May { g } else { L::May };
            assert_eq!(apply_site(g, Some(P::May)), may, "MAY with {g}");
            assert_eq!(
                apply_site(g, Some(P::MustNopeermatch)),
                L::Encrypt,
                "M_N with {g}"
            );
            assert_eq!(apply_site(g, Some(P::Must)), L::Verify, "MUST with {g}");
        }
        // Spelled out where the rule is easy to get wrong.
        assert_eq!(apply_site(L::None, Some(P::May)), L::May);
        assert_eq!(apply_site(L::Secure, Some(P::Must)), L::Verify);
        assert_eq!(apply_site(L::Verify, Some(P::MustNopeermatch)), L::Encrypt);
    }

    fn table(text: &str) -> Table {
        Table::parse("tls_per_site", text).0
    }

    /// The whole lookup: (table text, next hop, host, global) -> level or deferral.
    #[test]
    fn decide_table() {
        use TlsLevel as L;
        let cases: &[(&str, &str, &str, L, Option<L>)] = &[
            (
                "",
                "kaoru.asyd.net",
                "kaoru.asyd.net",
                L::Verify,
                Some(L::Verify),
            ),
            (
                "kaoru.asyd.net MUST",
                "kaoru.asyd.net",
                "kaoru.asyd.net",
                L::None,
                Some(L::Verify),
            ),
            (
                "KAORU.asyd.net none",
                "kaoru.asyd.net",
                "mx.asyd.net",
                L::Verify,
                Some(L::None),
            ),
            (
                "kaoru.asyd.net MAY",
                "kaoru.asyd.net",
                "mx.asyd.net",
                L::Verify,
                Some(L::Verify),
            ),
            (
                "kaoru.asyd.net MAY",
                "kaoru.asyd.net",
                "mx.asyd.net",
                L::None,
                Some(L::May),
            ),
            (
                "mx.asyd.net MUST_NOPEERMATCH",
                "kaoru.asyd.net",
                "mx.asyd.net",
                L::May,
                Some(L::Encrypt),
            ),
            (
                "kaoru.asyd.net NONE\nmx.asyd.net MAY",
                "kaoru.asyd.net",
                "mx.asyd.net",
                L::Verify,
                Some(L::None),
            ),
            (
                "kaoru.asyd.net MAY\nmx.asyd.net NONE",
                "kaoru.asyd.net",
                "mx.asyd.net",
                L::Verify,
                Some(L::None),
            ),
            (
                "kaoru.asyd.net MUST\nmx.asyd.net NONE",
                "kaoru.asyd.net",
                "mx.asyd.net",
                L::None,
                Some(L::Verify),
            ),
            (
                "kaoru.asyd.net MUST_NOPEERMATCH\nmx.asyd.net MUST",
                "kaoru.asyd.net",
                "mx.asyd.net",
                L::None,
                Some(L::Verify),
            ),
            (
                "[127.0.0.1]:2526 MUST",
                "[127.0.0.1]:2526",
                "127.0.0.1",
                L::May,
                Some(L::Verify),
            ),
            (
                "127.0.0.1 MUST_NOPEERMATCH",
                "[127.0.0.1]:2526",
                "127.0.0.1",
                L::Verify,
                Some(L::Encrypt),
            ),
            (
                "kaoru.asyd.net VERIFY",
                "kaoru.asyd.net",
                "kaoru.asyd.net",
                L::May,
                None,
            ),
            (
                "mx.asyd.net bogus",
                "kaoru.asyd.net",
                "mx.asyd.net",
                L::May,
                None,
            ),
        ];
        for &(text, hop, host, global, want) in cases {
            let tables = [table(text)];
            let q = PerSiteQuery {
                global,
                next_hop: hop,
                host,
                tables: &tables,
                policy_maps_set: false,
            };
            let d = decide(&q);
            match want {
                Some(level) => assert_eq!(d.result, Ok(level), "{text:?} {hop} {host} {global}"),
                None => {
                    let err = d.result.expect_err(text);
                    assert_eq!(
                        err.deferral_reason(),
                        "4.7.5 client TLS configuration problem"
                    );
                }
            }
        }
    }

    #[test]
    fn decide_reports_steps() {
        let tables = [
            table("# per site\nkaoru.asyd.net MAY\n"),
            table("mx.asyd.net MUST\n"),
        ];
        let q = PerSiteQuery {
            global: TlsLevel::May,
            next_hop: "kaoru.asyd.net",
            host: "mx.asyd.net",
            tables: &tables,
            policy_maps_set: false,
        };
        let d = decide(&q);
        let shown: Vec<String> = d.steps.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "global level: may",
                "lookup kaoru.asyd.net: MAY (tls_per_site:2)",
                "combine NOTFOUND with MAY: MAY",
                "lookup mx.asyd.net: MUST (tls_per_site:1)",
                "combine MAY with MUST: MUST",
                "site MUST replaces the global level: level verify",
            ]
        );
        assert_eq!(d.result, Ok(TlsLevel::Verify));
    }

    #[test]
    fn decide_skips_same_key_and_honours_policy_maps() {
        let tables = [table("relay.example NONE")];
        let mut q = PerSiteQuery {
            global: TlsLevel::Verify,
            next_hop: "relay.example",
            host: "RELAY.example",
            tables: &tables,
            policy_maps_set: false,
        };
        let d = decide(&q);
        assert!(d
            .steps
            .contains(&PolicyStep::SameKeySkipped("RELAY.example".into())));
        assert_eq!(
            d.steps
                .iter()
                .filter(|s| matches!(s, PolicyStep::Lookup { .. }))
                .count(),
            1
        );
        assert_eq!(d.result, Ok(TlsLevel::None));
        q.policy_maps_set = true;
        let d = decide(&q);
        assert_eq!(d.result, Ok(TlsLevel::Verify));
        assert_eq!(
            d.steps[1].to_string(),
            "smtp_tls_per_site ignored because smtp_tls_policy_maps is set"
        );
    }

    #[test]
    fn first_table_wins() {
        let tables = [table("relay.example MAY"), table("relay.example MUST")];
        let q = PerSiteQuery {
            global: TlsLevel::None,
            next_hop: "relay.example",
            host: "relay.example",
            tables: &tables,
            policy_maps_set: false,
        };
        assert_eq!(decide(&q).result, Ok(TlsLevel::May));
    }

    #[test]
    fn bad_value_names_file_and_line() {
        let tables = [table("\nrelay.example verify")];
        let q = PerSiteQuery {
            global: TlsLevel::None,
            next_hop: "relay.example",
            host: "relay.example",
            tables: &tables,
            policy_maps_set: false,
        };
        let err = decide(&q).result.unwrap_err().to_string();
        assert_eq!(
            err,
            "tls_per_site:2: invalid smtp_tls_per_site value \"verify\"; use NONE, MAY, MUST_NOPEERMATCH or MUST"
        );
    }
}
