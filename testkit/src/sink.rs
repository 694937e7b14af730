//! An SMTP server on 127.0.0.1 that takes every message, for the tests (a next hop for the
//! relay and the laptop) and for the load tool (the counting sink the benchmarks forward
//! to). What it answers is set by [`SinkOptions`]: the greeting, replies per recipient and
//! to the final dot, STARTTLS (working, or broken on purpose), hanging up after a message.
//! It records each message it accepted, or, for benchmarks, only counts them; a `COUNT`
//! command answers `250 N`.
//!
//! It is not a mail server: it checks no address, keeps nothing on disk, delivers nothing,
//! and enforces no size. One thread per connection, blocking IO: replies are buffered and
//! written when the client has nothing more in flight, so a pipelining client gets one write
//! per batch, and a counting sink allocates nothing per message.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How the sink answers.
#[derive(Clone)]
pub struct SinkOptions {
    /// The greeting line, without CR LF.
    pub greeting: String,
    /// A recipient containing the key gets the reply (without CR LF) instead of 250.
    pub rcpt_replies: Vec<(String, String)>,
    /// Reply to the final dot instead of 250 (the message is then neither kept nor counted).
    pub data_reply: Option<String>,
    /// Offer STARTTLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Offer STARTTLS and say 220 to it, then hang up instead of doing the handshake.
    pub broken_tls: bool,
    /// Close the connection right after accepting a message (a server that cuts idle
    /// clients off).
    pub hang_up_after_message: bool,
    /// Keep each accepted message for [`Sink::messages`]; when false only count them.
    pub record: bool,
    /// A connection silent for this long is closed.
    pub idle_timeout: Duration,
    /// Offer SMTPUTF8 (RFC 6531) in the EHLO reply.
    pub smtputf8: bool,
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
            record: true,
            idle_timeout: Duration::from_secs(300),
            smtputf8: false,
        }
    }
}

impl SinkOptions {
    /// A sink for benchmarks: accepts everything and only counts.
    pub fn counting() -> SinkOptions {
        SinkOptions {
            record: false,
            ..SinkOptions::default()
        }
    }
}

/// A message the sink accepted.
#[derive(Clone, Debug)]
pub struct Received {
    /// Envelope sender (empty for the null sender).
    pub sender: String,
    /// Envelope recipients that got 250.
    pub recipients: Vec<String>,
    /// The message as it came over the wire, up to the final dot: dot-stuffing kept.
    pub data: Vec<u8>,
    /// Whether it came inside TLS.
    pub tls: bool,
    /// The MAIL FROM parameters after the address (`SIZE=123 SMTPUTF8`), as sent.
    pub mail_params: String,
}

