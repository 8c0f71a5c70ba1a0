//! The record model every other logsift crate speaks.
//!
//! A [`Record`] borrows from the bytes it was parsed from: parsers hand out slices of the
//! receive buffer and only allocate when a value has to be rewritten (a JSON string with escapes,
//! an RFC 5424 SD value with `\"`). Nothing here does I/O but [`fsutil`], the one atomic file
//! replacement every crate that persists a small file shares.

pub mod entry;
pub mod fsutil;
mod index;
mod record;
pub mod safe_path;
mod severity;
pub mod time;

pub use index::{IndexName, IndexNameError, DEFAULT_INDEX};
pub use record::{FieldValue, Fields, FieldsIter, Format, Record};
pub use safe_path::{SafePathError, SafeRelativePath};
pub use severity::{Facility, Severity};
