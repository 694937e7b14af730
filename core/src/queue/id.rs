//! Queue ids: short, file-name safe, sortable by arrival.
//!
//! An id is the arrival second and a value the shell guarantees unique within that second,
//! each written in fixed width with an upper-case base-32 alphabet. Fixed width and an
//! alphabet in ASCII order make `ls` order the same as arrival order; upper case only keeps
//! ids distinct on case-insensitive file systems (a laptop's APFS or a FAT stick).

use alloc::string::String;
use core::fmt;

/// Crockford's base-32 digits: no I, L, O or U, so an id read aloud or retyped from a log
/// is hard to get wrong. In ascending ASCII order.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Digits for the arrival second: 35 bits, enough until the year 3058.
const TIME_DIGITS: usize = 7;
/// Digits for the unique part: 35 bits hold any `u32`.
const UNIQUE_DIGITS: usize = 7;
/// Length of every id.
pub const QUEUE_ID_LEN: usize = TIME_DIGITS + UNIQUE_DIGITS;

/// The name of one queued message, used as its file name and in every log line about it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(String);

impl QueueId {
    /// Builds the id of a message that arrived at `unix_secs`.
    ///
    /// `unique` must not repeat within one second in one spool: the shell typically mixes the
    /// microseconds of the arrival with a counter. The shell still creates the file with
    /// "create new" semantics, so a collision is an error rather than a lost message.
    pub fn generate(unix_secs: u64, unique: u32) -> QueueId {
        let mut s = String::with_capacity(QUEUE_ID_LEN);
        push_base32(&mut s, unix_secs, TIME_DIGITS);
        push_base32(&mut s, u64::from(unique), UNIQUE_DIGITS);
        QueueId(s)
    }

    /// Accepts an id read back from a file name or a record; `None` unless it has the exact
    /// shape [`QueueId::generate`] produces.
    pub fn parse(text: &str) -> Option<QueueId> {
        let ok = text.len() == QUEUE_ID_LEN && text.bytes().all(|b| ALPHABET.contains(&b));
        ok.then(|| QueueId(String::from(text)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The arrival second encoded in the id (the record's `arrival` is authoritative).
    pub fn unix_secs(&self) -> u64 {
        self.0.as_bytes()[..TIME_DIGITS]
            .iter()
            .filter_map(|b| ALPHABET.iter().position(|a| a == b))
            .fold(0u64, |acc, d| acc << 5 | d as u64)
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Appends the low `5 * digits` bits of `value`, most significant digit first. Higher bits
/// are dropped: a second past the year 3058 wraps instead of widening the id.
fn push_base32(out: &mut String, value: u64, digits: usize) {
    for i in (0..digits).rev() {
        let d = (value >> (5 * i)) & 31;
        out.push(char::from(ALPHABET[d as usize]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fixed_width_and_sort_by_time() {
        let a = QueueId::generate(1_700_000_000, u32::MAX);
        let b = QueueId::generate(1_700_000_001, 0);
        assert_eq!(a.as_str().len(), QUEUE_ID_LEN);
        assert_eq!(b.as_str().len(), QUEUE_ID_LEN);
        assert!(a < b, "{a} < {b}");
        assert_eq!(a.unix_secs(), 1_700_000_000);
        assert_eq!(QueueId::generate(0, 0).as_str(), "00000000000000");
        assert_eq!(QueueId::generate(31, 33).as_str(), "000000Z0000011");
    }

    #[test]
    fn distinct_unique_values_give_distinct_ids() {
        let a = QueueId::generate(5, 1);
        let b = QueueId::generate(5, 2);
        assert_ne!(a, b);
    }

    #[test]
    fn parse_accepts_only_generated_shapes() {
        let id = QueueId::generate(1_700_000_000, 77);
        assert_eq!(QueueId::parse(id.as_str()), Some(id));
        for bad in [
            "",
            "0000000000000",
            "000000000000000",
            "0000000000000I",
            "000000000000a0",
            "../../etc/pass",
        ] {
            assert_eq!(QueueId::parse(bad), None, "{bad:?}");
        }
    }
}
