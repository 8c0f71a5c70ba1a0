//! Splitting a message into tokens and masking the variable parts as slots (`<*>`).
//!
//! The rules are about the *shape* of a token, never about a particular system: a log line from a
//! program nobody has seen before is masked by the same rules. A token is a run of non-whitespace
//! bytes. Whole-token shapes are tried first (URL, e-mail, path, IPv6, `host:port`, a single
//! quoted value); otherwise a `key=value` token keeps its key, and the rest is cut at punctuation
//! into segments, each of which becomes a slot when it holds a digit or looks like a long hex id.
//! Digits are the strongest generic signal: numbers, sizes and durations with units, IPv4,
//! dates and times, `blk_-123`, `node-246`, `0x1f` all carry one.
//!
//! The masked form of every token is written into one reusable buffer, so masking a message does
//! not allocate once the buffers have grown.

/// What a masked token consists of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// No slot: the token is constant text.
    Const,
    /// The whole token is one slot.
    Slot,
    /// Constant text around one or more slots, such as `uid=<*>` or `(<*>)`.
    Mixed,
}

/// One token of a masked message: a range of [`Masked::text`] and a hash of that range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub start: u32,
    pub end: u32,
    pub hash: u64,
    pub kind: TokenKind,
    /// A constant that is a plain word ([`is_plain_word`]).
    pub plain: bool,
    /// Part of the message's skeleton ([`is_anchor`]).
    pub anchor: bool,
}

/// The text of a slot in masked output and templates.
pub const SLOT: &str = "<*>";

/// A masked message: tokens separated by single spaces in `text`. Reused across messages.
#[derive(Debug, Default, Clone)]
pub struct Masked {
    text: String,
    tokens: Vec<Token>,
}

impl Masked {
    pub fn new() -> Self {
        Self::default()
    }

    /// The masked message, tokens joined by single spaces.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// The masked text of token `i`.
    pub fn token_text(&self, i: usize) -> &str {
        let t = &self.tokens[i];
        &self.text[t.start as usize..t.end as usize]
    }

    /// Masks `message`, replacing what this buffer held. At most `max_tokens` tokens are kept:
    /// everything after the last one is folded into a final slot, which bounds the work and
    /// the size of a template whatever the message.
    pub fn mask(&mut self, message: &str, max_tokens: usize) {
        self.mask_upto(message, max_tokens, true);
    }

    /// Masks only the first `n` tokens of `message` (exactly as [`Masked::mask`] masks them,
    /// nothing folded): what a message's bucket is found from.
    pub fn mask_first(&mut self, message: &str, n: usize) {
        self.mask_upto(message, n, false);
    }

    fn mask_upto(&mut self, message: &str, max_tokens: usize, fold: bool) {
        self.text.clear();
        self.tokens.clear();
        let max_tokens = max_tokens.max(1);
        // Token offsets into the masked text are u32, and masking can triple a message (`1` is
        // `<*>`): anything past 1 GiB, far beyond any line limit, is ignored.
        let mut cut = message.len().min(1 << 30);
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut words = message[..cut].split_ascii_whitespace();
        while let Some(word) = words.next() {
            if !fold && self.tokens.len() == max_tokens {
                break;
            }
            let start = self.text.len();
            if !self.tokens.is_empty() {
                self.text.push(' ');
            }
            let start_tok = if self.tokens.is_empty() {
                start
            } else {
                start + 1
            };
            let mut kind =
                if fold && self.tokens.len() + 1 == max_tokens && words.clone().next().is_some() {
                    // The rest of the message is folded into this last token.
                    self.text.push_str(SLOT);
                    for _ in words.by_ref() {}
                    TokenKind::Slot
                } else {
                    mask_word(word, &mut self.text, 0)
                };
            // `5.2 KB` and `93 B` are one quantity written in two tokens: the unit goes with
            // the number, or sizes in different units would split one event.
            if kind == TokenKind::Const
                && self
                    .tokens
                    .last()
                    .is_some_and(|t| t.kind != TokenKind::Const)
                && is_unit_word(word)
            {
                let trail = word.bytes().rev().take_while(|&c| is(c, TRAIL)).count();
                self.text.truncate(start_tok);
                self.text.push_str(SLOT);
                self.text.push_str(&word[word.len() - trail..]);
                kind = if trail == 0 {
                    TokenKind::Slot
                } else {
                    TokenKind::Mixed
                };
            }
            let end = self.text.len();
            let text = &self.text[start_tok..end];
            self.tokens.push(Token {
                start: start_tok as u32,
                end: end as u32,
                hash: hash_bytes(text.as_bytes()),
                kind,
                plain: kind == TokenKind::Const && is_plain_word(text),
                anchor: kind == TokenKind::Const || text.bytes().any(|c| c.is_ascii_alphabetic()),
            });
        }
    }
}