impl Received {
    /// The message itself: dot-stuffing undone.
    pub fn text(&self) -> String {
        let mut out = Vec::with_capacity(self.data.len());
        for line in self.data.split_inclusive(|b| *b == b'\n') {
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The message as sent, dot-stuffing kept (to see that a client stuffed).
    pub fn wire(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// What the sessions share with the [`Sink`].
struct Shared {
    options: Mutex<Arc<SinkOptions>>,
    received: Mutex<Vec<Received>>,
    connections: AtomicUsize,
    accepted: AtomicU64,
    stop: AtomicBool,
}

/// A running sink on 127.0.0.1; it stops taking connections when dropped.
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accepting: Option<JoinHandle<()>>,
}

impl Sink {
    /// A sink on a fresh port.
    pub fn start(options: SinkOptions) -> Sink {
        Sink::bind(0, options).expect("bind the sink on 127.0.0.1")
    }

    /// A sink on `port` (free until now), retried for a while: a client connection may
    /// hold the port as its own for a moment.
    pub fn start_on(port: u16, options: SinkOptions) -> Sink {
        let listener = crate::wait_until("the sink's port", || {
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).ok()
        });
        Sink::with(listener, options)
    }

    /// A sink on exactly `port` (0: any), or why it cannot listen there.
    pub fn bind(port: u16, options: SinkOptions) -> io::Result<Sink> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        Ok(Sink::with(listener, options))
    }

    fn with(listener: TcpListener, options: SinkOptions) -> Sink {
        let addr = listener.local_addr().expect("the sink's address");
        let shared = Arc::new(Shared {
            options: Mutex::new(Arc::new(options)),
            received: Mutex::default(),
            connections: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let accepting = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else {
                    // Out of descriptors, say: let sessions end before trying again.
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &s);
                });
            }
        });
        Sink {
            addr,
            shared,
            accepting: Some(accepting),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The messages it kept so far (none when it only counts).
    pub fn messages(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// How many messages it accepted so far.
    pub fn count(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// How many connections it took so far.
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Changes how it answers connections that come from now on.
    pub fn set(&self, change: impl FnOnce(&mut SinkOptions)) {
        let mut options = self.shared.options.lock().unwrap();
        let mut changed = SinkOptions::clone(&options);
        change(&mut changed);
        *options = Arc::new(changed);
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accepting thread, which sees `stop` and returns, closing the listener.
        if TcpStream::connect(self.addr).is_ok() {
            if let Some(t) = self.accepting.take() {
                let _ = t.join();
            }
        }
    }
}

/// How one dialogue ended.
enum End<S> {
    Closed,
    /// The client asked for STARTTLS and got 220: the plaintext stream, for the handshake.
    StartTls(S),
}

fn serve(tcp: TcpStream, shared: &Shared) -> io::Result<()> {
    let options = shared.options.lock().unwrap().clone();
    tcp.set_read_timeout(Some(options.idle_timeout))?;
    tcp.set_write_timeout(Some(options.idle_timeout))?;
    let session = Session {
        shared,
        options: &options,
    };
    let End::StartTls(tcp) = session.dialogue(tcp, false)? else {
        return Ok(());
    };
    let Some(config) = options.tls.clone().filter(|_| !options.broken_tls) else {
        return Ok(());
    };
    let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    // The handshake happens on the first read.
    session.dialogue(rustls::StreamOwned::new(conn, tcp), true)?;
    Ok(())
}

struct Session<'a> {
    shared: &'a Shared,
    options: &'a SinkOptions,
}

/// `line` without its line ending.
fn chomp(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The address between the first `<` and the `>` after it (the whole argument without
/// brackets).
fn address(arg: &[u8]) -> &[u8] {
    let Some(open) = arg.iter().position(|b| *b == b'<') else {
        return arg;
    };
    let rest = &arg[open + 1..];
    let close = rest.iter().position(|b| *b == b'>').unwrap_or(rest.len());
    &rest[..close]
}

/// What follows the `<...>` of a MAIL or RCPT argument.
fn after_address(arg: &[u8]) -> &[u8] {
    match arg.iter().position(|b| *b == b'>') {
        Some(close) => &arg[close + 1..],
        None => &[],
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

impl Session<'_> {
    /// One SMTP dialogue, plaintext or inside TLS (then without a greeting).
    fn dialogue<S: Read + Write>(&self, stream: S, tls: bool) -> io::Result<End<S>> {
        let o = self.options;
        let mut r = BufReader::with_capacity(64 * 1024, stream);
        let mut out: Vec<u8> = Vec::with_capacity(256);
        if !tls {
            out.extend_from_slice(o.greeting.as_bytes());
            out.extend_from_slice(b"\r\n");
            flush(&mut r, &mut out)?;
        }
        let offer_tls = !tls && (o.tls.is_some() || o.broken_tls);
        let (mut sender, mut recipients, mut accepted_rcpts) = (String::new(), Vec::new(), 0);
        let mut mail_params = String::new();
        let mut line = Vec::with_capacity(1024);
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line)? == 0 {
                return Ok(End::Closed);
            }
            let command = chomp(&line);
            let (verb, arg) = match command.iter().position(|b| *b == b' ') {
                Some(i) => (&command[..i], &command[i + 1..]),
                None => (command, &[][..]),
            };
            let is = |word: &str| verb.eq_ignore_ascii_case(word.as_bytes());
            if is("EHLO") {
                out.extend_from_slice(b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n");
                if o.smtputf8 {
                    out.extend_from_slice(b"250-SMTPUTF8\r\n");
                }
                if offer_tls {
                    out.extend_from_slice(b"250-STARTTLS\r\n");
                }
                out.extend_from_slice(b"250 SIZE 0\r\n");
            } else if is("HELO") {
                out.extend_from_slice(b"250 sink.test\r\n");
            } else if is("STARTTLS") && offer_tls {
                out.extend_from_slice(b"220 2.0.0 Ready to start TLS\r\n");
                flush(&mut r, &mut out)?;
                // Anything the client sent after STARTTLS is dropped with the buffer.
                return Ok(End::StartTls(r.into_inner()));
            } else if is("MAIL") {
                if o.record {
                    sender = String::from_utf8_lossy(address(arg)).into_owned();
                    mail_params = String::from_utf8_lossy(after_address(arg))
                        .trim()
                        .to_owned();
                    recipients.clear();
                }
                accepted_rcpts = 0;
                out.extend_from_slice(b"250 2.1.0 Ok\r\n");
            } else if is("RCPT") {
                let rcpt = address(arg);
                match o
                    .rcpt_replies
                    .iter()
                    .find(|(key, _)| contains(rcpt, key.as_bytes()))
                {
                    Some((_, reply)) => {
                        out.extend_from_slice(reply.as_bytes());
                        out.extend_from_slice(b"\r\n");
                    }
                    None => {
                        accepted_rcpts += 1;
                        if o.record {
                            recipients.push(String::from_utf8_lossy(rcpt).into_owned());
                        }
                        out.extend_from_slice(b"250 2.1.5 Ok\r\n");
                    }
                }
            } else if is("DATA") && accepted_rcpts == 0 {
                out.extend_from_slice(b"554 5.5.1 Error: no valid recipients\r\n");
            } else if is("DATA") {
                out.extend_from_slice(b"354 End data with <CR><LF>.<CR><LF>\r\n");
                flush(&mut r, &mut out)?;
                let mut data = Vec::new();
                loop {
                    line.clear();
                    if r.read_until(b'\n', &mut line)? == 0 {
                        return Ok(End::Closed);
                    }
                    if line == b".\r\n" {
                        break;
                    }
                    if o.record {
                        data.extend_from_slice(&line);
                    }
                }
                accepted_rcpts = 0;
                if let Some(reply) = &o.data_reply {
                    out.extend_from_slice(reply.as_bytes());
                    out.extend_from_slice(b"\r\n");
                } else {
                    if o.record {
                        self.shared.received.lock().unwrap().push(Received {
                            sender: sender.clone(),
                            recipients: std::mem::take(&mut recipients),
                            data,
                            tls,
                            mail_params: mail_params.clone(),
                        });
                    }
                    self.shared.accepted.fetch_add(1, Ordering::SeqCst);
                    out.extend_from_slice(b"250 2.0.0 Ok: queued as SINK\r\n");
                    if o.hang_up_after_message {
                        flush(&mut r, &mut out)?;
                        return Ok(End::Closed);
                    }
                }
            } else if is("RSET") {
                accepted_rcpts = 0;
                recipients.clear();
                out.extend_from_slice(b"250 2.0.0 Ok\r\n");
            } else if is("NOOP") {
                out.extend_from_slice(b"250 2.0.0 Ok\r\n");
            } else if is("COUNT") {
                let n = self.shared.accepted.load(Ordering::SeqCst);
                write!(out, "250 {n}\r\n")?;
            } else if is("QUIT") {
                out.extend_from_slice(b"221 2.0.0 Bye\r\n");
                flush(&mut r, &mut out)?;
                return Ok(End::Closed);
            } else {
                out.extend_from_slice(b"502 5.5.2 Error: command not recognized\r\n");
            }
            // Write only when the client has nothing more in flight (PIPELINING).
            if r.buffer().is_empty() {
                flush(&mut r, &mut out)?;
            }
        }
    }
}

/// Sends the replies gathered in `out`.
fn flush<S: Write>(r: &mut BufReader<S>, out: &mut Vec<u8>) -> io::Result<()> {
    let s = r.get_mut();
    s.write_all(out)?;
    s.flush()?;
    out.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client speaking raw SMTP lines to a sink.
    struct Client {
        r: BufReader<TcpStream>,
    }

    impl Client {
        fn connect(sink: &Sink) -> (Client, String) {
            let tcp = TcpStream::connect(sink.addr()).unwrap();
            tcp.set_read_timeout(Some(crate::WAIT)).unwrap();
            let mut c = Client {
                r: BufReader::new(tcp),
            };
            let greeting = c.reply();
            (c, greeting)
        }

        fn send(&mut self, bytes: &str) {
            self.r.get_mut().write_all(bytes.as_bytes()).unwrap();
        }

        /// One reply, all its lines joined with `\n`.
        fn reply(&mut self) -> String {
            let mut text = String::new();
            loop {
                let mut line = String::new();
                assert_ne!(self.r.read_line(&mut line).unwrap(), 0, "closed: {text}");
                text.push_str(line.trim_end());
                if line.as_bytes().get(3) != Some(&b'-') {
                    return text;
                }
                text.push('\n');
            }
        }

        fn cmd(&mut self, line: &str) -> String {
            self.send(&format!("{line}\r\n"));
            self.reply()
        }

        fn closed(&mut self) -> bool {
            let mut rest = String::new();
            matches!(self.r.read_line(&mut rest), Ok(0))
        }
    }

    #[test]
    fn records_what_it_accepts_with_dot_stuffing_kept_and_undone() {
        let sink = Sink::start(SinkOptions::default());
        let (mut c, greeting) = Client::connect(&sink);
        assert_eq!(greeting, "220 sink.test ESMTP");
        let ehlo = c.cmd("EHLO client.test");
        assert!(ehlo.contains("PIPELINING"), "{ehlo}");
        assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
        assert_eq!(c.cmd("MAIL FROM:<a@x.test> SIZE=10"), "250 2.1.0 Ok");
        assert_eq!(c.cmd("rcpt to:<b@y.test> NOTIFY=NEVER"), "250 2.1.5 Ok");
        assert_eq!(c.cmd("RCPT TO:<c@y.test>"), "250 2.1.5 Ok");
        assert!(c.cmd("DATA").starts_with("354"));
        assert_eq!(
            c.cmd("Subject: s\r\n\r\n..dot\r\nend\r\n."),
            "250 2.0.0 Ok: queued as SINK"
        );
        assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye");
        let got = sink.messages();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].sender, "a@x.test");
        assert_eq!(got[0].recipients, ["b@y.test", "c@y.test"]);
        assert_eq!(got[0].wire(), "Subject: s\r\n\r\n..dot\r\nend\r\n");
        assert_eq!(got[0].text(), "Subject: s\r\n\r\n.dot\r\nend\r\n");
        assert!(!got[0].tls);
        assert_eq!((sink.count(), sink.connection_count()), (1, 1));
    }

    #[test]
    fn answers_as_told_and_keeps_what_it_refused_out() {
        let sink = Sink::start(SinkOptions {
            greeting: "220 other.test hi".into(),
            rcpt_replies: vec![("bad".into(), "550 5.1.1 no such user".into())],
            ..SinkOptions::default()
        });
        let (mut c, greeting) = Client::connect(&sink);
        assert_eq!(greeting, "220 other.test hi");
        c.cmd("EHLO client.test");
        c.cmd("MAIL FROM:<>");
        assert_eq!(c.cmd("RCPT TO:<bad@y.test>"), "550 5.1.1 no such user");
        assert!(c.cmd("DATA").starts_with("554"), "no recipient, no data");
        assert_eq!(c.cmd("RCPT TO:<good@y.test>"), "250 2.1.5 Ok");
        c.cmd("DATA");
        c.cmd("x\r\n.");
        assert_eq!(c.cmd("FOO"), "502 5.5.2 Error: command not recognized");
        sink.set(|o| o.data_reply = Some("451 4.3.0 try later".into()));
        let (mut c, _) = Client::connect(&sink);
        c.cmd("MAIL FROM:<a@x.test>");
        c.cmd("RCPT TO:<good@y.test>");
        c.cmd("DATA");
        assert_eq!(c.cmd("y\r\n."), "451 4.3.0 try later");
        let got = sink.messages();
        assert_eq!(got.len(), 1, "only the first message");
        assert_eq!(
            (got[0].sender.as_str(), got[0].text()),
            ("", "x\r\n".into())
        );
        assert_eq!(got[0].recipients, ["good@y.test"]);
    }

    #[test]
    fn a_counting_sink_keeps_nothing_and_answers_count() {
        let sink = Sink::start(SinkOptions::counting());
        let (mut c, _) = Client::connect(&sink);
        // Pipelined: every command of two messages in one write.
        c.send(
            "EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n1\r\n.\r\n\
             MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n2\r\n.\r\n",
        );
        let replies: Vec<String> = (0..9).map(|_| c.reply()).collect();
        assert_eq!(replies[4], "250 2.0.0 Ok: queued as SINK");
        assert_eq!(replies[8], "250 2.0.0 Ok: queued as SINK");
        assert_eq!(c.cmd("COUNT"), "250 2");
        assert_eq!(sink.count(), 2);
        assert!(sink.messages().is_empty());
    }

    #[test]
    fn hangs_up_after_a_message_when_told() {
        let sink = Sink::start(SinkOptions {
            hang_up_after_message: true,
            ..SinkOptions::default()
        });
        let (mut c, _) = Client::connect(&sink);
        c.cmd("MAIL FROM:<a@x>");
        c.cmd("RCPT TO:<b@y>");
        c.cmd("DATA");
        assert_eq!(c.cmd("m\r\n."), "250 2.0.0 Ok: queued as SINK");
        assert!(c.closed());
    }

    #[test]
    fn starttls_works_or_breaks_as_told() {
        let ca = crate::pki::Ca::new("Sink CA");
        let leaf = ca.issue("localhost", &["localhost"], false);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.cert_der()], leaf.key_der())
            .unwrap();
        let sink = Sink::start(SinkOptions {
            tls: Some(Arc::new(server)),
            ..SinkOptions::default()
        });
        let (mut c, _) = Client::connect(&sink);
        assert!(c.cmd("EHLO c").contains("250-STARTTLS"));
        assert_eq!(c.cmd("STARTTLS"), "220 2.0.0 Ready to start TLS");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der.clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        let mut tls = BufReader::new(rustls::StreamOwned::new(conn, c.r.into_inner()));
        tls.get_mut()
            .write_all(b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
            .unwrap();
        let mut seen = String::new();
        while !seen.contains("354") {
            assert_ne!(tls.read_line(&mut seen).unwrap(), 0, "{seen}");
        }
        assert!(!seen.contains("STARTTLS"), "not offered again: {seen}");
        tls.get_mut().write_all(b"secret\r\n.\r\n").unwrap();
        let mut done = String::new();
        tls.read_line(&mut done).unwrap();
        assert!(done.starts_with("250 2.0.0"), "{done}");
        let got = sink.messages();
        assert!(got[0].tls);
        assert_eq!(got[0].text(), "secret\r\n");

        sink.set(|o| o.broken_tls = true);
        let (mut c, _) = Client::connect(&sink);
        c.cmd("EHLO c");
        assert_eq!(c.cmd("STARTTLS"), "220 2.0.0 Ready to start TLS");
        assert!(c.closed(), "hangs up instead of a handshake");
    }

    #[test]
    fn a_dropped_sink_frees_its_port() {
        let sink = Sink::start(SinkOptions::default());
        let port = sink.port();
        drop(sink);
        assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
        let again = Sink::start_on(port, SinkOptions::default());
        assert_eq!(again.port(), port);
    }
}
