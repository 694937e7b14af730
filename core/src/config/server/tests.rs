use super::*;
use crate::config::master_cf;
use crate::net::Cidr;
use alloc::string::ToString;
use core::time::Duration;

fn settings(text: &str) -> (ServerSettings, Vec<String>) {
    let (config, d) = Config::parse("main.cf", text);
    assert!(d.iter().all(|d| !d.is_error()), "{d:?}");
    let (s, d) = server_settings(&config);
    (s, d.iter().map(ToString::to_string).collect())
}

#[test]
fn defaults_match_settings_default() {
    let (s, d) = settings("");
    assert!(d.is_empty(), "{d:?}");
    let want = ServerSettings {
        mynetworks: alloc::vec![
            Cidr::parse("127.0.0.0/8").unwrap(),
            Cidr::parse("[::1]/128").unwrap()
        ],
        mydestination: alloc::vec![
            "localhost".into(),
            "localhost.localdomain".into(),
            "localhost".into()
        ],
        ..ServerSettings::default()
    };
    assert_eq!(s, want);
}

#[test]
fn tls_level_table() {
    use ServerTlsLevel::*;
    // (main.cf, level, ask, req)
    let cases: &[(&str, ServerTlsLevel, bool, bool)] = &[
        ("", None, false, false),
        ("smtpd_use_tls = yes", May, false, false),
        ("smtpd_enforce_tls = yes", Encrypt, false, false),
        (
            "smtpd_use_tls = yes\nsmtpd_enforce_tls = yes",
            Encrypt,
            false,
            false,
        ),
        (
            "smtpd_use_tls = yes\nsmtpd_tls_security_level = none",
            None,
            false,
            false,
        ),
        (
            "smtpd_enforce_tls = yes\nsmtpd_tls_security_level = may",
            May,
            false,
            false,
        ),
        ("smtpd_tls_security_level = ENCRYPT", Encrypt, false, false),
        (
            "smtpd_use_tls = yes\nsmtpd_tls_ask_ccert = yes",
            May,
            true,
            false,
        ),
        (
            "smtpd_use_tls = yes\nsmtpd_tls_req_ccert = yes",
            Encrypt,
            true,
            true,
        ),
        (
            "smtpd_tls_security_level = may\nsmtpd_tls_req_ccert = yes",
            Encrypt,
            true,
            true,
        ),
        ("smtpd_tls_req_ccert = yes", Encrypt, true, true),
    ];
    for &(text, level, ask, req) in cases {
        let text = alloc::format!("smtpd_tls_cert_file = /c.pem\n{text}");
        let (s, _) = settings(&text);
        assert_eq!(
            (s.tls_level, s.ask_ccert, s.req_ccert),
            (level, ask, req),
            "{text}"
        );
    }
}

#[test]
fn req_ccert_says_so_once() {
    let (_, d) = settings("smtpd_tls_cert_file = /c.pem\nsmtpd_tls_req_ccert = yes\n");
    assert_eq!(
        d,
        ["main.cf:2: notice: smtpd_tls_req_ccert = yes: TLS is mandatory (as smtpd_tls_security_level = encrypt) and clients must present a trusted certificate"]
    );
}

#[test]
fn tls_without_certificate_warns() {
    let (_, d) = settings("smtpd_use_tls = yes\n");
    assert_eq!(d.len(), 1);
    assert!(
        d[0].starts_with("main.cf: warning: TLS is enabled but smtpd_tls_cert_file is empty"),
        "{d:?}"
    );
}

#[test]
fn bad_values_are_errors_with_place() {
    let cases = [
        ("smtpd_tls_security_level = verify", "main.cf:1: error: smtpd_tls_security_level = verify: expected none, may or encrypt"),
        ("smtpd_use_tls = maybe", "main.cf:1: error: smtpd_use_tls = maybe: expected yes or no"),
        ("smtpd_forbid_bare_newline = sometimes", "main.cf:1: error: smtpd_forbid_bare_newline = sometimes: expected reject, normalize, yes or no"),
        ("smtpd_timeout = 5 minutes", "main.cf:1: error: smtpd_timeout = 5 minutes: expected a time: a number with an optional unit s, m, h, d or w"),
        ("mynetworks = 10.1.0.0/8", "main.cf:1: error: mynetworks = 10.1.0.0/8: \"10.1.0.0/8\" has address bits set beyond its prefix; write \"10.0.0.0/8\""),
        ("smtpd_recipient_limit = 99999999999999999999", "main.cf:1: error: smtpd_recipient_limit = 99999999999999999999: expected a whole number"),
        ("smtpd_hard_error_limit = 99999999999", "main.cf:1: error: smtpd_hard_error_limit = 99999999999: number too large"),
    ];
    for (text, want) in cases {
        let (_, d) = settings(text);
        assert!(d.iter().any(|m| m == want), "{text}: {d:?}");
    }
}

