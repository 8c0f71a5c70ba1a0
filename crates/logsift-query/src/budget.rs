//! Stopping a search that ran out of time or whose client went away.
//!
//! Collectors cannot stop tantivy's iteration, so the query itself is wrapped: its scorer
//! checks the deadline and the cancel flag every few thousand documents and then reports the
//! end of the document set. A search stopped that way returns early with counts that are
//! short; the scorer marks its budget as cut so that the caller never mistakes such a result
//! for a complete one. Each part of a search (one tantivy searcher) gets its own cut flag
//! ([`Budget::for_part`]), so that the parts that finished can still be answered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tantivy::query::{EmptyScorer, EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::{DocId, DocSet, Score, SegmentReader, TERMINATED};

use crate::QueryError;

/// Documents between two looks at the clock: cheap next to the work per document.
const CHECK_EVERY: u32 = 4096;

/// When a search must stop: at a deadline, or when `cancel` is set (the client disconnected).
#[derive(Debug, Clone, Default)]
pub struct Budget {
    pub deadline: Option<Instant>,
    pub cancel: Arc<AtomicBool>,
    /// Set by a scorer that stopped before the end of its documents.
    cut: Arc<AtomicBool>,
}

impl Budget {
    pub fn with_deadline(deadline: Instant) -> Self {
        Budget {
            deadline: Some(deadline),
            ..Budget::default()
        }
    }

    /// The client went away: nobody will read the answer.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// No more work may start: cancelled or past the deadline.
    pub fn expired(&self) -> bool {
        self.cancelled() || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Fails when no more work may start, saying why.
    pub fn check(&self) -> Result<(), QueryError> {
        if self.cancelled() {
            return Err(QueryError::Cancelled);
        }
        if self.expired() {
            return Err(QueryError::Timeout);
        }
        Ok(())
    }

    /// The same deadline and cancel flag with a cut flag of its own, for one part of a search.
    pub(crate) fn for_part(&self) -> Budget {
        Budget {
            deadline: self.deadline,
            cancel: self.cancel.clone(),
            cut: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether a search under this budget stopped early, so that its counts are short.
    pub(crate) fn was_cut(&self) -> bool {
        self.cut.load(Ordering::Relaxed)
    }

    /// Whether no more work may start; if so, marks the part's results as cut short (for
    /// searches that stop themselves, like block scans, rather than through [`Self::wrap`]).
    pub(crate) fn stop_here(&self) -> bool {
        let stop = self.expired();
        if stop {
            self.cut.store(true, Ordering::Relaxed);
        }
        stop
    }

    /// `query`, stopping when this budget runs out.
    pub(crate) fn wrap(&self, query: Box<dyn Query>) -> Box<dyn Query> {
        Box::new(BudgetQuery {
            inner: query,
            budget: self.clone(),
        })
    }
}

struct BudgetQuery {
    inner: Box<dyn Query>,
    budget: Budget,
}

impl Clone for BudgetQuery {
    fn clone(&self) -> Self {
        BudgetQuery {
            inner: self.inner.box_clone(),
            budget: self.budget.clone(),
        }
    }
}

impl std::fmt::Debug for BudgetQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetQuery")
            .field("inner", &self.inner)
            .finish()
    }
}

impl Query for BudgetQuery {
    fn weight(&self, enable_scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(BudgetWeight {
            inner: self.inner.weight(enable_scoring)?,
            budget: self.budget.clone(),
        }))
    }

    fn query_terms<'a>(&'a self, visitor: &mut dyn FnMut(&'a tantivy::Term, bool)) {
        self.inner.query_terms(visitor)
    }
}

struct BudgetWeight {
    inner: Box<dyn Weight>,
    budget: Budget,
}

impl Weight for BudgetWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        // Looked at before the inner scorer is built: building one can be most of the work
        // (a prefix over a large dictionary is expanded here, which no tick can interrupt).
        if self.budget.expired() {
            self.budget.cut.store(true, Ordering::Relaxed);
            return Ok(Box::new(EmptyScorer));
        }
        let inner = self.inner.scorer(reader, boost)?;
        Ok(Box::new(BudgetScorer {
            inner,
            budget: self.budget.clone(),
            countdown: CHECK_EVERY,
            stopped: false,
        }))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        self.inner.explain(reader, doc)
    }
}

struct BudgetScorer {
    inner: Box<dyn Scorer>,
    budget: Budget,
    countdown: u32,
    stopped: bool,
}

impl BudgetScorer {
    fn tick(&mut self, steps: u32) {
        self.countdown = self.countdown.saturating_sub(steps);
        if self.countdown == 0 {
            self.countdown = CHECK_EVERY;
            if self.budget.expired() {
                self.stopped = true;
                self.budget.cut.store(true, Ordering::Relaxed);
            }
        }
    }
}

impl DocSet for BudgetScorer {
    fn advance(&mut self) -> DocId {
        if self.stopped {
            return TERMINATED;
        }
        self.tick(1);
        if self.stopped {
            return TERMINATED;
        }
        self.inner.advance()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.stopped {
            return TERMINATED;
        }
        self.tick(1);
        if self.stopped {
            return TERMINATED;
        }
        self.inner.seek(target)
    }

    fn doc(&self) -> DocId {
        if self.stopped {
            TERMINATED
        } else {
            self.inner.doc()
        }
    }

    fn size_hint(&self) -> u32 {
        self.inner.size_hint()
    }

    fn cost(&self) -> u64 {
        self.inner.cost()
    }
}

impl Scorer for BudgetScorer {
    fn score(&mut self) -> Score {
        self.inner.score()
    }
}
