//! A small blocking SMTP client for the end-to-end tests: plaintext, then TLS after
//! STARTTLS; lines and replies as the server sends them, a close read as an empty line.
//! Every read and write is bounded by [`IO_TIMEOUT`].
//!
//! Not here: implicit TLS or PROXY headers (the tests that need them write those bytes
//! themselves), or any judgement of the replies.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

/// How long one read or write may wait before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Gone,
}

/// One SMTP connection to 127.0.0.1.
pub struct Client {
    stream: Stream,
    pending: Vec<u8>,
}

impl Client {
    /// Connects, reading nothing.
    pub fn connect(port: u16) -> Client {
        let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Client {
            stream: Stream::Plain(tcp),
            pending: Vec::new(),
        }
    }

    /// Connects and reads the banner, which must be a `220`.
    pub fn greeted(port: u16) -> Client {
        let mut c = Client::connect(port);
        let banner = c.reply();
        assert!(banner.starts_with("220 "), "{banner}");
        c
    }

    /// The TCP connection, before STARTTLS (to write from another thread, say).
    pub fn tcp(&self) -> &TcpStream {
        match &self.stream {
            Stream::Plain(tcp) => tcp,
            _ => panic!("the connection is no longer plaintext"),
        }
    }

    fn read_some(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &mut self.stream {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Gone => Ok(0),
        }
    }

    /// One line without CR LF; empty once the server closed (or reset) the connection.
    pub fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.pending.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.pending.drain(..i + 2).collect();
                return String::from_utf8_lossy(&line[..i]).into_owned();
            }
            let mut buf = [0u8; 4096];
            match self.read_some(&mut buf) {
                Ok(0) => return String::new(),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("no reply within {IO_TIMEOUT:?}")
                }
                // A reset after the last reply is a close too.
                Err(_) => return String::new(),
            }
        }
    }

    /// One reply, its lines joined by `\n`.
    pub fn reply(&mut self) -> String {
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

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        let r = match &mut self.stream {
            Stream::Plain(s) => s.write_all(bytes).and_then(|()| s.flush()),
            Stream::Tls(s) => s.write_all(bytes).and_then(|()| s.flush()),
            Stream::Gone => panic!("closed"),
        };
        r.expect("write");
    }

    /// Sends `line` with CR LF; the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// EHLO, STARTTLS and the handshake with `config`, checking the name `relay.test`.
    pub fn tls(&mut self, config: Arc<rustls::ClientConfig>) {
        assert!(self.cmd("EHLO client.test").starts_with("250"));
        assert_eq!(self.cmd("STARTTLS"), "220 2.0.0 Ready to start TLS");
        let name = rustls::pki_types::ServerName::try_from("relay.test").unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            panic!("TLS twice")
        };
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).expect("handshake");
        }
        self.stream = Stream::Tls(Box::new(tls));
    }

    /// The server's certificate (DER) after [`Client::tls`].
    pub fn server_cert(&self) -> Vec<u8> {
        let Stream::Tls(tls) = &self.stream else {
            panic!("no TLS yet")
        };
        tls.conn.peer_certificates().expect("a server certificate")[0].to_vec()
    }
}
