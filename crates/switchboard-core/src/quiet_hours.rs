//! Quiet hours in the recipient's local time (SPEC §5).
//!
//! The recipient's zone comes from the submission's `timezone` (IANA name or
//! `UTC-8` style), else from the number's region when that region has a
//! single zone (`SINGLE_ZONE_REGIONS`), else the workspace default. A
//! marketing message inside the window is held to the window's end, computed
//! as a local wall-clock time and converted back with the zone's rules, so a
//! daylight-saving change between now and then is accounted for.

use jiff::civil::Time;
use jiff::tz::{Offset, TimeZone};

use crate::time::Timestamp;

/// Regions (ISO 3166) that use one time zone, with that zone. Regions with
/// several zones (US, CA, MX, BR, RU, AU, ES, PT, …) are absent on purpose.
pub const SINGLE_ZONE_REGIONS: &[(&str, &str)] = &[
    ("GB", "Europe/London"),
    ("IE", "Europe/Dublin"),
    ("FR", "Europe/Paris"),
    ("DE", "Europe/Berlin"),
    ("IT", "Europe/Rome"),
    ("NL", "Europe/Amsterdam"),
    ("BE", "Europe/Brussels"),
    ("CH", "Europe/Zurich"),
    ("AT", "Europe/Vienna"),
    ("PL", "Europe/Warsaw"),
    ("SE", "Europe/Stockholm"),
    ("NO", "Europe/Oslo"),
    ("DK", "Europe/Copenhagen"),
    ("FI", "Europe/Helsinki"),
    ("GR", "Europe/Athens"),
    ("IL", "Asia/Jerusalem"),
    ("AE", "Asia/Dubai"),
    ("IN", "Asia/Kolkata"),
    ("SG", "Asia/Singapore"),
    ("HK", "Asia/Hong_Kong"),
    ("JP", "Asia/Tokyo"),
    ("KR", "Asia/Seoul"),
    ("PH", "Asia/Manila"),
    ("ZA", "Africa/Johannesburg"),
    ("NG", "Africa/Lagos"),
    ("KE", "Africa/Nairobi"),
];

/// A daily window, `start` inclusive to `end` exclusive, in local time. It
/// may cross midnight (21:00–08:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start: Time,
    end: Time,
}

/// Parses `HH:MM`.
fn hhmm(s: &str) -> Option<Time> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    Time::new(h.parse().ok()?, m.parse().ok()?, 0, 0).ok()
}

impl Window {
    /// A window from `HH:MM` to `HH:MM`; `None` if malformed or empty.
    pub fn parse(start: &str, end: &str) -> Option<Window> {
        let (start, end) = (hhmm(start)?, hhmm(end)?);
        (start != end).then_some(Window { start, end })
    }

