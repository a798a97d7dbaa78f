//! Draining a machine: an operator marks it `draining` (the schedulers place
//! only on `up` machines), and the leader moves its tasks elsewhere a few at a
//! time: a job never has more than its unavailability budget of tasks not
//! running at once. `uncordon` makes it `up` again.

use crate::attempts::{move_attempts, AttemptMove};
use crate::lease::check_epoch;
use crate::lost::machine_event;
use crate::moves::{move_tasks, MovedMachine, TaskMove, Transitions};
use crate::{live_attempt, live_job, Store, CHANNEL_PENDING, CHANNEL_PLACED};
use borg_shared::wire::MachineView;
use borg_shared::{AttemptId, JobId, MachineId, MachineState, TaskId, TaskState};
use std::collections::HashMap;

/// Tasks of one job that may be down at once while draining, unless its
/// `update.max_unavailable` says otherwise.
pub const DEFAULT_MAX_UNAVAILABLE: i64 = borg_shared::rollout::DEFAULT_MAX_UNAVAILABLE as i64;

#[derive(Debug)]
pub enum CordonOutcome {
    /// The machine moved (drain: to `draining`; uncordon: to `up`).
    Changed(Box<MachineView>),
    /// It already was in that state.
    Unchanged(Box<MachineView>),
    NotFound,
    /// A `down` machine neither drains nor uncordons; it comes back by answering.
    Down,
}

#[derive(sqlx::FromRow)]
struct OnDraining {
    id: AttemptId,
    state: TaskState,
    machine_id: MachineId,
    machine: String,
    task_id: TaskId,
    job_id: JobId,
    task_state: TaskState,
}

impl Store {
    /// `up → draining`.
    pub async fn drain_machine(&self, name: &str) -> crate::Result<CordonOutcome> {
        self.cordon(name, MachineState::Draining, "drain requested")
            .await
    }

    /// `draining → up`.
    pub async fn uncordon_machine(&self, name: &str) -> crate::Result<CordonOutcome> {
        self.cordon(name, MachineState::Up, "uncordoned").await
    }

