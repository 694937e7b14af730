//! The administrator's commands: certificates, the fingerprint map, and reloading a running
//! relay after a change.
//!
//! A change to the map (`allow`, `revoke`, `ca issue`, `ca sign`) is made only when the
//! whole configuration checks, and is confirmed: the command waits until the running relay
//! reports that it loaded it, and fails when the relay refused it or said nothing.
//!
//! Not here: how the running relay is found and signalled (`running`).

use crate::generation;
use crate::running::{self, Reloaded};
use argh::FromArgs;
use certrelay_core::config::Diagnostic;
use certrelay_core::fingerprint::DigestKind;
use certrelay_shell::pki;
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};

/// print certificate fingerprints as openssl does (`sha256 Fingerprint=...`)
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
    #[argh(option)]
    map_line: Option<String>,
    /// certificate files, PEM (every certificate of a chain) or DER
    #[argh(positional)]
    files: Vec<PathBuf>,
}

/// a certificate authority for the relay and its laptops
#[derive(FromArgs)]
#[argh(subcommand, name = "ca")]
pub struct CaCmd {
    #[argh(subcommand)]
    action: CaAction,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum CaAction {
    Init(CaInit),
    Issue(CaIssue),
    Sign(CaSign),
}

/// make a CA and the relay's server certificate (ECDSA P-256); prints the main.cf lines
#[derive(FromArgs)]
#[argh(subcommand, name = "init")]
struct CaInit {
    /// where to write ca.pem, ca.key, relay.pem, relay.key (default: the -c directory)
    #[argh(option)]
    dir: Option<PathBuf>,
    /// the relay's host name (default: myhostname)
    #[argh(option)]
    hostname: Option<String>,
    /// more names (or IP addresses) for the relay's certificate
    #[argh(option)]
    name: Vec<String>,
}

/// issue a client certificate for a laptop and list it in relay_clientcerts
#[derive(FromArgs)]
#[argh(subcommand, name = "issue")]
struct CaIssue {
    /// the CA's directory (default: the -c directory)
    #[argh(option)]
    dir: Option<PathBuf>,
    /// where to write NAME.pem and NAME-ca.pem (default: current directory)
    #[argh(option, default = "PathBuf::from(\".\")")]
    out: PathBuf,
    /// the fingerprint table (default: the first relay_clientcerts table of main.cf)
    #[argh(option)]
    map: Option<PathBuf>,
    /// the laptop's name: certificate CN and label in the table
    #[argh(positional)]
    name: String,
}

/// sign a laptop's request (from `certrelay keygen`) and list it in relay_clientcerts
#[derive(FromArgs)]
#[argh(subcommand, name = "sign")]
struct CaSign {
    /// the CA's directory (default: the -c directory)
    #[argh(option)]
    dir: Option<PathBuf>,
    /// where to write NAME.pem and NAME-ca.pem (default: current directory)
    #[argh(option, default = "PathBuf::from(\".\")")]
    out: PathBuf,
    /// the fingerprint table (default: the first relay_clientcerts table of main.cf)
    #[argh(option)]
    map: Option<PathBuf>,
    /// the laptop's name: certificate CN and label in the table
    #[argh(option)]
    name: String,
    /// the certificate signing request (PEM)
    #[argh(positional)]
    csr: PathBuf,
}

/// list a fingerprint in relay_clientcerts and reload the running relay
#[derive(FromArgs)]
#[argh(subcommand, name = "allow")]
pub struct AllowCmd {
    /// the fingerprint table (default: the first relay_clientcerts table of main.cf)
    #[argh(option)]
    map: Option<PathBuf>,
    /// certificate or public-key fingerprint (MD5, SHA-1, SHA-256 or SHA-512; any case,
    /// colons optional)
    #[argh(positional)]
    fingerprint: String,
    /// a label for the entry
    #[argh(positional)]
    label: String,
}

/// remove entries by label or fingerprint from relay_clientcerts and reload the running relay
#[derive(FromArgs)]
#[argh(subcommand, name = "revoke")]
pub struct RevokeCmd {
    /// the fingerprint table (default: the first relay_clientcerts table of main.cf)
    #[argh(option)]
    map: Option<PathBuf>,
    /// a label or a fingerprint
    #[argh(positional)]
    what: String,
}

/// list the queue: id, size, arrival, sender, recipients with the reason each waits, and
/// the next attempt
#[derive(FromArgs)]
#[argh(subcommand, name = "queue")]
pub struct QueueCmd {}

/// ask the running relay to try every queued message now (SIGUSR1)
#[derive(FromArgs)]
#[argh(subcommand, name = "flush")]
pub struct FlushCmd {}

/// remove a message from the queue
#[derive(FromArgs)]
#[argh(subcommand, name = "delete")]
pub struct DeleteCmd {
    /// the queue id, as `certrelayd queue` shows it
    #[argh(positional)]
    id: String,
}

/// `certrelayd queue`.
pub fn queue(config_dir: &Path, _cmd: QueueCmd) -> i32 {
    let Some(dir) = queue_directory(config_dir) else {
        return 1;
    };
    match certrelay_shell::spool::listing::listing(&dir) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("error: {}: {e}", dir.display());
            1
        }
    }
}

