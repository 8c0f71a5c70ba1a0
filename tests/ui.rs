//! The web UI in a real browser: `tests/ui/ui.mjs` drives Debian's Chromium with
//! playwright-core against a real server seeded here, and saves a screenshot of every step
//! under `target/ui-artifacts/`. `tests/run-all.sh` installs Chromium and the npm package.

mod common;

use std::path::Path;
use std::process::Command;

use common::Server;

const RECORDS: usize = 450;
/// A new kind of error on one host in the last ten minutes: what "What changed?" must find.
const INCIDENT: usize = 25;

fn level(i: usize) -> &'static str {
    match i % 5 {
        2 => "error",
        3 => "warning",
        _ => "info",
    }
}

/// Records spread over the last two hours, newest first by `i`, then the incident.
fn seed() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let incident: String = (0..INCIDENT)
        .map(|j| {
            format!(
                "{{\"timestamp\":{},\"host\":\"web-02\",\"app\":\"disk\",\"level\":\"error\",\"msg\":\"I/O error on /dev/sdb1 at sector {}\"}}\n",
                now - 7 - j as u64 * 20,
                1000 + j * 8
            )
        })
        .collect();
    incident
        + &(0..RECORDS)
        .map(|i| {
            let ts = now - 5 - (i as u64) * 15;
            let extra = if i % 9 == 0 { " upstream timeout" } else { "" };
            format!(
                "{{\"timestamp\":{ts},\"host\":\"web-0{}\",\"app\":\"api\",\"level\":\"{}\",\"user\":\"u{}\",\"msg\":\"GET /api/item/{i} took {i} ms{extra}\"}}\n",
                i % 3,
                level(i),
                i % 4
            )
        })
        .collect::<String>()
}

#[test]
fn search_page_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ui = root.join("tests/ui");
    assert!(
        ui.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `bash tests/run-all.sh` (or `npm ci` in tests/ui)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run `bash tests/run-all.sh` (or `apt-get install chromium`)"
    );

    // With a token, so that the page's token form and the Bearer header on every call
    // (searches, histogram, facets, context, the tail stream) are exercised.
    let tmp = tempfile::tempdir().unwrap();
    let token = common::create_token(&tmp.path().join("data"), &["admin"], &[]);
    // A rule, so that the page's alerts panel has something to list.
    let s = Server::start_in(
        tmp.path(),
        "[[alerts.rules]]\nname = \"ui_errors\"\nquery = \"severity:error\"\nwindow = \"5m\"\ncondition = \"count > 0\"\ninterval = \"1s\"\n",
    );
    let (status, body) = s.ingest_as(&token, "logs", seed(), "application/x-ndjson");
    assert_eq!(status, 200, "{body}");
    s.wait_total_as(&token, "", &[("limit", "0")], (RECORDS + INCIDENT) as u64);

    let count = |f: &dyn Fn(usize) -> bool| (0..RECORDS).filter(|&i| f(i)).count();
    let expected = serde_json::json!({
        "all": RECORDS + INCIDENT,
        "incident": INCIDENT,
        "timeout": count(&|i| i % 9 == 0),
        "web01": count(&|i| i % 3 == 1),
        "web01_not_info": count(&|i| i % 3 == 1 && level(i) != "info"),
    });
    let dir = tempfile::tempdir().unwrap();
    let expected_file = dir.path().join("expected.json");
    std::fs::write(&expected_file, expected.to_string()).unwrap();
    let shots = root.join("target/ui-artifacts");
    let _ = std::fs::remove_dir_all(&shots);

    let out = Command::new("node")
        .arg(ui.join("ui.mjs"))
        .arg(&s.http)
        .arg(&shots)
        .arg(&expected_file)
        .arg(&token)
        .env("CHROMIUM", &chromium)
        .current_dir(&ui)
        .output()
        .expect("node is needed for the UI test: apt-get install nodejs npm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "UI test failed (screenshots in {}):\n{stdout}\n{stderr}\nserver log:\n{}",
        shots.display(),
        s.log()
    );
    assert!(stdout.contains("steps passed"), "{stdout}");
    // The page's headers keep it to itself.
    let resp = common::client()
        .get(format!("{}/", s.http))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .unwrap();
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}