#[test]
fn values_carried_over() {
    let (s, d) = settings(
        "myhostname = Kaoru.asyd.net\n\
         message_size_limit = 0\n\
         smtpd_recipient_limit = 50\n\
         smtpd_timeout = 1m\n\
         smtpd_hard_error_limit = 3\n\
         smtpd_tls_loglevel = 2\n\
         smtpd_tls_received_header = yes\n\
         smtpd_forbid_bare_newline = normalize\n\
         mynetworks = 192.0.2.0/24\n\
         mydestination = $myhostname, Example.COM.\n\
         relay_domains = Partner.example\n",
    );
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(s.myhostname, "Kaoru.asyd.net");
    assert_eq!(s.banner, "Kaoru.asyd.net ESMTP certrelay");
    assert_eq!(s.message_size_limit, 0);
    assert_eq!(s.recipient_limit, 50);
    assert_eq!(s.timeout, Duration::from_secs(60));
    assert_eq!(s.hard_error_limit, 3);
    assert_eq!(s.tls_loglevel, 2);
    assert!(s.tls_received_header);
    assert_eq!(s.bare_newline, BareNewline::Normalize);
    assert_eq!(s.mynetworks, [Cidr::parse("192.0.2.0/24").unwrap()]);
    assert_eq!(s.mydestination, ["kaoru.asyd.net", "example.com"]);
    assert_eq!(s.relay_domains, ["partner.example"]);
}

#[test]
fn bare_newline_no_is_normalize_with_warning() {
    let (s, d) = settings("smtpd_forbid_bare_newline = no");
    assert_eq!(s.bare_newline, BareNewline::Normalize);
    assert_eq!(d.len(), 1);
    assert!(d[0].contains("warning"));
}

#[test]
fn restriction_names() {
    let (s, d) = settings(
        "smtpd_relay_restrictions = permit_tls_all_clientcerts, defer_unauth_destination\n\
         smtpd_recipient_restrictions = permit_mynetworks permit_tls_clientcerts reject\n",
    );
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(
        s.relay_restrictions,
        [
            Restriction::PermitTlsAllClientcerts,
            Restriction::DeferUnauthDestination
        ]
    );
    assert_eq!(
        s.recipient_restrictions,
        [
            Restriction::PermitMynetworks,
            Restriction::PermitTlsClientcerts,
            Restriction::Reject
        ]
    );
    let (s, d) = settings(
        "\nsmtpd_recipient_restrictions = permit_mynetworks, check_client_access hash:/x, reject_unauth_destination\n",
    );
    assert_eq!(
        s.recipient_restrictions,
        [
            Restriction::PermitMynetworks,
            Restriction::RejectUnauthDestination
        ]
    );
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(
        d[0].starts_with("main.cf:2: error: smtpd_recipient_restrictions = "),
        "{d:?}"
    );
    assert!(d[0].contains(
        "unknown restriction \"check_client_access\"; certrelay knows permit_mynetworks"
    ));
    assert!(d[1].contains("unknown restriction \"hash:/x\""));
}

/// SPEC A2: (relay list, recipient list, open relay?)
#[test]
fn open_relay_refused() {
    let cases: &[(&str, &str, bool)] = &[
        (
            "",
            "permit_mynetworks, permit_tls_clientcerts, reject_unauth_destination",
            false,
        ),
        ("", "permit_mynetworks, defer_unauth_destination", false),
        ("", "permit_mynetworks, reject", false),
        ("reject_unauth_destination", "permit", false),
        ("permit_mynetworks, reject_unauth_destination", "", false),
        ("", "", true),
        ("", "permit_mynetworks, permit_tls_clientcerts", true),
        ("", "permit, reject_unauth_destination", true),
        ("permit, reject", "permit_mynetworks", true),
        ("permit_mynetworks", "permit_tls_all_clientcerts", true),
    ];
    for &(relay, recipient, open) in cases {
        let text = alloc::format!(
            "smtpd_relay_restrictions = {relay}\nsmtpd_recipient_restrictions = {recipient}\n"
        );
        let (_, d) = settings(&text);
        let refused = d.iter().any(|m| m.contains("open relay"));
        assert_eq!(refused, open, "{relay} / {recipient}: {d:?}");
    }
    let (_, d) = settings("\n\nsmtpd_recipient_restrictions = permit_mynetworks\n");
    assert_eq!(
        d,
        ["main.cf:3: error: smtpd_recipient_restrictions = permit_mynetworks: this would make an open relay: neither smtpd_relay_restrictions nor smtpd_recipient_restrictions reaches reject_unauth_destination, defer_unauth_destination or reject; end smtpd_recipient_restrictions with reject_unauth_destination (for example: permit_mynetworks, permit_tls_clientcerts, reject_unauth_destination)"]
    );
}

