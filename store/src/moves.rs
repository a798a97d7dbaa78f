//! The one path a task's state moves by: a batch of moves checked against the
//! state machine, applied in one statement that updates the rows still in their
//! expected state, appends an event per row that moved and adjusts the job's
//! task counters, all in the caller's transaction. What moved is collected in
//! `Transitions` and announced (metrics, logs) only after the commit.

use crate::error::{Result, StoreError};
use borg_shared::{AttemptId, JobId, JobState, MachineId, MachineState, TaskId, TaskState};
use sqlx::PgConnection;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// Counter shards per job for moves on machines (1..=SHARDS); shard 0 holds
/// moves that name no machine (submit, kill of pending tasks).
const SHARDS: u128 = 16;

/// The counter shard of a move: by machine, so reports from different machines
/// about one job update different rows.
pub(crate) fn shard(machine: Option<MachineId>) -> i16 {
    match machine {
        None => 0,
        Some(m) => 1 + (m.0.as_u128() % SHARDS) as i16,
    }
}

/// One requested move of a task.
#[derive(Debug, Clone)]
pub(crate) struct TaskMove {
    pub job: JobId,
    pub task: TaskId,
    pub attempt: Option<AttemptId>,
    pub machine: Option<MachineId>,
    pub from: TaskState,
    pub to: TaskState,
    pub reason: String,
    /// Only for moves back to `pending`: hold the task until this backoff has passed.
    pub backoff: Option<Duration>,
    /// `pending → assigned`: `attempt` becomes the task's attempt and counts one more run.
    pub placed: bool,
    /// Only for moves back to `pending` after a failed run on `machine`: the
    /// task's failed runs in a row, this one counted. The task keeps both
    /// (`tasks.failed_on`, `failed_runs`; migration 0026): the scheduler tries
    /// other machines first, the next failure's backoff doubles. Any other
    /// move to `pending` clears `failed_on`.
    pub failed_runs: Option<i32>,
}

