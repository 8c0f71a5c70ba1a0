//! Alert rules: a log query counted over a sliding window, a condition on the count (or on
//! its rate against the previous window), optionally per value of a terms field so that each
//! host alerts on its own; evaluated on a schedule and sent to Prometheus Alertmanager and a
//! webhook (see [`notify`]).
//!
//! Rules come from the configuration (`[[alerts.rules]]`, read-only here) and from
//! `POST /api/v1/alerts/rules` (kept in `DATA_DIR/alerts/rules.json`). Each rule's groups
//! move through Prometheus's states: inactive → pending (condition true, `for` not yet
//! elapsed) → firing → resolved (condition false again; kept for [`RESOLVED_KEEP_NS`], then
//! inactive). The states, when each began and when each was last sent are kept in
//! `DATA_DIR/alerts/state.json`, so a restart keeps a firing alert's `startsAt` and resend
//! schedule: Alertmanager sees the same alert continue, neither lost nor doubled.
//!
//! One task on the server's runtime wakes every [`TICK`], takes every rule that is due and
//! evaluates them in one pass on the blocking pool (rules asking the same question of the same
//! range share one query). The queries are `logsift_query`'s histogram (total) and terms
//! (per group), which answer whole sealed segments from their summaries where the query
//! allows. Ingest never waits for any of it; a query that fails puts its rule in state
//! `error` with the message (and a metric), and keeps its groups as they were.

mod api;
pub mod notify;
pub mod rule;

use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use logsift_core::time::{format_rfc3339, now_ns};
use logsift_ingest::metrics::{family_with, CountGauge};
use logsift_query::agg::{self, HistogramRequest, TermsRequest};
use logsift_query::{Budget, SearchRequest, SortOrder};
use logsift_store::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

pub use api::{delete_rule, list_alerts, list_rules, put_rule};
pub use rule::{Condition, Measure, Rule, RuleSpec};

use crate::audit::{Audit, Caller};

/// How often the scheduler looks for due rules.
pub const TICK: Duration = Duration::from_millis(250);
/// A resolved group is shown (and kept in the state file) this long, then forgotten.
pub const RESOLVED_KEEP_NS: i64 = 15 * 60 * 1_000_000_000;
/// Rules at most (configured and API together): each is evaluated every interval.
pub const MAX_RULES: usize = 1000;
/// Groups one rule tracks; the terms aggregation counts at most this many values.
pub const MAX_GROUPS: usize = 1000;
/// Each sample line in a notification is cut to this many characters.
const MAX_LINE_CHARS: usize = 1000;
const STATE_FORMAT: &str = "logsift-alert-state";
const RULES_FORMAT: &str = "logsift-alert-rules";
const VERSION: u64 = 1;
const NS_PER_MS: i64 = 1_000_000;

/// `[alerts]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Base URL of Alertmanager (`http://host:9093`); empty: not sent there.
    pub alertmanager_url: String,
    /// URL a JSON body is POSTed to for each batch of notifications; empty: none.
    pub webhook_url: String,
    /// How often a firing alert is sent again.
    pub resend_interval: String,
    /// The web page's address as people open it (links in notifications); empty: the HTTP
    /// listener's address.
    pub external_url: String,
    /// Matching lines carried in each notification.
    pub first_lines: usize,
    pub rules: Vec<RuleSpec>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            alertmanager_url: String::new(),
            webhook_url: String::new(),
            resend_interval: "1m".into(),
            external_url: String::new(),
            first_lines: 5,
            rules: Vec::new(),
        }
    }
}

/// Checked `[alerts]` settings.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub alertmanager_url: Option<String>,
    pub webhook_url: Option<String>,
    pub resend_ms: i64,
    pub external_url: String,
    pub first_lines: usize,
    pub rules: Vec<Rule>,
}

fn check_url(key: &str, url: &str) -> Result<Option<String>, String> {
    if url.is_empty() {
        return Ok(None);
    }
    if url.starts_with("https://") {
        return Err(format!(
            "alerts.{key} {url:?}: this build sends notifications over plain HTTP only; put a \
             TLS-terminating proxy on loopback in front of the receiver"
        ));
    }
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "http" && u.host().is_some() => Ok(Some(url.to_string())),
        _ => Err(format!(
            "alerts.{key} {url:?} is not a URL like http://127.0.0.1:9093"
        )),
    }
}

