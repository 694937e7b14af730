//! Certificate and public-key fingerprints, their text forms, and the fingerprint map.
//!
//! A fingerprint is a digest of DER bytes: of the whole certificate, or of its
//! SubjectPublicKeyInfo (a public-key fingerprint survives re-issuing a certificate for the same
//! key). Its text form is the one `openssl x509 -noout -fingerprint` prints: upper-case hex
//! pairs joined by `:`. The digest is told by the length (SPEC A1), so one map can hold the
//! MD5 entries of an old `relay_clientcerts` next to new SHA-256 ones.
//!
//! [`FingerprintMap`] is built once per (re)load and then only read. It is laid out for large
//! maps: per digest kind an ordered open-addressed table of fixed-size keys, each beside its
//! label number, so that a lookup reads one place in memory. Labels are stored once each,
//! since many entries usually share one label.

use crate::diagnostic::Diagnostic;
use crate::table::{hash_text, TextIndex};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

/// A digest algorithm usable for fingerprints; the key length in a map tells which.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DigestKind {
    /// 16 bytes; weak, kept for existing maps.
    Md5,
    /// 20 bytes; weak, kept for existing maps.
    Sha1,
    /// 32 bytes.
    Sha256,
    /// 64 bytes.
    Sha512,
}

impl DigestKind {
    /// Every kind, strongest first: the order in which a certificate is looked up.
    pub const STRONGEST_FIRST: [DigestKind; 4] = [
        DigestKind::Sha512,
        DigestKind::Sha256,
        DigestKind::Sha1,
        DigestKind::Md5,
    ];

    /// Digest length in bytes.
    pub const fn output_len(self) -> usize {
        match self {
            DigestKind::Md5 => 16,
            DigestKind::Sha1 => 20,
            DigestKind::Sha256 => 32,
            DigestKind::Sha512 => 64,
        }
    }

    /// The kind whose digests are `len` bytes long.
    pub const fn from_output_len(len: usize) -> Option<Self> {
        match len {
            16 => Some(DigestKind::Md5),
            20 => Some(DigestKind::Sha1),
            32 => Some(DigestKind::Sha256),
            64 => Some(DigestKind::Sha512),
            _ => None,
        }
    }

    /// True for digests where collisions can be made (MD5, SHA-1).
    pub const fn is_weak(self) -> bool {
        matches!(self, DigestKind::Md5 | DigestKind::Sha1)
    }

    /// The spelling used by `smtpd_tls_fingerprint_digest` (`md5`, `sha1`, `sha256`, `sha512`).
    pub const fn config_name(self) -> &'static str {
        match self {
            DigestKind::Md5 => "md5",
            DigestKind::Sha1 => "sha1",
            DigestKind::Sha256 => "sha256",
            DigestKind::Sha512 => "sha512",
        }
    }

    /// Parses a `smtpd_tls_fingerprint_digest` value, case-insensitively.
    pub fn from_config_name(name: &str) -> Option<Self> {
        DigestKind::STRONGEST_FIRST
            .into_iter()
            .find(|kind| kind.config_name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for DigestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DigestKind::Md5 => "MD5",
            DigestKind::Sha1 => "SHA-1",
            DigestKind::Sha256 => "SHA-256",
            DigestKind::Sha512 => "SHA-512",
        })
    }
}

/// Longest digest we handle (SHA-512).
const MAX_LEN: usize = 64;

/// A digest of some DER bytes, with its kind. Fixed-size: no heap per fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    kind: DigestKind,
    // Bytes past `kind.output_len()` stay zero, so the derived comparisons are exact.
    bytes: [u8; MAX_LEN],
}

impl Fingerprint {
    /// The `kind` digest of `data` (a certificate's or a SubjectPublicKeyInfo's DER).
    pub fn of(kind: DigestKind, data: &[u8]) -> Self {
        let mut bytes = [0u8; MAX_LEN];
        let len = kind.output_len();
        match kind {
            DigestKind::Md5 => bytes[..len].copy_from_slice(&Md5::digest(data)),
            DigestKind::Sha1 => bytes[..len].copy_from_slice(&Sha1::digest(data)),
            DigestKind::Sha256 => bytes[..len].copy_from_slice(&Sha256::digest(data)),
            DigestKind::Sha512 => bytes[..len].copy_from_slice(&Sha512::digest(data)),
        }
        Fingerprint { kind, bytes }
    }

    /// A fingerprint from raw digest bytes; the length tells the kind.
    pub fn from_bytes(digest: &[u8]) -> Result<Self, FingerprintError> {
        let kind =
            DigestKind::from_output_len(digest.len()).ok_or(FingerprintError::BadLength {
                bytes: digest.len(),
            })?;
        let mut bytes = [0u8; MAX_LEN];
        bytes[..digest.len()].copy_from_slice(digest);
        Ok(Fingerprint { kind, bytes })
    }

    /// Which digest this is.
    pub fn kind(&self) -> DigestKind {
        self.kind
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.kind.output_len()]
    }

    /// A `relay_clientcerts` line listing this fingerprint: `<fingerprint> <label>`.
    pub fn relay_clientcerts_line(&self, label: &str) -> String {
        format!("{self} {label}")
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.as_bytes().iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({} {self})", self.kind)
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    /// Parses hex pairs in any case, either all joined by `:` or with no colon at all.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match parse_well_formed(text.as_bytes()) {
            Some(fingerprint) => Ok(fingerprint),
            None => parse_carefully(text),
        }
    }
}

/// Parses any text, telling exactly what is wrong with it.
fn parse_carefully(text: &str) -> Result<Fingerprint, FingerprintError> {
    if text.is_empty() {
        return Err(FingerprintError::Empty);
    }
    if let Some((position, ch)) = text
        .chars()
        .enumerate()
        .find(|&(_, ch)| !(ch.is_ascii_hexdigit() || ch == ':'))
    {
        return Err(FingerprintError::BadCharacter {
            ch,
            position: position + 1,
        });
    }
    // From here on the text is ASCII.
    let digits = if text.contains(':') {
        check_colon_groups(text)?
    } else if text.len() % 2 == 1 {
        return Err(FingerprintError::OddDigits { digits: text.len() });
    } else {
        text.len()
    };
    let len = digits / 2;
    let kind =
        DigestKind::from_output_len(len).ok_or(FingerprintError::BadLength { bytes: len })?;
    let mut bytes = [0u8; MAX_LEN];
    let mut nibbles = text.bytes().filter(|&b| b != b':').map(hex_value);
    for byte in bytes.iter_mut().take(len) {
        let high = nibbles.next().unwrap_or(0);
        let low = nibbles.next().unwrap_or(0);
        *byte = (high << 4) | low;
    }
    Ok(Fingerprint { kind, bytes })
}

