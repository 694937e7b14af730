//! Pairing this laptop with a relay (`certrelay enroll HOST[:PORT] CODE`) and renewing its
//! certificate (`certrelay renew`, and `certrelay run` when a third of its lifetime is
//! left), over the relay's `XCERTRELAY` extension (docs/enroll-protocol.md).
//!
//! The key is made here and never leaves. At pairing the relay is trusted through the code
//! alone: its certificate must match the code's 60-bit pin, whatever DNS or any CA says;
//! then the certificate it returns must be for our key and chain to the CA it sends, and the
//! relay's own certificate must chain to that CA and name HOST, or nothing is written (the
//! delivery's MUST check would fail otherwise). Renewal trusts the relay as delivery does
//! (`smtp_tls_CAfile` and the host name of `relayhost`, read as delivery reads it, with
//! `smtp_tls_wrappermode`) and writes the new key and certificate into the one combined file
//! by rename, so a queue run reads the old pair or the new, never half. Both checks of the
//! relay's certificate are made inside the TLS handshake: a server that fails them gets
//! nothing, neither the client certificate nor a request.
//!
//! Not here: the relay's side, signing, and the delivery itself.

use crate::failure::Failure;
use crate::laptop::Laptop;
use argh::FromArgs;
use certrelay_core::client::{Capabilities, ReplyParser};
use certrelay_core::config::Config;
use certrelay_core::enroll::{self, Code};
use certrelay_core::nexthop::NextHop;
use certrelay_core::reply::Reply;
use certrelay_shell::conf::host_name;
use certrelay_shell::pki::enroll::{check_received, validity, LaptopKey, Received};
use certrelay_shell::pki::{replace_with_mode, PRIVATE, PUBLIC};
use certrelay_shell::status::utc_text;
use certrelay_shell::tls::ServerCheck;
use futures_rustls::TlsConnector;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::net::TcpStream;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The longest a pairing or renewal dialogue may take.
const DIALOGUE_LIMIT: Duration = Duration::from_secs(60);

/// pair this laptop with a relay: make a key here, have the relay sign it with the one-time
/// code `certrelayd enroll` printed there, and write relayhost and the TLS settings into
/// main.cf (other lines are kept)
#[derive(FromArgs)]
#[argh(subcommand, name = "enroll")]
pub struct EnrollCmd {
    /// the relay, HOST or HOST:PORT (default port 25; 465 speaks TLS from the first byte)
    #[argh(positional)]
    target: String,
    /// the code, as printed (case and dashes do not matter)
    #[argh(positional)]
    code: String,
}

/// ask the relay for a new certificate now, authenticated by the current one
#[derive(FromArgs)]
#[argh(subcommand, name = "renew")]
pub struct RenewCmd {}

/// A byte stream the dialogue can speak over, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One SMTP dialogue with the relay, plain then TLS.
struct Dialogue {
    stream: Box<dyn Stream>,
    parser: ReplyParser,
    buf: Vec<u8>,
}

impl Dialogue {
    async fn reply(&mut self) -> Result<Reply, String> {
        loop {
            while !self.buf.is_empty() {
                let (n, done) = self.parser.push(&self.buf);
                self.buf.drain(..n);
                if let Some(done) = done {
                    return done.map_err(|e| format!("the relay's reply: {e}"));
                }
                if n == 0 {
                    break;
                }
            }
            let mut chunk = [0u8; 4096];
            let read = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("reading from the relay: {e}"))?;
            if read == 0 {
                return Err(String::from("the relay closed the connection"));
            }
            self.buf.extend_from_slice(&chunk[..read]);
        }
    }

    async fn send(&mut self, line: &str) -> Result<(), String> {
        let mut bytes = line.as_bytes().to_vec();
        bytes.extend_from_slice(b"\r\n");
        self.stream
            .write_all(&bytes)
            .await
            .map_err(|e| format!("writing to the relay: {e}"))?;
        self.stream
            .flush()
            .await
            .map_err(|e| format!("writing to the relay: {e}"))
    }

    async fn command(&mut self, line: &str, want: u16) -> Result<Reply, String> {
        self.send(line).await?;
        let reply = self.reply().await?;
        if reply.code != want {
            let verb = line.split_whitespace().next().unwrap_or(line);
            return Err(format!(
                "the relay answered {verb} with {} {}",
                reply.code,
                reply.lines.join(" ")
            ));
        }
        Ok(reply)
    }
}

