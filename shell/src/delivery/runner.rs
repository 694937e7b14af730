//! The queue runner: finds due messages in the spool, delivers them grouped by next hop,
//! writes each result back durably, and sends bounces.
//!
//! One run at a time: a wake-up that arrives during a run starts another run after it.
//! Within a run, next hops are delivered concurrently (at most
//! [`RunnerConfig::concurrency`] at once); the messages of one next hop share connections.
//! A message whose recipients go to several next hops is written back once all of them
//! have answered.

use crate::clock::{unix_millis, unix_secs, Clock};
use crate::delivery::conn_cache::ConnectionCache;
use crate::delivery::connection::ClientTls;
use crate::delivery::deliver::{
    deliver, DeliveryContext, DeliveryJob, HeldBody, MessageSource, RecipientFate, TlsLevelFor,
};
use crate::delivery::last_relay;
use crate::delivery::resolver::{LookupError, Resolver};
use crate::delivery::route::{self, candidates, is_own, Destination, NextHop, OwnEndpoint};
use crate::spool::{Spool, SpoolError};
use crate::status::{Outcome, RecentCounts};
use certrelay_core::client::{self, DeliveryStatus};
use certrelay_core::dns::MxFailure;
use certrelay_core::dsn::{self, BounceReport, FailedRecipient};
use certrelay_core::queue::{
    delivery_line, expired_line, AttemptEnd, Envelope, QueueId, RecipientState, Relay,
    RetrySettings, Verdict,
};
use certrelay_core::settings::{ClientSettings, SelfCheck};
use smol::channel::{Receiver, Sender, TryRecvError};
use smol::future;
use smol::lock::{Mutex as AsyncMutex, Semaphore};
use smol::Timer;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// How the runner delivers.
#[derive(Clone)]
pub struct RunnerConfig {
    /// `myhostname`: bounce `Reporting-MTA`, MX loop detection.
    pub myhostname: String,
    /// EHLO name, timeouts and the default TLS level.
    pub client: ClientSettings,
    /// Backoff, queue run delay and lifetimes.
    pub retry: RetrySettings,
    /// `relayhost`, parsed; empty: deliver by MX.
    pub relayhost: Vec<NextHop>,
    /// Port for MX delivery (25).
    pub smtp_port: u16,
    /// `smtp_connect_timeout`.
    pub connect_timeout: Duration,
    /// Connections at once over all next hops.
    pub concurrency: usize,
    /// Connections at once to one next hop (`smtp_destination_concurrency_limit`).
    pub destination_concurrency: usize,
    /// The TLS level per server (per-site policy); `None` uses `client.tls_level`.
    pub tls_level: Option<TlsLevelFor>,
    /// `defer_transports = smtp`: mail waits in the queue until a flush.
    pub hold: bool,
    /// Where this host itself takes mail (the relay's listeners): a server among them is a
    /// loop, and its recipients bounce with 5.4.6.
    pub own_endpoints: Vec<OwnEndpoint>,
    /// `smtp_tls_wrappermode = yes`: MX deliveries speak TLS from the first byte too (the
    /// relayhost entries carry their own [`NextHop::implicit_tls`]).
    pub wrappermode: bool,
}

impl RunnerConfig {
    /// Postfix's defaults, for `myhostname`.
    pub fn new(myhostname: impl Into<String>) -> RunnerConfig {
        let myhostname = myhostname.into();
        RunnerConfig {
            client: ClientSettings {
                helo_name: myhostname.clone(),
                ..ClientSettings::default()
            },
            myhostname,
            retry: RetrySettings::default(),
            relayhost: Vec::new(),
            smtp_port: 25,
            connect_timeout: Duration::from_secs(30),
            concurrency: 20,
            destination_concurrency: 10,
            tls_level: None,
            hold: false,
            own_endpoints: Vec::new(),
            wrappermode: false,
        }
    }
}

impl fmt::Debug for RunnerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunnerConfig")
            .field("myhostname", &self.myhostname)
            .field("client", &self.client)
            .field("retry", &self.retry)
            .field("relayhost", &self.relayhost)
            .field("smtp_port", &self.smtp_port)
            .field("connect_timeout", &self.connect_timeout)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// What one run did, message by message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Messages attempted.
    pub attempted: usize,
    /// Messages finished and removed from the spool.
    pub removed: usize,
    /// Messages kept for a later attempt.
    pub deferred: usize,
    /// Messages kept as failed: bounced recipients but no bounce to send (a bounce that
    /// could not be delivered).
    pub failed: usize,
    /// Bounces queued.
    pub bounces: usize,
    /// Envelopes that could not be read, moved to `corrupt/`.
    pub moved_aside: usize,
}

