//! Log pattern mining: each message gets a pattern (template) id, with its variable parts
//! (numbers, ids, addresses, paths, quoted values, ...) as `<*>` slots.
//!
//! [`Miner::ingest`] masks a message ([`mask`]), then looks for the most similar template among
//! those with the same token count and leading word, in the manner of Drain (He et al.,
//! ICWS 2017): when enough positions agree, and no two plain words disagree, the message joins
//! that template and the positions where they differ become slots. Otherwise a template of
//! another token count with exactly the same constant skeleton takes it in (the two differ
//! only in how many values they list), or it starts a new pattern. Ids are handed out in
//! order, never reused, and keep naming the same group when its template generalises.
//! [`Miner::to_bytes`] and [`Miner::from_bytes`] carry the whole state across restarts (format
//! in `README.md`), so ids and counts add up over segments. The miner is deterministic: the
//! same state fed the same messages in the same order hands out the same ids, so replaying a
//! WAL from the last saved state reproduces them.
//!
//! Not here: storing ids per record, per-segment dictionaries, queries over patterns — those
//! belong to the store and query crates, which call this one.

pub mod mask;
mod miner;
mod state;

pub use miner::{constant_runs_of, ConfigError, Miner, MinerConfig, PatternId, PatternInfo};
pub use state::{StateError, STATE_MAGIC, STATE_VERSION};