/// What one exchange brought back: the relay's answer and its certificate chain.
struct Exchange {
    answer: Reply,
    relay_chain: Vec<CertificateDer<'static>>,
}

/// Where the dialogue goes: host (name or address, no brackets), port, and whether TLS
/// starts at once (wrapper mode) rather than by STARTTLS.
struct Target {
    host: String,
    port: u16,
    implicit_tls: bool,
}

impl Target {
    fn of(hop: NextHop) -> Target {
        Target {
            host: hop.host,
            port: hop.port,
            implicit_tls: hop.implicit_tls,
        }
    }
}

/// A client TLS configuration whose server check runs inside the handshake, and what the
/// check said when it refused the relay.
struct Checked {
    tls: Arc<rustls::ClientConfig>,
    refused: Arc<Mutex<Option<String>>>,
}

impl Checked {
    /// `check` says why a relay's chain (end certificate first) is refused.
    fn new(
        cert: Option<(
            Vec<CertificateDer<'static>>,
            rustls::pki_types::PrivateKeyDer<'static>,
        )>,
        check: impl Fn(&[CertificateDer<'_>]) -> Result<(), String> + Send + Sync + 'static,
    ) -> Result<Checked, String> {
        let refused: Arc<Mutex<Option<String>>> = Arc::default();
        let slot = refused.clone();
        let check: ServerCheck = Arc::new(move |chain: &[CertificateDer<'_>]| {
            check(chain).inspect_err(|why| {
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
            })
        });
        let tls = certrelay_shell::tls::client_config_checked(cert, check)
            .map_err(|e| format!("TLS: {e}"))?;
        Ok(Checked { tls, refused })
    }

    /// The text of a handshake that failed with `e`.
    fn failed(&self, target: &Target, e: &std::io::Error) -> String {
        let (host, port) = (&target.host, target.port);
        match self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            Some(why) => format!(
                "the relay at {host}:{port} {why}; nothing was written, and nothing sent to it"
            ),
            None => format!("TLS with {host}:{port}: {e}"),
        }
    }
}

/// Connects to `target`, goes into TLS with `tls` (STARTTLS, or at once in wrapper mode;
/// its server check decides inside the handshake), sends `XCERTRELAY <command>` and the
/// request, and returns the answer.
async fn exchange(
    target: &Target,
    tls: &Checked,
    command: &str,
    request_der: &[u8],
    helo: &str,
) -> Result<Exchange, String> {
    let (host, port) = (target.host.as_str(), target.port);
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let name = ServerName::try_from(host)
        .map_err(|e| format!("{host}: {e}"))?
        .to_owned();
    let connector = TlsConnector::from(tls.tls.clone());
    let handshake_error = |e: std::io::Error| tls.failed(target, &e);
    let (mut dialogue, relay_chain) = if target.implicit_tls {
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(handshake_error)?;
        let chain = peer_chain(stream.get_ref().1);
        let mut d = Dialogue {
            stream: Box::new(stream),
            parser: ReplyParser::new(),
            buf: Vec::new(),
        };
        d.reply().await?;
        (d, chain)
    } else {
        let mut plain = Dialogue {
            stream: Box::new(tcp.clone()),
            parser: ReplyParser::new(),
            buf: Vec::new(),
        };
        let greeting = plain.reply().await?;
        if greeting.code != 220 {
            return Err(format!("the relay greets with {}", greeting.code));
        }
        let ehlo = plain.command(&format!("EHLO {helo}"), 250).await?;
        if !Capabilities::from_ehlo(&ehlo).starttls {
            return Err(format!("{host}:{port} does not offer STARTTLS"));
        }
        plain.command("STARTTLS", 220).await?;
        drop(plain);
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(handshake_error)?;
        let chain = peer_chain(stream.get_ref().1);
        let d = Dialogue {
            stream: Box::new(stream),
            parser: ReplyParser::new(),
            buf: Vec::new(),
        };
        (d, chain)
    };
    let ehlo = dialogue.command(&format!("EHLO {helo}"), 250).await?;
    if !Capabilities::from_ehlo(&ehlo).xcertrelay {
        return Err(format!(
            "{host}:{port} does not offer {} inside TLS: the relay does not enroll laptops \
             (certrelay_enroll_ca_cert_file)",
            enroll::KEYWORD
        ));
    }
    dialogue
        .command(&format!("{} {command}", enroll::KEYWORD), 334)
        .await?;
    let mut lines = String::new();
    for line in enroll::request_lines(request_der) {
        let _ = write!(lines, "{line}\r\n");
    }
    dialogue
        .stream
        .write_all(lines.as_bytes())
        .await
        .map_err(|e| format!("writing to the relay: {e}"))?;
    let answer = dialogue.reply().await?;
    let _ = dialogue.send("QUIT").await;
    Ok(Exchange {
        answer,
        relay_chain,
    })
}

fn peer_chain(conn: &rustls::ClientConnection) -> Vec<CertificateDer<'static>> {
    conn.peer_certificates()
        .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
        .unwrap_or_default()
}

