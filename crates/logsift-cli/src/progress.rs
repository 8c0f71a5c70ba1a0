//! A progress line on stderr for long client commands (export, import): done of total with
//! rate and ETA, redrawn in place on a terminal, a plain line every few seconds otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Meter {
    /// What `done` counts: "records" or "bytes".
    unit: &'static str,
    total: u64,
    base: u64,
    started: Instant,
    last: Instant,
    tty: bool,
}

fn human(n: f64, unit: &str) -> String {
    if unit == "bytes" {
        format!("{:.1} MB", n / 1e6)
    } else {
        format!("{n:.0} {unit}")
    }
}

impl Meter {
    /// `base`: what was done before this run (a resumed export).
    pub fn new(unit: &'static str, total: u64, base: u64) -> Self {
        Meter {
            unit,
            total,
            base,
            started: Instant::now(),
            last: Instant::now(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn line(&self, done: u64, records: u64) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done.saturating_sub(self.base) as f64 / secs;
        let total = self.total.max(done);
        let pct = if total > 0 {
            done as f64 * 100.0 / total as f64
        } else {
            100.0
        };
        let eta = if rate > 0.0 {
            format!("{:.0} s", (total - done) as f64 / rate)
        } else {
            "?".into()
        };
        let width = 30usize;
        let filled = (((pct / 100.0) * width as f64) as usize).min(width);
        let mut line = format!(
            "[{}{}] {pct:.0}% {} of {}, {}/s",
            "#".repeat(filled),
            "-".repeat(width - filled),
            human(done as f64, self.unit),
            human(total as f64, self.unit),
            human(rate, self.unit),
        );
        if self.unit != "records" {
            line.push_str(&format!(", {:.0} records/s", records as f64 / secs));
        }
        line.push_str(&format!(", ETA {eta}"));
        line
    }

    pub fn update(&mut self, done: u64, records: u64) {
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        if self.tty {
            eprint!("\r{}", self.line(done, records));
        } else {
            eprintln!("{}", self.line(done, records));
        }
    }

    pub fn finish(&self, done: u64, records: u64) {
        if self.tty {
            eprintln!("\r{}", self.line(done, records));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_done_total_rate_and_eta() {
        let m = Meter::new("bytes", 10_000_000, 0);
        let line = m.line(5_000_000, 100);
        assert!(
            line.starts_with("[###############---------------] 50% 5.0 MB of 10.0 MB"),
            "{line}"
        );
        assert!(line.contains("records/s") && line.contains("ETA"), "{line}");
    }
}
