//! Scaling a live service: its replica count changes in one transaction with
//! the job row locked. Up adds `pending` tasks at the next indexes, and brings
//! back (`killed → pending`, history kept) the tasks at indexes an earlier
//! scale-down ended; down ends the highest indexes first (pending ones at once,
//! placed ones asked to stop: they end `killed` when their borglet reports them
//! gone).

use crate::finish::lock_live_jobs;
use crate::moves::{move_tasks, TaskMove, Transitions};
use crate::{live_attempt, Store, CHANNEL_PENDING, CHANNEL_PLACED};
use borg_shared::wire::JobView;
use borg_shared::{JobId, JobKind, JobState, TaskId, TaskState};

#[derive(Debug)]
pub enum ScaleOutcome {
    Scaled(Box<JobView>),
    /// Already that many replicas.
    Unchanged(Box<JobView>),
    NotFound,
    AlreadyFinished(JobState),
    /// Only services scale; a batch job's replicas are its work items.
    NotAService,
    /// Growing back over an index whose task an earlier scale-down is still
    /// stopping: it comes back once it has ended (`killed`).
    StillStopping {
        first: i32,
    },
}

/// The indexes in [$2, $3) with no task yet: tasks copied from the job's task
/// 0 (same requests and priority).
const ADD_TASKS: &str = "
WITH t AS (
    INSERT INTO tasks (id, job_id, index, priority, cpu_milli, memory, disk, max_runs)
    SELECT uuid_v7(), t0.job_id, i, t0.priority, t0.cpu_milli, t0.memory, t0.disk, t0.max_runs
    FROM tasks t0, generate_series($2::int, $3::int - 1) AS i
    WHERE t0.job_id = $1 AND t0.index = 0
      AND NOT EXISTS (SELECT 1 FROM tasks x WHERE x.job_id = $1 AND x.index = i)
    RETURNING id, job_id, index
), te AS (
    INSERT INTO events (kind, job_id, task_id, to_state, reason)
    SELECT 'task', t.job_id, t.id, 'pending', $4 FROM t ORDER BY t.index
), c AS (
    INSERT INTO job_counts AS c (job_id, shard, pending)
    SELECT $1, 0, count(*)::int FROM t
    ON CONFLICT (job_id, shard) DO UPDATE SET pending = c.pending + EXCLUDED.pending
)
SELECT count(*) FROM t";

impl Store {
    /// Set a live service's replica count to `replicas` (1 ≤ replicas ≤ the spec's maximum).
    /// With `owner`, only a job of that owner is scaled (as `kill_job`).
    pub async fn scale_job(
        &self,
        name: &str,
        owner: Option<&str>,
        replicas: i32,
    ) -> crate::Result<ScaleOutcome> {
        let Some(job) = self.find_job(name).await? else {
            return Ok(ScaleOutcome::NotFound);
        };
        if owner.is_some_and(|o| o != job.owner) {
            return Ok(ScaleOutcome::NotFound);
        }
        if job.state.is_terminal() {
            return Ok(ScaleOutcome::AlreadyFinished(job.state));
        }
        if job.kind != JobKind::Service {
            return Ok(ScaleOutcome::NotAService);
        }
        let mut tx = crate::tx::begin(&self.pool).await?;
        let locked = lock_live_jobs(&mut tx, &[job.id]).await?;
        let Some(live) = locked.first() else {
            drop(tx);
            let state = self
                .find_job(name)
                .await?
                .map_or(JobState::Killed, |j| j.state);
            return Ok(ScaleOutcome::AlreadyFinished(state));
        };
        let from = live.replicas;
        if from == replicas {
            drop(tx);
            return self.view(name, ScaleOutcome::Unchanged).await;
        }
        let why = format!("scaled from {from} to {replicas} replicas");
        let mut moved = Transitions::default();
        if replicas > from {
            if let Err(first) = revive(&mut tx, live.id, from, replicas, &why, &mut moved).await? {
                return Ok(ScaleOutcome::StillStopping { first });
            }
            sqlx::query(ADD_TASKS)
                .bind(live.id)
                .bind(from)
                .bind(replicas)
                .bind(&why)
                .execute(&mut *tx)
                .await?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL_PENDING)
                .bind(live.id.to_string())
                .execute(&mut *tx)
                .await?;
        } else {
            shrink(&mut tx, live.id, replicas, &why, &mut moved).await?;
        }
        sqlx::query(
            "UPDATE jobs SET replicas = $2, spec = jsonb_set(spec, '{replicas}', to_jsonb($2)),
                 updated_at = now()
             WHERE id = $1",
        )
        .bind(live.id)
        .bind(replicas)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO events (kind, job_id, from_state, to_state, reason)
             VALUES ('job', $1, $2, $2, $3)",
        )
        .bind(live.id)
        .bind(live.state.as_str())
        .bind(&why)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        moved.emit();
        tracing::info!(job = %name, job_id = %live.id, from, to = replicas, "job scaled");
        metrics::counter!("borg_job_scales_total").increment(1);
        self.view(name, ScaleOutcome::Scaled).await
    }

    async fn view(
        &self,
        name: &str,
        wrap: fn(Box<JobView>) -> ScaleOutcome,
    ) -> crate::Result<ScaleOutcome> {
        let job = self
            .find_job(name)
            .await?
            .ok_or_else(|| crate::StoreError::Vanished(format!("job {name} vanished")))?;
        Ok(wrap(Box::new(job)))
    }
}

