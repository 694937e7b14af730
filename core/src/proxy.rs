//! The PROXY protocol header (versions 1 and 2) that an L4 balancer such as HAProxy sends
//! ahead of a client's bytes, telling the server whom the balancer accepted the connection
//! from (`smtpd_upstream_proxy_protocol = haproxy`).
//!
//! Not here: reading the socket, the time limit (`smtpd_upstream_proxy_timeout`) and the
//! decision to trust the balancer at all. Anyone who reaches a listener that expects this
//! header can claim any address, so such a listener must be reachable from the balancer
//! only; that is the operator's part, and `certrelayd check` warns about wildcard binds.
//!
//! [`parse`] is a push parser in the manner of httparse: hand it every byte received so
//! far and it answers [`Parsed::Incomplete`] (read more and call again with the longer
//! buffer), [`Parsed::Complete`] with the header's exact length (every byte past it belongs
//! to the SMTP or TLS layer that follows: in wrapper mode the TLS ClientHello may arrive in
//! the same segment), or an error as soon as the bytes cannot become a header. A header is
//! bounded ([`V1_MAX_LEN`], [`V2_MAX_LEN`]), so a peer cannot make the caller buffer more.
//!
//! What is read: version 1's `PROXY TCP4|TCP6 src dst sport dport` and `PROXY UNKNOWN`
//! lines; version 2's binary header with the `LOCAL` command (a balancer's own health
//! check) or `PROXY` over TCP on IPv4 or IPv6. `LOCAL`, `UNKNOWN`, an unspecified family
//! and UNIX sockets carry no usable client address: the caller keeps the connection's own.
//! Version 2's TLVs are skipped.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::str::FromStr;

/// The longest version 1 line, CRLF included, that the protocol allows.
pub const V1_MAX_LEN: usize = 107;

/// The longest version 2 header read here: its 16 fixed bytes and up to 2048 bytes of
/// addresses and TLVs (HAProxy's own TLVs, TLS facts included, stay well below).
pub const V2_MAX_LEN: usize = 16 + 2048;

/// The twelve bytes that open a version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

const V1_PREFIX: &[u8] = b"PROXY ";

/// What [`parse`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A prefix of a header: read more and call again with every byte so far.
    Incomplete,
    /// A whole header.
    Complete(Header),
}

/// One PROXY protocol header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Its length in bytes: what the caller consumes; the rest is the client's.
    pub len: usize,
    /// 1 or 2.
    pub version: u8,
    /// The client the balancer accepted, and the address it reached; `None` for a header
    /// without a usable address (version 2 `LOCAL`, version 1 `UNKNOWN`, version 2 with an
    /// unspecified family or a UNIX socket): the connection's own peer is the client then.
    pub addresses: Option<Addresses>,
}

impl Header {
    /// The client's address: the one the balancer reports, or `peer` when the header has
    /// none.
    pub fn client(&self, peer: SocketAddr) -> SocketAddr {
        self.addresses.map_or(peer, |a| a.source)
    }
}

/// The two ends of the connection the balancer accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addresses {
    /// The client.
    pub source: SocketAddr,
    /// The address the client connected to.
    pub destination: SocketAddr,
}

