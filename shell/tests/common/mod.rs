//! Test helpers: an SMTP sink, a tiny DNS server, a test PKI and spool shortcuts.
#![allow(dead_code)]

use certrelay_core::queue::{Envelope, QueueId, Recipient};
use certrelay_core::tls_policy::TlsLevel;
use certrelay_shell::clock::unix_secs;
use certrelay_shell::delivery::connection::ClientTls;
use certrelay_shell::delivery::resolver::Resolver;
use certrelay_shell::delivery::route::NextHop;
use certrelay_shell::delivery::runner::{QueueRunner, RunnerConfig};
use certrelay_shell::io::with_timeout;
use certrelay_shell::spool::Spool;
use certrelay_shell::tls;
use futures_rustls::TlsAcceptor;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use smol::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use smol::net::{TcpListener, UdpSocket};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Runs `fut` to completion, failing the test after 60 s instead of hanging.
pub fn run<T>(fut: impl std::future::Future<Output = T>) -> T {
    smol::block_on(with_timeout(Duration::from_secs(60), fut)).expect("test timed out")
}

// ---- SMTP sink --------------------------------------------------------------------------

/// How the sink answers.
#[derive(Clone)]
pub struct SinkOptions {
    /// The greeting line, without CR LF.
    pub greeting: String,
    /// A recipient containing the key gets the reply (without CR LF) instead of 250.
    pub rcpt_replies: Vec<(String, String)>,
    /// Reply to the final dot instead of 250.
    pub data_reply: Option<String>,
    /// Offer STARTTLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Say 220 to STARTTLS, then hang up instead of doing the handshake.
    pub broken_tls: bool,
    /// Close the connection right after accepting a message (a server that cuts idle
    /// clients off).
    pub hang_up_after_message: bool,
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            greeting: "220 sink.test ESMTP".into(),
            rcpt_replies: Vec::new(),
            data_reply: None,
            tls: None,
            broken_tls: false,
            hang_up_after_message: false,
        }
    }
}

/// A message the sink accepted.
#[derive(Clone, Debug)]
pub struct Received {
    pub from: String,
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
    pub tls: bool,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// A running sink on 127.0.0.1.
#[derive(Clone)]
pub struct Sink {
    pub addr: SocketAddr,
    pub options: Arc<Mutex<SinkOptions>>,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub connections: Arc<AtomicUsize>,
}

impl Sink {
    pub fn start(options: SinkOptions) -> Sink {
        let listener = smol::block_on(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))).unwrap();
        let sink = Sink {
            addr: listener.local_addr().unwrap(),
            options: Arc::new(Mutex::new(options)),
            received: Arc::default(),
            connections: Arc::default(),
        };
        let s = sink.clone();
        smol::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                s.connections.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                smol::spawn(async move { s.serve(tcp).await }).detach();
            }
        })
        .detach();
        sink
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn messages(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn set(&self, change: impl FnOnce(&mut SinkOptions)) {
        change(&mut self.options.lock().unwrap());
    }

    async fn serve(&self, tcp: smol::net::TcpStream) {
        let Some(tcp) = self.dialogue(tcp, false).await else {
            return;
        };
        let (tls, broken) = {
            let o = self.options.lock().unwrap();
            (o.tls.clone(), o.broken_tls)
        };
        if broken {
            return;
        }
        let Some(config) = tls else { return };
        if let Ok(stream) = TlsAcceptor::from(config).accept(tcp).await {
            self.dialogue(stream, true).await;
        }
    }

    /// One SMTP dialogue; returns the stream when the client asked for STARTTLS.
    async fn dialogue<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: S, tls: bool) -> Option<S> {
        let options = self.options.lock().unwrap().clone();
        let mut r = BufReader::new(stream);
        if !tls {
            write(&mut r, &format!("{}\r\n", options.greeting)).await?;
        }
        let mut from = String::new();
        let mut rcpts: Vec<String> = Vec::new();
        loop {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line).await.ok()? == 0 {
                return None;
            }
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            let upper = line.to_ascii_uppercase();
            let reply = if upper.starts_with("EHLO") {
                let starttls = options.tls.is_some() && !tls || options.broken_tls;
                format!(
                    "250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n{}250 SIZE 10240000",
                    if starttls { "250-STARTTLS\r\n" } else { "" }
                )
            } else if upper.starts_with("HELO") || upper == "NOOP" {
                "250 sink.test".into()
            } else if upper == "STARTTLS" {
                write(&mut r, "220 2.0.0 Ready to start TLS\r\n").await?;
                return Some(r.into_inner());
            } else if upper.starts_with("MAIL FROM:") {
                from = address(&line);
                rcpts.clear();
                "250 2.1.0 Ok".into()
            } else if upper.starts_with("RCPT TO:") {
                let rcpt = address(&line);
                match options
                    .rcpt_replies
                    .iter()
                    .find(|(k, _)| rcpt.contains(k.as_str()))
                {
                    Some((_, reply)) => reply.clone(),
                    None => {
                        rcpts.push(rcpt);
                        "250 2.1.5 Ok".into()
                    }
                }
            } else if upper == "DATA" {
                if rcpts.is_empty() {
                    "554 5.5.1 Error: no valid recipients".into()
                } else {
                    write(&mut r, "354 End data with <CR><LF>.<CR><LF>\r\n").await?;
                    let data = read_data(&mut r).await?;
                    match &options.data_reply {
                        Some(reply) => reply.clone(),
                        None => {
                            self.received.lock().unwrap().push(Received {
                                from: from.clone(),
                                rcpts: std::mem::take(&mut rcpts),
                                data,
                                tls,
                            });
                            "250 2.0.0 Ok: queued as SINK".into()
                        }
                    }
                }
            } else if upper == "RSET" {
                rcpts.clear();
                "250 2.0.0 Ok".into()
            } else if upper == "QUIT" {
                write(&mut r, "221 2.0.0 Bye\r\n").await?;
                return None;
            } else {
                "502 5.5.2 Error: command not recognized".into()
            };
            write(&mut r, &format!("{reply}\r\n")).await?;
            if options.hang_up_after_message && reply.starts_with("250 2.0.0 Ok: queued") {
                return None;
            }
        }
    }
}

