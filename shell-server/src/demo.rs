//! `certrelayd demo`: the whole system on loopback, in a temporary directory, in seconds.
//!
//! It makes a CA, the relay's certificate and two laptop certificates (one listed in
//! `relay_clientcerts`, one not), writes the recipe's relay configuration, starts this very
//! binary as the relay with a sink as its next hop, and sends one message from each laptop
//! through the real delivery engine. The listed laptop's message reaches the sink; the
//! unlisted one is refused with `554 5.7.1 ... Relay access denied` and the laptop reports
//! it. Nothing is written outside the temporary directory, which is removed at the end.

use certrelay_core::config::Config;
use certrelay_core::facts::PeerInfo;
use certrelay_core::queue::{Envelope, QueueId, Recipient};
use certrelay_core::server::{ServerEvent, ServerOutput, ServerSession};
use certrelay_core::settings::ServerSettings;
use certrelay_core::Instant;
use certrelay_shell::delivery::outbound;
use certrelay_shell::delivery::resolver::Resolver;
use certrelay_shell::delivery::runner::{QueueRunner, RunStats};
use certrelay_shell::pki;
use certrelay_shell::spool::Spool;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Runs the demo; returns the exit code.
pub fn run() -> i32 {
    let dir = std::env::temp_dir().join(format!("certrelay-demo-{}", std::process::id()));
    let result = Demo::new(&dir).and_then(|mut d| d.play());
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(()) => {
            say("done: the listed laptop relayed, the unlisted one was refused. Cleaned up.");
            0
        }
        Err(e) => {
            eprintln!("demo failed: {e}");
            1
        }
    }
}

fn say(text: &str) {
    println!("\n== {text}");
}

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
    fn new(dir: &Path) -> Result<Demo, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (sink_port, sink) = start_sink()?;
        let relay_port = free_port()?;
        Ok(Demo {
            dir: dir.to_owned(),
            relay: None,
            relay_log: Arc::default(),
            sink,
            relay_port,
        })
        .and_then(|mut d| {
            d.make_pki_and_config(sink_port)?;
            d.start_relay()?;
            Ok(d)
        })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn make_pki_and_config(&mut self, sink_port: u16) -> Result<(), String> {
        let relay_dir = self.path("relay");
        std::fs::create_dir_all(&relay_dir).map_err(|e| e.to_string())?;
        say(&format!(
            "a CA and the relay's certificate, in {}",
            relay_dir.display()
        ));
        let names = ["127.0.0.1".to_owned()];
        let files = pki::ca_init(&relay_dir, "relay.demo", &names).map_err(|e| e.to_string())?;
        print!("{}", files.main_cf_lines());
        let map = relay_dir.join("relay_clientcerts");
        std::fs::write(&map, "# laptops allowed to relay: fingerprint, label\n")
            .map_err(|e| e.to_string())?;
        say("two laptop certificates from that CA: alice (listed), mallory (not listed)");
        for (name, table) in [("alice", map.clone()), ("mallory", self.path("unlisted"))] {
            let out = self.path(name);
            std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
            let issued =
                pki::ca_issue(&relay_dir, name, &out, &table).map_err(|e| e.to_string())?;
            println!(
                "{name}: {} sha256 {}",
                issued.cert_file.display(),
                issued.fingerprint
            );
            self.write_laptop(name)?;
        }
        println!("relay_clientcerts now holds:");
        print!(
            "{}",
            std::fs::read_to_string(&map).map_err(|e| e.to_string())?
        );
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
        let master = format!("127.0.0.1:{} inet n - n - - smtpd\n", self.relay_port);
        write(&relay_dir.join("master.cf"), &master)?;
        say(&format!("the relay's main.cf ({}/main.cf)", d));
        print!("{main_cf}");
        Ok(())
    }

    fn write_laptop(&self, name: &str) -> Result<(), String> {
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

    fn start_relay(&mut self) -> Result<(), String> {
        say(&format!(
            "starting the relay on 127.0.0.1:{}",
            self.relay_port
        ));
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .arg("-c")
            .arg(self.path("relay"))
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the relay: {e}"))?;
        let stderr = child.stderr.take().ok_or("no relay stderr")?;
        self.relay = Some(child);
        let log = self.relay_log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                println!("  relay   | {line}");
                log.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        self.wait_relay_log("daemon started", Duration::from_secs(20))
    }

    fn wait_relay_log(&self, needle: &str, within: Duration) -> Result<(), String> {
        let until = std::time::Instant::now() + within;
        while !self.relay_log.lock().unwrap().contains(needle) {
            if std::time::Instant::now() > until {
                return Err(format!("the relay never logged {needle:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn play(&mut self) -> Result<(), String> {
        say("alice (listed) sends a message through the relay");
        let alice = self.send("alice", 1)?;
        if alice.bounces != 0 || alice.removed != 1 || alice.deferred != 0 {
            return Err(format!("alice's message was not delivered: {alice:?}"));
        }
        let got = self
            .sink
            .recv_timeout(Duration::from_secs(20))
            .map_err(|_| "the sink never received alice's message".to_owned())?;
        say("the sink received it");
        for line in got.lines().take_while(|l| !l.is_empty()) {
            println!("  sink    | {line}");
        }

        say("mallory (valid certificate from the same CA, but not listed) tries the same");
        let mallory = self.send("mallory", 2)?;
        if mallory.bounces != 1 {
            return Err(format!("mallory was not refused: {mallory:?}"));
        }
        self.wait_relay_log(
            "Relay access denied; from=<mallory@laptop.demo>",
            Duration::from_secs(5),
        )?;
        say("the laptop's queue says why (certrelay queue):");
        let listing = certrelay_shell::spool::listing::listing(&self.path("mallory/queue"))
            .map_err(|e| e.to_string())?;
        for line in listing.lines() {
            println!("  mallory | {line}");
        }
        if self.sink.recv_timeout(Duration::from_millis(500)).is_ok() {
            return Err("the sink received something from mallory".into());
        }
        Ok(())
    }

    /// Queues one message on laptop `name` and runs its queue once, as `certrelay flush`
    /// would; returns what the run did.
    fn send(&self, name: &str, unique: u32) -> Result<RunStats, String> {
        let dir = self.path(name);
        let text = std::fs::read_to_string(dir.join("main.cf")).map_err(|e| e.to_string())?;
        let (config, diags) = Config::parse(&dir.join("main.cf").display().to_string(), &text);
        if certrelay_core::config::has_errors(&diags) {
            return Err(diags
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n"));
        }
        let delivery = outbound::delivery(&config, config.text("myhostname")).map_err(|d| {
            d.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })?;
        let (spool, _) = Spool::open(dir.join("queue")).map_err(|e| e.to_string())?;
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
        let mut incoming = spool.incoming(id.as_str()).map_err(|e| e.to_string())?;
        incoming
            .write(message.as_bytes())
            .map_err(|e| e.to_string())?;
        incoming
            .commit(envelope.to_text().as_bytes())
            .map_err(|e| e.to_string())?;
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

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// A sink on loopback that accepts whatever the relay forwards (the core's own server
/// session, with loopback as `mynetworks`); each message comes out of the channel.
fn start_sink() -> Result<(u16, mpsc::Receiver<String>), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let (tx, rx) = mpsc::channel();
    let settings = Arc::new(ServerSettings {
        myhostname: "sink.demo".into(),
        banner: "sink.demo ESMTP certrelay demo sink".into(),
        mynetworks: vec![
            certrelay_core::net::Cidr::parse("127.0.0.0/8").map_err(|e| e.to_string())?
        ],
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
