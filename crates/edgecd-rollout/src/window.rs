//! Maintenance windows: days of the week and a local time range in an IANA time zone,
//! possibly crossing midnight (`22:00`–`06:00` belongs to the day it starts on).
use crate::spec::SpecError;
use chrono::{Datelike, NaiveTime, TimeZone, Timelike, Weekday};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// `mon`…`sun`; empty means every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// Local start time `HH:MM`.
    pub from: String,
    /// Local end time `HH:MM` (exclusive); earlier than `from` means the next day.
    pub to: String,
    /// IANA time zone, e.g. `Europe/Berlin`.
    pub tz: String,
}

fn parse_day(d: &str) -> Option<Weekday> {
    match d.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Some(Weekday::Mon),
        "tue" | "tuesday" => Some(Weekday::Tue),
        "wed" | "wednesday" => Some(Weekday::Wed),
        "thu" | "thursday" => Some(Weekday::Thu),
        "fri" | "friday" => Some(Weekday::Fri),
        "sat" | "saturday" => Some(Weekday::Sat),
        "sun" | "sunday" => Some(Weekday::Sun),
        _ => None,
    }
}

fn parse_time(t: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(t, "%H:%M").ok()
}

impl Window {
    pub fn validate(&self) -> Result<(), SpecError> {
        for d in &self.days {
            parse_day(d).ok_or_else(|| {
                SpecError::Invalid(format!(
                    "window day {d:?}: use mon, tue, wed, thu, fri, sat, sun"
                ))
            })?;
        }
        for t in [&self.from, &self.to] {
            parse_time(t).ok_or_else(|| {
                SpecError::Invalid(format!("window time {t:?}: use HH:MM (24-hour)"))
            })?;
        }
        self.tz.parse::<chrono_tz::Tz>().map_err(|_| {
            SpecError::Invalid(format!(
                "window tz {:?} is not an IANA time zone (e.g. Europe/Berlin)",
                self.tz
            ))
        })?;
        Ok(())
    }

    /// Whether `unix_secs` falls inside the window. An invalid window is never open.
    pub fn contains(&self, unix_secs: i64) -> bool {
        let (Ok(tz), Some(from), Some(to)) = (
            self.tz.parse::<chrono_tz::Tz>(),
            parse_time(&self.from),
            parse_time(&self.to),
        ) else {
            return false;
        };
        let Some(local) = tz.timestamp_opt(unix_secs, 0).single() else {
            return false;
        };
        let t = NaiveTime::from_hms_opt(local.hour(), local.minute(), local.second())
            .unwrap_or(NaiveTime::MIN);
        let day_ok = |d: Weekday| {
            self.days.is_empty()
                || self
                    .days
                    .iter()
                    .filter_map(|s| parse_day(s))
                    .any(|x| x == d)
        };
        let today = local.weekday();
        if from < to {
            day_ok(today) && t >= from && t < to
        } else if from > to {
            (day_ok(today) && t >= from) || (day_ok(today.pred()) && t < to)
        } else {
            day_ok(today)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
        chrono_tz::Europe::Berlin
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .unwrap()
            .timestamp()
    }

    #[test]
    fn overnight_window_belongs_to_its_start_day() {
        let w = Window {
            days: vec!["fri".into()],
            from: "22:00".into(),
            to: "06:00".into(),
            tz: "Europe/Berlin".into(),
        };
        w.validate().unwrap();
        // 2026-11-27 is a Friday.
        assert!(!w.contains(berlin(2026, 11, 27, 21, 59)));
        assert!(w.contains(berlin(2026, 11, 27, 22, 0)));
        assert!(w.contains(berlin(2026, 11, 28, 5, 59))); // Saturday morning, started Friday
        assert!(!w.contains(berlin(2026, 11, 28, 6, 0)));
        assert!(!w.contains(berlin(2026, 11, 28, 23, 0))); // Saturday night: not listed
        assert!(!w.contains(berlin(2026, 11, 27, 3, 0))); // Friday early: belongs to Thursday
    }

    #[test]
    fn time_zone_matters() {
        let w = Window {
            days: vec![],
            from: "09:00".into(),
            to: "17:00".into(),
            tz: "America/New_York".into(),
        };
        let noon_berlin = berlin(2026, 11, 27, 12, 0); // 06:00 in New York
        assert!(!w.contains(noon_berlin));
        assert!(w.contains(noon_berlin + 4 * 3600));
        assert!(
            Window {
                tz: "Mars/Olympus".into(),
                ..w.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            Window {
                from: "25:00".into(),
                ..w.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            Window {
                days: vec!["funday".into()],
                ..w
            }
            .validate()
            .is_err()
        );
    }
}
