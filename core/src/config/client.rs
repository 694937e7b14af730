//! [`ClientSettings`] from a [`Config`], and start-up checks of the client parameters.

use super::{Config, Diagnostic};
use crate::settings::ClientSettings;
use crate::tls_policy::{self, MatchStrategy};
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

/// Builds the client settings with the global TLS level (the per-site policy may change it
/// for one next hop, see [`crate::tls_policy::decide`]). Fields whose parameter does not read
/// keep their default and the problem is in the diagnostics.
pub fn client_settings(config: &Config) -> (ClientSettings, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let d = ClientSettings::default();
    let mut or = |r: Result<Duration, Diagnostic>, default: Duration| {
        r.unwrap_or_else(|e| {
            diagnostics.push(e);
            default
        })
    };
    let command_timeout = [
        "smtp_helo_timeout",
        "smtp_mail_timeout",
        "smtp_rcpt_timeout",
    ]
    .iter()
    .map(|name| or(config.time(name), d.command_timeout))
    .max()
    .unwrap_or(d.command_timeout);
    let data_done_timeout = or(config.time("smtp_data_done_timeout"), d.data_done_timeout);
    let tls_level = config.smtp_tls_level().unwrap_or_else(|e| {
        diagnostics.push(e);
        d.tls_level
    });
    diagnostics.extend(check_tls_maps(config));
    let mut cert_match = |name: &str, default: &[MatchStrategy]| {
        tls_policy::parse_cert_match(config.text(name)).unwrap_or_else(|e| {
            diagnostics.push(config.problem(name, e));
            default.to_vec()
        })
    };
    let secure_cert_match = cert_match("smtp_tls_secure_cert_match", &d.secure_cert_match);
    let verify_cert_match = cert_match("smtp_tls_verify_cert_match", &d.verify_cert_match);
    let line_length_limit = line_length_limit(config).unwrap_or_else(|e| {
        diagnostics.push(e);
        d.line_length_limit
    });
    let settings = ClientSettings {
        // The delivery engine sets it per next hop.
        self_check: None,
        helo_name: String::from(config.text("smtp_helo_name")),
        tls_level,
        command_timeout,
        data_done_timeout,
        secure_cert_match,
        verify_cert_match,
        line_length_limit,
    };
    (settings, diagnostics)
}

/// `smtp_line_length_limit`: 0 (no limit) or at least 2, since each broken-off piece starts
/// with a space and must still carry one octet of the line.
fn line_length_limit(config: &Config) -> Result<usize, Diagnostic> {
    const NAME: &str = "smtp_line_length_limit";
    match config.number(NAME)? {
        1 => Err(config.problem(NAME, "use 0 (no limit) or at least 2")),
        n => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
    }
}

/// Warnings about the per-site TLS tables: `smtp_tls_policy_maps` is not read by certrelay,
/// and while it is set `smtp_tls_per_site` is ignored.
pub fn check_tls_maps(config: &Config) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if !policy_maps_set(config) {
        return out;
    }
    out.push(Diagnostic::warning(
        &config.location("smtp_tls_policy_maps"),
        "smtp_tls_policy_maps is not supported by certrelay; use smtp_tls_per_site or \
         smtp_tls_security_level",
    ));
    if !config.text("smtp_tls_per_site").trim().is_empty() {
        out.push(Diagnostic::warning(
            &config.location("smtp_tls_per_site"),
            "smtp_tls_per_site is ignored because smtp_tls_policy_maps is set",
        ));
    }
    out
}

