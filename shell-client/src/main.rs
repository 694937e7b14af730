//! `certrelay`: the laptop side. Also answers as `sendmail` and `mailq` (by program name).

mod checks;
mod control;
mod enroll;
mod failure;
mod laptop;
mod laptop_smtpd;
mod netwatch;
mod probe;
mod runlock;
mod sendmail;
mod status;
mod tools;

use crate::control::{DaemonWake, Deleted, Deliverer, LOCK_WAIT};
use crate::failure::{Failure, NotDeleted};
use crate::laptop::{default_config_dir, Laptop};
use crate::netwatch::{NetWatch, SystemAddresses};
use crate::runlock::{RunKind, Served};
use crate::sendmail::{Mode, SendmailArgs, SendmailCmd};
use argh::{EarlyExit, FromArgs};
use async_signal::{Signal, Signals};
use certrelay_shell::error::Error;
use certrelay_shell::smtpd::accept::STOP_GRACE;
use smol::stream::StreamExt;
use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// certrelay: queues mail and delivers it through the relay with this machine's
/// certificate.
#[derive(FromArgs)]
#[argh(
    help_triggers("-h", "--help", "help"),
    note = "queue_directory defaults to $XDG_DATA_HOME/certrelay/queue \
            (~/.local/share/certrelay/queue) for a user when main.cf does not set it."
)]
struct Args {
    /// configuration directory holding main.cf (default /etc/certrelay for root, else
    /// $XDG_CONFIG_HOME/certrelay or ~/.config/certrelay)
    #[argh(option, short = 'c', arg_name = "DIR")]
    config: Option<PathBuf>,

    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Check(Check),
    Sendmail(SendmailCmd),
    Flush(Flush),
    Queue(Queue),
    Delete(Delete),
    Run(Run),
    Fingerprint(tools::FingerprintCmd),
    Keygen(tools::KeygenCmd),
    Explain(tools::ExplainCmd),
    Probe(probe::ProbeCmd),
    Status(status::StatusCmd),
    Enroll(enroll::EnrollCmd),
    Renew(enroll::RenewCmd),
}

/// load main.cf, the per-site table and the TLS files; print the settings in effect and
/// every problem with file:line; exit 1 on errors
#[derive(FromArgs)]
#[argh(subcommand, name = "check")]
struct Check {}

/// deliver the queue now (every message, or with --due only those due) and report what
/// happened
#[derive(FromArgs)]
#[argh(subcommand, name = "flush")]
struct Flush {
    /// only the messages whose next attempt is due
    #[argh(switch)]
    due: bool,
    /// print nothing, and leave the work to a queue run in progress at once
    #[argh(switch)]
    quiet: bool,
}

/// list the queue: id, size, arrival, sender, recipients, why each waits and the next
/// attempt (also `sendmail -bp`, `mailq`)
#[derive(FromArgs)]
#[argh(subcommand, name = "queue")]
struct Queue {}

/// remove messages from the queue
#[derive(FromArgs)]
#[argh(subcommand, name = "delete")]
struct Delete {
    /// queue ids, as `queue` lists them
    #[argh(positional, arg_name = "ID")]
    ids: Vec<String>,
}

/// daemon in the foreground: a queue run at start and every queue_run_delay, and an SMTP
/// listener for mail programs (Thunderbird, KMail) on master.cf's `inet` smtpd lines, or on
/// 127.0.0.1:2525 and [::1]:2525 without master.cf (for root too: never port 25). It relays
/// for mynetworks only (default loopback: smtpd_relay_restrictions = permit_mynetworks,
/// reject); each accepted message is delivered at once. A change of network address retries
/// the queue at once; SIGUSR1 flushes; SIGTERM or SIGINT stops accepting, lets sessions
/// finish (at most 10 s) and exits 0.
#[derive(FromArgs)]
#[argh(subcommand, name = "run")]
struct Run {}

