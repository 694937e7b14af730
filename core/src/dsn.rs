//! Bounces: delivery status notifications (RFC 3464) for recipients that failed.
//!
//! The shell decides *when* (a record is done and [`bounce_wanted`]), supplies what this
//! module cannot know (the clock reading as a date string, a few unique bytes, the original
//! header block read from the message file) and queues the bytes [`compose`] returns as a
//! new message with [`bounce_envelope`]: null sender, one recipient, marked as a bounce so
//! that it is never bounced in turn.
//!
//! The result is a complete RFC 5322 message with CR LF line ends and no line over 998
//! octets; text that came from the network has its control characters replaced, so it
//! cannot add header fields or MIME parts.

use crate::queue::{Envelope, QueueId, Recipient};
pub use crate::time::rfc5322_date;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

/// Subject of every bounce (the text users and filters know).
pub const SUBJECT: &str = "Undelivered Mail Returned to Sender";

/// The most original header bytes quoted in a bounce; the rest is left out.
pub const MAX_ORIGINAL_HEADERS: usize = 64 * 1024;

/// Lines are folded at spaces to stay within this many octets where the text allows.
const FOLD_AT: usize = 78;
/// A word longer than this is cut, so no line can exceed the 998-octet limit.
const MAX_PIECE: usize = 900;

/// Whether a message whose recipients bounced must produce a bounce.
///
/// Never for the null sender or for a message that is itself a bounce (a bounce of a bounce
/// can loop between two systems forever), nor for a sender whose local part is
/// `MAILER-DAEMON`: some systems send their reports with that non-null sender.
pub fn bounce_wanted(sender: &str, is_bounce: bool) -> bool {
    let local = sender.rsplit_once('@').map_or(sender, |(l, _)| l);
    !(sender.is_empty() || is_bounce || local.eq_ignore_ascii_case("mailer-daemon"))
}

/// One recipient in the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedRecipient {
    /// The envelope recipient (`Final-Recipient`).
    pub address: String,
    /// The original recipient as the client gave it (`ORCPT`: `type;address`), if known.
    pub original: Option<String>,
    /// Enhanced status (`5.1.1`; a `4.x.x` for recipients that expired in the queue).
    pub status: String,
    /// The server that gave the failing reply, empty when the failure was local.
    pub remote_mta: String,
    /// The reply (`550 5.1.1 <bob@example.net>: Recipient address rejected`) or local reason.
    pub diagnostic: String,
}

impl FailedRecipient {
    /// The report entry for a bounced recipient of a queue record.
    pub fn from_recipient(r: &Recipient) -> FailedRecipient {
        FailedRecipient {
            address: r.address.clone(),
            original: r.original.clone(),
            status: if r.dsn.is_empty() {
                String::from("5.0.0")
            } else {
                r.dsn.clone()
            },
            remote_mta: r.remote_mta.clone(),
            diagnostic: r.reason.clone(),
        }
    }

    /// The report entries for every bounced recipient of a record.
    pub fn all_bounced(envelope: &Envelope) -> Vec<FailedRecipient> {
        envelope
            .bounced()
            .map(|i| FailedRecipient::from_recipient(&envelope.recipients[i]))
            .collect()
    }
}

/// Everything a bounce says.
#[derive(Clone, Copy, Debug)]
pub struct BounceReport<'a> {
    /// This system's name (`myhostname`): `Reporting-MTA` and the `From:` domain.
    pub reporting_mta: &'a str,
    /// The bounced message's queue id (quoted in the report for the postmaster).
    pub queue_id: &'a str,
    /// The bounced message's envelope sender: the bounce goes to it.
    pub original_sender: &'a str,
    /// When the bounced message arrived, as an RFC 5322 date ([`rfc5322_date`]).
    pub arrival_date: &'a str,
    /// Now, as an RFC 5322 date.
    pub date: &'a str,
    /// Bytes unique to this bounce (time and counter, say), for its Message-ID and MIME
    /// boundary; letters, digits, `.`, `-`, `_` are kept, others dropped.
    pub unique: &'a str,
    /// The recipients that failed (at least one).
    pub recipients: &'a [FailedRecipient],
    /// The bounced message's header block; only the part before the first empty line is
    /// used, at most [`MAX_ORIGINAL_HEADERS`] bytes of it.
    pub original_headers: &'a [u8],
}

