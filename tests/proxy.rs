//! A relay behind a balancer that sends the PROXY protocol (`smtpd_upstream_proxy_protocol
//! = haproxy`), with the balancer played by the test: it writes the version 1 or 2 header
//! itself, then speaks SMTP or TLS as the client would. The client's address in the log,
//! in `Received:`, in `mynetworks` and in the per-client limit is the header's; a client
//! that sends no header is served nothing. `certrelayd check` warns about wildcard binds.
//!
//! The same with Debian's HAProxy in front of two relays: tests/haproxy.rs.

use certrelay_core::proxy::{v1_header, v2_header, Addresses};
use certrelay_testkit::daemon::Daemon;
use certrelay_testkit::pki::client_config;
use certrelay_testkit::pki::{Ca, Issued};
use certrelay_testkit::recipe::RelayFiles;
use certrelay_testkit::sink::{Sink, SinkOptions};
use certrelay_testkit::{binary, free_port, run, wait_until, TempDir};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A blocking SMTP client over plaintext or TLS, one reply at a time.
struct Client {
    tcp: Option<TcpStream>,
    tls: Option<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
    pending: Vec<u8>,
}

impl Client {
    fn connect(port: u16) -> Client {
        let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_nodelay(true).unwrap();
        Client {
            tcp: Some(tcp),
            tls: None,
            pending: Vec::new(),
        }
    }

    /// Connects and sends `header` as a balancer would, before anything else.
    fn behind(port: u16, header: &[u8]) -> Client {
        let mut c = Client::connect(port);
        c.send(header);
        c
    }

    fn send(&mut self, bytes: &[u8]) {
        let r = match (&mut self.tls, &mut self.tcp) {
            (Some(s), _) => s.write_all(bytes).and_then(|()| s.flush()),
            (None, Some(s)) => s.write_all(bytes),
            (None, None) => unreachable!(),
        };
        r.expect("write");
    }

    /// One line without CR LF; empty once the server closed the connection.
    fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.pending.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.pending.drain(..i + 2).collect();
                return String::from_utf8_lossy(&line[..i]).into_owned();
            }
            let mut buf = [0u8; 4096];
            let n = match (&mut self.tls, &mut self.tcp) {
                (Some(s), _) => s.read(&mut buf),
                (None, Some(s)) => s.read(&mut buf),
                (None, None) => unreachable!(),
            };
            match n {
                Ok(0) => return String::from_utf8_lossy(&self.pending).into_owned(),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("no reply within {IO_TIMEOUT:?}")
                }
                // A reset is a close too.
                Err(_) => return String::from_utf8_lossy(&self.pending).into_owned(),
            }
        }
    }

    fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            let last = line.len() < 4 || line.as_bytes()[3] != b'-';
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Starts TLS on the bare connection (wrapper mode), sending `first` and the
    /// ClientHello in one write, as a balancer forwarding a fast client may.
    fn wrapped(port: u16, first: &[u8], config: Arc<rustls::ClientConfig>) -> Client {
        let mut c = Client::connect(port);
        let name = rustls::pki_types::ServerName::try_from("relay.test").unwrap();
        let mut conn = rustls::ClientConnection::new(config, name).unwrap();
        let mut bytes = first.to_vec();
        conn.write_tls(&mut bytes).unwrap();
        c.send(&bytes);
        let mut tls = rustls::StreamOwned::new(conn, c.tcp.take().unwrap());
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).expect("handshake");
        }
        c.tls = Some(tls);
        c
    }

    /// MAIL, RCPT, DATA: the first reply that is not the expected one, or the last.
    fn mail(&mut self, rcpt: &str) -> String {
        for (line, code) in [
            ("MAIL FROM:<me@laptop.test>".to_owned(), "250"),
            (format!("RCPT TO:<{rcpt}>"), "250"),
            ("DATA".to_owned(), "354"),
        ] {
            let r = self.cmd(&line);
            if !r.starts_with(code) {
                return r;
            }
        }
        self.cmd(&format!("Subject: to {rcpt}\r\n\r\nhello\r\n."))
    }
}

fn pair(source: &str, destination: &str) -> Option<Addresses> {
    Some(Addresses {
        source: source.parse::<SocketAddr>().unwrap(),
        destination: destination.parse::<SocketAddr>().unwrap(),
    })
}

struct Relay {
    _dir: TempDir,
    daemon: Daemon,
    /// STARTTLS listener behind the balancer, one session per client address.
    port: u16,
    /// Wrapper-mode listener behind the balancer.
    wrapped: u16,
    ca: Ca,
    laptop: Issued,
}

/// A relay whose two listeners expect a PROXY header, forwarding to `sink`, with
/// `mynetworks = 192.0.2.0/24` (127.0.0.1, the balancer's own address, is not in it).
fn relay(sink: &Sink) -> Relay {
    relay_with(sink, "")
}

