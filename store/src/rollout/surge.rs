//! The writes of a surging rollout (`update.max_surge`), in the step's
//! transaction, each with its rollout event:
//! - surge: a running task's attempt becomes *superseded* (it keeps running,
//!   its capacity and its place in its machine's desired set) and leaves the
//!   task, which goes back to `pending` for a new attempt on the target;
//! - retire: once the task is ready on the target, its superseded attempt is
//!   asked to stop (its end moves no task: it is no task's attempt any more);
//! - restore: a superseded attempt becomes its task's attempt again (a
//!   rollback to its version, or a rollout that failed for good), and the
//!   task's new attempt, if any, is superseded and asked to stop.
//!
//! Rows are locked as a report locks them (attempts and their tasks, in
//! attempt id order), so a step and a report never deadlock.

use super::decide::{replaced_task_ready, Plan, Snapshot};
use super::{rollout_event, LockedJob, REPLACED_BY};
use crate::moves::{move_tasks, TaskMove, Transitions};
use crate::{live_attempt, CHANNEL_PENDING, CHANNEL_PLACED};
use borg_shared::{AttemptId, MachineId, TaskId, TaskState};
use sqlx::PgConnection;
use std::collections::HashSet;

/// An attempt of a chosen task, locked with its task.
#[derive(Debug, sqlx::FromRow)]
struct Locked {
    id: AttemptId,
    state: TaskState,
    machine_id: MachineId,
    machine: String,
    version: i32,
    superseded: bool,
    stopping: bool,
    task_id: TaskId,
    index: i32,
    task_state: TaskState,
    current: bool,
}

/// The live attempts of the job's tasks at `indexes`, locked with their tasks.
async fn lock(
    conn: &mut PgConnection,
    job: &LockedJob,
    indexes: &[i32],
) -> crate::Result<Vec<Locked>> {
    Ok(sqlx::query_as(concat!(
        "SELECT a.id, a.state, a.machine_id, m.name AS machine, a.version, a.superseded,
                a.stop_reason IS NOT NULL AS stopping, t.id AS task_id, t.index,
                t.state AS task_state, t.attempt_id IS NOT DISTINCT FROM a.id AS current
         FROM tasks t JOIN attempts a ON a.task_id = t.id JOIN machines m ON m.id = a.machine_id
         WHERE t.job_id = $1 AND t.index = ANY($2) AND a.state IN ",
        live_attempt!(),
        " ORDER BY a.id FOR UPDATE OF a, t"
    ))
    .bind(job.id)
    .bind(indexes)
    .fetch_all(&mut *conn)
    .await?)
}

fn task_move(
    job: &LockedJob,
    a: &Locked,
    from: TaskState,
    to: TaskState,
    reason: String,
) -> TaskMove {
    TaskMove {
        job: job.id,
        task: a.task_id,
        attempt: Some(a.id),
        machine: Some(a.machine_id),
        from,
        to,
        reason,
        backoff: None,
        placed: false,
        failed_runs: None,
    }
}

/// `web/3 (version 1 on m-2), ...`: the attempts a rollout event names.
fn named(job: &LockedJob, attempts: &[&Locked]) -> String {
    let names: Vec<String> = attempts
        .iter()
        .map(|a| {
            format!(
                "{}/{} (version {} on {})",
                job.name, a.index, a.version, a.machine
            )
        })
        .collect();
    names.join(", ")
}

