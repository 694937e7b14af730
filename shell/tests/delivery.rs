//! The delivery engine against real sockets on 127.0.0.1 and real spool files.

mod common;

use certrelay_core::queue::{QueueId, RecipientState};
use certrelay_core::tls_policy::TlsLevel;
use certrelay_shell::delivery::deliver::HeldBody;
use certrelay_shell::delivery::resolver::Resolver;
use certrelay_shell::delivery::runner::{wake_channel, Fresh, Handoff, QueueRunner};
use certrelay_shell::spool::Spool;
use certrelay_testkit::dns::{DnsServer, Rr};
use certrelay_testkit::free_port;
use certrelay_testkit::sink::{Sink, SinkOptions};
use common::*;
use std::collections::HashMap;
use std::time::Duration;

#[test]
fn queued_message_is_delivered_and_removed() {
    let sink = Sink::start(SinkOptions::default());
    let t = temp_spool("deliver");
    let id = queue(
        &t.spool,
        "alice@example.org",
        &["bob@example.org", "carol@example.org"],
        BODY,
    );
    let r = runner(
        &t.spool,
        config(vec![bracketed(sink.port())], TlsLevel::None),
        client_tls(None),
    );
    let stats = run(r.run_once(false));
    assert_eq!((stats.attempted, stats.removed), (1, 1), "{stats:?}");
    assert!(t.spool.ids().unwrap().is_empty(), "{id} still queued");
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].sender, "alice@example.org");
    assert_eq!(got[0].recipients, ["bob@example.org", "carol@example.org"]);
    assert_eq!(
        got[0].text(),
        BODY,
        "body arrives intact (dot-stuffing undone)"
    );
    assert!(!got[0].tls);
}

#[test]
fn small_and_large_spooled_contents_arrive_intact() {
    // Read whole below 256 KiB, streamed in chunks above; lines that start with a dot and
    // lines split across chunk boundaries either way.
    for (label, lines) in [("small", 100), ("large", 8000)] {
        let sink = Sink::start(SinkOptions::default());
        let t = temp_spool(label);
        let mut body = String::from("Subject: size\r\n\r\n");
        for i in 0..lines {
            body.push_str(&format!(".{i:05} {}\r\n", "x".repeat(i % 90)));
        }
        queue(&t.spool, "alice@example.org", &["bob@example.org"], &body);
        let r = runner(
            &t.spool,
            config(vec![bracketed(sink.port())], TlsLevel::None),
            client_tls(None),
        );
        assert_eq!(run(r.run_once(false)).removed, 1, "{label}");
        let got = sink.messages();
        assert_eq!(got.len(), 1, "{label}");
        assert!(got[0].text() == body, "{label}: content changed on the way");
    }
}

#[test]
fn temporary_refusal_defers_then_flush_delivers() {
    let sink = Sink::start(SinkOptions {
        rcpt_replies: vec![(
            "later".into(),
            "450 4.2.0 <later@example.org>: mailbox busy".into(),
        )],
        ..SinkOptions::default()
    });
    let t = temp_spool("defer");
    let id = queue(&t.spool, "alice@example.org", &["later@example.org"], BODY);
    let r = runner(
        &t.spool,
        config(vec![bracketed(sink.port())], TlsLevel::None),
        client_tls(None),
    );
    let before = certrelay_shell::clock::unix_secs();
    let stats = run(r.run_once(false));
    assert_eq!((stats.attempted, stats.deferred), (1, 1), "{stats:?}");
    let env = read_envelope(&t.spool, &id);
    assert_eq!(env.attempts, 1);
    assert_eq!(env.recipients[0].state, RecipientState::Deferred);
    assert_eq!(env.recipients[0].dsn, "4.2.0");
    assert!(
        env.recipients[0].reason.contains("mailbox busy"),
        "{}",
        env.recipients[0].reason
    );
    assert!(
        env.next_attempt >= before + 300,
        "next attempt {} not backed off",
        env.next_attempt
    );
    // Not due yet: a plain run leaves it alone.
    assert_eq!(run(r.run_once(false)).attempted, 0);
    sink.set(|o| o.rcpt_replies.clear());
    let stats = run(r.run_once(true));
    assert_eq!((stats.attempted, stats.removed), (1, 1), "{stats:?}");
    assert!(t.spool.ids().unwrap().is_empty());
    assert_eq!(sink.messages().len(), 1);
}

