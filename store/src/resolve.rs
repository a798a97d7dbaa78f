//! Naming: where the running tasks of a job are.

use crate::Store;
use borg_shared::AttemptId;

/// One running task: index, machine name, borglet address, attempt, host ports.
pub type RunningTask = (i32, String, String, AttemptId, Vec<i32>);

impl Store {
    /// The running tasks of the live job named `name` (else its newest
    /// incarnation), by index, one row each; `None` when no job has that name.
    pub async fn running_tasks(&self, name: &str) -> crate::Result<Option<Vec<RunningTask>>> {
        let job: Option<(borg_shared::JobId,)> = sqlx::query_as(
            "SELECT id FROM jobs WHERE name = $1
             ORDER BY (state IN ('pending', 'running')) DESC, created_at DESC LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        let Some((job,)) = job else { return Ok(None) };
        // A task waiting for its new attempt during a surging rollout is
        // served by its superseded attempt (running, not asked to stop).
        let rows: Vec<RunningTask> = sqlx::query_as(
            "SELECT t.index, m.name, m.address, a.id, a.ports
             FROM tasks t
             JOIN attempts a ON a.id = t.attempt_id
             JOIN machines m ON m.id = a.machine_id
             WHERE t.job_id = $1 AND t.state = 'running'
             UNION ALL
             SELECT t.index, m.name, m.address, s.id, s.ports
             FROM tasks t
             JOIN attempts s ON s.task_id = t.id AND s.superseded AND s.state = 'running'
                  AND s.stop_reason IS NULL
             JOIN machines m ON m.id = s.machine_id
             WHERE t.job_id = $1 AND t.state <> 'running'
             ORDER BY 1",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(rows))
    }
}
