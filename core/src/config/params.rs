//! The parameters certrelay knows, with their defaults.
//!
//! A parameter missing here that is set in `main.cf` gets an `unused parameter` warning.
//! Some Postfix parameters are listed so that a Postfix `main.cf` loads quietly; those that
//! certrelay does not act on and that a person might rely on are marked [`Use::Ignored`] and
//! get a warning that says so when set.

use super::values::TimeUnit;

/// True for a byte allowed in a parameter name.
pub(crate) fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// True when `name` is a well-formed parameter name (letters, digits, `_`).
pub fn is_param_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_name_byte)
}

/// How a parameter's value is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Free text.
    Text,
    /// `yes` / `no`.
    Bool,
    /// A non-negative number.
    Number,
    /// A time; a bare number is in the given unit.
    Time(TimeUnit),
    /// Items separated by commas and whitespace.
    List,
}

/// What certrelay does with a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Read and acted on.
    Used,
    /// A Postfix parameter with no meaning here, accepted without a word.
    Quiet,
    /// A Postfix parameter certrelay does not act on; setting it gets a warning with this
    /// reason.
    Ignored(&'static str),
}

/// One known parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    /// Its name in `main.cf`.
    pub name: &'static str,
    /// Its default value, before expansion.
    pub default: &'static str,
    /// How its value is read.
    pub kind: Kind,
    /// Whether certrelay acts on it.
    pub use_: Use,
}

const fn p(name: &'static str, default: &'static str, kind: Kind) -> Param {
    Param {
        name,
        default,
        kind,
        use_: Use::Used,
    }
}

const fn quiet(name: &'static str, default: &'static str) -> Param {
    Param {
        name,
        default,
        kind: Kind::Text,
        use_: Use::Quiet,
    }
}

const fn ignored(name: &'static str, reason: &'static str) -> Param {
    Param {
        name,
        default: "",
        kind: Kind::Text,
        use_: Use::Ignored(reason),
    }
}

const SECONDS: Kind = Kind::Time(TimeUnit::Second);
const DAYS: Kind = Kind::Time(TimeUnit::Day);
const NO_LOCAL: &str = "certrelay does no local delivery";
const TLS_LIB: &str = "certrelay's TLS library offers only TLS 1.2 and 1.3 with strong ciphers";
const CAFILE_ONLY: &str = "certrelay reads trust anchors from the CAfile only";

