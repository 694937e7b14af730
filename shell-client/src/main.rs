//! `certrelay`: the laptop side. Also answers as `sendmail` and `mailq` (by program name).

mod checks;
mod control;
mod laptop;
mod laptop_smtpd;
mod netwatch;
mod probe;
mod runlock;
mod sendmail;
mod tools;

use crate::control::{DaemonWake, Deleted, Deliverer, LOCK_WAIT};
use crate::laptop::{default_config_dir, Laptop};
use crate::netwatch::{NetWatch, SystemAddresses};
use crate::runlock::{RunKind, Served};
use crate::sendmail::{exit, Mode, SendmailArgs};
use async_signal::{Signal, Signals};
use certrelay_shell::smtpd::accept::STOP_GRACE;
use smol::stream::StreamExt;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

const HELP: &str = "\
certrelay: queues mail and delivers it through the relay with this machine's certificate.

usage: certrelay [-c DIR] COMMAND [ARGS]

options:
  -c, --config DIR  configuration directory holding main.cf (default /etc/certrelay for
                    root, else $XDG_CONFIG_HOME/certrelay or ~/.config/certrelay)
  -h, --help        this text

commands:
  check             load main.cf, the per-site table and the TLS files; print the settings
                    in effect and every problem with file:line; exit 1 on errors
  sendmail ARGS     sendmail-compatible submission: reads a message on standard input,
                    queues it and starts delivery in the background (-t -i -oi -f -F -C -v
                    -bp -q -bs; historic options accepted and ignored). Also run as
                    `sendmail`. -bs: one SMTP dialogue on standard input and output.
  flush [--due] [--quiet]
                    deliver the queue now (every message, or with --due only those due)
                    and report what happened
  queue             list the queue: id, size, arrival, sender, recipients, why each waits
                    and the next attempt (also `sendmail -bp`, `mailq`)
  delete ID...      remove messages from the queue
  run               daemon in the foreground: a queue run at start and every
                    queue_run_delay, and an SMTP listener for mail programs (Thunderbird,
                    KMail) on master.cf's `inet` smtpd lines, or on 127.0.0.1:2525 and
                    [::1]:2525 without master.cf (for root too: never port 25). It relays
                    for mynetworks only (default loopback: smtpd_relay_restrictions =
                    permit_mynetworks, reject); each accepted message is delivered at once.
                    A change of network address retries the queue at once; SIGUSR1
                    flushes; SIGTERM or SIGINT stops accepting, lets sessions finish
                    (at most 10 s) and exits 0.

  fingerprint [--digest md5|sha1|sha256|sha512] [--pubkey] [--map-line LABEL] FILE...
                    print certificate fingerprints as openssl does, or relay_clientcerts lines
  keygen [--out DIR] NAME
                    make this laptop's key (mode 0600), a request for the relay's CA
                    (certrelayd ca sign) and a self-signed certificate; print its fingerprints
  explain [DESTINATION...]
                    which TLS level applies to each destination (default: the relayhost)
                    and why: the global level, each smtp_tls_per_site lookup, the result

  probe HOST:PORT    connect, show the banner, EHLO, STARTTLS, whether the server asks for a
                    client certificate, its chain with fingerprints, and whether this
                    laptop's policy would deliver there (exit 0 yes, 1 no)

queue_directory defaults to $XDG_DATA_HOME/certrelay/queue (~/.local/share/certrelay/queue)
for a user when main.cf does not set it.";

