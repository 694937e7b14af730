//! TLS level `secure` against a forged MX answer: the server certificate must name the
//! next-hop domain (`smtp_tls_secure_cert_match`), never the MX host DNS gave us. A name
//! server on 127.0.0.1 plays the forged DNS; sinks with certificates from a trusted CA play
//! the servers.

mod common;

use certrelay_core::queue::RecipientState;
use certrelay_core::tls_policy::{MatchStrategy, TlsLevel};
use certrelay_shell::delivery::resolver::Resolver;
use certrelay_shell::delivery::route::NextHop;
use certrelay_shell::delivery::runner::{QueueRunner, RunnerConfig};
use certrelay_testkit::dns::{DnsServer, Rr};
use certrelay_testkit::pki::Ca;
use certrelay_testkit::sink::{Sink, SinkOptions};
use common::*;
use std::collections::HashMap;
use std::time::Duration;

/// A sink offering STARTTLS with a certificate from `ca` that names `names` only.
fn tls_sink(ca: &Ca, names: &[&str]) -> Sink {
    let server = server_tls(&ca.issue(names[0], names, false));
    Sink::start(SinkOptions {
        tls: Some(server),
        ..SinkOptions::default()
    })
}

/// DNS where `domains` all have one MX, `mx.attacker.test`, at 127.0.0.1.
fn forged_dns(domains: &[&'static str]) -> DnsServer {
    let mut zone: HashMap<&'static str, Vec<Rr>> =
        HashMap::from([("mx.attacker.test", vec![Rr::A([127, 0, 0, 1])])]);
    for domain in domains {
        zone.insert(domain, vec![Rr::Mx(10, "mx.attacker.test")]);
    }
    DnsServer::start(zone)
}

/// A runner delivering by MX to the sink's port through `dns`, trusting `ca`.
fn mx_runner(
    t: &TempSpool,
    sink: &Sink,
    dns: &DnsServer,
    ca: &Ca,
    edit: impl FnOnce(&mut RunnerConfig),
) -> QueueRunner {
    let mut c = config(Vec::new(), TlsLevel::Secure);
    c.smtp_port = sink.port();
    edit(&mut c);
    let resolver = Resolver::new(vec![dns.addr]).with_timeout(Duration::from_secs(2), 2);
    QueueRunner::new(t.spool.clone(), c, client_tls(Some(&ca.cert_der)), resolver)
}

/// Queues one message to `rcpt` and runs the queue once; the recipient's state, DSN and
/// reason afterwards (delivered: removed from the queue).
fn deliver_once(t: &TempSpool, r: &QueueRunner, rcpt: &str) -> Option<(String, String)> {
    let id = queue(&t.spool, "alice@example.org", &[rcpt], BODY);
    run(r.run_once(true));
    if !t.spool.ids().unwrap().contains(&id) {
        return None;
    }
    let env = read_envelope(&t.spool, &id);
    let rcpt = &env.recipients[0];
    assert_eq!(rcpt.state, RecipientState::Deferred, "{rcpt:?}");
    Some((rcpt.dsn.clone(), rcpt.reason.clone()))
}

const NOT_VERIFIED: (&str, &str) = ("4.7.5", "Server certificate not verified");

fn not_verified() -> Option<(String, String)> {
    Some((NOT_VERIFIED.0.into(), NOT_VERIFIED.1.into()))
}

#[test]
fn a_forged_mx_whose_certificate_names_the_mx_host_is_refused_at_secure() {
    let ca = Ca::new("Public CA");
    // The attacker's chain is valid: the CA vouches for its own host name.
    let sink = tls_sink(&ca, &["mx.attacker.test"]);
    let dns = forged_dns(&["example.test"]);
    let t = temp_spool("secure-forged");
    let r = mx_runner(&t, &sink, &dns, &ca, |_| {});
    assert_eq!(deliver_once(&t, &r, "bob@example.test"), not_verified());
    assert!(sink.messages().is_empty(), "nothing reached the attacker");
    assert_eq!(sink.connection_count(), 1, "the handshake did happen");

    // `verify` trusts the MX host's name: the same forged answer gets the mail.
    let t = temp_spool("verify-forged");
    let r = mx_runner(&t, &sink, &dns, &ca, |c| {
        c.client.tls_level = TlsLevel::Verify
    });
    assert_eq!(deliver_once(&t, &r, "bob@example.test"), None);
    assert_eq!(sink.messages().len(), 1);
}

#[test]
fn a_certificate_naming_the_next_hop_domain_is_accepted_at_secure() {
    let ca = Ca::new("Public CA");
    let sink = tls_sink(&ca, &["Example.TEST"]);
    let dns = forged_dns(&["example.test"]);
    let t = temp_spool("secure-nexthop");
    let r = mx_runner(&t, &sink, &dns, &ca, |_| {});
    assert_eq!(deliver_once(&t, &r, "bob@EXAMPLE.test"), None);
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    assert!(got[0].tls);
    assert_eq!(got[0].text(), BODY);

    // A literal entry names a host outright.
    let sink = tls_sink(&ca, &["mail.provider.test"]);
    let t = temp_spool("secure-literal");
    let r = mx_runner(&t, &sink, &dns, &ca, |c| {
        c.client.secure_cert_match = vec![MatchStrategy::Literal("mail.provider.test".into())];
    });
    assert_eq!(deliver_once(&t, &r, "bob@example.test"), None);
}

#[test]
fn a_subdomain_certificate_needs_dot_nexthop() {
    let ca = Ca::new("Public CA");
    let sink = tls_sink(&ca, &["mail.example.test"]);
    let dns = forged_dns(&["example.test"]);
    let t = temp_spool("secure-dot-nexthop");
    let r = mx_runner(&t, &sink, &dns, &ca, |_| {});
    assert_eq!(deliver_once(&t, &r, "bob@example.test"), None, "default");

    let t = temp_spool("secure-nexthop-only");
    let r = mx_runner(&t, &sink, &dns, &ca, |c| {
        c.client.secure_cert_match = vec![MatchStrategy::Nexthop];
    });
    assert_eq!(deliver_once(&t, &r, "bob@example.test"), not_verified());
    assert_eq!(sink.messages().len(), 1, "only the first one");
}

#[test]
fn a_connection_checked_for_one_domain_is_not_reused_for_another() {
    // Two domains share the MX host; its certificate names only one of them.
    let ca = Ca::new("Public CA");
    let sink = tls_sink(&ca, &["good.test"]);
    let dns = forged_dns(&["good.test", "victim.test"]);
    let t = temp_spool("secure-reuse");
    let r = mx_runner(&t, &sink, &dns, &ca, |_| {}).keep_connections();
    assert_eq!(deliver_once(&t, &r, "bob@good.test"), None);
    assert_eq!(deliver_once(&t, &r, "bob@victim.test"), not_verified());
    assert_eq!(sink.messages().len(), 1);
    assert_eq!(sink.connection_count(), 2, "a new connection, checked anew");
    run(r.close_idle_connections());
}

#[test]
fn a_bracketed_relayhost_is_its_own_next_hop_domain() {
    // `[localhost]` is looked up without MX; its certificate must name localhost.
    let ca = Ca::new("Relay CA");
    let hop = |sink: &Sink| NextHop::parse(&format!("[localhost]:{}", sink.port())).unwrap();
    let good = tls_sink(&ca, &["localhost"]);
    let t = temp_spool("secure-relayhost");
    let r = runner(
        &t.spool,
        config(vec![hop(&good)], TlsLevel::Secure),
        client_tls(Some(&ca.cert_der)),
    );
    assert_eq!(deliver_once(&t, &r, "bob@example.test"), None);
    assert_eq!(good.messages().len(), 1);

    let other = tls_sink(&ca, &["relay.example.net"]);
    let t = temp_spool("secure-relayhost-other");
    let r = runner(
        &t.spool,
        config(vec![hop(&other)], TlsLevel::Secure),
        client_tls(Some(&ca.cert_der)),
    );
    // localhost may also resolve to ::1, where nothing listens: that try may come last.
    let (dsn, reason) = deliver_once(&t, &r, "bob@example.test").expect("deferred");
    assert!(
        (dsn.as_str(), reason.as_str()) == NOT_VERIFIED
            || reason.contains("[::1]") && reason.ends_with("Connection refused"),
        "{dsn} {reason}"
    );
    assert_eq!(other.connection_count(), 1, "it got as far as TLS");
    assert!(other.messages().is_empty());
}
