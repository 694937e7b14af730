//! The stub resolver against a name server on 127.0.0.1.

mod common;

use certrelay_core::dns::{Answer, QueryType};
use certrelay_shell::delivery::resolver::{LookupError, Resolver};
use certrelay_testkit::dns::{DnsOptions, DnsServer, Rr};
use common::*;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn zone() -> HashMap<&'static str, Vec<Rr>> {
    HashMap::from([
        (
            "example.test",
            vec![
                Rr::Mx(10, "mx1.example.test"),
                Rr::Mx(5, "mx0.example.test"),
            ],
        ),
        (
            "mx1.example.test",
            vec![Rr::A([192, 0, 2, 1]), Rr::A([192, 0, 2, 2])],
        ),
        ("nomx.test", vec![Rr::A([192, 0, 2, 9])]),
    ])
}

#[test]
fn mail_hosts_by_preference_and_implicit_mx() {
    let dns = DnsServer::start(zone());
    let r = Resolver::new(vec![dns.addr]).with_timeout(Duration::from_secs(2), 1);
    let hosts = run(r.mail_hosts("example.test", "client.test")).unwrap();
    assert_eq!(hosts, ["mx0.example.test", "mx1.example.test"]);
    assert_eq!(
        run(r.mail_hosts("nomx.test", "client.test")).unwrap(),
        ["nomx.test"]
    );
    let addrs = run(r.addresses("mx1.example.test")).unwrap();
    let want: Vec<IpAddr> = vec![[192, 0, 2, 1].into(), [192, 0, 2, 2].into()];
    assert_eq!(addrs, want);
    let err = run(r.mail_hosts("missing.test", "client.test")).unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert_eq!(err.dsn(), "5.4.4");
}

#[test]
fn a_lost_datagram_is_asked_again() {
    let dns = DnsServer::start_with(
        zone(),
        DnsOptions {
            drop_first: 1,
            ..DnsOptions::default()
        },
    );
    let r = Resolver::new(vec![dns.addr]).with_timeout(Duration::from_millis(300), 2);
    let answer = run(r.query("example.test", QueryType::Mx)).unwrap();
    assert!(
        matches!(answer, Answer::Mx(ref v) if v.len() == 2),
        "{answer:?}"
    );
    assert_eq!(dns.queries.load(Ordering::SeqCst), 2);
}

#[test]
fn a_truncated_answer_is_asked_again_over_tcp() {
    let dns = DnsServer::start_with(
        zone(),
        DnsOptions {
            truncate_udp: true,
            ..DnsOptions::default()
        },
    );
    let r = Resolver::new(vec![dns.addr]).with_timeout(Duration::from_secs(2), 1);
    let hosts = run(r.mail_hosts("example.test", "client.test")).unwrap();
    assert_eq!(hosts, ["mx0.example.test", "mx1.example.test"]);
    assert_eq!(dns.tcp_queries.load(Ordering::SeqCst), 1);
}

#[test]
fn no_answer_is_a_temporary_failure() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let r = Resolver::new(vec![silent.local_addr().unwrap()])
        .with_timeout(Duration::from_millis(100), 2);
    let err = run(r.query("example.test", QueryType::Mx)).unwrap_err();
    assert!(matches!(err, LookupError::Temporary(_)), "{err:?}");
    assert_eq!(err.dsn(), "4.4.3");
}