fn main() {
    let mut args = std::env::args_os();
    let program = args
        .next()
        .map(|p| {
            Path::new(&p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let rest: Vec<OsString> = args.collect();
    let code = match program.as_str() {
        "sendmail" => sendmail_main(None, rest),
        "mailq" => sendmail_main(None, vec!["-bp".into()]),
        _ => certrelay_main(rest),
    };
    std::process::exit(code);
}

fn usage_error(msg: impl std::fmt::Display) -> i32 {
    eprintln!("certrelay: {msg}\nTry certrelay --help.");
    exit::USAGE
}

fn certrelay_main(args: Vec<OsString>) -> i32 {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut dir: Option<PathBuf> = None;
    let command = loop {
        match p.next() {
            Ok(Some(Short('c') | Long("config"))) => match p.value() {
                Ok(v) => dir = Some(v.into()),
                Err(e) => return usage_error(e),
            },
            Ok(Some(Short('h') | Long("help"))) => {
                println!("{HELP}");
                return 0;
            }
            Ok(Some(Value(v))) => break v.to_string_lossy().into_owned(),
            Ok(Some(other)) => return usage_error(other.unexpected()),
            Ok(None) => return usage_error("a command is needed"),
            Err(e) => return usage_error(e),
        }
    };
    let rest: Vec<OsString> = p.raw_args().map(|r| r.collect()).unwrap_or_default();
    let dir = dir.unwrap_or_else(default_config_dir);
    match command.as_str() {
        "check" if rest.is_empty() => {
            match certrelay_shell::conf::run_check(&dir, checks::check_laptop) {
                Ok((errors, _)) => i32::from(errors > 0),
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }
        "sendmail" => sendmail_main(Some(dir), rest),
        "flush" => flush_main(&dir, rest),
        "queue" if rest.is_empty() => queue_main(&dir),
        "delete" if !rest.is_empty() => delete_main(&dir, rest),
        "run" if rest.is_empty() => run_main(&dir),
        "fingerprint" => crate::tools::fingerprint_main(rest),
        "keygen" => crate::tools::keygen_main(rest),
        "explain" => crate::tools::explain_main(&dir, rest),
        "probe" if rest.len() == 1 => crate::probe::probe_main(&dir, &rest[0].to_string_lossy()),
        "probe" => usage_error("probe needs one HOST:PORT"),
        "help" => {
            println!("{HELP}");
            0
        }
        "check" | "queue" | "run" => usage_error(format!("{command} takes no arguments")),
        "delete" => usage_error("delete needs queue ids"),
        other => usage_error(format!("unknown command {other}")),
    }
}

fn init_logging(verbose: bool) {
    let default = if verbose { "debug" } else { "info" };
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .try_init();
}

fn load(dir: &Path) -> Result<Laptop, i32> {
    Laptop::load(dir).map_err(|e| {
        for l in e.to_string().lines() {
            eprintln!("certrelay: {l}");
        }
        exit::CONFIG
    })
}

fn deliverer(laptop: &Laptop) -> Result<Deliverer, i32> {
    let delivery = laptop.delivery().map_err(|diags| {
        for d in diags {
            eprintln!("certrelay: {d}");
        }
        exit::CONFIG
    })?;
    Deliverer::new(laptop, delivery).map_err(|e| {
        eprintln!(
            "certrelay: cannot use the queue directory {}: {e}",
            laptop.queue_dir.display()
        );
        exit::CANTCREAT
    })
}

fn sendmail_main(dir: Option<PathBuf>, args: Vec<OsString>) -> i32 {
    let args: SendmailArgs = match sendmail::parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sendmail: {e}\n{}", sendmail::USAGE);
            return exit::USAGE;
        }
    };
    let dir = args
        .config_dir
        .clone()
        .or(dir)
        .unwrap_or_else(default_config_dir);
    match args.mode {
        Mode::ListQueue => queue_main(&dir),
        Mode::Flush => flush_main(&dir, Vec::new()),
        Mode::Smtp => smtp_stdio_main(&dir, &args),
        Mode::Submit => submit_main(&dir, &args),
    }
}

fn submit_main(dir: &Path, args: &SendmailArgs) -> i32 {
    init_logging(args.verbose);
    let laptop = match load(dir) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let id = match sendmail::submit(&laptop, args, &mut std::io::stdin().lock()) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return e.exit_code();
        }
    };
    if args.verbose {
        eprintln!("sendmail: queued as {id}");
    }
    // The message is safe; delivery happens in the background, online or not.
    if let Err(e) = control::spawn_detached(dir, &laptop.queue_dir) {
        eprintln!("sendmail: queued as {id}, but cannot start delivery now: {e}");
    }
    0
}

fn smtp_stdio_main(dir: &Path, args: &SendmailArgs) -> i32 {
    // Standard output is the SMTP dialogue; the log (stderr) says only what went wrong.
    let _ = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(if args.verbose { "info" } else { "warn" }),
    )
    .try_init();
    let laptop = match load(dir) {
        Ok(l) => l,
        Err(code) => return code,
    };
    match crate::laptop_smtpd::serve_stdio(&laptop) {
        Ok(0) => 0,
        Ok(_) => {
            if let Err(e) = control::spawn_detached(dir, &laptop.queue_dir) {
                eprintln!("sendmail: mail queued, but cannot start delivery now: {e}");
            }
            0
        }
        Err(e) => {
            eprintln!("sendmail: {e}");
            exit::CONFIG
        }
    }
}

fn flush_main(dir: &Path, args: Vec<OsString>) -> i32 {
    let mut due = false;
    let mut quiet = false;
    for a in &args {
        match a.to_str() {
            Some("--due") => due = true,
            Some("--quiet") => quiet = true,
            _ => return usage_error(format!("flush: unknown option {}", a.to_string_lossy())),
        }
    }
    init_logging(false);
    let laptop = match load(dir) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mut deliverer = match deliverer(&laptop) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let (kind, wait) = match (due, quiet) {
        (true, true) => (RunKind::Due, Duration::ZERO),
        (true, false) => (RunKind::Due, LOCK_WAIT),
        (false, _) => (RunKind::Flush, LOCK_WAIT),
    };
    match deliverer.request(kind, wait) {
        Ok((Served::Here, stats)) => {
            if !quiet {
                println!("{}", control::describe(&stats));
            }
            0
        }
        Ok((Served::ByHolder, _)) => {
            if !quiet {
                println!("another queue run is in progress; it will serve this request");
            }
            0
        }
        Err(e) => {
            eprintln!("certrelay: queue run failed: {e}");
            exit::TEMPFAIL
        }
    }
}

