//! The online miner: messages in, stable pattern ids out.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use crate::mask::{
    hash_bytes, is_anchor, is_plain_word, is_unit_word, mask_token, slot_hash, Masked, TokenKind,
    SLOT,
};

/// A pattern id. Ids start at 1, are handed out in order and never reused, and always refer to
/// the same group of messages, however its template generalises later.
pub type PatternId = u32;

/// Tuning and limits. One set of values serves every kind of log; [`MinerConfig::default`] is
/// what the accuracy table in the README was measured with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinerConfig {
    /// A message joins the most similar template of its length and leading word when at least
    /// this fraction of positions agree (0.0 to 1.0)...
    pub similarity: f32,
    /// ...and at most this fraction of positions hold two different constant words. A
    /// difference where either side already has a slot is weak evidence of another event;
    /// two different words (`Paused`/`Resumed`, `GET`/`DELETE`) are strong evidence.
    pub word_difference: f32,
    /// At most this many templates are learnt (a pattern has one per token count it was seen
    /// with, so there are at most as many patterns); after that, a message that matches none
    /// goes to the catch-all pattern of its token count (`<*> <*> ...`), of which there are at
    /// most `max_tokens + 1` more.
    pub max_templates: u32,
    /// Learnt templates take at most about this much memory (their tokens, texts and index
    /// entries, as estimated by the miner); past it, as past `max_templates`, new kinds of
    /// message go to the catch-alls.
    pub max_memory_bytes: u64,
    /// Messages are cut to this many tokens; the rest of a longer message is one final slot.
    pub max_tokens: u16,
    /// At most this many templates share one (token count, leading word) bucket; a message
    /// that would add one more goes to the catch-all of its token count. Bounds the work per
    /// message.
    pub max_bucket_patterns: u16,
    /// Tokens of template text longer than this are cut (with `…`) when shown; matching still
    /// uses the whole token.
    pub max_token_text_bytes: u16,
}

impl Default for MinerConfig {
    fn default() -> Self {
        Self {
            similarity: 0.8,
            word_difference: 0.0,
            max_templates: 20_000,
            max_memory_bytes: 64 << 20,
            max_tokens: 128,
            max_bucket_patterns: 512,
            max_token_text_bytes: 200,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("pattern similarity and word_difference must be between 0.0 and 1.0, got {0}")]
    Fraction(f32),
    #[error("{name} must be at least 1, got 0")]
    Zero { name: &'static str },
}

impl MinerConfig {
    /// Checks every field, so that a miner never runs on limits that make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for v in [self.similarity, self.word_difference] {
            if !(0.0..=1.0).contains(&v) {
                return Err(ConfigError::Fraction(v));
            }
        }
        for (name, v) in [
            ("max_templates", u64::from(self.max_templates)),
            ("max_memory_bytes", self.max_memory_bytes),
            ("max_tokens", u64::from(self.max_tokens)),
            ("max_bucket_patterns", u64::from(self.max_bucket_patterns)),
            ("max_token_text_bytes", u64::from(self.max_token_text_bytes)),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero { name });
            }
        }
        Ok(())
    }
}

/// One token of a template: the hash that matching compares, and the text shown.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TemplateToken {
    pub(crate) hash: u64,
    /// The token holds a slot (derived from the text, so a restore gets it back).
    pub(crate) var: bool,
    /// The token is a plain word (derived from the text).
    pub(crate) plain: bool,
    /// The token is part of the skeleton ([`is_anchor`], derived from the text).
    pub(crate) anchor: bool,
    pub(crate) text: Box<str>,
}

/// A template of one token count. A pattern has one variant of each token count it was seen
/// with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Variant {
    pub(crate) pattern: PatternId,
    /// The bucket it lives in ([`bucket_key`] of the message it was created from, less the
    /// token count). Kept even when that token later becomes a slot, so a restore finds it
    /// again.
    pub(crate) key_hash: u64,
    pub(crate) tokens: Vec<TemplateToken>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pattern {
    pub(crate) count: u64,
    pub(crate) catch_all: bool,
    /// Some message was given this id without a template of the pattern matching it token
    /// for token (see [`Miner::constant_runs`]): at a limit, by its skeleton alone, or in a
    /// replay that found the pattern by similarity.
    pub(crate) loose: bool,
    /// The variants of this pattern, indexes into `Miner::variants`; the first gives the text.
    pub(crate) variants: Vec<u32>,
    pub(crate) template: String,
}

/// What [`Miner::patterns`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatternInfo<'a> {
    pub id: PatternId,
    /// Template text, `<*>` for each slot.
    pub template: &'a str,
    /// Messages given this id, over the miner's whole life (restores included).
    pub count: u64,
    /// True for the catch-all of a token count, used once a limit is reached.
    pub catch_all: bool,
}

/// Entries of the fast path's cache of masked tokens (about 40 bytes each).
const TOKEN_CACHE_MAX: usize = 8192;

/// A hasher for keys that are already hashes ([`hash_bytes`] of a token).
#[derive(Default)]
struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// How many leading tokens are looked at for the word that keys a bucket.
const KEY_TOKENS: usize = 3;

/// Key of a bucket: token count, and the hash and position of the first plain word among the
/// leading tokens (0 when there is none).
type BucketKey = (u16, u64);

