//! A load tool for an SMTP relay that takes mail from clients with a TLS client certificate,
//! plus the helpers the comparison scripts need. Run through cargo:
//!
//! ```text
//! cargo bench -p certrelay-suite --bench load -- MODE-OPTIONS
//! ```
//!
//! Modes:
//! - load (default): `--target HOST:PORT -C CONNS -M MSGS -S BYTES [--no-reuse] [--no-resume]
//!   [--no-pipelining] --cert F --key F --ca F [--servername relay.test] [--rcpt ADDR]`. C
//!   threads each open a connection, EHLO, STARTTLS (client certificate, server checked
//!   against --ca), EHLO, and send M messages of S bytes; with `--no-reuse` every message has
//!   a connection (and a handshake) of its own. When the server offers PIPELINING, MAIL,
//!   RCPT and DATA go out in one write, as Postfix's and msmtp's clients send them;
//!   `--no-pipelining` waits for each reply, as the tool did before. Prints accepted
//!   msgs/s, p50/p99 latency per message (MAIL to the reply after the final dot),
//!   handshakes/s, errors, and one `RESULT key=value ...` line.
//! - idle: `--idle N --hold SECS` plus the TLS options: opens N TLS sessions (after the
//!   second EHLO), keeps them open for SECS, then QUITs. Prints `IDLE open=.. failed=..`.
//! - sink: `--sink PORT [--count-file PATH]`: the test kit's SMTP sink (plaintext, on
//!   127.0.0.1) in counting mode: it accepts every message and keeps none; the count is
//!   written to PATH every 100 ms (when it changed) and is the answer to a `COUNT` command
//!   (`250 N`).
//! - mem: `--mem-root PID --mem-out PATH`: every 100 ms sums Rss and Pss from
//!   /proc/P/smaps_rollup over PID and all its descendants; writes the peaks to PATH
//!   (`peak_rss_kib=.. peak_pss_kib=.. now_rss_kib=.. now_pss_kib=.. procs=..`) after each
//!   sample. Runs until PID is gone or it is killed.
//!
//! Threads and blocking rustls: the tool must not be the bottleneck at these sizes, and a
//! thread per connection keeps the timing of each step obvious.

use certrelay_core::cert::{parse_certificates, parse_private_key};
use certrelay_testkit::sink::{Sink, SinkOptions};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(60);

fn main() {
    let args = match Args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("load: {e}");
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let code = match &args.mode {
        Mode::Sink { port, count_file } => sink(*port, count_file.clone()),
        Mode::Mem { root, out } => mem(*root, out),
        Mode::Load => load(&args),
        Mode::Idle { count, hold } => idle(&args, *count, *hold),
    };
    std::process::exit(code);
}

const USAGE: &str = "usage: load --target HOST:PORT -C N -M N -S BYTES [--no-reuse] [--no-resume] \
[--no-pipelining] --cert F --key F --ca F [--servername NAME] [--rcpt ADDR]\n\
       load --idle N --hold SECS --target .. --cert .. --key .. --ca ..\n\
       load --sink PORT [--count-file PATH]\n\
       load --mem-root PID --mem-out PATH";

// ---------------------------------------------------------------------------------------
// Arguments.

enum Mode {
    Load,
    Idle {
        count: usize,
        hold: u64,
    },
    Sink {
        port: u16,
        count_file: Option<PathBuf>,
    },
    Mem {
        root: u32,
        out: PathBuf,
    },
}

struct Args {
    mode: Mode,
    target: String,
    conns: usize,
    msgs: usize,
    size: usize,
    reuse: bool,
    resume: bool,
    pipelining: bool,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    servername: String,
    rcpt: String,
    /// The counting sink the relay forwards to: wait until it holds every accepted message.
    drain_sink: Option<u16>,
    drain_timeout: u64,
}

