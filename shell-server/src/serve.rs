//! The serving mode: listen, accept within the session limits, reload on SIGHUP, stop on
//! SIGTERM.

use crate::generation::{self, Generation, ListenerConf};
use crate::limits::{Refusal, Sessions};
use crate::listen::{self, Bound};
use crate::session::{Clock, Connection};
use crate::store::{QueueWake, Store};
use async_signal::{Signal, Signals};
use certrelay_client::outbound::{self, Delivery};
use certrelay_client::resolver::Resolver;
use certrelay_client::runner::{wake_channel, QueueRunner};
use certrelay_client::spool::Spool;
use certrelay_core::config::{Diagnostic, Severity};
use certrelay_core::net::list_contains;
use smol::io::AsyncWriteExt;
use smol::net::TcpStream;
use smol::stream::StreamExt;
use smol::Timer;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How long sessions in progress may run on after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The running relay, shared by the accept loops.
struct Relay {
    dir: PathBuf,
    current: RwLock<Arc<Generation>>,
    /// The listener keys that have sockets (fixed at start).
    bound_keys: Vec<String>,
    sessions: Sessions,
    store: Store,
    clock: Clock,
}

impl Relay {
    fn current(&self) -> Arc<Generation> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Runs the relay in the foreground until SIGTERM or SIGINT. Returns the exit code.
pub fn run(dir: &Path) -> i32 {
    smol::block_on(run_async(dir))
}

async fn run_async(dir: &Path) -> i32 {
    let (generation, notes) = match generation::load(dir) {
        Ok(loaded) => loaded,
        Err(diags) => {
            log_diagnostics(&diags);
            log::error!(
                "{}: configuration has errors; not starting (see `certrelayd -c {} check`)",
                dir.display(),
                dir.display()
            );
            return 1;
        }
    };
    log_diagnostics(&notes);
    let mut signals = match Signals::new([Signal::Hup, Signal::Usr1, Signal::Term, Signal::Int]) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot watch signals: {e}");
            return 1;
        }
    };
    let spool = match open_spool(&generation.queue_directory).await {
        Ok(s) => s,
        Err(msg) => {
            log::error!("{msg}");
            return 1;
        }
    };
    let bound = match listen::bind_all(&generation).await {
        Ok(b) => b,
        Err(msg) => {
            log::error!("{msg}");
            return 1;
        }
    };
    // `certrelayd allow`, `revoke` and `ca issue` find the running relay through this file.
    let pid_file = crate::admin::pid_file(Path::new(&generation.queue_directory));
    if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
        log::warn!("{}: cannot write the process id: {e}", pid_file.display());
    }
    let delivery = match onward_delivery(dir) {
        Ok(d) => d,
        Err(diags) => {
            log_diagnostics(&diags);
            log::error!(
                "{}: onward delivery settings have errors; not starting",
                dir.display()
            );
            return 1;
        }
    };
    let (wake, runner_rx) = QueueWake::channel();
    let (waker, wakeups) = wake_channel();
    let runner = QueueRunner::new(
        spool.clone(),
        delivery.runner,
        delivery.tls,
        Resolver::system(),
    );
    let runner_task = smol::spawn(async move { runner.serve(wakeups).await });
    let forward = {
        let waker = waker.clone();
        smol::spawn(async move {
            while runner_rx.recv().await.is_ok() {
                waker.new_mail();
            }
        })
    };
    let relay = Arc::new(Relay {
        dir: dir.to_owned(),
        current: RwLock::new(Arc::new(generation)),
        bound_keys: bound.iter().map(|b| b.key.clone()).collect(),
        sessions: Sessions::default(),
        store: Store::new(spool, wake),
        clock: Clock::new(),
    });
    log::info!(
        "daemon started -- version {}, configuration {}",
        env!("CARGO_PKG_VERSION"),
        dir.display()
    );
    let mut accepting = Vec::new();
    for b in bound {
        log::info!("listening on {} for service {}", b.local, b.key);
        accepting.push(smol::spawn(accept_loop(b, relay.clone())));
    }
    let stop_signal = loop {
        match signals.next().await {
            Some(Ok(Signal::Hup)) => reload(&relay),
            Some(Ok(Signal::Usr1)) => {
                log::info!("flush requested: trying every queued message now");
                waker.flush();
            }
            Some(Ok(sig)) => break sig as i32,
            Some(Err(e)) => log::warn!("signal watch: {e}"),
            None => break 0,
        }
    };
    drop(accepting);
    log::info!("terminating on signal {stop_signal}");
    wait_for_sessions(&relay.sessions).await;
    // Deliveries in progress end with the process; their messages stay queued and are
    // tried again at the next start.
    drop(forward);
    drop(waker);
    drop(runner_task);
    let _ = std::fs::remove_file(&pid_file);
    0
}

async fn open_spool(dir: &str) -> Result<Spool, String> {
    let path = PathBuf::from(dir);
    let (spool, rec) = smol::unblock(move || Spool::open(path))
        .await
        .map_err(|e| format!("queue_directory {dir}: cannot open the spool: {e}"))?;
    if rec.removed_partial + rec.removed_orphans > 0 {
        log::info!(
            "{dir}: removed {} partial and {} unacknowledged message file(s) left by a stop",
            rec.removed_partial,
            rec.removed_orphans
        );
    }
    for id in &rec.moved_aside {
        log::warn!("{id}: envelope without message moved to {dir}/corrupt");
    }
    Ok(spool)
}