/// A 64-bit hash of a token, eight bytes per step (the byte-at-a-time FNV it replaced was a
/// fifth of masking). Part of the state format (template tokens are stored with their hash),
/// so it must never change without a format version bump; std's hasher promises no stability.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = 0x243f_6a88_85a3_08d3 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    // murmur3's finaliser: every input bit reaches every output bit.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The hash of a slot token, i.e. of `<*>`.
pub fn slot_hash() -> u64 {
    hash_bytes(SLOT.as_bytes())
}

/// Tokens that carry constant meaning: constants, and slots with letters around them
/// (`uid=<*>`), but not bare slots nor slots in mere punctuation (`(<*>`). The sequence of
/// anchors is a message's skeleton; messages with the same skeleton differ only in how many
/// values they list.
pub fn is_anchor(text: &str) -> bool {
    !text.contains(SLOT) || text.bytes().any(|c| c.is_ascii_alphabetic())
}

/// A token that is a unit once its trailing punctuation is set aside (`KB`, `ms,`): masked
/// as a slot after a value ([`Masked::mask`]), the one rule that looks at a neighbour.
pub(crate) fn is_unit_word(word: &str) -> bool {
    let trail = word.bytes().rev().take_while(|&c| is(c, TRAIL)).count();
    is_unit(&word[..word.len() - trail])
}

/// The masked form of one whitespace-free token on its own, appended to `out`: what
/// [`Masked::mask`] makes of it unless it is a unit after a value ([`is_unit_word`]).
pub(crate) fn mask_token(word: &str, out: &mut String) -> TokenKind {
    mask_word(word, out, 0)
}

/// Units of size and time written apart from their number.
fn is_unit(s: &str) -> bool {
    const UNITS: &[&str] = &[
        "B", "KB", "MB", "GB", "TB", "PB", "KiB", "MiB", "GiB", "TiB", "kB", "bytes", "ns", "us",
        "µs", "ms", "s", "sec", "secs", "second", "seconds", "min", "mins", "minute", "minutes",
        "h", "hour", "hours", "day", "days",
    ];
    UNITS.contains(&s)
}

/// Letters only (and at most one trailing digit: `eth0`, `SOCKS5`) once surrounding brackets,
/// quotes and punctuation are set aside, or a `key=` followed by such a word: the kind of
/// token whose change means another event (`Paused`/`Resumed`, `user=root`/`user=guest`),
/// unlike compound names (`a.b.c`, `x_y`) that are more often identifiers.
pub fn is_plain_word(text: &str) -> bool {
    let b = text.as_bytes();
    let b = match b.iter().rposition(|&c| c == b'=') {
        Some(eq) if eq > 0 => &b[eq + 1..],
        _ => b,
    };
    let lead = b.iter().take_while(|&&c| is(c, LEAD)).count();
    let trail = b[lead..]
        .iter()
        .rev()
        .take_while(|&&c| is(c, TRAIL))
        .count();
    let core = &b[lead..b.len() - trail];
    let letters = match core.last() {
        Some(c) if c.is_ascii_digit() => &core[..core.len() - 1],
        _ => core,
    };
    letters.len() >= 2 && letters.iter().all(u8::is_ascii_alphabetic)
        || !core.is_empty() && core.iter().all(u8::is_ascii_alphabetic)
}

// Byte classes, looked up in one table: a linear `contains` per byte cost more than
// everything else in masking put together.
const LEAD: u8 = 1;
const TRAIL: u8 = 2;
const DELIM: u8 = 4;
const AFTER_QUOTE: u8 = 8;
const DIGIT: u8 = 16;
/// Bytes that make a word need more than the plain-word path: digits and the punctuation of
/// paths, URLs, addresses, e-mails and `key=value`.
const SPECIAL: u8 = 32;

