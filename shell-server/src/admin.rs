//! The administrator's commands: certificates, the fingerprint map, and reloading a running
//! relay after a change.
//!
//! A change to the map (`allow`, `revoke`, `ca issue`, `ca sign`) or to the relay's
//! certificate (`ca renew-server`) is made only when the whole configuration checks, and is
//! confirmed: the command waits until the running relay reports that it loaded it, and
//! fails when the relay refused it or said nothing.
//!
//! `queue` and `delete` read a spool the relay may have given to `mail_owner` (see
//! [`CarefulSpool`]): a link, FIFO or foreign file planted there is named, never followed.
//!
//! Not here: how the running relay is found and signalled (`running`), or putting a failure
//! into words (`failure`).

use crate::failure::{CertFileError, Failure};
use crate::generation;
use crate::privilege;
use crate::running::{self, Reloaded};
use argh::FromArgs;
use certrelay_core::fingerprint::DigestKind;
use certrelay_core::queue::QueueId;
use certrelay_shell::pki;
use certrelay_shell::spool::listing::{self, Entry};
use certrelay_shell::status::{self, ClaimError};
use nix::dir::Dir;
use nix::fcntl::{self, OFlag};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::{self, Pid, UnlinkatFlags};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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
    RenewServer(CaRenewServer),
}

/// a new certificate for the relay's key from the same CA, with the names of the current
/// one (and --name to add); keeps the previous one as relay.pem.old and reloads the
/// running relay, which presents the new one to new sessions
#[derive(FromArgs)]
#[argh(subcommand, name = "renew-server")]
struct CaRenewServer {
    /// where ca.pem, ca.key, relay.pem, relay.key are (default: the folder of main.cf's
    /// smtpd_tls_cert_file, which with smtpd_tls_key_file must name them)
    #[argh(option)]
    dir: Option<PathBuf>,
    /// more names (or IP addresses) for the relay's certificate
    #[argh(option)]
    name: Vec<String>,
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

/// `certrelayd queue`: read as [`CarefulSpool`] reads, so a link, a FIFO or a huge file
/// that `mail_owner` planted in the spool is named and skipped, never read.
pub fn queue(config_dir: &Path, _cmd: QueueCmd) -> Result<(), Failure> {
    let (dir, owner) = queue_settings(config_dir)?;
    let listing_failed = |source| Failure::Listing {
        queue_directory: dir.clone(),
        source,
    };
    let spool = match CarefulSpool::open(&dir, &owner) {
        Ok(spool) => spool,
        // No spool yet: an empty queue.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            print!("{}", listing::render([]));
            return Ok(());
        }
        Err(e) => return Err(listing_failed(e)),
    };
    let entries = spool
        .ids()
        .map_err(listing_failed)?
        .into_iter()
        .map(|name| match name {
            Ok(id) => match spool.envelope(&id) {
                Ok(record) => Entry::Record(record),
                Err(why) => Entry::Skipped {
                    id: id.to_string(),
                    why: why.to_string(),
                },
            },
            Err(name) => Entry::Skipped {
                id: format!("{name:?}"),
                why: "not a queue id".into(),
            },
        });
    print!("{}", listing::render(entries));
    Ok(())
}

/// `certrelayd flush`.
pub fn flush(config_dir: &Path, _cmd: FlushCmd) -> Result<(), Failure> {
    let dir = queue_directory(config_dir)?;
    let pid = running::find_relay(&dir).map_err(Failure::NoRelay)?;
    signal(pid, Signal::SIGUSR1)?;
    println!("asked the running relay (pid {pid}) to try every queued message now");
    Ok(())
}