/// The allocator: the system's, keeping a few freed large blocks for reuse once the queue
/// runner serves, given back before a queue run when nothing used them since the last one
/// (see `certrelay_shell::alloc`).
#[global_allocator]
static ALLOCATOR: certrelay_shell::alloc::KeepLarge = certrelay_shell::alloc::KeepLarge::new();

fn main() {
    certrelay_shell::alloc::one_arena();
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
    let result = match program.as_str() {
        "sendmail" => sendmail_main(None, rest),
        "mailq" => sendmail_main(None, vec!["-bp".into()]),
        _ => certrelay_main(rest),
    };
    // The one place a failure is put into words.
    let code = match result {
        Ok(()) => 0,
        Err(failure) => {
            if failure.has_message() {
                eprintln!("{failure}");
            }
            failure.exit_code()
        }
    };
    std::process::exit(code);
}

/// What the `certrelay` command line asks for.
enum Parsed {
    /// Print this help text.
    Help(String),
    /// Run the command; for `sendmail`, with these arguments (the tail of the command line,
    /// as given).
    Command(Args, Vec<OsString>),
}

fn parse(args: &[OsString]) -> Result<Parsed, Failure> {
    let text: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let words: Vec<&str> = text.iter().map(String::as_str).collect();
    let parsed = match Args::from_args(&["certrelay"], &words) {
        Ok(parsed) => parsed,
        Err(EarlyExit {
            output,
            status: Ok(()),
        }) => return Ok(Parsed::Help(output)),
        Err(EarlyExit {
            output,
            status: Err(()),
        }) => return Err(Failure::Usage(output.trim_end().to_owned())),
    };
    // sendmail's arguments are the tail of the command line, passed on as given (a full
    // name need not be UTF-8); every other argument is a word or a path, taken whole.
    let tail = match &parsed.command {
        Command::Sendmail(cmd) => cmd.count,
        _ => 0,
    };
    let (ours, sendmail_args) = args.split_at(args.len() - tail);
    if let Some(bad) = ours.iter().find(|a| a.to_str().is_none()) {
        return Err(Failure::Usage(format!(
            "{}: not UTF-8 text",
            bad.to_string_lossy()
        )));
    }
    Ok(Parsed::Command(parsed, sendmail_args.to_vec()))
}

fn certrelay_main(args: Vec<OsString>) -> Result<(), Failure> {
    let (parsed, sendmail_args) = match parse(&args)? {
        Parsed::Help(text) => {
            // Help into a closed pipe (`| head`) is no failure.
            let _ = writeln!(std::io::stdout(), "{text}");
            return Ok(());
        }
        Parsed::Command(parsed, sendmail_args) => (parsed, sendmail_args),
    };
    let dir = parsed.config.unwrap_or_else(default_config_dir);
    if let Command::Queue(_) | Command::Status(_) | Command::Explain(_) | Command::Check(_) =
        parsed.command
    {
        // Listings into a closed pipe (`| head`) end quietly; the rest may talk to networks.
        certrelay_shell::sigpipe::end_quietly_on_closed_output();
    }
    match parsed.command {
        Command::Check(Check {}) => {
            match certrelay_shell::conf::run_check(&dir, checks::check_laptop) {
                Ok((0, _)) => Ok(()),
                Ok(_) => Err(Failure::ChecksFailed),
                Err(e) => Err(Failure::Check(e)),
            }
        }
        Command::Sendmail(_) => sendmail_main(Some(dir), sendmail_args),
        Command::Flush(Flush { due, quiet }) => flush_main(&dir, due, quiet),
        Command::Queue(Queue {}) => queue_main(&dir),
        Command::Delete(Delete { ids }) if ids.is_empty() => {
            Err(Failure::Usage("delete needs queue ids".into()))
        }
        Command::Delete(Delete { ids }) => delete_main(&dir, &ids),
        Command::Run(Run {}) => {
            // A long-lived process from here on: its message buffers are worth keeping.
            ALLOCATOR.keep_from_now();
            run_main(&dir)
        }
        Command::Fingerprint(cmd) => tools::fingerprint_main(cmd),
        Command::Keygen(cmd) => tools::keygen_main(cmd),
        Command::Explain(cmd) => tools::explain_main(&dir, cmd),
        // Prints its own report; the exit code says whether `certrelay run` serves.
        Command::Status(cmd) => {
            let laptop = load(&dir)?;
            std::process::exit(status::main(&laptop, cmd.json))
        }
        Command::Enroll(cmd) => enroll::enroll_main(&dir, cmd),
        Command::Renew(enroll::RenewCmd {}) => enroll::renew_main(&load(&dir)?),
        Command::Probe(cmd) => {
            let result = probe::probe(&dir, &cmd);
            Failure::of_probe(cmd.target, result)
        }
    }
}