impl RunStats {
    fn add(&mut self, other: &RunStats) {
        self.attempted += other.attempted;
        self.removed += other.removed;
        self.deferred += other.deferred;
        self.failed += other.failed;
        self.bounces += other.bounces;
        self.moved_aside += other.moved_aside;
    }
}

/// Why the runner is woken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wake {
    /// A new message was queued: deliver what is due.
    NewMail,
    /// Try every message now, due or not (`postqueue -f`).
    Flush,
}

/// Wakes a [`QueueRunner::serve`] loop. Cheap to clone; never blocks.
#[derive(Clone, Debug)]
pub struct QueueWaker(Sender<Wake>);

impl QueueWaker {
    /// A message was committed to the spool: try it at once.
    pub fn new_mail(&self) {
        let _ = self.0.try_send(Wake::NewMail);
    }

    /// Retry every queued message now.
    pub fn flush(&self) {
        let _ = self.0.try_send(Wake::Flush);
    }
}

/// The receiving end of the wake-ups, for [`QueueRunner::serve`].
#[derive(Debug)]
pub struct QueueWakeups(Receiver<Wake>);

/// A pair of waker and wake-up receiver. Wake-ups that arrive while many are pending are
/// merged: one run serves them all.
pub fn wake_channel() -> (QueueWaker, QueueWakeups) {
    let (tx, rx) = smol::channel::bounded(16);
    (QueueWaker(tx), QueueWakeups(rx))
}

/// Delivers the spool's messages. Clones share one state (and one run at a time).
#[derive(Clone)]
pub struct QueueRunner {
    inner: Arc<Inner>,
}

/// What a reload can change: read at the start of each use, so a delivery in progress
/// keeps the settings it started with.
struct Settings {
    config: RunnerConfig,
    tls: ClientTls,
}

struct Inner {
    spool: Spool,
    /// Messages a pass is working on: other passes leave them alone.
    claimed: ClaimSet,
    /// Idle connections between deliveries, for a long-running runner.
    cache: Option<ConnectionCache>,
    settings: RwLock<Arc<Settings>>,
    resolver: Resolver,
    clock: Clock,
    unique: AtomicU32,
    run_lock: AsyncMutex<()>,
    /// Recipients' outcomes over time, for `status`.
    counts: RecentCounts,
}

impl fmt::Debug for QueueRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueRunner({})", self.inner.spool.root().display())
    }
}

/// A message being delivered: its record, its content when held in memory, and how many
/// next hops have yet to answer.
struct InFlight {
    envelope: Envelope,
    body: Option<Arc<HeldBody>>,
    outstanding: usize,
}

type Flights = Arc<Mutex<HashMap<String, InFlight>>>;

/// The messages of one next hop: (queue id, indexes of its recipients there).
type Group = Vec<(String, Vec<usize>)>;

/// Batches of new mail delivered at once by [`QueueRunner::serve_with_fresh`].
pub const FRESH_PASSES: usize = 4;

/// The ids of the messages some pass holds, shared with the [`Handoff`].
type ClaimSet = Arc<Mutex<HashSet<String>>>;

/// One message held: no other pass takes it until this is dropped.
#[derive(Debug)]
pub struct Claim {
    set: ClaimSet,
    id: String,
}

impl Claim {
    /// Holds `id`; `None` when another pass holds it.
    fn take(set: &ClaimSet, id: &str) -> Option<Claim> {
        let mut claimed = set.lock().unwrap_or_else(|e| e.into_inner());
        claimed.insert(id.to_owned()).then(|| Claim {
            set: set.clone(),
            id: id.to_owned(),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut claimed = self.set.lock().unwrap_or_else(|e| e.into_inner());
        claimed.remove(&self.id);
    }
}

/// The messages one pass holds; released when it is dropped.
struct Claims<'a> {
    set: &'a ClaimSet,
    held: Vec<Claim>,
}

impl<'a> Claims<'a> {
    fn new(set: &'a ClaimSet) -> Self {
        Claims {
            set,
            held: Vec::new(),
        }
    }

    /// False when another pass holds `id`.
    fn claim(&mut self, id: &str) -> bool {
        let claim = Claim::take(self.set, id);
        let taken = claim.is_some();
        self.held.extend(claim);
        taken
    }

