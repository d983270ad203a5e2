//! Structured logs through `tracing`; `RUST_LOG` filters as usual (default `info`).

use tracing_subscriber::EnvFilter;

/// How log lines are written: `KILLRVIDEO_LOG_FORMAT` (parsed in `config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for machines.
    Json,
    /// Human-readable.
    Pretty,
}

/// Installs the global subscriber, writing to stderr. Safe to call more than once (tests).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

// ----- metrics -----
//
// Prometheus text at `/metrics` on KILLRVIDEO_METRICS_LISTEN (docs/operations.md). The
// recorder is global, as the `metrics` facade is: installed once per process, the
// first time anything asks for it.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Latency buckets, seconds: from a cached GET to a request near its timeout.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// The process's metrics recorder, installed on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("http_request_duration_seconds".into()),
                &LATENCY_BUCKETS,
            )
            .map(|builder| builder.build_recorder());
        match recorder {
            Ok(recorder) => {
                let handle = recorder.handle();
                // Fails only if another recorder was installed first; this one then
                // renders nothing, which is all that can be done.
                let _ = metrics::set_global_recorder(recorder);
                handle
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot build the metrics recorder");
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    })
}

/// The series of one route and method: its latency histogram and a counter per status.
struct RouteSeries {
    latency: metrics::Histogram,
    by_status: std::collections::HashMap<u16, metrics::Counter>,
}

thread_local! {
    /// The handles of the series this thread has recorded, by route and method. The
    /// `metrics` macros build a key and look it up in the registry on every call,
    /// allocating the labels; a request worker records the same few series over and
    /// over, so it keeps their handles (a handful of routes, bounded by the router).
    static SERIES: std::cell::RefCell<
        std::collections::HashMap<String, std::collections::HashMap<axum::http::Method, RouteSeries>>,
    > = std::cell::RefCell::default();
}

/// Counts and times every routed request by its route template (never the raw path,
/// which holds user ids), method and status.
pub async fn track_request(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    let route = route.as_ref().map_or("unmatched", |path| path.as_str());
    metrics_handle();
    SERIES.with(|series| {
        let mut series = series.borrow_mut();
        if !series.contains_key(route) {
            series.insert(route.to_owned(), std::collections::HashMap::new());
        }
        let Some(by_method) = series.get_mut(route) else {
            return;
        };
        let entry = by_method
            .entry(method.clone())
            .or_insert_with(|| RouteSeries {
                latency: metrics::histogram!(
                    "http_request_duration_seconds",
                    "route" => route.to_owned(),
                    "method" => method.as_str().to_owned()
                ),
                by_status: std::collections::HashMap::new(),
            });
        entry.latency.record(elapsed);
        entry
            .by_status
            .entry(status)
            .or_insert_with(|| {
                metrics::counter!(
                    "http_requests_total",
                    "route" => route.to_owned(),
                    "method" => method.as_str().to_owned(),
                    "status" => status.to_string()
                )
            })
            .increment(1);
    });
    response
}

/// Shed load and abandoned requests: counted, and summarised in the log at most once
/// a second as one WARN line, instead of a line (at ERROR) per request.
pub fn shed(reason: &'static str) {
    metrics_handle();
    metrics::counter!("http_requests_shed_total", "reason" => reason).increment(1);
    static SINCE_LAST_LINE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static LAST_LINE: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
    SINCE_LAST_LINE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let Ok(mut last) = LAST_LINE.try_lock() else {
        return;
    };
    if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
        let count = SINCE_LAST_LINE.swap(0, std::sync::atomic::Ordering::Relaxed);
        *last = Some(Instant::now());
        tracing::warn!(
            requests = count,
            last_reason = reason,
            "shedding load: answered 503"
        );
    }
}

/// A connection refused because the connection cap was reached.
pub fn connection_refused() {
    metrics_handle();
    metrics::counter!("http_connections_refused_total").increment(1);
}

/// Connections open now.
pub fn connections_open(open: usize) {
    metrics_handle();
    metrics::gauge!("http_connections_open").set(open as f64);
}

/// A login refused, by reason (`wrong_password`, `locked`, `throttled`).
pub fn login_refused(reason: &'static str) {
    metrics_handle();
    metrics::counter!("logins_refused_total", "reason" => reason).increment(1);
}

/// Password hashing: requests admitted (waiting or hashing) and hashes running.
pub fn hashing_queue(admitted: usize, hashing: usize) {
    metrics_handle();
    metrics::gauge!("password_hash_queue").set(admitted as f64);
    metrics::gauge!("password_hashes_in_flight").set(hashing as f64);
}

/// A store error that reached the HTTP edge, by kind.
pub fn store_error(kind: &'static str) {
    metrics_handle();
    metrics::counter!("store_errors_total", "kind" => kind).increment(1);
}

/// The Cassandra session: whether the supervisor's probe answered, and the nodes the
/// driver sees up.
pub fn cassandra_session(reachable: bool, nodes_up: usize) {
    metrics_handle();
    metrics::gauge!("cassandra_session_reachable").set(if reachable { 1.0 } else { 0.0 });
    metrics::gauge!("cassandra_nodes_up").set(nodes_up as f64);
}

/// The Cassandra session was replaced after an outage.
pub fn cassandra_session_replaced() {
    metrics_handle();
    metrics::counter!("cassandra_session_replacements_total").increment(1);
}
