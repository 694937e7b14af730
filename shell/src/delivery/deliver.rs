//! Delivering a group of messages to one next hop: servers in order, one connection
//! carrying as many messages as it can.
//!
//! - A server that cannot be reached, or fails before it is ready (4xx greeting, TLS
//!   required but not offered, certificate not verified), passes the remaining messages
//!   to the next server.
//! - A connection the server closes between messages ([`Closing::Dropped`]) is reopened
//!   for the next message; it counts against no message.
//! - A TLS handshake that fails at level `may` ([`Closing::RetryWithoutTls`]) is retried
//!   once in plaintext on the same server.
//! - Messages no server took are deferred with the last failure.
//! - With a [`ConnectionCache`], a connection left idle goes there, and the next delivery
//!   to the same server takes it; one the server closed meanwhile is replaced by a new
//!   one, at no message's cost.

use crate::clock::Clock;
use crate::delivery::conn_cache::ConnectionCache;
use crate::delivery::connection::{ClientTls, SendError, SmtpConnection, BODY_CHUNK};
use crate::delivery::route::{Candidate, ServerAddr};
use crate::spool::Spool;
use certrelay_core::cert::CertName;
use certrelay_core::client::{
    header_is_ascii, ClientError, Closing, DeliveryStatus, Envelope, Outcome,
};
use certrelay_core::settings::ClientSettings;
use certrelay_core::tls_policy::{self, CertNameQuery, TlsLevel};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One message for one next hop.
#[derive(Clone, Debug)]
pub struct DeliveryJob {
    /// Sender and the recipients at this next hop.
    pub envelope: Envelope,
    /// The message content.
    pub message: MessageSource,
    /// A header field written before the content (the relay's DKIM signature, made at
    /// receipt and kept in the envelope record); `None` for none.
    pub prepend: Option<Arc<str>>,
}

/// Where a job's message content is read from.
#[derive(Clone, Debug)]
pub enum MessageSource {
    /// A message in the spool (its content read whole, or in chunks when large; see
    /// `read_spooled`).
    Spooled {
        /// The spool.
        spool: Spool,
        /// The message's queue id.
        id: String,
    },
    /// The content just received, still in memory (the same bytes the spool file holds).
    Memory(Arc<HeldBody>),
}

/// Most bytes of memory (buffer capacities, not only contents) held at once for
/// [`MessageSource::Memory`]: past it, new messages are read back from their spool files.
/// Small enough that a delivery falling behind adds little to the relay's peak memory
/// (an earlier 4 MiB counted by content raised the peak PSS with 100 KiB messages to
/// 15.6 MiB, against 5.9 MiB with only small messages held). Held contents are cut to
/// their size, so 768 KiB holds seven 100 KiB messages, as 1 MiB of write buffers did; 1 MiB
/// of contents cut to size ran at the same speed with 0.36 MiB more peak memory.
pub const MEMORY_BODY_BUDGET: usize = 768 * 1024;

/// Largest message content held in memory. Larger ones are read back from the spool, in
/// one more trip to the blocking pool and a copy of the file.
pub const MEMORY_BODY_MAX: usize = 128 * 1024;

/// Largest spooled content read whole before it is sent (one trip to the blocking pool);
/// larger ones are streamed in [`BODY_CHUNK`]s, a trip each.
const READ_WHOLE_MAX: u64 = 256 * 1024;

/// Bytes held by every [`HeldBody`] alive.
static MEMORY_BODIES: AtomicUsize = AtomicUsize::new(0);

/// A message's content kept in memory after it was written to the spool, so that its
/// first delivery reads no file: at most [`MEMORY_BODY_MAX`] bytes each, counted against
/// [`MEMORY_BODY_BUDGET`] while alive.
#[derive(Debug)]
pub struct HeldBody {
    bytes: Vec<u8>,
}

