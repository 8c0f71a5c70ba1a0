//! The deterministic corpus generator: realistic mixed syslog and JSON traffic from a seed.
//!
//! Everything comes from one SplitMix64 stream seeded by `--seed`; the only other inputs are the
//! target size and the base date (the corpus covers the 24 hours before 00:00 UTC of that date).
//! The same seed, size and base date give byte-identical files.
//!
//! Families (share of lines, format, channel), modelled on `../shared/corpus` (Loghub Linux,
//! OpenStack, Zookeeper/Hadoop, Caddy/ECS/k8s JSON samples):
//!
//! | family | lines | format | channel |
//! |---|---:|---|---|
//! | nginx access log | 24 % | RFC 5424 | syslog TCP |
//! | nginx error log | 1 % | RFC 5424 | syslog TCP |
//! | PostgreSQL | 9 % | RFC 5424 (some with structured data) | syslog TCP |
//! | ZooKeeper / Java services | 6 % | RFC 5424 | syslog TCP |
//! | sshd / pam_unix | 11 % | RFC 3164 | syslog TCP |
//! | kernel | 4 % | RFC 3164 | syslog TCP |
//! | cron / systemd / su / ntpd | 8 % | RFC 3164 | syslog TCP |
//! | Kubernetes (kubelet, container json-file) | 15 % | JSON | JSON lines TCP |
//! | application JSON (nested http object) | 22 % | JSON | HTTP NDJSON |
//!
//! So by lines: 40 % RFC 5424, 23 % RFC 3164, 37 % JSON; 63 % of lines travel over syslog TCP.
//! Each family picks hosts from its own pool with a Zipf(1.2) law (a few hosts send most lines),
//! severities are mostly info with rare warnings and errors, and request ids, trace ids, IPs,
//! ports, pids and durations (log-normal) vary per line. Request ids are a bijective mix of a
//! global counter, so every one is unique.
//!
//! Planted answers: one needle request id (exactly once, inside the narrow window), the rare
//! term `segfault` (exactly 10 kernel lines, one inside the window), and an incident: for ten
//! minutes around the window, 4 % of lines are a new kind of PostgreSQL error ("No space left
//! on device") from two database hosts, which `compare` must name first. The expected totals of every
//! query in the suite are counted while generating, by tokenizing each message the way the
//! server's `default` tokenizer does (split on non-alphanumerics, lowercase).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

pub const NS: i64 = 1_000_000_000;
pub const SPAN_NS: i64 = 24 * 3600 * NS;
/// The narrow query window: one minute starting half-way through the span.
pub const WINDOW_NS: i64 = 60 * NS;
pub const RARE_TERM: &str = "segfault";
pub const RARE_COUNT: usize = 10;
pub const PHRASE: [&str; 3] = ["upstream", "timed", "out"];
pub const COMMON_TERM: &str = "get";
/// Words of the incident's message, and its length: it starts five minutes before the window.
pub const INCIDENT_TEXT: &str = "No space left on device";
pub const INCIDENT_NS: i64 = 600 * NS;
/// Share of lines that are the incident's while it lasts.
const INCIDENT_SHARE: f64 = 0.04;

// ---------------------------------------------------------------------------------------------
// Randomness

/// The SplitMix64 finaliser: a bijection on u64.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    /// Log-normal with the given median and shape.
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        let u1 = self.f64().max(1e-12);
        let u2 = self.f64();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        median * (sigma * z).exp()
    }
}

/// Zipf law over `n` ranks: rank 0 is the most frequent.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.f64();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

struct Pool {
    names: Vec<String>,
    zipf: Zipf,
}

impl Pool {
    fn new(prefix: &str, n: usize) -> Self {
        Pool {
            names: (1..=n).map(|i| format!("{prefix}-{i:02}")).collect(),
            zipf: Zipf::new(n, 1.2),
        }
    }
    fn pick(&self, rng: &mut Rng) -> &str {
        &self.names[self.zipf.sample(rng)]
    }
}

// ---------------------------------------------------------------------------------------------
// Time formatting

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

struct Civil {
    y: i64,
    mo: u32,
    d: u32,
    h: u32,
    mi: u32,
    s: u32,
    nanos: u32,
}

fn civil(ns: i64) -> Civil {
    let secs = ns.div_euclid(NS);
    let nanos = ns.rem_euclid(NS) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, mo, d) = civil_from_days(days);
    Civil {
        y,
        mo,
        d,
        h: sod / 3600,
        mi: sod / 60 % 60,
        s: sod % 60,
        nanos,
    }
}

/// RFC 3339 in UTC with `digits` fractional digits (0, 3 or 6).
pub fn rfc3339(out: &mut Vec<u8>, ns: i64, digits: u32) {
    let c = civil(ns);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        c.y, c.mo, c.d, c.h, c.mi, c.s
    );
    match digits {
        3 => {
            let _ = write!(out, ".{:03}", c.nanos / 1_000_000);
        }
        6 => {
            let _ = write!(out, ".{:06}", c.nanos / 1_000);
        }
        _ => {}
    }
    out.push(b'Z');
}

