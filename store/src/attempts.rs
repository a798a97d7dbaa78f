//! Attempt state moves, set-based like task moves. An attempt's moves are its
//! task's moves (the task's event carries the attempt id), except for attempts
//! that are no longer their task's current one, which move alone.

use crate::error::{Result, StoreError};
use borg_shared::wire::DeathCertificate;
use borg_shared::{AttemptId, TaskState};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use std::collections::HashSet;

#[derive(Debug, Clone)]
pub(crate) struct AttemptMove {
    pub id: AttemptId,
    pub from: TaskState,
    pub to: TaskState,
    pub pid: Option<i32>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// How it ended, on a terminal move.
    pub death: Option<DeathCertificate>,
}

impl AttemptMove {
    pub fn new(id: AttemptId, from: TaskState, to: TaskState) -> AttemptMove {
        AttemptMove {
            id,
            from,
            to,
            pid: None,
            exit_code: None,
            signal: None,
            reason: None,
            started_at: None,
            finished_at: None,
            death: None,
        }
    }
}

/// Apply `moves` in one statement; returns the attempts that moved. A terminal
/// move stamps `finished_at` (the borglet's time if it sent one).
pub(crate) async fn move_attempts(
    conn: &mut PgConnection,
    moves: &[AttemptMove],
) -> Result<HashSet<AttemptId>> {
    if moves.is_empty() {
        return Ok(HashSet::new());
    }
    for mv in moves {
        if !mv.from.can_move_to(mv.to) || mv.to == TaskState::Pending {
            return Err(StoreError::IllegalMove {
                task: format!("attempt {}", mv.id),
                from: mv.from,
                to: mv.to,
            });
        }
    }
    let moved: Vec<(AttemptId,)> = sqlx::query_as(
        "UPDATE attempts a
         SET state = u.to_state::task_state,
             pid = COALESCE(u.pid, a.pid),
             exit_code = COALESCE(u.exit_code, a.exit_code),
             signal = COALESCE(u.signal, a.signal),
             reason = COALESCE(u.reason, a.reason),
             started_at = COALESCE(a.started_at, u.started_at),
             finished_at = CASE WHEN u.to_state IN ('succeeded', 'failed', 'killed', 'lost')
                                THEN COALESCE(u.finished_at, now()) ELSE a.finished_at END,
             cause = COALESCE(u.cause, a.cause),
             killed_by = COALESCE(u.killed_by, a.killed_by),
             peak_memory = COALESCE(u.peak_memory, a.peak_memory),
             stderr_tail = COALESCE(u.stderr_tail, a.stderr_tail)
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::int[], $6::int[], $7::text[],
                     $8::timestamptz[], $9::timestamptz[], $10::text[], $11::text[], $12::bigint[],
                     $13::text[])
             AS u(id, from_state, to_state, pid, exit_code, signal, reason, started_at, finished_at,
                  cause, killed_by, peak_memory, stderr_tail)
         WHERE a.id = u.id AND a.state = u.from_state::task_state
         RETURNING a.id",
    )
    .bind(moves.iter().map(|m| m.id.0).collect::<Vec<_>>())
    .bind(moves.iter().map(|m| m.from.as_str()).collect::<Vec<_>>())
    .bind(moves.iter().map(|m| m.to.as_str()).collect::<Vec<_>>())
    .bind(moves.iter().map(|m| m.pid).collect::<Vec<_>>())
    .bind(moves.iter().map(|m| m.exit_code).collect::<Vec<_>>())
    .bind(moves.iter().map(|m| m.signal).collect::<Vec<_>>())
    .bind(moves.iter().map(|m| m.reason.as_deref()).collect::<Vec<_>>())
    .bind(moves.iter().map(|m| m.started_at).collect::<Vec<_>>())
    .bind(moves.iter().map(|m| m.finished_at).collect::<Vec<_>>())
    .bind(death(moves, |d| Some(d.cause.as_str().to_string())))
    .bind(death(moves, |d| d.killed_by.clone()))
    .bind(
        moves
            .iter()
            .map(|m| m.death.as_ref()?.peak_memory.map(|b| b.0.min(i64::MAX as u64) as i64))
            .collect::<Vec<_>>(),
    )
    .bind(death(moves, |d| d.stderr_tail.as_deref().map(without_nul)))
    .fetch_all(&mut *conn)
    .await?;
    Ok(moved.into_iter().map(|(a,)| a).collect())
}

/// One text column of the moves' death certificates.
fn death(
    moves: &[AttemptMove],
    field: impl Fn(&DeathCertificate) -> Option<String>,
) -> Vec<Option<String>> {
    moves
        .iter()
        .map(|m| m.death.as_ref().and_then(&field))
        .collect()
}

/// Postgres text cannot hold NUL; a task's stderr may.
fn without_nul(s: &str) -> String {
    s.replace('\0', "\u{fffd}")
}
