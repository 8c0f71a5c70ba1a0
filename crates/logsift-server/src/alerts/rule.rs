//! Alert rules as written (in `[[alerts.rules]]` or a `POST /api/v1/alerts/rules` body) and
//! as checked: every duration parsed, the query compiled, the condition understood, before a
//! rule is accepted.

use std::collections::BTreeMap;

use logsift_query::agg::{parse_interval, TERMS_FIELDS};
use serde::{Deserialize, Serialize};

/// A rule as written. Durations are like `30s`, `5m`, `1h`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    /// A search query; empty or `*` counts every record.
    #[serde(default)]
    pub query: String,
    /// Comma-separated index names; empty: every index except the built-in ones.
    #[serde(default)]
    pub index: String,
    /// The range each evaluation counts: `[now - window, now)`.
    pub window: String,
    /// `count > N`, `count >= N`, `count < N`, `count <= N`, `count == N`, `count != N`, or
    /// the same with `rate`: this window's count divided by the previous window's (no rate,
    /// hence no alert, when the previous window had no records).
    pub condition: String,
    /// A terms field (`host`, `app`, ...): each value is its own alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    /// How often the rule is evaluated.
    #[serde(default = "default_interval")]
    pub interval: String,
    /// How long the condition must hold before the alert fires (`0s`: at once).
    #[serde(default = "default_for", rename = "for")]
    pub for_: String,
    /// With `group_by` and a condition that a quiet group meets (`count < N`, `count == 0`):
    /// how far back a group must have been seen to be expected (default: ten windows, at
    /// least an hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_lookback: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

fn default_interval() -> String {
    "1m".into()
}