impl AlertsConfig {
    /// Checks every setting and rule; the error says which and why.
    pub fn validate(&self) -> Result<AlertSettings, String> {
        let resend_ms = agg::parse_interval(&self.resend_interval).map_err(|_| {
            format!(
                "alerts.resend_interval {:?} is not a duration like 1m",
                self.resend_interval
            )
        })?;
        if resend_ms > rule::MAX_DURATION_MS {
            return Err("alerts.resend_interval must be at most 366 days".into());
        }
        if self.first_lines > 100 {
            return Err("alerts.first_lines must be at most 100".into());
        }
        let mut rules = Vec::new();
        let mut names = BTreeSet::new();
        if self.rules.len() > MAX_RULES {
            return Err(format!("at most {MAX_RULES} [[alerts.rules]]"));
        }
        for (i, spec) in self.rules.iter().enumerate() {
            let rule = Rule::new(spec.clone(), "config")
                .map_err(|e| format!("[[alerts.rules]] #{}: {e}", i + 1))?;
            if !names.insert(rule.spec.name.clone()) {
                return Err(format!(
                    "[[alerts.rules]] #{}: a rule named {:?} is defined twice",
                    i + 1,
                    rule.spec.name
                ));
            }
            rules.push(rule);
        }
        if !self.external_url.is_empty() && reqwest::Url::parse(&self.external_url).is_err() {
            return Err(format!(
                "alerts.external_url {:?} is not a URL",
                self.external_url
            ));
        }
        Ok(AlertSettings {
            alertmanager_url: check_url("alertmanager_url", &self.alertmanager_url)?,
            webhook_url: check_url("webhook_url", &self.webhook_url)?,
            resend_ms,
            external_url: self.external_url.trim_end_matches('/').to_string(),
            first_lines: self.first_lines,
            rules,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Pending,
    Firing,
    Resolved,
}

/// One group of one rule (the rule itself when it has no `group_by`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    pub phase: Phase,
    /// When the condition became true: Alertmanager's `startsAt`.
    pub active_at_ns: i64,
    #[serde(default)]
    pub fired_at_ns: Option<i64>,
    #[serde(default)]
    pub resolved_at_ns: Option<i64>,
    #[serde(default)]
    pub last_sent_ns: Option<i64>,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    #[serde(default)]
    pub last_eval_ns: Option<i64>,
    #[serde(default)]
    pub last_duration_ms: u64,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub groups: BTreeMap<String, GroupState>,
    /// For rules a quiet group can meet: each group's last window with records, so that one
    /// that goes quiet is still expected.
    #[serde(default)]
    pub seen: BTreeMap<String, i64>,
    /// Whether `seen` was filled from the lookback range once.
    #[serde(default)]
    pub seen_bootstrapped: bool,
}

impl RuleState {
    /// Whether only the evaluation's time and duration differ.
    fn same_but_times(&self, other: &RuleState) -> bool {
        self.groups == other.groups
            && self.seen == other.seen
            && self.error == other.error
            && self.seen_bootstrapped == other.seen_bootstrapped
    }
}

#[derive(Default)]
struct Inner {
    rules: BTreeMap<String, Rule>,
    states: BTreeMap<String, RuleState>,
    /// When each rule is next due, ns.
    due: HashMap<String, i64>,
}

/// Alert groups in one state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

const PHASES: [&str; 3] = ["pending", "firing", "resolved"];

logsift_ingest::metric_set! {
    /// What alerting counts; delivery's are in [`notify::DeliveryMetrics`].
    pub struct AlertMetrics {
        evaluations: Counter => "logsift_alert_evaluations", "Alert rule evaluations";
        failures: Counter => "logsift_alert_evaluation_failures", "Alert rule evaluations whose query failed (the rule is in state error)";
        passes: Counter => "logsift_alert_evaluation_passes", "Evaluation passes (the rules due at one tick run in one pass)";
        eval_seconds: Counter<f64, AtomicU64> => "logsift_alert_evaluation_seconds", "Time spent evaluating alert rules";
        dropped_batches: Counter => "logsift_alert_notification_batches_dropped", "Notification batches dropped because delivery was that far behind";
        state_write_failures: Counter => "logsift_alert_state_write_failures", "Failed saves of DATA_DIR/alerts/state.json";
        groups: Family<StateLabel, CountGauge> = family_with(PHASES.map(|state| StateLabel { state })) => "logsift_alerts", "Alert groups by state";
        rules: CountGauge => "logsift_alert_rules", "Alert rules loaded";
        rules_failing: CountGauge => "logsift_alert_rules_failing", "Alert rules whose last evaluation failed";
    }
}

pub struct Alerts {
    store: Arc<Store>,
    audit: Arc<Audit>,
    dir: PathBuf,
    settings: AlertSettings,
    query_timeout: Duration,
    terms_max_values: usize,
    inner: Mutex<Inner>,
    /// Serialises writes of `rules.json` and `state.json`.
    write_lock: tokio::sync::Mutex<()>,
    metrics: AlertMetrics,
    delivery: Arc<notify::DeliveryMetrics>,
    deliveries: OnceLock<notify::Deliveries>,
    external_url: OnceLock<String>,
}

impl Alerts {
    /// Loads API rules and saved state from `DATA_DIR/alerts` beside the configured rules.
    /// Blocking (reads files).
    pub fn open(
        data_dir: &Path,
        settings: AlertSettings,
        store: Arc<Store>,
        audit: Arc<Audit>,
        query_timeout: Duration,
        terms_max_values: usize,
    ) -> Result<Alerts, String> {
        let dir = data_dir.join("alerts");
        let mut rules = BTreeMap::new();
        for r in &settings.rules {
            rules.insert(r.spec.name.clone(), r.clone());
        }
        if let Some(doc) = crate::persist::read(&dir.join("rules.json"), RULES_FORMAT, VERSION)? {
            let specs: Vec<RuleSpec> =
                serde_json::from_value(doc.get("rules").cloned().unwrap_or(json!([])))
                    .map_err(|e| format!("{}/rules.json: {e}", dir.display()))?;
            for spec in specs {
                let name = spec.name.clone();
                let rule = Rule::new(spec, "api")
                    .map_err(|e| format!("{}/rules.json: {e}", dir.display()))?;
                if rules.contains_key(&name) {
                    return Err(format!(
                        "alert rule {name:?} is in the configuration and was also created over \
                         the API ({}/rules.json); rename the configured one or delete the API \
                         one (DELETE /api/v1/alerts/rules/{name}) before adding it to the config",
                        dir.display()
                    ));
                }
                rules.insert(name, rule);
            }
        }
        let mut states: BTreeMap<String, RuleState> = BTreeMap::new();
        if let Some(doc) = crate::persist::read(&dir.join("state.json"), STATE_FORMAT, VERSION)? {
            states = serde_json::from_value(doc.get("rules").cloned().unwrap_or(json!({})))
                .map_err(|e| format!("{}/state.json: {e}", dir.display()))?;
        }
        // State of rules that no longer exist goes; a rule that came back starts afresh.
        states.retain(|name, _| rules.contains_key(name));
        Ok(Alerts {
            store,
            audit,
            dir,
            settings,
            query_timeout,
            terms_max_values: terms_max_values.max(1),
            inner: Mutex::new(Inner {
                rules,
                states,
                due: HashMap::new(),
            }),
            write_lock: tokio::sync::Mutex::new(()),
            metrics: AlertMetrics::default(),
            delivery: Arc::default(),
            deliveries: OnceLock::new(),
            external_url: OnceLock::new(),
        })
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    /// Starts delivery and the evaluation loop on the current runtime. `http_url` is the
    /// listener's address, for links when `external_url` is not set.
    pub fn start(self: &Arc<Self>, http_url: &str, shutdown: tokio_util::sync::CancellationToken) {
        let base = if self.settings.external_url.is_empty() {
            http_url.trim_end_matches('/').to_string()
        } else {
            self.settings.external_url.clone()
        };
        let _ = self.external_url.set(base);
        let targets = notify::Targets {
            alertmanager: self.settings.alertmanager_url.clone(),
            webhook: self.settings.webhook_url.clone(),
        };
        let deliveries = notify::start(
            targets,
            self.delivery.clone(),
            self.audit.clone(),
            shutdown.clone(),
        );
        let _ = self.deliveries.set(deliveries);
        let configured: Vec<String> = self
            .settings
            .rules
            .iter()
            .map(|r| r.spec.name.clone())
            .collect();
        if !configured.is_empty() {
            self.audit.record(
                &system_caller(),
                "alert rules configured",
                json!({"rules": configured}),
                configured.len() as u64,
                "ok",
            );
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                me.pass().await;
            }
        });
    }

    /// Evaluates every due rule in one blocking pass, applies the results, saves the state
    /// and hands notifications to delivery.
    async fn pass(self: &Arc<Self>) {
        let now = now_ns();
        let work: Vec<(Rule, RuleState)> = {
            let mut inner = self.lock();
            let Inner { rules, states, due } = &mut *inner;
            let mut work = Vec::new();
            for r in rules.values() {
                if due.get(&r.spec.name).is_some_and(|&d| d > now) {
                    continue;
                }
                due.insert(r.spec.name.clone(), now + r.interval_ms * NS_PER_MS);
                let state = states.get(&r.spec.name).cloned().unwrap_or_default();
                work.push((r.clone(), state));
            }
            work
        };
        if work.is_empty() {
            return;
        }
        let me = self.clone();
        let outcome = tokio::task::spawn_blocking(move || me.evaluate(work, now)).await;
        let Ok(results) = outcome else {
            tracing::error!(
                "an alert evaluation pass panicked; its rules are retried at their next interval"
            );
            return;
        };
        self.metrics.passes.inc();
        let mut batch = Vec::new();
        let doc = {
            let mut inner = self.lock();
            let mut changed = false;
            for (spec, state, notes) in results {
                // A rule deleted or replaced while it was evaluated keeps no state from it.
                if inner.rules.get(&spec.name).is_some_and(|r| r.spec == spec) {
                    changed |= inner
                        .states
                        .get(&spec.name)
                        .is_none_or(|old| !old.same_but_times(&state));
                    inner.states.insert(spec.name, state);
                    batch.extend(notes);
                }
            }
            // Evaluation times alone are not worth an fsync every interval.
            changed.then(|| json!({ "rules": inner.states }))
        };
        if let Some(doc) = doc {
            self.save_state(doc).await;
        }
        if batch.is_empty() {
            return;
        }
        if let Some(deliveries) = self.deliveries.get() {
            for target in deliveries.send(batch) {
                self.metrics.dropped_batches.inc();
                tracing::warn!(
                    target,
                    "alert notifications dropped: {} batches already wait for delivery there",
                    notify::QUEUE_BATCHES
                );
            }
        }
    }

    async fn save_state(&self, doc: Value) {
        let _writing = self.write_lock.lock().await;
        let path = self.dir.join("state.json");
        let saved = tokio::task::spawn_blocking(move || {
            crate::persist::write(&path, STATE_FORMAT, VERSION, doc)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        if let Err(e) = saved {
            self.metrics.state_write_failures.inc();
            tracing::warn!(error = %e, "alert state could not be saved; a restart may repeat or miss a notification");
        }
    }

    /// The blocking pass: counts, transitions, and sample lines for what is to be sent.
    fn evaluate(
        &self,
        work: Vec<(Rule, RuleState)>,
        now: i64,
    ) -> Vec<(RuleSpec, RuleState, Vec<notify::Notification>)> {
        let mut cache: HashMap<CountKey, Result<BTreeMap<String, u64>, String>> = HashMap::new();
        let mut out = Vec::with_capacity(work.len());
        for (rule, mut state) in work {
            let started = Instant::now();
            let observed = self.observe(&rule, &mut state, now, &mut cache);
            let took = started.elapsed();
            self.metrics.evaluations.inc();
            self.metrics.eval_seconds.inc_by(took.as_secs_f64());
            state.last_eval_ns = Some(now);
            state.last_duration_ms = took.as_millis() as u64;
            let notes = match observed {
                Ok(values) => {
                    state.error = None;
                    let sends = step(&rule, &mut state, &values, now, self.settings.resend_ms);
                    sends
                        .into_iter()
                        .map(|group| self.notification(&rule, &state, &group, now))
                        .collect()
                }
                Err(e) => {
                    self.metrics.failures.inc();
                    tracing::warn!(rule = %rule.spec.name, error = %e, "alert rule evaluation failed");
                    state.error = Some(e);
                    Vec::new()
                }
            };
            out.push((rule.spec, state, notes));
        }
        out
    }

    /// Each group's value for this evaluation, with the groups a quiet group rule expects.
    fn observe(
        &self,
        rule: &Rule,
        state: &mut RuleState,
        now: i64,
        cache: &mut HashMap<CountKey, Result<BTreeMap<String, u64>, String>>,
    ) -> Result<BTreeMap<String, f64>, String> {
        let window = rule.window_ms * NS_PER_MS;
        let mut count = |start: i64, end: i64| {
            let key = CountKey {
                query: rule.spec.query.clone(),
                indexes: rule.indexes.clone(),
                group_by: rule.spec.group_by.clone(),
                start,
                end,
            };
            cache
                .entry(key)
                .or_insert_with_key(|k| self.count(k))
                .clone()
        };
        let current = count(now - window, now)?;
        let mut values: BTreeMap<String, f64> = match rule.condition.measure {
            Measure::Count => current
                .iter()
                .map(|(g, &n)| (g.clone(), n as f64))
                .collect(),
            Measure::Rate => {
                let previous = count(now - 2 * window, now - window)?;
                // Without records in the previous window there is no baseline to compare
                // with: such a group has no rate and does not meet the condition (a rule
                // for lines appearing from nothing is `count > N`).
                previous
                    .iter()
                    .filter(|(_, &p)| p > 0)
                    .map(|(g, &p)| {
                        let cur = current.get(g).copied().unwrap_or(0);
                        (g.clone(), cur as f64 / p as f64)
                    })
                    .collect()
            }
        };
        if rule.spec.group_by.is_none() {
            if rule.condition.measure == Measure::Count {
                values.entry(String::new()).or_insert(0.0);
            }
        } else if rule.condition.measure == Measure::Count && rule.condition.quiet_fires() {
            // (A rate rule sees a quiet group through the previous window already.)
            if !state.seen_bootstrapped {
                let earlier = count(now - rule.lookback_ms * NS_PER_MS, now - window)?;
                for g in earlier.into_keys() {
                    state.seen.entry(g).or_insert(now - window);
                }
                state.seen_bootstrapped = true;
            }
            for g in current.keys() {
                state.seen.insert(g.clone(), now);
            }
            let horizon = now - rule.lookback_ms * NS_PER_MS;
            let groups = &state.groups;
            state
                .seen
                .retain(|g, &mut last| last >= horizon || groups.contains_key(g));
            if state.seen.len() > MAX_GROUPS {
                // Forget the longest quiet first: the table must stay bounded.
                let mut by_age: Vec<(i64, String)> =
                    state.seen.iter().map(|(g, &t)| (t, g.clone())).collect();
                by_age.sort();
                for (_, g) in by_age.into_iter().take(state.seen.len() - MAX_GROUPS) {
                    state.seen.remove(&g);
                }
            }
            for g in state.seen.keys().chain(state.groups.keys()) {
                values.entry(g.clone()).or_insert(0.0);
            }
        }
        Ok(values)
    }

    /// Matches per group in `[start, end)`: the histogram's total without `group_by`, the
    /// terms aggregation with it. A partial answer is an error: a count cut short by the time
    /// limit would make `count < N` rules fire falsely.
    fn count(&self, k: &CountKey) -> Result<BTreeMap<String, u64>, String> {
        let budget = Budget::with_deadline(Instant::now() + self.query_timeout);
        let partial = || {
            format!(
                "the query did not finish within query.query_timeout_ms ({} ms); narrow it or its window",
                self.query_timeout.as_millis()
            )
        };
        match &k.group_by {
            None => {
                let h = agg::histogram(
                    &self.store,
                    &HistogramRequest {
                        query: k.query.clone(),
                        indexes: k.indexes.clone(),
                        start: Some(k.start),
                        end: Some(k.end),
                        interval_ms: Some(((k.end - k.start) / NS_PER_MS).max(1)),
                        budget,
                        segments: Default::default(),
                    },
                )
                .map_err(|e| e.to_string())?;
                if h.partial {
                    return Err(partial());
                }
                Ok(BTreeMap::from([(String::new(), h.total)]))
            }
            Some(field) => {
                let t = agg::terms(
                    &self.store,
                    &TermsRequest {
                        query: k.query.clone(),
                        indexes: k.indexes.clone(),
                        start: Some(k.start),
                        end: Some(k.end),
                        field: field.clone(),
                        size: MAX_GROUPS,
                        max_values: self.terms_max_values,
                        budget,
                        segments: Default::default(),
                    },
                )
                .map_err(|e| e.to_string())?;
                if t.partial {
                    return Err(partial());
                }
                Ok(t.buckets.into_iter().map(|b| (b.value, b.count)).collect())
            }
        }
    }

    /// What is sent for `group` of `rule` (in its new state): labels, annotations, the link
    /// that opens its lines, and the first of them.
    fn notification(
        &self,
        rule: &Rule,
        state: &RuleState,
        group: &str,
        now: i64,
    ) -> notify::Notification {
        let g = &state.groups[group];
        let window = rule.window_ms * NS_PER_MS;
        let query = group_query(&rule.spec.query, rule.spec.group_by.as_deref(), group);
        // A quiet group has no lines in its window: show its last ones before it.
        let quiet = rule.condition.quiet_fires() && g.value == "0";
        let (start, end) = match g.phase {
            Phase::Resolved => (g.active_at_ns - window, g.resolved_at_ns.unwrap_or(now)),
            _ if quiet => (now - rule.lookback_ms * NS_PER_MS, now),
            _ => (now - window, now),
        };
        let lines = if self.settings.first_lines == 0 {
            Vec::new()
        } else {
            self.first_lines(&query, &rule.indexes, start, end)
        };
        let base = self.external_url.get().cloned().unwrap_or_default();
        let mut params = vec![("q", query.clone())];
        if !rule.spec.index.is_empty() {
            params.push(("index", rule.spec.index.clone()));
        }
        params.push(("start", format_rfc3339(start)));
        params.push(("end", format_rfc3339(end)));
        let url = format!(
            "{base}/?{}",
            params
                .iter()
                .map(|(k, v)| format!("{k}={}", percent_encode(v)))
                .collect::<Vec<_>>()
                .join("&")
        );
        let mut labels = Map::new();
        labels.insert("alertname".into(), json!(rule.spec.name));
        // Alertmanager treats an empty label as absent; leaving it out says the same.
        for (k, v) in rule.spec.labels.iter().filter(|(_, v)| !v.is_empty()) {
            labels.insert(k.clone(), json!(v));
        }
        if let Some(field) = &rule.spec.group_by {
            labels.insert(field.clone(), json!(group));
        }
        let mut annotations = Map::new();
        for (k, v) in &rule.spec.annotations {
            annotations.insert(k.clone(), json!(v));
        }
        annotations.insert("value".into(), json!(g.value));
        annotations.insert("condition".into(), json!(rule.spec.condition));
        annotations.insert("query".into(), json!(query));
        annotations.insert("logsift_url".into(), json!(url));
        if !lines.is_empty() {
            annotations.insert("lines".into(), json!(lines.join("\n")));
        }
        let (status, ends_at) = match g.phase {
            Phase::Resolved => ("resolved", g.resolved_at_ns.unwrap_or(now)),
            // Past the next resends: Alertmanager resolves the alert by itself only if
            // logsift stops sending.
            _ => (
                "firing",
                now + 4 * self.settings.resend_ms.max(rule.interval_ms) * NS_PER_MS,
            ),
        };
        notify::Notification {
            rule: rule.spec.name.clone(),
            status,
            labels,
            annotations,
            starts_at: format_rfc3339(g.active_at_ns),
            ends_at: format_rfc3339(ends_at),
            generator_url: url,
            value: g.value.clone(),
            lines,
        }
    }

    fn first_lines(&self, query: &str, indexes: &[String], start: i64, end: i64) -> Vec<String> {
        let req = SearchRequest {
            query: query.to_string(),
            indexes: indexes.to_vec(),
            start: Some(start),
            end: Some(end),
            limit: self.settings.first_lines,
            order: SortOrder::default(),
            cursor: None,
            budget: Budget::with_deadline(Instant::now() + self.query_timeout),
            ..SearchRequest::default()
        };
        match logsift_query::search(&self.store, &req) {
            Ok(answer) => answer
                .hits
                .iter()
                .filter_map(|h| h.get("raw").and_then(Value::as_str))
                .map(|raw| raw.chars().take(MAX_LINE_CHARS).collect())
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "the first lines of an alert could not be read");
                Vec::new()
            }
        }
    }

    /// Adds alerting's metrics (evaluation and delivery) to `registry`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.metrics.register(registry);
        self.delivery.register(registry);
    }

