//! Prometheus metrics in the text exposition format, kept in memory per application.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Counters, histograms and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    durations: Mutex<BTreeMap<String, Histogram>>,
    verify: Mutex<BTreeMap<&'static str, u64>>,
    snapshot_version: AtomicU64,
    snapshot_keys: AtomicU64,
    snapshot_builds: AtomicU64,
    snapshot_build_ms: AtomicI64,
    snapshot_version_reads: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// Records a finished request; `route` is the matched pattern (never the raw path, which
    /// would make one series per id).
    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        *lock(&self.requests)
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
        let mut d = lock(&self.durations);
        let h = d.entry(route.to_owned()).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// Records a `/v1/verify` verdict.
    pub fn observe_verdict(&self, code: &'static str) {
        *lock(&self.verify).entry(code).or_default() += 1;
    }

    /// Records the published snapshot.
    pub fn observe_snapshot(&self, version: u64, keys: u64) {
        self.snapshot_version.store(version, Ordering::Relaxed);
        self.snapshot_keys.store(keys, Ordering::Relaxed);
    }

    /// Records a snapshot build.
    pub fn observe_build(&self, ms: i64) {
        self.snapshot_builds.fetch_add(1, Ordering::Relaxed);
        self.snapshot_build_ms.store(ms, Ordering::Relaxed);
    }

    /// Records a read of the snapshot version from the database (a poll not answered from
    /// memory).
    pub fn observe_version_read(&self) {
        self.snapshot_version_reads.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP keygate_http_requests_total HTTP requests by method, route and status.\n# TYPE keygate_http_requests_total counter\n");
        for ((m, r, s), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "keygate_http_requests_total{{method=\"{m}\",route=\"{}\",status=\"{s}\"}} {n}",
                escape(r)
            );
        }
        out.push_str("# HELP keygate_http_request_duration_seconds HTTP request latency by route.\n# TYPE keygate_http_request_duration_seconds histogram\n");
        for (r, h) in lock(&self.durations).iter() {
            let r = escape(r);
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "keygate_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "keygate_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "keygate_http_request_duration_seconds_sum{{route=\"{r}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "keygate_http_request_duration_seconds_count{{route=\"{r}\"}} {}",
                h.count
            );
        }
        out.push_str("# HELP keygate_verify_total /v1/verify verdicts by code.\n# TYPE keygate_verify_total counter\n");
        for (c, n) in lock(&self.verify).iter() {
            let _ = writeln!(out, "keygate_verify_total{{code=\"{c}\"}} {n}");
        }
        let _ = write!(
            out,
            "# HELP keygate_snapshot_version Version of the last published snapshot.\n# TYPE keygate_snapshot_version gauge\nkeygate_snapshot_version {}\n\
             # HELP keygate_snapshot_keys Keys in the last published snapshot.\n# TYPE keygate_snapshot_keys gauge\nkeygate_snapshot_keys {}\n\
             # HELP keygate_snapshot_builds_total Snapshot builds.\n# TYPE keygate_snapshot_builds_total counter\nkeygate_snapshot_builds_total {}\n\
             # HELP keygate_snapshot_build_milliseconds Duration of the last snapshot build.\n# TYPE keygate_snapshot_build_milliseconds gauge\nkeygate_snapshot_build_milliseconds {}\n\
             # HELP keygate_snapshot_version_reads_total Snapshot version reads from the database (polls not answered from memory).\n# TYPE keygate_snapshot_version_reads_total counter\nkeygate_snapshot_version_reads_total {}\n",
            self.snapshot_version.load(Ordering::Relaxed),
            self.snapshot_keys.load(Ordering::Relaxed),
            self.snapshot_builds.load(Ordering::Relaxed),
            self.snapshot_build_ms.load(Ordering::Relaxed),
            self.snapshot_version_reads.load(Ordering::Relaxed),
        );
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
