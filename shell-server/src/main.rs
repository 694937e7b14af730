//! `certrelayd`: the relay.
//!
//! The SMTP server driver (listeners, sessions, storing into the spool) is shared with the
//! laptop in `certrelay_shell::smtpd`; this binary adds configuration generations with
//! reload, signals, the pid file and the onward queue runner.

mod admin;
mod allocator;
mod certs;
mod checks;
mod demo;
mod dkim;
mod enroll;
mod enroll_cmd;
mod failure;
mod generation;
mod privilege;
mod running;
mod serve;
mod status;
mod watch;

use crate::failure::Failure;
use argh::FromArgs;
use std::path::{Path, PathBuf};

/// certrelayd: relays mail for clients whose TLS certificate fingerprint is listed.
/// Without a subcommand it serves (as `run`).
#[derive(FromArgs)]
struct Args {
    /// configuration directory holding main.cf and master.cf (default /etc/certrelay)
    #[argh(option, short = 'c', default = "PathBuf::from(\"/etc/certrelay\")")]
    config_dir: PathBuf,

    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Check(Check),
    Run(Run),
    Fingerprint(admin::FingerprintCmd),
    Ca(admin::CaCmd),
    Allow(admin::AllowCmd),
    Revoke(admin::RevokeCmd),
    Enroll(enroll_cmd::EnrollCmd),
    Demo(Demo),
    Queue(admin::QueueCmd),
    Flush(admin::FlushCmd),
    Delete(admin::DeleteCmd),
    Explain(admin::ExplainCmd),
    Dkim(DkimCmd),
    Status(status::StatusCmd),
    Certs(certs::CertsCmd),
}

/// DKIM signing keys (subcommand: keygen)
#[derive(FromArgs)]
#[argh(subcommand, name = "dkim")]
struct DkimCmd {
    #[argh(subcommand)]
    command: DkimCommand,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum DkimCommand {
    Keygen(KeygenCmd),
}

/// make a signing key for DOMAIN under DIR/dkim (mode 0600; RSA-2048 unless --ed25519) and
/// print the DNS TXT record to publish and the line to add to the dkim_signing_keys table
#[derive(FromArgs)]
#[argh(subcommand, name = "keygen")]
struct KeygenCmd {
    /// the From: domain the key signs for (d=)
    #[argh(positional)]
    domain: String,
    /// the selector (s=): the key's DNS record is SELECTOR._domainkey.DOMAIN
    #[argh(option)]
    selector: String,
    /// an Ed25519 key (RFC 8463) instead of RSA-2048; receivers that do not check Ed25519
    /// signatures treat the mail as unsigned, so RSA is the safe choice (one key signs
    /// per domain)
    #[argh(switch)]
    ed25519: bool,
    /// replace an existing key file of that domain and selector
    #[argh(switch)]
    force: bool,
}

/// run the whole system on loopback in a temporary directory: make a CA, the relay's and
/// two laptops' certificates, start a relay, and send from a listed laptop (delivered) and
/// an unlisted one (refused); cleans up and exits 0 when both outcomes are as expected
#[derive(FromArgs)]
#[argh(subcommand, name = "demo")]
struct Demo {}

/// load main.cf, master.cf, the fingerprint map and the TLS files; print the settings in
/// effect and every problem with file:line; exit 1 on errors
#[derive(FromArgs)]
#[argh(subcommand, name = "check")]
struct Check {}

/// serve in the foreground (the default): listen on the master.cf smtpd services, or on port
/// 25 of inet_interfaces without master.cf; log to maillog_file, else syslog when stderr is
/// not kept, else stderr (RUST_LOG sets the level, default info); SIGHUP reloads the
/// configuration and reopens maillog_file, SIGTERM stops after the sessions in progress (at
/// most 10 s)
#[derive(FromArgs)]
#[argh(subcommand, name = "run")]
struct Run {}

fn main() {
    certrelay_shell::alloc::one_arena();
    // Help and listings into a closed pipe (`| head`) end quietly; serving ignores it again.
    certrelay_shell::sigpipe::end_quietly_on_closed_output();
    let args: Args = argh::from_env();
    let dir = args.config_dir.as_path();
    let outcome = match args.command {
        // Serving logs its own failures as the relay runs.
        Some(Command::Run(Run {})) | None => {
            certrelay_shell::sigpipe::ignore();
            init_logging(dir);
            std::process::exit(serve::run(dir));
        }
        Some(Command::Check(Check {})) => check(dir),
        // Prints its own report and problems; the exit code says whether the relay runs.
        Some(Command::Status(cmd)) => std::process::exit(status::main(dir, cmd)),
        Some(Command::Demo(Demo {})) => {
            certrelay_shell::sigpipe::ignore();
            init_demo_logging();
            demo::run().map_err(Failure::Demo)
        }
        Some(Command::Fingerprint(cmd)) => admin::fingerprint(cmd),
        Some(Command::Queue(cmd)) => admin::queue(dir, cmd),
        Some(Command::Explain(cmd)) => admin::explain(dir, cmd),
        Some(Command::Flush(cmd)) => admin::flush(dir, cmd),
        Some(Command::Delete(cmd)) => admin::delete(dir, cmd),
        Some(Command::Ca(cmd)) => admin::ca(dir, cmd),
        Some(Command::Allow(cmd)) => admin::allow(dir, cmd),
        Some(Command::Revoke(cmd)) => admin::revoke(dir, cmd),
        Some(Command::Certs(cmd)) => certs::certs(dir, cmd),
        Some(Command::Enroll(cmd)) => enroll_cmd::enroll(dir, cmd),
        Some(Command::Dkim(DkimCmd {
            command: DkimCommand::Keygen(k),
        })) => {
            dkim::keygen(dir, &k.domain, &k.selector, k.ed25519, k.force).map_err(Failure::Keygen)
        }
    };
    // The one place a failure is put into words.
    let code = match outcome {
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

/// `certrelayd check`: the report goes to standard output and standard error as it is
/// made; the failure only says whether it found errors.
fn check(dir: &Path) -> Result<(), Failure> {
    match certrelay_shell::conf::run_check(dir, privilege::check) {
        Ok((0, _)) => Ok(()),
        Ok(_) => Err(Failure::ChecksFailed),
        Err(e) => Err(Failure::Check(e)),
    }
}

/// Postfix's lines (`certrelay/smtpd[PID]: warning: ...`) to `maillog_file`, syslog or
/// standard error (see `certrelay_shell::logging`); RUST_LOG sets the level, default info.
/// `maillog_file` is opened here, as root when started so, before the privilege drop: the
/// relay keeps the open file. A value it cannot use is refused with the configuration
/// (`checks`); a file it cannot open stops it here.
fn init_logging(dir: &Path) {
    use certrelay_shell::logging;
    logging::init("master", "info");
    let settings = certrelay_shell::conf::load(dir)
        .map(|loaded| logging::Settings::from_config(&loaded.config).0)
        .unwrap_or_default();
    if let Err(e) = logging::configure(&settings) {
        log::error!("{e}; not starting");
        std::process::exit(1);
    }
}

/// The demo's own lines are printed as they come; the laptop side's log lines follow a
/// prefix on standard output.
fn init_demo_logging() {
    certrelay_shell::logging::init_stdout("  laptop  | ", "master", "info");
}
