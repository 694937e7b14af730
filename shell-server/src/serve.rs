//! The serving mode: listen, accept within the session limits, reload on SIGHUP or when the
//! watcher (`watch`) sees the configuration change, stop on SIGTERM.

use crate::generation::{self, Generation, ListenerConf};
use crate::{privilege, running, status};
use async_signal::{Signal, Signals};
use certrelay_core::config::{Diagnostic, Severity};
use certrelay_core::settings::ServerTlsLevel;
use certrelay_shell::clock::Clock;
use certrelay_shell::delivery::resolver::Resolver;
use certrelay_shell::delivery::runner::{wake_channel, QueueRunner};
use certrelay_shell::smtpd::accept::{accept_loop, wait_for_sessions, STOP_GRACE};
use certrelay_shell::smtpd::limits::Sessions;
use certrelay_shell::smtpd::listen::{self, Interfaces};
use certrelay_shell::smtpd::store::{QueueWake, Store};
use certrelay_shell::smtpd::{ListenerSource, Server};
use certrelay_shell::spool::Spool;
use smol::stream::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The running relay's configuration, shared by the accept loops.
struct Relay {
    dir: PathBuf,
    current: RwLock<Arc<Generation>>,
    /// The listener keys that have sockets (fixed at start).
    bound_keys: Vec<String>,
    /// The enrollment parameters the service read at start, when it runs (it reads the CA
    /// key as root, so only a restart changes them).
    enrolling_with: Option<String>,
}

