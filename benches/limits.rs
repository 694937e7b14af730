//! The machine's ceilings for the work a relay does, each measured alone, and the best
//! end-to-end rate they allow; run by `benches/limits.sh`, which prints each figure with
//! the command that produced it. Through cargo:
//!
//! ```text
//! cargo bench -p certrelay-suite --bench limits -- MODE [--key value ...]
//! ```
//!
//! Modes (each prints `LIMIT key=value` lines for the script, and a sentence for people):
//! - `fsync --dir D --size S -C N --secs T`: N threads each repeat the spool's sequence
//!   for one message of S bytes on D's file system: create in `tmp/`, write, fsync the
//!   file, rename into `queue/`, fsync `queue/`; then unlink it (unsynced, as the relay
//!   removes a delivered message). Every thread syncs the directory itself.
//! - `spool --dir D --size S -C N --secs T`: the same through the relay's own spool
//!   (`certrelay_shell::spool`: commit, then remove), group commit included unless
//!   `CERTRELAY_BENCH_ONLY_NO_GROUP_COMMIT` is set, and files of removed messages reused
//!   for new ones as the relay reuses them (`Spool::recycling`).
//! - `handshake [--no-client-cert] --secs T`: full TLS handshakes in process (no
//!   resumption, no sockets) between a rustls client and the relay's own server
//!   configuration (`certrelay_shell::tls::server_config`), ECDSA P-256 certificates as
//!   `certrelayd ca init` makes them, the client presenting its certificate as a laptop
//!   does. Times the server's share and the whole.
//! - `aead --size S --secs T`: an established session sends S-byte messages client to
//!   server; times encryption (client) and decryption (server) apart.
//! - `loopback --size S --secs T`: one TCP stream over 127.0.0.1, writes of S bytes; wall
//!   throughput and the process's CPU time per byte (both ends are in this process).
//! - `model key=value ...`: the best msgs/s at C=8 from the figures above (see `model`).
//!
//! Not a criterion bench: each figure is one timed loop, printed once.

use certrelay_shell::spool::Spool;
use certrelay_testkit::pki::{client_config, Ca};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let mut args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.is_empty() {
        eprintln!("{USAGE}");
        std::process::exit(2);
    }
    let mode = args.remove(0);
    let opts = Opts::parse(&args);
    let result = match mode.as_str() {
        "fsync" => fsync(&opts, false),
        "spool" => fsync(&opts, true),
        "handshake" => handshake(&opts),
        "aead" => aead(&opts),
        "loopback" => loopback(&opts),
        "model" => model(&args),
        _ => Err(format!("unknown mode {mode}")),
    };
    if let Err(e) = result {
        eprintln!("limits: {e}\n{USAGE}");
        std::process::exit(1);
    }
}

const USAGE: &str = "usage: limits fsync|spool --dir D --size S -C N --secs T\n\
       limits handshake [--no-client-cert] --secs T\n\
       limits aead|loopback --size S --secs T\n\
       limits model key=value ...";

/// `--key value` options (and `--flag` alone).
struct Opts(HashMap<String, String>);

impl Opts {
    fn parse(args: &[String]) -> Opts {
        let mut map = HashMap::new();
        let mut i = 0;
        while i < args.len() {
            let key = args[i].trim_start_matches('-').to_owned();
            match args.get(i + 1).filter(|v| !v.starts_with("--")) {
                Some(v) if key != "no-client-cert" => {
                    map.insert(key, v.clone());
                    i += 2;
                }
                _ => {
                    map.insert(key, String::new());
                    i += 1;
                }
            }
        }
        Opts(map)
    }

    fn num(&self, key: &str, default: f64) -> Result<f64, String> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{key}: not a number: {v}")),
        }
    }

    fn secs(&self) -> Result<Duration, String> {
        Ok(Duration::from_secs_f64(self.num("secs", 3.0)?))
    }
}

/// The process's user + system CPU time so far (all threads), from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15: 11 and 12 after the state; USER_HZ is 100.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

// ---------------------------------------------------------------------------------------
// The disk.