/// The value of each hex digit; `NOT_HEX` for every other byte.
const HEX_VALUES: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut b = 0;
    while b < 256 {
        let digit = b as u8;
        table[b] = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            b'A'..=b'F' => digit - b'A' + 10,
            _ => NOT_HEX,
        };
        b += 1;
    }
    table
};

const NOT_HEX: u8 = 0xFF;

/// One pass over the usual spellings (`AB:CD:...` or `abcd...` of a digest length); `None`
/// for anything else, which the careful parser then explains.
fn parse_well_formed(text: &[u8]) -> Option<Fingerprint> {
    let (len, step) = match text.len() {
        47 => (16, 3),
        59 => (20, 3),
        95 => (32, 3),
        191 => (64, 3),
        32 => (16, 2),
        40 => (20, 2),
        64 => (32, 2),
        128 => (64, 2),
        _ => return None,
    };
    let kind = DigestKind::from_output_len(len)?;
    let mut bytes = [0u8; MAX_LEN];
    let decoded = match step {
        3 => decode_pairs::<3>(text, &mut bytes[..len]),
        _ => decode_pairs::<2>(text, &mut bytes[..len]),
    };
    if !decoded {
        return None;
    }
    Some(Fingerprint { kind, bytes })
}

/// Decodes `out.len()` pairs of hex digits that start every `STEP` bytes of `text`, with a
/// colon after each pair but the last when `STEP` is 3; false if anything else is found.
fn decode_pairs<const STEP: usize>(text: &[u8], out: &mut [u8]) -> bool {
    let mut bad = 0u8;
    let mut groups = text.chunks_exact(STEP);
    for (byte, group) in out.iter_mut().zip(&mut groups) {
        let high = HEX_VALUES[usize::from(group[0])];
        let low = HEX_VALUES[usize::from(group[1])];
        if STEP == 3 {
            bad |= u8::from(group[STEP - 1] != b':');
        }
        bad |= (high | low) & 0xF0;
        *byte = (high << 4) | (low & 0x0F);
    }
    // With colons, the last pair has none after it and is the remainder.
    if let ([high, low], Some(last)) = (groups.remainder(), out.last_mut()) {
        let (high, low) = (
            HEX_VALUES[usize::from(*high)],
            HEX_VALUES[usize::from(*low)],
        );
        bad |= (high | low) & 0xF0;
        *last = (high << 4) | (low & 0x0F);
    }
    bad == 0
}

/// Checks that every `:`-separated group is one hex pair; returns the number of hex digits.
fn check_colon_groups(text: &str) -> Result<usize, FingerprintError> {
    let mut digits = 0;
    for (i, group) in text.split(':').enumerate() {
        if group.len() != 2 {
            return Err(FingerprintError::BadGroup {
                group: i + 1,
                digits: group.len(),
            });
        }
        digits += 2;
    }
    Ok(digits)
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

/// Why a text is not a fingerprint.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FingerprintError {
    /// Nothing to parse.
    Empty,
    /// A character that is neither a hex digit nor `:` (position counts characters from 1).
    BadCharacter {
        /// The offending character.
        ch: char,
        /// Its position, from 1.
        position: usize,
    },
    /// With colons, a group between colons that is not exactly two hex digits.
    BadGroup {
        /// Which group, from 1.
        group: usize,
        /// How many digits it has.
        digits: usize,
    },
    /// Without colons, an odd number of hex digits.
    OddDigits {
        /// How many digits there are.
        digits: usize,
    },
    /// A byte count that is no digest length.
    BadLength {
        /// How many bytes there are.
        bytes: usize,
    },
}

impl fmt::Display for FingerprintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FingerprintError::Empty => f.write_str("empty fingerprint"),
            FingerprintError::BadCharacter { ch, position } => {
                write!(f, "{ch:?} at position {position} is not a hex digit or ':'")
            }
            FingerprintError::BadGroup { group, digits } => write!(
                f,
                "group {group} has {digits} hex digits; with colons, every byte is two hex \
                 digits between colons"
            ),
            FingerprintError::OddDigits { digits } => {
                write!(f, "odd number of hex digits ({digits})")
            }
            FingerprintError::BadLength { bytes } => write!(
                f,
                "{bytes} bytes is no digest length (16 for MD5, 20 SHA-1, 32 SHA-256, 64 SHA-512)"
            ),
        }
    }
}

/// A remark about a map source, to be logged as a warning: `file:line: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDiagnostic {
    /// The table file it concerns.
    pub file: String,
    /// The line (from 1) it concerns.
    pub line: usize,
    /// What is wrong and what happens because of it.
    pub message: String,
}

impl fmt::Display for MapDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// The labels of a map, each stored once, addressed by number.
#[derive(Clone, Debug)]
struct LabelTable {
    text: String,
    /// Where each label starts in `text`, then where the last one ends: a 0 followed by
    /// one end per label.
    bounds: Vec<u32>,
}

impl Default for LabelTable {
    fn default() -> Self {
        LabelTable {
            text: String::new(),
            bounds: alloc::vec![0],
        }
    }
}

impl LabelTable {
    #[inline]
    fn get(&self, number: u32) -> &str {
        let number = number as usize;
        &self.text[self.bounds[number] as usize..self.bounds[number + 1] as usize]
    }

    /// Adds a label and returns its number.
    fn push(&mut self, label: &str) -> u32 {
        let number = (self.bounds.len() - 1) as u32;
        self.text.push_str(label);
        self.bounds.push(self.text.len() as u32);
        number
    }

    fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
        self.bounds.shrink_to_fit();
    }

    fn heap_bytes(&self) -> usize {
        self.text.capacity() + self.bounds.capacity() * 4
    }
}

/// One key and the number of its label, side by side: a hit reads one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Record<const N: usize> {
    key: [u8; N],
    label: u32,
}

/// The label number of a slot that holds no key.
const VACANT: u32 = u32::MAX;

impl<const N: usize> Record<N> {
    const VACANT: Record<N> = Record {
        key: [0; N],
        label: VACANT,
    };
}

/// The first eight bytes of a key, as a number that sorts like the key.
fn head(key: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&key[..8]);
    u64::from_be_bytes(first)
}

/// The keys of one digest length in an ordered open-addressed table.
///
/// Digests are uniformly spread, so a key's first eight bytes scaled to the table size give
/// its home slot. Keys are laid out in sorted order, each at its home slot or just after the
/// keys before it, so a lookup reads the home slot and usually one or two neighbours in the
/// same cache lines, and stops at a vacant slot or a greater key. No index and no separate
/// label array: one random memory access per lookup.
#[derive(Clone, Debug)]
struct Bucket<const N: usize> {
    /// Records in key order with vacant slots between runs; may extend past `homes`.
    slots: Vec<Record<N>>,
    /// Number of home slots.
    homes: usize,
    len: usize,
}