#[test]
fn permanent_refusal_bounces_to_the_sender() {
    let sink = Sink::start(SinkOptions {
        rcpt_replies: vec![(
            "nobody".into(),
            "550 5.1.1 <nobody@example.org>: Recipient address rejected".into(),
        )],
        ..SinkOptions::default()
    });
    let t = temp_spool("bounce");
    queue(
        &t.spool,
        "alice@example.org",
        &["nobody@example.org", "bob@example.org"],
        BODY,
    );
    let r = runner(
        &t.spool,
        config(vec![bracketed(sink.port())], TlsLevel::None),
        client_tls(None),
    );
    let stats = run(r.run_once(false));
    assert_eq!(stats.bounces, 1, "{stats:?}");
    assert!(
        t.spool.ids().unwrap().is_empty(),
        "original and bounce both gone"
    );
    let got = sink.messages();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].recipients, ["bob@example.org"]);
    let bounce = &got[1];
    assert_eq!(bounce.sender, "", "bounce has the null sender");
    assert_eq!(bounce.recipients, ["alice@example.org"]);
    let text = bounce.text();
    assert!(text.contains("multipart/report"), "{text}");
    assert!(text.contains("report-type=delivery-status"), "{text}");
    assert!(text.contains("nobody@example.org"), "{text}");
    assert!(text.contains("5.1.1"), "{text}");
    assert!(
        text.contains("Subject: test"),
        "original headers quoted: {text}"
    );
}

#[test]
fn expired_message_bounces() {
    let sink = Sink::start(SinkOptions {
        rcpt_replies: vec![("later".into(), "450 4.2.0 mailbox busy".into())],
        ..SinkOptions::default()
    });
    let t = temp_spool("expire");
    queue(&t.spool, "alice@example.org", &["later@example.org"], BODY);
    let mut c = config(vec![bracketed(sink.port())], TlsLevel::None);
    c.retry.maximal_queue_lifetime = Duration::ZERO;
    let r = runner(&t.spool, c, client_tls(None));
    let stats = run(r.run_once(false));
    assert_eq!((stats.bounces, stats.removed), (1, 2), "{stats:?}");
    assert!(t.spool.ids().unwrap().is_empty());
    let got = sink.messages();
    assert_eq!(got.len(), 1, "only the bounce arrives");
    assert_eq!(got[0].recipients, ["alice@example.org"]);
    assert!(got[0].text().contains("later@example.org"));
}

#[test]
fn undeliverable_bounce_stays_as_failed() {
    let sink = Sink::start(SinkOptions {
        rcpt_replies: vec![("alice".into(), "550 5.1.1 no such user".into())],
        ..SinkOptions::default()
    });
    let t = temp_spool("double-bounce");
    queue(
        &t.spool,
        "alice@example.org",
        &["nobody-alice@example.org"],
        BODY,
    );
    let r = runner(
        &t.spool,
        config(vec![bracketed(sink.port())], TlsLevel::None),
        client_tls(None),
    );
    let stats = run(r.run_once(false));
    assert_eq!((stats.bounces, stats.failed), (1, 1), "{stats:?}");
    let ids = t.spool.ids().unwrap();
    assert_eq!(ids.len(), 1, "the bounce stays");
    let env = read_envelope(&t.spool, &ids[0]);
    assert!(env.is_bounce);
    assert_eq!(env.recipients[0].state, RecipientState::Bounced);
    // It is never tried (nor bounced) again.
    assert_eq!(run(r.run_once(true)).attempted, 0);
}

#[test]
fn messages_to_one_next_hop_share_connections() {
    let sink = Sink::start(SinkOptions::default());
    let t = temp_spool("reuse");
    for i in 0..4 {
        queue(
            &t.spool,
            "alice@example.org",
            &[&format!("r{i}@example.org")],
            BODY,
        );
    }
    let r = runner(
        &t.spool,
        config(vec![bracketed(sink.port())], TlsLevel::None),
        client_tls(None),
    );
    let stats = run(r.run_once(false));
    assert_eq!(stats.removed, 4, "{stats:?}");
    assert_eq!(sink.messages().len(), 4);
    assert_eq!(sink.connection_count(), 1);
}

