//! The laptop's local SMTP: the listener inside `certrelay run` for mail programs
//! (Thunderbird, KMail) and `sendmail -bs` (one SMTP dialogue on standard input and output).
//! Both use the relay's connection driver ([`certrelay_shell::smtpd`]).
//!
//! ## Who may write where
//!
//! On the laptop the spool belongs to whichever process holds the run lock
//! ([`crate::runlock`]): opening it runs recovery, which deletes files that another process
//! may be writing. A `flush` or the detached attempt after `sendmail` may hold the lock at
//! any moment, so neither the listener nor `-bs` ever touches the spool. They store each
//! message in the maildrop ([`certrelay_shell::spool::maildrop`]), exactly as `sendmail` does: a message
//! there has files of its own that no run removes, and it counts once its envelope is
//! renamed into place and the directory synced. That commit is what the `250` stands for.
//!
//! ## How it gets delivered, once
//!
//! After each commit the listener wakes the `run` daemon's delivering thread
//! ([`crate::control::serve`], with [`DaemonWake::NewMail`]), which asks for a run
//! through the run lock. Whoever holds
//! the lock then (this daemon, or a concurrent `flush`) moves every committed maildrop
//! message into the spool and delivers it: the request is left before the lock is tried,
//! and a holder looks for requests again after unlocking, so none is lost, and the move out
//! of the maildrop happens under the lock, so no message is picked up twice. A message
//! committed during a run waits for the next wake-up, which is already queued. `-bs`
//! starts the same detached attempt as `sendmail` once the dialogue ends.
//!
//! ## Who may relay
//!
//! The listeners are master.cf's `inet` smtpd lines, or `127.0.0.1:2525` and `[::1]:2525`
//! without master.cf (also for root: port 25 is the system MTA's). A listener without a
//! host binds `inet_interfaces` when main.cf sets it, else loopback only. Unless main.cf
//! sets `smtpd_relay_restrictions`, the laptop's are `permit_mynetworks, reject`
//! ([`LAPTOP_RELAY_RESTRICTIONS`]): with the default `mynetworks` (`127.0.0.0/8, [::1]/128`)
//! only local programs may send, to any domain, and the laptop relays for no one else.
//!
//! ## Web pages
//!
//! Any web page in the user's browser can make it post to `http://127.0.0.1:2525/`, with
//! SMTP commands in the body. The request line (`POST / HTTP/1.1`) ends the session at
//! once, as every `smtpd_forbidden_commands` line and header-shaped line does on the relay
//! too; here, besides, any unknown command before EHLO/HELO ends it, since mail programs
//! greet first. Nothing after that first line is read.
//!
//! ## What is added to what they send
//!
//! Both store as local submissions ([`LocalSubmission`]), as `sendmail` does: envelope
//! addresses without a domain get `@myorigin`, and a message from loopback lacking
//! `Date:`, `Message-ID:` or `From:` gets them. The relay's listeners do neither.
//!
//! ## Stopping
//!
//! [`LocalSmtp::stop`] closes the listening sockets at once and lets the sessions in
//! progress finish, for at most [`STOP_GRACE`]; what they commit meanwhile stays in the
//! maildrop for the next run.

use crate::control::DaemonWake;
use crate::laptop::Laptop;
use certrelay_core::config::{self, server, Config, Diagnostic, Endpoint, Severity};
use certrelay_core::facts::PeerInfo;
use certrelay_core::policy::Restriction;
use certrelay_core::settings::{ServerSettings, ServerTlsLevel};
use certrelay_shell::clock::Clock;
use certrelay_shell::conf::Loaded;
use certrelay_shell::error::Error;
use certrelay_shell::smtpd::accept::{accept_loop, wait_for_sessions, STOP_GRACE};
use certrelay_shell::smtpd::limits::Sessions;
use certrelay_shell::smtpd::listen::{self, Bound, Interfaces};
use certrelay_shell::smtpd::listener::{ListenerBuilder, ListenerConf};
use certrelay_shell::smtpd::session::Connection;
use certrelay_shell::smtpd::store::{LocalSubmission, QueueWake, Store};
use certrelay_shell::smtpd::{ListenerSource, Server};
use certrelay_shell::spool::maildrop::Maildrop;
use smol::io::{AsyncRead, AsyncWrite};
use smol::Unblock;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

