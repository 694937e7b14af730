//! Writing received messages where they wait for delivery, and waking the queue runner
//! once one is durable.
//!
//! Two places take messages: the spool itself (the relay, whose one process owns it) and
//! the maildrop (the laptop, whose spool belongs to whoever holds the run lock; the holder
//! picks the message up at its next run). Either way the session's `250` goes out only
//! after [`Receiving::finish`] returned [`ServerEvent::MessageStored`], that is after the
//! message and its envelope were fsynced and renamed into place.

use crate::maildrop::{Dropping, Maildrop};
use crate::spool::{Incoming, Spool, SpoolError};
use certrelay_core::dsn::rfc5322_date;
use certrelay_core::facts::TlsFacts;
use certrelay_core::queue::{ClientFacts, Envelope, QueueId, Recipient};
use certrelay_core::server::{Envelope as Arrival, ServerEvent};
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Body bytes gathered before one write on the blocking pool.
const WRITE_BATCH: usize = 128 * 1024;

/// Tells the queue runner that a message was committed.
///
/// The relay forwards each one to its queue runner, the laptop to the `run` daemon's
/// delivering thread; either tries the message at once.
#[derive(Clone, Debug)]
pub struct QueueWake(smol::channel::Sender<QueueId>);

impl QueueWake {
    /// A wake-up channel: give the receiver to the runner.
    pub fn channel() -> (QueueWake, smol::channel::Receiver<QueueId>) {
        let (tx, rx) = smol::channel::unbounded();
        (QueueWake(tx), rx)
    }

    /// The message `id` is in `queue/` and due now.
    pub fn queued(&self, id: QueueId) {
        // A closed channel means no runner: the message waits for the next start.
        let _ = self.0.try_send(id);
    }
}

/// Where the sessions write.
#[derive(Clone, Debug)]
enum Target {
    Spool(Spool),
    Maildrop(Maildrop),
}

/// A message file being written in one of the two places.
#[derive(Debug)]
enum Writer {
    Spool(Incoming),
    Maildrop(Dropping),
}

impl Writer {
    fn write(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        match self {
            Writer::Spool(inc) => inc.write(bytes),
            Writer::Maildrop(d) => d.write(bytes).map_err(SpoolError::from),
        }
    }

    fn size(&self) -> u64 {
        match self {
            Writer::Spool(inc) => inc.size(),
            Writer::Maildrop(d) => d.size(),
        }
    }

    fn commit(self, envelope: &[u8]) -> Result<(), SpoolError> {
        match self {
            Writer::Spool(inc) => inc.commit(envelope),
            Writer::Maildrop(d) => d.commit(envelope).map_err(SpoolError::from),
        }
    }
}

impl Target {
    fn open(&self, id: &str) -> Result<Writer, SpoolError> {
        match self {
            Target::Spool(spool) => spool.incoming(id).map(Writer::Spool),
            Target::Maildrop(m) => m.create(id).map(Writer::Maildrop).map_err(SpoolError::from),
        }
    }
}

/// Where the sessions store messages, and whom they tell.
#[derive(Clone, Debug)]
pub struct Store {
    target: Target,
    wake: QueueWake,
}

/// Fresh ids tried when one is taken (by `sendmail` in the same maildrop).
const ID_TRIES: usize = 8;

impl Store {
    /// Writes into `spool` and tells `wake` about each committed message.
    pub fn new(spool: Spool, wake: QueueWake) -> Store {
        Store {
            target: Target::Spool(spool),
            wake,
        }
    }

    /// Writes into `maildrop` and tells `wake` about each committed message; the holder of
    /// the run lock moves it into the spool.
    pub fn maildrop(maildrop: Maildrop, wake: QueueWake) -> Store {
        Store {
            target: Target::Maildrop(maildrop),
            wake,
        }
    }