const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let mut f = 0;
        if matches!(c, b'(' | b'[' | b'{' | b'<' | b'"' | b'\'' | b'`') {
            f |= LEAD;
        }
        if matches!(
            c,
            b')' | b']'
                | b'}'
                | b'>'
                | b'"'
                | b'\''
                | b'`'
                | b','
                | b';'
                | b':'
                | b'.'
                | b'!'
                | b'?'
        ) {
            f |= TRAIL;
        }
        if matches!(
            c,
            b':' | b','
                | b';'
                | b'('
                | b')'
                | b'['
                | b']'
                | b'{'
                | b'}'
                | b'"'
                | b'\''
                | b'<'
                | b'>'
                | b'|'
                | b'#'
                | b'='
                | b'/'
        ) {
            f |= DELIM;
        }
        if matches!(c, b',' | b';' | b':' | b'.' | b')' | b']' | b'}') {
            f |= AFTER_QUOTE;
        }
        if c.is_ascii_digit() {
            f |= DIGIT | SPECIAL;
        }
        if matches!(c, b':' | b'/' | b'\\' | b'@' | b'=' | b'.') {
            f |= SPECIAL;
        }
        t[i] = f;
        i += 1;
    }
    t
};

fn is(c: u8, class: u8) -> bool {
    CLASS[c as usize] & class != 0
}

/// `key=value` nests (`a=b=c`) at most this deep: recursion on untrusted input is bounded.
const MAX_KEY_DEPTH: u8 = 4;

/// Appends the masked form of one whitespace-free word to `out`; `depth` counts the keys
/// already split off.
fn mask_word(word: &str, out: &mut String, depth: u8) -> TokenKind {
    let bytes = word.as_bytes();
    // A single quoted value ('Active', "eth0",) is a value whatever it contains.
    let punct = bytes
        .iter()
        .rev()
        .take_while(|&&c| is(c, AFTER_QUOTE))
        .count();
    let quoted = &bytes[..bytes.len() - punct];
    if quoted.len() >= 3 {
        let (first, last) = (quoted[0], quoted[quoted.len() - 1]);
        if (first == b'\'' || first == b'"' || first == b'`') && last == first {
            out.push(first as char);
            out.push_str(SLOT);
            out.push(last as char);
            out.push_str(&word[quoted.len()..]);
            return TokenKind::Mixed;
        }
    }
    // key=value keeps the key: `uid=0` and `uid=1000` share `uid=<*>`, while the key itself
    // stays a constant that tells events apart. Split before brackets and punctuation are set
    // aside, so that a quoted value (`tag="x",`) is seen whole.
    if depth < MAX_KEY_DEPTH {
        if let Some(eq) = word.find('=') {
            if eq > 0 && !word[..eq].bytes().any(|c| is(c, SPECIAL)) {
                out.push_str(&word[..=eq]);
                let value = &word[eq + 1..];
                if value.is_empty() {
                    return TokenKind::Const;
                }
                return match mask_word(value, out, depth + 1) {
                    TokenKind::Const => TokenKind::Const,
                    _ => TokenKind::Mixed,
                };
            }
        }
    }
    let lead = bytes.iter().take_while(|&&c| is(c, LEAD)).count();
    let trail = bytes[lead..]
        .iter()
        .rev()
        .take_while(|&&c| is(c, TRAIL))
        .count();
    let core = &word[lead..word.len() - trail];
    if core.is_empty() {
        out.push_str(word);
        return TokenKind::Const;
    }
    out.push_str(&word[..lead]);
    let mut kind = mask_core(core, out, depth);
    out.push_str(&word[word.len() - trail..]);
    if kind == TokenKind::Slot && (lead > 0 || trail > 0) {
        kind = TokenKind::Mixed;
    }
    kind
}

