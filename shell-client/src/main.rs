//! `certrelay`: the laptop side.

use argh::FromArgs;
use std::path::PathBuf;

/// certrelay: queues mail and delivers it through the relay with this machine's certificate.
#[derive(FromArgs)]
struct Args {
    /// configuration directory holding main.cf (default $XDG_CONFIG_HOME/certrelay, or
    /// /etc/certrelay for root)
    #[argh(option, short = 'c')]
    config_dir: Option<PathBuf>,

    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Check(Check),
}

/// load main.cf, the per-site table and the TLS files; print the settings in effect and
/// every problem with file:line; exit 1 on errors
#[derive(FromArgs)]
#[argh(subcommand, name = "check")]
struct Check {}

fn default_config_dir() -> PathBuf {
    let root = std::env::var_os("USER").is_some_and(|u| u == "root")
        || std::fs::metadata("/proc/self").is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid() == 0
        });
    if root {
        return PathBuf::from("/etc/certrelay");
    }
    match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x).join("certrelay"),
        None => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".config/certrelay"))
            .unwrap_or_else(|| PathBuf::from("/etc/certrelay")),
    }
}

fn main() {
    let args: Args = argh::from_env();
    let dir = args.config_dir.unwrap_or_else(default_config_dir);
    let code = match args.command {
        Command::Check(Check {}) => {
            certrelay_client::conf::run_check(&dir, certrelay_client::conf::check_laptop)
        }
    };
    std::process::exit(code);
}
