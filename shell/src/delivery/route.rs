//! Where mail goes: the next hop (a `relayhost` list, or the recipient domain's MX hosts)
//! and the servers to try for it, in order.

use crate::delivery::resolver::{LookupError, Resolver};
use certrelay_core::client::ServerPeer;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The most servers (addresses) tried for one next hop in one attempt.
pub const MAX_SERVERS: usize = 10;

pub use certrelay_core::nexthop::NextHop;

/// The destination of a group of messages: what connections are shared for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Destination {
    /// The `relayhost` list, tried in order (failover).
    Relayhost(Vec<NextHop>),
    /// A recipient domain, delivered by MX on this port.
    Domain {
        /// Lower-case domain.
        domain: String,
        /// SMTP port (25; tests use others).
        port: u16,
    },
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Relayhost(hops) => {
                let texts: Vec<&str> = hops.iter().map(|h| h.written.as_str()).collect();
                f.write_str(&texts.join(", "))
            }
            Destination::Domain { domain, .. } => f.write_str(domain),
        }
    }
}

/// One server to connect to: the name logs and certificate checks use, and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddr {
    /// Host name (from the MX record or the relayhost), or the address text for an IP literal.
    pub name: String,
    /// Address to connect to.
    pub addr: IpAddr,
    /// TCP port.
    pub port: u16,
}

impl ServerAddr {
    /// The socket address to connect to.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }

    /// The peer as the core's reason texts name it.
    pub fn peer(&self) -> ServerPeer {
        ServerPeer {
            name: self.name.clone(),
            addr: self.addr,
        }
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]:{}", self.name, self.addr, self.port)
    }
}

/// A server to try, with the next hop it was found for (the per-site policy key, and the
/// names its certificate may present).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Where to connect.
    pub server: ServerAddr,
    /// The next hop as written (relayhost entry text, or the domain).
    pub nexthop: String,
    /// The next-hop domain: the recipient domain, or the relayhost's host without brackets
    /// or port. The name `secure` checks the certificate against by default.
    pub nexthop_domain: String,
    /// True when the server's name was learned from an MX record (and differs from the
    /// next-hop domain): a name DNS gave us, which `secure` never trusts.
    pub host_from_mx: bool,
    /// TLS from the first byte (wrapper mode, [`NextHop::implicit_tls`]).
    pub implicit_tls: bool,
}

/// The servers to try for `dest`, in order, or why there are none.
///
/// Relayhost entries are tried in order; an entry that does not resolve is skipped (and
/// its error kept for when none resolves). A domain's MX hosts come by preference; a
/// permanent lookup failure (no such domain, null MX) is returned as is so that the
/// recipients bounce.
pub async fn candidates(
    dest: &Destination,
    resolver: &Resolver,
    myhostname: &str,
) -> Result<Vec<Candidate>, LookupError> {
    let mut out = Vec::new();
    let mut last_error = None;
    let targets: Vec<(String, u16, bool, String, bool)> = match dest {
        Destination::Relayhost(hops) => hops
            .iter()
            .map(|h| {
                let written = h.written.clone();
                (h.host.clone(), h.port, h.mx_lookup, written, h.implicit_tls)
            })
            .collect(),
        Destination::Domain { domain, port } => {
            vec![(domain.clone(), *port, true, domain.clone(), false)]
        }
    };
    for (host, port, mx, nexthop, implicit_tls) in targets {
        let from_mx = mx && host.parse::<IpAddr>().is_err();
        let hosts = if from_mx {
            match resolver.mail_hosts(&host, myhostname).await {
                Ok(hosts) => hosts,
                Err(e) if matches!(dest, Destination::Domain { .. }) && e.is_permanent() => {
                    return Err(e)
                }
                Err(e) => {
                    last_error = Some(e);
                    continue;
                }
            }
        } else {
            vec![host.clone()]
        };
        for name in hosts {
            if out.len() >= MAX_SERVERS {
                break;
            }
            let found = if from_mx {
                resolver.addresses(&name).await
            } else {
                system_addresses(&name, port).await
            };
            let host_from_mx = from_mx && !same_name(&name, &host);
            match found {
                Ok(addrs) => out.extend(addrs.into_iter().map(|addr| Candidate {
                    server: ServerAddr {
                        name: name.clone(),
                        addr,
                        port,
                    },
                    nexthop: nexthop.clone(),
                    nexthop_domain: host.clone(),
                    host_from_mx,
                    implicit_tls,
                })),
                Err(e) => last_error = Some(e),
            }
        }
    }
    out.truncate(MAX_SERVERS);
    match (out.is_empty(), last_error) {
        (true, Some(e)) => Err(e),
        (true, None) => Err(LookupError::Temporary(format!(
            "no server found for {dest}"
        ))),
        _ => Ok(out),
    }
}

