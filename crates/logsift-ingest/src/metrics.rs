//! Counters exported at `/metrics` in the Prometheus text format. Plain atomics: the hot path
//! pays one relaxed add per event, and nothing allocates.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $field:ident => $name:literal, $help:literal; )*) => {
        #[derive(Default, Debug)]
        pub struct Metrics {
            $( pub $field: AtomicU64, )*
        }

        impl Metrics {
            /// Renders every counter in the Prometheus text exposition format.
            pub fn render(&self, out: &mut String) {
                $(
                    let _ = writeln!(out, "# HELP {} {}", $name, $help);
                    let _ = writeln!(out, "# TYPE {} counter", $name);
                    let _ = writeln!(out, "{} {}", $name, self.$field.load(Ordering::Relaxed));
                )*
            }
        }
    };
}

counters! {
    syslog_tcp_lines => "logsift_syslog_tcp_lines_total", "Lines received over syslog TCP.";
    syslog_tcp_bytes => "logsift_syslog_tcp_bytes_total", "Bytes received over syslog TCP.";
    syslog_udp_lines => "logsift_syslog_udp_lines_total", "Datagrams received over syslog UDP.";
    syslog_udp_bytes => "logsift_syslog_udp_bytes_total", "Bytes received over syslog UDP.";
    syslog_udp_dropped => "logsift_syslog_udp_dropped_total", "UDP datagrams dropped because the pipeline was full or failing.";
    json_tcp_lines => "logsift_json_tcp_lines_total", "Lines received over JSON lines TCP.";
    json_tcp_bytes => "logsift_json_tcp_bytes_total", "Bytes received over JSON lines TCP.";
    http_lines => "logsift_http_ingest_lines_total", "Lines accepted by HTTP ingest.";
    http_bytes => "logsift_http_ingest_bytes_total", "Body bytes (decompressed) received by HTTP ingest.";
    http_rejected_lines => "logsift_http_ingest_rejected_lines_total", "Lines HTTP ingest rejected (oversized, bad index).";
    frame_errors => "logsift_frame_errors_total", "Malformed or oversized frames on TCP listeners.";
    parse_errors => "logsift_parse_errors_total", "Lines stored verbatim with a parse_error because they did not parse as their format.";
    tcp_connections => "logsift_tcp_connections_total", "TCP connections accepted by all listeners.";
    wal_entries => "logsift_wal_entries_total", "Entries appended to the WAL.";
    wal_bytes => "logsift_wal_bytes_total", "Payload bytes appended to the WAL.";
    wal_fsyncs => "logsift_wal_fsyncs_total", "WAL fsync calls.";
    wal_errors => "logsift_wal_errors_total", "WAL append or fsync failures.";
    indexed_records => "logsift_indexed_records_total", "Records added to indexes.";
    index_commits => "logsift_index_commits_total", "Index commits.";
    index_errors => "logsift_index_errors_total", "Entries the indexer could not apply.";
    search_requests => "logsift_search_requests_total", "Search requests answered.";
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
