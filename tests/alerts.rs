//! Alert rules and saved searches against the real things: the `logsift` binary on loopback,
//! Debian's Prometheus Alertmanager (`prometheus-alertmanager`, 0.25) started here on a free
//! port with clustering off, and a webhook receiver that is a plain HTTP server in this test.
//! Rules evaluate every second so that each test takes seconds, not minutes.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{client, wait_until, Server, BIN};
use serde_json::{json, Value};

/// Where Alertmanager is: `LOGSIFT_ALERTMANAGER`, else Debian's path. Missing outside CI:
/// the test says so and passes; in CI (`CI` set) a missing binary fails the test.
fn alertmanager_binary() -> Option<PathBuf> {
    let path = std::env::var_os("LOGSIFT_ALERTMANAGER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus-alertmanager"));
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "{} is missing; `bash tests/run-all.sh` installs prometheus-alertmanager",
        path.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Alertmanager {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Alertmanager {
    fn start(bin: &Path, dir: &Path) -> Alertmanager {
        let config = dir.join("alertmanager.yml");
        // Alerts go nowhere from here: the test reads them back through the API.
        std::fs::write(
            &config,
            "route:\n  receiver: blackhole\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: blackhole\n",
        )
        .unwrap();
        let port = free_port();
        let log = dir.join("alertmanager.log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start alertmanager");
        let am = Alertmanager {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        wait_until(30, || {
            match client().get(format!("{}/-/ready", am.url)).send() {
                Ok(r) if r.status().is_success() => None,
                _ => Some(format!(
                    "alertmanager not ready; its log:\n{}",
                    std::fs::read_to_string(&am.log).unwrap_or_default()
                )),
            }
        });
        am
    }

    /// Alertmanager's alerts named `name` (active ones: resolved alerts leave this list).
    fn alerts(&self, name: &str) -> Vec<Value> {
        let body: Value = client()
            .get(format!("{}/api/v2/alerts", self.url))
            .send()
            .unwrap()
            .json()
            .unwrap();
        body.as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .cloned()
            .collect()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A webhook receiver: every POST body, parsed, arrives on `rx`.
struct Webhook {
    url: String,
    rx: mpsc::Receiver<Value>,
}

impl Webhook {
    fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                if let Ok(v) = serde_json::from_slice(&body) {
                    let _ = tx.send(v);
                }
            }
        });
        Webhook { url, rx }
    }

    /// The alerts of every notification received within `secs` that match `pred`, waiting
    /// for the first.
    fn wait_for(&self, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(body) => {
                    for a in body["alerts"].as_array().into_iter().flatten() {
                        if pred(a) {
                            return a.clone();
                        }
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no matching webhook notification within {secs} s");
    }

    /// Everything received so far.
    fn drain(&self) -> Vec<Value> {
        self.rx
            .try_iter()
            .flat_map(|b| b["alerts"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

fn ndjson(lines: &[Value]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn post(s: &Server, path: &str, body: &Value) -> (u16, Value) {
    let r = client()
        .post(format!("{}{path}", s.http))
        .json(body)
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

fn delete(s: &Server, path: &str) -> (u16, Value) {
    let r = client().delete(format!("{}{path}", s.http)).send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

/// The groups of `rule` as `GET /api/v1/alerts` shows them.
fn groups(s: &Server, rule: &str) -> Vec<Value> {
    let (status, body) = s.get("/api/v1/alerts");
    assert_eq!(status, 200, "{body}");
    body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == rule)
        .cloned()
        .collect()
}

fn burst(s: &Server, n: usize) {
    let lines: Vec<Value> = (0..n)
        .map(|i| json!({"host": "db-1", "app": "pg", "message": format!("disk full on /var/lib/pg ({i})")}))
        .collect();
    let (status, body) = s.ingest("logs", ndjson(&lines), "application/x-ndjson");
    assert_eq!(status, 200, "{body}");
}

const COUNT_RULE: &str = r#"
[[alerts.rules]]
name = "disk_full"
query = '"disk full"'
index = "logs"
window = "20s"
condition = "count > 5"
interval = "1s"
labels = { severity = "page", team = "storage" }
annotations = { summary = "disks are filling up" }
"#;

#[test]
fn count_rule_fires_in_alertmanager_resolves_and_survives_a_restart() {
    let Some(bin) = alertmanager_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let am = Alertmanager::start(&bin, dir.path());
    let hook = Webhook::start();
    let config = format!(
        "[alerts]\nalertmanager_url = \"{}\"\nwebhook_url = \"{}\"\nresend_interval = \"3s\"\nfirst_lines = 3\n{COUNT_RULE}",
        am.url, hook.url
    );
    let s = Server::start_in(dir.path(), &config);
    // A few lines are below the threshold: nothing fires.
    burst(&s, 3);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(groups(&s, "disk_full").is_empty());
    assert!(am.alerts("disk_full").is_empty());

    burst(&s, 10);
    let acked = Instant::now();
    // Within one evaluation interval (1 s) of the burst becoming searchable (≤ 1 s).
    wait_until(3, || {
        let g = groups(&s, "disk_full");
        (g.len() != 1 || g[0]["state"] != "firing").then(|| format!("not firing yet: {g:?}"))
    });
    let fired_after = acked.elapsed();
    let firing = groups(&s, "disk_full").remove(0);
    assert_eq!(firing["value"], "13", "{firing}");

    wait_until(10, || {
        (am.alerts("disk_full").len() != 1).then(|| "not in Alertmanager yet".to_string())
    });
    let in_am = am.alerts("disk_full").remove(0);
    assert_eq!(in_am["labels"]["severity"], "page");
    assert_eq!(in_am["labels"]["team"], "storage");
    assert_eq!(in_am["annotations"]["summary"], "disks are filling up");
    assert_eq!(in_am["status"]["state"], "active");
    let url = in_am["generatorURL"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/?q=", s.http)), "{url}");
    assert!(
        url.contains("index=logs") && url.contains("&start=") && url.contains("&end="),
        "{url}"
    );
    assert!(in_am["annotations"]["lines"]
        .as_str()
        .unwrap()
        .contains("disk full on /var/lib/pg"));
    // Alertmanager keeps milliseconds; logsift sends nanoseconds.
    let starts_at = millis(&in_am["startsAt"]);

    // The webhook gets the same alert with the link and the first lines, as a list.
    let sent = hook.wait_for(10, |a| a["status"] == "firing" && a["rule"] == "disk_full");
    assert_eq!(sent["generatorURL"], url);
    assert_eq!(sent["lines"].as_array().unwrap().len(), 3);
    assert!(sent["lines"][0].as_str().unwrap().contains("disk full"));
    assert_eq!(sent["labels"]["alertname"], "disk_full");

    // The link opens those lines: the same query and range through the search API.
    let query: Vec<(String, String)> = reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let params: Vec<(&str, &str)> = query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, found) = s.get(&format!(
        "/api/v1/search?{}",
        params
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&")
    ));
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["total"], 13, "{found}");

    // Keep the condition true across the restart, then restart.
    burst(&s, 6);
    let active_at = firing["active_at"].clone();
    assert_eq!(s.stop().code(), Some(0));
    let _ = hook.drain();
    let s = Server::start_in(dir.path(), &config);
    wait_until(5, || {
        let g = groups(&s, "disk_full");
        (g.len() != 1 || g[0]["state"] != "firing" || g[0]["active_at"] != active_at)
            .then(|| format!("state after restart: {g:?}"))
    });
    std::thread::sleep(Duration::from_secs(4));
    let after = am.alerts("disk_full");
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(
        millis(&after[0]["startsAt"]),
        starts_at,
        "the same alert, not a new one"
    );
    for a in hook.drain() {
        assert_eq!(
            millis(&a["startsAt"]),
            starts_at,
            "resends keep startsAt: {a}"
        );
    }

    // Once the window no longer holds more than 5 lines the alert resolves, in logsift and in
    // Alertmanager (which drops it from its active alerts), with endsAt set.
    let resolved = hook.wait_for(30, |a| {
        a["status"] == "resolved" && a["rule"] == "disk_full"
    });
    assert_eq!(millis(&resolved["startsAt"]), starts_at);
    let ends = millis(&resolved["endsAt"]);
    assert!(ends > starts_at, "{ends} after {starts_at}");
    assert_eq!(groups(&s, "disk_full")[0]["state"], "resolved");
    wait_until(10, || {
        let left = am.alerts("disk_full");
        (!left.is_empty()).then(|| format!("still active in Alertmanager: {left:?}"))
    });
    let (_, rules) = s.get("/api/v1/alerts");
    assert_eq!(rules["rules"][0]["state"], "resolved", "{rules}");
    eprintln!("fired {fired_after:?} after the burst was acknowledged");

    let metrics = s.metrics_text(None);
    assert!(metric(&metrics, "logsift_alert_evaluations_total") > 0.0);
    assert!(
        metric(
            &metrics,
            "logsift_alert_notifications_sent_total{target=\"alertmanager\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &metrics,
            "logsift_alert_notifications_sent_total{target=\"webhook\"}"
        ) >= 1.0
    );
    // Every notification is in the audit trail.
    wait_until(10, || {
        let (_, body) = s.search(
            "fields.action:\"alert notification\"",
            &[("index", "_audit"), ("limit", "100")],
        );
        (body["total"].as_u64().unwrap_or(0) < 2).then(|| format!("audit: {body}"))
    });
}

/// An RFC 3339 UTC time cut to milliseconds, as Alertmanager keeps it.
fn millis(ts: &Value) -> String {
    let ts = ts.as_str().unwrap_or_else(|| panic!("not a time: {ts}"));
    let ts = ts.trim_end_matches('Z');
    let (head, frac) = ts.split_once('.').unwrap_or((ts, ""));
    format!("{head}.{:0<3}Z", &frac[..frac.len().min(3)])
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no metric {name}"))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn heartbeat_rule_fires_for_the_host_that_goes_quiet() {
    let hook = Webhook::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[alerts]
webhook_url = "{}"
[[alerts.rules]]
name = "heartbeat"
index = "beats"
window = "3s"
condition = "count == 0"
group_by = "host"
interval = "1s"
"#,
        hook.url
    );
    let s = Server::start_in(dir.path(), &config);
    let quiet_b = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (http, quiet_b, stop) = (s.http.clone(), quiet_b.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut lines = vec![json!({"host": "host-a", "message": format!("beat {i}")})];
                if !quiet_b.load(Ordering::Relaxed) {
                    lines.push(json!({"host": "host-b", "message": format!("beat {i}")}));
                }
                let _ = client()
                    .post(format!("{http}/api/v1/beats/ingest"))
                    .header("content-type", "application/x-ndjson")
                    .body(ndjson(&lines))
                    .send();
                i += 1;
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(4));
    assert!(groups(&s, "heartbeat").is_empty(), "both hosts beat");
    quiet_b.store(true, Ordering::Relaxed);
    let quiet_since = Instant::now();
    let alert = hook.wait_for(10, |a| a["rule"] == "heartbeat" && a["status"] == "firing");
    assert_eq!(alert["labels"]["host"], "host-b", "{alert}");
    // The window (3 s) must empty first, then one interval.
    assert!(
        quiet_since.elapsed() >= Duration::from_secs(2),
        "{:?}",
        quiet_since.elapsed()
    );
    assert!(
        alert["lines"][0].as_str().unwrap().contains("host-b"),
        "its last lines: {alert}"
    );
    let g = groups(&s, "heartbeat");
    assert_eq!(g.len(), 1, "only host-b: {g:?}");
    assert_eq!(g[0]["group"]["host"], "host-b");
    assert_eq!(g[0]["state"], "firing");
    // It beats again: resolved.
    quiet_b.store(false, Ordering::Relaxed);
    let back = hook.wait_for(10, |a| {
        a["rule"] == "heartbeat" && a["status"] == "resolved"
    });
    assert_eq!(back["labels"]["host"], "host-b");
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
}

#[test]
fn rules_and_saved_searches_over_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), COUNT_RULE);
    let good = json!({"name": "api_rule", "query": "error", "window": "5m", "condition": "count > 100", "interval": "30s", "labels": {"team": "web"}});
    for (patch, code, says) in [
        (json!({"condition": "count >> 1"}), "bad_rule", "condition"),
        (json!({"condition": "rate > x"}), "bad_rule", "condition"),
        (json!({"query": "(unclosed"}), "bad_rule", "query"),
        (json!({"window": "soon"}), "bad_rule", "window"),
        (json!({"interval": "10ms"}), "bad_rule", "minimum"),
        (json!({"group_by": "message"}), "bad_rule", "group_by"),
        (
            json!({"labels": {"alertname": "x"}}),
            "bad_rule",
            "set by logsift",
        ),
        (json!({"name": "has space"}), "bad_rule", "name"),
        (json!({"colour": "red"}), "bad_rule", "colour"),
    ] {
        let mut body = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, answer) = post(&s, "/api/v1/alerts/rules", &body);
        assert_eq!(status, 400, "{patch}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{patch}: {message}");
    }
    let (status, _) = post(
        &s,
        "/api/v1/alerts/rules",
        &json!({"name": "disk_full", "window": "1m", "condition": "count > 1"}),
    );
    assert_eq!(
        status, 409,
        "a configured rule cannot be replaced over the API"
    );
    assert_eq!(delete(&s, "/api/v1/alerts/rules/disk_full").0, 409);
    assert_eq!(delete(&s, "/api/v1/alerts/rules/nope").0, 404);
    // The configured rule counts an index that does not exist yet: reported, not skipped.
    wait_until(10, || {
        let (_, body) = s.get("/api/v1/alerts");
        let rule = &body["rules"][0];
        (rule["state"] != "error" || !rule["error"].as_str().unwrap_or("").contains("logs"))
            .then(|| format!("{body}"))
    });
    let failures = metric(
        &s.metrics_text(None),
        "logsift_alert_evaluation_failures_total",
    );
    assert!(failures >= 1.0, "{failures}");
    assert_eq!(
        metric(&s.metrics_text(None), "logsift_alert_rules_failing"),
        1.0
    );
    assert_eq!(post(&s, "/api/v1/alerts/rules", &good).0, 201);
    assert_eq!(
        post(&s, "/api/v1/alerts/rules", &good).0,
        200,
        "same name replaces"
    );
    let (_, rules) = s.get("/api/v1/alerts/rules");
    let names: Vec<&str> = rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api_rule", "disk_full"]);

    // Saved searches: stored, listed, opened by name.
    let saved = json!({"name": "pg-disk", "query": "\"disk full\" AND app:pg", "index": "logs", "start": "now-1h"});
    assert_eq!(post(&s, "/api/v1/saved", &saved).0, 201);
    let (status, bad) = post(&s, "/api/v1/saved", &json!({"name": "x", "query": "(("}));
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (400, Some("bad_query"))
    );
    assert_eq!(post(&s, "/api/v1/saved", &json!({"name": "../x"})).0, 400);
    assert_eq!(
        post(
            &s,
            "/api/v1/saved",
            &json!({"name": "t", "start": "yesterday-ish"})
        )
        .0,
        400
    );

    // Both survive a restart.
    assert_eq!(s.stop().code(), Some(0));
    let s = Server::start_in(dir.path(), COUNT_RULE);
    let (status, one) = s.get("/api/v1/saved/pg-disk");
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["query"], "\"disk full\" AND app:pg");
    assert_eq!(one["url"], "/?saved=pg-disk");
    let (_, list) = s.get("/api/v1/saved");
    assert_eq!(list["saved"].as_array().unwrap().len(), 1);
    let (_, rules) = s.get("/api/v1/alerts/rules");
    assert_eq!(rules["rules"].as_array().unwrap().len(), 2);
    assert_eq!(delete(&s, "/api/v1/saved/pg-disk").0, 200);
    assert_eq!(s.get("/api/v1/saved/pg-disk").0, 404);
    assert_eq!(delete(&s, "/api/v1/alerts/rules/api_rule").0, 200);
    // Every change is in the audit trail.
    for (action, n) in [
        ("alert rules post", 2),
        ("alert rules delete", 1),
        ("saved searches post", 1),
        ("saved searches delete", 1),
    ] {
        wait_until(10, || {
            let (_, body) = s.search(
                &format!("fields.action:\"{action}\" AND fields.outcome:ok"),
                &[("index", "_audit"), ("limit", "100")],
            );
            (body["total"].as_u64().unwrap_or(0) < n).then(|| format!("{action}: {body}"))
        });
    }
}