/// The miner. Learning takes `&mut self`, so a pipeline with several writer threads shares one
/// behind a lock (ids must come from one sequence); its state is saved with
/// [`Miner::to_bytes`] alongside the data it describes.
#[derive(Debug, Clone)]
pub struct Miner {
    pub(crate) config: MinerConfig,
    /// Pattern `id` is at index `id - 1`.
    pub(crate) patterns: Vec<Pattern>,
    pub(crate) variants: Vec<Variant>,
    buckets: HashMap<BucketKey, Vec<u32>>,
    /// Variants by leading-token hash, every token count: where a message that matches no
    /// template of its own length looks for one of another length.
    families: HashMap<u64, Vec<u32>>,
    /// Catch-all variant per token count.
    catch_alls: HashMap<u16, u32>,
    /// Templates of patterns that are not catch-alls (what `max_templates` limits).
    learnt: u32,
    /// Estimated memory of those templates (what `max_memory_bytes` limits).
    learnt_bytes: u64,
    masked: Masked,
    /// Bumped by every change that can alter a later message's id (a template added or
    /// generalised, a catch-all made): a saved state is current while this has not moved.
    revision: u64,
    /// Patterns whose template text changed since [`Miner::take_changed`] was last called.
    changed: Vec<PatternId>,
    /// Per variant, whether [`Miner::fast_match`] may decide on it ([`Fast`]).
    fast: Vec<Fast>,
    /// The fast path's scratch: each raw token's start and end offsets and hash (0: not yet
    /// computed: a token in a template's slot is never looked at), the hash of its masking on
    /// its own once a template needed it, and one masked token.
    raw: Vec<(u32, u32, u64)>,
    raw_masked: Vec<Option<u64>>,
    /// Slot-holding tokens masked on their own, by the hash of their raw text: the hash of
    /// the masked token, or `None` for a unit (masked in context). Tokens like `HTTP/1.1"`
    /// recur on most lines of a log; cleared past [`TOKEN_CACHE_MAX`] entries.
    token_cache: HashMap<u64, Option<u64>, BuildHasherDefault<PassThrough>>,
    /// Raw token hash → whether masking leaves that plain word a constant, for the fast path's
    /// bucket key: the first words of a log's lines are few, and masking one anew on every
    /// line was 7 % of the indexer thread's time (perf of the e2e ingest). Cleared as above.
    const_cache: HashMap<u64, bool, BuildHasherDefault<PassThrough>>,
    scratch: String,
    /// Messages the fast path took.
    fast_taken: u64,
}

/// What the fast path may do with a variant (see [`Miner::fast_match`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fast {
    /// Compare the message's raw tokens with it.
    Yes,
    /// Never the best match of a message the fast path can match (no anchor): skip it.
    Skip,
    /// Its tokens need the whole masking (a cut text, a slot in a constant, a unit after a
    /// value): the fast path gives up when it reaches it.
    No,
}

