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
    pub fields: Vec<(Cow<'a, str>, FieldValue<'a>)>,
    /// Why the line could not be parsed as its format, when it could not; the line is then kept
    /// whole as `message`.
    pub parse_error: Option<Cow<'static, str>>,
}
