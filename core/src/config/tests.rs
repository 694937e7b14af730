use super::*;
use crate::fingerprint::DigestKind;
use alloc::string::ToString;
use core::time::Duration;

fn load(text: &str) -> (Config, Vec<String>) {
    let (c, d) = Config::parse("main.cf", text);
    (c, d.iter().map(ToString::to_string).collect())
}

#[test]
fn defaults_expand() {
    let (c, d) = load("");
    assert!(d.is_empty(), "{d:?}");
    let cases = [
        ("myhostname", "localhost"),
        ("mydomain", "localdomain"),
        ("smtpd_banner", "localhost ESMTP certrelay"),
        (
            "mydestination",
            "localhost, localhost.localdomain, localhost",
        ),
        ("smtpd_relay_restrictions", ""),
        (
            "smtpd_recipient_restrictions",
            "permit_mynetworks, permit_tls_clientcerts, reject_unauth_destination",
        ),
        ("smtpd_forbid_bare_newline", "reject"),
        ("bounce_queue_lifetime", "5d"),
        ("nonexistent", ""),
    ];
    for (name, want) in cases {
        assert_eq!(c.text(name), want, "{name}");
    }
    assert!(c.get("nonexistent").is_none());
    assert_eq!(c.non_default().count(), 0);
}

#[test]
fn seed_main_cf() {
    let (c, d) = load(
        "# seed\n\
         myhostname = kaoru.asyd.net\n\
         smtpd_tls_cert_file = /etc/postfix/kaoru.pem\n\
         smtpd_tls_CAfile = /etc/postfix/ca.pem\n\
         smtpd_tls_ask_ccert = yes\n\
         smtpd_use_tls = yes\n\
         relay_clientcerts = hash:/etc/postfix/relay_clientcerts\n\
         smtpd_recipient_restrictions = permit_mynetworks,\n\
         \tpermit_tls_clientcerts,\n\
         \treject_unauth_destination\n",
    );
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(c.text("mydomain"), "asyd.net");
    assert_eq!(c.text("smtpd_banner"), "kaoru.asyd.net ESMTP certrelay");
    assert_eq!(
        c.text("mydestination"),
        "kaoru.asyd.net, localhost.asyd.net, localhost"
    );
    assert_eq!(c.text("smtpd_tls_key_file"), "/etc/postfix/kaoru.pem");
    assert_eq!(
        c.location("smtpd_recipient_restrictions"),
        Location::new("main.cf", 8)
    );
    assert_eq!(
        c.tables("relay_clientcerts").unwrap()[0].path,
        "/etc/postfix/relay_clientcerts"
    );
    let set: Vec<&str> = c.non_default().map(|(n, _)| n).collect();
    assert_eq!(
        set,
        [
            "myhostname",
            "relay_clientcerts",
            "smtpd_recipient_restrictions",
            "smtpd_tls_CAfile",
            "smtpd_tls_ask_ccert",
            "smtpd_tls_cert_file",
            "smtpd_use_tls",
        ]
    );
    assert_eq!(c.ccert_verifydepth(), Ok(9));
    assert_eq!(c.fingerprint_digest(), Ok(None));
}

#[test]
fn values_remember_raw_text_and_place() {
    let (c, _) = load("a_b = 1\nsmtpd_banner = $myhostname hi\n");
    let v = c.get("smtpd_banner").unwrap();
    assert_eq!(v.raw, "$myhostname hi");
    assert_eq!(v.text, "localhost hi");
    assert_eq!(v.origin, Origin::Set(Location::new("main.cf", 2)));
    assert_eq!(c.get("myhostname").unwrap().origin, Origin::Default);
}

#[test]
fn syntax_and_expansion_diagnostics() {
    let (c, d) = load(
        "myhostname = mx.example\n\
         last = one\n\
         smtpd_banner = $myhostname $undefined_thing\n\
         no equals here\n\
         last = two\n\
         relayhost = $relayhost\n\
         mail_name = ${myhostname?certrelay on $myhostname}\n\
         mydestination = ${unset_thing:fallback}\n",
    );
    assert_eq!(c.text("last"), "two");
    assert_eq!(c.text("mail_name"), "certrelay on mx.example");
    assert_eq!(c.text("mydestination"), "fallback");
    assert_eq!(
        d,
        [
            "main.cf:3: warning: undefined parameter $undefined_thing expanded as empty",
            "main.cf:4: error: missing \"=\" in \"no equals here\": write settings as name = value",
            "main.cf:5: warning: unused parameter: last=two",
            "main.cf:6: error: parameter expansion loop: $relayhost -> $relayhost",
        ]
    );
}

#[test]
fn unknown_parameters_referenced_are_used() {
    let (c, d) = load("my_ca = /etc/ca.pem\nsmtpd_tls_CAfile = $my_ca\nstray = 1\n");
    assert_eq!(c.text("smtpd_tls_CAfile"), "/etc/ca.pem");
    assert_eq!(d, ["main.cf:3: warning: unused parameter: stray=1"]);
}

#[test]
fn ignored_postfix_parameters() {
    let (_, d) = load(
        "biff = no\ncompatibility_level = 3.6\nalias_maps = hash:/etc/aliases\n\
         smtpd_tls_session_cache_database = btree:${data_directory}/smtpd_scache\n",
    );
    assert_eq!(
        d,
        ["main.cf:3: warning: alias_maps is ignored: certrelay does no local delivery"]
    );
}

