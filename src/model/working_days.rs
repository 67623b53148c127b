//! Working time in China (UTC+8, Monday to Friday), for the promise the seed makes:
//! an access provider's initial review hands a filing to the authority within one
//! working day (初审 1 个工作日内).
//!
//! Contract: `working_seconds(from, to)` counts the seconds of `[from, to)` that fall
//! on a Monday–Friday in China Standard Time; Saturdays and Sundays count nothing.
//! A filing is overdue once more than one working day (86 400 working seconds) has
//! passed since it entered initial review. Public holidays (and the weekend days
//! China swaps into working days around them) are out of scope: a review entered
//! before a holiday shows as overdue during it.
//!
//! For counting at size, [`overdue_cutoff`] inverts the rule: the latest instant a
//! review may have been entered and be overdue at `now`, so "overdue" becomes one
//! range condition on a stored, indexed entry time (`since <= cutoff`).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::filing::{Filing, Status};

/// China Standard Time is UTC+8 all year (no daylight saving).
const CHINA_OFFSET_SECONDS: i64 = 8 * 3600;
const DAY: i64 = 86_400;
/// Days from 1970-01-01 (a Thursday) to 1970-01-05, the first Monday.
const FIRST_MONDAY: i64 = 4;

/// Seconds of `[from, to)` (Unix seconds) on Chinese working days; 0 when `to <= from`.
pub fn working_seconds(from: i64, to: i64) -> i64 {
    if to <= from {
        return 0;
    }
    working_seconds_before(to) - working_seconds_before(from)
}

/// Whether more than one working day has passed from `since` to `now` (Unix seconds).
pub fn more_than_one_working_day(since: i64, now: i64) -> bool {
    working_seconds(since, now) > DAY
}

/// The latest instant (Unix seconds) a review entered initial review at and overdue
/// at `now`: `more_than_one_working_day(since, now)` holds exactly when
/// `since <= overdue_cutoff(now)`. Overdue means `W(now) - W(since) > DAY`, with
/// `W` the working-seconds counter (monotone, flat over weekends), so the overdue
/// `since` are those before the working second numbered `W(now) - DAY` began; the
/// cutoff is the start of the one before it.
pub fn overdue_cutoff(now: i64) -> i64 {
    start_of_working_second(working_seconds_before(now) - DAY - 1)
}

/// `overdue_cutoff` in Unix milliseconds, for entry times stored in milliseconds:
/// a `since_ms` is overdue exactly when `since_ms <= overdue_cutoff_ms(now)` (a
/// fraction of a second counts as the whole second it began in, as the seconds do).
pub fn overdue_cutoff_ms(now: i64) -> i64 {
    overdue_cutoff(now).saturating_mul(1000).saturating_add(999)
}

/// When `filing` last entered initial review (Unix seconds): the last history entry
/// moving it there, else `updated_at`; None when no timestamp is readable.
pub fn entered_initial_review(filing: &Filing) -> Option<i64> {
    filing
        .history
        .iter()
        .rev()
        .find(|entry| entry.to == Status::InitialReview)
        .and_then(|entry| parse_rfc3339(&entry.at))
        .or_else(|| parse_rfc3339(&filing.updated_at))
}

/// How many of `filings` sit in initial review for more than one working day at `now`.
pub fn overdue_initial_reviews(filings: &[Filing], now: i64) -> usize {
    filings
        .iter()
        .filter(|f| f.status == Status::InitialReview)
        .filter_map(entered_initial_review)
        .filter(|&since| more_than_one_working_day(since, now))
        .count()
}