    fn contains(&self, t: Time) -> bool {
        if self.start < self.end {
            t >= self.start && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

/// A time zone from `UTC`, `UTC-8`, `UTC+5:30`, `GMT+1` or an IANA name.
pub fn zone(name: &str) -> Option<TimeZone> {
    if let Some(rest) = name
        .strip_prefix("UTC")
        .or_else(|| name.strip_prefix("GMT"))
    {
        if rest.is_empty() {
            return Some(TimeZone::UTC);
        }
        let sign: i32 = match rest.as_bytes().first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let (h, m) = match rest[1..].split_once(':') {
            Some((h, m)) => (h.parse::<i32>().ok()?, m.parse::<i32>().ok()?),
            None => (rest[1..].parse::<i32>().ok()?, 0),
        };
        if !(0..=14).contains(&h) || !(0..60).contains(&m) {
            return None;
        }
        return Offset::from_seconds(sign * (h * 3600 + m * 60))
            .ok()
            .map(TimeZone::fixed);
    }
    TimeZone::get(name).ok()
}

/// The recipient's zone: explicit, else the region's single zone, else the default.
pub fn recipient_zone(
    explicit: Option<&str>,
    region: Option<&str>,
    default: &TimeZone,
) -> TimeZone {
    if let Some(z) = explicit.and_then(zone) {
        return z;
    }
    if let Some((_, name)) =
        region.and_then(|r| SINGLE_ZONE_REGIONS.iter().find(|(code, _)| *code == r))
        && let Ok(z) = TimeZone::get(name)
    {
        return z;
    }
    default.clone()
}

/// `None` if `at` is outside the window in `tz`; otherwise the first instant
/// at which the window ends (the next allowed minute).
pub fn hold_until(at: Timestamp, tz: &TimeZone, window: Window) -> Option<Timestamp> {
    let instant = jiff::Timestamp::from_millisecond(at.as_millis()).ok()?;
    let local = instant.to_zoned(tz.clone());
    let time = local.time();
    if !window.contains(time) {
        return None;
    }
    let mut date = local.date();
    // Crossing midnight and already past the start: the window ends tomorrow.
    if window.start > window.end && time >= window.start {
        date = date.tomorrow().ok()?;
    }
    let end = date.to_datetime(window.end).to_zoned(tz.clone()).ok()?;
    Some(Timestamp::from_millis(end.timestamp().as_millisecond()))
}

/// A workspace's quiet-hours rule, read from its settings document
/// (`quiet_hours: {start, end}` and `default_timezone`). The accept path and
/// the dispatcher (which checks again when a held or delayed marketing
/// message finally comes up) both decide with it.
#[derive(Debug, Clone, PartialEq)]
pub struct QuietHours {
    window: Window,
    default: TimeZone,
}

impl QuietHours {
    /// The rule in `settings`; `None` when the workspace has no window.
    pub fn from_settings(settings: &serde_json::Value) -> Option<QuietHours> {
        let q = settings.get("quiet_hours")?;
        let window = Window::parse(q.get("start")?.as_str()?, q.get("end")?.as_str()?)?;
        let default = settings
            .get("default_timezone")
            .and_then(serde_json::Value::as_str)
            .and_then(zone)
            .unwrap_or(TimeZone::UTC);
        Some(QuietHours { window, default })
    }

    /// When a message to a recipient (explicit `timezone`, number's `region`)
    /// due at `at` may go out: `None` if it may go now.
    pub fn hold(
        &self,
        at: Timestamp,
        timezone: Option<&str>,
        region: Option<&str>,
    ) -> Option<Timestamp> {
        hold_until(
            at,
            &recipient_zone(timezone, region, &self.default),
            self.window,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    fn check(at: &str, tz: &str, want: Option<&str>) {
        let w = Window::parse("21:00", "08:00").unwrap();
        let got = hold_until(ts(at), &zone(tz).unwrap(), w);
        assert_eq!(
            got.map(Timestamp::to_rfc3339),
            want.map(|w| ts(w).to_rfc3339()),
            "{at} in {tz}"
        );
    }

    #[test]
    fn outside_the_window_nothing_is_held() {
        check("2026-06-10T15:00:00Z", "America/New_York", None); // 11:00 local
        check("2026-06-11T00:59:00Z", "America/New_York", None); // 20:59 local
    }

    #[test]
    fn inside_the_window_the_hold_ends_at_the_next_local_end() {
        check(
            "2026-06-11T02:30:00Z",
            "America/New_York",
            Some("2026-06-11T12:00:00Z"),
        ); // 22:30 EDT → 08:00 EDT
        check(
            "2026-06-11T09:00:00Z",
            "America/New_York",
            Some("2026-06-11T12:00:00Z"),
        ); // 05:00 EDT, same day
        check(
            "2026-06-11T01:00:00Z",
            "America/New_York",
            Some("2026-06-11T12:00:00Z"),
        ); // 21:00 exactly
        check("2026-06-11T12:00:00Z", "America/New_York", None); // 08:00 exactly is allowed
    }

    #[test]
    fn daylight_saving_changes_are_accounted_for() {
        // 22:30 EDT on 31 Oct 2026; clocks go back at 02:00 on 1 Nov: 08:00 is EST (UTC-5).
        check(
            "2026-11-01T02:30:00Z",
            "America/New_York",
            Some("2026-11-01T13:00:00Z"),
        );
        // 22:30 CET on 28 Mar 2026; clocks go forward on 29 Mar: 08:00 is CEST (UTC+2).
        check(
            "2026-03-28T21:30:00Z",
            "Europe/Berlin",
            Some("2026-03-29T06:00:00Z"),
        );
    }

    #[test]
    fn windows_within_a_day_and_fixed_offsets() {
        let lunch = Window::parse("12:00", "13:30").unwrap();
        let got = hold_until(ts("2026-06-10T12:10:00Z"), &zone("UTC").unwrap(), lunch);
        assert_eq!(got, Some(ts("2026-06-10T13:30:00Z")));
        let got = hold_until(ts("2026-06-10T20:10:00Z"), &zone("UTC-8").unwrap(), lunch);
        assert_eq!(got, Some(ts("2026-06-10T21:30:00Z")));
        assert_eq!(Window::parse("9:00", "10:00"), None);
        assert_eq!(Window::parse("25:00", "10:00"), None);
        assert_eq!(Window::parse("10:00", "10:00"), None);
    }

    #[test]
    fn the_rule_is_read_from_workspace_settings() {
        let none = serde_json::json!({"require_marketing_opt_in": true});
        assert_eq!(QuietHours::from_settings(&none), None);
        let bad = serde_json::json!({"quiet_hours": {"start": "9pm", "end": "08:00"}});
        assert_eq!(QuietHours::from_settings(&bad), None);
        let s = serde_json::json!({"quiet_hours": {"start": "21:00", "end": "08:00"}, "default_timezone": "America/New_York"});
        let q = QuietHours::from_settings(&s).unwrap();
        // 22:30 EDT: held to 08:00 EDT by the default zone; a Tokyo recipient (11:30) is not held.
        assert_eq!(
            q.hold(ts("2026-06-11T02:30:00Z"), None, Some("US")),
            Some(ts("2026-06-11T12:00:00Z"))
        );
        assert_eq!(
            q.hold(ts("2026-06-11T02:30:00Z"), Some("Asia/Tokyo"), None),
            None
        );
        assert_eq!(q.hold(ts("2026-06-11T02:30:00Z"), None, Some("JP")), None);
    }

    #[test]
    fn every_single_zone_region_names_a_real_zone() {
        for (region, name) in SINGLE_ZONE_REGIONS {
            assert!(TimeZone::get(name).is_ok(), "{region}: {name}");
        }
    }

    #[test]
    fn the_zone_comes_from_the_submission_then_the_region_then_the_default() {
        let default = TimeZone::UTC;
        let z = recipient_zone(Some("Asia/Tokyo"), Some("GB"), &default);
        assert_eq!(z.iana_name(), Some("Asia/Tokyo"));
        let z = recipient_zone(None, Some("GB"), &default);
        assert_eq!(z.iana_name(), Some("Europe/London"));
        let z = recipient_zone(None, Some("US"), &default);
        assert_eq!(z, TimeZone::UTC, "the US has several zones");
    }
}
