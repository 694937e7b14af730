//! The laptop's helper commands: `fingerprint`, `keygen` and `explain`.

use crate::failure::Failure;
use argh::FromArgs;
use certrelay_core::config::client;
use certrelay_core::fingerprint::DigestKind;
use certrelay_core::nexthop::NextHop;
use certrelay_core::tls_policy::{self, PerSiteQuery};
use certrelay_shell::conf;
use certrelay_shell::error::Error;
use certrelay_shell::pki;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// print certificate fingerprints as openssl does (`sha256 Fingerprint=...`), or
/// relay_clientcerts lines
#[derive(FromArgs)]
#[argh(subcommand, name = "fingerprint")]
pub struct FingerprintCmd {
    /// digest: md5, sha1, sha256 (default) or sha512
    #[argh(option, default = "String::from(\"sha256\")")]
    digest: String,
    /// fingerprint of the public key rather than of the whole certificate
    #[argh(switch)]
    pubkey: bool,
    /// print a relay_clientcerts line with this label
    #[argh(option, arg_name = "LABEL")]
    map_line: Option<String>,
    /// certificate files, PEM (every certificate of a chain) or DER
    #[argh(positional, arg_name = "FILE")]
    files: Vec<PathBuf>,
}

/// make this laptop's key (mode 0600), a request for the relay's CA (certrelayd ca sign) and
/// a self-signed certificate; print its fingerprints
#[derive(FromArgs)]
#[argh(subcommand, name = "keygen")]
pub struct KeygenCmd {
    /// where to write NAME.key, NAME.csr and NAME.pem (default: current directory)
    #[argh(option, arg_name = "DIR", default = "PathBuf::from(\".\")")]
    out: PathBuf,
    /// the laptop's name: the certificate's CN
    #[argh(positional, arg_name = "NAME")]
    name: String,
}

/// which TLS level applies to each destination (default: the relayhost) and why: the global
/// level, each smtp_tls_per_site lookup, the result
#[derive(FromArgs)]
#[argh(subcommand, name = "explain")]
pub struct ExplainCmd {
    /// next hops: domain, [host]:port, host:port
    #[argh(positional, arg_name = "DESTINATION")]
    destinations: Vec<String>,
}

/// `certrelay fingerprint`: prints fingerprints as openssl does.
pub fn fingerprint_main(cmd: FingerprintCmd) -> Result<(), Failure> {
    let Some(digest) = DigestKind::from_config_name(&cmd.digest) else {
        return Err(Failure::Usage(format!(
            "--digest {}: use md5, sha1, sha256 or sha512",
            cmd.digest
        )));
    };
    if cmd.files.is_empty() {
        return Err(Failure::Usage("fingerprint needs certificate files".into()));
    }
    finish(pki::fingerprint(
        &cmd.files,
        digest,
        cmd.pubkey,
        cmd.map_line.as_deref(),
    ))
}

/// `certrelay keygen [--out DIR] NAME`: a key that never leaves this machine, a request
/// for the relay's CA, and a self-signed certificate for pin-only set-ups.
pub fn keygen_main(cmd: KeygenCmd) -> Result<(), Failure> {
    finish(pki::keygen(&cmd.out, &cmd.name).map(|k| k.report()))
}

/// `certrelay explain [DESTINATION]`: which TLS level applies to a next hop (the relayhost
/// when none is given) and why, step by step.
pub fn explain_main(dir: &Path, cmd: ExplainCmd) -> Result<(), Failure> {
    let loaded = conf::load(dir).map_err(Failure::Config)?;
    let config = &loaded.config;
    let (settings, diags) = client::client_settings(config);
    let (tables, table_diags) = conf::read_tables(config, "smtp_tls_per_site");
    let problems: Vec<_> = diags
        .into_iter()
        .chain(table_diags)
        .filter(|d| d.is_error())
        .collect();
    if !problems.is_empty() {
        return Err(Failure::Config(Error::Config(problems)));
    }
    let destinations: Vec<String> = match cmd.destinations {
        list if !list.is_empty() => list,
        _ => match config.relayhost() {
            Ok(hops) if !hops.is_empty() => hops.into_iter().map(|h| h.written).collect(),
            Ok(_) => {
                return Err(Failure::Usage(
                    "no relayhost is set: name a destination".into(),
                ))
            }
            Err(d) => return Err(Failure::Config(Error::Config(vec![d]))),
        },
    };
    let mut out = String::new();
    for dest in destinations {
        let hop = match NextHop::parse(&dest) {
            Ok(h) => h,
            Err(e) => return Err(Failure::Usage(format!("{dest}: {e}"))),
        };
        let decision = tls_policy::decide(&PerSiteQuery {
            global: settings.tls_level,
            next_hop: &hop.written,
            host: &hop.host,
            tables: &tables,
            policy_maps_set: client::policy_maps_set(config),
        });
        let _ = writeln!(out, "{}:", hop.written);
        for step in &decision.steps {
            let _ = writeln!(out, "  {step}");
        }
        match decision.result {
            Ok(level) => {
                let _ = writeln!(out, "  => TLS level {}", level.as_str());
            }
            Err(e) => {
                let _ = writeln!(out, "  => deferred: {}", e.deferral_reason());
            }
        }
    }
    print!("{out}");
    Ok(())
}

fn finish(result: Result<String, pki::PkiError>) -> Result<(), Failure> {
    print!("{}", result.map_err(Failure::Pki)?);
    Ok(())
}