    /// Keeps a claim taken before the pass began.
    fn adopt(&mut self, claim: Claim) {
        self.held.push(claim);
    }
}

/// A message just committed to the spool by the relay's sessions, handed straight to the
/// runner with what the session already holds: the envelope record as written and, when
/// the budget allows, the content, so that its first delivery reads no file.
#[derive(Debug)]
pub struct Fresh {
    /// Its queue id.
    pub id: QueueId,
    /// The envelope record, as written to the spool.
    pub envelope: Envelope,
    /// The content as written to the spool, when held in memory.
    pub body: Option<Arc<HeldBody>>,
    /// Taken before the message became visible in `queue/`, so that no queue run takes it
    /// while it waits for its first pass.
    pub claim: Option<Claim>,
}

/// Where the sessions hand their committed messages to a runner
/// ([`QueueRunner::fresh_channel`]).
#[derive(Clone, Debug)]
pub struct Handoff {
    claimed: ClaimSet,
    tx: Sender<Fresh>,
}

impl Handoff {
    /// Holds message `id` for its first pass; to be called before it is committed.
    pub fn claim(&self, id: &str) -> Option<Claim> {
        Claim::take(&self.claimed, id)
    }

    /// Hands a committed message over. A closed channel means no runner: the message
    /// waits for the next start (its claim is released on the way).
    pub fn committed(&self, fresh: Fresh) {
        let _ = self.tx.try_send(fresh);
    }
}

/// A message for a pass: found in the spool, or handed over fresh.
enum Candidate {
    Listed(String),
    Fresh(Box<Fresh>),
}

/// Messages one connection should carry before another connection to the same destination
/// is worth opening.
const MESSAGES_PER_CONNECTION: usize = 10;

/// Spreads a destination's messages over up to `limit` connections, each carrying at least
/// [`MESSAGES_PER_CONNECTION`] (so a few messages still share one connection).
fn split_group(dest: Destination, group: Group, limit: usize) -> Vec<(Destination, Group)> {
    let connections = group
        .len()
        .div_ceil(MESSAGES_PER_CONNECTION)
        .clamp(1, limit);
    let mut parts: Vec<Group> = (0..connections).map(|_| Vec::new()).collect();
    for (i, job) in group.into_iter().enumerate() {
        parts[i % connections].push(job);
    }
    parts.into_iter().map(|g| (dest.clone(), g)).collect()
}

impl QueueRunner {
    /// A runner over `spool`. `tls` should stay the same for the life of the process so
    /// that TLS sessions resume.
    pub fn new(spool: Spool, config: RunnerConfig, tls: ClientTls, resolver: Resolver) -> Self {
        let seed = (std::process::id() << 12) ^ (unix_millis() as u32);
        QueueRunner {
            inner: Arc::new(Inner {
                spool,
                claimed: ClaimSet::default(),
                cache: None,
                settings: RwLock::new(Arc::new(Settings { config, tls })),
                resolver,
                clock: Clock::new(),
                unique: AtomicU32::new(seed),
                run_lock: AsyncMutex::new(()),
                counts: RecentCounts::default(),
            }),
        }
    }

    /// Keeps idle connections for a moment after each delivery, for the next one to the
    /// same server. For runners that live on (the relay, `certrelay run`); a one-shot run
    /// would leave its idle connections without a QUIT when the process ends.
    pub fn keep_connections(mut self) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("keep_connections is called on a runner not yet shared")
            .cache = Some(ConnectionCache::default());
        self
    }

    /// The outcomes of recipients' delivery attempts over time (shared, for `status`).
    pub fn counts(&self) -> RecentCounts {
        self.inner.counts.clone()
    }

    /// True while the transport is held (`defer_transports`): nothing goes until a flush.
    pub fn is_holding(&self) -> bool {
        self.inner.settings().config.hold
    }

    /// Says QUIT on the idle connections kept (at shutdown).
    pub async fn close_idle_connections(&self) {
        if let Some(cache) = &self.inner.cache {
            cache.close_all().await;
        }
    }

    /// New delivery settings (a reload): runs and connections that start from now on use
    /// them; those in progress finish with the old ones. A new `tls` starts without the
    /// old one's TLS sessions.
    pub fn reconfigure(&self, config: RunnerConfig, tls: ClientTls) {
        let next = Arc::new(Settings { config, tls });
        *self
            .inner
            .settings
            .write()
            .unwrap_or_else(|e| e.into_inner()) = next;
    }