/// Masks a word stripped of surrounding brackets and punctuation.
fn mask_core(core: &str, out: &mut String, depth: u8) -> TokenKind {
    let (mut special, mut delim) = (false, false);
    for &c in core.as_bytes() {
        special |= is(c, SPECIAL);
        delim |= is(c, DELIM);
    }
    if !special {
        // Most tokens are words: only a month or weekday name can make one a value.
        if is_date_word(core) {
            out.push_str(SLOT);
            return TokenKind::Slot;
        }
        if !delim {
            if is_value_segment(core.as_bytes()) {
                out.push_str(SLOT);
                return TokenKind::Slot;
            }
            out.push_str(core);
            return TokenKind::Const;
        }
        return mask_segments(core, out);
    }
    if is_whole_value(core) {
        out.push_str(SLOT);
        return TokenKind::Slot;
    }
    // `key:/a/path` is a key and a path.
    if let Some(colon) = core.find(":/") {
        let (key, value) = (&core[..colon], &core[colon + 1..]);
        if !key.is_empty() && !key.contains('/') && is_path(value.as_bytes()) {
            out.push_str(&core[..=colon]);
            out.push_str(SLOT);
            return TokenKind::Mixed;
        }
    }
    // A key with dots or colons in it (`a.b=3`), which `mask_word` leaves whole.
    if let Some(eq) = core.find('=').filter(|_| depth < MAX_KEY_DEPTH) {
        if eq > 0 && !core[..eq].bytes().any(|b| b.is_ascii_digit()) {
            out.push_str(&core[..=eq]);
            let value = &core[eq + 1..];
            if value.is_empty() {
                return TokenKind::Const;
            }
            let k = mask_word(value, out, depth + 1);
            return if k == TokenKind::Const {
                TokenKind::Const
            } else {
                TokenKind::Mixed
            };
        }
    }
    mask_segments(core, out)
}

/// Whole-token shapes that are values however they are punctuated inside.
fn is_whole_value(s: &str) -> bool {
    let b = s.as_bytes();
    if s.contains("://") {
        return true; // URL
    }
    is_path(b) || is_email(b) || is_ipv6(s) || is_host_port(s) || is_domain(s) || is_date_word(s)
}

/// Names of months and weekdays, English, as log timestamps spell them.
fn is_date_word(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "jan",
        "feb",
        "mar",
        "apr",
        "may",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "january",
        "february",
        "march",
        "april",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "mon",
        "tue",
        "tues",
        "wed",
        "thu",
        "thur",
        "thurs",
        "fri",
        "sat",
        "sun",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    s.len() <= 9
        && s.as_bytes().first().is_some_and(u8::is_ascii_uppercase)
        && WORDS.iter().any(|w| w.eq_ignore_ascii_case(s))
}

/// A DNS name: dotted labels ending in a top-level domain. Generic ones (`.com`) need one
/// dot; two-letter country codes need two, since `name.cc` or `name.py` is more often a file.
/// Java-style `org.example.Class` names end in a capitalised label and are not taken.
fn is_domain(s: &str) -> bool {
    const GENERIC: &[&str] = &[
        "com", "net", "org", "edu", "gov", "mil", "int", "info", "biz", "io", "local", "lan",
        "internal", "arpa",
    ];
    let Some((rest, tld)) = s.rsplit_once('.') else {
        return false;
    };
    if rest.is_empty()
        || !s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'_')
        || s.contains("..")
    {
        return false;
    }
    if GENERIC.contains(&tld) {
        return true;
    }
    tld.len() == 2 && tld.bytes().all(|c| c.is_ascii_lowercase()) && rest.contains('.')
}

fn is_path(b: &[u8]) -> bool {
    if b.len() >= 2
        && b[0] == b'/'
        && b[1] != b'/'
        && b.iter().skip(1).any(|c| c.is_ascii_alphanumeric())
    {
        return true;
    }
    if b.starts_with(b"./") || b.starts_with(b"../") || b.starts_with(b"~/") {
        return b.len() > 3;
    }
    // C:\dir or \\server\share
    if b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && (b[2] == b'\\' || b[2] == b'/')
    {
        return true;
    }
    b.starts_with(b"\\\\") && b.len() > 2
}

fn is_email(b: &[u8]) -> bool {
    let Some(at) = b.iter().position(|&c| c == b'@') else {
        return false;
    };
    at > 0
        && b[at + 1..].contains(&b'.')
        && b[..at]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._%+-".contains(c))
        && b[at + 1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b".-".contains(c))
        && b.last().is_some_and(|c| c.is_ascii_alphabetic())
}

