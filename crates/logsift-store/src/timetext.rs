//! A record's timestamp as its line spells it, kept once.
//!
//! A block's header holds every record's timestamp exactly (ns), and most lines also spell it
//! out: RFC 5424's TIMESTAMP, RFC 3164's `Mmm dd hh:mm:ss`, a JSON `@timestamp`. Those
//! characters change from line to line, so zstd cannot share them: on the e2e corpus they were
//! a fifth of the compressed lines (zstd 9, blocks of 128 records with the segment's
//! dictionary). When a line spells its record's timestamp in a form that renders back byte
//! for byte from the timestamp and a small style code, the block keeps the line without those
//! characters, plus where they were and the style; reading the block renders them back.
//!
//! Exactness is checked, not assumed: a spelling is left out only if [`render`] gives the
//! very same bytes when the block is written, and [`render`] depends on nothing but the
//! timestamp and the style. Any other spelling (another instant, a leap second, a lower-case
//! `z`, `-00:00`, a zone in seconds) is kept whole in the line.
//!
//! The style code is part of the block format (layout version 3):
//!
//! | bits | meaning |
//! |---|---|
//! | 0–1 | 1: `YYYY-MM-DDThh:mm:ss[.f]zone`, 2: `Mmm dd hh:mm:ss` |
//! | 2 | ISO: a space instead of `T`; BSD: the day padded with `0` instead of a space |
//! | 3–6 | ISO: digits of the fraction (0–9) |
//! | 7–8 | ISO zone: 0 none, 1 `Z`, 2 `+hh:mm`, 3 `+hhmm` |
//! | 9– | the offset of the written time from UTC in minutes, zigzag |

use logsift_core::time::{civil_from_days, days_from_civil};

const NS: i64 = 1_000_000_000;
/// How far into a line a timestamp is looked for: past that the line is kept whole (logs put
/// their time near the start, and the search is paid for every record).
const SCAN_BYTES: usize = 512;
/// Offsets beyond this many minutes are not time zones.
const MAX_OFFSET_MIN: i64 = 18 * 60;

const KIND_ISO: u64 = 1;
const KIND_BSD: u64 = 2;
const ALT: u64 = 1 << 2;
const FRAC_SHIFT: u32 = 3;
const ZONE_SHIFT: u32 = 7;
const OFFSET_SHIFT: u32 = 9;
const ZONE_NONE: u64 = 0;
const ZONE_Z: u64 = 1;
const ZONE_COLON: u64 = 2;
const ZONE_PLAIN: u64 = 3;

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Where a line spells its record's timestamp: `len` bytes at `at`, rendered by `style`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spelled {
    pub at: usize,
    pub len: usize,
    pub style: u64,
}

/// Finds where `line` spells `ts` (ns since the epoch) in a form [`render`] gives back exactly:
/// right after a syslog PRI (and RFC 5424's version), else the first ISO 8601 date-time in
/// the line that is `ts`. The spelling is never next to a letter or digit, so that a word
/// search can skip the rest of the line without it (see [`word_may_be_in_spelling`]).
pub fn find(line: &[u8], ts: i64) -> Option<Spelled> {
    find_any(line, ts).filter(|s| {
        let alnum = |i: Option<usize>| {
            i.and_then(|i| line.get(i))
                .is_some_and(u8::is_ascii_alphanumeric)
        };
        !alnum(s.at.checked_sub(1)) && !alnum(Some(s.at + s.len))
    })
}

/// Whether `word` (ASCII, lower case, letters and digits) could occur in a line only where
/// that line spelled its timestamp: a search for words that cannot may look at the lines
/// as blocks store them. A spelling is bounded by other characters ([`find`]), so a word
/// found in it lies wholly inside one of its runs of letters and digits: digits with a `t`
/// or `z`, or a month's name.
pub fn word_may_be_in_spelling(word: &[u8]) -> bool {
    word.iter()
        .all(|c| c.is_ascii_digit() || *c == b't' || *c == b'z')
        || MONTHS.iter().any(|m| {
            let m = m.to_ascii_lowercase();
            m.windows(word.len()).any(|w| w == word)
        })
}

