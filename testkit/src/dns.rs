//! A name server on 127.0.0.1 for the resolver's tests: answers MX and A questions from a
//! fixed zone over UDP and TCP, counts the questions, and can drop or truncate UDP answers.
//! It knows no other record type, no compression in questions, no EDNS, no recursion.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Records the test name server knows.
#[derive(Clone, Debug)]
pub enum Rr {
    /// Preference and exchange host.
    Mx(u16, &'static str),
    /// An IPv4 address.
    A([u8; 4]),
}

/// A name server on 127.0.0.1 answering from `zone` (name → records); other names get
/// NXDOMAIN, other types of known names no data. Counts the UDP queries. Optionally drops
/// the first UDP queries, or truncates every UDP answer (the full answer then comes over
/// TCP on the same port).
pub struct DnsServer {
    /// Where it listens, UDP and TCP.
    pub addr: SocketAddr,
    /// UDP questions received (dropped ones included).
    pub queries: Arc<AtomicUsize>,
    /// TCP connections received.
    pub tcp_queries: Arc<AtomicUsize>,
}

/// How the name server misbehaves over UDP.
#[derive(Clone, Copy, Debug, Default)]
pub struct DnsOptions {
    /// Questions to ignore before the first answer.
    pub drop_first: usize,
    /// Answer with the TC bit and no records, so the client asks again over TCP.
    pub truncate_udp: bool,
}

/// A UDP socket and a TCP listener on the same 127.0.0.1 port. The UDP port is chosen by
/// the kernel; the TCP port of that number may belong to another test, so try again.
fn bind_pair() -> (UdpSocket, SocketAddr, TcpListener) {
    for _ in 0..50 {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind UDP on 127.0.0.1");
        let addr = socket.local_addr().unwrap();
        if let Ok(tcp) = TcpListener::bind(addr) {
            return (socket, addr, tcp);
        }
    }
    panic!("no 127.0.0.1 port free for both UDP and TCP after 50 tries");
}

impl DnsServer {
    /// A name server answering every question from `zone`.
    pub fn start(zone: HashMap<&'static str, Vec<Rr>>) -> DnsServer {
        DnsServer::start_with(zone, DnsOptions::default())
    }

    /// As [`DnsServer::start`], dropping or truncating UDP answers as `options` says.
    pub fn start_with(zone: HashMap<&'static str, Vec<Rr>>, options: DnsOptions) -> DnsServer {
        let (socket, addr, tcp) = bind_pair();
        let queries = Arc::new(AtomicUsize::new(0));
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        let zone = Arc::new(zone);
        let (count, z) = (queries.clone(), zone.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, peer)) = socket.recv_from(&mut buf) {
                let seen = count.fetch_add(1, Ordering::SeqCst);
                if seen < options.drop_first {
                    continue;
                }
                if let Some(mut reply) = answer(&buf[..n], &z) {
                    if options.truncate_udp {
                        reply[2] |= 0x02;
                        reply[6..8].copy_from_slice(&[0, 0]);
                        reply.truncate(question_end(&reply).unwrap_or(12));
                    }
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        let count = tcp_queries.clone();
        std::thread::spawn(move || {
            for stream in tcp.incoming() {
                let Ok(mut stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_read_timeout(Some(crate::WAIT));
                let mut len = [0u8; 2];
                if stream.read_exact(&mut len).is_err() {
                    continue;
                }
                let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if stream.read_exact(&mut query).is_err() {
                    continue;
                }
                if let Some(reply) = answer(&query, &zone) {
                    let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                    framed.extend(reply);
                    let _ = stream.write_all(&framed);
                }
            }
        });
        DnsServer {
            addr,
            queries,
            tcp_queries,
        }
    }
}

/// Where the question section of a message ends.
fn question_end(message: &[u8]) -> Option<usize> {
    let mut pos = 12;
    loop {
        let len = usize::from(*message.get(pos)?);
        pos += 1 + len;
        if len == 0 {
            return Some(pos + 4);
        }
    }
}

fn answer(query: &[u8], zone: &HashMap<&'static str, Vec<Rr>>) -> Option<Vec<u8>> {
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(pos)?);
        pos += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(pos..pos + len)?).to_lowercase());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*query.get(pos)?, *query.get(pos + 1)?]);
    let question_end = pos + 4;
    let name = labels.join(".");
    let records = zone.get(name.as_str());
    let answers: Vec<Vec<u8>> = records
        .into_iter()
        .flatten()
        .filter_map(|rr| match (rr, qtype) {
            (Rr::Mx(pref, host), 15) => {
                let mut rdata = pref.to_be_bytes().to_vec();
                rdata.extend(encode_name(host));
                Some((15u16, rdata))
            }
            (Rr::A(ip), 1) => Some((1u16, ip.to_vec())),
            _ => None,
        })
        .map(|(t, rdata)| {
            let mut rr = vec![0xC0, 0x0C];
            rr.extend(t.to_be_bytes());
            rr.extend(1u16.to_be_bytes());
            rr.extend(60u32.to_be_bytes());
            rr.extend((rdata.len() as u16).to_be_bytes());
            rr.extend(rdata);
            rr
        })
        .collect();
    let rcode = if records.is_none() { 3 } else { 0 };
    let mut out = query[..2].to_vec();
    out.extend([0x81, 0x80 | rcode]);
    out.extend(1u16.to_be_bytes());
    out.extend((answers.len() as u16).to_be_bytes());
    out.extend([0, 0, 0, 0]);
    out.extend_from_slice(&query[12..question_end]);
    for a in answers {
        out.extend(a);
    }
    Some(out)
}

fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}
