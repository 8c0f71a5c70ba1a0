//! Timestamp scanners for the formats found in log lines. Hand-written rather than chrono's
//! parsers: they run once per line on the hot path, must report how many bytes they consumed
//! (the timestamp is a prefix of the rest of the line), and must not allocate.

use logsift_core::time::{civil_from_days, days_from_civil, NANOS_PER_SEC};

const SECS_PER_DAY: i64 = 86_400;

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// The civil year of a UTC instant shifted by `offset_secs`.
fn year_of(ns: i64, offset_secs: i32) -> i64 {
    let days = (ns.div_euclid(NANOS_PER_SEC) + i64::from(offset_secs)).div_euclid(SECS_PER_DAY);
    civil_from_days(days).0
}

/// A wall-clock time as written in a log line; the zone offset is applied by [`Civil::to_ns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
}

impl Civil {
    /// ns since the epoch, or `None` for impossible dates (Feb 30) and instants outside i64 ns.
    pub(crate) fn to_ns(self, offset_secs: i32) -> Option<i64> {
        if self.month == 0
            || self.day == 0
            || self.day > days_in_month(self.year, self.month)
            || self.hour > 23
            || self.minute > 59
            // 60 is a leap second; it rolls into the next minute rather than being refused.
            || self.second > 60
        {
            return None;
        }
        if !(1677..=2262).contains(&self.year) {
            return None;
        }
        let secs = days_from_civil(self.year, self.month, self.day) * SECS_PER_DAY
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
            - i64::from(offset_secs);
        secs.checked_mul(NANOS_PER_SEC)?
            .checked_add(i64::from(self.nanos))
    }
}

fn digits<const N: usize>(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + N)?;
    s.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// Reads `.123456789` style fractions: returns (nanos, bytes consumed). Digits beyond ns
/// precision are consumed and dropped, since some emitters write more.
fn fraction(b: &[u8], at: usize) -> (u32, usize) {
    if !matches!(b.get(at), Some(b'.') | Some(b',')) {
        return (0, 0);
    }
    let mut nanos = 0u32;
    let mut n = 0;
    while let Some(&c) = b.get(at + 1 + n) {
        if !c.is_ascii_digit() {
            break;
        }
        if n < 9 {
            nanos = nanos * 10 + u32::from(c - b'0');
        }
        n += 1;
    }
    if n == 0 {
        return (0, 0);
    }
    for _ in n..9 {
        nanos *= 10;
    }
    (nanos, n + 1)
}

