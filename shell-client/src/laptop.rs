//! The laptop's settings: where its configuration and queue live, and how it delivers
//! (relayhost, client certificate, trust anchors, retry times, TLS level per next hop).

use certrelay_core::config::{Config, Diagnostic};
use certrelay_shell::conf::{self, Loaded};
pub use certrelay_shell::delivery::outbound::{self, Delivery};
use certrelay_shell::error::Error;
use std::path::{Path, PathBuf};

/// True when this process runs as root (system-wide defaults apply).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The user id of this process (for `Received:`), 0 when unknown.
pub fn user_id() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map_or(0, |m| m.uid())
}

fn xdg_dir(var: &str, fallback: &str) -> Option<PathBuf> {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(x) => Some(PathBuf::from(x)),
        None => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(fallback)),
    }
}

/// `-c` when not given: `/etc/certrelay` for root, else `$XDG_CONFIG_HOME/certrelay`
/// (`~/.config/certrelay`).
pub fn default_config_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/etc/certrelay");
    }
    xdg_dir("XDG_CONFIG_HOME", ".config")
        .map(|d| d.join("certrelay"))
        .unwrap_or_else(|| PathBuf::from("/etc/certrelay"))
}

/// `queue_directory` when main.cf does not set it: the system spool for root, else
/// `$XDG_DATA_HOME/certrelay/queue` (`~/.local/share/certrelay/queue`), so that a user's
/// laptop needs no root at all.
fn default_queue_dir(config: &Config) -> PathBuf {
    if config.is_set("queue_directory") || is_root() {
        return PathBuf::from(config.text("queue_directory"));
    }
    xdg_dir("XDG_DATA_HOME", ".local/share")
        .map(|d| d.join("certrelay/queue"))
        .unwrap_or_else(|| PathBuf::from(config.text("queue_directory")))
}

/// What every laptop command needs: the parsed main.cf and the names it defines.
#[derive(Debug)]
pub struct Laptop {
    /// main.cf (and master.cf) as read.
    pub loaded: Loaded,
    /// The spool's root.
    pub queue_dir: PathBuf,
    /// `myhostname`.
    pub myhostname: String,
    /// `myorigin`: the domain of local senders and of recipients without one.
    pub myorigin: String,
}

impl Laptop {
    /// Reads `DIR/main.cf`. On an error diagnostic, `Err` holds every diagnostic (the
    /// warnings too: they may explain the error).
    pub fn load(dir: &Path) -> Result<Laptop, Error> {
        let loaded = conf::load(dir)?;
        if loaded.has_errors() {
            return Err(Error::Config(loaded.diagnostics));
        }
        let config = &loaded.config;
        let queue_dir = default_queue_dir(config);
        if queue_dir.as_os_str().is_empty() {
            return Err(Error::Config(vec![
                config.problem("queue_directory", "must name a directory")
            ]));
        }
        let myhostname = config.text("myhostname").to_owned();
        let myorigin = match config.text("myorigin").trim() {
            "" => myhostname.clone(),
            o => o.to_owned(),
        };
        Ok(Laptop {
            queue_dir,
            myhostname,
            myorigin,
            loaded,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.loaded.config
    }

    /// `address`, with `@myorigin` appended when it has no domain (Postfix's
    /// `append_at_myorigin`); the null sender stays empty.
    pub fn qualify(&self, address: &str) -> String {
        certrelay_core::message::qualify(address, &self.myorigin)
    }

    /// The delivery settings; every problem found, with file:line, on failure.
    pub fn delivery(&self) -> Result<Delivery, Vec<Diagnostic>> {
        outbound::delivery(self.config(), &self.myhostname)
    }
}
