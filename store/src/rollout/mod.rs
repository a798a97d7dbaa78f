//! Job versions and rolling updates. An update (`update.rs`) stores the new
//! spec as a version and makes it the job's target; new attempts run the
//! job's version of the moment they are placed. The leader's controller
//! (`step.rs`) replaces the attempts of other versions within the update
//! policy, as the pure decision says (`decide.rs`), and rolls back to the last
//! version a rollout completed on when the new one fails. Operators read,
//! pause, resume and undo it (`control.rs`).

mod control;
pub mod decide;
mod snapshot;
mod step;
mod surge;
mod update;

pub use control::ControlOutcome;
pub use step::StepReport;
pub use update::UpdateOutcome;

use crate::error::{Result, StoreError};
use borg_shared::rollout::RolloutState;
use borg_shared::{JobId, JobSpec, JobState};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgConnection;

/// The `stop_reason` prefix of an attempt a rollout replaces: its task goes
/// back to the queue once the attempt is gone, no run spent (`reports.rs`).
pub const REPLACED_BY: &str = "replaced by version ";

/// A rollout's stored state (`rollout_state`); paused is a flag beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "rollout_state", rename_all = "snake_case")]
pub(crate) enum Phase {
    Rolling,
    Done,
    RollingBack,
    RolledBack,
    Failed,
    /// Its job ended before it finished.
    Aborted,
}

impl Phase {
    fn is_active(self) -> bool {
        matches!(self, Phase::Rolling | Phase::RollingBack)
    }

