//! What the shell's tests add to the workspace's test kit (certrelay-testkit, whose sink,
//! name server and PKI they use): the shell's rustls configurations built from the kit's
//! certificates, spools in temporary directories, queued messages and delivery runners.
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
use certrelay_testkit::TempDir;
use rustls::pki_types::CertificateDer;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Runs `fut` to completion, failing the test after 60 s instead of hanging.
pub fn run<T>(fut: impl std::future::Future<Output = T>) -> T {
    smol::block_on(with_timeout(Duration::from_secs(60), fut)).expect("test timed out")
}

// ---- TLS --------------------------------------------------------------------------------

/// A CA and the shell's server configuration for a certificate it signed for `localhost`
/// and 127.0.0.1.
pub struct Pki {
    pub ca: CertificateDer<'static>,
    pub server: Arc<rustls::ServerConfig>,
}

/// A server configuration presenting `leaf` and asking for no client certificate.
pub fn server_tls(leaf: &certrelay_testkit::pki::Issued) -> Arc<rustls::ServerConfig> {
    tls::server_config(tls::ServerTls {
        chain: vec![leaf.cert_der()],
        key: leaf.key_der(),
        ca_subjects: Vec::new(),
        ask_ccert: false,
        session_cache_timeout: Duration::from_secs(3600),
    })
    .unwrap()
}

pub fn pki(ca_name: &str) -> Pki {
    let ca = certrelay_testkit::pki::Ca::new(ca_name);
    let server = server_tls(&ca.issue("localhost", &["localhost", "127.0.0.1"], false));
    Pki {
        ca: ca.cert_der,
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
    _temp: TempDir,
}

pub fn temp_spool(name: &str) -> TempSpool {
    let temp = TempDir::new(&format!("spool-{name}"));
    let dir = temp.path().join("spool");
    let (spool, _) = Spool::open(&dir).unwrap();
    TempSpool {
        spool,
        dir,
        _temp: temp,
    }
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