fn find_any(line: &[u8], ts: i64) -> Option<Spelled> {
    let head = &line[..line.len().min(SCAN_BYTES)];
    let mut start = 0;
    if head.first() == Some(&b'<') {
        if let Some(close) = head.iter().take(6).position(|&c| c == b'>') {
            start = close + 1;
            if head[start..].starts_with(b"1 ") {
                start += 2;
            }
        }
    }
    if let Some(s) = iso(head, start, ts).or_else(|| bsd(head, start, ts)) {
        return Some(s);
    }
    let mut from = start;
    while let Some(p) = memchr::memchr(b'-', &head[from..]) {
        let dash = from + p;
        if dash >= 4 {
            if let Some(s) = iso(head, dash - 4, ts) {
                return Some(s);
            }
        }
        from = dash + 1;
    }
    None
}

/// How many bytes `style` renders to (`None`: not a style).
pub fn rendered_len(style: u64) -> Option<usize> {
    match style & 3 {
        KIND_ISO => {
            let frac = ((style >> FRAC_SHIFT) & 0xf) as usize;
            if frac > 9 {
                return None;
            }
            let zone = match (style >> ZONE_SHIFT) & 3 {
                ZONE_NONE => 0,
                ZONE_Z => 1,
                ZONE_COLON => 6,
                _ => 5,
            };
            Some(19 + if frac > 0 { 1 + frac } else { 0 } + zone)
        }
        KIND_BSD => Some(15),
        _ => None,
    }
}

/// Appends `ts` spelled in `style` to `out`; `None` (and nothing appended) for a style this
/// build does not know or a time it cannot spell in it.
pub fn render(ts: i64, style: u64, out: &mut Vec<u8>) -> Option<()> {
    out.extend_from_slice(spell(ts, style)?.as_bytes());
    Some(())
}

/// `ts` spelled in `style` (see [`render`]).
pub fn spell(ts: i64, style: u64) -> Option<Spelling> {
    let mut w = Spelling {
        buf: [0; 40],
        len: 0,
    };
    render_into(ts, style, &mut w)?;
    Some(w)
}

/// A spelled timestamp, on the stack: searches spell out one per record they keep.
pub struct Spelling {
    buf: [u8; 40],
    len: usize,
}