pub fn rfc3339_string(ns: i64) -> String {
    let mut v = Vec::new();
    rfc3339(&mut v, ns, 0);
    String::from_utf8(v).unwrap_or_default()
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// RFC 3164 `Mmm dd hh:mm:ss` (day padded with a space).
fn bsd_time(out: &mut Vec<u8>, ns: i64) {
    let c = civil(ns);
    let _ = write!(
        out,
        "{} {:>2} {:02}:{:02}:{:02}",
        MONTHS[(c.mo - 1) as usize],
        c.d,
        c.h,
        c.mi,
        c.s
    );
}

// ---------------------------------------------------------------------------------------------
// Corpus description

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    SyslogTcp = 0,
    JsonTcp = 1,
    Http = 2,
}

pub const CHANNELS: [Channel; 3] = [Channel::SyslogTcp, Channel::JsonTcp, Channel::Http];

impl Channel {
    pub fn name(self) -> &'static str {
        match self {
            Channel::SyslogTcp => "syslog-tcp",
            Channel::JsonTcp => "json-tcp",
            Channel::Http => "http-ndjson",
        }
    }
    fn file_name(self) -> &'static str {
        match self {
            Channel::SyslogTcp => "syslog-tcp.log",
            Channel::JsonTcp => "json-tcp.ndjson",
            Channel::Http => "http.ndjson",
        }
    }
}

/// Exact totals that the query suite must find, over the whole corpus and inside the window.
#[derive(Debug, Default, Clone, Copy)]
pub struct Count {
    pub total: u64,
    pub window: u64,
}

#[derive(Debug, Default, Clone)]
pub struct Expected {
    pub records: u64,
    pub bytes: u64,
    pub channel_records: [u64; 3],
    pub channel_bytes: [u64; 3],
    pub rfc5424: u64,
    pub rfc3164: u64,
    pub json: u64,
    pub needle: Count,
    pub rare: Count,
    pub phrase: Count,
    pub common: Count,
    pub host: Count,
    pub error: Count,
    /// Incident lines: all of them, and those of its first minute (what `compare` over that
    /// minute finds).
    pub incident: Count,
    pub all_window: u64,
}

pub struct Corpus {
    pub files: [PathBuf; 3],
    pub expected: Expected,
    pub needle: String,
    pub top_host: String,
    pub window_start_ns: i64,
    pub window_end_ns: i64,
    /// The incident's time range.
    pub incident_start_ns: i64,
    pub incident_end_ns: i64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sev {
    Crit = 2,
    Err = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
}

impl Sev {
    fn json_name(self) -> &'static str {
        match self {
            Sev::Crit => "critical",
            Sev::Err => "error",
            Sev::Warning => "warn",
            Sev::Notice => "notice",
            Sev::Info => "info",
        }
    }
}

/// What one generated line is, for the expected counts.
struct Line {
    sev: Sev,
    host_is_top: bool,
    /// The timestamp the server will see (3164 lines carry whole seconds only).
    ts: i64,
}

// ---------------------------------------------------------------------------------------------
// Template data

const PATHS: [&str; 10] = [
    "/api/v1/orders",
    "/api/v1/orders/{id}",
    "/api/v1/users/{id}/cart",
    "/api/v1/products/{id}",
    "/api/v1/search",
    "/static/js/app.{hex}.js",
    "/static/css/main.{hex}.css",
    "/health",
    "/login",
    "/metrics",
];
const UAS: [&str; 6] = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "curl/7.88.1",
    "kube-probe/1.28",
    "Go-http-client/1.1",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
];
const SERVICES: [&str; 8] = [
    "checkout",
    "payments",
    "catalog",
    "auth",
    "search",
    "cart",
    "shipping",
    "notifications",
];
const USERS: [&str; 8] = [
    "root", "deploy", "ubuntu", "admin", "backup", "git", "oracle", "test",
];
const TABLES: [&str; 6] = [
    "orders",
    "users",
    "payments",
    "products",
    "sessions",
    "inventory",
];
const PODS: [&str; 6] = [
    "checkout-6f7d9c5b8",
    "payments-84c5d7f6b",
    "catalog-5b9d8c7f4",
    "ingress-nginx-controller-7c6b",
    "redis-0",
    "coredns-5d78c9869d",
];
const NAMESPACES: [&str; 4] = ["prod", "prod", "staging", "kube-system"];

// ---------------------------------------------------------------------------------------------
// The generator

struct Gen {
    rng: Rng,
    seed: u64,
    id_counter: u64,
    web: Pool,
    db: Pool,
    zk: Pool,
    servers: Pool,
    nodes: Pool,
    apps: Pool,
    ips: Vec<[u8; 4]>,
    ip_zipf: Zipf,
    /// The message being built (tokenized for the expected counts).
    msg: Vec<u8>,
    /// The line being built.
    line: Vec<u8>,
}

impl Gen {
    /// A unique 16-hex-digit id.
    fn id(&mut self, out: &mut Vec<u8>) {
        self.id_counter += 1;
        let _ = write!(out, "{:016x}", mix(self.id_counter ^ self.seed));
    }

