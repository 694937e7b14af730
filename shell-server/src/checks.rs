//! What `certrelayd check` verifies, and what a start or a reload refuses: the relay's
//! settings of main.cf and of each listener, the fingerprint map and the TLS files.
//!
//! Not here: loading the files (the shell's `conf`) or serving.

use certrelay_core::config::{self, Diagnostic};
use certrelay_shell::conf::{self, Loaded};

/// Everything `certrelayd check` verifies: settings of main.cf and of each listener, the
/// fingerprint map, and the TLS files.
pub fn check_relay(loaded: &Loaded) -> Vec<Diagnostic> {
    let config = &loaded.config;
    let mut diags = loaded.diagnostics.clone();
    let (_, main_diags) = config::server::server_settings(config);
    conf::push_new(&mut diags, main_diags);
    for listener in &loaded.listeners {
        let (_, more) = config::server::listener_settings(config, listener);
        conf::push_new(&mut diags, more);
    }
    conf::push_new(&mut diags, conf::fingerprint_map(config).1);
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
