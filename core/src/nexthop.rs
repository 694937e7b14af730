//! Next hops for the SMTP client: `relayhost` and its forms.
//!
//! Each form keeps the text as written, because that text is also the first key looked up in
//! `smtp_tls_per_site`.
//!
//! Each entry also says whether it speaks TLS from the first byte (wrapper mode): port 465
//! (`smtps`, `submissions`, RFC 8314's implicit TLS) does unless `smtp_tls_wrappermode`
//! says otherwise ([`apply_wrappermode`]); `smtp_tls_wrappermode = yes` makes every entry
//! do so, as it does in Postfix.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, Ipv6Addr};

/// The SMTP port, used when a next hop names none.
pub const DEFAULT_PORT: u16 = 25;

/// The submissions port (RFC 8314): implicit TLS unless configured otherwise.
pub const SUBMISSIONS_PORT: u16 = 465;

/// One next hop: where to deliver, and whether to look up MX records first.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NextHop {
    /// The entry as written (`[relay.example]:587`); the per-site lookup key.
    pub written: String,
    /// Host name or IP address text, without brackets or port.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// False when the host was in brackets: connect to it (its A/AAAA) directly.
    pub mx_lookup: bool,
    /// TLS from the first byte (wrapper mode) rather than STARTTLS.
    pub implicit_tls: bool,
}

impl NextHop {
    /// Reads one entry: `host`, `host:port`, `[host]`, `[host]:port`, `[ip]:port`,
    /// `[ipv6addr]:port` (also `[ipv6:addr]`).
    pub fn parse(text: &str) -> Result<NextHop, NextHopError> {
        let written = text.trim();
        if written.is_empty() {
            return Err(NextHopError::Empty);
        }
        let (host, port_text, bracketed) = split_host_port(written)?;
        let port = match port_text {
            None => DEFAULT_PORT,
            Some(p) => parse_port(p).ok_or_else(|| NextHopError::BadPort {
                written: written.into(),
                port: p.into(),
            })?,
        };
        let host = check_host(host, bracketed, written)?;
        Ok(NextHop {
            written: written.into(),
            host,
            port,
            mx_lookup: !bracketed,
            implicit_tls: port == SUBMISSIONS_PORT,
        })
    }

    /// The host as an IP address, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

/// Reads `relayhost`: entries separated by commas and whitespace, in failover order. Empty
/// text gives an empty list (deliver by MX to each recipient domain).
pub fn parse_relayhost(text: &str) -> Result<Vec<NextHop>, NextHopError> {
    crate::text::split_list(text).map(NextHop::parse).collect()
}

/// Applies `smtp_tls_wrappermode` to parsed entries: `Some(true)` makes every entry speak
/// TLS from the first byte, `Some(false)` none (not even port 465), `None` (not set) keeps
/// the default, which is wrapper mode on port 465 only.
pub fn apply_wrappermode(hops: &mut [NextHop], wrappermode: Option<bool>) {
    if let Some(on) = wrappermode {
        for hop in hops {
            hop.implicit_tls = on;
        }
    }
}

/// Why a next hop could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NextHopError {
    /// Nothing was written.
    Empty,
    /// A `[` without its `]`, or text after `]` that is not `:port`.
    Brackets(String),
    /// The port is neither a number 1..=65535 nor a known service name.
    BadPort {
        /// The entry as written.
        written: String,
        /// The port text.
        port: String,
    },
    /// The host is not a valid host name (or the bracketed text is not one or an address).
    BadHost(String),
    /// An IPv6 address without brackets, which cannot be told apart from `host:port`.
    UnbracketedIpv6(String),
}

impl fmt::Display for NextHopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NextHopError::Empty => f.write_str("empty next-hop destination"),
            NextHopError::Brackets(w) => write!(
                f,
                "\"{w}\": brackets must enclose the whole host, optionally followed by :port"
            ),
            NextHopError::BadPort { written, port } => write!(
                f,
                "\"{written}\": port \"{port}\" is not a number from 1 to 65535 or a known service name"
            ),
            NextHopError::BadHost(w) => write!(f, "\"{w}\": invalid host name or address"),
            NextHopError::UnbracketedIpv6(w) => write!(
                f,
                "\"{w}\": write an IPv6 address in brackets, as [{w}] or [{w}]:port"
            ),
        }
    }
}

