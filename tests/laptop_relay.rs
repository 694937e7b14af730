//! Both binaries together: `certrelay sendmail` on the laptop, `certrelayd` with the
//! laptop's listed certificate, and a sink behind it; the recipe's TLS policy end to end.

use certrelay_testkit::recipe::{certrelay, laptop, relay};
use certrelay_testkit::sink::{Sink, SinkOptions};
use certrelay_testkit::wait_until;

#[test]
fn sendmail_through_certrelayd_keeps_the_message_intact() {
    let sink = Sink::start(SinkOptions::default());
    let sink_port = sink.port();
    let (relay_dir, relay, port) = relay("chain-relay", &["127.0.0.1"], sink_port);
    let laptop = laptop("chain-laptop", &relay_dir, port, "MUST");
    let long = "0123456789".repeat(250);
    let message = format!(
        "From: Bob <bob@laptop.test>\nTo: Friend <friend@elsewhere.example>\n\
         Subject: =?UTF-8?Q?gr=C3=BC=C3=9Fe?=\nContent-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: 8bit\n\nGrüße aus dem Zug — ça marche.\n{long}\n.leading dot\n"
    );
    let out = certrelay(&laptop, &["sendmail", "-t"], message.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = wait_until("the sink to receive bob's message", || {
        sink.messages().pop()
    });
    assert_eq!(got.sender, "bob@laptop.test");
    assert_eq!(got.recipients, ["friend@elsewhere.example"]);
    let data = &got.wire();
    assert!(
        data.contains("by relay.test (certrelay) with ESMTPS id"),
        "{data}"
    );
    assert!(
        data.contains("Subject: =?UTF-8?Q?gr=C3=BC=C3=9Fe?=\r\n"),
        "{data}"
    );
    assert!(
        data.contains("Grüße aus dem Zug — ça marche.\r\n"),
        "8-bit body intact: {data}"
    );
    assert!(
        data.contains("\r\n..leading dot\r\n"),
        "dot-stuffed on the wire: {data}"
    );
    assert!(
        data.lines().all(|l| l.len() <= 998),
        "no line over 998 octets"
    );
    let digits: String = data.chars().filter(|c| c.is_ascii_digit()).collect();
    assert!(
        digits.contains(&long),
        "the long line's content arrives whole, only folded"
    );
    relay.wait_log("Trusted TLS connection established");
}

#[test]
fn must_refuses_a_name_mismatch_and_must_nopeermatch_accepts_it() {
    let sink = Sink::start(SinkOptions::default());
    let sink_port = sink.port();
    // The relay's certificate names relay.test only, not 127.0.0.1.
    let (relay_dir, _relay, port) = relay("nopeer-relay", &[], sink_port);
    let strict = laptop("nopeer-must", &relay_dir, port, "MUST");
    let message = b"From: bob@laptop.test\nTo: friend@elsewhere.example\nSubject: x\n\nhello\n";
    let out = certrelay(&strict, &["sendmail", "-t"], message);
    assert!(out.status.success());
    let listing = wait_until("the deferral", || {
        let out = certrelay(&strict, &["queue"], b"");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("Server certificate not verified")
            .then_some(text)
    });
    assert!(listing.contains("friend@elsewhere.example"), "{listing}");
    assert!(sink.messages().is_empty(), "nothing was sent");

    let relaxed = laptop("nopeer-relaxed", &relay_dir, port, "MUST_NOPEERMATCH");
    let out = certrelay(&relaxed, &["sendmail", "-t"], message);
    assert!(out.status.success());
    let got = wait_until("delivery at MUST_NOPEERMATCH", || sink.messages().pop());
    assert_eq!(got.recipients, ["friend@elsewhere.example"]);
}

/// The wire lines from the long-line message's `X-Long:` header on, without the empty line
/// and the headers the laptop adds at the end of the header (`Date:`, `Message-ID:`).
fn long_lines_arrived(wire: &str) -> Vec<&str> {
    let lines: Vec<&str> = wire.split("\r\n").collect();
    let from = lines
        .iter()
        .position(|l| l.starts_with("X-Long: "))
        .expect("the long header arrived");
    let added = |l: &&str| l.starts_with("Date: ") || l.starts_with("Message-ID: ");
    lines[from..]
        .iter()
        .copied()
        .filter(|l| !l.is_empty() && !added(l))
        .collect()
}

#[test]
fn long_lines_arrive_broken_as_postfix_breaks_them() {
    // A 1500-octet header and a 2500-octet body line, submitted two ways: `sendmail -t`
    // (which breaks them as it queues) and `sendmail -bs`, an SMTP dialogue that queues
    // them whole, so that the laptop's SMTP client breaks them on the way to the relay.
    let sink = Sink::start(SinkOptions::default());
    let (relay_dir, _relay, port) = relay("long-relay", &["127.0.0.1"], sink.port());
    let laptop = laptop("long-laptop", &relay_dir, port, "MUST");
    let (h, b) = ("h".repeat(1500), "b".repeat(2500));
    let header = format!("X-Long: {}", &h[..1500 - 8]);
    let want = [
        format!("X-Long: {}", &h[..990]),
        format!(" {}", &h[..502]),
        b[..998].to_string(),
        format!(" {}", &b[..997]),
        format!(" {}", &b[..505]),
        "end".to_string(),
    ];
    let message = format!(
        "From: bob@laptop.test\nTo: friend@elsewhere.example\nSubject: long\n{header}\n\n{b}\nend\n"
    );
    let out = certrelay(&laptop, &["sendmail", "-t"], message.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = wait_until("the -t message", || sink.messages().pop());
    assert_eq!(long_lines_arrived(&got.wire()), want, "sendmail -t");

    let dialogue = format!(
        "EHLO laptop.test\r\nMAIL FROM:<bob@laptop.test>\r\nRCPT TO:<friend@elsewhere.example>\r\n\
         DATA\r\nFrom: bob@laptop.test\r\nSubject: long via -bs\r\n{header}\r\n\r\n{b}\r\nend\r\n.\r\nQUIT\r\n"
    );
    let out = certrelay(&laptop, &["sendmail", "-bs"], dialogue.as_bytes());
    let replies = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(replies.contains("queued as"), "{replies}");
    let got = wait_until("the -bs message", || {
        sink.messages()
            .into_iter()
            .find(|m| m.wire().contains("via -bs"))
    });
    assert_eq!(long_lines_arrived(&got.wire()), want, "sendmail -bs");
}
