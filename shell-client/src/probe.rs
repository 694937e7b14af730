//! `certrelay probe HOST:PORT`: what a server offers, and whether this laptop's policy would
//! deliver there; with `--rcpt`, whether the relay would take a recipient from this laptop
//! (`MAIL FROM`, `RCPT TO`, then `RSET` and `QUIT`). A diagnostic for the person setting up a
//! laptop: it never sends `DATA` nor any message, and it changes nothing on disk.
//!
//! The server is whatever the user named, so it is treated as hostile: every step (the name
//! lookup, the connect, each reply, the TLS handshake) has its own deadline, replies are
//! bounded (line length and lines per reply by the reply parser, all bytes of the session
//! together here), and the server's text is shown with control and direction-changing
//! characters escaped and long text cut, so it cannot drive the terminal.

use crate::laptop::Laptop;
use argh::FromArgs;
use certrelay_core::address::{parse_mailbox, AddressError};
use certrelay_core::cert::{self, CertError};
use certrelay_core::client::{ReplyError, ReplyParser};
use certrelay_core::config::{client, Config, Diagnostic};
use certrelay_core::fingerprint::{DigestKind, Fingerprint};
use certrelay_core::nexthop::{self, NextHop, NextHopError};
use certrelay_core::reply::Reply;
use certrelay_core::tls_policy::{self, PerSiteQuery, TlsLevel, TlsPolicyError};
use certrelay_shell::conf;
use certrelay_shell::delivery::outbound;
use certrelay_shell::error::Error;
use certrelay_shell::tls;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConnection, SignatureScheme, StreamOwned};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// connect, show the banner, EHLO, STARTTLS, whether the server asks for a client
/// certificate, its chain with fingerprints, and whether this laptop's policy would deliver
/// there; with --rcpt, whether the relay would relay for this laptop's certificate (exit 0
/// yes, 1 no or not now, 2 when the probe itself failed)
#[derive(FromArgs)]
#[argh(subcommand, name = "probe")]
pub struct ProbeCmd {
    /// the server, as a next hop: HOST:PORT, [HOST]:PORT, or HOST
    #[argh(positional, arg_name = "HOST:PORT")]
    pub target: String,
    /// also try MAIL FROM and RCPT TO:<ADDR> as this laptop would, then RSET and QUIT
    /// (never DATA: no message is sent)
    #[argh(option, arg_name = "ADDR")]
    pub rcpt: Option<String>,
    /// the sender for --rcpt (default: the one sendmail uses, $USER@myorigin; "" for the
    /// null sender)
    #[argh(option, arg_name = "ADDR")]
    pub from: Option<String>,
    /// TLS from the first byte (port 465, "wrapper mode") instead of STARTTLS
    #[argh(switch)]
    pub tls_wrapper: bool,
    /// seconds each step may take: the lookup, the connect, each reply, the TLS handshake
    /// (1 to 3600, default 30)
    #[argh(option, default = "30", arg_name = "SECS")]
    pub timeout: u64,
}

/// Why the probe could not tell whether this laptop would deliver.
#[derive(Debug)]
pub enum ProbeError {
    /// The configuration, or a file it names, cannot be used.
    Config(Error),
    /// The target is not a next hop.
    Target(NextHopError),
    /// `--rcpt` or `--from` is not an address.
    Address {
        /// The option.
        option: &'static str,
        /// The address as given (qualified).
        address: String,
        /// What is wrong with it.
        error: AddressError,
    },
    /// The TLS policy for the target cannot be decided.
    Policy(TlsPolicyError),
    /// The host name has no address.
    Resolve {
        /// The name.
        host: String,
        /// What the resolver said; `None` when it gave no address.
        source: Option<io::Error>,
    },
    /// The connection could not be made.
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// What the system said.
        source: io::Error,
    },
    /// A step took longer than `--timeout`.
    Timeout {
        /// What was awaited (`banner`, `reply to EHLO`).
        waiting: String,
        /// The limit, in seconds.
        secs: u64,
    },
    /// The server sent more than [`MAX_RECEIVED`] bytes in all.
    TooMuch,
    /// Talking to the server failed.
    Io(io::Error),
    /// The server hung up.
    Closed,
    /// The server's reply does not parse.
    Reply(ReplyError),
    /// TLS could not be set up on this side.
    Tls(rustls::Error),
    /// The host is not a name TLS can check.
    ServerName(String),
    /// A trust anchor of `smtp_tls_CAfile` cannot be used.
    Anchors(CertError),
    /// The TLS handshake (or the first reply after it) failed.
    Handshake(Box<ProbeError>),
}