#[test]
fn a_bad_rule_in_the_config_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[[alerts.rules]]\nname = \"bad\"\nwindow = \"5m\"\ncondition = \"count is big\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--http", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[[alerts.rules]] #1")
            && err.contains("\"bad\"")
            && err.contains("count is big"),
        "{err}"
    );
}

#[test]
fn failed_deliveries_are_retried_counted_and_audited_while_evaluation_goes_on() {
    // Nothing listens there: every attempt is refused.
    let closed = format!("http://127.0.0.1:{}/hook", free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[alerts]
webhook_url = "{closed}"
[[alerts.rules]]
name = "any_error"
query = "error"
index = "apps"
window = "1m"
condition = "count > 0"
interval = "1s"
"#
    );
    let s = Server::start_in(dir.path(), &config);
    let (status, body) = s.ingest(
        "apps",
        ndjson(&[json!({"host": "a", "message": "error: boom"})]),
        "application/x-ndjson",
    );
    assert_eq!(status, 200, "{body}");
    wait_until(15, || {
        let text = s.metrics_text(None);
        let failed = metric(
            &text,
            "logsift_alert_notifications_failed_total{target=\"webhook\"}",
        );
        let retries = metric(
            &text,
            "logsift_alert_notification_retries_total{target=\"webhook\"}",
        );
        (failed < 1.0 || retries < 3.0).then(|| format!("failed {failed}, retries {retries}"))
    });
    // Delivery's retries did not hold evaluation up.
    let before = metric(&s.metrics_text(None), "logsift_alert_evaluations_total");
    std::thread::sleep(Duration::from_millis(2500));
    let after = metric(&s.metrics_text(None), "logsift_alert_evaluations_total");
    assert!(after >= before + 2.0, "{before} → {after}");
    assert_eq!(groups(&s, "any_error")[0]["state"], "firing");
    assert_eq!(
        metric(
            &s.metrics_text(None),
            "logsift_alert_notifications_sent_total{target=\"webhook\"}"
        ),
        0.0
    );
    wait_until(10, || {
        let (_, body) = s.search(
            "fields.action:\"alert notification\"",
            &[("index", "_audit"), ("limit", "10")],
        );
        let outcome = body["hits"][0]["fields"]["outcome"]
            .as_str()
            .unwrap_or("")
            .to_string();
        (!outcome.starts_with("failed")).then(|| format!("audit: {body}"))
    });
}

