//! Splitting a time window `[from, to)` into the whole UTC days it covers, read from the
//! per-day rollups, and the partial days at its edges, read from the raw rows by time.
//!
//! Invariant: every instant of the window is in exactly one part (a whole day or an edge),
//! and no instant outside it is in either; at most two edges, together within two days, so
//! a read costs the same whatever the length of the history.

use chrono::{DateTime, NaiveDate, Utc};

/// Where the rows of a window are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Whole UTC days `[first, end)` (a missing bound is unbounded), or `None`: no whole day.
    pub days: Option<(Option<NaiveDate>, Option<NaiveDate>)>,
    /// Up to two `[start, end)` intervals read from the raw rows.
    pub edges: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Split {
    pub fn has_days(&self) -> bool {
        self.days.is_some()
    }
    pub fn first_day(&self) -> Option<NaiveDate> {
        self.days.and_then(|d| d.0)
    }
    pub fn end_day(&self) -> Option<NaiveDate> {
        self.days.and_then(|d| d.1)
    }
    pub fn edge_starts(&self) -> Vec<DateTime<Utc>> {
        self.edges.iter().map(|e| e.0).collect()
    }
    pub fn edge_ends(&self) -> Vec<DateTime<Utc>> {
        self.edges.iter().map(|e| e.1).collect()
    }
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// The first day that starts at or after `t` (None past the calendar's end).
fn ceil_day(t: DateTime<Utc>) -> Option<NaiveDate> {
    let d = t.date_naive();
    if midnight(d) == t {
        Some(d)
    } else {
        d.succ_opt()
    }
}

/// Splits `[from, to)` (a missing bound is unbounded).
pub fn split(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Split {
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Split { days: None, edges: Vec::new() };
        }
    }
    let first = match from {
        Some(f) => match ceil_day(f) {
            Some(d) => Some(d),
            // No whole day after `from`: all of it is an edge.
            None => return Split { days: None, edges: to.map(|t| vec![(f, t)]).unwrap_or_default() },
        },
        None => None,
    };
    let end = to.map(|t| t.date_naive());
    if let (Some(a), Some(b), Some(f), Some(t)) = (first, end, from, to) {
        if a >= b {
            // The window lies within one day, or two adjacent partial days.
            return Split { days: None, edges: vec![(f, t)] };
        }
    }
    let mut edges = Vec::with_capacity(2);
    if let (Some(f), Some(a)) = (from, first) {
        if f < midnight(a) {
            edges.push((f, midnight(a)));
        }
    }
    if let (Some(t), Some(b)) = (to, end) {
        if midnight(b) < t {
            edges.push((midnight(b), t));
        }
    }
    Split { days: Some((first, end)), edges }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }
    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn whole_days_and_edges() {
        let s = split(Some(at("2030-01-01T10:00:00Z")), Some(at("2030-01-04T06:00:00Z")));
        assert_eq!(s.days, Some((Some(day("2030-01-02")), Some(day("2030-01-04")))));
        assert_eq!(
            s.edges,
            vec![
                (at("2030-01-01T10:00:00Z"), at("2030-01-02T00:00:00Z")),
                (at("2030-01-04T00:00:00Z"), at("2030-01-04T06:00:00Z"))
            ]
        );
        let s = split(Some(at("2030-01-01T00:00:00Z")), Some(at("2030-01-03T00:00:00Z")));
        assert_eq!((s.days, s.edges), (Some((Some(day("2030-01-01")), Some(day("2030-01-03")))), vec![]));
        assert_eq!(split(None, None), Split { days: Some((None, None)), edges: vec![] });
        let s = split(None, Some(at("2030-01-03T00:00:01Z")));
        assert_eq!(s.days, Some((None, Some(day("2030-01-03")))));
        assert_eq!(s.edges, vec![(at("2030-01-03T00:00:00Z"), at("2030-01-03T00:00:01Z"))]);
    }

    #[test]
    fn within_a_day_is_all_edge() {
        let (f, t) = (at("2030-01-01T23:00:00Z"), at("2030-01-02T01:00:00Z"));
        assert_eq!(split(Some(f), Some(t)), Split { days: None, edges: vec![(f, t)] });
        let (f, t) = (at("2030-01-01T01:00:00Z"), at("2030-01-01T02:00:00Z"));
        assert_eq!(split(Some(f), Some(t)), Split { days: None, edges: vec![(f, t)] });
        assert_eq!(split(Some(t), Some(f)).edges, vec![]);
    }

    fn covered(s: &Split, x: DateTime<Utc>) -> usize {
        let d = x.date_naive();
        let in_days = s.days.is_some_and(|(a, b)| a.is_none_or(|a| d >= a) && b.is_none_or(|b| d < b));
        usize::from(in_days) + s.edges.iter().filter(|(a, b)| *a <= x && x < *b).count()
    }

    proptest! {
        /// Every instant is counted once if it is in the window, never otherwise.
        #[test]
        fn each_instant_counted_once(
            from in proptest::option::of(0i64..400_000_000_000),
            len in 0i64..400_000_000_000,
            to_open in any::<bool>(),
            xs in proptest::collection::vec(0i64..900_000_000_000, 1..40),
        ) {
            let t = |us: i64| DateTime::from_timestamp_micros(1_900_000_000_000_000 + us).unwrap();
            // Instants near the bounds and near midnights matter most: snap some to whole hours.
            let snap = |us: i64| if us % 3 == 0 { us - us % 3_600_000_000 } else { us };
            let from_t = from.map(|f| t(snap(f)));
            let to_t = if to_open { None } else { Some(t(snap(from.unwrap_or(0) + len))) };
            let s = split(from_t, to_t);
            prop_assert!(s.edges.len() <= 2);
            for e in &s.edges {
                prop_assert!(e.0 < e.1);
            }
            let edge_time: chrono::Duration = s.edges.iter().map(|e| e.1 - e.0).sum();
            prop_assert!(edge_time < chrono::Duration::days(2));
            let mut probes: Vec<DateTime<Utc>> = xs.iter().map(|x| t(snap(*x))).collect();
            probes.extend(from_t.into_iter().chain(to_t).flat_map(|b| [b, b - chrono::Duration::microseconds(1)]));
            for x in probes {
                let inside = from_t.is_none_or(|f| x >= f) && to_t.is_none_or(|e| x < e);
                prop_assert_eq!(covered(&s, x), usize::from(inside), "{:?} in {:?}..{:?}: {:?}", x, from_t, to_t, s);
            }
        }
    }
}