impl Args {
    fn parse() -> Result<Args, String> {
        use lexopt::prelude::*;
        let mut a = Args {
            mode: Mode::Load,
            target: String::new(),
            conns: 1,
            msgs: 1,
            size: 1024,
            reuse: true,
            resume: true,
            pipelining: true,
            cert: None,
            key: None,
            ca: None,
            servername: "relay.test".into(),
            rcpt: "someone@example.org".into(),
            drain_sink: None,
            drain_timeout: 300,
        };
        let (mut idle, mut hold, mut sink_port, mut count_file) = (None, 0u64, None, None);
        let (mut mem_root, mut mem_out) = (None, None);
        let mut p = lexopt::Parser::from_env();
        let e = |e: lexopt::Error| e.to_string();
        while let Some(arg) = p.next().map_err(e)? {
            match arg {
                // cargo bench adds --bench to a harness = false binary.
                Long("bench") => {}
                Long("target") => a.target = p.value().map_err(e)?.string().map_err(e)?,
                Short('C') => a.conns = p.value().map_err(e)?.parse().map_err(e)?,
                Short('M') => a.msgs = p.value().map_err(e)?.parse().map_err(e)?,
                Short('S') => a.size = p.value().map_err(e)?.parse().map_err(e)?,
                Long("no-reuse") => a.reuse = false,
                Long("no-resume") => a.resume = false,
                Long("no-pipelining") => a.pipelining = false,
                Long("cert") => a.cert = Some(p.value().map_err(e)?.into()),
                Long("key") => a.key = Some(p.value().map_err(e)?.into()),
                Long("ca") => a.ca = Some(p.value().map_err(e)?.into()),
                Long("servername") => a.servername = p.value().map_err(e)?.string().map_err(e)?,
                Long("rcpt") => a.rcpt = p.value().map_err(e)?.string().map_err(e)?,
                Long("drain-sink") => {
                    a.drain_sink = Some(p.value().map_err(e)?.parse().map_err(e)?)
                }
                Long("drain-timeout") => {
                    a.drain_timeout = p.value().map_err(e)?.parse().map_err(e)?
                }
                Long("idle") => idle = Some(p.value().map_err(e)?.parse().map_err(e)?),
                Long("hold") => hold = p.value().map_err(e)?.parse().map_err(e)?,
                Long("sink") => sink_port = Some(p.value().map_err(e)?.parse().map_err(e)?),
                Long("count-file") => count_file = Some(p.value().map_err(e)?.into()),
                Long("mem-root") => mem_root = Some(p.value().map_err(e)?.parse().map_err(e)?),
                Long("mem-out") => mem_out = Some(p.value().map_err(e)?.into()),
                _ => return Err(arg.unexpected().to_string()),
            }
        }
        if let Some(port) = sink_port {
            a.mode = Mode::Sink { port, count_file };
            return Ok(a);
        }
        if let Some(root) = mem_root {
            let out = mem_out.ok_or("--mem-root needs --mem-out")?;
            a.mode = Mode::Mem { root, out };
            return Ok(a);
        }
        if let Some(count) = idle {
            a.mode = Mode::Idle { count, hold };
        }
        if a.target.is_empty() || a.cert.is_none() || a.key.is_none() || a.ca.is_none() {
            return Err("--target, --cert, --key and --ca are required".into());
        }
        if a.conns == 0 || a.msgs == 0 {
            return Err("-C and -M must be at least 1".into());
        }
        Ok(a)
    }
}

// ---------------------------------------------------------------------------------------
// TLS.

fn read(path: &PathBuf) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        eprintln!("load: {}: {e}", path.display());
        std::process::exit(2)
    })
}