/// Parses an ISO 8601 / RFC 3339 date-time at the start of `b`:
/// `YYYY-MM-DD(T|t| )hh:mm:ss[.frac][Z|±hh:mm|±hhmm|±hh]`.
/// Without a zone, `default_offset` applies unless `require_zone` is set (RFC 5424 demands one).
/// Returns ns since the epoch and the number of bytes consumed.
pub(crate) fn parse_iso8601(
    b: &[u8],
    require_zone: bool,
    default_offset: i32,
) -> Option<(i64, usize)> {
    // The fixed-layout part `YYYY-MM-DDThh:mm:ss`, checked and read in one go (it runs once per
    // line, and reading it field by field with bounds checks was a visible share of it).
    let head: &[u8; 19] = b.get(..19)?.try_into().ok()?;
    if head[4] != b'-' || head[7] != b'-' || head[13] != b':' || head[16] != b':' {
        return None;
    }
    if !matches!(head[10], b'T' | b't' | b' ') {
        return None;
    }
    const DIGITS: [usize; 14] = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
    if !DIGITS.iter().all(|&i| head[i].is_ascii_digit()) {
        return None;
    }
    let d = |i: usize| u32::from(head[i] - b'0');
    let two = |i: usize| d(i) * 10 + d(i + 1);
    let (nanos, frac_len) = fraction(b, 19);
    let civil = Civil {
        year: i64::from(two(0) * 100 + two(2)),
        month: two(5),
        day: two(8),
        hour: two(11),
        minute: two(14),
        second: two(17),
        nanos,
    };
    let mut pos = 19 + frac_len;
    let offset = match b.get(pos) {
        Some(b'Z' | b'z') => {
            pos += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let hours = digits::<2>(b, pos + 1)?;
            let (minutes, len) = if b.get(pos + 3) == Some(&b':') {
                (digits::<2>(b, pos + 4)?, 6)
            } else if let Some(m) = digits::<2>(b, pos + 3) {
                (m, 5)
            } else {
                (0, 3)
            };
            if hours > 23 || minutes > 59 {
                return None;
            }
            pos += len;
            let secs = (hours * 3600 + minutes * 60) as i32;
            if sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ if require_zone => return None,
        _ => default_offset,
    };
    Some((civil.to_ns(offset)?, pos))
}

const MONTHS: [&[u8; 3]; 12] = [
    b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec",
];

fn month(b: &[u8]) -> Option<u32> {
    let m = b.get(..3)?;
    MONTHS
        .iter()
        .position(|name| m.eq_ignore_ascii_case(&name[..]))
        .map(|i| i as u32 + 1)
}

fn skip_spaces(b: &[u8], mut pos: usize) -> usize {
    while b.get(pos) == Some(&b' ') {
        pos += 1;
    }
    pos
}

/// An RFC 3164 timestamp: `Mmm dd hh:mm:ss` with the variants real devices send: a space-padded
/// or single-digit day, any month capitalisation, a year before the time (`Mar 7 2008 19:06:53`),
/// fractional seconds, and a `:` straight after the time (Cisco). The year is `None` unless
/// written. Returns the fields and the number of bytes consumed; the caller checks what follows.
pub(crate) fn parse_bsd(b: &[u8]) -> Option<(Civil, Option<i64>, usize)> {
    let month = month(b)?;
    if b.get(3) != Some(&b' ') {
        return None;
    }
    let mut pos = skip_spaces(b, 3);
    let day = match (digits::<2>(b, pos), digits::<1>(b, pos)) {
        (Some(d), _) => {
            pos += 2;
            d
        }
        (None, Some(d)) => {
            pos += 1;
            d
        }
        _ => return None,
    };
    if b.get(pos) != Some(&b' ') {
        return None;
    }
    pos = skip_spaces(b, pos);
    let mut year = None;
    if let (Some(y), Some(b' ')) = (digits::<4>(b, pos), b.get(pos + 4)) {
        year = Some(i64::from(y));
        pos = skip_spaces(b, pos + 4);
    }
    let hour = digits::<2>(b, pos)?;
    let minute = digits::<2>(b, pos + 3)?;
    let second = digits::<2>(b, pos + 6)?;
    if b.get(pos + 2) != Some(&b':') || b.get(pos + 5) != Some(&b':') {
        return None;
    }
    pos += 8;
    let (nanos, frac_len) = fraction(b, pos);
    pos += frac_len;
    if b.get(pos) == Some(&b':') && matches!(b.get(pos + 1), None | Some(b' ')) {
        pos += 1;
    }
    if !matches!(b.get(pos), None | Some(b' ')) {
        return None;
    }
    let civil = Civil {
        year: 0,
        month,
        day,
        hour,
        minute,
        second,
        nanos,
    };
    Some((civil, year, pos))
}

/// Upper bound on how far in the future an inferred-year timestamp may lie: clocks drift and
/// zones are misconfigured, but a date months ahead means the line is from last year.
const MAX_FUTURE_NS: i64 = 31 * SECS_PER_DAY * NANOS_PER_SEC;

/// Resolves a yearless timestamp: of the years around `received_at_ns`, the one that puts the
/// timestamp closest to the receive time without being more than a month in the future.
pub(crate) fn infer_year(civil: Civil, received_at_ns: i64, offset_secs: i32) -> Option<i64> {
    let year = year_of(received_at_ns, offset_secs);
    (year - 1..=year + 1)
        .filter_map(|y| Civil { year: y, ..civil }.to_ns(offset_secs))
        .filter(|&ns| ns.saturating_sub(received_at_ns) <= MAX_FUTURE_NS)
        .min_by_key(|&ns| (ns.saturating_sub(received_at_ns)).unsigned_abs())
}

/// Converts a JSON epoch number (as written) to ns, picking the unit by magnitude:
/// seconds below 1e11 (until year 5138), then ms, us, ns. Decimal fractions are exact.
pub(crate) fn epoch_number_to_ns(raw: &str) -> Option<i64> {
    let (neg, body) = match raw.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    let (int_part, frac_part) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if int_part.is_empty()
        || int_part.len() > 19
        || !int_part.bytes().all(|c| c.is_ascii_digit())
        || !frac_part.bytes().all(|c| c.is_ascii_digit())
    {
        // Exponents and other oddities: not worth exactness.
        let v: f64 = raw.parse().ok()?;
        return float_epoch_to_ns(v);
    }
    let int: i128 = int_part.parse().ok()?;
    let unit_ns: i128 = match int {
        i if i < 100_000_000_000 => 1_000_000_000,
        i if i < 100_000_000_000_000 => 1_000_000,
        i if i < 100_000_000_000_000_000 => 1_000,
        _ => 1,
    };
    let mut ns = int * unit_ns;
    let mut scale = unit_ns;
    for c in frac_part.bytes().take(18) {
        scale /= 10;
        if scale == 0 {
            break;
        }
        ns += i128::from(c - b'0') * scale;
    }
    if neg {
        ns = -ns;
    }
    i64::try_from(ns).ok()
}

fn float_epoch_to_ns(v: f64) -> Option<i64> {
    if !v.is_finite() {
        return None;
    }
    let a = v.abs();
    let ns = if a < 1e11 {
        v * 1e9
    } else if a < 1e14 {
        v * 1e6
    } else if a < 1e17 {
        v * 1e3
    } else {
        v
    };
    (ns.abs() < 9.2e18).then_some(ns as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use logsift_core::time::parse_rfc3339;

    #[test]
    fn iso_matches_chrono() {
        for s in [
            "1985-04-12T23:20:50.52Z",
            "1985-04-12T19:20:50.52-04:00",
            "2003-08-24T05:14:15.000003-07:00",
            "2003-08-24T05:14:15.000000003-07:00",
            "2026-11-27T07:17:19.123456+00:00",
            "2000-02-29T00:00:00+05:30",
            "1969-12-31T23:59:59.999Z",
        ] {
            let (ns, len) = parse_iso8601(s.as_bytes(), true, 0).unwrap();
            assert_eq!(Some(ns), parse_rfc3339(s), "{s}");
            assert_eq!(len, s.len());
        }
    }

    #[test]
    fn iso_rejects_impossible_dates() {
        for s in [
            "2003-09-31T22:14:15.003Z",
            "2018-02-29T22:14:16+01:00",
            "2018-13-01T00:00:00Z",
            "2018-01-01T24:00:00Z",
            "2003-08-24T05:14:15.000003-60:00",
            "2018-01-01",
            "2018-01-01T00:00:0xZ",
            "2018-0a-01T00:00:00Z",
            "2018-01-01T00-00:00Z",
            "+018-01-01T00:00:00Z",
            "2018-01-01T00:00:00",
        ] {
            assert_eq!(parse_iso8601(s.as_bytes(), true, 0), None, "{s}");
        }
        assert_eq!(parse_iso8601(b"2018-01-01T00:00:00", true, 0), None);
        let (ns, _) = parse_iso8601(b"2018-01-01T00:00:00", false, 3600).unwrap();
        assert_eq!(Some(ns), parse_rfc3339("2018-01-01T00:00:00+01:00"));
    }

    #[test]
    fn bsd_variants() {
        let (c, y, len) = parse_bsd(b"Nov  3 12:00:00 host").unwrap();
        assert_eq!((c.month, c.day, c.hour, y, len), (11, 3, 12, None, 15));
        let (c, y, len) = parse_bsd(b"Mar 7 2008 19:06:53: example").unwrap();
        assert_eq!((c.day, y, len), (7, Some(2008), 20));
        assert!(parse_bsd(b"AUG 10 22:18:24").is_some());
        assert!(parse_bsd(b"Foo 10 22:18:24").is_none());
        assert!(parse_bsd(b"Aug 10 22:18:24x").is_none());
    }

    #[test]
    fn year_inference() {
        let civil = |month, day| Civil {
            year: 0,
            month,
            day,
            hour: 12,
            minute: 0,
            second: 0,
            nanos: 0,
        };
        let jan_2026 = parse_rfc3339("2026-01-02T00:00:00Z").unwrap();
        let dec = infer_year(civil(12, 31), jan_2026, 0).unwrap();
        assert_eq!(Some(dec), parse_rfc3339("2025-12-31T12:00:00Z"));
        let today = infer_year(civil(1, 2), jan_2026, 0).unwrap();
        assert_eq!(Some(today), parse_rfc3339("2026-01-02T12:00:00Z"));
        // A few days ahead stays in this year (clock skew), not last year.
        let dec_2025 = parse_rfc3339("2025-12-30T00:00:00Z").unwrap();
        let jan = infer_year(civil(1, 1), dec_2025, 0).unwrap();
        assert_eq!(Some(jan), parse_rfc3339("2026-01-01T12:00:00Z"));
        // Feb 29 only exists in leap years.
        let mar_2024 = parse_rfc3339("2024-03-01T00:00:00Z").unwrap();
        assert!(infer_year(civil(2, 29), mar_2024, 0).is_some());
        let mar_2026 = parse_rfc3339("2026-03-01T00:00:00Z").unwrap();
        assert_eq!(infer_year(civil(2, 29), mar_2026, 0), None);
    }

    #[test]
    fn epoch_numbers() {
        let want = parse_rfc3339("2024-05-26T11:42:52.6014807Z").unwrap();
        assert_eq!(epoch_number_to_ns("1716723772.6014807"), Some(want));
        let ms = parse_rfc3339("2024-05-26T11:42:52.601Z").unwrap();
        assert_eq!(epoch_number_to_ns("1716723772601"), Some(ms));
        assert_eq!(epoch_number_to_ns("1716723772601000"), Some(ms));
        assert_eq!(epoch_number_to_ns("1716723772601000000"), Some(ms));
        assert_eq!(
            epoch_number_to_ns("1.7167237726e9"),
            Some(1_716_723_772_600_000_000)
        );
        assert_eq!(epoch_number_to_ns("99999999999999999999999"), None);
    }
}
