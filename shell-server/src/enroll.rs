//! Pairing and renewal on the relay: `certrelayd enroll NAME` (root) makes a one-time code,
//! and the running relay answers `XCERTRELAY` with the CA of `certrelay_enroll_ca_cert_file`
//! (read before the privilege drop), lists what it signs in its enrolled table and reloads.
//!
//! Failed codes are counted per client address (an IPv6 client by its /64) in memory: past
//! [`ATTEMPT_LIMIT`] within [`ATTEMPT_WINDOW`], further tries get a 4xx and a log line. A
//! code is not burnt after failures: nothing in a wrong secret says which code it aimed at,
//! so burning would mean burning every pending code, which hands any client a way to stop
//! all pairing, while 40 bits of secret against 5 tries an hour per address, for a code
//! that lives minutes, leave guessing hopeless.
//!
//! Renewals are bounded twice: the enrolled table keeps, of a label's entries, only the
//! certificate that asked and the one just signed ([`enrolled::list_renewal`]), and a label
//! gets at most [`RENEW_LIMIT`] certificates within [`RENEW_WINDOW`] (counted in memory).
//!
//! Not here: the dialogue (core's session), signing and the files ([`certrelay_shell::pki`]),
//! the `enroll` command (`enroll_cmd`).

use certrelay_core::config::{Config, Diagnostic, Location};
use certrelay_core::enroll::{EnrollAnswer, EnrollRequest, RequestKind, Secret};
use certrelay_core::fingerprint::{DigestKind, Fingerprint};
use certrelay_shell::pki::enroll::{EnrollCa, Signed};
use certrelay_shell::pki::enrolled::{self, Redeemed};
use certrelay_shell::smtpd::enroll::{AnswerFuture, Enroller};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failed codes from one address before it is refused for a while.
pub const ATTEMPT_LIMIT: u32 = 5;
/// How long failures are remembered.
pub const ATTEMPT_WINDOW: Duration = Duration::from_secs(3600);
/// Renewals signed for one label before further ones are refused for a while.
pub const RENEW_LIMIT: u32 = 4;
/// How long renewals are counted.
pub const RENEW_WINDOW: Duration = Duration::from_secs(3600);

/// The parameter that turns enrollment on.
pub const CA_CERT: &str = "certrelay_enroll_ca_cert_file";
pub const CA_KEY: &str = "certrelay_enroll_ca_key_file";
pub const LIFETIME: &str = "certrelay_enroll_cert_lifetime";
const GRACE: &str = "certrelay_enroll_grace_time";

/// True when `certrelay_enroll_ca_cert_file` names a CA.
pub fn enabled(config: &Config) -> bool {
    !config.text(CA_CERT).trim().is_empty()
}

/// The enrollment parameters the service reads once, at start (the CA's key as root):
/// their values as one text, so that a reload can tell whether they changed.
pub fn read_at_start(config: &Config) -> String {
    [CA_CERT, CA_KEY, LIFETIME, GRACE]
        .iter()
        .map(|name| format!("{name}={}\n", config.text(name).trim()))
        .collect()
}

/// The enrolled table of this configuration's queue directory.
pub fn enrolled_map(config: &Config) -> PathBuf {
    enrolled::enrolled_map(&queue_directory(config))
}

/// The queue directory as this process reaches it: `.` once the relay works from inside it
/// (the folders above may be closed to `mail_owner`), else the configured path.
fn queue_directory(config: &Config) -> PathBuf {
    if certrelay_shell::spool::in_queue_directory() {
        PathBuf::from(".")
    } else {
        PathBuf::from(config.text("queue_directory"))
    }
}

/// The CA's key file: `certrelay_enroll_ca_key_file`, else the certificate's file.
pub(crate) fn ca_key_path(config: &Config) -> PathBuf {
    match config.text(CA_KEY).trim() {
        "" => PathBuf::from(config.text(CA_CERT).trim()),
        key => PathBuf::from(key),
    }
}

/// The clock's Unix seconds as the tables and code files write them.
pub(crate) fn unix_now() -> i64 {
    i64::try_from(certrelay_shell::clock::unix_secs()).unwrap_or(i64::MAX)
}