/// Whether two host names are the same (any case, trailing dot or not).
fn same_name(a: &str, b: &str) -> bool {
    let bare = |n: &str| n.strip_suffix('.').unwrap_or(n).to_owned();
    bare(a).eq_ignore_ascii_case(&bare(b))
}

/// Addresses of a host named without MX lookup (a bracketed relayhost), through the system
/// resolver so that `/etc/hosts` counts, as it does for every other program on the laptop.
async fn system_addresses(host: &str, port: u16) -> Result<Vec<IpAddr>, LookupError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    match smol::net::resolve((host, port)).await {
        Ok(addrs) if !addrs.is_empty() => Ok(addrs.into_iter().map(|a| a.ip()).collect()),
        Ok(_) => Err(LookupError::Temporary(format!(
            "Host or domain name not found. Name service error for name={host} type=A: Host not found"
        ))),
        Err(e) => Err(LookupError::Temporary(format!(
            "Host or domain name not found. Name service error for name={host} type=A: {e}"
        ))),
    }
}

/// A socket this host listens on for mail: an address (`None`: every address of the host)
/// and a port.
pub type OwnEndpoint = (Option<IpAddr>, u16);

/// True when `server` is one of `own`: this host itself, so mail sent there comes back.
///
/// The port counts: a filter on 127.0.0.1:10025 is another program, not this one.
pub fn is_own(server: &ServerAddr, own: &[OwnEndpoint]) -> bool {
    own.iter().any(|(addr, port)| {
        *port == server.port
            && match addr {
                Some(a) => same_ip(*a, server.addr),
                None => is_local_address(server.addr),
            }
    })
}

/// The same address, an IPv4 address and its IPv6-mapped form alike.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// True when `addr` belongs to this host: the system lets a socket bind to it (loopback,
/// or an address of one of its interfaces); the unspecified address counts too.
pub fn is_local_address(addr: IpAddr) -> bool {
    let addr = addr.to_canonical();
    addr.is_unspecified()
        || addr.is_loopback()
        || std::net::UdpSocket::bind(SocketAddr::new(addr, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(addr: &str, port: u16) -> ServerAddr {
        ServerAddr {
            name: "mx".into(),
            addr: addr.parse().unwrap(),
            port,
        }
    }

    #[test]
    fn own_endpoints_need_address_and_port() {
        let own = [(Some("192.0.2.1".parse().unwrap()), 25), (None, 2525)];
        assert!(is_own(&server("192.0.2.1", 25), &own));
        assert!(is_own(&server("::ffff:192.0.2.1", 25), &own));
        assert!(!is_own(&server("192.0.2.1", 26), &own));
        assert!(!is_own(&server("192.0.2.2", 25), &own));
        // A wildcard listener: every address of this host, on its port only.
        assert!(is_own(&server("127.0.0.1", 2525), &own));
        assert!(is_own(&server("::1", 2525), &own));
        assert!(!is_own(&server("127.0.0.1", 10025), &own));
        // 192.0.2.0/24 is documentation space, on no interface of a test machine.
        assert!(!is_own(&server("192.0.2.9", 2525), &own));
        assert!(!is_own(&server("127.0.0.1", 25), &[]));
    }
}
