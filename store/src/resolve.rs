//! Naming: where the running tasks of a job are.

use crate::Store;
use borg_shared::AttemptId;

/// One running task: index, machine name, borglet address, attempt, host ports.
pub type RunningTask = (i32, String, String, AttemptId, Vec<i32>);

impl Store {
    /// The running tasks of the live job named `name` (else its newest
    /// incarnation), by index; `None` when no job has that name.
    pub async fn running_tasks(&self, name: &str) -> crate::Result<Option<Vec<RunningTask>>> {
        let job: Option<(borg_shared::JobId,)> = sqlx::query_as(
            "SELECT id FROM jobs WHERE name = $1
             ORDER BY (state IN ('pending', 'running')) DESC, created_at DESC LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        let Some((job,)) = job else { return Ok(None) };
        let rows: Vec<RunningTask> = sqlx::query_as(
            "SELECT t.index, m.name, m.address, a.id, a.ports
             FROM tasks t
             JOIN attempts a ON a.id = t.attempt_id
             JOIN machines m ON m.id = a.machine_id
             WHERE t.job_id = $1 AND t.state = 'running'
             ORDER BY t.index",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(rows))
    }
}
