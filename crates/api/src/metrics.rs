//! Prometheus metrics: requests by route template and status, latency,
//! logins and refreshes by outcome, and gauges read at scrape time.

use std::sync::LazyLock;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use prometheus::{
    Counter, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::state::AppState;

/// The service's series, registered once per process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    logins: IntCounterVec,
    refreshes: IntCounterVec,
    statements: IntCounter,
    hash_refusals: IntCounterVec,
    hashes: IntCounter,
    hash_cpu_seconds: Counter,
    gauges: Gauges,
}

/// Quantities read at scrape time, one metric each.
#[derive(Debug)]
struct Gauges {
    outbox_pending: IntGauge,
    outbox_oldest_pending_seconds: IntGauge,
    hash_queue_length: IntGauge,
    hash_finish_allowance_milliseconds: IntGauge,
    db_pool_connections: IntGauge,
    db_pool_idle_connections: IntGauge,
    db_pool_max_connections: IntGauge,
}

/// Registration can only fail on duplicate names, which are fixed here.
#[allow(clippy::expect_used)]
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new_custom(Some("gatehouse".into()), None).expect("a valid prefix");
    let requests = IntCounterVec::new(
        Opts::new("http_requests_total", "HTTP requests by route template, method and status"),
        &["route", "method", "status"],
    )
    .expect("valid metric");
    let latency = HistogramVec::new(
        HistogramOpts::new("http_request_duration_seconds", "HTTP latency by route template and method")
            .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
        &["route", "method"],
    )
    .expect("valid metric");
    let logins =
        IntCounterVec::new(Opts::new("logins_total", "Login attempts by outcome"), &["outcome"]).expect("valid metric");
    let refreshes = IntCounterVec::new(
        Opts::new("refreshes_total", "Refresh attempts by outcome (reused = reuse detected)"),
        &["outcome"],
    )
    .expect("valid metric");
    let statements = IntCounter::new(
        "db_statements_total",
        "Statements sent to the database, BEGIN and COMMIT included (round trips)",
    )
    .expect("valid metric");
    let hash_refusals = IntCounterVec::new(
        Opts::new(
            "hash_refusals_total",
            "Password hashes not done: queue_full, deadline (waited past hashing.queue_deadline_ms), client_gone",
        ),
        &["reason"],
    )
    .expect("valid metric");
    let hashes =
        IntCounter::new("hashes_total", "Password hashes and checks run by the hashing threads").expect("valid metric");
    let hash_cpu_seconds = Counter::new(
        "hash_cpu_seconds_total",
        "CPU time the hashing threads spent hashing (waits for a core excluded); its rate over the cores is hashing's share",
    )
    .expect("valid metric");
    let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
    let gauges = Gauges {
        outbox_pending: gauge("outbox_pending", "Mails waiting in the outbox"),
        outbox_oldest_pending_seconds: gauge("outbox_oldest_pending_seconds", "Age of the oldest waiting mail"),
        hash_queue_length: gauge("hash_queue_length", "Password hashes waiting for a hashing thread"),
        hash_finish_allowance_milliseconds: gauge(
            "hash_finish_allowance_milliseconds",
            "Kept before the queue deadline for a request's first hash and its work after (recent longest)",
        ),
        db_pool_connections: gauge("db_pool_connections", "Database connections open"),
        db_pool_idle_connections: gauge("db_pool_idle_connections", "Database connections open and idle"),
        db_pool_max_connections: gauge("db_pool_max_connections", "Database connections the pools may open"),
    };
    for collector in [
        Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(latency.clone()),
        Box::new(logins.clone()),
        Box::new(refreshes.clone()),
        Box::new(statements.clone()),
        Box::new(hash_refusals.clone()),
        Box::new(hashes.clone()),
        Box::new(hash_cpu_seconds.clone()),
        Box::new(gauges.outbox_pending.clone()),
        Box::new(gauges.outbox_oldest_pending_seconds.clone()),
        Box::new(gauges.hash_queue_length.clone()),
        Box::new(gauges.hash_finish_allowance_milliseconds.clone()),
        Box::new(gauges.db_pool_connections.clone()),
        Box::new(gauges.db_pool_idle_connections.clone()),
        Box::new(gauges.db_pool_max_connections.clone()),
    ] {
        registry.register(collector).expect("unique metric names");
    }
    Metrics {
        registry,
        requests,
        latency,
        logins,
        refreshes,
        statements,
        hash_refusals,
        hashes,
        hash_cpu_seconds,
        gauges,
    }
});

impl Metrics {
    pub fn observe_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.requests.with_label_values(&[route, method, &status.to_string()]).inc();
        self.latency.with_label_values(&[route, method]).observe(elapsed.as_secs_f64());
    }

    pub fn login(&self, outcome: &str) {
        self.logins.with_label_values(&[outcome]).inc();
    }

    pub fn refresh(&self, outcome: &str) {
        self.refreshes.with_label_values(&[outcome]).inc();
    }

    /// Brings each reason's counter up to the hash pool's own count (read at scrape time).
    fn hash_refusals_seen(&self, totals: [(&str, u64); 3]) {
        for (reason, total) in totals {
            let counter = self.hash_refusals.with_label_values(&[reason]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// Brings the hashing counters up to the hash pool's own totals (read at scrape time).
    fn hashing_seen(&self, (hashes, cpu): (u64, Duration)) {
        self.hashes.inc_by(hashes.saturating_sub(self.hashes.get()));
        let more = cpu.as_secs_f64() - self.hash_cpu_seconds.get();
        if more > 0.0 {
            self.hash_cpu_seconds.inc_by(more);
        }
    }

    /// Brings the counter up to the store's own count (read at scrape time).
    fn statements_sent(&self, total: u64) {
        let counted = self.statements.get();
        if total > counted {
            self.statements.inc_by(total - counted);
        }
    }
}

/// Prometheus text. The gauges are read now, from the store and the hash pool.
#[utoipa::path(get, path = "/metrics", tag = "operations", summary = "Prometheus metrics", responses((status = 200, description = "Prometheus text format")))]
pub async fn scrape(state: web::Data<AppState>) -> HttpResponse {
    let metrics = &*METRICS;
    let gauges = &metrics.gauges;
    match state.outbox.backlog(time::OffsetDateTime::now_utc()).await {
        Ok(backlog) => {
            gauges.outbox_pending.set(backlog.pending);
            gauges.outbox_oldest_pending_seconds.set(backlog.oldest_age_seconds);
        }
        Err(error) => tracing::warn!(error = &error as &dyn std::error::Error, "the outbox depth is unknown"),
    }
    gauges.hash_queue_length.set(i64::try_from(state.hash_queue.queue_len()).unwrap_or(i64::MAX));
    let allowance = state.hash_queue.finish_allowance().as_millis();
    gauges.hash_finish_allowance_milliseconds.set(i64::try_from(allowance).unwrap_or(i64::MAX));
    let pool = state.pool.usage();
    gauges.db_pool_connections.set(pool.size);
    gauges.db_pool_idle_connections.set(pool.idle);
    gauges.db_pool_max_connections.set(pool.max);
    metrics.statements_sent(state.pool.statements_sent());
    metrics.hash_refusals_seen(state.hash_queue.refusals());
    metrics.hashing_seen(state.hash_queue.hashing_done());
    let mut body = Vec::new();
    if let Err(error) = TextEncoder::new().encode(&metrics.registry.gather(), &mut body) {
        tracing::error!(%error, "metrics could not be encoded");
        return HttpResponse::InternalServerError().finish();
    }
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(body)
}
