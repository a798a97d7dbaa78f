//! Jobs: submit, read, kill. A job's state follows its task counters (see
//! `finish.rs`); reads never recount tasks.

use crate::error::{Result, StoreError};
use crate::finish::{end_jobs, lock_live_jobs, EndJob};
use crate::moves::{job_events, MovedJob, Transitions};
use crate::rows::{
    Counts, EventRow, JobRow, TaskRow, COUNTS_JOIN, SUPERSEDED_CTE, TASK_ATTEMPT_COLUMNS,
};
use crate::{is_unique_violation, live_job, Store, CHANNEL_PENDING};
use borg_shared::wire::{EventView, JobView, TaskView};
use borg_shared::{JobId, JobKind, JobSpec, JobState};
use chrono::{DateTime, Utc};
use sqlx::types::Json;

/// The columns of a job view; `c` is `COUNTS_JOIN`.
pub(crate) const JOB_COLUMNS: &str =
    "j.id, j.name, j.kind, j.state, j.owner, j.priority, j.replicas, j.version, j.spec,
    j.created_at, j.finished_at, c.*";

/// Tasks per page of a job's detail, unless asked otherwise.
pub const DEFAULT_TASK_PAGE: u32 = 1000;
/// The most tasks one page may hold.
pub const MAX_TASK_PAGE: u32 = 10_000;

#[allow(clippy::large_enum_variant)] // built once per request
pub enum SubmitOutcome {
    /// Committed; the view is the summary (no tasks, no events).
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

/// Which tasks of a job a detail read returns: those with `index > after`, at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct TaskPage {
    pub after: Option<i32>,
    pub limit: u32,
}

impl Default for TaskPage {
    fn default() -> Self {
        TaskPage {
            after: None,
            limit: DEFAULT_TASK_PAGE,
        }
    }
}

/// Submit in one statement: the job, its tasks, their counters and every
/// event, and the scheduler's wake-up (delivered at commit).
const SUBMIT: &str = "
WITH j AS (
    INSERT INTO jobs (id, name, kind, owner, priority, replicas, spec)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    RETURNING id, created_at
), t AS (
    INSERT INTO tasks (id, job_id, index, priority, cpu_milli, memory, disk, max_runs)
    SELECT uuid_v7(), j.id, i, $5, $8, $9, $10, $11
    FROM j, generate_series(0, $6 - 1) AS i
    RETURNING id, job_id, index
), te AS (
    INSERT INTO events (kind, job_id, task_id, to_state, reason)
    SELECT 'task', t.job_id, t.id, 'pending', 'submitted' FROM t ORDER BY t.index
), je AS (
    INSERT INTO events (kind, job_id, to_state, reason)
    SELECT 'job', j.id, 'pending', 'submitted' FROM j
), c AS (
    INSERT INTO job_counts (job_id, shard, pending) SELECT j.id, 0, $6 FROM j
), v AS (
    INSERT INTO job_versions (job_id, version, spec) SELECT j.id, 1, $7 FROM j
)
SELECT j.created_at, pg_notify($12, j.id::text)::text FROM j";

/// Inserts tried when the name's live job keeps finishing in between.
const SUBMIT_TRIES: usize = 3;

impl Store {
    /// Commit a job, its tasks and their `pending` events in one statement.
    ///
    /// A name is taken only by a live job: a finished job's name takes a new,
    /// distinct job at once (the name then stands for the new one; the old
    /// keeps its history, by id in the event stream, until collected). When the
    /// live job of that name finishes between our insert and our look at it,
    /// the insert is simply tried again.
    pub async fn submit(&self, spec: &JobSpec) -> Result<SubmitOutcome> {
        for _ in 0..SUBMIT_TRIES {
            if let Some(out) = self.try_submit(spec).await? {
                return Ok(out);
            }
        }
        Err(StoreError::Vanished(format!(
            "job {} kept finishing during submit",
            spec.name
        )))
    }

