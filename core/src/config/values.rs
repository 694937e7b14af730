//! Text-to-value conversions shared by every parameter: booleans, numbers, times. (Lists
//! are split by [`crate::text::split_list`], which lookup tables share.)

use core::time::Duration;

/// Reads `yes` or `no` in any case.
pub fn parse_bool(text: &str) -> Option<bool> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("yes") {
        Some(true)
    } else if t.eq_ignore_ascii_case("no") {
        Some(false)
    } else {
        None
    }
}

/// Reads a non-negative decimal number.
pub fn parse_number(text: &str) -> Option<u64> {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// Reads a time: a number with an optional unit `s`, `m`, `h`, `d` or `w`; a bare number is
/// in `default_unit`.
pub fn parse_time(text: &str, default_unit: TimeUnit) -> Option<Duration> {
    let t = text.trim();
    let (digits, unit) = match t.as_bytes().last() {
        Some(b) if b.is_ascii_digit() => (t, default_unit),
        // A unit is one ASCII letter, so cutting it off stays on a character boundary.
        Some(&b) => {
            let unit = TimeUnit::from_letter(b)?;
            (&t[..t.len() - 1], unit)
        }
        None => return None,
    };
    let n = parse_number(digits)?;
    n.checked_mul(unit.seconds()).map(Duration::from_secs)
}

/// The unit of a time value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    /// `s`.
    Second,
    /// `m`.
    Minute,
    /// `h`.
    Hour,
    /// `d`.
    Day,
    /// `w`.
    Week,
}

impl TimeUnit {
    fn from_letter(letter: u8) -> Option<TimeUnit> {
        Some(match letter {
            b's' => TimeUnit::Second,
            b'm' => TimeUnit::Minute,
            b'h' => TimeUnit::Hour,
            b'd' => TimeUnit::Day,
            b'w' => TimeUnit::Week,
            _ => return None,
        })
    }

    /// Seconds in one of this unit.
    pub const fn seconds(self) -> u64 {
        match self {
            TimeUnit::Second => 1,
            TimeUnit::Minute => 60,
            TimeUnit::Hour => 3600,
            TimeUnit::Day => 86_400,
            TimeUnit::Week => 604_800,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans() {
        let cases = [
            ("yes", Some(true)),
            ("YES", Some(true)),
            ("Yes", Some(true)),
            ("no", Some(false)),
            (" No ", Some(false)),
            ("true", None),
            ("1", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_bool(text), want, "{text:?}");
        }
    }

    #[test]
    fn times() {
        use TimeUnit::*;
        let cases = [
            ("300s", Second, Some(300)),
            ("300", Second, Some(300)),
            ("5m", Second, Some(300)),
            ("1h", Second, Some(3600)),
            ("5d", Day, Some(432_000)),
            ("5", Day, Some(432_000)),
            ("2w", Second, Some(1_209_600)),
            ("0", Second, Some(0)),
            ("", Second, None),
            ("s", Second, None),
            ("5x", Second, None),
            ("5S", Second, None),
            ("-5s", Second, None),
            ("1.5h", Second, None),
            ("99999999999999999999w", Second, None),
            ("30000000000000000w", Second, None),
            // Ends in a multi-byte character (found by fuzz/fuzz_targets/master_cf.rs).
            ("2\u{48c}", Second, None),
            ("5é", Second, None),
        ];
        for (text, unit, want) in cases {
            assert_eq!(
                parse_time(text, unit),
                want.map(Duration::from_secs),
                "{text:?}"
            );
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("10240000"), Some(10_240_000));
        assert_eq!(parse_number(" 0 "), Some(0));
        assert_eq!(parse_number("-1"), None);
        assert_eq!(parse_number("1k"), None);
        assert_eq!(parse_number(""), None);
    }
}