fn fsync(o: &Opts, through_spool: bool) -> Result<(), String> {
    let dir = PathBuf::from(o.0.get("dir").ok_or("--dir is needed")?);
    let size = o.num("size", 1024.0)? as usize;
    let threads = o.num("C", 1.0)? as usize;
    let secs = o.secs()?;
    let root = dir.join(format!("limits-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let spool = if through_spool {
        Some(
            Spool::open(&root)
                .map_err(|e| format!("{}: {e}", root.display()))?
                .0
                .recycling(),
        )
    } else {
        for d in ["tmp", "queue"] {
            fs::create_dir_all(root.join(d)).map_err(|e| format!("{}: {e}", root.display()))?;
        }
        None
    };
    let content = vec![b'x'; size];
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (root, content, done, stop, spool) = (
                root.clone(),
                content.clone(),
                done.clone(),
                stop.clone(),
                spool.clone(),
            );
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("L{t:02}X{n:08}");
                    match &spool {
                        Some(s) => {
                            let mut inc = s.incoming(&id).map_err(std::io::Error::other)?;
                            inc.write(&content).map_err(std::io::Error::other)?;
                            inc.commit(b"envelope\n").map_err(std::io::Error::other)?;
                            s.remove(&id)?;
                        }
                        None => one_message(&root, &id, &content)?,
                    }
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(secs);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join()
            .map_err(|_| "a writer panicked".to_owned())?
            .map_err(|e| format!("{}: {e}", root.display()))?;
    }
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    let _ = fs::remove_dir_all(&root);
    let (what, key) = if through_spool {
        let grouped =
            std::env::var_os(certrelay_shell::spool::commit::BENCH_ONLY_NO_GROUP_COMMIT_VAR)
                .is_none();
        let g = if grouped { "grouped" } else { "ungrouped" };
        (
            format!("spool commits+removals ({g})"),
            format!("spool_{g}"),
        )
    } else {
        (
            "write+fsync+rename+fsync(dir)+unlink".to_owned(),
            "fsync".to_owned(),
        )
    };
    println!(
        "{what} of {size} B, {threads} thread(s), on {}: {rate:.0}/s",
        dir.display()
    );
    println!("LIMIT {key}_c{threads}_s{size}={rate:.0}");
    Ok(())
}

/// The spool's sequence for one message, by hand.
fn one_message(root: &Path, id: &str, content: &[u8]) -> std::io::Result<()> {
    let tmp = root.join("tmp").join(format!("{id}.msg"));
    let queue = root.join("queue");
    let dest = queue.join(format!("{id}.msg"));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(content)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, &dest)?;
    File::open(&queue)?.sync_all()?;
    fs::remove_file(&dest)
}

// ---------------------------------------------------------------------------------------
// TLS in process.

struct Pair {
    client: rustls::ClientConnection,
    server: rustls::ServerConnection,
    /// Time spent in the server's calls.
    server_time: Duration,
}

/// The relay's server configuration and a laptop's client configuration (no resumption).
fn configs(client_cert: bool) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let ca = Ca::new("Limits CA");
    let relay = ca.issue("relay.test", &["relay.test"], false);
    let laptop = ca.issue("laptop", &[], true);
    let server = certrelay_shell::tls::server_config(certrelay_shell::tls::ServerTls {
        chain: vec![relay.cert_der()],
        key: relay.key_der(),
        ca_subjects: Vec::new(),
        ask_ccert: true,
        session_cache_timeout: Duration::from_secs(3600),
    })
    .expect("the relay's server configuration");
    let client = client_config(&ca.cert_pem, client_cert.then(|| laptop.pems()));
    let mut client = (*client).clone();
    client.resumption = rustls::client::Resumption::disabled();
    (server, Arc::new(client))
}

impl Pair {
    fn new(server: &Arc<rustls::ServerConfig>, client: &Arc<rustls::ClientConfig>) -> Pair {
        let name = rustls::pki_types::ServerName::try_from("relay.test").expect("name");
        let t = Instant::now();
        let server = rustls::ServerConnection::new(server.clone()).expect("server connection");
        let server_time = t.elapsed();
        Pair {
            client: rustls::ClientConnection::new(client.clone(), name).expect("client"),
            server,
            server_time,
        }
    }