    /// One try; `None` when the name's live job finished meanwhile.
    async fn try_submit(&self, spec: &JobSpec) -> Result<Option<SubmitOutcome>> {
        let id = JobId::new();
        let r = &spec.task.resources;
        let max_runs = match spec.kind {
            JobKind::Batch => spec.task.max_attempts() as i32,
            // Services restart forever; the column only bounds batch retries.
            JobKind::Service => i32::MAX,
        };
        let res: std::result::Result<(DateTime<Utc>, String), sqlx::Error> = sqlx::query_as(SUBMIT)
            .bind(id)
            .bind(&spec.name)
            .bind(spec.kind)
            .bind(&spec.owner)
            .bind(spec.priority as i32)
            .bind(spec.replicas as i32)
            .bind(Json(spec))
            .bind(r.cpu.0 as i64)
            .bind(r.memory.0 as i64)
            .bind(r.disk.0 as i64)
            .bind(max_runs)
            .bind(CHANNEL_PENDING)
            .fetch_one(&self.pool)
            .await;
        let created_at = match res {
            Ok((created_at, _)) => created_at,
            Err(err) if is_unique_violation(&err, "jobs_live_name") => {
                return self.resolve_duplicate(spec).await;
            }
            Err(err) => return Err(err.into()),
        };
        metrics::counter!("borg_jobs_submitted_total").increment(1);
        tracing::info!(job = %spec.name, job_id = %id, replicas = spec.replicas, "job submitted");
        let row = JobRow {
            id,
            name: spec.name.clone(),
            kind: spec.kind,
            state: JobState::Pending,
            owner: spec.owner.clone(),
            priority: spec.priority as i32,
            replicas: spec.replicas as i32,
            version: 1,
            spec: Json(spec.clone()),
            created_at,
            finished_at: None,
            counts: Counts {
                n_pending: spec.replicas,
                ..Counts::default()
            },
        };
        Ok(Some(SubmitOutcome::Created(row.into_view())))
    }

    /// The name is taken by a live job: the same spec is that job, another a
    /// conflict. `None` if it finished (or went) since our insert failed.
    async fn resolve_duplicate(&self, spec: &JobSpec) -> Result<Option<SubmitOutcome>> {
        let Some(live) = self.find_job(&spec.name).await? else {
            return Ok(None);
        };
        if live.state.is_terminal() {
            return Ok(None);
        }
        Ok(Some(if live.spec == *spec {
            SubmitOutcome::Unchanged(live)
        } else {
            SubmitOutcome::Conflict(live)
        }))
    }