    fn ip(&mut self, out: &mut Vec<u8>) {
        let ip = if self.rng.chance(0.1) {
            let r = self.rng.next_u64().to_le_bytes();
            [r[0] % 223 + 1, r[1], r[2], r[3]]
        } else {
            self.ips[self.ip_zipf.sample(&mut self.rng)]
        };
        let _ = write!(out, "{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]);
    }

    fn internal_ip(&mut self, out: &mut Vec<u8>) {
        let _ = write!(
            out,
            "10.{}.{}.{}",
            self.rng.below(4),
            self.rng.below(32),
            self.rng.range(2, 250)
        );
    }

    fn path(&mut self, out: &mut Vec<u8>) {
        let p = *self.rng.pick(&PATHS);
        if let Some((a, b)) = p.split_once("{id}") {
            let id = self.rng.range(1, 9_999_999);
            let _ = write!(out, "{a}{id}{b}");
        } else if let Some((a, b)) = p.split_once("{hex}") {
            let h = self.rng.below(64) as u32;
            let _ = write!(out, "{a}{:08x}{b}", mix(u64::from(h)) as u32);
        } else {
            out.extend_from_slice(p.as_bytes());
        }
    }

    fn status(&mut self) -> u32 {
        let r = self.rng.f64();
        match r {
            r if r < 0.86 => 200,
            r if r < 0.89 => 201,
            r if r < 0.91 => 204,
            r if r < 0.935 => 304,
            r if r < 0.945 => 301,
            r if r < 0.96 => 400,
            r if r < 0.97 => 401,
            r if r < 0.975 => 403,
            r if r < 0.99 => 404,
            r if r < 0.994 => 499,
            r if r < 0.997 => 500,
            r if r < 0.999 => 502,
            _ => 503,
        }
    }

    fn method(&mut self) -> &'static str {
        let r = self.rng.f64();
        if r < 0.78 {
            "GET"
        } else if r < 0.93 {
            "POST"
        } else if r < 0.97 {
            "PUT"
        } else if r < 0.99 {
            "DELETE"
        } else {
            "HEAD"
        }
    }

    // -- RFC 5424 families: message into self.msg; returns (host, app, procid, msgid, sev, sd)

    fn nginx_access(&mut self, needle: Option<&str>) -> Sev {
        let mut m = std::mem::take(&mut self.msg);
        self.ip(&mut m);
        m.extend_from_slice(b" - - \"");
        let method = self.method();
        m.extend_from_slice(method.as_bytes());
        m.push(b' ');
        self.path(&mut m);
        let status = self.status();
        let bytes = if status == 204 || status == 304 {
            0
        } else {
            self.rng.range(120, 48_000)
        };
        let _ = write!(m, " HTTP/1.1\" {status} {bytes} \"-\" \"");
        m.extend_from_slice(self.rng.pick(&UAS).as_bytes());
        let rt = self.rng.lognormal(0.018, 1.1);
        let _ = write!(m, "\" rt={rt:.3} uct=0.000 rid=");
        match needle {
            Some(n) => m.extend_from_slice(n.as_bytes()),
            None => self.id(&mut m),
        }
        self.msg = m;
        Sev::Info
    }

    fn nginx_error(&mut self) -> Sev {
        let mut m = std::mem::take(&mut self.msg);
        let (sev, text) = match self.rng.below(10) {
            0..=4 => (
                Sev::Err,
                "upstream timed out (110: Connection timed out) while reading response header from upstream",
            ),
            5..=7 => (
                Sev::Err,
                "connect() failed (111: Connection refused) while connecting to upstream",
            ),
            8 => (
                Sev::Warning,
                "an upstream response is buffered to a temporary file /var/cache/nginx/proxy_temp/4/01/0000000014",
            ),
            _ => (
                Sev::Crit,
                "SSL_do_handshake() failed (SSL: error:0A00006C:SSL routines::bad key share) while SSL handshaking",
            ),
        };
        let _ = write!(
            m,
            "{}#{}: *{} {text}, client: ",
            self.rng.range(1000, 4000),
            self.rng.below(4),
            self.rng.range(1, 90_000_000)
        );
        self.ip(&mut m);
        let method = self.method();
        let _ = write!(m, ", server: api.example.com, request: \"{method} ");
        self.path(&mut m);
        m.extend_from_slice(b" HTTP/1.1\", upstream: \"http://");
        self.internal_ip(&mut m);
        m.extend_from_slice(b":8080\", host: \"api.example.com\"");
        self.msg = m;
        sev
    }

    /// The incident's line: a kind of error the rest of the corpus never has.
    fn incident(&mut self) -> Sev {
        let relation = self.rng.range(16384, 99999);
        let segment = self.rng.below(8);
        let _ = write!(
            self.msg,
            "could not extend file \"base/16384/{relation}.{segment}\": {INCIDENT_TEXT}"
        );
        Sev::Err
    }

