//! Task lookups by address (`job/index`).

use super::Store;
use borg_shared::{AttemptId, TaskState};

/// Where a task's newest attempt ran or runs.
pub struct TaskLocation {
    pub state: TaskState,
    pub reason: Option<String>,
    /// The newest attempt and its borglet's address, if it was ever placed.
    pub attempt: Option<(AttemptId, String)>,
    /// What the master presents to that borglet (`agent::sync_key`).
    pub credential_hash: Option<String>,
}

type LocationRow = (
    TaskState,
    Option<String>,
    Option<AttemptId>,
    Option<String>,
    Option<String>,
);

impl Store {
    pub async fn locate_task(&self, job: &str, index: i32) -> crate::Result<Option<TaskLocation>> {
        let row: Option<LocationRow> = sqlx::query_as(
            "SELECT t.state, task_reason(t), a.id, m.address, m.credential_hash
             FROM jobs j JOIN tasks t ON t.job_id = j.id AND t.index = $2
             LEFT JOIN attempts a ON a.id = t.attempt_id
             LEFT JOIN machines m ON m.id = a.machine_id
             WHERE j.name = $1
             ORDER BY (j.state IN ('pending', 'running')) DESC, j.created_at DESC LIMIT 1",
        )
        .bind(job)
        .bind(index)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(
            |(state, reason, attempt, address, credential_hash)| TaskLocation {
                state,
                reason,
                attempt: attempt.zip(address),
                credential_hash,
            },
        ))
    }

    /// The attempt of task `job/index` before its newest one, and its
    /// borglet's address and credential hash: (attempt, address, credential).
    pub async fn previous_attempt(
        &self,
        job: &str,
        index: i32,
    ) -> crate::Result<Option<(AttemptId, String, Option<String>)>> {
        Ok(sqlx::query_as(
            "SELECT a.id, m.address, m.credential_hash
             FROM (SELECT t.id, t.attempt_id FROM jobs j
                   JOIN tasks t ON t.job_id = j.id AND t.index = $2
                   WHERE j.name = $1
                   ORDER BY (j.state IN ('pending', 'running')) DESC, j.created_at DESC
                   LIMIT 1) t
             JOIN attempts a ON a.task_id = t.id AND a.id IS DISTINCT FROM t.attempt_id
             JOIN machines m ON m.id = a.machine_id
             ORDER BY a.created_at DESC LIMIT 1",
        )
        .bind(job)
        .bind(index)
        .fetch_optional(&self.pool)
        .await?)
    }
}