/// Plain lines on standard error (`warning: ...`) for a command whose own lines belong to
/// `service`; RUST_LOG sets the level, default info (debug with `verbose`).
fn init_logging(service: &'static str, verbose: bool) {
    let default = if verbose { "debug" } else { "info" };
    certrelay_shell::logging::init(service, default);
}

/// The queue runners' log goes where main.cf says (`maillog_file`, else syslog when
/// standard error is not kept, else standard error: `certrelay_shell::logging`). A
/// parameter it cannot use is said and its default used.
fn configure_logging(laptop: &Laptop) -> Result<(), Failure> {
    use certrelay_shell::logging::{self, LogError};
    let (settings, problems) = logging::Settings::from_config(laptop.config());
    let configured = logging::configure(&settings);
    for p in problems {
        log::warn!("{p}; using its default");
    }
    configured.map(drop).map_err(|e| match e {
        LogError::Open { path, source } => {
            Failure::Config(Error::io("open maillog_file to append to", path, source))
        }
    })
}

fn load(dir: &Path) -> Result<Laptop, Failure> {
    Laptop::load(dir).map_err(Failure::Config)
}

fn deliverer(laptop: &Laptop) -> Result<Deliverer, Failure> {
    let delivery = laptop
        .delivery()
        .map_err(|diags| Failure::Config(Error::Config(diags)))?;
    Deliverer::new(laptop, delivery)
        .map_err(|e| Failure::QueueDir(Error::io("use the queue directory", &laptop.queue_dir, e)))
}

fn sendmail_main(dir: Option<PathBuf>, args: Vec<OsString>) -> Result<(), Failure> {
    let args: SendmailArgs = sendmail::parse_args(args).map_err(Failure::SendmailUsage)?;
    let dir = args
        .config_dir
        .clone()
        .or(dir)
        .unwrap_or_else(default_config_dir);
    match args.mode {
        Mode::ListQueue => queue_main(&dir),
        Mode::Flush => flush_main(&dir, false, false),
        Mode::Smtp => smtp_stdio_main(&dir, &args),
        Mode::Submit => submit_main(&dir, &args),
    }
}

fn submit_main(dir: &Path, args: &SendmailArgs) -> Result<(), Failure> {
    // Mail programs run sendmail: its few lines stay on their standard error.
    init_logging("sendmail", args.verbose);
    let laptop = load(dir)?;
    let id =
        sendmail::submit(&laptop, args, &mut std::io::stdin().lock()).map_err(Failure::Submit)?;
    if args.verbose {
        eprintln!("sendmail: queued as {id}");
    }
    // The message is safe; delivery happens in the background, online or not.
    if let Err(e) = control::spawn_detached(dir, &laptop.queue_dir) {
        eprintln!("sendmail: queued as {id}, but cannot start delivery now: {e}");
    }
    Ok(())
}

fn smtp_stdio_main(dir: &Path, args: &SendmailArgs) -> Result<(), Failure> {
    // Standard output is the SMTP dialogue; the log (stderr) says only what went wrong.
    certrelay_shell::logging::init("sendmail", if args.verbose { "info" } else { "warn" });
    let laptop = load(dir)?;
    let queued = crate::laptop_smtpd::serve_stdio(&laptop).map_err(Failure::SmtpStdio)?;
    if queued > 0 {
        if let Err(e) = control::spawn_detached(dir, &laptop.queue_dir) {
            eprintln!("sendmail: mail queued, but cannot start delivery now: {e}");
        }
    }
    Ok(())
}