/// What `check` says about enrollment: whether the CA can be used (when this account can
/// read its key), the enrolled table, pending codes, and renewals of `relay_clientcerts`
/// entries that wait for the operator.
pub fn check(config: &Config) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let map = enrolled_map(config);
    let text = std::fs::read_to_string(&map).unwrap_or_default();
    let at = Location::new(&map.display().to_string(), 0);
    for r in enrolled::renewals(&text)
        .iter()
        .filter(|r| r.until.is_none())
    {
        diags.push(Diagnostic::warning(
            &at,
            format!(
                "{} in relay_clientcerts was renewed as {}: remove the old one with \
                 `certrelayd revoke {}` once the laptop uses the new one",
                r.old, r.new, r.old
            ),
        ));
    }
    if !enabled(config) {
        return diags;
    }
    let cert = PathBuf::from(config.text(CA_CERT).trim());
    let key = ca_key_path(config);
    match EnrollCa::load(&cert, &key) {
        Ok(_) => {}
        // A reload as mail_owner cannot read root's CA key: the relay kept the one read
        // at start.
        Err(certrelay_shell::pki::PkiError::Io { err, .. })
            if err.kind() == std::io::ErrorKind::PermissionDenied => {}
        Err(e) => diags.push(config.problem(CA_CERT, format!("cannot enroll laptops: {e}"))),
    }
    for name in [LIFETIME, GRACE] {
        if let Err(d) = config.time(name) {
            diags.push(d);
        }
    }
    for spec in config.tables("relay_clientcerts").unwrap_or_default() {
        let table = std::fs::read_to_string(&spec.path).unwrap_or_default();
        diags.extend(shared_labels(&spec.path, &table));
    }
    let entries = enrolled::entries(&text).len();
    let pending = enrolled::pending_codes(Path::new(config.text("queue_directory")), unix_now());
    diags.push(Diagnostic::notice(
        &config.location(CA_CERT),
        format!(
            "enrollment on: signs with {} (key {}); enrolled table {} ({entries} entries); \
             {} code(s) pending",
            cert.display(),
            key.display(),
            map.display(),
            pending.len()
        ),
    ));
    diags
}

/// Labels that name more than one certificate in root's table `path` (whose text is
/// `table`), at the line of each one's first entry: of the laptops under one label, only the
/// first to renew through the relay gets a new certificate, the others' renewals being
/// refused ([`enrolled::list_renewal`]).
fn shared_labels(path: &str, table: &str) -> Vec<Diagnostic> {
    let listed = certrelay_shell::pki::listed(table);
    let mut diags = Vec::new();
    for (i, first) in listed.iter().enumerate() {
        let under = |l: &certrelay_shell::pki::Listed| l.label == first.label;
        // Once per label, at its first entry.
        if listed[..i].iter().any(under) {
            continue;
        }
        let n = listed.iter().filter(|l| under(l)).count();
        if n > 1 {
            diags.push(Diagnostic::warning(
                &Location::new(path, u32::try_from(first.line).unwrap_or(u32::MAX)),
                format!(
                    "the label {:?} names {n} certificates: of the laptops under it, only the \
                     first to renew through the relay gets a new certificate, the others' \
                     renewals are refused; give each laptop a label of its own",
                    first.label
                ),
            ));
        }
    }
    diags
}

/// Failed codes per address, in memory.
#[derive(Default)]
struct Attempts {
    by_client: HashMap<IpAddr, (u32, Instant)>,
}

impl Attempts {
    /// The address failures are counted under: an IPv6 client by its /64.
    fn key(addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V6(v6) => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(octets.into())
            }
            v4 => v4,
        }
    }

    fn blocked(&mut self, addr: IpAddr, now: Instant) -> bool {
        self.by_client
            .retain(|_, (_, since)| now.duration_since(*since) < ATTEMPT_WINDOW);
        self.by_client
            .get(&Self::key(addr))
            .is_some_and(|(count, _)| *count >= ATTEMPT_LIMIT)
    }

    /// Counts a try from `addr` before its code is looked up (so that tries in parallel
    /// connections are counted too), unless the address is blocked: then `false`.
    fn try_one(&mut self, addr: IpAddr, now: Instant) -> bool {
        if self.blocked(addr, now) {
            return false;
        }
        let entry = self.by_client.entry(Self::key(addr)).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        true
    }

    /// Takes back the try counted for `addr`: its code was good.
    fn succeeded(&mut self, addr: IpAddr) {
        if let Some(entry) = self.by_client.get_mut(&Self::key(addr)) {
            entry.0 = entry.0.saturating_sub(1);
        }
    }
}