impl HeldBody {
    /// Holds `bytes` if they are small enough and the budget allows, else gives them back.
    /// Their buffer goes to the spare buffers ([`crate::io::recycle_buffer`]) once the
    /// content is no longer needed.
    pub fn keep(bytes: Vec<u8>) -> Result<Arc<HeldBody>, Vec<u8>> {
        if bytes.len() > MEMORY_BODY_MAX {
            return Err(bytes);
        }
        let len = bytes.capacity();
        let taken = MEMORY_BODIES.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            (held + len <= MEMORY_BODY_BUDGET).then_some(held + len)
        });
        match taken {
            Ok(_) => Ok(Arc::new(HeldBody { bytes })),
            Err(_) => Err(bytes),
        }
    }

    /// The content.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for HeldBody {
    fn drop(&mut self) {
        MEMORY_BODIES.fetch_sub(self.bytes.capacity(), Ordering::AcqRel);
        crate::io::recycle_buffer(std::mem::take(&mut self.bytes));
    }
}

/// What happened to one recipient of a job, and at which server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientFate {
    /// Sent, deferred or bounced, with the reason.
    pub outcome: Outcome,
    /// The server that answered, `None` when none was reached (log `relay=none`).
    pub server: Option<ServerAddr>,
}

/// The TLS level for a server of a next hop (the per-site policy, resolved elsewhere).
pub type TlsLevelFor = Arc<dyn Fn(&Candidate) -> TlsLevel + Send + Sync>;

/// What every delivery of a queue run shares.
#[derive(Clone)]
pub struct DeliveryContext {
    /// EHLO name, timeouts; its `tls_level` is the default level.
    pub settings: ClientSettings,
    /// TLS configuration and trust anchors.
    pub tls: ClientTls,
    /// Longest wait for a TCP connection.
    pub connect_timeout: Duration,
    /// The level per server; `None` uses `settings.tls_level` everywhere.
    pub tls_level: Option<TlsLevelFor>,
    /// The sessions' clock.
    pub clock: Clock,
    /// Where idle connections wait for the next delivery; `None`: QUIT at once.
    pub cache: Option<ConnectionCache>,
}

impl DeliveryContext {
    fn settings_for(&self, candidate: &Candidate) -> ClientSettings {
        let mut settings = self.settings.clone();
        if let Some(check) = &mut settings.self_check {
            check.nexthop.clone_from(&candidate.nexthop);
        }
        if let Some(level) = &self.tls_level {
            settings.tls_level = level(candidate);
        }
        if candidate.implicit_tls && settings.tls_level < TlsLevel::Encrypt {
            // TLS from the first byte is encryption whatever the level says, and its
            // failure never falls back to plaintext: `encrypt` is what it is.
            settings.tls_level = TlsLevel::Encrypt;
        }
        settings
    }
}

/// The names the server certificate of `candidate` may present at the level of `settings`
/// (none below `verify`): at `secure` the next-hop domain per `smtp_tls_secure_cert_match`,
/// never a name learned from MX; at `verify` per `smtp_tls_verify_cert_match`.
fn cert_names(settings: &ClientSettings, candidate: &Candidate) -> Vec<CertName> {
    tls_policy::cert_names(&CertNameQuery {
        level: settings.tls_level,
        nexthop: &candidate.nexthop_domain,
        host: &candidate.server.name,
        host_from_mx: candidate.host_from_mx,
        secure_match: &settings.secure_cert_match,
        verify_match: &settings.verify_cert_match,
    })
}

/// The last reason the remaining messages could not go.
struct Failure {
    outcome: Outcome,
    server: Option<ServerAddr>,
}