/// `certrelayd flush`.
pub fn flush(config_dir: &Path, _cmd: FlushCmd) -> i32 {
    let Some(dir) = queue_directory(config_dir) else {
        return 1;
    };
    let pid = match running::find_relay(&dir) {
        Ok(pid) => pid,
        Err(why) => {
            eprintln!("error: no running relay ({why}); queued mail goes when it starts");
            return 1;
        }
    };
    match running::signal(pid, Signal::SIGUSR1) {
        Ok(()) => {
            println!("asked the running relay (pid {pid}) to try every queued message now");
            0
        }
        Err(e) => {
            eprintln!("error: cannot signal the running relay (pid {pid}): {e}");
            1
        }
    }
}

/// `certrelayd delete ID`.
pub fn delete(config_dir: &Path, cmd: DeleteCmd) -> i32 {
    let Some(dir) = queue_directory(config_dir) else {
        return 1;
    };
    if certrelay_core::queue::QueueId::parse(&cmd.id).is_none() {
        eprintln!("error: {:?} is not a queue id", cmd.id);
        return 64;
    }
    // Attach without recovery: a running relay may be receiving into tmp/ right now.
    let spool = certrelay_shell::spool::Spool::attach(&dir);
    if spool.read_envelope(&cmd.id).is_err() && !spool.message_path(&cmd.id).exists() {
        eprintln!("error: {}: no such message in {}", cmd.id, dir.display());
        return 1;
    }
    match spool.remove(&cmd.id) {
        Ok(()) => {
            println!("{}: removed", cmd.id);
            0
        }
        Err(e) => {
            eprintln!("error: {}: {e}", cmd.id);
            1
        }
    }
}

fn queue_directory(config_dir: &Path) -> Option<PathBuf> {
    match certrelay_shell::conf::load(config_dir) {
        Ok(l) => Some(PathBuf::from(l.config.text("queue_directory"))),
        Err(msg) => {
            eprintln!("error: {msg}");
            None
        }
    }
}

/// `certrelayd fingerprint`.
pub fn fingerprint(cmd: FingerprintCmd) -> i32 {
    let Some(digest) = DigestKind::from_config_name(&cmd.digest) else {
        eprintln!(
            "error: --digest {}: use md5, sha1, sha256 or sha512",
            cmd.digest
        );
        return 64;
    };
    if cmd.files.is_empty() {
        eprintln!("error: name at least one certificate file");
        return 64;
    }
    finish(pki::fingerprint(
        &cmd.files,
        digest,
        cmd.pubkey,
        cmd.map_line.as_deref(),
    ))
}

/// `certrelayd ca ...`.
pub fn ca(config_dir: &Path, cmd: CaCmd) -> i32 {
    match cmd.action {
        CaAction::Init(a) => {
            let dir = a.dir.unwrap_or_else(|| config_dir.to_owned());
            let host = match a.hostname {
                Some(h) => h,
                None => match myhostname(config_dir) {
                    Ok(h) => h,
                    Err(code) => return code,
                },
            };
            finish(pki::ca_init(&dir, &host, &a.name).map(|files| {
                format!(
                    "made a CA and a certificate for {host} in {}\nput these lines in main.cf:\n{}",
                    dir.display(),
                    files.main_cf_lines()
                )
            }))
        }
        CaAction::Issue(a) => {
            let dir = a.dir.unwrap_or_else(|| config_dir.to_owned());
            let Some(map) = map_path(config_dir, a.map) else {
                return 1;
            };
            change_and_reload(config_dir, || {
                pki::ca_issue(&dir, &a.name, &a.out, &map).map(|i| i.report())
            })
        }
        CaAction::Sign(a) => {
            let dir = a.dir.unwrap_or_else(|| config_dir.to_owned());
            let Some(map) = map_path(config_dir, a.map) else {
                return 1;
            };
            change_and_reload(config_dir, || {
                pki::ca_sign(&dir, &a.csr, &a.name, &a.out, &map).map(|i| i.report())
            })
        }
    }
}

/// `certrelayd allow`.
pub fn allow(config_dir: &Path, cmd: AllowCmd) -> i32 {
    let Some(map) = map_path(config_dir, cmd.map) else {
        return 1;
    };
    change_and_reload(config_dir, || {
        pki::allow(&map, &cmd.fingerprint, &cmd.label).map(|e| e.report())
    })
}

