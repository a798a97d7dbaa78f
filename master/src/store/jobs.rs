//! Jobs: submit, read, kill, and the job state derived from its tasks.

use super::rows::{EventRow, JobRow, TaskRow};
use super::{is_unique_violation, Store, CHANNEL_PENDING, CHANNEL_PLACED};
use borg_shared::wire::JobView;
use borg_shared::{JobId, JobKind, JobSpec, JobState, MachineId};
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};

/// The columns of a job view, with task counts aggregated per state.
const JOB_COLUMNS: &str = "j.id, j.name, j.kind, j.state, j.owner, j.priority, j.replicas, j.spec,
    j.created_at, j.finished_at,
    COALESCE((SELECT json_agg(json_build_array(c.state, c.n))
              FROM (SELECT state, count(*) AS n FROM tasks WHERE job_id = j.id GROUP BY state) c),
             '[]'::json) AS counts";

#[allow(clippy::large_enum_variant)] // built once per request
pub enum SubmitOutcome {
    Created(JobView),
    /// The same name is live with an identical spec: submitting is safe to retry.
    Unchanged(JobView),
    /// The name is live with a different spec.
    Conflict(JobView),
}

pub enum KillOutcome {
    Killed(Box<JobView>),
    NotFound,
    AlreadyFinished(JobState),
}

impl Store {
    /// Commit a job, its tasks and their `pending` events in one transaction.
    pub async fn submit(&self, spec: &JobSpec) -> anyhow::Result<SubmitOutcome> {
        let mut tx = self.pool.begin().await?;
        let id = JobId::new();
        let res = sqlx::query(
            "INSERT INTO jobs (id, name, kind, owner, priority, replicas, spec)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(&spec.name)
        .bind(spec.kind)
        .bind(&spec.owner)
        .bind(spec.priority as i32)
        .bind(spec.replicas as i32)
        .bind(Json(spec))
        .execute(&mut *tx)
        .await;
        if let Err(err) = res {
            if is_unique_violation(&err, "jobs_live_name") {
                drop(tx);
                return self.resolve_duplicate(spec).await;
            }
            return Err(err.into());
        }
        let r = &spec.task.resources;
        let max_runs = match spec.kind {
            JobKind::Batch => spec.task.max_attempts() as i32,
            // Services restart forever; the column only bounds batch retries.
            JobKind::Service => i32::MAX,
        };
        sqlx::query(
            "INSERT INTO tasks (id, job_id, index, priority, cpu_milli, memory, disk, max_runs)
             SELECT gen_random_uuid(), $1, i, $2, $3, $4, $5, $6 FROM generate_series(0, $7 - 1) AS i",
        )
        .bind(id)
        .bind(spec.priority as i32)
        .bind(r.cpu.0 as i64)
        .bind(r.memory.0 as i64)
        .bind(r.disk.0 as i64)
        .bind(max_runs)
        .bind(spec.replicas as i32)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO events (job_id, task_id, to_state, reason)
             SELECT job_id, id, 'pending', 'submitted' FROM tasks WHERE job_id = $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL_PENDING)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        metrics::counter!("borg_jobs_submitted_total").increment(1);
        tracing::info!(job = %spec.name, job_id = %id, replicas = spec.replicas, "job submitted");
        let view = self
            .job_detail(&spec.name)
            .await?
            .ok_or_else(|| anyhow::anyhow!("job {} vanished right after its commit", spec.name))?;
        Ok(SubmitOutcome::Created(view))
    }

    async fn resolve_duplicate(&self, spec: &JobSpec) -> anyhow::Result<SubmitOutcome> {
        let Some(live) = self.job_detail(&spec.name).await? else {
            // It finished between our insert and this read: a retry will succeed.
            anyhow::bail!("job {} changed state during submit", spec.name);
        };
        if live.state.is_terminal() {
            anyhow::bail!("job {} changed state during submit", spec.name);
        }
        Ok(if live.spec == *spec {
            SubmitOutcome::Unchanged(live)
        } else {
            SubmitOutcome::Conflict(live)
        })
    }