fn client_config(a: &Args) -> Arc<rustls::ClientConfig> {
    let fail = |what: &str, e: &dyn std::fmt::Display| -> ! {
        eprintln!("load: {what}: {e}");
        std::process::exit(2)
    };
    let (ca, cert, key) = (a.ca.as_ref(), a.cert.as_ref(), a.key.as_ref());
    let (ca, cert, key) = (ca.unwrap(), cert.unwrap(), key.unwrap());
    let mut roots = rustls::RootCertStore::empty();
    for der in parse_certificates(&read(ca)).unwrap_or_else(|e| fail(&ca.display().to_string(), &e))
    {
        roots
            .add(der)
            .unwrap_or_else(|e| fail("CA certificate", &e));
    }
    let chain =
        parse_certificates(&read(cert)).unwrap_or_else(|e| fail(&cert.display().to_string(), &e));
    let key =
        parse_private_key(&read(key)).unwrap_or_else(|e| fail(&key.display().to_string(), &e));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap_or_else(|e| fail("client certificate", &e));
    if !a.resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(config)
}

// ---------------------------------------------------------------------------------------
// A blocking SMTP client.

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

struct Client {
    tls: Box<Tls>,
    pending: Vec<u8>,
    resumed: bool,
    /// The EHLO after the handshake: the first reply in TLS (shows write stalls after it).
    ehlo_tls: Duration,
    /// MAIL, RCPT and DATA in one write (the server offers PIPELINING; not `--no-pipelining`).
    pipelining: bool,
}

/// Reads one reply (all its lines) from `r`, keeping extra bytes in `pending`.
fn reply(r: &mut impl Read, pending: &mut Vec<u8>) -> Result<String, String> {
    let mut text = String::new();
    loop {
        let Some(i) = pending.windows(2).position(|w| w == b"\r\n") else {
            let mut buf = [0u8; 4096];
            let n = r.read(&mut buf).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err(format!("connection closed after {text:?}"));
            }
            pending.extend_from_slice(&buf[..n]);
            continue;
        };
        let line: Vec<u8> = pending.drain(..i + 2).collect();
        let line = String::from_utf8_lossy(&line[..i]).into_owned();
        let last = line.len() < 4 || line.as_bytes()[3] != b'-';
        text.push_str(&line);
        if last {
            return Ok(text);
        }
        text.push('\n');
    }
}

fn expect(r: Result<String, String>, code: &str, step: &str) -> Result<String, String> {
    let r = r?;
    if r.starts_with(code) {
        Ok(r)
    } else {
        Err(format!("{step}: {r}"))
    }
}

impl Client {
    /// Connect, banner, EHLO, STARTTLS, handshake, EHLO.
    fn open(a: &Args, config: &Arc<rustls::ClientConfig>) -> Result<Client, String> {
        let mut tcp = TcpStream::connect(&a.target).map_err(|e| format!("connect: {e}"))?;
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut pending = Vec::new();
        expect(reply(&mut tcp, &mut pending), "220", "banner")?;
        tcp.write_all(b"EHLO laptop.test\r\n")
            .map_err(|e| e.to_string())?;
        let ehlo = expect(reply(&mut tcp, &mut pending), "250", "EHLO")?;
        if !ehlo.contains("STARTTLS") {
            return Err(format!("no STARTTLS offered: {ehlo}"));
        }
        tcp.write_all(b"STARTTLS\r\n").map_err(|e| e.to_string())?;
        expect(reply(&mut tcp, &mut pending), "220", "STARTTLS")?;
        let name = rustls::pki_types::ServerName::try_from(a.servername.clone())
            .map_err(|e| format!("--servername: {e}"))?;
        let conn =
            rustls::ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
        let mut tls = Box::new(rustls::StreamOwned::new(conn, tcp));
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| format!("TLS handshake: {e}"))?;
        }
        let resumed = tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let mut c = Client {
            tls,
            pending: Vec::new(),
            resumed,
            ehlo_tls: Duration::ZERO,
            pipelining: false,
        };
        let start = Instant::now();
        let ehlo = c.cmd("EHLO laptop.test", "250")?;
        c.ehlo_tls = start.elapsed();
        c.pipelining = a.pipelining && ehlo.contains("PIPELINING");
        Ok(c)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.tls
            .write_all(bytes)
            .and_then(|()| self.tls.flush())
            .map_err(|e| format!("write: {e}"))
    }

    fn cmd(&mut self, line: &str, code: &str) -> Result<String, String> {
        self.send(format!("{line}\r\n").as_bytes())?;
        let step = line.split(':').next().unwrap_or(line).to_owned();
        expect(reply(&mut self.tls, &mut self.pending), code, &step)
    }

    fn mail(&mut self, rcpt: &str, body: &[u8]) -> Result<(), String> {
        if self.pipelining {
            let group = format!("MAIL FROM:<me@laptop.test>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n");
            self.send(group.as_bytes())?;
            for (code, step) in [("250", "MAIL FROM"), ("250", "RCPT TO"), ("354", "DATA")] {
                expect(reply(&mut self.tls, &mut self.pending), code, step)?;
            }
        } else {
            self.cmd("MAIL FROM:<me@laptop.test>", "250")?;
            self.cmd(&format!("RCPT TO:<{rcpt}>"), "250")?;
            self.cmd("DATA", "354")?;
        }
        self.send(body)?;
        expect(
            reply(&mut self.tls, &mut self.pending),
            "250",
            "end of DATA",
        )?;
        Ok(())
    }

    fn quit(mut self) {
        let _ = self.cmd("QUIT", "221");
        self.tls.conn.send_close_notify();
        let _ = self.tls.flush();
    }
}