/// The port of the listeners used without master.cf.
pub const DEFAULT_PORT: u16 = 2525;

/// Sessions at once over all of the laptop's listeners.
const SESSION_LIMIT: usize = 20;

/// `smtpd_relay_restrictions` on the laptop when main.cf does not set it.
pub const LAPTOP_RELAY_RESTRICTIONS: [Restriction; 2] =
    [Restriction::PermitMynetworks, Restriction::Reject];

/// The session settings of a laptop listener: main.cf's (with the listener's overrides, in
/// `config`), relaying only for `mynetworks` unless `smtpd_relay_restrictions` is set.
pub fn laptop_settings(config: &Config) -> (ServerSettings, Vec<Diagnostic>) {
    let (mut settings, diags) = server::server_settings(config);
    if !config.is_set("smtpd_relay_restrictions") {
        settings.relay_restrictions = LAPTOP_RELAY_RESTRICTIONS.to_vec();
    }
    // Its clients are local mail programs, which greet first; anything else is most likely
    // a web page in the user's browser posting to 127.0.0.1:2525.
    settings.unknown_before_helo_ends = true;
    (settings, diags)
}

/// What is wrong or doubtful in the session settings of the listeners (main.cf's, and each
/// master.cf line's with its `-o` overrides), each problem once; for `check` and `run`.
pub fn listener_diagnostics(loaded: &Loaded) -> Vec<Diagnostic> {
    let mut diags = laptop_settings(&loaded.config).1;
    for l in &loaded.listeners {
        let (listener_config, mut more) = loaded.config.with_overrides(&l.override_list());
        more.extend(laptop_settings(&listener_config).1);
        for d in more {
            if !diags.contains(&d) {
                diags.push(d);
            }
        }
    }
    diags
}

/// The listeners `certrelay run` serves. Every error, with file:line, on failure;
/// warnings go to the log.
pub fn listeners(laptop: &Laptop) -> Result<Vec<Arc<ListenerConf>>, Error> {
    let loaded = &laptop.loaded;
    let mut diags = listener_diagnostics(loaded);
    if config::has_errors(&diags) {
        diags.retain(Diagnostic::is_error);
        return Err(Error::Config(diags));
    }
    for d in diags.iter().filter(|d| d.severity == Severity::Warning) {
        log::warn!("{d}");
    }
    let implicit = [
        Endpoint {
            host: Some("127.0.0.1".to_owned()),
            port: DEFAULT_PORT,
        },
        Endpoint {
            host: Some("::1".to_owned()),
            port: DEFAULT_PORT,
        },
    ];
    ListenerBuilder::default()
        .build_all(loaded, &implicit, |c| laptop_settings(c).0)
        .map_err(Error::Config)
}

/// The fixed listener set of `run` (the laptop does not reload).
struct Local(Vec<Arc<ListenerConf>>);

impl ListenerSource for Local {
    fn listener(&self, key: &str) -> Option<Arc<ListenerConf>> {
        self.0.iter().find(|l| l.key == key).cloned()
    }

    fn session_limit(&self) -> usize {
        SESSION_LIMIT
    }
}

/// The running listener of `run`.
#[derive(Debug)]
pub struct LocalSmtp {
    stop: smol::channel::Sender<()>,
    thread: JoinHandle<()>,
}

impl LocalSmtp {
    /// Stops accepting at once, then waits for the sessions in progress (at most
    /// [`STOP_GRACE`]).
    pub fn stop(self) {
        let _ = self.stop.try_send(());
        if self.thread.join().is_err() {
            log::error!("the SMTP listener thread panicked");
        }
    }
}

/// What both of the laptop's SMTP entry points complete messages with.
fn local_submission(laptop: &Laptop) -> LocalSubmission {
    LocalSubmission {
        myhostname: laptop.myhostname.clone(),
        myorigin: laptop.myorigin.clone(),
    }
}

