//! [`ServerSettings`] from a [`Config`]: TLS level, limits, restrictions, networks.

use super::master_cf::Listener;
use super::{Config, Diagnostic};
use crate::restriction::Restriction;
use crate::settings::{BareNewline, ServerSettings, ServerTlsLevel};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

/// Reads one restriction name.
pub fn parse_restriction(name: &str) -> Option<Restriction> {
    Restriction::from_name(name)
}

/// Settings for `listener`: `config` with the listener's `-o` settings applied.
pub fn listener_settings(
    config: &Config,
    listener: &Listener,
) -> (ServerSettings, Vec<Diagnostic>) {
    let (config, mut diagnostics) = config.with_overrides(&listener.override_list());
    let (settings, more) = server_settings(&config);
    diagnostics.extend(more);
    (settings, diagnostics)
}

/// Builds the server settings. Fields whose parameter does not read keep their default and
/// the problem is in the diagnostics; do not start when any of them is an error.
pub fn server_settings(config: &Config) -> (ServerSettings, Vec<Diagnostic>) {
    let mut b = Builder {
        config,
        diagnostics: Vec::new(),
    };
    let d = ServerSettings::default();
    let (tls_level, ask_ccert, req_ccert) = b.tls();
    b.check_cert(tls_level);
    let relay_restrictions = b.restrictions("smtpd_relay_restrictions");
    let recipient_restrictions = b.restrictions("smtpd_recipient_restrictions");
    b.refuse_open_relay(&relay_restrictions, &recipient_restrictions);
    b.refuse_unapplied_restrictions();
    b.check_sender_ccert(&relay_restrictions, &recipient_restrictions);
    let settings = ServerSettings {
        myhostname: String::from(config.text("myhostname")),
        banner: String::from(config.text("smtpd_banner")),
        tls_level,
        ask_ccert,
        req_ccert,
        tls_received_header: b.or(
            config.bool("smtpd_tls_received_header"),
            d.tls_received_header,
        ),
        tls_loglevel: b.or(config.number("smtpd_tls_loglevel"), 0).min(255) as u8,
        message_size_limit: b.or(config.number("message_size_limit"), d.message_size_limit),
        recipient_limit: b.count("smtpd_recipient_limit", d.recipient_limit),
        timeout: b.or(config.time("smtpd_timeout"), d.timeout),
        hard_error_limit: b.count("smtpd_hard_error_limit", d.hard_error_limit),
        bare_newline: b.bare_newline(),
        soft_error_limit: b.count("smtpd_soft_error_limit", d.soft_error_limit),
        error_sleep_time: b.or(config.time("smtpd_error_sleep_time"), d.error_sleep_time),
        forbidden_commands: b.forbidden_commands(),
        unknown_before_helo_ends: d.unknown_before_helo_ends,
        command_time_limit: b.or(
            config.time("certrelay_command_time_limit"),
            d.command_time_limit,
        ),
        data_min_rate: b.or(config.number("certrelay_data_min_rate"), d.data_min_rate),
        data_rate_grace: b.or(config.time("certrelay_data_rate_grace"), d.data_rate_grace),
        relay_restrictions,
        recipient_restrictions,
        mynetworks: b.or(config.mynetworks(), d.mynetworks),
        mydestination: lower_list(config, "mydestination"),
        relay_domains: lower_list(config, "relay_domains"),
        // The relay's shell turns this on and reads the tables (the core reads no file).
        refuse_local_recipients: false,
        virtual_alias_maps: Vec::new(),
        hopcount_limit: b.count("hopcount_limit", d.hopcount_limit),
        // Read by the relay's shell, like virtual_alias_maps.
        sender_ccert_maps: Vec::new(),
        smtputf8_enable: b.or(config.bool("smtputf8_enable"), d.smtputf8_enable),
        // The relay's shell turns it on with a CA to sign with (it answers the requests).
        enroll: false,
    };
    if let Err(d) = upstream_proxy(config) {
        b.diagnostics.push(d);
    }
    for name in ["virtual_alias_maps", SENDER_CCERT_MAPS] {
        if let Err(d) = config.tables(name) {
            b.diagnostics.push(d);
        }
    }
    (settings, b.diagnostics)
}

