//! Writing received messages where they wait for delivery, and waking the queue runner
//! once one is durable.
//!
//! Two places take messages: the spool itself (the relay, whose one process owns it) and
//! the maildrop (the laptop, whose spool belongs to whoever holds the run lock; the holder
//! picks the message up at its next run). Either way the session's `250` goes out only
//! after [`Receiving::finish`] returned [`ServerEvent::MessageStored`], that is after the
//! message and its envelope were fsynced and renamed into place, and a sync of the
//! directory begun after the rename returned (in the spool, shared by the messages that
//! finish at the same moment: group commit).
//!
//! The laptop's stores also treat its own programs as Postfix treats local submissions
//! ([`LocalSubmission`]); the relay's store keeps every message as it came, and may have a
//! [`Signer`] add a header field (the relay's DKIM signature), kept in the envelope record
//! and written before the content at delivery, so the content file stays as received.

use super::tlsinfo::ListedSeen;
use crate::delivery::deliver::HeldBody;
use crate::delivery::runner::{Claim, Fresh, Handoff};
use crate::spool::maildrop::{Dropping, Maildrop};
use crate::spool::{Incoming, Spool, SpoolError};
use certrelay_core::dsn::rfc5322_date;
use certrelay_core::facts::TlsFacts;
use certrelay_core::message::{self, find_header_end, HeaderSection, LocalOrigin};
use certrelay_core::queue::{ClientFacts, Envelope, QueueId, Recipient};
use certrelay_core::server::{Envelope as Arrival, ServerEvent};
use certrelay_core::settings::ServerSettings;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Body bytes gathered before one write on the blocking pool.
const WRITE_BATCH: usize = 128 * 1024;

/// Tells the queue runner that a message was committed; it tries the message at once.
#[derive(Clone, Debug)]
pub enum QueueWake {
    /// The queue id goes to a channel (the laptop: to the `run` daemon's delivering thread,
    /// which takes it from the maildrop).
    Ids(smol::channel::Sender<QueueId>),
    /// The message goes to the relay's runner with its envelope and, when small, its
    /// content ([`Fresh`]).
    Runner(Handoff),
}

impl QueueWake {
    /// A wake-up channel of queue ids.
    pub fn channel() -> (QueueWake, smol::channel::Receiver<QueueId>) {
        let (tx, rx) = smol::channel::unbounded();
        (QueueWake::Ids(tx), rx)
    }

    /// Holds message `id` for the runner's first pass; taken before the message becomes
    /// visible in `queue/`, so that no queue run takes it first.
    fn claim(&self, id: &QueueId) -> Option<Claim> {
        match self {
            QueueWake::Runner(handoff) => handoff.claim(id.as_str()),
            QueueWake::Ids(_) => None,
        }
    }