impl<const N: usize> Default for Bucket<N> {
    fn default() -> Self {
        Bucket {
            slots: Vec::new(),
            homes: 0,
            len: 0,
        }
    }
}

impl<const N: usize> Bucket<N> {
    /// Home slots for `len` keys: about one in six stays vacant, which keeps runs short
    /// and the table under 44 bytes per SHA-256 entry.
    fn homes_for(len: usize) -> usize {
        match len {
            0 => 0,
            n => n + n / 5 + 1,
        }
    }

    fn home(&self, key: &[u8]) -> usize {
        ((u128::from(head(key)) * self.homes as u128) >> 64) as usize
    }

    /// Builds from keys already sorted and free of duplicates.
    fn from_sorted(keys: Vec<[u8; N]>, labels: Vec<u32>) -> Self {
        let homes = Bucket::<N>::homes_for(keys.len());
        let mut bucket = Bucket {
            slots: Vec::with_capacity(homes + 8),
            homes,
            len: keys.len(),
        };
        bucket.slots.resize(homes, Record::VACANT);
        let mut next = 0;
        for (key, label) in keys.into_iter().zip(labels) {
            // `next` is at most the length, so this writes a slot or appends one.
            let at = bucket.home(&key).max(next);
            let record = Record { key, label };
            match bucket.slots.get_mut(at) {
                Some(slot) => *slot = record,
                None => bucket.slots.push(record),
            }
            next = at + 1;
        }
        bucket.slots.shrink_to_fit();
        bucket
    }

    fn find(&self, key: &[u8]) -> Option<u32> {
        let key: &[u8; N] = key.try_into().ok()?;
        if self.homes == 0 {
            return None;
        }
        let want = head(key);
        for record in &self.slots[self.home(key)..] {
            if record.label == VACANT || head(&record.key) > want {
                return None;
            }
            if record.key == *key {
                return Some(record.label);
            }
        }
        None
    }

    fn heap_bytes(&self) -> usize {
        self.slots.capacity() * core::mem::size_of::<Record<N>>()
    }
}

/// Where an entry came from: table number and line.
#[derive(Clone, Copy, Debug)]
struct Origin {
    table: u32,
    line: usize,
}

/// Entries of one digest length gathered while building.
#[derive(Debug)]
struct Pending<const N: usize> {
    entries: Vec<([u8; N], u32, Origin)>,
}

impl<const N: usize> Default for Pending<N> {
    fn default() -> Self {
        Pending {
            entries: Vec::new(),
        }
    }
}

impl<const N: usize> Pending<N> {
    fn push(&mut self, digest: &[u8], label: u32, origin: Origin) {
        let mut key = [0u8; N];
        key.copy_from_slice(digest);
        self.entries.push((key, label, origin));
    }

    /// The entries in key order, equal keys in the order they were added.
    ///
    /// Digests are uniformly spread: one counting pass on the leading bits puts every entry
    /// in a group of about one, and only the groups are then sorted (stably).
    fn sorted(self) -> Vec<([u8; N], u32, Origin)> {
        let entries = self.entries;
        let bits = match entries.len() {
            0 | 1 => return entries,
            n => (usize::BITS - (n - 1).leading_zeros()).min(24),
        };
        let group = |key: &[u8; N]| (head(key) >> (64 - bits)) as usize;
        let mut starts = alloc::vec![0u32; (1 << bits) + 1];
        for (key, _, _) in &entries {
            starts[group(key) + 1] += 1;
        }
        for g in 1..starts.len() {
            starts[g] += starts[g - 1];
        }
        let mut fill = starts.clone();
        let mut out = alloc::vec![entries[0]; entries.len()];
        for entry in entries {
            let at = &mut fill[group(&entry.0)];
            out[*at as usize] = entry;
            *at += 1;
        }
        for g in 0..starts.len() - 1 {
            let run = &mut out[starts[g] as usize..starts[g + 1] as usize];
            if run.len() > 1 {
                run.sort_by_key(|entry| entry.0);
            }
        }
        out
    }

    /// Sorts, keeps the first of equal keys (table order, then line order) and reports the rest.
    fn finish(self, files: &[String], notes: &mut Vec<MapDiagnostic>) -> Bucket<N> {
        let entries = self.sorted();
        let mut keys: Vec<[u8; N]> = Vec::with_capacity(entries.len());
        let mut labels = Vec::with_capacity(entries.len());
        let mut kept_origin: Option<Origin> = None;
        for (key, label, origin) in entries {
            if keys.last() == Some(&key) {
                if let Some(first) = kept_origin {
                    notes.push(MapDiagnostic {
                        file: files[origin.table as usize].clone(),
                        line: origin.line,
                        message: format!(
                            "duplicate fingerprint, first listed at {}:{}; this entry is ignored",
                            files[first.table as usize], first.line
                        ),
                    });
                }
                continue;
            }
            keys.push(key);
            labels.push(label);
            kept_origin = Some(origin);
        }
        Bucket::from_sorted(keys, labels)
    }
}

/// Counts of entries of one kind in one table, for the per-table warnings.
#[derive(Clone, Copy, Debug, Default)]
struct KindTally {
    count: usize,
    first_line: usize,
}

impl KindTally {
    fn note(&mut self, line: usize) {
        if self.count == 0 {
            self.first_line = line;
        }
        self.count += 1;
    }
}

/// Gathers the tables of `relay_clientcerts`, in order, into one [`FingerprintMap`].
///
/// Tables are searched in order and the first hit wins. Merging them with "the earlier table
/// wins on equal keys" gives exactly that result with a single search per digest.
#[derive(Debug, Default)]
pub struct FingerprintMapBuilder {
    fixed: Option<DigestKind>,
    files: Vec<String>,
    label_index: TextIndex,
    labels: LabelTable,
    md5: Pending<16>,
    sha1: Pending<20>,
    sha256: Pending<32>,
    sha512: Pending<64>,
    notes: Vec<MapDiagnostic>,
}

impl FingerprintMapBuilder {
    /// An empty builder that detects the digest of each entry from its length.
    pub fn new() -> Self {
        FingerprintMapBuilder::default()
    }

    /// Uses only `kind`, as when `smtpd_tls_fingerprint_digest` is set explicitly: entries of
    /// other lengths are dropped with a warning, and lookups compute only this digest.
    pub fn fixed_digest(mut self, kind: DigestKind) -> Self {
        self.fixed = Some(kind);
        self
    }

