//! Binding the listening sockets: a master.cf endpoint, or every `inet_interfaces` address.

use super::listener::ListenerConf;
use crate::error::Error;
use smol::net::TcpListener;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

/// One bound socket and the key of the listener it serves.
pub struct Bound {
    /// [`ListenerConf::key`].
    pub key: String,
    /// The socket.
    pub socket: TcpListener,
    /// Its local address, for logs.
    pub local: SocketAddr,
}

/// The addresses a listener without a host binds: `inet_interfaces` and `inet_protocols`.
#[derive(Clone, Debug)]
pub struct Interfaces<'a> {
    /// `inet_interfaces` (`all`, `loopback-only`, addresses or names).
    pub interfaces: &'a [String],
    /// `inet_protocols` (`all`, `ipv4`, `ipv6`).
    pub protocols: &'a [String],
}

/// Binds every listener. Any failure is fatal at start: a server that does not listen
/// where it was told to is of no use.
pub async fn bind_all(
    listeners: &[Arc<ListenerConf>],
    wildcard: &Interfaces<'_>,
) -> Result<Vec<Bound>, Error> {
    let mut bound = Vec::new();
    for listener in listeners {
        bound.extend(bind_listener(listener, wildcard).await?);
    }
    Ok(bound)
}

async fn bind_listener(
    listener: &ListenerConf,
    wildcard: &Interfaces<'_>,
) -> Result<Vec<Bound>, Error> {
    let plan = match &listener.endpoint.host {
        Some(host) => Plan::Exact(resolve(host, listener.endpoint.port)?),
        None => interfaces(
            wildcard.interfaces,
            wildcard.protocols,
            listener.endpoint.port,
        )?,
    };
    let mut out = Vec::new();
    match plan {
        Plan::Exact(addrs) => {
            for addr in addrs {
                let socket = bind(addr)
                    .await
                    .map_err(|e| bind_error(listener, addr, e))?;
                out.push(bound(listener, socket)?);
            }
        }
        Plan::Wildcard { v4, v6 } => {
            // On Linux `[::]` usually takes IPv4 as well (dual stack); 0.0.0.0 then fails
            // with "in use", which is fine. Where it is IPv6-only, 0.0.0.0 binds too.
            let mut any = false;
            if v6 {
                let addr =
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), listener.endpoint.port);
                match bind(addr).await {
                    Ok(s) => {
                        out.push(bound(listener, s)?);
                        any = true;
                    }
                    Err(e) if v4 => log::debug!("no IPv6 wildcard on {addr}: {e}"),
                    Err(e) => return Err(bind_error(listener, addr, e)),
                }
            }
            if v4 {
                let addr =
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), listener.endpoint.port);
                match bind(addr).await {
                    Ok(s) => out.push(bound(listener, s)?),
                    Err(e) if any && e.kind() == io::ErrorKind::AddrInUse => {}
                    Err(e) => return Err(bind_error(listener, addr, e)),
                }
            }
        }
    }
    Ok(out)
}

fn bound(listener: &ListenerConf, socket: TcpListener) -> Result<Bound, Error> {
    let local = socket.local_addr().map_err(|source| Error::Listen {
        listener: listener.key.clone(),
        addr: None,
        source,
    })?;
    Ok(Bound {
        key: listener.key.clone(),
        socket,
        local,
    })
}

fn bind_error(listener: &ListenerConf, addr: SocketAddr, source: io::Error) -> Error {
    Error::Listen {
        listener: listener.key.clone(),
        addr: Some(addr),
        source,
    }
}

async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// What to bind for one listener.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// These addresses.
    Exact(Vec<SocketAddr>),
    /// The wildcard address of each family wanted.
    Wildcard { v4: bool, v6: bool },
}

/// `inet_interfaces` (`all`, `loopback-only`, addresses or names) filtered by
/// `inet_protocols` (`all`, `ipv4`, `ipv6`).
fn interfaces(interfaces: &[String], protocols: &[String], port: u16) -> Result<Plan, Error> {
    let all_protocols = protocols.is_empty() || protocols.iter().any(|p| p == "all");
    let v4 = all_protocols || protocols.iter().any(|p| p == "ipv4");
    let v6 = all_protocols || protocols.iter().any(|p| p == "ipv6");
    if interfaces.is_empty() || interfaces.iter().any(|i| i == "all") {
        return Ok(Plan::Wildcard { v4, v6 });
    }
    let mut addrs = Vec::new();
    for item in interfaces {
        if item == "loopback-only" {
            addrs.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
            addrs.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port));
        } else {
            let host = item.trim_start_matches('[').trim_end_matches(']');
            addrs.extend(resolve(host, port)?);
        }
    }
    addrs.retain(|a| (a.is_ipv4() && v4) || (a.is_ipv6() && v6));
    addrs.dedup();
    if addrs.is_empty() {
        return Err(Error::NoInterface {
            interfaces: interfaces.to_vec(),
            protocols: protocols.to_vec(),
        });
    }
    Ok(Plan::Exact(addrs))
}

/// An address literal, or a host name through the system resolver (start-up only).
fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Error> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::Resolve {
            host: host.to_owned(),
            source: Some(e),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Error::Resolve {
            host: host.to_owned(),
            source: None,
        });
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn interfaces_follow_postfix_keywords() {
        let all = list(&["all"]);
        assert_eq!(
            interfaces(&list(&["all"]), &all, 25).unwrap(),
            Plan::Wildcard { v4: true, v6: true }
        );
        assert_eq!(
            interfaces(&list(&["all"]), &list(&["ipv4"]), 25).unwrap(),
            Plan::Wildcard {
                v4: true,
                v6: false
            }
        );
        let Plan::Exact(lo) = interfaces(&list(&["loopback-only"]), &all, 25).unwrap() else {
            panic!("loopback-only is exact");
        };
        assert_eq!(
            lo,
            ["127.0.0.1:25".parse().unwrap(), "[::1]:25".parse().unwrap()]
        );
        let Plan::Exact(lo4) = interfaces(&list(&["loopback-only"]), &list(&["ipv4"]), 25).unwrap()
        else {
            panic!("exact");
        };
        assert_eq!(lo4, ["127.0.0.1:25".parse().unwrap()]);
        let Plan::Exact(some) =
            interfaces(&list(&["192.0.2.1", "[2001:db8::1]"]), &all, 2525).unwrap()
        else {
            panic!("exact");
        };
        assert_eq!(
            some,
            [
                "192.0.2.1:2525".parse().unwrap(),
                "[2001:db8::1]:2525".parse().unwrap()
            ]
        );
        assert!(matches!(
            interfaces(&list(&["192.0.2.1"]), &list(&["ipv6"]), 25),
            Err(Error::NoInterface { .. })
        ));
    }
}