    pub async fn list_jobs(&self, state: Option<JobState>) -> anyhow::Result<Vec<JobView>> {
        let rows: Vec<JobRow> = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs j
             WHERE $1::job_state IS NULL OR j.state = $1
             ORDER BY j.created_at DESC LIMIT 1000"
        ))
        .bind(state)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(JobRow::into_view).collect())
    }

    /// The live job of that name, else the most recent one.
    async fn find_job(&self, name: &str) -> anyhow::Result<Option<JobView>> {
        let row: Option<JobRow> = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs j WHERE j.name = $1
             ORDER BY (j.state IN ('pending', 'running')) DESC, j.created_at DESC LIMIT 1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(JobRow::into_view))
    }

    /// A job with its tasks and recent events.
    pub async fn job_detail(&self, name: &str) -> anyhow::Result<Option<JobView>> {
        let Some(mut job) = self.find_job(name).await? else {
            return Ok(None);
        };
        let tasks: Vec<TaskRow> = sqlx::query_as(
            "SELECT t.index, t.state, t.reason, m.name AS machine, a.id AS attempt, t.runs,
                    a.pid, a.exit_code, a.signal, t.updated_at
             FROM tasks t
             LEFT JOIN LATERAL (SELECT * FROM attempts WHERE task_id = t.id
                                ORDER BY created_at DESC LIMIT 1) a ON true
             LEFT JOIN machines m ON m.id = a.machine_id
             WHERE t.job_id = $1 ORDER BY t.index",
        )
        .bind(job.id)
        .fetch_all(&self.pool)
        .await?;
        let mut events: Vec<EventRow> = sqlx::query_as(
            "SELECT e.id, e.time, j.name AS job, t.index AS task_index, e.attempt_id AS attempt,
                    m.name AS machine, e.from_state, e.to_state, e.reason
             FROM events e JOIN jobs j ON j.id = e.job_id
             LEFT JOIN tasks t ON t.id = e.task_id
             LEFT JOIN machines m ON m.id = e.machine_id
             WHERE e.job_id = $1 ORDER BY e.id DESC LIMIT 50",
        )
        .bind(job.id)
        .fetch_all(&self.pool)
        .await?;
        events.reverse();
        job.tasks = Some(tasks.into_iter().map(Into::into).collect());
        job.events = Some(events.into_iter().map(Into::into).collect());
        Ok(Some(job))
    }

    /// Kill a live job: pending tasks end at once; placed attempts are marked to
    /// stop and end when their borglet reports them gone.
    pub async fn kill_job(&self, name: &str, by: &str) -> anyhow::Result<KillOutcome> {
        let mut tx = self.pool.begin().await?;
        let job: Option<(JobId, JobState)> = sqlx::query_as(
            "SELECT id, state FROM jobs WHERE name = $1
             ORDER BY (state IN ('pending', 'running')) DESC, created_at DESC LIMIT 1 FOR NO KEY UPDATE",
        )
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((job_id, state)) = job else {
            return Ok(KillOutcome::NotFound);
        };
        if state.is_terminal() {
            return Ok(KillOutcome::AlreadyFinished(state));
        }
        let reason = format!("killed by {by}");
        end_job(&mut tx, job_id, JobState::Killed, &reason).await?;
        tx.commit().await?;
        tracing::info!(job = name, %job_id, by, "job killed");
        let view = self
            .job_detail(name)
            .await?
            .ok_or_else(|| anyhow::anyhow!("job {name} vanished"))?;
        Ok(KillOutcome::Killed(Box::new(view)))
    }
}

/// Finish a job: set its final state, end its pending tasks, and ask every
/// placed attempt to stop (the poller tells their borglets at once).
pub(super) async fn end_job(
    tx: &mut Transaction<'_, Postgres>,
    job_id: JobId,
    state: JobState,
    reason: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE jobs SET state = $2, finished_at = now(), updated_at = now() WHERE id = $1",
    )
    .bind(job_id)
    .bind(state)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "WITH ended AS (
            UPDATE tasks SET state = 'killed', reason = $2, updated_at = now()
            WHERE job_id = $1 AND state = 'pending' RETURNING id)
         INSERT INTO events (job_id, task_id, from_state, to_state, reason)
         SELECT $1, id, 'pending', 'killed', $2 FROM ended",
    )
    .bind(job_id)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    let machines: Vec<(MachineId,)> = sqlx::query_as(
        "UPDATE attempts a SET stop_reason = $2
         FROM tasks t
         WHERE t.id = a.task_id AND t.job_id = $1
           AND a.state IN ('assigned', 'starting', 'running') AND a.stop_reason IS NULL
         RETURNING a.machine_id",
    )
    .bind(job_id)
    .bind(reason)
    .fetch_all(&mut **tx)
    .await?;
    let mut machines: Vec<MachineId> = machines.into_iter().map(|(m,)| m).collect();
    machines.sort();
    machines.dedup();
    for machine in machines {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL_PLACED)
            .bind(machine.to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Re-derive each job's state from its tasks. Batch: succeeded when all
/// succeeded, failed as soon as one failed for good. Either kind: running while
/// any task runs.
pub(super) async fn refresh_job_states(
    tx: &mut Transaction<'_, Postgres>,
    jobs: &[JobId],
) -> anyhow::Result<()> {
    let rows: Vec<(JobId, JobKind, JobState, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT j.id, j.kind, j.state, c.total, c.succeeded, c.failed, c.running
         FROM jobs j
         JOIN LATERAL (SELECT count(*) AS total,
                              count(*) FILTER (WHERE t.state = 'succeeded') AS succeeded,
                              count(*) FILTER (WHERE t.state IN ('failed', 'lost')) AS failed,
                              count(*) FILTER (WHERE t.state = 'running') AS running
                       FROM tasks t WHERE t.job_id = j.id) c ON true
         WHERE j.id = ANY($1) AND j.state IN ('pending', 'running')
         ORDER BY j.id FOR NO KEY UPDATE OF j",
    )
    .bind(jobs.iter().map(|j| j.0).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    for (id, kind, state, total, succeeded, failed, running) in rows {
        let next = match kind {
            JobKind::Batch if succeeded == total => JobState::Succeeded,
            JobKind::Batch if failed > 0 => JobState::Failed,
            _ if running > 0 => JobState::Running,
            _ => state,
        };
        if next == state {
            continue;
        }
        tracing::info!(job_id = %id, from = %state, to = %next, "job state");
        if next.is_terminal() {
            let reason = match next {
                JobState::Failed => "another task of the job failed",
                _ => "job finished",
            };
            end_job(tx, id, next, reason).await?;
        } else {
            sqlx::query("UPDATE jobs SET state = $2, updated_at = now() WHERE id = $1")
                .bind(id)
                .bind(next)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}
