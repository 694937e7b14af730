//! `certrelayd`: the relay.
//!
//! The SMTP server driver (listeners, sessions, storing into the spool) is shared with the
//! laptop in `certrelay_client::smtpd`; this binary adds configuration generations with
//! reload, signals, the pid file and the onward queue runner.

mod admin;
mod generation;
mod serve;

use argh::FromArgs;
use std::io::Write as _;
use std::path::PathBuf;

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
}

/// load main.cf, master.cf, the fingerprint map and the TLS files; print the settings in
/// effect and every problem with file:line; exit 1 on errors
#[derive(FromArgs)]
#[argh(subcommand, name = "check")]
struct Check {}

/// serve in the foreground (the default): listen on the master.cf smtpd services, or on port
/// 25 of inet_interfaces without master.cf; log to stderr (RUST_LOG sets the level, default
/// info); SIGHUP reloads the configuration, SIGTERM stops after the sessions in progress
/// (at most 10 s)
#[derive(FromArgs)]
#[argh(subcommand, name = "run")]
struct Run {}

fn main() {
    let args: Args = argh::from_env();
    let code = match args.command {
        Some(Command::Check(Check {})) => {
            certrelay_client::conf::run_check(&args.config_dir, certrelay_client::conf::check_relay)
        }
        Some(Command::Fingerprint(cmd)) => admin::fingerprint(cmd),
        Some(Command::Ca(cmd)) => admin::ca(&args.config_dir, cmd),
        Some(Command::Allow(cmd)) => admin::allow(&args.config_dir, cmd),
        Some(Command::Revoke(cmd)) => admin::revoke(&args.config_dir, cmd),
        Some(Command::Run(Run {})) | None => {
            init_logging();
            serve::run(&args.config_dir)
        }
    };
    std::process::exit(code);
}

/// Postfix-like lines on stderr: `warning: ...`, `error: ...`, plain text for info. The
/// service manager (procd, journald) adds the time and the program name.
fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            let prefix = match record.level() {
                log::Level::Error => "error: ",
                log::Level::Warn => "warning: ",
                log::Level::Info => "",
                log::Level::Debug => "debug: ",
                log::Level::Trace => "trace: ",
            };
            writeln!(buf, "{prefix}{}", record.args())
        })
        .init();
}
