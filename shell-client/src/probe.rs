//! `certrelay probe HOST:PORT`: what a server offers, and whether this laptop's policy would
//! deliver there. A diagnostic for the person setting up a laptop; it sends no mail.

use argh::FromArgs;
use certrelay_core::cert::{self, CertError};
use certrelay_core::client::{ReplyError, ReplyParser};
use certrelay_core::config::{client, Diagnostic};
use certrelay_core::fingerprint::{DigestKind, Fingerprint};
use certrelay_core::nexthop::{NextHop, NextHopError};
use certrelay_core::reply::Reply;
use certrelay_core::tls_policy::{self, PerSiteQuery, TlsLevel, TlsPolicyError};
use certrelay_shell::conf;
use certrelay_shell::error::Error;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// connect, show the banner, EHLO, STARTTLS, whether the server asks for a client
/// certificate, its chain with fingerprints, and whether this laptop's policy would deliver
/// there (exit 0 yes, 1 no, 2 when the probe itself failed)
#[derive(FromArgs)]
#[argh(subcommand, name = "probe")]
pub struct ProbeCmd {
    /// the server, as a next hop: HOST:PORT, [HOST]:PORT, or HOST
    #[argh(positional, arg_name = "HOST:PORT")]
    pub target: String,
}

/// Why the probe could not tell whether this laptop would deliver.
#[derive(Debug)]
pub enum ProbeError {
    /// The configuration, or a file it names, cannot be used.
    Config(Error),
    /// The target is not a next hop.
    Target(NextHopError),
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
    /// The TLS handshake (or the EHLO after it) failed.
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
            ProbeError::Policy(e) => f.write_str(e.deferral_reason()),
            ProbeError::Resolve {
                host,
                source: Some(e),
            } => write!(f, "cannot resolve {host}: {e}"),
            ProbeError::Resolve { source: None, .. } => f.write_str("no address"),
            ProbeError::Connect { addr, source } => write!(f, "connect to {addr}: {source}"),
            ProbeError::Io(e) => write!(f, "{e}"),
            ProbeError::Closed => f.write_str("the server closed the connection"),
            ProbeError::Reply(e) => write!(f, "{e}"),
            ProbeError::Tls(e) => write!(f, "{e}"),
            ProbeError::ServerName(e) => f.write_str(e),
            ProbeError::Anchors(e) => write!(f, "{e}"),
            ProbeError::Handshake(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

impl std::error::Error for ProbeError {}

const TIMEOUT: Duration = Duration::from_secs(15);

/// Offers the laptop's certificate (if any) and remembers whether the server asked.
#[derive(Debug)]
struct Recorder {
    key: Option<Arc<CertifiedKey>>,
    asked: Mutex<Option<usize>>,
}

impl ResolvesClientCert for Recorder {
    fn resolve(&self, hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        *self.asked.lock().unwrap() = Some(hints.len());
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Runs the probe and prints what it finds: `Ok(true)` when this laptop would deliver there.
pub fn probe(dir: &Path, target: &str) -> Result<bool, ProbeError> {
    let loaded = conf::load(dir).map_err(ProbeError::Config)?;
    let config = &loaded.config;
    let hop = NextHop::parse(target).map_err(ProbeError::Target)?;
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

    let addr = (hop.host.as_str(), hop.port)
        .to_socket_addrs()
        .map_err(|e| ProbeError::Resolve {
            host: hop.host.clone(),
            source: Some(e),
        })?
        .next()
        .ok_or(ProbeError::Resolve {
            host: hop.host.clone(),
            source: None,
        })?;
    let tcp = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|source| ProbeError::Connect { addr, source })?;
    tcp.set_read_timeout(Some(TIMEOUT))
        .map_err(ProbeError::Io)?;
    println!("connected to {addr}");
    let mut plain = Dialogue {
        io: tcp,
        parser: ReplyParser::new(),
    };
    let banner = plain.read()?;
    println!("banner: {banner}");
    let helo = settings.helo_name.clone();
    let ehlo = plain.command(&format!("EHLO {helo}"))?;
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
        let _ = plain.command("QUIT");
        let ok = level <= TlsLevel::May;
        verdict(
            ok,
            if ok {
                "plaintext is allowed at this level"
            } else {
                "TLS is required, but was not offered"
            },
        );
        return Ok(ok);
    }
    let reply = plain.command("STARTTLS")?;
    if reply.code != 220 {
        println!("STARTTLS refused: {reply}");
        let ok = level <= TlsLevel::May;
        verdict(ok, "the server refused STARTTLS");
        return Ok(ok);
    }
    let key = laptop_key(config)?;
    let recorder = Arc::new(Recorder {
        key,
        asked: Mutex::new(None),
    });
    let tls_config = certrelay_shell::tls::client_config_with_resolver(recorder.clone())
        .map_err(ProbeError::Tls)?;
    let name = ServerName::try_from(hop.host.clone())
        .map_err(|e| ProbeError::ServerName(e.to_string()))?;
    let conn = rustls::ClientConnection::new(tls_config, name).map_err(ProbeError::Tls)?;
    let mut tls = rustls::StreamOwned::new(conn, plain.io);
    let mut secure = Dialogue {
        io: &mut tls,
        parser: ReplyParser::new(),
    };
    let ehlo2 = secure
        .command(&format!("EHLO {helo}"))
        .map_err(|e| ProbeError::Handshake(Box::new(e)))?;
    let conn = &secure.io.conn;
    println!(
        "TLS: {:?} with {:?}",
        conn.protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default(),
        conn.negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default()
    );
    match *recorder.asked.lock().unwrap() {
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
    for (i, c) in chain.iter().enumerate() {
        println!(
            "server certificate {i}: subject CN {}, issuer CN {}, sha256 {}",
            cert::subject_cn(c).unwrap_or_default(),
            cert::issuer_cn(c).unwrap_or_default(),
            Fingerprint::of(DigestKind::Sha256, c)
        );
    }
    let anchors = match config.text("smtp_tls_CAfile") {
        "" => Vec::new(),
        _ => {
            let cas = conf::read_chain(config, "smtp_tls_CAfile")?;
            cert::trust_anchors(&cas).map_err(ProbeError::Anchors)?
        }
    };
    let algs = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all;
    let checked = cert::verify_server_chain(&chain, &anchors, &hop.host, UnixTime::now(), algs);
    match &checked {
        Ok(()) => println!(
            "server certificate verified against smtp_tls_CAfile for {}",
            hop.host
        ),
        Err(e) => println!("server certificate not verified: {e}"),
    }
    print_caps(&ehlo2);
    let _ = secure.command("QUIT");
    let ok = level < TlsLevel::Verify || checked.is_ok();
    verdict(
        ok,
        if ok {
            "TLS as the policy requires"
        } else {
            "4.7.5 Server certificate not verified"
        },
    );
    Ok(ok)
}

fn verdict(ok: bool, why: &str) {
    if ok {
        println!("=> this laptop would deliver here ({why})");
    } else {
        println!("=> this laptop would NOT deliver here: {why}");
    }
}

fn print_caps(ehlo: &Reply) {
    println!(
        "EHLO: {}",
        ehlo.lines
            .iter()
            .skip(1)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
}

fn laptop_key(
    config: &certrelay_core::config::Config,
) -> Result<Option<Arc<CertifiedKey>>, ProbeError> {
    if config.text("smtp_tls_cert_file").is_empty() {
        return Ok(None);
    }
    let chain = conf::read_chain(config, "smtp_tls_cert_file")?;
    let key = conf::read_key(config, "smtp_tls_key_file")?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(ProbeError::Tls)?;
    Ok(Some(Arc::new(CertifiedKey::new(chain, signer))))
}

/// Commands and replies over a blocking stream.
struct Dialogue<S> {
    io: S,
    parser: ReplyParser,
}

impl<S: Read + Write> Dialogue<S> {
    fn command(&mut self, line: &str) -> Result<Reply, ProbeError> {
        self.io
            .write_all(format!("{line}\r\n").as_bytes())
            .map_err(ProbeError::Io)?;
        self.io.flush().map_err(ProbeError::Io)?;
        self.read()
    }

    fn read(&mut self) -> Result<Reply, ProbeError> {
        let mut buf = [0u8; 1];
        loop {
            // One byte at a time: nothing after the reply is consumed, so the TLS handshake
            // starts on exactly the right byte.
            let n = self.io.read(&mut buf).map_err(ProbeError::Io)?;
            if n == 0 {
                return Err(ProbeError::Closed);
            }
            if let (_, Some(result)) = self.parser.push(&buf) {
                return result.map_err(ProbeError::Reply);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Failure;

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
        let failure = Failure::of_probe(target.clone(), probe(&dir, &target)).unwrap_err();
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
        let failure = Failure::of_probe(target.clone(), probe(&dir, &target)).unwrap_err();
        let want = format!("{}: cannot read: ", dir.join("main.cf").display());
        assert!(failure.to_string().contains(&want), "{failure}");
        assert_eq!(failure.exit_code(), 2);
    }
}
