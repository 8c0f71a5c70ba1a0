//! `GET /api/v1/alerts`, `GET/POST /api/v1/alerts/rules`, `DELETE /api/v1/alerts/rules/{name}`.

use std::collections::BTreeMap;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use logsift_core::time::format_rfc3339;
use serde_json::{json, Map, Value};

use super::{
    Alerts, GroupState, Phase, Rule, RuleSpec, RuleState, MAX_RULES, RULES_FORMAT, VERSION,
};
use crate::audit::{audited, with_details};
use crate::{ApiError, AppState, Principal, Role};

fn group_json(rule: &Rule, group: &str, g: &GroupState) -> Value {
    let mut labels = Map::new();
    if let Some(field) = &rule.spec.group_by {
        labels.insert(field.clone(), json!(group));
    }
    json!({
        "rule": rule.spec.name,
        "group": labels,
        "state": g.phase,
        "value": g.value,
        "active_at": format_rfc3339(g.active_at_ns),
        "fired_at": g.fired_at_ns.map(format_rfc3339),
        "resolved_at": g.resolved_at_ns.map(format_rfc3339),
        "last_sent_at": g.last_sent_ns.map(format_rfc3339),
    })
}

fn rule_json(rule: &Rule, state: Option<&RuleState>) -> Value {
    let phase = match state {
        Some(s) if s.error.is_some() => "error",
        Some(s) if s.groups.values().any(|g| g.phase == Phase::Firing) => "firing",
        Some(s) if s.groups.values().any(|g| g.phase == Phase::Pending) => "pending",
        Some(s) if s.groups.values().any(|g| g.phase == Phase::Resolved) => "resolved",
        _ => "inactive",
    };
    json!({
        "name": rule.spec.name,
        "source": rule.source,
        "spec": rule.spec,
        "state": phase,
        "error": state.and_then(|s| s.error.clone()),
        "last_evaluation": state.and_then(|s| s.last_eval_ns).map(format_rfc3339),
        "last_duration_ms": state.map_or(0, |s| s.last_duration_ms),
    })
}

/// `GET /api/v1/alerts`: every rule's state and its active groups.
pub async fn list_alerts(State(state): State<AppState>) -> Response {
    let inner = state.alerts.lock();
    let mut alerts = Vec::new();
    let mut rules = Vec::new();
    for (name, rule) in &inner.rules {
        let st = inner.states.get(name);
        rules.push(rule_json(rule, st));
        if let Some(st) = st {
            for (group, g) in &st.groups {
                alerts.push(group_json(rule, group, g));
            }
        }
    }
    let n = alerts.len() as u64;
    audited(Json(json!({"alerts": alerts, "rules": rules})), n)
}

/// `GET /api/v1/alerts/rules`.
pub async fn list_rules(State(state): State<AppState>) -> Response {
    let inner = state.alerts.lock();
    let rules: Vec<Value> = inner
        .rules
        .iter()
        .map(|(name, rule)| rule_json(rule, inner.states.get(name)))
        .collect();
    let n = rules.len() as u64;
    audited(Json(json!({"rules": rules})), n)
}

impl Alerts {
    /// Applies `change` to a copy of the API rules, saves them, then makes them current.
    async fn update_rules(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, Rule>) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        let _writing = self.write_lock.lock().await;
        let mut next = self.lock().rules.clone();
        change(&mut next)?;
        let specs: Vec<&RuleSpec> = next
            .values()
            .filter(|r| r.source == "api")
            .map(|r| &r.spec)
            .collect();
        let doc = json!({ "rules": specs });
        let path = self.dir.join("rules.json");
        tokio::task::spawn_blocking(move || {
            crate::persist::write(&path, RULES_FORMAT, VERSION, doc)
        })
        .await
        .map_err(|e| ApiError::internal(format!("saving alert rules failed: {e}")))?
        .map_err(|e| ApiError::internal(format!("saving alert rules failed: {e}")))?;
        let mut inner = self.lock();
        inner.states.retain(|name, _| next.contains_key(name));
        inner.due.retain(|name, _| next.contains_key(name));
        inner.rules = next;
        Ok(())
    }
}

/// `POST /api/v1/alerts/rules`: creates a rule, or replaces an API rule of that name (its
/// state starts afresh when its definition changed).
pub async fn put_rule(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<RuleSpec>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    principal.require(Role::Admin)?;
    let Json(spec) = body.map_err(|e| ApiError::bad_request("bad_rule", e.body_text()))?;
    let rule = Rule::new(spec, "api").map_err(|e| ApiError::bad_request("bad_rule", e))?;
    let name = rule.spec.name.clone();
    let spec_json = json!(rule.spec);
    let mut replaced = false;
    let mut changed = true;
    state
        .alerts
        .update_rules(|rules| {
            if let Some(old) = rules.get(&name) {
                if old.source != "api" {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "rule_in_config",
                        format!(
                            "alert rule {name:?} is defined in the configuration; change it there"
                        ),
                    ));
                }
                replaced = true;
                changed = old.spec != rule.spec;
            } else if rules.len() >= MAX_RULES {
                return Err(ApiError::bad_request(
                    "too_many_rules",
                    format!("{MAX_RULES} alert rules exist already; delete some first"),
                ));
            }
            rules.insert(name.clone(), rule);
            Ok(())
        })
        .await?;
    if changed && replaced {
        state.alerts.lock().states.remove(&name);
    }
    tracing::info!(rule = %name, replaced, "alert rule saved");
    let status = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let body = json!({"rule": spec_json, "replaced": replaced});
    Ok(with_details(
        (status, audited(Json(body.clone()), 1)).into_response(),
        body,
    ))
}

/// `DELETE /api/v1/alerts/rules/{name}`: API rules only. Its firing alerts are not resolved
/// in Alertmanager by this; they end at their `endsAt`.
pub async fn delete_rule(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ApiError> {
    principal.require(Role::Admin)?;
    let mut removed = None;
    state
        .alerts
        .update_rules(|rules| match rules.get(&name) {
            None => Err(ApiError::not_found(format!("no alert rule {name:?}"))),
            Some(r) if r.source != "api" => Err(ApiError::new(
                StatusCode::CONFLICT,
                "rule_in_config",
                format!("alert rule {name:?} is defined in the configuration; remove it there"),
            )),
            Some(_) => {
                removed = rules.remove(&name);
                Ok(())
            }
        })
        .await?;
    let spec = removed.map(|r| json!(r.spec)).unwrap_or_default();
    tracing::info!(rule = %name, "alert rule deleted");
    Ok(with_details(
        audited(Json(json!({"deleted": spec})), 1),
        json!({"rule": spec}),
    ))
}
