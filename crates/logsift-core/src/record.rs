use std::borrow::Cow;

use crate::{Facility, Severity};

/// Which parser a line is meant for. Stored with each record so that the raw bytes can be parsed
/// again, identically, when a hit is displayed or the WAL is replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Format {
    /// Syslog: RFC 5424 if it looks like it, else RFC 3164, else the whole line as the message.
    Syslog = 1,
    /// One JSON object per line.
    Json = 2,
    /// JSON if the line starts with `{`, syslog otherwise (HTTP ingest of mixed bodies).
    #[default]
    Auto = 3,
}

impl Format {
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Format::Syslog),
            2 => Some(Format::Json),
            3 => Some(Format::Auto),
            _ => None,
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }
}

/// A typed value in [`Record::fields`]. Numbers keep their JSON text so that nothing is lost to
/// float rounding; arrays and objects that are kept whole stay as JSON text.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue<'a> {
    Str(Cow<'a, str>),
    /// A JSON number, exactly as written.
    Number(&'a str),
    Bool(bool),
    Null,
    /// A JSON array, exactly as written.
    Json(&'a str),
}

/// One parsed log line. Every `&'a`/`Cow::Borrowed` points into the received bytes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record<'a> {
    /// From the message, in ns since the Unix epoch; `None` means "use the receive time".
    pub timestamp: Option<i64>,
    pub severity: Option<Severity>,
    pub facility: Option<Facility>,
    pub host: Option<Cow<'a, str>>,
    pub app: Option<Cow<'a, str>>,
    pub procid: Option<Cow<'a, str>>,
    pub msgid: Option<Cow<'a, str>>,
    pub message: Cow<'a, str>,
    /// JSON keys other than the mapped ones, and RFC 5424 structured data as `sd-id.param`.
    /// Iterate with `for (name, value) in &record.fields` or [`Record::fields`].
    pub fields: Fields<'a>,
    /// Why the line could not be parsed as its format, when it could not; the line is then kept
    /// whole as `message`.
    pub parse_error: Option<Cow<'static, str>>,
}

impl<'a> Record<'a> {
    /// The fields in parse order, as `(name, value)`.
    pub fn fields(&self) -> FieldsIter<'_, 'a> {
        self.fields.iter()
    }
}

/// Where a field name lives: in the parsed line, or in [`Fields`]' own name buffer when it had to
/// be composed (`sd-id.param`, `parent.child`) or unescaped.
#[derive(Debug, Clone, Copy)]
enum Name<'a> {
    Line(&'a str),
    Buffer { start: usize, end: usize },
}

/// The fields of one record, in parse order.
///
/// Composed and unescaped names are appended to one per-record `String` and referred to by
/// range, instead of one `String` per name: a parser that sizes the buffers up front (see
/// [`Fields::with_capacity`]) allocates a constant number of times per line, however many
/// fields the line has. Names that occur verbatim in the line are borrowed.
#[derive(Debug, Clone, Default)]
pub struct Fields<'a> {
    names: String,
    entries: Vec<(Name<'a>, FieldValue<'a>)>,
}

