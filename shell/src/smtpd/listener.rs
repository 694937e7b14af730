//! One SMTP listener ready to serve: its endpoint, session settings, TLS configuration and
//! the trust that judges client certificates, built from a configuration.
//!
//! A listener in wrapper mode (`smtpd_tls_wrappermode = yes`, Postfix's `smtps` line) speaks
//! TLS from the first byte; one without a usable certificate is refused here, so that it
//! never serves plaintext.
//!
//! Both roles build their listeners here; they differ only in which settings they start
//! from (the relay takes main.cf as it is, the laptop puts its own restrictions first).

use crate::conf::{self, Loaded};
use crate::tls::{server_config, ServerTls};
use certrelay_core::cert;
use certrelay_core::config::{Config, Diagnostic, Endpoint, Listener, Location};
use certrelay_core::fingerprint::FingerprintMap;
use certrelay_core::settings::{ServerSettings, ServerTlsLevel};
use rustls::pki_types::TrustAnchor;
use std::collections::HashMap;
use std::sync::Arc;

/// What judges a client certificate on one listener.
#[derive(Debug)]
pub struct Trust {
    /// `smtpd_tls_CAfile`.
    pub anchors: Vec<TrustAnchor<'static>>,
    /// `smtpd_tls_ccert_verifydepth`.
    pub verify_depth: u32,
    /// `relay_clientcerts`.
    pub fingerprints: Arc<FingerprintMap>,
}

/// One SMTP listener, ready to serve.
#[derive(Clone, Debug)]
pub struct ListenerConf {
    /// The endpoint as text (`127.0.0.1:2525`, `*:25`): how a reload finds the same socket.
    pub key: String,
    /// Where it listens.
    pub endpoint: Endpoint,
    /// The session settings (main.cf with the listener's `-o` overrides).
    pub settings: Arc<ServerSettings>,
    /// The TLS configuration; `None` when TLS is off or has no certificate (never in
    /// wrapper mode).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `smtpd_tls_wrappermode`: the TLS handshake comes first, the greeting inside it.
    pub wrappermode: bool,
    /// Certificate judgement.
    pub trust: Arc<Trust>,
    /// `smtpd_client_connection_count_limit` (0: none).
    pub client_limit: usize,
    /// Look the client's name up before the greeting (`smtpd_peername_lookup`, relay only).
    pub peername_lookup: bool,
    /// `smtpd_upstream_proxy_protocol = haproxy`: the time a balancer's PROXY header may
    /// take (`smtpd_upstream_proxy_timeout`); the client is the one it names.
    pub upstream_proxy: Option<std::time::Duration>,
}

/// Builds listeners, sharing what several of them read alike (one fingerprint map, one TLS
/// configuration and so one session cache), within one configuration generation.
#[derive(Default)]
pub struct ListenerBuilder {
    maps: HashMap<String, Arc<FingerprintMap>>,
    tls: HashMap<String, Arc<rustls::ServerConfig>>,
    /// Whether `smtpd_peername_lookup` applies: the relay's listeners, not the laptop's,
    /// whose clients are local programs that should not wait on an absent network's DNS.
    pub look_up_names: bool,
    /// The relay's table of enrolled laptops, read with `relay_clientcerts` when it exists.
    pub enrolled_map: Option<std::path::PathBuf>,
}

