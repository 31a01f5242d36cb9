//! Calendar dates and instants. The protocol never reads a clock: callers pass `today` and
//! `now` in, which is what makes every date rule testable with plain values.

use std::fmt;
use std::str::FromStr;

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};

use crate::codes::serde_via_str;
use crate::value::{decode_error, ValueError};

const MIN_YEAR: i32 = 1970;
const MAX_YEAR: i32 = 9999;

/// A proleptic Gregorian date, stored as days since 1970-01-01. Years 1970–9999.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Date(i32);

impl Date {
    /// Days since 1970-01-01 for a year, month and day that are known to be valid.
    fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
        // Howard Hinnant's days_from_civil.
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy as i32;
        era * 146_097 + doe - 719_468
    }

    /// (year, month, day) of this date.
    pub fn ymd(&self) -> (i32, u32, u32) {
        let (y, m, d) = civil_from_days(i64::from(self.0));
        // Invariant: a Date is within years 1970–9999, so the year fits.
        (y as i32, m, d)
    }

    pub fn from_ymd(y: i32, m: u32, d: u32) -> Result<Date, ValueError> {
        if !(MIN_YEAR..=MAX_YEAR).contains(&y) {
            return Err(ValueError::Format { expected: crate::value::Expected::DateInRange });
        }
        if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
            return Err(ValueError::NoSuchDate);
        }
        Ok(Date(Self::days_from_civil(y, m, d)))
    }

    pub fn year(&self) -> i32 {
        self.ymd().0
    }

    /// Days since 1970-01-01.
    pub fn days_since_epoch(&self) -> i32 {
        self.0
    }

    fn from_days(days: i32) -> Result<Date, ValueError> {
        let (lo, hi) = (Self::days_from_civil(MIN_YEAR, 1, 1), Self::days_from_civil(MAX_YEAR, 12, 31));
        if (lo..=hi).contains(&days) {
            Ok(Date(days))
        } else {
            Err(ValueError::Format { expected: crate::value::Expected::DateInRange })
        }
    }

    /// This date moved by `days` (negative to go back), if still in range.
    pub fn add_days(&self, days: i32) -> Option<Date> {
        self.0.checked_add(days).and_then(|d| Date::from_days(d).ok())
    }

    /// `self - other` in days.
    pub fn days_after(&self, other: Date) -> i32 {
        self.0 - other.0
    }
}

/// Howard Hinnant's civil_from_days, in i64 so that any timestamp can be displayed.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

impl FromStr for Date {
    type Err = ValueError;
    /// Exactly `YYYY-MM-DD`.
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let fmt = ValueError::Format { expected: crate::value::Expected::Date };
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(fmt);
        }
        let digits = |r: std::ops::Range<usize>| -> Result<u32, ValueError> {
            let part = &s[r];
            if part.bytes().all(|c| c.is_ascii_digit()) {
                part.parse().map_err(|_| fmt.clone())
            } else {
                Err(fmt.clone())
            }
        };
        let (y, m, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
        Date::from_ymd(y as i32, m, d)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl fmt::Debug for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Encode for Date {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        self.0.encode(encoder)
    }
}

impl<C> Decode<C> for Date {
    fn decode<D: Decoder<Context = C>>(decoder: &mut D) -> Result<Self, DecodeError> {
        Date::from_days(i32::decode(decoder)?).map_err(|e| decode_error("date", e))
    }
}
bincode::impl_borrow_decode!(Date);
serde_via_str!(Date);

