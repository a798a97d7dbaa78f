//! One step of every active rollout, as the leader: read each job's snapshot
//! under its job and rollout rows' locks, decide, and write what the decision
//! says (attempts asked to stop, the rollout's state) with an event per step.

use super::decide::{decide, Outcome, Plan};
use super::snapshot::{snapshot, TaskRow};
use super::surge;
use super::REPLACED_BY;
use super::{lock_job, read_rollout, rollout_event, set_target, LockedJob, Phase, RolloutRow};
use crate::lease::check_epoch;
use crate::moves::Transitions;
use crate::{live_attempt, live_job, Store, CHANNEL_PLACED};
use borg_shared::{AttemptId, JobId, MachineId};

/// What one step did, for the controller's log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StepReport {
    pub rollouts: usize,
    pub replaced: usize,
    /// Tasks surged (their new attempt placed before the old one stops).
    pub surged: usize,
    pub finished: usize,
    pub failed: usize,
}

impl Store {
    /// One step of each active, unpaused rollout of a live job, as leader at `epoch`.
    pub async fn rollout_step(&self, epoch: i64) -> crate::Result<StepReport> {
        let jobs: Vec<(JobId,)> = sqlx::query_as(concat!(
            "SELECT r.job_id FROM rollouts r JOIN jobs j ON j.id = r.job_id
             WHERE r.state IN ('rolling', 'rolling_back') AND NOT r.paused AND j.state IN ",
            live_job!(),
            " ORDER BY r.job_id"
        ))
        .fetch_all(&self.pool)
        .await?;
        let mut report = StepReport::default();
        for (job,) in jobs {
            self.step_one(epoch, job, &mut report).await?;
        }
        Ok(report)
    }