/// IPv6 with optional brackets and port: hex groups and at least two colons, with `::` or
/// enough groups that it cannot be a time of day or a `key:value`.
fn is_ipv6(s: &str) -> bool {
    let s = s.strip_prefix('[').unwrap_or(s);
    let addr = match s.find(']') {
        Some(i) => &s[..i],
        None => s,
    };
    let colons = addr.bytes().filter(|&c| c == b':').count();
    if colons < 2 || addr.len() < 3 {
        return false;
    }
    let all_hex = addr
        .bytes()
        .all(|c| c.is_ascii_hexdigit() || c == b':' || c == b'.');
    all_hex && (addr.contains("::") || colons >= 5)
}

/// `name:port` where the name is dotted (a host name or IPv4) and the port is a number.
fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|c| c.is_ascii_digit())
        && host.len() >= 3
        && host.contains('.')
        && !host.starts_with('.')
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'_')
}

/// Cuts `core` at punctuation and masks each segment that looks like a value. A core made
/// only of values and punctuation (a time `02:38:22`, a list `10.0.0.1,10.0.0.2`) is one slot:
/// how many parts such a value has is itself variable.
fn mask_segments(core: &str, out: &mut String) -> TokenKind {
    let b = core.as_bytes();
    let rollback = out.len();
    let mut slots = 0usize;
    let mut consts = 0usize;
    let mut seg_start = 0usize;
    for i in 0..=b.len() {
        if i < b.len() && !is(b[i], DELIM) {
            continue;
        }
        let seg = &core[seg_start..i];
        if !seg.is_empty() {
            if is_value_segment(seg.as_bytes()) {
                out.push_str(SLOT);
                slots += 1;
            } else {
                out.push_str(seg);
                consts += 1;
            }
        }
        if i < b.len() {
            out.push(b[i] as char);
        }
        seg_start = i + 1;
    }
    if slots == 0 {
        TokenKind::Const
    } else if consts == 0 {
        out.truncate(rollback);
        out.push_str(SLOT);
        TokenKind::Slot
    } else {
        TokenKind::Mixed
    }
}

