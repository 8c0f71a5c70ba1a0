use std::fmt;

/// Syslog severity (RFC 5424 table 2). Lower is more severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Severity {
    Emergency = 0,
    Alert = 1,
    Critical = 2,
    Error = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

const SEVERITY_NAMES: [&str; 8] = [
    "emerg", "alert", "crit", "error", "warning", "notice", "info", "debug",
];

impl Severity {
    pub fn from_code(code: u8) -> Option<Self> {
        use Severity::*;
        Some(match code {
            0 => Emergency,
            1 => Alert,
            2 => Critical,
            3 => Error,
            4 => Warning,
            5 => Notice,
            6 => Info,
            7 => Debug,
            _ => return None,
        })
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    /// The canonical short name used in queries and answers (`error`, `warning`, ...).
    pub fn name(self) -> &'static str {
        SEVERITY_NAMES[self as usize]
    }

    /// Reads the level names that applications put in JSON logs and plain messages,
    /// case-insensitively: syslog names and their aliases, plus `fatal`, `trace`, `warn`, ...
    pub fn from_name(name: &str) -> Option<Self> {
        use Severity::*;
        let lower = name.trim();
        let eq = |s: &str| lower.eq_ignore_ascii_case(s);
        Some(if eq("emerg") || eq("emergency") || eq("panic") {
            Emergency
        } else if eq("alert") {
            Alert
        } else if eq("crit") || eq("critical") || eq("fatal") {
            Critical
        } else if eq("error") || eq("err") || eq("eror") {
            Error
        } else if eq("warning") || eq("warn") {
            Warning
        } else if eq("notice") {
            Notice
        } else if eq("info") || eq("information") || eq("informational") {
            Info
        } else if eq("debug") || eq("trace") || eq("dbg") {
            Debug
        } else if let Ok(n) = lower.parse::<u8>() {
            return Severity::from_code(n);
        } else {
            return None;
        })
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Syslog facility (RFC 5424 table 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Facility(u8);

const FACILITY_NAMES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

impl Facility {
    pub fn from_code(code: u8) -> Option<Self> {
        (code < 24).then_some(Facility(code))
    }

    pub fn code(self) -> u8 {
        self.0
    }

    pub fn name(self) -> &'static str {
        FACILITY_NAMES[self.0 as usize]
    }
}

impl fmt::Display for Facility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for code in 0..8 {
            let s = Severity::from_code(code).unwrap();
            assert_eq!(Severity::from_name(s.name()), Some(s));
        }
        assert_eq!(Severity::from_name("WARN"), Some(Severity::Warning));
        assert_eq!(Severity::from_name("fatal"), Some(Severity::Critical));
        assert_eq!(Severity::from_name("verbose"), None);
        assert_eq!(Facility::from_code(16).unwrap().name(), "local0");
        assert_eq!(Facility::from_code(24), None);
    }
}
