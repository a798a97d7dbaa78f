//! What operators do to a rollout: read its progress, pause, resume, undo.

use super::decide::decide;
use super::snapshot::snapshot;
use super::{lock_job, read_rollout, rollout_event, set_target, LockedJob, Phase, RolloutRow};
use crate::error::Result;
use crate::Store;
use borg_shared::rollout::{RolloutStep, RolloutView};
use borg_shared::JobId;
use chrono::{DateTime, Utc};

#[derive(Debug)]
pub enum ControlOutcome {
    Changed(Box<RolloutView>),
    /// It already was so (paused, running).
    Unchanged(Box<RolloutView>),
    NotFound,
    /// Not possible in the rollout's state: why.
    Conflict(String),
}

/// Steps shown with a rollout.
const STEPS_SHOWN: i64 = 20;

impl Store {
    /// The job's latest rollout and its progress; a job never updated shows
    /// version 1, done. `None` when no job has that name.
    pub async fn rollout(&self, name: &str) -> Result<Option<RolloutView>> {
        let Some(id) = self.live_or_latest(name).await? else {
            return Ok(None);
        };
        let mut tx = crate::tx::begin(&self.pool).await?;
        let job: Option<LockedJob> = sqlx::query_as(
            "SELECT id, name, state, replicas, version, spec FROM jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(job) = job else {
            return Ok(None);
        };
        let row = read_rollout(&mut tx, id, false).await?;
        let view = view(&mut tx, &job, row.as_ref()).await?;
        tx.commit().await?;
        Ok(Some(view))
    }

    /// Stop taking steps (already-replaced tasks keep coming up).
    pub async fn pause_rollout(&self, name: &str, by: &str) -> Result<ControlOutcome> {
        self.control(name, |row| {
            if !row.state.is_active() {
                return Err(format!("no rollout in progress: the latest is {}", row.state.view(false)));
            }
            Ok((!row.paused).then(|| Change {
                sql: "UPDATE rollouts SET paused = true, reason = $2, updated_at = now() WHERE job_id = $1",
                reason: format!("paused by {by}"),
                target: None,
            }))
        })
        .await
    }

    /// Take steps again; the progress deadline starts over.
    pub async fn resume_rollout(&self, name: &str, by: &str) -> Result<ControlOutcome> {
        self.control(name, |row| {
            if !row.state.is_active() {
                return Err(format!(
                    "no rollout in progress: the latest is {}",
                    row.state.view(false)
                ));
            }
            Ok(row.paused.then(|| Change {
                sql: "UPDATE rollouts SET paused = false, reason = $2, progress_at = now(),
                          updated_at = now() WHERE job_id = $1",
                reason: format!("resumed by {by}"),
                target: None,
            }))
        })
        .await
    }

    /// Roll back: a rollout in progress (or failed) to the version it started
    /// from stable, a completed one to the version before it.
    pub async fn undo_rollout(&self, name: &str, by: &str) -> Result<ControlOutcome> {
        self.control(name, |row| {
            let back_to = match row.state {
                Phase::Rolling | Phase::Failed => row.stable_version,
                Phase::Done => row.from_version,
                Phase::RollingBack | Phase::RolledBack | Phase::Aborted => {
                    return Err(format!(
                        "nothing to undo: the rollout of version {} is already {}",
                        row.to_version,
                        row.state.view(false)
                    ))
                }
            };
            Ok(Some(Change {
                sql: "UPDATE rollouts SET state = 'rolling_back', paused = false, reason = $2,
                          stable_version = $3, phase_at = now(), progress_at = now(), ready = 0,
                          updated_at = now()
                      WHERE job_id = $1",
                reason: format!("undone by {by}: rolling back to version {back_to}"),
                target: Some(back_to),
            }))
        })
        .await
    }

    /// The live job of that name, else the newest.
    async fn live_or_latest(&self, name: &str) -> Result<Option<JobId>> {
        Ok(self.find_job(name).await?.map(|j| j.id))
    }

