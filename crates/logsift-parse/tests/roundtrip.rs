//! Property tests: generate a record, format it as RFC 5424, RFC 3164 and a JSON line the way
//! a sender would, parse it back, and compare field by field.

use std::collections::BTreeMap;

use logsift_core::time::format_rfc3339;
use logsift_core::{FieldValue, Record, Severity};
use logsift_parse::{parse_json, parse_syslog, ParseOptions};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Generated {
    pri: u8,
    /// Seconds since the epoch and microseconds (RFC 5424 allows up to 6 fraction digits).
    secs: i64,
    micros: i64,
    /// Zone of the RFC 5424 timestamp and of the RFC 3164 sender, in minutes east of UTC.
    offset_min: i32,
    host: String,
    app: String,
    procid: Option<String>,
    msgid: Option<String>,
    sd: Vec<(String, Vec<(String, String)>)>,
    message: String,
}

impl Generated {
    fn ns(&self) -> i64 {
        self.secs * 1_000_000_000 + self.micros * 1000
    }

    /// The local wall-clock time of the timestamp, RFC 3339 without zone, e.g.
    /// `2003-10-11T22:14:15.000003`.
    fn local(&self) -> String {
        let local = self.ns() + i64::from(self.offset_min) * 60_000_000_000;
        format_rfc3339(local)[..26].to_string()
    }

    fn zone(&self) -> String {
        if self.offset_min == 0 {
            return "Z".into();
        }
        let sign = if self.offset_min < 0 { '-' } else { '+' };
        let m = self.offset_min.abs();
        format!("{sign}{:02}:{:02}", m / 60, m % 60)
    }

    fn rfc5424(&self) -> String {
        let mut sd = String::new();
        for (id, params) in &self.sd {
            sd.push('[');
            sd.push_str(id);
            for (name, value) in params {
                let escaped = value
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace(']', "\\]");
                sd.push_str(&format!(" {name}=\"{escaped}\""));
            }
            sd.push(']');
        }
        if sd.is_empty() {
            sd.push('-');
        }
        format!(
            "<{}>1 {}{} {} {} {} {} {} {}",
            self.pri,
            self.local(),
            self.zone(),
            self.host,
            self.app,
            self.procid.as_deref().unwrap_or("-"),
            self.msgid.as_deref().unwrap_or("-"),
            sd,
            self.message
        )
    }

    /// `<PRI>Mmm dd hh:mm:ss host app[pid]: message`, in the sender's local time.
    fn rfc3164(&self) -> String {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let local = self.local();
        let month: usize = local[5..7].parse().expect("month");
        let day: u32 = local[8..10].parse().expect("day");
        let tag = match &self.procid {
            Some(pid) => format!("{}[{pid}]:", self.app),
            None => format!("{}:", self.app),
        };
        format!(
            "<{}>{} {day:>2} {} {} {tag} {}",
            self.pri,
            MONTHS[month - 1],
            &local[11..19],
            self.host,
            self.message
        )
    }

    fn json(&self) -> (String, BTreeMap<String, serde_json::Value>) {
        let mut sd = serde_json::Map::new();
        for (id, params) in &self.sd {
            let element = sd
                .entry(id.clone())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            for (name, value) in params {
                if let Some(obj) = element.as_object_mut() {
                    obj.insert(name.clone(), value.clone().into());
                }
            }
        }
        let mut expected = BTreeMap::new();
        for (id, params) in &sd {
            for (name, value) in params.as_object().into_iter().flatten() {
                expected.insert(format!("sd.{id}.{name}"), value.clone());
            }
        }
        let mut obj = serde_json::json!({
            "@timestamp": format_rfc3339(self.ns()),
            "level": self.severity().name(),
            "message": self.message,
            "host": self.host,
            "service": self.app,
            "pri": self.pri,
            "ok": self.pri & 1 == 0,
        });
        expected.insert("pri".into(), self.pri.into());
        expected.insert("ok".into(), (self.pri & 1 == 0).into());
        if let Some(procid) = &self.procid {
            obj["procid"] = procid.clone().into();
            expected.insert("procid".into(), procid.clone().into());
        }
        if !sd.is_empty() {
            obj["sd"] = serde_json::Value::Object(sd);
        }
        (obj.to_string(), expected)
    }

    fn severity(&self) -> Severity {
        Severity::from_code(self.pri & 7).expect("0..=7")
    }
}

fn opts(g: &Generated, received_delay_s: i64) -> ParseOptions {
    ParseOptions {
        received_at_ns: g.ns() + received_delay_s * 1_000_000_000,
        default_offset_secs: g.offset_min * 60,
        logfmt: false,
    }
}

/// SD-IDs and PARAM-NAMEs. No dots: in the JSON form `sd.{id}.{name}` must stay unambiguous
/// (dots in SD names are covered by the corpus tests).
fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z][a-zA-Z0-9_@-]{0,10}"
}

