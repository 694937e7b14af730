//! Throughput of the SMTP server session: the command path (a pipelined EHLO, MAIL,
//! RCPT × N, DATA batch) and the DATA path (a 1 MB body with dot-stuffed lines, fed in
//! 16 KiB reads), both with every output drained as a shell would, against a plain memchr
//! scan for LF over the same bytes as the ceiling.

use certrelay_core::client::{line_break_overhead, BodyEncoder};
use certrelay_core::facts::PeerInfo;
use certrelay_core::net::Cidr;
use certrelay_core::server::{ServerOutput, ServerSession};
use certrelay_core::settings::ServerSettings;
use certrelay_core::Instant;
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;

const NOW: Instant = Instant::from_millis(1_000);

/// The size of one read from the socket in the DATA bench.
const READ: usize = 16 * 1024;

/// Target size of the message content.
const BODY_BYTES: usize = 1 << 20;

fn settings() -> Arc<ServerSettings> {
    Arc::new(ServerSettings {
        myhostname: "relay.example".into(),
        banner: "relay.example ESMTP certrelay".into(),
        mynetworks: vec![Cidr {
            addr: "127.0.0.0".parse().unwrap(),
            prefix: 8,
        }],
        mydestination: vec!["relay.example".into()],
        ..ServerSettings::default()
    })
}

fn client() -> PeerInfo {
    PeerInfo {
        addr: "127.0.0.1".parse().unwrap(),
        name: "localhost".into(),
    }
}

/// Takes every output as the shell would, keeping only counts; returns the body octets seen.
fn drain(session: &mut ServerSession) -> usize {
    let mut body = 0;
    while let Some(output) = session.poll_output() {
        match output {
            ServerOutput::BodyChunk(chunk) => body += chunk.len(),
            other => {
                black_box(other);
            }
        }
    }
    body
}

/// A fresh session with its greeting taken.
fn session() -> ServerSession {
    let mut s = ServerSession::new(settings(), client(), NOW);
    drain(&mut s);
    s
}

fn envelope(recipients: usize) -> String {
    let mut batch = String::from(
        "EHLO laptop.montravail.example\r\n\
         MAIL FROM:<alice@laptop.montravail.example> BODY=8BITMIME SIZE=1048576\r\n",
    );
    for i in 0..recipients {
        writeln!(batch, "RCPT TO:<user{i}@far{}.example>\r", i % 7).unwrap();
    }
    batch.push_str("DATA\r\n");
    batch
}

/// A repeatable pseudo-random stream (xorshift64).
struct Stream(u64);

impl Stream {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// About 1 MB of message on the wire: headers, then text lines of 0..76 characters, some
/// starting with a dot (sent doubled), then the end marker.
fn wire_body() -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "the",
        "relay",
        "message",
        "queue",
        "certificate",
        "and",
        "of",
        "laptop",
        "deliver",
        "to",
        "a",
        "postmaster",
        "fingerprint",
        "mail",
        "is",
        "with",
    ];
    let mut text = String::from(
        "From: Alice <alice@laptop.montravail.example>\r\n\
         To: Bob <bob@far.example>\r\n\
         Subject: quarterly figures\r\n\
         Date: Mon, 30 Nov 2026 10:00:00 +0100\r\n\
         Message-ID: <20261130100000.1234@laptop.montravail.example>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n",
    );
    let mut stream = Stream(0x2545_F491_4F6C_DD1D);
    while text.len() < BODY_BYTES {
        let roll = stream.below(100);
        if roll < 5 {
            text.push_str("\r\n");
            continue;
        }
        let mut line = String::new();
        if roll < 8 {
            // A line that starts with a dot, stuffed on the wire.
            line.push_str("..");
        }
        let width = 20 + stream.below(57) as usize;
        while line.len() < width {
            if !line.is_empty() && !line.ends_with('.') {
                line.push(' ');
            }
            line.push_str(WORDS[stream.below(WORDS.len() as u64) as usize]);
        }
        text.push_str(&line);
        text.push_str("\r\n");
    }
    text.push_str(".\r\n");
    text.into_bytes()
}

fn bench_commands(c: &mut Criterion) {
    let mut group = c.benchmark_group("smtp_commands");
    for recipients in [5usize, 50] {
        let batch = envelope(recipients);
        let bytes = batch.as_bytes();
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("pipelined_ehlo_mail_rcpt_data", recipients),
            bytes,
            |b, bytes| {
                b.iter_batched(
                    session,
                    |mut s| {
                        s.handle_input(black_box(bytes), NOW);
                        drain(&mut s);
                        s
                    },
                    BatchSize::SmallInput,
                )
            },
        );
        group.bench_with_input(
            BenchmarkId::new("memchr_lf_ceiling", recipients),
            bytes,
            |b, bytes| b.iter(|| memchr::memchr_iter(b'\n', black_box(bytes)).count()),
        );
    }
    group.finish();
}