    async fn cordon(
        &self,
        name: &str,
        to: MachineState,
        reason: &str,
    ) -> crate::Result<CordonOutcome> {
        let mut tx = crate::tx::begin(&self.pool).await?;
        let row: Option<(MachineId, MachineState)> =
            sqlx::query_as("SELECT id, state FROM machines WHERE name = $1 FOR NO KEY UPDATE")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((id, from)) = row else {
            return Ok(CordonOutcome::NotFound);
        };
        let changed = match from {
            MachineState::Down => return Ok(CordonOutcome::Down),
            f if f == to => false,
            _ => {
                sqlx::query("UPDATE machines SET state = $2 WHERE id = $1")
                    .bind(id)
                    .bind(to)
                    .execute(&mut *tx)
                    .await?;
                let mv = MovedMachine {
                    machine: id,
                    name: name.to_string(),
                    from: Some(from),
                    to,
                };
                machine_event(&mut tx, &mv, reason).await?;
                if to == MachineState::Up {
                    // Its room is open again to waiting tasks.
                    sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(CHANNEL_PENDING)
                        .bind(format!("machine:{id}"))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Transitions {
                    machines: vec![mv],
                    ..Transitions::default()
                }
                .emit();
                true
            }
        };
        let view = self
            .machine(name)
            .await?
            .ok_or_else(|| crate::StoreError::Vanished(format!("machine {name} vanished")))?;
        Ok(if changed {
            CordonOutcome::Changed(Box::new(view))
        } else {
            CordonOutcome::Unchanged(Box::new(view))
        })
    }

    /// One step of moving tasks off draining machines, as leader at `epoch`:
    /// for each job with tasks there, end as many of those attempts as its
    /// budget allows (`killed`, their borglets stop them) and put their tasks
    /// back to `pending` (no run spent). Returns how many tasks moved.
    pub async fn drain_step(&self, epoch: i64) -> crate::Result<usize> {
        let mut tx = crate::tx::begin(&self.pool).await?;
        check_epoch(&mut tx, epoch).await?;
        let superseded = stop_superseded(&mut tx).await?;
        let rows: Vec<OnDraining> = sqlx::query_as(concat!(
            "SELECT a.id, a.state, a.machine_id, m.name AS machine, a.task_id, t.job_id,
                    t.state AS task_state
             FROM attempts a JOIN machines m ON m.id = a.machine_id
             JOIN tasks t ON t.id = a.task_id AND t.attempt_id = a.id
             JOIN jobs j ON j.id = t.job_id
             WHERE m.state = 'draining' AND a.state IN ",
            live_attempt!(),
            " AND a.stop_reason IS NULL AND j.state IN ",
            live_job!(),
            " ORDER BY a.id FOR UPDATE OF a, t SKIP LOCKED"
        ))
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            if superseded > 0 {
                tx.commit().await?;
            }
            return Ok(0);
        }
        let mut jobs: Vec<JobId> = rows.iter().map(|r| r.job_id).collect();
        jobs.sort();
        jobs.dedup();
        // Each job's budget: its `update.max_unavailable` less the tasks not
        // running now (waiting for a machine, on their way up, or asked to
        // stop, as by a rollout).
        let mut budget: HashMap<JobId, i64> = sqlx::query_as::<_, (JobId, i64)>(
            "SELECT j.id, COALESCE((j.spec->'update'->>'max_unavailable')::bigint, $2)
                          - count(t.id)
             FROM jobs j
             LEFT JOIN tasks t ON t.job_id = j.id
                 AND (t.state IN ('pending', 'assigned', 'starting')
                      OR EXISTS (SELECT 1 FROM attempts a WHERE a.id = t.attempt_id
                                 AND a.state = 'running' AND a.stop_reason IS NOT NULL))
             WHERE j.id = ANY($1)
             GROUP BY j.id",
        )
        .bind(&jobs)
        .bind(DEFAULT_MAX_UNAVAILABLE)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut attempt_moves = Vec::new();
        let mut task_moves = Vec::new();
        let mut requeue = Vec::new();
        let mut machines: Vec<MachineId> = Vec::new();
        for r in &rows {
            let left = budget.entry(r.job_id).or_default();
            if *left <= 0 {
                continue;
            }
            *left -= 1;
            let why = format!("moved off draining machine {}", r.machine);
            let mut am = AttemptMove::new(r.id, r.state, TaskState::Killed);
            am.reason = Some(why.clone());
            attempt_moves.push(am);
            let mv = |from, to, reason| TaskMove {
                job: r.job_id,
                task: r.task_id,
                attempt: Some(r.id),
                machine: Some(r.machine_id),
                from,
                to,
                reason,
                backoff: None,
                placed: false,
                failed_runs: None,
            };
            // `lost` is the state machine's way back to `pending` for a task
            // whose attempt ended by no fault of its own.
            task_moves.push(mv(r.task_state, TaskState::Lost, why.clone()));
            requeue.push(mv(
                TaskState::Lost,
                TaskState::Pending,
                format!("placing again (no run spent): {why}"),
            ));
            machines.push(r.machine_id);
        }
        let mut moved = Transitions::default();
        move_attempts(&mut tx, &attempt_moves).await?;
        let tasks_moved = move_tasks(&mut tx, &task_moves, &mut moved).await?;
        requeue.retain(|m| tasks_moved.contains(&m.task));
        let requeued = move_tasks(&mut tx, &requeue, &mut moved).await?;
        if !requeued.is_empty() {
            let ids: Vec<TaskId> = requeued.iter().copied().collect();
            sqlx::query("UPDATE tasks SET runs = runs - 1 WHERE id = ANY($1) AND runs > 0")
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
            sqlx::query("SELECT pg_notify($1, 'room')")
                .bind(CHANNEL_PENDING)
                .execute(&mut *tx)
                .await?;
        }
        machines.sort();
        machines.dedup();
        // Their borglets stop the old copies at once.
        sqlx::query("SELECT pg_notify($1, m::text) FROM unnest($2::uuid[]) AS m")
            .bind(CHANNEL_PLACED)
            .bind(machines.iter().map(|m| m.0).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let jobs = moved.task_jobs();
        moved.emit();
        if !jobs.is_empty() {
            self.refresh_jobs(epoch, Some(&jobs)).await?;
        }
        Ok(requeued.len())
    }
}

/// Superseded attempts (a surging rollout's old copies) on draining machines
/// stop once their task runs its new attempt: that takes no task down, so it
/// spends no budget. Until then they keep serving their task.
async fn stop_superseded(conn: &mut sqlx::PgConnection) -> crate::Result<u64> {
    let stopped: Vec<(MachineId,)> = sqlx::query_as(concat!(
        "UPDATE attempts a SET stop_reason = 'moved off draining machine ' || m.name
         FROM machines m, tasks t
         WHERE m.id = a.machine_id AND m.state = 'draining' AND t.id = a.task_id
           AND t.state = 'running' AND a.superseded AND a.stop_reason IS NULL AND a.state IN ",
        live_attempt!(),
        " RETURNING a.machine_id"
    ))
    .fetch_all(&mut *conn)
    .await?;
    if stopped.is_empty() {
        return Ok(0);
    }
    let mut machines: Vec<uuid::Uuid> = stopped.iter().map(|(m,)| m.0).collect();
    machines.sort();
    machines.dedup();
    sqlx::query("SELECT pg_notify($1, m::text) FROM unnest($2::uuid[]) AS m")
        .bind(CHANNEL_PLACED)
        .bind(&machines)
        .execute(&mut *conn)
        .await?;
    tracing::info!(
        attempts = stopped.len(),
        "superseded attempts on draining machines asked to stop"
    );
    Ok(stopped.len() as u64)
}
