//! Reading one job's rollout snapshot: its live tasks with their attempts'
//! versions, and the failures of the target version since the rollout (or its
//! rollback) began.

use super::decide::{Failure, Snapshot, Surged, TaskSnap};
use super::{LockedJob, RolloutRow};
use crate::error::Result;
use borg_shared::{AttemptId, TaskState};
use sqlx::PgConnection;
use std::time::Duration;

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct TaskRow {
    pub index: i32,
    pub state: TaskState,
    pub attempt_id: Option<AttemptId>,
    pub version: Option<i32>,
    pub stopping: bool,
    pub restarts: i32,
    /// Since the task last moved to `running`, by the database's clock.
    pub running_ms: Option<i64>,
    /// Its attempt's version has no health check, or the last probe passed.
    pub healthy: bool,
    /// Its live superseded attempt not asked to stop (a surge), the version
    /// that runs, and whether it runs.
    pub surged_attempt: Option<AttemptId>,
    pub surged_version: Option<i32>,
    pub surged_running: Option<bool>,
}

/// The job's live tasks, by index.
pub(crate) async fn read_tasks(conn: &mut PgConnection, job: &LockedJob) -> Result<Vec<TaskRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT t.index, t.state, a.id AS attempt_id, a.version,
                COALESCE(a.stop_reason IS NOT NULL, false) AS stopping,
                COALESCE(a.restarts, 0) AS restarts,
                CASE WHEN t.state = 'running'
                     THEN (EXTRACT(EPOCH FROM clock_timestamp() - t.updated_at) * 1000)::bigint
                END AS running_ms,
                COALESCE(v.spec->'task'->'health' IS NULL OR a.healthy IS TRUE, false) AS healthy,
                g.id AS surged_attempt, g.version AS surged_version,
                g.state = 'running' AS surged_running
         FROM tasks t
         LEFT JOIN attempts a ON a.id = t.attempt_id AND a.state IN ",
        crate::live_attempt!(),
        " LEFT JOIN job_versions v ON v.job_id = t.job_id AND v.version = a.version
         LEFT JOIN LATERAL (
             SELECT s.id, s.version, s.state FROM attempts s
             WHERE s.task_id = t.id AND s.superseded AND s.stop_reason IS NULL AND s.state IN ",
        crate::live_attempt!(),
        " ORDER BY s.created_at DESC LIMIT 1) g ON true
         WHERE t.job_id = $1 AND t.state IN ('pending', 'assigned', 'starting', 'running')
         ORDER BY t.index"
    ))
    .bind(job.id)
    .fetch_all(&mut *conn)
    .await?)
}

/// Superseded attempts of the job asked to stop and still live.
async fn surges_stopping(conn: &mut PgConnection, job: &LockedJob) -> Result<i64> {
    Ok(sqlx::query_scalar(concat!(
        "SELECT count(*) FROM tasks t JOIN attempts a ON a.task_id = t.id
         WHERE t.job_id = $1 AND a.superseded AND a.stop_reason IS NOT NULL AND a.state IN ",
        crate::live_attempt!()
    ))
    .bind(job.id)
    .fetch_one(&mut *conn)
    .await?)
}

/// index, attempt state, restarts, last exit, reason.
type FailureRow = (i32, TaskState, i32, Option<String>, Option<String>);

/// Attempts of `version` made since `row.phase_at` that restarted or failed.
async fn read_failures(
    conn: &mut PgConnection,
    job: &LockedJob,
    row: &RolloutRow,
) -> Result<Vec<Failure>> {
    let rows: Vec<FailureRow> = sqlx::query_as(
        "SELECT t.index, a.state, a.restarts, a.last_exit, a.reason
         FROM tasks t JOIN attempts a ON a.task_id = t.id
         WHERE t.job_id = $1 AND a.version = $2 AND a.created_at >= $3
           AND (a.restarts > 0 OR a.state = 'failed')
         ORDER BY a.created_at",
    )
    .bind(job.id)
    .bind(job.version)
    .bind(row.phase_at)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(index, state, restarts, last_exit, reason)| {
            let failed = state == TaskState::Failed;
            let what = match (failed, reason, last_exit) {
                (true, Some(r), _) => r,
                (_, _, Some(last)) => format!("restarted after: {last}"),
                _ => "failed".to_string(),
            };
            Failure {
                index,
                count: i64::from(restarts) + i64::from(failed),
                what,
            }
        })
        .collect())
}

fn ms(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

/// Everything the decision needs, read in the caller's transaction.
pub(crate) async fn snapshot(
    conn: &mut PgConnection,
    job: &LockedJob,
    row: &RolloutRow,
) -> Result<(Snapshot, Vec<TaskRow>)> {
    let tasks = read_tasks(conn, job).await?;
    let failures = read_failures(conn, job, row).await?;
    let policy = job.spec.0.update_policy();
    let snap = Snapshot {
        job: job.name.clone(),
        target: job.version,
        max_unavailable: policy.max_unavailable(),
        max_surge: policy.max_surge(),
        min_healthy: policy.min_healthy(),
        tasks: tasks.iter().map(task_snap).collect(),
        surges_stopping: surges_stopping(conn, job).await?,
        failures,
        ready_before: i64::from(row.ready),
        since_progress: ms(row.since_progress_ms),
    };
    Ok((snap, tasks))
}

fn task_snap(t: &TaskRow) -> TaskSnap {
    TaskSnap {
        index: t.index,
        state: t.state,
        version: t.version,
        stopping: t.stopping,
        restarts: t.restarts,
        running_for: t.running_ms.map(ms),
        healthy: t.healthy,
        surged: t.surged_version.map(|version| Surged {
            version,
            running: t.surged_running.unwrap_or(false),
        }),
    }
}
