//! A progress line on stderr for long client commands (export, import): done of total with
//! rate and ETA, drawn by `indicatif`: redrawn in place on a terminal, a plain line every few
//! seconds otherwise (a log file or CI output gets no cursor movement and no escape codes).

use parking_lot::Mutex;
use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle, TermLike};

pub struct Meter {
    bar: ProgressBar,
    /// What `done` counts: "records" or "bytes".
    unit: &'static str,
}

/// How often the line is redrawn on a terminal.
const TERMINAL_HZ: u8 = 5;
/// How often a plain line is written when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

fn style(unit: &str) -> ProgressStyle {
    let template = if unit == "bytes" {
        "[{bar:30}] {percent}% {decimal_bytes} of {decimal_total_bytes}, \
         {decimal_bytes_per_sec}, {msg}, ETA {eta}"
    } else {
        "[{bar:30}] {percent}% {human_pos} of {human_len} records, {rate} records/s, ETA {eta}"
    };
    ProgressStyle::with_template(template)
        // The templates are constants; a bad one is a bug caught by the tests.
        .expect("progress template")
        .progress_chars("#-")
        .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0}", s.per_sec());
        })
}

impl Meter {
    /// `base`: what was done before this run (a resumed export); it does not count towards
    /// the rate or the ETA.
    pub fn new(unit: &'static str, total: u64, base: u64) -> Self {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr_with_hz(TERMINAL_HZ)
        } else {
            ProgressDrawTarget::term_like_with_hz(Box::new(PlainLines::stderr(PLAIN_EVERY)), 1)
        };
        Meter::with_target(unit, total, base, target)
    }

    fn with_target(unit: &'static str, total: u64, base: u64, target: ProgressDrawTarget) -> Self {
        let bar =
            ProgressBar::with_draw_target(Some(total.max(base)), target).with_style(style(unit));
        if unit != "records" {
            bar.set_message("0 records/s");
        }
        bar.set_position(base);
        bar.reset_eta();
        Meter { bar, unit }
    }

    pub fn update(&mut self, done: u64, records: u64) {
        if self.bar.length().is_some_and(|total| done > total) {
            self.bar.set_length(done);
        }
        if self.unit != "records" {
            let secs = self.bar.elapsed().as_secs_f64().max(0.001);
            self.bar
                .set_message(format!("{:.0} records/s", records as f64 / secs));
        }
        self.bar.set_position(done);
    }

    /// The final line on a terminal (left in place); nothing more on a plain stderr.
    pub fn finish(&mut self, done: u64, records: u64) {
        self.update(done, records);
        if self.bar.is_hidden() {
            return;
        }
        if std::io::stderr().is_terminal() {
            self.bar.finish();
        } else {
            self.bar.finish_and_clear();
        }
    }
}

/// indicatif's target when stderr is not a terminal: each drawn line is written as a plain
/// line, at most once per `every`, and cursor movement and clearing are dropped.
#[derive(Debug)]
struct PlainLines {
    every: Duration,
    /// When the last line was written, and the line being drawn.
    state: Mutex<(Option<Instant>, String)>,
    #[cfg(test)]
    captured: Option<std::sync::Arc<Mutex<Vec<String>>>>,
}

impl PlainLines {
    fn stderr(every: Duration) -> PlainLines {
        PlainLines {
            every,
            // The first line comes `every` after the start, not at once.
            state: Mutex::new((Some(Instant::now()), String::new())),
            #[cfg(test)]
            captured: None,
        }
    }

    fn emit(&self, line: &str) -> std::io::Result<()> {
        #[cfg(test)]
        if let Some(c) = &self.captured {
            c.lock().push(line.to_string());
            return Ok(());
        }
        writeln!(std::io::stderr(), "{line}")
    }
}

impl TermLike for PlainLines {
    fn width(&self) -> u16 {
        // Wide enough that indicatif never wraps or cuts the line.
        400
    }

    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }

    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write_str(s)?;
        self.flush()
    }

    fn write_str(&self, s: &str) -> std::io::Result<()> {
        let mut state = self.state.lock();
        state.1.push_str(s);
        Ok(())
    }

    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }

    /// The end of a draw: the line (without indicatif's padding and carriage returns) is
    /// written if it is time for one.
    fn flush(&self) -> std::io::Result<()> {
        let mut state = self.state.lock();
        let text = std::mem::take(&mut state.1);
        let line = text.trim_matches(|c: char| c == '\r' || c == '\n' || c == ' ');
        if line.is_empty() || state.0.is_some_and(|last| last.elapsed() < self.every) {
            return Ok(());
        }
        state.0 = Some(Instant::now());
        self.emit(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A plain-lines target that keeps the lines it would write, and those lines.
    fn capturing(every: Duration) -> (PlainLines, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let term = PlainLines {
            every,
            state: Mutex::new((None, String::new())),
            captured: Some(lines.clone()),
        };
        (term, lines)
    }

    /// The line a meter draws after `update(done, records)`.
    fn drawn(unit: &'static str, total: u64, base: u64, done: u64, records: u64) -> String {
        let (term, lines) = capturing(Duration::ZERO);
        let target = ProgressDrawTarget::term_like_with_hz(Box::new(term), 1);
        let mut m = Meter::with_target(unit, total, base, target);
        m.update(done, records);
        m.bar.force_draw();
        let line = lines.lock().last().cloned().unwrap_or_default();
        line
    }

    #[test]
    fn the_line_says_done_total_rate_and_eta() {
        let line = drawn("bytes", 10_000_000, 0, 5_000_000, 100);
        assert!(
            line.starts_with("[###############---------------] 50% 5.00 MB of 10.00 MB, "),
            "{line}"
        );
        assert!(line.contains("records/s") && line.contains("ETA"), "{line}");

        let line = drawn("records", 4_000, 1_000, 5_000, 5_000);
        assert!(
            line.starts_with("[##############################] 100% 5,000 of 5,000 records, "),
            "a total passed grows with what was done: {line}"
        );
        assert!(!line.contains('\u{1b}'), "{line:?}");
    }

    #[test]
    fn plain_lines_come_at_most_once_per_interval() {
        let (term, lines) = capturing(Duration::from_secs(3600));
        for line in ["one", "two"] {
            term.write_str("\r").unwrap();
            term.write_str(line).unwrap();
            term.write_str("     ").unwrap();
            term.flush().unwrap();
        }
        assert_eq!(*lines.lock(), vec!["one".to_string()]);
    }
}