impl From<Diagnostic> for ProbeError {
    fn from(d: Diagnostic) -> Self {
        ProbeError::Config(Error::Config(vec![d]))
    }
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Config(e) => write!(f, "{e}"),
            ProbeError::Target(e) => write!(f, "{e}"),
            ProbeError::Address {
                option,
                address,
                error,
            } => write!(f, "{option} {}: {error}", shown(address)),
            ProbeError::Policy(e) => f.write_str(e.deferral_reason()),
            ProbeError::Resolve {
                host,
                source: Some(e),
            } => write!(f, "cannot resolve {host}: {e}"),
            ProbeError::Resolve { source: None, .. } => f.write_str("no address"),
            ProbeError::Connect { addr, source } => write!(f, "connect to {addr}: {source}"),
            ProbeError::Timeout { waiting, secs } => write!(f, "no {waiting} within {secs} s"),
            ProbeError::TooMuch => write!(
                f,
                "the server sent more than {MAX_RECEIVED} bytes; a probe needs far less"
            ),
            // What the server caused is escaped: it may carry the server's own text.
            ProbeError::Io(e) => f.write_str(&shown(&e.to_string())),
            ProbeError::Closed => f.write_str("the server closed the connection"),
            ProbeError::Reply(e) => f.write_str(&shown(&e.to_string())),
            ProbeError::Tls(e) => f.write_str(&shown(&e.to_string())),
            ProbeError::ServerName(e) => f.write_str(e),
            ProbeError::Anchors(e) => write!(f, "{e}"),
            ProbeError::Handshake(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

impl std::error::Error for ProbeError {}

/// Most bytes taken from the server in one probe. The reply parser allows a reply of up to
/// 100 lines of 2 KiB; a real server's replies to a probe are each under 1 KiB, and its
/// TLS handshake (the certificate chain) some KiB.
pub const MAX_RECEIVED: usize = 256 * 1024;

/// Characters of the server's text shown per line; the rest is counted, not printed.
const MAX_SHOWN: usize = 200;

/// Lines of one reply shown; the rest are counted.
const MAX_SHOWN_LINES: usize = 30;

/// Certificates of the server's chain shown; the rest are counted.
const MAX_SHOWN_CERTS: usize = 10;

/// Offers the laptop's certificate (if any) and remembers whether the server asked.
#[derive(Debug)]
struct Recorder {
    key: Option<Arc<CertifiedKey>>,
    asked: Mutex<Option<usize>>,
}

impl Recorder {
    fn asked(&self) -> Option<usize> {
        *self.asked.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ResolvesClientCert for Recorder {
    fn resolve(&self, hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        *self.asked.lock().unwrap_or_else(|p| p.into_inner()) = Some(hints.len());
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The envelope `--rcpt` tries: addresses checked, so that nothing but the one command goes
/// on the line.
struct Envelope {
    from: String,
    rcpt: String,
}

impl Envelope {
    /// `--rcpt` and `--from` qualified as sendmail qualifies them (`@myorigin` appended to a
    /// bare local part); without `--from`, the sender sendmail would use.
    fn new(laptop: &Laptop, from: Option<&str>, rcpt: &str) -> Result<Envelope, ProbeError> {
        let from = match from {
            Some(f) => laptop.qualify(f.trim()),
            None => laptop.qualify(&crate::sendmail::login_name()),
        };
        let rcpt = laptop.qualify(rcpt.trim());
        if !from.is_empty() {
            check_address("--from", &from)?;
        }
        check_address("--rcpt", &rcpt)?;
        Ok(Envelope { from, rcpt })
    }

    /// `MAIL FROM`, `RCPT TO` (when the sender was taken), `RSET`; prints each reply and the
    /// verdict. `Ok(true)` when the recipient got a 2xx.
    fn try_on<S: Guard>(&self, d: &mut Dialogue<S>, certificate: &str) -> Result<bool, ProbeError> {
        let mail = d.command(&format!("MAIL FROM:<{}>", self.from))?;
        println!("MAIL FROM:<{}>: {}", self.from, show_reply(&mail));
        let last = if mail.code / 100 == 2 {
            let rcpt = d.command(&format!("RCPT TO:<{}>", self.rcpt))?;
            println!("RCPT TO:<{}>: {}", self.rcpt, show_reply(&rcpt));
            rcpt
        } else {
            mail
        };
        let rset = d.command("RSET")?;
        println!("RSET: {}", show_reply(&rset));
        let to = &self.rcpt;
        let ok = match last.code / 100 {
            2 => {
                println!("=> the relay would relay to <{to}> {certificate}");
                true
            }
            4 => {
                println!(
                    "=> the relay would not take <{to}> now (try later): {}",
                    show_reply(&last)
                );
                false
            }
            _ => {
                println!(
                    "=> the relay would NOT relay to <{to}> {certificate}: {}",
                    show_reply(&last)
                );
                false
            }
        };
        Ok(ok)
    }
}

/// An address fit for `MAIL FROM:<...>` / `RCPT TO:<...>`: a mailbox and nothing more (no
/// `>`, no space, no line break that would add a parameter or a command).
fn check_address(option: &'static str, address: &str) -> Result<(), ProbeError> {
    parse_mailbox(address)
        .map(|_| ())
        .map_err(|error| ProbeError::Address {
            option,
            address: address.to_owned(),
            error,
        })
}

/// Whether the probe speaks TLS from the first byte, as the queue would decide it for `hop`:
/// on port 465, or for every next hop with `smtp_tls_wrappermode = yes` (and never with
/// `= no`), or when `--tls-wrapper` asks; what made it so, for the output.
fn tls_first(asked: bool, hop: &mut NextHop, wrappermode: Option<bool>) -> Option<&'static str> {
    nexthop::apply_wrappermode(std::slice::from_mut(hop), wrappermode);
    if asked {
        Some("--tls-wrapper")
    } else if !hop.implicit_tls {
        None
    } else if wrappermode.is_some() {
        Some("smtp_tls_wrappermode = yes")
    } else {
        Some("port 465")
    }
}

/// Runs the probe and prints what it finds: `Ok(true)` when this laptop would deliver there
/// (and, with `--rcpt`, the relay took the recipient).
pub fn probe(dir: &Path, cmd: &ProbeCmd) -> Result<bool, ProbeError> {
    let laptop = Laptop::load(dir).map_err(ProbeError::Config)?;
    let config = laptop.config();
    let mut hop = NextHop::parse(&cmd.target).map_err(ProbeError::Target)?;
    let wrapper = tls_first(cmd.tls_wrapper, &mut hop, outbound::wrappermode(config)?);
    let envelope = match &cmd.rcpt {
        Some(rcpt) => Some(Envelope::new(&laptop, cmd.from.as_deref(), rcpt)?),
        None => None,
    };
    let (settings, _) = client::client_settings(config);
    let (tables, _) = conf::read_tables(config, "smtp_tls_per_site");
    let level = tls_policy::decide(&PerSiteQuery {
        global: settings.tls_level,
        next_hop: &hop.written,
        host: &hop.host,
        tables: &tables,
        policy_maps_set: client::policy_maps_set(config),
    })
    .result
    .map_err(ProbeError::Policy)?;
    println!("policy: TLS level {} for {}", level.as_str(), hop.written);

    let step = Duration::from_secs(cmd.timeout.clamp(1, 3600));
    let addr = resolve(&hop.host, hop.port, step)?;
    let tcp = TcpStream::connect_timeout(&addr, step)
        .map_err(|source| ProbeError::Connect { addr, source })?;
    println!("connected to {addr}");
    let guarded = Guarded {
        tcp,
        step,
        deadline: Instant::now() + step,
        received: 0,
    };
    let ehlo_line = format!("EHLO {}", settings.helo_name);
    let session = Session {
        config,
        host: &hop.host,
        level,
        envelope: envelope.as_ref(),
    };
    if let Some(why) = wrapper {
        println!("TLS from the first byte ({why})");
        let (stream, recorder) = session.start_tls(guarded)?;
        let mut secure = Dialogue::new(stream);
        let banner = secure
            .read("banner")
            .map_err(|e| ProbeError::Handshake(Box::new(e)))?;
        println!("banner: {}", show_reply(&banner));
        let ehlo = secure.command(&ehlo_line)?;
        return session.after_tls(secure, &recorder, &ehlo);
    }

    let mut plain = Dialogue::new(guarded);
    let banner = plain.read("banner")?;
    println!("banner: {}", show_reply(&banner));
    let ehlo = plain.command(&ehlo_line)?;
    print_caps(&ehlo);
    let offered = ehlo
        .lines
        .iter()
        .any(|l| l.eq_ignore_ascii_case("STARTTLS"));
    if !offered || level == TlsLevel::None {
        let why = if offered {
            "policy says none"
        } else {
            "STARTTLS not offered"
        };
        println!("no TLS: {why}");
        let ok = level <= TlsLevel::May;
        verdict(
            ok,
            if ok {
                "plaintext is allowed at this level"
            } else {
                "TLS is required, but was not offered"
            },
        );
        return session.finish(plain, ok, "without TLS");
    }
    let reply = plain.command("STARTTLS")?;
    if reply.code != 220 {
        println!("STARTTLS refused: {}", show_reply(&reply));
        let ok = level <= TlsLevel::May;
        verdict(ok, "the server refused STARTTLS");
        return session.finish(plain, ok, "without TLS");
    }
    let (stream, recorder) = session.start_tls(plain.io)?;
    let mut secure = Dialogue::new(stream);
    let ehlo = secure
        .command(&ehlo_line)
        .map_err(|e| ProbeError::Handshake(Box::new(e)))?;
    session.after_tls(secure, &recorder, &ehlo)
}

/// What the steps of one probe share.
struct Session<'a> {
    config: &'a Config,
    host: &'a str,
    level: TlsLevel,
    envelope: Option<&'a Envelope>,
}

type Secure = StreamOwned<ClientConnection, Guarded>;

impl Session<'_> {
    /// TLS over `io`, offering this laptop's certificate; nothing is sent until the first
    /// read or write.
    fn start_tls(&self, io: Guarded) -> Result<(Secure, Arc<Recorder>), ProbeError> {
        let recorder = Arc::new(Recorder {
            key: laptop_key(self.config)?,
            asked: Mutex::new(None),
        });
        let tls_config =
            tls::client_config_with_resolver(recorder.clone()).map_err(ProbeError::Tls)?;
        let name = ServerName::try_from(self.host.to_owned())
            .map_err(|e| ProbeError::ServerName(e.to_string()))?;
        let conn = ClientConnection::new(tls_config, name).map_err(ProbeError::Tls)?;
        Ok((StreamOwned::new(conn, io), recorder))
    }

    /// Prints what the handshake showed (protocol and cipher as the logs name them, whether
    /// a client certificate was asked for, the chain and its verification) and the EHLO
    /// reply inside TLS, then the verdict; then `finish`.
    fn after_tls(
        &self,
        secure: Dialogue<Secure>,
        recorder: &Recorder,
        ehlo: &Reply,
    ) -> Result<bool, ProbeError> {
        let conn = &secure.io.conn;
        println!("TLS: {}", tls_summary(conn));
        match recorder.asked() {
            Some(n) => println!(
                "the server asked for a client certificate ({n} CA name(s) hinted); {}",
                if recorder.key.is_some() {
                    "sent this laptop's"
                } else {
                    "none configured (smtp_tls_cert_file)"
                }
            ),
            None => println!("the server did not ask for a client certificate"),
        }
        let chain: Vec<CertificateDer<'static>> = conn.peer_certificates().unwrap_or(&[]).to_vec();
        for (i, c) in chain.iter().enumerate().take(MAX_SHOWN_CERTS) {
            println!(
                "server certificate {i}: subject CN {}, issuer CN {}, sha256 {}",
                shown(&cert::subject_cn(c).unwrap_or_default()),
                shown(&cert::issuer_cn(c).unwrap_or_default()),
                Fingerprint::of(DigestKind::Sha256, c)
            );
        }
        if chain.len() > MAX_SHOWN_CERTS {
            println!(
                "(and {} more server certificates)",
                chain.len() - MAX_SHOWN_CERTS
            );
        }
        let anchors = match self.config.text("smtp_tls_CAfile") {
            "" => Vec::new(),
            _ => {
                let cas = conf::read_chain(self.config, "smtp_tls_CAfile")?;
                cert::trust_anchors(&cas).map_err(ProbeError::Anchors)?
            }
        };
        let algs = tls::provider().signature_verification_algorithms.all;
        let checked = cert::verify_server_chain(&chain, &anchors, self.host, UnixTime::now(), algs);
        match &checked {
            Ok(()) => println!(
                "server certificate verified against smtp_tls_CAfile for {}",
                self.host
            ),
            Err(e) => println!("server certificate not verified: {}", shown(&e.to_string())),
        }
        print_caps(ehlo);
        let ok = self.level < TlsLevel::Verify || checked.is_ok();
        verdict(
            ok,
            if ok {
                "TLS as the policy requires"
            } else {
                "4.7.5 Server certificate not verified"
            },
        );
        let certificate = if recorder.key.is_some() {
            "for this certificate"
        } else {
            "without a client certificate"
        };
        self.finish(secure, ok, certificate)
    }

    /// With `--rcpt`, the envelope when this laptop would deliver here; then `QUIT`.
    fn finish<S: Guard>(
        &self,
        mut d: Dialogue<S>,
        ok: bool,
        certificate: &str,
    ) -> Result<bool, ProbeError> {
        let mut result = ok;
        if let Some(envelope) = self.envelope {
            if ok {
                result = envelope.try_on(&mut d, certificate)?;
            } else {
                println!("MAIL FROM and RCPT TO not tried: this laptop would not deliver here");
            }
        }
        let _ = d.command("QUIT");
        Ok(result)
    }
}

/// `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`: OpenSSL's names, as the
/// relay's and the laptop's logs write them.
fn tls_summary(conn: &ClientConnection) -> String {
    let proto = tls::protocol_name(conn.protocol_version());
    let (cipher, bits) = conn
        .negotiated_cipher_suite()
        .map_or((String::from("unknown"), 0), |s| {
            tls::cipher_name(s.suite())
        });
    format!("{proto} with cipher {cipher} ({bits}/{bits} bits)")
}

fn verdict(ok: bool, why: &str) {
    if ok {
        println!("=> this laptop would deliver here ({why})");
    } else {
        println!("=> this laptop would NOT deliver here: {why}");
    }
}

fn print_caps(ehlo: &Reply) {
    let caps: Vec<String> = ehlo
        .lines
        .iter()
        .skip(1)
        .take(MAX_SHOWN_LINES)
        .map(|l| shown(l))
        .collect();
    let more = ehlo.lines.len().saturating_sub(1 + MAX_SHOWN_LINES);
    let tail = if more > 0 {
        format!(" (and {more} more lines)")
    } else {
        String::new()
    };
    println!("EHLO: {}{tail}", caps.join(", "));
}

/// A reply as `probe` prints it: the code, then its lines (a bounded number, each cut and
/// escaped).
fn show_reply(reply: &Reply) -> String {
    let mut out = reply.code.to_string();
    for line in reply.lines.iter().take(MAX_SHOWN_LINES) {
        out.push(' ');
        out.push_str(&shown(line));
    }
    let more = reply.lines.len().saturating_sub(MAX_SHOWN_LINES);
    if more > 0 {
        out.push_str(&format!(" (and {more} more lines)"));
    }
    out
}

/// The server's text made safe for a terminal: control characters, and the invisible ones
/// that change direction or hide text, as `\u{..}`; after [`MAX_SHOWN`] characters only a
/// count of the rest.
fn shown(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX_SHOWN {
            let rest = text.chars().count() - i;
            out.push_str(&format!("... ({rest} more characters)"));
            break;
        }
        if c.is_control() || invisible(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Format characters a terminal does not show but that reorder or hide what follows
/// (bidirectional overrides and isolates, zero-width characters), and the line and
/// paragraph separators.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

fn laptop_key(config: &Config) -> Result<Option<Arc<CertifiedKey>>, ProbeError> {
    if config.text("smtp_tls_cert_file").is_empty() {
        return Ok(None);
    }
    let chain = conf::read_chain(config, "smtp_tls_cert_file")?;
    let key = conf::read_key(config, "smtp_tls_key_file")?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(ProbeError::Tls)?;
    Ok(Some(Arc::new(CertifiedKey::new(chain, signer))))
}

/// The first address of `host`, looked up within `limit` (the lookup runs on its own
/// thread, left behind if it takes longer: the process ends soon after).
fn resolve(host: &str, port: u16, limit: Duration) -> Result<SocketAddr, ProbeError> {
    let (tx, rx) = mpsc::channel();
    let name = host.to_owned();
    std::thread::Builder::new()
        .name("probe-resolve".into())
        .spawn(move || {
            let found = (name.as_str(), port)
                .to_socket_addrs()
                .map(|mut addrs| addrs.next());
            let _ = tx.send(found);
        })
        .map_err(ProbeError::Io)?;
    match rx.recv_timeout(limit) {
        Ok(Ok(Some(addr))) => Ok(addr),
        Ok(Ok(None)) => Err(ProbeError::Resolve {
            host: host.to_owned(),
            source: None,
        }),
        Ok(Err(e)) => Err(ProbeError::Resolve {
            host: host.to_owned(),
            source: Some(e),
        }),
        Err(_) => Err(ProbeError::Timeout {
            waiting: format!("address for {host}"),
            secs: limit.as_secs(),
        }),
    }
}

/// The connection under the current step's deadline and the probe's byte budget: each read
/// and write may wait only what is left of the step, and reading stops at
/// [`MAX_RECEIVED`] bytes.
struct Guarded {
    tcp: TcpStream,
    step: Duration,
    deadline: Instant,
    received: usize,
}

/// The byte budget is spent.
#[derive(Debug)]
struct BudgetSpent;

impl fmt::Display for BudgetSpent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "more than {MAX_RECEIVED} bytes received")
    }
}

impl std::error::Error for BudgetSpent {}

impl Guarded {
    /// Starts a step: it has `step` from now.
    fn begin(&mut self) {
        self.deadline = Instant::now() + self.step;
    }

    /// What is left of the step; an error once nothing is.
    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::from(io::ErrorKind::TimedOut));
        }
        Ok(left)
    }
}

