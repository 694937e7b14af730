//! What `certrelay check` verifies: client settings, relayhost, the per-site table, the TLS
//! files and the settings of the local SMTP listeners.
//!
//! Not here: loading the files (the shell's `conf`) or delivering.

use certrelay_core::config::{self, Diagnostic};
use certrelay_shell::conf::{self, Loaded};

/// Everything `certrelay check` verifies: client settings, relayhost, per-site table, the
/// TLS files, and the settings of the local SMTP listeners.
pub fn check_laptop(loaded: &Loaded) -> Vec<Diagnostic> {
    let config = &loaded.config;
    let mut diags = loaded.diagnostics.clone();
    conf::push_new(
        &mut diags,
        crate::laptop_smtpd::listener_diagnostics(loaded),
    );
    let (_, more) = config::client::client_settings(config);
    conf::push_new(&mut diags, more);
    conf::push_new(&mut diags, config::client::check_tls_maps(config));
    if let Err(d) = config.relayhost() {
        conf::push_new(&mut diags, vec![d]);
    }
    conf::push_new(&mut diags, conf::read_tables(config, "smtp_tls_per_site").1);
    conf::push_new(
        &mut diags,
        conf::check_tls_files(
            config,
            ["smtp_tls_cert_file", "smtp_tls_key_file", "smtp_tls_CAfile"],
        ),
    );
    conf::push_new(
        &mut diags,
        certrelay_shell::logging::Settings::from_config(config).1,
    );
    diags
}
