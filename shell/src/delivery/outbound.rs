//! How mail leaves, for both roles: main.cf's `relayhost` (with `smtp_tls_wrappermode`), client certificate
//! (`smtp_tls_cert_file`, `smtp_tls_key_file`), trust anchors (`smtp_tls_CAfile`), retry
//! times, and the TLS level per next hop (global level with `smtp_tls_per_site`).

use crate::conf;
use crate::delivery::connection::ClientTls;
use crate::delivery::deliver::TlsLevelFor;
use crate::delivery::route::Candidate;
use crate::delivery::runner::RunnerConfig;
use certrelay_core::cert;
use certrelay_core::config::{client, Config, Diagnostic};
use certrelay_core::nexthop;
use certrelay_core::queue::RetrySettings;
use certrelay_core::table::Table;
use certrelay_core::tls_policy::{self, PerSiteQuery, TlsLevel, TlsPolicyError};
use std::sync::Arc;
use std::time::Duration;

/// main.cf's `relayhost` as delivery reads it: its entries (brackets, service names) with
/// `smtp_tls_wrappermode` applied (set or not: unset, port 465 entries alone are in wrapper
/// mode, `nexthop.rs`), and `smtp_tls_wrappermode` itself when set; every problem found,
/// with file:line, on failure.
pub fn relayhost(
    config: &Config,
) -> Result<(Vec<nexthop::NextHop>, Option<bool>), Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut hops = config.relayhost().unwrap_or_else(|d| {
        errors.push(d);
        Vec::new()
    });
    let wrappermode = wrappermode(config).unwrap_or_else(|d| {
        errors.push(d);
        None
    });
    if !errors.is_empty() {
        return Err(errors);
    }
    nexthop::apply_wrappermode(&mut hops, wrappermode);
    Ok((hops, wrappermode))
}

/// main.cf's `smtp_tls_wrappermode` when it is set: every next hop in wrapper mode (TLS
/// from the first byte) or none; unset, port 465 alone is (`nexthop.rs`).
pub fn wrappermode(config: &Config) -> Result<Option<bool>, Diagnostic> {
    match config.is_set("smtp_tls_wrappermode") {
        true => config.bool("smtp_tls_wrappermode").map(Some),
        false => Ok(None),
    }
}

/// The delivery settings of main.cf (`relayhost`, `smtp_tls_*`, retry times, per-site TLS
/// policy); every problem found, with file:line, on failure.
pub fn delivery(config: &Config, myhostname: &str) -> Result<Delivery, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut ok = |r: Result<Duration, Diagnostic>, default: Duration| {
        r.unwrap_or_else(|d| {
            errors.push(d);
            default
        })
    };
    let d = RetrySettings::default();
    let retry = RetrySettings {
        minimal_backoff: ok(config.time("minimal_backoff_time"), d.minimal_backoff),
        maximal_backoff: ok(config.time("maximal_backoff_time"), d.maximal_backoff),
        queue_run_delay: ok(config.time("queue_run_delay"), d.queue_run_delay),
        maximal_queue_lifetime: ok(
            config.time("maximal_queue_lifetime"),
            d.maximal_queue_lifetime,
        ),
        bounce_queue_lifetime: ok(
            config.time("bounce_queue_lifetime"),
            d.bounce_queue_lifetime,
        ),
    };
    let connect_timeout = ok(config.time("smtp_connect_timeout"), Duration::from_secs(30));
    let (settings, diags) = client::client_settings(config);
    errors.extend(diags.into_iter().filter(Diagnostic::is_error));
    let (relayhost, wrappermode) = relayhost(config).unwrap_or_else(|mut d| {
        errors.append(&mut d);
        (Vec::new(), None)
    });
    let (tables, diags) = conf::read_tables(config, "smtp_tls_per_site");
    errors.extend(diags.into_iter().filter(Diagnostic::is_error));
    let tls = client_tls(config).unwrap_or_else(|mut d| {
        errors.append(&mut d);
        None
    });
    if !errors.is_empty() {
        return Err(errors);
    }
    let policy = SitePolicy {
        global: settings.tls_level,
        tables: Arc::new(tables),
        maps_set: client::policy_maps_set(config),
    };
    let mut runner = RunnerConfig::new(myhostname);
    runner.client = settings;
    runner.retry = retry;
    runner.connect_timeout = connect_timeout;
    runner.tls_level = Some(policy.clone().level_for());
    let config_problem = relayhost
        .iter()
        .find_map(|hop| policy.decide(&hop.written, &hop.host).err());
    runner.relayhost = relayhost;
    runner.wrappermode = wrappermode == Some(true);
    runner.hold = config.list("defer_transports").contains(&"smtp");
    Ok(Delivery {
        runner,
        tls: tls.expect("set when no errors"),
        config_problem,
    })
}