/// `smtpd_upstream_proxy_protocol` and `smtpd_upstream_proxy_timeout`: how long a listener
/// waits for a balancer's PROXY protocol header before anything else, or `None` when it
/// expects none. `haproxy` (versions 1 and 2) is the one protocol, as in Postfix.
pub fn upstream_proxy(config: &Config) -> Result<Option<Duration>, Diagnostic> {
    const NAME: &str = "smtpd_upstream_proxy_protocol";
    match config.text(NAME).trim() {
        "" => Ok(None),
        "haproxy" => {
            let timeout = config.time("smtpd_upstream_proxy_timeout")?;
            if timeout.is_zero() {
                return Err(config.problem(
                    "smtpd_upstream_proxy_timeout",
                    "the time to wait for the PROXY header must be more than 0s",
                ));
            }
            Ok(Some(timeout))
        }
        _ => Err(config.problem(
            NAME,
            "expected haproxy (a PROXY protocol header, version 1 or 2, from the balancer) \
             or nothing",
        )),
    }
}

fn lower_list(config: &Config, name: &str) -> Vec<String> {
    config
        .list(name)
        .into_iter()
        .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
        .collect()
}

struct Builder<'a> {
    config: &'a Config,
    diagnostics: Vec<Diagnostic>,
}

impl Builder<'_> {
    fn or<T>(&mut self, value: Result<T, Diagnostic>, default: T) -> T {
        value.unwrap_or_else(|d| {
            self.diagnostics.push(d);
            default
        })
    }

    fn count<T: TryFrom<u64>>(&mut self, name: &str, default: T) -> T {
        let n = self.config.number(name).and_then(|n| {
            T::try_from(n).map_err(|_| self.config.problem(name, "number too large"))
        });
        self.or(n, default)
    }

    /// The TLS level with `req_ccert` folded in (SPEC A3), and the two certificate switches.
    fn tls(&mut self) -> (ServerTlsLevel, bool, bool) {
        let level = self.declared_tls_level();
        let ask = self.or(self.config.bool("smtpd_tls_ask_ccert"), false);
        let req = self.or(self.config.bool("smtpd_tls_req_ccert"), false);
        if !req {
            return (level, ask, false);
        }
        self.diagnostics.push(Diagnostic::notice(
            &self.config.location("smtpd_tls_req_ccert"),
            "smtpd_tls_req_ccert = yes: TLS is mandatory (as smtpd_tls_security_level = \
             encrypt) and clients must present a trusted certificate",
        ));
        (ServerTlsLevel::Encrypt, true, true)
    }

    /// Without a certificate, STARTTLS can only fail (454); say so at start-up.
    fn check_cert(&mut self, level: ServerTlsLevel) {
        const NAME: &str = "smtpd_tls_cert_file";
        if level != ServerTlsLevel::None && self.config.text(NAME).trim().is_empty() {
            self.diagnostics.push(Diagnostic::warning(
                &self.config.location(NAME),
                "TLS is enabled but smtpd_tls_cert_file is empty: STARTTLS will answer \
                 454 4.7.0 TLS not available due to local problem",
            ));
        }
    }

    fn declared_tls_level(&mut self) -> ServerTlsLevel {
        const NAME: &str = "smtpd_tls_security_level";
        let text = self.config.text(NAME).trim();
        if !text.is_empty() {
            return match text.to_ascii_lowercase().as_str() {
                "none" => ServerTlsLevel::None,
                "may" => ServerTlsLevel::May,
                "encrypt" => ServerTlsLevel::Encrypt,
                _ => {
                    let d = self.config.problem(NAME, "expected none, may or encrypt");
                    self.diagnostics.push(d);
                    ServerTlsLevel::None
                }
            };
        }
        if self.or(self.config.bool("smtpd_enforce_tls"), false) {
            ServerTlsLevel::Encrypt
        } else if self.or(self.config.bool("smtpd_use_tls"), false) {
            ServerTlsLevel::May
        } else {
            ServerTlsLevel::None
        }
    }

    fn bare_newline(&mut self) -> BareNewline {
        const NAME: &str = "smtpd_forbid_bare_newline";
        match self.config.text(NAME).trim().to_ascii_lowercase().as_str() {
            "reject" => BareNewline::Reject,
            "normalize" | "yes" => BareNewline::Normalize,
            "no" => {
                self.diagnostics.push(Diagnostic::warning(
                    &self.config.location(NAME),
                    "smtpd_forbid_bare_newline = no: a bare LF never ends a message here; \
                     bare LFs are accepted as with normalize",
                ));
                BareNewline::Normalize
            }
            _ => {
                let d = self
                    .config
                    .problem(NAME, "expected reject, normalize, yes or no");
                self.diagnostics.push(d);
                BareNewline::Reject
            }
        }
    }

    fn restrictions(&mut self, name: &str) -> Vec<Restriction> {
        let mut out = Vec::new();
        for item in self.config.list(name) {
            match parse_restriction(item) {
                Some(r) => out.push(r),
                None => {
                    let known: Vec<&str> = Restriction::ALL.iter().map(Restriction::name).collect();
                    let d = self.config.problem(
                        name,
                        format!(
                            "unknown restriction \"{item}\"; certrelay knows {}",
                            known.join(", ")
                        ),
                    );
                    self.diagnostics.push(d);
                }
            }
        }
        out
    }

    /// SPEC A2: one of the two lists must be able to refuse a recipient we are not
    /// responsible for, or anyone could relay through this server.
    fn refuse_open_relay(&mut self, relay: &[Restriction], recipient: &[Restriction]) {
        if can_refuse(relay) || can_refuse(recipient) {
            return;
        }
        let name = if self.config.is_set("smtpd_recipient_restrictions")
            || !self.config.is_set("smtpd_relay_restrictions")
        {
            "smtpd_recipient_restrictions"
        } else {
            "smtpd_relay_restrictions"
        };
        let d = self.config.problem(
            name,
            "this would make an open relay: neither smtpd_relay_restrictions nor \
             smtpd_recipient_restrictions reaches reject_unauth_destination, \
             defer_unauth_destination or reject; end smtpd_recipient_restrictions with \
             reject_unauth_destination (for example: permit_mynetworks, \
             permit_tls_clientcerts, reject_unauth_destination)",
        );
        self.diagnostics.push(d);
    }
}

