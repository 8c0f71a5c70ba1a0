//! Printing hits: one JSON object per line (`--json`), or one readable line per record,
//! coloured by severity when the output is a terminal. Styles are `anstyle`'s and stdout is an
//! `anstream::AutoStream`, which decides whether colours are wanted (`NO_COLOR`, `CLICOLOR`,
//! `CLICOLOR_FORCE`, `TERM=dumb`, a terminal or not) and strips escape codes when they are not.

use std::io::{self, Write};

use anstyle::{AnsiColor, Effects, Style};
use clap::ValueEnum;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// When stdout is a terminal, `NO_COLOR` is not set and `TERM` is not `dumb` (`CLICOLOR=0`
    /// turns colours off, `CLICOLOR_FORCE=1` on).
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// An explicit `always` wins over `NO_COLOR`, as no-color.org asks of user-level settings.
    fn anstream(self) -> anstream::ColorChoice {
        match self {
            ColorChoice::Auto => anstream::ColorChoice::Auto,
            ColorChoice::Always => anstream::ColorChoice::AlwaysAnsi,
            ColorChoice::Never => anstream::ColorChoice::Never,
        }
    }
}

/// Writes hits to stdout, flushing after each call to [`Printer::hit`] when following.
pub struct Printer {
    out: io::BufWriter<anstream::AutoStream<io::StdoutLock<'static>>>,
    json: bool,
    color: bool,
}

const DIM: Style = Style::new().effects(Effects::DIMMED);
const HOST: Style = AnsiColor::Cyan.on_default();
const APP: Style = AnsiColor::Magenta.on_default();

/// The style of a severity name: the graver, the louder.
fn severity_style(severity: &str) -> Style {
    match severity {
        "emerg" | "alert" | "crit" => AnsiColor::Red.on_default().bold(),
        "error" => AnsiColor::Red.on_default(),
        "warning" => AnsiColor::Yellow.on_default(),
        "notice" => AnsiColor::Blue.on_default().bold(),
        "info" => AnsiColor::Green.on_default(),
        "debug" => AnsiColor::White.on_default().effects(Effects::DIMMED),
        _ => Style::new(),
    }
}

/// Control characters from the data are shown escaped: a log line must not be able to move
/// the cursor or retitle the terminal of whoever reads it.
fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.into()
}

impl Printer {
    pub fn new(json: bool, color: ColorChoice) -> Printer {
        // JSON holds no escape codes (serde_json escapes control characters): passed through
        // rather than scanned for ones to strip.
        let choice = if json {
            anstream::ColorChoice::AlwaysAnsi
        } else {
            color.anstream()
        };
        let out = anstream::AutoStream::new(io::stdout().lock(), choice);
        let color = !json && out.current_choice() != anstream::ColorChoice::Never;
        Printer {
            out: io::BufWriter::new(out),
            json,
            color,
        }
    }

    pub fn hit(&mut self, hit: &Value) -> io::Result<()> {
        if self.json {
            serde_json::to_writer(&mut self.out, hit)?;
            return writeln!(self.out);
        }
        let line = readable(hit, self.color);
        writeln!(self.out, "{line}")
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// `time severity host app[procid]: message`, one line per record.
pub fn readable(hit: &Value, color: bool) -> String {
    let s = |k: &str| printable(hit[k].as_str().unwrap_or("-"));
    let app = match hit["procid"].as_str() {
        Some(pid) => format!("{}[{}]", s("app"), printable(pid)),
        None => s("app").into_owned(),
    };
    let severity = s("severity");
    let message = s("message");
    if !color {
        return format!(
            "{} {:<7} {} {}: {}",
            s("timestamp"),
            severity,
            s("host"),
            app,
            message
        );
    }
    let sev = severity_style(&severity);
    format!(
        "{DIM}{}{DIM:#} {sev}{:<7}{sev:#} {HOST}{}{HOST:#} {APP}{}{APP:#}: {}",
        s("timestamp"),
        severity,
        s("host"),
        app,
        message
    )
}

/// Runs `write`, treating a closed stdout (`| head`) as the end rather than an error.
pub fn unless_broken_pipe(write: impl FnOnce() -> io::Result<()>) -> io::Result<bool> {
    match write() {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn readable_lines_colour_only_when_asked_and_escape_control_characters() {
        let hit = json!({
            "timestamp": "2024-05-01T08:00:00.000000000Z",
            "severity": "error",
            "host": "web-01",
            "app": "api",
            "procid": "42",
            "message": "disk full\n\x1b]0;owned\x07",
        });
        let plain = readable(&hit, false);
        assert_eq!(
            plain,
            "2024-05-01T08:00:00.000000000Z error   web-01 api[42]: disk full\\n\\u{1b}]0;owned\\u{7}"
        );
        let coloured = readable(&hit, true);
        assert!(coloured.contains("\x1b[31merror  \x1b[0m"), "{coloured:?}");
        // The only escapes are ours: the message's are shown as text.
        assert_eq!(coloured.matches('\x1b').count(), 8, "{coloured:?}");
        assert!(!readable(&json!({}), false).contains('\x1b'));
    }
}
