//! Searching a block segment (`logsift_store::blocks`): a query becomes a block plan, which
//! names the blocks that may hold a match from the block index and the id filters, and a
//! record check ([`Matcher`]) over the records of those blocks.
//!
//! The plan is a superset: each leaf asks for the words a matching record must hold, so a
//! block without them holds no match. Negations, ranges and prefixes plan to every block and
//! are left to the check. A single word known to the block index (a message word, a keyword
//! value, a field word, a severity) is exact at block level: its total is the sum of its
//! frequency over the blocks wholly inside the time range, and only the blocks that supply
//! hits are read.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use logsift_store::blocks::{
    hash_word, pattern_word, BlockSegment, DecodedBlock, RecordMeta, FIELD_KEY_MARK,
    FIELD_TYPED_MARK, FIELD_WORD_MARK, KEYWORD_MARK, WORD_SEP,
};
use logsift_store::tokens;

use crate::lang::{Ast, Keyword, Leaf, Target};
use crate::matcher::Matcher;
use crate::{QueryError, SortOrder};

/// Which blocks may hold matches.
#[derive(Debug, Clone, PartialEq)]
enum Plan {
    All,
    /// A word of the block index (already marked for keywords and fields).
    Word(String),
    /// A high-entropy token, found through the bloom filters.
    Id(u64),
    And(Vec<Plan>),
    Or(Vec<Plan>),
}

/// One record of a block segment that a search keeps: what its hit is built from.
#[derive(Debug, Clone)]
pub struct BlockHit {
    pub timestamp: i64,
    pub id: u64,
    pub received_at: i64,
    pub format: logsift_core::Format,
    pub source: String,
    pub raw: Vec<u8>,
    /// Its pattern id; 0: none.
    pub pattern: u32,
}

impl BlockHit {
    /// Record `r` of `block` (whose lines are loaded), kept.
    pub fn of(block: &DecodedBlock, r: &RecordMeta) -> Self {
        BlockHit {
            timestamp: r.timestamp,
            id: r.id,
            received_at: r.received_at,
            format: r.format,
            source: block.source(r).to_string(),
            raw: block.raw(r).to_vec(),
            pattern: r.pattern,
        }
    }
}

/// What [`search`] found.
#[derive(Debug, Default)]
pub struct BlockHits {
    /// Exact number of matching records in the range.
    pub total: u64,
    /// Of those, how many come after the cursor (all of them without one).
    pub after_cursor: u64,
    /// The first `limit` matches after the cursor, in the order asked for.
    pub hits: Vec<BlockHit>,
    /// Blocks read and checked.
    pub blocks_read: usize,
    /// What the records' patterns answered.
    pub vouched: Vouched,
}

/// A query prepared for one block segment: its candidate blocks and the record check.
pub struct BlockQuery<'s> {
    segment: &'s BlockSegment,
    matcher: Matcher,
    required: Vec<memchr::memmem::Finder<'static>>,
    /// Whether no required word can be in a timestamp a line spelled, so that lines are
    /// checked for them as blocks store them (without it), and only those that hold them all
    /// are spelled out whole (`BlockSegment::read_lines_where`).
    on_stored_lines: bool,
    /// Per record of the block being read, whether its line holds every required word.
    kept: Vec<bool>,
    parse: logsift_parse::ParseOptions,
    start: Option<i64>,
    end: Option<i64>,
    /// A record holds the plan's single word iff it matches: counts come from frequencies.
    exact: bool,
    header_test: Option<HeaderTest>,
    freqs: Option<Vec<u32>>,
    candidates: Vec<bool>,
    block: DecodedBlock,
    lower: Vec<u8>,
    pub blocks_read: usize,
    pub vouched: Vouched,
    /// Words of the block index that every match holds (the plan's own words).
    must: Vec<String>,
    vouch: Option<Vouch>,
}

/// Records that match because of their log pattern: the constant text of every template of
/// the pattern satisfies the query (`Matcher::vouched_by`), so the record need not be read.
/// When as many records of a block hold one of the query's words as there are vouched-for
/// records (the block index counts records per word exactly, and every match holds each
/// word), the block's other records cannot match: the block is answered from its header, or,
/// when the block index also counts the vouching patterns' records in it (few enough
/// patterns), from the index alone.
#[derive(Clone)]
struct Vouch {
    trusted_after: u64,
    vouchers: std::sync::Arc<Vouchers>,
    /// Per word of `must`, its frequency in each block.
    freqs: Vec<Vec<u32>>,
    /// Per block, the records of vouching patterns, when `vouchers.ids` is known.
    counts: Option<Vec<u32>>,
    /// Per record of the block read last, whether its pattern vouches for it.
    marks: Vec<bool>,
}

/// The patterns that vouch for one query, over every template of the store.
struct Vouchers {
    /// By pattern id.
    sure: Vec<bool>,
    /// Those ids, when at most [`MAX_COUNTED_PATTERNS`].
    ids: Option<Vec<u32>>,
}

/// Below this many candidate blocks in range, records are vouched for one by one only.
const VOUCH_COUNT_MIN_BLOCKS: usize = 32;

#[cfg(not(test))]
fn vouch_count_min_blocks() -> usize {
    VOUCH_COUNT_MIN_BLOCKS
}

#[cfg(test)]
thread_local! {
    /// Tests over small segments lower the bar to take the counting paths.
    pub(crate) static VOUCH_COUNT_MIN: std::cell::Cell<usize> =
        const { std::cell::Cell::new(VOUCH_COUNT_MIN_BLOCKS) };
}

