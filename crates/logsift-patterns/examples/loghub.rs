//! Grouping accuracy and CPU time per message on the Loghub 2k samples, with the worst mistakes
//! of each system: `cargo run --release -p logsift-patterns --example loghub [-- --verbose]
//! [System]`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::Instant;

use logsift_patterns::{Miner, MinerConfig};

fn main() {
    let verbose = std::env::args().any(|a| a == "--verbose");
    let only: Option<String> = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--") && a.parse::<f32>().is_err());
    // Experiments only: `--sim 0.7` overrides the similarity threshold.
    let mut config = MinerConfig::default();
    if let Some(s) = std::env::args().skip_while(|a| a != "--sim").nth(1) {
        config.similarity = s.parse().expect("--sim takes a number");
    }
    if let Some(s) = std::env::args().skip_while(|a| a != "--word").nth(1) {
        config.word_difference = s.parse().expect("--word takes a number");
    }
    let dir = common::corpus_dir();
    let Some(systems) = common::load_systems(&dir) else {
        eprintln!("no Loghub corpus at {}", dir.display());
        return;
    };
    if std::env::args().any(|a| a == "--shared") {
        shared(&systems, config);
        return;
    }
    let mut total = 0.0;
    let mut n = 0usize;
    let (mut secs, mut msgs) = (0.0f64, 0usize);
    for sys in &systems {
        if only.as_ref().is_some_and(|o| o != &sys.name) {
            continue;
        }
        let truth: Vec<String> = sys.rows.iter().map(|r| r.1.clone()).collect();
        let mut miner = Miner::new(config).expect("config is valid");
        let ids: Vec<u32> = sys.rows.iter().map(|r| miner.ingest(&r.0)).collect();
        let ga = common::grouping_accuracy(&ids, &truth);
        // Timing: a fresh miner over the same messages (learning included), repeated to get
        // above timer noise. CPU time of this thread where Linux tells it, so that other work
        // on a shared machine does not count; wall time elsewhere.
        let reps = 50;
        let (cpu0, wall0) = (thread_cpu_ns(), Instant::now());
        for _ in 0..reps {
            let mut m = Miner::new(config).expect("valid");
            for r in &sys.rows {
                std::hint::black_box(m.ingest(&r.0));
            }
        }
        let el = match (cpu0, thread_cpu_ns()) {
            (Some(a), Some(b)) => (b - a) as f64 / 1e9,
            _ => wall0.elapsed().as_secs_f64(),
        };
        secs += el;
        msgs += reps * sys.rows.len();
        println!(
            "{:<10} GA {:.3}  patterns {:>4}  {:.3} us/msg",
            sys.name,
            ga,
            miner.len(),
            el * 1e6 / (reps * sys.rows.len()) as f64
        );
        total += ga;
        n += 1;
        if verbose {
            report_mistakes(&miner, &ids, &truth, &sys.rows);
        }
    }
    println!(
        "average GA {:.4} over {n} systems, {:.3} us/msg",
        total / n as f64,
        secs * 1e6 / msgs as f64
    );
}

/// All systems through one miner, interleaved line by line, as one logsift index holding
/// every application's logs would see them: GA per system from the shared ids.
fn shared(systems: &[common::System], config: MinerConfig) {
    let mut miner = Miner::new(config).expect("config is valid");
    let mut ids: Vec<Vec<u32>> = systems.iter().map(|_| Vec::new()).collect();
    let longest = systems.iter().map(|s| s.rows.len()).max().unwrap_or(0);
    for i in 0..longest {
        for (s, sys) in systems.iter().enumerate() {
            if let Some(r) = sys.rows.get(i) {
                ids[s].push(miner.ingest(&r.0));
            }
        }
    }
    let mut total = 0.0;
    for (s, sys) in systems.iter().enumerate() {
        let truth: Vec<String> = sys.rows.iter().map(|r| r.1.clone()).collect();
        let ga = common::grouping_accuracy(&ids[s], &truth);
        println!("{:<10} GA {ga:.3} (shared miner)", sys.name);
        total += ga;
    }
    println!(
        "average GA {:.4} over {} systems in one miner of {} patterns",
        total / systems.len() as f64,
        systems.len(),
        miner.len()
    );
}

/// Nanoseconds this thread has run, from `/proc/thread-self/schedstat` (Linux).
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn report_mistakes(miner: &Miner, ids: &[u32], truth: &[String], rows: &[(String, String)]) {
    let mut by_pred: HashMap<u32, Vec<usize>> = HashMap::new();
    let mut by_truth: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, p) in ids.iter().enumerate() {
        by_pred.entry(*p).or_default().push(i);
        by_truth.entry(truth[i].as_str()).or_default().push(i);
    }
    // Truth events split over several patterns.
    let mut split: Vec<_> = by_truth
        .iter()
        .filter_map(|(t, m)| {
            let mut ps: Vec<u32> = m.iter().map(|&i| ids[i]).collect();
            ps.sort();
            ps.dedup();
            (ps.len() > 1).then_some((m.len(), *t, ps))
        })
        .collect();
    split.sort_by_key(|s| std::cmp::Reverse(s.0));
    for (size, t, ps) in split.iter().take(6) {
        println!("  SPLIT {t} ({size} msgs) into {} patterns:", ps.len());
        for p in ps.iter().take(4) {
            let ex = by_pred[p]
                .iter()
                .find(|&&i| truth[i] == *t)
                .copied()
                .unwrap_or(0);
            println!(
                "     #{p} {:?}\n        ex {:?}",
                miner.template(*p).unwrap_or(""),
                rows[ex].0
            );
        }
    }
    // Patterns merging several truth events.
    let mut merged: Vec<_> = by_pred
        .iter()
        .filter_map(|(p, m)| {
            let mut ts: Vec<&str> = m.iter().map(|&i| truth[i].as_str()).collect();
            ts.sort();
            ts.dedup();
            (ts.len() > 1).then_some((m.len(), *p, ts))
        })
        .collect();
    merged.sort_by_key(|m| std::cmp::Reverse(m.0));
    for (size, p, ts) in merged.iter().take(6) {
        println!(
            "  MERGED #{p} ({size} msgs) {:?} events {:?}",
            miner.template(*p).unwrap_or(""),
            &ts[..ts.len().min(6)]
        );
        for t in ts.iter().take(3) {
            let ex = by_pred[p]
                .iter()
                .find(|&&i| truth[i] == *t)
                .copied()
                .unwrap_or(0);
            println!("        {t}: {:?}", rows[ex].0);
        }
    }
}