    /// Runs until every waker is dropped: a run at start, then one per wake-up and one
    /// every `queue_run_delay`.
    pub async fn serve(&self, wakeups: QueueWakeups) {
        let mut flush = false;
        loop {
            if flush || !self.inner.settings().config.hold {
                let stats = self.run_once(flush).await;
                log::debug!("queue run: {stats:?}");
            }
            let delay = self.inner.settings().config.retry.queue_run_delay;
            let woke = future::or(async { wakeups.0.recv().await.ok() }, async {
                Timer::after(delay).await;
                Some(Wake::NewMail)
            })
            .await;
            let Some(first) = woke else { return };
            flush = first == Wake::Flush;
            loop {
                match wakeups.0.try_recv() {
                    Ok(w) => flush |= w == Wake::Flush,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => return,
                }
            }
        }
    }

    /// One run over the spool: every due message (every message when `flush`), then the
    /// bounces that run queued.
    pub async fn run_once(&self, flush: bool) -> RunStats {
        let _running = self.inner.run_lock.lock().await;
        let mut stats = RunStats::default();
        let spool = self.inner.spool.clone();
        let ids = match smol::unblock(move || spool.ids()).await {
            Ok(ids) => ids,
            Err(e) => {
                log::error!(
                    "cannot list the queue {}: {e}",
                    self.inner.spool.root().display()
                );
                return stats;
            }
        };
        let listed = ids.into_iter().map(Candidate::Listed).collect();
        stats.add(&self.rounds(listed, flush).await);
        stats
    }

    /// Delivers messages just queued without a queue run: no scan of the queue, and no
    /// wait for a run in progress (a message another pass holds is left to it). Nothing
    /// goes while the transport is held (`defer_transports`).
    pub async fn deliver_new(&self, fresh: Vec<Fresh>) -> RunStats {
        if self.inner.settings().config.hold {
            return RunStats::default();
        }
        let fresh = fresh.into_iter().map(|f| Candidate::Fresh(Box::new(f)));
        self.rounds(fresh.collect(), false).await
    }

    /// Where sessions hand over what they commit (see [`Fresh`]); give the receiver to
    /// [`QueueRunner::serve_with_fresh`].
    pub fn fresh_channel(&self) -> (Handoff, Receiver<Fresh>) {
        let (tx, rx) = smol::channel::unbounded();
        let handoff = Handoff {
            claimed: self.inner.claimed.clone(),
            tx,
        };
        (handoff, rx)
    }

    /// As [`QueueRunner::serve`], and each message that arrives on `fresh` goes at once
    /// through [`QueueRunner::deliver_new`], up to [`FRESH_PASSES`] batches at a time
    /// (messages that arrive meanwhile wait and form the next batch).
    pub async fn serve_with_fresh(&self, wakeups: QueueWakeups, fresh: Receiver<Fresh>) {
        let passes = Arc::new(Semaphore::new(FRESH_PASSES));
        let me = self.clone();
        let fresh_loop = smol::spawn(async move {
            while let Ok(first) = fresh.recv().await {
                let permit = passes.acquire_arc().await;
                let mut batch = vec![first];
                while let Ok(more) = fresh.try_recv() {
                    batch.push(more);
                }
                let runner = me.clone();
                smol::spawn(async move {
                    let stats = runner.deliver_new(batch).await;
                    log::debug!("new mail: {stats:?}");
                    drop(permit);
                })
                .detach();
            }
        });
        self.serve(wakeups).await;
        drop(fresh_loop);
    }

    /// A pass over `candidates`, then over the bounces it queued. A bounce is never bounced, so
    /// two rounds suffice; the third is a safety net.
    async fn rounds(&self, mut candidates: Vec<Candidate>, force: bool) -> RunStats {
        let mut stats = RunStats::default();
        for round in 0..3 {
            let (round_stats, bounces) = self.pass(candidates, force || round > 0).await;
            stats.add(&round_stats);
            if bounces.is_empty() {
                break;
            }
            candidates = bounces.into_iter().map(Candidate::Listed).collect();
        }
        stats
    }