    /// Moves records both ways until neither side has anything to send; the time spent
    /// encrypting on the client side is returned.
    fn pump(&mut self) -> Result<Duration, rustls::Error> {
        let mut client_write = Duration::ZERO;
        loop {
            let mut moved = false;
            while self.client.wants_write() {
                let mut buf = Vec::new();
                let t = Instant::now();
                self.client.write_tls(&mut buf).expect("write to a Vec");
                client_write += t.elapsed();
                let t = Instant::now();
                let mut rd = &buf[..];
                while !rd.is_empty() {
                    self.server.read_tls(&mut rd).expect("read from a slice");
                    self.server.process_new_packets()?;
                }
                self.server_time += t.elapsed();
                moved = true;
            }
            while self.server.wants_write() {
                let mut buf = Vec::new();
                let t = Instant::now();
                self.server.write_tls(&mut buf).expect("write to a Vec");
                self.server_time += t.elapsed();
                let mut rd = &buf[..];
                while !rd.is_empty() {
                    self.client.read_tls(&mut rd).expect("read from a slice");
                    self.client.process_new_packets()?;
                }
                moved = true;
            }
            if !moved {
                return Ok(client_write);
            }
        }
    }
}

fn handshake(o: &Opts) -> Result<(), String> {
    let with_cert = !o.0.contains_key("no-client-cert");
    let (server, client) = configs(with_cert);
    let secs = o.secs()?;
    let (mut n, mut server_time) = (0u32, Duration::ZERO);
    let start = Instant::now();
    while start.elapsed() < secs {
        let mut p = Pair::new(&server, &client);
        p.pump().map_err(|e| format!("handshake: {e}"))?;
        if p.server.is_handshaking() || p.client.is_handshaking() {
            return Err("the handshake did not complete".into());
        }
        if with_cert && p.server.peer_certificates().is_none() {
            return Err("no client certificate reached the server".into());
        }
        server_time += p.server_time;
        n += 1;
    }
    let all = start.elapsed().as_secs_f64() / f64::from(n);
    let srv = server_time.as_secs_f64() / f64::from(n);
    let how = if with_cert {
        "with client certificate"
    } else {
        "without client certificate"
    };
    println!(
        "full TLS handshakes (ECDSA P-256, {how}), one core: server side {:.0}/s ({:.0} µs each), \
         server and client together {:.0}/s ({:.0} µs)",
        1.0 / srv,
        srv * 1e6,
        1.0 / all,
        all * 1e6
    );
    let key = if with_cert { "hs" } else { "hs_nocert" };
    println!("LIMIT {key}_server_us={:.1}", srv * 1e6);
    println!("LIMIT {key}_both_us={:.1}", all * 1e6);
    Ok(())
}

