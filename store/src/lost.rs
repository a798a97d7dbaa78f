//! Machines that stop answering and come back. The leader keeps liveness in
//! memory; only a change of state is written here, each as one transaction that
//! checks the leader's epoch: a machine goes `down`, its live attempts end
//! `lost` and their tasks go back to `pending` for new attempts elsewhere; a
//! `down` machine that answers again goes `up`.

use crate::attempts::{move_attempts, AttemptMove};
use crate::lease::check_epoch;
use crate::moves::{move_tasks, MovedMachine, TaskMove, Transitions};
use crate::{live_attempt, live_job, Store, CHANNEL_PENDING};
use borg_shared::{AttemptId, JobId, JobKind, MachineId, MachineState, TaskId, TaskState};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// What marking one machine down did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MachineDown {
    /// Attempts that ended (`lost`, or `killed` when a stop was already asked).
    pub ended: usize,
    /// Tasks that went back to `pending` for a new attempt.
    pub requeued: usize,
}

#[derive(sqlx::FromRow)]
struct LiveRow {
    id: AttemptId,
    state: TaskState,
    stop_reason: Option<String>,
    task_id: TaskId,
    job_id: JobId,
    task_state: TaskState,
    task_attempt: Option<AttemptId>,
    kind: JobKind,
    job_live: bool,
}

impl Store {
    /// Mark `machine` down for `reason`, as leader at `epoch`. Its live attempts
    /// end `lost` (or `killed` if a stop was already asked: the kill stands), and
    /// the tasks they ran go back to `pending` at once, services and batch alike:
    /// a lost machine spends none of a task's restart budget. `None` when the
    /// machine is unknown or already down.
    pub async fn mark_machine_down(
        &self,
        machine: MachineId,
        epoch: i64,
        reason: &str,
        last_heard: Option<DateTime<Utc>>,
    ) -> crate::Result<Option<MachineDown>> {
        let mut tx = crate::tx::begin(&self.pool).await?;
        check_epoch(&mut tx, epoch).await?;
        // Lock order: machine, then attempts and tasks, then counters.
        let row: Option<(String, MachineState)> =
            sqlx::query_as("SELECT name, state FROM machines WHERE id = $1 FOR NO KEY UPDATE")
                .bind(machine)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((name, from)) = row.filter(|(_, s)| *s != MachineState::Down) else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE machines SET state = 'down', last_heard = COALESCE($2, last_heard) WHERE id = $1",
        )
        .bind(machine)
        .bind(last_heard)
        .execute(&mut *tx)
        .await?;
        let mut moved = Transitions::default();
        let mv = MovedMachine {
            machine,
            name: name.clone(),
            from: Some(from),
            to: MachineState::Down,
        };
        machine_event(&mut tx, &mv, reason).await?;
        moved.machines.push(mv);

        let rows = lock_live_attempts(&mut tx, machine).await?;
        let lost_why = format!("machine {name} down: {reason}");
        let mut attempt_moves = Vec::new();
        let mut task_moves = Vec::new();
        let mut requeue = Vec::new();
        for r in &rows {
            let (to, why) = match &r.stop_reason {
                Some(stop) => (TaskState::Killed, format!("{stop} ({lost_why})")),
                None => (TaskState::Lost, lost_why.clone()),
            };
            let mut am = AttemptMove::new(r.id, r.state, to);
            am.reason = Some(why.clone());
            attempt_moves.push(am);
            let current = r.task_attempt == Some(r.id) && !r.task_state.is_terminal();
            if !current {
                continue;
            }
            let task_move = |from, to, reason| TaskMove {
                job: r.job_id,
                task: r.task_id,
                attempt: Some(r.id),
                machine: Some(machine),
                from,
                to,
                reason,
                backoff: None,
                placed: false,
                failed_runs: None,
            };
            task_moves.push(task_move(r.task_state, to, why));
            if to == TaskState::Lost && r.job_live {
                let again = match r.kind {
                    JobKind::Service => format!("placing again: {lost_why}"),
                    JobKind::Batch => format!("placing again (no run spent): {lost_why}"),
                };
                requeue.push(task_move(TaskState::Lost, TaskState::Pending, again));
            }
        }
        let ended = move_attempts(&mut tx, &attempt_moves).await?.len();
        let tasks_moved = move_tasks(&mut tx, &task_moves, &mut moved).await?;
        requeue.retain(|m| tasks_moved.contains(&m.task));
        let requeued = move_tasks(&mut tx, &requeue, &mut moved).await?;
        if !requeued.is_empty() {
            // The lost run does not count against the task's budget.
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
        tx.commit().await?;
        let jobs = moved.task_jobs();
        moved.emit();
        metrics::counter!("borg_attempts_lost_total").increment(ended as u64);
        tracing::warn!(machine = %name, machine_id = %machine, ended, requeued = requeued.len(), reason, "machine down");
        if !jobs.is_empty() {
            self.refresh_jobs(epoch, Some(&jobs)).await?;
        }
        Ok(Some(MachineDown {
            ended,
            requeued: requeued.len(),
        }))
    }