impl Read for Guarded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = MAX_RECEIVED.saturating_sub(self.received);
        if room == 0 {
            return Err(io::Error::other(BudgetSpent));
        }
        self.tcp.set_read_timeout(Some(self.left()?))?;
        let end = buf.len().min(room);
        let n = self.tcp.read(&mut buf[..end])?;
        self.received += n;
        Ok(n)
    }
}

impl Write for Guarded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.set_write_timeout(Some(self.left()?))?;
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

/// A stream over a [`Guarded`] connection (plain, or TLS over it).
trait Guard: Read + Write {
    fn guard(&mut self) -> &mut Guarded;
}

impl Guard for Guarded {
    fn guard(&mut self) -> &mut Guarded {
        self
    }
}

impl Guard for Secure {
    fn guard(&mut self) -> &mut Guarded {
        &mut self.sock
    }
}

/// Commands and replies over a guarded stream: each command and its reply is one step.
struct Dialogue<S> {
    io: S,
    parser: ReplyParser,
}

impl<S: Guard> Dialogue<S> {
    fn new(io: S) -> Self {
        Dialogue {
            io,
            parser: ReplyParser::new(),
        }
    }

    fn command(&mut self, line: &str) -> Result<Reply, ProbeError> {
        let verb = line.split([' ', ':']).next().unwrap_or(line);
        let waiting = format!("reply to {verb}");
        self.io.guard().begin();
        let sent = self
            .io
            .write_all(format!("{line}\r\n").as_bytes())
            .and_then(|()| self.io.flush());
        if let Err(e) = sent {
            return Err(self.failed(e, &waiting));
        }
        self.wait(&waiting)
    }