/// The envelope of a bounce: null sender, the original sender as the only recipient, marked
/// as a bounce. `arrival` is now; `size` the length of the composed message.
pub fn bounce_envelope(id: QueueId, arrival: u64, original: &Envelope, size: u64) -> Envelope {
    let mut e = Envelope::new(
        id,
        "",
        arrival,
        alloc::vec![Recipient::new(original.sender.clone())],
    );
    e.is_bounce = true;
    // The bounce quotes the original's addresses and header: it needs what they needed.
    e.smtputf8 = original.smtputf8;
    e.size = size;
    e.client.protocol = String::from("local");
    e
}

/// The complete bounce message.
pub fn compose(report: &BounceReport<'_>) -> Vec<u8> {
    let host = clean(report.reporting_mta);
    let unique: String = report
        .unique
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(40)
        .collect();
    let unique = if unique.is_empty() {
        clean(report.queue_id)
    } else {
        unique
    };

    let parts = [
        (
            "Notification",
            "text/plain; charset=utf-8",
            human_part(report, &host),
        ),
        (
            "Delivery report",
            "message/delivery-status",
            status_part(report, &host),
        ),
        (
            "Undelivered Message Headers",
            "text/rfc822-headers",
            headers_part(report.original_headers),
        ),
    ];
    let boundary = choose_boundary(&alloc::format!("{unique}/{host}"), &parts);

    let mut body = Vec::with_capacity(4096);
    body.extend_from_slice(b"This is a MIME-encapsulated message.\r\n\r\n");
    for (description, content_type, content) in &parts {
        let _ = write_bytes(&mut body, format_args!("--{boundary}\r\n"));
        fold(&mut body, "Content-Description:", description, " ");
        fold(&mut body, "Content-Type:", content_type, " ");
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    let _ = write_bytes(&mut body, format_args!("--{boundary}--\r\n"));

    let mut msg = Vec::with_capacity(body.len() + 512);
    fold(&mut msg, "Date:", report.date, " ");
    fold(
        &mut msg,
        "From:",
        &alloc::format!("Mail Delivery System <MAILER-DAEMON@{host}>"),
        " ",
    );
    fold(&mut msg, "Subject:", SUBJECT, " ");
    fold(&mut msg, "To:", report.original_sender, " ");
    fold(&mut msg, "Auto-Submitted:", "auto-replied", " ");
    fold(
        &mut msg,
        "Message-Id:",
        &alloc::format!("<{unique}@{host}>"),
        " ",
    );
    fold(&mut msg, "MIME-Version:", "1.0", " ");
    fold(
        &mut msg,
        "Content-Type:",
        &alloc::format!("multipart/report; report-type=delivery-status; boundary=\"{boundary}\""),
        " ",
    );
    if !body.is_ascii() {
        fold(&mut msg, "Content-Transfer-Encoding:", "8bit", " ");
    }
    msg.extend_from_slice(b"\r\n");
    msg.extend_from_slice(&body);
    msg
}

fn human_part(report: &BounceReport<'_>, host: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    let paragraphs = [
        alloc::format!("This report comes from the mail system at {host}."),
        String::from(
            "Your message could not be delivered to one or more of its recipients. \
             Each of them is listed below with the reason. The header of your message \
             is attached at the end of this report.",
        ),
        alloc::format!(
            "If you need help, write to the postmaster of {host} and include this report \
             (queue id {}).",
            report.queue_id
        ),
    ];
    for p in &paragraphs {
        fold(&mut out, "", p, "");
        out.extend_from_slice(b"\r\n");
    }
    for r in report.recipients {
        let why = match r.remote_mta.as_str() {
            "" => r.diagnostic.clone(),
            mta => alloc::format!("host {mta} said: {}", r.diagnostic),
        };
        fold(
            &mut out,
            &alloc::format!("<{}>:", clean(&r.address)),
            &why,
            "    ",
        );
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn status_part(report: &BounceReport<'_>, host: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    fold(
        &mut out,
        "Reporting-MTA:",
        &alloc::format!("dns; {host}"),
        " ",
    );
    fold(&mut out, "X-Certrelay-Queue-ID:", report.queue_id, " ");
    fold(
        &mut out,
        "X-Certrelay-Sender:",
        &alloc::format!("rfc822; {}", report.original_sender),
        " ",
    );
    fold(&mut out, "Arrival-Date:", report.arrival_date, " ");
    for r in report.recipients {
        out.extend_from_slice(b"\r\n");
        fold(
            &mut out,
            "Final-Recipient:",
            &alloc::format!("rfc822; {}", r.address),
            " ",
        );
        if let Some(o) = &r.original {
            let value = match o.split_once(';') {
                Some((kind, addr)) => alloc::format!("{}; {}", kind.trim(), addr.trim()),
                None => alloc::format!("rfc822; {o}"),
            };
            fold(&mut out, "Original-Recipient:", &value, " ");
        }
        fold(&mut out, "Action:", "failed", " ");
        fold(&mut out, "Status:", &r.status, " ");
        let kind = if r.remote_mta.is_empty() {
            "X-Certrelay"
        } else {
            fold(
                &mut out,
                "Remote-MTA:",
                &alloc::format!("dns; {}", r.remote_mta),
                " ",
            );
            "smtp"
        };
        fold(
            &mut out,
            "Diagnostic-Code:",
            &alloc::format!("{kind}; {}", r.diagnostic),
            " ",
        );
    }
    out
}

/// The original header block, line ends made CR LF, bare CR and NUL made spaces, over-long
/// lines folded, cut at [`MAX_ORIGINAL_HEADERS`] on a line boundary.
fn headers_part(headers: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(headers.len().min(MAX_ORIGINAL_HEADERS) + 64);
    let mut taken = 0;
    for line in headers.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || taken + line.len() > MAX_ORIGINAL_HEADERS {
            break;
        }
        taken += line.len();
        for (i, piece) in line.chunks(MAX_PIECE).enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            out.extend(
                piece
                    .iter()
                    .map(|&b| if b == b'\r' || b == 0 { b' ' } else { b }),
            );
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// A boundary from `seed` (boundary characters only, at most 70) that occurs in no part.
fn choose_boundary(seed: &str, parts: &[(&str, &str, Vec<u8>)]) -> String {
    let base: String = seed
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "'()+_,-./:=?".contains(*c))
        .take(60)
        .collect();
    let mut candidate = base.clone();
    let mut n = 0u32;
    while parts
        .iter()
        .any(|(_, _, p)| contains(p, candidate.as_bytes()))
    {
        n += 1;
        candidate = alloc::format!("{base}={n}");
    }
    candidate
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Appends `prefix`, then the words of `text` separated by single spaces, starting a new
/// line (beginning with `cont`) before a word that would pass [`FOLD_AT`]; ends with CR LF.
/// With `cont` a space this is RFC 5322 folding.
fn fold(out: &mut Vec<u8>, prefix: &str, text: &str, cont: &str) {
    out.extend_from_slice(prefix.as_bytes());
    let mut len = prefix.len();
    let mut fresh = prefix.is_empty();
    let text = clean(text);
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        for piece in pieces(word) {
            if !fresh && len + 1 + piece.len() > FOLD_AT {
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(cont.as_bytes());
                len = cont.len();
                fresh = true;
            }
            if !fresh {
                out.push(b' ');
                len += 1;
            }
            out.extend_from_slice(piece.as_bytes());
            len += piece.len();
            fresh = false;
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// `word` cut at character boundaries into pieces of at most [`MAX_PIECE`] octets.
fn pieces(word: &str) -> impl Iterator<Item = &str> {
    let mut rest = word;
    core::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut cut = rest.len().min(MAX_PIECE);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        Some(piece)
    })
}

/// `text` with control characters and Unicode line separators turned into spaces.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                ' '
            } else {
                c
            }
        })
        .collect()
}