    /// A `down` machine answered again: `up`, as leader at `epoch`. Its old
    /// attempts stay ended; they are not in its desired set, so its borglet
    /// stops them. False when the machine was not down.
    pub async fn mark_machine_up(
        &self,
        machine: MachineId,
        epoch: i64,
        reason: &str,
    ) -> crate::Result<bool> {
        let mut tx = crate::tx::begin(&self.pool).await?;
        check_epoch(&mut tx, epoch).await?;
        let name: Option<String> = sqlx::query_scalar(
            "UPDATE machines SET state = 'up', last_heard = now()
             WHERE id = $1 AND state = 'down' RETURNING name",
        )
        .bind(machine)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(name) = name else {
            return Ok(false);
        };
        let mv = MovedMachine {
            machine,
            name,
            from: Some(MachineState::Down),
            to: MachineState::Up,
        };
        machine_event(&mut tx, &mv, reason).await?;
        // Its capacity is free again for tasks that wait.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL_PENDING)
            .bind(format!("machine:{machine}"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let moved = Transitions {
            machines: vec![mv],
            ..Transitions::default()
        };
        moved.emit();
        Ok(true)
    }

    /// Record when machines last answered, in one statement for many (the
    /// leader writes these in batches; liveness itself lives in its memory),
    /// as leader at `epoch`: `Deposed`, writing nothing, if another leads.
    pub async fn record_heard(
        &self,
        epoch: i64,
        heard: &[(MachineId, DateTime<Utc>)],
    ) -> crate::Result<()> {
        if heard.is_empty() {
            return Ok(());
        }
        let mut tx = crate::tx::begin(&self.pool).await?;
        check_epoch(&mut tx, epoch).await?;
        sqlx::query(
            "UPDATE machines m SET last_heard = u.at
             FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at)
             WHERE m.id = u.id AND (m.last_heard IS NULL OR m.last_heard < u.at)",
        )
        .bind(heard.iter().map(|(m, _)| m.0).collect::<Vec<_>>())
        .bind(heard.iter().map(|(_, t)| *t).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn lock_live_attempts(
    conn: &mut PgConnection,
    machine: MachineId,
) -> crate::Result<Vec<LiveRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT a.id, a.state, a.stop_reason, a.task_id, t.job_id, t.state AS task_state,
                t.attempt_id AS task_attempt, j.kind, j.state IN ",
        live_job!(),
        " AS job_live
         FROM attempts a JOIN tasks t ON t.id = a.task_id JOIN jobs j ON j.id = t.job_id
         WHERE a.machine_id = $1 AND a.state IN ",
        live_attempt!(),
        " ORDER BY a.id FOR UPDATE OF a, t"
    ))
    .bind(machine)
    .fetch_all(&mut *conn)
    .await?)
}

/// A machine event with its reason.
pub(crate) async fn machine_event(
    conn: &mut PgConnection,
    moved: &MovedMachine,
    reason: &str,
) -> crate::Result<()> {
    sqlx::query(
        "INSERT INTO events (kind, machine_id, from_state, to_state, reason)
         VALUES ('machine', $1, $2, $3, $4)",
    )
    .bind(moved.machine)
    .bind(moved.from.map(|s| s.as_str()))
    .bind(moved.to.as_str())
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