    /// Loads, groups and delivers the `candidates`; returns the stats and the ids of the
    /// bounces queued.
    async fn pass(&self, candidates: Vec<Candidate>, force: bool) -> (RunStats, Vec<String>) {
        let mut stats = RunStats::default();
        let mut bounces = Vec::new();
        let now = unix_secs();
        let flights: Flights = Arc::default();
        let mut groups: HashMap<Destination, Group> = HashMap::new();
        let mut claims = Claims::new(&self.inner.claimed);
        for candidate in candidates {
            let (id, mut envelope, body) = match candidate {
                Candidate::Listed(id) => {
                    if !claims.claim(&id) {
                        continue;
                    }
                    let Some(envelope) = self.load(&id, &mut stats).await else {
                        continue;
                    };
                    (id, envelope, None)
                }
                Candidate::Fresh(fresh) => {
                    let id = fresh.id.as_str().to_owned();
                    match fresh.claim {
                        Some(claim) => claims.adopt(claim),
                        None if !claims.claim(&id) => continue,
                        None => {}
                    }
                    (id, fresh.envelope, fresh.body)
                }
            };
            if envelope.is_done() || !(force || envelope.is_due(now)) {
                continue;
            }
            stats.attempted += 1;
            let routes = self.route(&mut envelope);
            if routes.is_empty() {
                let (s, b) = self.inner.finish(envelope).await;
                stats.add(&s);
                bounces.extend(b);
                continue;
            }
            let outstanding = routes.len();
            for (dest, indexes) in routes {
                groups.entry(dest).or_default().push((id.clone(), indexes));
            }
            let flight = InFlight {
                envelope,
                body,
                outstanding,
            };
            flights.lock().expect("flights lock").insert(id, flight);
        }
        let settings = self.inner.settings();
        let limit = Arc::new(Semaphore::new(settings.config.concurrency.max(1)));
        let per_destination = settings.config.destination_concurrency.max(1);
        let tasks: Vec<_> = groups
            .into_iter()
            .flat_map(|(dest, group)| split_group(dest, group, per_destination))
            .map(|(dest, group)| {
                let inner = self.inner.clone();
                let flights = flights.clone();
                let limit = limit.clone();
                smol::spawn(async move {
                    let _permit = limit.acquire_arc().await;
                    inner.deliver_group(dest, group, flights).await
                })
            })
            .collect();
        for task in tasks {
            let (s, b) = task.await;
            stats.add(&s);
            bounces.extend(b);
        }
        // `claims` is dropped on return: the messages are free for the next pass.
        (stats, bounces)
    }

    /// Reads and parses one envelope; a defective one is moved aside.
    async fn load(&self, id: &str, stats: &mut RunStats) -> Option<Envelope> {
        let spool = self.inner.spool.clone();
        let owned = id.to_owned();
        let text = match smol::unblock(move || spool.read_envelope(&owned)).await {
            Ok(text) => text,
            // Removed since it was listed (another run, or a person): nothing to do.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                self.move_aside(id, &format!("cannot read envelope: {e}"), stats)
                    .await;
                return None;
            }
        };
        match Envelope::parse(&text) {
            Ok(envelope) if envelope.id.as_str() == id => Some(envelope),
            Ok(envelope) => {
                let why = format!("envelope names another queue id ({})", envelope.id);
                self.move_aside(id, &why, stats).await;
                None
            }
            Err(e) => {
                self.move_aside(id, &format!("envelope unreadable: {e}"), stats)
                    .await;
                None
            }
        }
    }

    async fn move_aside(&self, id: &str, why: &str, stats: &mut RunStats) {
        let spool = self.inner.spool.clone();
        let owned = id.to_owned();
        match smol::unblock(move || spool.move_aside(&owned)).await {
            Ok(()) => {
                log::error!("{id}: {why}; moved to corrupt/");
                stats.moved_aside += 1;
            }
            Err(e) => log::error!("{id}: {why}; cannot move it to corrupt/: {e}"),
        }
    }

    /// The next hop of each remaining recipient. A recipient without a domain (with no
    /// relayhost to take it) bounces at once.
    fn route(&self, envelope: &mut Envelope) -> Vec<(Destination, Vec<usize>)> {
        let remaining: Vec<usize> = envelope.remaining().collect();
        let settings = self.inner.settings();
        let config = &settings.config;
        if !config.relayhost.is_empty() {
            return vec![(Destination::Relayhost(config.relayhost.clone()), remaining)];
        }
        let mut routes: Vec<(Destination, Vec<usize>)> = Vec::new();
        for i in remaining {
            let address = &envelope.recipients[i].address;
            let Some((_, domain)) = address.rsplit_once('@').filter(|(_, d)| !d.is_empty()) else {
                let verdict = Verdict::bounced(
                    "5.1.3",
                    format!("bad address syntax: <{address}> has no domain"),
                );
                envelope.record(i, &verdict);
                self.inner.log_recipient(envelope, i, None);
                continue;
            };
            let dest = Destination::Domain {
                domain: domain.to_ascii_lowercase(),
                port: config.smtp_port,
            };
            match routes.iter_mut().find(|(d, _)| *d == dest) {
                Some((_, v)) => v.push(i),
                None => routes.push((dest, vec![i])),
            }
        }
        routes
    }
}

