//! History retention: a finished job stays readable (tasks, attempts, events,
//! death certificates) for a retention, then the leader deletes it. Each call
//! is one short transaction whose statements each touch a bounded number of
//! rows, so collecting a 10,000-task job never holds locks for long: events
//! first, then tasks (their attempts go with them), then the job row with its
//! counters, versions and rollout once nothing else of it is left. A job being
//! collected reads with part of its history gone for the few steps it takes.

use crate::lease::check_epoch;
use crate::Store;
use borg_shared::JobId;
use std::time::Duration;

/// Jobs taken together in one step.
const JOBS_PER_STEP: i64 = 16;

/// What one step deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    pub jobs: u64,
    pub tasks: u64,
    pub events: u64,
}

impl Collected {
    pub fn is_empty(&self) -> bool {
        *self == Collected::default()
    }
}

impl Store {
    /// One bounded step of history collection, as leader at `epoch`: among the
    /// jobs finished more than `retention` ago (and with no attempt still
    /// stopping), the oldest few lose at most `max_rows` events, else at most
    /// `max_rows` tasks with their attempts, else their job rows. Call again
    /// until it returns an empty [`Collected`].
    pub async fn collect_history(
        &self,
        epoch: i64,
        retention: Duration,
        max_rows: i64,
    ) -> crate::Result<Collected> {
        let mut tx = crate::tx::begin(&self.pool).await?;
        check_epoch(&mut tx, epoch).await?;
        // SKIP LOCKED: a row someone else holds is left for the next step.
        let jobs: Vec<JobId> = sqlx::query_scalar(
            "SELECT j.id FROM jobs j
             WHERE j.state IN ('succeeded', 'failed', 'killed')
               AND j.finished_at < now() - make_interval(secs => $1)
               AND NOT EXISTS (SELECT 1 FROM job_counts c WHERE c.job_id = j.id
                               AND c.pending + c.assigned + c.starting + c.running > 0)
               -- Nor a superseded attempt (no task's any more) still stopping.
               AND NOT EXISTS (SELECT 1 FROM tasks t JOIN attempts a ON a.task_id = t.id
                               WHERE t.job_id = j.id AND a.superseded
                                 AND a.state IN ('assigned', 'starting', 'running'))
             ORDER BY j.finished_at LIMIT $2
             FOR UPDATE OF j SKIP LOCKED",
        )
        .bind(retention.as_secs_f64())
        .bind(JOBS_PER_STEP)
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Collected::default();
        if jobs.is_empty() {
            return Ok(out);
        }
        out.events = sqlx::query(
            // By row address: `id` has no index of its own (migration 0022).
            "DELETE FROM events WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM events WHERE job_id = ANY($1) LIMIT $2))",
        )
        .bind(&jobs)
        .bind(max_rows)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if out.events == 0 {
            // A task's attempts go with it (no key cascades to them: migration 0019).
            out.tasks = sqlx::query(
                "WITH doomed AS (
                     SELECT id FROM tasks WHERE job_id = ANY($1) LIMIT $2
                 ), attempts_gone AS (
                     DELETE FROM attempts WHERE task_id IN (SELECT id FROM doomed)
                 )
                 DELETE FROM tasks WHERE id IN (SELECT id FROM doomed)",
            )
            .bind(&jobs)
            .bind(max_rows)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        if out.events == 0 && out.tasks == 0 {
            out.jobs = sqlx::query("DELETE FROM jobs WHERE id = ANY($1)")
                .bind(&jobs)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        metrics::counter!("borg_history_deleted_rows_total", "table" => "events")
            .increment(out.events);
        metrics::counter!("borg_history_deleted_rows_total", "table" => "tasks")
            .increment(out.tasks);
        metrics::counter!("borg_history_deleted_rows_total", "table" => "jobs").increment(out.jobs);
        if out.jobs > 0 {
            tracing::info!(
                jobs = out.jobs,
                "finished jobs past their retention deleted"
            );
        } else {
            tracing::debug!(
                events = out.events,
                tasks = out.tasks,
                "history collection step"
            );
        }
        Ok(out)
    }
}