impl Spelling {
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    #[inline]
    fn put(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    #[inline]
    fn two(&mut self, v: i64) {
        self.put(b'0' + (v / 10) as u8);
        self.put(b'0' + (v % 10) as u8);
    }
}

fn render_into(ts: i64, style: u64, w: &mut Spelling) -> Option<()> {
    let off_min = unzigzag(style >> OFFSET_SHIFT);
    if off_min.abs() > MAX_OFFSET_MIN {
        return None;
    }
    let local = ts.checked_add(off_min * 60 * NS)?;
    let secs = local.div_euclid(NS);
    let nanos = local.rem_euclid(NS);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let (h, mi, s) = (sod / 3600, sod / 60 % 60, sod % 60);
    match style & 3 {
        KIND_ISO => {
            if !(0..=9999).contains(&y) {
                return None;
            }
            let frac = ((style >> FRAC_SHIFT) & 0xf) as u32;
            if frac > 9 {
                return None;
            }
            w.two(y / 100);
            w.two(y % 100);
            w.put(b'-');
            w.two(i64::from(m));
            w.put(b'-');
            w.two(i64::from(d));
            w.put(if style & ALT != 0 { b' ' } else { b'T' });
            w.two(h);
            w.put(b':');
            w.two(mi);
            w.put(b':');
            w.two(s);
            if frac > 0 {
                w.put(b'.');
                let mut digits = nanos / 10i64.pow(9 - frac);
                let end = w.len + frac as usize;
                w.len = end;
                for slot in w.buf[end - frac as usize..end].iter_mut().rev() {
                    *slot = b'0' + (digits % 10) as u8;
                    digits /= 10;
                }
            }
            let zone = (style >> ZONE_SHIFT) & 3;
            match zone {
                ZONE_NONE => {}
                ZONE_Z => {
                    if off_min != 0 {
                        return None;
                    }
                    w.put(b'Z');
                }
                _ => {
                    w.put(if off_min < 0 { b'-' } else { b'+' });
                    w.two(off_min.abs() / 60);
                    if zone == ZONE_COLON {
                        w.put(b':');
                    }
                    w.two(off_min.abs() % 60);
                }
            }
        }
        KIND_BSD => {
            for b in MONTHS[(m - 1) as usize] {
                w.put(*b);
            }
            w.put(b' ');
            if d < 10 {
                w.put(if style & ALT != 0 { b'0' } else { b' ' });
                w.put(b'0' + d as u8);
            } else {
                w.two(i64::from(d));
            }
            w.put(b' ');
            w.two(h);
            w.put(b':');
            w.two(mi);
            w.put(b':');
            w.two(s);
        }
        _ => return None,
    }
    Some(())
}

/// Whether `style` renders `ts` as exactly `text`.
fn renders_as(ts: i64, style: u64, text: &[u8]) -> bool {
    spell(ts, style).is_some_and(|w| w.as_bytes() == text)
}

fn digits(b: &[u8]) -> Option<i64> {
    let mut v = 0i64;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(v)
}

/// `YYYY-MM-DD[T ]hh:mm:ss[.f][zone]` at `i` of `head`, if it is `ts`.
fn iso(head: &[u8], i: usize, ts: i64) -> Option<Spelled> {
    let b = head.get(i..)?;
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (h, mi, s) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let mut style = KIND_ISO | if b[10] == b' ' { ALT } else { 0 };
    let mut n = 19;
    if b.get(n) == Some(&b'.') {
        let frac = b[n + 1..]
            .iter()
            .take(10)
            .take_while(|c| c.is_ascii_digit())
            .count();
        if (1..=9).contains(&frac) {
            style |= (frac as u64) << FRAC_SHIFT;
            n += 1 + frac;
        }
    }
    let (zone, off_min) = match b.get(n) {
        Some(b'Z') => {
            n += 1;
            (ZONE_Z, 0)
        }
        Some(&sign @ (b'+' | b'-')) => {
            let z = b.get(n + 1..)?;
            let (zone, len, mm) = if z.get(2) == Some(&b':') {
                (ZONE_COLON, 6, z.get(3..5)?)
            } else {
                (ZONE_PLAIN, 5, z.get(2..4)?)
            };
            let minutes = digits(z.get(0..2)?)? * 60 + digits(mm)?;
            n += len;
            (zone, if sign == b'-' { -minutes } else { minutes })
        }
        _ => {
            // No zone: the parser read it in a configured one; whichever it was, the
            // difference from the timestamp says it.
            let local = (days_from_civil(y, mo as u32, d as u32) * 86_400) + h * 3600 + mi * 60 + s;
            let diff = local - ts.div_euclid(NS);
            if diff % 60 != 0 {
                return None;
            }
            (ZONE_NONE, diff / 60)
        }
    };
    if off_min.abs() > MAX_OFFSET_MIN {
        return None;
    }
    style |= zone << ZONE_SHIFT | zigzag(off_min) << OFFSET_SHIFT;
    renders_as(ts, style, &b[..n]).then_some(Spelled {
        at: i,
        len: n,
        style,
    })
}

/// `Mmm dd hh:mm:ss` at `i` of `head`, if it is `ts` in some zone.
fn bsd(head: &[u8], i: usize, ts: i64) -> Option<Spelled> {
    let b = head.get(i..i + 15)?;
    if b[3] != b' ' || b[6] != b' ' || b[9] != b':' || b[12] != b':' {
        return None;
    }
    MONTHS.iter().position(|m| &b[0..3] == *m)?;
    let (h, mi, s) = (digits(&b[7..9])?, digits(&b[10..12])?, digits(&b[13..15])?);
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let pad = if b[4] == b'0' { ALT } else { 0 };
    // The zone the parser read it in is its time of day less the timestamp's, give or take
    // a day.
    let diff = (h * 3600 + mi * 60 + s) - ts.div_euclid(NS).rem_euclid(86_400);
    [diff, diff - 86_400, diff + 86_400]
        .into_iter()
        .filter(|o| o % 60 == 0 && (o / 60).abs() <= MAX_OFFSET_MIN)
        .map(|o| KIND_BSD | pad | zigzag(o / 60) << OFFSET_SHIFT)
        .find(|&style| renders_as(ts, style, b))
        .map(|style| Spelled {
            at: i,
            len: 15,
            style,
        })
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    /// Leaves out what `find` finds and renders it back.
    fn round_trip(line: &str, ts: i64) -> Option<Spelled> {
        let s = find(line.as_bytes(), ts)?;
        let mut out = line.as_bytes()[..s.at].to_vec();
        render(ts, s.style, &mut out).unwrap();
        assert_eq!(out.len() - s.at, rendered_len(s.style).unwrap());
        out.extend_from_slice(&line.as_bytes()[s.at + s.len..]);
        assert_eq!(String::from_utf8(out).unwrap(), line);
        Some(s)
    }

    #[test]
    fn spellings_render_back_exactly() {
        let t = ns("2026-12-03T00:00:00.000627Z");
        let s = round_trip(
            "<190>1 2026-12-03T00:00:00.000627Z web-02 nginx - - - hi",
            t,
        );
        assert_eq!(s.map(|s| (s.at, s.len)), Some((7, 27)));
        let t = ns("2026-03-01T10:00:00+02:00");
        assert!(round_trip("<34>1 2026-03-01T10:00:00+02:00 h a - - - x", t).is_some());
        let t = ns("2026-03-01T11:30:00.5Z");
        assert!(round_trip("<34>1 2026-03-01T10:00:00.5-0130 h a - - - x", t).is_some());
        // RFC 3164 in a zone the parser was configured with (+01:00 here).
        let t = ns("2026-03-01T09:05:07Z");
        let s = round_trip("<38>Mar  1 10:05:07 srv-09 sshd[22731]: ok", t).unwrap();
        assert_eq!((s.at, s.len), (4, 15));
        assert!(round_trip("Mar 01 10:05:07 srv-09 sshd: ok", t).is_some());
        // Across midnight in the zone.
        let t = ns("2026-02-28T23:30:00Z");
        assert!(round_trip("<38>Mar  1 00:30:00 h a: x", t).is_some());
        // JSON, anywhere in the line, after a date that is not the timestamp.
        let t = ns("2026-12-03T00:00:00.161Z");
        let line = r#"{"since":"2025-01-01","@timestamp":"2026-12-03T00:00:00.161Z","x":1}"#;
        assert_eq!(round_trip(line, t).map(|s| s.at), Some(36));
        // ISO without a zone, a space for `T`.
        let t = ns("2026-12-03T05:00:00.25Z");
        assert!(round_trip("2026-12-03 06:00:00.25 app started", t).is_some());
    }

    #[test]
    fn other_spellings_stay_in_the_line() {
        let t = ns("2026-12-03T00:00:00Z");
        for line in [
            "<34>1 2026-12-03T00:00:00Zh a - - - a letter right after",
            r#"{"t":"x2026-12-03T00:00:00Z"}"#,
            "<34>1 2026-12-03T00:00:01Z h a - - - another second",
            "<34>1 2026-12-03t00:00:00z h a - - - lower case",
            "<34>1 2026-12-03T00:00:00-00:00 h a - - - unknown offset",
            "<34>1 2026-12-03T00:00:60Z h a - - - leap second",
            "<34>1 - h a - - - no time",
            "plain text without a time",
            "<34>Dec  3 00:00:01 h a: another second",
        ] {
            assert_eq!(find(line.as_bytes(), t), None, "{line}");
        }
        // Digits the timestamp does not have.
        assert_eq!(find(b"<34>1 2026-12-03T00:00:00.100Z h", t + 1), None);
    }

    #[test]
    fn words_that_may_be_in_a_spelling() {
        for w in [
            "2026", "03t00", "000627z", "t", "z", "dec", "ec", "a", "jun",
        ] {
            assert!(word_may_be_in_spelling(w.as_bytes()), "{w}");
        }
        for w in ["upstream", "timed", "decimal", "x2026", "web", "zt9q"] {
            assert!(!word_may_be_in_spelling(w.as_bytes()), "{w}");
        }
    }

    #[test]
    fn styles_this_build_does_not_know_render_nothing() {
        let mut out = Vec::new();
        assert_eq!(render(0, 0, &mut out), None);
        assert_eq!(render(0, 3, &mut out), None);
        assert_eq!(render(0, KIND_ISO | 12 << FRAC_SHIFT, &mut out), None);
        assert_eq!(
            render(0, KIND_ISO | zigzag(5000) << OFFSET_SHIFT, &mut out),
            None
        );
        assert_eq!(
            render(i64::MAX, KIND_ISO | zigzag(60) << OFFSET_SHIFT, &mut out),
            None
        );
        assert!(out.is_empty());
        assert_eq!(rendered_len(0), None);
    }
}