    /// Adds the entries of one table, `(key, value, line)` in file order. The key must be a
    /// fingerprint; the value is the free label reported on a hit.
    pub fn add_table<I, K, V>(&mut self, file: &str, entries: I) -> &mut Self
    where
        I: IntoIterator<Item = (K, V, usize)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let table = self.files.len() as u32;
        self.files.push(String::from(file));
        let mut tallies = [KindTally::default(); 4];
        for (key, value, line) in entries {
            let key = key.as_ref();
            let fingerprint = match key.parse::<Fingerprint>() {
                Ok(fingerprint) => fingerprint,
                Err(err) => {
                    self.note(
                        file,
                        line,
                        format!("{key:?} is not a fingerprint: {err}; ignored"),
                    );
                    continue;
                }
            };
            let kind = fingerprint.kind();
            tallies[kind as usize].note(line);
            if self.fixed.is_some_and(|fixed| fixed != kind) {
                continue;
            }
            let label = self.intern(value.as_ref());
            let origin = Origin { table, line };
            let digest = fingerprint.as_bytes();
            match kind {
                DigestKind::Md5 => self.md5.push(digest, label, origin),
                DigestKind::Sha1 => self.sha1.push(digest, label, origin),
                DigestKind::Sha256 => self.sha256.push(digest, label, origin),
                DigestKind::Sha512 => self.sha512.push(digest, label, origin),
            }
        }
        self.note_table_tallies(file, &tallies);
        self
    }

    /// Adds one table straight from its text source: the load path of the relay, which
    /// builds no [`crate::table::Table`] on the way.
    ///
    /// Lines are read as [`crate::table::entries`] reads them; its warnings (a key with no
    /// value, ...) are returned. Every entry reaches the map, so a key listed twice, in
    /// whatever case or spelling, is reported by [`FingerprintMapBuilder::finish`] as a
    /// duplicate fingerprint and the first one is kept, as [`crate::table::Table`] would.
    pub fn add_table_text(&mut self, file: &str, text: &str) -> Vec<Diagnostic> {
        let mut warnings = Vec::new();
        let entries = crate::table::entries(file, text).filter_map(|entry| match entry {
            Ok(entry) => Some((entry.key, entry.value, entry.line as usize)),
            Err(warning) => {
                warnings.push(warning);
                None
            }
        });
        self.add_table(file, entries);
        warnings
    }

    fn note(&mut self, file: &str, line: usize, message: String) {
        self.notes.push(MapDiagnostic {
            file: String::from(file),
            line,
            message,
        });
    }

    /// One warning per table for weak digests, one for entries a fixed digest never matches.
    fn note_table_tallies(&mut self, file: &str, tallies: &[KindTally; 4]) {
        let tally = |kind: DigestKind| tallies[kind as usize];
        if let Some(fixed) = self.fixed {
            let ignored = DigestKind::STRONGEST_FIRST
                .into_iter()
                .filter(|&kind| kind != fixed && tally(kind).count > 0);
            let count: usize = ignored.clone().map(|kind| tally(kind).count).sum();
            if let Some(line) = ignored.map(|kind| tally(kind).first_line).min() {
                self.note(
                    file,
                    line,
                    format!(
                        "{count} fingerprint(s) in this table (first here) are not {fixed} and \
                         never match while smtpd_tls_fingerprint_digest = {}",
                        fixed.config_name()
                    ),
                );
            }
        }
        let weak: Vec<(DigestKind, KindTally)> = [DigestKind::Md5, DigestKind::Sha1]
            .into_iter()
            .filter(|&kind| self.fixed.is_none_or(|fixed| fixed == kind))
            .map(|kind| (kind, tally(kind)))
            .filter(|(_, tally)| tally.count > 0)
            .collect();
        if let Some(line) = weak.iter().map(|(_, t)| t.first_line).min() {
            let counts: Vec<String> = weak
                .iter()
                .map(|(kind, t)| format!("{} {kind}", t.count))
                .collect();
            self.note(
                file,
                line,
                format!(
                    "weak digest: {} fingerprint(s) in this table (first here); prefer SHA-256",
                    counts.join(" and ")
                ),
            );
        }
    }

    fn intern(&mut self, label: &str) -> u32 {
        let hash = hash_text(label.as_bytes(), false);
        let labels = &self.labels;
        if let Some(number) = self.label_index.find(hash, |n| labels.get(n) == label) {
            return number;
        }
        let number = self.labels.push(label);
        self.label_index.insert(hash, number);
        number
    }

    /// The finished map and the warnings gathered on the way (each `file:line: message`).
    pub fn finish(self) -> (FingerprintMap, Vec<MapDiagnostic>) {
        let mut notes = self.notes;
        let files = self.files;
        let mut labels = self.labels;
        labels.shrink_to_fit();
        let map = FingerprintMap {
            fixed: self.fixed,
            md5: self.md5.finish(&files, &mut notes),
            sha1: self.sha1.finish(&files, &mut notes),
            sha256: self.sha256.finish(&files, &mut notes),
            sha512: self.sha512.finish(&files, &mut notes),
            labels,
        };
        (map, notes)
    }
}

/// A hit in the fingerprint map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertMatch {
    /// The free label written beside the fingerprint in the map.
    pub label: String,
    /// Which digest matched.
    pub digest: DigestKind,
    /// True when the public key's digest matched rather than the whole certificate's.
    pub public_key: bool,
}

/// Fingerprints listed in `relay_clientcerts`, with their labels; read-only once built.
#[derive(Clone, Debug, Default)]
pub struct FingerprintMap {
    fixed: Option<DigestKind>,
    md5: Bucket<16>,
    sha1: Bucket<20>,
    sha256: Bucket<32>,
    sha512: Bucket<64>,
    labels: LabelTable,
}

impl FingerprintMap {
    /// A builder for a map made of one or more tables.
    pub fn builder() -> FingerprintMapBuilder {
        FingerprintMapBuilder::new()
    }

