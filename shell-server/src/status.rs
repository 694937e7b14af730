//! `certrelayd status`: the running relay's listeners, sessions, stress state, delivery
//! counts and configuration generation; the queue by state and deferral reason; and the
//! certificates that expire soon. Also the relay's side that publishes the live part.
//!
//! The relay rewrites a status file ([`running::STATUS_FILE`]) in its queue directory every
//! [`WRITE_EVERY`] and at each reload, as `mail_owner`, whole (a temporary file and a
//! rename), mode 0640, from counters the listener and the queue runner keep anyway: the
//! command never talks to the relay and never waits on it. The command, often run as root,
//! reads that file as a claim of `mail_owner` (no link followed, a plain file of
//! `mail_owner`, root or the caller, at most 64 KiB, parsed line by line; anything else
//! is "status file unreadable: why"), and believes it only when the pid file names a
//! running certrelayd of the same pid and the file is younger than [`STALE_AFTER`]. The
//! queue and the certificates are read from their files, so they show when the relay is
//! stopped too.
//!
//! Not here: changing anything (flush, delete, reload are other commands).

use crate::running::{self, NotRunning};
use certrelay_core::fingerprint::FingerprintMap;
use certrelay_shell::clock::unix_secs;
use certrelay_shell::status::{
    certificates_in, read_claim, span_text, utc_text, CertStatus, Fields, Json, QueueSummary,
    RecentTallies, Tally, MAX_STATUS_BYTES,
};
use smol::channel::{Receiver, Sender};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// How often the relay rewrites its status file.
pub const WRITE_EVERY: Duration = Duration::from_secs(5);

/// A status file older than this (seconds) is not believed.
pub const STALE_AFTER: u64 = 30;

/// The format's version, first line of the file.
const VERSION: u64 = 1;

/// `certrelayd status` exit code when the relay is not running (or its state is unknown),
/// as `systemctl status` says of a stopped unit.
pub const EXIT_NOT_RUNNING: i32 = 3;

/// show the running relay's listeners, sessions, stress state and delivery counts, the
/// queue by state and by deferral reason, and the certificates expiring within 30 days;
/// exit 0 when the relay runs, 3 when it does not (or its status cannot be read)
#[derive(argh::FromArgs)]
#[argh(subcommand, name = "status")]
pub struct StatusCmd {
    /// one JSON object on standard output, for scripts and monitoring
    #[argh(switch)]
    json: bool,
}

// ---------------------------------------------------------------------------------------
// What the relay publishes.

/// One bound listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerInfo {
    /// The endpoint as master.cf gives it (`127.0.0.1:2525`, `*:25`, `[::1]:25`).
    pub key: String,
    /// `none` (no TLS), `starttls` (offered), `starttls-required` (before mail).
    pub tls: String,
}

impl ListenerInfo {
    /// Address and port, from the key.
    fn address_port(&self) -> (String, Option<u16>) {
        match self.key.rsplit_once(':') {
            Some((addr, port)) => (
                addr.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port.parse().ok(),
            ),
            None => (self.key.clone(), None),
        }
    }
}

/// The live values the relay has at a given moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// The bound listeners.
    pub listeners: Vec<ListenerInfo>,
    /// Sessions open now.
    pub sessions: usize,
    /// Sessions allowed at once (`default_process_limit`).
    pub session_limit: usize,
    /// Every slot was taken and the relay has not yet come back to three quarters.
    pub stress: bool,
    /// Connections refused by a limit since the start.
    pub refused: u64,
    /// Idle sessions that gave way to a new connection since the start.
    pub displaced: u64,
    /// `defer_transports = smtp`: nothing is delivered until a flush.
    pub held: bool,
    /// Recipients' outcomes.
    pub deliveries: RecentTallies,
}

/// The configuration generation in effect and the last reload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Configurations loaded since the start, the first included.
    pub generation: u64,
    /// When the generation in effect was loaded (unix seconds).
    pub loaded_at: u64,
    /// The last load's errors (empty: it loaded).
    pub refused: Vec<String>,
}

