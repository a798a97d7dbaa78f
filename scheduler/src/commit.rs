//! Turning a batch of decisions into rows, safely against other schedulers.
//!
//! The snapshot `place()` saw may be stale, and another scheduler may be
//! committing onto the same machines right now. So one transaction per batch:
//! lock the machine rows (in id order, so schedulers never deadlock; NO KEY
//! UPDATE, so the master's inserts that merely reference a machine never wait), recompute
//! their usage from live attempts, keep only what still fits, claim the tasks
//! that are still pending (`SKIP LOCKED`: a task another scheduler holds is
//! simply lost this round), then write attempts, events and notifications.
//! Whatever is dropped stays pending and is retried on the next pass.

use crate::snapshot::{add, capacity_from_db, fits, PendingTask};
use anyhow::Context;
use borg_shared::wire::Capacity;
use borg_shared::{AttemptId, JobId, MachineId, TaskId};
use sqlx::PgPool;
use std::collections::HashMap;

/// The channel the master listens on to sync a machine's borglet at once.
pub const PLACED_CHANNEL: &str = "borg_placed";

/// One placement as committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub task: TaskId,
    pub job: JobId,
    pub attempt: AttemptId,
    pub machine: MachineId,
}

#[derive(Debug, Default)]
pub struct Committed {
    pub placed: Vec<Placed>,
    /// Decisions dropped because the machine filled up, left `up`, or the task
    /// was claimed, changed or killed meanwhile.
    pub lost_races: usize,
}

#[derive(sqlx::FromRow)]
struct LockedMachine {
    id: MachineId,
    name: String,
    cpu_milli: i64,
    memory: i64,
    disk: i64,
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: TaskId,
    job_id: JobId,
    attempt_id: AttemptId,
    machine_id: MachineId,
}

