//! The `relay_clientcerts` fingerprint map at 10, 10 000 and 1 000 000 entries: loading its
//! text (streamed into the builder, as the relay does), its memory per entry, `find` hits and misses, and the whole decision from a DER
//! client certificate (`lookup_cert`, digests included).
//!
//! Targets: a lookup in at most 50 ns at 1M entries; 1M entries loaded in at most 1 s; at
//! most 48 heap bytes per entry. The bytes per entry and a one-shot load time are printed
//! (not timed by criterion) and written to `target/bench-figures/fingerprint_lookup.txt`.

use certrelay_core::cert::spki_der;
use certrelay_core::fingerprint::{DigestKind, Fingerprint, FingerprintMap, FingerprintMapBuilder};
use certrelay_core::table::Table;
use certrelay_testkit::pki::Ca;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Instant;

const SIZES: [usize; 3] = [10, 10_000, 1_000_000];

/// Distinct labels shared among the entries, as in a real map where many certificates
/// belong to a few people or machines.
const LABELS: usize = 1000;

/// How many different fingerprints the `find` benches cycle through.
const QUERIES: usize = 4096;

/// File name given to the parser; it only shows in diagnostics.
const FILE: &str = "/etc/postfix/relay_clientcerts";

/// A repeatable pseudo-random byte stream (splitmix64).
struct Stream(u64);

impl Stream {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn digest(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let word = self.next_u64().to_le_bytes();
            let take = (len - out.len()).min(8);
            out.extend_from_slice(&word[..take]);
        }
        out
    }
}

/// `openssl x509 -fingerprint` style text: upper-case hex pairs joined by `:`.
fn push_hex(text: &mut String, digest: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for (i, byte) in digest.iter().enumerate() {
        if i > 0 {
            text.push(':');
        }
        text.push(HEX[usize::from(byte >> 4)] as char);
        text.push(HEX[usize::from(byte & 15)] as char);
    }
}

fn label(i: usize) -> String {
    format!("client{:04}.montravail.example", i % LABELS)
}

/// The text of a `relay_clientcerts` map of `count` entries and the digests it lists.
///
/// Every `md5_every`-th entry (0: none) is an MD5 fingerprint, the rest SHA-256. `extra`
/// lines (a real certificate's fingerprints) replace the first entries.
fn map_text(
    count: usize,
    md5_every: usize,
    extra: &[(Fingerprint, &str)],
) -> (String, Vec<Vec<u8>>) {
    let mut stream = Stream(0x5EED_0000 + count as u64);
    let mut text = String::with_capacity(count * 130 + 64);
    text.push_str("# relay_clientcerts: fingerprint label\n");
    let mut digests = Vec::with_capacity(count);
    for i in 0..count {
        if let Some((fingerprint, name)) = extra.get(i) {
            writeln!(text, "{fingerprint} {name}").unwrap();
            digests.push(fingerprint.as_bytes().to_vec());
            continue;
        }
        let len = if md5_every > 0 && i % md5_every == 0 {
            16
        } else {
            32
        };
        let digest = stream.digest(len);
        push_hex(&mut text, &digest);
        text.push(' ');
        text.push_str(&label(i));
        text.push('\n');
        digests.push(digest);
    }
    (text, digests)
}

/// The load path of the relay: the table text streamed straight into the map builder.
fn load(text: &str) -> FingerprintMap {
    let mut builder = FingerprintMapBuilder::new();
    let warnings = builder.add_table_text(FILE, text);
    assert!(warnings.is_empty(), "{warnings:?}");
    let (map, _notes) = builder.finish();
    map
}

fn figures_file() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-figures");
    std::fs::create_dir_all(&dir).expect("create target/bench-figures");
    dir.join("fingerprint_lookup.txt")
}

/// Loading: whole path, and its two halves at the largest size.
fn bench_load(c: &mut Criterion) {
    let mut figures =
        String::from("# fingerprint_lookup figures (printed once, not criterion-timed)\n");
    let mut group = c.benchmark_group("fingerprint_load");
    for count in SIZES {
        let (text, _) = map_text(count, 0, &[]);
        // One untimed-by-criterion load for the memory figure and a single wall-clock time.
        let started = Instant::now();
        let map = load(&text);
        let once = started.elapsed();
        assert_eq!(map.len(), count);
        let per_entry = map.heap_bytes() as f64 / count as f64;
        let line = format!(
            "sha256 entries={count} text_bytes={} heap_bytes={} bytes_per_entry={per_entry:.1} \
             one_load_ms={:.1}",
            text.len(),
            map.heap_bytes(),
            once.as_secs_f64() * 1e3
        );
        eprintln!("{line}");
        figures.push_str(&line);
        figures.push('\n');
        drop(map);

        if count >= 1_000_000 {
            group.sample_size(10);
        }
        group.bench_with_input(
            BenchmarkId::new("parse_and_build", count),
            &text,
            |b, text| b.iter(|| load(black_box(text))),
        );
        if count >= 1_000_000 {
            group.bench_with_input(
                BenchmarkId::new("table_parse_only", count),
                &text,
                |b, text| b.iter(|| Table::parse(FILE, black_box(text))),
            );
            let (table, _) = Table::parse(FILE, &text);
            group.bench_with_input(
                BenchmarkId::new("builder_only", count),
                &table,
                |b, table| {
                    b.iter(|| {
                        let mut builder = FingerprintMapBuilder::new();
                        builder.add_table(
                            FILE,
                            table
                                .entries()
                                .map(|e| (e.key.as_str(), e.value.as_str(), e.line as usize)),
                        );
                        builder.finish()
                    })
                },
            );
        }
    }
    group.finish();
    std::fs::write(figures_file(), figures).expect("write figures");
}

