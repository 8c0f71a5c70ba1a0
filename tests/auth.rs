//! API tokens against the real binary: every protected route refuses missing, wrong and
//! revoked tokens (401) and out-of-scope ones (403); scopes restrict what reads cover; Basic
//! works for shippers; `logsift tokens` changes reach a running server; without tokens the
//! server refuses to listen beyond loopback.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{client, create_token, Server, BIN};
use reqwest::blocking::RequestBuilder;

/// Every route behind authentication, with the role it needs: (method, path, role).
const ROUTES: &[(&str, &str, &str)] = &[
    ("POST", "/api/v1/web/ingest", "ingest"),
    ("GET", "/api/v1/search?q=*", "search"),
    ("GET", "/api/v1/histogram?q=*", "search"),
    ("GET", "/api/v1/terms?field=host", "search"),
    ("GET", "/api/v1/context?id=1", "search"),
    ("GET", "/api/v1/tail?q=*", "search"),
    ("GET", "/api/v1/indexes", "search"),
    ("GET", "/api/v1/segments", "search"),
    ("GET", "/metrics", "admin"),
];

fn request(s: &Server, method: &str, path: &str) -> RequestBuilder {
    let url = format!("{}{path}", s.http);
    let c = client();
    if method == "POST" {
        c.post(url)
            .header("content-type", "application/x-ndjson")
            .body("{\"msg\":\"probe\"}\n")
    } else {
        c.get(url)
    }
}

/// Status of a request; a tail stream that opened is answered 200 and closed by dropping it.
fn status(req: RequestBuilder) -> (u16, Option<String>) {
    let resp = req
        .timeout(Duration::from_secs(10))
        .send()
        .expect("request");
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    (resp.status().as_u16(), challenge)
}

fn basic(token: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("shipper:{token}"))
    )
}

fn line(msg: &str, host: &str) -> String {
    format!("{{\"msg\":\"{msg}\",\"host\":\"{host}\"}}\n")
}

