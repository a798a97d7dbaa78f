//! In-place restarts the borglets report: each one is recorded on its attempt
//! (count and how the previous run ended), counted as a run of its task (so
//! `restart.max_attempts` counts every run, across attempts) and written as an
//! event of the task (`running → running`, with the reason), in one statement.

use crate::error::Result;
use borg_shared::wire::AttemptReport;
use borg_shared::AttemptId;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use std::collections::HashMap;

/// A reported restart count above the stored one.
#[derive(Debug, Clone)]
pub(crate) struct Restarted {
    pub attempt: AttemptId,
    pub restarts: i32,
    pub last_exit: Option<String>,
}

/// The reports whose restart count is above what `stored` holds for them.
pub(crate) fn newly_restarted(
    reports: &[AttemptReport],
    stored: &HashMap<AttemptId, i32>,
) -> Vec<Restarted> {
    reports
        .iter()
        .filter_map(|r| {
            let restarts = i32::try_from(r.restarts).ok()?;
            (restarts > *stored.get(&r.id)?).then(|| Restarted {
                attempt: r.id,
                restarts,
                last_exit: r.last_exit.clone(),
            })
        })
        .collect()
}

/// Record `restarted` (attempts locked first, in id order, then their tasks);
/// returns how many attempts took a new count. A count never goes down, so a
/// stale or repeated report changes nothing.
pub(crate) async fn record_restarts(
    conn: &mut PgConnection,
    restarted: &[Restarted],
) -> Result<u64> {
    if restarted.is_empty() {
        return Ok(0);
    }
    let ids: Vec<uuid::Uuid> = restarted.iter().map(|r| r.attempt.0).collect();
    let counts: Vec<i32> = restarted.iter().map(|r| r.restarts).collect();
    let last: Vec<Option<String>> = restarted.iter().map(|r| r.last_exit.clone()).collect();
    let (n,): (i64,) = sqlx::query_as(
        "WITH r AS (
            SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[]) AS r(id, restarts, last_exit)
        ), old AS (
            SELECT a.id, a.task_id, a.machine_id, a.restarts AS before, r.restarts AS after,
                   r.last_exit
            FROM attempts a JOIN r ON r.id = a.id
            WHERE a.restarts < r.restarts
            ORDER BY a.id
            FOR UPDATE OF a
        ), upd AS (
            UPDATE attempts a SET restarts = old.after, last_exit = old.last_exit
            FROM old WHERE a.id = old.id
            RETURNING a.id
        ), runs AS (
            UPDATE tasks t SET runs = t.runs + (old.after - old.before)
            FROM old WHERE t.id = old.task_id AND t.attempt_id = old.id
            RETURNING t.id, t.job_id, t.state
        ), ev AS (
            INSERT INTO events (kind, job_id, task_id, attempt_id, machine_id, from_state, to_state, reason)
            SELECT 'task', runs.job_id, runs.id, old.id, old.machine_id, runs.state, runs.state,
                   'restarted in place (restart ' || old.after || ')'
                   || COALESCE(' after: ' || old.last_exit, '')
            FROM runs JOIN old ON old.task_id = runs.id
        )
        SELECT count(*) FROM upd",
    )
    .bind(&ids)
    .bind(&counts)
    .bind(&last)
    .fetch_one(&mut *conn)
    .await?;
    Ok(n as u64)
}

/// A run restarted in place: its attempt's new pid and start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewRun {
    pub attempt: AttemptId,
    pub pid: i32,
    pub started_at: Option<DateTime<Utc>>,
}

/// Running reports whose pid is not the one `stored` for a running attempt.
pub(crate) fn new_runs(
    reports: &[AttemptReport],
    stored: &HashMap<AttemptId, Option<i32>>,
) -> Vec<NewRun> {
    reports
        .iter()
        .filter(|r| r.phase == borg_shared::wire::AttemptPhase::Running)
        .filter_map(|r| {
            let pid = r.pid?;
            (*stored.get(&r.id)? != Some(pid)).then_some(NewRun {
                attempt: r.id,
                pid,
                started_at: r.started_at,
            })
        })
        .collect()
}

/// Point running attempts at the pids of their current runs (no event: the
/// restart that made the run wrote one).
pub(crate) async fn record_new_runs(conn: &mut PgConnection, runs: &[NewRun]) -> Result<u64> {
    if runs.is_empty() {
        return Ok(0);
    }
    let ids: Vec<uuid::Uuid> = runs.iter().map(|r| r.attempt.0).collect();
    let pids: Vec<i32> = runs.iter().map(|r| r.pid).collect();
    let starts: Vec<Option<DateTime<Utc>>> = runs.iter().map(|r| r.started_at).collect();
    let done = sqlx::query(
        "UPDATE attempts a SET pid = r.pid, started_at = COALESCE(r.started_at, a.started_at)
         FROM unnest($1::uuid[], $2::int[], $3::timestamptz[]) AS r(id, pid, started_at)
         WHERE a.id = r.id AND a.state = 'running' AND a.pid IS DISTINCT FROM r.pid",
    )
    .bind(&ids)
    .bind(&pids)
    .bind(&starts)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}
