//! Tests of the queue record: text round trips, corrupt records, results, log lines.

use super::record::RecordErrorKind as K;
use super::*;
use crate::reply::Reply;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::net::IpAddr;
use core::time::Duration;
use proptest::prelude::*;

fn sample() -> Envelope {
    let mut e = Envelope::new(
        QueueId::generate(1_700_000_000, 0x2D),
        "alice@example.org",
        1_700_000_000,
        vec![
            Recipient::new("bob@example.net"),
            Recipient::new("carol@example.net"),
        ],
    );
    e.size = 1834;
    e.client = ClientFacts {
        name: "laptop.example.org".into(),
        addr: Some("2001:db8::7".parse().unwrap()),
        helo: "laptop".into(),
        protocol: "ESMTPS".into(),
        tls: "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)".into(),
    };
    e.recipients[1].original = Some("rfc822;Carol@Example.net".into());
    e
}

#[test]
fn text_round_trip() {
    let mut e = sample();
    let reply = Reply::new(451, "4.3.0 <bob@example.net>: Temporary lookup failure");
    assert!(e.record(0, &Verdict::from_reply(&reply, "mx.example.net")));
    e.attempts = 3;
    e.next_attempt = 1_700_000_900;
    let text = e.to_text();
    assert!(text.starts_with("certrelay-envelope 1\nid: "));
    assert!(text.ends_with("\nend\n"));
    assert!(text.contains("\nstate: deferred\ndsn: 4.3.0\n"), "{text}");
    assert_eq!(Envelope::parse(text.as_bytes()), Ok(e.clone()));

    // A null sender and no client facts round-trip too.
    let mut bounce = e;
    bounce.sender.clear();
    bounce.is_bounce = true;
    bounce.client = ClientFacts::default();
    assert_eq!(Envelope::parse(bounce.to_text().as_bytes()), Ok(bounce));
}

#[test]
fn smtputf8_flag_round_trips_and_old_records_read_without_it() {
    let mut e = sample();
    let plain = e.to_text();
    assert!(
        !plain.contains("smtputf8"),
        "written only when set: {plain}"
    );
    e.smtputf8 = true;
    e.sender = "josé@exemple.fr".into();
    let text = e.to_text();
    assert!(text.contains("\nbounce: no\nsmtputf8: yes\n"), "{text}");
    assert_eq!(Envelope::parse(text.as_bytes()), Ok(e));
    // A record from before the key: no SMTPUTF8.
    assert!(!Envelope::parse(plain.as_bytes()).unwrap().smtputf8);
    let bad = plain.replace("bounce: no\n", "bounce: no\nsmtputf8: maybe\n");
    assert_eq!(
        Envelope::parse(bad.as_bytes()).unwrap_err().kind,
        K::BadFlag
    );
    let twice = text.replace("smtputf8: yes\n", "smtputf8: yes\nsmtputf8: no\n");
    assert!(matches!(
        Envelope::parse(twice.as_bytes()).unwrap_err().kind,
        K::DuplicateKey(_)
    ));
}

#[test]
fn a_signature_round_trips_on_one_line_and_only_when_present() {
    let mut e = sample();
    assert!(!e.to_text().contains("dkim-signature"));
    e.signature = "DKIM-Signature: v=1; a=rsa-sha256;\r\n\tb=abc\r\n".into();
    let text = e.to_text();
    assert!(
        text.contains("\ndkim-signature: DKIM-Signature: v=1; a=rsa-sha256;%0D%0A%09b=abc%0D%0A\n"),
        "{text}"
    );
    assert_eq!(Envelope::parse(text.as_bytes()), Ok(e));
}

#[test]
fn hostile_values_cannot_forge_lines() {
    let mut e = sample();
    e.sender = "evil\r\nrcpt: injected@example.com".into();
    e.recipients[0].address = " x\u{2028}y\u{85}z%41 \u{0}".into();
    e.recipients[1].reason = "550 end\nend".into();
    e.last_error = "\u{202e}reversed ünïcödé 🦀".into();
    let text = e.to_text();
    assert!(text.is_ascii(), "non-ASCII is escaped");
    assert_eq!(text.lines().filter(|l| l.starts_with("rcpt:")).count(), 2);
    assert_eq!(text.lines().filter(|l| *l == "end").count(), 1);
    assert!(text.contains("sender: evil%0D%0Arcpt: injected@example.com\n"));
    assert!(
        text.contains("rcpt: %20x%E2%80%A8y%C2%85z%2541 %00\n"),
        "{text}"
    );
    assert_eq!(Envelope::parse(text.as_bytes()), Ok(e));
}