/// Every known parameter, in no particular order.
pub const PARAMS: &[Param] = &[
    // Identity and addresses.
    p("myhostname", "localhost", Kind::Text),
    p("mydomain", "localdomain", Kind::Text),
    p("myorigin", "$myhostname", Kind::Text),
    p("mail_name", "certrelay", Kind::Text),
    p("smtpd_banner", "$myhostname ESMTP $mail_name", Kind::Text),
    p("inet_interfaces", "all", Kind::List),
    p("inet_protocols", "all", Kind::List),
    p("mynetworks", "127.0.0.0/8, [::1]/128", Kind::List),
    p(
        "mydestination",
        "$myhostname, localhost.$mydomain, localhost",
        Kind::List,
    ),
    p("relay_domains", "", Kind::List),
    p("relayhost", "", Kind::List),
    p("defer_transports", "", Kind::List),
    p("default_process_limit", "100", Kind::Number),
    p("relay_clientcerts", "", Kind::List),
    p("virtual_alias_maps", "", Kind::List),
    // The relay's DKIM keys: `DOMAIN SELECTOR KEYFILE` lines (certrelay's own parameter).
    p("dkim_signing_keys", "", Kind::List),
    p("hopcount_limit", "50", Kind::Number),
    // Postfix's built-in default depends on compatibility_level (no below level 1); this is
    // its value at every level Debian's main.cf sets.
    p("smtputf8_enable", "yes", Kind::Bool),
    p("mail_owner", "certrelay", Kind::Text),
    p("queue_directory", "/var/spool/certrelay", Kind::Text),
    // Logging (shell/src/logging.rs).
    p("maillog_file", "", Kind::Text),
    p("syslog_name", "certrelay", Kind::Text),
    p("syslog_facility", "mail", Kind::Text),
    // Server TLS.
    p("smtpd_use_tls", "no", Kind::Bool),
    p("smtpd_enforce_tls", "no", Kind::Bool),
    p("smtpd_tls_security_level", "", Kind::Text),
    p("smtpd_tls_cert_file", "", Kind::Text),
    p("smtpd_tls_key_file", "$smtpd_tls_cert_file", Kind::Text),
    p("smtpd_tls_CAfile", "", Kind::Text),
    p("smtpd_tls_ask_ccert", "no", Kind::Bool),
    p("smtpd_tls_req_ccert", "no", Kind::Bool),
    p("smtpd_tls_ccert_verifydepth", "9", Kind::Number),
    p("smtpd_tls_loglevel", "0", Kind::Number),
    p("smtpd_tls_received_header", "no", Kind::Bool),
    p("smtpd_tls_session_cache_timeout", "3600s", SECONDS),
    p("smtpd_tls_fingerprint_digest", "", Kind::Text),
    p("smtpd_tls_wrappermode", "no", Kind::Bool),
    // Server limits and restrictions.
    p("smtpd_relay_restrictions", "", Kind::List),
    p("smtpd_sender_ccert_maps", "", Kind::List),
    p(
        "smtpd_recipient_restrictions",
        "permit_mynetworks, permit_tls_clientcerts, reject_unauth_destination",
        Kind::List,
    ),
    p("message_size_limit", "10240000", Kind::Number),
    p("smtpd_recipient_limit", "1000", Kind::Number),
    p("smtpd_timeout", "300s", SECONDS),
    p("smtpd_hard_error_limit", "20", Kind::Number),
    p("smtpd_soft_error_limit", "10", Kind::Number),
    p("smtpd_error_sleep_time", "1s", SECONDS),
    p("smtpd_forbid_bare_newline", "reject", Kind::Text),
    p("smtpd_client_connection_count_limit", "50", Kind::Number),
    p("smtpd_peername_lookup", "yes", Kind::Bool),
    // A balancer's PROXY protocol header before the client's bytes (config/server.rs).
    p("smtpd_upstream_proxy_protocol", "", Kind::Text),
    p("smtpd_upstream_proxy_timeout", "5s", SECONDS),
    // Hostile clients: other protocols, errors, slow senders (core/src/server/guard.rs).
    p(
        "smtpd_forbidden_commands",
        "CONNECT GET POST regexp:{{/^[^A-Z]/ Bogus}}",
        Kind::Text,
    ),
    p("certrelay_command_time_limit", "10s", SECONDS),
    p("certrelay_data_min_rate", "1000", Kind::Number),
    p("certrelay_data_rate_grace", "30s", SECONDS),
    // Pairing and renewal of laptops (XCERTRELAY, docs/enroll-protocol.md): the CA that signs
    // (`ca init`'s ca.pem and ca.key; an empty file name turns enrollment off), the lifetime of
    // what it signs, and how long a renewed laptop's old certificate stays listed at most
    // once the new one exists (it goes at the new one's first use).
    p("certrelay_enroll_ca_cert_file", "", Kind::Text),
    p("certrelay_enroll_ca_key_file", "", Kind::Text),
    p("certrelay_enroll_cert_lifetime", "365d", SECONDS),
    p("certrelay_enroll_grace_time", "7d", SECONDS),
    // How the relay sees a change of its configuration files: inotify, poll or no.
    p("certrelay_config_watch", "inotify", Kind::Text),
    // Restriction classes certrelay does not apply: anything but `permit` in them refuses
    // the configuration, rather than being silently skipped (config/server/guard.rs).
    p("smtpd_client_restrictions", "", Kind::List),
    p("smtpd_helo_restrictions", "", Kind::List),
    p("smtpd_sender_restrictions", "", Kind::List),
    p("smtpd_data_restrictions", "", Kind::List),
    p("smtpd_end_of_data_restrictions", "", Kind::List),
    p("smtpd_etrn_restrictions", "", Kind::List),
    // Client.
    p("smtp_helo_name", "$myhostname", Kind::Text),
    p("smtp_use_tls", "no", Kind::Bool),
    p("smtp_enforce_tls", "no", Kind::Bool),
    p("smtp_tls_enforce_peername", "yes", Kind::Bool),
    p("smtp_tls_wrappermode", "no", Kind::Bool),
    p("smtp_tls_security_level", "", Kind::Text),
    p("smtp_tls_cert_file", "", Kind::Text),
    p("smtp_tls_key_file", "$smtp_tls_cert_file", Kind::Text),
    p("smtp_tls_CAfile", "", Kind::Text),
    p("smtp_tls_loglevel", "0", Kind::Number),
    p("smtp_tls_per_site", "", Kind::List),
    p("smtp_tls_policy_maps", "", Kind::List),
    p(
        "smtp_tls_secure_cert_match",
        "nexthop, dot-nexthop",
        Kind::List,
    ),
    p("smtp_tls_verify_cert_match", "hostname", Kind::List),
    p("smtp_line_length_limit", "998", Kind::Number),
    p("smtp_tls_session_cache_timeout", "3600s", SECONDS),
    p("smtp_connect_timeout", "30s", SECONDS),
    p("smtp_helo_timeout", "300s", SECONDS),
    p("smtp_starttls_timeout", "300s", SECONDS),
    p("smtp_mail_timeout", "300s", SECONDS),
    p("smtp_rcpt_timeout", "300s", SECONDS),
    p("smtp_data_init_timeout", "120s", SECONDS),
    p("smtp_data_xfer_timeout", "180s", SECONDS),
    p("smtp_data_done_timeout", "600s", SECONDS),
    p("smtp_quit_timeout", "300s", SECONDS),
    // Queue.
    p("minimal_backoff_time", "300s", SECONDS),
    p("maximal_backoff_time", "4000s", SECONDS),
    p("queue_run_delay", "300s", SECONDS),
    p("maximal_queue_lifetime", "5d", DAYS),
    p("bounce_queue_lifetime", "$maximal_queue_lifetime", DAYS),
    // Postfix parameters with no meaning here.
    quiet("compatibility_level", "0"),
    quiet("biff", "yes"),
    quiet("append_dot_mydomain", "no"),
    quiet("readme_directory", "no"),
    quiet("html_directory", "no"),
    quiet("manpage_directory", "/usr/share/man"),
    quiet("sample_directory", "/etc/postfix"),
    quiet("command_directory", "/usr/sbin"),
    quiet("daemon_directory", "/usr/lib/postfix/sbin"),
    quiet("data_directory", "/var/lib/certrelay"),
    quiet("meta_directory", "/etc/postfix"),
    quiet("shlib_directory", "no"),
    quiet("setgid_group", "postdrop"),
    quiet("sendmail_path", "/usr/sbin/sendmail"),
    quiet("newaliases_path", "/usr/bin/newaliases"),
    quiet("mailq_path", "/usr/bin/mailq"),
    quiet("tls_random_source", "dev:/dev/urandom"),
    quiet("smtpd_tls_session_cache_database", ""),
    quiet("smtp_tls_session_cache_database", ""),
    // Postfix parameters a person might rely on, which certrelay does not act on.
    ignored("alias_maps", NO_LOCAL),
    ignored("alias_database", NO_LOCAL),
    ignored("local_recipient_maps", NO_LOCAL),
    ignored("mailbox_size_limit", NO_LOCAL),
    ignored("mailbox_command", NO_LOCAL),
    ignored("home_mailbox", NO_LOCAL),
    ignored("recipient_delimiter", NO_LOCAL),
    ignored("smtpd_tls_CApath", CAFILE_ONLY),
    ignored("smtp_tls_CApath", CAFILE_ONLY),
    ignored("smtpd_tls_protocols", TLS_LIB),
    ignored("smtpd_tls_mandatory_protocols", TLS_LIB),
    ignored("smtpd_tls_ciphers", TLS_LIB),
    ignored("smtpd_tls_mandatory_ciphers", TLS_LIB),
    ignored("smtpd_tls_exclude_ciphers", TLS_LIB),
    ignored("smtp_tls_protocols", TLS_LIB),
    ignored("smtp_tls_mandatory_protocols", TLS_LIB),
    ignored("smtp_tls_ciphers", TLS_LIB),
    ignored("smtp_tls_mandatory_ciphers", TLS_LIB),
    ignored("smtp_tls_exclude_ciphers", TLS_LIB),
    ignored("smtpd_tls_auth_only", "certrelay offers no SMTP AUTH"),
    ignored(
        "strict_smtputf8",
        "certrelay always refuses a UTF-8 address on MAIL or RCPT without SMTPUTF8 on MAIL, as \
         Postfix does with strict_smtputf8 = yes",
    ),
];

/// The known parameter called `name`.
pub fn find(name: &str) -> Option<&'static Param> {
    PARAMS.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut seen = BTreeSet::new();
        for param in PARAMS {
            assert!(seen.insert(param.name), "{} listed twice", param.name);
            assert!(is_param_name(param.name), "{}", param.name);
        }
    }

    #[test]
    fn typed_defaults_read() {
        use super::super::values::{parse_bool, parse_number, parse_time};
        for param in PARAMS {
            let ok = match param.kind {
                Kind::Bool => parse_bool(param.default).is_some(),
                Kind::Number => parse_number(param.default).is_some(),
                Kind::Time(unit) => {
                    param.default.starts_with('$') || parse_time(param.default, unit).is_some()
                }
                Kind::Text | Kind::List => true,
            };
            assert!(
                ok,
                "default of {} does not read as {:?}",
                param.name, param.kind
            );
        }
    }
}
