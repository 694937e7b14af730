//! A stub resolver on smol: the core's DNS messages over UDP (TCP when truncated) to the
//! name servers of `/etc/resolv.conf`.
//!
//! It asks recursive servers only; it caches nothing (a queue run asks a few names, and the
//! local caching resolver, if any, caches better).

use crate::io::with_timeout;
use certrelay_core::dns::{
    self, Answer, AnswerError, MxFailure, NameError, Query, QueryType, UDP_PAYLOAD_SIZE,
};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpStream, UdpSocket};
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Why a lookup gave no usable answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupError {
    /// The name cannot be asked for at all (a permanent failure).
    BadName(String, NameError),
    /// No name server answered usefully; try again later. The text is the reason logged.
    Temporary(String),
    /// The domain has no mail server to try (a permanent failure).
    NoMailHost(MxFailure),
}

impl LookupError {
    /// True when retrying later cannot help.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, LookupError::Temporary(_))
    }

    /// The enhanced status of this failure.
    pub fn dsn(&self) -> &'static str {
        match self {
            LookupError::BadName(..) => "5.1.2",
            LookupError::Temporary(_) => "4.4.3",
            LookupError::NoMailHost(f) => f.dsn(),
        }
    }
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::BadName(name, e) => write!(f, "bad domain name {name:?}: {e}"),
            LookupError::Temporary(reason) => f.write_str(reason),
            LookupError::NoMailHost(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LookupError {}

/// Name servers to ask, and how patiently.
#[derive(Clone, Debug)]
pub struct Resolver {
    nameservers: Vec<SocketAddr>,
    timeout: Duration,
    attempts: u32,
}

/// Where the stub resolver looks when `resolv.conf` names no server (as the C library does).
const DEFAULT_NAMESERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53);

impl Resolver {
    /// A resolver asking `nameservers` in order, 5 s per try, 2 tries each.
    pub fn new(nameservers: Vec<SocketAddr>) -> Resolver {
        Resolver {
            nameservers,
            timeout: Duration::from_secs(5),
            attempts: 2,
        }
    }

    /// The same resolver with another wait per try and number of tries per server.
    pub fn with_timeout(mut self, timeout: Duration, attempts: u32) -> Resolver {
        self.timeout = timeout;
        self.attempts = attempts.max(1);
        self
    }

    /// The servers of the system's `/etc/resolv.conf` (127.0.0.1 when it names none or
    /// cannot be read).
    pub fn system() -> Resolver {
        Resolver::from_resolv_conf(Path::new("/etc/resolv.conf")).unwrap_or_else(|e| {
            log::warn!("cannot read /etc/resolv.conf ({e}); asking {DEFAULT_NAMESERVER}");
            Resolver::new(vec![DEFAULT_NAMESERVER])
        })
    }

    /// The servers of a `resolv.conf` file.
    pub fn from_resolv_conf(path: &Path) -> io::Result<Resolver> {
        let text = std::fs::read_to_string(path)?;
        let mut servers = parse_resolv_conf(&text);
        if servers.is_empty() {
            servers.push(DEFAULT_NAMESERVER);
        }
        Ok(Resolver::new(servers))
    }

    /// The servers asked, in order.
    pub fn nameservers(&self) -> &[SocketAddr] {
        &self.nameservers
    }

    /// Asks for `name`'s records of type `qtype`, server after server.
    pub async fn query(&self, name: &str, qtype: QueryType) -> Result<Answer, LookupError> {
        let query = Query::new(query_id(), name, qtype)
            .map_err(|e| LookupError::BadName(name.to_owned(), e))?;
        let mut last = LookupError::Temporary(format!(
            "Host or domain name not found. Name service error for name={} type={}: no name server answered",
            query.name(),
            qtype.as_str()
        ));
        for server in &self.nameservers {
            for _ in 0..self.attempts {
                match self.ask(&query, *server).await {
                    Ok(answer) => return Ok(answer),
                    Err(Asked::Failed(e)) => {
                        last = LookupError::Temporary(e.reason(&query));
                        break;
                    }
                    Err(Asked::NoAnswer(why)) => {
                        log::debug!(
                            "DNS {} {} from {server}: {why}",
                            query.name(),
                            qtype.as_str()
                        );
                    }
                }
            }
        }
        Err(last)
    }

    /// The mail servers of `domain` in the order to try them (MX by preference, or the
    /// domain itself without MX).
    pub async fn mail_hosts(
        &self,
        domain: &str,
        myhostname: &str,
    ) -> Result<Vec<String>, LookupError> {
        let answer = self.query(domain, QueryType::Mx).await?;
        dns::mx_hosts(domain, &answer, myhostname).map_err(LookupError::NoMailHost)
    }