/// `certrelayd delete ID`: removes the message's files, each only when it is a plain file
/// of the spool's owner, by name in the `queue/` folder held open (a link is refused, and
/// would be removed itself, never what it names).
pub fn delete(config_dir: &Path, cmd: DeleteCmd) -> Result<(), Failure> {
    // A queue id is letters and digits only: no `/`, no `..`.
    let id = QueueId::parse(&cmd.id).ok_or(Failure::NotQueueId(cmd.id))?;
    let (dir, owner) = queue_settings(config_dir)?;
    let no_such = |dir: PathBuf, id| Failure::NoSuchMessage {
        id,
        queue_directory: dir,
    };
    // Running relays do not lock messages against this: as before, a delivery under way
    // may finish.
    let spool = match CarefulSpool::open(&dir, &owner) {
        Ok(spool) => spool,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(no_such(dir, id)),
        Err(source) => {
            return Err(Failure::Listing {
                queue_directory: dir,
                source,
            })
        }
    };
    match spool.remove(&id) {
        Ok(true) => {
            println!("{id}: removed");
            Ok(())
        }
        Ok(false) => Err(no_such(dir, id)),
        Err(source) => Err(Failure::NotRemoved { id, source }),
    }
}

fn queue_directory(config_dir: &Path) -> Result<PathBuf, Failure> {
    Ok(queue_settings(config_dir)?.0)
}

/// `queue_directory` and `mail_owner`.
fn queue_settings(config_dir: &Path) -> Result<(PathBuf, String), Failure> {
    let loaded = certrelay_shell::conf::load(config_dir).map_err(Failure::Config)?;
    Ok((
        PathBuf::from(loaded.config.text("queue_directory")),
        loaded.config.text("mail_owner").to_owned(),
    ))
}

/// The spool as a command reads it when the relay may have given it to `mail_owner`, an
/// account whose files a flaw could let an attacker plant: `queue_directory` and its
/// `queue/` folder are opened without following a link and must be the owner's, and each
/// file is opened by name relative to `queue/` held open, with no link followed and
/// without blocking, and is read only when it is a plain file of the owner's, of bounded
/// size (the status command's claims).
/// The relay's queue as `certrelayd status` shows it, read as [`CarefulSpool`] reads: through
/// `queue/` held open, so that a folder `mail_owner` swaps for a link while root reads it is
/// never followed.
pub fn queue_summary(dir: &Path, mail_owner: &str) -> io::Result<status::QueueSummary> {
    match CarefulSpool::open(dir, mail_owner) {
        Ok(spool) => status::queue_summary_with(dir, Some(&spool)),
        // No spool, or no `queue/` yet.
        Err(e) if e.kind() == io::ErrorKind::NotFound => status::queue_summary_with(dir, None),
        Err(e) => Err(e),
    }
}

impl status::QueueFolder for CarefulSpool {
    fn message_ids(&self) -> io::Result<Vec<String>> {
        Ok(self
            .ids()?
            .into_iter()
            .map(|id| match id {
                Ok(id) => id.as_str().to_owned(),
                // Not a queue id: shown as unreadable, as the laptop's listing does.
                Err(name) => name.trim_end_matches(".msg").to_owned(),
            })
            .collect())
    }

    fn claim(&self, name: &str, max: u64) -> Result<File, ClaimError> {
        CarefulSpool::claim(self, name, max)
    }
}

struct CarefulSpool {
    /// `queue/`, open.
    queue: File,
    /// The accounts whose files are read: `mail_owner`, and the caller unless it is root
    /// (a relay started by another account keeps that account's files).
    owners: Vec<u32>,
}

impl CarefulSpool {
    /// Opens `dir`'s `queue/` folder; `NotFound` when either is missing.
    fn open(dir: &Path, mail_owner: &str) -> io::Result<CarefulSpool> {
        let mut owners = Vec::new();
        match privilege::mail_owner(mail_owner) {
            Ok(user) => owners.push(user.uid.as_raw()),
            // Root reads no spool whose owner it cannot name.
            Err(e) if privilege::is_root() => {
                return Err(io::Error::other(format!("mail_owner = {mail_owner}: {e}")))
            }
            Err(_) => {}
        }
        if !privilege::is_root() {
            owners.push(nix::unistd::geteuid().as_raw());
        }
        // Without O_DIRECTORY, which would report a link as "not a directory".
        let top = OpenOptions::new()
            .read(true)
            .custom_flags(NO_FOLLOW.bits())
            .open(dir)
            .map_err(refused_link)?;
        check_dir(&top, &owners)?;
        let in_queue = |e: io::Error| io::Error::new(e.kind(), format!("queue/: {e}"));
        let queue = fcntl::openat(&top, "queue", NO_FOLLOW, Mode::empty())
            .map_err(|e| in_queue(refused_link(e.into())))?;
        let queue = File::from(queue);
        check_dir(&queue, &owners).map_err(in_queue)?;
        Ok(CarefulSpool { queue, owners })
    }

