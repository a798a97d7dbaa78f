//! Prometheus metrics: counters and histograms recorded where things happen,
//! plus gauges of jobs, tasks and machines by state read from Postgres at
//! scrape time (Postgres is the truth; nothing is counted twice in memory).

use crate::store::Store;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the process-wide recorder once (tests run several masters in one
/// process). `None` when another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
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
        "borg_syncs_total",
        "Syncs with borglets, by result (ok, error)"
    );
    describe_counter!(
        "borg_nudges_total",
        "Nudges from borglets asking to be synced now, by result (accepted, unknown_machine, unauthorized)"
    );
    describe_histogram!(
        "borg_sync_duration_seconds",
        Unit::Seconds,
        "One master→borglet sync: read desired set, POST /v1/sync, apply the report"
    );
    describe_gauge!(
        "borg_jobs",
        "Jobs by state (read from Postgres at scrape time)"
    );
    describe_gauge!(
        "borg_tasks",
        "Tasks by state (read from Postgres at scrape time)"
    );
    describe_gauge!(
        "borg_machines",
        "Machines by state (read from Postgres at scrape time)"
    );
}

/// Refresh the state gauges from Postgres, then render everything.
pub async fn render(store: &Store, handle: &PrometheusHandle) -> anyhow::Result<String> {
    use borg_shared::{JobState, MachineState, TaskState};
    let tables: [(&str, &str, Vec<&'static str>); 3] = [
        (
            "jobs",
            "borg_jobs",
            JobState::ALL.iter().map(JobState::as_str).collect(),
        ),
        (
            "tasks",
            "borg_tasks",
            TaskState::ALL.iter().map(TaskState::as_str).collect(),
        ),
        (
            "machines",
            "borg_machines",
            MachineState::ALL.iter().map(MachineState::as_str).collect(),
        ),
    ];
    for (table, gauge, states) in tables {
        let rows: Vec<(String, i64)> = sqlx::query_as(&format!(
            "SELECT state::text, count(*) FROM {table} GROUP BY state"
        ))
        .fetch_all(store.pool())
        .await?;
        // Every state gets a value, so a state that emptied reads 0 rather than its last count.
        for state in states {
            let n = rows.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n);
            metrics::gauge!(gauge, "state" => state).set(n as f64);
        }
    }
    Ok(handle.render())
}
