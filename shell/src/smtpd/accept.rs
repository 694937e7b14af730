//! Accepting connections: each one is counted against the session limits, refused with
//! a `421` beyond them, and served by [`Connection`] with the settings of its listener as
//! they are at accept time (only `relay_clientcerts` is looked up again as it is now).
//! On a listener behind a balancer (`smtpd_upstream_proxy_protocol`), the PROXY header
//! comes first and its client is the one counted and served; without one, nothing is.
//! Connections still reading their header are counted apart, up to the session limit.

use super::limits::{Refusal, Sessions};
use super::listen::Bound;
use super::listener::ListenerConf;
use super::peername::{self, NameSources};
use super::proxy::{self, Prefixed};
use super::session::{Connection, CurrentTrust};
use super::store::Store;
use crate::clock::Clock;
use certrelay_core::net::list_contains;
use smol::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use smol::net::TcpStream;
use smol::Timer;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where accepted connections find their listener's settings: a relay swaps them on
/// reload, so they are looked up per connection, by the key of the bound socket.
pub trait ListenerSource: Send + Sync + 'static {
    /// The listener configured now for the socket bound as `key`.
    fn listener(&self, key: &str) -> Option<Arc<ListenerConf>>;
    /// Sessions allowed at once over all listeners (0: no limit).
    fn session_limit(&self) -> usize;
}

/// What the accept loops of one process share.
pub struct Server<L> {
    /// The listeners' settings.
    pub source: L,
    /// The session counts.
    pub sessions: Sessions,
    /// Where messages go.
    pub store: Store,
    /// The sessions' clock.
    pub clock: Clock,
    /// Who answers `XCERTRELAY` (the relay, when it enrolls laptops).
    pub enroll: Option<Arc<dyn super::enroll::Enroller>>,
}

/// Accepts on `bound` forever, serving each connection in its own task.
pub async fn accept_loop<L: ListenerSource>(bound: Bound, server: Arc<Server<L>>) {
    loop {
        match bound.socket.accept().await {
            Ok((stream, addr)) => {
                // Replies are small writes that must leave at once: without this, the first
                // reply after the TLS handshake waits for the peer's delayed ACK (~40 ms).
                let _ = stream.set_nodelay(true);
                let server = server.clone();
                let key = bound.key.clone();
                smol::spawn(async move { connection(server, &key, stream, addr).await }).detach();
            }
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                log::warn!("accept on {}: {e}", bound.local);
                Timer::after(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Admits one connection within the limits and serves it. Behind a balancer that sends a
/// PROXY header, the client is the one the header names, for the limits as for the session.
async fn connection<L: ListenerSource>(
    server: Arc<Server<L>>,
    key: &str,
    mut stream: TcpStream,
    addr: SocketAddr,
) {
    let Some(listener) = server.source.listener(key) else {
        log::warn!("no configuration for listener {key}; closing connection from {addr}");
        return;
    };
    let Some(limit) = listener.upstream_proxy else {
        return admit(server, key, listener, stream, addr).await;
    };
    // Until its header is read a connection is no session, yet it holds a socket: no more
    // of them than sessions are allowed, so silent connections cannot pile up unbounded.
    let awaiting = match server.sessions.await_header(server.source.session_limit()) {
        Ok(awaiting) => awaiting,
        Err(count) => {
            log::warn!(
                "haproxy read from {}: {count} connections already wait for their PROXY \
                 header; closing connection on {key}",
                addr.ip().to_canonical()
            );
            return;
        }
    };
    let read = proxy::read_header(&mut stream, limit).await;
    drop(awaiting);
    match read {
        Ok((header, rest)) => {
            let client = header.client(addr);
            admit(server, key, listener, Prefixed::new(rest, stream), client).await;
        }
        Err(why) => log::warn!(
            "haproxy read from {}: {why}; closing connection on {key}",
            addr.ip().to_canonical()
        ),
    }
}

/// Counts the connection from `addr` against the limits and serves it, or refuses it.
async fn admit<L, S>(
    server: Arc<Server<L>>,
    key: &str,
    listener: Arc<ListenerConf>,
    stream: S,
    addr: SocketAddr,
) where
    L: ListenerSource,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ip = addr.ip().to_canonical();
    // Postfix exempts mynetworks from the per-client limit
    // (smtpd_client_event_limit_exceptions = $mynetworks).
    let client_limit = if list_contains(&listener.settings.mynetworks, ip) {
        0
    } else {
        listener.client_limit
    };
    let slot = match server.sessions.enter(
        ip,
        server.source.session_limit(),
        client_limit,
        server.clock.now(),
    ) {
        Ok(slot) => slot,
        Err(refusal) => return refuse(&listener, stream, ip, refusal).await,
    };
    let name = if listener.peername_lookup {
        peername::client_name(ip, &NameSources::system().await).await
    } else {
        peername::UNKNOWN.to_owned()
    };
    let conn = Connection {
        listener,
        store: server.store.clone(),
        clock: server.clock,
        enroll: server.enroll.clone(),
    };
    let current: CurrentTrust = {
        let (server, key) = (server.clone(), key.to_owned());
        Arc::new(move || server.source.listener(&key).map(|l| l.trust.clone()))
    };
    conn.serve(stream, ip, name, slot, current).await;
}

/// `421 4.7.0 <myhostname> Error: too many connections`, then close.
async fn refuse<S>(listener: &ListenerConf, mut stream: S, ip: IpAddr, why: Refusal)
where
    S: AsyncWrite + Unpin,
{
    let host = &listener.settings.myhostname;
    let reply = match why {
        Refusal::Client { count } => {
            log::warn!(
                "Connection concurrency limit exceeded: {count} from unknown[{ip}] for service {}",
                listener.key
            );
            format!("421 4.7.0 {host} Error: too many connections from {ip}\r\n")
        }
        Refusal::Overall { active } => {
            log::warn!(
                "too many sessions ({active} running): refusing connection from unknown[{ip}] \
                 on {}",
                listener.key
            );
            format!("421 4.7.0 {host} Error: too many connections\r\n")
        }
    };
    let send = async {
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.flush().await;
    };
    smol::future::or(send, async {
        Timer::after(Duration::from_secs(5)).await;
    })
    .await;
}

/// How long sessions in progress may run on once the relay or `certrelay run` is asked
/// to stop.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Lets sessions in progress finish, for at most `grace`.
pub async fn wait_for_sessions(sessions: &Sessions, grace: Duration) {
    let until = Instant::now() + grace;
    while sessions.active() > 0 {
        if Instant::now() >= until {
            log::warn!(
                "stopping with {} session(s) still open after {}s",
                sessions.active(),
                grace.as_secs()
            );
            return;
        }
        Timer::after(Duration::from_millis(50)).await;
    }
}