/// Polls `f` until it returns true (token file changes are picked up within a second).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn tokens_guard_every_route_by_role_and_index() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let admin = create_token(&data, &["admin"], &[]);
    let search_web = create_token(&data, &["search"], &["web"]);
    let ingest_web = create_token(&data, &["ingest"], &["web"]);
    let ingest_all = create_token(&data, &["ingest"], &[]);
    let s = Server::start_in(tmp.path(), "");

    // Seed two indexes with the admin token (admin implies every role).
    for (index, n) in [("web", 3), ("db", 2)] {
        let body: String = (0..n).map(|i| line(&format!("seed {i}"), index)).collect();
        let (st, b) = s.ingest_as(&admin, index, body, "application/x-ndjson");
        assert_eq!(st, 200, "{b}");
    }
    s.wait_total_as(&admin, "seed", &[], 5);

    // Open routes stay open.
    for path in ["/health/live", "/health/ready", "/", "/ui/app.js"] {
        assert_eq!(
            status(client().get(format!("{}{path}", s.http))).0,
            200,
            "{path}"
        );
    }
    // API answers, refusals included, are never sniffed into something a browser runs.
    let refused = client()
        .get(format!("{}/api/v1/search", s.http))
        .send()
        .unwrap();
    assert_eq!(refused.headers()["x-content-type-options"], "nosniff");
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    // Readiness says nothing about the data to callers without a token.
    let (_, ready) = s.get("/health/ready");
    assert!(ready.get("indexes").is_none(), "{ready}");

    let bogus = format!("lsft_000000000000_{}", "0".repeat(64));
    for &(method, path, role) in ROUTES {
        // Missing, malformed and unknown tokens: 401 with a challenge.
        let (st, challenge) = status(request(&s, method, path));
        assert_eq!(st, 401, "{method} {path} without a token");
        assert!(challenge.unwrap().starts_with("Bearer"), "{path}");
        for auth in [
            format!("Bearer {bogus}"),
            "Bearer ".to_string(),
            "Token abc".to_string(),
            basic("wrong"),
        ] {
            let (st, _) = status(request(&s, method, path).header("authorization", &auth));
            assert_eq!(st, 401, "{method} {path} with {auth:?}");
        }
        // A token without the route's role: 403.
        let wrong_role = if role == "ingest" {
            &search_web
        } else {
            &ingest_all
        };
        let (st, _) = status(request(&s, method, path).bearer_auth(wrong_role));
        assert_eq!(st, 403, "{method} {path} with a token lacking {role}");
        // The admin token passes authentication everywhere (context of id 1 may be 404).
        let (st, _) = status(request(&s, method, path).bearer_auth(&admin));
        assert!(st == 200 || st == 404, "{method} {path} as admin: {st}");
    }

    // Ingest is scoped to its indexes, by Bearer or Basic.
    let (st, _) = s.ingest_as(&ingest_web, "db", line("x", "db"), "application/x-ndjson");
    assert_eq!(st, 403, "ingest into an index out of scope");
    let (st, _) = s.ingest_as(
        &ingest_web,
        "web",
        line("scoped", "web"),
        "application/x-ndjson",
    );
    assert_eq!(st, 200);
    let resp = client()
        .post(format!("{}/api/v1/web/ingest", s.http))
        .header("authorization", basic(&ingest_web))
        .body(line("over basic", "web"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "Basic with the token as password");
    s.wait_total_as(&admin, "basic", &[], 1);

    // Reads are scoped: a named index out of scope is 403, "all" covers only the scope.
    let (st, _) = s.search_as(&search_web, "*", &[("index", "db")]);
    assert_eq!(st, 403);
    let (st, _) = s.search_as(&search_web, "*", &[("index", "web,db")]);
    assert_eq!(st, 403);
    let (st, body) = s.search_as(&admin, "*", &[("index", "../../etc")]);
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (400, Some("bad_index"))
    );
    // web: 3 seeded, 1 probe from the admin pass over ROUTES, 1 Bearer, 1 Basic.
    let all = s.wait_total_as(&search_web, "*", &[], 6);
    assert!(all["hits"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["index"] == "web"));
    assert_eq!(s.wait_total_as(&admin, "*", &[], 8)["total"], 8);
    for path in [
        "/api/v1/histogram?q=*&index=db",
        "/api/v1/terms?field=host&index=db",
        "/api/v1/tail?index=db",
    ] {
        let (st, _) = status(
            client()
                .get(format!("{}{path}", s.http))
                .bearer_auth(&search_web),
        );
        assert_eq!(st, 403, "{path}");
    }
    let terms: serde_json::Value = client()
        .get(format!("{}/api/v1/terms?field=host", s.http))
        .bearer_auth(&search_web)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(terms["buckets"].as_array().unwrap().len(), 1, "{terms}");
    assert_eq!(terms["buckets"][0]["value"], "web", "{terms}");
    let listed: serde_json::Value = client()
        .get(format!("{}/api/v1/indexes", s.http))
        .bearer_auth(&search_web)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let names: Vec<_> = listed["indexes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].clone())
        .collect();
    assert_eq!(names, vec!["web"], "{listed}");
    // Context of a record in another index looks like an unknown id.
    let (_, db_hits) = s.search_as(&admin, "*", &[("index", "db"), ("limit", "1")]);
    let db_id = db_hits["hits"][0]["id"].as_str().unwrap().to_string();
    let ctx = |token: &str| {
        status(
            client()
                .get(format!("{}/api/v1/context?id={db_id}", s.http))
                .bearer_auth(token),
        )
        .0
    };
    assert_eq!(ctx(&search_web), 404);
    assert_eq!(ctx(&admin), 200);

    // The CLI client sends its token; without one it says what to do.
    let out = Command::new(BIN)
        .args([
            "search",
            "scoped",
            "--json",
            "--server",
            &s.http,
            "--token",
            &search_web,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    let out = Command::new(BIN)
        .args(["search", "scoped", "--server", &s.http])
        .env_remove("LOGSIFT_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token"));

    // Tokens created and revoked while the server runs take effect without a restart.
    let late = create_token(&data, &["search"], &[]);
    eventually("a new token accepted", || {
        s.search_as(&late, "*", &[]).0 == 200
    });
    let list = Command::new(BIN)
        .args(["tokens", "list", "--json", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let listed = String::from_utf8(list.stdout).unwrap();
    assert_eq!(listed.lines().count(), 5, "{listed}");
    assert!(!listed.contains(&late[18..]), "list never shows secrets");
    let late_id = &late[5..17];
    let out = Command::new(BIN)
        .args(["tokens", "revoke", late_id, "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("a revoked token refused", || {
        s.search_as(&late, "*", &[]).0 == 401
    });
    let again = Command::new(BIN)
        .args(["tokens", "revoke", late_id, "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!again.status.success(), "revoking twice is an error");

    // Failures are counted; /metrics needs admin.
    let metrics = s.metrics_text(Some(&admin));
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("logsift_http_auth_failures_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(failures >= (ROUTES.len() * 5) as u64, "{failures}");
}

#[test]
fn revoking_every_token_keeps_authentication_on() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let only = create_token(&data, &["admin"], &[]);
    let s = Server::start_in(tmp.path(), "");
    assert_eq!(s.search_as(&only, "*", &[]).0, 200);
    let status = Command::new(BIN)
        .args(["tokens", "revoke", &only[5..17], "--data-dir"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(status.success());
    eventually("the revoked token refused", || {
        s.search_as(&only, "*", &[]).0 == 401
    });
    assert_eq!(s.search("*", &[]).0, 401, "no token is not a way in either");
}

#[test]
fn per_token_ingest_rate_answers_429_with_retry_after() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = Command::new(BIN)
        .args([
            "tokens",
            "create",
            "--role",
            "ingest",
            "--ingest-rate",
            "2000",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    let slow = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let fast = create_token(&data, &["ingest"], &[]);
    let s = Server::start_in(tmp.path(), "");
    let body = line(&"x".repeat(6000), "web");
    let (st, b) = s.ingest_as(&slow, "logs", body.clone(), "application/x-ndjson");
    assert_eq!(st, 200, "the first request may go into debt: {b}");
    let resp = client()
        .post(format!("{}/api/v1/logs/ingest", s.http))
        .bearer_auth(&slow)
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=4).contains(&retry), "retry after {retry}");
    // Another token is not slowed down by it.
    let (st, _) = s.ingest_as(&fast, "logs", body.clone(), "application/x-ndjson");
    assert_eq!(st, 200);
    std::thread::sleep(Duration::from_secs(retry));
    let (st, b) = s.ingest_as(&slow, "logs", body, "application/x-ndjson");
    assert_eq!(st, 200, "after Retry-After: {b}");
}

/// Starts `logsift serve` with `args` and returns its exit status, or None if it became ready
/// (then it is stopped).
fn serve_outcome(dir: &std::path::Path, config: &str, args: &[&str]) -> (Option<bool>, String) {
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args([
            "--syslog-tcp",
            "127.0.0.1:0",
            "--syslog-udp",
            "127.0.0.1:0",
            "--json-tcp",
            "127.0.0.1:0",
            "--otlp-grpc",
            "127.0.0.1:0",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let ready = stdout
        .lines()
        .map_while(Result::ok)
        .any(|l| l.starts_with("logsift ready"));
    if ready {
        let _ = Command::new("kill").arg(child.id().to_string()).status();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (
        if ready {
            None
        } else {
            Some(out.status.success())
        },
        stderr,
    )
}

#[test]
fn without_tokens_only_loopback_unless_told_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let small = "[index]\nwriter_memory_bytes = 15000000\n";
    // 0.0.0.0 is bound, not connected to: no traffic leaves loopback.
    let (outcome, stderr) = serve_outcome(tmp.path(), small, &["--http", "0.0.0.0:0"]);
    assert_eq!(outcome, Some(false), "{stderr}");
    assert!(
        stderr.contains("refusing to listen on non-loopback") && stderr.contains("http.listen"),
        "{stderr}"
    );
    let (outcome, stderr) = serve_outcome(
        tmp.path(),
        small,
        &["--http", "127.0.0.1:0", "--syslog-tcp", "0.0.0.0:0"],
    );
    assert_eq!(
        outcome,
        Some(false),
        "a syslog listener counts too: {stderr}"
    );

    let allowed = format!("{small}[security]\nallow_unauthenticated_remote = true\n");
    let (outcome, stderr) = serve_outcome(tmp.path(), &allowed, &["--http", "0.0.0.0:0"]);
    assert_eq!(outcome, None, "{stderr}");
    assert!(stderr.contains("AUTHENTICATION IS OFF"), "{stderr}");

    // With a token, any address is fine.
    create_token(&tmp.path().join("data"), &["admin"], &[]);
    let (outcome, stderr) = serve_outcome(tmp.path(), small, &["--http", "0.0.0.0:0"]);
    assert_eq!(outcome, None, "{stderr}");
}

/// curl's status code and body for one request to the server, with extra headers.
fn curl(s: &Server, method: &str, path: &str, headers: &[&str]) -> (u16, String) {
    let mut args: Vec<String> = vec![
        "-sS".into(),
        "-o".into(),
        "-".into(),
        "-w".into(),
        "\n%{http_code}".into(),
        "-X".into(),
        method.into(),
    ];
    for h in headers {
        args.push("-H".into());
        args.push((*h).into());
    }
    if method == "POST" {
        args.extend([
            "-H".into(),
            "content-type: application/x-ndjson".into(),
            "--data-binary".into(),
            format!("{{\"msg\":\"{method} {}\"}}\n", headers.join(" ")),
        ]);
    }
    args.push(format!("{}{path}", s.http));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = common::run_tool("curl", &args, None);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').expect("curl status line");
    (code.trim().parse().expect("status"), body.to_string())
}

#[test]
fn without_tokens_browsers_cannot_be_used_against_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(
        dir.path(),
        "[security]\nallowed_hosts = [\"Logs.Internal\"]\n",
    );
    let port = s.http.rsplit(':').next().unwrap().to_string();
    let ingest = "/api/v1/web/ingest";
    // DNS rebinding: the page's own name, now resolving to 127.0.0.1, reads and writes.
    let rebound = format!("Host: attacker.example:{port}");
    for (method, path) in [
        ("GET", "/api/v1/search?q=*"),
        ("POST", "/api/v1/export"),
        ("POST", ingest),
    ] {
        let (code, body) = curl(&s, method, path, &[&rebound]);
        assert_eq!(code, 403, "{method} {path}: {body}");
        assert!(body.contains("DNS rebinding"), "{body}");
    }
    // Cross-site writes: a form or no-cors fetch from any page the browser shows.
    for header in [
        "Origin: https://attacker.example".to_string(),
        format!(
            "Origin: http://127.0.0.1:{}",
            port.parse::<u32>().unwrap() + 1
        ),
        "Origin: null".to_string(),
        "Sec-Fetch-Site: cross-site".to_string(),
    ] {
        let (code, body) = curl(&s, "POST", ingest, &[&header]);
        assert_eq!(code, 403, "{header}: {body}");
        assert!(
            body.contains("another site") || body.contains("origin"),
            "{body}"
        );
    }
    let (code, body) = curl(&s, "POST", "/api/v1/delete", &["Sec-Fetch-Site: same-site"]);
    assert_eq!(code, 403, "{body}");
    assert_eq!(s.metric("logsift_http_browser_refused_total"), 8.0);

    // What is not a browser attack is served: shippers and curl (no Origin), the server's own
    // page (same origin), localhost and the configured name, and reads opened from a link.
    let own = format!("Origin: http://127.0.0.1:{port}");
    let localhost = format!("Host: localhost:{port}");
    let configured = format!("Host: logs.internal:{port}");
    for headers in [
        vec![],
        vec![own.as_str(), "Sec-Fetch-Site: same-origin"],
        vec![localhost.as_str()],
        vec![configured.as_str()],
    ] {
        let (code, body) = curl(&s, "POST", ingest, &headers);
        assert_eq!(code, 200, "{headers:?}: {body}");
    }
    let (code, body) = curl(
        &s,
        "GET",
        "/api/v1/indexes",
        &[
            "Sec-Fetch-Site: cross-site",
            "Origin: https://attacker.example",
        ],
    );
    assert_eq!(code, 200, "{body}");
    // Exactly the four accepted records were stored; none of the refused ones.
    s.wait_total("*", &[("index", "web")], 4);
    assert_eq!(s.metric("logsift_http_browser_refused_total"), 8.0);

    // With tokens the token is the guard (a page cannot send one): the Host check steps aside.
    let token = create_token(&s.data_dir, &["search"], &[]);
    eventually("tokens take effect", || {
        curl(&s, "GET", "/api/v1/indexes", &[]).0 == 401
    });
    let bearer = format!("Authorization: Bearer {token}");
    let (code, body) = curl(
        &s,
        "GET",
        "/api/v1/search?q=*&index=web",
        &[&rebound, &bearer],
    );
    assert_eq!(code, 200, "{body}");
}

/// The client commands send `--token` on every request, the export's POST included (it once
/// went out without it and was refused), and a refusal tells the user to pass one.
#[test]
fn client_commands_send_their_token() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let admin = create_token(&data, &["admin"], &[]);
    let exporter = create_token(&data, &["export"], &[]);
    let searcher = create_token(&data, &["search"], &[]);
    let s = Server::start_in(tmp.path(), "");
    let (st, b) = s.ingest_as(
        &admin,
        "web",
        line("sent with a token", "web"),
        "application/x-ndjson",
    );
    assert_eq!(st, 200, "{b}");
    s.wait_total_as(&admin, "token", &[], 1);

    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let out = tmp.path().join("web.ndjson");
    let out_s = out.to_str().unwrap();
    let export = [
        "export", "*", "--index", "web", "--server", &s.http, "-o", out_s,
    ];
    let (ok, log) = run(&export);
    assert!(!ok && log.contains("--token"), "{log}");
    let (ok, log) = run(&[&export[..], &["--token", &exporter]].concat());
    assert!(ok, "{log}");
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("sent with a token"));

    let search = ["search", "token", "--server", &s.http];
    let (ok, log) = run(&search);
    assert!(!ok && log.contains("--token"), "{log}");
    let (ok, log) = run(&[&search[..], &["--token", &searcher]].concat());
    assert!(ok && log.contains("sent with a token"), "{log}");
}