fn aead(o: &Opts) -> Result<(), String> {
    let size = o.num("size", 102400.0)? as usize;
    let secs = o.secs()?;
    let (server, client) = configs(true);
    let mut p = Pair::new(&server, &client);
    p.pump().map_err(|e| format!("handshake: {e}"))?;
    let suite = p
        .server
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    let message = vec![b'x'; size];
    let mut back = vec![0u8; size];
    let (mut enc, mut dec, mut n) = (Duration::ZERO, Duration::ZERO, 0u32);
    let start = Instant::now();
    while start.elapsed() < secs {
        // A record at a time: rustls holds at most 16 KiB of received plaintext.
        for (piece, out) in message.chunks(16 * 1024).zip(back.chunks_mut(16 * 1024)) {
            let t = Instant::now();
            p.client.writer().write_all(piece).expect("buffer");
            enc += t.elapsed();
            p.server_time = Duration::ZERO;
            enc += p.pump().map_err(|e| format!("records: {e}"))?;
            let t = Instant::now();
            p.server
                .reader()
                .read_exact(out)
                .map_err(|e| e.to_string())?;
            dec += p.server_time + t.elapsed();
        }
        n += 1;
    }
    let mb = |d: Duration| size as f64 * f64::from(n) / d.as_secs_f64() / 1e6;
    println!(
        "rustls {suite} over {size} B messages, one core: encrypt {:.0} MB/s, decrypt {:.0} MB/s",
        mb(enc),
        mb(dec)
    );
    println!("LIMIT aead_enc_mb_s={:.0}", mb(enc));
    println!("LIMIT aead_dec_mb_s={:.0}", mb(dec));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Loopback.

fn loopback(o: &Opts) -> Result<(), String> {
    let size = o.num("size", 102400.0)? as usize;
    let secs = o.secs()?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    });
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let chunk = vec![b'x'; size];
    let (cpu0, start) = (cpu_time(), Instant::now());
    while start.elapsed() < secs {
        s.write_all(&chunk).map_err(|e| e.to_string())?;
    }
    drop(s);
    let total = reader
        .join()
        .map_err(|_| "the reader panicked".to_owned())?
        .map_err(|e| e.to_string())?;
    let wall = start.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu0).as_secs_f64();
    let mb_s = total as f64 / wall / 1e6;
    let cpu_ns_per_kib = cpu * 1e9 / (total as f64 / 1024.0);
    println!(
        "loopback TCP, one stream, writes of {size} B: {mb_s:.0} MB/s, {cpu_ns_per_kib:.0} ns \
         of CPU (both ends) per KiB"
    );
    println!("LIMIT loopback_mb_s={mb_s:.0}");
    println!("LIMIT loopback_cpu_ns_per_kib={cpu_ns_per_kib:.0}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The model.

/// The best end-to-end msgs/s at C=8 for 1 KiB and 100 KiB messages.
///
/// What one message costs, the load tool's and the sink's share included (they run on the
/// same cores): the client encrypts S bytes and the relay decrypts them (`aead_*`); S bytes
/// cross loopback twice, client to relay and relay to the plaintext sink (`loopback_cpu`);
/// each of the 8 connections does one full handshake with a client certificate for its M
/// messages (`hs_both_us / M`). The CPU ceiling is `cores / that`. The disk ceiling is the
/// relay's spool alone at 8 threads (`spool_grouped_c8_sS`: write, file fsync, rename, a
/// directory sync shared by the commits beside it, unlink). The ceiling is the lower one.
/// SMTP commands, replies and the relay's own bookkeeping cost nothing here: they are what
/// the relay's distance from the ceiling measures.
fn model(args: &[String]) -> Result<(), String> {
    let mut v = HashMap::new();
    for a in args {
        if let Some((k, val)) = a.split_once('=') {
            let x: f64 = val.parse().map_err(|_| format!("{k}: not a number"))?;
            v.insert(k.to_owned(), x);
        }
    }
    let get = |k: &str| v.get(k).copied().ok_or(format!("model needs {k}="));
    let cores = get("cores")?;
    let per_conn = get("msgs_per_conn")?;
    let (enc, dec) = (get("aead_enc_mb_s")? * 1e6, get("aead_dec_mb_s")? * 1e6);
    let loop_ns_per_kib = get("loopback_cpu_ns_per_kib")?;
    let hs = get("hs_both_us")? * 1e-6;
    for size in [1024.0f64, 102400.0] {
        let tls = size / enc + size / dec;
        let wire = 2.0 * size / 1024.0 * loop_ns_per_kib * 1e-9;
        let handshake = hs / per_conn;
        let cpu_s = tls + wire + handshake;
        let cpu_ceiling = cores / cpu_s;
        let disk = get(&format!("spool_grouped_c8_s{size}"))?;
        let (ceiling, binds) = if disk < cpu_ceiling {
            (disk, "the disk (file fsync + shared directory sync)")
        } else {
            (cpu_ceiling, "the CPU")
        };
        println!(
            "{} KiB at C=8: CPU per message {:.1} µs (TLS {:.1}, loopback {:.1}, handshake share \
             {:.1}) -> {:.0} msgs/s on {cores} cores; disk {disk:.0} msgs/s; ceiling {ceiling:.0} \
             msgs/s, bound by {binds}",
            size / 1024.0,
            cpu_s * 1e6,
            tls * 1e6,
            wire * 1e6,
            handshake * 1e6,
            cpu_ceiling
        );
        println!("LIMIT ceiling_c8_s{size}={ceiling:.0}");
    }
    Ok(())
}
