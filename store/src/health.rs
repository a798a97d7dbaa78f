//! Health checks the borglets run (issue 8): each running attempt's health as its
//! borglet last reported it, recorded on the attempt with why its last probe
//! failed; every change of `healthy` is an event of the task (`running →
//! running`, reason `healthy` or `unhealthy: ...`), in the same statement. And
//! the one definition of a healthy task, for controllers that wait on it.

use crate::error::Result;
use crate::restarts::{new_runs, record_new_runs};
use crate::Store;
use borg_shared::wire::{AttemptPhase, AttemptReport};
use borg_shared::{AttemptId, JobId, TaskId};
use sqlx::PgConnection;
use std::collections::HashMap;

/// A task is healthy when it runs and its current attempt either has no health
/// check or was last reported healthy (`t` a task joined to its job `j` and its
/// current attempt `a`). A check whose first probes have not decided yet
/// (`a.healthy IS NULL`) is not healthy.
pub const TASK_HEALTHY_SQL: &str =
    "(t.state = 'running' AND (j.spec->'task'->'health' IS NULL OR a.healthy IS TRUE))";

/// Health a report gives for an attempt, as it will be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthChange {
    pub attempt: AttemptId,
    /// `None`: no verdict, the stored one stands.
    pub healthy: Option<bool>,
    pub message: Option<String>,
}

/// What is stored for an attempt: `(healthy, health_message)`.
pub(crate) type StoredHealth = (Option<bool>, Option<String>);

/// The reports of running attempts whose health differs from what is stored. A
/// report without a verdict (`healthy` absent: unknown yet) leaves the stored
/// verdict as it is: only a new failure message is kept.
pub(crate) fn health_changes(
    reports: &[AttemptReport],
    stored: &HashMap<AttemptId, StoredHealth>,
) -> Vec<HealthChange> {
    reports
        .iter()
        .filter(|r| matches!(r.phase, AttemptPhase::Running | AttemptPhase::Backoff))
        .filter_map(|r| {
            let (was, message) = stored.get(&r.id)?;
            let changed = match r.healthy {
                Some(h) => *was != Some(h) || *message != r.health_message,
                None => r.health_message.is_some() && *message != r.health_message,
            };
            changed.then(|| HealthChange {
                attempt: r.id,
                healthy: r.healthy,
                message: r.health_message.clone(),
            })
        })
        .collect()
}

/// One transition written: for logs and metrics after the commit.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct HealthEvent {
    pub attempt: AttemptId,
    pub task: TaskId,
    pub healthy: bool,
    pub reason: String,
}

/// Write `changes` to running attempts (locked in id order), with an event for
/// each attempt whose `healthy` changed and is its task's current one.
pub(crate) async fn record_health(
    conn: &mut PgConnection,
    changes: &[HealthChange],
) -> Result<Vec<HealthEvent>> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<uuid::Uuid> = changes.iter().map(|c| c.attempt.0).collect();
    let healthy: Vec<Option<bool>> = changes.iter().map(|c| c.healthy).collect();
    let messages: Vec<Option<String>> = changes.iter().map(|c| c.message.clone()).collect();
    Ok(sqlx::query_as(
        "WITH r AS (
            SELECT * FROM unnest($1::uuid[], $2::bool[], $3::text[]) AS r(id, healthy, message)
        ), old AS (
            SELECT a.id, a.task_id, a.machine_id, a.healthy AS before,
                   COALESCE(r.healthy, a.healthy) AS after, r.message
            FROM attempts a JOIN r ON r.id = a.id
            WHERE a.state = 'running'
              AND (a.healthy IS DISTINCT FROM COALESCE(r.healthy, a.healthy)
                   OR a.health_message IS DISTINCT FROM r.message)
            ORDER BY a.id
            FOR UPDATE OF a
        ), upd AS (
            UPDATE attempts a SET healthy = old.after, health_message = old.message
            FROM old WHERE a.id = old.id
        ), ev AS (
            INSERT INTO events (kind, job_id, task_id, attempt_id, machine_id, from_state, to_state, reason)
            SELECT 'task', t.job_id, t.id, old.id, old.machine_id, t.state, t.state,
                   CASE WHEN old.after THEN 'healthy'
                        ELSE 'unhealthy: ' || COALESCE(old.message, 'health check failed') END
            FROM old JOIN tasks t ON t.id = old.task_id AND t.attempt_id = old.id
            WHERE old.before IS DISTINCT FROM old.after
            RETURNING attempt_id, task_id, reason
        )
        SELECT ev.attempt_id AS attempt, ev.task_id AS task, old.after AS healthy, ev.reason
        FROM ev JOIN old ON old.id = ev.attempt_id",
    )
    .bind(&ids)
    .bind(&healthy)
    .bind(&messages)
    .fetch_all(&mut *conn)
    .await?)
}

/// What the store holds of an attempt a report names, for `record_runs`.
pub(crate) struct StoredRun {
    pub id: AttemptId,
    /// Stored as running (not starting, not ended).
    pub running: bool,
    pub pid: Option<i32>,
    /// Stored as waiting to be restarted in place.
    pub in_backoff: bool,
    pub healthy: Option<bool>,
    pub health_message: Option<String>,
}