/// [`relay`] with `extra` lines at the end of main.cf.
fn relay_with(sink: &Sink, extra: &str) -> Relay {
    let files = RelayFiles::new("proxy");
    // Onward to the sink, not held.
    files.dir.write(
        "main.cf",
        &files.main_cf(&format!(
            "relayhost = [127.0.0.1]:{}\ndefer_transports =\n{extra}",
            sink.port()
        )),
    );
    let RelayFiles { dir, ca, laptop } = files;
    let (port, wrapped) = (free_port(), free_port());
    dir.write(
        "master.cf",
        &format!(
            "127.0.0.1:{port} inet n - n - - smtpd\n  \
               -o smtpd_upstream_proxy_protocol=haproxy\n  \
               -o smtpd_upstream_proxy_timeout=2s\n  \
               -o smtpd_client_connection_count_limit=1\n\
             127.0.0.1:{wrapped} inet n - n - - smtpd\n  \
               -o smtpd_upstream_proxy_protocol=haproxy\n  \
               -o smtpd_tls_wrappermode=yes\n"
        ),
    );
    let daemon = Daemon::start(
        &binary("certrelayd"),
        &["-c", dir.path().to_str().unwrap()],
        "daemon started",
    );
    Relay {
        _dir: dir,
        daemon,
        port,
        wrapped,
        ca,
        laptop,
    }
}

#[test]
fn the_client_is_the_one_the_header_names_in_logs_mynetworks_and_received() {
    let sink = Sink::start(SinkOptions::default());
    let r = relay(&sink);

    // Version 1 naming an address in mynetworks: relayed without a certificate.
    let header = v1_header(pair("192.0.2.7:40000", "127.0.0.1:25"));
    let mut c = Client::behind(r.port, header.as_bytes());
    assert!(c.reply().starts_with("220 relay.test"));
    assert!(c.cmd("EHLO laptop.test").starts_with("250"));
    let done = c.mail("one@elsewhere.test");
    assert!(done.starts_with("250 2.0.0 Ok: queued as"), "{done}");
    c.cmd("QUIT");
    r.daemon.wait_log("connect from unknown[192.0.2.7]");

    // Version 2 naming an address outside mynetworks: relaying is refused, although the
    // balancer's own address (127.0.0.1) is the same as before.
    let header = v2_header(pair("198.51.100.9:40001", "127.0.0.1:25"), &[]).unwrap();
    let mut c = Client::behind(r.port, &header);
    assert!(c.reply().starts_with("220 relay.test"));
    assert!(c.cmd("EHLO laptop.test").starts_with("250"));
    let refused = c.mail("two@elsewhere.test");
    assert!(refused.starts_with("554 5.7.1"), "{refused}");
    // The reject line may be logged after the reply went out: wait for it.
    r.daemon.wait_log("connect from unknown[198.51.100.9]");
    r.daemon.wait_log("RCPT from unknown[198.51.100.9]");

    // Wrapper mode: the header and the ClientHello arrive together; the laptop's
    // certificate relays, and the log and Received: name the header's IPv6 client.
    let header = v2_header(pair("[2001:db8::7]:40002", "[2001:db8::1]:465"), &[]).unwrap();
    let mut c = Client::wrapped(
        r.wrapped,
        &header,
        client_config(&r.ca.cert_pem, Some(r.laptop.pems())),
    );
    assert!(c.reply().starts_with("220 relay.test"));
    assert!(c.cmd("EHLO laptop.test").starts_with("250"));
    let done = c.mail("three@elsewhere.test");
    assert!(done.starts_with("250 2.0.0 Ok: queued as"), "{done}");
    c.cmd("QUIT");
    r.daemon.wait_log("connect from unknown[2001:db8::7]");

    let messages = wait_until("two messages at the sink", || {
        let m = sink.messages();
        (m.len() == 2).then_some(m)
    });
    let received = |rcpt: &str| {
        let m = messages
            .iter()
            .find(|m| m.recipients.iter().any(|r| r == rcpt))
            .expect(rcpt);
        let text = m.text();
        text.lines()
            .find(|l| l.starts_with("Received:"))
            .unwrap()
            .to_owned()
    };
    assert!(
        received("one@elsewhere.test").contains("(unknown [192.0.2.7])"),
        "{messages:?}"
    );
    assert!(
        received("three@elsewhere.test").contains("(unknown [IPv6:2001:db8::7])"),
        "{messages:?}"
    );
    assert!(
        !r.daemon.log().contains("unknown[127.0.0.1]"),
        "{}",
        r.daemon.log()
    );
}