/// The servers of `dest` that are not this host itself; when every one is, the mail would
/// only come back here: it bounces with 5.4.6 (Postfix's "loops back to myself").
fn not_myself(
    dest: &Destination,
    servers: Vec<route::Candidate>,
    config: &RunnerConfig,
) -> Result<Vec<route::Candidate>, LookupError> {
    let (own, others): (Vec<route::Candidate>, Vec<route::Candidate>) = servers
        .into_iter()
        .partition(|c| is_own(&c.server, &config.own_endpoints));
    for c in &own {
        log::info!("{dest}: {} is this host; not delivering there", c.server);
    }
    if others.is_empty() && !own.is_empty() {
        return Err(LookupError::NoMailHost(MxFailure::LoopsToMyself(
            dest.to_string(),
        )));
    }
    Ok(others)
}

impl Inner {
    fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Delivers one next hop's messages and writes the results back.
    async fn deliver_group(
        self: Arc<Self>,
        dest: Destination,
        group: Group,
        flights: Flights,
    ) -> (RunStats, Vec<String>) {
        let jobs = self.jobs(&group, &flights);
        let settings = self.settings();
        let myhostname = &settings.config.myhostname;
        let dest = self.last_relay_first(dest).await;
        let found = candidates(&dest, &self.resolver, myhostname).await;
        let fates = match found.and_then(|s| not_myself(&dest, s, &settings.config)) {
            Ok(mut servers) => {
                if settings.config.wrappermode {
                    servers.iter_mut().for_each(|s| s.implicit_tls = true);
                }
                let fates = deliver(&servers, &jobs, &self.context(&settings)).await;
                self.remember_relay(&dest, &servers, &fates).await;
                fates
            }
            Err(e) => {
                log::info!("{dest}: {e}");
                let status = if e.is_permanent() {
                    DeliveryStatus::Bounced
                } else {
                    DeliveryStatus::Deferred
                };
                let outcome = client::Outcome::local(status, e.dsn(), e.to_string());
                let fate = RecipientFate {
                    outcome,
                    server: None,
                };
                jobs.iter()
                    .map(|j| vec![fate.clone(); j.envelope.recipients.len()])
                    .collect()
            }
        };
        let mut stats = RunStats::default();
        let mut bounces = Vec::new();
        for ((id, indexes), fates) in group.iter().zip(fates) {
            let Some(envelope) = self.record(id, indexes, &fates, &flights) else {
                continue;
            };
            let (s, b) = self.finish(envelope).await;
            stats.add(&s);
            bounces.extend(b);
        }
        (stats, bounces)
    }

    /// A relayhost list with the entry that last took mail first ([`last_relay`]).
    async fn last_relay_first(&self, dest: Destination) -> Destination {
        let Destination::Relayhost(hops) = dest else {
            return dest;
        };
        if hops.len() < 2 {
            return Destination::Relayhost(hops);
        }
        let dir = self.spool.root().to_owned();
        smol::unblock(move || {
            let first = last_relay::remembered(&dir, &hops);
            Destination::Relayhost(last_relay::reordered(&hops, first))
        })
        .await
    }

    /// Remembers the relayhost entry whose server answered for a message (took it or
    /// refused it for good), when it is not the one tried first already.
    async fn remember_relay(
        &self,
        dest: &Destination,
        servers: &[route::Candidate],
        fates: &[Vec<RecipientFate>],
    ) {
        let Destination::Relayhost(hops) = dest else {
            return;
        };
        let answered = fates.iter().flatten().find_map(|f| match f.outcome.status {
            DeliveryStatus::Sent | DeliveryStatus::Bounced => f.server.as_ref(),
            DeliveryStatus::Deferred => None,
        });
        let Some(entry) = answered
            .and_then(|server| servers.iter().find(|c| c.server == *server))
            .map(|c| c.nexthop.clone())
        else {
            return;
        };
        if hops.len() < 2 || hops[0].written == entry {
            return;
        }
        let dir = self.spool.root().to_owned();
        let shown = entry.clone();
        match smol::unblock(move || last_relay::remember(&dir, &entry)).await {
            Ok(()) => log::info!("relayhost {shown} took mail: tried first from now on"),
            Err(e) => log::warn!(
                "cannot remember relayhost {shown} in {}: {e}",
                self.spool.root().join(last_relay::FILE).display()
            ),
        }
    }