/// `certrelayd revoke`.
pub fn revoke(config_dir: &Path, cmd: RevokeCmd) -> i32 {
    let Some(map) = map_path(config_dir, cmd.map) else {
        return 1;
    };
    change_and_reload(config_dir, || {
        pki::revoke(&map, &cmd.what).map(|e| e.report())
    })
}

fn finish(result: Result<String, pki::PkiError>) -> i32 {
    match result {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn myhostname(config_dir: &Path) -> Result<String, i32> {
    match certrelay_shell::conf::load(config_dir) {
        Ok(l) => Ok(l.config.text("myhostname").to_owned()),
        Err(msg) => {
            eprintln!("error: {msg}");
            Err(1)
        }
    }
}

/// The table to edit: `--map`, else the first `relay_clientcerts` table of main.cf, else
/// `DIR/relay_clientcerts`.
fn map_path(config_dir: &Path, given: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p);
    }
    let loaded = match certrelay_shell::conf::load(config_dir) {
        Ok(l) => l,
        Err(msg) => {
            eprintln!("error: {msg} (or name the table with --map)");
            return None;
        }
    };
    match loaded.config.tables("relay_clientcerts") {
        Ok(specs) => Some(
            specs
                .first()
                .map(|s| PathBuf::from(&s.path))
                .unwrap_or_else(|| config_dir.join("relay_clientcerts")),
        ),
        Err(d) => {
            eprintln!("{d}");
            None
        }
    }
}

/// Makes `change` when the configuration in `config_dir` has no error, and then has a
/// running relay load it: SIGHUP, then its report. 0 when the relay loaded it, or when no
/// relay runs (it reads the change at start); 1 when anything failed, said on stderr.
fn change_and_reload(
    config_dir: &Path,
    change: impl FnOnce() -> Result<String, pki::PkiError>,
) -> i32 {
    if let Err(diags) = generation::check_reload(config_dir) {
        print_errors(&diags);
        eprintln!(
            "error: {}: the configuration has errors (above), so a running relay would not \
             load the change; nothing was changed. Fix them first (`certrelayd -c {} check`)",
            config_dir.display(),
            config_dir.display()
        );
        return 1;
    }
    let code = finish(change());
    if code != 0 {
        return code;
    }
    if let Err(diags) = generation::check_reload(config_dir) {
        print_errors(&diags);
        eprintln!(
            "error: the change is written, but the configuration now has errors (above): a \
             running relay would refuse it and keep its old table"
        );
        return 1;
    }
    let Some(queue_dir) = queue_directory(config_dir) else {
        return 1;
    };
    let pid = match running::find_relay(&queue_dir) {
        Ok(pid) => pid,
        Err(why) => {
            println!("no running relay found ({why}); it reads the table at start");
            return 0;
        }
    };
    // Taken after the change was written: a reload that began since has read it.
    let since = running::monotonic_ns();
    if let Err(e) = running::signal(pid, Signal::SIGHUP) {
        eprintln!("error: cannot signal the running relay (pid {pid}) to reload: {e}");
        return 1;
    }
    match running::await_reload(&queue_dir, pid, since) {
        Reloaded::Loaded(generation) => {
            println!(
                "the running relay (pid {pid}) loaded the change (configuration generation \
                 {generation})"
            );
            0
        }
        Reloaded::Refused(why) => {
            for line in why {
                eprintln!("{line}");
            }
            eprintln!(
                "error: the running relay (pid {pid}) refused the new configuration (above) \
                 and keeps serving the old one; the change is written and applies once that \
                 is fixed and the relay reloads"
            );
            1
        }
        Reloaded::Silent => {
            eprintln!(
                "error: the running relay (pid {pid}) did not report loading the change within \
                 {} s: it may still serve the old table; look at its log",
                running::REPORT_WAIT.as_secs()
            );
            1
        }
    }
}

fn print_errors(diags: &[Diagnostic]) {
    for d in diags.iter().filter(|d| d.is_error()) {
        eprintln!("{d}");
    }
}

/// say which restriction would decide a recipient for a client certificate, and why
#[derive(FromArgs)]
#[argh(subcommand, name = "explain")]
pub struct ExplainCmd {
    /// the client's certificate (PEM chain or DER); without it, as a client with none
    #[argh(option)]
    cert: Option<PathBuf>,
    /// the recipient address
    #[argh(option)]
    rcpt: String,
    /// the sender address (for the log line)
    #[argh(option, default = "String::from(\"sender@example.org\")")]
    from: String,
    /// the client's IP address (default 192.0.2.1, outside any mynetworks)
    #[argh(option, default = "String::from(\"192.0.2.1\")")]
    client: String,
    /// the listener's port (master.cf); default: the first listener
    #[argh(option)]
    port: Option<u16>,
}