/// A segment (no delimiters inside) that is a value: it holds a digit (numbers, sizes,
/// durations, IPv4, dates, `blk_-123`, `0x1f`), or it is a long run of hex digits (ids that
/// happen to have no decimal digit).
fn is_value_segment(s: &[u8]) -> bool {
    if s.iter().any(u8::is_ascii_digit) {
        // Letters with one trailing digit name a thing (`eth0`, `SOCKS5`, `IPV4`) rather
        // than count it.
        let letters = s.len() - 1;
        return !(letters >= 2
            && s[letters].is_ascii_digit()
            && s[..letters].iter().all(u8::is_ascii_alphabetic));
    }
    let hex = s
        .iter()
        .filter(|c| c.is_ascii_hexdigit() || **c == b'-')
        .count();
    s.len() >= 8 && hex == s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(msg: &str) -> String {
        let mut m = Masked::new();
        m.mask(msg, 64);
        m.text().to_string()
    }

    #[test]
    fn numbers_and_units() {
        assert_eq!(masked("took 12ms for 4KB"), "took <*> for <*>");
        assert_eq!(
            masked("size 5.2 KB, free 93 B"),
            "size <*> <*>, free <*> <*>"
        );
        assert_eq!(masked("B is up via eth0 SOCKS5"), "B is up via eth0 SOCKS5");
        assert_eq!(
            masked("offset -42 ratio 0.75 flags 0x1f"),
            "offset <*> ratio <*> flags <*>"
        );
    }

    #[test]
    fn addresses() {
        assert_eq!(masked("from 10.0.0.1 closed"), "from <*> closed");
        assert_eq!(masked("from 10.0.0.1:8080 closed"), "from <*> closed");
        assert_eq!(masked("peer fe80::1ff:fe23:4567:890a up"), "peer <*> up");
        assert_eq!(masked("peer [2001:db8::1]:443 up"), "peer [<*> up");
        assert_eq!(masked("to proxy.example.com:5070 ok"), "to <*> ok");
        assert_eq!(masked("mail bob.smith@example.org now"), "mail <*> now");
        assert_eq!(masked("rhost=host.example.com user"), "rhost=<*> user");
        assert_eq!(
            masked("at www.cs.edu.pl in org.apache.Foo a.py"),
            "at <*> in org.apache.Foo a.py"
        );
        assert_eq!(masked("from 10.0.0.1,10.0.0.2 ok"), "from <*> ok");
        assert_eq!(masked("get https://a.b/c?d=1 done"), "get <*> done");
    }

    #[test]
    fn ids_paths_and_quotes() {
        assert_eq!(
            masked("[instance: 70c1714b-c11b-4c88-b300-239afe1f5ff8] claimed"),
            "[instance: <*>] claimed"
        );
        assert_eq!(
            masked("block blk_-1608999687919862906 gone"),
            "block <*> gone"
        );
        assert_eq!(masked("on node-246 job_2015"), "on <*> <*>");
        assert_eq!(masked("hash deadbeefcafe"), "hash <*>");
        assert_eq!(
            masked("open /var/lib/x.db and C:\\Temp\\a.txt"),
            "open <*> and <*>"
        );
        assert_eq!(masked("source path:/var/log/x, ok"), "source path:<*>, ok");
        assert_eq!(masked("state 'Active' now"), "state '<*>' now");
        assert_eq!(masked("tag=\"View\", x"), "tag=\"<*>\", x");
        assert_eq!(
            masked("uid=0 euid=1000 tty=pts ruser="),
            "uid=<*> euid=<*> tty=pts ruser="
        );
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(masked("at 2005-06-03 15:42:50.675 ok"), "at <*> <*> ok");
        assert_eq!(
            masked("at Sun Jul 24 02:38:22 2005"),
            "at <*> <*> <*> <*> <*>"
        );
        assert_eq!(masked("Sunday is a day, may be"), "<*> is a day, may be");
    }

    #[test]
    fn kinds_and_hashes() {
        let mut m = Masked::new();
        m.mask("a uid=3 7 (x)", 64);
        let kinds: Vec<_> = m.tokens().iter().map(|t| t.kind).collect();
        assert_eq!(
            kinds,
            [
                TokenKind::Const,
                TokenKind::Mixed,
                TokenKind::Slot,
                TokenKind::Const
            ]
        );
        assert_eq!(m.tokens()[2].hash, slot_hash());
        assert_eq!(m.token_text(1), "uid=<*>");
    }

    #[test]
    fn token_cap_folds_the_tail() {
        let mut m = Masked::new();
        m.mask("a b c d e f", 3);
        assert_eq!(m.text(), "a b <*>");
        assert_eq!(m.tokens().len(), 3);
    }

    /// Random text of words, digits, punctuation and non-ASCII: masking never panics, and its
    /// output keeps its invariants.
    #[test]
    fn random_messages_keep_the_invariants() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        const PIECES: &[&str] = &[
            "a", "Zq", "7", "0x1f", " ", "  ", "\t", ".", ":", "=", "\"", "'", "(", ")", "[", "]",
            "/", "\\", "@", ",", "-", "_", "é", "名", "<*>", "://", "Jan", "KB", "::", "#",
        ];
        let mut m = Masked::new();
        for _ in 0..20_000 {
            let n = (next() % 24) as usize;
            let msg: String = (0..n)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect();
            let max_tokens = 1 + (next() % 8) as usize;
            m.mask(&msg, max_tokens);
            assert!(m.tokens().len() <= max_tokens, "{msg:?}");
            let joined: Vec<&str> = (0..m.tokens().len()).map(|i| m.token_text(i)).collect();
            assert_eq!(joined.join(" "), m.text(), "{msg:?}");
            for (i, t) in m.tokens().iter().enumerate() {
                assert_eq!(t.hash, hash_bytes(m.token_text(i).as_bytes()), "{msg:?}");
                assert!(!m.token_text(i).is_empty(), "{msg:?}");
            }
        }
    }

    #[test]
    fn odd_input_does_not_panic() {
        let deep = "a=".repeat(50_000);
        assert!(masked(&deep).starts_with("a=a=a=a="));
        for s in [
            "", "   ", "=", "==", "'", "''", "\"\"\"", "[]", "é=ü", "a=é1", ":::", "[::", "]:",
        ] {
            let _ = masked(s);
        }
    }
}