fn default_for() -> String {
    "0s".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Count,
    /// This window's count over the previous window's.
    Rate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Condition {
    pub measure: Measure,
    pub op: Op,
    pub threshold: f64,
}

impl Condition {
    pub fn parse(text: &str) -> Result<Condition, String> {
        let bad = || {
            format!(
                "condition {text:?} is not like `count > 100`, `count == 0` or `rate > 2` \
                 (count or rate, then one of > >= < <= == !=, then a number)"
            )
        };
        let mut parts = text.split_whitespace();
        let (Some(measure), Some(op), Some(number), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let measure = match measure {
            "count" => Measure::Count,
            "rate" => Measure::Rate,
            _ => return Err(bad()),
        };
        let op = match op {
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            _ => return Err(bad()),
        };
        let threshold: f64 = number.parse().map_err(|_| bad())?;
        if !threshold.is_finite() || threshold < 0.0 {
            return Err(format!(
                "condition {text:?}: the threshold must be a finite number ≥ 0"
            ));
        }
        Ok(Condition {
            measure,
            op,
            threshold,
        })
    }

    pub fn holds(&self, value: f64) -> bool {
        let t = self.threshold;
        match self.op {
            Op::Gt => value > t,
            Op::Ge => value >= t,
            Op::Lt => value < t,
            Op::Le => value <= t,
            Op::Eq => value == t,
            Op::Ne => value != t,
        }
    }

    /// Whether a group with no record in the window meets it: such rules must also watch
    /// groups that were seen before and went quiet.
    pub fn quiet_fires(&self) -> bool {
        self.holds(0.0)
    }
}

/// A rule that passed every check.
#[derive(Debug, Clone)]
pub struct Rule {
    pub spec: RuleSpec,
    pub indexes: Vec<String>,
    pub window_ms: i64,
    pub interval_ms: i64,
    pub for_ms: i64,
    pub lookback_ms: i64,
    pub condition: Condition,
    /// `config` or `api`: only API rules may be deleted over the API.
    pub source: &'static str,
}

/// Evaluations are scheduled on a 250 ms tick; shorter intervals would only pretend.
pub const MIN_INTERVAL_MS: i64 = 1_000;
/// Windows, intervals and `for` beyond this are mistakes; bounding them keeps the time
/// arithmetic (ns since the epoch, lookbacks of ten windows) far from overflow.
pub const MAX_DURATION_MS: i64 = 366 * 86_400_000;
const MAX_NAME_BYTES: usize = 128;
const MAX_QUERY_BYTES: usize = 16 * 1024;
const MAX_LABELS: usize = 64;
const MAX_LABEL_VALUE_BYTES: usize = 4096;

fn duration(field: &str, text: &str, allow_zero: bool) -> Result<i64, String> {
    let t = text.trim();
    if allow_zero && matches!(t, "0" | "0s" | "0ms" | "0m") {
        return Ok(0);
    }
    let ms = parse_interval(t).map_err(|_| {
        format!("{field} {text:?} is not a duration like 30s, 5m or 1h (units ms, s, m, h, d)")
    })?;
    if ms > MAX_DURATION_MS {
        return Err(format!("{field} {text:?} is longer than 366 days"));
    }
    Ok(ms)
}

/// Prometheus label names, which Alertmanager requires.
fn label_name_ok(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Rule {
    /// Checks `spec`; the error names the rule and what to change.
    pub fn new(spec: RuleSpec, source: &'static str) -> Result<Rule, String> {
        let name = spec.name.clone();
        Rule::check(spec, source).map_err(|e| {
            if name.is_empty() {
                format!("alert rule: {e}")
            } else {
                format!("alert rule {name:?}: {e}")
            }
        })
    }

    fn check(spec: RuleSpec, source: &'static str) -> Result<Rule, String> {
        if spec.name.is_empty()
            || spec.name.len() > MAX_NAME_BYTES
            || !spec
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(format!(
                "name must be 1 to {MAX_NAME_BYTES} letters, digits, '-', '_' or '.'"
            ));
        }
        if spec.query.len() > MAX_QUERY_BYTES {
            return Err(format!("query is over {MAX_QUERY_BYTES} bytes"));
        }
        logsift_query::parse_query(&spec.query).map_err(|e| format!("query: {e}"))?;
        let indexes = crate::search::index_list(Some(spec.index.clone()));
        for n in &indexes {
            logsift_core::IndexName::new_builtin(n).map_err(|e| format!("index: {e}"))?;
        }
        let window_ms = duration("window", &spec.window, false)?;
        let interval_ms = duration("interval", &spec.interval, false)?;
        if interval_ms < MIN_INTERVAL_MS {
            return Err(format!(
                "interval {:?} is under the minimum of {MIN_INTERVAL_MS} ms",
                spec.interval
            ));
        }
        let for_ms = duration("for", &spec.for_, true)?;
        let condition = Condition::parse(&spec.condition)?;
        if let Some(field) = &spec.group_by {
            if !TERMS_FIELDS.contains(&field.as_str()) {
                return Err(format!(
                    "group_by must be one of {}, not {field:?}",
                    TERMS_FIELDS.join(", ")
                ));
            }
        }
        let lookback_ms = match &spec.group_lookback {
            Some(t) => duration("group_lookback", t, false)?,
            None => (window_ms.saturating_mul(10)).max(3_600_000),
        };
        if lookback_ms <= window_ms {
            return Err("group_lookback must be longer than window".into());
        }
        if spec.labels.len() + spec.annotations.len() > MAX_LABELS {
            return Err(format!(
                "at most {MAX_LABELS} labels and annotations together"
            ));
        }
        for (kind, map) in [("label", &spec.labels), ("annotation", &spec.annotations)] {
            for (k, v) in map {
                if !label_name_ok(k) {
                    return Err(format!(
                        "{kind} name {k:?} must match [a-zA-Z_][a-zA-Z0-9_]* (Alertmanager's rule)"
                    ));
                }
                if v.len() > MAX_LABEL_VALUE_BYTES {
                    return Err(format!(
                        "{kind} {k:?} is over {MAX_LABEL_VALUE_BYTES} bytes"
                    ));
                }
            }
        }
        for reserved in ["alertname"].into_iter().chain(spec.group_by.as_deref()) {
            if spec.labels.contains_key(reserved) {
                return Err(format!(
                    "label {reserved:?} is set by logsift (the rule name or the group's value)"
                ));
            }
        }
        Ok(Rule {
            spec,
            indexes,
            window_ms,
            interval_ms,
            for_ms,
            lookback_ms,
            condition,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(condition: &str) -> RuleSpec {
        RuleSpec {
            name: "r".into(),
            query: "error".into(),
            index: "logs".into(),
            window: "1m".into(),
            condition: condition.into(),
            group_by: None,
            interval: "10s".into(),
            for_: "0s".into(),
            group_lookback: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn conditions_parse_and_hold() {
        let c = Condition::parse("count > 10").unwrap();
        assert!(c.holds(11.0) && !c.holds(10.0) && !c.quiet_fires());
        let c = Condition::parse("count == 0").unwrap();
        assert!(c.holds(0.0) && !c.holds(1.0) && c.quiet_fires());
        let c = Condition::parse("rate >= 2.5").unwrap();
        assert_eq!(c.measure, Measure::Rate);
        assert!(c.holds(2.5));
        for bad in [
            "",
            "count",
            "count >",
            "count => 1",
            "sum > 1",
            "count > x",
            "count > 1 2",
            "count > -1",
            "count > inf",
        ] {
            assert!(Condition::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        assert!(Rule::new(spec("count > 1"), "api").is_ok());
        let err = |f: &dyn Fn(&mut RuleSpec)| {
            let mut s = spec("count > 1");
            f(&mut s);
            Rule::new(s, "api").unwrap_err()
        };
        assert!(err(&|s| s.name = "a b".into()).contains("name"));
        assert!(err(&|s| s.query = "(unclosed".into()).contains("query"));
        assert!(err(&|s| s.window = "soon".into()).contains("window"));
        assert!(err(&|s| s.window = "9999999999d".into()).contains("window"));
        assert!(err(&|s| s.for_ = "400d".into()).contains("366 days"));
        assert!(err(&|s| s.interval = "100ms".into()).contains("minimum"));
        assert!(err(&|s| s.group_by = Some("message".into())).contains("group_by"));
        assert!(err(&|s| s.index = "Bad Index".into()).contains("index"));
        assert!(err(&|s| {
            s.labels.insert("bad-name".into(), "x".into());
        })
        .contains("label name"));
        assert!(err(&|s| {
            s.labels.insert("alertname".into(), "x".into());
        })
        .contains("set by logsift"));
    }
}