fn generated() -> impl Strategy<Value = Generated> {
    let sd_value = "[a-z \"\\\\\\]é=\\[]{0,12}";
    (
        (
            0u8..=191,
            // 1971 .. 2261: inside what i64 nanoseconds can hold.
            31_536_000i64..9_200_000_000,
            0i64..1_000_000,
            -14 * 60..=14 * 60i32,
        ),
        (
            "[a-z0-9][a-z0-9.-]{0,20}",
            "[a-zA-Z][a-zA-Z0-9_.-]{0,11}",
            proptest::option::of("[0-9]{1,6}"),
            proptest::option::of("[A-Za-z0-9]{1,10}"),
        ),
        proptest::collection::vec(
            (name(), proptest::collection::vec((name(), sd_value), 1..4)),
            0..4,
        ),
        // No CR, LF, NUL (line terminators are trimmed) and no BOM (dropped before MSG).
        "[^\r\n\u{0}\u{feff}]{0,40}",
    )
        .prop_map(
            |((pri, secs, micros, offset_min), (host, app, procid, msgid), sd, message)| {
                Generated {
                    pri,
                    secs,
                    micros,
                    offset_min,
                    host,
                    app,
                    procid,
                    msgid,
                    sd,
                    message,
                }
            },
        )
}

fn str_fields(r: &Record<'_>) -> Vec<(String, String)> {
    r.fields()
        .map(|(k, v)| match v {
            FieldValue::Str(s) => (k.to_string(), s.to_string()),
            other => (k.to_string(), format!("{other:?}")),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn rfc5424_roundtrip(g in generated()) {
        let line = g.rfc5424();
        let r = parse_syslog(line.as_bytes(), &opts(&g, 1));
        prop_assert_eq!(&r.parse_error, &None, "{}", line);
        prop_assert_eq!(r.severity, Some(g.severity()));
        prop_assert_eq!(r.facility.map(|f| f.code()), Some(g.pri >> 3));
        prop_assert_eq!(r.timestamp, Some(g.ns()));
        prop_assert_eq!(r.host.as_deref(), Some(g.host.as_str()));
        prop_assert_eq!(r.app.as_deref(), Some(g.app.as_str()));
        prop_assert_eq!(r.procid.as_deref(), g.procid.as_deref());
        prop_assert_eq!(r.msgid.as_deref(), g.msgid.as_deref());
        prop_assert_eq!(r.message.as_ref(), g.message.as_str());
        let want: Vec<(String, String)> = g
            .sd
            .iter()
            .flat_map(|(id, params)| {
                params.iter().map(move |(n, v)| (format!("{id}.{n}"), v.clone()))
            })
            .collect();
        prop_assert_eq!(str_fields(&r), want);
    }

    #[test]
    fn rfc3164_roundtrip(g in generated(), delay in 0i64..30 * 86_400) {
        let line = g.rfc3164();
        let r = parse_syslog(line.as_bytes(), &opts(&g, delay));
        prop_assert_eq!(&r.parse_error, &None, "{}", line);
        prop_assert_eq!(r.severity, Some(g.severity()));
        prop_assert_eq!(r.facility.map(|f| f.code()), Some(g.pri >> 3));
        // Second precision; the year comes from the receive time, the zone from the options.
        prop_assert_eq!(r.timestamp, Some(g.secs * 1_000_000_000), "{}", line);
        prop_assert_eq!(r.host.as_deref(), Some(g.host.as_str()));
        prop_assert_eq!(r.app.as_deref(), Some(g.app.as_str()));
        prop_assert_eq!(r.procid.as_deref(), g.procid.as_deref());
        prop_assert_eq!(r.message.as_ref(), g.message.as_str());
        prop_assert!(r.fields.is_empty());
    }

    #[test]
    fn json_roundtrip(g in generated(), control in "[\u{0}-\u{1f}\"\\\\]{0,3}") {
        // JSON carries what syslog cannot: control characters, quotes, backslashes.
        let g = Generated { message: format!("{}{control}", g.message), ..g };
        let (line, want) = g.json();
        let r = parse_json(line.as_bytes(), &opts(&g, 0));
        prop_assert_eq!(&r.parse_error, &None, "{}", line);
        prop_assert_eq!(r.timestamp, Some(g.ns()));
        prop_assert_eq!(r.severity, Some(g.severity()));
        prop_assert_eq!(r.message.as_ref(), g.message.as_str());
        prop_assert_eq!(r.host.as_deref(), Some(g.host.as_str()));
        prop_assert_eq!(r.app.as_deref(), Some(g.app.as_str()));
        let got: BTreeMap<String, serde_json::Value> = r
            .fields()
            .map(|(k, v)| {
                let v = match v {
                    FieldValue::Str(s) => serde_json::Value::from(s.as_ref()),
                    FieldValue::Number(n) => serde_json::from_str(n).unwrap_or_default(),
                    FieldValue::Bool(b) => (*b).into(),
                    FieldValue::Null => serde_json::Value::Null,
                    FieldValue::Json(j) => serde_json::from_str(j).unwrap_or_default(),
                };
                (k.to_string(), v)
            })
            .collect();
        prop_assert_eq!(got, want, "{}", line);
    }
}