impl Miner {
    pub fn new(config: MinerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::empty(config))
    }

    fn empty(config: MinerConfig) -> Self {
        Self {
            config,
            patterns: Vec::new(),
            variants: Vec::new(),
            buckets: HashMap::new(),
            families: HashMap::new(),
            catch_alls: HashMap::new(),
            learnt: 0,
            learnt_bytes: 0,
            masked: Masked::new(),
            revision: 0,
            changed: Vec::new(),
            fast: Vec::new(),
            raw: Vec::new(),
            raw_masked: Vec::new(),
            token_cache: HashMap::default(),
            const_cache: HashMap::default(),
            scratch: String::new(),
            fast_taken: 0,
        }
    }

    /// Counts changes that can alter the id a later message gets; counts of messages do not
    /// move it. A caller saving the state compares it with the revision it last saved.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The patterns whose template text changed (new ones included) since the last call, each
    /// once, in id order: what a reader's copy of the templates must refresh.
    pub fn take_changed(&mut self) -> Vec<PatternId> {
        let mut ids = std::mem::take(&mut self.changed);
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The id `message` was given, for a message this miner learnt from before (a replay of
    /// records whose learning the saved state holds): [`Miner::lookup`], or the catch-all of
    /// its token count, which is where it went if no template could take it.
    pub fn assigned(&self, message: &str) -> Option<PatternId> {
        self.lookup(message).or_else(|| {
            let mut m = Masked::new();
            m.mask(message, usize::from(self.config.max_tokens));
            let len = m.tokens().len() as u16;
            let vi = *self.catch_alls.get(&len)?;
            Some(self.variants[vi as usize].pattern)
        })
    }

    /// Whether `message` fits a template of pattern `id` token for token: its token count, and
    /// at every constant position the same token (a slot takes anything).
    pub fn fits(&self, id: PatternId, message: &str) -> bool {
        let Some(p) = (id as usize)
            .checked_sub(1)
            .and_then(|i| self.patterns.get(i))
        else {
            return false;
        };
        let mut m = Masked::new();
        m.mask(message, usize::from(self.config.max_tokens));
        let slot = slot_hash();
        p.variants.iter().any(|&vi| {
            let v = &self.variants[vi as usize];
            v.tokens.len() == m.tokens().len()
                && v.tokens
                    .iter()
                    .zip(m.tokens())
                    .all(|(t, mt)| t.hash == slot || t.hash == mt.hash)
        })
    }

    /// Notes that a message was given `id` without fitting one of its templates
    /// ([`Miner::fits`]), so that [`Miner::constant_runs`] no longer vouches for it.
    pub fn mark_loose(&mut self, id: PatternId) {
        if let Some(p) = (id as usize)
            .checked_sub(1)
            .and_then(|i| self.patterns.get_mut(i))
        {
            if !p.loose {
                p.loose = true;
                self.revision += 1;
                self.changed.push(id);
            }
        }
    }

    /// What every message given `id` holds for certain: per template of the pattern, its runs
    /// of constant tokens ([`constant_runs_of`] of the template's text). A message of the
    /// pattern holds one template's runs, each as consecutive whitespace-separated tokens of
    /// its text; a search that every template's runs satisfy matches every record of the
    /// pattern without reading it. Templates only generalise, so runs read later are never
    /// more than what a message given the id earlier holds. `None` for an unknown id and for a
    /// pattern that some message joined without fitting ([`Miner::mark_loose`]).
    pub fn constant_runs(&self, id: PatternId) -> Option<Vec<Vec<String>>> {
        let texts = self.template_texts(id)?;
        Some(texts.iter().map(|t| constant_runs_of(t)).collect())
    }

    /// The text of every template of pattern `id` (the first is [`Miner::template`]), from
    /// which [`constant_runs_of`] gives what its messages hold; `None` for an unknown id and
    /// for a loose pattern.
    pub fn template_texts(&self, id: PatternId) -> Option<Vec<String>> {
        let p = self.patterns.get((id as usize).checked_sub(1)?)?;
        if p.loose {
            return None;
        }
        Some(
            p.variants
                .iter()
                .map(|&vi| render(&self.variants[vi as usize].tokens))
                .collect(),
        )
    }

    pub fn config(&self) -> &MinerConfig {
        &self.config
    }

    /// Number of patterns, catch-alls included.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Estimated memory of the learnt templates, the figure `max_memory_bytes` bounds.
    pub fn memory_bytes(&self) -> u64 {
        self.learnt_bytes
    }

    /// Learns from `message` and returns its pattern id. The id's template may generalise as
    /// more messages arrive; the id stays.
    pub fn ingest(&mut self, message: &str) -> PatternId {
        if let Some(vi) = self.fast_match(message) {
            // Exactly what the whole path does with a message that equals a template.
            let id = self.variants[vi as usize].pattern;
            self.patterns[id as usize - 1].count += 1;
            self.fast_taken += 1;
            return id;
        }
        self.ingest_masked_message(message)
    }

    /// Messages [`Miner::ingest`] matched from their raw tokens, without masking them.
    #[doc(hidden)]
    pub fn fast_taken(&self) -> u64 {
        self.fast_taken
    }

    /// [`Miner::ingest`] without the fast path: for tests that hold the two to one answer.
    #[doc(hidden)]
    pub fn ingest_without_fast_path(&mut self, message: &str) -> PatternId {
        self.ingest_masked_message(message)
    }

    fn ingest_masked_message(&mut self, message: &str) -> PatternId {
        let mut masked = std::mem::take(&mut self.masked);
        masked.mask(message, usize::from(self.config.max_tokens));
        let id = self.ingest_masked(&masked);
        self.masked = masked;
        id
    }

    /// The template text of `id`.
    pub fn template(&self, id: PatternId) -> Option<&str> {
        self.pattern(id).map(|p| p.template)
    }

    pub fn pattern(&self, id: PatternId) -> Option<PatternInfo<'_>> {
        let p = self.patterns.get((id as usize).checked_sub(1)?)?;
        Some(PatternInfo {
            id,
            template: &p.template,
            count: p.count,
            catch_all: p.catch_all,
        })
    }

    /// Every pattern, in id order.
    pub fn patterns(&self) -> impl Iterator<Item = PatternInfo<'_>> + '_ {
        self.patterns.iter().enumerate().map(|(i, p)| PatternInfo {
            id: i as PatternId + 1,
            template: &p.template,
            count: p.count,
            catch_all: p.catch_all,
        })
    }

    /// The pattern `message` would get, without learning from it: `None` when it would start
    /// a new pattern. For asking "which pattern is this line" at query time.
    pub fn lookup(&self, message: &str) -> Option<PatternId> {
        let mut m = Masked::new();
        m.mask(message, usize::from(self.config.max_tokens));
        let key = bucket_key(&m);
        match self.best_match(key, &m) {
            Some(vi) => Some(self.variants[vi as usize].pattern),
            None => self.sibling(key.1, &m),
        }
    }

    /// Most messages, once a log's templates are learnt, equal one of them: every constant
    /// token of the template is the message's token as written, and masking would change
    /// nothing. Those are found from the raw tokens (split and hashed, the first three masked
    /// for the bucket) without masking the message, which was most of the miner's cost.
    ///
    /// The answer is the variant the whole path would choose, or `None` (then the whole path
    /// runs): the bucket's variants are tried in the same order, a variant matches only when
    /// no position differs (the best the whole path can find, and it keeps the first such),
    /// and a variant whose tokens could mask differently in context stops the fast path.
    fn fast_match(&mut self, message: &str) -> Option<u32> {
        let max_tokens = usize::from(self.config.max_tokens);
        if message.len() >= 1 << 30 {
            return None;
        }
        self.raw.clear();
        let base = message.as_ptr() as usize;
        for word in message.split_ascii_whitespace() {
            // More tokens than `max_tokens`: the rest would be folded into one slot.
            if self.raw.len() == max_tokens {
                return None;
            }
            let start = word.as_ptr() as usize - base;
            let end = start + word.len();
            self.raw.push((start as u32, end as u32, 0));
        }
        if self.raw.is_empty() {
            return None;
        }
        self.raw_masked.clear();
        self.raw_masked.resize(self.raw.len(), None);
        let key = (self.raw.len() as u16, self.raw_first_word_key(message));
        let bucket = self.buckets.get(&key)?;
        let slot = slot_hash();
        'variants: for &vi in bucket {
            match self.fast[vi as usize] {
                Fast::Yes => {}
                Fast::Skip => continue,
                Fast::No => return None,
            }
            let tokens = &self.variants[vi as usize].tokens;
            for (i, t) in tokens.iter().enumerate() {
                if t.hash == slot {
                    continue;
                }
                let Some((start, end, hash)) = raw_hash(&mut self.raw, message, i) else {
                    continue 'variants;
                };
                if !t.var {
                    // A constant: the message's token must be it as written (masking leaves a
                    // constant as it is, and anything else would hold a slot).
                    if hash != t.hash {
                        continue 'variants;
                    }
                    continue;
                }
                // Constant text around a slot (`uid=<*>`): the token masked on its own is
                // what masking makes of it, unless it is a unit after a value.
                let masked = match self.raw_masked[i] {
                    Some(h) => h,
                    None => {
                        let cached = match self.token_cache.get(&hash) {
                            Some(&c) => c,
                            None => {
                                let word = &message[start as usize..end as usize];
                                self.scratch.clear();
                                let kind = mask_token(word, &mut self.scratch);
                                let c = (kind != TokenKind::Const || !is_unit_word(word))
                                    .then(|| hash_bytes(self.scratch.as_bytes()));
                                if self.token_cache.len() >= TOKEN_CACHE_MAX {
                                    self.token_cache.clear();
                                }
                                self.token_cache.insert(hash, c);
                                c
                            }
                        };
                        let h = cached?;
                        self.raw_masked[i] = Some(h);
                        h
                    }
                };
                if masked != t.hash {
                    continue 'variants;
                }
            }
            return Some(vi);
        }
        None
    }

    /// [`first_word_key`] of the message whose raw tokens are in `self.raw`, masking only the
    /// tokens that could be its plain word: a plain word masks to itself or to a slot, and
    /// anything else is not plain (the leading timestamp or address most lines start with is
    /// not masked at all). A unit among them (masked as a slot after a value) is left to the
    /// whole masking of the first tokens.
    fn raw_first_word_key(&mut self, message: &str) -> u64 {
        for i in 0..self.raw.len().min(KEY_TOKENS) {
            let (start, end) = (self.raw[i].0, self.raw[i].1);
            let word = &message[start as usize..end as usize];
            if !is_plain_word(word) {
                continue;
            }
            if i > 0 && is_unit_word(word) {
                let mut masked = std::mem::take(&mut self.masked);
                masked.mask_first(message, KEY_TOKENS);
                let key = first_word_key(masked.tokens());
                self.masked = masked;
                return key;
            }
            let Some((_, _, hash)) = raw_hash(&mut self.raw, message, i) else {
                return 0;
            };
            let constant = match self.const_cache.get(&hash) {
                Some(&c) => c,
                None => {
                    self.scratch.clear();
                    let c = mask_token(word, &mut self.scratch) == TokenKind::Const;
                    if self.const_cache.len() >= TOKEN_CACHE_MAX {
                        self.const_cache.clear();
                    }
                    self.const_cache.insert(hash, c);
                    c
                }
            };
            if constant {
                return hash.rotate_left(i as u32 * 8) | 1;
            }
        }
        0
    }

    fn ingest_masked(&mut self, m: &Masked) -> PatternId {
        let key = bucket_key(m);
        let id = match self.best_match(key, m) {
            Some(vi) => {
                self.generalise(vi, m);
                self.variants[vi as usize].pattern
            }
            None => {
                let sibling = self.sibling(key.1, m);
                match self.new_variant(key, m, sibling) {
                    Some(vi) => self.variants[vi as usize].pattern,
                    // At a limit a message still gets the pattern its skeleton names, if any,
                    // without a template being stored for its token count.
                    None => match sibling {
                        Some(pid) => {
                            self.mark_loose(pid);
                            pid
                        }
                        None => {
                            let vi = self.catch_all(key.0);
                            self.variants[vi as usize].pattern
                        }
                    },
                }
            }
        };
        self.patterns[id as usize - 1].count += 1;
        id
    }

    /// The template of `m`'s bucket that `m` joins: the fewest differing word pairs, then the
    /// fewest differing positions, within the configured limits; the oldest on a tie.
    fn best_match(&self, key: BucketKey, m: &Masked) -> Option<u32> {
        let toks = m.tokens();
        let bucket = self.buckets.get(&key)?;
        let slot = slot_hash();
        let n = toks.len().max(1) as f32;
        // The epsilon keeps 0.8 * 10 from rounding down to 7.
        let max_differ = ((1.0 - self.config.similarity) * n + 1e-4) as usize;
        let max_words = (self.config.word_difference * n + 1e-4) as usize;
        let message_anchored = toks.iter().any(|t| t.anchor);
        let mut best: Option<(u32, usize, usize)> = None;
        for &vi in bucket {
            let v = &self.variants[vi as usize];
            // A template of nothing but slots would take any message of its length; it only
            // takes messages that are nothing but values too.
            if message_anchored && !v.tokens.iter().any(|t| t.anchor) {
                continue;
            }
            let (mut differ, mut words) = (0usize, 0usize);
            for (i, (t, mt)) in v.tokens.iter().zip(toks).enumerate() {
                // A slot of the template takes anything, as in Drain.
                if t.hash != mt.hash && t.hash != slot {
                    differ += 1;
                    // `eth0` and `eth1` are two instances of one thing, not two words.
                    words += usize::from(
                        t.plain && mt.plain && !differ_in_digits(&t.text, m.token_text(i)),
                    );
                    if differ > max_differ || words > max_words {
                        break;
                    }
                }
            }
            if differ <= max_differ
                && words <= max_words
                && best.is_none_or(|(_, d, w)| (words, differ) < (w, d))
            {
                best = Some((vi, differ, words));
            }
        }
        best.map(|(vi, _, _)| vi)
    }

    /// Turns every position where `m` differs from variant `vi` into a slot.
    fn generalise(&mut self, vi: u32, m: &Masked) {
        let slot = slot_hash();
        let v = &mut self.variants[vi as usize];
        let mut changed = false;
        let before = variant_bytes(&v.tokens);
        for (t, mt) in v.tokens.iter_mut().zip(m.tokens()) {
            if t.hash != mt.hash && t.hash != slot {
                t.hash = slot;
                t.var = true;
                t.plain = false;
                t.anchor = false;
                t.text = SLOT.into();
                changed = true;
            }
        }
        if changed {
            let pid = v.pattern;
            let after = variant_bytes(&v.tokens);
            self.fast[vi as usize] =
                fast_kind(&v.tokens, usize::from(self.config.max_token_text_bytes));
            if !self.patterns[pid as usize - 1].catch_all {
                self.learnt_bytes = self.learnt_bytes - before + after;
            }
            self.refresh_template(pid);
        }
    }

    pub(crate) fn refresh_template(&mut self, pid: PatternId) {
        let p = &self.patterns[pid as usize - 1];
        let Some(&first) = p.variants.first() else {
            return;
        };
        let text = render(&self.variants[first as usize].tokens);
        self.patterns[pid as usize - 1].template = text;
        self.revision += 1;
        self.changed.push(pid);
    }

    /// A pattern with a template of another token count whose constant tokens are exactly the
    /// message's, in the same order: the two differ only in how many slots they have (`<1 sec`
    /// against `00:39`, a size with or without `(1.2 KB)`), so they are one event.
    fn sibling(&self, key_hash: u64, m: &Masked) -> Option<PatternId> {
        let family = self.families.get(&key_hash)?;
        family
            .iter()
            .take(usize::from(self.config.max_bucket_patterns))
            .map(|&vi| &self.variants[vi as usize])
            .find(|v| v.tokens.len() != m.tokens().len() && same_skeleton(&v.tokens, m))
            .map(|v| v.pattern)
    }

    /// Starts a template for `m`: of pattern `sibling` if given, else of a new pattern. `None`
    /// when a limit forbids it.
    fn new_variant(
        &mut self,
        key: BucketKey,
        m: &Masked,
        sibling: Option<PatternId>,
    ) -> Option<u32> {
        let bucket_full = self
            .buckets
            .get(&key)
            .is_some_and(|b| b.len() >= usize::from(self.config.max_bucket_patterns));
        if bucket_full || self.learnt >= self.config.max_templates {
            return None;
        }
        let max_text = usize::from(self.config.max_token_text_bytes);
        let tokens: Vec<TemplateToken> = m
            .tokens()
            .iter()
            .enumerate()
            .map(|(i, t)| {
                // Flags from the stored (possibly cut) text, as a restore derives them: a
                // restored miner must decide exactly as this one would.
                let text = cut_text(m.token_text(i), max_text);
                TemplateToken {
                    hash: t.hash,
                    var: text.contains(SLOT),
                    plain: is_plain_word(&text),
                    anchor: is_anchor(&text),
                    text: text.into(),
                }
            })
            .collect();
        let bytes = variant_bytes(&tokens);
        if self.learnt_bytes + bytes > self.config.max_memory_bytes {
            return None;
        }
        let vi = self.variants.len() as u32;
        let pid = match sibling {
            Some(pid) => {
                self.patterns[pid as usize - 1].variants.push(vi);
                pid
            }
            None => {
                self.patterns.push(Pattern {
                    count: 0,
                    catch_all: false,
                    loose: false,
                    variants: vec![vi],
                    template: String::new(),
                });
                self.patterns.len() as PatternId
            }
        };
        self.fast.push(fast_kind(&tokens, max_text));
        self.variants.push(Variant {
            pattern: pid,
            key_hash: key.1,
            tokens,
        });
        self.learnt += 1;
        self.learnt_bytes += bytes;
        self.refresh_template(pid);
        self.buckets.entry(key).or_default().push(vi);
        self.families.entry(key.1).or_default().push(vi);
        Some(vi)
    }

    fn catch_all(&mut self, len: u16) -> u32 {
        if let Some(&vi) = self.catch_alls.get(&len) {
            return vi;
        }
        let slot = slot_hash();
        let tokens = (0..len)
            .map(|_| TemplateToken {
                hash: slot,
                var: true,
                plain: false,
                anchor: false,
                text: SLOT.into(),
            })
            .collect();
        let pid = self.patterns.len() as PatternId + 1;
        let vi = self.variants.len() as u32;
        // Catch-alls live in no bucket; their entry only keeps `fast` aligned.
        self.fast.push(Fast::No);
        self.variants.push(Variant {
            pattern: pid,
            key_hash: 0,
            tokens,
        });
        self.patterns.push(Pattern {
            count: 0,
            catch_all: true,
            loose: false,
            variants: vec![vi],
            template: String::new(),
        });
        self.refresh_template(pid);
        self.catch_alls.insert(len, vi);
        vi
    }

    /// Rebuilds the lookup structures from `patterns` and `variants` (after a restore).
    pub(crate) fn from_parts(
        config: MinerConfig,
        patterns: Vec<Pattern>,
        variants: Vec<Variant>,
    ) -> Self {
        let mut miner = Self {
            patterns,
            variants,
            ..Self::empty(config)
        };
        let max_text = usize::from(miner.config.max_token_text_bytes);
        miner.fast = miner
            .variants
            .iter()
            .map(|v| {
                if miner.patterns[v.pattern as usize - 1].catch_all {
                    Fast::No
                } else {
                    fast_kind(&v.tokens, max_text)
                }
            })
            .collect();
        // In creation order, as `ingest` filled them: ties between equally good templates go
        // to the oldest, and a restored miner must break them the same way.
        for (vi, v) in miner.variants.iter().enumerate() {
            let vi = vi as u32;
            if miner.patterns[v.pattern as usize - 1].catch_all {
                miner.catch_alls.insert(v.tokens.len() as u16, vi);
                continue;
            }
            miner.learnt += 1;
            miner.learnt_bytes += variant_bytes(&v.tokens);
            let key = (v.tokens.len() as u16, v.key_hash);
            miner.buckets.entry(key).or_default().push(vi);
            miner.families.entry(v.key_hash).or_default().push(vi);
        }
        for pid in 1..=miner.patterns.len() as PatternId {
            miner.refresh_template(pid);
        }
        // A restored miner is where the saved one was: nothing has changed since.
        miner.revision = 0;
        miner.changed.clear();
        miner
    }
}