#[test]
fn corrupt_records_name_the_line() {
    let good = sample().to_text();
    let line_of = |needle: &str| good.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
    let cases: Vec<(String, usize, K)> = vec![
        (String::new(), 1, K::NotARecord),
        ("hello\n".into(), 1, K::NotARecord),
        (
            good.replacen("envelope 1", "envelope 2", 1),
            1,
            K::UnsupportedVersion("2".into()),
        ),
        (
            good.replacen("arrival: 1700000000", "arrival: soon", 1),
            line_of("arrival"),
            K::BadNumber("arrival".into()),
        ),
        (
            good.replacen("bounce: no", "bounce: maybe", 1),
            line_of("bounce"),
            K::BadFlag,
        ),
        (
            good.replacen("state: pending", "state: lost", 1),
            line_of("state"),
            K::BadState,
        ),
        (
            good.replacen("helo: laptop", "helo laptop", 1),
            line_of("helo"),
            K::NoColon,
        ),
        (
            good.replacen("helo: laptop", "colour: blue", 1),
            line_of("helo"),
            K::UnknownKey("colour".into()),
        ),
        (
            good.replacen("helo: laptop", "size: 5", 1),
            line_of("helo"),
            K::DuplicateKey("size".into()),
        ),
        (
            good.replacen("helo: laptop", "helo: %4", 1),
            line_of("helo"),
            K::BadEscape,
        ),
        (
            good.replacen("helo: laptop", "helo: %FF", 1),
            line_of("helo"),
            K::NotUtf8,
        ),
        (
            good.replacen("client-addr: 2001:db8::7", "client-addr: 300.1.1.1", 1),
            line_of("client-addr"),
            K::BadAddress,
        ),
        (
            good.replacen("id: ", "id: x", 1),
            line_of("id"),
            K::BadQueueId,
        ),
        (
            good.replacen("tls: ", "dsn: 2.0.0\ntls: ", 1),
            line_of("tls"),
            K::OutOfPlace("dsn".into()),
        ),
        (
            good.replacen("end\n", "size: 1\nend\n", 1),
            line_of("end"),
            K::OutOfPlace("size".into()),
        ),
        (
            good.replacen("end\n", "", 1),
            line_of("end") - 1,
            K::Truncated,
        ),
        (
            good[..good.len() - 8].to_string(),
            line_of("end") - 1,
            K::Truncated,
        ),
        (
            std::format!("{good}more\n"),
            line_of("end") + 1,
            K::TrailingData,
        ),
        (
            good.replacen("sender: alice@example.org\n", "", 1),
            line_of("end") - 1,
            K::MissingKey("sender"),
        ),
    ];
    for (text, line, kind) in cases {
        let err = Envelope::parse(text.as_bytes()).expect_err(&text);
        assert_eq!(err, RecordError { line, kind }, "{text}");
        assert!(err.to_string().starts_with(&std::format!("line {line}: ")));
    }
    // Non-UTF-8 bytes in a line.
    let mut bytes = good.clone().into_bytes();
    let at = good.find("helo: laptop").unwrap() + 6;
    bytes[at] = 0xFF;
    assert_eq!(
        Envelope::parse(&bytes).unwrap_err(),
        RecordError {
            line: line_of("helo"),
            kind: K::NotUtf8
        }
    );
    // No recipients.
    let cut = good.find("rcpt:").unwrap();
    let none = std::format!("{}end\n", &good[..cut]);
    assert_eq!(
        Envelope::parse(none.as_bytes()).unwrap_err().kind,
        K::NoRecipients
    );
}

#[test]
fn crlf_line_ends_from_an_editor_are_tolerated() {
    let e = sample();
    let text = e.to_text().replace('\n', "\r\n");
    assert_eq!(Envelope::parse(text.as_bytes()), Ok(e));
}

