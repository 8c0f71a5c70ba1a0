//! Searchers (`logsift serve --role searcher`, issue #18): processes without a WAL that answer
//! queries over the segments an indexer publishes to a shared PostgreSQL metastore and
//! S3-protocol store, both real and started by the test (`common::pg`, `common::s3`).

mod common;

use common::pg::Pg;
use common::s3::S3;
use common::{all_hits, all_messages, client, post_json, wait_until, Server};
use serde_json::{json, Value};

const SEAL_QUICKLY: &str = "[index]\nseal_idle_ms = 300\n";
const SEARCHER: &str = "[node]\nrole = \"searcher\"\nrefresh_ms = 200\n";

fn ingest_batch(s: &Server, batch: u32, n: u32) {
    let body: String = (0..n)
        .map(|i| {
            format!(
                "{{\"msg\":\"published b{batch}r{i} user=u{}\",\"host\":\"h{}\"}}\n",
                i % 7,
                i % 7
            )
        })
        .collect();
    let (status, resp) = s.ingest("logs", body, "application/x-ndjson");
    assert_eq!(status, 200, "{resp}");
}

fn total(s: &Server, q: &str) -> u64 {
    let (status, body) = s.search(q, &[("limit", "0")]);
    assert_eq!(status, 200, "{body}");
    body["total"].as_u64().unwrap()
}

/// A terms query's answer without its timings: what an aggregation answers.
fn terms(s: &Server, field: &str) -> Value {
    let (status, mut body) = s.get(&format!("/api/v1/terms?q=published&field={field}"));
    assert_eq!(status, 200, "{body}");
    if let Some(map) = body.as_object_mut() {
        map.retain(|k, _| !k.contains("took"));
    }
    body
}

