//! Noticing that the laptop's network changed (a new Wi-Fi, a cable plugged in, back
//! online), so that `certrelay run` retries its queue at once instead of waiting for the
//! next scheduled attempt, which may be over an hour away after a long time offline.
//!
//! What counts as the network is a [`NetworkView`]: this machine's own addresses, and for
//! each probe address the source address the kernel would pick to reach it (none when it
//! has no route). Picking a source sends nothing: it is a UDP `connect()` and a look at
//! the socket's local address. The probes are the relayhost's IP literals and two
//! documentation addresses that only the default routes reach, so a relayhost given by
//! name needs no DNS lookup here.
//!
//! [`NetWatch`] compares views; [`SystemAddresses`] reads them from the kernel (Linux's
//! `/proc/net`; elsewhere the local address set is empty and only the probes count).

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

/// How often `run` looks at the network.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Probes that only a default route reaches (RFC 5737 / RFC 3849 documentation
/// addresses): their source address changes when the way out changes.
pub const DEFAULT_ROUTE_PROBES: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
];

/// Where the facts about the network come from (the kernel, or a test's script).
pub trait AddressSource {
    /// This machine's addresses now.
    fn local_addresses(&mut self) -> BTreeSet<IpAddr>;
    /// The source address the kernel would use towards `dest`; `None` without a route.
    fn source_for(&mut self, dest: IpAddr) -> Option<IpAddr>;
}

/// The network as seen at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkView {
    /// This machine's addresses.
    pub local: BTreeSet<IpAddr>,
    /// Each probe, with the source address towards it.
    pub routes: Vec<(IpAddr, Option<IpAddr>)>,
}

impl NetworkView {
    /// Reads the view from `source` for `probes`.
    pub fn read(source: &mut impl AddressSource, probes: &[IpAddr]) -> NetworkView {
        NetworkView {
            local: source.local_addresses(),
            routes: probes.iter().map(|&p| (p, source.source_for(p))).collect(),
        }
    }
}

/// What differs between two views, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Addresses this machine gained.
    pub added: Vec<IpAddr>,
    /// Addresses it lost.
    pub removed: Vec<IpAddr>,
    /// Probes whose source changed: (probe, before, now).
    pub rerouted: Vec<(IpAddr, Option<IpAddr>, Option<IpAddr>)>,
}

impl Change {
    /// The difference from `before` to `now`; `None` when they are the same.
    pub fn between(before: &NetworkView, now: &NetworkView) -> Option<Change> {
        let change = Change {
            added: now.local.difference(&before.local).copied().collect(),
            removed: before.local.difference(&now.local).copied().collect(),
            rerouted: now
                .routes
                .iter()
                .filter_map(|&(probe, source)| {
                    let was = before
                        .routes
                        .iter()
                        .find(|(p, _)| *p == probe)
                        .and_then(|&(_, s)| s);
                    (was != source).then_some((probe, was, source))
                })
                .collect(),
        };
        let same =
            change.added.is_empty() && change.removed.is_empty() && change.rerouted.is_empty();
        (!same).then_some(change)
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.added.is_empty() {
            parts.push(format!("added {}", list(&self.added)));
        }
        if !self.removed.is_empty() {
            parts.push(format!("removed {}", list(&self.removed)));
        }
        for (probe, was, now) in &self.rerouted {
            let show = |a: &Option<IpAddr>| a.map_or("no route".to_owned(), |a| a.to_string());
            parts.push(format!("towards {probe}: {} -> {}", show(was), show(now)));
        }
        f.write_str(&parts.join("; "))
    }
}