/// Renewals per label, in memory: how many within the window, and which labels have one
/// under way.
#[derive(Default)]
struct RenewCounts {
    by_label: HashMap<String, (u32, Instant)>,
    under_way: std::collections::HashSet<String>,
}

/// Why a renewal may not start now.
#[derive(Debug, PartialEq, Eq)]
enum NotNow {
    /// [`RENEW_LIMIT`] renewals within [`RENEW_WINDOW`] already.
    Limit,
    /// Another renewal of the label is being signed and listed: two at once would each
    /// replace the other's certificate, and one laptop would keep one no longer listed.
    UnderWay,
}

impl RenewCounts {
    /// Counts a renewal of `label` and marks it under way, before anything is signed, so
    /// that renewals asked for at the same moment cannot pass the limit together; `Err`
    /// when none may start now. [`RenewCounts::ended`] must follow.
    fn begin(&mut self, label: &str, now: Instant) -> Result<(), NotNow> {
        self.by_label
            .retain(|_, (_, since)| now.duration_since(*since) < RENEW_WINDOW);
        if self.under_way.contains(label) {
            return Err(NotNow::UnderWay);
        }
        let entry = self.by_label.entry(label.to_string()).or_insert((0, now));
        if entry.0 >= RENEW_LIMIT {
            return Err(NotNow::Limit);
        }
        entry.0 += 1;
        self.under_way.insert(label.to_string());
        Ok(())
    }

    /// The renewal of `label` begun last ended; `issued` false gives its count back (the
    /// request was refused or the table could not be written: nothing was listed).
    fn ended(&mut self, label: &str, issued: bool) {
        self.under_way.remove(label);
        if !issued {
            if let Some(entry) = self.by_label.get_mut(label) {
                entry.0 = entry.0.saturating_sub(1);
            }
        }
    }
}

/// Why a certificate was not issued once the request was let through: the signer refused
/// the request, or the table could not be written.
enum IssueFailure {
    Request(String),
    Table(certrelay_shell::pki::PkiError),
}

/// Asks the serving loop to reload and tells when it has.
pub type ReloadRequests = smol::channel::Sender<smol::channel::Sender<()>>;

/// The running relay's enrollment service.
pub struct Service {
    ca: EnrollCa,
    queue_directory: PathBuf,
    lifetime: Duration,
    grace: Duration,
    attempts: Mutex<Attempts>,
    renewals: Mutex<RenewCounts>,
    /// Serialises edits of the enrolled table.
    edits: Mutex<()>,
    /// Renewals whose old certificate goes at the new one's first use: (new, until).
    pending: Mutex<Vec<(Fingerprint, i64)>>,
    reload: ReloadRequests,
}

impl Service {
    /// The service of `config`, when enrollment is on: reads the CA (as root, before the
    /// privilege drop). `Err` says why it cannot start.
    pub fn from_config(
        config: &Config,
        reload: ReloadRequests,
    ) -> Result<Option<Arc<Service>>, String> {
        if !enabled(config) {
            return Ok(None);
        }
        let cert = PathBuf::from(config.text(CA_CERT).trim());
        let ca = EnrollCa::load(&cert, &ca_key_path(config))
            .map_err(|e| format!("{CA_CERT}: cannot enroll laptops: {e}"))?;
        let lifetime = config.time(LIFETIME).map_err(|d| d.to_string())?;
        let grace = config.time(GRACE).map_err(|d| d.to_string())?;
        let service = Service {
            ca,
            // The service runs after the relay entered its queue directory.
            queue_directory: PathBuf::from("."),
            lifetime,
            grace,
            attempts: Mutex::default(),
            renewals: Mutex::default(),
            edits: Mutex::default(),
            pending: Mutex::default(),
            reload,
        };
        Ok(Some(Arc::new(service)))
    }

    /// Takes back the try counted for `client` before its code was looked up: only wrong,
    /// expired and used codes count.
    fn refund(&self, client: IpAddr) {
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .succeeded(client);
    }

    fn map(&self) -> PathBuf {
        enrolled::enrolled_map(&self.queue_directory)
    }

