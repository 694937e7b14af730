//! `certrelayd`: the relay.

use argh::FromArgs;
use std::path::PathBuf;

/// certrelayd: relays mail for clients whose TLS certificate fingerprint is listed.
#[derive(FromArgs)]
struct Args {
    /// configuration directory holding main.cf and master.cf (default /etc/certrelay)
    #[argh(option, short = 'c', default = "PathBuf::from(\"/etc/certrelay\")")]
    config_dir: PathBuf,

    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Check(Check),
}

/// load main.cf, master.cf, the fingerprint map and the TLS files; print the settings in
/// effect and every problem with file:line; exit 1 on errors
#[derive(FromArgs)]
#[argh(subcommand, name = "check")]
struct Check {}

fn main() {
    let args: Args = argh::from_env();
    let code = match args.command {
        Command::Check(Check {}) => {
            certrelay_client::conf::run_check(&args.config_dir, certrelay_client::conf::check_relay)
        }
    };
    std::process::exit(code);
}