async fn write<S: AsyncWrite + Unpin>(r: &mut BufReader<S>, text: &str) -> Option<()> {
    let s = r.get_mut();
    s.write_all(text.as_bytes()).await.ok()?;
    s.flush().await.ok()
}

/// The body up to the final dot, with dot-stuffing undone.
async fn read_data<S: AsyncRead + Unpin>(r: &mut BufReader<S>) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).await.ok()? == 0 {
            return None;
        }
        if line == b".\r\n" {
            return Some(data);
        }
        let line = line.strip_prefix(b".").unwrap_or(&line);
        data.extend_from_slice(line);
    }
}

fn address(line: &str) -> String {
    let start = line.find('<').map_or(0, |i| i + 1);
    let end = line.rfind('>').unwrap_or(line.len());
    line[start..end].to_string()
}

/// A port nobody listens on (bound, then released).
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    l.local_addr().unwrap().port()
}

// ---- DNS --------------------------------------------------------------------------------

/// Records the test name server knows.
#[derive(Clone, Debug)]
pub enum Rr {
    Mx(u16, &'static str),
    A([u8; 4]),
}

/// A name server on 127.0.0.1 answering from `zone` (name → records); other names get
/// NXDOMAIN, other types of known names no data. Counts the UDP queries. Optionally drops
/// the first UDP queries, or truncates every UDP answer (the full answer then comes over
/// TCP on the same port).
pub struct DnsServer {
    pub addr: SocketAddr,
    pub queries: Arc<AtomicUsize>,
    pub tcp_queries: Arc<AtomicUsize>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct DnsOptions {
    pub drop_first: usize,
    pub truncate_udp: bool,
}

impl DnsServer {
    pub fn start(zone: HashMap<&'static str, Vec<Rr>>) -> DnsServer {
        DnsServer::start_with(zone, DnsOptions::default())
    }

    pub fn start_with(zone: HashMap<&'static str, Vec<Rr>>, options: DnsOptions) -> DnsServer {
        let socket = smol::block_on(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))).unwrap();
        let addr = socket.local_addr().unwrap();
        let tcp = smol::block_on(TcpListener::bind(addr)).unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        let zone = Arc::new(zone);
        let (count, z) = (queries.clone(), zone.clone());
        smol::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let seen = count.fetch_add(1, Ordering::SeqCst);
                if seen < options.drop_first {
                    continue;
                }
                if let Some(mut reply) = answer(&buf[..n], &z) {
                    if options.truncate_udp {
                        reply[2] |= 0x02;
                        reply[6..8].copy_from_slice(&[0, 0]);
                        reply.truncate(question_end(&reply).unwrap_or(12));
                    }
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        })
        .detach();
        let count = tcp_queries.clone();
        smol::spawn(async move {
            use smol::io::AsyncReadExt;
            while let Ok((mut stream, _)) = tcp.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let mut len = [0u8; 2];
                if stream.read_exact(&mut len).await.is_err() {
                    continue;
                }
                let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if stream.read_exact(&mut query).await.is_err() {
                    continue;
                }
                if let Some(reply) = answer(&query, &zone) {
                    let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                    framed.extend(reply);
                    let _ = stream.write_all(&framed).await;
                }
            }
        })
        .detach();
        DnsServer {
            addr,
            queries,
            tcp_queries,
        }
    }
}

/// Where the question section of a message ends.
fn question_end(message: &[u8]) -> Option<usize> {
    let mut pos = 12;
    loop {
        let len = usize::from(*message.get(pos)?);
        pos += 1 + len;
        if len == 0 {
            return Some(pos + 4);
        }
    }
}