    fn view(self, paused: bool) -> RolloutState {
        match self {
            _ if paused && self.is_active() => RolloutState::Paused,
            Phase::Rolling => RolloutState::Rolling,
            Phase::Done => RolloutState::Done,
            Phase::RollingBack => RolloutState::RollingBack,
            Phase::RolledBack => RolloutState::RolledBack,
            Phase::Failed => RolloutState::Failed,
            Phase::Aborted => RolloutState::Aborted,
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct RolloutRow {
    pub from_version: i32,
    pub to_version: i32,
    pub stable_version: i32,
    pub state: Phase,
    pub paused: bool,
    pub reason: Option<String>,
    pub started_at: DateTime<Utc>,
    pub phase_at: DateTime<Utc>,
    pub ready: i32,
    /// Milliseconds since `progress_at`, by the database's clock.
    pub since_progress_ms: i64,
}

const ROLLOUT_COLUMNS: &str = "from_version, to_version, stable_version, state, paused,
    reason, started_at, phase_at, ready,
    (EXTRACT(EPOCH FROM clock_timestamp() - progress_at) * 1000)::bigint AS since_progress_ms";

/// The job's rollout row, locked when `lock` (the caller holds the job row first).
pub(crate) async fn read_rollout(
    conn: &mut PgConnection,
    job: JobId,
    lock: bool,
) -> Result<Option<RolloutRow>> {
    let lock = if lock { "FOR UPDATE" } else { "" };
    Ok(sqlx::query_as(&format!(
        "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE job_id = $1 {lock}"
    ))
    .bind(job)
    .fetch_optional(&mut *conn)
    .await?)
}

/// A live job's row, locked, with what a rollout needs of it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct LockedJob {
    pub id: JobId,
    pub name: String,
    pub state: JobState,
    pub replicas: i32,
    pub version: i32,
    pub spec: Json<JobSpec>,
}

pub(crate) async fn lock_job(conn: &mut PgConnection, job: JobId) -> Result<Option<LockedJob>> {
    Ok(sqlx::query_as(concat!(
        "SELECT id, name, state, replicas, version, spec FROM jobs
         WHERE id = $1 AND state IN ",
        crate::live_job!(),
        " FOR NO KEY UPDATE"
    ))
    .bind(job)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Make `version` the job's target: its spec (keeping the job's replica count)
/// becomes the job's, and its requests the tasks' (what their next placement
/// asks for). The caller holds the job row.
pub(crate) async fn set_target(
    conn: &mut PgConnection,
    job: &LockedJob,
    version: i32,
) -> Result<()> {
    let spec: Option<Json<JobSpec>> =
        sqlx::query_scalar("SELECT spec FROM job_versions WHERE job_id = $1 AND version = $2")
            .bind(job.id)
            .bind(version)
            .fetch_optional(&mut *conn)
            .await?;
    let spec = spec
        .ok_or_else(|| StoreError::Vanished(format!("job {} has no version {version}", job.name)))?
        .0
        .with_replicas(i64::from(job.replicas));
    let r = &spec.task.resources;
    sqlx::query(
        "UPDATE jobs SET version = $2, spec = $3, priority = $4, updated_at = now() WHERE id = $1",
    )
    .bind(job.id)
    .bind(version)
    .bind(Json(&spec))
    .bind(spec.priority as i32)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        // A pending task whose priority changes moves in the queue (keyed by it).
        "WITH old AS (
             SELECT id, priority, created_at FROM tasks
             WHERE job_id = $1 AND state = 'pending' AND priority <> $2
         ), unqueued AS (
             DELETE FROM task_queue q USING old
             WHERE q.rank = -old.priority AND q.created_at = old.created_at AND q.task_id = old.id
         ), requeued AS (
             INSERT INTO task_queue (rank, created_at, task_id, part)
             SELECT -$2, created_at, id, queue_part($1) FROM old
             ON CONFLICT DO NOTHING
         )
         UPDATE tasks SET priority = $2, cpu_milli = $3, memory = $4, disk = $5
         WHERE job_id = $1 AND state IN ('pending', 'assigned', 'starting', 'running')
           AND (priority, cpu_milli, memory, disk) IS DISTINCT FROM ($2, $3, $4, $5)",
    )
    .bind(job.id)
    .bind(spec.priority as i32)
    .bind(r.cpu.0 as i64)
    .bind(r.memory.0 as i64)
    .bind(r.disk.0 as i64)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A step of a rollout as a job event (the job's state does not change).
pub(crate) async fn rollout_event(
    conn: &mut PgConnection,
    job: &LockedJob,
    reason: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO events (kind, job_id, from_state, to_state, reason)
         VALUES ('job', $1, $2, $2, $3)",
    )
    .bind(job.id)
    .bind(job.state.as_str())
    .bind(format!("{ROLLOUT_EVENT}{reason}"))
    .execute(&mut *conn)
    .await?;
    tracing::info!(job = %job.name, job_id = %job.id, reason, "rollout");
    Ok(())
}

/// The prefix every rollout event's reason starts with.
pub const ROLLOUT_EVENT: &str = "rollout: ";

/// End the active rollouts of jobs that ended (`aborted`, with why, and a job
/// event each): a killed or failed job's rollout no longer reads `rolling`.
/// The caller holds the job rows (lock order: job rows, then rollout rows).
pub(crate) async fn abort_rollouts(
    conn: &mut PgConnection,
    ends: &[(JobId, JobState, String)],
) -> Result<u64> {
    if ends.is_empty() {
        return Ok(0);
    }
    let aborted: Vec<(JobId, String)> = sqlx::query_as(
        "WITH u AS (
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(job_id, state, why)
         ), a AS (
             UPDATE rollouts r SET state = 'aborted', paused = false, updated_at = now(),
                 reason = 'job ' || u.state || ': ' || u.why
             FROM u WHERE r.job_id = u.job_id AND r.state IN ('rolling', 'rolling_back')
             RETURNING r.job_id, r.reason
         ), e AS (
             INSERT INTO events (kind, job_id, from_state, to_state, reason)
             SELECT 'job', a.job_id, u.state, u.state, $4 || 'aborted: ' || a.reason
             FROM a JOIN u ON u.job_id = a.job_id
         )
         SELECT job_id, reason FROM a",
    )
    .bind(ends.iter().map(|e| e.0 .0).collect::<Vec<_>>())
    .bind(ends.iter().map(|e| e.1.as_str()).collect::<Vec<_>>())
    .bind(ends.iter().map(|e| e.2.as_str()).collect::<Vec<_>>())
    .bind(ROLLOUT_EVENT)
    .fetch_all(&mut *conn)
    .await?;
    for (job, reason) in &aborted {
        tracing::info!(job_id = %job, reason, "rollout aborted");
    }
    metrics::counter!("borg_rollouts_finished_total", "state" => "aborted")
        .increment(aborted.len() as u64);
    Ok(aborted.len() as u64)
}
