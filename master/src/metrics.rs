//! Prometheus metrics: counters and histograms recorded where things happen,
//! plus gauges of jobs, tasks and machines by state read from Postgres at
//! scrape time (Postgres is the truth; nothing is counted twice in memory).

use crate::store::Store;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Histogram buckets in seconds: from half a millisecond to half a minute.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the process-wide recorder once (tests run several masters in one
/// process). `None` when another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            // Buckets (not summaries), so quantiles aggregate across routes and
            // replicas, and a measurement can take the difference of two scrapes
            // (`jobctl bench --only fleet`).
            let recorder = match PrometheusBuilder::new().set_buckets(BUCKETS).and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Prefix("borg_task_".into()),
                    borg_store::TASK_LATENCY_BUCKETS,
                )
            }) {
                Ok(b) => b.build_recorder(),
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
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
        "borg_task_transitions_total",
        "Task state changes applied by the master, by from and to state"
    );
    describe_counter!("borg_jobs_submitted_total", "Jobs accepted (201)");
    describe_counter!(
        "borg_task_health_transitions_total",
        "Health changes of running tasks as their borglets report them, by to (healthy, unhealthy)"
    );
    describe_gauge!(
        "borg_master_leader",
        "1 while this replica holds the leader lease (polls borglets, runs the controllers)"
    );
    describe_counter!(
        "borg_leader_takeovers_total",
        "Times this replica took the leader lease"
    );
    describe_counter!(
        "borg_attempts_lost_total",
        "Attempts ended because their machine went down"
    );
    describe_counter!(
        "borg_syncs_total",
        "Syncs with borglets, by result (ok, error)"
    );
    describe_counter!(
        "borg_sync_desired_total",
        "Desired sets sent to borglets, by source (cache: kept by the leader, store: read from Postgres)"
    );
    describe_counter!(
        "borg_sync_reports_total",
        "Borglet reports, by applied (no: the same as the last one, which changed nothing)"
    );
    describe_counter!(
        "borg_nudges_total",
        "Nudges from borglets asking to be synced now, by result (accepted, unknown_machine, unauthorized)"
    );
    describe_histogram!(
        "borg_api_request_duration_seconds",
        Unit::Seconds,
        "API requests by route template, method and status, to the response's head"
    );
    describe_histogram!(
        "borg_sync_duration_seconds",
        Unit::Seconds,
        "One master→borglet sync: read desired set, POST /v1/sync, apply the report"
    );
    describe_histogram!(
        "borg_task_placed_to_running_seconds",
        Unit::Seconds,
        "An attempt's time from its placement to the borglet reporting it running"
    );
    describe_gauge!(
        "borg_jobs",
        "Live jobs (pending, running) by state, read from Postgres at scrape time"
    );
    describe_gauge!(
        "borg_tasks",
        "Tasks of live jobs by state, from the job counters at scrape time"
    );
    describe_counter!(
        "borg_job_transitions_total",
        "Job state changes, by from and to state"
    );
    describe_counter!(
        "borg_machine_transitions_total",
        "Machine state changes, by from and to state"
    );
    describe_gauge!(
        "borg_machines",
        "Machines by state (read from Postgres at scrape time)"
    );
}

/// Refresh the state gauges from Postgres, then render everything. The gauges
/// cover what is live (jobs not finished, their tasks, every machine), so a
/// scrape costs the same however much history the cell keeps; finished work is
/// counted by the `*_transitions_total` counters.
pub async fn render(store: &Store, handle: &PrometheusHandle) -> anyhow::Result<String> {
    use borg_shared::{JobState, MachineState, TaskState};
    let jobs: Vec<(String, i64)> = sqlx::query_as(concat!(
        "SELECT state::text, count(*) FROM jobs WHERE state IN ",
        borg_store::live_job!(),
        " GROUP BY state"
    ))
    .fetch_all(store.pool())
    .await?;
    let tasks: (i64, i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(concat!(
        "SELECT COALESCE(sum(c.pending), 0)::bigint, COALESCE(sum(c.assigned), 0)::bigint,
                COALESCE(sum(c.starting), 0)::bigint, COALESCE(sum(c.running), 0)::bigint,
                COALESCE(sum(c.succeeded), 0)::bigint, COALESCE(sum(c.failed), 0)::bigint,
                COALESCE(sum(c.killed), 0)::bigint, COALESCE(sum(c.lost), 0)::bigint
         FROM jobs j JOIN job_counts c ON c.job_id = j.id WHERE j.state IN ",
        borg_store::live_job!()
    ))
    .fetch_one(store.pool())
    .await?;
    let machines: Vec<(String, i64)> =
        sqlx::query_as("SELECT state::text, count(*) FROM machines GROUP BY state")
            .fetch_all(store.pool())
            .await?;
    let count = |rows: &[(String, i64)], state: &str| {
        rows.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n)
    };
    // Every state gets a value, so a state that emptied reads 0 rather than its last count.
    for state in JobState::ALL.iter().filter(|s| !s.is_terminal()) {
        metrics::gauge!("borg_jobs", "state" => state.as_str())
            .set(count(&jobs, state.as_str()) as f64);
    }
    let (p, a, st, r, su, f, k, l) = tasks;
    let by_state = [p, a, st, r, su, f, k, l];
    for (state, n) in TaskState::ALL.iter().zip(by_state) {
        metrics::gauge!("borg_tasks", "state" => state.as_str()).set(n as f64);
    }
    for state in MachineState::ALL {
        metrics::gauge!("borg_machines", "state" => state.as_str())
            .set(count(&machines, state.as_str()) as f64);
    }
    Ok(handle.render())
}