    /// The IPv4 then IPv6 addresses of `host`. An IP literal is its own address.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, LookupError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let mut out = Vec::new();
        let mut error = None;
        for qtype in [QueryType::A, QueryType::Aaaa] {
            match self.query(host, qtype).await {
                Ok(Answer::Addresses(addrs)) => out.extend(addrs),
                Ok(_) => {}
                Err(e) => error = Some(e),
            }
        }
        match (out.is_empty(), error) {
            (false, _) => Ok(out),
            (true, Some(e)) => Err(e),
            (true, None) => Err(LookupError::Temporary(format!(
                "Host or domain name not found. Name service error for name={host} type=A: Host found but no data record of type A"
            ))),
        }
    }

    /// The names the DNS gives for `addr` (PTR records); empty when it has none.
    pub async fn names_of(&self, addr: IpAddr) -> Result<Vec<String>, LookupError> {
        match self.query(&dns::reverse_name(addr), QueryType::Ptr).await? {
            Answer::Names(names) => Ok(names),
            _ => Ok(Vec::new()),
        }
    }

    /// One server, one try: UDP, then TCP if the answer was cut short.
    async fn ask(&self, query: &Query, server: SocketAddr) -> Result<Answer, Asked> {
        match self.ask_udp(query, server).await {
            Err(Asked::Failed(AnswerError::Truncated)) => self.ask_tcp(query, server).await,
            other => other,
        }
    }

    async fn ask_udp(&self, query: &Query, server: SocketAddr) -> Result<Answer, Asked> {
        let local: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).await.map_err(Asked::io)?;
        socket.connect(server).await.map_err(Asked::io)?;
        socket.send(query.bytes()).await.map_err(Asked::io)?;
        let mut buf = vec![0u8; usize::from(UDP_PAYLOAD_SIZE)];
        let receive = async {
            loop {
                let n = socket.recv(&mut buf).await.map_err(Asked::io)?;
                match query.handle_answer(&buf[..n]) {
                    // A late answer to an earlier try, or a forgery: keep waiting.
                    Err(AnswerError::Mismatch) => continue,
                    Err(e) => return Err(Asked::Failed(e)),
                    Ok(answer) => return Ok(answer),
                }
            }
        };
        with_timeout(self.timeout, receive)
            .await
            .unwrap_or(Err(Asked::NoAnswer("timed out".into())))
    }

    async fn ask_tcp(&self, query: &Query, server: SocketAddr) -> Result<Answer, Asked> {
        let exchange = async {
            let mut tcp = TcpStream::connect(server).await.map_err(Asked::io)?;
            let frame =
                dns::tcp_frame(query.bytes()).ok_or(Asked::NoAnswer("query too long".into()))?;
            tcp.write_all(&frame).await.map_err(Asked::io)?;
            let mut buf = Vec::new();
            // On the heap: an array here would make every future that may look a name up
            // (each relay connection's task, for its whole life) 4 KiB larger.
            let mut chunk = vec![0u8; 4096];
            loop {
                if let Some((message, _)) = dns::tcp_unframe(&buf) {
                    return match query.handle_answer(message) {
                        Ok(answer) => Ok(answer),
                        Err(e) => Err(Asked::Failed(e)),
                    };
                }
                let n = tcp.read(&mut chunk).await.map_err(Asked::io)?;
                if n == 0 {
                    return Err(Asked::NoAnswer("connection closed".into()));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        };
        with_timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(Asked::NoAnswer("timed out over TCP".into())))
    }
}

/// The result of one try at one server that gave no answer.
enum Asked {
    /// The server answered, uselessly (SERVFAIL, malformed, ...): next server.
    Failed(AnswerError),
    /// Nothing came back (timeout, network error): try again.
    NoAnswer(String),
}

impl Asked {
    fn io(e: io::Error) -> Asked {
        Asked::NoAnswer(e.to_string())
    }
}

/// The `nameserver` lines of a `resolv.conf` text, port 53.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != "nameserver" {
                return None;
            }
            // A scoped IPv6 address (`fe80::1%eth0`) loses its scope: std cannot parse it.
            let addr = words.next()?.split('%').next()?;
            addr.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

/// A fresh, unpredictable message id: the only defence of a stub resolver against forged
/// answers. std's hasher keys are random per process; a counter makes each id new.
fn query_id() -> u16 {
    // usize, not u64: 32-bit MIPS has no 64-bit atomics. The counter wrapping after 2^32
    // queries on a 32-bit target costs nothing: two `RandomState::new()`s build hashers
    // that are unlikely to agree on the same input (std's documented promise; it gives each
    // one keys of its own), so the counter is not the only thing that changes.
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_usize(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish() as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_lines() {
        let text =
            "# comment\nsearch example.org\nnameserver 192.0.2.53\nnameserver  2001:db8::53\n\
                    nameserver fe80::1%eth0\nnameserver bogus\noptions ndots:2\n";
        let got = parse_resolv_conf(text);
        let want: Vec<SocketAddr> = vec![
            "192.0.2.53:53".parse().unwrap(),
            "[2001:db8::53]:53".parse().unwrap(),
            "[fe80::1]:53".parse().unwrap(),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn query_ids_vary() {
        let ids: std::collections::HashSet<u16> = (0..64).map(|_| query_id()).collect();
        assert!(ids.len() > 32);
    }
}
