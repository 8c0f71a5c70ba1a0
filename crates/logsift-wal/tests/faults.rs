//! Deterministic crash-consistency of the WAL (issue #17): an I/O failure is injected at each
//! fail point of the write path (append, flush, torn flush, fsync, file creation on rotation,
//! directory fsync, rollback, truncation), at its 1st, 2nd, ... hit, while rounds of entries
//! are written as the ingest pipeline writes them (append all, then sync; roll back on any
//! error; answer the round only on success). Then the process "crashes" (the WAL is dropped
//! without a final sync), either right after the failure or after more rounds, and is opened
//! again. Checked against a model: every acknowledged entry comes back once, under its LSN;
//! no entry of a refused round comes back; and the log takes writes again as soon as the
//! failure is gone.

use std::collections::BTreeMap;
use std::path::Path;

use logsift_wal::{Wal, WalOptions};

/// Every fail point in `logsift-wal`'s write path.
const POINTS: &[&str] = &[
    "wal::append",
    "wal::flush",
    "wal::flush-torn",
    "wal::sync",
    "wal::create",
    "wal::create-sync",
    "wal::dir-sync",
    "wal::truncate",
];

const ROUNDS: usize = 14;

/// Small files so that rotations happen every few rounds, in the middle of the scenario.
const MAX_FILE_BYTES: u64 = 300;

fn payload(round: usize, i: usize) -> Vec<u8> {
    let pad = "x".repeat((round * 7 + i * 13) % 60);
    format!("round {round} entry {i} {pad}").into_bytes()
}

fn open(dir: &Path) -> (Wal, BTreeMap<u64, Vec<u8>>) {
    let mut replayed = BTreeMap::new();
    let opts = WalOptions {
        dir: dir.to_path_buf(),
        max_file_bytes: MAX_FILE_BYTES,
    };
    let (wal, _) = Wal::open(&opts, 0, |lsn, p| {
        assert!(
            replayed.insert(lsn, p.to_vec()).is_none(),
            "LSN {lsn} twice"
        );
    })
    .expect("open");
    (wal, replayed)
}

/// What the pipeline does with one round: append every entry, sync, and on any error roll
/// back (whose own failure is logged, not answered).
fn write_round(wal: &mut Wal, entries: &[Vec<u8>]) -> (Result<Vec<u64>, String>, bool) {
    let mut lsns = Vec::new();
    let mut written = || {
        for e in entries {
            lsns.push(wal.append(e)?);
        }
        wal.sync()
    };
    match written() {
        Ok(()) => (Ok(lsns), true),
        Err(e) => {
            let rolled_back = wal.rollback().is_ok();
            (Err(e.to_string()), rolled_back)
        }
    }
}

#[derive(Debug)]
struct Outcome {
    /// Whether the fail point was reached at all (else `nth` is past its last hit).
    hit: bool,
}

/// One scenario: `point` fails at its `nth` hit (and `rollback_too`: the rollback after it
/// fails once as well); the process crashes right after the failed round (`crash_at_failure`)
/// or after all rounds.
fn scenario(point: &str, nth: usize, rollback_too: bool, crash_at_failure: bool) -> Outcome {
    let tmp = tempfile::tempdir().unwrap();
    let (mut wal, replayed) = open(tmp.path());
    assert!(replayed.is_empty());
    fail::cfg(point, &format!("{}*off->1*return", nth - 1)).unwrap();
    if rollback_too {
        fail::cfg("wal::rollback", "1*return").unwrap();
    }
    let mut acked: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    // Entries of a refused round whose rollback failed: until a later round succeeds (which
    // rolls back first), a crash may replay any prefix of them; nothing else is doubtful.
    let mut doubtful: Vec<Vec<u8>> = Vec::new();
    let mut refused = Vec::new();
    let mut truncated_through = 0u64;
    let mut truncate_failed = false;
    for round in 0..ROUNDS {
        let entries: Vec<_> = (0..1 + round % 4).map(|i| payload(round, i)).collect();
        let (result, rolled_back) = write_round(&mut wal, &entries);
        match result {
            Ok(lsns) => {
                doubtful.clear();
                for (lsn, e) in lsns.into_iter().zip(entries) {
                    assert!(acked.insert(lsn, e).is_none(), "{point}: LSN {lsn} reused");
                }
            }
            Err(e) => {
                refused.push((round, e));
                if !rolled_back {
                    doubtful = entries;
                }
                if crash_at_failure {
                    break;
                }
            }
        }
        // As the indexer does after a commit: entries of the first rounds are safe elsewhere.
        if round % 5 == 4 {
            let through = acked.keys().nth(acked.len() / 2).copied().unwrap_or(0);
            // A failed truncation may have removed some of the files: entries up to `through`
            // may or may not come back, either is right.
            truncate_failed |= wal.truncate_through(through).is_err();
            truncated_through = through;
        }
    }
    fail::remove(point);
    fail::remove("wal::rollback");
    let hit = !refused.is_empty() || truncate_failed;
    // Only the injected failure is refused: the log recovers by itself.
    assert!(
        refused.len() <= 1,
        "{point} at hit {nth}: more than the injected failure was refused: {refused:?}"
    );
    drop(wal); // kill -9: buffered bytes are lost, written ones stay in the page cache
    let (_, replayed) = open(tmp.path());
    let mut doubtful_left = doubtful.iter();
    for (lsn, p) in &replayed {
        match acked.get(lsn) {
            Some(a) => assert_eq!(a, p, "{point} at hit {nth}: LSN {lsn} changed"),
            None => assert_eq!(
                doubtful_left.next(),
                Some(p),
                "{point} at hit {nth}: LSN {lsn} ({}) was never acknowledged; refused {refused:?}",
                String::from_utf8_lossy(p)
            ),
        }
    }
    for (lsn, a) in acked.range(truncated_through + 1..) {
        assert_eq!(
            replayed.get(lsn),
            Some(a),
            "{point} at hit {nth}: acknowledged LSN {lsn} lost; refused {refused:?}"
        );
    }
    // A new round after the restart is taken and comes back.
    let (mut wal, _) = open(tmp.path());
    let (result, _) = write_round(&mut wal, &[b"after".to_vec()]);
    let lsn = result.expect("a round after the restart")[0];
    assert!(replayed.keys().all(|&l| l < lsn));
    drop(wal);
    assert_eq!(
        open(tmp.path()).1.get(&lsn).map(Vec::as_slice),
        Some(&b"after"[..])
    );
    Outcome { hit }
}

#[test]
fn every_injected_write_failure_keeps_acknowledged_entries_once_and_refused_ones_never() {
    let _scenario = fail::FailScenario::setup();
    let mut runs = 0;
    for &point in POINTS {
        for rollback_too in [false, true] {
            for crash_at_failure in [false, true] {
                let mut nth = 1;
                while scenario(point, nth, rollback_too, crash_at_failure).hit {
                    nth += 1;
                    runs += 1;
                    assert!(nth < 200, "{point} is hit more than expected");
                }
            }
        }
    }
    // Each point is reached several times over the rounds (rotations included).
    assert!(runs > 100, "only {runs} scenarios failed somewhere");
}
