//! Certificates coming to an end: the running relay's record of the listed client
//! certificates it sees ([`Watch`]: last seen, address, expiry, with a warning when one
//! that expires within 14 days connects), the warning about its own server certificate,
//! and `certrelayd certs`, which lists every listed fingerprint with what is known of it.
//!
//! The records live in memory and go to `$queue_directory/clientcerts.seen` (owned by
//! `mail_owner`) at most once a minute when they changed, at reload and at stop: never a
//! write per connection.
//!
//! Not here: the file's format and the expiry arithmetic (`certrelay_shell::pki::seen`),
//! the timer that flushes (`serve`).

use crate::failure::Failure;
use argh::FromArgs;
use certrelay_core::cert::{parse_certificates, spki_der};
use certrelay_core::facts::PeerInfo;
use certrelay_core::fingerprint::{CertMatch, DigestKind, Fingerprint};
use certrelay_core::table::Table;
use certrelay_shell::pki::seen::{self, Seen, SeenBook, SEEN_FILE, SEEN_MAX_BYTES};
use certrelay_shell::pki::ISSUED_DIR;
use certrelay_shell::smtpd::tlsinfo::ListedSeen;
use certrelay_shell::status::{not_after, read_claim, ClaimError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The running relay's record of listed certificates, told of each TLS session with one.
#[derive(Debug)]
pub struct Watch {
    book: SeenBook,
    /// The seen file: relative to the queue directory the relay works in.
    path: PathBuf,
    /// Held while the changes are taken and written, on the blocking pool: one write at a
    /// time (they share the temporary file's name), each newer than the one before; and a
    /// write left running by a cancelled flush (the timer's, at stop) ends before the next
    /// one takes the changes.
    writing: Mutex<()>,
}

impl Watch {
    /// Starts from the seen file in the working directory (the queue directory), read as
    /// untrusted: a link, a foreign file or bad lines are said in the log and skipped.
    pub fn load() -> Arc<Watch> {
        let path = PathBuf::from(SEEN_FILE);
        let me = nix::unistd::Uid::effective().as_raw();
        let records = match read_claim(&path, &[me], SEEN_MAX_BYTES) {
            Ok(text) => {
                let got = seen::parse(&text);
                if got.bad_lines > 0 {
                    log::warn!("{SEEN_FILE}: {} unreadable line(s) skipped", got.bad_lines);
                }
                got.records
            }
            Err(ClaimError::Open(e)) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(why) => {
                log::warn!("{SEEN_FILE}: {why}; starting with no record of certificates seen");
                HashMap::new()
            }
        };
        Arc::new(Watch::at(path, records))
    }

    fn at(path: PathBuf, records: HashMap<Fingerprint, Seen>) -> Watch {
        Watch {
            book: SeenBook::new(records),
            path,
            writing: Mutex::new(()),
        }
    }

    /// Writes the seen file when something changed since the last write.
    pub async fn flush(self: &Arc<Self>) {
        let me = self.clone();
        // A failure is logged there.
        let _ = smol::unblock(move || me.flush_now()).await;
    }

    /// [`Watch::flush`], blocking; a failure is logged (and the records stay changed).
    fn flush_now(&self) -> std::io::Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let Some(text) = self.book.take_changed() else {
            return Ok(());
        };
        seen::write(&self.path, &text).inspect_err(|e| {
            self.book.mark_changed();
            log::warn!("{SEEN_FILE}: cannot write: {e}");
        })
    }
}

impl ListedSeen for Watch {
    fn seen(&self, leaf: &[u8], listed: &CertMatch, peer: &PeerInfo) {
        let digested = if listed.public_key {
            spki_der(leaf).unwrap_or(leaf)
        } else {
            leaf
        };
        let print = Fingerprint::of(listed.digest, digested);
        let ends = not_after(leaf);
        let now = unix_now();
        let record = Seen {
            public_key: listed.public_key,
            last_seen: now,
            addr: peer.addr,
            not_after: ends,
        };
        if let (true, Some(ends)) = (self.book.record(print, record, now), ends) {
            log::warn!(
                "{}[{}]: client certificate {:?} ({} {print}) {}: issue a new one \
                 (certrelayd ca issue or ca sign) and list it",
                peer.name,
                peer.addr,
                listed.label,
                listed.digest.config_name(),
                seen::expiry_note(ends, now)
            );
        }
    }
}

fn unix_now() -> i64 {
    i64::try_from(certrelay_shell::clock::unix_secs()).unwrap_or(i64::MAX)
}