/// The parameter naming the senders each listed certificate owns.
const SENDER_CCERT_MAPS: &str = "smtpd_sender_ccert_maps";

impl Builder<'_> {
    /// `reject_sender_ccert_mismatch` and `smtpd_sender_ccert_maps` go together: the rule
    /// without the map is an error (it would refuse every sender of every listed
    /// certificate), the map without the rule a warning (it would do nothing). The rule
    /// after a `permit`, `permit_tls_clientcerts` or `permit_tls_all_clientcerts` of its own
    /// list never sees a listed certificate: a warning too.
    fn check_sender_ccert(&mut self, relay: &[Restriction], recipient: &[Restriction]) {
        const RULE: Restriction = Restriction::RejectSenderCcertMismatch;
        let lists = [
            ("smtpd_relay_restrictions", relay),
            ("smtpd_recipient_restrictions", recipient),
        ];
        let map_set = !self.config.list(SENDER_CCERT_MAPS).is_empty();
        let mut used = false;
        for (name, list) in lists {
            let Some(at) = list.iter().position(|r| *r == RULE) else {
                continue;
            };
            used = true;
            if !map_set {
                let d = self.config.problem(
                    name,
                    "reject_sender_ccert_mismatch needs smtpd_sender_ccert_maps (the senders \
                     each relay_clientcerts label owns); without it every sender of every \
                     listed certificate would be refused. Set smtpd_sender_ccert_maps = \
                     texthash:/path, or remove the rule",
                );
                self.diagnostics.push(d);
            }
            if let Some(before) = list[..at].iter().find(|r| {
                matches!(
                    r,
                    Restriction::Permit
                        | Restriction::PermitTlsClientcerts
                        | Restriction::PermitTlsAllClientcerts
                )
            }) {
                self.diagnostics.push(Diagnostic::warning(
                    &self.config.location(name),
                    format!(
                        "reject_sender_ccert_mismatch comes after {before}, which permits a \
                         listed certificate first: it never applies; put it before {before}"
                    ),
                ));
            }
        }
        if map_set && !used {
            self.diagnostics.push(Diagnostic::warning(
                &self.config.location(SENDER_CCERT_MAPS),
                "smtpd_sender_ccert_maps is set but neither smtpd_relay_restrictions nor \
                 smtpd_recipient_restrictions has reject_sender_ccert_mismatch: the map \
                 restricts nothing",
            ));
        }
    }
}

/// True when the list holds a refusing restriction that an unconditional `permit` before it
/// does not make unreachable.
fn can_refuse(list: &[Restriction]) -> bool {
    list.iter()
        .take_while(|r| **r != Restriction::Permit)
        .any(|r| {
            matches!(
                r,
                Restriction::RejectUnauthDestination
                    | Restriction::DeferUnauthDestination
                    | Restriction::Reject
            )
        })
}

mod guard;
#[cfg(test)]
mod tests;
