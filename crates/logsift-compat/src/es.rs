//! Elasticsearch `_bulk` bodies: NDJSON pairs of an action line and, for `index`, `create`
//! and `update`, a document line.
//!
//! Only `index` and `create` store anything; `update` and `delete` get a per-item error, as
//! Elasticsearch gives for an action it cannot apply. A body whose action lines are not
//! well-formed is refused whole, as Elasticsearch refuses it.

use logsift_core::IndexName;
use serde_json::Value;

/// An action of a bulk body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpType {
    Index,
    Create,
    Update,
    Delete,
}

impl OpType {
    /// The action's name, which is also the key of its item in the answer.
    pub fn name(self) -> &'static str {
        match self {
            OpType::Index => "index",
            OpType::Create => "create",
            OpType::Update => "update",
            OpType::Delete => "delete",
        }
    }
}

/// One action of a bulk body, in body order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkItem<'a> {
    pub op: OpType,
    /// The action's `_index`, if it names one.
    pub index: Option<String>,
    /// The action's `_id`, if it names one.
    pub id: Option<String>,
    /// The document line (none for `delete`).
    pub doc: Option<&'a [u8]>,
}

/// A body that cannot be read as bulk actions; Elasticsearch answers such a request 400 with
/// this `type` and `reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct BulkError {
    pub error_type: &'static str,
    pub reason: String,
}

/// Splits a bulk body into its actions. Blank lines between actions are skipped; the line after
/// an `index`, `create` or `update` action is its document, whatever it holds.
pub fn parse_bulk(body: &[u8]) -> Result<Vec<BulkItem<'_>>, BulkError> {
    let mut lines = body
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .enumerate();
    let mut items = Vec::new();
    while let Some((i, line)) = lines.next() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (op, meta) = parse_action(line, i + 1)?;
        let doc = match op {
            OpType::Delete => None,
            _ => match lines.next() {
                Some((_, doc)) => Some(doc),
                None => {
                    return Err(BulkError {
                        error_type: "illegal_argument_exception",
                        reason: format!(
                            "The bulk request must be terminated by a newline [\\n]; action [{}] on line [{}] has no document",
                            op.name(),
                            i + 1
                        ),
                    })
                }
            },
        };
        let text = |key: &str| match meta.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        items.push(BulkItem {
            op,
            index: text("_index"),
            id: text("_id"),
            doc,
        });
    }
    if items.is_empty() {
        return Err(BulkError {
            error_type: "action_request_validation_exception",
            reason: "Validation Failed: 1: no requests added;".to_string(),
        });
    }
    Ok(items)
}

/// `{"index": {...}}` and its metadata object.
fn parse_action(
    line: &[u8],
    number: usize,
) -> Result<(OpType, serde_json::Map<String, Value>), BulkError> {
    let malformed = |what: String| BulkError {
        error_type: "illegal_argument_exception",
        reason: format!("Malformed action/metadata line [{number}], {what}"),
    };
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| malformed(format!("expected a JSON object: {e}")))?;
    let Value::Object(map) = value else {
        return Err(malformed("expected START_OBJECT".to_string()));
    };
    let mut entries = map.into_iter();
    let (Some((name, meta)), None) = (entries.next(), entries.next()) else {
        return Err(malformed("expected exactly one action".to_string()));
    };
    let op = match name.as_str() {
        "index" => OpType::Index,
        "create" => OpType::Create,
        "update" => OpType::Update,
        "delete" => OpType::Delete,
        other => {
            return Err(malformed(format!(
                "expected field [create], [delete], [index] or [update] but found [{other}]"
            )))
        }
    };
    let Value::Object(meta) = meta else {
        return Err(malformed(format!("expected an object after [{name}]")));
    };
    Ok((op, meta))
}

/// Checks that a document line is what logsift stores from a bulk request: one JSON object.
/// The error is worded for Elasticsearch's `document_parsing_exception`. A valid document is
/// scanned, not parsed (`logsift_parse::parse_error`): the indexer parses it from the WAL.
pub fn check_document(doc: &[u8]) -> Result<(), String> {
    let opts = logsift_parse::ParseOptions::default();
    match logsift_parse::parse_error(logsift_core::Format::Json, doc, &opts) {
        None => Ok(()),
        Some(err) => Err(format!("failed to parse document: {err}")),
    }
}

/// The logsift index for an Elasticsearch index name. Elasticsearch names allow `.` (as in
/// `filebeat-8.11.0` or `logstash-2024.05.01`) where logsift's do not, so dots become `-`;
/// anything else logsift cannot take is refused with the reason.
pub fn index_name(es_name: &str) -> Result<IndexName, String> {
    let mapped = es_name.replace('.', "-");
    IndexName::new(&mapped).map_err(|e| format!("invalid index name [{es_name}]: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_actions_and_documents() {
        let body = b"{\"index\":{\"_index\":\"web\",\"_id\":\"a1\"}}\n{\"message\":\"one\"}\n\n{\"create\":{\"_id\":7}}\r\n{\"message\":\"two\"}\r\n{\"delete\":{\"_id\":\"x\"}}\n{\"update\":{\"_id\":\"y\"}}\n{\"doc\":{}}";
        let items = parse_bulk(body).unwrap();
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].op, OpType::Index);
        assert_eq!(items[0].index.as_deref(), Some("web"));
        assert_eq!(items[0].id.as_deref(), Some("a1"));
        assert_eq!(items[0].doc, Some(&b"{\"message\":\"one\"}"[..]));
        assert_eq!(items[1].op, OpType::Create);
        assert_eq!(items[1].id.as_deref(), Some("7"));
        assert_eq!(items[1].doc, Some(&b"{\"message\":\"two\"}"[..]));
        assert_eq!((items[2].op, items[2].doc), (OpType::Delete, None));
        assert_eq!(items[3].doc, Some(&b"{\"doc\":{}}"[..]));
    }

    #[test]
    fn refuses_malformed_bodies_whole() {
        for (body, error_type) in [
            (&b""[..], "action_request_validation_exception"),
            (b"\n\n", "action_request_validation_exception"),
            (b"{\"index\":{}}", "illegal_argument_exception"),
            (b"{\"upsert\":{}}\n{}\n", "illegal_argument_exception"),
            (
                b"{\"index\":{},\"create\":{}}\n{}\n",
                "illegal_argument_exception",
            ),
            (b"[1]\n{}\n", "illegal_argument_exception"),
            (b"{\"index\":1}\n{}\n", "illegal_argument_exception"),
            (b"{not json\n", "illegal_argument_exception"),
        ] {
            let err = parse_bulk(body).unwrap_err();
            assert_eq!(
                err.error_type,
                error_type,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let err = parse_bulk(b"{\"index\":{}}\n{}\n{\"bogus\":{}}\n").unwrap_err();
        assert!(err.reason.contains("line [3]"), "{}", err.reason);
    }

    #[test]
    fn documents_must_be_json_objects() {
        assert!(check_document(b"{\"message\":\"x\",\"log\":{\"level\":\"warn\"}}").is_ok());
        for bad in [
            &b""[..],
            b"[1]",
            b"{\"a\":",
            b"\"text\"",
            b"{\"a\":\"\xff\"}",
        ] {
            assert!(
                check_document(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn maps_elasticsearch_index_names() {
        assert_eq!(
            index_name("filebeat-8.11.0").unwrap().as_str(),
            "filebeat-8-11-0"
        );
        assert_eq!(index_name("logs").unwrap().as_str(), "logs");
        assert!(index_name("Logs").is_err());
        assert!(index_name("_internal").is_err());
        assert!(index_name("a/b").is_err());
    }
}
