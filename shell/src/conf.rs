//! Reading a configuration directory (`-c DIR`) and the files it names, for both binaries.
//!
//! The core parses text; this module finds and reads the files, and turns IO failures into
//! diagnostics that name the parameter, its file:line and the path. Printing them is the
//! binaries' job, except in [`run_check`], whose output they are.

use crate::error::Error;
use certrelay_core::cert;
use certrelay_core::config::{self, master_cf, Config, Diagnostic, Listener, Severity};
use certrelay_core::fingerprint::{FingerprintMap, FingerprintMapBuilder};
use certrelay_core::table::{Table, TableSpec};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A configuration directory, read and parsed.
#[derive(Debug)]
pub struct Loaded {
    /// The directory given with `-c`.
    pub dir: PathBuf,
    /// `main.cf` with defaults, expanded.
    pub config: Config,
    /// The SMTP listeners of `master.cf` (empty without one).
    pub listeners: Vec<Listener>,
    /// Everything the parsers and the file checks found.
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// True when any diagnostic is an error: the program must not start.
    pub fn has_errors(&self) -> bool {
        config::has_errors(&self.diagnostics)
    }
}

/// This machine's host name, the default for `myhostname`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Reads `DIR/main.cf` (required) and `DIR/master.cf` (optional).
pub fn load(dir: &Path) -> Result<Loaded, Error> {
    let main_path = dir.join("main.cf");
    let main_text = std::fs::read_to_string(&main_path).map_err(|source| Error::Read {
        path: main_path.clone(),
        source,
    })?;
    let host = host_name();
    let main_name = main_path.display().to_string();
    let (config, mut diagnostics) =
        Config::parse_with_defaults(&main_name, &main_text, &[("myhostname", host.as_str())]);
    let master_path = dir.join("master.cf");
    let mut listeners = Vec::new();
    match std::fs::read_to_string(&master_path) {
        Ok(text) => {
            let (found, diags) = master_cf::parse(&master_path.display().to_string(), &text);
            diagnostics.extend(diags);
            master_cf::drop_unused_referenced(&mut diagnostics, &found);
            listeners = found;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::Read {
                path: master_path,
                source,
            })
        }
    }
    Ok(Loaded {
        dir: dir.to_owned(),
        config,
        listeners,
        diagnostics,
    })
}

/// Reads the text source of every table named by parameter `name`.
pub fn read_tables(config: &Config, name: &str) -> (Vec<Table>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let specs = match config.tables(name) {
        Ok(specs) => specs,
        Err(d) => return (Vec::new(), vec![d]),
    };
    let mut tables = Vec::new();
    for spec in specs {
        match read_table(config, name, &spec) {
            Ok(text) => {
                let (table, more) = Table::parse(&spec.path, &text);
                diags.extend(more);
                tables.push(table);
            }
            Err(d) => diags.push(d),
        }
    }
    (tables, diags)
}

/// The text of one table of parameter `name`; a failure is a diagnostic at that parameter.
fn read_table(config: &Config, name: &str, spec: &TableSpec) -> Result<String, Diagnostic> {
    std::fs::read_to_string(&spec.path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            let db_exists = Path::new(&format!("{}.db", spec.path)).exists();
            config.problem(name, spec.missing_source_message(db_exists))
        }
        std::io::ErrorKind::PermissionDenied if tls_files_kept() => config.problem(
            name,
            format_args!(
                "{}: cannot read: {e} (after its start the relay reads tables as mail_owner: \
                 make the table readable by that account)",
                spec.path
            ),
        ),
        _ => config.problem(name, format_args!("{}: cannot read: {e}", spec.path)),
    })
}

/// True in a relay that started as root (see [`keep_tls_files`]).
fn tls_files_kept() -> bool {
    KEPT_TLS_FILES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_some()
}

/// Builds the fingerprint map from `relay_clientcerts` (with the digest rule of
/// `smtpd_tls_fingerprint_digest`).
///
/// The table texts go straight into the map builder, with no `Table` on the way: a key
/// listed twice is reported once, as a duplicate fingerprint.
pub fn fingerprint_map(config: &Config) -> (FingerprintMap, Vec<Diagnostic>) {
    fingerprint_map_with(config, None)
}

