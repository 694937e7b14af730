//! The laptop's helper commands: `fingerprint`, `keygen` and `explain`.

use certrelay_core::config::client;
use certrelay_core::fingerprint::DigestKind;
use certrelay_core::nexthop::NextHop;
use certrelay_core::tls_policy::{self, PerSiteQuery};
use certrelay_shell::conf;
use certrelay_shell::pki;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// `certrelay fingerprint [--digest D] [--pubkey] [--map-line LABEL] FILE...`: prints
/// fingerprints as openssl does. Returns the exit code.
pub fn fingerprint_main(args: Vec<OsString>) -> i32 {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut digest, mut pubkey, mut label, mut files) = (
        DigestKind::Sha256,
        false,
        None::<String>,
        Vec::<PathBuf>::new(),
    );
    loop {
        match p.next() {
            Ok(Some(Long("digest"))) => {
                let v = p
                    .value()
                    .map(|v| v.to_string_lossy().into_owned())
                    .unwrap_or_default();
                match DigestKind::from_config_name(&v) {
                    Some(d) => digest = d,
                    None => return usage(format!("--digest {v}: use md5, sha1, sha256 or sha512")),
                }
            }
            Ok(Some(Long("pubkey"))) => pubkey = true,
            Ok(Some(Long("map-line"))) => match p.value() {
                Ok(v) => label = Some(v.to_string_lossy().into_owned()),
                Err(e) => return usage(e),
            },
            Ok(Some(Value(v))) => files.push(v.into()),
            Ok(Some(other)) => return usage(other.unexpected()),
            Ok(None) => break,
            Err(e) => return usage(e),
        }
    }
    if files.is_empty() {
        return usage("fingerprint needs certificate files");
    }
    finish(pki::fingerprint(&files, digest, pubkey, label.as_deref()))
}

/// `certrelay keygen [--out DIR] NAME`: a key that never leaves this machine, a request
/// for the relay's CA, and a self-signed certificate for pin-only set-ups.
pub fn keygen_main(args: Vec<OsString>) -> i32 {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut out, mut name) = (PathBuf::from("."), None::<String>);
    loop {
        match p.next() {
            Ok(Some(Long("out"))) => match p.value() {
                Ok(v) => out = v.into(),
                Err(e) => return usage(e),
            },
            Ok(Some(Value(v))) if name.is_none() => name = Some(v.to_string_lossy().into_owned()),
            Ok(Some(other)) => return usage(other.unexpected()),
            Ok(None) => break,
            Err(e) => return usage(e),
        }
    }
    let Some(name) = name else {
        return usage("keygen needs a NAME");
    };
    finish(pki::keygen(&out, &name).map(|k| k.report()))
}

/// `certrelay explain [DESTINATION]`: which TLS level applies to a next hop (the relayhost
/// when none is given) and why, step by step.
pub fn explain_main(dir: &Path, args: Vec<OsString>) -> i32 {
    let loaded = match conf::load(dir) {
        Ok(l) => l,
        Err(msg) => {
            eprintln!("certrelay: {msg}");
            return 78;
        }
    };
    let config = &loaded.config;
    let (settings, diags) = client::client_settings(config);
    let (tables, table_diags) = conf::read_tables(config, "smtp_tls_per_site");
    let problems: Vec<_> = diags
        .iter()
        .chain(&table_diags)
        .filter(|d| d.is_error())
        .collect();
    if !problems.is_empty() {
        for d in problems {
            eprintln!("{d}");
        }
        return 78;
    }
    let destinations: Vec<String> = match args.as_slice() {
        [] => match config.relayhost() {
            Ok(hops) if !hops.is_empty() => hops.into_iter().map(|h| h.written).collect(),
            Ok(_) => return usage("no relayhost is set: name a destination"),
            Err(d) => {
                eprintln!("{d}");
                return 78;
            }
        },
        list => list
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
    };
    let mut out = String::new();
    for dest in destinations {
        let hop = match NextHop::parse(&dest) {
            Ok(h) => h,
            Err(e) => return usage(format!("{dest}: {e}")),
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
    0
}

fn usage(msg: impl std::fmt::Display) -> i32 {
    eprintln!("certrelay: {msg}\nTry certrelay --help.");
    64
}

fn finish(result: Result<String, pki::PkiError>) -> i32 {
    match result {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("certrelay: {e}");
            1
        }
    }
}
