//! What `certrelayd check` verifies, and what a start or a reload refuses: the relay's
//! settings of main.cf and of each listener, the fingerprint map, the alias tables, the
//! senders each certificate owns, the DKIM keys and the TLS files.
//!
//! Not here: loading the files (the shell's `conf`) or serving.

use certrelay_core::address::{Mailbox, Path};
use certrelay_core::ccert_senders;
use certrelay_core::config::{self, Config, Diagnostic};
use certrelay_core::policy;
use certrelay_core::settings::ServerSettings;
use certrelay_shell::conf::{self, Loaded};
use certrelay_shell::logging;

/// Everything `certrelayd check` verifies: settings of main.cf and of each listener, the
/// fingerprint map, and the TLS files.
pub fn check_relay(loaded: &Loaded) -> Vec<Diagnostic> {
    let config = &loaded.config;
    let mut diags = loaded.diagnostics.clone();
    let (main_settings, main_diags) = config::server::server_settings(config);
    conf::push_new(&mut diags, main_diags);
    conf::push_new(&mut diags, local_mail(config, &main_settings));
    conf::push_new(&mut diags, sender_maps(config));
    for listener in &loaded.listeners {
        let (settings, more) = config::server::listener_settings(config, listener);
        conf::push_new(&mut diags, more);
        let (listener_config, _) = config.with_overrides(&listener.override_list());
        conf::push_new(&mut diags, local_mail(&listener_config, &settings));
        conf::push_new(&mut diags, sender_maps(&listener_config));
    }
    conf::push_new(&mut diags, proxy_binds(loaded));
    let enrolled = crate::enroll::enrolled_map(config);
    conf::push_new(
        &mut diags,
        conf::fingerprint_map_with(config, Some(&enrolled)).1,
    );
    conf::push_new(&mut diags, crate::enroll::check(config));
    conf::push_new(&mut diags, crate::dkim::load(config).1);
    conf::push_new(&mut diags, logging::Settings::from_config(config).1);
    conf::push_new(&mut diags, crate::watch::check(config));
    conf::push_new(
        &mut diags,
        conf::check_tls_files(
            config,
            [
                "smtpd_tls_cert_file",
                "smtpd_tls_key_file",
                "smtpd_tls_CAfile",
            ],
        ),
    );
    diags
}

/// Reads `smtpd_sender_ccert_maps` as a listener of `config` would: a table that cannot be
/// read, and an owned sender that is not `local@domain` or `@domain`, are errors at their
/// file and line.
fn sender_maps(config: &Config) -> Vec<Diagnostic> {
    let (tables, mut diags) = conf::read_tables(config, "smtpd_sender_ccert_maps");
    for table in &tables {
        diags.extend(ccert_senders::check_table(table));
    }
    diags
}

/// Reads `virtual_alias_maps` as `settings`' listener would, and warns when `postmaster`
/// has nowhere to go: certrelay has no mailboxes, so mail for it is then refused.
fn local_mail(config: &Config, settings: &ServerSettings) -> Vec<Diagnostic> {
    let (tables, mut diags) = conf::read_tables(config, "virtual_alias_maps");
    if config::has_errors(&diags) {
        return diags;
    }
    let settings = ServerSettings {
        virtual_alias_maps: tables,
        refuse_local_recipients: true,
        ..settings.clone()
    };
    let postmaster = Path {
        route: Vec::new(),
        mailbox: Some(Mailbox {
            local: "postmaster".to_owned(),
            domain: None,
        }),
    };
    if policy::resolve_recipient(&settings, &postmaster).is_err() {
        diags.push(Diagnostic::warning(
            &config.location("virtual_alias_maps"),
            "mail for postmaster (unqualified, or at a mydestination domain) is refused: \
             certrelay has no local mailboxes; send it to a real mailbox with a \
             virtual_alias_maps table holding a line such as \"postmaster admin@example.org\"",
        ));
    }
    diags
}

/// Warns about each listener that takes a PROXY header (`smtpd_upstream_proxy_protocol`)
/// on a wildcard address: whoever reaches it directly can claim any client address, and so
/// be in `mynetworks`. Such a listener belongs on an address only the balancer reaches.
fn proxy_binds(loaded: &Loaded) -> Vec<Diagnostic> {
    let config = &loaded.config;
    let any_address =
        |h: &str| h.eq_ignore_ascii_case("all") || matches!(h, "0.0.0.0" | "::" | "[::]" | "*");
    let everywhere = config
        .list("inet_interfaces")
        .iter()
        .any(|i| any_address(i));
    let wildcard = |host: Option<&str>| host.map_or(everywhere, any_address);
    let warning = |at: &config::Location, bind: String| {
        Diagnostic::warning(
            at,
            format!(
                "smtpd_upstream_proxy_protocol on {bind}, a wildcard address: a client that \
                 connects there directly can claim any address in its PROXY header (and so \
                 be in mynetworks); bind this listener to an address only the balancer \
                 reaches"
            ),
        )
    };
    let proxied = |c: &Config| matches!(config::server::upstream_proxy(c), Ok(Some(_)));
    let mut out = Vec::new();
    if loaded.listeners.is_empty() {
        if proxied(config) && everywhere {
            let at = config.location("smtpd_upstream_proxy_protocol");
            out.push(warning(&at, "inet_interfaces = all".to_owned()));
        }
        return out;
    }
    for listener in &loaded.listeners {
        let (listener_config, _) = config.with_overrides(&listener.override_list());
        if proxied(&listener_config) && wildcard(listener.endpoint.host.as_deref()) {
            let at = config::Location::new(&listener.file, listener.line);
            out.push(warning(&at, listener.endpoint.to_string()));
        }
    }
    out
}