    /// The queue ids of the message files, sorted (ids sort by arrival); `Err` holds a
    /// `.msg` file's name that is no queue id.
    fn ids(&self) -> io::Result<Vec<Result<QueueId, String>>> {
        let mut dir = Dir::openat(
            &self.queue,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let mut ids = Vec::new();
        for entry in dir.iter() {
            let name = String::from_utf8_lossy(entry?.file_name().to_bytes()).into_owned();
            if let Some(stem) = name.strip_suffix(".msg") {
                ids.push(QueueId::parse(stem).ok_or(name));
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Opens `name` in `queue/` as a claim: no link, no FIFO, the owner's, at most `max`.
    fn claim(&self, name: &str, max: u64) -> Result<File, ClaimError> {
        let fd = fcntl::openat(&self.queue, name, NO_FOLLOW, Mode::empty())
            .map_err(|e| ClaimError::opening(e.into()))?;
        status::claim_file(File::from(fd), &self.owners, max)
    }

    /// The envelope record of `id`, read as the status command reads it.
    fn envelope(&self, id: &QueueId) -> Result<Vec<u8>, ClaimError> {
        status::envelope_record(|name, max| self.claim(name, max), id.as_str())
    }

    /// Removes the files of `id` (the message first, as the relay does); false when it has
    /// none. A file that is not a plain file of the owner's stops it, named in the error.
    fn remove(&self, id: &QueueId) -> io::Result<bool> {
        let mut found = false;
        for name in [format!("{id}.msg"), format!("{id}.env")] {
            match self.claim(&name, u64::MAX) {
                Ok(_) => {}
                Err(ClaimError::Open(e)) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(why) => {
                    return Err(io::Error::other(format!(
                        "queue/{name}: {why}; not removed"
                    )))
                }
            }
            // By name in the folder held open: should the file have been swapped for a
            // link since, the link goes, not what it names.
            match unistd::unlinkat(&self.queue, name.as_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) => found = true,
                Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => {
                    return Err(io::Error::new(
                        io::Error::from(e).kind(),
                        format!("queue/{name}: {e}"),
                    ))
                }
            }
        }
        Ok(found)
    }
}

/// How the spool's folders and files are opened: read only, no link followed at the end,
/// no wait on a FIFO.
const NO_FOLLOW: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_CLOEXEC);

/// Says "a symbolic link (not followed)" for the error of an open that refused one.
fn refused_link(e: io::Error) -> io::Error {
    match ClaimError::opening(e) {
        ClaimError::Link => io::Error::other(ClaimError::Link.to_string()),
        ClaimError::Open(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// Fails unless `dir` is a directory of one of `owners`.
fn check_dir(dir: &File, owners: &[u32]) -> io::Result<()> {
    let meta = dir.metadata()?;
    if !meta.is_dir() {
        return Err(io::Error::other("not a directory"));
    }
    if !owners.contains(&meta.uid()) {
        let owner = ClaimError::Owner { uid: meta.uid() };
        return Err(io::Error::other(owner.to_string()));
    }
    Ok(())
}

/// Sends `sig` to the running relay `pid`.
fn signal(pid: Pid, sig: Signal) -> Result<(), Failure> {
    running::signal(pid, sig).map_err(|source| Failure::Signal {
        pid,
        signal: sig,
        source,
    })
}

/// `certrelayd fingerprint`.
pub fn fingerprint(cmd: FingerprintCmd) -> Result<(), Failure> {
    let digest = DigestKind::from_config_name(&cmd.digest)
        .ok_or_else(|| Failure::UnknownDigest(cmd.digest.clone()))?;
    if cmd.files.is_empty() {
        return Err(Failure::NoCertificateFiles);
    }
    finish(pki::fingerprint(
        &cmd.files,
        digest,
        cmd.pubkey,
        cmd.map_line.as_deref(),
    ))
}

/// `certrelayd ca ...`.
pub fn ca(config_dir: &Path, cmd: CaCmd) -> Result<(), Failure> {
    match cmd.action {
        CaAction::Init(a) => {
            let dir = a.dir.unwrap_or_else(|| config_dir.to_owned());
            let host = match a.hostname {
                Some(h) => h,
                None => myhostname(config_dir)?,
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
            let map = map_path(config_dir, a.map)?;
            change_and_reload(config_dir, || {
                pki::ca_issue(&dir, &a.name, &a.out, &map).map(|i| i.report())
            })
        }
        CaAction::RenewServer(a) => {
            let dir = renew_server_dir(config_dir, a.dir)?;
            change_and_reload(config_dir, || {
                pki::ca_renew_server(&dir, &a.name).map(|r| r.report())
            })
        }
        CaAction::Sign(a) => {
            let dir = a.dir.unwrap_or_else(|| config_dir.to_owned());
            let map = map_path(config_dir, a.map)?;
            change_and_reload(config_dir, || {
                pki::ca_sign(&dir, &a.csr, &a.name, &a.out, &map).map(|i| i.report())
            })
        }
    }
}

/// The folder `ca renew-server` renews in: `--dir`, else the folder of main.cf's
/// `smtpd_tls_cert_file` (the -c directory when there is no main.cf, as for a CA kept
/// apart). With a main.cf, refuses unless its `smtpd_tls_cert_file` and
/// `smtpd_tls_key_file` are that folder's `relay.pem` and `relay.key`: otherwise the reload
/// would report success while the relay went on presenting the file main.cf names.
fn renew_server_dir(config_dir: &Path, given: Option<PathBuf>) -> Result<PathBuf, Failure> {
    let main_cf = config_dir.join("main.cf");
    if !main_cf.exists() {
        return Ok(given.unwrap_or_else(|| config_dir.to_owned()));
    }
    let loaded = certrelay_shell::conf::load(config_dir).map_err(Failure::Config)?;
    let cert = PathBuf::from(loaded.config.text("smtpd_tls_cert_file"));
    let key = PathBuf::from(loaded.config.text("smtpd_tls_key_file"));
    let dir = match given {
        Some(dir) => dir,
        None => match cert.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => config_dir.to_owned(),
        },
    };
    let same = |set: &Path, renewed: &Path| match (set.canonicalize(), renewed.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    let (relay_pem, relay_key) = (dir.join("relay.pem"), dir.join("relay.key"));
    if same(&cert, &relay_pem) && same(&key, &relay_key) {
        return Ok(dir);
    }
    Err(Failure::Pki(pki::PkiError::BadInput {
        path: main_cf,
        reason: format!(
            "smtpd_tls_cert_file = {} and smtpd_tls_key_file = {} are not {} and {}, the \
             files renew-server renews: the relay would go on presenting the certificate \
             main.cf names. Give --dir the folder `ca init` wrote them to, or set both \
             parameters to them",
            cert.display(),
            key.display(),
            relay_pem.display(),
            relay_key.display()
        ),
    }))
}

/// `certrelayd allow`.
pub fn allow(config_dir: &Path, cmd: AllowCmd) -> Result<(), Failure> {
    let map = map_path(config_dir, cmd.map)?;
    change_and_reload(config_dir, || {
        pki::allow(&map, &cmd.fingerprint, &cmd.label).map(|e| e.report())
    })
}

/// `certrelayd revoke`.
pub fn revoke(config_dir: &Path, cmd: RevokeCmd) -> Result<(), Failure> {
    // Without --map, the relay's enrolled table too (crate::enroll).
    let enrolled = match cmd.map {
        None => crate::enroll_cmd::enrolled_table(config_dir),
        Some(_) => None,
    };
    let map = map_path(config_dir, cmd.map)?;
    change_and_reload(config_dir, || {
        crate::enroll_cmd::revoke_in_both(&map, enrolled.as_deref(), &cmd.what)
    })
}

/// Prints what a certificate command did.
fn finish(result: Result<String, pki::PkiError>) -> Result<(), Failure> {
    print!("{}", result.map_err(Failure::Pki)?);
    Ok(())
}

fn myhostname(config_dir: &Path) -> Result<String, Failure> {
    let loaded = certrelay_shell::conf::load(config_dir).map_err(Failure::Config)?;
    Ok(loaded.config.text("myhostname").to_owned())
}

/// The table to edit: `--map`, else the first `relay_clientcerts` table of main.cf, else
/// `DIR/relay_clientcerts`.
fn map_path(config_dir: &Path, given: Option<PathBuf>) -> Result<PathBuf, Failure> {
    if let Some(p) = given {
        return Ok(p);
    }
    let loaded = certrelay_shell::conf::load(config_dir).map_err(Failure::MapConfig)?;
    let specs = loaded
        .config
        .tables("relay_clientcerts")
        .map_err(Failure::MapSetting)?;
    Ok(specs
        .first()
        .map(|s| PathBuf::from(&s.path))
        .unwrap_or_else(|| config_dir.join("relay_clientcerts")))
}

/// Makes `change` when the configuration in `config_dir` has no error, and then has a
/// running relay load it: SIGHUP, then its report. Done when the relay loaded it, or when
/// no relay runs (it reads the change at start); the failure says what went wrong else.
fn change_and_reload(
    config_dir: &Path,
    change: impl FnOnce() -> Result<String, pki::PkiError>,
) -> Result<(), Failure> {
    if !config_dir.join("main.cf").exists() {
        // No relay can serve from a directory without main.cf (a CA kept apart, for
        // instance): the change is all there is to do.
        finish(change())?;
        println!("no main.cf in {}: no relay to reload", config_dir.display());
        return Ok(());
    }
    generation::check_reload(config_dir).map_err(|diagnostics| Failure::NotChanged {
        config_dir: config_dir.to_owned(),
        diagnostics,
    })?;
    finish(change())?;
    generation::check_reload(config_dir).map_err(Failure::ChangedButInvalid)?;
    let queue_dir = queue_directory(config_dir)?;
    let pid = match running::find_relay(&queue_dir) {
        Ok(pid) => pid,
        Err(why) => {
            println!("no running relay found ({why}); it reads the table at start");
            return Ok(());
        }
    };
    // Taken after the change was written: a reload that began since has read it.
    let since = running::monotonic_ns();
    signal(pid, Signal::SIGHUP)?;
    match running::await_reload(&queue_dir, pid, since) {
        Reloaded::Loaded(generation) => {
            println!(
                "the running relay (pid {pid}) loaded the change (configuration generation \
                 {generation})"
            );
            Ok(())
        }
        Reloaded::Refused(reasons) => Err(Failure::ReloadRefused { pid, reasons }),
        Reloaded::Silent => Err(Failure::ReloadSilent {
            pid,
            waited: running::REPORT_WAIT,
        }),
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
    /// the envelope sender (checked by reject_sender_ccert_mismatch; "" for <>)
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
pub fn explain(config_dir: &Path, cmd: ExplainCmd) -> Result<(), Failure> {
    use certrelay_core::facts::{CertVerdict, ClientCert, PeerInfo, TlsFacts};
    use certrelay_core::policy::{self, RcptFacts, Verdict};
    let (generation, _) = generation::load(config_dir).map_err(Failure::ExplainConfig)?;
    let listener = match cmd.port {
        Some(port) => generation
            .listeners
            .iter()
            .find(|l| l.endpoint.port == port),
        None => generation.listeners.first(),
    };
    let listener = listener.ok_or(Failure::NoListener(cmd.port))?;
    let addr = cmd
        .client
        .parse()
        .map_err(|_| Failure::NotAnAddress(cmd.client.clone()))?;
    let Ok((recipient, _)) = certrelay_core::address::parse_path(&format!("<{}>", cmd.rcpt)) else {
        return Err(Failure::NotAMailAddress(cmd.rcpt));
    };
    let Ok((sender, _)) = certrelay_core::address::parse_path(&format!("<{}>", cmd.from)) else {
        return Err(Failure::NotAMailAddress(cmd.from));
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
            let cert_file = |error| Failure::CertFile {
                path: path.clone(),
                error,
            };
            let bytes = std::fs::read(path).map_err(|e| cert_file(CertFileError::Read(e)))?;
            let chain = certrelay_core::cert::parse_certificates(&bytes)
                .map_err(|e| cert_file(CertFileError::Parse(e)))?;
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
        return Ok(());
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
    let facts = RcptFacts {
        client: &peer,
        tls: tls.as_ref(),
        recipient: &recipient,
        sender: &sender,
    };
    explain_sender(settings, &facts);
    let decision = policy::check_recipient(settings, &facts);
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
    Ok(())
}

/// The `reject_sender_ccert_mismatch` step of `explain`, when a list of the listener has
/// it: whose certificate is looked at, and whether its label owns the sender.
fn explain_sender(
    settings: &certrelay_core::settings::ServerSettings,
    facts: &certrelay_core::policy::RcptFacts<'_>,
) {
    use certrelay_core::policy::{self, Restriction};
    let rule = Restriction::RejectSenderCcertMismatch;
    let lists = [
        ("smtpd_relay_restrictions", &settings.relay_restrictions),
        (
            "smtpd_recipient_restrictions",
            &settings.recipient_restrictions,
        ),
    ];
    let Some((list, _)) = lists.iter().find(|(_, rules)| rules.contains(&rule)) else {
        return;
    };
    let sender = facts.sender;
    match policy::sender_ownership(settings, facts) {
        Some((label, lookup)) => println!(
            "sender <{sender}> ({rule} in {list}): certificate label {label:?} in \
             smtpd_sender_ccert_maps: {lookup}"
        ),
        None if sender.mailbox.is_none() => {
            println!("sender <> ({rule} in {list}): the null sender is not checked")
        }
        None => println!(
            "sender <{sender}> ({rule} in {list}): not checked, the client has no \
             certificate listed in relay_clientcerts"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use certrelay_core::queue::{Envelope, Recipient};
    use certrelay_shell::spool::Spool;

    /// Commits one message into the spool at `root` (made if missing).
    fn message(root: &Path, unique: u32) {
        let (spool, _) = Spool::open(root).unwrap();
        let id = QueueId::generate(1_700_000_000, unique);
        let envelope = Envelope::new(
            id.clone(),
            "me@laptop.example",
            1_700_000_000,
            vec![Recipient::new("someone@elsewhere.example")],
        );
        let mut incoming = spool.incoming(id.as_str()).unwrap();
        incoming.write(b"Subject: x\r\n\r\nbody\r\n").unwrap();
        incoming.commit(envelope.to_text().as_bytes()).unwrap();
    }

    #[test]
    fn status_reads_the_queue_folder_it_holds_even_once_it_is_swapped_for_a_link() {
        let base = std::env::temp_dir().join(format!("certrelayd-careful-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (spool, elsewhere) = (base.join("spool"), base.join("elsewhere"));
        message(&spool, 1);
        for unique in 2..5 {
            message(&elsewhere, unique);
        }
        // The spool is mail_owner's: `nobody`'s when the test runs as root (as `.ci/run`
        // does), else the caller's own.
        let me = if privilege::is_root() {
            let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
            let queue = spool.join("queue");
            let files = std::fs::read_dir(&queue)
                .unwrap()
                .map(|e| e.unwrap().path());
            for path in [spool.clone(), queue.clone()].into_iter().chain(files) {
                std::os::unix::fs::lchown(&path, Some(nobody.uid.as_raw()), None).unwrap();
            }
            nobody.name
        } else {
            nix::unistd::User::from_uid(nix::unistd::geteuid())
                .unwrap()
                .unwrap()
                .name
        };
        let held = CarefulSpool::open(&spool, &me).unwrap();
        // mail_owner swaps `queue/` for a link to a folder of its choice after the open.
        std::fs::rename(spool.join("queue"), spool.join("queue.old")).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("queue"), spool.join("queue")).unwrap();
        let summary = status::queue_summary_with(&spool, Some(&held)).unwrap();
        assert_eq!(summary.active, 1, "{summary:?}");
        // Opened now, the link is refused; by path, `status` would list the other folder.
        let err = queue_summary(&spool, &me).unwrap_err();
        assert!(err.to_string().contains("link"), "{err}");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