#[cfg(test)]
fn vouch_count_min_blocks() -> usize {
    VOUCH_COUNT_MIN.with(std::cell::Cell::get)
}

/// Past this many vouching patterns, their records per block are not summed from the index.
const MAX_COUNTED_PATTERNS: usize = 64;

impl Vouchers {
    fn of(book: &logsift_store::PatternBook, ast: &Ast) -> std::sync::Arc<Vouchers> {
        book.derived(&format!("vouch {ast:?}"), |book| {
            let mut matcher = Matcher::new(ast);
            let n = book.len();
            let mut sure = vec![false; n + 1];
            for id in 1..=n as u32 {
                if let Some(runs) = book.runs(id) {
                    sure[id as usize] = matcher.vouched_by(&runs);
                }
            }
            let ids: Vec<u32> = (1..=n as u32).filter(|&id| sure[id as usize]).collect();
            Vouchers {
                sure,
                ids: (ids.len() <= MAX_COUNTED_PATTERNS).then_some(ids),
            }
        })
    }
}

impl Vouch {
    fn vouches(&self, id: u64, pattern: u32) -> bool {
        id > self.trusted_after
            && self
                .vouchers
                .sure
                .get(pattern as usize)
                .copied()
                .unwrap_or(false)
    }
}

/// How many records a search found through their patterns, without reading them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Vouched {
    /// Records counted or kept because their pattern vouched for them.
    pub records: u64,
    /// Blocks whose other records the word counts ruled out.
    pub blocks: u64,
    /// Blocks counted from the block index alone (their patterns' records and word counts).
    pub indexed: u64,
}