/// Commit `placements` (in queue order) made by scheduler `scheduler`.
/// `tasks` must hold every task named in `placements`.
pub async fn commit(
    pool: &PgPool,
    scheduler: &str,
    tasks: &HashMap<TaskId, &PendingTask>,
    placements: &[(TaskId, MachineId)],
) -> anyhow::Result<Committed> {
    if placements.is_empty() {
        return Ok(Committed::default());
    }
    let mut machine_ids: Vec<MachineId> = placements.iter().map(|(_, m)| *m).collect();
    machine_ids.sort();
    machine_ids.dedup();

    let mut tx = pool.begin().await.context("starting the commit")?;

    let locked: Vec<LockedMachine> = sqlx::query_as(
        "SELECT id, name, cpu_milli, memory, disk FROM machines
         WHERE id = ANY($1) AND state = 'up'
         ORDER BY id
         FOR NO KEY UPDATE",
    )
    .bind(&machine_ids)
    .fetch_all(&mut *tx)
    .await
    .context("locking machines")?;

    // With the rows locked, every other scheduler's commit onto these machines
    // is either fully visible here or waits for us.
    let usage: Vec<(MachineId, i64, i64, i64)> = sqlx::query_as(
        "SELECT machine_id, sum(cpu_milli)::bigint, sum(memory)::bigint, sum(disk)::bigint
         FROM attempts
         WHERE machine_id = ANY($1) AND state IN ('assigned', 'starting', 'running')
         GROUP BY machine_id",
    )
    .bind(&machine_ids)
    .fetch_all(&mut *tx)
    .await
    .context("recomputing machine usage")?;
    let usage: HashMap<MachineId, Capacity> = usage
        .into_iter()
        .map(|(id, c, m, d)| (id, capacity_from_db(c, m, d)))
        .collect();

    struct Room<'a> {
        name: &'a str,
        capacity: Capacity,
        used: Capacity,
    }
    let mut room: HashMap<MachineId, Room> = locked
        .iter()
        .map(|m| {
            let used = usage.get(&m.id).copied().unwrap_or_default();
            let room = Room {
                name: &m.name,
                capacity: capacity_from_db(m.cpu_milli, m.memory, m.disk),
                used,
            };
            (m.id, room)
        })
        .collect();

    let mut lost_races = 0;
    let mut kept: Vec<(&PendingTask, MachineId)> = Vec::with_capacity(placements.len());
    for (task_id, machine) in placements {
        let task = tasks
            .get(task_id)
            .with_context(|| format!("placement of unknown task {task_id}"))?;
        let fits_still = room.get_mut(machine).is_some_and(|r| {
            let after = add(&r.used, &task.request);
            let ok = fits(&after, &r.capacity);
            if ok {
                r.used = after;
            }
            ok
        });
        if fits_still {
            kept.push((task, *machine));
        } else {
            lost_races += 1;
        }
    }
    if kept.is_empty() {
        tx.rollback().await.ok();
        return Ok(Committed {
            placed: vec![],
            lost_races,
        });
    }

    let attempt_ids: Vec<AttemptId> = kept.iter().map(|_| AttemptId::new()).collect();
    let task_ids: Vec<TaskId> = kept.iter().map(|(t, _)| t.id).collect();
    let kept_machines: Vec<MachineId> = kept.iter().map(|(_, m)| *m).collect();
    let dim = |f: fn(&Capacity) -> u64| -> Vec<i64> {
        kept.iter().map(|(t, _)| f(&t.request) as i64).collect()
    };

    // Claim only tasks still pending with the request we accounted for, of a live
    // job, and not locked by someone else (never wait on another scheduler).
    let claimed: Vec<ClaimedRow> = sqlx::query_as(
        "WITH u AS (
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::bigint[], $5::bigint[], $6::bigint[])
                 AS u(task_id, attempt_id, machine_id, cpu_milli, memory, disk)
         ), claimable AS (
             SELECT t.id FROM tasks t JOIN u ON u.task_id = t.id
             WHERE t.state = 'pending'
               AND t.cpu_milli = u.cpu_milli AND t.memory = u.memory AND t.disk = u.disk
               AND (t.not_before IS NULL OR t.not_before <= now())
               AND EXISTS (SELECT 1 FROM jobs j WHERE j.id = t.job_id AND j.state IN ('pending', 'running'))
             ORDER BY t.id
             FOR UPDATE OF t SKIP LOCKED
         )
         UPDATE tasks t
         SET state = 'assigned', attempt_id = u.attempt_id, runs = t.runs + 1,
             reason = NULL, updated_at = now()
         FROM u
         WHERE t.id = u.task_id AND t.id IN (SELECT id FROM claimable)
         RETURNING t.id, t.job_id, u.attempt_id, u.machine_id",
    )
    .bind(&task_ids)
    .bind(&attempt_ids)
    .bind(&kept_machines)
    .bind(dim(|c| c.cpu.0))
    .bind(dim(|c| c.memory.0))
    .bind(dim(|c| c.disk.0))
    .fetch_all(&mut *tx)
    .await
    .context("claiming tasks")?;
    lost_races += kept.len() - claimed.len();
    if claimed.is_empty() {
        tx.rollback().await.ok();
        return Ok(Committed {
            placed: vec![],
            lost_races,
        });
    }

    let placed: Vec<Placed> = claimed
        .into_iter()
        .map(|r| Placed {
            task: r.id,
            job: r.job_id,
            attempt: r.attempt_id,
            machine: r.machine_id,
        })
        .collect();
    let col = |f: fn(&Placed) -> uuid::Uuid| -> Vec<uuid::Uuid> { placed.iter().map(f).collect() };

    sqlx::query(
        "INSERT INTO attempts (id, task_id, machine_id, state, cpu_milli, memory, disk)
         SELECT a.id, a.task_id, a.machine_id, 'assigned', t.cpu_milli, t.memory, t.disk
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) AS a(id, task_id, machine_id)
         JOIN tasks t ON t.id = a.task_id",
    )
    .bind(col(|p| p.attempt.0))
    .bind(col(|p| p.task.0))
    .bind(col(|p| p.machine.0))
    .execute(&mut *tx)
    .await
    .context("inserting attempts")?;

    let reasons: Vec<String> = placed
        .iter()
        .map(|p| format!("placed on {} by {scheduler}", room[&p.machine].name))
        .collect();
    sqlx::query(
        "INSERT INTO events (job_id, task_id, attempt_id, machine_id, from_state, to_state, reason)
         SELECT e.job_id, e.task_id, e.attempt_id, e.machine_id, 'pending', 'assigned', e.reason
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[])
             AS e(job_id, task_id, attempt_id, machine_id, reason)",
    )
    .bind(col(|p| p.job.0))
    .bind(col(|p| p.task.0))
    .bind(col(|p| p.attempt.0))
    .bind(col(|p| p.machine.0))
    .bind(&reasons)
    .execute(&mut *tx)
    .await
    .context("inserting events")?;

    // Delivered at commit, so the master never syncs a machine before the rows exist.
    let mut busy: Vec<MachineId> = placed.iter().map(|p| p.machine).collect();
    busy.sort();
    busy.dedup();
    sqlx::query("SELECT pg_notify($1, m::text) FROM unnest($2::uuid[]) AS m")
        .bind(PLACED_CHANNEL)
        .bind(&busy)
        .execute(&mut *tx)
        .await
        .context("notifying borg_placed")?;

    tx.commit().await.context("committing placements")?;
    Ok(Committed { placed, lost_races })
}

/// Record why each task stays pending; only rows whose reason changes are written,
/// and rows another transaction holds are skipped (they are rewritten next pass).
pub async fn write_reasons(pool: &PgPool, reasons: &[(TaskId, String)]) -> anyhow::Result<u64> {
    if reasons.is_empty() {
        return Ok(0);
    }
    let ids: Vec<TaskId> = reasons.iter().map(|(t, _)| *t).collect();
    let texts: Vec<&str> = reasons.iter().map(|(_, r)| r.as_str()).collect();
    let done = sqlx::query(
        "WITH u AS (
             SELECT * FROM unnest($1::uuid[], $2::text[]) AS u(id, reason)
         ), changed AS (
             SELECT t.id FROM tasks t JOIN u ON u.id = t.id
             WHERE t.state = 'pending' AND t.reason IS DISTINCT FROM u.reason
             ORDER BY t.id
             FOR UPDATE OF t SKIP LOCKED
         )
         UPDATE tasks t SET reason = u.reason, updated_at = now()
         FROM u
         WHERE t.id = u.id AND t.id IN (SELECT id FROM changed)",
    )
    .bind(&ids)
    .bind(&texts)
    .execute(pool)
    .await
    .context("writing pending reasons")?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests;
