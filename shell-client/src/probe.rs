//! `certrelay probe HOST:PORT`: what a server offers, and whether this laptop's policy would
//! deliver there. A diagnostic for the person setting up a laptop; it sends no mail.

use certrelay_core::cert;
use certrelay_core::client::ReplyParser;
use certrelay_core::config::client;
use certrelay_core::fingerprint::{DigestKind, Fingerprint};
use certrelay_core::nexthop::NextHop;
use certrelay_core::reply::Reply;
use certrelay_core::tls_policy::{self, PerSiteQuery, TlsLevel};
use certrelay_shell::conf;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// Runs the probe; prints what it finds; returns the exit code (0: this laptop would
/// deliver there, 1: it would not, 2+: the probe itself failed).
pub fn probe_main(dir: &Path, target: &str) -> i32 {
    match probe(dir, target) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("certrelay: probe {target}: {e}");
            2
        }
    }
}

fn probe(dir: &Path, target: &str) -> Result<bool, String> {
    let loaded = conf::load(dir).map_err(|e| e.to_string())?;
    let config = &loaded.config;
    let hop = NextHop::parse(target).map_err(|e| e.to_string())?;
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
    .map_err(|e| e.deferral_reason().to_string())?;
    println!("policy: TLS level {} for {}", level.as_str(), hop.written);

    let addr = (hop.host.as_str(), hop.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", hop.host))?
        .next()
        .ok_or("no address")?;
    let tcp = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    tcp.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
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
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(hop.host.clone()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(tls_config, name).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, plain.io);
    let mut secure = Dialogue {
        io: &mut tls,
        parser: ReplyParser::new(),
    };
    let ehlo2 = secure
        .command(&format!("EHLO {helo}"))
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
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
            let cas = conf::read_chain(config, "smtp_tls_CAfile").map_err(|d| d.to_string())?;
            cert::trust_anchors(&cas).map_err(|e| e.to_string())?
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
) -> Result<Option<Arc<CertifiedKey>>, String> {
    if config.text("smtp_tls_cert_file").is_empty() {
        return Ok(None);
    }
    let chain = conf::read_chain(config, "smtp_tls_cert_file").map_err(|d| d.to_string())?;
    let key = conf::read_key(config, "smtp_tls_key_file").map_err(|d| d.to_string())?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| e.to_string())?;
    Ok(Some(Arc::new(CertifiedKey::new(chain, signer))))
}

/// Commands and replies over a blocking stream.
struct Dialogue<S> {
    io: S,
    parser: ReplyParser,
}

impl<S: Read + Write> Dialogue<S> {
    fn command(&mut self, line: &str) -> Result<Reply, String> {
        self.io
            .write_all(format!("{line}\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        self.io.flush().map_err(|e| e.to_string())?;
        self.read()
    }

    fn read(&mut self) -> Result<Reply, String> {
        let mut buf = [0u8; 1];
        loop {
            // One byte at a time: nothing after the reply is consumed, so the TLS handshake
            // starts on exactly the right byte.
            let n = self.io.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            if let (_, Some(result)) = self.parser.push(&buf) {
                return result.map_err(|e| e.to_string());
            }
        }
    }
}
