//! Delivery of notifications to Prometheus Alertmanager (`POST /api/v2/alerts`, a JSON array
//! of alerts) and to a generic webhook (one JSON object per batch). Evaluation hands batches
//! to a bounded queue per target and never waits; each target's task retries a few times with
//! backoff, counts what was sent and what failed, and writes each delivery to the audit trail.

use std::sync::Arc;
use std::time::Duration;

use logsift_ingest::metrics::family_with;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::audit::{Audit, Caller};

/// Batches waiting for delivery; past it a batch is dropped and counted as failed (the alerts
/// in it are sent again at their next resend).
pub const QUEUE_BATCHES: usize = 256;
/// Tries per target and batch.
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One alert as both targets get it.
#[derive(Debug, Clone)]
pub struct Notification {
    pub rule: String,
    pub status: &'static str,
    pub labels: serde_json::Map<String, Value>,
    pub annotations: serde_json::Map<String, Value>,
    pub starts_at: String,
    /// Set when resolved; while firing, a time a little after the next resend, so that an
    /// Alertmanager that stops hearing from logsift resolves the alert by itself.
    pub ends_at: String,
    pub generator_url: String,
    pub value: String,
    pub lines: Vec<String>,
}

impl Notification {
    fn alertmanager(&self) -> Value {
        json!({
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": self.starts_at,
            "endsAt": self.ends_at,
            "generatorURL": self.generator_url,
        })
    }

    fn webhook(&self) -> Value {
        json!({
            "rule": self.rule,
            "status": self.status,
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": self.starts_at,
            "endsAt": self.ends_at,
            "generatorURL": self.generator_url,
            "value": self.value,
            "lines": self.lines,
        })
    }
}

/// Notifications to one target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TargetLabel {
    pub target: &'static str,
}

logsift_ingest::metric_set! {
    pub struct DeliveryMetrics {
        sent: Family<TargetLabel, Counter> = family_with(TARGETS.map(|target| TargetLabel { target })) => "logsift_alert_notifications_sent", "Alert notifications delivered, by target";
        failed: Family<TargetLabel, Counter> = family_with(TARGETS.map(|target| TargetLabel { target })) => "logsift_alert_notifications_failed", "Alert notifications given up on after retries, by target";
        retries: Family<TargetLabel, Counter> = family_with(TARGETS.map(|target| TargetLabel { target })) => "logsift_alert_notification_retries", "Retried deliveries of notification batches, by target";
    }
}

impl DeliveryMetrics {
    fn count(family: &Family<TargetLabel, Counter>, target: usize, n: u64) {
        family
            .get_or_create(&TargetLabel {
                target: TARGETS[target],
            })
            .inc_by(n);
    }
}

pub const TARGETS: [&str; 2] = ["alertmanager", "webhook"];

pub struct Targets {
    /// Base URL, e.g. `http://127.0.0.1:9093`.
    pub alertmanager: Option<String>,
    pub webhook: Option<String>,
}

/// Where each batch goes: one queue and one task per target, so that a slow or dead
/// Alertmanager does not hold up the webhook, nor the other way round.
pub struct Deliveries {
    queues: Vec<(usize, mpsc::Sender<Arc<Vec<Notification>>>)>,
}

impl Deliveries {
    /// Queues `batch` for every target without waiting; the targets whose queue is full, by
    /// name (the batch is dropped for them).
    pub fn send(&self, batch: Vec<Notification>) -> Vec<&'static str> {
        let batch = Arc::new(batch);
        self.queues
            .iter()
            .filter(|(_, tx)| tx.try_send(batch.clone()).is_err())
            .map(|(target, _)| TARGETS[*target])
            .collect()
    }
}

/// Starts one delivery task per configured target.
pub fn start(
    targets: Targets,
    metrics: Arc<DeliveryMetrics>,
    audit: Arc<Audit>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Deliveries {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap_or_default();
    let mut queues = Vec::new();
    let urls = [
        targets
            .alertmanager
            .map(|base| format!("{}/api/v2/alerts", base.trim_end_matches('/'))),
        targets.webhook,
    ];
    for (target, url) in urls.into_iter().enumerate() {
        let Some(url) = url else { continue };
        let (tx, mut rx) = mpsc::channel::<Arc<Vec<Notification>>>(QUEUE_BATCHES);
        queues.push((target, tx));
        let (client, metrics, audit, shutdown) = (
            client.clone(),
            metrics.clone(),
            audit.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            loop {
                let batch = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    b = rx.recv() => match b { Some(b) => b, None => break },
                };
                let body = if target == 0 {
                    Value::Array(batch.iter().map(Notification::alertmanager).collect())
                } else {
                    let status = if batch.iter().any(|n| n.status == "firing") {
                        "firing"
                    } else {
                        "resolved"
                    };
                    json!({
                        "version": "1",
                        "receiver": "logsift",
                        "status": status,
                        "alerts": batch.iter().map(Notification::webhook).collect::<Vec<_>>(),
                    })
                };
                deliver(&client, target, &url, &body, &batch, &metrics, &audit).await;
            }
        });
    }
    Deliveries { queues }
}

async fn deliver(
    client: &reqwest::Client,
    target: usize,
    url: &str,
    body: &Value,
    batch: &[Notification],
    metrics: &DeliveryMetrics,
    audit: &Audit,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut last_error = String::new();
    for attempt in 1..=ATTEMPTS {
        match client.post(url).json(body).send().await {
            Ok(r) if r.status().is_success() => {
                DeliveryMetrics::count(&metrics.sent, target, batch.len() as u64);
                record(audit, target, url, batch, "ok");
                return;
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                last_error = format!(
                    "HTTP {status}: {}",
                    text.chars().take(200).collect::<String>()
                );
                // A 4xx other than 429 will not change by sending the same body again.
                if status.is_client_error() && status.as_u16() != 429 {
                    break;
                }
            }
            Err(e) => last_error = e.to_string(),
        }
        if attempt < ATTEMPTS {
            DeliveryMetrics::count(&metrics.retries, target, 1);
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    DeliveryMetrics::count(&metrics.failed, target, batch.len() as u64);
    tracing::warn!(target = TARGETS[target], url, error = %last_error, alerts = batch.len(),
        "alert notification failed; it is sent again at the next resend while the alert fires");
    record(audit, target, url, batch, &format!("failed: {last_error}"));
}

fn record(audit: &Audit, target: usize, url: &str, batch: &[Notification], outcome: &str) {
    let alerts: Vec<Value> = batch
        .iter()
        .map(|n| json!({"rule": n.rule, "status": n.status, "labels": n.labels, "startsAt": n.starts_at}))
        .collect();
    audit.record(
        &Caller {
            principal: Some("logsift alerting".into()),
            peer: None,
        },
        "alert notification",
        json!({"target": TARGETS[target], "url": url, "alerts": alerts}),
        batch.len() as u64,
        outcome,
    );
}