    /// Returns severity and whether structured data was written into `sd`.
    fn postgres(&mut self, sd: &mut Vec<u8>) -> Sev {
        let mut m = std::mem::take(&mut self.msg);
        let table = *self.rng.pick(&TABLES);
        let r = self.rng.below(1000);
        let sev = match r {
            0..=619 => {
                let d = self.rng.lognormal(1.5, 1.4);
                let id = self.rng.range(1, 9_999_999);
                match self.rng.below(4) {
                    0 => {
                        let _ = write!(
                            m,
                            "duration: {d:.3} ms  statement: SELECT * FROM {table} WHERE id = {id}"
                        );
                    }
                    1 => {
                        let _ = write!(m, "duration: {d:.3} ms  execute <unnamed>: UPDATE {table} SET updated_at = now() WHERE id = $1");
                    }
                    2 => {
                        let _ = write!(m, "duration: {d:.3} ms  statement: INSERT INTO {table} (id, payload) VALUES ({id}, $1)");
                    }
                    _ => {
                        let _ = write!(m, "duration: {d:.3} ms  bind <unnamed>: SELECT count(*) FROM {table} WHERE created_at > $1");
                    }
                }
                Sev::Info
            }
            620..=789 => {
                m.extend_from_slice(b"connection received: host=");
                self.internal_ip(&mut m);
                let _ = write!(m, " port={}", self.rng.range(32768, 60999));
                Sev::Info
            }
            790..=939 => {
                let svc = *self.rng.pick(&SERVICES);
                let _ = write!(
                    m,
                    "connection authorized: user=app database={table} application_name={svc}"
                );
                Sev::Info
            }
            940..=969 => {
                let _ = write!(
                    m,
                    "checkpoint complete: wrote {} buffers ({:.1}%); 0 WAL file(s) added, 0 removed, {} recycled; write={:.3} s, sync={:.3} s, total={:.3} s",
                    self.rng.range(10, 20000),
                    self.rng.f64() * 12.0,
                    self.rng.below(6),
                    self.rng.f64() * 30.0,
                    self.rng.f64(),
                    self.rng.f64() * 31.0
                );
                Sev::Info
            }
            970..=984 => {
                let _ = write!(
                    m,
                    "automatic vacuum of table \"app.public.{table}\": index scans: 1, pages: 0 removed, {} remain",
                    self.rng.range(100, 90000)
                );
                Sev::Info
            }
            985..=992 => {
                let _ = write!(
                    m,
                    "ERROR:  duplicate key value violates unique constraint \"{table}_pkey\""
                );
                Sev::Err
            }
            993..=996 => {
                let _ = write!(
                    m,
                    "ERROR:  deadlock detected; Process {} waits for ShareLock on transaction {}",
                    self.rng.range(1000, 65000),
                    self.rng.range(1_000_000, 9_000_000)
                );
                Sev::Err
            }
            _ => {
                let u = *self.rng.pick(&USERS);
                let _ = write!(m, "FATAL:  password authentication failed for user \"{u}\"");
                Sev::Err
            }
        };
        if self.rng.chance(0.3) {
            let _ = write!(
                sd,
                "[db@32473 name=\"{table}\" user=\"app\" pid=\"{}\"]",
                self.rng.range(1000, 65000)
            );
        }
        self.msg = m;
        sev
    }

    fn java(&mut self) -> Sev {
        let mut m = std::mem::take(&mut self.msg);
        let r = self.rng.below(100);
        let sev = match r {
            0..=29 => {
                m.extend_from_slice(b"Accepted socket connection from /");
                self.internal_ip(&mut m);
                let _ = write!(m, ":{}", self.rng.range(32768, 60999));
                Sev::Info
            }
            30..=54 => {
                m.extend_from_slice(b"Closed socket connection for client /");
                self.internal_ip(&mut m);
                let _ = write!(
                    m,
                    ":{} which had sessionid 0x{:x}",
                    self.rng.range(32768, 60999),
                    self.rng.next_u64() >> 8
                );
                Sev::Info
            }
            55..=69 => {
                let _ = write!(
                    m,
                    "Established session 0x{:x} with negotiated timeout {} for client /",
                    self.rng.next_u64() >> 8,
                    self.rng.pick(&[10000, 20000, 30000, 40000])
                );
                self.internal_ip(&mut m);
                Sev::Info
            }
            70..=84 => {
                let _ = write!(
                    m,
                    "Processing the event EventType: TASK_ATTEMPT_FINISHED for task_{}_{:04}_m_{:06}",
                    1_445_062_781_478u64 + self.rng.below(1000),
                    self.rng.below(60),
                    self.rng.below(1000)
                );
                Sev::Info
            }
            85..=93 => {
                let _ = write!(
                    m,
                    "Notification time out: {}",
                    self.rng.pick(&[400, 800, 1600, 3200, 6400, 12800])
                );
                Sev::Info
            }
            94..=97 => {
                m.extend_from_slice(b"Exception causing close of session 0x");
                let _ = write!(m, "{:x}", self.rng.next_u64() >> 8);
                m.extend_from_slice(b" due to java.io.IOException: Connection reset by peer");
                Sev::Warning
            }
            _ => {
                m.extend_from_slice(b"Unexpected exception causing shutdown while sock still open: java.net.SocketTimeoutException: Read timed out");
                Sev::Err
            }
        };
        // log4j layout: level and location come first in MSG.
        let lvl = match sev {
            Sev::Err => "ERROR",
            Sev::Warning => "WARN ",
            _ => "INFO ",
        };
        let mut full = Vec::with_capacity(m.len() + 80);
        let _ = write!(
            full,
            "{lvl} [NIOServerCxn.Factory:0.0.0.0/0.0.0.0:2181:NIOServerCnxn@{}] - ",
            self.rng.range(800, 1100)
        );
        full.extend_from_slice(&m);
        m.clear();
        self.msg = full;
        sev
    }

    // -- RFC 3164 families: message into self.msg; returns (tag, pid, facility, sev)