/// Same length, and every byte where they differ is a digit in both.
fn differ_in_digits(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .all(|(x, y)| x == y || x.is_ascii_digit() && y.is_ascii_digit())
}

/// Estimated memory of a template: its tokens, their text twice (tokens and the rendered
/// template) and its entries in the pattern, bucket and family lists.
fn variant_bytes(tokens: &[TemplateToken]) -> u64 {
    let text: usize = tokens.iter().map(|t| 2 * t.text.len() + 1).sum();
    (std::mem::size_of::<Variant>()
        + std::mem::size_of_val(tokens)
        + text
        + 3 * std::mem::size_of::<u32>()) as u64
}

fn bucket_key(m: &Masked) -> BucketKey {
    (m.tokens().len() as u16, first_word_key(m.tokens()))
}

/// The first plain word among the leading tokens names the bucket, with its position: a
/// leading name, id or timestamp (`com.example.job:`, `12:00:01`) varies within one event
/// and would scatter it over buckets that never meet, while keying everything without a
/// leading word on token count alone would make that one bucket hold most templates.
fn first_word_key(toks: &[crate::mask::Token]) -> u64 {
    toks.iter()
        .take(KEY_TOKENS)
        .enumerate()
        .find(|(_, t)| t.plain)
        .map_or(0, |(i, t)| t.hash.rotate_left(i as u32 * 8) | 1)
}