/// `f`, or an error once `limit` has passed (a relay that is silent or dribbles its replies
/// cannot hold the laptop).
async fn with_limit<T>(
    f: impl std::future::Future<Output = Result<T, String>>,
    limit: Duration,
) -> Result<T, String> {
    smol::future::or(f, async {
        smol::Timer::after(limit).await;
        Err(format!(
            "the relay did not finish within {}s",
            limit.as_secs_f32()
        ))
    })
    .await
}

/// The command line's `HOST[:PORT]` (also `[HOST]`, `[v6]:PORT`, a service name for the
/// port), read as a `relayhost` entry is; port 465 speaks TLS at once.
fn parse_target(target: &str) -> Result<Target, String> {
    NextHop::parse(target)
        .map(Target::of)
        .map_err(|e| format!("{target:?}: {e}; expected HOST or HOST:PORT"))
}

/// `[HOST]:PORT`, the relayhost form that skips MX lookups.
fn relayhost(host: &str, port: u16) -> String {
    format!("[{host}]:{port}")
}

fn enroll_error(text: String) -> Failure {
    Failure::Enroll(text)
}

/// `certrelay enroll HOST[:PORT] CODE`.
pub fn enroll_main(dir: &Path, cmd: EnrollCmd) -> Result<(), Failure> {
    let code = Code::parse(&cmd.code)
        .map_err(|e| enroll_error(format!("the code {:?}: {e}", cmd.code)))?;
    let target = parse_target(&cmd.target).map_err(enroll_error)?;
    let main_cf = dir.join("main.cf");
    let old_text = match std::fs::read_to_string(&main_cf) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(enroll_error(format!("{}: {e}", main_cf.display()))),
    };
    let key = LaptopKey::generate().map_err(Failure::Pki)?;
    let request = key.request_der("laptop").map_err(Failure::Pki)?;
    let tls = Checked::new(None, move |chain: &[CertificateDer<'_>]| {
        match chain.first() {
            Some(leaf) if code.pins(leaf) => Ok(()),
            _ => Err(String::from(
                "shows a certificate that does not match the code: a mistyped code, or another \
                 machine answering in its place",
            )),
        }
    })
    .map_err(enroll_error)?;
    let command = format!("ENROLL {}", code.secret);
    let exchange = smol::block_on(with_limit(
        exchange(&target, &tls, &command, &request, &host_name()),
        DIALOGUE_LIMIT,
    ))
    .map_err(enroll_error)?;
    let pem = enroll::parse_answer(&exchange.answer).map_err(|e| enroll_error(e.to_string()))?;
    let (host, port) = (target.host.as_str(), target.port);
    let received =
        check_received(&pem, &key.spki(), Some((&exchange.relay_chain, host))).map_err(|why| {
            enroll_error(format!(
                "{why}. Nothing was written here; the relay has listed the certificate it \
                 signed: ask its operator to revoke it"
            ))
        })?;
    let written =
        write_pairing(dir, &old_text, &key, &received, host, port).map_err(enroll_error)?;
    print!("{written}");
    println!(
        "paired with {host}:{port}: certificate {} valid until {}",
        received.fingerprint,
        utc_text(received.validity.1)
    );
    Ok(())
}

