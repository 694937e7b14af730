//! `certrelayd demo`: the whole system on loopback, in a temporary directory, in seconds.
//!
//! It makes a CA, the relay's certificate and two laptop certificates (one listed in
//! `relay_clientcerts`, one not), writes the recipe's relay configuration, starts this very
//! binary as the relay with a sink as its next hop, and sends one message from each laptop
//! through the real delivery engine. The listed laptop's message reaches the sink; the
//! unlisted one is refused with `554 5.7.1 ... Relay access denied` and the laptop reports
//! it. Nothing is written outside the temporary directory, which is removed at the end.
//! A cross-built binary run by a user-mode emulator (`qemu-aarch64 ./certrelayd demo`)
//! starts its relay through the same emulator.

use certrelay_core::config::Config;
use certrelay_core::facts::PeerInfo;
use certrelay_core::net::Cidr;
use certrelay_core::queue::{Envelope, QueueId, Recipient};
use certrelay_core::server::{ServerEvent, ServerOutput, ServerSession};
use certrelay_core::settings::ServerSettings;
use certrelay_core::Instant;
use certrelay_shell::delivery::outbound;
use certrelay_shell::delivery::resolver::Resolver;
use certrelay_shell::delivery::runner::{QueueRunner, RunStats};
use certrelay_shell::error::Error;
use certrelay_shell::pki::{self, PkiError};
use certrelay_shell::reexec;
use certrelay_shell::spool::{Spool, SpoolError};
use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why the demo did not show what it should.
#[derive(Debug)]
pub enum DemoError {
    /// A file, socket or process of the demo could not be made, or a configuration it
    /// wrote does not load.
    Shell(Error),
    /// A certificate could not be made.
    Pki(PkiError),
    /// A laptop's spool refused the message.
    Spool(SpoolError),
    /// The relay never logged this line.
    RelayLog(&'static str),
    /// The listed laptop's message was not delivered: what its queue run did.
    NotDelivered(RunStats),
    /// The sink never received the listed laptop's message.
    SinkSilent,
    /// The unlisted laptop's message was not refused: what its queue run did.
    NotRefused(RunStats),
    /// The sink received the unlisted laptop's message.
    SinkGotUnlisted,
}

impl From<Error> for DemoError {
    fn from(e: Error) -> Self {
        DemoError::Shell(e)
    }
}

impl From<PkiError> for DemoError {
    fn from(e: PkiError) -> Self {
        DemoError::Pki(e)
    }
}

impl From<SpoolError> for DemoError {
    fn from(e: SpoolError) -> Self {
        DemoError::Spool(e)
    }
}

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DemoError::Shell(e) => write!(f, "{e}"),
            DemoError::Pki(e) => write!(f, "{e}"),
            DemoError::Spool(e) => write!(f, "{e}"),
            DemoError::RelayLog(needle) => write!(f, "the relay never logged {needle:?}"),
            DemoError::NotDelivered(stats) => {
                write!(f, "alice's message was not delivered: {stats:?}")
            }
            DemoError::SinkSilent => f.write_str("the sink never received alice's message"),
            DemoError::NotRefused(stats) => write!(f, "mallory was not refused: {stats:?}"),
            DemoError::SinkGotUnlisted => f.write_str("the sink received something from mallory"),
        }
    }
}

impl std::error::Error for DemoError {}

/// Runs the demo in a temporary directory, removed at the end.
pub fn run() -> Result<(), DemoError> {
    let dir = std::env::temp_dir().join(format!("certrelay-demo-{}", std::process::id()));
    let result = Demo::new(&dir).and_then(|mut d| d.play());
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    say("done: the listed laptop relayed, the unlisted one was refused. Cleaned up.");
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))
}

fn say(text: &str) {
    println!("\n== {text}");
}

/// Set in the environment, the port the relay tries first (for `tests/demo.rs` only).
const TEST_ONLY_FIRST_PORT_VAR: &str = "CERTRELAY_TEST_ONLY_DEMO_FIRST_PORT";