/// The status file's content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// The relay's process id.
    pub pid: u32,
    /// When it started (unix seconds).
    pub started: u64,
    /// When this was written (unix seconds).
    pub written: u64,
    /// The configuration.
    pub loaded: Loaded,
    /// The live values.
    pub live: Live,
}

fn tally_fields(f: &mut Fields, prefix: &str, t: &Tally) {
    f.push(&format!("{prefix}_sent"), t.sent);
    f.push(&format!("{prefix}_deferred"), t.deferred);
    f.push(&format!("{prefix}_bounced"), t.bounced);
}

fn tally_from(f: &Fields, prefix: &str) -> Result<Tally, String> {
    Ok(Tally {
        sent: f.number(&format!("{prefix}_sent"))?,
        deferred: f.number(&format!("{prefix}_deferred"))?,
        bounced: f.number(&format!("{prefix}_bounced"))?,
    })
}

impl Published {
    /// The file's text.
    pub fn render(&self) -> String {
        let mut f = Fields::new();
        f.push("version", VERSION);
        f.push("pid", self.pid);
        f.push("started", self.started);
        f.push("written", self.written);
        f.push("generation", self.loaded.generation);
        f.push("loaded", self.loaded.loaded_at);
        f.push(
            "reload",
            if self.loaded.refused.is_empty() {
                "loaded"
            } else {
                "refused"
            },
        );
        for why in &self.loaded.refused {
            f.push("reload_error", why);
        }
        let live = &self.live;
        for l in &live.listeners {
            f.push("listener", format!("{} {}", l.tls, l.key));
        }
        f.push("sessions", live.sessions);
        f.push("session_limit", live.session_limit);
        f.push("stress", if live.stress { "on" } else { "off" });
        f.push("refused", live.refused);
        f.push("displaced", live.displaced);
        f.push("held", if live.held { "yes" } else { "no" });
        tally_fields(&mut f, "minute", &live.deliveries.minute);
        tally_fields(&mut f, "hour", &live.deliveries.hour);
        tally_fields(&mut f, "total", &live.deliveries.total);
        f.render()
    }

    /// Reads [`Published::render`]'s text; `Err` says what is wrong with it.
    pub fn parse(text: &str) -> Result<Published, String> {
        let f = Fields::parse(text)?;
        let version = f.number("version")?;
        if version != VERSION {
            return Err(format!("format version {version}, not {VERSION}"));
        }
        let word = |name: &str, yes: &str, no: &str| match f.get(name) {
            Some(v) if v == yes => Ok(true),
            Some(v) if v == no => Ok(false),
            other => Err(format!("`{name}`: {other:?} is neither {yes} nor {no}")),
        };
        let mut listeners = Vec::new();
        for line in f.all("listener") {
            let (tls, key) = line
                .split_once(' ')
                .filter(|(t, k)| !t.is_empty() && !k.is_empty())
                .ok_or_else(|| format!("`listener`: {line:?} is not `TLS ENDPOINT`"))?;
            listeners.push(ListenerInfo {
                key: key.to_owned(),
                tls: tls.to_owned(),
            });
        }
        let refused: Vec<String> = f.all("reload_error").map(str::to_owned).collect();
        if word("reload", "loaded", "refused")? != refused.is_empty() {
            return Err("`reload` does not agree with the errors listed".to_owned());
        }
        let count = |name: &str| -> Result<usize, String> {
            usize::try_from(f.number(name)?).map_err(|_| format!("`{name}`: too large"))
        };
        Ok(Published {
            pid: u32::try_from(f.number("pid")?).map_err(|_| "`pid`: too large".to_owned())?,
            started: f.number("started")?,
            written: f.number("written")?,
            loaded: Loaded {
                generation: f.number("generation")?,
                loaded_at: f.number("loaded")?,
                refused,
            },
            live: Live {
                listeners,
                sessions: count("sessions")?,
                session_limit: count("session_limit")?,
                stress: word("stress", "on", "off")?,
                refused: f.number("refused")?,
                displaced: f.number("displaced")?,
                held: word("held", "yes", "no")?,
                deliveries: RecentTallies {
                    minute: tally_from(&f, "minute")?,
                    hour: tally_from(&f, "hour")?,
                    total: tally_from(&f, "total")?,
                },
            },
        })
    }
}