/// Binds `listeners` now (so that `run` stops at once when it cannot listen) and serves
/// them on a thread of their own, storing into the maildrop of `laptop` and sending
/// [`DaemonWake::NewMail`] on `committed` after each message.
///
/// The implicit pair is forgiving: a machine without IPv6 serves on 127.0.0.1 alone.
pub fn start(
    laptop: &Laptop,
    listeners: Vec<Arc<ListenerConf>>,
    committed: mpsc::Sender<DaemonWake>,
) -> Result<LocalSmtp, Error> {
    let bound = smol::block_on(bind(laptop, &listeners))?;
    let maildrop = open_maildrop(laptop)?;
    let submission = local_submission(laptop);
    let (stop, stopped) = smol::channel::bounded(1);
    let thread = std::thread::Builder::new()
        .name("smtpd".to_owned())
        .spawn(move || {
            smol::block_on(serve(
                bound, listeners, maildrop, submission, committed, stopped,
            ))
        })
        .map_err(|e| Error::system("start the SMTP listener", e))?;
    Ok(LocalSmtp { stop, thread })
}

fn open_maildrop(laptop: &Laptop) -> Result<Maildrop, Error> {
    Maildrop::open(&laptop.queue_dir)
        .map_err(|e| Error::io("use the maildrop in", &laptop.queue_dir, e))
}

async fn bind(laptop: &Laptop, listeners: &[Arc<ListenerConf>]) -> Result<Vec<Bound>, Error> {
    let config = laptop.config();
    let interfaces = if config.is_set("inet_interfaces") {
        lower_list(config, "inet_interfaces")
    } else {
        vec!["loopback-only".to_owned()]
    };
    let protocols = lower_list(config, "inet_protocols");
    let wildcard = Interfaces {
        interfaces: &interfaces,
        protocols: &protocols,
    };
    let implicit = laptop.loaded.listeners.is_empty();
    let mut bound = Vec::new();
    let mut failures = Vec::new();
    for l in listeners {
        match listen::bind_all(std::slice::from_ref(l), &wildcard).await {
            Ok(b) => bound.extend(b),
            Err(e) if implicit => failures.push(e),
            Err(e) => return Err(e),
        }
    }
    if bound.is_empty() {
        return Err(Error::All(failures));
    }
    for f in failures {
        log::warn!("{f}");
    }
    Ok(bound)
}

fn lower_list(config: &Config, name: &str) -> Vec<String> {
    config
        .list(name)
        .into_iter()
        .map(|s| s.to_ascii_lowercase())
        .collect()
}

async fn serve(
    bound: Vec<Bound>,
    listeners: Vec<Arc<ListenerConf>>,
    maildrop: Maildrop,
    submission: LocalSubmission,
    committed: mpsc::Sender<DaemonWake>,
    stop: smol::channel::Receiver<()>,
) {
    let (wake, stored) = QueueWake::channel();
    let server = Arc::new(Server {
        source: Local(listeners),
        sessions: Sessions::default(),
        store: Store::maildrop(maildrop, wake).with_local_submission(submission),
        clock: Clock::new(),
        enroll: None,
    });
    let mut accepting = Vec::new();
    for b in bound {
        log::info!("listening on {} for local SMTP submission", b.local);
        accepting.push(smol::spawn(accept_loop(b, server.clone())));
    }
    let forward = async {
        while stored.recv().await.is_ok() {
            if committed.send(DaemonWake::NewMail).is_err() {
                // The delivering thread is gone: the process is ending.
                break;
            }
        }
    };
    smol::future::or(forward, async {
        let _ = stop.recv().await;
    })
    .await;
    // Dropping the accept loops closes the listening sockets: new clients are refused
    // by the kernel rather than left waiting for a banner that never comes.
    drop(accepting);
    log::info!(
        "local SMTP closed; waiting up to {}s for {} session(s) in progress",
        STOP_GRACE.as_secs(),
        server.sessions.active()
    );
    wait_for_sessions(&server.sessions, STOP_GRACE).await;
}

