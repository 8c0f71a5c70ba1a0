//! Timestamps are `i64` nanoseconds since the Unix epoch, UTC, everywhere in logsift. That spans
//! 1677..2262, which covers every log line a real system writes.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

pub const NANOS_PER_SEC: i64 = 1_000_000_000;

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
    fn rfc3339_round_trip() {
        let ns = parse_rfc3339("2003-10-11T22:14:15.003Z").unwrap();
        assert_eq!(format_rfc3339(ns), "2003-10-11T22:14:15.003000000Z");
        assert_eq!(parse_rfc3339("2003-08-24T05:14:15.000003-07:00").unwrap() % NANOS_PER_SEC, 3_000);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
