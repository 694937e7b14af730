//! What `certrelay check` verifies: client settings, relayhost, the per-site table, the TLS
//! files and the settings of the local SMTP listeners; and the warning, shared with
//! `certrelay queue`, that the laptop's own certificate expires soon or has expired.
//!
//! Not here: loading the files (the shell's `conf`) or delivering.

use certrelay_core::config::{self, Config, Diagnostic};
use certrelay_shell::conf::{self, Loaded};
use certrelay_shell::pki::seen;

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
    if let Some(warning) = own_cert_expiry(config) {
        conf::push_new(&mut diags, vec![warning]);
    }
    diags
}

/// A warning when the laptop's certificate (`smtp_tls_cert_file`, its first certificate)
/// expires within 14 days or has expired: the relay refuses it then, and mail waits.
/// Nothing when it is not set or cannot be read (the file checks say so).
pub fn own_cert_expiry(config: &Config) -> Option<Diagnostic> {
    const NAME: &str = "smtp_tls_cert_file";
    if config.text(NAME).is_empty() {
        return None;
    }
    let chain = conf::read_chain(config, NAME).ok()?;
    let ends = certrelay_shell::status::not_after(chain.first()?)?;
    let now = i64::try_from(certrelay_shell::clock::unix_secs()).unwrap_or(i64::MAX);
    if !seen::expires_soon(ends, now) {
        return None;
    }
    Some(Diagnostic::warning(
        &config.location(NAME),
        format!(
            "{NAME} = {}: this laptop's certificate {}; ask the relay's administrator for a \
             new one",
            config.text(NAME),
            seen::expiry_note(ends, now)
        ),
    ))
}