/// The relay's side: keeps what is published about loads, and rewrites the file.
pub struct Publisher {
    started: u64,
    loaded: Mutex<Loaded>,
    changed: Sender<()>,
    wakeups: Receiver<()>,
}

impl Default for Publisher {
    fn default() -> Self {
        Publisher::new()
    }
}

impl Publisher {
    /// For a relay that started now with its first configuration.
    pub fn new() -> Publisher {
        let now = unix_secs();
        let (changed, wakeups) = smol::channel::bounded(1);
        Publisher {
            started: now,
            loaded: Mutex::new(Loaded {
                generation: 1,
                loaded_at: now,
                refused: Vec::new(),
            }),
            changed,
            wakeups,
        }
    }

    /// A reload ended: `refused` empty when it loaded (generation `generation` from now).
    pub fn reloaded(&self, generation: u64, refused: &[String]) {
        {
            let mut l = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            if refused.is_empty() {
                l.generation = generation;
                l.loaded_at = unix_secs();
            }
            l.refused = refused.to_vec();
        }
        let _ = self.changed.try_send(());
    }

    /// Rewrites the status file (in the working directory, the queue directory) with
    /// `live()` now, then every [`WRITE_EVERY`] and after each reload, until dropped.
    pub async fn serve(&self, live: impl Fn() -> Live) {
        let mut warned = false;
        loop {
            let published = Published {
                pid: std::process::id(),
                started: self.started,
                written: unix_secs(),
                loaded: self
                    .loaded
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
                live: live(),
            };
            let text = published.render();
            let written = smol::unblock(move || {
                running::replace_with_mode(running::STATUS_FILE, &text, 0o640)
            })
            .await;
            match written {
                Ok(()) => warned = false,
                Err(e) if !warned => {
                    log::warn!(
                        "{}: {e}; `certrelayd status` shows no live values",
                        running::STATUS_FILE
                    );
                    warned = true;
                }
                Err(_) => {}
            }
            smol::future::or(
                async {
                    let _ = self.wakeups.recv().await;
                },
                async {
                    smol::Timer::after(WRITE_EVERY).await;
                },
            )
            .await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The command.

/// Where the relay stands.
enum State {
    /// Running, with a fresh status file.
    Running(Published),
    /// Running, but its live values are unknown: why.
    Unknown { pid: i32, why: String },
    /// Not running: why.
    Stopped(String),
}

/// `certrelayd -c DIR status [--json]`: prints the status; returns the exit code.
pub fn main(dir: &Path, cmd: StatusCmd) -> i32 {
    let loaded = match certrelay_shell::conf::load(dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("certrelayd status: {e}");
            return 1;
        }
    };
    let config = &loaded.config;
    let queue_dir = PathBuf::from(config.text("queue_directory"));
    let owners = allowed_owners(config.text("mail_owner"));
    let now = unix_secs();
    let state = relay_state(&queue_dir, &owners, now);
    let queue = crate::admin::queue_summary(&queue_dir, config.text("mail_owner"))
        .map_err(|e| format!("{}: {e}", queue_dir.display()));
    let certs = certificates(dir, &loaded);
    if cmd.json {
        println!("{}", json(dir, &state, &queue, &certs, now).render());
    } else {
        print!("{}", text(dir, &state, &queue, &certs, now));
    }
    match state {
        State::Running(_) => 0,
        _ => EXIT_NOT_RUNNING,
    }
}

/// Who may own the status file: `mail_owner` (the relay dropped to it), root, or the
/// caller (a relay run without root by the same account).
fn allowed_owners(mail_owner: &str) -> Vec<u32> {
    let mut owners = vec![0, nix::unistd::Uid::effective().as_raw()];
    if let Ok(Some(user)) = nix::unistd::User::from_name(mail_owner) {
        owners.push(user.uid.as_raw());
    }
    owners
}

fn relay_state(queue_dir: &Path, owners: &[u32], now: u64) -> State {
    let pid = match running::find_relay(queue_dir) {
        Ok(pid) => pid,
        Err(NotRunning::NoPidFile(path, e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return State::Stopped(format!("no {}", path.display()));
        }
        Err(e) => return State::Stopped(e.to_string()),
    };
    let path = queue_dir.join(running::STATUS_FILE);
    let unknown = |why: String| State::Unknown {
        pid: pid.as_raw(),
        why: format!("status file unreadable: {}: {why}", path.display()),
    };
    let text = match read_claim(&path, owners, MAX_STATUS_BYTES) {
        Ok(t) => t,
        Err(e) => return unknown(e.to_string()),
    };
    let published = match Published::parse(&text) {
        Ok(p) => p,
        Err(e) => return unknown(e),
    };
    if i64::from(published.pid) != i64::from(pid.as_raw()) {
        return unknown(format!(
            "written by process {}, not by the running relay",
            published.pid
        ));
    }
    let age = now.saturating_sub(published.written);
    if age > STALE_AFTER {
        return unknown(format!(
            "last written {} ago (the relay rewrites it every {}s)",
            span_text(age),
            WRITE_EVERY.as_secs()
        ));
    }
    State::Running(published)
}

/// The relay's certificate (and the rest of its chain), the CA it trusts for clients, and
/// the laptops' certificates kept in the configuration directory whose fingerprints
/// `relay_clientcerts` lists (`certrelayd ca issue --out DIR`).
fn certificates(dir: &Path, loaded: &certrelay_shell::conf::Loaded) -> Vec<CertStatus> {
    let config = &loaded.config;
    let mut out = Vec::new();
    let server_file = config.text("smtpd_tls_cert_file");
    if !server_file.is_empty() {
        for (i, mut c) in certificates_in("server", Path::new(server_file))
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                c.role = "server chain".to_owned();
            }
            out.push(c);
        }
    }
    let ca_file = config.text("smtpd_tls_CAfile");
    if !ca_file.is_empty() {
        out.extend(certificates_in("client CA", Path::new(ca_file)));
    }
    let (map, _) = certrelay_shell::conf::fingerprint_map(config);
    out.extend(laptops(dir, &map, &out));
    out
}

/// The listed laptops' certificates among the `.pem` and `.crt` files of `dir`.
fn laptops(dir: &Path, map: &FingerprintMap, known: &[CertStatus]) -> Vec<CertStatus> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "pem" || e == "crt")
                && p.is_file()
                && !known.iter().any(|k| &k.file == p)
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Ok(certs) = certrelay_core::cert::parse_certificates(&bytes) else {
            continue;
        };
        for (der, mut status) in certs.iter().zip(certificates_in("laptop", &path)) {
            let spki = certrelay_core::cert::spki_der(der).unwrap_or_default();
            if let Some(found) = map.lookup_cert(der, spki) {
                status.role = format!("laptop {}", found.label);
                out.push(status);
            }
        }
    }
    out
}