struct Demo {
    dir: PathBuf,
    relay: Option<Child>,
    relay_log: Arc<Mutex<String>>,
    sink: mpsc::Receiver<String>,
    relay_port: u16,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut child) = self.relay.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Demo {
    fn new(dir: &Path) -> Result<Demo, DemoError> {
        create_dir(dir)?;
        let (sink_port, sink) = start_sink()?;
        // Tests name a port they hold themselves, to see the demo move to another.
        let named = std::env::var(TEST_ONLY_FIRST_PORT_VAR).ok();
        let relay_port = match named.and_then(|port| port.parse().ok()) {
            Some(port) => port,
            None => free_port()?,
        };
        Ok(Demo {
            dir: dir.to_owned(),
            relay: None,
            relay_log: Arc::default(),
            sink,
            relay_port,
        })
        .and_then(|mut d| {
            d.make_pki_and_config(sink_port)?;
            d.start_relay_on_a_free_port()?;
            Ok(d)
        })
    }

    /// Starts the relay; should its port have been taken between the choice and the relay's
    /// bind (the choice asks the system for a free port, then lets it go), tries another.
    fn start_relay_on_a_free_port(&mut self) -> Result<(), DemoError> {
        let mut tries = 0;
        loop {
            let started = self.start_relay();
            let taken = self
                .relay_log
                .lock()
                .unwrap()
                .contains("Address already in use");
            if started.is_ok() || !taken || tries == 2 {
                return started;
            }
            tries += 1;
            if let Some(mut child) = self.relay.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            self.relay_log.lock().unwrap().clear();
            self.relay_port = free_port()?;
            self.write_master()?;
            for name in ["alice", "mallory"] {
                self.write_laptop(name)?;
            }
            say("that port was taken in the meantime; another one");
        }
    }

    fn write_master(&self) -> Result<(), Error> {
        let master = format!("127.0.0.1:{} inet n - n - - smtpd\n", self.relay_port);
        write(&self.path("relay").join("master.cf"), &master)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn make_pki_and_config(&mut self, sink_port: u16) -> Result<(), DemoError> {
        let relay_dir = self.path("relay");
        create_dir(&relay_dir)?;
        say(&format!(
            "a CA and the relay's certificate, in {}",
            relay_dir.display()
        ));
        let names = ["127.0.0.1".to_owned()];
        let files = pki::ca_init(&relay_dir, "relay.demo", &names)?;
        print!("{}", files.main_cf_lines());
        let map = relay_dir.join("relay_clientcerts");
        write(&map, "# laptops allowed to relay: fingerprint, label\n")?;
        say("two laptop certificates from that CA: alice (listed), mallory (not listed)");
        for (name, table) in [("alice", map.clone()), ("mallory", self.path("unlisted"))] {
            let out = self.path(name);
            create_dir(&out)?;
            let issued = pki::ca_issue(&relay_dir, name, &out, &table)?;
            println!(
                "{name}: {} sha256 {}",
                issued.cert_file.display(),
                issued.fingerprint
            );
            self.write_laptop(name)?;
        }
        println!("relay_clientcerts now holds:");
        print!("{}", read(&map)?);
        let d = relay_dir.display();
        let main_cf = format!(
            "# The classic recipe, as certrelayd reads it.\n\
             myhostname = relay.demo\n\
             # Started as root, certrelayd becomes this account once its sockets are bound.\n\
             mail_owner = nobody\n\
             mydestination = relay.demo\n\
             mynetworks = 127.0.0.2/32\n\
             queue_directory = {d}/spool\n\
             relayhost = [127.0.0.1]:{sink_port}\n\
             smtpd_use_tls = yes\n\
             {}\
             smtpd_tls_ask_ccert = yes\n\
             smtpd_tls_req_ccert = yes\n\
             smtpd_tls_ccert_verifydepth = 5\n\
             smtpd_tls_loglevel = 1\n\
             relay_clientcerts = hash:{d}/relay_clientcerts\n\
             smtpd_recipient_restrictions = permit_mynetworks, permit_tls_clientcerts, \
             reject_unauth_destination\n",
            files.main_cf_lines()
        );
        write(&relay_dir.join("main.cf"), &main_cf)?;
        self.write_master()?;
        say(&format!("the relay's main.cf ({}/main.cf)", d));
        print!("{main_cf}");
        Ok(())
    }

    fn write_laptop(&self, name: &str) -> Result<(), Error> {
        let d = self.path(name);
        let d = d.display();
        let port = self.relay_port;
        write(
            &self.path(&format!("{name}/tls_per_site")),
            &format!("[127.0.0.1]:{port} MUST\n"),
        )?;
        write(
            &self.path(&format!("{name}/main.cf")),
            &format!(
                "myhostname = {name}.laptop.demo\n\
                 queue_directory = {d}/queue\n\
                 relayhost = [127.0.0.1]:{port}\n\
                 smtp_tls_cert_file = {d}/{name}.pem\n\
                 smtp_tls_CAfile = {d}/{name}-ca.pem\n\
                 smtp_use_tls = yes\n\
                 smtp_enforce_tls = yes\n\
                 smtp_tls_per_site = hash:{d}/tls_per_site\n"
            ),
        )
    }

    fn start_relay(&mut self) -> Result<(), DemoError> {
        say(&format!(
            "starting the relay on 127.0.0.1:{}",
            self.relay_port
        ));
        let exe = std::env::current_exe()
            .map_err(|e| Error::system("find this program to start the relay", e))?;
        let args = [
            OsString::from("-c"),
            self.path("relay").into_os_string(),
            OsString::from("run"),
        ];
        let mut child = spawn_self(&exe, &args)?;
        let stderr = child.stderr.take();
        self.relay = Some(child);
        let log = self.relay_log.clone();
        std::thread::spawn(move || {
            let Some(stderr) = stderr else { return };
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                println!("  relay   | {line}");
                log.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        self.wait_relay_log("daemon started", Duration::from_secs(20))
    }

    fn wait_relay_log(&mut self, needle: &'static str, within: Duration) -> Result<(), DemoError> {
        let until = std::time::Instant::now() + within;
        while !self.relay_log.lock().unwrap().contains(needle) {
            // A relay that ended will log nothing more: say so now, not after `within`.
            let ended = self
                .relay
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if ended || std::time::Instant::now() > until {
                // What it logged last reaches the reader thread a moment after it ends.
                std::thread::sleep(Duration::from_millis(50));
                return Err(DemoError::RelayLog(needle));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn play(&mut self) -> Result<(), DemoError> {
        say("alice (listed) sends a message through the relay");
        let alice = self.send("alice", 1)?;
        if alice.bounces != 0 || alice.removed != 1 || alice.deferred != 0 {
            return Err(DemoError::NotDelivered(alice));
        }
        let got = self
            .sink
            .recv_timeout(Duration::from_secs(20))
            .map_err(|_| DemoError::SinkSilent)?;
        say("the sink received it");
        for line in got.lines().take_while(|l| !l.is_empty()) {
            println!("  sink    | {line}");
        }

        say("mallory (valid certificate from the same CA, but not listed) tries the same");
        let mallory = self.send("mallory", 2)?;
        if mallory.bounces != 1 {
            return Err(DemoError::NotRefused(mallory));
        }
        self.wait_relay_log(
            "Relay access denied; from=<mallory@laptop.demo>",
            Duration::from_secs(5),
        )?;
        say("the laptop's queue says why (certrelay queue):");
        let queue = self.path("mallory/queue");
        let listing = certrelay_shell::spool::listing::listing(&queue)
            .map_err(|e| Error::io("read the queue", &queue, e))?;
        for line in listing.lines() {
            println!("  mallory | {line}");
        }
        if self.sink.recv_timeout(Duration::from_millis(500)).is_ok() {
            return Err(DemoError::SinkGotUnlisted);
        }
        Ok(())
    }

    /// Queues one message on laptop `name` and runs its queue once, as `certrelay flush`
    /// would; returns what the run did.
    fn send(&self, name: &str, unique: u32) -> Result<RunStats, DemoError> {
        let dir = self.path(name);
        let text = read(&dir.join("main.cf"))?;
        let (config, diags) = Config::parse(&dir.join("main.cf").display().to_string(), &text);
        if certrelay_core::config::has_errors(&diags) {
            return Err(Error::Config(diags).into());
        }
        let delivery =
            outbound::delivery(&config, config.text("myhostname")).map_err(Error::Config)?;
        let queue = dir.join("queue");
        let (spool, _) = Spool::open(&queue).map_err(|e| Error::io("open the spool", &queue, e))?;
        let now = certrelay_shell::clock::unix_secs();
        let id = QueueId::generate(now, unique);
        let sender = format!("{name}@laptop.demo");
        let message = format!(
            "From: {name} <{sender}>\r\nTo: friend@elsewhere.example\r\n\
             Subject: hello from {name}\r\n\r\nSent through certrelay.\r\n"
        );
        let envelope = Envelope::new(
            id.clone(),
            sender,
            now,
            vec![Recipient::new("friend@elsewhere.example")],
        );
        let mut incoming = spool.incoming(id.as_str())?;
        incoming.write(message.as_bytes())?;
        incoming.commit(envelope.to_text().as_bytes())?;
        println!("  {name:<7} | queued {id}: {name}@laptop.demo -> friend@elsewhere.example");
        let runner = QueueRunner::new(
            spool.clone(),
            delivery.runner,
            delivery.tls,
            Resolver::system(),
        );
        Ok(smol::block_on(runner.run_once(true)))
    }
}

/// Starts `exe` (this program) with `args`, its standard error piped; through the same
/// emulator when this program runs under one (`certrelay_shell::reexec`).
///
/// Not in-process: the relay changes the process's working directory, drops its user and
/// group ids (the whole process's), owns SIGHUP/SIGTERM/SIGINT, writes its pid file and logs
/// through the one global logger; as a thread of the demo it would do all of that to the
/// demo too.
fn spawn_self(exe: &Path, args: &[OsString]) -> Result<Child, Error> {
    reexec::spawn(exe, &reexec::emulator(), |command| {
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
    })
    .map_err(|e| Error::system("start the relay", e))
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::io("write", path, e))
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

/// A loopback socket on a port of the system's choosing, and that port.
fn loopback_socket() -> Result<(TcpListener, u16), Error> {
    let bound = TcpListener::bind("127.0.0.1:0").and_then(|l| {
        let port = l.local_addr()?.port();
        Ok((l, port))
    });
    bound.map_err(|e| Error::system("listen on a loopback port", e))
}

fn free_port() -> Result<u16, Error> {
    Ok(loopback_socket()?.1)
}

/// A sink on loopback that accepts whatever the relay forwards (the core's own server
/// session, with loopback as `mynetworks`); each message comes out of the channel.
fn start_sink() -> Result<(u16, mpsc::Receiver<String>), Error> {
    let (listener, port) = loopback_socket()?;
    let (tx, rx) = mpsc::channel();
    let settings = Arc::new(ServerSettings {
        myhostname: "sink.demo".into(),
        banner: "sink.demo ESMTP certrelay demo sink".into(),
        mynetworks: vec![Cidr {
            addr: [127, 0, 0, 0].into(),
            prefix: 8,
        }],
        ..ServerSettings::default()
    });
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let (tx, settings) = (tx.clone(), settings.clone());
            std::thread::spawn(move || sink_session(conn, settings, tx));
        }
    });
    Ok((port, rx))
}

fn sink_session(mut conn: TcpStream, settings: Arc<ServerSettings>, tx: mpsc::Sender<String>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let peer = PeerInfo {
        addr: [127, 0, 0, 1].into(),
        name: "localhost".into(),
    };
    let mut session = ServerSession::new(settings, peer, Instant(0));
    let mut message = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let mut stored = false;
        while let Some(out) = session.poll_output() {
            match out {
                ServerOutput::Transmit(bytes) if conn.write_all(&bytes).is_err() => return,
                ServerOutput::BodyChunk(c) => message.extend_from_slice(&c),
                ServerOutput::MessageEnd => stored = true,
                ServerOutput::MessageAbort => message.clear(),
                ServerOutput::Close => return,
                _ => {}
            }
        }
        if stored {
            let _ = tx
                .send(String::from_utf8_lossy(&std::mem::take(&mut message)).replace("\r\n", "\n"));
            session.handle_event(
                ServerEvent::MessageStored {
                    queue_id: "SINK".into(),
                },
                Instant(0),
            );
            continue;
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => session.handle_input(&buf[..n], Instant(0)),
        }
    }
}