/// Lets sessions in progress finish, for at most [`STOP_GRACE`].
async fn wait_for_sessions(sessions: &Sessions) {
    let until = Instant::now() + STOP_GRACE;
    while sessions.active() > 0 {
        if Instant::now() >= until {
            log::warn!(
                "stopping with {} session(s) still open after {}s",
                sessions.active(),
                STOP_GRACE.as_secs()
            );
            return;
        }
        Timer::after(Duration::from_millis(50)).await;
    }
}

async fn accept_loop(bound: Bound, relay: Arc<Relay>) {
    loop {
        match bound.socket.accept().await {
            Ok((stream, addr)) => {
                let relay = relay.clone();
                let key = bound.key.clone();
                smol::spawn(async move { connection(relay, &key, stream, addr).await }).detach();
            }
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                log::warn!("accept on {}: {e}", bound.local);
                Timer::after(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Admits one connection within the limits and serves it.
async fn connection(relay: Arc<Relay>, key: &str, stream: TcpStream, addr: SocketAddr) {
    let generation = relay.current();
    let Some(listener) = generation.listener(key).cloned() else {
        log::warn!("no configuration for listener {key}; closing connection from {addr}");
        return;
    };
    let ip = addr.ip().to_canonical();
    // Postfix exempts mynetworks from the per-client limit
    // (smtpd_client_event_limit_exceptions = $mynetworks).
    let client_limit = if list_contains(&listener.settings.mynetworks, ip) {
        0
    } else {
        listener.client_limit
    };
    let slot = match relay
        .sessions
        .enter(ip, generation.session_limit, client_limit)
    {
        Ok(slot) => slot,
        Err(refusal) => return refuse(&listener, stream, ip, refusal).await,
    };
    let conn = Connection {
        listener,
        store: relay.store.clone(),
        clock: relay.clock,
    };
    conn.serve(stream, ip).await;
    drop(slot);
}

/// `421 4.7.0 <myhostname> Error: too many connections`, then close.
async fn refuse(
    listener: &ListenerConf,
    mut stream: TcpStream,
    ip: std::net::IpAddr,
    why: Refusal,
) {
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

/// SIGHUP: read the configuration again; switch to it only when it has no error.
fn reload(relay: &Relay) {
    log::info!(
        "reload -- version {}, configuration {}",
        env!("CARGO_PKG_VERSION"),
        relay.dir.display()
    );
    let (mut next, notes) = match generation::load(&relay.dir) {
        Ok(loaded) => loaded,
        Err(diags) => {
            log_diagnostics(&diags);
            log::error!("configuration not reloaded: the running configuration stays in effect");
            return;
        }
    };
    log_diagnostics(&notes);
    let old = relay.current();
    keep_bound_listeners(relay, &old, &mut next);
    if next.queue_directory != old.queue_directory {
        log::warn!(
            "queue_directory changed to {}: the spool stays {} until a restart",
            next.queue_directory,
            old.queue_directory
        );
    }
    if next.inet_interfaces != old.inet_interfaces || next.inet_protocols != old.inet_protocols {
        log::warn!("inet_interfaces or inet_protocols changed: takes effect at the next restart");
    }
    let listeners = next.listeners.len();
    *relay.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
    log::info!("configuration reloaded: {listeners} listener(s); new sessions use it");
}

/// Sockets are bound once: a listener gone from master.cf keeps serving with its old
/// settings, a new one waits for a restart. Both are said in the log.
fn keep_bound_listeners(relay: &Relay, old: &Generation, next: &mut Generation) {
    for key in &relay.bound_keys {
        if next.listener(key).is_some() {
            continue;
        }
        if let Some(l) = old.listener(key) {
            log::warn!("listener {key} left master.cf: it keeps its old settings until a restart");
            next.listeners.push(l.clone());
        }
    }
    for l in &next.listeners {
        if !relay.bound_keys.contains(&l.key) {
            log::warn!("new listener {}: it listens after a restart", l.key);
        }
    }
}

/// Configuration messages in the log, at their severity, with file:line.
fn log_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        let level = match d.severity {
            Severity::Error => log::Level::Error,
            Severity::Warning => log::Level::Warn,
            Severity::Notice => log::Level::Info,
        };
        log::log!(level, "{}: {}", d.location(), d.message);
    }
}

/// The relay's onward delivery (relayhost or MX, `smtp_tls_*`, retry times), read once at
/// start: a change needs a restart.
fn onward_delivery(dir: &Path) -> Result<Delivery, Vec<Diagnostic>> {
    let loaded = certrelay_client::conf::load(dir).map_err(|msg| {
        vec![Diagnostic::error(
            &certrelay_core::config::Location::new(&dir.join("main.cf").display().to_string(), 0),
            msg,
        )]
    })?;
    let config = &loaded.config;
    outbound::delivery(config, config.text("myhostname"))
}