    async fn step_one(&self, epoch: i64, job: JobId, report: &mut StepReport) -> crate::Result<()> {
        let mut tx = crate::tx::begin(&self.pool).await?;
        check_epoch(&mut tx, epoch).await?;
        // Lock order: the job row, then its rollout row (as an update or undo).
        let Some(job) = lock_job(&mut tx, job).await? else {
            return Ok(());
        };
        let Some(row) = read_rollout(&mut tx, job.id, true).await? else {
            return Ok(());
        };
        if !row.state.is_active() || row.paused {
            return Ok(());
        }
        report.rollouts += 1;
        let (snap, tasks) = snapshot(&mut tx, &job, &row).await?;
        let plan = decide(&snap);
        let mut moved = Transitions::default();
        let heading = heading(&job, &row);
        match &plan.outcome {
            Outcome::Continue => {
                report.replaced += replace(&mut tx, &job, &row, &plan, &tasks).await?;
                let (tx, job) = (&mut *tx, &job);
                report.surged +=
                    surge::surge(tx, job, &heading, &plan, snap.max_surge, &mut moved).await?;
                let rolling_back = row.state == Phase::RollingBack;
                surge::retire(tx, job, &heading, rolling_back, &snap, &plan).await?;
                surge::restore(tx, job, &heading, &plan.restore, &mut moved).await?;
                let progress = plan.ready > i64::from(row.ready) || plan.acts();
                if progress {
                    sqlx::query(
                        "UPDATE rollouts SET progress_at = now(), ready = $2, updated_at = now()
                         WHERE job_id = $1",
                    )
                    .bind(job.id)
                    .bind(plan.ready as i32)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            Outcome::Done => {
                report.finished += 1;
                finish(&mut tx, &job, &row, &plan).await?;
            }
            Outcome::Failed(why) => {
                report.failed += 1;
                fail(&mut tx, &job, &row, why, &tasks, &mut moved).await?;
            }
        }
        tx.commit().await?;
        moved.emit();
        Ok(())
    }
}

/// The direction of a rollout, in its events' words.
fn heading(job: &LockedJob, row: &RolloutRow) -> String {
    match row.state {
        Phase::RollingBack => format!("rollback to version {}", job.version),
        _ => format!("version {} → {}", row.from_version, job.version),
    }
}

/// Ask the attempts of the tasks the plan names to stop; their borglets stop
/// them at once and their tasks come back on the target (`reports.rs`).
async fn replace(
    tx: &mut sqlx::PgConnection,
    job: &LockedJob,
    row: &RolloutRow,
    plan: &Plan,
    tasks: &[TaskRow],
) -> crate::Result<usize> {
    let chosen: Vec<&TaskRow> = tasks
        .iter()
        .filter(|t| plan.replace.contains(&t.index))
        .collect();
    let attempts: Vec<AttemptId> = chosen.iter().filter_map(|t| t.attempt_id).collect();
    if attempts.is_empty() {
        return Ok(0);
    }
    let why = match row.state {
        Phase::RollingBack => format!("{REPLACED_BY}{} (rollback)", job.version),
        _ => format!("{REPLACED_BY}{} (update)", job.version),
    };
    let stopped: Vec<(AttemptId, MachineId)> = sqlx::query_as(concat!(
        "UPDATE attempts SET stop_reason = $2
         WHERE id = ANY($1) AND stop_reason IS NULL AND state IN ",
        live_attempt!(),
        " RETURNING id, machine_id"
    ))
    .bind(&attempts)
    .bind(&why)
    .fetch_all(&mut *tx)
    .await?;
    let mut machines: Vec<uuid::Uuid> = stopped.iter().map(|(_, m)| m.0).collect();
    machines.sort();
    machines.dedup();
    // Their borglets are synced at once (delivered at commit).
    sqlx::query("SELECT pg_notify($1, m::text) FROM unnest($2::uuid[]) AS m")
        .bind(CHANNEL_PLACED)
        .bind(&machines)
        .execute(&mut *tx)
        .await?;
    if stopped.is_empty() {
        return Ok(0);
    }
    let names: Vec<String> = chosen
        .iter()
        .filter(|t| {
            t.attempt_id
                .is_some_and(|a| stopped.iter().any(|(s, _)| *s == a))
        })
        .map(|t| match t.version {
            Some(v) => format!("{}/{} (version {v})", job.name, t.index),
            None => format!("{}/{}", job.name, t.index),
        })
        .collect();
    let reason = format!(
        "{}: replacing {}; {} of {} tasks ready on version {}, {} down before this step",
        heading(job, row),
        names.join(", "),
        plan.ready,
        plan.total,
        job.version,
        plan.down
    );
    rollout_event(tx, job, &reason).await?;
    metrics::counter!("borg_rollout_replaced_total").increment(stopped.len() as u64);
    Ok(stopped.len())
}

async fn finish(
    tx: &mut sqlx::PgConnection,
    job: &LockedJob,
    row: &RolloutRow,
    plan: &Plan,
) -> crate::Result<()> {
    let (to, reason) = match row.state {
        Phase::RollingBack => (
            Phase::RolledBack,
            format!(
                "rolled back to version {}: {} of {} tasks ready",
                job.version, plan.ready, plan.total
            ),
        ),
        _ => (
            Phase::Done,
            format!(
                "version {} rolled out: {} of {} tasks ready",
                job.version, plan.ready, plan.total
            ),
        ),
    };
    // Why a rollback happened stays the rollout's reason; a success says so.
    sqlx::query(
        "UPDATE rollouts SET state = $2, stable_version = $3, ready = $4,
             reason = CASE WHEN $2 = 'done'::rollout_state THEN $5 ELSE reason END,
             updated_at = now()
         WHERE job_id = $1",
    )
    .bind(job.id)
    .bind(to)
    .bind(job.version)
    .bind(plan.ready as i32)
    .bind(&reason)
    .execute(&mut *tx)
    .await?;
    rollout_event(tx, job, &reason).await?;
    metrics::counter!("borg_rollouts_finished_total", "state" => match to {
        Phase::RolledBack => "rolled_back",
        _ => "done",
    })
    .increment(1);
    Ok(())
}

/// The target version does not come up: a rollout rolls back to the stable
/// version (the same rolling procedure); a rollback that fails too stops.
async fn fail(
    tx: &mut sqlx::PgConnection,
    job: &LockedJob,
    row: &RolloutRow,
    why: &str,
    tasks: &[TaskRow],
    moved: &mut Transitions,
) -> crate::Result<()> {
    if row.state == Phase::RollingBack || row.stable_version == job.version {
        let reason = format!(
            "{} failed: {why}; stopped (update the job to go on)",
            heading(job, row)
        );
        // No task is left on a new attempt while its old one still runs aside.
        let surged: Vec<i32> = tasks
            .iter()
            .filter(|t| t.surged_attempt.is_some())
            .map(|t| t.index)
            .collect();
        surge::restore(tx, job, &heading(job, row), &surged, moved).await?;
        sqlx::query(
            "UPDATE rollouts SET state = 'failed', reason = $2, updated_at = now() WHERE job_id = $1",
        )
        .bind(job.id)
        .bind(&reason)
        .execute(&mut *tx)
        .await?;
        rollout_event(tx, job, &reason).await?;
        metrics::counter!("borg_rollouts_finished_total", "state" => "failed").increment(1);
        return Ok(());
    }
    let reason = format!(
        "{} failed: {why}; rolling back to version {}",
        heading(job, row),
        row.stable_version
    );
    set_target(tx, job, row.stable_version).await?;
    sqlx::query(
        "UPDATE rollouts SET state = 'rolling_back', reason = $2, phase_at = now(),
             progress_at = now(), ready = 0, updated_at = now()
         WHERE job_id = $1",
    )
    .bind(job.id)
    .bind(&reason)
    .execute(&mut *tx)
    .await?;
    rollout_event(tx, job, &reason).await?;
    metrics::counter!("borg_rollbacks_total", "cause" => "failure").increment(1);
    Ok(())
}