    /// Message `id` is committed; `content` is all of it when nothing was written before
    /// the commit.
    fn committed(
        &self,
        id: QueueId,
        envelope: Envelope,
        content: Option<Vec<u8>>,
        claim: Option<Claim>,
    ) {
        match self {
            QueueWake::Runner(handoff) => handoff.committed(Fresh {
                id,
                envelope,
                body: content
                    .and_then(|c| HeldBody::keep(c).map_err(crate::io::recycle_buffer).ok()),
                claim,
            }),
            // A closed channel means no runner: the message waits for the next start.
            QueueWake::Ids(tx) => drop(tx.try_send(id)),
        }
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

/// A message's file: opened when the first bytes are written (the spool), or as soon as
/// the message begins (the maildrop, where a `sendmail` may have taken the same id and
/// another must be chosen before the id is written into the `Received:` header).
#[derive(Debug)]
enum QueueFile {
    NotOpen(Target),
    Open(Writer),
}

impl QueueFile {
    /// The open writer. Runs on the blocking pool.
    fn into_writer(self, id: &str) -> Result<Writer, SpoolError> {
        match self {
            QueueFile::NotOpen(target) => target.open(id),
            QueueFile::Open(w) => Ok(w),
        }
    }

    fn size(&self) -> u64 {
        match self {
            QueueFile::NotOpen(_) => 0,
            QueueFile::Open(w) => w.size(),
        }
    }
}

/// Where the sessions store messages, and whom they tell.
#[derive(Clone, Debug)]
pub struct Store {
    target: Target,
    wake: QueueWake,
    local: Option<Arc<LocalSubmission>>,
    signer: Option<Arc<dyn Signer>>,
    listed_seen: Option<Arc<dyn ListedSeen>>,
}

/// Decides, as each message begins, whether a header field is made for it from its content
/// (the relay's DKIM signing; the role's code implements it).
pub trait Signer: Send + Sync + std::fmt::Debug {
    /// A signing for the message that begins, or `None` when it is not to be signed.
    /// `settings` are those of the session it came in, the settings its envelope was
    /// judged by (the relay's sender maps are per listener).
    fn begin(&self, arrival: &Arrival, settings: &Arc<ServerSettings>) -> Option<Box<dyn Signing>>;
}

/// One message being signed: fed the content as it is stored.
pub trait Signing: Send + std::fmt::Debug {
    /// The next octets of the content (the `Received:` header this store adds excluded).
    fn update(&mut self, content: &[u8]);
    /// The header field to write before the message at delivery, CR LF included, or `None`
    /// (the implementation logs why, naming `queue_id`). Never fails the message.
    fn finish(self: Box<Self>, queue_id: &str) -> Option<String>;
}

/// How the laptop completes what its own mail programs submit, as Postfix does for
/// local submissions: envelope addresses without a domain get `@myorigin`, and a client
/// on loopback gets `Date:`, `Message-ID:` and `From:` added when its message lacks them.
///
/// Loopback is what Postfix's default `local_header_rewrite_clients`
/// (`permit_inet_interfaces`) covers for a listener on loopback; a message from another
/// host keeps its header as sent.
#[derive(Clone, Debug)]
pub struct LocalSubmission {
    /// `myhostname`: the right side of an added `Message-ID:`.
    pub myhostname: String,
    /// `myorigin`: the domain of unqualified addresses.
    pub myorigin: String,
}

/// Largest header section held while looking for its end; what follows is body.
use certrelay_core::message::HEADER_LIMIT;

/// Fresh ids tried when one is taken (by `sendmail` in the same maildrop).
const ID_TRIES: usize = 8;

impl Store {
    /// Writes into `spool` and tells `wake` about each committed message.
    pub fn new(spool: Spool, wake: QueueWake) -> Store {
        Store {
            target: Target::Spool(spool),
            wake,
            local: None,
            signer: None,
            listed_seen: None,
        }
    }

    /// Writes into `maildrop` and tells `wake` about each committed message; the holder of
    /// the run lock moves it into the spool.
    pub fn maildrop(maildrop: Maildrop, wake: QueueWake) -> Store {
        Store {
            target: Target::Maildrop(maildrop),
            wake,
            local: None,
            signer: None,
            listed_seen: None,
        }
    }

    /// The same store, with `signer` offered every message (the relay only).
    pub fn with_signer(mut self, signer: Arc<dyn Signer>) -> Store {
        self.signer = Some(signer);
        self
    }

    /// The same store, with `seen` told of every TLS session whose client certificate is
    /// listed (the relay only).
    pub fn with_listed_seen(mut self, seen: Arc<dyn ListedSeen>) -> Store {
        self.listed_seen = Some(seen);
        self
    }

    /// Whom to tell of TLS sessions with a listed client certificate, if anyone.
    pub fn listed_seen(&self) -> Option<&dyn ListedSeen> {
        self.listed_seen.as_deref()
    }

    /// The same store, completing messages as local submissions (the laptop only).
    pub fn with_local_submission(mut self, local: LocalSubmission) -> Store {
        self.local = Some(Arc::new(local));
        self
    }

    /// Opens a queue file for a message whose DATA begins, with its `Received:` header;
    /// `settings` are the session's.
    pub async fn begin(&self, arrival: Box<Arrival>, settings: &Arc<ServerSettings>) -> Receiving {
        let mut tries = 0;
        loop {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let id = QueueId::generate(now.as_secs(), unique(now.subsec_micros()));
            let target = self.target.clone();
            let name = id.as_str().to_owned();
            let opened = match target {
                // This process alone makes ids in the spool: the file is created with
                // the first write, with no trip to the blocking pool of its own. (An id
                // left by an earlier process in the same microsecond fails the message
                // with a 4xx; it is never overwritten.)
                Target::Spool(_) => Ok(QueueFile::NotOpen(target)),
                Target::Maildrop(_) => smol::unblock(move || target.open(&name))
                    .await
                    .map(QueueFile::Open),
            };
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
            let completing = self.local.as_ref().filter(|_| {
                // The client's own address, also when it came as ::ffff:127.0.0.1.
                arrival.client.addr.to_canonical().is_loopback()
            });
            let head = completing.map(|local| PendingHead {
                local: local.clone(),
                unix: now.as_secs(),
                text: Vec::new(),
            });
            let signing = self
                .signer
                .as_ref()
                .and_then(|s| s.begin(&arrival, settings));
            let mut batch = crate::io::spare_buffer();
            batch.extend_from_slice(header.as_bytes());
            return Receiving {
                store: self.clone(),
                id,
                arrival,
                writer,
                failure,
                batch,
                head,
                signing,
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
    /// `None` once a write failed.
    writer: Option<QueueFile>,
    failure: Option<SpoolError>,
    batch: Vec<u8>,
    /// The header section, held until its end is known, of a message to complete.
    head: Option<PendingHead>,
    /// The message's signature in the making.
    signing: Option<Box<dyn Signing>>,
}

/// The start of a local submission's content, until the header section has ended.
#[derive(Debug)]
struct PendingHead {
    local: Arc<LocalSubmission>,
    unix: u64,
    text: Vec<u8>,
}

impl Receiving {
    /// Appends message content.
    pub async fn append(&mut self, bytes: &[u8]) {
        if self.writer.is_none() {
            return;
        }
        match self.head.as_mut() {
            Some(head) => {
                head.text.extend_from_slice(bytes);
                let complete = head.text.len() > HEADER_LIMIT;
                if find_header_end(&head.text, complete).is_some() {
                    self.complete_head();
                }
            }
            None => {
                reserve_batch(&mut self.batch, bytes.len());
                self.batch.extend_from_slice(bytes);
                if let Some(s) = self.signing.as_mut() {
                    s.update(bytes);
                }
            }
        }
        if self.batch.len() >= WRITE_BATCH {
            self.write_batch().await;
        }
    }

    /// Writes the held header section with the fields it lacks, then what followed it.
    /// The session's content has CR LF line ends (the core rejects or normalises bare
    /// ones), which is what the header parser reads.
    fn complete_head(&mut self) {
        let Some(head) = self.head.take() else {
            return;
        };
        let end = find_header_end(&head.text, true).expect("complete input has an end");
        let mut header = HeaderSection::parse(&head.text[..end.header_len]);
        let sender = envelope_address(&self.arrival.sender.to_string(), Some(head.local.as_ref()));
        let origin = LocalOrigin {
            unix: head.unix,
            queue_id: self.id.as_str(),
            myhostname: &head.local.myhostname,
            sender: &sender,
            full_name: "",
        };
        message::add_missing_origin(&mut header, &origin);
        let start = self.batch.len();
        header.write_to(&mut self.batch);
        // The empty line is the text's own, or supplied when the body began without one.
        self.batch.extend_from_slice(b"\r\n");
        self.batch.extend_from_slice(&head.text[end.body_start..]);
        if let Some(s) = self.signing.as_mut() {
            s.update(&self.batch[start..]);
        }
    }

    async fn write_batch(&mut self) {
        let Some(w) = self.writer.take() else {
            return;
        };
        let batch = std::mem::take(&mut self.batch);
        let id = self.id.as_str().to_owned();
        let written = smol::unblock(move || {
            let mut w = w.into_writer(&id)?;
            w.write(&batch)?;
            Ok((w, batch))
        })
        .await;
        match written {
            Ok((w, mut batch)) => {
                // The same buffer takes the next batch.
                batch.clear();
                self.batch = batch;
                self.writer = Some(QueueFile::Open(w));
            }
            Err(e) => self.failure = Some(e),
        }
    }

    /// Makes the message durable and says how it went, for the session.
    ///
    /// What is still unwritten, the fsyncs and the renames go to the blocking pool in one
    /// trip; a small message thus costs one trip in all.
    pub async fn finish(mut self) -> ServerEvent {
        if self.writer.is_some() {
            self.complete_head();
        }
        let id = self.id.clone();
        let Some(file) = self.writer.take() else {
            return self.failed();
        };
        let batch = std::mem::take(&mut self.batch);
        // The whole content is in `batch` when nothing was written before.
        let whole = matches!(file, QueueFile::NotOpen(_));
        let arrival_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let local = self.store.local.as_deref();
        let size = file.size() + batch.len() as u64;
        let mut envelope = queue_envelope(&self.id, &self.arrival, arrival_secs, size, local);
        if let Some(signing) = self.signing.take() {
            envelope.signature = signing.finish(id.as_str()).unwrap_or_default();
        }
        let nrcpt = envelope.recipients.len();
        let record = envelope.to_text().into_bytes();
        let claim = self.store.wake.claim(&id);
        let name = id.as_str().to_owned();
        let (committed, batch) = smol::unblock(move || {
            let result = file.into_writer(&name).and_then(|mut w| {
                w.write(&batch)?;
                w.commit(&record)
            });
            (result, batch)
        })
        .await;
        if let Err(e) = committed {
            self.failure = Some(e);
            return self.failed();
        }
        log::info!(
            "{id}: from=<{}>, size={size}, nrcpt={nrcpt} (queue active)",
            self.arrival.sender
        );
        let content = if whole {
            held_content(batch)
        } else {
            crate::io::recycle_buffer(batch);
            None
        };
        self.store
            .wake
            .committed(id.clone(), envelope, content, claim);
        ServerEvent::MessageStored {
            queue_id: id.as_str().to_owned(),
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

/// Makes room for `more` octets in `batch`: past a few chunks, in one step to what a write
/// takes, instead of doubling through it (a copy each time, and the last size above the
/// one at which musl's allocator maps memory of its own).
fn reserve_batch(batch: &mut Vec<u8>, more: usize) {
    let needed = batch.len().saturating_add(more);
    if needed > batch.capacity() && needed > 16 * 1024 {
        let target = needed.max(WRITE_BATCH + 16 * 1024);
        batch.reserve_exact(target - batch.len());
    }
}

/// The content of a message written in one piece, for the runner to hold
/// ([`HeldBody`]): only a small one, in a buffer of its own size, so that a large spare
/// buffer goes back to the spares rather than being held with a few octets in it.
fn held_content(batch: Vec<u8>) -> Option<Vec<u8>> {
    if batch.len() > crate::delivery::deliver::MEMORY_BODY_MAX {
        crate::io::recycle_buffer(batch);
        return None;
    }
    if batch.capacity() <= 2 * batch.len() {
        let mut batch = batch;
        batch.shrink_to_fit();
        return Some(batch);
    }
    let held = batch.clone();
    crate::io::recycle_buffer(batch);
    Some(held)
}

/// An envelope address as queued: qualified for a local submission, else as received.
fn envelope_address(address: &str, local: Option<&LocalSubmission>) -> String {
    match local {
        Some(l) => message::qualify(address, &l.myorigin),
        None => address.to_owned(),
    }
}

/// The envelope record of a message just received.
fn queue_envelope(
    id: &QueueId,
    a: &Arrival,
    arrival_secs: u64,
    size: u64,
    local: Option<&LocalSubmission>,
) -> Envelope {
    let recipients = a
        .recipients
        .iter()
        .map(|r| Recipient::new(envelope_address(&r.to_string(), local)))
        .collect();
    let sender = envelope_address(&a.sender.to_string(), local);
    let mut env = Envelope::new(id.clone(), sender, arrival_secs, recipients);
    env.size = size;
    env.is_bounce = a.sender.is_null();
    env.smtputf8 = a.smtputf8;
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

#[cfg(test)]
mod tests {
    use super::*;
    use certrelay_core::address::parse_path;
    use certrelay_core::facts::PeerInfo;
    use certrelay_core::server::{BodyType, Received, ReceivedFacts};
    use std::net::IpAddr;

    fn arrival(from: &str, to: &str, client: IpAddr) -> Box<Arrival> {
        let peer = PeerInfo {
            addr: client,
            name: "unknown".to_owned(),
        };
        let received = Received::new(&ReceivedFacts {
            peer: &peer,
            helo: Some("client"),
            protocol: "ESMTP",
            tls: None,
            tls_details: false,
            asked_ccert: false,
            myhostname: "relay.test",
            recipients: &[to.to_owned()],
        });
        Box::new(Arrival {
            sender: parse_path(from).unwrap().0,
            recipients: vec![parse_path(to).unwrap().0],
            size_hint: None,
            smtputf8: false,
            body: BodyType::SevenBit,
            client: peer,
            helo: Some("client".to_owned()),
            protocol: "ESMTP",
            tls: None,
            received,
        })
    }

    /// Stores one message (content given in two chunks) and returns its text and envelope.
    fn store(local: bool, client: IpAddr, chunks: &[&str]) -> (String, Envelope) {
        // One directory per call: tests with the same arguments run side by side.
        static CALLS: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "certrelay-store-{}-{}",
            std::process::id(),
            CALLS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let (spool, _) = Spool::open(&dir).unwrap();
        let (wake, _rx) = QueueWake::channel();
        let mut store = Store::new(spool.clone(), wake);
        if local {
            store = store.with_local_submission(LocalSubmission {
                myhostname: "laptop.test".to_owned(),
                myorigin: "example.org".to_owned(),
            });
        }
        let event = smol::block_on(async {
            let mut r = store
                .begin(
                    arrival("<alice>", "<bob>", client),
                    &Arc::new(ServerSettings::default()),
                )
                .await;
            for c in chunks {
                r.append(c.as_bytes()).await;
            }
            r.finish().await
        });
        let ServerEvent::MessageStored { queue_id } = event else {
            panic!("not stored: {event:?}");
        };
        let text = String::from_utf8(spool.read_content(&queue_id).unwrap()).unwrap();
        let envelope = Envelope::parse(&spool.read_envelope(&queue_id).unwrap()).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (text, envelope)
    }

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const CHUNKS: [&str; 2] = ["Subject: hi\r\nX-Long: a\r\n", " b\r\n\r\nbody\r\n"];

    #[test]
    fn the_relays_store_keeps_messages_as_they_came() {
        let (text, env) = store(false, LOOPBACK, &CHUNKS);
        let content = text.split_once("Subject:").unwrap().1;
        assert_eq!(content, " hi\r\nX-Long: a\r\n b\r\n\r\nbody\r\n");
        assert_eq!(env.sender, "alice");
        assert_eq!(env.recipients[0].address, "bob");
    }

    #[test]
    fn reused_buffers_carry_nothing_from_one_message_into_the_next() {
        // 300 KiB in 8 KiB chunks, as the session hands them: two writes before the end
        // (the batch buffer is reused between them), then a small message that may be
        // given the same buffer.
        let line = "a line of the large message that must not show again\r\n";
        let body = line.repeat(300 * 1024 / line.len());
        let big = format!("Subject: big\r\n\r\n{body}");
        let chunks: Vec<&str> = big
            .as_bytes()
            .chunks(8192)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        for _ in 0..3 {
            let (text, env) = store(false, LOOPBACK, &chunks);
            let (received, rest) = text.split_once("Subject: big").unwrap();
            assert!(
                !received.contains("large message"),
                "content before the header"
            );
            assert!(
                format!("Subject: big{rest}") == big,
                "the large message came out changed"
            );
            assert_eq!(env.size, text.len() as u64);
            let (text, env) = store(false, LOOPBACK, &CHUNKS);
            let content = text.split_once("Subject:").unwrap().1;
            assert_eq!(content, " hi\r\nX-Long: a\r\n b\r\n\r\nbody\r\n");
            assert!(!text.contains("large message"), "{text}");
            assert_eq!(env.size, text.len() as u64);
        }
    }

    #[test]
    fn local_submissions_are_completed_and_qualified() {
        let (text, env) = store(true, LOOPBACK, &CHUNKS);
        assert_eq!(env.sender, "alice@example.org");
        assert_eq!(env.recipients[0].address, "bob@example.org");
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("Received: from "), "{head}");
        assert!(
            head.contains("\r\nSubject: hi\r\nX-Long: a\r\n b\r\nDate: "),
            "{head}"
        );
        assert!(head.contains("\r\nMessage-ID: <"), "{head}");
        assert!(
            head.ends_with("@laptop.test>\r\nFrom: alice@example.org"),
            "{head}"
        );
        assert_eq!(body, "body\r\n");
    }

    #[test]
    fn a_remote_clients_header_is_left_alone_on_the_laptop() {
        let (text, env) = store(true, IpAddr::from([192, 0, 2, 9]), &CHUNKS);
        assert!(!text.contains("Date:"), "{text}");
        assert_eq!(env.sender, "alice@example.org");
    }

    #[test]
    fn a_message_ending_inside_its_header_is_completed_at_the_end() {
        let (text, _) = store(true, LOOPBACK, &["Subject: only a header\r\n"]);
        assert!(
            text.ends_with("\r\nFrom: alice@example.org\r\n\r\n"),
            "{text}"
        );
    }
}