    fn sshd(&mut self) -> (&'static str, u32, Sev) {
        let mut m = std::mem::take(&mut self.msg);
        let u = *self.rng.pick(&USERS);
        let port = self.rng.range(1024, 65535);
        let r = self.rng.below(100);
        let (tag, sev) = match r {
            0..=24 => {
                let _ = write!(m, "Accepted publickey for {u} from ");
                self.ip(&mut m);
                let _ = write!(m, " port {port} ssh2: ED25519 SHA256:");
                let a = self.rng.next_u64();
                let b = self.rng.next_u64();
                let _ = write!(m, "{a:016x}{b:016x}");
                ("sshd", Sev::Info)
            }
            25..=44 => {
                let _ = write!(m, "Failed password for invalid user {u} from ");
                self.ip(&mut m);
                let _ = write!(m, " port {port} ssh2");
                ("sshd", Sev::Warning)
            }
            45..=64 => {
                let _ = write!(
                    m,
                    "pam_unix(sshd:session): session opened for user {u}(uid=0) by (uid=0)"
                );
                ("sshd", Sev::Info)
            }
            65..=79 => {
                let _ = write!(m, "Disconnected from user {u} ");
                self.ip(&mut m);
                let _ = write!(m, " port {port}");
                ("sshd", Sev::Info)
            }
            80..=91 => {
                m.extend_from_slice(
                    b"authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=",
                );
                self.ip(&mut m);
                ("sshd(pam_unix)", Sev::Notice)
            }
            _ => {
                m.extend_from_slice(b"Received disconnect from ");
                self.ip(&mut m);
                let _ = write!(m, " port {port}:11: Bye Bye [preauth]");
                ("sshd", Sev::Info)
            }
        };
        self.msg = m;
        (tag, self.rng.range(1000, 60000) as u32, sev)
    }

    fn kernel(&mut self, rare: bool) -> Sev {
        let mut m = std::mem::take(&mut self.msg);
        let up = self.rng.range(1000, 9_000_000);
        let _ = write!(m, "[{:>6}.{:06}] ", up, self.rng.below(1_000_000));
        if rare {
            let _ = write!(
                m,
                "{}[{}]: segfault at 0 ip 00007f{:08x} sp 00007ffd{:08x} error 4 in libc.so.6[7f3a2b000000+1bc000]",
                self.rng.pick(&["nginx", "java", "postgres", "python3"]),
                self.rng.range(1000, 60000),
                self.rng.next_u64() as u32,
                self.rng.next_u64() as u32
            );
            self.msg = m;
            return Sev::Warning;
        }
        let r = self.rng.below(100);
        let sev = match r {
            0..=29 => {
                m.extend_from_slice(b"[UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:12:34:56 SRC=");
                self.ip(&mut m);
                m.extend_from_slice(b" DST=");
                self.internal_ip(&mut m);
                let _ = write!(
                    m,
                    " LEN=60 TOS=0x00 PROTO=TCP SPT={} DPT={} WINDOW=64240 SYN",
                    self.rng.range(1024, 65535),
                    self.rng.pick(&[22, 23, 80, 443, 3389, 5432, 6379])
                );
                Sev::Info
            }
            30..=49 => {
                let _ = write!(
                    m,
                    "EXT4-fs (sda{}): re-mounted. Opts: errors=remount-ro",
                    self.rng.range(1, 3)
                );
                Sev::Info
            }
            50..=69 => {
                m.extend_from_slice(b"eth0: Link is Up - 10Gbps/Full - flow control rx/tx");
                Sev::Info
            }
            70..=84 => {
                let _ = write!(
                    m,
                    "audit: type=1400 audit({}.{:03}:{}): apparmor=\"DENIED\" operation=\"open\" profile=\"/usr/sbin/ntpd\" name=\"/proc/{}/status\"",
                    1_700_000_000 + self.rng.below(10_000_000),
                    self.rng.below(1000),
                    self.rng.range(100, 9999),
                    self.rng.range(1, 60000)
                );
                Sev::Notice
            }
            85..=95 => {
                m.extend_from_slice(b"TCP: request_sock_TCP: Possible SYN flooding on port 443. Sending cookies.  Check SNMP counters.");
                Sev::Warning
            }
            _ => {
                let _ = write!(
                    m,
                    "Out of memory: Killed process {} (java) total-vm:{}kB, anon-rss:{}kB, file-rss:0kB",
                    self.rng.range(1000, 60000),
                    self.rng.range(4_000_000, 16_000_000),
                    self.rng.range(2_000_000, 8_000_000)
                );
                Sev::Err
            }
        };
        self.msg = m;
        sev
    }

    fn system(&mut self) -> (&'static str, u32, u32, Sev) {
        let mut m = std::mem::take(&mut self.msg);
        let u = *self.rng.pick(&USERS);
        let pid = self.rng.range(300, 60000) as u32;
        let r = self.rng.below(100);
        // (tag, pid, facility)
        let (tag, pid, fac, sev) = match r {
            0..=34 => {
                let cmd = *self.rng.pick(&[
                    "(root) CMD (   cd / && run-parts --report /etc/cron.hourly)",
                    "(root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)",
                    "(www-data) CMD (php /var/www/app/artisan schedule:run >> /dev/null 2>&1)",
                ]);
                m.extend_from_slice(cmd.as_bytes());
                ("CRON", pid, 9, Sev::Info)
            }
            35..=59 => {
                let _ = write!(
                    m,
                    "Started Session {} of User {u}.",
                    self.rng.range(1, 90000)
                );
                ("systemd", 1, 3, Sev::Info)
            }
            60..=74 => {
                let _ = write!(m, "New session {} of user {u}.", self.rng.range(1, 90000));
                ("systemd-logind", 812, 4, Sev::Info)
            }
            75..=84 => {
                let _ = write!(m, "session opened for user {u} by (uid=0)");
                ("su(pam_unix)", pid, 10, Sev::Info)
            }
            85..=94 => {
                m.extend_from_slice(b"synchronized to ");
                self.internal_ip(&mut m);
                let _ = write!(m, ", stratum {}", self.rng.range(1, 3));
                ("ntpd", 2011, 3, Sev::Info)
            }
            _ => {
                let _ = write!(
                    m,
                    "{}.service: Main process exited, code=exited, status=1/FAILURE",
                    self.rng
                        .pick(&["backup", "certbot", "node-exporter", "logrotate"])
                );
                ("systemd", 1, 3, Sev::Err)
            }
        };
        self.msg = m;
        (tag, pid, fac, sev)
    }

