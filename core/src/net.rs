//! Address lists (`mynetworks`): networks in CIDR notation.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One network, `192.0.2.0/24` or `[2001:db8::]/32` or a single address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits zero).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

/// Why a network could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetError {
    /// Not an IPv4 or IPv6 address.
    BadAddress(String),
    /// The part after `/` is not a number within the address family's size.
    BadPrefix(String),
    /// The address has bits set beyond the prefix; `suggestion` is the network meant.
    HostBitsSet {
        /// The text as written.
        written: String,
        /// The same network with the host bits cleared.
        suggestion: String,
    },
    /// A form Postfix allows in `mynetworks` but certrelay does not read (host names,
    /// `/file/name`, `type:table`).
    Unsupported(String),
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::BadAddress(t) => write!(f, "\"{t}\" is not an IP address or network"),
            NetError::BadPrefix(t) => write!(f, "\"{t}\" has an invalid prefix length"),
            NetError::HostBitsSet {
                written,
                suggestion,
            } => write!(
                f,
                "\"{written}\" has address bits set beyond its prefix; write \"{suggestion}\""
            ),
            NetError::Unsupported(t) => write!(
                f,
                "\"{t}\" is not supported here: list networks as address/prefix or single addresses"
            ),
        }
    }
}

impl Cidr {
    /// Reads `127.0.0.0/8`, `[::1]/128`, `[2001:db8::]/32`, `192.0.2.1`, `::1`.
    ///
    /// A network whose address has host bits set is an error, as in Postfix, because it
    /// usually means a typo in the prefix.
    pub fn parse(text: &str) -> Result<Cidr, NetError> {
        let text = text.trim();
        let (addr_text, prefix_text) = match text.rsplit_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr = parse_addr(addr_text).ok_or_else(|| classify_bad(text))?;
        let max = max_prefix(addr);
        let prefix = match prefix_text {
            None => max,
            Some(p) => parse_prefix(p, max).ok_or_else(|| NetError::BadPrefix(text.into()))?,
        };
        let network = mask(addr, prefix);
        if network != addr {
            let suggestion = Cidr {
                addr: network,
                prefix,
            };
            return Err(NetError::HostBitsSet {
                written: text.into(),
                suggestion: alloc::format!("{suggestion}"),
            });
        }
        Ok(Cidr { addr, prefix })
    }

    /// True when `ip` lies in this network. An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`,
    /// as a dual-stack socket reports IPv4 clients) is compared as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = unmap(ip);
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.addr
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}/{}", self.prefix),
            IpAddr::V6(a) => write!(f, "[{a}]/{}", self.prefix),
        }
    }
}

/// Reads a `mynetworks`-style list: items separated by commas and whitespace.
pub fn parse_list(text: &str) -> Result<Vec<Cidr>, NetError> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
        .map(Cidr::parse)
        .collect()
}

/// True when `ip` is in any of `networks`.
pub fn list_contains(networks: &[Cidr], ip: IpAddr) -> bool {
    networks.iter().any(|n| n.contains(ip))
}

fn parse_addr(text: &str) -> Option<IpAddr> {
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    text.parse::<IpAddr>().ok()
}

fn parse_prefix(text: &str, max: u8) -> Option<u8> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u8>().ok().filter(|p| *p <= max)
}

fn classify_bad(text: &str) -> NetError {
    let table_type = text
        .split_once(':')
        .is_some_and(|(kind, _)| !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_alphabetic()));
    let host_name = !text.contains(':') && text.bytes().any(|b| b.is_ascii_alphabetic());
    if text.starts_with('/') || table_type || host_name {
        NetError::Unsupported(text.into())
    } else {
        NetError::BadAddress(text.into())
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_forms() {
        let cases = [
            ("127.0.0.0/8", "127.0.0.0", 8),
            ("[::1]/128", "::1", 128),
            ("[2001:db8::]/32", "2001:db8::", 32),
            ("192.0.2.1", "192.0.2.1", 32),
            ("::1", "::1", 128),
            ("[::1]", "::1", 128),
            ("2001:db8::/32", "2001:db8::", 32),
            ("0.0.0.0/0", "0.0.0.0", 0),
            (" 10.0.0.0/8 ", "10.0.0.0", 8),
        ];
        for (text, addr, prefix) in cases {
            let c = Cidr::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((c.addr, c.prefix), (ip(addr), prefix), "{text}");
        }
    }

    #[test]
    fn rejects_bad_forms() {
        let cases: &[(&str, &str)] = &[
            ("127.0.0.1/8", "write \"127.0.0.0/8\""),
            ("[2001:db8::1]/32", "write \"[2001:db8::]/32\""),
            ("10.0.0.0/33", "invalid prefix"),
            ("10.0.0.0/", "invalid prefix"),
            ("10.0.0.0/+8", "invalid prefix"),
            ("[::1]/129", "invalid prefix"),
            ("300.1.1.1", "not an IP address"),
            ("[127.0.0.1]", "not an IP address"),
            ("", "not an IP address"),
            ("example.com", "not supported"),
            ("/etc/postfix/network_table", "not supported"),
            ("hash:/etc/postfix/network_table", "not supported"),
        ];
        for (text, want) in cases {
            let err = Cidr::parse(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn contains_matches_families_and_mapped() {
        let cases = [
            ("127.0.0.0/8", "127.1.2.3", true),
            ("127.0.0.0/8", "128.0.0.1", false),
            ("127.0.0.0/8", "::ffff:127.0.0.1", true),
            ("127.0.0.0/8", "::1", false),
            ("[::1]/128", "::1", true),
            ("[::1]/128", "127.0.0.1", false),
            ("[2001:db8::]/32", "2001:db8:ffff::1", true),
            ("[2001:db8::]/32", "2001:db9::1", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("192.0.2.1", "192.0.2.1", true),
            ("192.0.2.1", "192.0.2.2", false),
            ("[::]/0", "2001:db8::1", true),
        ];
        for (net, addr, want) in cases {
            assert_eq!(
                Cidr::parse(net).unwrap().contains(ip(addr)),
                want,
                "{net} {addr}"
            );
        }
    }

    #[test]
    fn list_and_display() {
        let list = parse_list("127.0.0.0/8, [::1]/128\n 192.0.2.0/24,,").unwrap();
        let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["127.0.0.0/8", "[::1]/128", "192.0.2.0/24"]);
        assert!(list_contains(&list, ip("192.0.2.77")));
        assert!(!list_contains(&list, ip("198.51.100.1")));
        assert!(parse_list("").unwrap().is_empty());
        assert!(parse_list("127.0.0.0/8 10.1.0.0/8").is_err());
    }
}
