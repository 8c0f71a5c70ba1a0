//! Metrics of ingest (listeners, the WAL writer, the indexer), exported at `/metrics` through a
//! `prometheus_client` registry. Each crate declares its own set with [`metric_set!`] and
//! registers it; the server encodes the registry. A counter is one shared atomic: the hot path
//! pays one relaxed add per event, and nothing allocates.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

/// Declares a set of metrics: a struct of `prometheus_client` handles, each field with its
/// metric name and help, and `register`, which adds them all to a registry. One table per set
/// keeps a metric's field, name and help together, so none is declared and never registered.
///
/// Counter names leave out `_total`: the encoder appends it. Help text leaves out the final
/// full stop, which the registry appends. A field is `Default::default()` unless it gives
/// `= init` (histograms need their buckets, families their fixed labels). Fields in the
/// optional `@shared { }` block are handles to another set's metrics, which that set registers.
#[macro_export]
macro_rules! metric_set {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $field:ident: $ty:ty $(= $init:expr)? => $metric:literal, $help:literal;
            )*
            $(
                @shared {
                    $( $(#[$smeta:meta])* $shared:ident: $sty:ty, )*
                }
            )?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
            $( $( $(#[$smeta])* pub $shared: $sty, )* )?
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    $( $field: $crate::metric_set!(@init $($init)?), )*
                    $( $( $shared: ::std::default::Default::default(), )* )?
                }
            }
        }

        impl $name {
            /// Adds every metric of this set to `registry`.
            pub fn register(&self, registry: &mut ::prometheus_client::registry::Registry) {
                $( registry.register($metric, $help, self.$field.clone()); )*
            }
        }
    };
    (@init) => { ::std::default::Default::default() };
    (@init $init:expr) => { $init };
}

/// A gauge of counts and bytes, which are never negative.
pub type CountGauge = Gauge<u64, AtomicU64>;

/// A family whose label sets `labels` are exported from the start, at zero, not only once first
/// counted: a query on one of them sees 0 rather than no data.
pub fn family_with<S, M>(labels: impl IntoIterator<Item = S>) -> Family<S, M>
where
    S: Clone + std::hash::Hash + Eq,
    M: Default,
{
    let family = Family::default();
    for label in labels {
        drop(family.get_or_create(&label));
    }
    family
}

/// Lines stored verbatim with a `parse_error`: the listener and the parser's reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ParseErrorLabels {
    pub listener: &'static str,
    pub reason: &'static str,
}

/// Upper bounds of the WAL fsync histogram's buckets, in seconds: 100 µs to 10 s.
const FSYNC_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0, 10.0,
];

