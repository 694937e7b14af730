//! The client's host name for logs and `Received:` (`name[address]`), found as Postfix
//! finds it: the address's name (the hosts file first, then DNS), kept only when that name
//! leads back to the address; otherwise `unknown`. With `smtpd_peername_lookup = no`, or
//! when the lookups take too long, the name is `unknown` at once.

use crate::delivery::resolver::Resolver;
use certrelay_core::hosts;
use std::net::IpAddr;
use std::time::Duration;

/// The name given when none is found or confirmed.
pub const UNKNOWN: &str = "unknown";

/// The longest the greeting waits for the name.
pub const LOOKUP_LIMIT: Duration = Duration::from_secs(10);

/// Where names come from: the hosts file's text and a resolver.
pub struct NameSources {
    /// The hosts file as read for this lookup (empty when unreadable).
    pub hosts: String,
    /// DNS.
    pub resolver: Resolver,
}

impl NameSources {
    /// The system's: `/etc/hosts` and `/etc/resolv.conf`, read now.
    pub async fn system() -> NameSources {
        // Both are file reads: off the executor, together.
        smol::unblock(|| NameSources {
            hosts: std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
            resolver: Resolver::system(),
        })
        .await
    }
}

/// The confirmed name of `addr`, or [`UNKNOWN`], within [`LOOKUP_LIMIT`].
pub async fn client_name(addr: IpAddr, sources: &NameSources) -> String {
    let lookup = confirmed_name(addr, sources);
    let limit = async {
        smol::Timer::after(LOOKUP_LIMIT).await;
        log::info!("{addr}: name lookup took over {}s", LOOKUP_LIMIT.as_secs());
        None
    };
    smol::future::or(lookup, limit)
        .await
        .unwrap_or_else(|| UNKNOWN.to_owned())
}

async fn confirmed_name(addr: IpAddr, sources: &NameSources) -> Option<String> {
    let name = match hosts::name_of(&sources.hosts, addr) {
        Some(name) => name.to_ascii_lowercase(),
        None => sources
            .resolver
            .names_of(addr)
            .await
            .ok()?
            .into_iter()
            .next()?,
    };
    let mut forward = hosts::addresses_of(&sources.hosts, &name);
    if forward.is_empty() {
        forward = sources.resolver.addresses(&name).await.unwrap_or_default();
    }
    if forward.iter().any(|a| a.to_canonical() == addr) {
        Some(name)
    } else {
        log::warn!("hostname {name} does not resolve to address {addr}");
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(hosts: &str) -> NameSources {
        NameSources {
            hosts: hosts.to_owned(),
            // No name server: DNS fails at once.
            resolver: Resolver::new(Vec::new()),
        }
    }

    #[test]
    fn hosts_file_names_and_unknown_otherwise() {
        let s = sources("127.0.0.1 localhost\n192.0.2.7 Laptop.Example.NET laptop\n");
        let name = |ip: &str| smol::block_on(client_name(ip.parse().unwrap(), &s));
        assert_eq!(name("127.0.0.1"), "localhost");
        assert_eq!(name("192.0.2.7"), "laptop.example.net");
        assert_eq!(
            name("::ffff:192.0.2.7"),
            UNKNOWN,
            "the caller passes canonical addresses"
        );
        assert_eq!(name("192.0.2.8"), UNKNOWN);
    }
}
