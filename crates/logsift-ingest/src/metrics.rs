//! Metrics exported at `/metrics` in the Prometheus text format. Plain atomics: the hot path
//! pays one relaxed add per event, and nothing allocates.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

macro_rules! metrics {
    (
        counters { $( $c:ident => $cname:literal, $chelp:literal; )* }
        gauges { $( $g:ident => $gname:literal, $ghelp:literal; )* }
        histograms { $( $h:ident => $hname:literal, $hhelp:literal; )* }
    ) => {
        #[derive(Default, Debug)]
        pub struct Metrics {
            /// Lines stored verbatim with a `parse_error`, by listener and reason.
            parse_errors: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
            /// HTTP ingest requests refused for their body, by API and reason.
            bad_requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
            $( pub $c: AtomicU64, )*
            $( pub $g: AtomicU64, )*
            $( pub $h: Histogram, )*
        }

        impl Metrics {
            /// Renders every metric in the Prometheus text exposition format.
            pub fn render(&self, out: &mut String) {
                self.render_parse_errors(out);
                self.render_bad_requests(out);
                $(
                    let _ = writeln!(out, "# HELP {} {}\n# TYPE {} counter", $cname, $chelp, $cname);
                    let _ = writeln!(out, "{} {}", $cname, self.$c.load(Ordering::Relaxed));
                )*
                $(
                    let _ = writeln!(out, "# HELP {} {}\n# TYPE {} gauge", $gname, $ghelp, $gname);
                    let _ = writeln!(out, "{} {}", $gname, self.$g.load(Ordering::Relaxed));
                )*
                $(
                    let _ = writeln!(out, "# HELP {} {}\n# TYPE {} histogram", $hname, $hhelp, $hname);
                    self.$h.render($hname, out);
                )*
            }
        }
    };
}