/// A runner that keeps idle connections, over a spool of its own, delivering to `sink`.
fn caching_runner(sink: &Sink, label: &str) -> (TempSpool, QueueRunner) {
    let t = temp_spool(label);
    let r = runner(
        &t.spool,
        config(vec![bracketed(sink.port())], TlsLevel::None),
        client_tls(None),
    )
    .keep_connections();
    (t, r)
}

/// Three runs of one new message each: every message is delivered, none deferred.
fn three_runs_of_one_message(t: &TempSpool, r: &QueueRunner) {
    for i in 0..3 {
        queue(
            &t.spool,
            "alice@example.org",
            &[&format!("r{i}@example.org")],
            BODY,
        );
        let stats = run(r.run_once(false));
        assert_eq!((stats.removed, stats.deferred), (1, 0), "{stats:?}");
    }
}

#[test]
fn a_long_running_runner_reuses_its_idle_connection_in_the_next_run() {
    let sink = Sink::start(SinkOptions::default());
    let (t, r) = caching_runner(&sink, "cache");
    three_runs_of_one_message(&t, &r);
    assert_eq!(sink.messages().len(), 3);
    assert_eq!(sink.connection_count(), 1, "one connection for three runs");
    // Idle beyond the cache time, it is closed; the next run connects anew.
    std::thread::sleep(
        certrelay_shell::delivery::conn_cache::CACHE_TIME + Duration::from_millis(500),
    );
    queue(&t.spool, "alice@example.org", &["late@example.org"], BODY);
    assert_eq!(run(r.run_once(false)).removed, 1);
    assert_eq!(sink.connection_count(), 2);
}

#[test]
fn a_cached_connection_the_server_closed_costs_no_message() {
    let sink = Sink::start(SinkOptions {
        hang_up_after_message: true,
        ..SinkOptions::default()
    });
    let (t, r) = caching_runner(&sink, "cache-gone");
    three_runs_of_one_message(&t, &r);
    assert_eq!(sink.messages().len(), 3);
    assert_eq!(sink.connection_count(), 3);
    assert!(t.spool.ids().unwrap().is_empty());
}

/// Message `id` as the relay's store hands it over: claimed, with its envelope and, when
/// `in_memory`, its content.
fn fresh(handoff: &Handoff, spool: &Spool, id: &str, in_memory: bool) -> Fresh {
    let envelope = read_envelope(spool, id);
    let body =
        in_memory.then(|| HeldBody::keep(spool.read_content(id).unwrap()).expect("within budget"));
    Fresh {
        id: QueueId::parse(id).unwrap(),
        envelope,
        body,
        claim: handoff.claim(id),
    }
}

#[test]
fn new_mail_and_a_queue_run_together_deliver_each_message_once() {
    let sink = Sink::start(SinkOptions::default());
    let t = temp_spool("fresh");
    let ids: Vec<String> = (0..30)
        .map(|i| {
            queue(
                &t.spool,
                "alice@example.org",
                &[&format!("r{i}@example.org")],
                BODY,
            )
        })
        .collect();
    let r = runner(
        &t.spool,
        config(vec![bracketed(sink.port())], TlsLevel::None),
        client_tls(None),
    );
    let (handoff, _rx) = r.fresh_channel();
    // Half with their content in memory, half read back from the spool.
    let new: Vec<Fresh> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| fresh(&handoff, &t.spool, id, i % 2 == 0))
        .collect();
    let (fresh, full) = run(smol::future::zip(r.deliver_new(new), r.run_once(true)));
    assert_eq!(fresh.removed + full.removed, 30, "{fresh:?} {full:?}");
    assert_eq!(
        fresh.removed, 30,
        "claimed before the queue run began: {full:?}"
    );
    let messages = sink.messages();
    assert_eq!(messages.len(), 30, "each message once");
    assert!(messages.iter().all(|m| m.text().ends_with(BODY)));
    assert!(t.spool.ids().unwrap().is_empty());
}