/// Why bytes are not a PROXY protocol header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyError {
    /// Neither `PROXY ` nor the version 2 signature: a client speaking SMTP or TLS directly.
    NotProxy,
    /// A version 1 line without CRLF within [`V1_MAX_LEN`] bytes.
    V1TooLong,
    /// A version 1 line that does not read; the part that did not.
    V1Syntax(&'static str),
    /// A version 2 header with a version other than 2.
    V2Version(u8),
    /// A version 2 command other than `LOCAL` (0) or `PROXY` (1).
    V2Command(u8),
    /// A version 2 address family and transport byte not understood (TCP is read, and no
    /// address for UNSPEC and UNIX).
    V2Family(u8),
    /// A version 2 length beyond [`V2_MAX_LEN`], or too short for its address family.
    V2Length(usize),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::NotProxy => f.write_str("no PROXY protocol header"),
            ProxyError::V1TooLong => write!(
                f,
                "PROXY version 1 line without CRLF within {V1_MAX_LEN} bytes"
            ),
            ProxyError::V1Syntax(what) => write!(f, "PROXY version 1 line: bad {what}"),
            ProxyError::V2Version(v) => write!(f, "PROXY version 2 header of version {v}"),
            ProxyError::V2Command(c) => write!(f, "PROXY version 2 command {c} unknown"),
            ProxyError::V2Family(b) => {
                write!(
                    f,
                    "PROXY version 2 address family/transport 0x{b:02x} not TCP"
                )
            }
            ProxyError::V2Length(n) => write!(
                f,
                "PROXY version 2 address length {n} (too short for its family, or over {})",
                V2_MAX_LEN - 16
            ),
        }
    }
}

/// Reads the header at the start of `buf` (every byte received so far).
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if starts_like(buf, V1_PREFIX) {
        if buf.len() < V1_PREFIX.len() {
            return Ok(Parsed::Incomplete);
        }
        return v1(buf);
    }
    if starts_like(buf, &V2_SIGNATURE) {
        if buf.len() < 16 {
            return Ok(Parsed::Incomplete);
        }
        return v2(buf);
    }
    Err(ProxyError::NotProxy)
}

/// Whether `buf` and `prefix` agree over their common length.
fn starts_like(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    buf[..n] == prefix[..n]
}

fn v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() >= V1_MAX_LEN {
            return Err(ProxyError::V1TooLong);
        }
        return Ok(Parsed::Incomplete);
    };
    if lf == 0 || window[lf - 1] != b'\r' {
        return Err(ProxyError::V1Syntax("line end (LF without CR)"));
    }
    let line = &window[V1_PREFIX.len()..lf - 1];
    let line = core::str::from_utf8(line).map_err(|_| ProxyError::V1Syntax("byte"))?;
    let addresses = v1_fields(line)?;
    Ok(Parsed::Complete(Header {
        len: lf + 1,
        version: 1,
        addresses,
    }))
}

/// The fields after `PROXY `.
fn v1_fields(line: &str) -> Result<Option<Addresses>, ProxyError> {
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        // Whatever follows is to be ignored.
        return Ok(None);
    }
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or_default();
    let v6 = match family {
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(ProxyError::V1Syntax("protocol (TCP4, TCP6 or UNKNOWN)")),
    };
    let source = v1_addr(fields.next(), v6, "source address")?;
    let destination = v1_addr(fields.next(), v6, "destination address")?;
    let source_port = v1_port(fields.next(), "source port")?;
    let destination_port = v1_port(fields.next(), "destination port")?;
    if fields.next().is_some() {
        return Err(ProxyError::V1Syntax("field count"));
    }
    Ok(Some(Addresses {
        source: SocketAddr::new(source, source_port),
        destination: SocketAddr::new(destination, destination_port),
    }))
}

fn v1_addr(field: Option<&str>, v6: bool, what: &'static str) -> Result<IpAddr, ProxyError> {
    let field = field.ok_or(ProxyError::V1Syntax(what))?;
    let addr = if v6 {
        Ipv6Addr::from_str(field).map(IpAddr::V6)
    } else {
        Ipv4Addr::from_str(field).map(IpAddr::V4)
    };
    addr.map_err(|_| ProxyError::V1Syntax(what))
}

fn v1_port(field: Option<&str>, what: &'static str) -> Result<u16, ProxyError> {
    let field = field.ok_or(ProxyError::V1Syntax(what))?;
    if field.is_empty() || field.len() > 5 || !field.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProxyError::V1Syntax(what));
    }
    field.parse().map_err(|_| ProxyError::V1Syntax(what))
}

