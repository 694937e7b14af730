//! SMTPUTF8 (RFC 6531) end to end: `certrelay sendmail` with a UTF-8 address, through the
//! laptop's queue and `certrelayd` to a sink that offers SMTPUTF8 or not.

use certrelay_testkit::recipe::{certrelay, laptop, relay};
use certrelay_testkit::sink::{Sink, SinkOptions};
use certrelay_testkit::wait_until;
use certrelay_testkit::TempDir;

const MESSAGE: &str = "From: Bob <bob@laptop.test>\nTo: José <josé@exemple.fr>\n\
                       Subject: café\n\nÇa marche.\n";

#[test]
fn a_utf8_recipient_travels_with_smtputf8_on_every_hop() {
    let sink = Sink::start(SinkOptions {
        smtputf8: true,
        ..SinkOptions::default()
    });
    let (relay_dir, relay, port) = relay("utf8-relay", &["127.0.0.1"], sink.port());
    let laptop = laptop("utf8-laptop", &relay_dir, port, "MUST");
    let out = certrelay(&laptop, &["sendmail", "-t"], MESSAGE.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = wait_until("the sink to receive the message", || sink.messages().pop());
    assert_eq!(got.recipients, ["josé@exemple.fr"]);
    let params: Vec<&str> = got.mail_params.split_whitespace().collect();
    assert!(params.contains(&"SMTPUTF8"), "{}", got.mail_params);
    let text = got.text();
    assert!(text.contains("Subject: café\r\n"), "{text}");
    // The relay received it with SMTPUTF8 from the laptop: RFC 6531's protocol name.
    assert!(text.contains("with UTF8SMTPS id"), "{text}");
    relay.wait_log("to=<josé@exemple.fr>");
}

#[test]
fn an_ascii_message_goes_without_smtputf8() {
    let sink = Sink::start(SinkOptions {
        smtputf8: true,
        ..SinkOptions::default()
    });
    let (relay_dir, _relay, port) = relay("ascii-relay", &["127.0.0.1"], sink.port());
    let laptop = laptop("ascii-laptop", &relay_dir, port, "MUST");
    let message = b"From: bob@laptop.test\nTo: friend@elsewhere.example\nSubject: x\n\nhi\n";
    let out = certrelay(&laptop, &["sendmail", "-t"], message);
    assert!(out.status.success());
    let got = wait_until("the sink to receive the message", || sink.messages().pop());
    assert!(!got.mail_params.contains("SMTPUTF8"), "{}", got.mail_params);
}

#[test]
fn a_next_hop_without_smtputf8_bounces_the_utf8_recipient_with_5_6_7() {
    let sink = Sink::start(SinkOptions::default());
    let (relay_dir, relay, port) = relay("noutf8-relay", &["127.0.0.1"], sink.port());
    let laptop = laptop("noutf8-laptop", &relay_dir, port, "MUST");
    let out = certrelay(&laptop, &["sendmail", "-t"], MESSAGE.as_bytes());
    assert!(out.status.success());
    relay.wait_log("to=<josé@exemple.fr>, relay=127.0.0.1[127.0.0.1]");
    relay.wait_log(
        "dsn=5.6.7, status=bounced (SMTPUTF8 is required, but was not offered by host 127.0.0.1[127.0.0.1])",
    );
    // Nothing of the message reached the sink (its bounce needs SMTPUTF8 as well).
    assert!(sink
        .messages()
        .iter()
        .all(|m| !m.recipients.iter().any(|r| r == "josé@exemple.fr")));
}

#[test]
fn a_utf8_address_without_smtputf8_gets_postfixs_refusal() {
    let dir = TempDir::new("utf8-bs");
    let d = dir.path().display().to_string();
    dir.write(
        "main.cf",
        &format!(
            "myhostname = laptop.test\nqueue_directory = {d}/queue\nrelayhost = [127.0.0.1]:9\n"
        ),
    );
    let dialogue = "EHLO client.test\r\nMAIL FROM:<josé@exemple.fr>\r\n\
                    MAIL FROM:<a@exemplé.fr>\r\nMAIL FROM:<bob@laptop.test>\r\n\
                    RCPT TO:<josé@exemple.fr>\r\nRSET\r\n\
                    MAIL FROM:<bob@laptop.test> SMTPUTF8\r\nRCPT TO:<josé@exemple.fr>\r\nQUIT\r\n";
    let out = certrelay(&dir, &["sendmail", "-bs"], dialogue.as_bytes());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\r\n250 SMTPUTF8\r\n"), "{text}");
    let replies: Vec<&str> = text.lines().filter(|l| !l.starts_with("250-")).collect();
    assert_eq!(
        replies[2..],
        [
            "553 5.6.7 Must declare SMTPUTF8 to send unicode address",
            "501 5.1.7 Bad sender address syntax",
            "250 2.1.0 Ok",
            "553 5.6.7 Must declare SMTPUTF8 to send unicode address",
            "250 2.0.0 Ok",
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "221 2.0.0 Bye",
        ],
        "{text}"
    );
}