/// `find` of a listed and of an unlisted fingerprint, cycling through `QUERIES` of each.
fn bench_find(c: &mut Criterion) {
    let mut group = c.benchmark_group("fingerprint_find");
    for count in SIZES {
        let (text, digests) = map_text(count, 0, &[]);
        let map = load(&text);
        drop(text);
        let mut stream = Stream(0xC0FF_EE00 + count as u64);
        let hits: Vec<Fingerprint> = (0..QUERIES)
            .map(|_| {
                let at = (stream.next_u64() % count as u64) as usize;
                Fingerprint::from_bytes(&digests[at]).unwrap()
            })
            .collect();
        let misses: Vec<Fingerprint> = (0..QUERIES)
            .map(|_| Fingerprint::from_bytes(&stream.digest(32)).unwrap())
            .collect();
        assert!(hits.iter().all(|fp| map.find(fp).is_some()));
        assert!(misses.iter().all(|fp| map.find(fp).is_none()));
        for (name, queries) in [("hit", &hits), ("miss", &misses)] {
            group.bench_function(BenchmarkId::new(name, count), |b| {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + 1) % QUERIES;
                    map.find(black_box(&queries[i]))
                })
            });
        }
        if count >= 1_000_000 {
            // Every key once in a scattered order: each lookup touches lines no recent one
            // did, as for a relay that sees one client per connection.
            let mut order: Vec<Fingerprint> = digests
                .iter()
                .map(|d| Fingerprint::from_bytes(d).unwrap())
                .collect();
            for i in (1..order.len()).rev() {
                let j = (stream.next_u64() % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
            group.bench_function(BenchmarkId::new("hit_cold_all_keys", count), |b| {
                let mut i = 0usize;
                b.iter(|| {
                    i += 1;
                    if i == order.len() {
                        i = 0;
                    }
                    map.find(black_box(&order[i]))
                })
            });
        }
    }
    group.finish();
}

/// From DER certificate to decision: public-key extraction, the digests the map holds,
/// the lookups, and the `CertMatch` (with its label copy) on a hit.
fn bench_lookup_cert(c: &mut Criterion) {
    let ca = Ca::new("Bench CA");
    let client = ca.issue("laptop.montravail.example", &[], true);
    let stranger = ca.issue("stranger.example", &[], true);
    let cert = client.der.clone();
    let sha256 = Fingerprint::of(DigestKind::Sha256, &cert);
    let md5 = Fingerprint::of(DigestKind::Md5, &cert);

    let mut group = c.benchmark_group("fingerprint_lookup_cert");
    // The digest alone, to tell hashing from searching.
    group.bench_function("sha256_digest_of_cert_only", |b| {
        b.iter(|| Fingerprint::of(DigestKind::Sha256, black_box(&cert)))
    });
    group.bench_function("md5_digest_of_cert_only", |b| {
        b.iter(|| Fingerprint::of(DigestKind::Md5, black_box(&cert)))
    });
    for count in SIZES {
        // SHA-256 only; the client's certificate is listed.
        let (text, _) = map_text(count, 0, &[(sha256, "laptop")]);
        let map = load(&text);
        // MD5 and SHA-256 side by side (one in four MD5); the client is listed by MD5 only,
        // so a hit computes SHA-256 (miss) then MD5.
        let (text, _) = map_text(count, 4, &[(md5, "old-laptop")]);
        let mixed = load(&text);
        drop(text);
        assert_eq!(mixed.kinds().count(), 2);
        let decide = |map: &FingerprintMap, der: &[u8]| {
            let spki = spki_der(der).unwrap_or(der);
            map.lookup_cert(der, spki)
        };
        assert_eq!(decide(&map, &cert).unwrap().digest, DigestKind::Sha256);
        assert_eq!(decide(&mixed, &cert).unwrap().digest, DigestKind::Md5);
        assert!(decide(&map, &stranger.der).is_none());
        assert!(decide(&mixed, &stranger.der).is_none());
        let cases: [(&str, &FingerprintMap, &[u8]); 4] = [
            ("sha256_map_hit", &map, &cert),
            ("sha256_map_miss", &map, &stranger.der),
            ("md5_sha256_map_hit_md5", &mixed, &cert),
            ("md5_sha256_map_miss", &mixed, &stranger.der),
        ];
        for (name, map, der) in cases {
            group.bench_function(BenchmarkId::new(name, count), |b| {
                b.iter(|| decide(map, black_box(der)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_load, bench_find, bench_lookup_cert);
criterion_main!(benches);
