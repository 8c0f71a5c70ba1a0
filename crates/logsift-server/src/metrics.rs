//! Metrics of the HTTP server: HTTP ingest and the shippers' APIs, connections,
//! authentication, queries, tail streams, exports, the audit trail and erasure. Ingest
//! (`logsift_ingest::IngestMetrics`) and alerting (`alerts::AlertMetrics`) register sets of
//! their own; `/metrics` encodes the one registry all three are in.

use logsift_ingest::metrics::{CountGauge, IngestMetrics};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// An HTTP ingest request refused for its body: the route and the error code of the answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BadRequestLabels {
    pub api: &'static str,
    pub reason: &'static str,
}

logsift_ingest::metric_set! {
    /// What the server counts.
    pub struct ServerMetrics {
        bad_requests: Family<BadRequestLabels, Counter> => "logsift_http_bad_requests", "HTTP ingest requests refused for their body, by API and reason";
        // HTTP ingest and the shippers' APIs.
        http_lines: Counter => "logsift_http_ingest_lines", "Lines accepted by HTTP ingest";
        http_bytes: Counter => "logsift_http_ingest_bytes", "Body bytes (decompressed) received by HTTP ingest";
        http_rejected_lines: Counter => "logsift_http_ingest_rejected_lines", "Lines HTTP ingest rejected (oversized)";
        http_throttled: Counter => "logsift_http_ingest_throttled", "HTTP ingest requests answered 429 because ingest was over its in-flight budget";
        http_refused: Counter => "logsift_http_ingest_refused", "HTTP ingest requests answered 507 because records could not be made durable";
        es_bulk_docs: Counter => "logsift_es_bulk_docs", "Documents stored from Elasticsearch bulk requests";
        es_bulk_item_errors: Counter => "logsift_es_bulk_item_errors", "Elasticsearch bulk items answered with an error (unsupported action, bad document, bad index name)";
        es_bulk_conflicts: Counter => "logsift_es_bulk_conflicts", "Elasticsearch bulk create actions answered 409: their _id was stored within elasticsearch.id_window_secs";
        es_bulk_unchanged: Counter => "logsift_es_bulk_unchanged", "Elasticsearch bulk index actions not stored again: the same document under the same _id was stored within elasticsearch.id_window_secs";
        loki_entries: Counter => "logsift_loki_entries", "Entries stored from Loki push requests";
        otlp_log_records: Counter => "logsift_otlp_log_records", "Log records stored from OTLP export requests";
        // Queries, tail streams and exports.
        search_requests: Counter => "logsift_search_requests", "Search requests answered";
        query_partial: Counter => "logsift_query_partial", "Queries answered with a partial result: the time limit cut them short or a terms count reached query.terms_max_values";
        query_timeouts: Counter => "logsift_query_timeouts", "Queries answered 408: the time limit passed before any time range was searched completely";
        query_cancelled: Counter => "logsift_query_cancelled", "Queries stopped because their client disconnected";
        query_rejected: Counter => "logsift_query_rejected", "Queries answered 429 because every query slot was taken";
        tail_dropped: Counter => "logsift_tail_dropped", "Tail clients disconnected because they fell too far behind";
        tail_rejected: Counter => "logsift_tail_rejected", "Tail requests answered 429 because query.max_tail_clients streams were open";
        tail_polls_deferred: Counter => "logsift_tail_polls_deferred", "Tail polls put off to the next interval because every query slot was taken";
        export_rejected: Counter => "logsift_export_rejected", "Exports answered 429 because query.max_concurrent_exports were streaming";
        exported_records: Counter => "logsift_exported_records", "Records sent by completed exports";
        exports_failed: Counter => "logsift_exports_failed", "Exports that stopped before their last record (client gone, error)";
        queries_running: CountGauge => "logsift_queries_running", "Queries (search, histogram, terms, context) holding a query slot, until their work has stopped";
        tail_clients: CountGauge => "logsift_tail_clients", "Open tail streams";
        tail_pollers: CountGauge => "logsift_tail_pollers", "Tail pollers running: streams with the same query over the same indexes share one, which renders each record once for all of them";
        // Authentication and the limits on what a sender may hold.
        auth_failures: Counter => "logsift_http_auth_failures", "HTTP requests answered 401: missing, unknown or revoked token";
        http_browser_refused: Counter => "logsift_http_browser_refused", "HTTP requests answered 403 while authentication is off: a Host that is not an IP, localhost or in security.allowed_hosts (DNS rebinding), or a write a browser sent from another site";
        http_rate_limited: Counter => "logsift_http_ingest_rate_limited", "HTTP ingest requests answered 429 because their token was over its ingest rate";
        http_connections_refused: Counter => "logsift_http_connections_refused", "HTTP connections closed at once because http.max_connections were open";
        http_timeouts: Counter => "logsift_http_timeouts", "HTTP connections or requests ended by http.header_read_timeout_ms, body_read_timeout_ms or the TLS handshake timeout";
        // The audit trail and erasure.
        audit_records: Counter => "logsift_audit_records", "Entries written to the _audit index";
        audit_dropped: Counter => "logsift_audit_dropped", "Audit entries that could not be written (ingest refusing or shutting down)";
        audit_refusals_folded: Counter => "logsift_audit_refusals_folded", "Refused calls folded into a summary audit record (repeats of one kind from one caller within the window) instead of one record each";
        erased_records: Counter => "logsift_erased_records", "Records removed by erasure requests";
        // Searches shared with searchers ([node] searchers).
        fanout_shares: Counter => "logsift_fanout_shares", "Shares of searches answered by searchers";
        fanout_failures: Counter => "logsift_fanout_failures", "Shares of searches a searcher did not answer (down, timed out, refused), read by this process instead";
        @shared {
            /// Ingest's: one count for the HTTP and the syslog TLS handshakes.
            tls_handshake_failures: Counter,
        }
    }
}

impl ServerMetrics {
    /// The server's metrics, sharing ingest's TLS handshake counter.
    pub fn new(ingest: &IngestMetrics) -> Self {
        ServerMetrics {
            tls_handshake_failures: ingest.tls_handshake_failures.clone(),
            ..Self::default()
        }
    }

    /// Counts one HTTP ingest request refused for its body (bad JSON, protobuf, snappy,
    /// compression or content type). `api` names the route (`ingest`, `es-bulk`, `loki`,
    /// `otlp`), `reason` is the error code of the answer.
    pub fn count_bad_request(&self, api: &'static str, reason: &'static str) {
        self.bad_requests
            .get_or_create(&BadRequestLabels { api, reason })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::prometheus_text::encode;
    use prometheus_client::registry::Registry;

    #[test]
    fn labelled_and_shared_counters() {
        let ingest = IngestMetrics::default();
        let server = ServerMetrics::new(&ingest);
        let mut registry = Registry::default();
        ingest.register(&mut registry);
        server.register(&mut registry);
        server.count_bad_request("loki", "bad_snappy");
        server.count_bad_request("loki", "bad_snappy");
        server.tls_handshake_failures.inc();
        ingest.tls_handshake_failures.inc();
        server.tail_clients.inc();
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        for want in [
            "logsift_http_bad_requests_total{api=\"loki\",reason=\"bad_snappy\"} 2\n",
            "logsift_tls_handshake_failures_total 2\n",
            "logsift_tail_clients 1\n",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
        // Registered once, by ingest.
        assert_eq!(
            out.matches("# TYPE logsift_tls_handshake_failures_total")
                .count(),
            1
        );
    }
}