    async fn control(
        &self,
        name: &str,
        decide_change: impl FnOnce(&RolloutRow) -> std::result::Result<Option<Change>, String>,
    ) -> Result<ControlOutcome> {
        let Some(job) = self.find_job(name).await? else {
            return Ok(ControlOutcome::NotFound);
        };
        if job.state.is_terminal() {
            return Ok(ControlOutcome::Conflict(format!(
                "job {name} has already finished ({})",
                job.state
            )));
        }
        let mut tx = crate::tx::begin(&self.pool).await?;
        let Some(locked) = lock_job(&mut tx, job.id).await? else {
            return Ok(ControlOutcome::Conflict(format!(
                "job {name} has already finished"
            )));
        };
        let Some(row) = read_rollout(&mut tx, job.id, true).await? else {
            return Ok(ControlOutcome::Conflict(format!(
                "job {name} has never been updated: it has no rollout"
            )));
        };
        let change = match decide_change(&row) {
            Err(why) => return Ok(ControlOutcome::Conflict(format!("job {name}: {why}"))),
            Ok(c) => c,
        };
        let changed = change.is_some();
        if let Some(c) = change {
            let mut q = sqlx::query(c.sql).bind(job.id).bind(&c.reason);
            if let Some(v) = c.target {
                q = q.bind(v);
            }
            q.execute(&mut *tx).await?;
            if let Some(v) = c.target {
                set_target(&mut tx, &locked, v).await?;
                metrics::counter!("borg_rollbacks_total", "cause" => "undo").increment(1);
            }
            rollout_event(&mut tx, &locked, &c.reason).await?;
        }
        let locked = lock_job(&mut tx, job.id).await?.unwrap_or(locked);
        let row = read_rollout(&mut tx, job.id, false).await?;
        let view = view(&mut tx, &locked, row.as_ref()).await?;
        tx.commit().await?;
        Ok(if changed {
            ControlOutcome::Changed(Box::new(view))
        } else {
            ControlOutcome::Unchanged(Box::new(view))
        })
    }
}

/// A write a control makes to the rollout row: `$1` job, `$2` reason, `$3` target.
struct Change {
    sql: &'static str,
    reason: String,
    target: Option<i32>,
}

async fn view(
    conn: &mut sqlx::PgConnection,
    job: &LockedJob,
    row: Option<&RolloutRow>,
) -> Result<RolloutView> {
    let policy = job.spec.0.update_policy();
    let fallback = RolloutRow {
        from_version: job.version,
        to_version: job.version,
        stable_version: job.version,
        state: Phase::Done,
        paused: false,
        reason: None,
        started_at: Utc::now(),
        phase_at: Utc::now(),
        ready: 0,
        since_progress_ms: 0,
    };
    let known = row.is_some();
    let row = row.unwrap_or(&fallback);
    let (snap, _) = snapshot(conn, job, row).await?;
    let plan = decide(&snap);
    let steps: Vec<(DateTime<Utc>, String)> = if known {
        sqlx::query_as(
            "SELECT time, reason FROM (
                 SELECT id, time, reason FROM events
                 WHERE job_id >= $1 AND job_id <= $1 AND kind = 'job' AND time >= $2
                   AND reason LIKE 'rollout: %'
                 ORDER BY job_id DESC, id DESC LIMIT $3) e
             ORDER BY id",
        )
        .bind(job.id)
        .bind(row.started_at)
        .bind(STEPS_SHOWN)
        .fetch_all(&mut *conn)
        .await?
    } else {
        vec![]
    };
    Ok(RolloutView {
        job: job.name.clone(),
        state: row.state.view(row.paused),
        from_version: row.from_version,
        to_version: row.to_version,
        target_version: job.version,
        updated: plan.updated,
        ready: plan.ready,
        total: plan.total,
        max_unavailable: policy.max_unavailable(),
        max_surge: policy.max_surge(),
        surging: plan.surging,
        min_healthy_ms: policy.min_healthy().as_millis() as u64,
        reason: row.reason.clone(),
        started_at: known.then_some(row.started_at),
        steps: steps
            .into_iter()
            .map(|(time, reason)| RolloutStep {
                time,
                reason: reason
                    .strip_prefix(super::ROLLOUT_EVENT)
                    .unwrap_or(&reason)
                    .to_string(),
            })
            .collect(),
    })
}