impl ListenerBuilder {
    /// The listeners of master.cf, or one `smtp` service on each of `implicit` without
    /// any. `settings` reads a listener's session settings from main.cf with its `-o`
    /// overrides applied (the caller has already refused configurations with errors).
    pub fn build_all(
        &mut self,
        loaded: &Loaded,
        implicit: &[Endpoint],
        settings: impl Fn(&Config) -> ServerSettings,
    ) -> Result<Vec<Arc<ListenerConf>>, Vec<Diagnostic>> {
        let master_cf = loaded.dir.join("master.cf").display().to_string();
        let implicit: Vec<Listener> = implicit
            .iter()
            .map(|endpoint| Listener {
                service: "smtp".to_owned(),
                endpoint: endpoint.clone(),
                overrides: Vec::new(),
                line: 0,
                file: master_cf.clone(),
            })
            .collect();
        let listeners = if loaded.listeners.is_empty() {
            &implicit
        } else {
            &loaded.listeners
        };
        let mut out: Vec<Arc<ListenerConf>> = Vec::new();
        let mut errors = Vec::new();
        for listener in listeners {
            let key = listener.endpoint.to_string();
            if out.iter().any(|l| l.key == key) {
                let at = Location::new(&listener.file, listener.line);
                errors.push(Diagnostic::error(
                    &at,
                    format!("a second listener on {key}: each address and port can serve once"),
                ));
                continue;
            }
            let (config, _) = loaded.config.with_overrides(&listener.override_list());
            let session = settings(&config);
            match self.listener(&config, session, key, listener.endpoint.clone()) {
                Ok(l) => out.push(Arc::new(l)),
                Err(d) => errors.push(d),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// The listener `key` on `endpoint` with `settings` (already read from `config`, which
    /// holds the listener's `-o` overrides); `config` also names the TLS files and maps.
    pub fn listener(
        &mut self,
        config: &Config,
        settings: ServerSettings,
        key: String,
        endpoint: Endpoint,
    ) -> Result<ListenerConf, Diagnostic> {
        let fingerprints = self.fingerprints(config)?;
        let anchors = read_anchors(config)?;
        let verify_depth = config.ccert_verifydepth()?;
        let wrappermode = config.bool("smtpd_tls_wrappermode")?;
        let tls = if settings.tls_level == ServerTlsLevel::None && !wrappermode {
            None
        } else {
            self.tls_config(config, &settings)?
        };
        if wrappermode && tls.is_none() {
            // Serving plaintext where clients expect TLS would be a silent downgrade.
            return Err(config.problem(
                "smtpd_tls_wrappermode",
                "TLS from the first byte needs a certificate and key: set smtpd_tls_cert_file \
                 (and smtpd_tls_key_file)",
            ));
        }
        let client_limit = config.number("smtpd_client_connection_count_limit")?;
        let peername_lookup = self.look_up_names && config.bool("smtpd_peername_lookup")?;
        let upstream_proxy = certrelay_core::config::server::upstream_proxy(config)?;
        Ok(ListenerConf {
            key,
            endpoint,
            settings: Arc::new(settings),
            tls,
            trust: Arc::new(Trust {
                anchors,
                verify_depth,
                fingerprints,
            }),
            client_limit: usize::try_from(client_limit).unwrap_or(usize::MAX),
            peername_lookup,
            wrappermode,
            upstream_proxy,
        })
    }

    fn fingerprints(&mut self, config: &Config) -> Result<Arc<FingerprintMap>, Diagnostic> {
        let key = format!(
            "{}\n{}",
            config.text("relay_clientcerts"),
            config.text("smtpd_tls_fingerprint_digest")
        );
        if let Some(map) = self.maps.get(&key) {
            return Ok(map.clone());
        }
        let (map, diags) = conf::fingerprint_map_with(config, self.enrolled_map.as_deref());
        if let Some(d) = diags.into_iter().find(Diagnostic::is_error) {
            return Err(d);
        }
        let map = Arc::new(map);
        self.maps.insert(key, map.clone());
        Ok(map)
    }

    fn tls_config(
        &mut self,
        config: &Config,
        settings: &ServerSettings,
    ) -> Result<Option<Arc<rustls::ServerConfig>>, Diagnostic> {
        if config.text("smtpd_tls_cert_file").trim().is_empty() {
            // STARTTLS answers 454; the settings check already warned.
            return Ok(None);
        }
        let ask = settings.ask_ccert || settings.req_ccert;
        let timeout = config.time("smtpd_tls_session_cache_timeout")?;
        let key = format!(
            "{}\n{}\n{}\n{ask}\n{}",
            config.text("smtpd_tls_cert_file"),
            config.text("smtpd_tls_key_file"),
            config.text("smtpd_tls_CAfile"),
            timeout.as_secs()
        );
        if let Some(tls) = self.tls.get(&key) {
            return Ok(Some(tls.clone()));
        }
        let chain = conf::read_chain(config, "smtpd_tls_cert_file")?;
        let private_key = conf::read_key(config, "smtpd_tls_key_file")?;
        let tls = server_config(ServerTls {
            chain,
            key: private_key,
            ca_subjects: ca_subjects(config)?,
            ask_ccert: ask,
            session_cache_timeout: timeout,
        })
        .map_err(|e| {
            config.problem(
                "smtpd_tls_cert_file",
                format!("cannot use this certificate and key: {e}"),
            )
        })?;
        self.tls.insert(key, tls.clone());
        Ok(Some(tls))
    }
}

fn read_ca_file(
    config: &Config,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, Diagnostic> {
    if config.text("smtpd_tls_CAfile").trim().is_empty() {
        return Ok(Vec::new());
    }
    conf::read_chain(config, "smtpd_tls_CAfile")
}

fn read_anchors(config: &Config) -> Result<Vec<TrustAnchor<'static>>, Diagnostic> {
    let cas = read_ca_file(config)?;
    cert::trust_anchors(&cas).map_err(|e| config.problem("smtpd_tls_CAfile", e))
}

/// The CA names sent to clients as a hint of which certificate to present.
fn ca_subjects(config: &Config) -> Result<Vec<rustls::DistinguishedName>, Diagnostic> {
    let mut store = rustls::RootCertStore::empty();
    for der in read_ca_file(config)? {
        store
            .add(der)
            .map_err(|e| config.problem("smtpd_tls_CAfile", format!("unusable CA: {e}")))?;
    }
    Ok(store.subjects())
}
