//! Timestamps as milliseconds since the Unix epoch.
//!
//! Milliseconds in an `i64` are what the stores index and compare; RFC 3339
//! (UTC) is what the API shows. Keeping one integer representation inside
//! avoids time-zone and precision drift between SQLite and PostgreSQL.

use std::fmt;
use std::time::Duration;

/// A point in time, in milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// Wraps milliseconds since the epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// This time plus a duration (saturating).
    pub fn plus(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// This instant moved back by `d`.
    pub fn minus(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// The duration from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0 - earlier.0).unwrap_or(0))
    }

    /// Parses an RFC 3339 timestamp with an offset (`2026-11-21T17:00:00Z`).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let ts: jiff::Timestamp = s.parse().ok()?;
        Some(Timestamp(ts.as_millisecond()))
    }

    /// Formats as RFC 3339 in UTC with millisecond precision
    /// (`2026-12-06T19:53:26.123Z`).
    ///
    /// Every message's events, webhooks and answers carry a few of these,
    /// so the years 0000 to 9998 are written here, digit by digit, as jiff
    /// writes them (a test holds the two together over that range); jiff's
    /// `format!` took about 830 instructions a time. Other years are
    /// jiff's (whose range ends on 9999-12-30).
    pub fn to_rfc3339(self) -> String {
        // 0000-01-01T00:00:00.000Z and 9998-12-31T23:59:59.999Z.
        const FIRST: i64 = -62_167_219_200_000;
        const LAST: i64 = 253_370_764_799_999;
        if !(FIRST..=LAST).contains(&self.0) {
            return match jiff::Timestamp::from_millisecond(self.0) {
                Ok(ts) => format!("{ts:.3}"),
                Err(_) => String::from("invalid"),
            };
        }
        let secs = self.0.div_euclid(1000);
        // In range, each part fits a u32 (the year is 0..=9998).
        let part = |n: i64| u32::try_from(n).unwrap_or(0);
        let millis = part(self.0.rem_euclid(1000));
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let second_of_day = part(secs.rem_euclid(86_400));
        let mut text = *b"0000-00-00T00:00:00.000Z";
        let mut two = |at: usize, n: u32| {
            text[at] = b'0' + (n / 10) as u8;
            text[at + 1] = b'0' + (n % 10) as u8;
        };
        let year = part(year);
        two(0, year / 100);
        two(2, year % 100);
        two(5, part(month));
        two(8, part(day));
        two(11, second_of_day / 3600);
        two(14, second_of_day / 60 % 60);
        two(17, second_of_day % 60);
        text[20] = b'0' + (millis / 100) as u8;
        text[21] = b'0' + (millis / 10 % 10) as u8;
        text[22] = b'0' + (millis % 10) as u8;
        std::str::from_utf8(&text)
            .expect("digits and separators are ASCII")
            .to_owned()
    }
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`): (year, month 1–12, day 1–31).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_in_utc() {
        let t = Timestamp::parse_rfc3339("2026-11-21T18:30:00+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-21T17:30:00.000Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
    }

    /// jiff's text, which `to_rfc3339` writes by hand for years 0–9998.
    fn by_jiff(ms: i64) -> String {
        match jiff::Timestamp::from_millisecond(ms) {
            Ok(ts) => format!("{ts:.3}"),
            Err(_) => String::from("invalid"),
        }
    }

    #[test]
    fn rfc3339_is_written_as_jiff_writes_it() {
        const DAY: i64 = 86_400_000;
        let mut cases = vec![
            0,
            -1,
            1,
            999,
            1_000,
            DAY - 1,
            DAY,
            -DAY,
            -DAY - 1,
            951_782_400_000,     // 2000-02-29
            951_868_800_000 - 1, // 2000-02-29T23:59:59.999
            4_107_542_400_000,   // 2100-03-01
            1_790_000_000_123,
            -62_167_219_200_000,     // 0000-01-01
            -62_167_219_200_000 - 1, // -0001-12-31T23:59:59.999 (jiff's)
            253_370_764_799_999,     // 9998-12-31T23:59:59.999
            253_370_764_800_000,     // 9999-01-01: jiff's
            253_402_207_200_999,     // jiff's last
            253_402_300_799_999,     // 9999-12-31T23:59:59.999: past jiff's
            i64::MIN,
            i64::MAX,
        ];
        // Every day of 1,600 around 1970 and every seventh of four
        // centuries from 2000, each at a changing time of day, and a
        // spread over the whole range.
        for d in -800..800 {
            cases.push(d * DAY + (d * 7_777_777).rem_euclid(DAY));
        }
        for d in (0..146_097 + 400).step_by(7) {
            cases.push(946_684_800_000 + d * DAY + (d * 3_333_331).rem_euclid(DAY));
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(-62_200_000_000_000 + (x % 315_700_000_000_000) as i64);
        }
        for ms in cases {
            assert_eq!(Timestamp::from_millis(ms).to_rfc3339(), by_jiff(ms), "{ms}");
        }
    }

    #[test]
    fn timestamps_without_offset_are_refused() {
        assert_eq!(Timestamp::parse_rfc3339("2026-11-21T18:30:00"), None);
        assert_eq!(Timestamp::parse_rfc3339("tomorrow"), None);
    }
}