#[test]
fn rate_rule_compares_with_the_previous_window_and_waits_for_its_for_duration() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
[[alerts.rules]]
name = "error_surge"
query = "error"
index = "web"
window = "4s"
condition = "rate > 3"
interval = "1s"
for = "1s"
"#;
    let s = Server::start_in(dir.path(), config);
    let lines = |n: usize| {
        let l: Vec<Value> = (0..n)
            .map(|i| json!({"host": "w", "message": format!("error {i}")}))
            .collect();
        let (status, body) = s.ingest("web", ndjson(&l), "application/x-ndjson");
        assert_eq!(status, 200, "{body}");
    };
    lines(4);
    std::thread::sleep(Duration::from_millis(3200));
    assert!(
        groups(&s, "error_surge").is_empty(),
        "no baseline before the 4: no rate, no alert"
    );
    // Ten times the previous window: pending at once, firing once it held for 1 s (and
    // before the 4 leave the previous window, 4 s after they came).
    lines(40);
    let burst = Instant::now();

    let mut first_pending = None;
    wait_until(8, || {
        let g = groups(&s, "error_surge");
        match g.first().map(|g| (g["state"].as_str().unwrap_or(""), g)) {
            Some(("pending", g)) => {
                first_pending.get_or_insert((burst.elapsed(), g["value"].clone()));
                Some("pending".into())
            }
            Some(("firing", _)) => None,
            other => Some(format!("{other:?} {}", s.get("/api/v1/alerts").1)),
        }
    });
    let (pending_at, value) = first_pending.expect("pending before firing");
    assert_eq!(value, "10", "40 over the previous window's 4");
    assert!(
        burst.elapsed() >= pending_at + Duration::from_millis(700),
        "firing {:?} after pending",
        burst.elapsed() - pending_at
    );
}