    /// A reply the server sends unasked (the banner), as a step of its own.
    fn read(&mut self, waiting: &str) -> Result<Reply, ProbeError> {
        self.io.guard().begin();
        self.wait(waiting)
    }

    fn wait(&mut self, waiting: &str) -> Result<Reply, ProbeError> {
        let mut buf = [0u8; 1];
        loop {
            // One byte at a time: nothing after the reply is consumed, so the TLS handshake
            // starts on exactly the right byte.
            let n = match self.io.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.failed(e, waiting)),
            };
            if n == 0 {
                return Err(ProbeError::Closed);
            }
            if let (_, Some(result)) = self.parser.push(&buf) {
                return result.map_err(ProbeError::Reply);
            }
        }
    }

    /// An IO error as the probe reports it: a step past its deadline, the budget spent, or
    /// what the system (or TLS) said.
    fn failed(&mut self, e: io::Error, waiting: &str) -> ProbeError {
        if e.get_ref().is_some_and(|inner| inner.is::<BudgetSpent>()) {
            return ProbeError::TooMuch;
        }
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ProbeError::Timeout {
                waiting: waiting.to_owned(),
                secs: self.io.guard().step.as_secs(),
            },
            _ => ProbeError::Io(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Failure;

    fn cmd(target: &str) -> ProbeCmd {
        ProbeCmd {
            target: target.to_owned(),
            rcpt: None,
            from: None,
            tls_wrapper: false,
            timeout: 30,
        }
    }

    #[test]
    fn tls_from_the_first_byte_is_decided_as_the_queue_decides_it() {
        let first = |target: &str, asked, wrappermode| {
            tls_first(asked, &mut NextHop::parse(target).unwrap(), wrappermode)
        };
        assert_eq!(first("[relay.example]:465", false, None), Some("port 465"));
        assert_eq!(first("[relay.example]:587", false, None), None);
        assert_eq!(first("[relay.example]:465", false, Some(false)), None);
        assert_eq!(
            first("[relay.example]:2525", false, Some(true)),
            Some("smtp_tls_wrappermode = yes")
        );
        assert_eq!(
            first("[relay.example]:25", true, Some(false)),
            Some("--tls-wrapper")
        );
    }

    #[test]
    fn a_probe_that_cannot_connect_says_where_and_exits_2() {
        let dir = std::env::temp_dir().join(format!("certrelay-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("main.cf"), "").unwrap();
        // A loopback port that was free a moment ago: nothing listens there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let target = format!("[127.0.0.1]:{port}");
        let failure = Failure::of_probe(target.clone(), probe(&dir, &cmd(&target))).unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            matches!(
                &failure,
                Failure::Probe {
                    error: ProbeError::Connect { .. },
                    ..
                }
            ),
            "{failure}"
        );
        assert_eq!(failure.exit_code(), 2);
        assert!(
            failure.to_string().starts_with(&format!(
                "certrelay: probe {target}: connect to 127.0.0.1:{port}: "
            )),
            "{failure}"
        );
    }

    #[test]
    fn a_probe_without_main_cf_names_the_file() {
        let dir = std::env::temp_dir().join(format!("certrelay-probe-none-{}", std::process::id()));
        let target = "[127.0.0.1]:25".to_owned();
        let failure = Failure::of_probe(target.clone(), probe(&dir, &cmd(&target))).unwrap_err();
        let want = format!("{}: cannot read: ", dir.join("main.cf").display());
        assert!(failure.to_string().contains(&want), "{failure}");
        assert_eq!(failure.exit_code(), 2);
    }

    #[test]
    fn the_servers_text_is_escaped_and_cut() {
        assert_eq!(
            shown("ok \u{1b}[2J\u{7}\u{9b}x \u{202e}gpj.exe\u{200b}\u{2028}é"),
            "ok \\u{1b}[2J\\u{7}\\u{9b}x \\u{202e}gpj.exe\\u{200b}\\u{2028}é"
        );
        let long = "é".repeat(MAX_SHOWN + 5);
        assert_eq!(
            shown(&long),
            format!("{}... (5 more characters)", "é".repeat(MAX_SHOWN))
        );
        let reply = Reply::multi(250, (0..40).map(|i| format!("line{i}")).collect());
        let text = show_reply(&reply);
        assert!(text.starts_with("250 line0 line1 "), "{text}");
        assert!(text.ends_with(" line29 (and 10 more lines)"), "{text}");
    }

    #[test]
    fn an_address_that_would_carry_another_command_is_refused() {
        for bad in [
            "a@example.org>\r\nDATA",
            "\"a\r\nDATA\"@example.org",
            "a@example.org> SIZE=1",
            "<a@b.c>",
            "a b@c.d",
        ] {
            let err = check_address("--rcpt", bad).unwrap_err();
            assert!(err.to_string().starts_with("--rcpt "), "{err}");
        }
        assert!(check_address("--rcpt", "someone@example.org").is_ok());
    }
}
