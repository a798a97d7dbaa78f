//! Prometheus metrics of the scheduler (`--listen ADDR` serves `GET /metrics`):
//! passes and their duration, placements, lost races (conflicts with other
//! schedulers), and the tasks the last pass could not place, by cause.

use crate::run::PassStats;
use anyhow::Context;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use tokio_util::sync::CancellationToken;

/// Every cause `Decision::Unplaceable` can name, so a cause that emptied reads 0.
pub const CAUSES: [&str; 10] = [
    "quota",
    "preempting",
    "no_machines",
    "constraint",
    "max_per_machine",
    "cpu",
    "memory",
    "disk",
    "ports",
    "unreadable_spec",
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the process-wide recorder once (tests run several schedulers, and
/// `jobctl dev` runs none in-process). `None` when another recorder was first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Prefix("borg_task_".into()),
                    borg_store::TASK_LATENCY_BUCKETS,
                )
                .expect("the latency buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
                return None;
            }
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "borg_scheduler_passes_total",
        "Passes over the pending queue, by result (ok, error)"
    );
    describe_histogram!(
        "borg_scheduler_pass_duration_seconds",
        Unit::Seconds,
        "One pass: read, place and commit every page of the pending queue"
    );
    describe_counter!(
        "borg_scheduler_passes_skipped_total",
        "Interval wake-ups with nothing changed since the last pass (no pass made)"
    );
    describe_counter!(
        "borg_scheduler_placements_total",
        "Placements committed (attempts created)"
    );
    describe_counter!(
        "borg_scheduler_conflicts_total",
        "Placements dropped at commit: another scheduler or a change got there first"
    );
    describe_counter!(
        "borg_scheduler_preemptions_total",
        "Lower-band attempts asked to stop to make room for production tasks"
    );
    describe_counter!(
        "borg_scheduler_snapshot_rows_read_total",
        "Machine rows (each with its usage) read into the scheduler's snapshot: all on a full read, else only those changed since the last read"
    );
    describe_counter!(
        "borg_scheduler_snapshot_full_reads_total",
        "Reads of every machine into the snapshot (the first, then at least every minute, or when many changed)"
    );
    describe_counter!(
        "borg_scheduler_pages_total",
        "Pages of the pending queue placed, by when: `ahead` while the page before committed, `after` once it had"
    );
    describe_histogram!(
        "borg_task_submit_to_placed_seconds",
        Unit::Seconds,
        "A task's wait from becoming pending (submitted, requeued, or its backoff ended) to its placement's commit"
    );
    describe_gauge!(
        "borg_scheduler_unplaceable",
        "Tasks the last pass judged and could not place, by the cause that ruled out most machines"
    );
}

/// Record one pass.
/// An interval wake-up with nothing changed since the last pass: no pass.
pub fn skipped() {
    metrics::counter!("borg_scheduler_passes_skipped_total").increment(1);
}

pub fn record(stats: Option<&PassStats>, seconds: f64) {
    let result = if stats.is_some() { "ok" } else { "error" };
    metrics::counter!("borg_scheduler_passes_total", "result" => result).increment(1);
    metrics::histogram!("borg_scheduler_pass_duration_seconds").record(seconds);
    let Some(s) = stats else { return };
    metrics::counter!("borg_scheduler_placements_total").increment(s.placed as u64);
    metrics::counter!("borg_scheduler_conflicts_total").increment(s.lost_races as u64);
    metrics::counter!("borg_scheduler_preemptions_total").increment(s.preempted as u64);
    metrics::counter!("borg_scheduler_snapshot_rows_read_total").increment(s.machines_read);
    metrics::counter!("borg_scheduler_snapshot_full_reads_total").increment(s.full_reads as u64);
    metrics::counter!("borg_scheduler_pages_total", "placed" => "ahead")
        .increment(s.placed_ahead as u64);
    metrics::counter!("borg_scheduler_pages_total", "placed" => "after")
        .increment(s.batches.saturating_sub(s.placed_ahead) as u64);
    for cause in CAUSES {
        let n = s.unplaceable_by_cause.get(cause).copied().unwrap_or(0);
        metrics::gauge!("borg_scheduler_unplaceable", "cause" => cause).set(n as f64);
    }
}

/// Count a pass's unplaceable tasks by cause.
pub fn tally(counts: &mut BTreeMap<&'static str, usize>, cause: &'static str) {
    *counts.entry(cause).or_insert(0) += 1;
}

/// Bind `addr` for `serve`.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr} for /metrics"))
}

/// Serve `GET /metrics` and `GET /healthz` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let handle = install();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move {
                    match handle {
                        Some(h) => (
                            StatusCode::OK,
                            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                            h.render(),
                        )
                            .into_response(),
                        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("serving /metrics")
}
