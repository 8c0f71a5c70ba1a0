//! A search shared with searchers (`[node] searchers`, issue #18). The process that gets the
//! request (the root) lists the sealed segments in its range, gives each to one searcher by
//! rendezvous hashing of (searcher, index, segment) — the same segment goes to the same
//! searcher from query to query, so its cache keeps it — and asks each searcher for its
//! share (`POST /api/v1/search/part`) while it searches the rest itself: what is in memory
//! (the hot tier) and any segment it did not give away.
//!
//! Every answer carries its hits' sort keys; the root merges them into one page (top
//! `limit` by time, then id: the order one process gives), adds the totals, and takes the
//! narrowest covered range of partial answers. A searcher that fails, times out, or does not
//! serve a segment yet (its refresh lags) has that share read by the root itself, from its
//! own copy: the answer stays complete. If the root's own view changed while it searched (a
//! merge or erasure replaced a segment it gave away), the whole search runs again once; a
//! segment that nobody serves any more leaves the answer `partial`.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::time::Instant;

use axum::http::HeaderMap;
use logsift_query::{
    parse_sort_key, Budget, QueryError, SearchRequest, SearchResponse, SegmentRef, Segments,
    SortOrder,
};
use serde_json::Value;

use crate::search::{query_error, run_query, QueryLimits};
use crate::{ApiError, AppState};

/// Which searcher reads `segment`: the highest hash of (searcher, segment) wins, so adding or
/// removing a searcher moves only the segments it wins or held.
fn owner<'a>(searchers: &'a [String], segment: &SegmentRef) -> &'a str {
    searchers
        .iter()
        .max_by_key(|url| {
            // SipHash with fixed keys: the same owner in every process of one build.
            let mut h = std::hash::DefaultHasher::new();
            (url.as_str(), &segment.0, &segment.1).hash(&mut h);
            h.finish()
        })
        .map(String::as_str)
        .unwrap_or_default()
}

/// What a share of a query answers, whatever the query.
pub(crate) trait Share:
    serde::de::DeserializeOwned + crate::search::Answer + Send + 'static
{
    /// Named segments the process that answered does not serve.
    fn missing_segments(&self) -> &[SegmentRef];
}

macro_rules! shares {
    ($($t:ty),*) => {$(
        impl Share for $t {
            fn missing_segments(&self) -> &[SegmentRef] {
                &self.missing_segments
            }
        }
    )*};
}
shares!(SearchResponse, HistogramShare, TermsShare);

macro_rules! answers {
    ($($t:ty),*) => {$(
        impl crate::search::Answer for $t {
            fn partial(&self) -> bool {
                self.partial
            }
        }
    )*};
}
answers!(HistogramShare, TermsShare);

/// What a query shared out is: where searchers answer their share, its parameters as that
/// route reads them, what it covers, and how this process answers a share itself.
pub(crate) struct Shared<F> {
    /// `/api/v1/<query>/part`.
    pub path: &'static str,
    pub params: Vec<(&'static str, String)>,
    pub indexes: Vec<String>,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub run: F,
}

/// The answers of every share of a query (this process's first), and whether a segment
/// nobody serves any more was left out. See the module comment.
pub(crate) async fn fan_out<T, F>(
    state: &AppState,
    limits: &QueryLimits,
    headers: &HeaderMap,
    query: Shared<F>,
) -> Result<(Vec<T>, bool), ApiError>
where
    T: Share,
    F: Fn(&logsift_store::Store, Segments, Budget) -> Result<T, QueryError>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let local = |segments: Segments| {
        let store = state.store.clone();
        let run = query.run.clone();
        run_query(limits, move |budget| run(&store, segments, budget))
    };
    for attempt in 0..2 {
        let shares = assign(state, &query.indexes, query.start, query.end)?;
        let given: BTreeSet<SegmentRef> = shares.values().flatten().cloned().collect();
        let remote = shares.into_iter().map(|(url, segments)| {
            let client = state.searcher_client.clone();
            let timeout = limits.timeout();
            let query = &query;
            async move {
                let answer: Result<T, String> =
                    ask(&client, &url, headers, query, &segments, timeout).await;
                (url, segments, answer)
            }
        });
        let (mine, remote) = tokio::join!(
            local(Segments::Except(given)),
            futures_util::future::join_all(remote)
        );
        let mine = mine?;
        if !mine.missing_segments().is_empty() && attempt == 0 {
            // A segment given away is no longer served here: the view changed mid-query,
            // and its replacement may have been read here as well.
            continue;
        }
        let mut answers = vec![mine];
        let mut unread = BTreeSet::new();
        for (url, segments, answer) in remote {
            match answer {
                Ok(a) => {
                    state.metrics.fanout_shares.inc();
                    unread.extend(a.missing_segments().iter().cloned());
                    answers.push(a);
                }
                Err(why) => {
                    state.metrics.fanout_failures.inc();
                    tracing::warn!(searcher = %url, error = %why, segments = segments.len(), path = query.path, "a searcher did not answer its share; reading it here");
                    unread.extend(segments);
                }
            }
        }
        let mut gone = false;
        if !unread.is_empty() {
            let answer = local(Segments::Only(unread)).await?;
            gone = !answer.missing_segments().is_empty();
            answers.push(answer);
        }
        return Ok((answers, gone));
    }
    Err(ApiError::internal(
        "the segments changed twice while the query was shared; try again",
    ))
}