    /// Reads the renewals awaiting the new certificate's first use from the table.
    pub fn refresh_pending(&self) {
        let text = std::fs::read_to_string(self.map()).unwrap_or_default();
        let pending = enrolled::renewals(&text)
            .into_iter()
            .filter_map(|r| r.until.map(|until| (r.new, until)))
            .collect();
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = pending;
    }

    /// Asks for a reload and waits until it is done (at most 30 s).
    async fn reload_and_wait(&self) {
        let (done, finished) = smol::channel::bounded(1);
        if self.reload.send(done).await.is_err() {
            return;
        }
        let timeout = async {
            smol::Timer::after(Duration::from_secs(30)).await;
            log::warn!("enroll: the reload after a table change takes long; answering anyway");
        };
        smol::future::or(async { finished.recv().await.unwrap_or(()) }, timeout).await;
    }

    fn edit<T>(&self, f: impl FnOnce() -> T) -> T {
        let _guard = self.edits.lock().unwrap_or_else(|e| e.into_inner());
        let out = f();
        self.refresh_pending();
        out
    }

    async fn answer_code(
        self: Arc<Self>,
        secret: Secret,
        csr: Vec<u8>,
        client: IpAddr,
    ) -> EnrollAnswer {
        if !self
            .attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_one(client, Instant::now())
        {
            log::warn!(
                "enroll: refused from {client}: {ATTEMPT_LIMIT} failed codes within {}s",
                ATTEMPT_WINDOW.as_secs()
            );
            return EnrollAnswer::TooManyAttempts;
        }
        // The request is checked before the code, so that a bad request spends no code.
        if let Err(why) = self.ca.check(&csr) {
            log::info!("enroll: request from {client} refused: {why}");
            self.refund(client);
            return EnrollAnswer::BadRequest(why);
        }
        let service = self.clone();
        let redeemed = smol::unblock(move || {
            enrolled::redeem(&service.queue_directory, &secret.to_bytes(), unix_now())
        })
        .await;
        let (name, lifetime) = match redeemed {
            Ok(Redeemed::Valid { name, lifetime }) => {
                self.refund(client);
                (name, Duration::from_secs(lifetime))
            }
            Ok(other) => {
                let why = match other {
                    Redeemed::Expired(name) => format!("expired code for {name}"),
                    Redeemed::Used(name) => format!("code for {name} used already"),
                    _ => String::from("no such code"),
                };
                // Counted already, before the lookup.
                log::info!("enroll: code refused from {client}: {why}");
                return EnrollAnswer::CodeRefused;
            }
            Err(e) => {
                log::error!("enroll: cannot read the pending codes beside the spool: {e}");
                self.refund(client);
                return EnrollAnswer::Unavailable;
            }
        };
        let service = self.clone();
        let listed = {
            let name = name.clone();
            smol::unblock(move || -> Result<Signed, IssueFailure> {
                let signed = service
                    .ca
                    .sign(&csr, &name, lifetime)
                    .map_err(IssueFailure::Request)?;
                let map = service.map();
                service
                    .edit(|| enrolled::list(&map, &signed.fingerprint, &name))
                    .map_err(IssueFailure::Table)?;
                Ok(signed)
            })
            .await
        };
        let map = self.map();
        let signed = match listed {
            Ok(signed) => signed,
            Err(IssueFailure::Request(why)) => {
                log::warn!("enroll: cannot sign for {name} ({client}): {why}");
                return EnrollAnswer::BadRequest(why);
            }
            Err(IssueFailure::Table(e @ certrelay_shell::pki::PkiError::Duplicate { .. })) => {
                log::warn!("enroll: cannot list {name} ({client}): {e}");
                return EnrollAnswer::BadRequest(format!(
                    "{name} is paired already; the operator revokes it first"
                ));
            }
            Err(IssueFailure::Table(e)) => {
                log::error!("enroll: cannot list {name}: {e}");
                return EnrollAnswer::Unavailable;
            }
        };
        log::info!(
            "enroll: {name} paired from {client}: listed {} in {}",
            signed.fingerprint,
            map.display()
        );
        self.reload_and_wait().await;
        EnrollAnswer::Issued {
            name,
            chain_pem: signed.chain_pem,
        }
    }