metric_set! {
    /// What ingest counts. The server registers these with its own set and alerting's.
    pub struct IngestMetrics {
        parse_errors: Family<ParseErrorLabels, Counter> => "logsift_parse_errors", "Lines stored verbatim with a parse_error, by listener and reason";
        syslog_tcp_lines: Counter => "logsift_syslog_tcp_lines", "Lines received over syslog TCP";
        syslog_tcp_bytes: Counter => "logsift_syslog_tcp_bytes", "Bytes received over syslog TCP";
        syslog_udp_lines: Counter => "logsift_syslog_udp_lines", "Datagrams received over syslog UDP";
        syslog_udp_bytes: Counter => "logsift_syslog_udp_bytes", "Bytes received over syslog UDP";
        syslog_udp_dropped: Counter => "logsift_syslog_udp_dropped", "UDP datagrams dropped because ingest was over budget or refusing writes";
        json_tcp_lines: Counter => "logsift_json_tcp_lines", "Lines received over JSON lines TCP";
        json_tcp_bytes: Counter => "logsift_json_tcp_bytes", "Bytes received over JSON lines TCP";
        ingest_refused_lines: Counter => "logsift_ingest_refused_lines", "Lines refused because the WAL could not be written (disk full, I/O error)";
        index_limit_refused: Counter => "logsift_ingest_index_limit_refused", "Lines refused because they would have created an index beyond index.max_indexes";
        frame_errors: Counter => "logsift_frame_errors", "Malformed or oversized frames on TCP listeners and oversized UDP datagrams";
        tcp_connections: Counter => "logsift_tcp_connections", "TCP connections accepted by all listeners";
        wal_entries: Counter => "logsift_wal_entries", "Entries appended to the WAL";
        wal_bytes: Counter => "logsift_wal_bytes", "Payload bytes appended to the WAL";
        wal_errors: Counter => "logsift_wal_errors", "WAL append or fsync failures";
        wal_skipped_bytes: Counter => "logsift_wal_skipped_bytes", "Damaged WAL bytes replay skipped at start to reach the valid entries after them (the entries in them are lost)";
        indexed_records: Counter => "logsift_indexed_records", "Records added to indexes";
        index_commits: Counter => "logsift_index_commits", "Index commits";
        index_errors: Counter => "logsift_index_errors", "Entries the indexer could not apply and failed commits";
        tcp_connections_refused: Counter => "logsift_tcp_connections_refused", "TCP listener connections closed at once because ingest.max_connections_per_listener were open";
        tcp_idle_closed: Counter => "logsift_tcp_idle_closed", "TCP listener connections closed after ingest.idle_timeout_ms without data";
        /// Shared with the HTTP server, which counts its own handshakes into the same counter.
        tls_handshake_failures: Counter => "logsift_tls_handshake_failures", "TLS handshakes that failed or timed out (HTTP and syslog TLS)";
        segments_deleted: Counter => "logsift_segments_deleted", "Sealed segments deleted by retention";
        inflight_bytes: CountGauge => "logsift_ingest_inflight_bytes", "Bytes accepted and not yet indexed";
        wal_queue_depth: CountGauge => "logsift_wal_queue_depth", "Requests waiting for the WAL writer";
        index_queue_depth: CountGauge => "logsift_index_queue_depth", "Batches waiting for the indexer";
        wal_disk_bytes: CountGauge => "logsift_wal_disk_bytes", "Bytes of WAL files on disk";
        wal_damaged_files: CountGauge => "logsift_wal_damaged_files", "WAL files found damaged at start (beyond a torn tail of the last one), kept as *.damaged; see /health/ready";
        ingest_refusing: CountGauge => "logsift_ingest_refusing", "1 while ingest is refused because the WAL cannot be written";
        fsync_seconds: Histogram = Histogram::new(FSYNC_BUCKETS) => "logsift_wal_fsync_seconds", "Time spent in WAL fsync";
    }
}

/// The listeners a record's `source` can name; anything else is counted as `other`, so the
/// label set stays small whatever the data says.
const LISTENERS: [&str; 7] = [
    "syslog-tcp",
    "syslog-udp",
    "json-tcp",
    "http",
    "es-bulk",
    "loki",
    "otlp",
];

impl IngestMetrics {
    /// Counts one line stored with a parse error. `source` is the record's source
    /// (`"syslog-tcp 127.0.0.1:5000"`), `reason` one of `logsift_parse::PARSE_ERROR_REASONS`.
    pub fn count_parse_error(&self, source: &str, reason: &'static str) {
        let name = source.split(' ').next().unwrap_or("");
        let listener = LISTENERS
            .iter()
            .copied()
            .find(|l| *l == name)
            .unwrap_or("other");
        self.parse_errors
            .get_or_create(&ParseErrorLabels { listener, reason })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::prometheus_text::encode;
    use prometheus_client::registry::Registry;

    #[test]
    fn exposes_todays_names_and_cumulative_buckets() {
        let m = IngestMetrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        m.wal_entries.inc_by(3);
        m.wal_queue_depth.set(2);
        m.fsync_seconds.observe(0.0003);
        m.fsync_seconds.observe(0.2);
        m.count_parse_error("syslog-tcp 127.0.0.1:5000", "syslog_pri");
        m.count_parse_error("carrier-pigeon", "syslog_pri");
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        for want in [
            "# HELP logsift_wal_entries_total Entries appended to the WAL.\n",
            "# TYPE logsift_wal_entries_total counter\nlogsift_wal_entries_total 3\n",
            "# TYPE logsift_wal_queue_depth gauge\nlogsift_wal_queue_depth 2\n",
            "logsift_wal_fsync_seconds_bucket{le=\"0.0005\"} 1\n",
            "logsift_wal_fsync_seconds_bucket{le=\"1\"} 2\n",
            "logsift_wal_fsync_seconds_bucket{le=\"+Inf\"} 2\n",
            "logsift_wal_fsync_seconds_count 2\n",
            "logsift_parse_errors_total{listener=\"syslog-tcp\",reason=\"syslog_pri\"} 1\n",
            "logsift_parse_errors_total{listener=\"other\",reason=\"syslog_pri\"} 1\n",
            "logsift_syslog_tcp_lines_total 0\n",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
    }
}
