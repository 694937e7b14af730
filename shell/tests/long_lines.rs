//! Lines longer than `smtp_line_length_limit` leave broken as Postfix breaks them, through
//! the delivery engine both roles use, and the `SIZE=` estimate counts what breaking adds.

mod common;

use certrelay_core::tls_policy::TlsLevel;
use certrelay_testkit::sink::{Sink, SinkOptions};
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::mpsc;
use std::thread;

/// A header of 1500 octets and a body line of 2500, with a leading dot further down.
fn long_message() -> String {
    let header = format!("X-Long: {}", "h".repeat(1500 - 8));
    let body = "b".repeat(2500);
    format!(
        "Subject: long\r\n{header}\r\n\r\n{body}\r\n.{}\r\nend\r\n",
        "d".repeat(1000)
    )
}

/// The wire lines of a received message (CR LF removed).
fn lines(wire: &str) -> Vec<&str> {
    wire.split("\r\n").filter(|l| !l.is_empty()).collect()
}

#[test]
fn long_header_and_body_lines_are_broken_on_the_way_out() {
    let sink = Sink::start(SinkOptions::default());
    let t = temp_spool("long-lines");
    let message = long_message();
    queue(
        &t.spool,
        "alice@example.org",
        &["bob@example.org"],
        &message,
    );
    let r = runner(
        &t.spool,
        config(vec![bracketed(sink.port())], TlsLevel::None),
        client_tls(None),
    );
    assert_eq!(run(r.run_once(false)).removed, 1);
    let wire = sink.messages()[0].wire();
    let (h, b, d) = ("h".repeat(2000), "b".repeat(2500), "d".repeat(2000));
    let want = [
        "Subject: long".to_string(),
        format!("X-Long: {}", &h[..990]),
        format!(" {}", &h[..1500 - 998]),
        b[..998].to_string(),
        format!(" {}", &b[..997]),
        format!(" {}", &b[..2500 - 998 - 997]),
        // Stuffed: the dot is not counted.
        format!("..{}", &d[..997]),
        format!(" {}", &d[..1000 - 997]),
        "end".to_string(),
    ];
    assert_eq!(lines(&wire), want);
}

#[test]
fn a_limit_of_zero_sends_lines_as_they_are() {
    let sink = Sink::start(SinkOptions::default());
    let t = temp_spool("long-lines-0");
    let message = long_message();
    queue(
        &t.spool,
        "alice@example.org",
        &["bob@example.org"],
        &message,
    );
    let mut c = config(vec![bracketed(sink.port())], TlsLevel::None);
    c.client.line_length_limit = 0;
    let r = runner(&t.spool, c, client_tls(None));
    assert_eq!(run(r.run_once(false)).removed, 1);
    assert_eq!(sink.messages()[0].text(), message);
}

/// A server that offers SIZE and reports each MAIL FROM command it gets.
fn size_server() -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut out = stream.try_clone().unwrap();
        let mut input = BufReader::new(stream);
        out.write_all(b"220 size.test ESMTP\r\n").unwrap();
        let mut line = Vec::new();
        let mut in_data = false;
        loop {
            line.clear();
            if input.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                return;
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            let reply: &[u8] = match text.get(..4).unwrap_or("").to_ascii_uppercase().as_str() {
                _ if in_data && text == "." => {
                    in_data = false;
                    b"250 2.0.0 Ok\r\n"
                }
                _ if in_data => continue,
                "EHLO" => b"250-size.test\r\n250 SIZE 100000\r\n",
                "MAIL" => {
                    let _ = tx.send(text.clone());
                    b"250 2.1.0 Ok\r\n"
                }
                "RCPT" => b"250 2.1.5 Ok\r\n",
                "DATA" => {
                    in_data = true;
                    b"354 go ahead\r\n"
                }
                "QUIT" => {
                    let _ = out.write_all(b"221 2.0.0 Bye\r\n");
                    return;
                }
                _ => b"502 5.5.2 Error\r\n",
            };
            out.write_all(reply).unwrap();
        }
    });
    (port, rx)
}

#[test]
fn size_counts_the_octets_breaking_adds() {
    let message = long_message();
    // Three lines are broken: once, twice and once; each break adds CR LF SP.
    let want = message.len() + 3 * 4;
    for (limit, size) in [(998, want), (0, message.len())] {
        let (port, mail) = size_server();
        let t = temp_spool("size");
        queue(
            &t.spool,
            "alice@example.org",
            &["bob@example.org"],
            &message,
        );
        let mut c = config(vec![bracketed(port)], TlsLevel::None);
        c.client.line_length_limit = limit;
        let r = runner(&t.spool, c, client_tls(None));
        assert_eq!(run(r.run_once(false)).removed, 1);
        assert_eq!(
            mail.recv().unwrap(),
            format!("MAIL FROM:<alice@example.org> SIZE={size}"),
            "limit {limit}"
        );
    }
}