/// Delivers `jobs` to the first of `candidates` that takes them; returns one fate per
/// recipient of each job, in job and recipient order.
pub async fn deliver(
    candidates: &[Candidate],
    jobs: &[DeliveryJob],
    ctx: &DeliveryContext,
) -> Vec<Vec<RecipientFate>> {
    let mut results: Vec<Option<Vec<RecipientFate>>> = vec![None; jobs.len()];
    let mut queue: VecDeque<usize> = (0..jobs.len()).collect();
    let mut failure = Failure {
        outcome: Outcome::local(DeliveryStatus::Deferred, "4.4.1", "no server to deliver to"),
        server: None,
    };
    for candidate in candidates {
        if queue.is_empty() {
            break;
        }
        if let Err(f) = use_server(candidate, jobs, &mut queue, &mut results, ctx).await {
            let looped = loops_back(&f.outcome);
            failure = f;
            if looped {
                // The next hop is this host: no other server of it is tried.
                break;
            }
        }
    }
    for i in queue {
        results[i] = Some(same_fate(
            &jobs[i],
            &failure.outcome,
            failure.server.clone(),
        ));
    }
    results
        .into_iter()
        .zip(jobs)
        .map(|(r, job)| {
            r.unwrap_or_else(|| {
                let unknown =
                    Outcome::local(DeliveryStatus::Deferred, "4.3.0", "delivery status unknown");
                same_fate(job, &unknown, None)
            })
        })
        .collect()
}

/// Delivers queued jobs through one server, reconnecting after a clean drop; `Err` when
/// the server failed and the rest should go to the next one.
async fn use_server(
    candidate: &Candidate,
    jobs: &[DeliveryJob],
    queue: &mut VecDeque<usize>,
    results: &mut [Option<Vec<RecipientFate>>],
    ctx: &DeliveryContext,
) -> Result<(), Failure> {
    let server = &candidate.server;
    let mut settings = ctx.settings_for(candidate);
    let mut plaintext_retried = false;
    let mut cache = ctx.cache.as_ref();
    while !queue.is_empty() {
        let names = cert_names(&settings, candidate);
        // A connection is reused only for what it was checked for: a certificate verified
        // for one next hop's names proves nothing about another's.
        let key = format!(
            "{server} {:?} {names:?} implicit={}",
            settings.tls_level, candidate.implicit_tls
        );
        let cached = match cache {
            Some(cache) => take_live(cache, &key).await,
            None => None,
        };
        let (mut conn, reused) = match cached {
            Some(conn) => (conn, true),
            None => match open_ready(candidate, &settings, names, ctx).await {
                Ok(conn) => (conn, false),
                Err(NotReady::Ended(Closing::RetryWithoutTls(o))) if !plaintext_retried => {
                    log::info!("{server}: {}; trying again without TLS", o.reason);
                    settings.tls_level = TlsLevel::None;
                    plaintext_retried = true;
                    continue;
                }
                Err(NotReady::Ended(closing)) => return Err(failed(closing, server)),
                // Logged with `relay=none`: no server answered.
                Err(NotReady::Unreachable(outcome)) => {
                    return Err(Failure {
                        outcome,
                        server: None,
                    })
                }
            },
        };
        // A cached connection is only known to be alive once it carried a message.
        let mut untried_reuse = reused;
        // Messages through this connection until the queue is empty or the server drops us.
        loop {
            let Some(i) = queue.pop_front() else {
                match cache {
                    Some(cache) => cache.park(key, conn),
                    None => {
                        conn.quit().await;
                    }
                }
                return Ok(());
            };
            match send_one(&mut conn, &jobs[i]).await {
                Ok(fates) => results[i] = Some(fates),
                Err(closing) if untried_reuse => {
                    // Closed while it waited in the cache: a new connection, no blame.
                    log::debug!("{server}: cached connection gone ({closing:?}); reconnecting");
                    queue.push_front(i);
                    cache = None;
                    break;
                }
                Err(closing) => {
                    queue.push_front(i);
                    return Err(failed(closing, server));
                }
            }
            untried_reuse = false;
            match conn.ready().await {
                Ok(()) => {}
                Err(Closing::Dropped(o)) => {
                    log::info!("{server}: {}; reconnecting", o.reason);
                    break;
                }
                Err(closing) => return Err(failed(closing, server)),
            }
        }
    }
    Ok(())
}