fn tally_json(t: &Tally) -> Json {
    Json::obj([
        ("sent", Json::num(t.sent)),
        ("deferred", Json::num(t.deferred)),
        ("bounced", Json::num(t.bounced)),
    ])
}

fn json(
    dir: &Path,
    state: &State,
    queue: &Result<QueueSummary, String>,
    certs: &[CertStatus],
    now: u64,
) -> Json {
    let (word, pid, why) = match state {
        State::Running(p) => ("running", Some(i64::from(p.pid)), None),
        State::Unknown { pid, why } => ("unknown", Some(i64::from(*pid)), Some(why.clone())),
        State::Stopped(why) => ("not running", None, Some(why.clone())),
    };
    let published = match state {
        State::Running(p) => Some(p),
        _ => None,
    };
    let relay = Json::obj([
        ("state", Json::str(word)),
        ("running", Json::Bool(!matches!(state, State::Stopped(_)))),
        ("pid", pid.map_or(Json::Null, Json::num)),
        ("why", Json::opt_str(why)),
        (
            "started",
            published.map_or(Json::Null, |p| Json::num(p.started)),
        ),
        (
            "status_written",
            published.map_or(Json::Null, |p| Json::num(p.written)),
        ),
        (
            "generation",
            published.map_or(Json::Null, |p| Json::num(p.loaded.generation)),
        ),
        (
            "loaded",
            published.map_or(Json::Null, |p| Json::num(p.loaded.loaded_at)),
        ),
        (
            "reload_errors",
            published.map_or(Json::Null, |p| {
                Json::Arr(
                    p.loaded
                        .refused
                        .iter()
                        .map(|e| Json::str(e.clone()))
                        .collect(),
                )
            }),
        ),
    ]);
    let live = published.map(|p| &p.live);
    let listeners = live.map_or(Json::Null, |l| {
        Json::Arr(
            l.listeners
                .iter()
                .map(|li| {
                    let (address, port) = li.address_port();
                    Json::obj([
                        ("endpoint", Json::str(li.key.clone())),
                        ("address", Json::str(address)),
                        ("port", port.map_or(Json::Null, Json::num)),
                        ("tls", Json::str(li.tls.clone())),
                    ])
                })
                .collect(),
        )
    });
    let sessions = live.map_or(Json::Null, |l| {
        Json::obj([
            ("open", Json::num(l.sessions)),
            ("limit", Json::num(l.session_limit)),
            ("stress", Json::Bool(l.stress)),
            ("refused_since_start", Json::num(l.refused)),
            ("gave_way_since_start", Json::num(l.displaced)),
        ])
    });
    let deliveries = live.map_or(Json::Null, |l| {
        Json::obj([
            ("last_minute", tally_json(&l.deliveries.minute)),
            ("last_hour", tally_json(&l.deliveries.hour)),
            ("since_start", tally_json(&l.deliveries.total)),
            ("held", Json::Bool(l.held)),
        ])
    });
    let queue = match queue {
        Ok(q) => q.json(),
        Err(e) => Json::obj([("error", Json::str(e.clone()))]),
    };
    Json::obj([
        ("role", Json::str("relay")),
        ("config_dir", Json::str(dir.display().to_string())),
        ("now", Json::num(now)),
        ("relay", relay),
        ("listeners", listeners),
        ("sessions", sessions),
        ("deliveries", deliveries),
        ("queue", queue),
        (
            "certificates",
            Json::Arr(certs.iter().map(|c| c.json(now)).collect()),
        ),
    ])
}