#[test]
fn new_mail_without_a_claim_is_left_to_its_holder_or_claimed_by_its_pass() {
    let sink = Sink::start(SinkOptions::default());
    let t = temp_spool("fresh-unclaimed");
    let id = queue(&t.spool, "alice@example.org", &["bob@example.org"], BODY);
    let r = runner(
        &t.spool,
        config(vec![bracketed(sink.port())], TlsLevel::None),
        client_tls(None),
    );
    let (handoff, _rx) = r.fresh_channel();
    // A message a queue run holds is left to it.
    let held = handoff.claim(&id).expect("free");
    let new = fresh(&handoff, &t.spool, &id, true);
    assert!(new.claim.is_none(), "one claim per message");
    assert_eq!(run(r.deliver_new(vec![new])).attempted, 0);
    drop(held);
    let mut new = fresh(&handoff, &t.spool, &id, true);
    // Released at once: the pass must claim it itself.
    drop(new.claim.take());
    assert_eq!(run(r.deliver_new(vec![new])).removed, 1);
    assert_eq!(sink.messages().len(), 1);
}

#[test]
fn new_mail_waits_while_the_transport_is_held() {
    let sink = Sink::start(SinkOptions::default());
    let t = temp_spool("fresh-hold");
    let id = queue(&t.spool, "alice@example.org", &["bob@example.org"], BODY);
    let mut c = config(vec![bracketed(sink.port())], TlsLevel::None);
    c.hold = true;
    let r = runner(&t.spool, c, client_tls(None));
    let (handoff, _rx) = r.fresh_channel();
    let stats = run(r.deliver_new(vec![fresh(&handoff, &t.spool, &id, true)]));
    assert_eq!(stats.attempted, 0);
    assert!(sink.messages().is_empty());
    assert_eq!(t.spool.ids().unwrap(), [id]);
}

#[test]
fn relayhost_failover_to_the_second_entry() {
    let sink = Sink::start(SinkOptions::default());
    let t = temp_spool("failover");
    queue(&t.spool, "alice@example.org", &["bob@example.org"], BODY);
    let hops = vec![bracketed(free_port()), bracketed(sink.port())];
    let r = runner(&t.spool, config(hops, TlsLevel::None), client_tls(None));
    let stats = run(r.run_once(false));
    assert_eq!(stats.removed, 1, "{stats:?}");
    assert_eq!(sink.messages().len(), 1);
}

#[test]
fn temporary_greeting_moves_on_to_the_next_server() {
    let busy = Sink::start(SinkOptions {
        greeting: "421 4.3.2 busy.test Service not available".into(),
        ..SinkOptions::default()
    });
    let sink = Sink::start(SinkOptions::default());
    let t = temp_spool("greeting");
    queue(&t.spool, "alice@example.org", &["bob@example.org"], BODY);
    let hops = vec![bracketed(busy.port()), bracketed(sink.port())];
    let r = runner(&t.spool, config(hops, TlsLevel::None), client_tls(None));
    assert_eq!(run(r.run_once(false)).removed, 1);
    assert_eq!(busy.connection_count(), 1);
    assert_eq!(sink.messages().len(), 1);
}

#[test]
fn every_server_down_defers_with_the_connect_error() {
    let t = temp_spool("down");
    let id = queue(&t.spool, "alice@example.org", &["bob@example.org"], BODY);
    let r = runner(
        &t.spool,
        config(vec![bracketed(free_port())], TlsLevel::None),
        client_tls(None),
    );
    assert_eq!(run(r.run_once(false)).deferred, 1);
    let env = read_envelope(&t.spool, &id);
    let rcpt = &env.recipients[0];
    assert_eq!(
        (rcpt.state, rcpt.dsn.as_str()),
        (RecipientState::Deferred, "4.4.1")
    );
    assert!(
        rcpt.reason.starts_with("connect to 127.0.0.1[127.0.0.1]:"),
        "{}",
        rcpt.reason
    );
    assert!(
        rcpt.reason.ends_with(": Connection refused"),
        "{}",
        rcpt.reason
    );
}

