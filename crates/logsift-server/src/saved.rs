//! Saved searches: `GET/POST /api/v1/saved`, `GET/DELETE /api/v1/saved/{name}`. A saved
//! search is a name for a query, its indexes and a time range (relative like `now-1h`, or
//! absolute); anyone who may search can list and open them, so a name is enough to share one
//! (the web page opens `/?saved=NAME`). Opening one runs it with the caller's own scope.
//! Kept in `DATA_DIR/saved-searches.json` (see [`crate::persist`]).

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use logsift_core::time::{format_rfc3339, now_ns, parse_time_expr};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{audited, with_details, Caller};
use crate::{ApiError, AppState, Principal, Role};

const FORMAT: &str = "logsift-saved-searches";
const VERSION: u64 = 1;
/// Saved searches kept at most; the file is read whole at start.
pub const MAX_SAVED: usize = 10_000;
const MAX_NAME_BYTES: usize = 128;
const MAX_QUERY_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedSearch {
    pub name: String,
    #[serde(default)]
    pub query: String,
    /// Comma-separated index names; empty: every index the caller may read.
    #[serde(default)]
    pub index: String,
    /// Time expressions as the search API takes them (`now-1h`, RFC 3339); empty: open.
    #[serde(default)]
    pub start: String,
    #[serde(default)]
    pub end: String,
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub updated_at: String,
}

/// What a client may send; who and when are set by the server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedParams {
    name: String,
    #[serde(default)]
    query: String,
    #[serde(default)]
    index: String,
    #[serde(default)]
    start: String,
    #[serde(default)]
    end: String,
}

pub struct SavedSearches {
    path: PathBuf,
    items: Mutex<BTreeMap<String, SavedSearch>>,
    /// Serialises writes so that two saves cannot rename their files out of order.
    write_lock: tokio::sync::Mutex<()>,
}

/// Names are shared in URLs and chat: letters, digits and `-_.` only.
pub fn check_name(name: &str, what: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!("{what} name must be 1 to {MAX_NAME_BYTES} bytes"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "{what} name {name:?} may hold only letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

impl SavedSearches {
    pub fn open(data_dir: &std::path::Path) -> Result<SavedSearches, String> {
        let path = data_dir.join("saved-searches.json");
        let mut items = BTreeMap::new();
        if let Some(doc) = crate::persist::read(&path, FORMAT, VERSION)? {
            let list: Vec<SavedSearch> =
                serde_json::from_value(doc.get("searches").cloned().unwrap_or(json!([])))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            for s in list {
                items.insert(s.name.clone(), s);
            }
        }
        Ok(SavedSearches {
            path,
            items: Mutex::new(items),
            write_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn list(&self) -> Vec<SavedSearch> {
        let items = self.items.lock();
        items.values().cloned().collect()
    }

    fn get(&self, name: &str) -> Option<SavedSearch> {
        let items = self.items.lock();
        items.get(name).cloned()
    }

    /// Applies `change` to a copy, writes it, and only then makes it visible: a failed write
    /// leaves the searches as they were.
    async fn update(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, SavedSearch>) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        let _writing = self.write_lock.lock().await;
        let mut next = self.items.lock().clone();
        change(&mut next)?;
        let doc = json!({ "searches": next.values().collect::<Vec<_>>() });
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || crate::persist::write(&path, FORMAT, VERSION, doc))
            .await
            .map_err(|e| ApiError::internal(format!("saving searches failed: {e}")))?
            .map_err(|e| ApiError::internal(format!("saving searches failed: {e}")))?;
        *self.items.lock() = next;
        Ok(())
    }
}

fn validate(p: &SavedParams) -> Result<(), ApiError> {
    let bad = |m: String| ApiError::bad_request("bad_parameter", m);
    check_name(&p.name, "a saved search's").map_err(bad)?;
    if p.query.len() > MAX_QUERY_BYTES {
        return Err(bad(format!("query is over {MAX_QUERY_BYTES} bytes")));
    }
    logsift_query::parse_query(&p.query)
        .map_err(|e| ApiError::bad_request("bad_query", e.to_string()))?;
    for n in crate::search::index_list(Some(p.index.clone())) {
        logsift_core::IndexName::new_builtin(&n)
            .map_err(|e| ApiError::bad_request("bad_index", e.to_string()))?;
    }
    let now = now_ns();
    for (name, v) in [("start", &p.start), ("end", &p.end)] {
        if !v.is_empty() {
            parse_time_expr(v, now).map_err(|e| bad(format!("{name}: {e}")))?;
        }
    }
    Ok(())
}

fn saved_json(s: &SavedSearch) -> serde_json::Value {
    json!({
        "name": s.name,
        "query": s.query,
        "index": s.index,
        "start": s.start,
        "end": s.end,
        "created_by": s.created_by,
        "updated_at": s.updated_at,
        // Opens the search on the web page.
        "url": format!("/?saved={}", s.name),
    })
}

pub async fn list(State(state): State<AppState>) -> Response {
    let list: Vec<_> = state.saved.list().iter().map(saved_json).collect();
    let n = list.len() as u64;
    audited(Json(json!({ "saved": list })), n)
}

pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let s = state
        .saved
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("no saved search {name:?}")))?;
    Ok(audited(Json(saved_json(&s)), 1))
}