#[test]
fn changing_rules_needs_admin_and_saved_searches_need_search() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = common::create_token(&data, &["admin"], &[]);
    let reader = common::create_token(&data, &["search"], &["logs"]);
    let shipper = common::create_token(&data, &["ingest"], &[]);
    let s = Server::start_in(dir.path(), "");
    let call = |method: &str, path: &str, token: &str, body: Option<&Value>| -> u16 {
        let mut req = client()
            .request(method.parse().unwrap(), format!("{}{path}", s.http))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().unwrap().status().as_u16()
    };
    let rule = json!({"name": "r1", "window": "1m", "condition": "count > 1"});
    assert_eq!(
        call("POST", "/api/v1/alerts/rules", &reader, Some(&rule)),
        403
    );
    assert_eq!(
        call("POST", "/api/v1/alerts/rules", &shipper, Some(&rule)),
        403
    );
    assert_eq!(
        call("POST", "/api/v1/alerts/rules", &admin, Some(&rule)),
        201
    );
    assert_eq!(call("GET", "/api/v1/alerts", &reader, None), 200);
    assert_eq!(call("GET", "/api/v1/alerts", &shipper, None), 403);
    assert_eq!(
        call("DELETE", "/api/v1/alerts/rules/r1", &reader, None),
        403
    );
    assert_eq!(call("GET", "/api/v1/saved", "not-a-token", None), 401);
    let saved = json!({"name": "mine", "query": "error"});
    assert_eq!(call("POST", "/api/v1/saved", &reader, Some(&saved)), 201);
    assert_eq!(call("POST", "/api/v1/saved", &shipper, Some(&saved)), 403);
    assert_eq!(call("GET", "/api/v1/saved/mine", &reader, None), 200);
    // Someone else's saved search is theirs to delete, or an admin's.
    let other = common::create_token(&data, &["search"], &[]);
    // tokens.json is re-read when it changes.
    wait_until(10, || {
        (call("GET", "/api/v1/saved", &other, None) != 200).then(|| "new token not seen".into())
    });
    assert_eq!(call("DELETE", "/api/v1/saved/mine", &other, None), 403);
    assert_eq!(call("DELETE", "/api/v1/saved/mine", &reader, None), 200);
    assert_eq!(call("DELETE", "/api/v1/alerts/rules/r1", &admin, None), 200);
}

#[test]
fn a_firing_alert_survives_kill_9_with_its_start_time() {
    let hook = Webhook::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[alerts]\nwebhook_url = \"{}\"\nresend_interval = \"2s\"\n{COUNT_RULE}",
        hook.url
    );
    let s = Server::start_in(dir.path(), &config);
    burst(&s, 8);
    let fired = hook.wait_for(10, |a| a["rule"] == "disk_full" && a["status"] == "firing");
    let starts_at = fired["startsAt"].clone();
    s.kill9();
    let s = Server::start_in(dir.path(), &config);
    let g = groups(&s, "disk_full");
    assert_eq!(g.len(), 1, "state read back at start: {g:?}");
    assert_eq!(g[0]["state"], "firing");
    // Resends after the crash carry the first start time; nothing resolved in between.
    let _ = hook.drain();
    let again = hook.wait_for(10, |a| a["rule"] == "disk_full");
    assert_eq!(again["status"], "firing", "{again}");
    assert_eq!(again["startsAt"], starts_at);
}