fn tally_text(t: &Tally) -> String {
    format!(
        "{} sent, {} deferred, {} bounced",
        t.sent, t.deferred, t.bounced
    )
}

fn text(
    dir: &Path,
    state: &State,
    queue: &Result<QueueSummary, String>,
    certs: &[CertStatus],
    now: u64,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "certrelayd status, configuration {}", dir.display());
    match state {
        State::Stopped(why) => {
            let _ = writeln!(out, "relay: not running ({why})");
        }
        State::Unknown { pid, why } => {
            let _ = writeln!(out, "relay: running, pid {pid}; live values unknown: {why}");
        }
        State::Running(p) => {
            let l = &p.live;
            let _ = writeln!(
                out,
                "relay: running, pid {}, up {}; configuration generation {}, loaded {} ({} ago)",
                p.pid,
                span_text(now.saturating_sub(p.started)),
                p.loaded.generation,
                utc_text(i64::try_from(p.loaded.loaded_at).unwrap_or(0)),
                span_text(now.saturating_sub(p.loaded.loaded_at))
            );
            if !p.loaded.refused.is_empty() {
                let _ = writeln!(out, "  the last reload was refused:");
                for e in &p.loaded.refused {
                    let _ = writeln!(out, "    {e}");
                }
            }
            let _ = writeln!(out, "listeners:");
            for li in &l.listeners {
                let _ = writeln!(out, "  {:<24} {}", li.key, li.tls);
            }
            let _ = writeln!(
                out,
                "sessions: {} open of {} (default_process_limit); stress {}; since start {} \
                 refused, {} idle gave way",
                l.sessions,
                l.session_limit,
                if l.stress { "ON" } else { "off" },
                l.refused,
                l.displaced
            );
            let _ = writeln!(out, "deliveries (recipients):");
            let _ = writeln!(out, "  last minute: {}", tally_text(&l.deliveries.minute));
            let _ = writeln!(out, "  last hour:   {}", tally_text(&l.deliveries.hour));
            let _ = writeln!(out, "  since start: {}", tally_text(&l.deliveries.total));
            if l.held {
                let _ = writeln!(
                    out,
                    "  delivery held (defer_transports): mail waits until `certrelayd flush`"
                );
            }
        }
    }
    match queue {
        Ok(q) => out.push_str(&q.text(now)),
        Err(e) => {
            let _ = writeln!(out, "queue: unreadable: {e}");
        }
    }
    let soon: Vec<&CertStatus> = certs
        .iter()
        .filter(|c| c.expiring(now) || c.error.is_some())
        .collect();
    let _ = writeln!(
        out,
        "certificates: {} checked, {} expiring within {} days or unreadable",
        certs.len(),
        soon.len(),
        certrelay_shell::status::EXPIRY_WARNING_DAYS
    );
    for c in certs {
        let _ = writeln!(out, "  {}", c.text(now));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Published {
        Published {
            pid: 4321,
            started: 1_700_000_000,
            written: 1_700_000_100,
            loaded: Loaded {
                generation: 3,
                loaded_at: 1_700_000_050,
                refused: vec!["main.cf:3: error: bad\nsecond line".to_owned()],
            },
            live: Live {
                listeners: vec![
                    ListenerInfo {
                        key: "127.0.0.1:2525".into(),
                        tls: "starttls".into(),
                    },
                    ListenerInfo {
                        key: "[::1]:25".into(),
                        tls: "none".into(),
                    },
                ],
                sessions: 2,
                session_limit: 100,
                stress: true,
                refused: 5,
                displaced: 1,
                held: false,
                deliveries: RecentTallies {
                    minute: Tally {
                        sent: 1,
                        deferred: 2,
                        bounced: 3,
                    },
                    hour: Tally {
                        sent: 4,
                        deferred: 5,
                        bounced: 6,
                    },
                    total: Tally {
                        sent: 7,
                        deferred: 8,
                        bounced: 9,
                    },
                },
            },
        }
    }

    #[test]
    fn the_status_file_reads_back() {
        let mut p = sample();
        let back = Published::parse(&p.render()).unwrap();
        // A line break in a reason cannot make a line of its own.
        p.loaded.refused = vec!["main.cf:3: error: bad second line".to_owned()];
        assert_eq!(back, p);
        assert_eq!(
            p.live.listeners[1].address_port(),
            ("::1".to_owned(), Some(25))
        );
    }

    #[test]
    fn a_damaged_status_file_is_refused_with_a_reason() {
        let good = sample().render();
        let cases = [
            String::new(),
            "garbage without structure".to_owned(),
            good.replace("version 1", "version 2"),
            good.replace("sessions 2", "sessions many"),
            good.replace("stress on", "stress maybe"),
            good.replace("reload refused", "reload loaded"),
            good.replace("listener none [::1]:25", "listener none"),
            good.replace("pid 4321", "pid 99999999999"),
            good.lines()
                .filter(|l| !l.starts_with("hour_sent"))
                .collect::<Vec<_>>()
                .join("\n"),
        ];
        for text in cases {
            assert!(Published::parse(&text).is_err(), "{text:?}");
        }
    }
}