#[test]
fn results_update_recipients() {
    let mut e = sample();
    assert_eq!(e.remaining().collect::<Vec<_>>(), [0, 1]);
    assert!(e.is_due(e.arrival) && !e.is_done());

    let ok = Verdict::from_reply(
        &Reply::new(250, "2.0.0 Ok: queued as 4SdRk"),
        "mx.example.net",
    );
    assert_eq!(ok.state, RecipientState::Sent);
    assert!(e.record(0, &ok));
    assert!(
        !e.record(0, &Verdict::bounced("5.0.0", "late")),
        "final state sticks"
    );
    assert!(!e.record(7, &ok), "out of range");
    assert_eq!(e.recipients[0].state, RecipientState::Sent);

    let no_enhanced = Verdict::from_reply(&Reply::new(554, "no thanks"), "mx");
    assert_eq!(
        (no_enhanced.state, no_enhanced.dsn.as_str()),
        (RecipientState::Bounced, "5.0.0")
    );
    let temp = Verdict::from_reply(&Reply::new(421, "mx closing"), "mx");
    assert_eq!(
        (temp.state, temp.dsn.as_str()),
        (RecipientState::Deferred, "4.0.0")
    );

    let refused = Verdict::deferred(
        "4.4.1",
        "connect to mx.example.net[192.0.2.7]:25: Connection refused",
    );
    assert_eq!(e.defer_remaining(&refused), 1);
    assert_eq!(e.last_error, refused.reason);
    assert_eq!(e.recipients[1].state, RecipientState::Deferred);
    assert!(!e.is_done() && !e.has_bounced());

    assert!(e.record(
        1,
        &Verdict::from_reply(&Reply::new(550, "5.1.1 unknown"), "mx.example.net")
    ));
    assert!(e.is_done() && e.has_bounced());
    assert_eq!(e.bounced().collect::<Vec<_>>(), [1]);
    assert_eq!(e.recipients[1].remote_mta, "mx.example.net");
    assert_eq!(e.recipients[1].reason, "550 5.1.1 unknown");
    assert!(!e.is_due(u64::MAX));
}

#[test]
fn delivery_log_lines() {
    let mut e = sample();
    e.record(
        0,
        &Verdict::from_reply(
            &Reply::new(250, "2.0.0 Ok: queued as 4SdRk"),
            "mx.example.net",
        ),
    );
    let relay = Relay::Host {
        name: "mx.example.net",
        addr: "192.0.2.7".parse().unwrap(),
        port: 25,
    };
    assert_eq!(
        delivery_line(&e.id, &e.recipients[0], &relay, Duration::from_millis(1234)),
        std::format!(
            "{}: to=<bob@example.net>, relay=mx.example.net[192.0.2.7]:25, delay=1.2, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4SdRk)",
            e.id
        )
    );
    e.recipients[1].address = "x\r\ny".into();
    e.record(
        1,
        &Verdict::deferred("4.4.1", "connect to mx: Connection refused"),
    );
    assert_eq!(
        delivery_line(&e.id, &e.recipients[1], &Relay::None, Duration::from_secs(75)),
        std::format!("{}: to=<x??y>, relay=none, delay=75, dsn=4.4.1, status=deferred (connect to mx: Connection refused)", e.id)
    );
    let v6 = Relay::Host {
        name: "mx6",
        addr: "2001:db8::1".parse().unwrap(),
        port: 2525,
    };
    assert!(delivery_line(&e.id, &e.recipients[1], &v6, Duration::ZERO)
        .contains("relay=mx6[2001:db8::1]:2525, delay=0,"));

    let mut expired = sample();
    assert_eq!(
        expired_line(&expired),
        std::format!(
            "{}: from=<alice@example.org>, status=expired, returned to sender",
            expired.id
        )
    );
    expired.is_bounce = true;
    expired.sender.clear();
    assert!(expired_line(&expired).ends_with("from=<>, status=expired, dropped"));
}

#[test]
fn delay_format_table() {
    let table = [
        (0, "0"),
        (80, "0.08"),
        (500, "0.5"),
        (999, "0.99"),
        (1000, "1"),
        (1150, "1.1"),
        (9999, "9.9"),
        (10_000, "10"),
        (86_400_000, "86400"),
    ];
    for (ms, want) in table {
        assert_eq!(format_delay(Duration::from_millis(ms)), want, "{ms}");
    }
}