/// What [`Miner::fast_match`] may do with a variant of these tokens: give up on a token whose
/// text was cut (its hash is of the whole token) or a constant unit after a position that
/// became a slot (the message's unit there is masked as a slot after a value: `took a.b ms`
/// generalised to `took <*> ms` does not equal `took 5 ms`); skip one without anchors (the
/// whole path lets only messages without anchors take it, and a message that equals another
/// template's constants has some). A constant is never `var`: a token holding `<*>` as
/// written is compared as a slot-holding token, masked on its own.
fn fast_kind(tokens: &[TemplateToken], max_text: usize) -> Fast {
    for (i, t) in tokens.iter().enumerate() {
        if t.text.len() >= max_text || !t.var && i > 0 && tokens[i - 1].var && is_unit_word(&t.text)
        {
            return Fast::No;
        }
    }
    if tokens.iter().any(|t| t.anchor) {
        Fast::Yes
    } else {
        Fast::Skip
    }
}

/// `template` and `m` have the same non-empty skeleton (sequence of anchor tokens).
fn same_skeleton(template: &[TemplateToken], m: &Masked) -> bool {
    let mut anchors = m.tokens().iter().filter(|t| t.anchor).map(|t| t.hash);
    let mut any = false;
    template.iter().filter(|t| t.anchor).all(|t| {
        any = true;
        anchors.next() == Some(t.hash)
    }) && any
        && anchors.next().is_none()
}