fn queue_main(dir: &Path) -> i32 {
    let laptop = match load(dir) {
        Ok(l) => l,
        Err(code) => return code,
    };
    match certrelay_shell::spool::listing::listing(&laptop.queue_dir) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!(
                "certrelay: cannot read the queue {}: {e}",
                laptop.queue_dir.display()
            );
            exit::TEMPFAIL
        }
    }
}

fn delete_main(dir: &Path, ids: Vec<OsString>) -> i32 {
    let laptop = match load(dir) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mut code = 0;
    for id in ids {
        let id = id.to_string_lossy();
        match control::delete(&laptop.queue_dir, &id, LOCK_WAIT) {
            Ok(Deleted::Removed) => println!("{id}: removed"),
            Ok(Deleted::NotFound) => {
                eprintln!("certrelay: {id}: no such message in the queue");
                code = 1;
            }
            Ok(Deleted::Busy) => {
                eprintln!("certrelay: {id}: a queue run is in progress; try again");
                code = exit::TEMPFAIL;
            }
            Err(e) => {
                eprintln!("certrelay: {id}: cannot remove: {e}");
                code = exit::TEMPFAIL;
            }
        }
    }
    code
}

fn run_main(dir: &Path) -> i32 {
    init_logging(false);
    // Watched from the start: until then SIGTERM would end the process as the default
    // action does, which loses nothing but skips the drain.
    let mut signals = match Signals::new([Signal::Usr1, Signal::Term, Signal::Int]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("certrelay: cannot watch signals: {e}");
            return exit::SOFTWARE;
        }
    };
    let laptop = match load(dir) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mut deliverer = match deliverer(&laptop) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let delay = laptop
        .config()
        .time("queue_run_delay")
        .unwrap_or(Duration::from_secs(300));
    let (wake, wakeups) = mpsc::channel();
    let listening = crate::laptop_smtpd::listeners(&laptop)
        .and_then(|ls| crate::laptop_smtpd::start(&laptop, ls, wake.clone()));
    let smtp = match listening {
        Ok(smtp) => smtp,
        Err(e) => {
            for l in e.to_string().lines() {
                eprintln!("certrelay: {l}");
            }
            return exit::CONFIG;
        }
    };
    watch_network(netwatch::probes(deliverer.relayhost()), wake.clone());
    log::info!(
        "queue runner started for {} (every {}s)",
        laptop.queue_dir.display(),
        delay.as_secs()
    );
    let (ended_tx, ended) = mpsc::channel();
    let delivering = std::thread::Builder::new()
        .name("deliver".to_owned())
        .spawn(move || {
            let result = control::serve(&mut deliverer, delay, &wakeups);
            let _ = ended_tx.send(result);
        });
    if let Err(e) = delivering {
        eprintln!("certrelay: cannot start the queue runner: {e}");
        return exit::SOFTWARE;
    }
    let stop_signal = smol::block_on(async {
        loop {
            match signals.next().await {
                Some(Ok(Signal::Usr1)) => {
                    log::info!("flush requested: trying every queued message now");
                    let _ = wake.send(DaemonWake::Flush);
                }
                Some(Ok(sig)) => break Some(sig as i32),
                Some(Err(e)) => log::warn!("signal watch: {e}"),
                None => break None,
            }
        }
    });
    log::info!(
        "terminating on signal {}",
        stop_signal.map_or("(none)".to_owned(), |s| s.to_string())
    );
    smtp.stop();
    let _ = wake.send(DaemonWake::Stop);
    // A run in progress finishes first, within the grace; one that takes longer (a slow
    // relay) ends with the process: every spool change is a rename, so its messages stay
    // queued, and the kernel releases the run lock.
    match ended.recv_timeout(STOP_GRACE) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("certrelay: {e}");
            exit::TEMPFAIL
        }
        Err(_) => {
            log::warn!("stopping during a queue run; its messages stay queued for the next start");
            0
        }
    }
}

/// Looks at the network every [`netwatch::CHECK_EVERY`] on a thread of its own and asks
/// for a flush when it changed: mail deferred while offline goes as soon as the laptop
/// is online again.
fn watch_network(probes: Vec<std::net::IpAddr>, wake: mpsc::Sender<DaemonWake>) {
    let spawned = std::thread::Builder::new()
        .name("netwatch".to_owned())
        .spawn(move || {
            let mut watch = NetWatch::new(SystemAddresses, probes);
            loop {
                std::thread::sleep(netwatch::CHECK_EVERY);
                if let Some(change) = watch.poll() {
                    log::info!("network changed ({change}): trying every queued message now");
                    if wake.send(DaemonWake::Flush).is_err() {
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot watch the network (no retry on a change of address): {e}");
    }
}