/// Writes `path` by a temporary file and a rename, with `mode` (else the file's own).
fn write_atomic(path: &Path, data: &str, mode: Option<u32>) -> Result<(), String> {
    replace_with_mode(path, data, mode).map_err(|e| e.to_string())
}

/// Writes the key and certificate, the CA, the per-site entry and main.cf's lines; returns
/// what it did, a line each.
fn write_pairing(
    dir: &Path,
    main_cf_text: &str,
    key: &LaptopKey,
    received: &Received,
    host: &str,
    port: u16,
) -> Result<String, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let cert_file = dir.join("client.pem");
    let ca_file = dir.join("relay-ca.pem");
    let per_site = dir.join("tls_per_site");
    let mut out = String::new();
    write_atomic(
        &cert_file,
        &format!("{}{}", received.cert_pem, key.pem()),
        Some(PRIVATE),
    )?;
    let _ = writeln!(
        out,
        "{}: this laptop's certificate and key (mode 0600)",
        cert_file.display()
    );
    write_atomic(&ca_file, &received.ca_pem, Some(PUBLIC))?;
    let _ = writeln!(out, "{}: the relay's CA", ca_file.display());
    let site = relayhost(host, port);
    let old_sites = std::fs::read_to_string(&per_site).unwrap_or_default();
    let mut sites: String = old_sites
        .lines()
        .filter(|l| l.split_whitespace().next() != Some(site.as_str()))
        .map(|l| format!("{l}\n"))
        .collect();
    sites.push_str(&format!("{site} MUST\n"));
    write_atomic(&per_site, &sites, None)?;
    let _ = writeln!(out, "{}: {site} MUST", per_site.display());
    let mut settings = vec![
        ("relayhost", site.clone()),
        ("smtp_tls_cert_file", cert_file.display().to_string()),
        ("smtp_tls_key_file", String::from("$smtp_tls_cert_file")),
        ("smtp_tls_CAfile", ca_file.display().to_string()),
        ("smtp_tls_per_site", format!("hash:{}", per_site.display())),
    ];
    if port == 465 {
        settings.push(("smtp_tls_wrappermode", String::from("yes")));
    }
    let (text, report) = set_parameters(main_cf_text, &settings);
    let main_cf = dir.join("main.cf");
    write_atomic(&main_cf, &text, None)?;
    for line in report {
        let _ = writeln!(out, "{}: {line}", main_cf.display());
    }
    Ok(out)
}