fn list(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Compares the network with what it was at the last look.
pub struct NetWatch<S> {
    source: S,
    probes: Vec<IpAddr>,
    last: NetworkView,
}

impl<S: AddressSource> NetWatch<S> {
    /// Starts from the network as it is now: the first look is the baseline, not a change.
    pub fn new(mut source: S, probes: Vec<IpAddr>) -> NetWatch<S> {
        let last = NetworkView::read(&mut source, &probes);
        NetWatch {
            source,
            probes,
            last,
        }
    }

    /// Looks again; the change since the last look, if any.
    pub fn poll(&mut self) -> Option<Change> {
        let now = NetworkView::read(&mut self.source, &self.probes);
        let change = Change::between(&self.last, &now);
        self.last = now;
        change
    }
}

/// The probes for a relayhost list: its IP literals, then [`DEFAULT_ROUTE_PROBES`].
pub fn probes(relayhost: &[certrelay_shell::delivery::route::NextHop]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let literals = relayhost.iter().filter_map(|h| {
        let host = h.host.strip_prefix("ipv6:").unwrap_or(&h.host);
        host.parse::<IpAddr>().ok()
    });
    for a in literals.chain(DEFAULT_ROUTE_PROBES) {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// The kernel's view.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemAddresses;

impl AddressSource for SystemAddresses {
    fn local_addresses(&mut self) -> BTreeSet<IpAddr> {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let v4 = fib_trie_local(&read("/proc/net/fib_trie")).into_iter();
        let v6 = if_inet6_addresses(&read("/proc/net/if_inet6")).into_iter();
        v4.map(IpAddr::V4).chain(v6.map(IpAddr::V6)).collect()
    }

    fn source_for(&mut self, dest: IpAddr) -> Option<IpAddr> {
        let any: SocketAddr = match dest {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(any).ok()?;
        // The discard port; nothing is sent, connect() only chooses the route.
        socket.connect((dest, 9)).ok()?;
        socket.local_addr().ok().map(|a| a.ip())
    }
}

/// The IPv4 addresses of this machine in `/proc/net/fib_trie`: a leaf `|-- A.B.C.D`
/// followed by a `/32 host LOCAL` line.
pub fn fib_trie_local(text: &str) -> BTreeSet<Ipv4Addr> {
    let mut out = BTreeSet::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            leaf = addr.trim().parse().ok();
        } else if line.starts_with("/32 host LOCAL") {
            if let Some(a) = leaf {
                out.insert(a);
            }
        } else if !line.starts_with('/') {
            leaf = None;
        }
    }
    out
}

/// The IPv6 addresses in `/proc/net/if_inet6` (32 hex digits first on each line).
pub fn if_inet6_addresses(text: &str) -> BTreeSet<Ipv6Addr> {
    text.lines()
        .filter_map(|line| {
            let hex = line.split_whitespace().next()?;
            (hex.len() == 32).then_some(())?;
            u128::from_str_radix(hex, 16).ok().map(Ipv6Addr::from)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A network that changes when the test says so.
    #[derive(Default)]
    struct Scripted {
        views: VecDeque<(Vec<IpAddr>, Option<IpAddr>)>,
        current: (Vec<IpAddr>, Option<IpAddr>),
    }

    impl Scripted {
        fn then(mut self, local: &[&str], source: Option<&str>) -> Self {
            let local = local.iter().map(|a| a.parse().unwrap()).collect();
            self.views
                .push_back((local, source.map(|s| s.parse().unwrap())));
            self
        }
    }

    impl AddressSource for Scripted {
        fn local_addresses(&mut self) -> BTreeSet<IpAddr> {
            // One view per look: the address set is read first.
            if let Some(next) = self.views.pop_front() {
                self.current = next;
            }
            self.current.0.iter().copied().collect()
        }

        fn source_for(&mut self, dest: IpAddr) -> Option<IpAddr> {
            if dest.is_loopback() {
                return Some(dest);
            }
            self.current.1
        }
    }

    #[test]
    fn the_first_look_is_a_baseline_and_only_differences_count() {
        let net = Scripted::default()
            .then(&["127.0.0.1"], None)
            .then(&["127.0.0.1"], None)
            .then(&["127.0.0.1", "10.0.0.5"], Some("10.0.0.5"))
            .then(&["127.0.0.1", "10.0.0.5"], Some("10.0.0.5"))
            .then(&["127.0.0.1", "192.168.1.9"], Some("192.168.1.9"))
            .then(
                &["127.0.0.1", "192.168.1.9", "192.0.2.77"],
                Some("192.168.1.9"),
            )
            .then(&["127.0.0.1"], None);
        let probes = vec!["127.0.0.1".parse().unwrap(), DEFAULT_ROUTE_PROBES[0]];
        let mut watch = NetWatch::new(net, probes);
        assert_eq!(watch.poll(), None, "nothing changed");
        let online = watch.poll().expect("offline -> online");
        assert_eq!(
            online.to_string(),
            "added 10.0.0.5; towards 198.51.100.1: no route -> 10.0.0.5"
        );
        assert_eq!(watch.poll(), None);
        let moved = watch.poll().expect("another network");
        assert_eq!(
            moved.to_string(),
            "added 192.168.1.9; removed 10.0.0.5; \
             towards 198.51.100.1: 10.0.0.5 -> 192.168.1.9"
        );
        let alias = watch.poll().expect("an address added, same route");
        assert_eq!(alias.to_string(), "added 192.0.2.77");
        let offline = watch.poll().expect("offline");
        assert_eq!(offline.removed.len(), 2);
        assert_eq!(watch.poll(), None, "still offline");
    }

    #[test]
    fn probes_are_relayhost_literals_then_the_default_routes() {
        let hops: Vec<_> = ["[127.0.0.1]:2525", "relay.example.org", "[ipv6:::1]:25"]
            .iter()
            .map(|t| certrelay_shell::delivery::route::NextHop::parse(t).unwrap())
            .collect();
        let p = probes(&hops);
        assert_eq!(p[0], IpAddr::from([127, 0, 0, 1]));
        assert!(p.contains(&IpAddr::V6(Ipv6Addr::LOCALHOST)), "{p:?}");
        assert!(p.ends_with(&DEFAULT_ROUTE_PROBES));
    }

    #[test]
    fn proc_net_tables() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
            \x20    +-- 127.0.0.0/8 2 0 2\n           |-- 127.0.0.0\n              /8 host LOCAL\n\
            \x20          |-- 127.0.0.1\n              /32 host LOCAL\n\
            \x20       |-- 127.255.255.255\n           /32 link BROADCAST\n\
            \x20          |-- 192.0.2.2\n              /32 host LOCAL\n\
            Local:\n           |-- 192.0.2.2\n              /32 host LOCAL\n";
        let got: Vec<String> = fib_trie_local(trie).iter().map(|a| a.to_string()).collect();
        assert_eq!(got, ["127.0.0.1", "192.0.2.2"]);
        let inet6 = "fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n\
                     00000000000000000000000000000001 01 80 10 80       lo\n";
        let got: Vec<String> = if_inet6_addresses(inet6)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(got, ["::1", "fe80::fc:ff:fe00:1"]);
    }

    #[test]
    fn the_kernel_source_towards_loopback_is_loopback() {
        let mut sys = SystemAddresses;
        assert_eq!(
            sys.source_for(IpAddr::from([127, 0, 0, 1])),
            Some(IpAddr::from([127, 0, 0, 1]))
        );
    }
}