/// A cached connection for `key` that the server has not closed meanwhile.
async fn take_live(cache: &ConnectionCache, key: &str) -> Option<SmtpConnection> {
    while let Some(mut conn) = cache.take(key) {
        if conn.still_open().await {
            return Some(conn);
        }
    }
    None
}

/// Why a new connection is not ready for mail.
enum NotReady {
    /// No TCP connection.
    Unreachable(Outcome),
    /// The session ended before it was ready (greeting, EHLO, TLS).
    Ended(Closing),
}

/// A new connection to `candidate`'s server, through its greeting, EHLO and TLS.
async fn open_ready(
    candidate: &Candidate,
    settings: &ClientSettings,
    names: Vec<CertName>,
    ctx: &DeliveryContext,
) -> Result<SmtpConnection, NotReady> {
    let conn = SmtpConnection::open(
        &candidate.server,
        settings.clone(),
        names,
        &ctx.tls,
        ctx.connect_timeout,
        ctx.clock,
        candidate.implicit_tls,
    )
    .await
    .map_err(|e| {
        log::info!("{e}");
        NotReady::Unreachable(e.outcome())
    })?;
    conn.ready().await.map_err(NotReady::Ended)
}

/// A spooled message's content, as [`read_spooled`] gives it.
enum Content {
    /// Read whole, in the same trip to the blocking pool as the open.
    Whole(Vec<u8>),
    /// Larger than [`READ_WHOLE_MAX`]: to be read in chunks while sending; with whether
    /// its header section is ASCII (looked at only for a message that asked for SMTPUTF8).
    Stream(std::io::Take<std::fs::File>, bool),
}

/// Most octets of a streamed message read to see whether its header section is ASCII.
const HEADER_SCAN_MAX: u64 = certrelay_core::message::HEADER_LIMIT as u64;

/// Opens message `id` and, up to [`READ_WHOLE_MAX`], reads its content, in one trip to the
/// blocking pool.
async fn read_spooled(spool: &Spool, id: &str, envelope: &Envelope) -> std::io::Result<Content> {
    // Allocated here rather than on the blocking pool: buffers taken from the pool
    // threads' malloc arenas and freed here kept the relay's memory 2 MiB higher under
    // load with 100 KiB messages.
    // A spare buffer when there is one: a 100 KiB buffer asked for and given back per
    // message costs a mapping and an unmapping each with musl's allocator.
    let expected = envelope.body_size.filter(|&size| size <= READ_WHOLE_MAX);
    let mut bytes = crate::io::spare_buffer();
    bytes.reserve_exact(expected.unwrap_or(0) as usize);
    let (spool, id) = (spool.clone(), id.to_owned());
    let smtputf8 = envelope.smtputf8;
    smol::unblock(move || {
        let mut content = spool.open_message(&id)?;
        if content.limit() > READ_WHOLE_MAX {
            let mut ascii = true;
            if smtputf8 {
                let mut head = Vec::new();
                let mut file = std::io::Read::take(spool.open_message(&id)?, HEADER_SCAN_MAX);
                std::io::Read::read_to_end(&mut file, &mut head)?;
                ascii = header_is_ascii(&head);
            }
            return Ok(Content::Stream(content, ascii));
        }
        std::io::Read::read_to_end(&mut content, &mut bytes)?;
        Ok(Content::Whole(bytes))
    })
    .await
}

