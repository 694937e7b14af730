//! Log lines about queued messages, and the `queue` listing, in Postfix's shapes.
//!
//! Everything that came from the network (addresses, reply texts) has its control
//! characters replaced before it reaches a log line, so a peer cannot forge log lines.

use super::envelope::{Envelope, Recipient, RecipientState};
use super::id::QueueId;
use crate::time::civil_time;
use alloc::string::String;
use core::fmt::Write as _;
use core::net::IpAddr;
use core::time::Duration;

/// The server a delivery attempt talked to, as `relay=` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relay<'a> {
    /// No server was reached (`relay=none`).
    None,
    /// `name[addr]:port`.
    Host {
        /// Host name (the MX or relayhost name, or the address itself).
        name: &'a str,
        /// The address connected to.
        addr: IpAddr,
        /// The port connected to.
        port: u16,
    },
}

/// `<qid>: to=<r>, relay=<host>[<ip>]:<port>, delay=<s>, dsn=X.Y.Z, status=<state> (<reason>)`
/// for a recipient whose latest result was just recorded.
///
/// `delay` is the time from arrival to now. A recipient still pending is logged as deferred.
pub fn delivery_line(
    id: &QueueId,
    recipient: &Recipient,
    relay: &Relay<'_>,
    delay: Duration,
) -> String {
    let mut line = String::with_capacity(160);
    let _ = write!(line, "{id}: to=<");
    push_clean(&mut line, &recipient.address);
    line.push_str(">, relay=");
    match relay {
        Relay::None => line.push_str("none"),
        Relay::Host { name, addr, port } => {
            push_clean(&mut line, name);
            let _ = write!(line, "[{addr}]:{port}");
        }
    }
    let status = match recipient.state {
        RecipientState::Pending => RecipientState::Deferred,
        s => s,
    };
    let _ = write!(line, ", delay={}, dsn=", format_delay(delay));
    push_clean(&mut line, &recipient.dsn);
    let _ = write!(line, ", status={} (", status.as_str());
    push_clean(&mut line, &recipient.reason);
    line.push(')');
    line
}

/// `<qid>: from=<sender>, status=expired, returned to sender` (or `, dropped` for a bounce,
/// which is never returned).
pub fn expired_line(envelope: &Envelope) -> String {
    let mut line = String::with_capacity(80);
    let _ = write!(line, "{}: from=<", envelope.id);
    push_clean(&mut line, &envelope.sender);
    line.push_str(">, status=expired, ");
    let returned = !envelope.is_bounce && !envelope.sender.is_empty();
    line.push_str(if returned {
        "returned to sender"
    } else {
        "dropped"
    });
    line
}

/// A delay as Postfix logs it: two significant digits below ten seconds (`0.52`, `1.2`),
/// whole seconds above.
pub fn format_delay(delay: Duration) -> String {
    let ms = delay.as_millis();
    if ms >= 10_000 {
        return alloc::format!("{}", ms / 1000);
    }
    if ms >= 1_000 {
        let tenths = ms / 100;
        return trim(alloc::format!("{}.{}", tenths / 10, tenths % 10));
    }
    trim(alloc::format!("0.{:02}", ms / 10))
}

/// `1.0` → `1`, `0.50` → `0.5`, `0.00` → `0`.
fn trim(mut s: String) -> String {
    while s.ends_with('0') && s.contains('.') {
        s.pop();
    }
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// The column headings of the `queue` listing.
pub const LISTING_HEADER: &str =
    "-Queue ID-      --Size-- ----Arrival Time---- -Sender/Recipient-------";

/// Where recipients and reasons start in a listing entry (under the sender).
const RECIPIENT_COLUMN: usize = 46;

/// One message in the `queue` listing: id, size, arrival and sender on the first line;
/// then each remaining recipient, under the reason of its latest failure; then when the next
/// attempt is due. Times are shown at `offset_minutes` from UTC (the shell's local zone).
/// Every line ends with LF; an empty line follows the entry.
pub fn listing_entry(envelope: &Envelope, offset_minutes: i32) -> String {
    let mut out = String::with_capacity(256);
    let arrival = listing_time(envelope.arrival, offset_minutes);
    let _ = write!(
        out,
        "{:<14}  {:>8} {}  ",
        envelope.id, envelope.size, arrival
    );
    if envelope.sender.is_empty() {
        out.push_str("MAILER-DAEMON");
    } else {
        push_clean(&mut out, &envelope.sender);
    }
    out.push('\n');
    let mut last_reason: Option<&str> = None;
    // A message kept after delivery finished failed for good (a bounce that could not be
    // sent): show why, marked as failed.
    let failed = envelope.is_done();
    for r in envelope
        .recipients
        .iter()
        .filter(|r| r.state.is_remaining() || (failed && r.state == RecipientState::Bounced))
    {
        if !r.reason.is_empty() && last_reason != Some(r.reason.as_str()) {
            indent(&mut out);
            out.push_str(if failed { "(failed: " } else { "(" });
            push_clean(&mut out, &r.reason);
            out.push_str(")\n");
            last_reason = Some(&r.reason);
        }
        indent(&mut out);
        push_clean(&mut out, &r.address);
        out.push('\n');
    }
    if !envelope.is_done() {
        indent(&mut out);
        let _ = writeln!(
            out,
            "next attempt: {}",
            listing_time(envelope.next_attempt, offset_minutes)
        );
    }
    out.push('\n');
    out
}

/// The last line of the listing: `-- 12 Kbytes in 3 Requests.`, or `Mail queue is empty`.
pub fn listing_footer(total_bytes: u64, messages: usize) -> String {
    if messages == 0 {
        return String::from("Mail queue is empty");
    }
    let kbytes = total_bytes.div_ceil(1024);
    let plural = if messages == 1 { "" } else { "s" };
    alloc::format!("-- {kbytes} Kbytes in {messages} Request{plural}.")
}

/// `Tue Nov 14 22:13:20`.
fn listing_time(unix: u64, offset_minutes: i32) -> String {
    let t = civil_time(unix, offset_minutes);
    alloc::format!(
        "{} {} {:>2} {:02}:{:02}:{:02}",
        t.weekday_name(),
        t.month_name(),
        t.day,
        t.hour,
        t.minute,
        t.second
    )
}

fn indent(out: &mut String) {
    out.extend(core::iter::repeat_n(' ', RECIPIENT_COLUMN));
}

/// Appends `text` with control characters (including Unicode line separators) shown as `?`.
fn push_clean(out: &mut String, text: &str) {
    out.extend(text.chars().map(|c| {
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            '?'
        } else {
            c
        }
    }));
}