async fn notify(
    conn: &mut PgConnection,
    channel: &str,
    machines: &[MachineId],
) -> crate::Result<()> {
    let mut ids: Vec<uuid::Uuid> = machines.iter().map(|m| m.0).collect();
    ids.sort();
    ids.dedup();
    sqlx::query("SELECT pg_notify($1, m::text) FROM unnest($2::uuid[]) AS m")
        .bind(channel)
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Surge the tasks the plan names: supersede their running attempts and put
/// the tasks back to `pending` (no run spent) for the scheduler.
pub(super) async fn surge(
    conn: &mut PgConnection,
    job: &LockedJob,
    heading: &str,
    plan: &Plan,
    max_surge: u32,
    out: &mut Transitions,
) -> crate::Result<usize> {
    if plan.surge.is_empty() {
        return Ok(0);
    }
    let rows = lock(conn, job, &plan.surge).await?;
    let chosen: Vec<&Locked> = rows
        .iter()
        .filter(|a| {
            a.current
                && !a.superseded
                && !a.stopping
                && a.state == TaskState::Running
                && a.task_state == TaskState::Running
                && a.version != job.version
        })
        .collect();
    let moves: Vec<TaskMove> = chosen
        .iter()
        .map(|a| {
            let why = format!(
                "surging to version {}: version {} still runs on {}",
                job.version, a.version, a.machine
            );
            task_move(job, a, TaskState::Running, TaskState::Pending, why)
        })
        .collect();
    let moved = move_tasks(conn, &moves, out).await?;
    let chosen: Vec<&Locked> = chosen
        .into_iter()
        .filter(|a| moved.contains(&a.task_id))
        .collect();
    if chosen.is_empty() {
        return Ok(0);
    }
    let attempts: Vec<AttemptId> = chosen.iter().map(|a| a.id).collect();
    let tasks: Vec<TaskId> = chosen.iter().map(|a| a.task_id).collect();
    // Superseded first: the task's new attempt may not be placed beside a
    // live attempt that is not (`attempts_one_live_per_task`).
    sqlx::query("UPDATE attempts SET superseded = true WHERE id = ANY($1)")
        .bind(&attempts)
        .execute(&mut *conn)
        .await?;
    // Detached from its task; the run it had is not spent.
    sqlx::query(
        "UPDATE tasks SET attempt_id = NULL, runs = greatest(runs - 1, 0) WHERE id = ANY($1)",
    )
    .bind(&tasks)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, 'room')")
        .bind(CHANNEL_PENDING)
        .execute(&mut *conn)
        .await?;
    let names = named(job, &chosen);
    let reason = format!(
        "{heading}: surging {}: each new attempt comes up before the old one stops; \
         surge {} of {max_surge}, {} of {} tasks ready on version {}",
        names,
        plan.surging + chosen.len() as i64,
        plan.ready,
        plan.total,
        job.version
    );
    rollout_event(conn, job, &reason).await?;
    metrics::counter!("borg_rollout_surged_total").increment(chosen.len() as u64);
    Ok(chosen.len())
}