impl Relay {
    fn current(&self) -> Arc<Generation> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ListenerSource for Relay {
    fn listener(&self, key: &str) -> Option<Arc<ListenerConf>> {
        self.current().listener(key).cloned()
    }

    fn session_limit(&self) -> usize {
        self.current().session_limit
    }
}

/// Runs the relay in the foreground until SIGTERM or SIGINT. Returns the exit code.
pub fn run(dir: &Path) -> i32 {
    smol::block_on(run_async(dir))
}

async fn run_async(dir: &Path) -> i32 {
    let began = running::monotonic_ns();
    // The relay works in its queue directory: the configuration is named from the root.
    let dir = match std::path::absolute(dir) {
        Ok(d) => d,
        Err(e) => {
            log::error!("{}: {e}", dir.display());
            return 1;
        }
    };
    let dir = dir.as_path();
    let as_root = privilege::is_root();
    if as_root {
        certrelay_shell::conf::keep_tls_files();
    }
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
    raise_open_files(generation.session_limit);
    // As root, before the drop: the copy read now serves the daily check.
    crate::certs::warn_server_cert(dir);
    let owner = if as_root {
        match privilege::mail_owner(&generation.mail_owner) {
            Ok(user) => Some(user),
            Err(msg) => {
                // Checked with the configuration; the account went away since.
                log::error!("mail_owner = {}: {msg}", generation.mail_owner);
                return 1;
            }
        }
    } else {
        None
    };
    let mut signals = match Signals::new([Signal::Hup, Signal::Usr1, Signal::Term, Signal::Int]) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot watch signals: {e}");
            return 1;
        }
    };
    // As root, only the directory itself: what is inside waits for mail_owner.
    let queue_directory = match privilege::open_queue_directory(
        Path::new(&generation.queue_directory),
        owner.as_ref(),
    ) {
        Ok(q) => q,
        Err(e) => {
            log::error!("{e}; not starting");
            return 1;
        }
    };
    let wildcard = Interfaces {
        interfaces: &generation.inet_interfaces,
        protocols: &generation.inet_protocols,
    };
    let bound = match listen::bind_all(&generation.listeners, &wildcard).await {
        Ok(b) => b,
        Err(msg) => {
            log::error!("{msg}");
            return 1;
        }
    };
    let delivery = match generation::onward_delivery(dir) {
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
    // The CA that enrolls laptops is read now, as root, like the server key.
    let (reload_requests, enroll_reloads) = smol::channel::unbounded();
    let enroll = match certrelay_shell::conf::load(dir)
        .map_err(|e| e.to_string())
        .and_then(|loaded| {
            crate::enroll::Service::from_config(&loaded.config, reload_requests.clone())
        }) {
        Ok(service) => service,
        Err(msg) => {
            log::error!("{msg}; not starting");
            return 1;
        }
    };
    // Folders watched now stay watched after the drop, even those only root may read.
    let watcher = crate::watch::Watcher::prepare(dir);
    // Everything that needs root is done: listeners bound, keys read, queue directory open.
    if let Some(user) = &owner {
        match privilege::drop_to(user) {
            Ok(said) => log::info!("{said}"),
            Err(msg) => {
                log::error!("{msg}; not starting");
                return 1;
            }
        }
    }
    let spool = match settle_in(&queue_directory, owner.as_ref()).await {
        Ok(s) => s,
        Err(msg) => {
            log::error!("{msg}; not starting");
            return 1;
        }
    };
    // Renewals awaiting their first use, from the enrolled table beside the spool.
    if let Some(service) = &enroll {
        service.refresh_pending();
    }
    // Last seen times of listed certificates, from the file beside the spool.
    let watch = crate::certs::Watch::load();
    let mut changes = watcher.map_or_else(crate::watch::Changes::none, |w| w.spawn());
    let mut report = running::Report {
        pid: std::process::id(),
        generation: 1,
        began,
        refused: Vec::new(),
    };
    // `certrelayd allow`, `revoke`, `ca issue` and `flush` find the running relay through
    // these files; `allow` and the others wait for the report of the reload they asked for.
    if let Err(e) = running::write_pid().and_then(|()| running::write_report(&report)) {
        log::error!(
            "{}: cannot write the process id and the reload report: {e}; not starting",
            queue_directory.path().display()
        );
        return 1;
    }
    let (waker, wakeups) = wake_channel();
    let runner = QueueRunner::new(
        spool.clone(),
        delivery.runner,
        delivery.tls,
        Resolver::system(),
    )
    .keep_connections();
    let (handoff, runner_rx) = runner.fresh_channel();
    let wake = QueueWake::Runner(handoff);
    // Each accepted message goes at once, in a pass of its own; queue runs retry the rest.
    let runner_task = {
        let runner = runner.clone();
        smol::spawn(async move { runner.serve_with_fresh(wakeups, runner_rx).await })
    };
    // Keys read with the generation (as root); a reload hands it the new ones.
    let signer = Arc::new(crate::dkim::Signer::new(generation.dkim.clone()));
    let enrolling_with = enroll.as_ref().map(|_| generation.enroll_params.clone());
    let relay = Arc::new(Server {
        source: Relay {
            dir: dir.to_owned(),
            current: RwLock::new(Arc::new(generation)),
            bound_keys: bound.iter().map(|b| b.key.clone()).collect(),
            enrolling_with,
        },
        sessions: Sessions::default(),
        store: Store::new(spool, wake)
            .with_signer(signer.clone())
            .with_listed_seen(watch.clone()),
        clock: Clock::new(),
        enroll: enroll.map(|service| {
            Arc::new(crate::enroll::Handle(service))
                as Arc<dyn certrelay_shell::smtpd::enroll::Enroller>
        }),
    });
    log::info!(
        "daemon started -- version {}, configuration {}",
        env!("CARGO_PKG_VERSION"),
        dir.display()
    );
    crate::allocator::serving_begins();
    // `certrelayd status` reads the live values from a file rewritten every few seconds.
    let publisher = Arc::new(status::Publisher::new());
    let status_task = {
        let (relay, runner, publisher) = (relay.clone(), runner.clone(), publisher.clone());
        let counts = runner.counts();
        smol::spawn(async move {
            publisher
                .serve(|| live_status(&relay, &runner, &counts))
                .await
        })
    };
    // Once a minute the seen records go to their file when they changed and an idle relay's
    // kept message buffers go back to the system; once a day the server certificate is
    // looked at.
    let housekeeping = {
        let (watch, dir) = (watch.clone(), dir.to_owned());
        smol::spawn(async move {
            let mut minutes = 0u32;
            loop {
                smol::Timer::after(SEEN_FLUSH_EVERY).await;
                watch.flush().await;
                crate::allocator::housekeeping();
                minutes += 1;
                if minutes.is_multiple_of(24 * 60) {
                    let dir = dir.clone();
                    smol::unblock(move || crate::certs::warn_server_cert(&dir)).await;
                }
            }
        })
    };
    let mut accepting = Vec::new();
    for b in bound {
        log::info!("listening on {} for service {}", b.local, b.key);
        accepting.push(smol::spawn(accept_loop(b, relay.clone())));
    }
    let stop_signal = loop {
        // An enrollment that changed the enrolled table waits for the reload it asks for.
        let mut reload_done = None;
        let asked = async {
            if let Ok(done) = enroll_reloads.recv().await {
                reload_done = Some(done);
            }
            log::info!("enrolled laptops changed; reloading the configuration");
            None
        };
        let watched = async {
            let what = changes.next().await;
            log::info!("{what}: changed; reloading the configuration");
            None
        };
        let woken = smol::future::or(
            async { Some(signals.next().await) },
            smol::future::or(watched, asked),
        )
        .await;
        // A change seen by the watcher reloads as SIGHUP does.
        match woken.unwrap_or(Some(Ok(Signal::Hup))) {
            Some(Ok(Signal::Hup)) => {
                let began = running::monotonic_ns();
                // After log rotation; the old file stays in use when this account cannot.
                if let Err(e) = certrelay_shell::logging::reopen() {
                    log::warn!("{e}; still writing to the file opened before");
                }
                let outcome = reload(&relay.source, &runner, &signer);
                if outcome.is_ok() {
                    crate::certs::warn_server_cert(dir);
                }
                watch.flush().await;
                report.began = began;
                match outcome {
                    Ok(()) => {
                        report.generation += 1;
                        report.refused.clear();
                        // Mail held by the old settings (defer_transports) may go now.
                        waker.new_mail();
                    }
                    Err(why) => report.refused = why,
                }
                if let Err(e) = running::write_report(&report) {
                    log::warn!("{}: {e}", running::REPORT_FILE);
                }
                publisher.reloaded(report.generation, &report.refused);
                if let Some(done) = reload_done.take() {
                    let _ = done.try_send(());
                }
            }
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
    drop(status_task);
    drop(housekeeping);
    log::info!("terminating on signal {stop_signal}");
    wait_for_sessions(&relay.sessions, STOP_GRACE).await;
    // Deliveries in progress end with the process; their messages stay queued and are
    // tried again at the next start.
    drop(waker);
    drop(runner_task);
    runner.close_idle_connections().await;
    // The timer's flush, dropped above, may have left its write running on the blocking
    // pool with the changes it took: this one waits for it (`Watch` serialises them), then
    // writes what came since, before the process ends.
    watch.flush().await;
    running::remove_files();
    0
}

/// How often the records of listed certificates seen are written, when they changed.
const SEEN_FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// What `certrelayd status` shows of the running relay now.
fn live_status(
    relay: &Server<Relay>,
    runner: &QueueRunner,
    counts: &certrelay_shell::status::RecentCounts,
) -> status::Live {
    let current = relay.source.current();
    let listeners = relay
        .source
        .bound_keys
        .iter()
        .map(|key| status::ListenerInfo {
            key: key.clone(),
            tls: match current.listener(key) {
                Some(l) if l.wrappermode => "tls-wrapper",
                Some(l) if l.tls.is_some() => match l.settings.tls_level {
                    ServerTlsLevel::None => "none",
                    ServerTlsLevel::May => "starttls",
                    ServerTlsLevel::Encrypt => "starttls-required",
                },
                _ => "none",
            }
            .to_owned(),
        })
        .collect();
    let (refused, displaced) = relay.sessions.refused_and_displaced();
    status::Live {
        listeners,
        sessions: relay.sessions.active(),
        session_limit: current.session_limit,
        stress: relay.sessions.under_stress(),
        refused,
        displaced,
        held: runner.is_holding(),
        deliveries: counts.snapshot(certrelay_shell::clock::unix_secs()),
    }
}

/// After the drop (if any): works from the queue directory from now on, checks that
/// `mail_owner` holds everything in it, opens the spool there and proves that it can
/// receive into it.
async fn settle_in(
    queue_directory: &privilege::QueueDirectory,
    owner: Option<&nix::unistd::User>,
) -> Result<Spool, String> {
    queue_directory.enter().map_err(|e| e.to_string())?;
    let shown = queue_directory.path().to_owned();
    if let Some(user) = owner {
        privilege::check_spool_entries(&shown, user).map_err(|e| e.to_string())?;
    }
    let spool = open_spool(&shown).await?;
    spool.probe().map_err(|e| {
        let dir = e.dir.strip_prefix(".").unwrap_or(&e.dir);
        let account = owner.map_or_else(
            || nix::unistd::Uid::effective().to_string(),
            |u| u.name.clone(),
        );
        privilege::SpoolError::Unwritable {
            path: shown.join(dir),
            owner: account,
            source: e.source,
        }
        .to_string()
    })?;
    Ok(spool)
}

/// The spool in the working directory; `shown` names it in the log.
async fn open_spool(shown: &Path) -> Result<Spool, String> {
    let (spool, rec) = smol::unblock(|| Spool::open("."))
        .await
        .map(|(s, r)| (s.recycling(), r))
        .map_err(|e| {
            format!(
                "queue_directory {}: cannot open the spool: {e}",
                shown.display()
            )
        })?;
    let dir = shown.display();
    if rec.removed_partial > 0 {
        log::info!(
            "{dir}: removed {} partial message file(s) left by a stop",
            rec.removed_partial
        );
    }
    for id in &rec.moved_aside {
        log::warn!("{id}: incomplete message files moved to {dir}/corrupt");
    }
    Ok(spool)
}

/// SIGHUP: read the configuration again; switch to it only when it has no error. `Err`
/// holds why it did not switch (the errors, with file:line), for the reload report.
fn reload(
    relay: &Relay,
    runner: &QueueRunner,
    signer: &crate::dkim::Signer,
) -> Result<(), Vec<String>> {
    log::info!(
        "reload -- version {}, configuration {}",
        env!("CARGO_PKG_VERSION"),
        relay.dir.display()
    );
    let errors = |diags: &[Diagnostic]| -> Vec<String> {
        diags
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.to_string())
            .collect()
    };
    let (mut next, notes) = match generation::load(&relay.dir) {
        Ok(loaded) => loaded,
        Err(diags) => {
            log_diagnostics(&diags);
            log::error!("configuration not reloaded: the running configuration stays in effect");
            return Err(errors(&diags));
        }
    };
    let delivery = match generation::onward_delivery(&relay.dir) {
        Ok(d) => d,
        Err(diags) => {
            log_diagnostics(&diags);
            log::error!(
                "configuration not reloaded (onward delivery settings): the running \
                 configuration stays in effect"
            );
            return Err(errors(&diags));
        }
    };
    log_diagnostics(&notes);
    let old = relay.current();
    keep_bound_listeners(relay, &old, &mut next);
    keep_enrollment_of_start(relay, &mut next);
    if next.queue_directory != old.queue_directory {
        log::warn!(
            "queue_directory changed to {}: the spool stays {} until a restart",
            next.queue_directory,
            old.queue_directory
        );
    }
    if next.mail_owner != old.mail_owner {
        log::warn!(
            "mail_owner changed to {}: takes effect at the next restart",
            next.mail_owner
        );
    }
    if next.inet_interfaces != old.inet_interfaces || next.inet_protocols != old.inet_protocols {
        log::warn!("inet_interfaces or inet_protocols changed: takes effect at the next restart");
    }
    let listeners = next.listeners.len();
    raise_open_files(next.session_limit);
    signer.replace(next.dkim.clone());
    *relay.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
    runner.reconfigure(delivery.runner, delivery.tls);
    log::info!(
        "configuration reloaded: {listeners} listener(s); new sessions and deliveries use \
         it, sessions in progress the new relay_clientcerts"
    );
    Ok(())
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

/// Enrollment as it was at start: the service reads the CA key once, as root, so a reload
/// that changes its parameters says they wait for a restart, and one that turns enrollment
/// on (the relay started without) leaves `XCERTRELAY` off, as on a relay that does not
/// enroll, rather than offering what could only be answered `451`. A reload that turns
/// enrollment off takes effect at once (each listener's settings say so).
fn keep_enrollment_of_start(relay: &Relay, next: &mut Generation) {
    let offered = next.listeners.iter().any(|l| l.settings.enroll);
    if let Some(at_start) = &relay.enrolling_with {
        if offered && next.enroll_params != *at_start {
            log::warn!(
                "certrelay_enroll_* parameters changed: laptops are enrolled with those read at \
                 start (the CA key is read as root) until a restart"
            );
        }
        return;
    }
    if !offered {
        return;
    }
    for listener in &mut next.listeners {
        if listener.settings.enroll {
            let mut settings = (*listener.settings).clone();
            settings.enroll = false;
            let mut conf = (**listener).clone();
            conf.settings = Arc::new(settings);
            *listener = Arc::new(conf);
        }
    }
    log::warn!(
        "{} set by a reload: enrollment starts at the next restart (the CA key is read at \
         start, as root); until then the relay does not offer XCERTRELAY",
        crate::enroll::CA_CERT
    );
}

/// The most open files Linux lets a process have by default (`fs.nr_open`): a soft limit
/// above it is refused, so an unlimited hard limit is raised to this.
const NR_OPEN: u64 = 1 << 20;

/// Raises the soft limit on open files as far as the hard limit allows, and says so when
/// even that is too low for `session_limit` sessions: each holds a socket, and a spool
/// file while it receives; the queue runner and the listeners need some more.
fn raise_open_files(session_limit: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let target = hard.min(NR_OPEN).max(soft);
    let now = if target > soft {
        match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
            Ok(()) => {
                log::info!("open files limit raised from {soft} to {target}");
                target
            }
            Err(e) => {
                log::warn!("cannot raise the open files limit from {soft} to {target}: {e}");
                soft
            }
        }
    } else {
        soft
    };
    let sessions = u64::try_from(session_limit).unwrap_or(u64::MAX);
    let needed = sessions.saturating_mul(2).saturating_add(64);
    if now < needed {
        log::warn!(
            "open files limit {now} (hard limit {hard}) is below the {needed} that \
             default_process_limit = {session_limit} may need (a socket and a spool file per \
             session, and some to spare): past it, connections fail; raise the hard limit \
             (LimitNOFILE= in a systemd unit, ulimit -Hn) or lower default_process_limit"
        );
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
