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

/// One share's answer, or why there is none.
type Share = Result<SearchResponse, String>;

/// Runs `req` over this process and the searchers; see the module comment.
pub(crate) async fn search(
    state: &AppState,
    limits: &QueryLimits,
    headers: &HeaderMap,
    req: SearchRequest,
) -> Result<SearchResponse, ApiError> {
    let started = Instant::now();
    for attempt in 0..2 {
        let shares = assign(state, &req)?;
        let given: BTreeSet<SegmentRef> = shares.values().flatten().cloned().collect();
        let remote = shares.into_iter().map(|(url, segments)| {
            let client = state.searcher_client.clone();
            let headers = headers.clone();
            let req = req.clone();
            let timeout = limits.timeout();
            async move {
                let answer = ask(&client, &url, &headers, &req, &segments, timeout).await;
                (url, segments, answer)
            }
        });
        let store = state.store.clone();
        let local_req = SearchRequest {
            segments: Segments::Except(given.clone()),
            ..req.clone()
        };
        let local = run_query(limits, move |budget| {
            logsift_query::search(
                &store,
                &SearchRequest {
                    budget,
                    ..local_req
                },
            )
        });
        let (local, remote) = tokio::join!(local, futures_util::future::join_all(remote));
        let local = local?;
        if !local.missing.is_empty() && attempt == 0 {
            // A segment given away is no longer served here: the view changed mid-search,
            // and its replacement may have been read here as well.
            continue;
        }
        let mut answers = vec![local];
        let mut unread = BTreeSet::new();
        for (url, segments, answer) in remote {
            match answer {
                Ok(a) => {
                    state.metrics.fanout_shares.inc();
                    unread.extend(a.missing.iter().cloned());
                    answers.push(a);
                }
                Err(why) => {
                    state.metrics.fanout_failures.inc();
                    tracing::warn!(searcher = %url, error = %why, segments = segments.len(), "a searcher did not answer its share; reading it here");
                    unread.extend(segments);
                }
            }
        }
        let mut gone = false;
        if !unread.is_empty() {
            let store = state.store.clone();
            let retry = SearchRequest {
                segments: Segments::Only(unread),
                ..req.clone()
            };
            let answer = run_query(limits, move |budget| {
                logsift_query::search(&store, &SearchRequest { budget, ..retry })
            })
            .await?;
            gone = !answer.missing.is_empty();
            answers.push(answer);
        }
        let mut merged = merge(answers, &req)?;
        if gone {
            merged.partial = true;
            merged.total_exact = false;
        }
        merged.took_ms = started.elapsed().as_millis() as u64;
        return Ok(merged);
    }
    Err(ApiError::internal(
        "the segments changed twice while the search was shared; try again",
    ))
}

/// The sealed segments in the request's range, by the searcher that reads each.
fn assign(
    state: &AppState,
    req: &SearchRequest,
) -> Result<BTreeMap<String, BTreeSet<SegmentRef>>, ApiError> {
    let handles =
        logsift_query::resolve_indexes(&state.store, &req.indexes).map_err(query_error)?;
    let searchers = &state.cfg.searchers;
    let mut shares: BTreeMap<String, BTreeSet<SegmentRef>> = BTreeMap::new();
    for h in handles {
        for (entry, _) in h.sealed_parts(req.start, req.end) {
            let segment = (h.name().to_string(), entry.segment);
            shares
                .entry(owner(searchers, &segment).to_string())
                .or_default()
                .insert(segment);
        }
    }
    Ok(shares)
}

/// Asks the searcher at `url` for `segments`' share of `req`, with the caller's credentials.
async fn ask(
    client: &reqwest::Client,
    url: &str,
    headers: &HeaderMap,
    req: &SearchRequest,
    segments: &BTreeSet<SegmentRef>,
    timeout: std::time::Duration,
) -> Share {
    let mut params: Vec<(&str, String)> = vec![
        ("q", req.query.clone()),
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
    if !req.indexes.is_empty() {
        params.push(("index", req.indexes.join(",")));
    }
    // RFC 3339 with nanoseconds: the same instants, as `/api/v1/search` reads them.
    if let Some(s) = req.start {
        params.push(("start", logsift_core::time::format_rfc3339(s)));
    }
    if let Some(e) = req.end {
        params.push(("end", logsift_core::time::format_rfc3339(e)));
    }
    if let Some(c) = &req.cursor {
        params.push(("cursor", c.clone()));
    }
    let mut request = client
        .post(format!("{}/api/v1/search/part", url.trim_end_matches('/')))
        .query(&params)
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
    let answer: SearchResponse = response.json().await.map_err(|e| e.to_string())?;
    if answer.keys.len() != answer.hits.len() {
        return Err(format!(
            "{} hits but {} sort keys",
            answer.hits.len(),
            answer.keys.len()
        ));
    }
    Ok(answer)
}

/// One page from several answers: see the module comment.
fn merge(answers: Vec<SearchResponse>, req: &SearchRequest) -> Result<SearchResponse, ApiError> {
    let bad_key = |e: QueryError| ApiError::internal(format!("a share's sort key: {e}"));
    let mut total = 0;
    let mut exact = true;
    let mut more = false;
    // The narrowest covered range of the partial answers, ns.
    let mut covered: Option<(i64, i64)> = None;
    let mut partial = false;
    let mut hits: Vec<((i64, u64), Value)> = Vec::new();
    for a in answers {
        total += a.total;
        exact &= a.total_exact;
        more |= a.next_cursor.is_some();
        if a.partial {
            partial = true;
            let range = a.covered.as_ref().and_then(|c| {
                let start = logsift_core::time::parse_rfc3339(&c.start)?;
                let end = logsift_core::time::parse_rfc3339(&c.end)?;
                Some((start, end))
            });
            if let Some((s, e)) = range {
                covered = Some(covered.map_or((s, e), |(cs, ce)| (cs.max(s), ce.min(e))));
            }
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
    let next_cursor = if (cut || more) && !hits.is_empty() {
        hits.last().map(|((ts, id), _)| format!("{ts}_{id}"))
    } else {
        None
    };
    Ok(SearchResponse {
        total,
        total_exact: exact && !partial,
        next_cursor,
        partial,
        covered: covered.map(|(s, e)| logsift_query::Covered {
            start: logsift_core::time::format_rfc3339(s),
            end: logsift_core::time::format_rfc3339(e),
        }),
        hits: hits.into_iter().map(|(_, h)| h).collect(),
        took_ms: 0,
        keys: Vec::new(),
        missing: Vec::new(),
    })
}

/// Segments asked of a searcher: `POST /api/v1/search/part`'s body.
#[derive(Debug, serde::Deserialize)]
pub struct PartBody {
    pub segments: Vec<SegmentRef>,
}

/// A budget-less request for `segments` only, from a root.
pub(crate) fn part_request(req: SearchRequest, body: PartBody) -> SearchRequest {
    SearchRequest {
        segments: Segments::Only(body.segments.into_iter().collect()),
        budget: Budget::default(),
        ..req
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