fn flush_main(dir: &Path, due: bool, quiet: bool) -> Result<(), Failure> {
    init_logging("qmgr", false);
    let laptop = load(dir)?;
    configure_logging(&laptop)?;
    let mut deliverer = deliverer(&laptop)?;
    let (kind, wait) = match (due, quiet) {
        (true, true) => (RunKind::Due, Duration::ZERO),
        (true, false) => (RunKind::Due, LOCK_WAIT),
        (false, _) => (RunKind::Flush, LOCK_WAIT),
    };
    let (served, stats) = deliverer.request(kind, wait).map_err(Failure::QueueRun)?;
    if !quiet {
        match served {
            Served::Here => println!("{}", control::describe(&stats)),
            Served::ByHolder => {
                println!("another queue run is in progress; it will serve this request")
            }
        }
    }
    Ok(())
}

fn queue_main(dir: &Path) -> Result<(), Failure> {
    let laptop = load(dir)?;
    if let Some(warning) = checks::own_cert_expiry(&laptop.loaded.config) {
        eprintln!("certrelay: {warning}");
    }
    let text = certrelay_shell::spool::listing::listing(&laptop.queue_dir)
        .map_err(|e| Failure::Listing(Error::io("read the queue", &laptop.queue_dir, e)))?;
    print!("{text}");
    Ok(())
}

fn delete_main(dir: &Path, ids: &[String]) -> Result<(), Failure> {
    let laptop = load(dir)?;
    let mut failed = Vec::new();
    for id in ids {
        match control::delete(&laptop.queue_dir, id, LOCK_WAIT) {
            Ok(Deleted::Removed) => println!("{id}: removed"),
            Ok(Deleted::NotFound) => failed.push((id.clone(), NotDeleted::NotFound)),
            Ok(Deleted::Busy) => failed.push((id.clone(), NotDeleted::Busy)),
            Err(e) => failed.push((id.clone(), NotDeleted::Io(e))),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::NotDeleted(failed))
    }
}