    /// A map of a single table; see [`FingerprintMapBuilder::add_table`].
    pub fn from_table<I, K, V>(file: &str, entries: I) -> (Self, Vec<MapDiagnostic>)
    where
        I: IntoIterator<Item = (K, V, usize)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut builder = FingerprintMapBuilder::new();
        builder.add_table(file, entries);
        builder.finish()
    }

    /// Number of distinct fingerprints.
    pub fn len(&self) -> usize {
        self.md5.len + self.sha1.len + self.sha256.len + self.sha512.len
    }

    /// True when nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The digest fixed by `smtpd_tls_fingerprint_digest`, if any.
    pub fn fixed_digest(&self) -> Option<DigestKind> {
        self.fixed
    }

    /// The digest kinds that have entries, strongest first: the only ones worth computing.
    pub fn kinds(&self) -> impl Iterator<Item = DigestKind> + '_ {
        DigestKind::STRONGEST_FIRST
            .into_iter()
            .filter(|&kind| self.count(kind) > 0)
    }

    fn count(&self, kind: DigestKind) -> usize {
        match kind {
            DigestKind::Md5 => self.md5.len,
            DigestKind::Sha1 => self.sha1.len,
            DigestKind::Sha256 => self.sha256.len,
            DigestKind::Sha512 => self.sha512.len,
        }
    }

    /// The label listed for `fingerprint`, without allocating.
    pub fn find(&self, fingerprint: &Fingerprint) -> Option<&str> {
        let digest = fingerprint.as_bytes();
        let number = match fingerprint.kind() {
            DigestKind::Md5 => self.md5.find(digest),
            DigestKind::Sha1 => self.sha1.find(digest),
            DigestKind::Sha256 => self.sha256.find(digest),
            DigestKind::Sha512 => self.sha512.find(digest),
        }?;
        Some(self.labels.get(number))
    }

    /// Looks a client certificate up: first the certificate's digests, then its public key's
    /// (`spki_der`, the DER SubjectPublicKeyInfo), each for every kind the map holds.
    pub fn lookup_cert(&self, cert_der: &[u8], spki_der: &[u8]) -> Option<CertMatch> {
        [(cert_der, false), (spki_der, true)]
            .into_iter()
            .find_map(|(der, public_key)| {
                self.kinds().find_map(|kind| {
                    let label = self.find(&Fingerprint::of(kind, der))?;
                    Some(CertMatch {
                        label: String::from(label),
                        digest: kind,
                        public_key,
                    })
                })
            })
    }

    /// Heap bytes held (capacities), to check the memory cost per entry.
    pub fn heap_bytes(&self) -> usize {
        self.md5.heap_bytes()
            + self.sha1.heap_bytes()
            + self.sha256.heap_bytes()
            + self.sha512.heap_bytes()
            + self.labels.heap_bytes()
    }
}

