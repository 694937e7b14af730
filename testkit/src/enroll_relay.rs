//! A fake relay speaking `XCERTRELAY` for one connection, to test the laptop against relays
//! that are not ours: an impostor whose certificate should not pass, or a hostile relay whose
//! answer should be refused. It records what arrived inside TLS and the client certificate.
//!
//! What it does not do: check codes, requests or certificates (the test's `answer` makes the
//! certificate text it sends, honest or not), or serve more than one connection.

use certrelay_core::enroll::{EnrollAnswer, RequestReader, Step};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What the fake relay saw.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// The TLS handshake completed.
    pub handshake_done: bool,
    /// The client certificate the laptop presented, DER.
    pub client_cert: Option<Vec<u8>>,
    /// Every byte that arrived inside TLS.
    pub inside_tls: Vec<u8>,
}

/// Makes the certificate text (PEM: the laptop's certificate, then the CA's, or whatever the
/// test wants to send) from the request's DER.
pub type Answer = Box<dyn Fn(&[u8]) -> String + Send>;

/// A fake relay on 127.0.0.1 serving one connection (STARTTLS, then `XCERTRELAY`).
pub struct FakeRelay {
    port: u16,
    seen: Arc<Mutex<Seen>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeRelay {
    /// Starts it with the server configuration `tls` (its certificate is the relay's).
    pub fn start(tls: Arc<rustls::ServerConfig>, answer: Answer) -> FakeRelay {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local address").port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let record = seen.clone();
        let thread = std::thread::spawn(move || {
            if let Ok((tcp, _)) = listener.accept() {
                let _ = tcp.set_read_timeout(Some(crate::WAIT));
                let _ = serve(tcp, tls, &answer, &record);
            }
        });
        FakeRelay {
            port,
            seen,
            thread: Some(thread),
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What it saw, once its connection is over.
    pub fn finish(mut self) -> Seen {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn line(reader: &mut impl BufRead) -> std::io::Result<String> {
    let mut text = String::new();
    if reader.read_line(&mut text)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(text.trim_end().to_string())
}

/// Records what is read inside TLS.
struct Recording<'a, R> {
    inner: R,
    seen: &'a Mutex<Seen>,
}

impl<R: Read> Read for Recording<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .inside_tls
            .extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

fn serve(
    mut tcp: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    answer: &Answer,
    seen: &Mutex<Seen>,
) -> std::io::Result<()> {
    tcp.write_all(b"220 fake.test ESMTP\r\n")?;
    let mut plain = BufReader::new(tcp.try_clone()?);
    line(&mut plain)?;
    tcp.write_all(b"250-fake.test\r\n250 STARTTLS\r\n")?;
    line(&mut plain)?;
    tcp.write_all(b"220 2.0.0 Ready to start TLS\r\n")?;
    let mut conn = rustls::ServerConnection::new(tls).map_err(std::io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    {
        let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
        s.handshake_done = true;
        s.client_cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
    }
    let stream = rustls::StreamOwned::new(conn, tcp);
    let mut reader = BufReader::new(Recording {
        inner: stream,
        seen,
    });
    let send = |reader: &mut BufReader<Recording<'_, rustls::StreamOwned<_, _>>>, bytes: &[u8]| {
        let stream = &mut reader.get_mut().inner;
        stream.write_all(bytes).and_then(|()| stream.flush())
    };
    line(&mut reader)?;
    send(&mut reader, b"250-fake.test\r\n250 XCERTRELAY\r\n")?;
    line(&mut reader)?;
    send(&mut reader, b"334 Send the request\r\n")?;
    let mut request = RequestReader::new();
    let der = loop {
        if let Step::Done(done) = request.line(line(&mut reader)?.as_bytes()) {
            break done.unwrap_or_default();
        }
    };
    let reply = EnrollAnswer::Issued {
        name: String::from("alice"),
        chain_pem: answer(&der),
    }
    .reply();
    send(&mut reader, &reply.to_bytes())?;
    if line(&mut reader).is_ok() {
        send(&mut reader, b"221 2.0.0 Bye\r\n")?;
    }
    Ok(())
}