/// A message of about `size` bytes (headers included), lines of 76 characters, ending in
/// the final dot.
fn message(size: usize, id: &str) -> Vec<u8> {
    let mut m = format!(
        "From: <me@laptop.test>\r\nTo: <someone@example.org>\r\nSubject: load {id}\r\n\
         Message-ID: <{id}@laptop.test>\r\n\r\n"
    )
    .into_bytes();
    let line = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmn\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    let rest = size.saturating_sub(m.len() + 2);
    if rest > 0 {
        m.extend_from_slice(&line[..rest.min(76)]);
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b".\r\n");
    m
}

// ---------------------------------------------------------------------------------------
// Load.

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    handshakes: Vec<Duration>,
    resumed: usize,
    ehlo_tls: Vec<Duration>,
    errors: HashMap<String, usize>,
}

impl Tally {
    fn error(&mut self, e: String) {
        *self.errors.entry(e).or_default() += 1;
    }
}

fn worker(a: &Args, config: &Arc<rustls::ClientConfig>, body: &[u8]) -> Tally {
    let mut t = Tally::default();
    let open = |t: &mut Tally| -> Option<Client> {
        let start = Instant::now();
        match Client::open(a, config) {
            Ok(c) => {
                t.handshakes.push(start.elapsed());
                t.resumed += usize::from(c.resumed);
                t.ehlo_tls.push(c.ehlo_tls);
                Some(c)
            }
            Err(e) => {
                t.error(e);
                None
            }
        }
    };
    if a.reuse {
        let Some(mut c) = open(&mut t) else { return t };
        for _ in 0..a.msgs {
            let start = Instant::now();
            match c.mail(&a.rcpt, body) {
                Ok(()) => t.latencies.push(start.elapsed()),
                Err(e) => {
                    t.error(e);
                    let _ = c.cmd("RSET", "250");
                }
            }
        }
        c.quit();
    } else {
        for _ in 0..a.msgs {
            let Some(mut c) = open(&mut t) else { continue };
            let start = Instant::now();
            match c.mail(&a.rcpt, body) {
                Ok(()) => t.latencies.push(start.elapsed()),
                Err(e) => t.error(e),
            }
            c.quit();
        }
    }
    t
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn load(a: &Args) -> i32 {
    let config = client_config(a);
    let body = Arc::new(message(a.size, "load"));
    let mut probe = match a.drain_sink.map(Probe::open).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("load: counting sink: {e}");
            return 2;
        }
    };
    let base = match probe.as_mut().map(Probe::count).transpose() {
        Ok(n) => n.unwrap_or(0),
        Err(e) => {
            eprintln!("load: counting sink: {e}");
            return 2;
        }
    };
    let begin = Instant::now();
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..a.conns)
            .map(|_| {
                let (config, body) = (&config, &body);
                s.spawn(move || worker(a, config, body))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let secs = begin.elapsed().as_secs_f64();
    let mut all = Tally::default();
    let accepted: usize = tallies.iter().map(|t| t.latencies.len()).sum();
    // End to end: until the sink holds every accepted message.
    let (mut e2e_secs, mut delivered) = (f64::NAN, 0u64);
    if let Some(probe) = probe.as_mut() {
        let until = begin + Duration::from_secs(a.drain_timeout);
        loop {
            match probe.count() {
                Ok(n) => delivered = n.saturating_sub(base),
                Err(e) => {
                    eprintln!("load: counting sink: {e}");
                    break;
                }
            }
            if delivered >= accepted as u64 {
                e2e_secs = begin.elapsed().as_secs_f64();
                break;
            }
            if Instant::now() > until {
                eprintln!("load: only {delivered} of {accepted} delivered to the sink in time");
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    for t in tallies {
        all.latencies.extend(t.latencies);
        all.handshakes.extend(t.handshakes);
        all.resumed += t.resumed;
        all.ehlo_tls.extend(t.ehlo_tls);
        for (e, n) in t.errors {
            *all.errors.entry(e).or_default() += n;
        }
    }
    all.latencies.sort();
    all.handshakes.sort();
    all.ehlo_tls.sort();
    let errors: usize = all.errors.values().sum();
    let mode = format!(
        "{}{}",
        if a.reuse { "reuse" } else { "no-reuse" },
        if a.pipelining { "" } else { " no-pipelining" }
    );
    println!(
        "load: {} C={} M={} S={} {mode}: {accepted} accepted in {secs:.3} s = {:.1} msgs/s; \
         latency p50 {:.2} ms p99 {:.2} ms; {} handshakes ({} resumed) = {:.1}/s, p50 {:.2} ms \
         p99 {:.2} ms; {errors} errors",
        a.target,
        a.conns,
        a.msgs,
        a.size,
        accepted as f64 / secs,
        percentile(&all.latencies, 0.50),
        percentile(&all.latencies, 0.99),
        all.handshakes.len(),
        all.resumed,
        all.handshakes.len() as f64 / secs,
        percentile(&all.handshakes, 0.50),
        percentile(&all.handshakes, 0.99),
    );
    let mut errs: Vec<_> = all.errors.iter().collect();
    errs.sort_by(|x, y| y.1.cmp(x.1));
    for (e, n) in errs.iter().take(5) {
        println!("load: error x{n}: {e}");
    }
    println!(
        "load: of each handshake, the first EHLO in TLS took p50 {:.2} ms p99 {:.2} ms",
        percentile(&all.ehlo_tls, 0.50),
        percentile(&all.ehlo_tls, 0.99)
    );
    if a.drain_sink.is_some() {
        println!(
            "load: end to end: {delivered} at the sink after {e2e_secs:.3} s = {:.1} msgs/s",
            accepted as f64 / e2e_secs
        );
    }
    println!(
        "RESULT accepted={accepted} errors={errors} secs={secs:.4} msgs_per_s={:.2} \
         p50_ms={:.3} p99_ms={:.3} handshakes={} resumed={} hs_per_s={:.2} hs_p50_ms={:.3} \
         hs_p99_ms={:.3} ehlo_tls_p50_ms={:.3} delivered={delivered} e2e_secs={e2e_secs:.4} e2e_msgs_per_s={:.2}",
        accepted as f64 / secs,
        percentile(&all.latencies, 0.50),
        percentile(&all.latencies, 0.99),
        all.handshakes.len(),
        all.resumed,
        all.handshakes.len() as f64 / secs,
        percentile(&all.handshakes, 0.50),
        percentile(&all.handshakes, 0.99),
        percentile(&all.ehlo_tls, 0.50),
        accepted as f64 / e2e_secs,
    );
    i32::from(errors > 0)
}

/// A plaintext connection to the counting sink, asking `COUNT`.
struct Probe {
    tcp: TcpStream,
    pending: Vec<u8>,
}

impl Probe {
    fn open(port: u16) -> Result<Probe, String> {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut pending = Vec::new();
        expect(reply(&mut tcp, &mut pending), "220", "sink banner")?;
        Ok(Probe { tcp, pending })
    }

    fn count(&mut self) -> Result<u64, String> {
        self.tcp
            .write_all(b"COUNT\r\n")
            .map_err(|e| e.to_string())?;
        let r = expect(reply(&mut self.tcp, &mut self.pending), "250", "COUNT")?;
        r.get(4..)
            .unwrap_or("")
            .trim()
            .parse()
            .map_err(|_| format!("COUNT: {r}"))
    }
}

// ---------------------------------------------------------------------------------------
// Idle sessions.

fn idle(a: &Args, count: usize, hold: u64) -> i32 {
    let config = client_config(a);
    let mut open = Vec::new();
    let mut errors: HashMap<String, usize> = HashMap::new();
    for _ in 0..count {
        match Client::open(a, &config) {
            Ok(c) => open.push(c),
            Err(e) => *errors.entry(e).or_default() += 1,
        }
    }
    let failed: usize = errors.values().sum();
    println!("IDLE open={} failed={failed}", open.len());
    for (e, n) in &errors {
        println!("idle: error x{n}: {e}");
    }
    std::thread::sleep(Duration::from_secs(hold));
    // Still open at the end? A relay that dropped idle sessions would show here.
    let mut alive = 0;
    for mut c in open {
        if c.cmd("NOOP", "250").is_ok() {
            alive += 1;
        }
        c.quit();
    }
    println!("IDLE alive_after_hold={alive}");
    0
}

// ---------------------------------------------------------------------------------------
// The counting sink.

/// The workspace's test sink, counting only: thread per connection, replies written once
/// per pipelined batch, nothing kept or allocated per message.
fn sink(port: u16, count_file: Option<PathBuf>) -> i32 {
    let sink = match Sink::bind(port, SinkOptions::counting()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("load: sink bind 127.0.0.1:{port}: {e}");
            return 1;
        }
    };
    eprintln!("sink: listening on 127.0.0.1:{port}");
    let Some(path) = count_file else {
        loop {
            std::thread::park();
        }
    };
    let tmp = path.with_extension("tmp");
    let mut last = u64::MAX;
    loop {
        let n = sink.count();
        if n != last && std::fs::write(&tmp, format!("{n}\n")).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
            last = n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------
// Memory sampling.

/// Every process under `root` (itself included), from the parent pids in /proc/P/stat.
fn tree(root: u32) -> Vec<u32> {
    let mut parent: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The command name in parentheses may hold spaces; the ppid follows the last ')'.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                parent.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found
}

/// (Rss, Pss) in KiB of one process, from smaps_rollup.
fn rollup(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("Rss:")?, field("Pss:")?))
}

fn mem(root: u32, out: &PathBuf) -> i32 {
    let (mut peak_rss, mut peak_pss, mut max_procs) = (0u64, 0u64, 0usize);
    let tmp = out.with_extension("tmp");
    while std::path::Path::new(&format!("/proc/{root}")).exists() {
        let pids = tree(root);
        let (mut rss, mut pss, mut procs) = (0, 0, 0);
        for pid in pids {
            if let Some((r, p)) = rollup(pid) {
                rss += r;
                pss += p;
                procs += 1;
            }
        }
        peak_rss = peak_rss.max(rss);
        peak_pss = peak_pss.max(pss);
        max_procs = max_procs.max(procs);
        let line = format!(
            "peak_rss_kib={peak_rss} peak_pss_kib={peak_pss} now_rss_kib={rss} \
             now_pss_kib={pss} procs={procs} max_procs={max_procs}\n"
        );
        if std::fs::write(&tmp, line).is_ok() {
            let _ = std::fs::rename(&tmp, out);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    0
}