fn write_bytes(out: &mut Vec<u8>, args: core::fmt::Arguments<'_>) -> core::fmt::Result {
    let mut s = String::new();
    s.write_fmt(args)?;
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{QueueId, Verdict};
    use crate::reply::Reply;
    use std::string::ToString;
    use std::vec;

    /// A minimal MIME reader for the tests: header fields (unfolded) and body.
    fn split_message(msg: &[u8]) -> (Vec<(String, String)>, &[u8]) {
        let text = msg;
        let end = text
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("header/body separator");
        let head = core::str::from_utf8(&text[..end]).unwrap();
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with(' ') || line.starts_with('\t') {
                fields.last_mut().unwrap().1.push_str(line);
            } else {
                let (k, v) = line.split_once(':').expect("field");
                fields.push((k.to_string(), v.trim().to_string()));
            }
        }
        (fields, &text[end + 4..])
    }

    fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
        fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn parts<'a>(body: &'a [u8], boundary: &str) -> Vec<&'a [u8]> {
        let delim = std::format!("\r\n--{boundary}");
        let body_str = core::str::from_utf8(body).unwrap();
        let start = body_str.find(&delim[2..]).expect("first boundary");
        let rest = &body_str[start + delim.len() - 2..];
        let close = rest
            .find(&std::format!("{delim}--\r\n"))
            .expect("closing boundary");
        assert!(rest[close..].ends_with("--\r\n"), "nothing after the close");
        rest[..close]
            .split(&delim)
            .map(|p| {
                p.strip_prefix("\r\n")
                    .expect("CRLF after boundary")
                    .as_bytes()
            })
            .collect()
    }

    fn sample_envelope() -> Envelope {
        let mut e = Envelope::new(
            QueueId::generate(1_700_000_000, 9),
            "alice@example.org",
            1_700_000_000,
            vec![
                Recipient::new("bob@example.net"),
                Recipient::new("carol@example.net"),
                Recipient::new("dave@example.net"),
            ],
        );
        e.recipients[0].original = Some("rfc822;Bob@Example.net".into());
        let reply = Reply::new(
            550,
            "5.1.1 <bob@example.net>: Recipient address rejected: User unknown",
        );
        e.record(0, &Verdict::from_reply(&reply, "mx.example.net"));
        e.record(
            1,
            &Verdict::from_reply(&Reply::new(250, "2.0.0 Ok"), "mx.example.net"),
        );
        e.record(
            2,
            &Verdict::bounced(
                "5.1.10",
                "Domain example.net does not accept mail (null MX)",
            ),
        );
        e
    }

    fn compose_sample(headers: &[u8]) -> Vec<u8> {
        let e = sample_envelope();
        let failed = FailedRecipient::all_bounced(&e);
        let arrival = rfc5322_date(e.arrival, 60);
        let date = rfc5322_date(e.arrival + 3600, 60);
        compose(&BounceReport {
            reporting_mta: "relay.example.org",
            queue_id: e.id.as_str(),
            original_sender: &e.sender,
            arrival_date: &arrival,
            date: &date,
            unique: "17000036000001",
            recipients: &failed,
            original_headers: headers,
        })
    }

    #[test]
    fn bounce_has_the_report_structure() {
        let headers = b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\nbody must not appear\r\n";
        let msg = compose_sample(headers);
        assert!(msg.ends_with(b"\r\n"));
        for line in msg.split(|&b| b == b'\n') {
            assert!(line.len() <= 999, "line too long");
            assert!(
                !line[..line.len().saturating_sub(1)].contains(&b'\r'),
                "bare CR"
            );
        }
        assert!(msg
            .windows(2)
            .enumerate()
            .all(|(i, w)| w[1] != b'\n' || w[0] == b'\r' || i == 0));

        let (fields, body) = split_message(&msg);
        assert_eq!(
            field(&fields, "From"),
            Some("Mail Delivery System <MAILER-DAEMON@relay.example.org>")
        );
        assert_eq!(field(&fields, "To"), Some("alice@example.org"));
        assert_eq!(field(&fields, "Subject"), Some(SUBJECT));
        assert_eq!(field(&fields, "Auto-Submitted"), Some("auto-replied"));
        assert_eq!(field(&fields, "MIME-Version"), Some("1.0"));
        assert_eq!(
            field(&fields, "Date"),
            Some("Wed, 15 Nov 2023 00:13:20 +0100")
        );
        assert_eq!(
            field(&fields, "Message-Id"),
            Some("<17000036000001@relay.example.org>")
        );
        let ct = field(&fields, "Content-Type").unwrap();
        assert!(
            ct.starts_with("multipart/report; report-type=delivery-status;"),
            "{ct}"
        );
        let boundary = ct
            .split("boundary=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches('"');
        assert!(!boundary.is_empty() && boundary.len() <= 70);

        let ps = parts(body, boundary);
        assert_eq!(ps.len(), 3);
        let types: Vec<String> = ps
            .iter()
            .map(|p| {
                field(&split_message(p).0, "Content-Type")
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            types,
            [
                "text/plain; charset=utf-8",
                "message/delivery-status",
                "text/rfc822-headers"
            ]
        );

        let human = core::str::from_utf8(split_message(ps[0]).1).unwrap();
        assert!(human.contains("relay.example.org"));
        assert!(human.contains("<bob@example.net>: host mx.example.net said: 550 5.1.1"));
        assert!(human.contains("<dave@example.net>: Domain example.net does not accept mail"));
        assert!(
            !human.contains("carol"),
            "delivered recipients are not reported"
        );

        // The delivery-status body is groups of fields separated by empty lines.
        let status = core::str::from_utf8(split_message(ps[1]).1).unwrap();
        let groups: Vec<Vec<(String, String)>> = status
            .trim_end()
            .split("\r\n\r\n")
            .map(|g| split_message(std::format!("{g}\r\n\r\n").as_bytes()).0)
            .collect();
        assert_eq!(groups.len(), 3, "{status}");
        assert_eq!(
            field(&groups[0], "Reporting-MTA"),
            Some("dns; relay.example.org")
        );
        assert_eq!(
            field(&groups[0], "Arrival-Date"),
            Some("Tue, 14 Nov 2023 23:13:20 +0100")
        );
        let bob = &groups[1];
        assert_eq!(
            field(bob, "Final-Recipient"),
            Some("rfc822; bob@example.net")
        );
        assert_eq!(
            field(bob, "Original-Recipient"),
            Some("rfc822; Bob@Example.net")
        );
        assert_eq!(field(bob, "Action"), Some("failed"));
        assert_eq!(field(bob, "Status"), Some("5.1.1"));
        assert_eq!(field(bob, "Remote-MTA"), Some("dns; mx.example.net"));
        assert_eq!(
            field(bob, "Diagnostic-Code")
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" ")),
            Some(
                "smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown"
                    .to_string()
            )
        );
        let dave = &groups[2];
        assert_eq!(field(dave, "Status"), Some("5.1.10"));
        assert_eq!(field(dave, "Remote-MTA"), None);
        assert!(field(dave, "Diagnostic-Code")
            .unwrap()
            .starts_with("X-Certrelay; "));

        let quoted = split_message(ps[2]).1;
        assert_eq!(
            quoted,
            b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: hi\r\n"
        );
    }

    #[test]
    fn hostile_inputs_cannot_break_the_structure() {
        // Bare LF, bare CR, a NUL, an over-long line, and a line that mimics the boundary.
        let mut headers =
            b"X-A: one\nX-B: two\rthree\0\r\n--17000036000001/relay.example.org\r\n".to_vec();
        headers.extend_from_slice(b"X-Long: ");
        headers.extend(std::iter::repeat_n(b'x', 3000));
        headers.extend_from_slice(b"\r\n");
        let msg = compose_sample(&headers);
        for line in msg.split(|&b| b == b'\n') {
            assert!(line.len() <= 999);
        }
        let (fields, body) = split_message(&msg);
        let ct = field(&fields, "Content-Type").unwrap();
        let boundary = ct
            .split("boundary=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches('"');
        assert_ne!(
            boundary, "17000036000001/relay.example.org",
            "boundary avoided the collision"
        );
        assert_eq!(parts(body, boundary).len(), 3);

        // A CR LF inside a recipient address or reason cannot add a field.
        let failed = [FailedRecipient {
            address: "x@y\r\nBcc: victim@example.com".into(),
            original: None,
            status: "5.0.0".into(),
            remote_mta: "m\r\nX: y".into(),
            diagnostic: "550 no\r\n\r\n--boundary".into(),
        }];
        let msg = compose(&BounceReport {
            reporting_mta: "h",
            queue_id: "Q",
            original_sender: "a@b\r\nBcc: c@d",
            arrival_date: "d",
            date: "d",
            unique: "<>\r\n",
            recipients: &failed,
            original_headers: b"",
        });
        let text = core::str::from_utf8(&msg).unwrap();
        assert!(
            !text.contains("\r\nBcc:") && !text.contains("\r\nX: y"),
            "{text}"
        );
        let (fields, _) = split_message(&msg);
        assert_eq!(field(&fields, "Message-Id"), Some("<Q@h>"));
    }

    #[test]
    fn never_bounce_a_bounce() {
        let table = [
            ("alice@example.org", false, true),
            ("", false, false),
            ("alice@example.org", true, false),
            ("MAILER-DAEMON@example.org", false, false),
            ("mailer-daemon", false, false),
        ];
        for (sender, is_bounce, want) in table {
            assert_eq!(
                bounce_wanted(sender, is_bounce),
                want,
                "{sender:?} {is_bounce}"
            );
        }
        let e = sample_envelope();
        let b = bounce_envelope(QueueId::generate(1, 1), 5, &e, 900);
        assert!(b.is_bounce && b.sender.is_empty());
        assert_eq!(b.recipients.len(), 1);
        assert_eq!(b.recipients[0].address, "alice@example.org");
        assert!(!bounce_wanted(&b.sender, b.is_bounce));
        assert!(!b.smtputf8);
        let mut utf8 = sample_envelope();
        utf8.sender = "josé@exemple.fr".into();
        utf8.smtputf8 = true;
        let b = bounce_envelope(QueueId::generate(1, 2), 5, &utf8, 900);
        assert!(
            b.smtputf8,
            "the bounce of an SMTPUTF8 message asks for SMTPUTF8 too"
        );
    }

    #[test]
    fn dates() {
        let table = [
            (0, 0, "Thu, 1 Jan 1970 00:00:00 +0000"),
            (1_700_000_000, 0, "Tue, 14 Nov 2023 22:13:20 +0000"),
            (1_700_000_000, -330, "Tue, 14 Nov 2023 16:43:20 -0530"),
            (951_782_400, 0, "Tue, 29 Feb 2000 00:00:00 +0000"),
            (4_107_542_400, 0, "Mon, 1 Mar 2100 00:00:00 +0000"),
            (0, -60, "Wed, 31 Dec 1969 23:00:00 -0100"),
            (u64::MAX, 0, "Fri, 31 Dec 9999 23:59:59 +0000"),
            (u64::MAX, 100_000, "Wed, 5 Jan 10000 03:58:59 +9959"),
        ];
        for (unix, off, want) in table {
            assert_eq!(rfc5322_date(unix, off), want, "{unix} {off}");
        }
    }

    #[test]
    fn fold_keeps_words_and_limits() {
        let mut out = Vec::new();
        let long = "w".repeat(2000);
        fold(
            &mut out,
            "Diagnostic-Code:",
            &std::format!("smtp; a b {long} c"),
            " ",
        );
        let text = core::str::from_utf8(&out).unwrap();
        assert!(text.lines().all(|l| l.len() <= 998));
        let unfolded: String = text.replace("\r\n ", " ");
        assert_eq!(unfolded.matches('w').count(), 2000);
        assert!(unfolded.starts_with("Diagnostic-Code: smtp; a b w"));
        assert!(unfolded.ends_with(" c\r\n"));
    }
}