/// main.cf's text with each of `settings` set: the first line that sets it (and its
/// continuation lines) replaced, later ones removed, missing ones added at the end; every
/// other line kept. Returns the text and what changed.
pub fn set_parameters(text: &str, settings: &[(&str, String)]) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut report = Vec::new();
    let mut done: Vec<&str> = Vec::new();
    let mut skipping = false;
    for line in text.lines() {
        if skipping && line.starts_with([' ', '\t']) && !line.trim().is_empty() {
            report.push(format!("replaced: {line}"));
            continue;
        }
        skipping = false;
        let name = line
            .split('=')
            .next()
            .map(str::trim)
            .filter(|_| !line.starts_with([' ', '\t', '#']) && line.contains('='));
        if let Some((param, value)) = name.and_then(|n| settings.iter().find(|(p, _)| *p == n)) {
            skipping = true;
            report.push(format!("replaced: {line}"));
            if !done.contains(param) {
                done.push(param);
                out.push_str(&format!("{param} = {value}\n"));
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    let missing: Vec<&(&str, String)> =
        settings.iter().filter(|(p, _)| !done.contains(p)).collect();
    if !missing.is_empty() {
        out.push_str("# set by certrelay enroll\n");
    }
    for (param, value) in missing {
        out.push_str(&format!("{param} = {value}\n"));
    }
    for (param, value) in settings {
        report.push(format!("set: {param} = {value}"));
    }
    (out, report)
}

/// What renewal needs from main.cf.
struct Current {
    target: Target,
    cert_file: PathBuf,
    combined: bool,
    key_file: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    anchors_pem: Vec<CertificateDer<'static>>,
}

/// The relay renewal talks to: the first `relayhost` entry, read as delivery reads it
/// (service names, brackets) with `smtp_tls_wrappermode` applied.
fn renewal_target(config: &Config) -> Result<Target, String> {
    let (hops, _) = certrelay_shell::delivery::outbound::relayhost(config)
        .map_err(|d| d.first().map(|d| d.to_string()).unwrap_or_default())?;
    hops.into_iter()
        .next()
        .map(Target::of)
        .ok_or_else(|| String::from("no relayhost in main.cf: pair with `certrelay enroll` first"))
}

fn current(config: &Config) -> Result<Current, String> {
    let target = renewal_target(config)?;
    let cert = config.text("smtp_tls_cert_file").trim().to_string();
    if cert.is_empty() {
        return Err(String::from("no smtp_tls_cert_file: nothing to renew"));
    }
    let key = config.text("smtp_tls_key_file").trim().to_string();
    let chain = certrelay_shell::conf::read_chain(config, "smtp_tls_cert_file")
        .map_err(|d| d.to_string())?;
    let private =
        certrelay_shell::conf::read_key(config, "smtp_tls_key_file").map_err(|d| d.to_string())?;
    let anchors_pem =
        certrelay_shell::conf::read_chain(config, "smtp_tls_CAfile").map_err(|d| d.to_string())?;
    Ok(Current {
        target,
        combined: key == cert || key.is_empty(),
        cert_file: PathBuf::from(&cert),
        key_file: PathBuf::from(key),
        chain,
        key: private,
        anchors_pem,
    })
}

/// When the certificate of `config` should be renewed: a third of its lifetime before it
/// ends (Unix seconds), and when it ends.
pub fn renewal_due(config: &Config) -> Option<(i64, i64)> {
    let chain = certrelay_shell::conf::read_chain(config, "smtp_tls_cert_file").ok()?;
    let (from, to) = validity(chain.first()?)?;
    Some((to - (to - from) / 3, to))
}

/// Renews the certificate of `config` now; returns what to tell.
pub fn renew(config: &Config) -> Result<String, String> {
    renew_within(config, DIALOGUE_LIMIT)
}

/// The relay's chain must pass as delivery would judge it (`anchors`, `host`): the check
/// renewal makes inside the handshake.
fn verify_relay(
    anchors_pem: &[CertificateDer<'static>],
    host: &str,
) -> Result<impl Fn(&[CertificateDer<'_>]) -> Result<(), String> + Send + Sync + 'static, String> {
    let anchors = certrelay_core::cert::trust_anchors(anchors_pem)
        .map_err(|e| format!("smtp_tls_CAfile: {e}"))?;
    let host = host.to_string();
    Ok(move |chain: &[CertificateDer<'_>]| {
        let algs = certrelay_shell::tls::provider()
            .signature_verification_algorithms
            .all;
        certrelay_core::cert::verify_server_chain(chain, &anchors, &host, UnixTime::now(), algs)
            .map_err(|e| format!("shows a certificate that does not pass smtp_tls_CAfile: {e}"))
    })
}

fn renew_within(config: &Config, limit: Duration) -> Result<String, String> {
    let cur = current(config)?;
    let key = LaptopKey::generate().map_err(|e| e.to_string())?;
    let request = key.request_der("laptop").map_err(|e| e.to_string())?;
    let tls = Checked::new(
        Some((cur.chain.clone(), cur.key)),
        verify_relay(&cur.anchors_pem, &cur.target.host)?,
    )
    .map_err(|e| format!("the current certificate and key: {e}"))?;
    let exchange = smol::block_on(with_limit(
        exchange(&cur.target, &tls, "RENEW", &request, &host_name()),
        limit,
    ))?;
    let pem = enroll::parse_answer(&exchange.answer).map_err(|e| e.to_string())?;
    let received = check_received(
        &pem,
        &key.spki(),
        Some((&exchange.relay_chain, &cur.target.host)),
    )?;
    let files = RenewedFiles {
        cert_file: &cur.cert_file,
        key_file: (!cur.combined).then_some(cur.key_file.as_path()),
    };
    files.put(&key.pem(), &received.cert_pem, &write_atomic)?;
    Ok(format!(
        "renewed: certificate {} valid until {} in {}",
        received.fingerprint,
        utc_text(received.validity.1),
        cur.cert_file.display()
    ))
}

/// Where a renewed certificate and key go: one file holding both, or two.
struct RenewedFiles<'a> {
    cert_file: &'a Path,
    /// The key's own file; `None` when it shares the certificate's.
    key_file: Option<&'a Path>,
}

/// Writes a file: `write_atomic`, or a test's stand-in.
type WriteFn = dyn Fn(&Path, &str, Option<u32>) -> Result<(), String>;

impl RenewedFiles<'_> {
    /// Puts the new key and certificate in place. One file changes in one step. Two cannot:
    /// the key goes first, so that a run in between fails its handshake and retries rather
    /// than use a mismatched pair for long, and when the certificate then cannot be
    /// written the old key goes back: the old pair stays whole (and listed until the new
    /// certificate is used, which it never is), and the next renewal starts again.
    fn put(&self, key_pem: &str, cert_pem: &str, write: &WriteFn) -> Result<(), String> {
        let Some(key_file) = self.key_file else {
            return write(
                self.cert_file,
                &format!("{cert_pem}{key_pem}"),
                Some(PRIVATE),
            );
        };
        let old_key = std::fs::read_to_string(key_file).ok();
        write(key_file, key_pem, Some(PRIVATE))?;
        let Err(e) = write(self.cert_file, cert_pem, Some(PUBLIC)) else {
            return Ok(());
        };
        let restored = old_key.is_some_and(|old| write(key_file, &old, Some(PRIVATE)).is_ok());
        Err(if restored {
            format!("{e}; the old key is back in {}", key_file.display())
        } else {
            format!(
                "{e}; the old key could not be put back in {}: renew again or pair again",
                key_file.display()
            )
        })
    }
}

/// `certrelay renew`.
pub fn renew_main(laptop: &Laptop) -> Result<(), Failure> {
    let said = renew(laptop.config()).map_err(enroll_error)?;
    println!("{said}");
    Ok(())
}

/// For `certrelay run`: renews when due (at start and before each queue run); a failure is
/// logged and tried again at the next run, never stopping delivery. True when it renewed.
pub fn renew_if_due(config: &Config, now: i64) -> bool {
    let Some((due, ends)) = renewal_due(config) else {
        return false;
    };
    if now < due {
        return false;
    }
    match renew(config) {
        Ok(said) => {
            log::info!("{said}");
            true
        }
        Err(e) => {
            log::warn!(
                "certificate renewal failed (it ends {}; tried again at the next queue run): {e}",
                utc_text(ends)
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_that_cannot_be_written_puts_the_old_key_back() {
        let dir = std::env::temp_dir().join(format!("certrelay-renewed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("client.crt"), dir.join("client.key"));
        std::fs::write(&cert, "OLD CERT").unwrap();
        std::fs::write(&key, "OLD KEY").unwrap();
        let files = RenewedFiles {
            cert_file: &cert,
            key_file: Some(&key),
        };
        let cert_fails = |path: &Path, text: &str, mode: Option<u32>| {
            if path.ends_with("client.crt") {
                return Err(String::from("disk full"));
            }
            write_atomic(path, text, mode)
        };
        let err = files.put("NEW KEY", "NEW CERT", &cert_fails).unwrap_err();
        assert!(err.contains("the old key is back"), "{err}");
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "OLD KEY");
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), "OLD CERT");
        // Both written when nothing fails; one file holds both when the key shares it.
        files.put("NEW KEY", "NEW CERT", &write_atomic).unwrap();
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "NEW KEY");
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), "NEW CERT");
        let combined = RenewedFiles {
            cert_file: &cert,
            key_file: None,
        };
        combined.put("KEY", "CERT\n", &write_atomic).unwrap();
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), "CERT\nKEY");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn parsed(text: &str) -> Result<(String, u16, bool), String> {
        parse_target(text).map(|t| (t.host, t.port, t.implicit_tls))
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            parsed("relay.example"),
            Ok(("relay.example".into(), 25, false))
        );
        assert_eq!(
            parsed("relay.example:587"),
            Ok(("relay.example".into(), 587, false))
        );
        assert_eq!(
            parsed("[127.0.0.1]:2525"),
            Ok(("127.0.0.1".into(), 2525, false))
        );
        assert_eq!(parsed("[::1]:465"), Ok(("::1".into(), 465, true)));
        assert_eq!(
            parsed("relay.example:submission"),
            Ok(("relay.example".into(), 587, false))
        );
        assert!(parsed("relay:port").is_err());
        assert!(parsed("").is_err());
    }

    /// Renewal reads relayhost as delivery does: service names, and smtp_tls_wrappermode
    /// (TLS at once on any port, or not even on 465).
    #[test]
    fn renewal_reads_relayhost_as_delivery_does() {
        let target = |main_cf: &str| {
            let (config, _) = Config::parse("main.cf", main_cf);
            renewal_target(&config).map(|t| (t.host, t.port, t.implicit_tls))
        };
        assert_eq!(
            target("relayhost = [relay.example]:submission\n"),
            Ok(("relay.example".into(), 587, false))
        );
        assert_eq!(
            target("relayhost = [relay.example]:2465\nsmtp_tls_wrappermode = yes\n"),
            Ok(("relay.example".into(), 2465, true))
        );
        assert_eq!(
            target("relayhost = [relay.example]:465\nsmtp_tls_wrappermode = no\n"),
            Ok(("relay.example".into(), 465, false))
        );
        assert_eq!(
            target("relayhost = [a.example]:25, [b.example]\n"),
            Ok(("a.example".into(), 25, false))
        );
        assert!(target("").unwrap_err().contains("no relayhost"));
        assert!(target("relayhost = [relay.example]:nosuchport\n").is_err());
    }

    /// A relay that accepts and then says nothing, or dribbles a greeting that never ends,
    /// does not hold the laptop past the limit.
    #[test]
    fn a_silent_or_dribbling_relay_is_left_at_the_limit() {
        use std::io::Write as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            // The first connection: silent. The second: one byte at a time, never a reply.
            let (silent, _) = listener.accept().unwrap();
            let (mut dribble, _) = listener.accept().unwrap();
            for _ in 0..400 {
                if dribble.write_all(b"2").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            drop(silent);
        });
        let target = Target {
            host: String::from("127.0.0.1"),
            port,
            implicit_tls: false,
        };
        let tls = Checked::new(None, |_: &[CertificateDer<'_>]| Ok(())).unwrap();
        for _ in 0..2 {
            let err = smol::block_on(with_limit(
                exchange(&target, &tls, "RENEW", b"request", "laptop.test"),
                Duration::from_millis(300),
            ))
            .err()
            .unwrap();
            // The limit ended it, not the relay (which closes only after 4 s).
            assert!(err.contains("did not finish within 0.3s"), "{err}");
        }
        server.join().unwrap();
    }

    #[test]
    fn parameters_are_replaced_and_the_rest_kept() {
        let text = "# my laptop\nmyhostname = laptop.example\nrelayhost = [old]:25\n  \
                    continued\nsmtp_tls_CAfile=/old/ca.pem\nrelayhost = again\n\n# end\n";
        let settings = [
            ("relayhost", String::from("[new]:587")),
            ("smtp_tls_CAfile", String::from("/new/ca.pem")),
            ("smtp_tls_cert_file", String::from("/new/client.pem")),
        ];
        let (out, report) = set_parameters(text, &settings);
        assert_eq!(
            out,
            "# my laptop\nmyhostname = laptop.example\nrelayhost = [new]:587\n\
             smtp_tls_CAfile = /new/ca.pem\n\n# end\n# set by certrelay enroll\n\
             smtp_tls_cert_file = /new/client.pem\n"
        );
        assert!(report.contains(&String::from("replaced: relayhost = [old]:25")));
        assert!(report.contains(&String::from("replaced:   continued")));
        assert!(report.contains(&String::from("replaced: relayhost = again")));
    }
}