    /// Opens a queue file for a message whose DATA begins, with its `Received:` header.
    pub async fn begin(&self, arrival: Box<Arrival>) -> Receiving {
        let mut tries = 0;
        loop {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let id = QueueId::generate(now.as_secs(), unique(now.subsec_micros()));
            let target = self.target.clone();
            let name = id.as_str().to_owned();
            let opened = smol::unblock(move || target.open(&name)).await;
            let (writer, failure) = match opened {
                Ok(w) => (Some(w), None),
                Err(SpoolError::Write(e))
                    if e.kind() == io::ErrorKind::AlreadyExists && tries < ID_TRIES =>
                {
                    tries += 1;
                    continue;
                }
                Err(e) => (None, Some(e)),
            };
            log::info!(
                "{id}: client={}[{}]",
                arrival.client.name,
                arrival.client.addr
            );
            let header = arrival
                .received
                .render(Some(id.as_str()), &rfc5322_date(now.as_secs(), 0));
            return Receiving {
                store: self.clone(),
                id,
                arrival,
                writer,
                failure,
                batch: header.into_bytes(),
            };
        }
    }
}

/// Mixes the microsecond of arrival with a process counter: ids stay unique within a
/// second (the spool still creates files "create new", so a clash fails, never overwrites).
fn unique(micros: u32) -> u32 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    (micros << 12) ^ (n & 0xFFF)
}

/// A message being received.
#[derive(Debug)]
pub struct Receiving {
    store: Store,
    id: QueueId,
    arrival: Box<Arrival>,
    writer: Option<Writer>,
    failure: Option<SpoolError>,
    batch: Vec<u8>,
}

impl Receiving {
    /// Appends message content.
    pub async fn append(&mut self, bytes: &[u8]) {
        if self.writer.is_none() {
            return;
        }
        self.batch.extend_from_slice(bytes);
        if self.batch.len() >= WRITE_BATCH {
            self.write_batch().await;
        }
    }

    async fn write_batch(&mut self) {
        let Some(mut w) = self.writer.take() else {
            return;
        };
        let batch = std::mem::take(&mut self.batch);
        let (w, result) = smol::unblock(move || {
            let r = w.write(&batch);
            (w, r)
        })
        .await;
        match result {
            Ok(()) => self.writer = Some(w),
            Err(e) => self.failure = Some(e),
        }
    }

    /// Makes the message durable and says how it went, for the session.
    pub async fn finish(mut self) -> ServerEvent {
        self.write_batch().await;
        let id = self.id.clone();
        let Some(w) = self.writer.take() else {
            return self.failed();
        };
        let arrival_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let envelope = queue_envelope(&self.id, &self.arrival, arrival_secs, w.size());
        let nrcpt = envelope.recipients.len();
        let size = envelope.size;
        let record = envelope.to_text().into_bytes();
        match smol::unblock(move || w.commit(&record)).await {
            Ok(()) => {
                log::info!(
                    "{id}: from=<{}>, size={size}, nrcpt={nrcpt} (queue active)",
                    self.arrival.sender
                );
                self.store.wake.queued(id.clone());
                ServerEvent::MessageStored {
                    queue_id: id.as_str().to_owned(),
                }
            }
            Err(e) => {
                self.failure = Some(e);
                self.failed()
            }
        }
    }

    fn failed(&mut self) -> ServerEvent {
        match self.failure.take() {
            Some(e) => {
                log::warn!("{}: cannot queue the message: {e}", self.id);
                if e.is_no_space() {
                    ServerEvent::QueueFull
                } else {
                    ServerEvent::QueueWriteFailed
                }
            }
            None => ServerEvent::QueueWriteFailed,
        }
    }
}

/// The envelope record of a message just received.
fn queue_envelope(id: &QueueId, a: &Arrival, arrival_secs: u64, size: u64) -> Envelope {
    let recipients = a
        .recipients
        .iter()
        .map(|r| Recipient::new(r.to_string()))
        .collect();
    let mut env = Envelope::new(id.clone(), a.sender.to_string(), arrival_secs, recipients);
    env.size = size;
    env.is_bounce = a.sender.is_null();
    env.client = ClientFacts {
        name: a.client.name.clone(),
        addr: Some(a.client.addr),
        helo: a.helo.clone().unwrap_or_default(),
        protocol: a.protocol.to_owned(),
        tls: a.tls.as_ref().map(tls_summary).unwrap_or_default(),
    };
    env
}

/// `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`.
pub fn tls_summary(t: &TlsFacts) -> String {
    format!(
        "{} with cipher {} ({}/{} bits)",
        t.protocol, t.cipher, t.bits, t.bits
    )
}