    /// Sets the gauges that are read from the rules and their states, before the metrics are
    /// exported.
    pub fn refresh_metrics(&self) {
        let inner = self.lock();
        let mut by_phase = [0u64; 3];
        for s in inner.states.values() {
            for g in s.groups.values() {
                by_phase[g.phase as usize] += 1;
            }
        }
        let failing = inner.states.values().filter(|s| s.error.is_some()).count();
        let m = &self.metrics;
        for (state, n) in PHASES.into_iter().zip(by_phase) {
            m.groups.get_or_create(&StateLabel { state }).set(n);
        }
        m.rules.set(inner.rules.len() as u64);
        m.rules_failing.set(failing as u64);
    }
}

fn system_caller() -> Caller {
    Caller {
        principal: Some("logsift alerting".into()),
        peer: None,
    }
}

/// One question a pass may ask for several rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CountKey {
    query: String,
    indexes: Vec<String>,
    group_by: Option<String>,
    start: i64,
    end: i64,
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

/// Moves each group through its states for `values` (the groups' values at `now`) and
/// returns the groups to notify: newly firing, due for a resend, newly resolved.
pub fn step(
    rule: &Rule,
    state: &mut RuleState,
    values: &BTreeMap<String, f64>,
    now: i64,
    resend_ms: i64,
) -> Vec<String> {
    let mut send = Vec::new();
    let groups: BTreeSet<String> = values.keys().chain(state.groups.keys()).cloned().collect();
    for group in groups {
        let value = values.get(&group).copied().unwrap_or(0.0);
        let holds = values.contains_key(&group) && rule.condition.holds(value);
        let current = state.groups.get(&group).cloned();
        let next = match (current, holds) {
            (None, true)
            | (
                Some(GroupState {
                    phase: Phase::Resolved,
                    ..
                }),
                true,
            ) => Some(GroupState {
                phase: Phase::Pending,
                active_at_ns: now,
                fired_at_ns: None,
                resolved_at_ns: None,
                last_sent_ns: None,
                value: format_value(value),
            }),
            (Some(g), true) => Some(GroupState {
                value: format_value(value),
                ..g
            }),
            (None, false) => None,
            (Some(g), false) => match g.phase {
                Phase::Pending => None,
                Phase::Firing => Some(GroupState {
                    phase: Phase::Resolved,
                    resolved_at_ns: Some(now),
                    last_sent_ns: None,
                    value: format_value(value),
                    ..g
                }),
                Phase::Resolved => {
                    (now - g.resolved_at_ns.unwrap_or(now) < RESOLVED_KEEP_NS).then_some(g)
                }
            },
        };
        let Some(mut g) = next else {
            state.groups.remove(&group);
            continue;
        };
        if g.phase == Phase::Pending && now - g.active_at_ns >= rule.for_ms * NS_PER_MS {
            g.phase = Phase::Firing;
            g.fired_at_ns = Some(now);
        }
        let due = match (g.phase, g.last_sent_ns) {
            (Phase::Firing, None) => true,
            (Phase::Firing, Some(sent)) => now - sent >= resend_ms * NS_PER_MS,
            (Phase::Resolved, None) => true,
            _ => false,
        };
        if due {
            g.last_sent_ns = Some(now);
            send.push(group.clone());
        }
        state.groups.insert(group, g);
    }
    send
}

