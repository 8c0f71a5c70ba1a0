//! The miner's state as bytes: a self-describing, checksummed, versioned image (layout in the
//! crate README). Restoring never trusts the bytes: every count, index and length is checked,
//! so damage gives a [`StateError`], never a panic or a miner that misbehaves later.

use crate::mask::{hash_bytes, is_anchor, is_plain_word, slot_hash, SLOT};
use crate::miner::{Miner, MinerConfig, Pattern, PatternId, TemplateToken, Variant};

/// First bytes of every state image.
pub const STATE_MAGIC: &[u8; 8] = b"LSPATRN\0";
/// The format version this code writes; it reads only this one so far.
pub const STATE_VERSION: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 4 + 8 + 4;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StateError {
    #[error("pattern state is not a logsift pattern state (bad magic); was the right file given?")]
    BadMagic,
    #[error("pattern state has format version {0}, this build reads version {STATE_VERSION}; upgrade logsift or start a new state")]
    UnsupportedVersion(u32),
    #[error("pattern state is damaged: {0}; restore a backup or start a new state (pattern ids will restart)")]
    Damaged(&'static str),
    #[error("pattern state holds an invalid configuration: {0}")]
    Config(#[from] crate::miner::ConfigError),
}

impl Miner {
    /// The whole state: configuration, patterns with their counts, and templates.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(64 + self.variants.len() * 64);
        let c = &self.config;
        body.extend_from_slice(&c.similarity.to_bits().to_le_bytes());
        body.extend_from_slice(&c.word_difference.to_bits().to_le_bytes());
        body.extend_from_slice(&c.max_templates.to_le_bytes());
        body.extend_from_slice(&c.max_memory_bytes.to_le_bytes());
        body.extend_from_slice(&c.max_tokens.to_le_bytes());
        body.extend_from_slice(&c.max_bucket_patterns.to_le_bytes());
        body.extend_from_slice(&c.max_token_text_bytes.to_le_bytes());
        body.extend_from_slice(&(self.patterns.len() as u32).to_le_bytes());
        for p in &self.patterns {
            // Bit 0: catch-all; bit 1: loose (a later addition: older states have it clear).
            body.push(if p.catch_all {
                1
            } else {
                u8::from(p.loose) << 1
            });
            body.extend_from_slice(&p.count.to_le_bytes());
        }
        body.extend_from_slice(&(self.variants.len() as u32).to_le_bytes());
        for v in &self.variants {
            body.extend_from_slice(&v.pattern.to_le_bytes());
            body.extend_from_slice(&v.key_hash.to_le_bytes());
            body.extend_from_slice(&(v.tokens.len() as u16).to_le_bytes());
            for t in &v.tokens {
                body.extend_from_slice(&t.hash.to_le_bytes());
                body.extend_from_slice(&(t.text.len() as u16).to_le_bytes());
                body.extend_from_slice(t.text.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
        out.extend_from_slice(STATE_MAGIC);
        out.extend_from_slice(&STATE_VERSION.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Restores a state written by [`Miner::to_bytes`]; the configuration comes from the state,
    /// so a restored miner behaves exactly as the one that was saved.
    pub fn from_bytes(bytes: &[u8]) -> Result<Miner, StateError> {
        if bytes.len() < HEADER_BYTES || &bytes[..8] != STATE_MAGIC {
            if bytes.len() >= 8 && &bytes[..8] == STATE_MAGIC {
                return Err(StateError::Damaged("header cut short"));
            }
            return Err(StateError::BadMagic);
        }
        let mut h = Reader {
            bytes: &bytes[8..HEADER_BYTES],
        };
        let version = h.u32()?;
        if version != STATE_VERSION {
            return Err(StateError::UnsupportedVersion(version));
        }
        if h.u32()? != 0 {
            return Err(StateError::Damaged("reserved header field is not zero"));
        }
        let body_len = h.u64()?;
        let crc = h.u32()?;
        let body = &bytes[HEADER_BYTES..];
        if body.len() as u64 != body_len {
            return Err(StateError::Damaged("length does not match the header"));
        }
        if crc32c::crc32c(body) != crc {
            return Err(StateError::Damaged("checksum mismatch"));
        }
        decode_body(body)
    }
}

fn decode_body(body: &[u8]) -> Result<Miner, StateError> {
    let mut r = Reader { bytes: body };
    let config = MinerConfig {
        similarity: f32::from_bits(r.u32()?),
        word_difference: f32::from_bits(r.u32()?),
        max_templates: r.u32()?,
        max_memory_bytes: r.u64()?,
        max_tokens: r.u16()?,
        max_bucket_patterns: r.u16()?,
        max_token_text_bytes: r.u16()?,
    };
    config.validate()?;
    let max_text = usize::from(config.max_token_text_bytes) + '…'.len_utf8();

    let n_patterns = r.u32()? as usize;
    // Each pattern takes 9 bytes, so a count the body cannot hold is damage, caught before
    // allocating for it.
    if n_patterns > r.bytes.len() / 9 {
        return Err(StateError::Damaged("pattern count exceeds the data"));
    }
    let mut patterns = Vec::with_capacity(n_patterns);
    for _ in 0..n_patterns {
        let (catch_all, loose) = match r.u8()? {
            0 => (false, false),
            1 => (true, false),
            2 => (false, true),
            _ => return Err(StateError::Damaged("unknown pattern flags")),
        };
        patterns.push(Pattern {
            count: r.u64()?,
            catch_all,
            loose,
            variants: Vec::new(),
            template: String::new(),
        });
    }

    let n_variants = r.u32()? as usize;
    // Each template takes at least 14 bytes.
    if n_variants > r.bytes.len() / 14 {
        return Err(StateError::Damaged("template count exceeds the data"));
    }
    let slot = slot_hash();
    let mut catch_all_lens = std::collections::HashSet::new();
    let mut variants = Vec::with_capacity(n_variants);
    for vi in 0..n_variants {
        let pattern: PatternId = r.u32()?;
        let key_hash = r.u64()?;
        let n_tokens = usize::from(r.u16()?);
        if pattern == 0 || pattern as usize > patterns.len() {
            return Err(StateError::Damaged(
                "template refers to a pattern that does not exist",
            ));
        }
        if n_tokens > usize::from(config.max_tokens) {
            return Err(StateError::Damaged("template token count out of range"));
        }
        let mut tokens = Vec::with_capacity(n_tokens);
        for _ in 0..n_tokens {
            let hash = r.u64()?;
            let len = usize::from(r.u16()?);
            if len > max_text {
                return Err(StateError::Damaged("template token longer than the cap"));
            }
            let text = std::str::from_utf8(r.take(len)?)
                .map_err(|_| StateError::Damaged("template text is not UTF-8"))?;
            // A slot's hash is known, and an uncut token's hash is its text's: a mismatch
            // means flipped bits that would silently split or merge patterns.
            if (text == SLOT) != (hash == slot)
                || (!text.ends_with('…') && hash != hash_bytes(text.as_bytes()))
            {
                return Err(StateError::Damaged(
                    "template token does not match its hash",
                ));
            }
            tokens.push(TemplateToken {
                hash,
                var: text.contains(SLOT),
                plain: is_plain_word(text),
                anchor: is_anchor(text),
                text: text.into(),
            });
        }
        let p = &mut patterns[pattern as usize - 1];
        // A catch-all is one all-slot template, the only one of its token count.
        if p.catch_all
            && (!tokens.iter().all(|t| t.hash == slot)
                || !p.variants.is_empty()
                || !catch_all_lens.insert(n_tokens))
        {
            return Err(StateError::Damaged("malformed catch-all pattern"));
        }
        p.variants.push(vi as u32);
        variants.push(Variant {
            pattern,
            key_hash,
            tokens,
        });
    }
    if !r.bytes.is_empty() {
        return Err(StateError::Damaged(
            "trailing bytes after the last template",
        ));
    }
    if patterns.iter().any(|p| p.variants.is_empty()) {
        return Err(StateError::Damaged("pattern without a template"));
    }
    let learnt: usize = patterns
        .iter()
        .filter(|p| !p.catch_all)
        .map(|p| p.variants.len())
        .sum();
    if learnt > config.max_templates as usize {
        return Err(StateError::Damaged(
            "more templates than the configured cap",
        ));
    }
    Ok(Miner::from_parts(config, patterns, variants))
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        if self.bytes.len() < n {
            return Err(StateError::Damaged("cut short"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StateError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, StateError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, StateError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, StateError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, StateError> {
        self.array().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: &[&str] = &[
        "Connection from 10.0.0.1 closed",
        "Connection from 10.0.0.2 closed",
        "session opened for user root by (uid=0)",
        "worker node-12 started job_2015 in 12ms",
        "host:80 close, 785 bytes sent, lifetime 00:39",
        "host:80 close, 785 bytes (1.2 KB) sent, lifetime <1 sec",
        "GET /index.html returned 200",
        "state 'Active' reached",
    ];

    fn trained() -> Miner {
        let mut m = Miner::new(MinerConfig {
            max_templates: 6,
            ..MinerConfig::default()
        })
        .expect("valid");
        for l in LINES {
            m.ingest(l);
        }
        // Past the cap: a catch-all is in the state too.
        m.ingest("one two three four five six seven eight nine");
        m
    }

    #[test]
    fn restore_keeps_ids_counts_and_behaviour() {
        let mut a = trained();
        let bytes = a.to_bytes();
        assert_eq!(&bytes[..8], STATE_MAGIC);
        let mut b = Miner::from_bytes(&bytes).expect("restores");
        assert_eq!(b.to_bytes(), bytes);
        assert_eq!(b.config(), a.config());
        assert_eq!(
            a.patterns().collect::<Vec<_>>(),
            b.patterns().collect::<Vec<_>>()
        );
        // The same messages after a restart get the same ids as without one, and counts add up.
        let more = [
            "Connection from 10.0.0.3 closed",
            "worker node-13 started job_2016 in 3ms",
            "host:80 close, 9 bytes (9.9 KB) sent, lifetime <1 sec",
            "brand new kind of line here",
            "state 'Idle' reached",
        ];
        for l in more {
            assert_eq!(a.ingest(l), b.ingest(l), "{l}");
        }
        assert_eq!(a.to_bytes(), b.to_bytes());
        let total: u64 = b.patterns().map(|p| p.count).sum();
        assert_eq!(total as usize, LINES.len() + 1 + more.len());
    }

    /// Random messages with restarts at random points get the ids of a miner that never
    /// restarts.
    #[test]
    fn restarts_anywhere_change_no_id() {
        let mut x: u64 = 0x853c_49e6_748f_ea9b;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let long_word = "w".repeat(300);
        let long_mixed = format!("{}=1", "k".repeat(300));
        let words: Vec<&str> = vec![
            "open",
            "close",
            "user",
            "from",
            "failed",
            "ok",
            "10.0.0.1",
            "42",
            "/var/log",
            "x=1",
            "x=y",
            "(a)",
            "node-7",
            "eth0",
            "eth1",
            "'q'",
            "Jan",
            "12ms",
            "a.b.c",
            &long_word,
            &long_mixed,
        ];
        let messages: Vec<String> = (0..3000)
            .map(|_| {
                let n = 1 + (next() % 7) as usize;
                let mut picked: Vec<&str> = vec![words[(next() % 4) as usize]];
                picked.extend((1..n).map(|_| words[(next() % words.len() as u64) as usize]));
                picked.join(" ")
            })
            .collect();
        let config = MinerConfig {
            max_templates: 150,
            ..MinerConfig::default()
        };
        let mut model = Miner::new(config).expect("valid");
        let mut restarted = Miner::new(config).expect("valid");
        for msg in &messages {
            if next() % 50 == 0 {
                restarted = Miner::from_bytes(&restarted.to_bytes()).expect("restores");
            }
            assert_eq!(restarted.ingest(msg), model.ingest(msg), "{msg}");
        }
        assert_eq!(restarted.to_bytes(), model.to_bytes());
        assert!(model.patterns().any(|p| p.catch_all), "the cap was reached");
    }

    #[test]
    fn empty_miner_round_trips() {
        let m = Miner::new(MinerConfig::default()).expect("valid");
        let r = Miner::from_bytes(&m.to_bytes()).expect("restores");
        assert!(r.is_empty());
    }

    #[test]
    fn every_flipped_bit_is_an_error() {
        let bytes = trained().to_bytes();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut d = bytes.clone();
                d[i] ^= 1 << bit;
                assert!(Miner::from_bytes(&d).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = trained().to_bytes();
        for n in 0..bytes.len() {
            assert!(Miner::from_bytes(&bytes[..n]).is_err(), "cut at {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Miner::from_bytes(&longer).is_err());
    }

    #[test]
    fn header_errors_say_what_is_wrong() {
        assert_eq!(
            Miner::from_bytes(b"hello").err(),
            Some(StateError::BadMagic)
        );
        let mut bytes = trained().to_bytes();
        bytes[8] = 2;
        assert_eq!(
            Miner::from_bytes(&bytes).err(),
            Some(StateError::UnsupportedVersion(2))
        );
    }

    /// Re-seals a damaged body with a valid checksum, to reach the checks behind the CRC.
    fn sealed(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(STATE_MAGIC);
        out.extend_from_slice(&STATE_VERSION.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn damage_behind_a_valid_checksum_is_an_error() {
        let body = trained().to_bytes()[HEADER_BYTES..].to_vec();
        assert!(Miner::from_bytes(&sealed(&body)).is_ok());
        // Every single-byte change of the body, re-sealed: an error or a state that still
        // works, never a panic.
        for i in 0..body.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut d = body.clone();
                d[i] = v;
                if let Ok(mut m) = Miner::from_bytes(&sealed(&d)) {
                    for l in LINES {
                        m.ingest(l);
                    }
                    let _ = m.to_bytes();
                }
            }
        }
        // A huge pattern count is refused before anything is allocated for it.
        let mut d = body.clone();
        d[26..30].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Miner::from_bytes(&sealed(&d)),
            Err(StateError::Damaged(_))
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        // A small xorshift keeps the test deterministic without a dependency.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let good = trained().to_bytes();
        for _ in 0..2000 {
            let len = (next() % 200) as usize;
            let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if next() % 2 == 0 {
                let n = d.len().min(good.len());
                d[..n.min(8)].copy_from_slice(&good[..n.min(8)]);
            }
            let _ = Miner::from_bytes(&d);
            let _ = Miner::from_bytes(&sealed(&d));
        }
    }
}