/// An instant, in milliseconds since the Unix epoch (UTC). Displayed as RFC 3339.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Encode, Decode)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix_millis(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    pub fn unix_millis(&self) -> i64 {
        self.0
    }

    /// The UTC calendar date of this instant (clamped into the supported range).
    pub fn date(&self) -> Date {
        let days = self.0.div_euclid(86_400_000);
        let days = days.clamp(0, i64::from(Date::days_from_civil(MAX_YEAR, 12, 31)));
        Date(days as i32)
    }

    pub fn saturating_add_millis(&self, ms: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }

    pub fn saturating_sub_millis(&self, ms: i64) -> Timestamp {
        Timestamp(self.0.saturating_sub(ms))
    }

    /// The midnight (UTC) that starts `date`.
    pub fn start_of(date: Date) -> Timestamp {
        Timestamp(i64::from(date.days_since_epoch()) * 86_400_000)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms_of_day = self.0.rem_euclid(86_400_000);
        let (h, rest) = (ms_of_day / 3_600_000, ms_of_day % 3_600_000);
        let (min, rest) = (rest / 60_000, rest % 60_000);
        let (s, ms) = (rest / 1000, rest % 1000);
        let (y, mo, d) = civil_from_days(self.0.div_euclid(86_400_000));
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{min:02}:{s:02}.{ms:03}Z")
    }
}

/// Exactly the form [`Timestamp`] displays: `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
impl FromStr for Timestamp {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let fmt = ValueError::Format { expected: crate::value::Expected::Instant };
        let b = s.as_bytes();
        if b.len() != 24 || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'.' || b[23] != b'Z'
        {
            return Err(fmt);
        }
        let date: Date = s[..10].parse().map_err(|_| fmt.clone())?;
        let digits = |r: std::ops::Range<usize>, max: i64| -> Result<i64, ValueError> {
            let part = &s[r];
            match part.parse::<i64>() {
                Ok(v) if part.bytes().all(|c| c.is_ascii_digit()) && v <= max => Ok(v),
                _ => Err(fmt.clone()),
            }
        };
        let (h, m, sec, ms) =
            (digits(11..13, 23)?, digits(14..16, 59)?, digits(17..19, 59)?, digits(20..23, 999)?);
        Ok(Timestamp(
            i64::from(date.days_since_epoch()) * 86_400_000 + h * 3_600_000 + m * 60_000 + sec * 1000 + ms,
        ))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_day_of_a_long_range() {
        let start = Date::from_ymd(1970, 1, 1).unwrap();
        for offset in 0..200_000 {
            let d = start.add_days(offset).unwrap();
            let (y, m, dd) = d.ymd();
            assert_eq!(Date::from_ymd(y, m, dd).unwrap(), d);
            assert_eq!(d.to_string().parse::<Date>().unwrap(), d);
        }
    }

    #[test]
    fn instants_parse_as_they_display() {
        for ms in [0, 1, 999, 86_399_999, 1_795_000_000_123, 4_102_444_799_999] {
            let t = Timestamp::from_unix_millis(ms);
            assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        }
        for bad in [
            "2026-11-28T24:00:00.000Z",
            "2026-11-28T12:00:00Z",
            "2026-11-28 12:00:00.000Z",
            "2026-11-28T12:60:00.000Z",
            "2026-11-28T1+:00:00.000Z",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad}");
        }
    }

    #[test]
    fn calendar_rules() {
        assert!("2024-02-29".parse::<Date>().is_ok());
        assert_eq!("2026-02-29".parse::<Date>(), Err(ValueError::NoSuchDate));
        assert_eq!("2026-13-01".parse::<Date>(), Err(ValueError::NoSuchDate));
        assert!("2000-02-29".parse::<Date>().is_ok());
        assert!("1900-02-28".parse::<Date>().is_err());
        for bad in ["2026-1-01", "26-11-28", "2026/11/28", "2026-11-28T00:00", "+026-11-28"] {
            assert!(bad.parse::<Date>().is_err(), "{bad}");
        }
        let a: Date = "2026-11-28".parse().unwrap();
        let b: Date = "2027-01-27".parse().unwrap();
        assert_eq!(b.days_after(a), 60);
    }

    #[test]
    fn extreme_timestamps_display_without_panicking() {
        for ms in [i64::MIN, i64::MIN + 1, -1, i64::MAX] {
            let t = Timestamp::from_unix_millis(ms);
            assert!(!t.to_string().is_empty());
            let _ = t.date();
        }
    }

    #[test]
    fn timestamps_display_as_rfc3339() {
        let t = Timestamp::from_unix_millis(1_795_000_000_123);
        assert_eq!(t.to_string(), "2026-11-18T11:06:40.123Z");
        assert_eq!(t.date().to_string(), "2026-11-18");
    }
}