/// The rule's query narrowed to one group's value.
fn group_query(query: &str, field: Option<&str>, value: &str) -> String {
    let Some(field) = field else {
        return query.to_string();
    };
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    let term = format!("{field}:\"{escaped}\"");
    let q = query.trim();
    if q.is_empty() || q == "*" {
        term
    } else {
        format!("({q}) AND {term}")
    }
}

/// A URL query value: everything but RFC 3986's unreserved characters percent-encoded.
fn percent_encode(s: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, RESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(condition: &str, for_: &str) -> Rule {
        Rule::new(
            RuleSpec {
                name: "r".into(),
                query: String::new(),
                index: String::new(),
                window: "1m".into(),
                condition: condition.into(),
                group_by: Some("host".into()),
                interval: "1s".into(),
                for_: for_.into(),
                group_lookback: None,
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
            },
            "api",
        )
        .unwrap()
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn groups_go_pending_firing_resolved_and_resend() {
        let r = rule("count > 5", "2s");
        let mut st = RuleState::default();
        let v = |n: f64| BTreeMap::from([("a".to_string(), n)]);
        assert!(step(&r, &mut st, &v(9.0), 0, 60_000).is_empty());
        assert_eq!(st.groups["a"].phase, Phase::Pending);
        assert!(step(&r, &mut st, &v(9.0), S, 60_000).is_empty());
        assert_eq!(step(&r, &mut st, &v(9.0), 2 * S, 60_000), vec!["a"]);
        assert_eq!(st.groups["a"].phase, Phase::Firing);
        assert_eq!(
            st.groups["a"].active_at_ns, 0,
            "startsAt is when it became active"
        );
        assert!(step(&r, &mut st, &v(9.0), 3 * S, 60_000).is_empty());
        assert_eq!(
            step(&r, &mut st, &v(9.0), 62 * S, 60_000),
            vec!["a"],
            "resend"
        );
        assert_eq!(step(&r, &mut st, &v(1.0), 63 * S, 60_000), vec!["a"]);
        assert_eq!(st.groups["a"].phase, Phase::Resolved);
        assert!(
            step(&r, &mut st, &v(1.0), 64 * S, 60_000).is_empty(),
            "resolved once"
        );
        step(&r, &mut st, &v(1.0), 63 * S + RESOLVED_KEEP_NS, 60_000);
        assert!(st.groups.is_empty(), "forgotten after the keep time");
    }

    #[test]
    fn pending_that_clears_is_dropped_silently() {
        let r = rule("count > 5", "10s");
        let mut st = RuleState::default();
        step(&r, &mut st, &BTreeMap::from([("a".into(), 9.0)]), 0, 60_000);
        assert!(step(&r, &mut st, &BTreeMap::from([("a".into(), 0.0)]), S, 60_000).is_empty());
        assert!(st.groups.is_empty());
    }

    #[test]
    fn group_queries_escape_values() {
        assert_eq!(group_query("", Some("host"), "a\"b"), "host:\"a\\\"b\"");
        assert_eq!(
            group_query("error", Some("host"), "x"),
            "(error) AND host:\"x\""
        );
        assert_eq!(group_query("error", None, ""), "error");
        for q in [
            "(error) AND host:\"a\\\"b\\\\\"",
            &group_query("x OR y", Some("app"), "w\\"),
        ] {
            assert!(logsift_query::parse_query(q).is_ok(), "{q}");
        }
        assert_eq!(percent_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    /// Files written by format version 1 (`testdata/v1`) are still read.
    #[test]
    fn version_1_files_are_read() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/v1");
        let doc = crate::persist::read(&dir.join("state.json"), STATE_FORMAT, VERSION)
            .unwrap()
            .unwrap();
        let states: BTreeMap<String, RuleState> =
            serde_json::from_value(doc["rules"].clone()).unwrap();
        let firing = &states["disk_full"].groups[""];
        assert_eq!(
            (firing.phase, firing.active_at_ns),
            (Phase::Firing, 1796309445521716948)
        );
        let hb = &states["heartbeat"];
        assert_eq!(hb.groups["host-b"].phase, Phase::Resolved);
        assert!(hb.seen_bootstrapped && hb.seen.len() == 2 && hb.error.is_some());
        let doc = crate::persist::read(&dir.join("rules.json"), RULES_FORMAT, VERSION)
            .unwrap()
            .unwrap();
        let specs: Vec<RuleSpec> = serde_json::from_value(doc["rules"].clone()).unwrap();
        let rules: Vec<Rule> = specs
            .into_iter()
            .map(|s| Rule::new(s, "api").unwrap())
            .collect();
        assert_eq!(rules[0].condition.measure, Measure::Rate);
        assert_eq!((rules[1].for_ms, rules[1].lookback_ms), (60_000, 7_200_000));
        assert_eq!(rules[1].spec.group_by.as_deref(), Some("host"));
    }

    #[test]
    fn config_errors_name_the_rule() {
        let mut cfg = AlertsConfig::default();
        assert!(cfg.validate().is_ok());
        cfg.rules.push(rule("count > 1", "0s").spec);
        cfg.rules.push(rule("count > 1", "0s").spec);
        assert!(cfg.validate().unwrap_err().contains("defined twice"));
        cfg.rules.pop();
        cfg.rules[0].condition = "count >> 1".into();
        let e = cfg.validate().unwrap_err();
        assert!(
            e.contains("#1") && e.contains("\"r\"") && e.contains("condition"),
            "{e}"
        );
        cfg.rules.clear();
        cfg.alertmanager_url = "localhost:9093".into();
        assert!(cfg.validate().unwrap_err().contains("alertmanager_url"));
        cfg.alertmanager_url = "https://am".into();
        assert!(cfg.validate().unwrap_err().contains("plain HTTP"));
        cfg.alertmanager_url = "http://127.0.0.1:9093".into();
        cfg.resend_interval = "often".into();
        assert!(cfg.validate().unwrap_err().contains("resend_interval"));
    }
}
