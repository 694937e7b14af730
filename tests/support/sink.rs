//! A plaintext SMTP sink on loopback that accepts every message, for end-to-end tests.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One message the sink accepted.
#[derive(Clone, Debug)]
pub struct Accepted {
    /// Envelope sender.
    pub sender: String,
    /// Envelope recipients.
    pub recipients: Vec<String>,
    /// The message as received (dot-stuffing left as sent).
    pub data: String,
}

/// Accepts every message on 127.0.0.1:port; offers no STARTTLS.
pub struct Sink {
    accepted: Arc<Mutex<Vec<Accepted>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    /// A sink on a fresh port.
    pub fn start_any() -> (Sink, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind sink");
        let port = listener.local_addr().unwrap().port();
        (Sink::with(listener), port)
    }

    /// A sink on `port` (free until now), retried briefly: a client connection may hold
    /// the port as its own for a moment.
    pub fn start(port: u16) -> Sink {
        let listener = wait_until("the sink's port", || {
            TcpListener::bind(("127.0.0.1", port)).ok()
        });
        Sink::with(listener)
    }

    fn with(listener: TcpListener) -> Sink {
        listener.set_nonblocking(true).unwrap();
        let accepted: Arc<Mutex<Vec<Accepted>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (acc, st) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        conn.set_read_timeout(Some(Duration::from_secs(10)))
                            .unwrap();
                        let acc = acc.clone();
                        std::thread::spawn(move || {
                            let _ = serve(conn, &acc);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Sink {
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// Messages accepted so far.
    pub fn accepted(&self) -> Vec<Accepted> {
        self.accepted.lock().unwrap().clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, accepted: &Mutex<Vec<Accepted>>) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut input = BufReader::new(conn);
    out.write_all(b"220 sink.test ESMTP\r\n")?;
    let (mut sender, mut recipients) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let arg = |prefix: usize| {
            line[prefix..]
                .trim()
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or("")
                .to_owned()
        };
        match verb.as_str() {
            "EHLO" | "HELO" => out.write_all(b"250-sink.test\r\n250 8BITMIME\r\n")?,
            "MAIL" => {
                sender = arg(10);
                recipients.clear();
                out.write_all(b"250 2.1.0 Ok\r\n")?;
            }
            "RCPT" => {
                recipients.push(arg(8));
                out.write_all(b"250 2.1.5 Ok\r\n")?;
            }
            "DATA" => {
                out.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
                let mut data = String::new();
                loop {
                    let mut l = String::new();
                    if input.read_line(&mut l)? == 0 {
                        return Ok(());
                    }
                    if l == ".\r\n" {
                        break;
                    }
                    data.push_str(&l);
                }
                accepted.lock().unwrap().push(Accepted {
                    sender: sender.clone(),
                    recipients: std::mem::take(&mut recipients),
                    data,
                });
                out.write_all(b"250 2.0.0 Ok: queued\r\n")?;
            }
            "QUIT" => {
                out.write_all(b"221 2.0.0 Bye\r\n")?;
                return Ok(());
            }
            _ => out.write_all(b"250 2.0.0 Ok\r\n")?,
        }
    }
}

/// Polls `f` every 50 ms for up to 20 s.
pub fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