#[test]
fn the_per_client_limit_counts_the_headers_client() {
    let sink = Sink::start(SinkOptions::default());
    let r = relay(&sink);
    let header = |client: &str| v1_header(pair(client, "127.0.0.1:25")).into_bytes();
    // smtpd_client_connection_count_limit = 1 on this listener: a second session for the
    // same client is refused, one for another client is not (all come from 127.0.0.1).
    let mut first = Client::behind(r.port, &header("198.51.100.20:1000"));
    assert!(first.reply().starts_with("220 "));
    let mut second = Client::behind(r.port, &header("198.51.100.20:1001"));
    let refused = second.reply();
    assert!(
        refused.starts_with("421 4.7.0 relay.test Error: too many connections from 198.51.100.20"),
        "{refused}"
    );
    let mut other = Client::behind(r.port, &header("198.51.100.21:1002"));
    assert!(other.reply().starts_with("220 "));
    first.cmd("QUIT");
    other.cmd("QUIT");
}

#[test]
fn a_client_without_the_header_is_closed_without_a_greeting() {
    let sink = Sink::start(SinkOptions::default());
    let r = relay(&sink);

    // Silence: closed after smtpd_upstream_proxy_timeout (2s here), having read nothing.
    let began = Instant::now();
    let mut silent = Client::connect(r.port);
    assert_eq!(silent.line(), "");
    assert!(
        began.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        began.elapsed()
    );
    r.daemon
        .wait_log("haproxy read from 127.0.0.1: timeout error");

    // SMTP straight away: closed at once, without a greeting.
    let mut direct = Client::connect(r.port);
    direct.send(b"EHLO laptop.test\r\n");
    assert_eq!(direct.line(), "");
    r.daemon
        .wait_log("haproxy read from 127.0.0.1: no PROXY protocol header");

    // A TLS ClientHello without a header on the wrapper-mode listener: the same.
    let mut tls = Client::connect(r.wrapped);
    tls.send(b"\x16\x03\x01\x00\x05hello");
    assert_eq!(tls.line(), "");
    r.daemon
        .wait_log_count("haproxy read from 127.0.0.1: no PROXY protocol header", 2);

    // A header cut short by the peer.
    let mut cut = Client::connect(r.port);
    cut.send(b"PROXY TCP4 192.0.2.7 ");
    cut.tcp
        .as_ref()
        .unwrap()
        .shutdown(std::net::Shutdown::Write)
        .unwrap();
    assert_eq!(cut.line(), "");
    r.daemon
        .wait_log("lost connection while reading the header");
    assert!(
        !r.daemon.log().contains("connect from"),
        "{}",
        r.daemon.log()
    );
}

/// Silent connections that never send their header cannot pile up: no more of them wait
/// than sessions are allowed (`default_process_limit`); the next is closed at once, and
/// once they are gone a balancer's connection is served again.
#[test]
fn connections_waiting_for_their_header_are_limited_like_sessions() {
    let sink = Sink::start(SinkOptions::default());
    let r = relay_with(&sink, "default_process_limit = 2");
    let silent: Vec<Client> = (0..2).map(|_| Client::connect(r.port)).collect();
    let header = v1_header(pair("198.51.100.30:1000", "127.0.0.1:25")).into_bytes();
    // Both silent ones are waiting (each counted as it is accepted): retry until the relay
    // has seen them, then a third is closed without a greeting.
    wait_until("a third connection closed at once", || {
        let mut c = Client::behind(r.port, &header);
        c.line().is_empty().then_some(())
    });
    r.daemon
        .wait_log("2 connections already wait for their PROXY header; closing connection");
    drop(silent);
    r.daemon
        .wait_log_count("lost connection while reading the header", 2);
    let mut served = Client::behind(r.port, &header);
    assert!(served.reply().starts_with("220 relay.test"));
    served.cmd("QUIT");
}

#[test]
fn check_warns_about_a_proxy_listener_on_a_wildcard_address() {
    let dir = TempDir::new("proxy-check");
    dir.write("main.cf", "myhostname = relay.test\nmail_owner = nobody\n");
    dir.write(
        "master.cf",
        "2525 inet n - n - - smtpd -o smtpd_upstream_proxy_protocol=haproxy\n\
         10.1.2.3:2526 inet n - n - - smtpd -o smtpd_upstream_proxy_protocol=haproxy\n\
         [::]:2527 inet n - n - - smtpd -o smtpd_upstream_proxy_protocol=haproxy\n\
         2528 inet n - n - - smtpd\n",
    );
    let out = run("certrelayd", &["-c", dir.path().to_str().unwrap(), "check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    let master_cf = dir.path().join("master.cf").display().to_string();
    let warned: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("a wildcard address"))
        .collect();
    assert_eq!(warned.len(), 2, "{err}");
    assert!(
        warned[0].starts_with(&format!("{master_cf}:1: warning:")),
        "{err}"
    );
    assert!(
        warned[1].starts_with(&format!("{master_cf}:3: warning:")),
        "{err}"
    );

    // A value other than haproxy is an error at its place.
    dir.write(
        "master.cf",
        "127.0.0.1:2525 inet n - n - - smtpd -o smtpd_upstream_proxy_protocol=v2\n",
    );
    let out = run("certrelayd", &["-c", dir.path().to_str().unwrap(), "check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("expected haproxy"), "{err}");
}