impl Store {
    /// What a report says of runs beyond their state: a new pid (restarted in
    /// place) and health changes, in one transaction when there are any,
    /// written as leader at `epoch`.
    pub(crate) async fn record_runs(
        &self,
        epoch: i64,
        reports: &[AttemptReport],
        stored: &[StoredRun],
    ) -> Result<()> {
        let health: HashMap<AttemptId, StoredHealth> = stored
            .iter()
            .map(|r| (r.id, (r.healthy, r.health_message.clone())))
            .collect();
        let changes = health_changes(reports, &health);
        let pids: HashMap<AttemptId, Option<i32>> = stored
            .iter()
            .filter(|r| r.running)
            .map(|r| (r.id, r.pid))
            .collect();
        let runs = new_runs(reports, &pids);
        let waits = backoff_changes(reports, stored);
        if changes.is_empty() && runs.is_empty() && waits.is_empty() {
            return Ok(());
        }
        let mut tx = crate::tx::begin(&self.pool).await?;
        crate::lease::check_epoch(&mut tx, epoch).await?;
        record_new_runs(&mut tx, &runs).await?;
        record_backoff(&mut tx, &waits).await?;
        let events = record_health(&mut tx, &changes).await?;
        tx.commit().await?;
        emit(&events);
        Ok(())
    }
}

/// Running attempts whose report says otherwise than what is stored about
/// waiting to be restarted in place: `(attempt, waiting now)`.
fn backoff_changes(reports: &[AttemptReport], stored: &[StoredRun]) -> Vec<(AttemptId, bool)> {
    let stored: HashMap<AttemptId, bool> = stored
        .iter()
        .filter(|r| r.running)
        .map(|r| (r.id, r.in_backoff))
        .collect();
    reports
        .iter()
        .filter_map(|r| {
            let waiting = match r.phase {
                AttemptPhase::Backoff => true,
                AttemptPhase::Running => false,
                _ => return None,
            };
            (*stored.get(&r.id)? != waiting).then_some((r.id, waiting))
        })
        .collect()
}

/// Write what `backoff_changes` found to attempts still running.
async fn record_backoff(conn: &mut PgConnection, waits: &[(AttemptId, bool)]) -> Result<()> {
    if waits.is_empty() {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = waits.iter().map(|(a, _)| a.0).collect();
    let waiting: Vec<bool> = waits.iter().map(|(_, w)| *w).collect();
    sqlx::query(
        "UPDATE attempts a SET in_backoff = w.waiting
         FROM unnest($1::uuid[], $2::bool[]) AS w(id, waiting)
         WHERE a.id = w.id AND a.state = 'running'",
    )
    .bind(&ids)
    .bind(&waiting)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Logs and metrics of health transitions, once committed.
pub(crate) fn emit(events: &[HealthEvent]) {
    for e in events {
        let to = if e.healthy { "healthy" } else { "unhealthy" };
        metrics::counter!("borg_task_health_transitions_total", "to" => to).increment(1);
        tracing::info!(attempt = %e.attempt, task = %e.task, to, reason = %e.reason, "task health changed");
    }
}

impl Store {
    /// Indexes of `job`'s healthy tasks (`TASK_HEALTHY_SQL`), in order: what a
    /// rolling update waits for before it moves on.
    pub async fn healthy_tasks(&self, job: JobId) -> Result<Vec<i32>> {
        let rows: Vec<(i32,)> = sqlx::query_as(&format!(
            "SELECT t.index FROM tasks t JOIN jobs j ON j.id = t.job_id
             LEFT JOIN attempts a ON a.id = t.attempt_id
             WHERE t.job_id = $1 AND {TASK_HEALTHY_SQL}
             ORDER BY t.index"
        ))
        .bind(job)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(i,)| i).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(phase: AttemptPhase, healthy: Option<bool>, message: Option<&str>) -> AttemptReport {
        let mut r: AttemptReport = serde_json::from_value(serde_json::json!({
            "id": AttemptId::new(), "phase": "running"
        }))
        .unwrap();
        r.phase = phase;
        r.healthy = healthy;
        r.health_message = message.map(str::to_string);
        r
    }

    #[test]
    fn only_news_of_a_running_attempt_is_a_change() {
        let healthy = report(AttemptPhase::Running, Some(true), None);
        let failing = report(AttemptPhase::Running, Some(true), Some("refused"));
        let undecided = report(AttemptPhase::Running, None, Some("refused"));
        let new_run = report(AttemptPhase::Running, None, None);
        let ended = report(AttemptPhase::Exited, Some(false), Some("refused"));
        let unstored = report(AttemptPhase::Running, Some(true), None);
        let stored: HashMap<AttemptId, StoredHealth> = [
            (healthy.id, (Some(true), None)),
            (failing.id, (Some(true), None)),
            (undecided.id, (Some(false), Some("gone".into()))),
            (new_run.id, (Some(false), Some("gone".into()))),
            (ended.id, (Some(true), None)),
        ]
        .into();
        let all = [
            healthy,
            failing.clone(),
            undecided.clone(),
            new_run,
            ended,
            unstored,
        ];
        let changes = health_changes(&all, &stored);
        let change = |r: &AttemptReport| HealthChange {
            attempt: r.id,
            healthy: r.healthy,
            message: r.health_message.clone(),
        };
        assert_eq!(changes, vec![change(&failing), change(&undecided)]);
    }
}
