//! Spend-limit windows: calendar windows in UTC, as pure functions of time.
//!
//! A day starts at 00:00, a week on Monday 00:00, a month on the 1st 00:00; `lifetime`
//! never resets (its one window starts at the Unix epoch). Invariants, checked by the
//! property tests below: `start(t) <= t < resets_at(t)`; every instant of a window has the
//! same start; the next window starts where this one resets.

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, NaiveTime, Utc};

use crate::vocab::text_enum;

text_enum! {
    /// `api_keys.spend_window`, `spend_counters.window_kind`: the period a limit covers.
    pub enum Window { Day = "day", Week = "week", Month = "month", Lifetime = "lifetime" }
}

/// Where the lifetime window starts.
pub const LIFETIME_START: DateTime<Utc> = DateTime::UNIX_EPOCH;

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_time(NaiveTime::MIN).and_utc()
}

impl Window {
    /// The start of the window that contains `at`.
    pub fn start(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let day = at.date_naive();
        match self {
            Window::Day => midnight(day),
            Window::Week => midnight(day - Days::new(u64::from(day.weekday().num_days_from_monday()))),
            Window::Month => midnight(day.with_day(1).expect("every month has a 1st")),
            Window::Lifetime => LIFETIME_START,
        }
    }

    /// When the window that contains `at` ends and the next one starts; `None` for
    /// `lifetime`.
    pub fn resets_at(self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = self.start(at);
        match self {
            Window::Day => Some(start + Days::new(1)),
            Window::Week => Some(start + Days::new(7)),
            Window::Month => Some(start + Months::new(1)),
            Window::Lifetime => None,
        }
    }

    /// Whether a spend counted at `then` is in the window that is current at `now`.
    pub fn current(self, then: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        self.start(then) == self.start(now)
    }
}

/// The start of the current window of each kind, in [`Window::ALL`] order: what a query
/// binds to find the counters of the windows current at `now`.
pub fn starts(now: DateTime<Utc>) -> [DateTime<Utc>; 4] {
    [Window::Day.start(now), Window::Week.start(now), Window::Month.start(now), Window::Lifetime.start(now)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Weekday;
    use proptest::prelude::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn calendar_boundaries() {
        let late = t("2026-03-01T23:59:59.999999Z");
        let midnight = t("2026-03-02T00:00:00Z");
        assert_ne!(Window::Day.start(late), Window::Day.start(midnight));
        assert_eq!(Window::Day.resets_at(late), Some(midnight));
        // 2026-03-02 is a Monday: the week turns with the day, the month does not.
        assert_eq!(midnight.weekday(), Weekday::Mon);
        assert_eq!(Window::Week.start(late), t("2026-02-23T00:00:00Z"));
        assert_eq!(Window::Week.start(midnight), midnight);
        assert_eq!(Window::Week.start(t("2026-03-08T23:59:59Z")), midnight, "Sunday ends the week");
        assert_eq!(Window::Month.start(late), t("2026-03-01T00:00:00Z"));
        assert_eq!(Window::Month.start(t("2026-02-28T23:59:59Z")), t("2026-02-01T00:00:00Z"));
        assert_eq!(Window::Month.resets_at(t("2026-12-31T12:00:00Z")), Some(t("2027-01-01T00:00:00Z")));
        assert_eq!(Window::Month.resets_at(t("2028-02-10T00:00:00Z")), Some(t("2028-03-01T00:00:00Z")));
        assert_eq!(Window::Lifetime.start(late), LIFETIME_START);
        assert_eq!(Window::Lifetime.resets_at(late), None);
        assert!(Window::Lifetime.current(LIFETIME_START, late));
        assert!(!Window::Day.current(late, midnight));
        assert!(Window::Month.current(late, midnight));
    }

    #[test]
    fn names_match_the_contract() {
        let names: Vec<&str> = Window::ALL.iter().map(|w| w.as_str()).collect();
        assert_eq!(names, ["day", "week", "month", "lifetime"]);
        assert_eq!(serde_json::from_str::<Window>("\"week\"").unwrap(), Window::Week);
        assert!(serde_json::from_str::<Window>("\"year\"").is_err());
    }

    proptest! {
        #[test]
        fn every_instant_lies_in_exactly_one_window(secs in 0i64..4_102_444_800, micros in 0u32..1_000_000) {
            let at = DateTime::from_timestamp(secs, micros * 1000).unwrap();
            for w in [Window::Day, Window::Week, Window::Month] {
                let start = w.start(at);
                let end = w.resets_at(at).unwrap();
                prop_assert!(start <= at && at < end, "{w}: {start} <= {at} < {end}");
                prop_assert_eq!(w.start(start), start);
                prop_assert_eq!(w.start(end - chrono::Duration::microseconds(1)), start);
                prop_assert_eq!(w.start(end), end, "the next window starts where this one resets");
                prop_assert_eq!(start.time(), NaiveTime::MIN);
            }
            prop_assert_eq!(Window::Week.start(at).weekday(), Weekday::Mon);
            prop_assert_eq!(Window::Month.start(at).day(), 1);
            let span = Window::Month.resets_at(at).unwrap() - Window::Month.start(at);
            prop_assert!((28..=31).contains(&span.num_days()));
        }

        #[test]
        fn current_means_same_window(a in 0i64..4_102_444_800, b in 0i64..4_102_444_800) {
            let (a, b) = (DateTime::from_timestamp(a, 0).unwrap(), DateTime::from_timestamp(b, 0).unwrap());
            for w in Window::ALL.iter().copied() {
                let same = w.start(a) <= b && w.resets_at(a).is_none_or(|end| b < end);
                prop_assert_eq!(w.current(a, b), same);
            }
        }
    }
}
