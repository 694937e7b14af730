//! Time as a parameter: the shell reads its clock and passes the reading in. Also the
//! calendar: a day count as a date, a second count as civil time and as an RFC 5322 date,
//! for Date: fields, logs and certificate validity. No clock is read here, and no time
//! zone is known (offsets are the caller's).

use alloc::string::String;
use core::ops::{Add, Sub};
use core::time::Duration;

/// A point in time, in milliseconds on a monotonic clock chosen by the shell.
///
/// Only differences between two `Instant`s from the same clock mean anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(pub u64);

impl Instant {
    /// The instant `ms` milliseconds after the clock's origin.
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms)
    }

    /// Milliseconds since the clock's origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(ms))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_since(earlier)
    }
}

/// Year, month (1-12) and day (1-31) of a count of days since 1970-01-01 in the proleptic
/// Gregorian calendar; negative counts are days before it. The well-known era-based
/// conversion: years are grouped into 400-year eras that start on 1 March, so the leap day
/// is the last day of its year and needs no special case.
pub fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A point in civil time at some offset from UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CivilTime {
    /// Year (proleptic Gregorian).
    pub year: i64,
    /// 1..=12.
    pub month: u8,
    /// 1..=31.
    pub day: u8,
    /// 0..=23.
    pub hour: u8,
    /// 0..=59.
    pub minute: u8,
    /// 0..=59.
    pub second: u8,
    /// 0 = Sunday.
    pub weekday: u8,
    /// Minutes east of UTC.
    pub offset_minutes: i32,
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl CivilTime {
    /// `Mon`, `Tue`, ...
    pub fn weekday_name(&self) -> &'static str {
        WEEKDAYS[usize::from(self.weekday % 7)]
    }

    /// `Jan`, `Feb`, ...
    pub fn month_name(&self) -> &'static str {
        MONTHS[usize::from(self.month.clamp(1, 12) - 1)]
    }
}

/// The latest second handled (the end of year 9999); later times are shown as it.
const MAX_UNIX: u64 = 253_402_300_799;
/// Offsets beyond ±99:59 cannot be written in a date and are clamped.
const MAX_OFFSET: i32 = 99 * 60 + 59;

/// Splits `unix` seconds into civil time at `offset_minutes` east of UTC.
pub fn civil_time(unix: u64, offset_minutes: i32) -> CivilTime {
    let offset_minutes = offset_minutes.clamp(-MAX_OFFSET, MAX_OFFSET);
    let local = unix.min(MAX_UNIX) as i64 + i64::from(offset_minutes) * 60;
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    CivilTime {
        year,
        month,
        day,
        hour: (secs / 3600) as u8,
        minute: (secs / 60 % 60) as u8,
        second: (secs % 60) as u8,
        // 1970-01-01 was a Thursday.
        weekday: (days + 4).rem_euclid(7) as u8,
        offset_minutes,
    }
}

/// An RFC 5322 date: `Tue, 14 Nov 2023 22:13:20 +0100`.
pub fn rfc5322_date(unix: u64, offset_minutes: i32) -> String {
    let t = civil_time(unix, offset_minutes);
    let sign = if t.offset_minutes < 0 { '-' } else { '+' };
    let off = t.offset_minutes.unsigned_abs();
    alloc::format!(
        "{}, {} {} {} {:02}:{:02}:{:02} {sign}{:02}{:02}",
        t.weekday_name(),
        t.day,
        t.month_name(),
        t.year,
        t.hour,
        t.minute,
        t.second,
        off / 60,
        off % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_dates_at_the_edges() {
        let cases = [
            (0, (1970, 1, 1)),
            (-1, (1969, 12, 31)),
            (58, (1970, 2, 28)),
            (59, (1970, 3, 1)),
            (11_016, (2000, 2, 29)),
            (11_017, (2000, 3, 1)),
            (19_782, (2024, 2, 29)),
            (20_000, (2024, 10, 4)),
            (47_540, (2100, 2, 28)),
            (47_541, (2100, 3, 1)),
            (-25_508, (1900, 3, 1)),
            (157_113, (2400, 2, 29)),
            (2_932_896, (9999, 12, 31)),
        ];
        for (days, want) in cases {
            assert_eq!(civil_from_days(days), want, "{days}");
        }
    }

    /// Day by day from 1600 to 2500, every date follows the one before by the calendar's
    /// own rules (month lengths, leap years every 4 years but not every 100, yet every 400).
    #[test]
    fn consecutive_days_follow_the_gregorian_rules() {
        let leap = |y: i64| y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        let length = |y: i64, m: u8| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let start = -135_140; // 1600-01-01
        let mut prev = civil_from_days(start);
        assert_eq!(prev, (1600, 1, 1));
        for days in start + 1..start + 900 * 366 {
            let (y, m, d) = prev;
            let next = if d < length(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
            let got = civil_from_days(days);
            assert_eq!(got, next, "{days}");
            prev = got;
        }
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_millis(1_000);
        assert_eq!((t + Duration::from_secs(2)).as_millis(), 3_000);
        assert_eq!(t - Instant::from_millis(4_000), Duration::ZERO);
        assert_eq!(
            Instant(u64::MAX) + Duration::from_secs(1),
            Instant(u64::MAX)
        );
    }
}