/// Standard input and output as one stream.
struct Stdio {
    input: Unblock<io::Stdin>,
    output: Unblock<io::Stdout>,
}

impl AsyncRead for Stdio {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.input).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stdio {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.output).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.output).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.output).poll_close(cx)
    }
}

/// `sendmail -bs`: one SMTP session on standard input and output, from a local user
/// (seen as `localhost[127.0.0.1]`, so inside the default `mynetworks`), storing into the
/// maildrop. No STARTTLS: the dialogue never leaves the machine. Returns how many messages
/// were queued; the caller starts their delivery.
pub fn serve_stdio(laptop: &Laptop) -> Result<usize, Error> {
    let loaded = &laptop.loaded;
    let (mut settings, diags) = laptop_settings(&loaded.config);
    if let Some(d) = diags.into_iter().find(Diagnostic::is_error) {
        return Err(Error::Config(vec![d]));
    }
    settings.tls_level = ServerTlsLevel::None;
    let endpoint = Endpoint {
        host: None,
        port: 0,
    };
    let listener = ListenerBuilder::default()
        .listener(
            &loaded.config,
            settings,
            "sendmail -bs".to_owned(),
            endpoint,
        )
        .map_err(|d| Error::Config(vec![d]))?;
    let maildrop = open_maildrop(laptop)?;
    let (wake, stored) = QueueWake::channel();
    let conn = Connection {
        listener: Arc::new(listener),
        store: Store::maildrop(maildrop, wake).with_local_submission(local_submission(laptop)),
        clock: Clock::new(),
        enroll: None,
    };
    let peer = PeerInfo {
        addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        name: "localhost".to_owned(),
    };
    let stdio = Stdio {
        input: Unblock::new(io::stdin()),
        output: Unblock::new(io::stdout()),
    };
    smol::block_on(conn.serve_stream(stdio, peer));
    let mut queued = 0;
    while stored.try_recv().is_ok() {
        queued += 1;
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A laptop configuration in a fresh directory named after `label`.
    fn laptop_with(label: &str, main_cf: &str, master_cf: Option<&str>) -> Laptop {
        let dir = std::env::temp_dir().join(format!(
            "certrelay-laptop-smtpd-{label}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let main = format!("queue_directory = {}/q\n{main_cf}", dir.display());
        std::fs::write(dir.join("main.cf"), main).unwrap();
        if let Some(m) = master_cf {
            std::fs::write(dir.join("master.cf"), m).unwrap();
        }
        Laptop::load(&dir).unwrap()
    }

    #[test]
    fn default_listeners_are_loopback_2525_and_relay_for_mynetworks_only() {
        let laptop = laptop_with("default", "", None);
        let ls = listeners(&laptop).unwrap();
        let keys: Vec<&str> = ls.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(keys, ["127.0.0.1:2525", "[::1]:2525"]);
        for l in &ls {
            assert_eq!(l.settings.relay_restrictions, LAPTOP_RELAY_RESTRICTIONS);
            assert!(l.tls.is_none());
            assert!(l.settings.unknown_before_helo_ends);
        }
    }

    #[test]
    fn master_cf_lines_and_own_restrictions_are_kept() {
        let laptop = laptop_with(
            "master",
            "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n",
            Some("127.0.0.1:2600 inet n - n - - smtpd\n"),
        );
        let ls = listeners(&laptop).unwrap();
        assert_eq!(ls.len(), 1);
        assert_eq!(ls[0].key, "127.0.0.1:2600");
        assert_eq!(
            ls[0].settings.relay_restrictions,
            [
                Restriction::PermitMynetworks,
                Restriction::RejectUnauthDestination
            ]
        );
    }

    #[test]
    fn an_open_relay_is_refused() {
        let laptop = laptop_with(
            "open",
            "smtpd_relay_restrictions = permit\nsmtpd_recipient_restrictions = permit\n",
            None,
        );
        assert!(listeners(&laptop).is_err());
    }
}