/// Creates a saved search or replaces the one of that name.
pub async fn save(
    State(state): State<AppState>,
    who: Caller,
    body: Result<Json<SavedParams>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(p) = body.map_err(|e| ApiError::bad_request("bad_body", e.body_text()))?;
    validate(&p)?;
    let saved = SavedSearch {
        name: p.name,
        query: p.query,
        index: p.index,
        start: p.start,
        end: p.end,
        created_by: who.name(),
        updated_at: format_rfc3339(now_ns()),
    };
    let mut replaced = false;
    let item = saved.clone();
    state
        .saved
        .update(|items| {
            if !items.contains_key(&item.name) && items.len() >= MAX_SAVED {
                return Err(ApiError::bad_request(
                    "too_many_saved",
                    format!("{MAX_SAVED} searches are saved already; delete some first"),
                ));
            }
            replaced = items.insert(item.name.clone(), item).is_some();
            Ok(())
        })
        .await?;
    tracing::info!(saved = %saved.name, by = %saved.created_by, replaced, "saved search stored");
    let status = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let body = saved_json(&saved);
    Ok(with_details(
        (status, audited(Json(body.clone()), 1)).into_response(),
        json!({"saved": body, "replaced": replaced}),
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    // Anyone who searches may save; deleting someone else's search needs admin.
    let mut removed = None;
    state
        .saved
        .update(|items| {
            let Some(s) = items.get(&name) else {
                return Err(ApiError::not_found(format!("no saved search {name:?}")));
            };
            if s.created_by != principal.label() {
                principal.require(Role::Admin).map_err(|_| {
                    ApiError::new(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        format!(
                            "saved search {name:?} was saved by {}; only they or an admin may delete it",
                            s.created_by
                        ),
                    )
                })?;
            }
            removed = items.remove(&name);
            Ok(())
        })
        .await?;
    let removed = removed.map(|s| saved_json(&s)).unwrap_or_default();
    tracing::info!(saved = %name, "saved search deleted");
    Ok(with_details(
        audited(Json(json!({ "deleted": removed })), 1),
        json!({"saved": removed}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file written by format version 1 (`testdata/v1`) is still read.
    #[test]
    fn version_1_file_is_read() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/v1");
        let saved = SavedSearches::open(&dir).unwrap();
        let list = saved.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].name, "pg-disk");
        assert_eq!(list[0].query, "\"disk full\" AND app:pg");
        assert_eq!(list[0].start, "now-1h");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("web-01_errors.v2", "x").is_ok());
        for bad in ["", "a b", "../x", "a/b", "é", &"n".repeat(129)] {
            assert!(check_name(bad, "x").is_err(), "{bad:?}");
        }
    }
}