    // -- JSON families: message into self.msg, the rest of the object into `rest`.

    fn k8s(&mut self, rest: &mut Vec<u8>) -> Sev {
        let mut m = std::mem::take(&mut self.msg);
        let pod = *self.rng.pick(&PODS);
        let ns = *self.rng.pick(&NAMESPACES);
        let suffix = self.rng.next_u64() as u32 & 0xfffff;
        let r = self.rng.below(100);
        let sev = match r {
            0..=44 => {
                m.extend_from_slice(b"SyncLoop (probe)");
                let _ = write!(rest, ",\"probe\":\"readiness\",\"status\":\"ready\"");
                Sev::Info
            }
            45..=69 => {
                m.extend_from_slice(b"SyncLoop (PLEG): event for pod");
                let _ = write!(rest, ",\"event\":{{\"Type\":\"ContainerStarted\"}}");
                Sev::Info
            }
            70..=84 => {
                let _ = write!(
                    m,
                    "Successfully pulled image registry.example.com/{pod}:v1.{}.{} in {:.3}s",
                    self.rng.below(40),
                    self.rng.below(10),
                    self.rng.lognormal(2.0, 0.8)
                );
                Sev::Info
            }
            85..=95 => {
                m.extend_from_slice(
                    b"Liveness probe failed: HTTP probe failed with statuscode: 503",
                );
                Sev::Warning
            }
            _ => {
                let _ = write!(
                    m,
                    "Error syncing pod, skipping: failed to StartContainer with CrashLoopBackOff: back-off {}s restarting failed container",
                    self.rng.pick(&[10, 20, 40, 80, 160, 300])
                );
                Sev::Err
            }
        };
        let _ = write!(
            rest,
            ",\"pod\":\"{ns}/{pod}-{suffix:05x}\",\"container\":\"app\""
        );
        self.msg = m;
        sev
    }

    fn app(&mut self, rest: &mut Vec<u8>) -> Sev {
        let mut m = std::mem::take(&mut self.msg);
        let method = self.method();
        let r = self.rng.below(1000);
        let status;
        let sev = match r {
            0..=969 => {
                status = self.status().min(404);
                m.extend_from_slice(
                    self.rng
                        .pick(&[
                            "request completed",
                            "order placed",
                            "cache hit",
                            "cache miss, loading from database",
                            "user authenticated",
                            "payment authorized",
                            "item added to cart",
                            "search executed",
                        ])
                        .as_bytes(),
                );
                if status >= 400 {
                    Sev::Warning
                } else {
                    Sev::Info
                }
            }
            970..=989 => {
                status = 502;
                let _ = write!(
                    m,
                    "upstream request failed after {} retries: connection reset by peer",
                    self.rng.range(1, 5)
                );
                Sev::Err
            }
            _ => {
                status = 500;
                m.extend_from_slice(
                    b"payment provider returned error: card_declined (insufficient_funds)",
                );
                Sev::Err
            }
        };
        rest.extend_from_slice(b",\"request_id\":\"");
        self.id(rest);
        rest.extend_from_slice(b"\",\"trace_id\":\"");
        self.id(rest);
        self.id(rest);
        let _ = write!(rest, "\",\"http\":{{\"method\":\"{method}\",\"path\":\"");
        self.path(rest);
        let _ = write!(
            rest,
            "\",\"status\":{status}}},\"duration_ms\":{:.2},\"client_ip\":\"",
            self.rng.lognormal(25.0, 1.0)
        );
        self.ip(rest);
        let _ = write!(rest, "\",\"user_id\":{}", self.rng.range(1, 2_000_000));
        self.msg = m;
        sev
    }
}

/// Lowercased alphanumeric tokens, as tantivy's `default` tokenizer makes them (ASCII corpus).
fn tokens(msg: &[u8]) -> impl Iterator<Item = &[u8]> {
    msg.split(|b| !b.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
}

fn eq_lower(token: &[u8], lower: &str) -> bool {
    token.eq_ignore_ascii_case(lower.as_bytes())
}

struct MsgHits {
    needle: bool,
    rare: bool,
    phrase: bool,
    common: bool,
}

fn scan(msg: &[u8], needle: &str) -> MsgHits {
    let mut h = MsgHits {
        needle: false,
        rare: false,
        phrase: false,
        common: false,
    };
    let mut prev2: &[u8] = b"";
    let mut prev1: &[u8] = b"";
    for t in tokens(msg) {
        if t.len() > 40 {
            // tantivy's RemoveLongFilter drops tokens of 40+ bytes (and they break phrases).
            prev2 = b"";
            prev1 = b"";
            continue;
        }
        h.needle |= eq_lower(t, needle);
        h.rare |= eq_lower(t, RARE_TERM);
        h.common |= eq_lower(t, COMMON_TERM);
        h.phrase |=
            eq_lower(prev2, PHRASE[0]) && eq_lower(prev1, PHRASE[1]) && eq_lower(t, PHRASE[2]);
        prev2 = prev1;
        prev1 = t;
    }
    h
}

fn push_json_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b if b < 0x20 => {
                let _ = write!(out, "\\u{b:04x}");
            }
            b => out.push(b),
        }
    }
    out.push(b'"');
}