fn split_host_port(written: &str) -> Result<(&str, Option<&str>, bool), NextHopError> {
    if let Some(rest) = written.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| NextHopError::Brackets(written.into()))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| NextHopError::Brackets(written.into()))?,
            ),
        };
        return Ok((host, port, true));
    }
    if written.contains(']') {
        return Err(NextHopError::Brackets(written.into()));
    }
    if written.matches(':').count() > 1 {
        return Err(NextHopError::UnbracketedIpv6(written.into()));
    }
    Ok(match written.split_once(':') {
        Some((h, p)) => (h, Some(p), false),
        None => (written, None, false),
    })
}

fn check_host(host: &str, bracketed: bool, written: &str) -> Result<String, NextHopError> {
    let bad = || NextHopError::BadHost(written.into());
    if bracketed {
        let lower = host.to_ascii_lowercase();
        if let Some(v6) = lower.strip_prefix("ipv6:") {
            return v6
                .parse::<Ipv6Addr>()
                .map(|a| alloc::format!("{a}"))
                .map_err(|_| bad());
        }
        if host.contains(':') {
            return host
                .parse::<Ipv6Addr>()
                .map(|_| host.into())
                .map_err(|_| bad());
        }
    }
    if is_host_name(host) {
        Ok(host.into())
    } else {
        Err(bad())
    }
}

/// A host name or dotted IPv4 address: labels of letters, digits, `-` and `_`.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A port number or one of the mail service names from `/etc/services`.
pub fn parse_port(text: &str) -> Option<u16> {
    match text {
        "smtp" => Some(25),
        "submission" => Some(587),
        "smtps" | "submissions" => Some(465),
        _ if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            text.parse::<u16>().ok().filter(|p| *p != 0)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn parses_each_form() {
        let cases = [
            ("kaoru.asyd.net", "kaoru.asyd.net", 25, true),
            ("kaoru.asyd.net:587", "kaoru.asyd.net", 587, true),
            ("[kaoru.asyd.net]", "kaoru.asyd.net", 25, false),
            ("[kaoru.asyd.net]:2526", "kaoru.asyd.net", 2526, false),
            ("[127.0.0.1]:2526", "127.0.0.1", 2526, false),
            ("[::1]:2526", "::1", 2526, false),
            ("[2001:db8::1]", "2001:db8::1", 25, false),
            ("[ipv6:2001:db8::1]:25", "2001:db8::1", 25, false),
            ("relay.example:submission", "relay.example", 587, true),
            ("[relay.example]:smtps", "relay.example", 465, false),
            ("  relay.example.  ", "relay.example.", 25, true),
        ];
        for (text, host, port, mx) in cases {
            let hop = NextHop::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(hop.written, text.trim());
            assert_eq!(
                (hop.host.as_str(), hop.port, hop.mx_lookup),
                (host, port, mx),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_with_reasons() {
        let cases = [
            ("", "empty next-hop"),
            ("[relay.example", "brackets must enclose"),
            ("[relay.example]587", "brackets must enclose"),
            ("relay.example]", "brackets must enclose"),
            ("relay.example:0", "port \"0\""),
            ("relay.example:65536", "port \"65536\""),
            ("relay.example:", "port \"\""),
            ("relay.example:imap", "port \"imap\""),
            ("2001:db8::1", "write an IPv6 address in brackets"),
            ("relay..example", "invalid host name"),
            ("rel ay", "invalid host name"),
            ("[]", "invalid host name"),
            ("[1:2:3]", "invalid host name"),
            ("relay/example", "invalid host name"),
        ];
        for (text, want) in cases {
            let err = NextHop::parse(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn relayhost_lists_keep_order() {
        let hops = parse_relayhost("[a.example]:587, b.example\n [127.0.0.1]").unwrap();
        let shown: Vec<String> = hops.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["[a.example]:587", "b.example", "[127.0.0.1]"]);
        assert_eq!(hops[2].ip(), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(hops[1].ip(), None);
        assert!(parse_relayhost("").unwrap().is_empty());
        assert!(parse_relayhost("a.example, [b").is_err());
    }

    #[test]
    fn port_465_is_wrapper_mode_unless_configured_otherwise() {
        let text = "[r.example]:465, [r.example]:submissions, [r.example]:587, [r.example]";
        let implicit =
            |hops: &[NextHop]| -> Vec<bool> { hops.iter().map(|h| h.implicit_tls).collect() };
        let mut hops = parse_relayhost(text).unwrap();
        assert_eq!(implicit(&hops), [true, true, false, false]);
        apply_wrappermode(&mut hops, None);
        assert_eq!(implicit(&hops), [true, true, false, false]);
        apply_wrappermode(&mut hops, Some(true));
        assert_eq!(implicit(&hops), [true, true, true, true]);
        apply_wrappermode(&mut hops, Some(false));
        assert_eq!(implicit(&hops), [false, false, false, false]);
    }
}
