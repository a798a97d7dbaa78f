//! The one place a task's state moves: check the move is allowed, update the
//! row conditionally on its current state, and append the event — in the
//! caller's transaction.

use borg_shared::{AttemptId, JobId, MachineId, TaskId, TaskState};
use sqlx::{Postgres, Transaction};
use std::time::Duration;

pub(super) struct TaskMove<'a> {
    pub job: JobId,
    pub task: TaskId,
    pub attempt: Option<AttemptId>,
    pub machine: Option<MachineId>,
    pub from: TaskState,
    pub to: TaskState,
    pub reason: Option<&'a str>,
    /// Only for moves back to `pending`: hold the task until this backoff has passed.
    pub backoff: Option<Duration>,
}

/// Returns false (and writes nothing) when the task was no longer in `from`.
pub(super) async fn move_task(
    tx: &mut Transaction<'_, Postgres>,
    mv: TaskMove<'_>,
) -> anyhow::Result<bool> {
    if !mv.from.can_move_to(mv.to) {
        anyhow::bail!(
            "task {} may not move from {} to {}",
            mv.task,
            mv.from,
            mv.to
        );
    }
    let requeue = mv.to == TaskState::Pending;
    let backoff_ms = mv.backoff.map(|b| b.as_millis() as i64).unwrap_or(0);
    let updated = sqlx::query(
        "UPDATE tasks SET state = $3, reason = $4, updated_at = now(),
             attempt_id = CASE WHEN $5 THEN NULL ELSE attempt_id END,
             not_before = CASE WHEN $5 AND $6 > 0 THEN now() + make_interval(secs => $6 / 1000.0)
                               ELSE not_before END
         WHERE id = $1 AND state = $2",
    )
    .bind(mv.task)
    .bind(mv.from)
    .bind(mv.to)
    .bind(mv.reason)
    .bind(requeue)
    .bind(backoff_ms)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO events (job_id, task_id, attempt_id, machine_id, from_state, to_state, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(mv.job)
    .bind(mv.task)
    .bind(mv.attempt)
    .bind(mv.machine)
    .bind(mv.from)
    .bind(mv.to)
    .bind(mv.reason)
    .execute(&mut **tx)
    .await?;
    metrics::counter!("borg_task_transitions_total", "from" => mv.from.as_str(), "to" => mv.to.as_str())
        .increment(1);
    tracing::info!(
        job_id = %mv.job, task_id = %mv.task, attempt = ?mv.attempt.map(|a| a.to_string()),
        from = %mv.from, to = %mv.to, reason = mv.reason.unwrap_or(""), "task state"
    );
    Ok(true)
}