/// Runs `req` over this process and the searchers, one page merged from all.
pub(crate) async fn search(
    state: &AppState,
    limits: &QueryLimits,
    headers: &HeaderMap,
    req: SearchRequest,
) -> Result<SearchResponse, ApiError> {
    let started = Instant::now();
    let mut params: Vec<(&str, String)> = vec![
        ("limit", req.limit.to_string()),
        (
            "sort",
            match req.order {
                SortOrder::Desc => "desc",
                SortOrder::Asc => "asc",
            }
            .to_string(),
        ),
    ];
    if let Some(c) = &req.cursor {
        params.push(("cursor", c.clone()));
    }
    let run_req = req.clone();
    let shared = Shared {
        path: "/api/v1/search/part",
        params: common_params(&req.query, &req.indexes, req.start, req.end, params),
        indexes: req.indexes.clone(),
        start: req.start,
        end: req.end,
        run: move |store: &logsift_store::Store, segments, budget| {
            logsift_query::search(
                store,
                &SearchRequest {
                    segments,
                    budget,
                    ..run_req.clone()
                },
            )
        },
    };
    let (answers, gone) = fan_out(state, limits, headers, shared).await?;
    let mut merged = merge(answers, &req)?;
    if gone {
        merged.partial = true;
        merged.total_exact = false;
    }
    merged.took_ms = started.elapsed().as_millis() as u64;
    Ok(merged)
}