/// How mail is delivered onward.
pub struct Delivery {
    /// The queue runner's settings.
    pub runner: RunnerConfig,
    /// Client certificate and trust anchors.
    pub tls: ClientTls,
    /// An invalid `smtp_tls_per_site` value for a relayhost: every delivery defers with
    /// `4.7.5 client TLS configuration problem` until it is fixed.
    pub config_problem: Option<TlsPolicyError>,
}

/// `smtp_tls_per_site` with the global level, as SPEC C combines them.
#[derive(Clone)]
struct SitePolicy {
    global: TlsLevel,
    tables: Arc<Vec<Table>>,
    maps_set: bool,
}

impl SitePolicy {
    fn decide(&self, next_hop: &str, host: &str) -> Result<TlsLevel, TlsPolicyError> {
        tls_policy::decide(&PerSiteQuery {
            global: self.global,
            next_hop,
            host,
            tables: &self.tables,
            policy_maps_set: self.maps_set,
        })
        .result
    }

    /// The runner's per-server level. The runner cannot defer from here, so an invalid
    /// value (found only for a host learned at delivery time: the relayhost entries are
    /// checked before each run) takes the strongest level, which never weakens security.
    fn level_for(self) -> TlsLevelFor {
        Arc::new(
            move |c: &Candidate| match self.decide(&c.nexthop, &c.server.name) {
                Ok(level) => level,
                Err(e) => {
                    log::error!(
                        "{}: {e}; using TLS level secure (should defer: {})",
                        c.server,
                        tls_policy::CONFIG_PROBLEM_REASON
                    );
                    TlsLevel::Secure
                }
            },
        )
    }
}

/// The client certificate (`smtp_tls_cert_file`, `smtp_tls_key_file`) and trust anchors
/// (`smtp_tls_CAfile`), each only when set.
fn client_tls(config: &Config) -> Result<Option<ClientTls>, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut cert = None;
    if !config.text("smtp_tls_cert_file").is_empty() {
        match (
            conf::read_chain(config, "smtp_tls_cert_file"),
            conf::read_key(config, "smtp_tls_key_file"),
        ) {
            (Ok(chain), Ok(key)) => cert = Some((chain, key)),
            (a, b) => errors.extend(a.err().into_iter().chain(b.err())),
        }
    }
    let mut anchors = Vec::new();
    if !config.text("smtp_tls_CAfile").is_empty() {
        match conf::read_chain(config, "smtp_tls_CAfile") {
            Ok(cas) => match cert::trust_anchors(&cas) {
                Ok(a) => anchors = a,
                Err(e) => errors.push(config.problem("smtp_tls_CAfile", e)),
            },
            Err(d) => errors.push(d),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    match crate::tls::client_config(cert) {
        Ok(tls) => Ok(Some(ClientTls {
            config: tls,
            anchors: Arc::new(anchors),
        })),
        Err(e) => Err(vec![config.problem(
            "smtp_tls_cert_file",
            format!("unusable client certificate: {e}"),
        )]),
    }
}