/// True when `smtp_tls_policy_maps` has a value (which switches `smtp_tls_per_site` off).
pub fn policy_maps_set(config: &Config) -> bool {
    !config.text("smtp_tls_policy_maps").trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls_policy::TlsLevel;
    use alloc::string::ToString;

    fn load(text: &str) -> Config {
        Config::parse("main.cf", text).0
    }

    #[test]
    fn seed_client_is_verify() {
        let c = load(
            "myhostname = laptop.example\n\
             relayhost = [kaoru.asyd.net]:2526\n\
             smtp_use_tls = yes\n\
             smtp_enforce_tls = yes\n\
             smtp_tls_CAfile = /etc/postfix/ca.pem\n\
             smtp_tls_cert_file = /etc/postfix/laptop.pem\n",
        );
        let (s, d) = client_settings(&c);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(s.tls_level, TlsLevel::Verify);
        assert_eq!(s.helo_name, "laptop.example");
        assert_eq!(s.command_timeout, Duration::from_secs(300));
        assert_eq!(s.data_done_timeout, Duration::from_secs(600));
        assert_eq!(c.text("smtp_tls_key_file"), "/etc/postfix/laptop.pem");
        assert_eq!(c.relayhost().unwrap()[0].port, 2526);
    }

    #[test]
    fn levels_from_main_cf() {
        let cases = [
            ("", TlsLevel::None),
            ("smtp_use_tls = yes", TlsLevel::May),
            (
                "smtp_enforce_tls = yes\nsmtp_tls_enforce_peername = no",
                TlsLevel::Encrypt,
            ),
            (
                "smtp_enforce_tls = yes\nsmtp_tls_security_level = may",
                TlsLevel::May,
            ),
            ("smtp_tls_security_level = secure", TlsLevel::Secure),
        ];
        for (text, want) in cases {
            assert_eq!(load(text).smtp_tls_level(), Ok(want), "{text}");
        }
        let err = load("\nsmtp_tls_security_level = fingerprint")
            .smtp_tls_level()
            .unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("not supported"), "{err}");
        let err = load("smtp_use_tls = maybe").smtp_tls_level().unwrap_err();
        assert_eq!(
            err.to_string(),
            "main.cf:1: error: smtp_use_tls = maybe: expected yes or no"
        );
    }

    #[test]
    fn cert_match_and_line_limit() {
        use MatchStrategy as M;
        let (s, d) = client_settings(&load(""));
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(s.secure_cert_match, [M::Nexthop, M::DotNexthop]);
        assert_eq!(s.verify_cert_match, [M::Hostname]);
        assert_eq!(s.line_length_limit, 998);
        let (s, d) = client_settings(&load(
            "smtp_tls_secure_cert_match = nexthop\n\
             smtp_tls_verify_cert_match = hostname, nexthop\n\
             smtp_line_length_limit = 0\n",
        ));
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(s.secure_cert_match, [M::Nexthop]);
        assert_eq!(s.verify_cert_match, [M::Hostname, M::Nexthop]);
        assert_eq!(s.line_length_limit, 0);
        let (s, d) = client_settings(&load(
            "smtp_tls_secure_cert_match = nexthop, bad_name\n\
             smtp_line_length_limit = 1\n\
             smtp_tls_verify_cert_match =\n",
        ));
        let shown: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 3, "{shown:?}");
        assert!(shown[0].starts_with("main.cf:1: error: "), "{shown:?}");
        assert!(shown[0].contains("\"bad_name\""), "{shown:?}");
        assert!(shown[1].starts_with("main.cf:3: error: "), "{shown:?}");
        assert!(
            shown[1].contains("empty certificate match list"),
            "{shown:?}"
        );
        assert!(shown[2].starts_with("main.cf:2: error: "), "{shown:?}");
        assert!(shown[2].contains("at least 2"), "{shown:?}");
        assert_eq!(
            s.secure_cert_match,
            [M::Nexthop, M::DotNexthop],
            "default kept"
        );
        assert_eq!(s.line_length_limit, 998);
    }

    #[test]
    fn timeouts_and_bad_values() {
        let c = load("smtp_rcpt_timeout = 10m\nsmtp_data_done_timeout = soon\n");
        let (s, d) = client_settings(&c);
        assert_eq!(s.command_timeout, Duration::from_secs(600));
        assert_eq!(s.data_done_timeout, Duration::from_secs(600));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].line, 2);
    }

    #[test]
    fn policy_maps_switch_per_site_off() {
        let c = load("smtp_tls_per_site = hash:/etc/postfix/tls_per_site\n");
        assert!(check_tls_maps(&c).is_empty());
        assert!(!policy_maps_set(&c));
        let c = load(
            "smtp_tls_per_site = hash:/etc/postfix/tls_per_site\n\
             smtp_tls_policy_maps = hash:/etc/postfix/tls_policy\n",
        );
        assert!(policy_maps_set(&c));
        let shown: Vec<String> = check_tls_maps(&c).iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "main.cf:2: warning: smtp_tls_policy_maps is not supported by certrelay; use smtp_tls_per_site or smtp_tls_security_level",
                "main.cf:1: warning: smtp_tls_per_site is ignored because smtp_tls_policy_maps is set",
            ]
        );
        assert_eq!(
            c.tables("smtp_tls_per_site").unwrap()[0].path,
            "/etc/postfix/tls_per_site"
        );
    }
}