/// The parameters every query route reads, then `more`. Times go as RFC 3339 with
/// nanoseconds: the same instants, as the routes parse them.
pub(crate) fn common_params(
    q: &str,
    indexes: &[String],
    start: Option<i64>,
    end: Option<i64>,
    more: Vec<(&'static str, String)>,
) -> Vec<(&'static str, String)> {
    let mut params = vec![("q", q.to_string())];
    if !indexes.is_empty() {
        params.push(("index", indexes.join(",")));
    }
    if let Some(s) = start {
        params.push(("start", logsift_core::time::format_rfc3339(s)));
    }
    if let Some(e) = end {
        params.push(("end", logsift_core::time::format_rfc3339(e)));
    }
    params.extend(more);
    params
}

/// The sealed segments in `[start, end)` of `indexes`, by the searcher that reads each.
fn assign(
    state: &AppState,
    indexes: &[String],
    start: Option<i64>,
    end: Option<i64>,
) -> Result<BTreeMap<String, BTreeSet<SegmentRef>>, ApiError> {
    let handles = logsift_query::resolve_indexes(&state.store, indexes).map_err(query_error)?;
    let searchers = &state.cfg.searchers;
    let mut shares: BTreeMap<String, BTreeSet<SegmentRef>> = BTreeMap::new();
    for h in handles {
        for (entry, _) in h.sealed_parts(start, end) {
            let segment = (h.name().to_string(), entry.segment);
            shares
                .entry(owner(searchers, &segment).to_string())
                .or_default()
                .insert(segment);
        }
    }
    Ok(shares)
}

/// Asks the searcher at `url` for `segments`' share of `query`, with the caller's
/// credentials.
async fn ask<T: Share, F>(
    client: &reqwest::Client,
    url: &str,
    headers: &HeaderMap,
    query: &Shared<F>,
    segments: &BTreeSet<SegmentRef>,
    timeout: std::time::Duration,
) -> Result<T, String> {
    let mut request = client
        .post(format!("{}{}", url.trim_end_matches('/'), query.path))
        .query(&query.params)
        .json(&serde_json::json!({ "segments": segments }))
        .timeout(timeout);
    if let Some(auth) = headers.get(axum::http::header::AUTHORIZATION) {
        request = request.header(reqwest::header::AUTHORIZATION, auth.as_bytes());
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(format!(
            "{status}: {}",
            body.chars().take(300).collect::<String>()
        ));
    }
    response.json().await.map_err(|e| e.to_string())
}

/// One page from several answers: see the module comment.
fn merge(answers: Vec<SearchResponse>, req: &SearchRequest) -> Result<SearchResponse, ApiError> {
    let bad_key = |e: QueryError| ApiError::internal(format!("a share's sort key: {e}"));
    let mut total = 0;
    let mut exact = true;
    let mut more = false;
    let partial = answers.iter().any(|a| a.partial);
    // The narrowest covered range of the partial answers, ns.
    let covered = narrowest(answers.iter().map(|a| a.covered.clone()));
    let mut hits: Vec<((i64, u64), Value)> = Vec::new();
    for a in answers {
        total += a.total;
        exact &= a.total_exact;
        more |= a.next_cursor.is_some();
        if a.keys.len() != a.hits.len() {
            return Err(ApiError::internal(format!(
                "a share answered {} hits but {} sort keys",
                a.hits.len(),
                a.keys.len()
            )));
        }
        for (key, hit) in a.keys.iter().zip(a.hits) {
            hits.push((parse_sort_key(key).map_err(bad_key)?, hit));
        }
    }
    if let Some((s, e)) = covered {
        hits.retain(|((ts, _), _)| *ts >= s && *ts < e);
    }
    match req.order {
        SortOrder::Desc => hits.sort_by_key(|h| std::cmp::Reverse(h.0)),
        SortOrder::Asc => hits.sort_by_key(|h| h.0),
    }
    let cut = hits.len() > req.limit;
    hits.truncate(req.limit);
    let next_cursor = match (hits.last(), covered) {
        (Some(((ts, id), _)), _) if cut || more => Some(format!("{ts}_{id}")),
        // As one process answers: the covered range holds no more matches, so go on from
        // its edge, where the unsearched parts begin.
        (_, Some((s, e))) if partial && hits.len() < req.limit => Some(match req.order {
            SortOrder::Desc => format!("{s}_0"),
            SortOrder::Asc => format!("{}_{}", e.saturating_sub(1), u64::MAX),
        }),
        (Some(((ts, id), _)), Some(_)) if partial => Some(format!("{ts}_{id}")),
        _ => None,
    };
    Ok(SearchResponse {
        total,
        total_exact: exact && !partial,
        next_cursor,
        partial,
        covered: covered_of(covered),
        hits: hits.into_iter().map(|(_, h)| h).collect(),
        took_ms: 0,
        keys: Vec::new(),
        missing_segments: Vec::new(),
    })
}

/// A histogram's answer as a share of one (the routes' JSON, read back).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct HistogramShare {
    pub buckets: Vec<HistogramShareBucket>,
    pub interval_ms: i64,
    pub total: u64,
    pub total_exact: bool,
    pub partial: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covered: Option<logsift_query::Covered>,
    #[serde(default)]
    pub took_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_segments: Vec<SegmentRef>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct HistogramShareBucket {
    pub start: String,
    pub count: u64,
    pub by_severity: BTreeMap<String, u64>,
}

/// A terms count's answer as a share of one.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct TermsShare {
    pub field: String,
    pub buckets: Vec<TermsShareBucket>,
    pub other_count: u64,
    pub missing: u64,
    pub total: u64,
    pub total_exact: bool,
    pub partial: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partial_reasons: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covered: Option<logsift_query::Covered>,
    #[serde(default)]
    pub took_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_segments: Vec<SegmentRef>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct TermsShareBucket {
    pub value: String,
    pub count: u64,
}

/// This process's answer in a share's form.
pub(crate) fn as_share<A: serde::Serialize, S: serde::de::DeserializeOwned>(
    answer: A,
) -> Result<S, QueryError> {
    serde_json::to_value(answer)
        .and_then(serde_json::from_value)
        .map_err(|e| QueryError::BadRequest(format!("an answer that does not read back: {e}")))
}

/// The narrowest range every partial answer covers completely (ns), if any is partial.
fn narrowest(covered: impl Iterator<Item = Option<logsift_query::Covered>>) -> Option<(i64, i64)> {
    let mut out: Option<(i64, i64)> = None;
    for c in covered.flatten() {
        let (Some(s), Some(e)) = (
            logsift_core::time::parse_rfc3339(&c.start),
            logsift_core::time::parse_rfc3339(&c.end),
        ) else {
            continue;
        };
        out = Some(out.map_or((s, e), |(cs, ce)| (cs.max(s), ce.min(e))));
    }
    out
}

fn covered_of(range: Option<(i64, i64)>) -> Option<logsift_query::Covered> {
    range.map(|(s, e)| logsift_query::Covered {
        start: logsift_core::time::format_rfc3339(s),
        end: logsift_core::time::format_rfc3339(e),
    })
}

/// One histogram from the shares' (each over the same buckets: the root fixed the range and
/// the interval): counts added bucket by bucket.
pub(crate) fn merge_histograms(answers: Vec<HistogramShare>, gone: bool) -> HistogramShare {
    let interval_ms = answers.first().map_or(0, |a| a.interval_ms);
    let partial = gone || answers.iter().any(|a| a.partial);
    let exact = !partial && answers.iter().all(|a| a.total_exact);
    let covered = narrowest(answers.iter().map(|a| a.covered.clone()));
    let mut total = 0;
    let mut buckets: BTreeMap<String, HistogramShareBucket> = BTreeMap::new();
    for a in answers {
        total += a.total;
        for b in a.buckets {
            let into = buckets
                .entry(b.start.clone())
                .or_insert_with(|| HistogramShareBucket {
                    start: b.start,
                    count: 0,
                    by_severity: BTreeMap::new(),
                });
            into.count += b.count;
            for (sev, n) in b.by_severity {
                *into.by_severity.entry(sev).or_default() += n;
            }
        }
    }
    HistogramShare {
        buckets: buckets.into_values().collect(),
        interval_ms,
        total,
        total_exact: exact,
        partial,
        covered: covered_of(covered),
        took_ms: 0,
        missing_segments: Vec::new(),
    }
}

/// One terms count from the shares', each asked for up to `agg::MAX_TERMS` values: counts
/// added value by value, the `size` most frequent kept. A share that had more values than it
/// listed makes the merged counts lower bounds (`values_cap`).
pub(crate) fn merge_terms(answers: Vec<TermsShare>, size: usize, gone: bool) -> TermsShare {
    let field = answers.first().map(|a| a.field.clone()).unwrap_or_default();
    let mut reasons: BTreeSet<String> = answers
        .iter()
        .flat_map(|a| a.partial_reasons.iter().cloned())
        .collect();
    if answers.iter().any(|a| a.other_count > 0) {
        reasons.insert("values_cap".into());
    }
    if gone {
        reasons.insert("segments_gone".into());
    }
    let exact = !gone && answers.iter().all(|a| a.total_exact);
    let covered = narrowest(answers.iter().map(|a| a.covered.clone()));
    let (mut total, mut missing) = (0, 0);
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for a in answers {
        total += a.total;
        missing += a.missing;
        for b in a.buckets {
            *counts.entry(b.value).or_default() += b.count;
        }
    }
    let mut all: Vec<(String, u64)> = counts.into_iter().collect();
    all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(size);
    let listed: u64 = all.iter().map(|(_, n)| n).sum();
    TermsShare {
        field,
        buckets: all
            .into_iter()
            .map(|(value, count)| TermsShareBucket { value, count })
            .collect(),
        other_count: total.saturating_sub(missing).saturating_sub(listed),
        missing,
        total,
        total_exact: exact,
        partial: !reasons.is_empty(),
        partial_reasons: reasons.into_iter().collect(),
        covered: covered_of(covered),
        took_ms: 0,
        missing_segments: Vec::new(),
    }
}

/// Segments asked of a searcher: the body of `POST /api/v1/{search,histogram,terms}/part`.
#[derive(Debug, serde::Deserialize)]
pub struct PartBody {
    pub segments: Vec<SegmentRef>,
}

impl PartBody {
    pub(crate) fn only(self) -> Segments {
        Segments::Only(self.segments.into_iter().collect())
    }
}

/// Shared by every fan-out: connections to searchers are kept alive between queries.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each segment has one owner, the same whatever the order of the list, and removing a
    /// searcher moves only the segments it owned.
    #[test]
    fn rendezvous_owners_are_stable_and_move_only_what_they_must() {
        let three: Vec<String> = ["http://a", "http://b", "http://c"]
            .map(String::from)
            .to_vec();
        let reversed: Vec<String> = three.iter().rev().cloned().collect();
        let two: Vec<String> = three[..2].to_vec();
        let mut counts = BTreeMap::new();
        for i in 0..3000 {
            let seg = ("logs".to_string(), format!("{i:020}"));
            let o = owner(&three, &seg);
            assert_eq!(o, owner(&reversed, &seg));
            *counts.entry(o.to_string()).or_insert(0) += 1;
            if o != "http://c" {
                assert_eq!(owner(&two, &seg), o, "a segment moved between survivors");
            }
        }
        for (url, n) in &counts {
            assert!((800..1200).contains(n), "{url} owns {n} of 3000");
        }
    }
}