/// A task move that happened (committed once the caller commits).
#[derive(Debug, Clone)]
pub struct MovedTask {
    pub job: JobId,
    pub task: TaskId,
    /// The task's index in its job.
    pub index: i32,
    pub attempt: Option<AttemptId>,
    pub machine: Option<MachineId>,
    pub from: TaskState,
    pub to: TaskState,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct MovedJob {
    pub job: JobId,
    pub name: String,
    pub from: Option<JobState>,
    pub to: JobState,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct MovedMachine {
    pub machine: MachineId,
    pub name: String,
    pub from: Option<MachineState>,
    pub to: MachineState,
}

/// Everything a transaction moved. Emit it after the commit, never before:
/// a rolled-back move must not show in metrics or logs.
#[derive(Debug, Default)]
#[must_use = "emit() the transitions after the commit"]
pub struct Transitions {
    pub tasks: Vec<MovedTask>,
    pub jobs: Vec<MovedJob>,
    pub machines: Vec<MovedMachine>,
}

impl Transitions {
    /// Jobs whose tasks moved.
    pub fn task_jobs(&self) -> Vec<JobId> {
        let mut jobs: Vec<JobId> = self.tasks.iter().map(|t| t.job).collect();
        jobs.sort();
        jobs.dedup();
        jobs
    }

    /// Metrics and logs of what moved. Per-task lines are at debug (a big job
    /// moves thousands a second); a summary per batch is at info.
    pub fn emit(self) {
        let mut by_move: BTreeMap<(TaskState, TaskState), u64> = BTreeMap::new();
        for t in &self.tasks {
            *by_move.entry((t.from, t.to)).or_default() += 1;
            // Formatted only when the line is on (not text made per task for nothing).
            tracing::debug!(
                job_id = %t.job, index = t.index, task_id = %t.task,
                attempt = t.attempt.as_ref().map(tracing::field::display),
                machine_id = t.machine.as_ref().map(tracing::field::display),
                from = %t.from, to = %t.to, reason = %t.reason, "task state"
            );
        }
        for ((from, to), n) in &by_move {
            metrics::counter!("borg_task_transitions_total", "from" => from.as_str(), "to" => to.as_str())
                .increment(*n);
        }
        if !by_move.is_empty() {
            let summary: Vec<String> = by_move
                .iter()
                .map(|((f, t), n)| format!("{f}→{t} {n}"))
                .collect();
            tracing::info!(tasks = self.tasks.len(), moves = %summary.join(", "), "task states");
        }
        for j in &self.jobs {
            let from = j.from.map_or("", |s| s.as_str());
            metrics::counter!("borg_job_transitions_total", "from" => from, "to" => j.to.as_str())
                .increment(1);
            tracing::info!(job = %j.name, job_id = %j.job, from, to = %j.to, reason = %j.reason, "job state");
        }
        for m in &self.machines {
            let from = m.from.map_or("", |s| s.as_str());
            metrics::counter!("borg_machine_transitions_total", "from" => from, "to" => m.to.as_str())
                .increment(1);
            tracing::info!(machine = %m.name, machine_id = %m.machine, from, to = %m.to, "machine state");
        }
    }
}

/// Apply `moves` (at most one per task) in the caller's transaction. Returns the
/// tasks that moved; a task no longer in its `from` state is left alone.
pub(crate) async fn move_tasks(
    conn: &mut PgConnection,
    moves: &[TaskMove],
    out: &mut Transitions,
) -> Result<HashSet<TaskId>> {
    if moves.is_empty() {
        return Ok(HashSet::new());
    }
    for mv in moves {
        if !mv.from.can_move_to(mv.to) {
            return Err(StoreError::IllegalMove {
                task: mv.task.to_string(),
                from: mv.from,
                to: mv.to,
            });
        }
    }
    debug_assert_eq!(
        moves.iter().map(|m| m.task).collect::<HashSet<_>>().len(),
        moves.len(),
        "one move per task per statement"
    );
    let col = |f: fn(&TaskMove) -> Option<uuid::Uuid>| -> Vec<Option<uuid::Uuid>> {
        moves.iter().map(f).collect()
    };
    let moved: Vec<(TaskId, i32)> = sqlx::query_as(MOVE_TASKS)
        .bind(moves.iter().map(|m| m.task.0).collect::<Vec<_>>())
        .bind(col(|m| m.attempt.map(|a| a.0)))
        .bind(col(|m| m.machine.map(|a| a.0)))
        .bind(moves.iter().map(|m| m.from.as_str()).collect::<Vec<_>>())
        .bind(moves.iter().map(|m| m.to.as_str()).collect::<Vec<_>>())
        .bind(moves.iter().map(|m| m.reason.as_str()).collect::<Vec<_>>())
        .bind(
            moves
                .iter()
                .map(|m| m.backoff.map_or(0, |b| b.as_millis() as i64))
                .collect::<Vec<_>>(),
        )
        .bind(moves.iter().map(|m| m.placed).collect::<Vec<_>>())
        .bind(moves.iter().map(|m| shard(m.machine)).collect::<Vec<_>>())
        .bind(moves.iter().map(|m| m.failed_runs).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
    let moved: HashMap<TaskId, i32> = moved.into_iter().collect();
    out.tasks.extend(moves.iter().filter_map(|m| {
        Some(MovedTask {
            job: m.job,
            task: m.task,
            index: *moved.get(&m.task)?,
            attempt: m.attempt,
            machine: m.machine,
            from: m.from,
            to: m.to,
            reason: m.reason.clone(),
        })
    }));
    Ok(moved.into_keys().collect())
}

/// One statement: move the tasks still in their expected state, take them out
/// of the pending queue or put them back (`task_queue`, by its key), append
/// their events in request order, and add the moves to the job's counter shard
/// (rows upserted in key order, so concurrent writers never deadlock on them).
/// Its joins are the array's with `tasks` and what the update returns with the
/// queue's key: the events and counters read what the update returns, so that
/// under [`KEYED_JOINS`](crate::KEYED_JOINS) nothing is scanned whole.
pub const MOVE_TASKS: &str = "
WITH m AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                         $7::bigint[], $8::bool[], $9::smallint[], $10::integer[]) WITH ORDINALITY
        AS m(task_id, attempt_id, machine_id, from_state, to_state, reason, backoff_ms, placed, shard,
             failed_runs, ord)
), moved AS (
    UPDATE tasks t
    SET state = m.to_state::task_state, updated_at = now(),
        -- A task's reason says why it waits or how it ended; a placement clears it.
        reason = CASE WHEN m.placed THEN NULL ELSE m.reason END,
        attempt_id = CASE WHEN m.placed THEN m.attempt_id ELSE t.attempt_id END,
        runs = t.runs + CASE WHEN m.placed THEN 1 ELSE 0 END,
        pending_since = CASE WHEN m.to_state = 'pending' THEN now() ELSE t.pending_since END,
        not_before = CASE WHEN m.backoff_ms > 0
                          THEN now() + make_interval(secs => m.backoff_ms / 1000.0)
                          ELSE t.not_before END,
        failed_on = CASE WHEN m.failed_runs IS NOT NULL THEN m.machine_id
                         WHEN m.to_state = 'pending' THEN NULL
                         ELSE t.failed_on END,
        failed_runs = COALESCE(m.failed_runs, t.failed_runs)
    FROM m
    WHERE t.id = m.task_id AND t.state = m.from_state::task_state
    RETURNING t.id, t.job_id, t.index, t.priority, t.created_at,
        m.attempt_id, m.machine_id, m.from_state, m.to_state, m.reason, m.shard, m.ord
), dequeued AS (
    -- The pending queue (migrations 0023–0025): out of it when leaving `pending`...
    DELETE FROM task_queue q USING moved
    WHERE moved.from_state = 'pending' AND moved.to_state <> 'pending'
      AND q.rank = -moved.priority AND q.created_at = moved.created_at AND q.task_id = moved.id
), queued AS (
    -- ...and into it when coming back.
    INSERT INTO task_queue (rank, created_at, task_id, part)
    SELECT -priority, created_at, id, queue_part(job_id) FROM moved
    WHERE to_state = 'pending' AND from_state <> 'pending'
    ON CONFLICT DO NOTHING
), ev AS (
    INSERT INTO events (kind, job_id, task_id, attempt_id, machine_id, from_state, to_state, reason)
    SELECT 'task', job_id, id, attempt_id, machine_id, from_state, to_state, reason
    FROM moved
    ORDER BY ord
), counted AS (
    INSERT INTO job_counts AS c
        (job_id, shard, pending, assigned, starting, running, succeeded, failed, killed, lost)
    SELECT job_id, shard,
        (count(*) FILTER (WHERE to_state = 'pending') - count(*) FILTER (WHERE from_state = 'pending'))::int,
        (count(*) FILTER (WHERE to_state = 'assigned') - count(*) FILTER (WHERE from_state = 'assigned'))::int,
        (count(*) FILTER (WHERE to_state = 'starting') - count(*) FILTER (WHERE from_state = 'starting'))::int,
        (count(*) FILTER (WHERE to_state = 'running') - count(*) FILTER (WHERE from_state = 'running'))::int,
        (count(*) FILTER (WHERE to_state = 'succeeded') - count(*) FILTER (WHERE from_state = 'succeeded'))::int,
        (count(*) FILTER (WHERE to_state = 'failed') - count(*) FILTER (WHERE from_state = 'failed'))::int,
        (count(*) FILTER (WHERE to_state = 'killed') - count(*) FILTER (WHERE from_state = 'killed'))::int,
        (count(*) FILTER (WHERE to_state = 'lost') - count(*) FILTER (WHERE from_state = 'lost'))::int
    FROM moved
    GROUP BY job_id, shard
    ORDER BY job_id, shard
    ON CONFLICT (job_id, shard) DO UPDATE SET
        pending = c.pending + EXCLUDED.pending, assigned = c.assigned + EXCLUDED.assigned,
        starting = c.starting + EXCLUDED.starting, running = c.running + EXCLUDED.running,
        succeeded = c.succeeded + EXCLUDED.succeeded, failed = c.failed + EXCLUDED.failed,
        killed = c.killed + EXCLUDED.killed, lost = c.lost + EXCLUDED.lost
)
SELECT id, index FROM moved";

/// Append job events (`kind = 'job'`) for moves already written.
pub(crate) async fn job_events(conn: &mut PgConnection, moved: &[MovedJob]) -> Result<()> {
    if moved.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO events (kind, job_id, from_state, to_state, reason)
         SELECT 'job', e.job_id, e.from_state, e.to_state, e.reason
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY
             AS e(job_id, from_state, to_state, reason, ord)
         ORDER BY e.ord",
    )
    .bind(moved.iter().map(|j| j.job.0).collect::<Vec<_>>())
    .bind(
        moved
            .iter()
            .map(|j| j.from.map(|s| s.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(moved.iter().map(|j| j.to.as_str()).collect::<Vec<_>>())
    .bind(moved.iter().map(|j| j.reason.as_str()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Append a machine event (`kind = 'machine'`) for a move already written.
pub(crate) async fn machine_event(conn: &mut PgConnection, moved: &MovedMachine) -> Result<()> {
    sqlx::query(
        "INSERT INTO events (kind, machine_id, from_state, to_state, reason)
         VALUES ('machine', $1, $2, $3, $4)",
    )
    .bind(moved.machine)
    .bind(moved.from.map(|s| s.as_str()))
    .bind(moved.to.as_str())
    .bind(match moved.from {
        None => "registered",
        Some(_) => "registered again",
    })
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_machines_and_keep_zero_for_none() {
        assert_eq!(shard(None), 0);
        let shards: HashSet<i16> = (0..200).map(|_| shard(Some(MachineId::new()))).collect();
        assert!(shards.iter().all(|s| (1..=16).contains(s)));
        assert!(shards.len() > 8, "machines spread over the shards");
    }
}