    async fn answer_renewal(
        self: Arc<Self>,
        label: String,
        csr: Vec<u8>,
        client: IpAddr,
        client_cert: Option<Vec<u8>>,
    ) -> EnrollAnswer {
        let Some(cert) = client_cert else {
            return EnrollAnswer::NotRenewable(String::from("no client certificate"));
        };
        let begun = self
            .renewals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .begin(&label, Instant::now());
        match begun {
            Ok(()) => {}
            Err(NotNow::Limit) => {
                log::warn!(
                    "enroll: renewal of {label} ({client}) refused: {RENEW_LIMIT} renewals within {}s",
                    RENEW_WINDOW.as_secs()
                );
                return EnrollAnswer::NotRenewable(format!(
                    "renewed {RENEW_LIMIT} times within {}s already; try again later",
                    RENEW_WINDOW.as_secs()
                ));
            }
            Err(NotNow::UnderWay) => {
                log::warn!(
                    "enroll: renewal of {label} ({client}) refused: another renewal of it is under way"
                );
                return EnrollAnswer::NotRenewable(String::from(
                    "another renewal of this certificate's label is under way; try again later",
                ));
            }
        }
        // Ends the renewal however this function returns. Its count is given back only when
        // nothing was listed for sure (a refused request, a table not written): a session
        // dropped while the blocking pool signs and lists keeps it counted.
        struct Ending<'a> {
            counts: &'a Mutex<RenewCounts>,
            label: &'a str,
            issued: bool,
        }
        impl Drop for Ending<'_> {
            fn drop(&mut self) {
                self.counts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .ended(self.label, self.issued);
            }
        }
        let label_owned = label.clone();
        let mut ending = Ending {
            counts: &self.renewals,
            label: &label_owned,
            issued: true,
        };
        let old = Fingerprint::of(DigestKind::Sha256, &cert);
        let grace = i64::try_from(self.grace.as_secs()).unwrap_or(i64::MAX);
        let service = self.clone();
        let renewed = {
            let label = label.clone();
            smol::unblock(move || {
                let signed = service
                    .ca
                    .sign(&csr, &label, service.lifetime)
                    .map_err(IssueFailure::Request)?;
                let map = service.map();
                let until = unix_now().saturating_add(grace);
                let (edit, renewal) = service
                    .edit(|| enrolled::list_renewal(&map, &label, &old, &signed.fingerprint, until))
                    .map_err(IssueFailure::Table)?;
                Ok((signed, edit, renewal))
            })
            .await
        };
        let (signed, edit, renewal) = match renewed {
            Ok(done) => done,
            Err(IssueFailure::Request(why)) => {
                ending.issued = false;
                log::info!("enroll: renewal of {label} ({client}) refused: {why}");
                return EnrollAnswer::BadRequest(why);
            }
            Err(IssueFailure::Table(e @ certrelay_shell::pki::PkiError::SharedLabel { .. })) => {
                ending.issued = false;
                log::warn!("enroll: renewal of {label} ({client}) refused: {e}");
                return EnrollAnswer::NotRenewable(format!(
                    "the label {label} names another laptop's certificate too; the operator \
                     gives each laptop a label of its own"
                ));
            }
            Err(IssueFailure::Table(e)) => {
                ending.issued = false;
                log::error!("enroll: cannot list the renewal of {label}: {e}");
                return EnrollAnswer::Unavailable;
            }
        };
        // Listed: the count stays; the renewal is no longer under way once the reload
        // below is done (the drop at the end).
        for line in &edit.removed {
            log::info!("enroll: renewal of {label} replaces an earlier one; removed: {line}");
        }
        let old_place = if renewal.until.is_some() {
            "until the new one is used"
        } else {
            "in relay_clientcerts until the operator revokes it"
        };
        log::info!(
            "enroll: {label} renewed from {client}: listed {} beside {old} ({old_place})",
            signed.fingerprint
        );
        self.reload_and_wait().await;
        EnrollAnswer::Issued {
            name: label,
            chain_pem: signed.chain_pem,
        }
    }
}

/// The service as sessions hold it.
pub struct Handle(pub Arc<Service>);

impl Enroller for Handle {
    fn answer(
        &self,
        request: EnrollRequest,
        client: IpAddr,
        client_cert: Option<Vec<u8>>,
    ) -> AnswerFuture {
        let service = self.0.clone();
        match request.kind {
            RequestKind::Code(secret) => {
                Box::pin(service.answer_code(secret, request.csr_der, client))
            }
            RequestKind::Renew { label } => {
                Box::pin(service.answer_renewal(label, request.csr_der, client, client_cert))
            }
        }
    }