/// Bring back the tasks that ended at indexes [`from`, `replicas`) (killed
/// by an earlier scale-down, or failed for good before it): `→ pending` with
/// the requests, priority and run budget of today's task 0, runs counted
/// afresh. `Err(index)` (nothing written) when one of them is still stopping.
async fn revive(
    tx: &mut sqlx::PgConnection,
    job: JobId,
    from: i32,
    replicas: i32,
    why: &str,
    moved: &mut Transitions,
) -> crate::Result<Result<(), i32>> {
    let ended: Vec<(TaskId, i32, TaskState)> = sqlx::query_as(
        "SELECT id, index, state FROM tasks
         WHERE job_id = $1 AND index >= $2 AND index < $3
         ORDER BY id FOR UPDATE",
    )
    .bind(job)
    .bind(from)
    .bind(replicas)
    .fetch_all(&mut *tx)
    .await?;
    // Still live (a scale-down's stop not through yet): later. Ended tasks come
    // back, also one that failed for good (a service's task that could not
    // start) before the scale-down left it beyond the replicas.
    if let Some(first) = ended
        .iter()
        .filter(|(_, _, state)| !(state.is_terminal() && state.can_move_to(TaskState::Pending)))
        .map(|(_, index, _)| *index)
        .min()
    {
        return Ok(Err(first));
    }
    if ended.is_empty() {
        return Ok(Ok(()));
    }
    let ids: Vec<TaskId> = ended.iter().map(|(id, _, _)| *id).collect();
    let from_state: std::collections::HashMap<TaskId, TaskState> =
        ended.iter().map(|(id, _, state)| (*id, *state)).collect();
    sqlx::query(
        "UPDATE tasks t SET priority = t0.priority, cpu_milli = t0.cpu_milli, memory = t0.memory,
             disk = t0.disk, max_runs = t0.max_runs, runs = 0, not_before = NULL
         FROM tasks t0
         WHERE t.id = ANY($2) AND t0.job_id = $1 AND t0.index = 0",
    )
    .bind(job)
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    let moves: Vec<TaskMove> = ids
        .into_iter()
        .map(|task| TaskMove {
            job,
            task,
            attempt: None,
            machine: None,
            from: from_state[&task],
            to: TaskState::Pending,
            reason: why.to_string(),
            backoff: None,
            placed: false,
            failed_runs: None,
        })
        .collect();
    move_tasks(tx, &moves, moved).await?;
    Ok(Ok(()))
}

/// End the tasks at `replicas` and above: pending ones now, placed ones by
/// asking their borglet to stop them.
async fn shrink(
    tx: &mut sqlx::PgConnection,
    job: JobId,
    replicas: i32,
    why: &str,
    moved: &mut Transitions,
) -> crate::Result<()> {
    let pending: Vec<(TaskId,)> = sqlx::query_as(
        "SELECT id FROM tasks WHERE job_id = $1 AND index >= $2 AND state = 'pending'
         ORDER BY id FOR UPDATE",
    )
    .bind(job)
    .bind(replicas)
    .fetch_all(&mut *tx)
    .await?;
    let moves: Vec<TaskMove> = pending
        .into_iter()
        .map(|(task,)| TaskMove {
            job,
            task,
            attempt: None,
            machine: None,
            from: TaskState::Pending,
            to: TaskState::Killed,
            reason: why.to_string(),
            backoff: None,
            placed: false,
            failed_runs: None,
        })
        .collect();
    move_tasks(tx, &moves, moved).await?;
    sqlx::query(concat!(
        "WITH stopped AS (
             UPDATE attempts a SET stop_reason = $3
             FROM tasks t
             WHERE t.id = a.task_id AND t.job_id = $1 AND t.index >= $2
               AND a.state IN ",
        live_attempt!(),
        " AND a.stop_reason IS NULL
             RETURNING a.machine_id)
         SELECT pg_notify($4, m.machine_id::text)
         FROM (SELECT DISTINCT machine_id FROM stopped) m"
    ))
    .bind(job)
    .bind(replicas)
    .bind(why)
    .bind(CHANNEL_PLACED)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