impl<'a> Fields<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `fields` entries and `name_bytes` bytes of composed or copied names: at most two
    /// allocations (none for a zero argument), and none while pushing within those bounds.
    pub fn with_capacity(fields: usize, name_bytes: usize) -> Self {
        Fields {
            names: String::with_capacity(name_bytes),
            entries: Vec::with_capacity(fields),
        }
    }

    /// Makes room for `fields` more entries and `name_bytes` more name bytes.
    pub fn reserve(&mut self, fields: usize, name_bytes: usize) {
        self.entries.reserve(fields);
        self.names.reserve(name_bytes);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.names.clear();
    }

    /// Appends a field whose name is borrowed from the line.
    pub fn push(&mut self, name: &'a str, value: FieldValue<'a>) {
        self.entries.push((Name::Line(name), value));
    }

    /// Appends a field named `parts` joined with `.` (`["sd-id", "param"]` gives
    /// `sd-id.param`), stored in the name buffer.
    pub fn push_joined(&mut self, parts: &[&str], value: FieldValue<'a>) {
        let start = self.names.len();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                self.names.push('.');
            }
            self.names.push_str(part);
        }
        let end = self.names.len();
        self.entries.push((Name::Buffer { start, end }, value));
    }

    /// Appends a field whose name is a copy of `name` (one that does not live as long as the
    /// line, e.g. an unescaped JSON key).
    pub fn push_copied(&mut self, name: &str, value: FieldValue<'a>) {
        self.push_joined(&[name], value);
    }

    /// Appends a field whose name is borrowed when it can be and copied otherwise.
    pub fn push_cow(&mut self, name: Cow<'a, str>, value: FieldValue<'a>) {
        match name {
            Cow::Borrowed(name) => self.push(name, value),
            Cow::Owned(name) => self.push_copied(&name, value),
        }
    }

    fn name(&self, name: &Name<'a>) -> &str {
        match *name {
            Name::Line(s) => s,
            // Ranges are only ever made by `push_joined` on char boundaries of `names`, which
            // is append-only until `clear` (which also drops the entries), so this never misses.
            Name::Buffer { start, end } => self.names.get(start..end).unwrap_or_default(),
        }
    }

    /// The fields in parse order, as `(name, value)`.
    pub fn iter(&self) -> FieldsIter<'_, 'a> {
        FieldsIter {
            fields: self,
            inner: self.entries.iter(),
        }
    }

    /// The value of the first field called `name`.
    pub fn get(&self, name: &str) -> Option<&FieldValue<'a>> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Whether a field called `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Removes and returns the value of the entry at `index` (in parse order), shifting the
    /// later ones down. Its name bytes, if buffered, stay in the buffer unused.
    pub fn remove(&mut self, index: usize) -> Option<FieldValue<'a>> {
        (index < self.entries.len()).then(|| self.entries.remove(index).1)
    }

    /// Drops the entries from `len` on (their buffered name bytes stay, unused).
    pub fn truncate(&mut self, len: usize) {
        self.entries.truncate(len);
    }

    /// The value of the entry at `index` (in parse order).
    pub fn value_at(&self, index: usize) -> Option<&FieldValue<'a>> {
        self.entries.get(index).map(|(_, v)| v)
    }
}

/// Equal when the same names have the same values in the same order, wherever the names are
/// stored.
impl PartialEq for Fields<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

/// Iterator over [`Fields`] as `(name, value)`.
#[derive(Debug, Clone)]
pub struct FieldsIter<'r, 'a> {
    fields: &'r Fields<'a>,
    inner: std::slice::Iter<'r, (Name<'a>, FieldValue<'a>)>,
}

impl<'r, 'a> Iterator for FieldsIter<'r, 'a> {
    type Item = (&'r str, &'r FieldValue<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let (name, value) = self.inner.next()?;
        Some((self.fields.name(name), value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl ExactSizeIterator for FieldsIter<'_, '_> {}

impl<'r, 'a> IntoIterator for &'r Fields<'a> {
    type Item = (&'r str, &'r FieldValue<'a>);
    type IntoIter = FieldsIter<'r, 'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_borrowed_joined_or_copied() {
        let line = String::from("host");
        let mut f = Fields::with_capacity(3, 16);
        f.push(&line, FieldValue::Bool(true));
        f.push_joined(&["sd", "param"], FieldValue::Null);
        f.push_copied("e-s", FieldValue::Number("1"));
        let got: Vec<_> = f.iter().map(|(n, _)| n).collect();
        assert_eq!(got, ["host", "sd.param", "e-s"]);
        assert_eq!(f.get("sd.param"), Some(&FieldValue::Null));
        assert_eq!(f.remove(1), Some(FieldValue::Null));
        let got: Vec<_> = f.iter().map(|(n, _)| n).collect();
        assert_eq!(got, ["host", "e-s"]);
    }

    #[test]
    fn equality_ignores_where_names_live() {
        let mut a = Fields::new();
        a.push("x.y", FieldValue::Null);
        let mut b = Fields::new();
        b.push_joined(&["x", "y"], FieldValue::Null);
        assert_eq!(a, b);
        b.push("z", FieldValue::Null);
        assert_ne!(a, b);
    }
}