    /// The live job of that name, else the most recent one; without tasks or events.
    pub async fn find_job(&self, name: &str) -> Result<Option<JobView>> {
        let row: Option<JobRow> = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM (
                 SELECT * FROM jobs WHERE name = $1
                 ORDER BY (state IN {live}) DESC, created_at DESC LIMIT 1) j
             {COUNTS_JOIN}",
            live = live_job!()
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(JobRow::into_view))
    }

    /// The owner of the job a name stands for (the live one, else the newest).
    pub async fn job_owner(&self, name: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT owner FROM jobs WHERE name = $1
             ORDER BY (state IN {live}) DESC, created_at DESC LIMIT 1",
            live = live_job!()
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A job with one page of its tasks and its recent task events.
    pub async fn job_detail(&self, name: &str, page: TaskPage) -> Result<Option<JobView>> {
        let Some(mut job) = self.find_job(name).await? else {
            return Ok(None);
        };
        let limit = page.limit.clamp(1, MAX_TASK_PAGE);
        // `attempt_id` names the newest attempt: one key lookup per task. The
        // job's `job_waits` row is joined, so its reason is read once for the
        // page, not once per task.
        let mut tasks: Vec<TaskRow> = sqlx::query_as(&format!(
            "WITH {SUPERSEDED_CTE}
             SELECT t.index, t.state, task_reason(t, w) AS reason,
                    m.name AS machine, a.id AS attempt, a.version, t.runs,
                    a.pid, a.exit_code, a.signal, COALESCE(a.restarts, 0) AS restarts, a.last_exit,
                    t.updated_at, {TASK_ATTEMPT_COLUMNS}, g.superseded_attempt, g.superseded_version,
                    g.superseded_machine, g.superseded_state, g.superseded_stopping
             FROM tasks t
             LEFT JOIN attempts a ON a.id = t.attempt_id
             LEFT JOIN machines m ON m.id = a.machine_id
             LEFT JOIN g ON g.task_id = t.id
             LEFT JOIN job_waits w ON w.job_id = t.job_id
             WHERE t.job_id = $1 AND t.index > $2
             ORDER BY t.index LIMIT $3"
        ))
        .bind(job.id)
        .bind(page.after.unwrap_or(-1))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let more = tasks.len() > limit as usize;
        tasks.truncate(limit as usize);
        job.tasks_next = more.then(|| tasks.last().map(|t| t.index)).flatten();
        let mut events: Vec<EventRow> = sqlx::query_as(
            "SELECT e.id, e.time, $2 AS job, t.index AS task_index, e.attempt_id AS attempt,
                    m.name AS machine, e.from_state::task_state, e.to_state::task_state, e.reason
             -- A range, not `job_id = $1`: with an equality the planner drops job_id
             -- from the order and may walk the whole table backwards by id, hoping
             -- to meet this job's events soon (54 ms behind 500,000 newer events);
             -- so spelled, only the index (job_id, id) gives the order.
             FROM (SELECT * FROM events WHERE job_id >= $1 AND job_id <= $1 AND kind = 'task'
                   ORDER BY job_id DESC, id DESC LIMIT 50) e
             LEFT JOIN tasks t ON t.id = e.task_id
             LEFT JOIN machines m ON m.id = e.machine_id
             ORDER BY e.id DESC",
        )
        .bind(job.id)
        .bind(&job.name)
        .fetch_all(&self.pool)
        .await?;
        events.reverse();
        job.tasks = Some(tasks.into_iter().map(TaskView::from).collect());
        job.events = Some(events.into_iter().map(EventView::from).collect());
        Ok(Some(job))
    }

    /// Kill a live job: pending tasks end at once; placed attempts are marked to
    /// stop and end when their borglet reports them gone.
    ///
    /// With `owner`, only a job of that owner is killed (the one the caller's
    /// rights were checked on); another owner's job of the same name is not found.
    pub async fn kill_job(&self, name: &str, owner: Option<&str>, by: &str) -> Result<KillOutcome> {
        let Some(job) = self.find_job(name).await? else {
            return Ok(KillOutcome::NotFound);
        };
        if owner.is_some_and(|o| o != job.owner) {
            return Ok(KillOutcome::NotFound);
        }
        if job.state.is_terminal() {
            return Ok(KillOutcome::AlreadyFinished(job.state));
        }
        let mut tx = crate::tx::begin(&self.pool).await?;
        let locked = lock_live_jobs(&mut tx, &[job.id]).await?;
        let Some(live) = locked.first() else {
            // It finished between the read and the lock.
            drop(tx);
            let state = self
                .find_job(name)
                .await?
                .map_or(JobState::Killed, |j| j.state);
            return Ok(KillOutcome::AlreadyFinished(state));
        };
        let mut moved = Transitions::default();
        let end = EndJob {
            job: live.id,
            name: live.name.clone(),
            from: live.state,
            to: JobState::Killed,
            reason: format!("killed by {by}"),
        };
        end_jobs(&mut tx, &[end], &mut moved).await?;
        tx.commit().await?;
        moved.emit();
        let view = self
            .find_job(name)
            .await?
            .ok_or_else(|| StoreError::Vanished(format!("job {name} vanished")))?;
        Ok(KillOutcome::Killed(Box::new(view)))
    }
}

/// Write job state moves (not terminal ones: see `end_jobs`) and their events.
pub(crate) async fn set_job_states(
    conn: &mut sqlx::PgConnection,
    moves: &[MovedJob],
) -> Result<()> {
    if moves.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE jobs j SET state = u.state::job_state, updated_at = now(),
             finished_at = CASE WHEN u.state IN ('succeeded', 'failed', 'killed') THEN now() END
         FROM unnest($1::uuid[], $2::text[]) AS u(id, state)
         WHERE j.id = u.id",
    )
    .bind(moves.iter().map(|m| m.job.0).collect::<Vec<_>>())
    .bind(moves.iter().map(|m| m.to.as_str()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    job_events(conn, moves).await
}