/// Working seconds from the first Monday of 1970 (China time) up to `unix`: a
/// monotone counter, so a difference of two readings is the working time between.
fn working_seconds_before(unix: i64) -> i64 {
    let local = unix.saturating_add(CHINA_OFFSET_SECONDS);
    let days = local.div_euclid(DAY) - FIRST_MONDAY;
    let into_day = local.rem_euclid(DAY);
    let weeks = days.div_euclid(7);
    let weekday = days.rem_euclid(7); // 0 = Monday … 6 = Sunday
    let whole_days = weekday.min(5);
    let today = if weekday < 5 { into_day } else { 0 };
    weeks * 5 * DAY + whole_days * DAY + today
}

/// The instant (Unix seconds) at which working second number `k` of
/// `working_seconds_before` begins: the inverse of that counter on working time.
fn start_of_working_second(k: i64) -> i64 {
    let weeks = k.div_euclid(5 * DAY);
    let into_week = k.rem_euclid(5 * DAY);
    let local_days = FIRST_MONDAY + weeks * 7 + into_week / DAY;
    local_days * DAY + into_week % DAY - CHINA_OFFSET_SECONDS
}

/// Unix seconds of a `SystemTime` (negative before 1970).
pub fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Unix seconds of an RFC 3339 timestamp (as the registry's history writes them:
/// `Z`, or a numeric offset such as `+08:00` in imported records).
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let text = text.trim();
    let (local, offset) = split_offset(text);
    let parsed = humantime::parse_rfc3339_weak(local).ok()?;
    Some(unix_seconds(parsed) - offset)
}