/// A `relay_clientcerts` line for a certificate: its `kind` fingerprint, then `label`.
pub fn relay_clientcerts_line(cert_der: &[u8], kind: DigestKind, label: &str) -> String {
    Fingerprint::of(kind, cert_der).relay_clientcerts_line(label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use proptest::prelude::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    /// A self-signed P-256 certificate made with `openssl req -x509` (CN laptop.montravail.com).
    const OPENSSL_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBujCCAWGgAwIBAgIUMdBPi2Y31NaSCeyOiZVnTliy3r0wCgYIKoZIzj0EAwIw
MjEeMBwGA1UEAwwVbGFwdG9wLm1vbnRyYXZhaWwuY29tMRAwDgYDVQQKDAdFeGFt
cGxlMCAXDTI2MTEyOTA0NDQwOFoYDzIxMjYxMTA1MDQ0NDA4WjAyMR4wHAYDVQQD
DBVsYXB0b3AubW9udHJhdmFpbC5jb20xEDAOBgNVBAoMB0V4YW1wbGUwWTATBgcq
hkjOPQIBBggqhkjOPQMBBwNCAAQeukSoLhtkaFZTKgUkBNPhZ4MgRS+qPW9/OoG5
qmHe1LRZmOTcURHRYgLXPZsDsVXu/rbL06WpmZ7LfayX1NUwo1MwUTAdBgNVHQ4E
FgQU3XnA2NNcVlVFk0NDhfSUx/s9HwswHwYDVR0jBBgwFoAU3XnA2NNcVlVFk0ND
hfSUx/s9HwswDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiB7TBgV
YQuzwRo+o2CgoceqldevicNnSkN+HBYmnDpebQIgOYSRjplCcpqdTTFLPV/I3iIm
gKV5Xny7NwX5PpGkl/M=
-----END CERTIFICATE-----
";

    /// `openssl x509 -noout -fingerprint -<digest>` of [`OPENSSL_CERT`].
    const CERT_VECTORS: [(DigestKind, &str); 4] = [
        (
            DigestKind::Md5,
            "8A:C2:71:E6:BE:65:BD:09:D1:E1:FD:F9:A1:ED:AD:AB",
        ),
        (
            DigestKind::Sha1,
            "4D:A1:7B:0C:17:1E:CF:5E:C5:FD:35:77:B5:27:62:76:0C:C7:3A:6F",
        ),
        (
            DigestKind::Sha256,
            "B6:A5:5C:5C:2A:D4:77:72:C4:1E:DE:35:9F:F3:F2:21:C8:90:7B:A4:63:8A:63:CF:C1:09:52:33:\
             05:B9:6B:3E",
        ),
        (
            DigestKind::Sha512,
            "C0:77:94:A6:07:30:11:6D:B1:DC:01:61:C6:BF:F1:D1:70:61:FD:B6:A6:69:43:46:5C:74:14:FB:\
             D8:68:EA:FF:E6:C0:65:08:2C:66:B2:C7:30:6D:A7:50:83:50:91:B1:C9:B6:E6:3F:F3:11:E4:CD:\
             19:89:69:02:6A:F2:6B:FB",
        ),
    ];

    /// `openssl dgst -<digest> -c` of the DER public key of [`OPENSSL_CERT`] (lower case, as
    /// openssl prints it there).
    const PUBKEY_VECTORS: [(DigestKind, &str); 4] = [
        (
            DigestKind::Md5,
            "88:9d:9b:11:d2:f7:1c:1c:62:25:f4:79:8e:b4:b3:ce",
        ),
        (
            DigestKind::Sha1,
            "77:a3:94:5a:6d:37:a2:c3:df:8e:cb:12:97:ec:ed:89:5e:68:26:7b",
        ),
        (
            DigestKind::Sha256,
            "2d:b0:18:07:80:7a:37:e5:67:e3:d2:83:6d:5a:49:91:19:00:44:80:84:86:c6:e5:a3:f5:7b:c7:\
             b0:9f:ca:d9",
        ),
        (
            DigestKind::Sha512,
            "8e:10:bb:cf:01:61:c2:9e:11:8a:50:44:0c:31:e4:65:b4:d4:25:fd:6f:54:b5:99:f5:13:42:7b:\
             82:c8:10:01:c4:49:ea:f6:7b:0e:53:71:34:7d:42:76:f3:c8:56:ca:d6:a5:54:00:36:d0:99:f7:\
             1d:cc:9b:b5:63:17:57:cc",
        ),
    ];

    fn cert_der() -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(OPENSSL_CERT.as_bytes()).unwrap()
    }

    fn spki_der(cert: &CertificateDer<'_>) -> Vec<u8> {
        let cert = webpki::EndEntityCert::try_from(cert).unwrap();
        cert.subject_public_key_info().as_ref().to_vec()
    }

    #[test]
    fn digests_match_openssl() {
        let cert = cert_der();
        let spki = spki_der(&cert);
        for (kind, text) in CERT_VECTORS {
            let fingerprint = Fingerprint::of(kind, &cert);
            assert_eq!(fingerprint.to_string(), text, "{kind} of the certificate");
            assert_eq!(fingerprint.kind(), kind);
            assert_eq!(fingerprint.as_bytes().len(), kind.output_len());
        }
        for (kind, text) in PUBKEY_VECTORS {
            let fingerprint = Fingerprint::of(kind, &spki);
            assert_eq!(
                fingerprint.to_string(),
                text.to_ascii_uppercase(),
                "{kind} of the key"
            );
            assert_eq!(text.parse::<Fingerprint>(), Ok(fingerprint));
        }
    }

    #[test]
    fn text_forms_parse_alike() {
        let (_, text) = CERT_VECTORS[0];
        let expected: Fingerprint = text.parse().unwrap();
        for variant in [
            text.to_string(),
            text.to_ascii_lowercase(),
            text.replace(':', ""),
            text.replace(':', "").to_ascii_lowercase(),
        ] {
            assert_eq!(variant.parse::<Fingerprint>(), Ok(expected), "{variant}");
        }
        assert_eq!(expected.kind(), DigestKind::Md5);
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let md5_bare = "8AC271E6BE65BD09D1E1FDF9A1EDADAB";
        let cases: Vec<(String, FingerprintError)> = vec![
            (String::new(), FingerprintError::Empty),
            (
                String::from("8A:C2:7G"),
                FingerprintError::BadCharacter {
                    ch: 'G',
                    position: 8,
                },
            ),
            (
                String::from("8A C2"),
                FingerprintError::BadCharacter {
                    ch: ' ',
                    position: 3,
                },
            ),
            (
                String::from("8AC2:71"),
                FingerprintError::BadGroup {
                    group: 1,
                    digits: 4,
                },
            ),
            (
                String::from("8A:C2:"),
                FingerprintError::BadGroup {
                    group: 3,
                    digits: 0,
                },
            ),
            (
                String::from("8A::C2"),
                FingerprintError::BadGroup {
                    group: 2,
                    digits: 0,
                },
            ),
            (
                String::from(&md5_bare[1..]),
                FingerprintError::OddDigits { digits: 31 },
            ),
            (
                String::from(&md5_bare[2..]),
                FingerprintError::BadLength { bytes: 15 },
            ),
            (
                format!("{md5_bare}00"),
                FingerprintError::BadLength { bytes: 17 },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<Fingerprint>(), Err(expected), "{text:?}");
        }
        // Only the length tells the kind: 32 bytes reads as SHA-256.
        let doubled: Fingerprint = format!("{md5_bare}{md5_bare}").parse().unwrap();
        assert_eq!(doubled.kind(), DigestKind::Sha256);
        let message = "8A:C2:7G".parse::<Fingerprint>().unwrap_err().to_string();
        assert_eq!(message, "'G' at position 8 is not a hex digit or ':'");
        let message = "8AC2".parse::<Fingerprint>().unwrap_err().to_string();
        assert!(
            message.starts_with("2 bytes is no digest length"),
            "{message}"
        );
    }

    #[test]
    fn digest_names() {
        for kind in DigestKind::STRONGEST_FIRST {
            assert_eq!(DigestKind::from_config_name(kind.config_name()), Some(kind));
            assert_eq!(DigestKind::from_output_len(kind.output_len()), Some(kind));
        }
        assert_eq!(
            DigestKind::from_config_name("SHA256"),
            Some(DigestKind::Sha256)
        );
        assert_eq!(DigestKind::from_config_name("sha384"), None);
        assert!(DigestKind::Md5.is_weak() && DigestKind::Sha1.is_weak());
        assert!(!DigestKind::Sha256.is_weak() && !DigestKind::Sha512.is_weak());
    }

    #[test]
    fn relay_clientcerts_line_is_fingerprint_then_label() {
        let fingerprint = Fingerprint::of(DigestKind::Md5, &cert_der());
        assert_eq!(
            fingerprint.relay_clientcerts_line("laptop"),
            "8A:C2:71:E6:BE:65:BD:09:D1:E1:FD:F9:A1:ED:AD:AB laptop"
        );
        assert_eq!(
            relay_clientcerts_line(&cert_der(), DigestKind::Sha1, "x"),
            "4D:A1:7B:0C:17:1E:CF:5E:C5:FD:35:77:B5:27:62:76:0C:C7:3A:6F x"
        );
    }

    #[test]
    fn lookup_by_certificate_and_by_public_key_for_each_kind() {
        let cert = cert_der();
        let spki = spki_der(&cert);
        for public_key in [false, true] {
            let vectors = if public_key {
                PUBKEY_VECTORS
            } else {
                CERT_VECTORS
            };
            for (kind, text) in vectors {
                let (map, notes) =
                    FingerprintMap::from_table("/etc/postfix/relay_clientcerts", [(text, "me", 3)]);
                assert_eq!(map.len(), 1);
                assert_eq!(notes.len(), usize::from(kind.is_weak()), "{notes:?}");
                let expected = CertMatch {
                    label: String::from("me"),
                    digest: kind,
                    public_key,
                };
                assert_eq!(map.lookup_cert(&cert, &spki), Some(expected));
                assert_eq!(map.lookup_cert(b"other", b"other key"), None);
            }
        }
    }

    #[test]
    fn md5_and_sha256_entries_side_by_side() {
        let cert = cert_der();
        let spki = spki_der(&cert);
        let other = Fingerprint::of(DigestKind::Sha256, b"some other certificate");
        let other_md5 = Fingerprint::of(DigestKind::Md5, b"some other certificate");
        let entries = [
            (CERT_VECTORS[0].1.to_string(), "old-laptop", 1),
            (other.to_string(), "new-laptop", 2),
            (other_md5.to_string(), "other-old", 3),
        ];
        let (map, notes) = FingerprintMap::from_table("relay_clientcerts", entries);
        assert_eq!(
            map.kinds().collect::<Vec<_>>(),
            [DigestKind::Sha256, DigestKind::Md5]
        );
        let hit = map.lookup_cert(&cert, &spki).unwrap();
        assert_eq!(
            (hit.label.as_str(), hit.digest),
            ("old-laptop", DigestKind::Md5)
        );
        let hit = map.lookup_cert(b"some other certificate", b"").unwrap();
        // Both digests of that certificate are listed; the stronger one is tried first.
        assert_eq!(
            (hit.label.as_str(), hit.digest),
            ("new-laptop", DigestKind::Sha256)
        );
        assert_eq!(notes.len(), 1);
        assert_eq!(
            notes[0].to_string(),
            "relay_clientcerts:1: weak digest: 2 MD5 fingerprint(s) in this table (first \
             here); prefer SHA-256"
        );
    }

    #[test]
    fn certificate_digest_wins_over_public_key_digest() {
        let cert = cert_der();
        let spki = spki_der(&cert);
        let entries = [
            (PUBKEY_VECTORS[2].1, "by-key", 1),
            (CERT_VECTORS[0].1, "by-cert", 2),
        ];
        let (map, _) = FingerprintMap::from_table("t", entries);
        let hit = map.lookup_cert(&cert, &spki).unwrap();
        assert_eq!((hit.label.as_str(), hit.public_key), ("by-cert", false));
    }

    #[test]
    fn keys_that_are_not_fingerprints_are_reported_with_file_and_line() {
        let entries = [
            ("*.montravail.com", "x", 4),
            ("8A:C2", "x", 5),
            (CERT_VECTORS[2].1, "ok", 6),
        ];
        let (map, notes) = FingerprintMap::from_table("/etc/postfix/relay_clientcerts", entries);
        assert_eq!(map.len(), 1);
        let texts: Vec<String> = notes.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            texts,
            [
                "/etc/postfix/relay_clientcerts:4: \"*.montravail.com\" is not a fingerprint: '*' \
                 at position 1 is not a hex digit or ':'; ignored",
                "/etc/postfix/relay_clientcerts:5: \"8A:C2\" is not a fingerprint: 2 bytes is no \
                 digest length (16 for MD5, 20 SHA-1, 32 SHA-256, 64 SHA-512); ignored",
            ]
        );
    }

    #[test]
    fn one_weak_digest_warning_per_table() {
        let md5 = |n: u8| Fingerprint::of(DigestKind::Md5, &[n]).to_string();
        let sha1 = |n: u8| Fingerprint::of(DigestKind::Sha1, &[n]).to_string();
        let mut builder = FingerprintMap::builder();
        builder.add_table("a", [(md5(1), "x", 7), (sha1(2), "x", 3), (md5(3), "x", 9)]);
        builder.add_table("b", [(md5(4), "x", 1)]);
        let (map, notes) = builder.finish();
        assert_eq!(map.len(), 4);
        let texts: Vec<String> = notes.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            texts,
            [
                "a:3: weak digest: 2 MD5 and 1 SHA-1 fingerprint(s) in this table (first here); \
                 prefer SHA-256",
                "b:1: weak digest: 1 MD5 fingerprint(s) in this table (first here); prefer SHA-256",
            ]
        );
    }

    #[test]
    fn earlier_table_wins_and_duplicates_are_reported() {
        let fingerprint = Fingerprint::of(DigestKind::Sha256, b"cert");
        let upper = fingerprint.to_string();
        let lower = upper.to_ascii_lowercase().replace(':', "");
        let mut builder = FingerprintMap::builder();
        builder.add_table("first", [(upper.as_str(), "one", 2)]);
        builder.add_table("second", [(lower.as_str(), "two", 8)]);
        let (map, notes) = builder.finish();
        assert_eq!(map.find(&fingerprint), Some("one"));
        assert_eq!(notes.len(), 1);
        assert_eq!(
            notes[0].to_string(),
            "second:8: duplicate fingerprint, first listed at first:2; this entry is ignored"
        );
    }

    #[test]
    fn fixed_digest_uses_only_that_digest() {
        let cert = cert_der();
        let spki = spki_der(&cert);
        let mut builder = FingerprintMap::builder().fixed_digest(DigestKind::Sha256);
        builder.add_table(
            "t",
            [
                (CERT_VECTORS[0].1, "md5", 1),
                (CERT_VECTORS[1].1, "sha1", 2),
                (PUBKEY_VECTORS[2].1, "sha256-key", 3),
            ],
        );
        let (map, notes) = builder.finish();
        assert_eq!(map.fixed_digest(), Some(DigestKind::Sha256));
        assert_eq!(map.kinds().collect::<Vec<_>>(), [DigestKind::Sha256]);
        let hit = map.lookup_cert(&cert, &spki).unwrap();
        assert_eq!((hit.label.as_str(), hit.public_key), ("sha256-key", true));
        // The ignored entries are reported once; no weak-digest warning since none is used.
        let texts: Vec<String> = notes.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            texts,
            [
                "t:1: 2 fingerprint(s) in this table (first here) are not SHA-256 and never match \
              while smtpd_tls_fingerprint_digest = sha256"
            ]
        );
    }

    #[test]
    fn labels_are_stored_once() {
        let entries: Vec<(String, &str, usize)> = (0u32..100)
            .map(|i| {
                let label = if i % 2 == 0 { "even" } else { "odd" };
                let key = Fingerprint::of(DigestKind::Sha256, &i.to_le_bytes()).to_string();
                (key, label, i as usize + 1)
            })
            .collect();
        let (map, _) = FingerprintMap::from_table("t", entries);
        assert_eq!(map.labels.bounds, [0, 4, 7]);
        assert_eq!(map.labels.text, "evenodd");
        for i in 0u32..100 {
            let label = map.find(&Fingerprint::of(DigestKind::Sha256, &i.to_le_bytes()));
            assert_eq!(label, Some(if i % 2 == 0 { "even" } else { "odd" }));
        }
    }

    #[test]
    fn table_text_goes_straight_into_the_map() {
        let (_, md5) = CERT_VECTORS[0];
        let (_, sha256) = CERT_VECTORS[2];
        let text = format!(
            "# relay_clientcerts\n{sha256} laptop\n\n{} again\nlonely\n{md5}\n  old laptop\n",
            sha256.to_ascii_lowercase()
        );
        let mut builder = FingerprintMap::builder();
        let warnings = builder.add_table_text("rc", &text);
        let (map, notes) = builder.finish();
        let warnings: Vec<String> = warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            warnings,
            ["rc:5: warning: key \"lonely\" has no value; entry ignored"]
        );
        let notes: Vec<String> = notes.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            notes,
            [
                "rc:6: weak digest: 1 MD5 fingerprint(s) in this table (first here); prefer \
                 SHA-256",
                "rc:4: duplicate fingerprint, first listed at rc:2; this entry is ignored",
            ]
        );
        let cert = cert_der();
        assert_eq!(map.len(), 2);
        assert_eq!(map.find(&sha256.parse().unwrap()), Some("laptop"));
        assert_eq!(map.find(&md5.parse().unwrap()), Some("old laptop"));
        assert!(map.lookup_cert(&cert, b"").is_some());
    }

    #[test]
    fn near_misses_of_the_usual_spellings_fail_as_before() {
        let (_, text) = CERT_VECTORS[2];
        let cases = [
            (
                text.replacen(':', ";", 1),
                FingerprintError::BadCharacter {
                    ch: ';',
                    position: 3,
                },
            ),
            (
                text.replacen(':', "A", 1),
                FingerprintError::BadGroup {
                    group: 1,
                    digits: 5,
                },
            ),
            (
                format!("{}G", &text[..94]),
                FingerprintError::BadCharacter {
                    ch: 'G',
                    position: 95,
                },
            ),
            (
                text.replace(':', "").replacen('B', "é", 1),
                FingerprintError::BadCharacter {
                    ch: 'é',
                    position: 1,
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<Fingerprint>(), Err(want), "{text}");
        }
    }

    /// A cheap, repeatable stream of pseudo-random keys (xorshift).
    fn pseudo_random_keys<const N: usize>(count: usize, seed: u64) -> Vec<[u8; N]> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                let mut key = [0u8; N];
                for chunk in key.chunks_mut(8) {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
                }
                key
            })
            .collect()
    }

    #[test]
    fn large_sha256_map_is_compact_and_finds_every_key() {
        let count = 1 << 16;
        let keys = pseudo_random_keys::<32>(count, 0x9E37_79B9_7F4A_7C15);
        let entries = keys.iter().enumerate().map(|(i, key)| {
            let fp = Fingerprint::from_bytes(key).unwrap();
            (fp.to_string(), if i % 3 == 0 { "a" } else { "b" }, i + 1)
        });
        let (map, notes) = FingerprintMap::from_table("big", entries);
        assert!(notes.is_empty());
        assert_eq!(map.len(), count);
        let per_entry = map.heap_bytes() / count;
        assert!(per_entry <= 48, "{per_entry} bytes per SHA-256 entry");
        for key in &keys {
            assert!(map.find(&Fingerprint::from_bytes(key).unwrap()).is_some());
        }
        for key in pseudo_random_keys::<32>(1000, 12345) {
            assert_eq!(map.find(&Fingerprint::from_bytes(&key).unwrap()), None);
        }
    }

    proptest! {
        #[test]
        fn text_round_trips(kind_index in 0usize..4, bytes in proptest::collection::vec(any::<u8>(), 64)) {
            let kind = DigestKind::STRONGEST_FIRST[kind_index];
            let fingerprint = Fingerprint::from_bytes(&bytes[..kind.output_len()]).unwrap();
            let text = fingerprint.to_string();
            prop_assert_eq!(text.len(), kind.output_len() * 3 - 1);
            prop_assert!(!text.bytes().any(|b| b.is_ascii_lowercase()));
            prop_assert_eq!(text.parse::<Fingerprint>(), Ok(fingerprint));
            prop_assert_eq!(text.to_ascii_lowercase().replace(':', "").parse::<Fingerprint>(), Ok(fingerprint));
        }

        #[test]
        fn one_pass_parser_agrees_with_careful_one(
            kind_index in 0usize..4,
            bytes in proptest::collection::vec(any::<u8>(), 64),
            colons in any::<bool>(),
            lower in any::<bool>(),
            flip in proptest::option::of((0usize..191, prop_oneof![Just(b':'), Just(b'g'), Just(b'0'), Just(b' ')])),
        ) {
            let kind = DigestKind::STRONGEST_FIRST[kind_index];
            let fingerprint = Fingerprint::from_bytes(&bytes[..kind.output_len()]).unwrap();
            let mut text = fingerprint.to_string();
            if !colons {
                text = text.replace(':', "");
            }
            if lower {
                text = text.to_ascii_lowercase();
            }
            let mut text = text.into_bytes();
            if let Some((at, b)) = flip {
                let at = at % text.len();
                text[at] = b;
            }
            let text = String::from_utf8(text).unwrap();
            let fast = parse_well_formed(text.as_bytes());
            let careful = parse_carefully(&text);
            prop_assert_eq!(text.parse::<Fingerprint>(), careful.clone());
            if let Some(fast) = fast {
                prop_assert_eq!(Ok(fast), careful.clone());
            }
            if flip.is_none() {
                prop_assert_eq!(careful, Ok(fingerprint));
            }
        }

        #[test]
        fn builder_keeps_the_first_of_equal_keys(
            picks in proptest::collection::vec((0usize..40, any::<bool>()), 0..200),
            shared_head in any::<bool>(),
        ) {
            // Keys drawn from a small pool, so many repeat; optionally all with one head.
            let pool: Vec<[u8; 16]> = pseudo_random_keys::<16>(40, 77)
                .into_iter()
                .map(|mut key| {
                    if shared_head {
                        key[..8].copy_from_slice(&[9; 8]);
                    }
                    key
                })
                .collect();
            let mut builder = FingerprintMap::builder();
            let mut first: alloc::collections::BTreeMap<[u8; 16], String> = Default::default();
            let mut tables: [Vec<(String, String, usize)>; 2] = Default::default();
            for (i, &(pick, second_table)) in picks.iter().enumerate() {
                let label = alloc::format!("l{}", i % 7);
                tables[usize::from(second_table)].push((
                    Fingerprint::from_bytes(&pool[pick]).unwrap().to_string(),
                    label,
                    i + 1,
                ));
            }
            for (t, entries) in tables.iter().enumerate() {
                for (key, label, _) in entries {
                    let key: Fingerprint = key.parse().unwrap();
                    let mut bytes = [0u8; 16];
                    bytes.copy_from_slice(key.as_bytes());
                    first.entry(bytes).or_insert_with(|| label.clone());
                }
                builder.add_table(if t == 0 { "a" } else { "b" }, entries.iter().cloned());
            }
            let (map, notes) = builder.finish();
            prop_assert_eq!(map.len(), first.len());
            let duplicates = notes.iter().filter(|n| n.message.starts_with("duplicate")).count();
            prop_assert_eq!(duplicates, picks.len() - first.len());
            for key in &pool {
                let want = first.get(key).map(String::as_str);
                prop_assert_eq!(map.find(&Fingerprint::from_bytes(key).unwrap()), want);
            }
        }

        #[test]
        fn bucket_finds_members_only(
            members in proptest::collection::btree_set(any::<[u8; 16]>(), 0..300),
            others in proptest::collection::vec(any::<[u8; 16]>(), 0..50),
            shared_prefix in any::<bool>(),
        ) {
            // Optionally squeeze all keys into one prefix to exercise crowded index slots.
            let squeeze = |mut key: [u8; 16]| {
                if shared_prefix {
                    key[..4].copy_from_slice(&[7, 7, 7, 7]);
                }
                key
            };
            let members: alloc::collections::BTreeSet<[u8; 16]> =
                members.into_iter().map(squeeze).collect();
            let keys: Vec<[u8; 16]> = members.iter().copied().collect();
            let labels = (0..keys.len() as u32).collect();
            let bucket = Bucket::from_sorted(keys.clone(), labels);
            for (i, key) in keys.iter().enumerate() {
                prop_assert_eq!(bucket.find(key), Some(i as u32));
            }
            for key in others.into_iter().map(squeeze) {
                prop_assert_eq!(bucket.find(&key).is_some(), members.contains(&key));
            }
        }
    }
}