#[test]
fn mx_delivery_skips_a_dead_preferred_host() {
    // Both hosts use the sink's port; nothing listens on 127.0.0.2.
    let sink = Sink::start(SinkOptions::default());
    let zone = HashMap::from([
        (
            "example.test",
            vec![
                Rr::Mx(20, "mx2.example.test"),
                Rr::Mx(10, "mx1.example.test"),
            ],
        ),
        ("mx1.example.test", vec![Rr::A([127, 0, 0, 2])]),
        ("mx2.example.test", vec![Rr::A([127, 0, 0, 1])]),
    ]);
    let dns = DnsServer::start(zone);
    let t = temp_spool("mx");
    queue(&t.spool, "alice@example.org", &["bob@example.test"], BODY);
    let mut c = config(Vec::new(), TlsLevel::None);
    c.smtp_port = sink.port();
    let resolver = Resolver::new(vec![dns.addr]).with_timeout(Duration::from_secs(2), 2);
    let r = QueueRunner::new(t.spool.clone(), c, client_tls(None), resolver);
    let stats = run(r.run_once(false));
    assert_eq!(stats.removed, 1, "{stats:?}");
    assert_eq!(sink.messages()[0].recipients, ["bob@example.test"]);
    assert!(
        dns.queries.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "MX and A lookups"
    );
}

#[test]
fn unknown_domain_bounces() {
    let sink = Sink::start(SinkOptions::default());
    let dns = DnsServer::start(HashMap::from([
        ("example.org", vec![Rr::Mx(10, "mx.example.org")]),
        ("mx.example.org", vec![Rr::A([127, 0, 0, 1])]),
    ]));
    let t = temp_spool("nxdomain");
    queue(&t.spool, "alice@example.org", &["bob@no-such.test"], BODY);
    let mut c = config(Vec::new(), TlsLevel::None);
    c.smtp_port = sink.port();
    let resolver = Resolver::new(vec![dns.addr]).with_timeout(Duration::from_secs(2), 2);
    let r = QueueRunner::new(t.spool.clone(), c, client_tls(None), resolver);
    let stats = run(r.run_once(false));
    assert_eq!(stats.bounces, 1, "{stats:?}");
    let got = sink.messages();
    assert_eq!(got.len(), 1, "the bounce, delivered by MX to example.org");
    assert_eq!(got[0].recipients, ["alice@example.org"]);
    assert!(got[0].text().contains("5.4.4"), "{}", got[0].text());
}

#[test]
fn corrupt_envelope_is_moved_aside_and_the_run_goes_on() {
    let sink = Sink::start(SinkOptions::default());
    let t = temp_spool("corrupt");
    let bad = "0000000000000B";
    std::fs::write(t.dir.join(format!("queue/{bad}.msg")), BODY).unwrap();
    std::fs::write(t.dir.join(format!("queue/{bad}.env")), "not an envelope\n").unwrap();
    queue(&t.spool, "alice@example.org", &["bob@example.org"], BODY);
    let r = runner(
        &t.spool,
        config(vec![bracketed(sink.port())], TlsLevel::None),
        client_tls(None),
    );
    let stats = run(r.run_once(false));
    assert_eq!((stats.moved_aside, stats.removed), (1, 1), "{stats:?}");
    assert!(t.dir.join(format!("corrupt/{bad}.env")).exists());
    assert!(t.dir.join(format!("corrupt/{bad}.msg")).exists());
    assert!(t.spool.ids().unwrap().is_empty());
    assert_eq!(sink.messages().len(), 1);
}

#[test]
fn encrypt_delivers_over_starttls() {
    let pki = pki("Sink CA");
    let sink = Sink::start(SinkOptions {
        tls: Some(pki.server.clone()),
        ..SinkOptions::default()
    });
    let t = temp_spool("encrypt");
    queue(&t.spool, "alice@example.org", &["bob@example.org"], BODY);
    let r = runner(
        &t.spool,
        config(vec![bracketed(sink.port())], TlsLevel::Encrypt),
        client_tls(None),
    );
    assert_eq!(run(r.run_once(false)).removed, 1);
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    assert!(got[0].tls, "delivered inside TLS");
    assert_eq!(got[0].text(), BODY);
}

#[test]
fn verify_with_the_right_ca_delivers() {
    let pki = pki("Sink CA");
    let sink = Sink::start(SinkOptions {
        tls: Some(pki.server.clone()),
        ..SinkOptions::default()
    });
    let t = temp_spool("verify-ok");
    queue(&t.spool, "alice@example.org", &["bob@example.org"], BODY);
    let r = runner(
        &t.spool,
        config(vec![bracketed(sink.port())], TlsLevel::Verify),
        client_tls(Some(&pki.ca)),
    );
    assert_eq!(run(r.run_once(false)).removed, 1);
    assert!(sink.messages()[0].tls);
}