    fn presented(&self, cert_der: &[u8]) {
        let print = Fingerprint::of(DigestKind::Sha256, cert_der);
        let now = unix_now();
        let due = self
            .0
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(new, until)| *new == print || *until <= now);
        if !due {
            return;
        }
        let service = self.0.clone();
        smol::spawn(async move {
            let map = service.map();
            let ended = {
                let service = service.clone();
                smol::unblock(move || {
                    service.edit(|| enrolled::end_renewals(&map, Some(&print), now))
                })
                .await
            };
            match ended {
                Ok(Some(edit)) => {
                    for line in &edit.removed {
                        log::info!("enroll: renewal complete; removed: {line}");
                    }
                    service.reload_and_wait().await;
                }
                Ok(None) => {}
                Err(e) => log::error!("enroll: cannot end a renewal: {e}"),
            }
        })
        .detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_shared_in_root_s_table_are_named_at_their_first_line() {
        let md5 = |n: u8| format!("{}", Fingerprint::of(DigestKind::Md5, &[n]));
        let table = format!(
            "# root's table\n{} ok\n{} alice\n\n{} ok\n{} bob\n{} ok\n",
            md5(1),
            md5(2),
            md5(3),
            md5(4),
            md5(5)
        );
        let diags = shared_labels("/etc/certrelay/relay_clientcerts", &table);
        assert_eq!(diags.len(), 1, "{diags:?}");
        let text = diags[0].to_string();
        assert!(
            text.starts_with("/etc/certrelay/relay_clientcerts:2: "),
            "{text}"
        );
        assert!(text.contains("\"ok\" names 3 certificates"), "{text}");
        assert!(shared_labels("t", &format!("{} a\n{} b\n", md5(1), md5(2))).is_empty());
    }

    /// Tries are counted before the lookup, so connections in parallel from one address get
    /// no more than the limit between them; a good code gives its try back.
    #[test]
    fn tries_are_counted_up_front_and_good_ones_given_back() {
        let mut attempts = Attempts::default();
        let (client, now) = (IpAddr::from([192, 0, 2, 7]), Instant::now());
        // All begun before any answer: the one past the limit is refused at once.
        for _ in 0..ATTEMPT_LIMIT {
            assert!(attempts.try_one(client, now));
        }
        assert!(!attempts.try_one(client, now));
        // One of them was good: one more try.
        attempts.succeeded(client);
        assert!(attempts.try_one(client, now));
        assert!(!attempts.try_one(client, now));
        // An IPv6 client is counted by its /64.
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..ATTEMPT_LIMIT {
            assert!(attempts.try_one(a, now));
        }
        assert!(!attempts.try_one(b, now));
    }

    /// A label gets RENEW_LIMIT renewals within the window, then none until it has passed;
    /// other labels are not held back.
    #[test]
    fn renewals_are_limited_per_label() {
        let mut counts = RenewCounts::default();
        let now = Instant::now();
        for _ in 0..RENEW_LIMIT {
            assert_eq!(counts.begin("alice", now), Ok(()));
            counts.ended("alice", true);
        }
        assert_eq!(counts.begin("alice", now), Err(NotNow::Limit));
        assert_eq!(counts.begin("bob", now), Ok(()));
        counts.ended("bob", true);
        assert_eq!(counts.begin("alice", now + RENEW_WINDOW), Ok(()));
    }

    /// Renewals asked for at the same moment: the second is refused until the first ends
    /// (so neither replaces the other's certificate), and they are counted before signing, so
    /// parallel requests cannot pass the limit; a refused one gives its count back.
    #[test]
    fn one_renewal_of_a_label_at_a_time_counted_before_signing() {
        let mut counts = RenewCounts::default();
        let now = Instant::now();
        assert_eq!(counts.begin("alice", now), Ok(()));
        assert_eq!(counts.begin("alice", now), Err(NotNow::UnderWay));
        assert_eq!(counts.begin("bob", now), Ok(()));
        counts.ended("alice", false);
        for _ in 0..RENEW_LIMIT {
            assert_eq!(counts.begin("alice", now), Ok(()));
            counts.ended("alice", true);
        }
        assert_eq!(counts.begin("alice", now), Err(NotNow::Limit));
    }
}