/// `certrelayd explain`: the relay's decision for one certificate and recipient, with the
/// rule that made it.
pub fn explain(config_dir: &Path, cmd: ExplainCmd) -> i32 {
    use certrelay_core::facts::{CertVerdict, ClientCert, PeerInfo, TlsFacts};
    use certrelay_core::policy::{self, RcptFacts, Verdict};
    let (generation, _) = match crate::generation::load(config_dir) {
        Ok(g) => g,
        Err(diags) => {
            for d in diags.iter().filter(|d| d.is_error()) {
                eprintln!("{d}");
            }
            return 78;
        }
    };
    let listener = match cmd.port {
        Some(port) => generation
            .listeners
            .iter()
            .find(|l| l.endpoint.port == port),
        None => generation.listeners.first(),
    };
    let Some(listener) = listener else {
        eprintln!("error: no listener on port {}", cmd.port.unwrap_or(0));
        return 64;
    };
    let Ok(addr) = cmd.client.parse() else {
        eprintln!("error: --client {}: not an IP address", cmd.client);
        return 64;
    };
    let Ok((recipient, _)) = certrelay_core::address::parse_path(&format!("<{}>", cmd.rcpt)) else {
        eprintln!("error: --rcpt {}: not a mail address", cmd.rcpt);
        return 64;
    };
    let settings = &listener.settings;
    println!(
        "listener {} (smtpd_tls_security_level {:?})",
        listener.key, settings.tls_level
    );
    let client_cert = match &cmd.cert {
        None => {
            println!("certificate: none presented");
            ClientCert::default()
        }
        Some(path) => {
            let chain = match std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    certrelay_core::cert::parse_certificates(&b).map_err(|e| e.to_string())
                }) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {}: {e}", path.display());
                    return 1;
                }
            };
            let algs = rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .all;
            let trust = &listener.trust;
            let judged = certrelay_core::cert::judge_client_cert(
                &chain,
                &trust.anchors,
                trust.verify_depth,
                &trust.fingerprints,
                rustls::pki_types::UnixTime::now(),
                algs,
            );
            let cn = |c: &Option<String>| c.clone().unwrap_or_else(|| "(no CN)".into());
            println!(
                "certificate: subject CN {}, issuer CN {}",
                cn(&judged.subject_cn),
                cn(&judged.issuer_cn)
            );
            match &judged.verdict {
                CertVerdict::Trusted => println!(
                    "  trusted: it chains to smtpd_tls_CAfile within smtpd_tls_ccert_verifydepth = {}",
                    trust.verify_depth
                ),
                CertVerdict::Untrusted(why) => println!("  untrusted: {why}"),
                CertVerdict::Absent => println!("  absent"),
            }
            match &judged.listed {
                Some(m) => println!(
                    "  listed in relay_clientcerts by its {} {} fingerprint, label {:?}",
                    if m.public_key {
                        "public-key"
                    } else {
                        "certificate"
                    },
                    m.digest,
                    m.label
                ),
                None => println!(
                    "  not listed in relay_clientcerts (digests looked up: {:?})",
                    trust.fingerprints.kinds().collect::<Vec<_>>()
                ),
            }
            judged
        }
    };
    if settings.req_ccert && !client_cert.verdict.is_trusted() {
        let why = if client_cert.verdict.is_present() {
            "Client certificate not trusted"
        } else {
            "No client certificate presented"
        };
        println!(
            "decision: the session ends after STARTTLS: 421 4.7.1 {} Error: {why} \
             (smtpd_tls_req_ccert = yes)",
            settings.myhostname
        );
        return 0;
    }
    let peer = PeerInfo {
        addr,
        name: "unknown".into(),
    };
    let tls = cmd.cert.as_ref().map(|_| TlsFacts {
        protocol: "TLSv1.3".into(),
        cipher: "TLS_AES_256_GCM_SHA384".into(),
        bits: 256,
        resumed: false,
        client_cert,
    });
    let decision = policy::check_recipient(
        settings,
        &RcptFacts {
            client: &peer,
            tls: tls.as_ref(),
            recipient: &recipient,
        },
    );
    match decision.verdict {
        Verdict::Permit => println!(
            "decision: RCPT TO:<{}> accepted ({})",
            cmd.rcpt, decision.decided_by
        ),
        Verdict::Reject(reply) => println!(
            "decision: RCPT TO:<{}> refused with {reply} ({}); from=<{}>",
            cmd.rcpt, decision.decided_by, cmd.from
        ),
    }
    0
}