#[test]
fn listener_overrides_apply() {
    let (config, _) = Config::parse(
        "main.cf",
        "myhostname = kaoru.asyd.net\nsmtpd_tls_cert_file = /k.pem\nsmtpd_use_tls = yes\n",
    );
    let master = "smtp inet n - y - - smtpd\n\
                  127.0.0.1:2526 inet n - y - - smtpd\n  -o smtpd_tls_req_ccert=yes\n  -o { smtpd_banner = $myhostname relay }\n  -o nonsense=1\n";
    let (listeners, _) = master_cf::parse("master.cf", master);
    let (plain, d) = listener_settings(&config, &listeners[0]);
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(plain.tls_level, ServerTlsLevel::May);
    assert_eq!(plain.banner, "kaoru.asyd.net ESMTP certrelay");
    let (relay, d) = listener_settings(&config, &listeners[1]);
    assert_eq!(
        (relay.tls_level, relay.req_ccert),
        (ServerTlsLevel::Encrypt, true)
    );
    assert_eq!(relay.banner, "kaoru.asyd.net relay");
    let shown: Vec<String> = d.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert_eq!(
        shown[0],
        "master.cf:2: warning: unused parameter: nonsense=1"
    );
    assert!(shown[1].starts_with("master.cf:2: notice: smtpd_tls_req_ccert = yes"));
}

#[test]
fn sender_ccert_rule_and_map_go_together() {
    let map = "smtpd_sender_ccert_maps = texthash:/etc/certrelay/senders\n";
    let rule = "smtpd_relay_restrictions = permit_mynetworks, reject_sender_ccert_mismatch, \
                permit_tls_clientcerts, reject_unauth_destination\n";
    // Both: quiet, and the rule reads.
    let (s, d) = settings(&alloc::format!("{map}{rule}"));
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(
        s.relay_restrictions[1],
        Restriction::RejectSenderCcertMismatch
    );
    // The rule without the map refuses the configuration, at the list's line.
    let (_, d) = settings(&alloc::format!("\n{rule}"));
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].starts_with("main.cf:2: error: smtpd_relay_restrictions = ")
            && d[0].contains("reject_sender_ccert_mismatch needs smtpd_sender_ccert_maps"),
        "{d:?}"
    );
    // The map without the rule: a warning at the map's line.
    let (_, d) = settings(&alloc::format!("\n\n{map}"));
    assert_eq!(
        d,
        ["main.cf:3: warning: smtpd_sender_ccert_maps is set but neither smtpd_relay_restrictions nor smtpd_recipient_restrictions has reject_sender_ccert_mismatch: the map restricts nothing"]
    );
    // After a rule that permits a listed certificate, it never applies.
    for before in ["permit_tls_clientcerts", "permit_tls_all_clientcerts"] {
        let (_, d) = settings(&alloc::format!(
            "{map}smtpd_recipient_restrictions = {before}, reject_sender_ccert_mismatch, \
             reject_unauth_destination\n"
        ));
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].starts_with("main.cf:2: warning: reject_sender_ccert_mismatch comes after")
                && d[0].contains(before),
            "{d:?}"
        );
    }
    // Another table type than text is refused at the map's line.
    let (_, d) = settings("smtpd_sender_ccert_maps = ldap:/etc/x.cf\n");
    assert!(
        d.iter()
            .any(|m| m.starts_with("main.cf:1: error: smtpd_sender_ccert_maps")),
        "{d:?}"
    );
    // A name certrelay does not know stays refused.
    let (_, d) = settings(&alloc::format!(
        "{map}smtpd_relay_restrictions = reject_sender_ccert_mismatches, reject_unauth_destination\n"
    ));
    assert!(
        d.iter()
            .any(|m| m.contains("unknown restriction \"reject_sender_ccert_mismatches\"")),
        "{d:?}"
    );
}

#[test]
fn upstream_proxy_is_off_by_default_and_reads_haproxy_with_its_timeout() {
    let read = |text: &str| {
        let (config, d) = Config::parse("main.cf", text);
        assert!(d.iter().all(|d| !d.is_error()), "{d:?}");
        upstream_proxy(&config).map_err(|d| d.to_string())
    };
    assert_eq!(read(""), Ok(None));
    assert_eq!(
        read("smtpd_upstream_proxy_protocol = haproxy"),
        Ok(Some(Duration::from_secs(5)))
    );
    assert_eq!(
        read("smtpd_upstream_proxy_protocol = haproxy\nsmtpd_upstream_proxy_timeout = 2"),
        Ok(Some(Duration::from_secs(2)))
    );
    let wrong = read("smtpd_upstream_proxy_protocol = proxy-v2").unwrap_err();
    assert!(
        wrong.contains("main.cf:1") && wrong.contains("expected haproxy"),
        "{wrong}"
    );
    let zero = read("smtpd_upstream_proxy_protocol = haproxy\nsmtpd_upstream_proxy_timeout = 0")
        .unwrap_err();
    assert!(zero.contains("main.cf:2"), "{zero}");
    // The settings check reports the same problem, so that `certrelayd check` shows it.
    let (_, d) = server_settings(&Config::parse("main.cf", "smtpd_upstream_proxy_protocol = v2").0);
    assert!(d.iter().any(|d| d.is_error()), "{d:?}");
}
