//! Timestamps are `i64` nanoseconds since the Unix epoch, UTC, everywhere in logsift. That spans
//! 1677..2262, which covers every log line a real system writes.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

pub const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month, day) of a day since 1970-01-01: the inverse of [`days_from_civil`].
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The current time in ns since the epoch.
pub fn now_ns() -> i64 {
    let now = Utc::now();
    now.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// RFC 3339 with nanoseconds and `Z`, the format of every timestamp logsift answers with.
pub fn format_rfc3339(ns: i64) -> String {
    Utc.timestamp_nanos(ns)
        .to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Parses an RFC 3339 timestamp to ns since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_convert_both_ways() {
        for days in [-800_000i64, -1, 0, 59, 60, 365, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn rfc3339_round_trip() {
        let ns = parse_rfc3339("2003-10-11T22:14:15.003Z").unwrap();
        assert_eq!(format_rfc3339(ns), "2003-10-11T22:14:15.003000000Z");
        assert_eq!(
            parse_rfc3339("2003-08-24T05:14:15.000003-07:00").unwrap() % NANOS_PER_SEC,
            3_000
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}

/// Parses a time as users write it on the command line and in query strings: RFC 3339,
/// `now`, `now-15m` / `now+1h` (units s, m, h, d, w), or epoch seconds / milliseconds /
/// nanoseconds told apart by magnitude.
pub fn parse_time_expr(s: &str, now_ns: i64) -> Result<i64, String> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("now") {
        if rest.is_empty() {
            return Ok(now_ns);
        }
        let (sign, amount) = match rest.as_bytes()[0] {
            b'-' => (-1i64, &rest[1..]),
            b'+' => (1i64, &rest[1..]),
            _ => return Err(format!("expected '-' or '+' after 'now' in {s:?}")),
        };
        let unit_at = amount
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("missing unit (s, m, h, d, w) in {s:?}"))?;
        let n: i64 = amount[..unit_at]
            .parse()
            .map_err(|_| format!("expected a number after 'now{}' in {s:?}", &rest[..1]))?;
        let unit = match &amount[unit_at..] {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            other => {
                return Err(format!(
                    "unknown time unit {other:?} in {s:?}; use s, m, h, d or w"
                ))
            }
        };
        return n
            .checked_mul(unit * NANOS_PER_SEC)
            .and_then(|d| now_ns.checked_add(sign * d))
            .ok_or_else(|| format!("time {s:?} is out of range"));
    }
    if let Ok(n) = s.parse::<i64>() {
        // Seconds until the year 2286, then milliseconds, microseconds, nanoseconds.
        let abs = n.unsigned_abs();
        return Ok(if abs < 10_000_000_000 {
            n.saturating_mul(NANOS_PER_SEC)
        } else if abs < 10_000_000_000_000 {
            n.saturating_mul(1_000_000)
        } else if abs < 10_000_000_000_000_000 {
            n.saturating_mul(1_000)
        } else {
            n
        });
    }
    parse_rfc3339(s).ok_or_else(|| {
        format!("cannot read time {s:?}: use RFC 3339 (2024-05-01T12:00:00Z), epoch seconds, or now-15m")
    })
}

#[cfg(test)]
mod expr_tests {
    use super::*;

    #[test]
    fn relative_and_absolute() {
        let now = 1_000_000 * NANOS_PER_SEC;
        assert_eq!(parse_time_expr("now", now), Ok(now));
        assert_eq!(
            parse_time_expr("now-15m", now),
            Ok(now - 900 * NANOS_PER_SEC)
        );
        assert_eq!(
            parse_time_expr("now+1h", now),
            Ok(now + 3600 * NANOS_PER_SEC)
        );
        assert_eq!(
            parse_time_expr("1700000000", now),
            Ok(1_700_000_000 * NANOS_PER_SEC)
        );
        assert_eq!(
            parse_time_expr("1700000000000", now),
            Ok(1_700_000_000 * NANOS_PER_SEC)
        );
        assert!(parse_time_expr("now-15x", now)
            .unwrap_err()
            .contains("unknown time unit"));
        assert!(parse_time_expr("yesterday", now).is_err());
    }
}
