//! Loghub ground truth and grouping accuracy, shared by `tests/loghub.rs` and
//! `examples/loghub.rs`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

/// The Loghub 2k samples, `/work/shared/corpus/loghub` seen from this crate.
pub fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/loghub")
}

/// One system: its name and `(Content, EventId)` rows in file order.
pub struct System {
    pub name: String,
    pub rows: Vec<(String, String)>,
}

/// Every `<system>/<system>_2k.log_structured.csv` under `dir`, sorted by name; `None` when the
/// folder is absent.
pub fn load_systems(dir: &std::path::Path) -> Option<Vec<System>> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut systems = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let csv = entry.path().join(format!("{name}_2k.log_structured.csv"));
        let Ok(text) = std::fs::read_to_string(&csv) else {
            continue;
        };
        let records = parse_csv(&text);
        let header = &records[0];
        let col = |n: &str| {
            header
                .iter()
                .position(|h| h == n)
                .unwrap_or_else(|| panic!("{} has no {n} column", csv.display()))
        };
        let (content, event) = (col("Content"), col("EventId"));
        let rows = records[1..]
            .iter()
            .filter(|r| r.len() > content.max(event))
            .map(|r| (r[content].clone(), r[event].clone()))
            .collect();
        systems.push(System { name, rows });
    }
    systems.sort_by(|a, b| a.name.cmp(&b.name));
    Some(systems)
}

/// RFC 4180: fields separated by commas, records by CRLF or LF; a quoted field may hold commas,
/// line breaks and doubled quotes.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut in_quotes = false;
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            ',' => record.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
                any = false;
            }
            _ => field.push(c),
        }
    }
    if any {
        record.push(field);
        records.push(record);
    }
    records
}

/// Grouping accuracy (Zhu et al., ICSE-SEIP 2019): the share of messages whose predicted group
/// is exactly the set of messages with their true event id.
pub fn grouping_accuracy<P: Eq + std::hash::Hash + Copy>(predicted: &[P], truth: &[String]) -> f64 {
    assert_eq!(predicted.len(), truth.len());
    let mut truth_sizes: HashMap<&str, usize> = HashMap::new();
    for t in truth {
        *truth_sizes.entry(t.as_str()).or_default() += 1;
    }
    let mut groups: HashMap<P, Vec<usize>> = HashMap::new();
    for (i, p) in predicted.iter().enumerate() {
        groups.entry(*p).or_default().push(i);
    }
    let mut correct = 0usize;
    for members in groups.values() {
        let t = truth[members[0]].as_str();
        if members.iter().all(|&i| truth[i] == t) && truth_sizes[t] == members.len() {
            correct += members.len();
        }
    }
    correct as f64 / truth.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_corpus_is_none() {
        assert!(load_systems(std::path::Path::new("/nonexistent/loghub")).is_none());
    }

    #[test]
    fn grouping_accuracy_is_all_or_nothing_per_group() {
        let truth: Vec<String> = ["a", "a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(grouping_accuracy(&[1, 1, 2, 3], &truth), 1.0);
        // b and c merged: both wrong; a split: both wrong.
        assert_eq!(grouping_accuracy(&[1, 1, 2, 2], &truth), 0.5);
        assert_eq!(grouping_accuracy(&[1, 4, 2, 3], &truth), 0.5);
    }

    #[test]
    fn csv_quotes() {
        let r = parse_csv("a,b\r\n1,\"x, \"\"y\"\"\nz\"\n");
        assert_eq!(r, vec![vec!["a", "b"], vec!["1", "x, \"y\"\nz"]]);
    }
}
