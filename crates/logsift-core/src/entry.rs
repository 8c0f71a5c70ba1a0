//! The unit that travels from a listener through the WAL to the indexer: the received bytes of
//! one line plus what is needed to parse them again identically (format, receive time) and to
//! route them (index, source). Parsing is deterministic, so the WAL stores bytes, not a parse.
//!
//! ```text
//! version u8 (=1) | format u8 | received_at i64 LE | index_len u8 | index | source_len u16 LE | source | raw…
//! ```

use crate::Format;

const VERSION: u8 = 1;
const FIXED_BYTES: usize = 1 + 1 + 8 + 1 + 2;

/// A borrowed view of one encoded entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub format: Format,
    pub received_at: i64,
    pub index: &'a str,
    /// Listener and peer, e.g. `syslog-tcp 127.0.0.1:40112`.
    pub source: &'a str,
    pub raw: &'a [u8],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("entry is truncated")]
    Truncated,
    #[error("entry format version {0} is not supported (this build reads version {VERSION})")]
    Version(u8),
    #[error("entry names unknown format code {0}")]
    Format(u8),
    #[error("entry index or source name is not UTF-8")]
    Utf8,
}

impl<'a> Entry<'a> {
    /// Bytes of an encoded entry besides its index name, source and raw bytes.
    pub const FIXED_BYTES: usize = FIXED_BYTES;

    /// Appends the encoding of `self` to `out`. Index names are at most 64 bytes and sources are
    /// cut at 65535 bytes, so the length prefixes never overflow.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let index = &self.index.as_bytes()[..self.index.len().min(u8::MAX as usize)];
        let source = truncate_utf8(self.source, u16::MAX as usize).as_bytes();
        out.reserve(FIXED_BYTES + index.len() + source.len() + self.raw.len());
        out.push(VERSION);
        out.push(self.format.code());
        out.extend_from_slice(&self.received_at.to_le_bytes());
        out.push(index.len() as u8);
        out.extend_from_slice(index);
        out.extend_from_slice(&(source.len() as u16).to_le_bytes());
        out.extend_from_slice(source);
        out.extend_from_slice(self.raw);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    pub fn decode(bytes: &'a [u8]) -> Result<Self, EntryError> {
        if bytes.len() < FIXED_BYTES {
            return Err(EntryError::Truncated);
        }
        if bytes[0] != VERSION {
            return Err(EntryError::Version(bytes[0]));
        }
        let format = Format::from_code(bytes[1]).ok_or(EntryError::Format(bytes[1]))?;
        let received_at =
            i64::from_le_bytes(bytes[2..10].try_into().map_err(|_| EntryError::Truncated)?);
        let index_len = bytes[10] as usize;
        let rest = &bytes[11..];
        let (index, rest) = split(rest, index_len)?;
        let (len, rest) = split(rest, 2)?;
        let source_len = u16::from_le_bytes([len[0], len[1]]) as usize;
        let (source, raw) = split(rest, source_len)?;
        Ok(Entry {
            format,
            received_at,
            index: std::str::from_utf8(index).map_err(|_| EntryError::Utf8)?,
            source: std::str::from_utf8(source).map_err(|_| EntryError::Utf8)?,
            raw,
        })
    }
}

/// Encoded entries back to back in one buffer, with where each ends: what a listener read or a
/// request body held travels to the WAL and the indexer as one allocation, not one per line
/// (allocated on a listener's thread and freed on the indexer's, each line's `Vec` cost a
/// lock of the listener's allocator arena; perf of the e2e ingest).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Entries {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the encoding of `entry`.
    pub fn push(&mut self, entry: &Entry<'_>) {
        entry.encode_into(&mut self.bytes);
        self.ends.push(self.bytes.len());
    }

    /// Appends an entry encoded already.
    pub fn push_encoded(&mut self, encoded: &[u8]) {
        self.bytes.extend_from_slice(encoded);
        self.ends.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes of every entry together.
    pub fn total_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The `i`th encoded entry.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = i.checked_sub(1).map_or(0, |p| self.ends[p]);
        self.bytes.get(start..end)
    }

    /// Each encoded entry, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(move |i| self.get(i).unwrap_or_default())
    }
}

impl From<Vec<Vec<u8>>> for Entries {
    fn from(entries: Vec<Vec<u8>>) -> Self {
        let mut out = Entries {
            bytes: Vec::with_capacity(entries.iter().map(Vec::len).sum()),
            ends: Vec::with_capacity(entries.len()),
        };
        for e in &entries {
            out.push_encoded(e);
        }
        out
    }
}

fn split(bytes: &[u8], at: usize) -> Result<(&[u8], &[u8]), EntryError> {
    if bytes.len() < at {
        return Err(EntryError::Truncated);
    }
    Ok(bytes.split_at(at))
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_truncation() {
        let e = Entry {
            format: Format::Syslog,
            received_at: 1_700_000_000_123_456_789,
            index: "logs",
            source: "syslog-tcp 127.0.0.1:5000",
            raw: b"<13>Nov 27 07:17:19 host app: \xff bytes",
        };
        let bytes = e.encode();
        assert_eq!(Entry::decode(&bytes).unwrap(), e);
        for cut in 0..FIXED_BYTES + 4 {
            assert!(Entry::decode(&bytes[..cut]).is_err());
        }
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert_eq!(Entry::decode(&bad), Err(EntryError::Version(9)));
    }

    #[test]
    fn entries_hold_each_encoding_apart() {
        let raws: [&[u8]; 4] = [b"first", b"", b"third line", b"\xff"];
        let mut entries = Entries::new();
        let mut one_by_one = Vec::new();
        for (i, raw) in raws.iter().enumerate() {
            let e = Entry {
                format: Format::Json,
                received_at: i as i64,
                index: "logs",
                source: "json-tcp 127.0.0.1:1",
                raw,
            };
            entries.push(&e);
            one_by_one.push(e.encode());
        }
        assert_eq!(entries.len(), 4);
        let got: Vec<&[u8]> = entries.iter().collect();
        assert_eq!(
            got,
            one_by_one.iter().map(Vec::as_slice).collect::<Vec<_>>()
        );
        assert_eq!(
            Entry::decode(entries.get(2).unwrap()).unwrap().raw,
            b"third line"
        );
        assert_eq!(entries.get(4), None);
        assert_eq!(Entries::from(one_by_one.clone()), entries);
        assert_eq!(
            entries.total_bytes(),
            one_by_one.iter().map(Vec::len).sum::<usize>()
        );
    }
}