/// Writes the corpus into `dir`, one file per channel, and returns what it contains.
/// `base_day` is the day number (since 1970-01-01) whose midnight ends the 24-hour span.
pub fn generate(dir: &Path, size: u64, seed: u64, base_day: i64) -> io::Result<Corpus> {
    let end_ns = base_day * 86_400 * NS;
    let start_ns = end_ns - SPAN_NS;
    let window_start_ns = start_ns + SPAN_NS / 2;
    let window_end_ns = window_start_ns + WINDOW_NS;
    let needle_at = window_start_ns + 30 * NS;
    let incident_start_ns = window_start_ns - INCIDENT_NS / 2;
    let incident_end_ns = incident_start_ns + INCIDENT_NS;
    // The rare term: 9 lines spread over the span, one inside the window.
    let mut rare_at: Vec<i64> = (0..RARE_COUNT as i64 - 1)
        .map(|k| start_ns + SPAN_NS * (4 * k + 1) / (4 * (RARE_COUNT as i64 - 1)) + 7 * NS)
        .collect();
    rare_at.push(window_start_ns + 40 * NS);
    rare_at.sort_unstable();

    let mut rng = Rng::new(seed);
    let needle = format!("{:016x}", mix(!seed ^ 0x5eed_0000_0000_0001) | (1u64 << 63));
    let ips: Vec<[u8; 4]> = (0..5000)
        .map(|_| {
            let r = rng.next_u64().to_le_bytes();
            [r[0] % 223 + 1, r[1], r[2], r[3]]
        })
        .collect();
    let mut g = Gen {
        rng,
        seed,
        id_counter: 0,
        web: Pool::new("web", 12),
        db: Pool::new("db", 4),
        zk: Pool::new("zk", 5),
        servers: Pool::new("srv", 40),
        nodes: Pool::new("node", 20),
        apps: Pool::new("app", 16),
        ips,
        ip_zipf: Zipf::new(5000, 1.05),
        msg: Vec::with_capacity(512),
        line: Vec::with_capacity(1024),
    };
    let top_host = g.web.names[0].clone();

    let files: [PathBuf; 3] = CHANNELS.map(|c| dir.join(c.file_name()));
    let mut out: Vec<BufWriter<File>> = files
        .iter()
        .map(|p| File::create(p).map(|f| BufWriter::with_capacity(1 << 20, f)))
        .collect::<io::Result<_>>()?;

    let mut exp = Expected::default();
    let mut needle_planted = false;
    let mut rare_next = 0usize;
    let mut sd = Vec::with_capacity(128);
    let mut rest = Vec::with_capacity(512);
    // Stop at the target size, but always plant every needle (tiny sizes overshoot a bit).
    while exp.bytes < size || !needle_planted || rare_next < rare_at.len() {
        let progress =
            (u128::from(exp.bytes.min(size)) * SPAN_NS as u128 / u128::from(size.max(1))) as i64;
        let mut ts = start_ns + progress + g.rng.below(1_000_000) as i64;
        if exp.bytes >= size {
            // Overshoot for planting: jump to the planting time.
            ts = ts.max(if needle_planted {
                rare_at[rare_next.min(rare_at.len() - 1)]
            } else {
                needle_at
            });
        }
        let plant_needle = !needle_planted && ts >= needle_at;
        let plant_rare = !plant_needle && rare_next < rare_at.len() && ts >= rare_at[rare_next];
        let plant_incident = !plant_needle
            && !plant_rare
            && (incident_start_ns..incident_end_ns).contains(&ts)
            && g.rng.chance(INCIDENT_SHARE);
        g.msg.clear();
        g.line.clear();
        sd.clear();
        rest.clear();

        let roll = g.rng.below(100);
        let family = if plant_needle {
            0
        } else if plant_rare {
            5
        } else if plant_incident {
            2
        } else {
            match roll {
                0..=23 => 0,
                24 => 1,
                25..=33 => 2,
                34..=39 => 3,
                40..=50 => 4,
                51..=54 => 5,
                55..=62 => 6,
                63..=77 => 7,
                _ => 8,
            }
        };
        let (channel, info) = match family {
            0..=3 => {
                // RFC 5424 over syslog TCP.
                let (host, app, fac, msgid) = match family {
                    // The incident hits two of the four database hosts.
                    _ if plant_incident => {
                        let host = g.db.names[1 + g.rng.below(2) as usize].clone();
                        (host, "postgres", 16, "-")
                    }
                    0 => (g.web.pick(&mut g.rng).to_string(), "nginx", 23u32, "access"),
                    1 => (g.web.pick(&mut g.rng).to_string(), "nginx", 23, "error"),
                    2 => (g.db.pick(&mut g.rng).to_string(), "postgres", 16, "-"),
                    _ => (g.zk.pick(&mut g.rng).to_string(), "zookeeper", 16, "-"),
                };
                let sev = match family {
                    _ if plant_incident => g.incident(),
                    0 => g.nginx_access(plant_needle.then_some(needle.as_str())),
                    1 => g.nginx_error(),
                    2 => g.postgres(&mut sd),
                    _ => g.java(),
                };
                let procid = match family {
                    0 | 1 => 2211 + (g.rng.below(4) as u32),
                    2 => g.rng.range(1000, 65000) as u32,
                    _ => 4321,
                };
                let l = &mut g.line;
                let _ = write!(l, "<{}>1 ", fac * 8 + sev as u32);
                rfc3339(l, ts, 6);
                let _ = write!(l, " {host} {app} {procid} {msgid} ");
                if sd.is_empty() {
                    l.push(b'-');
                } else {
                    l.extend_from_slice(&sd);
                }
                l.push(b' ');
                exp.rfc5424 += 1;
                (
                    Channel::SyslogTcp,
                    Line {
                        sev,
                        host_is_top: host == top_host,
                        ts,
                    },
                )
            }
            4..=6 => {
                // RFC 3164 over syslog TCP.
                let host = g.servers.names[g.servers.zipf.sample(&mut g.rng)].clone();
                let (tag, pid, fac, sev) = match family {
                    4 => {
                        let (tag, pid, sev) = g.sshd();
                        (tag, Some(pid), 4u32, sev)
                    }
                    5 => {
                        let sev = g.kernel(plant_rare);
                        ("kernel", None, 0, sev)
                    }
                    _ => {
                        let (tag, pid, fac, sev) = g.system();
                        (tag, Some(pid), fac, sev)
                    }
                };
                let ts = ts - ts.rem_euclid(NS);
                let l = &mut g.line;
                let _ = write!(l, "<{}>", fac * 8 + sev as u32);
                bsd_time(l, ts);
                let _ = write!(l, " {host} {tag}");
                if let Some(pid) = pid {
                    let _ = write!(l, "[{pid}]");
                }
                l.extend_from_slice(b": ");
                exp.rfc3164 += 1;
                (
                    Channel::SyslogTcp,
                    Line {
                        sev,
                        host_is_top: host == top_host,
                        ts,
                    },
                )
            }
            7 => {
                let host = g.nodes.names[g.nodes.zipf.sample(&mut g.rng)].clone();
                let sev = g.k8s(&mut rest);
                let ts = ts - ts.rem_euclid(1_000_000);
                let l = &mut g.line;
                l.extend_from_slice(b"{\"ts\":\"");
                rfc3339(l, ts, 3);
                let _ = write!(
                    l,
                    "\",\"level\":\"{}\",\"logger\":\"kubelet\",\"host\":\"{host}\",\"msg\":",
                    sev.json_name()
                );
                exp.json += 1;
                (
                    Channel::JsonTcp,
                    Line {
                        sev,
                        host_is_top: false,
                        ts,
                    },
                )
            }
            _ => {
                let host = g.apps.names[g.apps.zipf.sample(&mut g.rng)].clone();
                let svc = *g.rng.pick(&SERVICES);
                let sev = g.app(&mut rest);
                let ts = ts - ts.rem_euclid(1_000_000);
                let l = &mut g.line;
                l.extend_from_slice(b"{\"@timestamp\":\"");
                rfc3339(l, ts, 3);
                let _ = write!(
                    l,
                    "\",\"level\":\"{}\",\"service\":\"{svc}\",\"host\":\"{host}\",\"message\":",
                    sev.json_name()
                );
                exp.json += 1;
                (
                    Channel::Http,
                    Line {
                        sev,
                        host_is_top: false,
                        ts,
                    },
                )
            }
        };
        // Append the message (and close JSON objects).
        if channel == Channel::SyslogTcp {
            let Gen { line, msg, .. } = &mut g;
            line.extend_from_slice(msg);
        } else {
            let Gen { line, msg, .. } = &mut g;
            push_json_str(line, msg);
            line.extend_from_slice(&rest);
            line.push(b'}');
        }
        g.line.push(b'\n');

        let hits = scan(&g.msg, &needle);

        let in_window = info.ts >= window_start_ns && info.ts < window_end_ns;
        let bump = |c: &mut Count| {
            c.total += 1;
            if in_window {
                c.window += 1;
            }
        };
        if hits.needle {
            bump(&mut exp.needle);
        }
        if hits.rare {
            bump(&mut exp.rare);
        }
        if hits.phrase {
            bump(&mut exp.phrase);
        }
        if hits.common {
            bump(&mut exp.common);
        }
        if info.host_is_top {
            bump(&mut exp.host);
        }
        if info.sev == Sev::Err {
            bump(&mut exp.error);
        }
        if plant_incident {
            exp.incident.total += 1;
            if info.ts < incident_start_ns + WINDOW_NS {
                exp.incident.window += 1;
            }
        }
        if in_window {
            exp.all_window += 1;
        }
        if plant_needle {
            needle_planted = true;
        }
        if plant_rare {
            rare_next += 1;
        }

        let c = channel as usize;
        out[c].write_all(&g.line)?;
        exp.records += 1;
        exp.bytes += g.line.len() as u64;
        exp.channel_records[c] += 1;
        exp.channel_bytes[c] += g.line.len() as u64;
    }
    for w in &mut out {
        w.flush()?;
    }
    Ok(Corpus {
        files,
        expected: exp,
        needle,
        top_host,
        window_start_ns,
        window_end_ns,
        incident_start_ns,
        incident_end_ns,
    })
}