impl<'s> BlockQuery<'s> {
    /// `ast` over the records of `segment` in `[start, end)` (`None`: open); `parse` is the
    /// index's parse options (the receive time is taken per record).
    pub fn new(
        segment: &'s BlockSegment,
        ast: &Ast,
        parse: &logsift_parse::ParseOptions,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Result<Self, QueryError> {
        let mut analyzer = tokens::word_analyzer();
        let plan = simplify(plan(ast, &mut analyzer));
        let n = segment.blocks.len();
        let exact = exact_word(ast);
        let mut freqs = None;
        let candidates = match (&plan, exact) {
            (Plan::Word(w), true) => {
                let f = word_freqs(segment, w)?;
                let c = f.iter().map(|&x| x > 0).collect();
                freqs = Some(f);
                c
            }
            (Plan::All, true) => vec![true; n],
            _ => eval(segment, &plan)?,
        };
        let must = match &plan {
            Plan::Word(w) => vec![w.clone()],
            Plan::And(items) => items
                .iter()
                .filter_map(|p| match p {
                    Plan::Word(w) => Some(w.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let words = required_words(ast, &mut analyzer);
        let required = words
            .iter()
            .map(|w| memchr::memmem::Finder::new(w.as_bytes()).into_owned())
            .collect();
        let on_stored_lines = !words.is_empty()
            && words
                .iter()
                .all(|w| !logsift_store::timetext::word_may_be_in_spelling(w.as_bytes()));
        Ok(BlockQuery {
            segment,
            matcher: Matcher::new(ast),
            required,
            on_stored_lines,
            kept: Vec::new(),
            parse: *parse,
            start,
            end,
            exact,
            header_test: HeaderTest::of(ast),
            freqs,
            candidates,
            block: DecodedBlock::default(),
            lower: Vec::new(),
            blocks_read: 0,
            must,
            vouch: None,
            vouched: Vouched::default(),
        })
    }

    /// Lets records whose log pattern vouches for a match (see [`Vouch`]) skip the record
    /// check, with the templates of `book`; `ast` is the query this was made for. Nothing
    /// changes for queries that a pattern cannot vouch for, or that the block index answers
    /// exactly already.
    pub fn with_patterns(
        mut self,
        book: &logsift_store::PatternBook,
        ast: &Ast,
    ) -> Result<Self, QueryError> {
        if self.exact || self.header_test.is_some() || !self.matcher.vouchable() {
            return Ok(self);
        }
        let vouchers = Vouchers::of(book, ast);
        if !vouchers.sure.contains(&true) {
            return Ok(self);
        }
        // Word counts are read for the whole segment: worth it only when many blocks are to
        // be read (a 1-minute window of a large segment went from 3 to 10 ms at 5 GB).
        let freqs = if self.candidates().len() >= vouch_count_min_blocks() {
            self.must
                .iter()
                .map(|w| word_freqs(self.segment, w))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        let counts = match (&vouchers.ids, freqs.is_empty()) {
            (Some(ids), false) => {
                let mut counts = vec![0u32; self.segment.blocks.len()];
                for &id in ids {
                    let f = word_freqs(self.segment, &pattern_word(id))?;
                    for (c, f) in counts.iter_mut().zip(f) {
                        *c += f;
                    }
                }
                Some(counts)
            }
            _ => None,
        };
        self.vouch = Some(Vouch {
            trusted_after: book.trusted_after(),
            vouchers,
            freqs,
            counts,
            marks: Vec::new(),
        });
        Ok(self)
    }

    /// The matches of block `ord` when its vouching patterns' records are all of them, from
    /// the block index alone (see [`Vouch`]).
    fn vouched_count(&self, ord: usize) -> Option<u32> {
        let v = self.vouch.as_ref()?;
        let counts = v.counts.as_ref()?;
        let n = *counts.get(ord)?;
        (self.segment.blocks[ord].first_id > v.trusted_after
            && v.freqs.iter().any(|f| f.get(ord) == Some(&n)))
        .then_some(n)
    }

    /// Marks the records of the block just read whose pattern vouches for them; whether the
    /// block's other records are ruled out.
    fn vouch_for_block(&mut self, ord: usize) -> bool {
        let Some(v) = self.vouch.as_mut() else {
            return false;
        };
        let mut marks = std::mem::take(&mut v.marks);
        marks.clear();
        let mut n = 0u32;
        for r in &self.block.records {
            let sure = v.vouches(r.id, r.pattern);
            marks.push(sure);
            n += u32::from(sure);
        }
        v.marks = marks;
        let ruled_out = v.freqs.iter().any(|f| f.get(ord) == Some(&n));
        self.vouched.blocks += u64::from(ruled_out);
        ruled_out
    }

    /// Calls `visit` with every match, block by block (see [`Self::matches_in`] for what
    /// `need` loads), and stops early when `budget` runs out (having marked it cut).
    pub fn scan(
        &mut self,
        budget: &crate::Budget,
        need: Need,
        mut visit: impl FnMut(&DecodedBlock, &RecordMeta, Option<&logsift_core::Record<'_>>),
    ) -> Result<(), QueryError> {
        for ord in self.candidates() {
            if budget.stop_here() {
                break;
            }
            self.matches_in(ord, need, &mut visit)?;
        }
        Ok(())
    }

    /// The blocks that may hold matches in the range, by ordinal.
    pub fn candidates(&self) -> Vec<usize> {
        let (start, end) = (self.start, self.end);
        (0..self.segment.blocks.len())
            .filter(|&o| {
                let b = &self.segment.blocks[o];
                self.candidates[o]
                    && start.is_none_or(|s| b.ts_max >= s)
                    && end.is_none_or(|e| b.ts_min < e)
            })
            .collect()
    }

    /// The number of matches in block `ord`, when the index knows it without reading the
    /// block: an exact query over a block wholly inside the range.
    pub fn known_count(&self, ord: usize) -> Option<u64> {
        let b = &self.segment.blocks[ord];
        let inside =
            self.start.is_none_or(|s| b.ts_min >= s) && self.end.is_none_or(|e| b.ts_max < e);
        if !inside {
            return None;
        }
        if !self.exact {
            return self.vouched_count(ord).map(u64::from);
        }
        Some(match &self.freqs {
            Some(f) => u64::from(f[ord]),
            None => u64::from(b.records),
        })
    }

    /// Reads block `ord` and calls `visit` with each of its records in the range that
    /// matches: with the block's lines loaded unless `need` is [`Need::Header`], and with the
    /// record parsed when `need` is [`Need::Record`] or the query needs the record's text
    /// (a query on the time range and severity alone is checked on the block's header).
    pub fn matches_in(
        &mut self,
        ord: usize,
        need: Need,
        mut visit: impl FnMut(&DecodedBlock, &RecordMeta, Option<&logsift_core::Record<'_>>),
    ) -> Result<(), QueryError> {
        self.segment.read_header(ord, &mut self.block)?;
        self.blocks_read += 1;
        let (start, end) = (self.start, self.end);
        let in_range = move |r: &RecordMeta| {
            start.is_none_or(|s| r.timestamp >= s) && end.is_none_or(|e| r.timestamp < e)
        };
        if let Some(test) = self.header_test.filter(|_| need != Need::Record) {
            if need == Need::Lines {
                self.segment.read_lines(ord, &mut self.block)?;
            }
            let block = &self.block;
            for r in block.records.iter().filter(|r| in_range(r)) {
                if test.matches(r) {
                    visit(block, r, None);
                }
            }
            return Ok(());
        }
        let ruled_out = self.vouch_for_block(ord);
        let no_sure = Vec::new();
        let sure = self.vouch.as_ref().map_or(&no_sure, |v| &v.marks);
        if ruled_out {
            // Only the vouched-for records match: their lines are read only if needed.
            if need != Need::Header {
                let mut i = 0;
                self.segment
                    .read_lines_where(ord, &mut self.block, |_, _| {
                        i += 1;
                        sure[i - 1]
                    })?;
            }
            let block = &self.block;
            for (r, _) in block
                .records
                .iter()
                .zip(sure)
                .filter(|(r, sure)| **sure && in_range(r))
            {
                self.vouched.records += 1;
                if need == Need::Record {
                    let opts = logsift_parse::ParseOptions {
                        received_at_ns: r.received_at,
                        ..self.parse
                    };
                    let record = logsift_parse::parse(r.format, block.raw(r), &opts);
                    visit(block, r, Some(&record));
                } else {
                    visit(block, r, None);
                }
            }
            return Ok(());
        }
        if self.on_stored_lines {
            let (required, lower, kept) = (&self.required, &mut self.lower, &mut self.kept);
            kept.clear();
            self.segment
                .read_lines_where(ord, &mut self.block, |lines, range| {
                    // The block's lines are lowered in one pass, at its first record.
                    if range.start == 0 {
                        lower.clear();
                        lower.extend(lines.iter().map(u8::to_ascii_lowercase));
                    }
                    if sure.get(kept.len()).copied().unwrap_or(false) {
                        kept.push(true);
                        return need != Need::Header;
                    }
                    let keep = lower
                        .get(range)
                        .is_none_or(|line| !lacks_words(required, line));
                    kept.push(keep);
                    keep
                })?;
        } else {
            self.segment.read_lines(ord, &mut self.block)?;
            let block = &self.block;
            self.kept.clear();
            if self.required.is_empty() {
                self.kept.resize(block.records.len(), true);
            } else {
                self.lower.clear();
                self.lower
                    .extend(block.data.iter().map(u8::to_ascii_lowercase));
                for (i, r) in block.records.iter().enumerate() {
                    let sure = sure.get(i).copied().unwrap_or(false);
                    let lacks = !sure && lacks_words(&self.required, &self.lower[r.raw.clone()]);
                    self.kept.push(!lacks);
                }
            }
        }
        let block = &self.block;
        for (i, (r, _)) in block
            .records
            .iter()
            .zip(&self.kept)
            .enumerate()
            .filter(|(_, (r, kept))| **kept && in_range(r))
        {
            let vouched = sure.get(i).copied().unwrap_or(false);
            if vouched && need != Need::Record {
                self.vouched.records += 1;
                visit(block, r, None);
                continue;
            }
            let opts = logsift_parse::ParseOptions {
                received_at_ns: r.received_at,
                ..self.parse
            };
            let record = logsift_parse::parse(r.format, block.raw(r), &opts);
            if vouched
                || self
                    .matcher
                    .matches_with_pattern(&record, block.source(r), r.pattern)
            {
                self.vouched.records += u64::from(vouched);
                visit(block, r, Some(&record));
            }
        }
        Ok(())
    }
}

/// What a visitor of [`BlockQuery::matches_in`] needs of each match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Its id, times, severity, source and stream: the block's header.
    Header,
    /// Also its line.
    Lines,
    /// Also the record parsed.
    Record,
}

/// A query that the block header answers for each record: everything, a severity range, or
/// a pattern id.
#[derive(Debug, Clone, Copy)]
enum HeaderTest {
    All,
    Severity { min: u8, max: u8 },
    Pattern(u32),
}

impl HeaderTest {
    fn of(ast: &Ast) -> Option<HeaderTest> {
        match ast {
            Ast::All => Some(HeaderTest::All),
            Ast::Leaf(Leaf::Severity { min, max }) => Some(HeaderTest::Severity {
                min: *min,
                max: *max,
            }),
            Ast::Leaf(Leaf::Pattern { id }) => Some(HeaderTest::Pattern(*id)),
            _ => None,
        }
    }

    fn matches(self, r: &RecordMeta) -> bool {
        match self {
            HeaderTest::All => true,
            HeaderTest::Severity { min, max } => r.severity.is_some_and(|c| c >= min && c <= max),
            HeaderTest::Pattern(id) => r.pattern == id,
        }
    }
}

/// Which page of matches [`search`] answers.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Records timestamped in `[start, end)` (`None`: open).
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub order: SortOrder,
    /// Only matches after this (timestamp, id) in `order`.
    pub after: Option<(i64, u64)>,
    pub limit: usize,
    /// Only records whose id lies in this inclusive range.
    pub ids: Option<(u64, u64)>,
    /// Only the blocks of this stream (`logsift_store::stream_key`).
    pub stream: Option<u64>,
    /// Stops (and marks the answer cut short) when this runs out.
    pub budget: Option<crate::Budget>,
    /// The store's pattern templates: records whose pattern vouches for a match are not read
    /// ([`BlockQuery::with_patterns`]).
    pub patterns: Option<std::sync::Arc<logsift_store::PatternBook>>,
}

/// The first `limit` records of `segment` that match `ast` on `page`, and their exact totals:
/// the block search of a page of hits.
pub fn search(
    segment: &BlockSegment,
    ast: &Ast,
    parse: &logsift_parse::ParseOptions,
    page: &Page,
) -> Result<BlockHits, QueryError> {
    let (order, limit, ids, stream) = (page.order, page.limit, page.ids, page.stream);
    let mut query = BlockQuery::new(segment, ast, parse, page.start, page.end)?;
    if let Some(book) = &page.patterns {
        query = query.with_patterns(book, ast)?;
    }
    let mut order_of = query.candidates();
    order_of.retain(|&o| {
        let b = &segment.blocks[o];
        stream.is_none_or(|s| b.stream == s)
            && ids.is_none_or(|(lo, hi)| b.last_id >= lo && b.first_id <= hi)
    });
    let rank = Ranking::of(page);
    // The blocks that may hold the best hits first.
    match order {
        SortOrder::Desc => order_of.sort_by_key(|&o| Reverse(segment.blocks[o].ts_max)),
        SortOrder::Asc => order_of.sort_by_key(|&o| segment.blocks[o].ts_min),
    }
    let mut out = BlockHits::default();
    // Its top is the worst hit kept.
    let mut top: BinaryHeap<Worst> = BinaryHeap::new();
    let mut kept: Vec<BlockHit> = Vec::new();
    let mut count_from = order_of.len();
    for (i, &ord) in order_of.iter().enumerate() {
        if page.budget.as_ref().is_some_and(crate::Budget::stop_here) {
            break;
        }
        // In answer order the block's records lie between `best` and `worst`.
        let (best, worst) = bounds(&segment.blocks[ord], order);
        // Blocks come in the order of their best key and the page only gets stricter: once
        // one cannot enter it, none after it can, and the rest are only counted.
        if limit == 0
            || (top.len() >= limit && top.peek().is_some_and(|w| !rank.better(best, w.key)))
        {
            count_from = i;
            break;
        }
        let all_past = rank.past_cursor(best);
        let none_past = !rank.past_cursor(worst);
        let known = query
            .known_count(ord)
            .filter(|_| (all_past || none_past) && ids.is_none());
        if let Some(k) = known {
            query.vouched.indexed += u64::from(!query.exact);
            out.total += k;
            if all_past {
                out.after_cursor += k;
            }
            if none_past {
                continue;
            }
        }
        // Lines only for a block that may enter the page.
        let need = if none_past { Need::Header } else { Need::Lines };
        query.matches_in(ord, need, |block, r, _| {
            let key = (r.timestamp, r.id);
            if !rank.id_ok(r.id) {
                return;
            }
            if known.is_none() {
                out.total += 1;
            }
            if !rank.past_cursor(key) {
                return;
            }
            if known.is_none() {
                out.after_cursor += 1;
            }
            let hit = || BlockHit::of(block, r);
            if top.len() < limit {
                top.push(Worst {
                    key,
                    order,
                    slot: kept.len(),
                });
                kept.push(hit());
            } else if let Some(mut w) = top.peek_mut() {
                if rank.better(key, w.key) {
                    kept[w.slot] = hit();
                    w.key = key;
                }
            }
        })?;
    }
    let rest = &order_of[count_from..];
    let (total, after) = if rest.len() >= PARALLEL_COUNT_BLOCKS {
        // On both cores: this thread counts every other block, a second one the others.
        let count = |query: &mut BlockQuery, half: usize| {
            count_matches(query, rest.iter().skip(half).step_by(2).copied(), page)
        };
        let vouch = query.vouch.clone();
        let (mine, theirs) = std::thread::scope(|scope| {
            let theirs = scope.spawn(|| {
                let mut other = BlockQuery::new(segment, ast, parse, page.start, page.end)?;
                other.vouch = vouch;
                let counted = count(&mut other, 1)?;
                Ok::<_, QueryError>((counted, other.blocks_read, other.vouched))
            });
            let mine = count(&mut query, 0);
            let theirs = theirs
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (mine, theirs)
        });
        let ((total, after), ((other_total, other_after), other_read, other_vouched)) =
            (mine?, theirs?);
        query.blocks_read += other_read;
        query.vouched.records += other_vouched.records;
        query.vouched.blocks += other_vouched.blocks;
        query.vouched.indexed += other_vouched.indexed;
        (total + other_total, after + other_after)
    } else {
        count_matches(&mut query, rest.iter().copied(), page)?
    };
    out.total += total;
    out.after_cursor += after;
    out.blocks_read = query.blocks_read;
    out.vouched = query.vouched;
    let mut ranked = top.into_vec();
    ranked.sort();
    out.hits = ranked
        .into_iter()
        .map(|w| std::mem::replace(&mut kept[w.slot], empty_hit()))
        .collect();
    Ok(out)
}

/// Candidate blocks left to count, at least, for a page's count to go on two threads: fewer
/// are counted faster than a thread starts and plans the query again. Two in this crate's
/// tests, so that the layout tests' small corpus holds both layouts' totals and cursors to
/// the same answers through this path too.
const PARALLEL_COUNT_BLOCKS: usize = if cfg!(test) { 2 } else { 64 };

/// The best and the worst key, in answer order, that a record of block `b` can have.
fn bounds(b: &logsift_store::blocks::BlockInfo, order: SortOrder) -> ((i64, u64), (i64, u64)) {
    match order {
        SortOrder::Desc => ((b.ts_max, u64::MAX), (b.ts_min, 0)),
        SortOrder::Asc => ((b.ts_min, 0), (b.ts_max, u64::MAX)),
    }
}

/// The matches in `blocks` on `page` and those of them past its cursor (none of them on the
/// page itself): from the block index where it knows them, else from the blocks' headers and
/// lines.
fn count_matches(
    query: &mut BlockQuery,
    blocks: impl Iterator<Item = usize>,
    page: &Page,
) -> Result<(u64, u64), QueryError> {
    let rank = Ranking::of(page);
    let (mut total, mut after) = (0u64, 0u64);
    for ord in blocks {
        if page.budget.as_ref().is_some_and(crate::Budget::stop_here) {
            break;
        }
        let (best, worst) = bounds(&query.segment.blocks[ord], page.order);
        let all_past = rank.past_cursor(best);
        let none_past = !rank.past_cursor(worst);
        let known = query
            .known_count(ord)
            .filter(|_| (all_past || none_past) && page.ids.is_none());
        if let Some(k) = known {
            query.vouched.indexed += u64::from(!query.exact);
            total += k;
            if all_past {
                after += k;
            }
            continue;
        }
        query.matches_in(ord, Need::Header, |_, r, _| {
            if rank.id_ok(r.id) {
                total += 1;
                if rank.past_cursor((r.timestamp, r.id)) {
                    after += 1;
                }
            }
        })?;
    }
    Ok((total, after))
}

/// How a page ranks and filters the records of its blocks.
#[derive(Clone, Copy)]
struct Ranking {
    order: SortOrder,
    after: Option<(i64, u64)>,
    ids: Option<(u64, u64)>,
}

impl Ranking {
    fn of(page: &Page) -> Self {
        Ranking {
            order: page.order,
            after: page.after,
            ids: page.ids,
        }
    }

    /// Whether key `a` comes before `b` in the answer.
    fn better(self, a: (i64, u64), b: (i64, u64)) -> bool {
        match self.order {
            SortOrder::Desc => a > b,
            SortOrder::Asc => a < b,
        }
    }

    /// Whether key `k` comes after the cursor in the answer.
    fn past_cursor(self, k: (i64, u64)) -> bool {
        self.after.is_none_or(|a| self.better(a, k))
    }

    fn id_ok(self, id: u64) -> bool {
        self.ids.is_none_or(|(lo, hi)| id >= lo && id <= hi)
    }
}

/// A kept hit's key in a heap whose top is the worst one kept.
#[derive(PartialEq, Eq)]
struct Worst {
    key: (i64, u64),
    order: SortOrder,
    slot: usize,
}

impl Ord for Worst {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match self.order {
            SortOrder::Desc => other.key.cmp(&self.key),
            SortOrder::Asc => self.key.cmp(&other.key),
        }
    }
}

impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

fn empty_hit() -> BlockHit {
    BlockHit {
        timestamp: 0,
        id: 0,
        received_at: 0,
        format: logsift_core::Format::default(),
        source: String::new(),
        raw: Vec::new(),
        pattern: 0,
    }
}

/// Words every match holds in its message or fields: those of the positive message and
/// `fields.*` words and phrases the whole query requires (its leaf, or its AND's leaves).
fn required_words(ast: &Ast, analyzer: &mut tantivy::tokenizer::TextAnalyzer) -> Vec<String> {
    let mut out = Vec::new();
    let leaves: Vec<&Ast> = match ast {
        Ast::And(items) => items.iter().collect(),
        other => vec![other],
    };
    for leaf in leaves {
        if let Ast::Leaf(Leaf::Word { target, text } | Leaf::Phrase { target, text }) = leaf {
            if matches!(target, Target::Message | Target::Json(_)) {
                // A fields word may match a typed value, whose text need not be a word.
                if matches!(target, Target::Json(_)) && typed(text).is_some() {
                    continue;
                }
                let mut stream = analyzer.token_stream(text);
                stream.process(&mut |t| {
                    if t.text.is_ascii() {
                        out.push(t.text.clone());
                    }
                });
            }
        }
    }
    out
}

/// Whether a line (lowercased) certainly lacks one of `required`, so that it cannot match
/// and need not be parsed. Only ASCII lines without escapes are judged: a `\u0041` in JSON or
/// a non-ASCII letter that lowercases to ASCII (the Kelvin sign) could hide a word from a
/// plain search, so such lines are always parsed.
fn lacks_words(required: &[memchr::memmem::Finder<'static>], lower: &[u8]) -> bool {
    if !lower.is_ascii() || memchr::memchr(b'\\', lower).is_some() {
        return false;
    }
    required.iter().any(|f| f.find(lower).is_none())
}

/// Whether the query is one leaf whose plan word is exact at block level: a record holds the
/// word iff it matches, so the word's frequency in a block is the block's count.
fn exact_word(ast: &Ast) -> bool {
    let single = |text: &str| {
        let mut n = 0;
        let mut entropy = false;
        let mut analyzer = tokens::word_analyzer();
        let mut stream = analyzer.token_stream(text);
        stream.process(&mut |t| {
            n += 1;
            entropy |= tokens::is_high_entropy(&t.text);
        });
        n == 1 && !entropy
    };
    match ast {
        Ast::All => true,
        Ast::Leaf(Leaf::Word { target, text }) | Ast::Leaf(Leaf::Phrase { target, text }) => {
            match target {
                Target::Message => single(text),
                // A field word may also match a typed value: not one word.
                Target::Json(_) => single(text) && typed(text).is_none(),
                // A value holding the separator is not indexed (see `word`).
                Target::Keyword(_) => !text.is_empty() && !text.contains(WORD_SEP),
            }
        }
        Ast::Leaf(Leaf::Severity { min, max }) => min == max,
        Ast::Leaf(Leaf::Pattern { .. }) => true,
        _ => false,
    }
}

fn word_freqs(segment: &BlockSegment, word: &str) -> Result<Vec<u32>, QueryError> {
    Ok(segment.word_freqs(word)?)
}

fn eval(segment: &BlockSegment, plan: &Plan) -> Result<Vec<bool>, QueryError> {
    let n = segment.blocks.len();
    Ok(match plan {
        Plan::All => vec![true; n],
        Plan::Word(w) => word_freqs(segment, w)?.into_iter().map(|f| f > 0).collect(),
        Plan::Id(h) => {
            if segment.may_hold_id(*h) {
                (0..n).map(|o| segment.block_may_hold_id(o, *h)).collect()
            } else {
                vec![false; n]
            }
        }
        Plan::And(items) => {
            let mut acc = vec![true; n];
            // Words first: they are exact lists, filters are scans.
            let mut items: Vec<&Plan> = items.iter().collect();
            items.sort_by_key(|p| matches!(p, Plan::Id(_)));
            for item in items {
                if !acc.iter().any(|&b| b) {
                    break;
                }
                if let Plan::Id(h) = item {
                    if !segment.may_hold_id(*h) {
                        acc.fill(false);
                        break;
                    }
                    for (o, slot) in acc.iter_mut().enumerate() {
                        *slot = *slot && segment.block_may_hold_id(o, *h);
                    }
                    continue;
                }
                let set = eval(segment, item)?;
                for (a, b) in acc.iter_mut().zip(set) {
                    *a &= b;
                }
            }
            acc
        }
        Plan::Or(items) => {
            let mut acc = vec![false; n];
            for item in items {
                let set = eval(segment, item)?;
                for (a, b) in acc.iter_mut().zip(set) {
                    *a |= b;
                }
            }
            acc
        }
    })
}

fn simplify(plan: Plan) -> Plan {
    match plan {
        Plan::And(items) => {
            let mut kept: Vec<Plan> = items
                .into_iter()
                .map(simplify)
                .filter(|p| *p != Plan::All)
                .collect();
            match kept.len() {
                0 => Plan::All,
                1 => kept.pop().unwrap_or(Plan::All),
                _ => Plan::And(kept),
            }
        }
        Plan::Or(items) => {
            let mut kept: Vec<Plan> = items.into_iter().map(simplify).collect();
            if kept.contains(&Plan::All) {
                return Plan::All;
            }
            if kept.len() == 1 {
                return kept.pop().unwrap_or(Plan::All);
            }
            Plan::Or(kept)
        }
        other => other,
    }
}

/// The typed term a `fields.*` query word also matches, as the block writer spells it.
fn typed(text: &str) -> Option<String> {
    if let Ok(i) = text.parse::<i64>() {
        Some(format!("i:{i}"))
    } else if let Ok(u) = text.parse::<u64>() {
        Some(format!("u:{u}"))
    } else if let Ok(f) = text.parse::<f64>() {
        Some(format!("f:{f}"))
    } else {
        text.parse::<bool>().ok().map(|b| format!("b:{b}"))
    }
}

fn plan(ast: &Ast, analyzer: &mut tantivy::tokenizer::TextAnalyzer) -> Plan {
    match ast {
        Ast::All | Ast::Not(_) => Plan::All,
        Ast::And(items) => Plan::And(items.iter().map(|a| plan(a, analyzer)).collect()),
        Ast::Or(items) => Plan::Or(items.iter().map(|a| plan(a, analyzer)).collect()),
        Ast::Leaf(leaf) => leaf_plan(leaf, analyzer),
    }
}

/// The plan for one word of the block index: every block when the word holds the block word
/// text's separator, since the writer cannot index such a word (the record check decides).
fn word(w: String) -> Plan {
    if w.contains(WORD_SEP) {
        Plan::All
    } else {
        Plan::Word(w)
    }
}

fn words_plan(
    analyzer: &mut tantivy::tokenizer::TextAnalyzer,
    text: &str,
    skip_last: bool,
    mark: impl Fn(&str) -> String,
) -> Plan {
    let mut words = Vec::new();
    let mut stream = analyzer.token_stream(text);
    stream.process(&mut |t| words.push(t.text.clone()));
    if skip_last {
        // A prefix's last word may be the start of any word or id.
        words.pop();
    }
    Plan::And(
        words
            .iter()
            .map(|w| {
                if tokens::is_high_entropy(w) {
                    Plan::Id(hash_word(mark(w).as_bytes()))
                } else {
                    word(mark(w))
                }
            })
            .collect(),
    )
}

fn keyword_word(k: Keyword, value: &str) -> String {
    let value = if k == Keyword::Source {
        value.to_string()
    } else {
        value.to_lowercase()
    };
    format!("{KEYWORD_MARK}{}\0{value}", k.name())
}

fn leaf_plan(leaf: &Leaf, analyzer: &mut tantivy::tokenizer::TextAnalyzer) -> Plan {
    match leaf {
        Leaf::Word { target, text } | Leaf::Phrase { target, text } => match target {
            Target::Message => words_plan(analyzer, text, false, str::to_string),
            Target::Keyword(k) if !text.is_empty() => word(keyword_word(*k, text)),
            Target::Keyword(_) => Plan::All,
            Target::Json(key) => {
                let words = words_plan(analyzer, text, false, |w| {
                    format!("{FIELD_WORD_MARK}{key}\0{w}")
                });
                match typed(text) {
                    Some(t) => Plan::Or(vec![words, word(format!("{FIELD_TYPED_MARK}{key}\0{t}"))]),
                    None => words,
                }
            }
        },
        Leaf::Prefix { target, prefix } => match target {
            Target::Message => words_plan(analyzer, prefix, true, str::to_string),
            Target::Json(key) => {
                let words = words_plan(analyzer, prefix, true, |w| {
                    format!("{FIELD_WORD_MARK}{key}\0{w}")
                });
                Plan::And(vec![words, word(format!("{FIELD_KEY_MARK}{key}"))])
            }
            Target::Keyword(_) => Plan::All,
        },
        Leaf::Exists {
            target: Target::Json(key),
        }
        | Leaf::Range {
            target: Target::Json(key),
            ..
        } => word(format!("{FIELD_KEY_MARK}{key}")),
        Leaf::Exists { .. } | Leaf::Range { .. } => Plan::All,
        Leaf::Pattern { id } => word(pattern_word(*id)),
        Leaf::Severity { min, max } => Plan::Or(
            (*min..=*max)
                .map(|c| word(format!("{KEYWORD_MARK}severity\0{c}")))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use logsift_core::Format;
    use logsift_store::blocks::{BlockRecord, BlockWriter};

    use super::*;

    const RECEIVED: i64 = 1_764_547_200_000_000_000;

    /// A block segment answers every query as a scan of its records with the matcher does:
    /// same total, same newest hits, for records of many streams over many blocks.
    #[test]
    fn block_search_agrees_with_a_scan() {
        let dir = tempfile::tempdir().unwrap();
        let parse = logsift_parse::ParseOptions {
            received_at_ns: RECEIVED,
            logfmt: true,
            ..Default::default()
        };
        let hosts = ["web-01", "web-02", "db-1", "cache"];
        let words = ["GET", "POST", "timeout", "upstream", "timed", "out", "ok"];
        let mut lines: Vec<(Format, String)> = Vec::new();
        for i in 0..3000u64 {
            let host = hosts[(i % 4) as usize];
            let w1 = words[(i * 7 % 7) as usize];
            let w2 = words[(i * 3 % 7) as usize];
            if i % 3 == 0 {
                lines.push((
                    Format::Json,
                    format!(
                        r#"{{"message":"{w1} {w2} req {i:08x}","host":"{host}","level":"{}","status":{},"ok":{}}}"#,
                        ["info", "error", "warning"][(i % 3) as usize],
                        200 + (i % 5) * 100,
                        i % 2 == 0
                    ),
                ));
            } else {
                lines.push((
                    Format::Syslog,
                    format!(
                        "<{}>1 2026-12-02T12:{:02}:{:02}Z {host} app{} - - - {w1} {w2} upstream timed out user=u{} id=a1b2c3{i:04}",
                        8 + i % 8,
                        (i / 60) % 60,
                        i % 60,
                        i % 3,
                        i % 11
                    ),
                ));
            }
        }
        // A keyword value holding the block word text's separator, which is not indexed.
        lines.push((
            Format::Json,
            r#"{"message":"odd one","host":"odd\u001fhost"}"#.to_string(),
        ));
        let mut writer = BlockWriter::new(&dir.path().join("seg"), 3).unwrap();
        let mut parsed = Vec::new();
        for (id, (format, raw)) in lines.iter().enumerate() {
            let record = logsift_parse::parse(*format, raw.as_bytes(), &parse);
            let ts = record.timestamp.unwrap_or(RECEIVED);
            writer.add(
                &BlockRecord {
                    id: id as u64,
                    timestamp: ts,
                    received_at: RECEIVED,
                    format: *format,
                    source: "test",
                    raw: raw.as_bytes(),
                    pattern: 0,
                },
                &record,
            );
            parsed.push((ts, id as u64, record));
        }
        writer.finish().unwrap();
        let segment = BlockSegment::open(&dir.path().join("seg")).unwrap();
        assert_eq!(segment.num_records(), 3001);
        assert!(segment.blocks.len() >= 3000 / 128);
        let mid = parsed[1500].0;
        let mut reads = Vec::new();
        for q in [
            "*",
            "GET",
            "get OR post",
            "\"upstream timed out\"",
            "\"timed out\"",
            "\"out upstream\"",
            "\"get get\"",
            "host:web-01",
            "host:web-01 -GET",
            "severity:error",
            "severity:<=warning",
            "fields.status:500",
            "fields.ok:true",
            "fields.user:u3",
            "fields.level:*",
            "a1b2c30017",
            "a1b2c3001*",
            "0000000c",
            "nothing-here",
            "app:app1",
            "-timeout",
            "host:\"odd\u{1f}host\"",
        ] {
            let ast = crate::lang::parse(q).unwrap();
            for (start, end) in [(None, None), (Some(mid), None), (None, Some(mid))] {
                let page = |order, after, limit| Page {
                    start,
                    end,
                    order,
                    after,
                    limit,
                    ..Page::default()
                };
                let found =
                    search(&segment, &ast, &parse, &page(SortOrder::Desc, None, 10)).unwrap();
                let mut matcher = Matcher::new(&ast);
                let expected: BTreeSet<(i64, u64)> = parsed
                    .iter()
                    .filter(|(ts, _, _)| {
                        start.is_none_or(|s| *ts >= s) && end.is_none_or(|e| *ts < e)
                    })
                    .filter(|(_, _, r)| matcher.matches(r, "test"))
                    .map(|(ts, id, _)| (*ts, *id))
                    .collect();
                assert_eq!(found.total, expected.len() as u64, "{q} {start:?} {end:?}");
                let newest: Vec<(i64, u64)> = expected.iter().rev().take(10).copied().collect();
                let got: Vec<(i64, u64)> = found.hits.iter().map(|h| (h.timestamp, h.id)).collect();
                assert_eq!(got, newest, "{q} {start:?} {end:?}");
                for h in &found.hits {
                    assert_eq!(h.raw, lines[h.id as usize].1.as_bytes());
                }
                // Oldest first, and pages after a cursor, walk the same matches.
                for order in [SortOrder::Asc, SortOrder::Desc] {
                    let mut walked = Vec::new();
                    let mut after = None;
                    loop {
                        let got = search(&segment, &ast, &parse, &page(order, after, 700)).unwrap();
                        assert_eq!(got.total, expected.len() as u64, "{q}");
                        assert_eq!(
                            got.after_cursor,
                            (expected.len() - walked.len()) as u64,
                            "{q} {order:?} after {after:?}"
                        );
                        walked.extend(got.hits.iter().map(|h| (h.timestamp, h.id)));
                        match got.hits.last() {
                            Some(h) => after = Some((h.timestamp, h.id)),
                            None => break,
                        }
                    }
                    let mut all: Vec<(i64, u64)> = expected.iter().copied().collect();
                    if order == SortOrder::Desc {
                        all.reverse();
                    }
                    assert_eq!(walked, all, "{q} {order:?} {start:?} {end:?}");
                }
                if start.is_none() && end.is_none() {
                    reads.push((q, found.total, found.blocks_read));
                }
            }
        }
        let read = |q: &str| reads.iter().find(|r| r.0 == q).map(|r| (r.1, r.2));
        let blocks = segment.blocks.len();
        // A needle reads its block (and the rare false positive), not the segment.
        assert_eq!(read("a1b2c30017").map(|r| r.0), Some(1));
        assert!(read("a1b2c30017").unwrap().1 <= 3, "{reads:?}");
        // A word in every record is counted from the index: only the newest blocks are read
        // (the newest of each stream's two severity classes, which here overlap in time).
        assert_eq!(read("GET"), Some((3000, read("GET").unwrap().1)));
        assert!(
            read("GET").unwrap().1 <= blocks / 2,
            "{reads:?} of {blocks} blocks"
        );
        assert!(read("host:web-01").unwrap().1 <= 8, "{reads:?}");
        assert_eq!(read("nothing-here"), Some((0, 0)));
    }
}