/// Ask the superseded attempts of the tasks the plan names to stop (their
/// tasks are ready on the target, or these do not run while their tasks'
/// attempts went stale); their borglets stop them at once.
pub(super) async fn retire(
    conn: &mut PgConnection,
    job: &LockedJob,
    heading: &str,
    rolling_back: bool,
    snap: &Snapshot,
    plan: &Plan,
) -> crate::Result<usize> {
    if plan.retire.is_empty() {
        return Ok(0);
    }
    let why = format!(
        "{REPLACED_BY}{} ({}, surge)",
        job.version,
        if rolling_back { "rollback" } else { "update" }
    );
    // Locked in id order first, as reports and lost machines lock attempts, so
    // a retire racing them queues instead of deadlocking.
    let stopped: Vec<(AttemptId, MachineId, i32, i32)> = sqlx::query_as(concat!(
        "WITH doomed AS (
             SELECT a.id FROM attempts a JOIN tasks t ON t.id = a.task_id
             WHERE t.job_id = $1 AND t.index = ANY($2)
               AND a.superseded AND a.stop_reason IS NULL AND a.state IN ",
        live_attempt!(),
        " ORDER BY a.id FOR UPDATE OF a
         )
         UPDATE attempts a SET stop_reason = $3
         FROM doomed d, tasks t
         WHERE a.id = d.id AND t.id = a.task_id
         RETURNING a.id, a.machine_id, t.index, a.version"
    ))
    .bind(job.id)
    .bind(&plan.retire)
    .bind(&why)
    .fetch_all(&mut *conn)
    .await?;
    if stopped.is_empty() {
        return Ok(0);
    }
    let machines: Vec<MachineId> = stopped.iter().map(|s| s.1).collect();
    notify(conn, CHANNEL_PLACED, &machines).await?;
    let ready = |index: i32| {
        snap.tasks
            .iter()
            .any(|t| t.index == index && replaced_task_ready(t, snap.target, snap.min_healthy))
    };
    let (ready, idle): (Vec<_>, Vec<_>) = stopped.iter().partition(|s| ready(s.2));
    let names = |of: &[&(AttemptId, MachineId, i32, i32)]| {
        of.iter()
            .map(|(_, _, index, v)| format!("{}/{index} (version {v})", job.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut why = Vec::new();
    if !ready.is_empty() {
        why.push(format!(
            "{}: ready on version {}",
            names(&ready),
            job.version
        ));
    }
    if !idle.is_empty() {
        why.push(format!(
            "{}: not running, while the task's attempt runs a stale version",
            names(&idle)
        ));
    }
    let reason = format!(
        "{heading}: stopping the superseded attempts of {}",
        why.join("; ")
    );
    rollout_event(conn, job, &reason).await?;
    Ok(stopped.len())
}

/// Make the superseded attempts of the tasks at `indexes` their tasks'
/// attempts again; each task's current attempt, if live, is superseded and
/// asked to stop. Moves: the task to `pending` (if it is not), `assigned` on
/// its old attempt, then that attempt's state.
pub(super) async fn restore(
    conn: &mut PgConnection,
    job: &LockedJob,
    heading: &str,
    indexes: &[i32],
    out: &mut Transitions,
) -> crate::Result<usize> {
    if indexes.is_empty() {
        return Ok(0);
    }
    let rows = lock(conn, job, indexes).await?;
    // Each task's superseded attempt not asked to stop (of several, the one
    // on the newest version).
    let mut back: Vec<&Locked> = Vec::new();
    for a in rows.iter().filter(|a| a.superseded && !a.stopping) {
        match back.iter_mut().find(|b| b.task_id == a.task_id) {
            Some(b) if b.version < a.version => *b = a,
            Some(_) => {}
            None => back.push(a),
        }
    }
    if back.is_empty() {
        return Ok(0);
    }
    let tasks: HashSet<TaskId> = back.iter().map(|a| a.task_id).collect();
    let current: Vec<&Locked> = rows
        .iter()
        .filter(|a| a.current && !a.superseded && tasks.contains(&a.task_id))
        .collect();
    let why = |a: &Locked| {
        format!(
            "{REPLACED_BY}{} (its superseded attempt on {} runs again)",
            a.version, a.machine
        )
    };
    // The new attempts step aside first (`attempts_one_live_per_task`).
    for c in &current {
        let Some(old) = back.iter().find(|b| b.task_id == c.task_id) else {
            continue;
        };
        sqlx::query(
            "UPDATE attempts SET superseded = true, stop_reason = COALESCE(stop_reason, $2)
             WHERE id = $1",
        )
        .bind(c.id)
        .bind(why(old))
        .execute(&mut *conn)
        .await?;
    }
    let machines: Vec<MachineId> = current.iter().map(|c| c.machine_id).collect();
    notify(conn, CHANNEL_PLACED, &machines).await?;
    // The task to pending (it was waiting for, or running, its new attempt).
    let to_pending: Vec<TaskMove> = back
        .iter()
        .filter_map(|old| {
            let c = current.iter().find(|c| c.task_id == old.task_id)?;
            (c.task_state != TaskState::Pending).then(|| {
                task_move(
                    job,
                    c,
                    c.task_state,
                    TaskState::Pending,
                    format!(
                        "{heading}: its version {} attempt on {} runs again",
                        old.version, old.machine
                    ),
                )
            })
        })
        .collect();
    let stepped_aside = move_tasks(conn, &to_pending, out).await?;
    let back: Vec<&Locked> = back
        .into_iter()
        .filter(|old| {
            let was = current
                .iter()
                .find(|c| c.task_id == old.task_id)
                .map_or(TaskState::Pending, |c| c.task_state);
            was == TaskState::Pending || stepped_aside.contains(&old.task_id)
        })
        .collect();
    let ids: Vec<AttemptId> = back.iter().map(|a| a.id).collect();
    sqlx::query("UPDATE attempts SET superseded = false WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    let placed: Vec<TaskMove> = back
        .iter()
        .map(|a| TaskMove {
            placed: true,
            ..task_move(
                job,
                a,
                TaskState::Pending,
                TaskState::Assigned,
                format!("{heading}: back on its version {} attempt", a.version),
            )
        })
        .collect();
    let on_it = move_tasks(conn, &placed, out).await?;
    let up: Vec<TaskMove> = back
        .iter()
        .filter(|a| on_it.contains(&a.task_id) && a.state != TaskState::Assigned)
        .map(|a| {
            task_move(
                job,
                a,
                TaskState::Assigned,
                a.state,
                format!("{} on {} (version {})", a.state, a.machine, a.version),
            )
        })
        .collect();
    move_tasks(conn, &up, out).await?;
    // A run that was never spent again: placing it counted one.
    let restored: Vec<TaskId> = back.iter().map(|a| a.task_id).collect();
    sqlx::query("UPDATE tasks SET runs = greatest(runs - 1, 0) WHERE id = ANY($1)")
        .bind(&restored)
        .execute(&mut *conn)
        .await?;
    let names = named(job, &back);
    let reason = format!(
        "{heading}: superseded attempts run as their tasks' again: {}",
        names
    );
    rollout_event(conn, job, &reason).await?;
    Ok(back.len())
}
