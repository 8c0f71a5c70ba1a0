//! What the shipper-compatible routes (Elasticsearch bulk, Loki, OTLP) share: content-type
//! checks, the target index, the budget their decoders (`logsift_compat::ShipperDecoder`)
//! charge, and turning decoded records into WAL entries.

use axum::http::{header, HeaderMap, StatusCode};
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Extension;
use logsift_compat::{Budget, DecodeError, ShipperDecoder};
use logsift_core::entry::{Entries, Entry};
use logsift_core::time::now_ns;
use logsift_core::{Format, IndexName};
use logsift_ingest::Ack;

use logsift_ingest::ENTRY_OVERHEAD_BYTES;

use crate::ingest::{ingest_body, source_of, Charge, Decoded, Held, Ingested};
use crate::{ApiError, AppState, Principal, Role, ServerConfig};

/// The header that picks the index for Loki and OTLP requests, whose protocols name none.
pub const INDEX_HEADER: &str = "x-logsift-index";

/// How much bigger than `http.max_body_bytes` the records decoded from one request may be.
/// Protobuf and Loki label sets expand when every entry becomes a self-contained JSON record
/// (labels are repeated per entry); beyond this the request is refused (413) whatever the
/// in-flight budget.
const MAX_EXPANSION: usize = 4;

/// A shipper decoder's [`Budget`]: the request's share of the in-flight budget. What the
/// decoder holds besides the body is covered before it is held; then each record it makes
/// (see [`logsift_compat::Admit`]) is charged, held twice until the round is written (as
/// decoded and as its WAL entry, with the entry's header and [`ENTRY_OVERHEAD_BYTES`]),
/// beside what the request already holds. A push that does not fit is refused (413 past the
/// whole budget, 429 past what is free) before its next record is made, so a 1 MB label
/// repeated into 200 k entries costs at most the budget.
pub(crate) struct RecordBudget<'a> {
    charge: &'a mut Charge,
    /// Bytes the request holds besides its records (body, decompressed and decoded forms).
    held: usize,
    per_record: usize,
    records: usize,
    bytes: usize,
    limit: usize,
}

impl<'a> RecordBudget<'a> {
    pub(crate) fn new(
        charge: &'a mut Charge,
        index: &IndexName,
        source: &str,
        cfg: &ServerConfig,
    ) -> Self {
        RecordBudget {
            held: charge.covered(),
            charge,
            per_record: ENTRY_OVERHEAD_BYTES
                + Entry::FIXED_BYTES
                + index.as_str().len()
                + source.len(),
            records: 0,
            bytes: 0,
            limit: cfg.max_body_bytes.saturating_mul(MAX_EXPANSION),
        }
    }
}

impl Budget for RecordBudget<'_> {
    type Error = ApiError;

    fn covered(&self) -> usize {
        self.charge.covered()
    }

    fn cover(&mut self, total: usize, what: &'static str) -> Result<(), ApiError> {
        self.charge.cover(total, what)
    }

    fn begin_records(&mut self, held: usize) {
        self.held = held;
    }

    /// Admits one more record of `len` bytes, or refuses the push.
    fn admit(&mut self, len: usize) -> Result<(), ApiError> {
        self.records += 1;
        self.bytes = self.bytes.saturating_add(len);
        if self.bytes > self.limit {
            return Err(DecodeError::TooLarge {
                decoded: self.bytes,
                limit: self.limit,
            }
            .into());
        }
        let entries = self
            .bytes
            .saturating_add(self.records.saturating_mul(self.per_record));
        self.charge.cover(
            self.held.saturating_add(self.bytes).saturating_add(entries),
            "the decoded records",
        )
    }
}

/// The media type of the request, lowercase, without parameters (`; charset=utf-8`).
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

pub fn unsupported_type(got: &str, want: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "bad_content_type",
        format!("Content-Type {got:?} is not supported here; send {want}"),
    )
}

/// The index named by the `X-Logsift-Index` header, else the default one.
pub fn target_index(headers: &HeaderMap) -> Result<IndexName, ApiError> {
    match headers.get(INDEX_HEADER) {
        None => Ok(IndexName::default_index()),
        Some(v) => {
            let name = v.to_str().unwrap_or("");
            IndexName::new(name)
                .map_err(|e| ApiError::bad_request("bad_index", format!("{INDEX_HEADER}: {e}")))
        }
    }
}

/// A body a shipper's decoder refused: 413 when it decodes to too much, else 400, with the
/// decoder's reason as the error code.
impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        let status = match e {
            DecodeError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.reason(), e.to_string())
    }
}

/// Encodes decoded JSON records (admitted by a [`RecordBudget`]) as WAL entries for `index`.
/// Records over `ingest.max_line_bytes` are dropped and counted in the second value.
pub fn encode_records(
    records: &[Vec<u8>],
    index: &IndexName,
    source: &str,
    received_at: i64,
    cfg: &ServerConfig,
) -> (Entries, usize) {
    let mut entries = Entries::new();
    let mut rejected = 0;
    for raw in records {
        if raw.len() > cfg.max_line_bytes {
            rejected += 1;
            continue;
        }
        entries.push(&Entry {
            format: Format::Json,
            received_at,
            index: index.as_str(),
            source,
            raw,
        });
    }
    (entries, rejected)
}

/// What the Loki and OTLP routes share once the body's encoding is known: the index named by
/// [`INDEX_HEADER`] and the caller's right to it, then the body through the one ingest path,
/// `decoder` making its JSON records. Answers with the records accepted and, as `answer`, those
/// rejected (longer than `ingest.max_line_bytes`).
pub(crate) async fn ingest_records<D>(
    state: &AppState,
    principal: &Principal,
    peer: &Option<Extension<ConnectInfo<SocketAddr>>>,
    api: &'static str,
    headers: HeaderMap,
    body: Body,
    decoder: D,
) -> Result<Ingested<usize>, ApiError>
where
    D: for<'b> ShipperDecoder<Output<'b> = Vec<Vec<u8>>> + Send + 'static,
{
    let index = target_index(&headers)?;
    principal.require_index(Role::Ingest, index.as_str())?;
    let source = source_of(peer, api);
    let cfg = state.cfg.clone();
    ingest_body(
        state,
        principal,
        api,
        headers,
        body,
        Ack::Durable,
        Held::Body,
        move |body, charge| {
            let mut budget = RecordBudget::new(charge, &index, &source, &cfg);
            let records = decoder.decode(body, &mut budget)?;
            let (entries, rejected) = encode_records(&records, &index, &source, now_ns(), &cfg);
            Ok(Decoded {
                entries,
                answer: rejected,
            })
        },
    )
    .await
}