    fn context(&self, s: &Settings) -> DeliveryContext {
        let mut settings = s.config.client.clone();
        // A server that greets with our name is this host (deliver fills in the next hop).
        settings.self_check = Some(SelfCheck {
            myhostname: s.config.myhostname.clone(),
            nexthop: String::new(),
        });
        DeliveryContext {
            settings,
            tls: s.tls.clone(),
            connect_timeout: s.config.connect_timeout,
            tls_level: s.config.tls_level.clone(),
            cache: self.cache.clone(),
            clock: self.clock,
        }
    }

    fn jobs(&self, group: &Group, flights: &Flights) -> Vec<DeliveryJob> {
        let flights = flights.lock().expect("flights lock");
        group
            .iter()
            .map(|(id, indexes)| {
                let flight = &flights[id];
                let e = &flight.envelope;
                DeliveryJob {
                    envelope: client::Envelope {
                        sender: e.sender.clone(),
                        recipients: indexes
                            .iter()
                            .map(|&i| e.recipients[i].address.clone())
                            .collect(),
                        body_size: Some(e.size.saturating_add(e.signature.len() as u64)),
                        eight_bit: false,
                        smtputf8: e.smtputf8,
                        // Looked at when the content is read (deliver::send_one).
                        utf8_header: false,
                    },
                    prepend: (!e.signature.is_empty()).then(|| Arc::from(e.signature.as_str())),
                    message: match &flight.body {
                        Some(body) => MessageSource::Memory(body.clone()),
                        None => MessageSource::Spooled {
                            spool: self.spool.clone(),
                            id: id.clone(),
                        },
                    },
                }
            })
            .collect()
    }

    /// Writes one next hop's results into the message's record; returns the record when
    /// this was the last next hop to answer.
    fn record(
        &self,
        id: &str,
        indexes: &[usize],
        fates: &[RecipientFate],
        flights: &Flights,
    ) -> Option<Envelope> {
        let mut flights = flights.lock().expect("flights lock");
        let flight = flights.get_mut(id)?;
        for (&i, fate) in indexes.iter().zip(fates) {
            let verdict = verdict(fate);
            flight.envelope.record(i, &verdict);
            self.log_recipient(&flight.envelope, i, fate.server.as_ref());
        }
        flight.outstanding -= 1;
        if flight.outstanding > 0 {
            return None;
        }
        flights.remove(id).map(|f| f.envelope)
    }

    fn log_recipient(
        &self,
        envelope: &Envelope,
        i: usize,
        server: Option<&crate::delivery::route::ServerAddr>,
    ) {
        let relay = match server {
            Some(s) => Relay::Host {
                name: &s.name,
                addr: s.addr,
                port: s.port,
            },
            None => Relay::None,
        };
        let delay = Duration::from_millis(unix_millis().saturating_sub(envelope.arrival * 1000));
        let line = delivery_line(&envelope.id, &envelope.recipients[i], &relay, delay);
        let outcome = match envelope.recipients[i].state {
            RecipientState::Sent => Some(Outcome::Sent),
            RecipientState::Deferred => Some(Outcome::Deferred),
            RecipientState::Bounced => Some(Outcome::Bounced),
            RecipientState::Pending => None,
        };
        if let Some(outcome) = outcome {
            self.counts.add(outcome, unix_secs());
        }
        match envelope.recipients[i].state {
            RecipientState::Sent => log::info!("{line}"),
            _ => log::warn!("{line}"),
        }
    }

    /// Closes the attempt: keeps the record for a retry, or bounces and removes it.
    async fn finish(&self, mut envelope: Envelope) -> (RunStats, Vec<String>) {
        let mut stats = RunStats::default();
        let mut bounces = Vec::new();
        let now = unix_secs();
        let id = envelope.id.as_str().to_owned();
        match envelope.finish_attempt(now, &self.settings().config.retry) {
            AttemptEnd::RetryAt(_) => {
                self.write_back(&envelope).await;
                stats.deferred += 1;
                return (stats, bounces);
            }
            AttemptEnd::Expired(_) => log::warn!("{}", expired_line(&envelope)),
            AttemptEnd::Done => {}
        }
        if envelope.has_bounced() {
            if !dsn::bounce_wanted(&envelope.sender, envelope.is_bounce) {
                log::error!("{id}: undeliverable notification kept in the queue as failed");
                self.write_back(&envelope).await;
                stats.failed += 1;
                return (stats, bounces);
            }
            match self.queue_bounce(&envelope, now).await {
                Ok(bounce) => {
                    log::info!("{id}: sender non-delivery notification: {bounce}");
                    bounces.push(bounce);
                    stats.bounces += 1;
                }
                Err(e) => {
                    // Keep the message (its record says bounced) rather than lose the news.
                    log::error!("{id}: cannot queue the bounce: {e}");
                    self.write_back(&envelope).await;
                    stats.failed += 1;
                    return (stats, bounces);
                }
            }
        }
        let spool = self.spool.clone();
        let owned = id.clone();
        match smol::unblock(move || spool.remove(&owned)).await {
            Ok(()) => {
                log::info!("{id}: removed");
                stats.removed += 1;
            }
            Err(e) => log::error!("{id}: cannot remove from the queue: {e}"),
        }
        (stats, bounces)
    }