metrics! {
    counters {
        syslog_tcp_lines => "logsift_syslog_tcp_lines_total", "Lines received over syslog TCP.";
        syslog_tcp_bytes => "logsift_syslog_tcp_bytes_total", "Bytes received over syslog TCP.";
        syslog_udp_lines => "logsift_syslog_udp_lines_total", "Datagrams received over syslog UDP.";
        syslog_udp_bytes => "logsift_syslog_udp_bytes_total", "Bytes received over syslog UDP.";
        syslog_udp_dropped => "logsift_syslog_udp_dropped_total", "UDP datagrams dropped because ingest was over budget or refusing writes.";
        json_tcp_lines => "logsift_json_tcp_lines_total", "Lines received over JSON lines TCP.";
        json_tcp_bytes => "logsift_json_tcp_bytes_total", "Bytes received over JSON lines TCP.";
        http_lines => "logsift_http_ingest_lines_total", "Lines accepted by HTTP ingest.";
        http_bytes => "logsift_http_ingest_bytes_total", "Body bytes (decompressed) received by HTTP ingest.";
        http_rejected_lines => "logsift_http_ingest_rejected_lines_total", "Lines HTTP ingest rejected (oversized).";
        http_throttled => "logsift_http_ingest_throttled_total", "HTTP ingest requests answered 429 because ingest was over its in-flight budget.";
        http_refused => "logsift_http_ingest_refused_total", "HTTP ingest requests answered 507 because records could not be made durable.";
        es_bulk_docs => "logsift_es_bulk_docs_total", "Documents stored from Elasticsearch bulk requests.";
        es_bulk_item_errors => "logsift_es_bulk_item_errors_total", "Elasticsearch bulk items answered with an error (unsupported action, bad document, bad index name).";
        es_bulk_conflicts => "logsift_es_bulk_conflicts_total", "Elasticsearch bulk create actions answered 409: their _id was stored within elasticsearch.id_window_secs.";
        es_bulk_unchanged => "logsift_es_bulk_unchanged_total", "Elasticsearch bulk index actions not stored again: the same document under the same _id was stored within elasticsearch.id_window_secs.";
        loki_entries => "logsift_loki_entries_total", "Entries stored from Loki push requests.";
        otlp_log_records => "logsift_otlp_log_records_total", "Log records stored from OTLP export requests.";
        ingest_refused_lines => "logsift_ingest_refused_lines_total", "Lines refused because the WAL could not be written (disk full, I/O error).";
        index_limit_refused => "logsift_ingest_index_limit_refused_total", "Lines refused because they would have created an index beyond index.max_indexes.";
        frame_errors => "logsift_frame_errors_total", "Malformed or oversized frames on TCP listeners and oversized UDP datagrams.";
        tcp_connections => "logsift_tcp_connections_total", "TCP connections accepted by all listeners.";
        wal_entries => "logsift_wal_entries_total", "Entries appended to the WAL.";
        wal_bytes => "logsift_wal_bytes_total", "Payload bytes appended to the WAL.";
        wal_errors => "logsift_wal_errors_total", "WAL append or fsync failures.";
        wal_skipped_bytes => "logsift_wal_skipped_bytes_total", "Damaged WAL bytes replay skipped at start to reach the valid entries after them (the entries in them are lost).";
        indexed_records => "logsift_indexed_records_total", "Records added to indexes.";
        index_commits => "logsift_index_commits_total", "Index commits.";
        index_errors => "logsift_index_errors_total", "Entries the indexer could not apply and failed commits.";
        search_requests => "logsift_search_requests_total", "Search requests answered.";
        query_partial => "logsift_query_partial_total", "Queries answered with a partial result: the time limit cut them short or a terms count reached query.terms_max_values.";
        query_timeouts => "logsift_query_timeouts_total", "Queries answered 408: the time limit passed before any time range was searched completely.";
        query_cancelled => "logsift_query_cancelled_total", "Queries stopped because their client disconnected.";
        query_rejected => "logsift_query_rejected_total", "Queries answered 429 because every query slot was taken.";
        tail_dropped => "logsift_tail_dropped_total", "Tail clients disconnected because they fell too far behind.";
        tail_rejected => "logsift_tail_rejected_total", "Tail requests answered 429 because query.max_tail_clients streams were open.";
        tail_polls_deferred => "logsift_tail_polls_deferred_total", "Tail polls put off to the next interval because every query slot was taken.";
        export_rejected => "logsift_export_rejected_total", "Exports answered 429 because query.max_concurrent_exports were streaming.";
        auth_failures => "logsift_http_auth_failures_total", "HTTP requests answered 401: missing, unknown or revoked token.";
        http_browser_refused => "logsift_http_browser_refused_total", "HTTP requests answered 403 while authentication is off: a Host that is not an IP, localhost or in security.allowed_hosts (DNS rebinding), or a write a browser sent from another site.";
        http_rate_limited => "logsift_http_ingest_rate_limited_total", "HTTP ingest requests answered 429 because their token was over its ingest rate.";
        http_connections_refused => "logsift_http_connections_refused_total", "HTTP connections closed at once because http.max_connections were open.";
        http_timeouts => "logsift_http_timeouts_total", "HTTP connections or requests ended by http.header_read_timeout_ms, body_read_timeout_ms or the TLS handshake timeout.";
        tcp_connections_refused => "logsift_tcp_connections_refused_total", "TCP listener connections closed at once because ingest.max_connections_per_listener were open.";
        tcp_idle_closed => "logsift_tcp_idle_closed_total", "TCP listener connections closed after ingest.idle_timeout_ms without data.";
        tls_handshake_failures => "logsift_tls_handshake_failures_total", "TLS handshakes that failed or timed out (HTTP and syslog TLS).";
        segments_deleted => "logsift_segments_deleted_total", "Sealed segments deleted by retention.";
        exported_records => "logsift_exported_records_total", "Records sent by completed exports.";
        exports_failed => "logsift_exports_failed_total", "Exports that stopped before their last record (client gone, error).";
        audit_records => "logsift_audit_records_total", "Entries written to the _audit index.";
        audit_dropped => "logsift_audit_dropped_total", "Audit entries that could not be written (ingest refusing or shutting down).";
        audit_refusals_folded => "logsift_audit_refusals_folded_total", "Refused calls folded into a summary audit record (repeats of one kind from one caller within the window) instead of one record each.";
        erased_records => "logsift_erased_records_total", "Records removed by erasure requests.";
    }
    gauges {
        inflight_bytes => "logsift_ingest_inflight_bytes", "Bytes accepted and not yet indexed.";
        wal_queue_depth => "logsift_wal_queue_depth", "Requests waiting for the WAL writer.";
        index_queue_depth => "logsift_index_queue_depth", "Batches waiting for the indexer.";
        wal_disk_bytes => "logsift_wal_disk_bytes", "Bytes of WAL files on disk.";
        wal_damaged_files => "logsift_wal_damaged_files", "WAL files found damaged at start (beyond a torn tail of the last one), kept as *.damaged; see /health/ready.";
        ingest_refusing => "logsift_ingest_refusing", "1 while ingest is refused because the WAL cannot be written.";
        queries_running => "logsift_queries_running", "Queries (search, histogram, terms, context) holding a query slot, until their work has stopped.";
        tail_clients => "logsift_tail_clients", "Open tail streams.";
        tail_pollers => "logsift_tail_pollers", "Tail pollers running: streams with the same query over the same indexes share one, which renders each record once for all of them.";
    }
    histograms {
        fsync_seconds => "logsift_wal_fsync_seconds", "Time spent in WAL fsync.";
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

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one line stored with a parse error. `source` is the record's source
    /// (`"syslog-tcp 127.0.0.1:5000"`), `reason` one of `logsift_parse::PARSE_ERROR_REASONS`.
    pub fn count_parse_error(&self, source: &str, reason: &'static str) {
        let name = source.split(' ').next().unwrap_or("");
        let listener = LISTENERS
            .iter()
            .copied()
            .find(|l| *l == name)
            .unwrap_or("other");
        let mut map = self.parse_errors.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((listener, reason)).or_insert(0) += 1;
    }

    /// Counts one HTTP ingest request refused for its body (bad JSON, protobuf, snappy,
    /// compression or content type). `api` names the route (`ingest`, `es-bulk`, `loki`,
    /// `otlp`), `reason` is the error code of the answer.
    pub fn count_bad_request(&self, api: &'static str, reason: &'static str) {
        let mut map = self.bad_requests.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((api, reason)).or_insert(0) += 1;
    }

    fn render_bad_requests(&self, out: &mut String) {
        let name = "logsift_http_bad_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} HTTP ingest requests refused for their body, by API and reason."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        let map = self.bad_requests.lock().unwrap_or_else(|p| p.into_inner());
        for ((api, reason), n) in map.iter() {
            let _ = writeln!(out, "{name}{{api=\"{api}\",reason=\"{reason}\"}} {n}");
        }
    }

    fn render_parse_errors(&self, out: &mut String) {
        let name = "logsift_parse_errors_total";
        let _ = writeln!(
            out,
            "# HELP {name} Lines stored verbatim with a parse_error, by listener and reason."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        let map = self.parse_errors.lock().unwrap_or_else(|p| p.into_inner());
        for ((listener, reason), n) in map.iter() {
            let _ = writeln!(
                out,
                "{name}{{listener=\"{listener}\",reason=\"{reason}\"}} {n}"
            );
        }
    }
}

/// Upper bounds of the histogram buckets, in seconds: 100 µs to 10 s.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0, 10.0,
];

/// A fixed-bucket latency histogram, lock-free.
#[derive(Default, Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|&b| seconds <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, out: &mut String) {
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_cumulative_buckets() {
        let m = Metrics::default();
        Metrics::add(&m.wal_entries, 3);
        m.wal_queue_depth.store(2, Ordering::Relaxed);
        m.fsync_seconds.observe(0.0003);
        m.fsync_seconds.observe(0.2);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("logsift_wal_entries_total 3\n"));
        assert!(out.contains("# TYPE logsift_wal_queue_depth gauge\nlogsift_wal_queue_depth 2\n"));
        assert!(out.contains("logsift_wal_fsync_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(out.contains("logsift_wal_fsync_seconds_bucket{le=\"1\"} 2\n"));
        assert!(out.contains("logsift_wal_fsync_seconds_count 2\n"));
        m.count_bad_request("loki", "bad_snappy");
        m.count_bad_request("loki", "bad_snappy");
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains("logsift_http_bad_requests_total{api=\"loki\",reason=\"bad_snappy\"} 2\n")
        );
    }
}