fn run_main(dir: &Path) -> Result<(), Failure> {
    init_logging("master", false);
    // Watched from the start: until then SIGTERM would end the process as the default
    // action does, which loses nothing but skips the drain.
    let mut signals = Signals::new([Signal::Usr1, Signal::Term, Signal::Int])
        .map_err(|e| Failure::System(Error::system("watch signals", e)))?;
    let laptop = load(dir)?;
    configure_logging(&laptop)?;
    let mut deliverer = deliverer(&laptop)?;
    // Held for the life of the daemon: `certrelay status` sees it in /proc/locks.
    let _daemon_lock = status::hold_daemon_lock(&laptop.queue_dir);
    let delay = laptop
        .config()
        .time("queue_run_delay")
        .unwrap_or(Duration::from_secs(300));
    let (wake, wakeups) = mpsc::channel();
    let smtp = crate::laptop_smtpd::listeners(&laptop)
        .and_then(|ls| crate::laptop_smtpd::start(&laptop, ls, wake.clone()))
        .map_err(Failure::Config)?;
    watch_network(netwatch::probes(deliverer.relayhost()), wake.clone());
    log::info!(
        "queue runner started for {} (every {}s)",
        laptop.queue_dir.display(),
        delay.as_secs()
    );
    let (ended_tx, ended) = mpsc::channel();
    let config_dir = dir.to_owned();
    std::thread::Builder::new()
        .name("deliver".to_owned())
        .spawn(move || {
            // Before each run: a certificate a third of whose lifetime is left is renewed,
            // and the runs after use the new one.
            let mut renew = |deliverer: &mut control::Deliverer| {
                // Message buffers kept since the last run go back when nothing used them.
                ALLOCATOR.release_if_unused();
                let now = i64::try_from(certrelay_shell::clock::unix_secs()).unwrap_or(0);
                let Ok(laptop) = Laptop::load(&config_dir) else {
                    return;
                };
                if enroll::renew_if_due(laptop.config(), now) {
                    match laptop.delivery() {
                        Ok(delivery) => deliverer.use_delivery(delivery),
                        Err(diags) => log::error!(
                            "after renewal: {}",
                            diags.first().map(|d| d.to_string()).unwrap_or_default()
                        ),
                    }
                }
            };
            control::serve(&mut deliverer, delay, &wakeups, &mut renew);
            let _ = ended_tx.send(());
        })
        .map_err(|e| Failure::System(Error::system("start the queue runner", e)))?;
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
    if ended.recv_timeout(STOP_GRACE).is_err() {
        log::warn!("stopping during a queue run; its messages stay queued for the next start");
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn words(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn sendmail_gets_the_rest_of_the_line_as_given() {
        let mut args = words(&["-c", "/etc/x", "sendmail", "-t", "-oi", "-fme@x", "-F"]);
        // A full name in Latin-1: not UTF-8, and still passed on untouched.
        args.push(OsString::from_vec(b"J\xf6rg".to_vec()));
        let Ok(Parsed::Command(parsed, tail)) = parse(&args) else {
            panic!("sendmail parses");
        };
        assert_eq!(parsed.config, Some(PathBuf::from("/etc/x")));
        assert!(matches!(parsed.command, Command::Sendmail(_)));
        assert_eq!(tail, args[3..]);
        let sendmail = sendmail::parse_args(tail).unwrap();
        assert_eq!(sendmail.sender.as_deref(), Some("me@x"));
        assert!(sendmail.extract && sendmail.ignore_dots);
    }

    #[test]
    fn subcommand_options_are_parsed() {
        let Ok(Parsed::Command(parsed, tail)) = parse(&words(&["flush", "--due", "--quiet"]))
        else {
            panic!("flush parses");
        };
        assert!(matches!(
            parsed.command,
            Command::Flush(Flush {
                due: true,
                quiet: true
            })
        ));
        assert!(tail.is_empty() && parsed.config.is_none());
        let Ok(Parsed::Command(parsed, _)) = parse(&words(&["delete", "A1", "B2"])) else {
            panic!("delete parses");
        };
        let Command::Delete(Delete { ids }) = parsed.command else {
            panic!("delete");
        };
        assert_eq!(ids, ["A1", "B2"]);
    }

    #[test]
    fn help_lists_every_command() {
        for asked in [&["--help"][..], &["-h"], &["help"], &["--help", "sendmail"]] {
            let Ok(Parsed::Help(text)) = parse(&words(asked)) else {
                panic!("{asked:?} is a request for help");
            };
            if asked.len() == 1 {
                for command in [
                    "check",
                    "sendmail",
                    "flush",
                    "queue",
                    "delete",
                    "run",
                    "fingerprint",
                    "keygen",
                    "explain",
                    "probe",
                    "status",
                ] {
                    assert!(
                        text.contains(&format!("\n  {command} ")),
                        "{command}: {text}"
                    );
                }
                assert!(text.contains("-c, --config"), "{text}");
            } else {
                assert!(text.contains("usage: sendmail"), "{text}");
            }
        }
    }

    #[test]
    fn command_line_errors_are_usage_errors() {
        for bad in [
            &["frobnicate"][..],
            &[],
            &["flush", "--later"],
            &["queue", "extra"],
            &["probe"],
            &["-c"],
        ] {
            match parse(&words(bad)) {
                Err(f @ Failure::Usage(_)) => {
                    assert_eq!(f.exit_code(), sendmail::exit::USAGE);
                    assert!(f.to_string().ends_with("\nTry certrelay --help."), "{f}");
                }
                _ => panic!("{bad:?} must be a usage error"),
            }
        }
        let mut args = words(&["-c"]);
        args.push(OsString::from_vec(b"/etc/\xff".to_vec()));
        args.push("queue".into());
        assert!(matches!(parse(&args), Err(Failure::Usage(_))));
    }
}