fn v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err(ProxyError::V2Version(version_command >> 4));
    }
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        other => return Err(ProxyError::V2Command(other)),
    };
    let family = buf[13];
    let length = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + length;
    if total > V2_MAX_LEN {
        return Err(ProxyError::V2Length(length));
    }
    // The address block each family needs: two addresses and two ports.
    let needed = match family {
        0x00 => 0,
        0x11 => 12,
        0x21 => 36,
        0x31 => 216,
        // A LOCAL header's family is to be ignored.
        _ if local => 0,
        other => return Err(ProxyError::V2Family(other)),
    };
    if length < needed && !local {
        return Err(ProxyError::V2Length(length));
    }
    if buf.len() < total {
        return Ok(Parsed::Incomplete);
    }
    let block = &buf[16..total];
    let addresses = if local {
        None
    } else {
        match family {
            0x11 => {
                let ip = |at: usize| {
                    IpAddr::V4(Ipv4Addr::new(
                        block[at],
                        block[at + 1],
                        block[at + 2],
                        block[at + 3],
                    ))
                };
                Some(addresses(ip(0), ip(4), &block[8..12]))
            }
            0x21 => {
                let ip = |at: usize| {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&block[at..at + 16]);
                    IpAddr::V6(Ipv6Addr::from(octets))
                };
                Some(addresses(ip(0), ip(16), &block[32..36]))
            }
            _ => None,
        }
    };
    Ok(Parsed::Complete(Header {
        len: total,
        version: 2,
        addresses,
    }))
}

fn addresses(source: IpAddr, destination: IpAddr, ports: &[u8]) -> Addresses {
    Addresses {
        source: SocketAddr::new(source, u16::from_be_bytes([ports[0], ports[1]])),
        destination: SocketAddr::new(destination, u16::from_be_bytes([ports[2], ports[3]])),
    }
}

/// Writes a version 1 line for `addresses` (`PROXY UNKNOWN` for `None`, or when the two
/// ends are of different families): what a balancer sends, for tests and tools.
pub fn v1_header(addresses: Option<Addresses>) -> alloc::string::String {
    match addresses {
        Some(a) if a.source.is_ipv4() == a.destination.is_ipv4() => {
            let family = if a.source.is_ipv4() { "TCP4" } else { "TCP6" };
            alloc::format!(
                "PROXY {family} {} {} {} {}\r\n",
                a.source.ip(),
                a.destination.ip(),
                a.source.port(),
                a.destination.port()
            )
        }
        _ => alloc::string::String::from("PROXY UNKNOWN\r\n"),
    }
}

/// Writes a version 2 header for `addresses` (the `LOCAL` command for `None`), followed by
/// `tlvs` as they are: what a balancer sends, for tests and tools. `None` when the two
/// ends are of different families or `tlvs` is too long for one header.
pub fn v2_header(addresses: Option<Addresses>, tlvs: &[u8]) -> Option<alloc::vec::Vec<u8>> {
    let mut block = alloc::vec::Vec::new();
    let (command, family) = match addresses {
        None => (0x20, 0x00),
        Some(a) => {
            let family = match (a.source.ip(), a.destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    block.extend_from_slice(&s.octets());
                    block.extend_from_slice(&d.octets());
                    0x11
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    block.extend_from_slice(&s.octets());
                    block.extend_from_slice(&d.octets());
                    0x21
                }
                _ => return None,
            };
            block.extend_from_slice(&a.source.port().to_be_bytes());
            block.extend_from_slice(&a.destination.port().to_be_bytes());
            (0x21, family)
        }
    };
    block.extend_from_slice(tlvs);
    if 16 + block.len() > V2_MAX_LEN {
        return None;
    }
    let length = u16::try_from(block.len()).ok()?;
    let mut out = alloc::vec::Vec::with_capacity(16 + block.len());
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(command);
    out.push(family);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&block);
    Some(out)
}

#[cfg(test)]
mod tests;