#[test]
fn shell_defaults_and_overrides() {
    let (c, d) = Config::parse_with_defaults(
        "main.cf",
        "smtpd_banner = $myhostname ready\nfoo = 1\n",
        &[("myhostname", "host.example.org")],
    );
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(c.text("mydomain"), "example.org");
    assert_eq!(c.text("smtpd_banner"), "host.example.org ready");
    assert!(!c.is_set("myhostname"));
    let (c2, _) = Config::parse_with_defaults(
        "main.cf",
        "myhostname = set.example\n",
        &[("myhostname", "host.example.org")],
    );
    assert_eq!(c2.text("myhostname"), "set.example");

    let overrides = [
        Override {
            name: "myhostname".into(),
            value: "relay.example".into(),
            location: Location::new("master.cf", 7),
        },
        Override {
            name: "bogus_param".into(),
            value: "x".into(),
            location: Location::new("master.cf", 7),
        },
        Override {
            name: "bad name".into(),
            value: "x".into(),
            location: Location::new("command line", 0),
        },
    ];
    let (o, d) = c.with_overrides(&overrides);
    assert_eq!(o.text("smtpd_banner"), "relay.example ready");
    assert_eq!(o.location("myhostname"), Location::new("master.cf", 7));
    let shown: Vec<String> = d.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "command line: error: invalid parameter name \"bad name\" in override",
            "master.cf:7: warning: unused parameter: bogus_param=x",
        ]
    );
    assert_eq!(
        c.text("smtpd_banner"),
        "host.example.org ready",
        "original untouched"
    );
}

#[test]
fn typed_getters() {
    let (c, _) = load(
        "smtpd_tls_ask_ccert = YES\n\
         smtpd_tls_req_ccert = sometimes\n\
         maximal_queue_lifetime = 2\n\
         bounce_queue_lifetime = 1h\n\
         smtpd_timeout = 2m\n\
         queue_run_delay = soon\n\
         message_size_limit = 1k\n\
         smtpd_tls_fingerprint_digest = SHA256\n\
         inet_interfaces = 127.0.0.1, [::1]\n",
    );
    assert_eq!(c.bool("smtpd_tls_ask_ccert"), Ok(true));
    assert_eq!(
        c.bool("smtpd_tls_req_ccert").unwrap_err().to_string(),
        "main.cf:2: error: smtpd_tls_req_ccert = sometimes: expected yes or no"
    );
    assert_eq!(
        c.time("maximal_queue_lifetime"),
        Ok(Duration::from_secs(2 * 86_400))
    );
    assert_eq!(
        c.time("bounce_queue_lifetime"),
        Ok(Duration::from_secs(3600))
    );
    assert_eq!(c.time("smtpd_timeout"), Ok(Duration::from_secs(120)));
    assert_eq!(c.time("minimal_backoff_time"), Ok(Duration::from_secs(300)));
    assert_eq!(
        c.time("maximal_backoff_time"),
        Ok(Duration::from_secs(4000))
    );
    assert_eq!(
        c.time("smtpd_tls_session_cache_timeout"),
        Ok(Duration::from_secs(3600))
    );
    assert_eq!(c.time("queue_run_delay").unwrap_err().line, 6);
    assert_eq!(c.number("message_size_limit").unwrap_err().line, 7);
    assert_eq!(c.fingerprint_digest(), Ok(Some(DigestKind::Sha256)));
    assert_eq!(c.list("inet_interfaces"), ["127.0.0.1", "[::1]"]);
    assert_eq!(c.text("queue_directory"), "/var/spool/certrelay");
    let (c, _) = load("smtpd_tls_fingerprint_digest = sha3\n");
    assert!(c
        .fingerprint_digest()
        .unwrap_err()
        .message
        .contains("use md5, sha1, sha256 or sha512"));
    let (c, _) = load("relayhost = [a.example]:x\nmynetworks = 10.0.0.1/8\n");
    assert_eq!(c.relayhost().unwrap_err().line, 1);
    assert_eq!(c.mynetworks().unwrap_err().line, 2);
}

proptest::proptest! {
    #[test]
    fn parser_never_panics(text in ".*") {
        let (c, _) = Config::parse("main.cf", &text);
        let _ = c.with_overrides(&[]);
    }

    #[test]
    fn parser_never_panics_on_config_like_text(
        text in "([a-c_]{1,3}[ \t]*=[ \t]*([a-c ,#]|\\$[a-c(){}?:$]?){0,12}|[ \t]+[$a-c{}()?:]{0,6}|#.*)?(\r?\n([a-c_]{1,3} ?= ?([a-c ]|\\$[a-c(){}?:$]?){0,12}|[ \t]+[$a-c{}()?:]{0,6}|#[^\n]*)?){0,12}"
    ) {
        let (c, d) = Config::parse("main.cf", &text);
        for diag in &d {
            proptest::prop_assert!(diag.line as usize <= text.split('\n').count());
        }
        let _ = server::server_settings(&c);
        let _ = client::client_settings(&c);
    }
}
