//! The server's Prometheus metrics: counters and latency histograms kept in
//! memory per server (not global, so servers in one test process keep their
//! own), rendered in the text exposition format at `/metrics`. Label values
//! come from fixed sets only — operations, statuses, reasons, route patterns
//! — never UIDs, names or anything else from a request, so no patient data
//! can reach a monitoring system through a label.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Every metric: name, type, help. Rendering follows this order.
const DESCRIPTIONS: &[(&str, Kind, &str)] = &[
    (
        "custos_instances_total",
        Kind::Counter,
        "Instances received, by protocol and the status answered (0000 stored, B006 conflicting duplicate kept, others refused).",
    ),
    (
        "custos_ingest_bytes_total",
        Kind::Counter,
        "Bytes of instances stored.",
    ),
    (
        "custos_associations_total",
        Kind::Counter,
        "DICOM associations, accepted or rejected, by reason.",
    ),
    (
        "custos_dimse_request_seconds",
        Kind::Histogram,
        "DIMSE requests from command to response, by operation.",
    ),
    (
        "custos_http_request_seconds",
        Kind::Histogram,
        "HTTP requests, by method and route pattern.",
    ),
    (
        "custos_http_responses_total",
        Kind::Counter,
        "HTTP responses, by method, route pattern and status code.",
    ),
    (
        "custos_index_errors_total",
        Kind::Counter,
        "Requests that failed because the index could not be read or written.",
    ),
    (
        "custos_store_errors_total",
        Kind::Counter,
        "Requests that failed because the blob store could not be read or written.",
    ),
    (
        "custos_tls_handshake_failures_total",
        Kind::Counter,
        "TLS handshakes refused or timed out, by listener.",
    ),
];

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Histogram,
}

/// Labels as (name, value) pairs, in a fixed order per metric.
type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Observations at or under each bucket's bound (not cumulative here).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// One server's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, Labels), u64>>,
    histograms: Mutex<BTreeMap<(&'static str, Labels), Histogram>>,
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Adds one to a counter.
    pub fn inc(&self, name: &'static str, pairs: &[(&'static str, &str)]) {
        self.add(name, pairs, 1);
    }

    /// Adds `n` to a counter.
    pub fn add(&self, name: &'static str, pairs: &[(&'static str, &str)], n: u64) {
        debug_assert!(DESCRIPTIONS.iter().any(|d| d.0 == name), "{name}");
        // A poisoned lock only means a panic elsewhere mid-update: counting
        // goes on with what is there.
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry((name, labels(pairs))).or_default() += n;
    }

    /// Records one duration in a histogram.
    pub fn observe(&self, name: &'static str, pairs: &[(&'static str, &str)], d: Duration) {
        debug_assert!(DESCRIPTIONS.iter().any(|x| x.0 == name), "{name}");
        let secs = d.as_secs_f64();
        let mut h = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
        let e = h.entry((name, labels(pairs))).or_default();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            e.buckets[i] += 1;
        }
        e.count += 1;
        e.sum += secs;
    }

    /// The exposition text: every metric with what it has counted, then
    /// the figures read at scrape time (queue depths, lockouts).
    pub fn render(&self, scraped: &[Scraped]) -> String {
        let counters = self
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let histograms = self
            .histograms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut out = String::new();
        for (name, kind, help) in DESCRIPTIONS {
            let kind_name = match kind {
                Kind::Counter => "counter",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind_name}");
            match kind {
                Kind::Counter => {
                    for ((_, l), v) in counters.iter().filter(|((n, _), _)| n == name) {
                        let _ = writeln!(out, "{name}{} {v}", label_text(l, None));
                    }
                }
                Kind::Histogram => {
                    for ((_, l), h) in histograms.iter().filter(|((n, _), _)| n == name) {
                        let mut cumulative = 0;
                        for (bound, n) in BUCKETS.iter().zip(h.buckets) {
                            cumulative += n;
                            let le = bound.to_string();
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {cumulative}",
                                label_text(l, Some(&le))
                            );
                        }
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {}",
                            label_text(l, Some("+Inf")),
                            h.count
                        );
                        let _ = writeln!(out, "{name}_sum{} {}", label_text(l, None), h.sum);
                        let _ = writeln!(out, "{name}_count{} {}", label_text(l, None), h.count);
                    }
                }
            }
        }
        let mut last = "";
        for s in scraped {
            let name = s.name;
            if name != last {
                let kind = if s.counter { "counter" } else { "gauge" };
                let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", s.help);
                last = name;
            }
            let _ = writeln!(out, "{name}{} {}", label_text(&s.labels, None), s.value);
        }
        out
    }
}

/// A figure read when scraped rather than counted as it happens; the
/// entries of one name must be adjacent.
pub struct Scraped {
    pub name: &'static str,
    pub help: &'static str,
    /// A counter kept elsewhere (else a gauge).
    pub counter: bool,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// `{a="x",b="y"}` (with `le` last for buckets), or nothing without labels.
fn label_text(l: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_the_exposition_format() {
        let m = Metrics::new();
        m.inc(
            "custos_instances_total",
            &[("protocol", "dimse"), ("status", "0000")],
        );
        m.inc(
            "custos_instances_total",
            &[("protocol", "dimse"), ("status", "0000")],
        );
        m.add("custos_ingest_bytes_total", &[], 512);
        m.observe(
            "custos_dimse_request_seconds",
            &[("op", "C-STORE")],
            Duration::from_millis(3),
        );
        m.observe(
            "custos_dimse_request_seconds",
            &[("op", "C-STORE")],
            Duration::from_secs(20),
        );
        let text = m.render(&[Scraped {
            name: "custos_audit_queue_depth",
            help: "Audit records waiting.",
            counter: false,
            labels: Vec::new(),
            value: 4.0,
        }]);
        assert!(text.contains("custos_instances_total{protocol=\"dimse\",status=\"0000\"} 2\n"));
        assert!(text.contains("custos_ingest_bytes_total 512\n"));
        assert!(
            text.contains("custos_dimse_request_seconds_bucket{op=\"C-STORE\",le=\"0.0025\"} 0\n")
        );
        assert!(
            text.contains("custos_dimse_request_seconds_bucket{op=\"C-STORE\",le=\"0.005\"} 1\n")
        );
        assert!(text.contains("custos_dimse_request_seconds_bucket{op=\"C-STORE\",le=\"10\"} 1\n"));
        assert!(
            text.contains("custos_dimse_request_seconds_bucket{op=\"C-STORE\",le=\"+Inf\"} 2\n")
        );
        assert!(text.contains("custos_dimse_request_seconds_count{op=\"C-STORE\"} 2\n"));
        assert!(
            text.contains("# TYPE custos_audit_queue_depth gauge\ncustos_audit_queue_depth 4\n")
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let l = vec![("route", "a\"b\\c".to_string())];
        assert_eq!(label_text(&l, None), r#"{route="a\"b\\c"}"#);
    }
}