fn cached_segments(node: &std::path::Path) -> Vec<String> {
    let dir = node.join("data/segment-cache/logs");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".lsseg"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A PostgreSQL cluster and an S3-protocol server under `dir`, and the configuration that
/// shares both (segments under `prefix`), after `first`.
fn stores(dir: &std::path::Path, prefix: &str, first: &str) -> (Pg, S3, String) {
    let pg = Pg::start(&dir.join("pg"));
    let s3 = S3::start(&dir.join("s3"), "segments");
    let shared = format!(
        "{first}[metastore]\nurl = \"{}\"\n{}",
        pg.url(),
        s3.storage_config("segments", prefix)
    );
    (pg, s3, shared)
}

/// A node's directory `name` under `dir`, made.
fn node(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_searcher_answers_like_the_indexer_follows_what_it_publishes_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut pg, s3, shared) = stores(dir.path(), "roles", SEAL_QUICKLY);
    let (indexer_dir, searcher_dir) = (node(dir.path(), "indexer"), node(dir.path(), "searcher"));

    let indexer = Server::start_in(&indexer_dir, &shared);
    ingest_batch(&indexer, 0, 300);
    indexer.wait_sealed("logs", 300);

    // A searcher starts beside a running indexer (which holds the writer lease): it takes no
    // lease, binds no listener, and serves what was published.
    let searcher = Server::start_in(&searcher_dir, &format!("{shared}{SEARCHER}"));
    assert_eq!(searcher.syslog_tcp.port(), 0, "a searcher bound a listener");
    let found = all_messages(&searcher, "published");
    assert_eq!(found.len(), 300);
    assert!(found.values().all(|&c| c == 1), "a record was found twice");
    for q in [
        "b0r299",
        "user=u3",
        "published AND NOT u1",
        "\"published b0r1\"",
    ] {
        assert_eq!(total(&searcher, q), total(&indexer, q), "{q}");
    }
    assert_eq!(terms(&searcher, "host"), terms(&indexer, "host"));

    // What the indexer publishes next is served within a refresh or so; nothing unsealed is.
    ingest_batch(&indexer, 1, 200);
    indexer.wait_sealed("logs", 500);
    searcher.wait_total("published", &[("limit", "0")], 500);
    assert_eq!(total(&searcher, "b1r199"), 1);

    // Everything that writes is refused by name.
    let (status, body) = searcher.ingest("logs", "{\"msg\":\"x\"}\n", "application/x-ndjson");
    assert_eq!(status, 421, "{body}");
    assert!(body.to_string().contains("searcher"), "{body}");
    let (status, body) = post_json(&searcher, "/api/v1/export", json!({"q": "published"}));
    assert_eq!(status, 421, "{body}");
    let (status, body) = post_json(
        &searcher,
        "/api/v1/delete",
        json!({"q": "b0r1", "index": "logs"}),
    );
    assert_eq!(status, 421, "{body}");
    let (status, ready) = searcher.get("/health/ready");
    assert_eq!(status, 200);
    assert_eq!(ready["ingest"], "none", "{ready}");

    // The searcher's searches are audited: through the metastore's outbox into the indexer's
    // _audit index, and the outbox is emptied.
    let (status, _) = searcher.search("b1r42", &[]);
    assert_eq!(status, 200);
    wait_until(30, || {
        let (_, body) = indexer.search(
            "fields.action:search",
            &[("index", "_audit"), ("limit", "1000")],
        );
        let hits = body["hits"].as_array().cloned().unwrap_or_default();
        let found = hits
            .iter()
            .filter(|h| h["fields"]["query"] == "b1r42")
            .count();
        (found != 1).then(|| {
            format!(
                "{found} audit records of the search; outbox {}; {body}",
                pg.sql("SELECT count(*) FROM logsift_audit_outbox")
            )
        })
    });
    wait_until(30, || {
        let left = pg.sql("SELECT count(*) FROM logsift_audit_outbox");
        (left != "0").then(|| format!("{left} records still in the outbox"))
    });

    // An erasure on the indexer replaces segments: the searcher swaps them in one step,
    // stops finding the erased records, and drops the replaced copies from its cache.
    let before = cached_segments(&searcher_dir);
    assert_eq!(before.len(), 2, "{before:?}");
    let (status, report) = post_json(
        &indexer,
        "/api/v1/delete",
        json!({"q": "b0r7", "index": "logs"}),
    );
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["erased"], 1, "{report}");
    wait_until(30, || {
        let t = total(&searcher, "published");
        (t != 499).then(|| format!("searcher total {t}"))
    });
    assert_eq!(total(&searcher, "b0r7"), 0);
    assert_eq!(total(&searcher, "b0r8"), 1);
    wait_until(10, || {
        let now = cached_segments(&searcher_dir);
        let kept = now.iter().filter(|n| before.contains(n)).count();
        (kept != 1).then(|| format!("cache {now:?}, before {before:?}"))
    });
    // The searcher removed nothing from the store: the indexer's segments are all there.
    assert_eq!(s3.segments("segments", "roles", "logs").len(), 2);

    // PostgreSQL down for a while: the searcher keeps answering from what it serves, the
    // indexer keeps the new records in memory and the WAL, and once it is back both catch up
    // by themselves.
    pg.pause();
    ingest_batch(&indexer, 2, 100);
    indexer.wait_total("published", &[("limit", "0")], 599);
    assert_eq!(total(&searcher, "published"), 499);
    wait_until(60, || {
        (!searcher
            .log()
            .contains("cannot refresh the served segments"))
        .then(|| "no failed refresh logged yet".to_string())
    });
    pg.resume();
    wait_until(60, || {
        let t = total(&searcher, "published");
        (t != 599).then(|| format!("searcher total {t} after PostgreSQL came back"))
    });
    assert!(searcher
        .log()
        .contains("refreshing from the metastore works again"));

    // A searcher killed and started again on an empty directory serves the same.
    searcher.kill9();
    let searcher = Server::start_in(
        &node(dir.path(), "searcher-2"),
        &format!("{shared}{SEARCHER}"),
    );
    assert_eq!(total(&searcher, "published"), 599);
    assert_eq!(searcher.stop().code(), Some(0));
    assert_eq!(indexer.stop().code(), Some(0));
}