fn answer(query: &[u8], zone: &HashMap<&'static str, Vec<Rr>>) -> Option<Vec<u8>> {
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(pos)?);
        pos += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(pos..pos + len)?).to_lowercase());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*query.get(pos)?, *query.get(pos + 1)?]);
    let question_end = pos + 4;
    let name = labels.join(".");
    let records = zone.get(name.as_str());
    let answers: Vec<Vec<u8>> = records
        .into_iter()
        .flatten()
        .filter_map(|rr| match (rr, qtype) {
            (Rr::Mx(pref, host), 15) => {
                let mut rdata = pref.to_be_bytes().to_vec();
                rdata.extend(encode_name(host));
                Some((15u16, rdata))
            }
            (Rr::A(ip), 1) => Some((1u16, ip.to_vec())),
            _ => None,
        })
        .map(|(t, rdata)| {
            let mut rr = vec![0xC0, 0x0C];
            rr.extend(t.to_be_bytes());
            rr.extend(1u16.to_be_bytes());
            rr.extend(60u32.to_be_bytes());
            rr.extend((rdata.len() as u16).to_be_bytes());
            rr.extend(rdata);
            rr
        })
        .collect();
    let rcode = if records.is_none() { 3 } else { 0 };
    let mut out = query[..2].to_vec();
    out.extend([0x81, 0x80 | rcode]);
    out.extend(1u16.to_be_bytes());
    out.extend((answers.len() as u16).to_be_bytes());
    out.extend([0, 0, 0, 0]);
    out.extend_from_slice(&query[12..question_end]);
    for a in answers {
        out.extend(a);
    }
    Some(out)
}

fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

// ---- PKI --------------------------------------------------------------------------------

/// A CA and a server certificate it signed for `localhost` and 127.0.0.1.
pub struct Pki {
    pub ca: CertificateDer<'static>,
    pub server: Arc<rustls::ServerConfig>,
}

pub fn pki(ca_name: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf = params.signed_by(&key, &issuer).unwrap();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let server = tls::server_config(tls::ServerTls {
        chain: vec![leaf.der().clone()],
        key: key_der,
        ca_subjects: Vec::new(),
        ask_ccert: false,
        session_cache_timeout: Duration::from_secs(3600),
    })
    .unwrap();
    Pki {
        ca: ca_cert.der().clone(),
        server,
    }
}

/// Client TLS trusting `ca` (or nothing).
pub fn client_tls(ca: Option<&CertificateDer<'static>>) -> ClientTls {
    let anchors = match ca {
        Some(ca) => certrelay_core::cert::trust_anchors(std::slice::from_ref(ca)).unwrap(),
        None => Vec::new(),
    };
    ClientTls {
        config: tls::client_config(None).unwrap(),
        anchors: Arc::new(anchors),
    }
}

// ---- spool and runner -------------------------------------------------------------------

/// A fresh spool in a temporary directory (removed when dropped).
pub struct TempSpool {
    pub spool: Spool,
    pub dir: PathBuf,
}

impl Drop for TempSpool {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static DIRS: AtomicU32 = AtomicU32::new(0);

pub fn temp_spool(name: &str) -> TempSpool {
    let n = DIRS.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!(
        "certrelay-engine-{name}-{}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let (spool, _) = Spool::open(&dir).unwrap();
    TempSpool { spool, dir }
}

static IDS: AtomicU32 = AtomicU32::new(1);

/// Queues a message as the receiving side would; returns its id.
pub fn queue(spool: &Spool, sender: &str, rcpts: &[&str], body: &str) -> String {
    let now = unix_secs();
    let id = QueueId::generate(now, IDS.fetch_add(1, Ordering::SeqCst) + std::process::id());
    let mut env = Envelope::new(
        id.clone(),
        sender,
        now,
        rcpts.iter().map(|r| Recipient::new(*r)).collect(),
    );
    env.size = body.len() as u64;
    let mut inc = spool.incoming(id.as_str()).unwrap();
    inc.write(body.as_bytes()).unwrap();
    inc.commit(env.to_text().as_bytes()).unwrap();
    id.as_str().to_string()
}

pub fn read_envelope(spool: &Spool, id: &str) -> Envelope {
    Envelope::parse(&spool.read_envelope(id).unwrap()).unwrap()
}

pub fn bracketed(port: u16) -> NextHop {
    NextHop::parse(&format!("[127.0.0.1]:{port}")).expect("bracketed next hop")
}

/// A runner config for tests: short timeouts, the given relayhost and TLS level.
pub fn config(relayhost: Vec<NextHop>, level: TlsLevel) -> RunnerConfig {
    let mut c = RunnerConfig::new("client.test");
    c.relayhost = relayhost;
    c.client.tls_level = level;
    c.client.command_timeout = Duration::from_secs(10);
    c.client.data_done_timeout = Duration::from_secs(10);
    c.connect_timeout = Duration::from_secs(3);
    c
}

pub fn runner(spool: &Spool, config: RunnerConfig, tls: ClientTls) -> QueueRunner {
    let resolver = Resolver::new(vec![]).with_timeout(Duration::from_secs(1), 1);
    QueueRunner::new(spool.clone(), config, tls, resolver)
}

pub const BODY: &str = "From: alice@example.org\r\nTo: bob@example.org\r\nSubject: test\r\n\r\nHello.\r\n.leading dot\r\n";
