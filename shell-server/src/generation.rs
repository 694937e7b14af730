//! One generation of the relay's configuration: everything read from `-c DIR` at start or at
//! SIGHUP, fully checked before it serves.
//!
//! A generation is immutable. A reload builds a new one beside the old; only when it has no
//! error does it replace the old one, so a broken edit never stops the relay. Sessions keep
//! the `Arc`s of the generation they started under.

use certrelay_core::config::{self, server, Config, Diagnostic, Endpoint, Location};
use certrelay_core::settings::ServerSettings;
use certrelay_shell::conf::{self, Loaded};
use certrelay_shell::delivery::outbound::{self, Delivery};
use certrelay_shell::delivery::route::OwnEndpoint;
use certrelay_shell::smtpd::listener::ListenerBuilder;
pub use certrelay_shell::smtpd::listener::ListenerConf;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

/// Sessions allowed at once over all listeners (Postfix's `default_process_limit`).
pub const DEFAULT_SESSION_LIMIT: usize = 100;

/// The whole configuration in effect.
#[derive(Debug)]
pub struct Generation {
    /// The listeners, in master.cf order.
    pub listeners: Vec<Arc<ListenerConf>>,
    /// `queue_directory`.
    pub queue_directory: String,
    /// `inet_interfaces`, as written after expansion.
    pub inet_interfaces: Vec<String>,
    /// `inet_protocols`.
    pub inet_protocols: Vec<String>,
    /// Sessions at once over all listeners.
    pub session_limit: usize,
    /// `mail_owner`: the account the relay becomes when started as root.
    pub mail_owner: String,
    /// `dkim_signing_keys`, read (as root at start) with the rest.
    pub dkim: Arc<crate::dkim::Keys>,
    /// The enrollment parameters the service reads only at start, as these files give them
    /// ([`crate::enroll::read_at_start`]).
    pub enroll_params: String,
}

impl Generation {
    /// The listener serving the socket bound for `key`.
    pub fn listener(&self, key: &str) -> Option<&Arc<ListenerConf>> {
        self.listeners.iter().find(|l| l.key == key)
    }
}

/// Reads and checks `dir`. `Err` holds every diagnostic when one of them is an error; `Ok`
/// holds the generation and the warnings and notices to log.
pub fn load(dir: &Path) -> Result<(Generation, Vec<Diagnostic>), Vec<Diagnostic>> {
    let loaded = conf::load(dir).map_err(|msg| {
        vec![Diagnostic::error(
            &Location::new(&dir.join("main.cf").display().to_string(), 0),
            msg.to_string(),
        )]
    })?;
    let mut diags = crate::privilege::check(&loaded);
    if config::has_errors(&diags) {
        return Err(diags);
    }
    let mut builder = ListenerBuilder::default();
    builder.look_up_names = true;
    builder.enrolled_map = Some(crate::enroll::enrolled_map(&loaded.config));
    let listeners = match build_listeners(&loaded, &mut builder) {
        Ok(l) => l,
        Err(more) => {
            diags.extend(more);
            return Err(diags);
        }
    };
    let config = &loaded.config;
    // Its problems were reported (and errors refused) by the check above.
    let (dkim, _) = crate::dkim::load(config);
    let generation = Generation {
        dkim: Arc::new(dkim),
        enroll_params: crate::enroll::read_at_start(config),
        listeners,
        queue_directory: config.text("queue_directory").to_owned(),
        mail_owner: config.text("mail_owner").to_owned(),
        inet_interfaces: owned_list(config, "inet_interfaces"),
        inet_protocols: owned_list(config, "inet_protocols"),
        session_limit: config
            .number("default_process_limit")
            .map_or(DEFAULT_SESSION_LIMIT, |n| {
                usize::try_from(n).unwrap_or(usize::MAX)
            }),
    };
    Ok((generation, diags))
}

/// The relay's onward delivery (relayhost or MX, `smtp_tls_*`, retry times), read at start
/// and at each reload.
pub fn onward_delivery(dir: &Path) -> Result<Delivery, Vec<Diagnostic>> {
    let loaded = conf::load(dir).map_err(|msg| {
        vec![Diagnostic::error(
            &Location::new(&dir.join("main.cf").display().to_string(), 0),
            msg.to_string(),
        )]
    })?;
    let config = &loaded.config;
    let mut delivery = outbound::delivery(config, config.text("myhostname"))?;
    delivery.runner.own_endpoints = own_endpoints(&loaded);
    Ok(delivery)
}

/// Where this relay takes mail: its master.cf listeners (or port 25 on every address
/// without any). Delivering to one of them would bring the mail straight back.
fn own_endpoints(loaded: &Loaded) -> Vec<OwnEndpoint> {
    if loaded.listeners.is_empty() {
        return vec![(None, 25)];
    }
    let mut out = Vec::new();
    for listener in &loaded.listeners {
        let port = listener.endpoint.port;
        match listener.endpoint.host.as_deref() {
            None => out.push((None, port)),
            Some(host) => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                match host.parse::<IpAddr>() {
                    Ok(ip) => out.push((Some(ip), port)),
                    Err(_) => {
                        let addrs = (host, port).to_socket_addrs().into_iter().flatten();
                        out.extend(addrs.map(|a| (Some(a.ip()), port)));
                    }
                }
            }
        }
    }
    out
}

/// Everything a reload reads and checks, as this process can read it: `Err` holds every
/// diagnostic when one of them is an error.
pub fn check_reload(dir: &Path) -> Result<(), Vec<Diagnostic>> {
    load(dir)?;
    onward_delivery(dir).map(drop)
}

fn owned_list(config: &Config, name: &str) -> Vec<String> {
    config
        .list(name)
        .into_iter()
        .map(|s| s.to_ascii_lowercase())
        .collect()
}

/// The listeners of master.cf, or the `smtp` service on every `inet_interfaces` address
/// without one.
fn build_listeners(
    loaded: &Loaded,
    builder: &mut ListenerBuilder,
) -> Result<Vec<Arc<ListenerConf>>, Vec<Diagnostic>> {
    let implicit = Endpoint {
        host: None,
        port: 25,
    };
    // check_relay already refused errors in every listener's settings and tables.
    builder.build_all(loaded, &[implicit], relay_settings)
}

/// A listener's session settings: main.cf with its `-o` overrides (in `config`), the
/// `virtual_alias_maps` and `smtpd_sender_ccert_maps` tables it names (read now, so that a
/// reload reads them anew), and
/// local recipients refused.
pub fn relay_settings(config: &Config) -> ServerSettings {
    let mut settings = server::server_settings(config).0;
    // The relay has no mailboxes: what would stay here is refused at RCPT.
    settings.refuse_local_recipients = true;
    settings.virtual_alias_maps = conf::read_tables(config, "virtual_alias_maps").0;
    settings.sender_ccert_maps = conf::read_tables(config, "smtpd_sender_ccert_maps").0;
    settings.enroll = crate::enroll::enabled(config);
    settings
}