#[test]
fn queue_listing() {
    let mut e = sample();
    e.record(
        0,
        &Verdict::deferred("4.4.1", "connect to mx: Connection refused"),
    );
    e.next_attempt = 1_700_000_360;
    let entry = listing_entry(&e, 60);
    let lines: Vec<&str> = entry.lines().collect();
    assert_eq!(
        lines[0],
        std::format!("{}      1834 Tue Nov 14 23:13:20  alice@example.org", e.id)
    );
    assert_eq!(lines[0].find("alice"), LISTING_HEADER.find("-Sender"));
    let pad = " ".repeat(46);
    assert_eq!(
        lines[1],
        std::format!("{pad}(connect to mx: Connection refused)")
    );
    assert_eq!(lines[2], std::format!("{pad}bob@example.net"));
    assert_eq!(lines[3], std::format!("{pad}carol@example.net"));
    assert_eq!(
        lines[4],
        std::format!("{pad}next attempt: Tue Nov 14 23:19:20")
    );
    assert_eq!(lines.len(), 6);
    assert!(entry.ends_with("\n\n"));

    e.sender.clear();
    assert!(listing_entry(&e, 0)
        .lines()
        .next()
        .unwrap()
        .ends_with("  MAILER-DAEMON"));
    assert_eq!(listing_footer(0, 0), "Mail queue is empty");
    assert_eq!(listing_footer(1834, 1), "-- 2 Kbytes in 1 Request.");
    assert_eq!(listing_footer(4096, 3), "-- 4 Kbytes in 3 Requests.");
}

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".*",
        "[ -~]{0,20}",
        Just(String::new()),
        Just(" ".into()),
        Just("%".into()),
    ]
}

fn arb_recipient() -> impl Strategy<Value = Recipient> {
    (
        arb_text(),
        proptest::option::of(arb_text()),
        0..4u8,
        arb_text(),
        arb_text(),
        arb_text(),
    )
        .prop_map(
            |(address, original, s, dsn, reason, remote_mta)| Recipient {
                address,
                original,
                state: [
                    RecipientState::Pending,
                    RecipientState::Sent,
                    RecipientState::Deferred,
                    RecipientState::Bounced,
                ][usize::from(s)],
                dsn,
                reason,
                remote_mta,
            },
        )
}

proptest! {
    #[test]
    fn any_envelope_round_trips(
        t in any::<u64>(), u in any::<u32>(), sender in arb_text(), size in any::<u64>(),
        is_bounce in any::<bool>(), attempts in any::<u32>(), next in any::<u64>(),
        last_error in arb_text(), name in arb_text(), v4 in proptest::option::of(any::<u32>()),
        tls in arb_text(), recipients in proptest::collection::vec(arb_recipient(), 1..4),
    ) {
        let mut e = Envelope::new(QueueId::generate(t, u), sender, t, recipients);
        e.size = size;
        e.is_bounce = is_bounce;
        e.attempts = attempts;
        e.next_attempt = next;
        e.last_error = last_error;
        e.client.name = name;
        e.client.addr = v4.map(|a| IpAddr::from(core::net::Ipv4Addr::from(a)));
        e.client.tls = tls;
        let text = e.to_text();
        prop_assert_eq!(text.lines().count(), 15 + e.recipients.iter().map(|r| 5 + usize::from(r.original.is_some())).sum::<usize>());
        prop_assert_eq!(Envelope::parse(text.as_bytes()), Ok(e));
    }

    #[test]
    fn parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Envelope::parse(&bytes);
    }

    #[test]
    fn parser_never_panics_on_damaged_records(cut in 0usize..2000, flip in 0usize..2000, byte in any::<u8>()) {
        let mut bytes = sample().to_text().into_bytes();
        let n = bytes.len();
        bytes[flip % n] = byte;
        bytes.truncate(cut % (n + 1));
        if let Err(e) = Envelope::parse(&bytes) {
            prop_assert!(e.line >= 1 && e.line <= bytes.split(|&b| b == b'\n').count().max(1));
        }
    }
}