/// Logs a warning when the relay's own certificate (`smtpd_tls_cert_file` of main.cf)
/// expires within 14 days or has expired. Read as the TLS files are read (the copy kept at
/// start when the file is root's only).
pub fn warn_server_cert(config_dir: &Path) {
    let Ok(loaded) = certrelay_shell::conf::load(config_dir) else {
        return;
    };
    let config = &loaded.config;
    let file = config.text("smtpd_tls_cert_file");
    if file.is_empty() {
        return;
    }
    let Ok(chain) = certrelay_shell::conf::read_chain(config, "smtpd_tls_cert_file") else {
        return;
    };
    let (Some(leaf), now) = (chain.first(), unix_now()) else {
        return;
    };
    if let Some(ends) = not_after(leaf) {
        if seen::expires_soon(ends, now) {
            log::warn!(
                "server certificate {file} {}: renew it with `certrelayd ca renew-server` \
                 (laptops trust the CA and the name, so nothing changes on their side)",
                seen::expiry_note(ends, now)
            );
        }
    }
}

/// list each fingerprint of relay_clientcerts (and of the enrolled map) with its digest,
/// expiry, last seen time and address
#[derive(FromArgs)]
#[argh(subcommand, name = "certs")]
pub struct CertsCmd {
    /// the CA's directory, whose issued/ folder holds copies of the certificates it issued
    /// (default: the folder of smtpd_tls_CAfile, else the -c directory)
    #[argh(option)]
    ca_dir: Option<PathBuf>,
}

/// Where listed fingerprints come from: the `relay_clientcerts` tables, and the map of
/// enrolled laptops beside the spool when there is one.
struct MapSource {
    /// The file.
    path: PathBuf,
    /// Entries that `enroll` added (a `mail_owner` file, read as untrusted).
    enrolled: bool,
}

/// The map of enrolled laptops, in the queue directory.
const ENROLLED_FILE: &str = "enrolled_clientcerts";