/// The runs of constant tokens of a template's text (tokens joined by single spaces, as
/// [`Miner::template`] gives it), each run joined by single spaces: a token holding a slot
/// (`<*>`, as the miner marks them) or cut for display (ending in `…`) ends a run. Tokens of
/// a template never hold whitespace, so splitting at spaces gives them back.
pub fn constant_runs_of(template: &str) -> Vec<String> {
    let mut runs = Vec::new();
    let mut run = String::new();
    for token in template.split(' ') {
        if token.is_empty() || token.contains(SLOT) || token.ends_with('…') {
            if !run.is_empty() {
                runs.push(std::mem::take(&mut run));
            }
            continue;
        }
        if !run.is_empty() {
            run.push(' ');
        }
        run.push_str(token);
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

fn render(tokens: &[TemplateToken]) -> String {
    let mut s = String::with_capacity(tokens.iter().map(|t| t.text.len() + 1).sum());
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&t.text);
    }
    s
}

fn cut_text(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Token `i` of the fast path's scratch with its hash, computed on first use (`None` past the
/// message's tokens). A hash that comes out 0 is taken as 1: the token then matches no
/// template's constant on the fast path, and the whole path decides.
fn raw_hash(raw: &mut [(u32, u32, u64)], message: &str, i: usize) -> Option<(u32, u32, u64)> {
    let t = raw.get_mut(i)?;
    if t.2 == 0 {
        t.2 = hash_bytes(&message.as_bytes()[t.0 as usize..t.1 as usize]).max(1);
    }
    Some(*t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn miner() -> Miner {
        Miner::new(MinerConfig::default()).expect("default config is valid")
    }

    #[test]
    fn variable_parts_share_a_pattern() {
        let mut m = miner();
        let a = m.ingest("Connection from 10.0.0.1 closed after 12ms");
        let b = m.ingest("Connection from 192.168.1.7:8080 closed after 3s");
        let c = m.ingest("Connection from 10.0.0.9 refused");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(m.template(a), Some("Connection from <*> closed after <*>"));
        assert_eq!(m.pattern(a).map(|p| p.count), Some(2));
    }

    /// Messages where masking looks at a neighbour, holds slots as written, or cuts a long
    /// token: the fast path must give the whole path's answer on each.
    #[test]
    fn the_fast_path_agrees_where_masking_is_subtle() {
        let long = "x".repeat(300);
        let messages = [
            // `ms` stays a constant after a compound name, which then becomes a slot.
            "took a.b ms to answer",
            "took c.d ms to answer",
            "took 5 ms to answer",
            "took 5 ms to answer",
            "took 7 ms to answer",
            "took ms ms to answer",
            "took fast ms to answer",
            "size 5.2 KB, free 93 B",
            "size 7 KB, free 1 B",
            "size big KB, free 1 B",
            "login uid=0 user=root ok",
            "login uid=1000 user=root ok",
            "login uid=1000 user=guest ok",
            "value '<*>' kept as <*> literally",
            "value 'x' kept as <*> literally",
            "value 'y' kept as <*> literally",
            "token aaaa in place",
            "token aaab in place",
            "Connection from 10.0.0.1 closed",
            "Connection from 10.0.0.2 closed",
            "Connection from host-a closed",
            "eth0 link up",
            "eth1 link up",
            "Jan link up",
            "",
            "   ",
            "one",
            "one",
        ];
        let mut all: Vec<String> = messages.iter().map(|m| m.to_string()).collect();
        all.push(format!("payload {long} end"));
        all.push(format!("payload {long} end"));
        all.push(format!("payload {long}y end"));
        // A long key's slot lies past the stored (cut) text; then a template of a slot there,
        // in the same bucket: the first is the best match, and only masking can tell.
        all.push(format!("payload {long}=5 end"));
        all.push("payload 77 end".to_string());
        all.push(format!("payload {long}=6 end"));
        for round in 0..2 {
            let mut fast = miner();
            let mut whole = miner();
            for m in &all {
                assert_eq!(
                    fast.ingest(m),
                    whole.ingest_without_fast_path(m),
                    "round {round}: {m:?}"
                );
            }
            assert_eq!(fast.to_bytes(), whole.to_bytes());
            all.reverse();
        }
        // Few tokens allowed: messages longer than that fold, and the fast path stays out.
        let config = MinerConfig {
            max_tokens: 3,
            ..MinerConfig::default()
        };
        let (mut fast, mut whole) = (Miner::new(config).unwrap(), Miner::new(config).unwrap());
        for m in ["a b c d e", "a b c d f", "a b c", "a b c", "a b"] {
            assert_eq!(fast.ingest(m), whole.ingest_without_fast_path(m), "{m:?}");
        }
        assert_eq!(fast.to_bytes(), whole.to_bytes());
    }

    #[test]
    fn revision_and_changes_follow_template_changes_not_counts() {
        let mut m = miner();
        let a = m.ingest("Connection from 10.0.0.1 closed by gateway.main");
        assert_eq!(m.take_changed(), vec![a]);
        let r = m.revision();
        assert!(r > 0);
        // Joins as it is: a count moves, nothing a later message depends on.
        m.ingest("Connection from 10.0.0.2 closed by gateway.main");
        assert_eq!(m.revision(), r);
        assert!(m.take_changed().is_empty());
        // Generalises the template: the text a reader shows changes.
        m.ingest("Connection from 10.0.0.3 closed by gateway.backup");
        assert!(m.revision() > r);
        assert_eq!(m.take_changed(), vec![a]);
        // A restored miner has changed nothing yet and gives replayed messages their ids.
        let restored = Miner::from_bytes(&m.to_bytes()).expect("state restores");
        assert_eq!(restored.revision(), 0);
        assert_eq!(
            restored.assigned("Connection from 10.9.9.9 closed by gateway.main"),
            Some(a)
        );
    }

    #[test]
    fn assigned_finds_the_catch_all_a_full_miner_used() {
        let mut m = Miner::new(MinerConfig {
            max_templates: 1,
            ..MinerConfig::default()
        })
        .expect("valid config");
        let first = m.ingest("disk sda failed");
        let overflow = m.ingest("fan speed low now");
        assert_ne!(first, overflow);
        assert!(m.pattern(overflow).is_some_and(|p| p.catch_all));
        assert_eq!(m.lookup("pump pressure high again"), None);
        assert_eq!(m.assigned("pump pressure high again"), Some(overflow));
        assert_eq!(m.assigned("one two"), None);
    }

    #[test]
    fn ids_stay_while_templates_generalise() {
        let mut m = miner();
        let id = m.ingest("user alice logged in from host-a.example.com via ssh");
        assert_eq!(
            m.ingest("user alice logged in from host-b.example.com via ssh"),
            id
        );
        // A compound name differs: the template generalises, the id stays.
        assert_eq!(
            m.ingest("user alice logged in from host-b.example.com via ssh_v2"),
            id
        );
        assert_eq!(
            m.template(id),
            Some("user alice logged in from <*> via <*>")
        );
        // Numbered instances of one thing are one event.
        assert_eq!(
            m.ingest("link up on eth1 at 10 Mbps"),
            m.ingest("link up on eth0 at 100 Mbps")
        );
        // Two different plain words are another event.
        let other = m.ingest("user alice logged out from host-b.example.com via ssh");
        assert_ne!(other, id);
        assert_eq!(m.patterns().map(|p| p.id).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn other_token_counts_with_the_same_constants_join() {
        let mut m = miner();
        let a = m.ingest("host:80 close, 785 bytes sent, lifetime 00:39");
        let b = m.ingest("host:80 close, 785 bytes (1.2 KB) sent, lifetime <1 sec");
        assert_eq!(a, b);
        assert_ne!(
            a,
            m.ingest("host:80 close, 785 bytes sent, lifetime 00:39 early")
        );
        assert_eq!(
            m.lookup("host:80 close, 9 bytes (9.9 KB) sent, lifetime 00:01"),
            Some(a)
        );
    }

    #[test]
    fn an_all_slot_template_takes_only_values() {
        let mut m = miner();
        let values = m.ingest("12 34 56");
        assert_eq!(m.ingest("7 8.5 0x1f"), values);
        assert_ne!(m.ingest("a.b c_d x:y"), values);
    }

    #[test]
    fn lookup_does_not_learn() {
        let mut m = miner();
        let id = m.ingest("disk full on /var after 3 retries");
        assert_eq!(m.lookup("disk full on /home after 7 retries"), Some(id));
        assert_eq!(m.lookup("something else entirely"), None);
        assert_eq!(m.len(), 1);
        assert_eq!(m.pattern(id).map(|p| p.count), Some(1));
    }

    #[test]
    fn the_template_cap_sends_new_kinds_to_catch_alls() {
        let config = MinerConfig {
            max_templates: 3,
            ..MinerConfig::default()
        };
        let mut m = Miner::new(config).expect("valid");
        let words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
        let ids: Vec<_> = words
            .iter()
            .map(|w| m.ingest(&format!("{w} started worker {w}")))
            .collect();
        assert_eq!(ids[..3], [1, 2, 3]);
        // Everything beyond the cap shares the catch-all of its token count.
        assert_eq!(ids[3], 4);
        assert!(ids[3..].iter().all(|&i| i == 4));
        let p = m.pattern(4).expect("catch-all exists");
        assert!(p.catch_all);
        assert_eq!(p.template, "<*> <*> <*> <*>");
        assert_eq!(p.count, 3);
        // Learnt patterns still match, in other token counts too.
        assert_eq!(m.ingest("bravo started worker bravo"), 2);
        assert_eq!(m.ingest("bravo started worker bravo 42 7"), 2);
        // One catch-all per token count, and no more.
        assert_eq!(m.ingest("golf went"), 5);
        assert_eq!(m.ingest("hotel went"), 5);
        assert_eq!(m.len(), 5);
    }

    #[test]
    fn the_memory_cap_sends_new_kinds_to_catch_alls() {
        let config = MinerConfig {
            max_memory_bytes: 4096,
            ..MinerConfig::default()
        };
        let mut m = Miner::new(config).expect("valid");
        for i in 0..1000 {
            let word: String = (0..8)
                .map(|k| (b'a' + ((i >> k) & 7) as u8 + k as u8) as char)
                .collect();
            m.ingest(&format!("{word} did something with {word}"));
            assert!(m.memory_bytes() <= 4096);
        }
        assert!(m.patterns().any(|p| p.catch_all));
        assert!(m.len() < 100);
    }

    #[test]
    fn a_full_bucket_sends_new_kinds_to_the_catch_all() {
        let config = MinerConfig {
            max_bucket_patterns: 2,
            ..MinerConfig::default()
        };
        let mut m = Miner::new(config).expect("valid");
        let a = m.ingest("job alpha done");
        let b = m.ingest("job bravo done");
        let c = m.ingest("job charlie done");
        assert!(a != b && b != c && a != c);
        assert!(m.pattern(c).expect("exists").catch_all);
    }

    #[test]
    fn long_messages_are_cut_to_max_tokens() {
        let config = MinerConfig {
            max_tokens: 4,
            ..MinerConfig::default()
        };
        let mut m = Miner::new(config).expect("valid");
        let a = m.ingest("a b c d e f g");
        let b = m.ingest("a b c x y z w v u");
        assert_eq!(a, b);
        assert_eq!(m.template(a), Some("a b c <*>"));
    }

    #[test]
    fn empty_and_odd_messages() {
        let mut m = miner();
        let e = m.ingest("");
        assert_eq!(m.ingest("   \t "), e);
        assert_eq!(m.template(e), Some(""));
        let long = "x".repeat(10_000);
        let id = m.ingest(&long);
        assert!(m.template(id).is_some_and(|t| t.len() < 300));
        assert_eq!(m.ingest(&long), id);
        m.ingest("ünïcödé 名前 = ✓");
        assert_eq!(m.template(0), None);
        assert_eq!(m.template(999), None);
    }

    #[test]
    fn config_is_validated() {
        let bad = MinerConfig {
            similarity: 1.5,
            ..MinerConfig::default()
        };
        assert_eq!(Miner::new(bad).err(), Some(ConfigError::Fraction(1.5)));
        let bad = MinerConfig {
            max_tokens: 0,
            ..MinerConfig::default()
        };
        assert_eq!(
            Miner::new(bad).err(),
            Some(ConfigError::Zero { name: "max_tokens" })
        );
    }
}