    /// Replaces the record durably; a failure is logged (the old record stays, so the
    /// message is tried again, which may send it twice: the safe side).
    async fn write_back(&self, envelope: &Envelope) {
        let spool = self.spool.clone();
        let id = envelope.id.as_str().to_owned();
        let text = envelope.to_text();
        let owned = id.clone();
        if let Err(e) = smol::unblock(move || spool.update_envelope(&owned, text.as_bytes())).await
        {
            log::error!("{id}: cannot update the envelope: {e}");
        }
    }

    /// Composes the bounce of `envelope` and commits it as a new message.
    async fn queue_bounce(&self, envelope: &Envelope, now: u64) -> Result<String, SpoolError> {
        let id = self.new_queue_id(now);
        let spool = self.spool.clone();
        let original = envelope.clone();
        let myhostname = self.settings().config.myhostname.clone();
        let bounce_id = id.clone();
        smol::unblock(move || {
            let headers = read_headers(&spool, original.id.as_str());
            let failed = FailedRecipient::all_bounced(&original);
            let unique = format!("{now}.{bounce_id}");
            let report = BounceReport {
                reporting_mta: &myhostname,
                queue_id: original.id.as_str(),
                original_sender: &original.sender,
                arrival_date: &dsn::rfc5322_date(original.arrival, 0),
                date: &dsn::rfc5322_date(now, 0),
                unique: &unique,
                recipients: &failed,
                original_headers: &headers,
            };
            let bytes = dsn::compose(&report);
            let record =
                dsn::bounce_envelope(bounce_id.clone(), now, &original, bytes.len() as u64);
            let mut incoming = spool.incoming(bounce_id.as_str())?;
            incoming.write(&bytes)?;
            incoming.commit(record.to_text().as_bytes())
        })
        .await?;
        Ok(id.as_str().to_owned())
    }

    fn new_queue_id(&self, now: u64) -> QueueId {
        loop {
            let unique = self.unique.fetch_add(1, Ordering::Relaxed);
            let id = QueueId::generate(now, unique);
            if !self.spool.message_path(id.as_str()).exists() {
                return id;
            }
        }
    }
}

/// The record's verdict for a recipient's fate. The remote MTA is named only when its
/// reply decided.
fn verdict(fate: &RecipientFate) -> Verdict {
    let o = &fate.outcome;
    Verdict {
        state: match o.status {
            DeliveryStatus::Sent => RecipientState::Sent,
            DeliveryStatus::Deferred => RecipientState::Deferred,
            DeliveryStatus::Bounced => RecipientState::Bounced,
        },
        dsn: o.dsn.clone(),
        reason: o.reason.clone(),
        remote_mta: match (&fate.server, &o.reply) {
            (Some(s), Some(_)) => s.name.clone(),
            _ => String::new(),
        },
    }
}

/// The header block of a queued message (at most what a bounce quotes).
fn read_headers(spool: &Spool, id: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(file) = spool.open_message(id) {
        let _ = file
            .take(dsn::MAX_ORIGINAL_HEADERS as u64)
            .read_to_end(&mut out);
    }
    out
}

#[cfg(test)]
mod split_tests {
    use super::*;

    fn group(n: usize) -> Group {
        (0..n).map(|i| (format!("ID{i}"), vec![0])).collect()
    }

    #[test]
    fn a_few_messages_share_one_connection_many_spread_over_several() {
        let dest = Destination::Domain {
            domain: "example.org".into(),
            port: 25,
        };
        let sizes = |n, limit| {
            split_group(dest.clone(), group(n), limit)
                .iter()
                .map(|(_, g)| g.len())
                .collect::<Vec<_>>()
        };
        assert_eq!(sizes(4, 10), [4]);
        assert_eq!(sizes(10, 10), [10]);
        assert_eq!(sizes(25, 10), [9, 8, 8]);
        assert_eq!(sizes(1000, 10).len(), 10);
        assert_eq!(sizes(1000, 10).iter().sum::<usize>(), 1000);
        assert_eq!(sizes(0, 10), [0]);
    }
}