/// `certrelayd certs`.
pub fn certs(config_dir: &Path, cmd: CertsCmd) -> Result<(), Failure> {
    let loaded = certrelay_shell::conf::load(config_dir).map_err(Failure::Config)?;
    let config = &loaded.config;
    let queue_dir = PathBuf::from(config.text("queue_directory"));
    let owners = trusted_owners(config.text("mail_owner"));
    let mut sources: Vec<MapSource> = config
        .tables("relay_clientcerts")
        .map_err(Failure::MapSetting)?
        .into_iter()
        .map(|spec| MapSource {
            path: PathBuf::from(spec.path),
            enrolled: false,
        })
        .collect();
    let enrolled = queue_dir.join(ENROLLED_FILE);
    if enrolled.symlink_metadata().is_ok() {
        sources.push(MapSource {
            path: enrolled,
            enrolled: true,
        });
    }
    let ca_dir = cmd.ca_dir.unwrap_or_else(|| {
        let ca = config.text("smtpd_tls_CAfile");
        Path::new(ca)
            .parent()
            .filter(|p| !ca.is_empty() && !p.as_os_str().is_empty())
            .map_or_else(|| config_dir.to_owned(), Path::to_owned)
    });
    let issued = issued_copies(&ca_dir.join(ISSUED_DIR));
    let seen_path = queue_dir.join(SEEN_FILE);
    let (records, seen_note) = match read_claim(&seen_path, &owners, SEEN_MAX_BYTES) {
        Ok(text) => {
            let got = seen::parse(&text);
            let note = (got.bad_lines > 0).then(|| {
                format!(
                    "{}: {} unreadable line(s) skipped",
                    seen_path.display(),
                    got.bad_lines
                )
            });
            (got.records, note)
        }
        Err(ClaimError::Open(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            (HashMap::new(), None)
        }
        Err(why) => (
            HashMap::new(),
            Some(format!("{}: {why}; not read", seen_path.display())),
        ),
    };
    let now = unix_now();
    let mut out = String::new();
    let mut count = 0;
    for source in &sources {
        let text = if source.enrolled {
            read_claim(&source.path, &owners, SEEN_MAX_BYTES).map_err(|e| e.to_string())
        } else {
            std::fs::read_to_string(&source.path).map_err(|e| e.to_string())
        };
        let text = match text {
            Ok(t) => t,
            Err(why) => {
                out.push_str(&format!("{}: {why}; not read\n", source.path.display()));
                continue;
            }
        };
        let file = source.path.display().to_string();
        let (table, _) = Table::parse(&file, &text);
        for entry in table.entries() {
            let Ok(print) = entry.key.parse::<Fingerprint>() else {
                continue;
            };
            count += 1;
            out.push_str(&describe(
                &print,
                &entry.value,
                &format!(
                    "{file}:{}{}",
                    entry.line,
                    if source.enrolled { " (enrolled)" } else { "" }
                ),
                records.get(&print),
                issued.get(&print),
                now,
            ));
        }
    }
    if let Some(note) = seen_note {
        out.push_str(&format!("warning: {note}\n"));
    }
    if count == 0 {
        out.push_str("no fingerprint is listed\n");
    }
    print!("{out}");
    Ok(())
}

/// The accounts whose files beside the spool are believed: root, `mail_owner`, and the one
/// running this command (a relay run without root writes as its own account).
fn trusted_owners(mail_owner: &str) -> Vec<u32> {
    let mut owners = vec![0, nix::unistd::Uid::effective().as_raw()];
    if let Ok(Some(user)) = nix::unistd::User::from_name(mail_owner) {
        owners.push(user.uid.as_raw());
    }
    owners
}

/// What a copy of an issued certificate says: whether the listed digest is its public
/// key's, and its end of validity.
#[derive(Clone, Copy)]
struct IssuedCopy {
    public_key: bool,
    not_after: Option<i64>,
}

/// The most issued copies read, and the largest one.
const ISSUED_MAX_FILES: usize = 10_000;
const ISSUED_MAX_BYTES: u64 = 64 * 1024;

/// Every digest (each kind, of the certificate and of its public key) of the copies under
/// `dir`, mapped to what the copy says. A missing folder is none; an unreadable copy is
/// skipped.
fn issued_copies(dir: &Path) -> HashMap<Fingerprint, IssuedCopy> {
    let mut out = HashMap::new();
    let Ok(listing) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in listing.flatten().take(ISSUED_MAX_FILES) {
        let Ok(text) = read_claim(&entry.path(), &[], ISSUED_MAX_BYTES) else {
            continue;
        };
        let Some(der) = parse_certificates(text.as_bytes())
            .ok()
            .and_then(|c| c.into_iter().next())
        else {
            continue;
        };
        let ends = not_after(&der);
        let spki = spki_der(&der).unwrap_or(&der);
        for kind in [
            DigestKind::Md5,
            DigestKind::Sha1,
            DigestKind::Sha256,
            DigestKind::Sha512,
        ] {
            let copy = |public_key| IssuedCopy {
                public_key,
                not_after: ends,
            };
            out.insert(Fingerprint::of(kind, &der), copy(false));
            out.insert(Fingerprint::of(kind, spki), copy(true));
        }
    }
    out
}

/// One entry of the listing.
fn describe(
    print: &Fingerprint,
    label: &str,
    source: &str,
    seen: Option<&Seen>,
    issued: Option<&IssuedCopy>,
    now: i64,
) -> String {
    let what = match (seen.map(|s| s.public_key), issued.map(|i| i.public_key)) {
        (Some(true), _) | (None, Some(true)) => "public key",
        (Some(false), _) | (None, Some(false)) => "certificate",
        (None, None) => "certificate or public key",
    };
    let expiry = match (
        seen.and_then(|s| s.not_after),
        issued.and_then(|i| i.not_after),
    ) {
        (Some(ends), _) => format!("{} (as the relay saw it)", expiry_words(ends, now)),
        (None, Some(ends)) => format!(
            "{} (the certificate the CA issued)",
            expiry_words(ends, now)
        ),
        (None, None) => String::from("unknown (not seen yet)"),
    };
    let last = match seen {
        Some(s) => format!(
            "{} from {}",
            certrelay_shell::status::utc_text(s.last_seen),
            s.addr
        ),
        None => String::from("never"),
    };
    format!(
        "{}\n  listed: {source}\n  digest: {} {what} {print}\n  expiry: {expiry}\n  \
         last seen: {last}\n",
        printable(label),
        print.kind().config_name(),
    )
}

/// `expires ... (in N days)`, with `WARNING:` in front when within 14 days or past.
fn expiry_words(ends: i64, now: i64) -> String {
    let note = seen::expiry_note(ends, now);
    if seen::expires_soon(ends, now) {
        format!("WARNING: {note}")
    } else {
        note
    }
}

/// A label as written, control characters shown as `?` (it is printed on a terminal).
fn printable(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushes_running_together_never_trip_over_each_other() {
        let dir = std::env::temp_dir().join(format!("certrelayd-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let watch = Arc::new(Watch::at(dir.join(SEEN_FILE), HashMap::new()));
        let (threads, rounds) = (8, 100);
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let watch = watch.clone();
                std::thread::spawn(move || {
                    for r in 0..rounds {
                        let print =
                            Fingerprint::of(DigestKind::Sha256, format!("{t}/{r}").as_bytes());
                        let seen = Seen {
                            public_key: false,
                            last_seen: 1_700_000_000 + r,
                            addr: "127.0.0.1".parse().unwrap(),
                            not_after: None,
                        };
                        watch.book.record(print, seen, 1_700_000_000);
                        // Sharing the temporary file's name, an unserialised write can
                        // lose it to another's removal and fail its rename.
                        watch.flush_now().unwrap();
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        watch.flush_now().unwrap();
        let text = std::fs::read_to_string(dir.join(SEEN_FILE)).unwrap();
        let got = seen::parse(&text);
        assert_eq!(got.bad_lines, 0);
        assert_eq!(got.records.len(), threads * rounds as usize);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