/// Split a trailing `+HH:MM` / `-HH:MM` offset off; `(text, 0)` when there is none.
fn split_offset(text: &str) -> (&str, i64) {
    let Some(cut) = text.len().checked_sub(6) else {
        return (text, 0);
    };
    let (Some(local), Some(tail)) = (text.get(..cut), text.get(cut..)) else {
        return (text, 0);
    };
    let bytes = tail.as_bytes();
    let sign = match bytes.first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return (text, 0),
    };
    let hours = tail.get(1..3).and_then(|h| h.parse::<i64>().ok());
    let minutes = tail.get(4..6).and_then(|m| m.parse::<i64>().ok());
    match (hours, minutes, bytes.get(3)) {
        (Some(h), Some(m), Some(b':')) if local.contains(['T', 't', ' ']) => {
            (local, sign * (h * 3600 + m * 60))
        }
        _ => (text, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        // Test inputs are written in China time (+08:00) and converted to UTC here.
        parse_rfc3339(text).map_or(i64::MIN, |utc| utc - CHINA_OFFSET_SECONDS)
    }

    const H: i64 = 3600;

    #[test]
    fn working_time_skips_weekends_in_china_time() {
        // (from, to, working seconds) — times in China Standard Time.
        let cases = [
            // Same weekday, morning to afternoon (Mon 2024-06-03).
            ("2024-06-03 09:00:00", "2024-06-03 17:00:00", 8 * H),
            // Mon to Tue, same time: exactly one working day.
            ("2024-06-03 10:00:00", "2024-06-04 10:00:00", 24 * H),
            // Fri 10:00 to Mon 10:00: only Fri 10–24 and Mon 0–10 count.
            ("2024-06-07 10:00:00", "2024-06-10 10:00:00", 24 * H),
            // Fri 10:00 to Sat 10:00: Saturday counts nothing.
            ("2024-06-07 10:00:00", "2024-06-08 10:00:00", 14 * H),
            // Entirely inside a weekend.
            ("2024-06-08 01:00:00", "2024-06-09 23:00:00", 0),
            // Sat to Mon 06:00: the Monday morning only.
            ("2024-06-08 12:00:00", "2024-06-10 06:00:00", 6 * H),
            // A whole week: five working days.
            ("2024-06-03 00:00:00", "2024-06-10 00:00:00", 5 * 24 * H),
            // Two weeks from a Wednesday noon.
            ("2024-06-05 12:00:00", "2024-06-19 12:00:00", 10 * 24 * H),
            // Across a year end (Tue 2024-12-31 to Thu 2025-01-02).
            ("2024-12-31 12:00:00", "2025-01-02 12:00:00", 48 * H),
            // Backwards or empty: nothing.
            ("2024-06-04 10:00:00", "2024-06-03 10:00:00", 0),
            ("2024-06-04 10:00:00", "2024-06-04 10:00:00", 0),
        ];
        for (from, to, expected) in cases {
            assert_eq!(working_seconds(at(from), at(to)), expected, "{from} → {to}");
        }
    }

    #[test]
    fn china_time_decides_the_day_not_utc() {
        // Sun 2024-06-09 17:00 UTC is Mon 01:00 in China: one working hour by 02:00.
        let from = parse_rfc3339("2024-06-09T17:00:00Z").unwrap_or_default();
        let to = parse_rfc3339("2024-06-09T18:00:00Z").unwrap_or_default();
        assert_eq!(working_seconds(from, to), H);
        // Fri 2024-06-07 16:00 UTC is Sat 00:00 in China: not working time.
        let from = parse_rfc3339("2024-06-07T16:00:00Z").unwrap_or_default();
        let to = parse_rfc3339("2024-06-07T18:00:00Z").unwrap_or_default();
        assert_eq!(working_seconds(from, to), 0);
    }

    #[test]
    fn overdue_after_more_than_one_working_day() {
        let cases = [
            // Entered Friday 10:00: not overdue over the weekend, overdue Monday 10:01.
            ("2024-06-07 10:00:00", "2024-06-09 23:59:00", false),
            ("2024-06-07 10:00:00", "2024-06-10 10:00:00", false),
            ("2024-06-07 10:00:00", "2024-06-10 10:01:00", true),
            // Entered Saturday: Monday is the working day; overdue from Tuesday.
            ("2024-06-08 15:00:00", "2024-06-10 23:59:00", false),
            ("2024-06-08 15:00:00", "2024-06-11 00:01:00", true),
            // Entered Tuesday 09:00: overdue Wednesday 09:01.
            ("2024-06-04 09:00:00", "2024-06-05 08:59:00", false),
            ("2024-06-04 09:00:00", "2024-06-05 09:01:00", true),
        ];
        for (since, now, overdue) in cases {
            assert_eq!(
                more_than_one_working_day(at(since), at(now)),
                overdue,
                "{since} → {now}"
            );
        }
    }

    fn filing_in(status: Status, history: &[(&str, Status)], updated_at: &str) -> Filing {
        Filing {
            id: 1,
            kind: crate::model::filing::Kind::New,
            product: crate::model::filing::Product::Storefront,
            status,
            domains: vec!["example.cn".to_string()],
            icp_number: None,
            entity: crate::model::filing::Entity::default(),
            website: crate::model::filing::Website::default(),
            history: history
                .iter()
                .map(|(at, to)| crate::model::filing::HistoryEntry {
                    at: (*at).to_string(),
                    actor: "t".to_string(),
                    from: None,
                    to: *to,
                    reason: None,
                })
                .collect(),
            created_at: updated_at.to_string(),
            updated_at: updated_at.to_string(),
            pending_change: None,
        }
    }

    #[test]
    fn counts_reviews_by_their_last_entry_into_initial_review() {
        use Status::*;
        // Now: Wed 2024-06-05 12:00 China time.
        let now = at("2024-06-05 12:00:00");
        let filings = [
            // Entered Mon 09:00: overdue.
            filing_in(
                InitialReview,
                &[("2024-06-03T01:00:00Z", InitialReview)],
                "x",
            ),
            // Submitted last week, rejected, resubmitted Wed 09:00: not overdue.
            filing_in(
                InitialReview,
                &[
                    ("2024-05-27T01:00:00Z", InitialReview),
                    ("2024-05-28T01:00:00Z", Rejected),
                    ("2024-06-05T01:00:00Z", InitialReview),
                ],
                "2024-06-05T01:00:00Z",
            ),
            // No history: updated_at decides (Mon 2024-06-03 08:00 China): overdue.
            filing_in(InitialReview, &[], "2024-06-03T00:00:00Z"),
            // Nothing readable: not counted.
            filing_in(InitialReview, &[], "garbage"),
            // Another status, however old: not counted.
            filing_in(
                AuthorityReview,
                &[("2020-01-01T00:00:00Z", InitialReview)],
                "x",
            ),
        ];
        assert_eq!(overdue_initial_reviews(&filings, now), 2);
    }

    #[test]
    fn the_cutoff_is_the_last_overdue_instant() {
        // (now, cutoff) — China time. Public holidays count as working days (see
        // the module doc): National Day 2024 (Tue 10-01 … Mon 10-07) and the
        // Spring Festival 2025 (Tue 01-28 …) are plain weekdays here.
        let cases = [
            // Wed 12:00: entered by Tue 11:59:59 (a whole working day and a second).
            ("2024-06-05 12:00:00", "2024-06-04 11:59:59"),
            // Mon 10:00: the weekend does not count; back to Fri 09:59:59.
            ("2024-06-10 10:00:00", "2024-06-07 09:59:59"),
            // Mon 00:00 exactly: Fri 23:59:59 is only one day's work ago, Thu's is over.
            ("2024-06-10 00:00:00", "2024-06-06 23:59:59"),
            // Sat and Sun: frozen at the cutoff of Sat 00:00 (Thu 23:59:59).
            ("2024-06-08 00:00:00", "2024-06-06 23:59:59"),
            ("2024-06-09 18:30:00", "2024-06-06 23:59:59"),
            // Tue 00:00:01: entered by Mon 00:00:00 (or over the weekend before,
            // which counts from then) is one second past its working day.
            ("2024-06-11 00:00:01", "2024-06-10 00:00:00"),
            // Inside the National Day week and the Spring Festival: plain weekdays.
            ("2024-10-02 09:00:00", "2024-10-01 08:59:59"),
            ("2024-10-07 09:00:00", "2024-10-04 08:59:59"),
            ("2025-01-29 00:00:00", "2025-01-27 23:59:59"),
            // Across a year end.
            ("2025-01-01 08:00:00", "2024-12-31 07:59:59"),
        ];
        for (now, cutoff) in cases {
            let (now, cutoff) = (at(now), at(cutoff));
            assert_eq!(overdue_cutoff(now), cutoff, "now {now}");
            assert!(more_than_one_working_day(cutoff, now), "cutoff overdue");
            assert!(!more_than_one_working_day(cutoff + 1, now), "next not");
        }
    }

    proptest::proptest! {
        /// Over any pair of instants from 2000 to 2040 (weekends, holidays, year
        /// ends): the indexed condition and the rule agree, in seconds and in ms.
        #[test]
        fn the_cutoff_agrees_with_the_rule(
            now in 946_684_800_i64..2_208_988_800,
            back in -86_400_i64..(21 * 86_400),
            millis in 0_i64..1000,
        ) {
            let since = now - back;
            proptest::prop_assert_eq!(
                since <= overdue_cutoff(now),
                more_than_one_working_day(since, now)
            );
            proptest::prop_assert_eq!(
                since * 1000 + millis <= overdue_cutoff_ms(now),
                more_than_one_working_day(since, now)
            );
        }
    }

    #[test]
    fn parses_the_registry_timestamps() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-06-03T02:00:00Z"), Some(1_717_380_000));
        assert_eq!(
            parse_rfc3339("2024-06-03T10:00:00+08:00"),
            Some(1_717_380_000)
        );
        assert_eq!(
            parse_rfc3339("2024-06-02T21:00:00-05:00"),
            Some(1_717_380_000)
        );
        assert_eq!(parse_rfc3339("not a time"), None);
        assert_eq!(parse_rfc3339("2024-06-03"), None);
    }
}