fn bench_data(c: &mut Criterion) {
    let wire = wire_body();
    let envelope = envelope(1);
    // The content the session must hand out: lines unstuffed, end marker dropped.
    let expected: usize = {
        let mut s = session();
        s.handle_input(envelope.as_bytes(), NOW);
        drain(&mut s);
        wire.chunks(READ)
            .map(|read| {
                s.handle_input(read, NOW);
                drain(&mut s)
            })
            .sum()
    };
    let stuffed = wire.windows(3).filter(|w| w == b"\n..").count();
    assert_eq!(expected, wire.len() - 3 - stuffed, "unstuffed size");
    eprintln!(
        "smtp_parse DATA body: {} octets on the wire, {stuffed} dot-stuffed lines, {} lines",
        wire.len(),
        memchr::memchr_iter(b'\n', &wire).count()
    );

    let mut group = c.benchmark_group("smtp_data");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    bench_receive(
        &mut group,
        "session_16k_reads_unstuff_drain",
        &envelope,
        &wire,
    );
    group.bench_function("memchr_lf_ceiling", |b| {
        b.iter(|| memchr::memchr_iter(b'\n', black_box(&wire)).count())
    });
    // A line-at-a-time unstuffer's floor: find each LF, copy the line minus a leading
    // stuffing dot into an output buffer.
    group.bench_function("memchr_lines_copy_ceiling", |b| {
        let mut out = Vec::with_capacity(wire.len());
        b.iter(|| {
            out.clear();
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', black_box(&wire)) {
                let line = &wire[start..=end];
                let line = if line.first() == Some(&b'.') {
                    &line[1..]
                } else {
                    line
                };
                out.extend_from_slice(line);
                start = end + 1;
            }
            out.len()
        })
    });
    group.finish();
}

/// The delivery side of the same content: the relay's message as stored (unstuffed, CR LF
/// lines), encoded for DATA in the 64 KiB pieces the delivery hands over, with the default
/// line length limit.
fn bench_body_encode(c: &mut Criterion) {
    let wire = wire_body();
    // Unstuffed, end marker dropped: what the spool holds.
    let mut content = Vec::with_capacity(wire.len());
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', &wire[..wire.len() - 3]) {
        let line = &wire[start..=end];
        content.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        start = end + 1;
    }
    let mut out = Vec::with_capacity(wire.len() + 1024);
    let mut group = c.benchmark_group("smtp_body_encode");
    group.throughput(Throughput::Bytes(content.len() as u64));
    group.bench_function("encode_64k_pieces_limit_998", |b| {
        b.iter(|| {
            out.clear();
            let mut encoder = BodyEncoder::with_line_limit(998);
            for piece in black_box(&content).chunks(64 * 1024) {
                encoder.encode(piece, &mut out);
            }
            encoder.finish(&mut out);
            out.len()
        })
    });
    // The SIZE= estimate of a message held whole, made before each delivery.
    group.bench_function("line_break_overhead_limit_998", |b| {
        b.iter(|| line_break_overhead(black_box(&content), 998))
    });
    let mut check = Vec::new();
    let mut encoder = BodyEncoder::with_line_limit(998);
    encoder.encode(&content, &mut check);
    encoder.finish(&mut check);
    assert_eq!(
        check, wire,
        "encoding the stored content gives the wire form back"
    );
    group.finish();
}

/// Content shaped against the whole-line path (`certrelay_core::crlf`): a dot starting every
/// line, bare LF line ends, and CRs with no LF at all. Each is read and encoded as the
/// ordinary message above; the fast path must not make them cost more than the line-by-line
/// path did.
fn hostile_contents() -> [(&'static str, Vec<u8>); 3] {
    let lines = |line: &[u8]| line.repeat(BODY_BYTES / line.len());
    let mut line = vec![b'.'];
    line.extend(std::iter::repeat_n(b'd', 70));
    line.extend_from_slice(b"\r\n");
    let dots = lines(&line);
    let mut line = vec![b'b'; 76];
    line.push(b'\n');
    let bare_lf = lines(&line);
    let mut line = vec![b'x'; 63];
    line.push(b'\r');
    let no_lf = lines(&line);
    [
        ("dot_every_line", dots),
        ("bare_lf", bare_lf),
        ("cr_without_lf", no_lf),
    ]
}

/// A session that has taken `envelope` (up to DATA) receiving `wire`, in reads of
/// [`READ`] octets, its events drained.
fn bench_receive(group: &mut BenchmarkGroup<'_, WallTime>, id: &str, envelope: &str, wire: &[u8]) {
    group.bench_function(id, |b| {
        b.iter_batched(
            || {
                let mut s = session();
                s.handle_input(envelope.as_bytes(), NOW);
                drain(&mut s);
                s
            },
            |mut s| {
                let mut body = 0;
                for read in wire.chunks(READ) {
                    s.handle_input(black_box(read), NOW);
                    body += drain(&mut s);
                }
                (s, body)
            },
            BatchSize::LargeInput,
        )
    });
}

fn bench_hostile(c: &mut Criterion) {
    let envelope = envelope(1);
    let mut group = c.benchmark_group("smtp_hostile");
    for (name, content) in hostile_contents() {
        // On the wire: dot-stuffed, the end marker after a CR LF.
        let mut encoder = BodyEncoder::new();
        let mut wire = Vec::new();
        encoder.encode(&content, &mut wire);
        encoder.finish(&mut wire);
        // Bare line ends reach the receiver as sent, not as the encoder would mend them.
        if name != "dot_every_line" {
            wire = [&content[..], b"\r\n.\r\n"].concat();
        }
        group.throughput(Throughput::Bytes(wire.len() as u64));
        let id = format!("receive_16k_reads/{name}");
        bench_receive(&mut group, &id, &envelope, &wire);
        let mut out = Vec::with_capacity(2 * content.len());
        group.bench_function(BenchmarkId::new("encode_64k_pieces_limit_998", name), |b| {
            b.iter(|| {
                out.clear();
                let mut encoder = BodyEncoder::with_line_limit(998);
                for piece in black_box(&content).chunks(64 * 1024) {
                    encoder.encode(piece, &mut out);
                }
                encoder.finish(&mut out);
                out.len()
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_commands,
    bench_data,
    bench_body_encode,
    bench_hostile
);
criterion_main!(benches);