#[test]
fn a_searcher_without_a_shared_metastore_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::BIN)
        .args([
            "serve",
            "--role",
            "searcher",
            "--http",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs a shared metastore"), "{stderr}");
}

/// Pages through `q` on `s` with `limit` hits a page in `order`: the messages in order.
fn paged(s: &Server, q: &str, limit: &str, order: &str) -> Vec<String> {
    all_hits(s, q, &[("limit", limit), ("sort", order)])
        .iter()
        .map(|h| h["message"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A root with two searchers: sealed segments are read by the searchers (rendezvous-hashed),
/// the hot tier by the root; pages merge in order across cursors; with a searcher killed,
/// the root reads its share itself and the answers stay whole.
#[test]
fn searches_fan_out_over_searchers_and_survive_one_dying() {
    let dir = tempfile::tempdir().unwrap();
    let (_pg, _s3, shared) = stores(dir.path(), "fanout", "");
    let node = |name: &str| node(dir.path(), name);
    let a = Server::start_in(&node("a"), &format!("{shared}{SEARCHER}"));
    let b = Server::start_in(&node("b"), &format!("{shared}{SEARCHER}"));
    // Seals by size only, 20 segments of 20 records (so that each searcher surely owns
    // some: 2 × 2^-20 that one owns none), and the last 10 records stay in the hot tier.
    let root = Server::start_in(
        &node("root"),
        &format!(
            "{shared}[index]\nseal_docs = 20\nseal_idle_ms = 0\n[node]\nsearchers = [\"{}\", \"{}\"]\n",
            a.http, b.http
        ),
    );
    let mut sent: Vec<(u32, u32)> = Vec::new();
    for batch in 0..20 {
        ingest_batch(&root, batch, 20);
        sent.push((batch, 20));
        root.wait_sealed("logs", u64::from(batch + 1) * 20);
    }
    ingest_batch(&root, 20, 10);
    sent.push((20, 10));
    root.wait_total("published", &[("limit", "0")], 410);
    assert_eq!(root.sealed_docs("logs"), 400);
    for s in [&a, &b] {
        s.wait_total("published", &[("limit", "0")], 400);
    }

    let expected: Vec<String> = paged(&root, "published", "1000", "desc");
    assert_eq!(expected.len(), 410);
    let unique: std::collections::HashSet<&String> = expected.iter().collect();
    assert_eq!(unique.len(), 410, "a record was found twice");
    assert!(root.metric("logsift_fanout_shares_total") >= 2.0);
    // Pages of 37 meet across the parts of every process in the same order, both ways.
    assert_eq!(paged(&root, "published", "37", "desc"), expected);
    let mut ascending = paged(&root, "published", "37", "asc");
    ascending.reverse();
    assert_eq!(ascending, expected);
    assert_eq!(total(&root, "b20r7"), 1, "the hot tier is read by the root");
    assert_eq!(total(&root, "b1r7"), 1);
    let mut by_host = std::collections::BTreeMap::new();
    for &(_, n) in &sent {
        for i in 0..n {
            *by_host.entry(format!("h{}", i % 7)).or_insert(0u64) += 1;
        }
    }
    assert_eq!(Some(total(&root, "u3")), by_host.get("h3").copied());
    // The searchers answered their shares, audited as such.
    wait_until(30, || {
        let (_, body) = root.search(
            "fields.action:\"search part\"",
            &[("index", "_audit"), ("limit", "0")],
        );
        (body["total"].as_u64().unwrap_or(0) == 0).then(|| format!("{body}"))
    });

    // Histograms and terms are shared too, the hot tier counted by the root.
    let (status, h) = root.get("/api/v1/histogram?q=published&interval=1m");
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["total"], 410, "{h}");
    let summed: u64 = h["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(summed, 410, "{h}");
    let t = terms(&root, "host");
    assert_eq!(t["total"], 410, "{t}");
    for b in t["buckets"].as_array().unwrap() {
        let host = b["value"].as_str().unwrap();
        assert_eq!(b["count"].as_u64(), by_host.get(host).copied(), "{t}");
    }
    assert_eq!(t["buckets"].as_array().unwrap().len(), 7, "{t}");
    // Once everything is sealed, the root's shared answers are a searcher's own, whole.
    ingest_batch(&root, 21, 10);
    root.wait_sealed("logs", 420);
    a.wait_total("published", &[("limit", "0")], 420);
    b.wait_total("published", &[("limit", "0")], 420);
    assert_eq!(terms(&root, "host"), terms(&a, "host"));
    for interval in ["", "&interval=1m", "&interval=1s"] {
        let path = format!("/api/v1/histogram?q=published{interval}");
        let (mut one, mut shared) = (a.get(&path).1, root.get(&path).1);
        for v in [&mut one, &mut shared] {
            v.as_object_mut().unwrap().remove("took_ms");
        }
        assert_eq!(shared, one, "{path}");
    }

    a.kill9();
    let failures = root.metric("logsift_fanout_failures_total");
    let expected = paged(&b, "published", "1000", "desc");
    assert_eq!(expected.len(), 420);
    assert_eq!(paged(&root, "published", "37", "desc"), expected);
    assert_eq!(total(&root, "published"), 420);
    assert_eq!(root.get("/api/v1/histogram?q=published").1["total"], 420);
    assert!(root.metric("logsift_fanout_failures_total") > failures);
    assert_eq!(b.stop().code(), Some(0));
    assert_eq!(root.stop().code(), Some(0));
}

/// Ids of every hit of `q` on `s`, page by page.
fn all_ids(s: &Server, q: &str) -> Vec<String> {
    all_hits(s, q, &[("limit", "1000")])
        .iter()
        .map(|h| h["id"].to_string())
        .collect()
}

/// Two indexers ([node] indexer = 1 and 2) take records for one index at once and publish to
/// one catalog chain: ids never collide, each sees the other's segments, a searcher sees
/// all; an indexer killed with -9 right after an acknowledgement replays its own WAL on
/// restart and every record is found exactly once; a second process with a taken number is
/// refused.
#[test]
fn two_indexers_share_one_catalog_and_a_kill9_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (pg, _s3, shared) = stores(dir.path(), "two", SEAL_QUICKLY);
    let node = |name: &str| node(dir.path(), name);
    // Indexers refresh rarely here, so that each seal meets a chain the other moved: it
    // takes the other's entries in and appends on top.
    let indexer = |n: u16| format!("{shared}[node]\nindexer = {n}\nrefresh_ms = 600000\n");
    let one = Server::start_in(&node("one"), &indexer(1));
    let two = Server::start_in(&node("two"), &indexer(2));
    let searcher = Server::start_in(&node("searcher"), &format!("{shared}{SEARCHER}"));
    let caught_up = |s: &Server| s.log().contains("another indexer appended");

    // Both open the index before either seals; whichever seals second meets a moved chain.
    ingest_batch(&one, 0, 100);
    ingest_batch(&two, 100, 100);
    searcher.wait_total("published", &[("limit", "0")], 200);
    // Then one after the other: each seal meets the other's last one.
    ingest_batch(&one, 1, 100);
    searcher.wait_total("published", &[("limit", "0")], 300);
    ingest_batch(&two, 101, 100);
    searcher.wait_total("published", &[("limit", "0")], 400);
    assert!(caught_up(&one), "{}", one.log());
    assert!(caught_up(&two), "{}", two.log());
    // What each took in, it serves.
    two.wait_total("b1r5", &[("limit", "0")], 1);
    one.wait_total("b100r5", &[("limit", "0")], 1);
    // And at once.
    std::thread::scope(|scope| {
        scope.spawn(|| (2..4).for_each(|b| ingest_batch(&one, b, 100)));
        scope.spawn(|| (102..104).for_each(|b| ingest_batch(&two, b, 100)));
    });
    searcher.wait_total("published", &[("limit", "0")], 800);
    let found = all_messages(&searcher, "published");
    assert_eq!(found.len(), 800);
    assert!(found.values().all(|&c| c == 1), "a record was found twice");
    let ids = all_ids(&searcher, "published");
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 800, "two records share an id");
    let (_, ready) = searcher.get("/health/ready");
    assert_eq!(ready["broken_catalog_chains"], json!([]), "{ready}");

    // Legal holds live in PostgreSQL: placed through one indexer, the other keeps them too
    // (its retention reads them), and a release through it ends them for both.
    let (status, hold) = post_json(
        &two,
        "/api/v1/holds",
        json!({"index": "logs", "start": "2020-01-01T00:00:00Z", "end": "2030-01-01T00:00:00Z", "reason": "case 7"}),
    );
    assert_eq!(status, 201, "{hold}");
    let (status, listed) = one.get("/api/v1/holds");
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["holds"][0]["reason"], "case 7", "{listed}");
    assert_eq!(pg.sql("SELECT count(*) FROM logsift_holds"), "1");
    let released = client()
        .delete(format!(
            "{}/api/v1/holds/{}",
            one.http,
            hold["id"].as_str().unwrap()
        ))
        .send()
        .unwrap();
    assert_eq!(released.status(), 200);
    assert_eq!(two.get("/api/v1/holds").1["holds"], json!([]));

    // A third process as indexer 1 is refused while the first holds the number.
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--config"])
        .arg(dir.path().join("one/test-config.toml"))
        .arg("--data-dir")
        .arg(dir.path().join("third"))
        .args(["--http", "127.0.0.1:0", "--syslog-tcp", "127.0.0.1:0"])
        .args(["--syslog-udp", "127.0.0.1:0", "--json-tcp", "127.0.0.1:0"])
        .args(["--otlp-grpc", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("as indexer 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Acknowledged, then killed before it could seal: the restart replays its WAL.
    ingest_batch(&one, 10, 100);
    one.kill9();
    ingest_batch(&two, 110, 100);
    // Back with its usual refresh: it follows the other's seals by itself.
    let one = Server::start_in(
        &node("one"),
        &format!("{shared}[node]\nindexer = 1\nrefresh_ms = 200\n"),
    );
    searcher.wait_total("published", &[("limit", "0")], 1000);
    let found = all_messages(&searcher, "published");
    assert_eq!(found.len(), 1000);
    assert!(found.values().all(|&c| c == 1), "a record was found twice");
    // Its restart loaded the whole chain: it serves everything sealed.
    one.wait_total("published", &[("limit", "0")], 1000);
    assert_eq!(one.stop().code(), Some(0));
    assert_eq!(two.stop().code(), Some(0));
    let (ok, text) = common::segments_verify_config(&dir.path().join("two"));
    assert!(ok, "{text}");
}

/// With a PostgreSQL metastore, API tokens live there: `logsift tokens create --config`
/// stores one, every node (indexer and searcher) copies it into its own tokens file and
/// requires it within a couple of seconds, and a revocation reaches them all the same way.
#[test]
fn tokens_in_the_metastore_reach_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let (pg, _s3, shared) = stores(dir.path(), "tokens", "");
    let indexer_dir = node(dir.path(), "indexer");
    let indexer = Server::start_in(&indexer_dir, &shared);
    let searcher = Server::start_in(
        &node(dir.path(), "searcher"),
        &format!("{shared}{SEARCHER}"),
    );
    let tokens = |args: &[&str]| {
        let out = std::process::Command::new(common::BIN)
            .arg("tokens")
            .args(args)
            .arg("--config")
            .arg(indexer_dir.join("test-config.toml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let token = tokens(&["create", "--role", "search", "--name", "oncall"])
        .trim()
        .to_string();
    assert_eq!(pg.sql("SELECT count(*) FROM logsift_tokens"), "1");
    for s in [&indexer, &searcher] {
        wait_until(15, || {
            let (status, _) = s.search("x", &[]);
            (status != 401).then(|| format!("{}: {status} without a token", s.http))
        });
        assert_eq!(s.search_as(&token, "x", &[]).0, 200);
    }
    let listed = tokens(&["list", "--json"]);
    let id = serde_json::from_str::<Value>(listed.lines().next().unwrap()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    tokens(&["revoke", &id]);
    for s in [&indexer, &searcher] {
        wait_until(15, || {
            let (status, _) = s.search_as(&token, "x", &[]);
            (status != 401).then(|| format!("{}: {status} with a revoked token", s.http))
        });
    }
}