/// One message over an open, ready connection. `Err` only when the connection ended
/// without a report for it (so it can go elsewhere).
async fn send_one(
    conn: &mut SmtpConnection,
    job: &DeliveryJob,
) -> Result<Vec<RecipientFate>, Closing> {
    let server = conn.server().clone();
    let mut envelope = job.envelope.clone();
    // The DKIM-Signature field signed at receipt, written before the content (ASCII).
    let prepend = job.prepend.as_deref().unwrap_or_default().as_bytes();
    // Only a message that asked for SMTPUTF8 needs to know (Envelope::requires_smtputf8).
    let mut note_header = |content: &[u8]| {
        envelope.utf8_header = envelope.smtputf8 && !header_is_ascii(content);
        envelope.clone()
    };
    let sent = match &job.message {
        MessageSource::Memory(body) if prepend.is_empty() => {
            let envelope = note_header(body.bytes());
            conn.send_whole(envelope, body.bytes()).await
        }
        MessageSource::Memory(body) => {
            let envelope = note_header(body.bytes());
            conn.send_whole(envelope, &[prepend, body.bytes()].concat())
                .await
        }
        MessageSource::Spooled { spool, id } => {
            match read_spooled(spool, id, &job.envelope).await {
                Ok(Content::Whole(mut bytes)) => {
                    let envelope = note_header(&bytes);
                    if !prepend.is_empty() {
                        bytes.splice(0..0, prepend.iter().copied());
                    }
                    let sent = conn.send_whole(envelope, &bytes).await;
                    crate::io::recycle_buffer(bytes);
                    sent
                }
                Ok(Content::Stream(content, header_ascii)) => {
                    envelope.utf8_header = envelope.smtputf8 && !header_ascii;
                    // Not smol::fs::File: it reads through an 8 MiB pipe per open file, which
                    // cost an 8 MiB allocation per message delivered.
                    let content = smol::Unblock::with_capacity(BODY_CHUNK, content);
                    let mut content = smol::io::AsyncReadExt::chain(prepend, content);
                    conn.send(envelope, &mut content).await
                }
                Err(e) => {
                    let path = spool.message_path(id);
                    let reason = format!("cannot read message file {}: {e}", path.display());
                    log::error!("{reason}");
                    let outcome = Outcome::local(DeliveryStatus::Deferred, "4.3.0", reason);
                    return Ok(same_fate(job, &outcome, None));
                }
            }
        }
    };
    match sent {
        Ok(report) => Ok(report
            .recipients
            .into_iter()
            .map(|r| RecipientFate {
                server: Some(server.clone()),
                outcome: r.outcome,
            })
            .collect()),
        Err(SendError::Refused(ClientError::BadAddress(a))) => {
            let reason = format!("bad address syntax: \"{a}\"");
            let outcome = Outcome::local(DeliveryStatus::Bounced, "5.1.3", reason);
            Ok(same_fate(job, &outcome, None))
        }
        Err(SendError::Refused(e)) => {
            let outcome = Outcome::local(DeliveryStatus::Deferred, "4.3.0", e.to_string());
            Ok(same_fate(job, &outcome, None))
        }
        Err(SendError::Closed(closing)) => Err(closing),
    }
}

/// True for the outcome of a server that turned out to be this very host.
pub fn loops_back(outcome: &Outcome) -> bool {
    outcome.status == DeliveryStatus::Bounced && outcome.dsn == "5.4.6"
}

fn failed(closing: Closing, server: &ServerAddr) -> Failure {
    let outcome = match closing {
        Closing::Failed(o) | Closing::Dropped(o) | Closing::RetryWithoutTls(o) => o,
        Closing::Done => Outcome::local(
            DeliveryStatus::Deferred,
            "4.4.2",
            format!("conversation with {} ended early", server.peer()),
        ),
    };
    log::info!("{server}: {}", outcome.reason);
    Failure {
        outcome,
        server: Some(server.clone()),
    }
}

fn same_fate(
    job: &DeliveryJob,
    outcome: &Outcome,
    server: Option<ServerAddr>,
) -> Vec<RecipientFate> {
    job.envelope
        .recipients
        .iter()
        .map(|_| RecipientFate {
            outcome: outcome.clone(),
            server: server.clone(),
        })
        .collect()
}