/// [`fingerprint_map`] with the entries of one more table in the same syntax: the relay's
/// table of enrolled laptops, when the file exists.
pub fn fingerprint_map_with(
    config: &Config,
    extra: Option<&Path>,
) -> (FingerprintMap, Vec<Diagnostic>) {
    const NAME: &str = "relay_clientcerts";
    let digest = config.fingerprint_digest();
    let mut builder = FingerprintMapBuilder::new();
    if let Ok(Some(kind)) = digest {
        builder = builder.fixed_digest(kind);
    }
    let mut diags = Vec::new();
    match config.tables(NAME) {
        Ok(specs) => {
            for spec in specs {
                match read_table(config, NAME, &spec) {
                    Ok(text) => diags.extend(builder.add_table_text(&spec.path, &text)),
                    Err(d) => diags.push(d),
                }
            }
        }
        Err(d) => diags.push(d),
    }
    if let Some(path) = extra {
        match std::fs::read_to_string(path) {
            Ok(text) => diags.extend(builder.add_table_text(&path.display().to_string(), &text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => diags.push(Diagnostic::error(
                &config::Location::new(&path.display().to_string(), 0),
                format!("cannot read the enrolled laptops' table: {e}"),
            )),
        }
    }
    if let Err(d) = digest {
        diags.push(d);
    }
    let (map, map_diags) = builder.finish();
    for d in map_diags {
        let at = config::Location {
            file: d.file.clone(),
            line: d.line as u32,
        };
        // Entries that cannot match are ignored, not fatal: a warning, as Postfix would
        // simply never match them.
        diags.push(Diagnostic::warning(&at, d.message));
    }
    (map, diags)
}

/// Certificate and key files as last read, by path, once [`keep_tls_files`] was called.
static KEPT_TLS_FILES: Mutex<Option<HashMap<String, Vec<u8>>>> = Mutex::new(None);

/// From now on, remember every certificate and key file read, and when one can no longer be
/// read for lack of permission, use the copy read last. The relay calls this before it
/// drops root: keys are usually readable by root only, and a reload as `mail_owner` keeps
/// the keys read at start (a restart reads new ones).
pub fn keep_tls_files() {
    let mut kept = KEPT_TLS_FILES.lock().unwrap_or_else(|e| e.into_inner());
    kept.get_or_insert_with(HashMap::new);
}

fn read_tls_file(path: &str) -> std::io::Result<Vec<u8>> {
    let mut kept = KEPT_TLS_FILES.lock().unwrap_or_else(|e| e.into_inner());
    let Some(kept) = kept.as_mut() else {
        return std::fs::read(path);
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            kept.insert(path.to_owned(), bytes.clone());
            Ok(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => match kept.get(path) {
            Some(bytes) => {
                log::warn!(
                    "{path}: {e}; keeping the copy read at start (restart to load a new one)"
                );
                Ok(bytes.clone())
            }
            None => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// Reads a private key file other than the TLS ones (the relay's DKIM keys) as the TLS
/// files are read: once [`keep_tls_files`] was called, a file that can no longer be read
/// for lack of permission gives the copy read last.
pub fn read_secret_file(path: &str) -> std::io::Result<Vec<u8>> {
    read_tls_file(path)
}

/// Reads the certificate chain named by parameter `name`.
pub fn read_chain(
    config: &Config,
    name: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, Diagnostic> {
    let path = config.text(name);
    let bytes =
        read_tls_file(path).map_err(|e| config.problem(name, format!("cannot read: {e}")))?;
    cert::parse_certificates(&bytes).map_err(|e| config.problem(name, e))
}

/// Reads the private key named by parameter `name`.
pub fn read_key(
    config: &Config,
    name: &str,
) -> Result<rustls::pki_types::PrivateKeyDer<'static>, Diagnostic> {
    let path = config.text(name);
    let bytes =
        read_tls_file(path).map_err(|e| config.problem(name, format!("cannot read: {e}")))?;
    cert::parse_private_key(&bytes).map_err(|e| config.problem(name, e))
}

/// Checks that the certificate files a role needs can be read and parsed: (`cert`, `key`,
/// `CAfile`) parameter names, each checked only when set.
pub fn check_tls_files(config: &Config, names: [&str; 3]) -> Vec<Diagnostic> {
    let [cert_name, key_name, ca_name] = names;
    let mut diags = Vec::new();
    if !config.text(cert_name).is_empty() {
        if let Err(d) = read_chain(config, cert_name) {
            diags.push(d);
        }
        if let Err(d) = read_key(config, key_name) {
            diags.push(d);
        }
    }
    if !config.text(ca_name).is_empty() {
        match read_chain(config, ca_name) {
            Ok(cas) => {
                if let Err(e) = cert::trust_anchors(&cas) {
                    diags.push(config.problem(ca_name, e));
                }
            }
            Err(d) => diags.push(d),
        }
    }
    diags
}

/// The `postconf -n`-style listing of the parameters set in main.cf.
pub fn non_default_listing(config: &Config) -> String {
    let mut out = String::new();
    for (name, value) in config.non_default() {
        let _ = writeln!(out, "{name} = {}", value.raw);
    }
    out
}

/// Prints diagnostics to stderr, one per line, worst first kept in file order.
pub fn report(diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        eprintln!("{d}");
    }
}

/// Counts diagnostics by severity: (errors, warnings).
pub fn tally(diagnostics: &[Diagnostic]) -> (usize, usize) {
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .count();
    (errors, warnings)
}

/// Appends the diagnostics not already present (listeners repeat main.cf's problems).
pub fn push_new(into: &mut Vec<Diagnostic>, more: Vec<Diagnostic>) {
    for d in more {
        if !into.contains(&d) {
            into.push(d);
        }
    }
}

/// Runs a check and prints it as `check` commands do: the settings in effect on stdout, the
/// problems on stderr, then a summary. Returns the tally (errors, warnings); `Err` when
/// main.cf could not be read, before anything was printed.
pub fn run_check(
    dir: &Path,
    check: fn(&Loaded) -> Vec<Diagnostic>,
) -> Result<(usize, usize), Error> {
    let loaded = load(dir)?;
    print!("{}", non_default_listing(&loaded.config));
    for l in &loaded.listeners {
        println!("listener {} ({}:{})", l.service, l.file, l.line);
    }
    let diags = check(&loaded);
    report(&diags);
    let (errors, warnings) = tally(&diags);
    eprintln!(
        "{}: {errors} error(s), {warnings} warning(s)",
        dir.display()
    );
    Ok((errors, warnings))
}