#[test]
fn verify_with_a_wrong_ca_defers() {
    let pki = pki("Sink CA");
    let other = pki_other();
    let sink = Sink::start(SinkOptions {
        tls: Some(pki.server.clone()),
        ..SinkOptions::default()
    });
    let t = temp_spool("verify-bad");
    let id = queue(&t.spool, "alice@example.org", &["bob@example.org"], BODY);
    let r = runner(
        &t.spool,
        config(vec![bracketed(sink.port())], TlsLevel::Verify),
        client_tls(Some(&other)),
    );
    assert_eq!(run(r.run_once(false)).deferred, 1);
    assert!(sink.messages().is_empty());
    let env = read_envelope(&t.spool, &id);
    let rcpt = &env.recipients[0];
    assert_eq!(rcpt.state, RecipientState::Deferred);
    assert_eq!(rcpt.dsn, "4.7.5");
    assert_eq!(rcpt.reason, "Server certificate not verified");
}

fn pki_other() -> rustls::pki_types::CertificateDer<'static> {
    pki("Some Other CA").ca
}

#[test]
fn encrypt_without_starttls_defers() {
    let sink = Sink::start(SinkOptions::default());
    let t = temp_spool("no-starttls");
    let id = queue(&t.spool, "alice@example.org", &["bob@example.org"], BODY);
    let r = runner(
        &t.spool,
        config(vec![bracketed(sink.port())], TlsLevel::Encrypt),
        client_tls(None),
    );
    assert_eq!(run(r.run_once(false)).deferred, 1);
    let rcpt = &read_envelope(&t.spool, &id).recipients[0];
    assert_eq!(rcpt.dsn, "4.7.4");
    assert!(
        rcpt.reason
            .starts_with("TLS is required, but was not offered by host"),
        "{}",
        rcpt.reason
    );
}

#[test]
fn failed_handshake_at_may_retries_in_plaintext() {
    let sink = Sink::start(SinkOptions {
        broken_tls: true,
        ..SinkOptions::default()
    });
    let t = temp_spool("may-retry");
    queue(&t.spool, "alice@example.org", &["bob@example.org"], BODY);
    let r = runner(
        &t.spool,
        config(vec![bracketed(sink.port())], TlsLevel::May),
        client_tls(None),
    );
    assert_eq!(run(r.run_once(false)).removed, 1);
    assert_eq!(sink.connection_count(), 2, "one TLS try, one plaintext");
    assert!(!sink.messages()[0].tls);
}

#[test]
fn waking_the_runner_delivers_a_new_message() {
    let sink = Sink::start(SinkOptions::default());
    let t = temp_spool("wake");
    let mut c = config(vec![bracketed(sink.port())], TlsLevel::None);
    c.retry.queue_run_delay = Duration::from_secs(3600);
    let r = runner(&t.spool, c, client_tls(None));
    let (waker, wakeups) = wake_channel();
    let serving = {
        let r = r.clone();
        smol::spawn(async move { r.serve(wakeups).await })
    };
    run(async {
        // Let the first (empty) run pass, then queue and wake.
        smol::Timer::after(Duration::from_millis(100)).await;
        queue(&t.spool, "alice@example.org", &["bob@example.org"], BODY);
        waker.new_mail();
        while sink.messages().is_empty() {
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    });
    drop(waker);
    run(serving);
    assert!(t.spool.ids().unwrap().is_empty());
}

#[test]
fn a_large_body_arrives_intact() {
    let sink = Sink::start(SinkOptions::default());
    let t = temp_spool("large");
    let mut body = String::from("Subject: big\r\n\r\n");
    for i in 0..20_000 {
        body.push_str(&format!(
            ".line {i} of a body long enough to need many chunks\r\n"
        ));
    }
    queue(&t.spool, "alice@example.org", &["bob@example.org"], &body);
    let r = runner(
        &t.spool,
        config(vec![bracketed(sink.port())], TlsLevel::None),
        client_tls(None),
    );
    assert_eq!(run(r.run_once(false)).removed, 1);
    assert!(body.len() > 10 * certrelay_shell::delivery::connection::BODY_CHUNK);
    assert_eq!(sink.messages()[0].text(), body);
}
