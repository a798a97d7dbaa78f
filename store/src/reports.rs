//! The sync protocol's store side: what each machine should run, and applying
//! what its borglet reports back. A report is one transaction of a few
//! set-based statements, whatever the number of attempts in it.

use crate::attempts::{move_attempts, AttemptMove};
use crate::health::StoredRun;
use crate::moves::{move_tasks, TaskMove, Transitions};
use crate::restarts::{newly_restarted, record_restarts};
use crate::{live_attempt, live_job, Store, CHANNEL_PENDING};
use borg_shared::spec::RestartPolicy;
use borg_shared::wire::{AttemptPhase, AttemptReport, DeathCause, DeathCertificate};
use borg_shared::{AttemptId, JobId, JobKind, MachineId, TaskId, TaskState};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Default wait before a failed task runs again when its spec names no backoff.
pub(crate) const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);

#[derive(sqlx::FromRow)]
struct AttemptRow {
    id: AttemptId,
    state: TaskState,
    stop_reason: Option<String>,
    task_id: TaskId,
    job_id: JobId,
    task_state: TaskState,
    task_attempt: Option<AttemptId>,
    runs: i32,
    max_runs: i32,
    kind: JobKind,
    job_live: bool,
    restart: Option<Json<RestartPolicy>>,
    /// In-place restarts recorded so far.
    restarts: i32,
    healthy: Option<bool>,
    health_message: Option<String>,
    pid: Option<i32>,
    /// When the attempt was placed (the scheduler's commit).
    created_at: DateTime<Utc>,
    /// The task's failed runs in a row before this attempt's end.
    failed_runs: i32,
    /// Stored as waiting to be restarted in place.
    in_backoff: bool,
}

impl AttemptRow {
    /// A move of this attempt's task, recorded against this attempt and machine.
    fn task_move(
        &self,
        machine: MachineId,
        from: TaskState,
        to: TaskState,
        reason: String,
        backoff: Option<Duration>,
    ) -> TaskMove {
        TaskMove {
            job: self.job_id,
            task: self.task_id,
            attempt: Some(self.id),
            machine: Some(machine),
            from,
            to,
            reason,
            backoff,
            placed: false,
            failed_runs: None,
        }
    }

    /// Is this attempt the one its task is on now (and the task not finished)?
    fn is_current(&self) -> bool {
        self.task_attempt == Some(self.id) && !self.task_state.is_terminal()
    }
}

/// What applying one report did.
#[derive(Debug, Default)]
pub struct ApplyOutcome {
    /// Finished attempts now durably recorded: the borglet may forget them.
    pub ack: Vec<AttemptId>,
    /// Tasks that went back to pending for another attempt.
    pub requeued: usize,
    /// Attempts that moved to a new state.
    pub changed: usize,
    /// Attempts whose in-place restarts went up.
    pub restarted: usize,
}

/// The moves one report asks for, gathered before they are written.
#[derive(Default)]
struct Batch {
    attempts: Vec<AttemptMove>,
    tasks: Vec<TaskMove>,
    /// Second step, for tasks whose end above was written: back to pending.
    requeue: Vec<TaskMove>,
    ended: Vec<AttemptId>,
    /// Ended attempts that were not their task's (superseded by a surge, or
    /// stale on a machine that came back): they move no task, so no event names
    /// their machine.
    lone: Vec<AttemptId>,
    /// Tasks sent back to pending by a preemption: the run they lost is not counted.
    refund: Vec<TaskId>,
    /// Attempts seen running for the first time, with their time since placement.
    ran: Vec<(AttemptId, std::time::Duration)>,
}

impl Store {
    /// `assigned → starting` for attempts about to be sent to their borglet by
    /// the leader at `epoch` (refused with `Deposed` if another leads now).
    pub async fn mark_starting(
        &self,
        machine: MachineId,
        epoch: i64,
        attempts: &[AttemptId],
    ) -> crate::Result<()> {
        if attempts.is_empty() {
            return Ok(());
        }
        let mut tx = crate::tx::begin(&self.pool).await?;
        crate::lease::check_epoch(&mut tx, epoch).await?;
        let rows: Vec<(AttemptId, TaskId, JobId)> = sqlx::query_as(
            "SELECT a.id, t.id, t.job_id FROM attempts a
             JOIN tasks t ON t.id = a.task_id AND t.attempt_id = a.id
             WHERE a.id = ANY($1) AND a.state = 'assigned' AND t.state = 'assigned'
             ORDER BY a.id FOR UPDATE OF a, t",
        )
        .bind(attempts)
        .fetch_all(&mut *tx)
        .await?;
        let attempt_moves: Vec<AttemptMove> = rows
            .iter()
            .map(|(a, _, _)| AttemptMove::new(*a, TaskState::Assigned, TaskState::Starting))
            .collect();
        move_attempts(&mut tx, &attempt_moves).await?;
        let task_moves: Vec<TaskMove> = rows
            .iter()
            .map(|(a, t, j)| TaskMove {
                job: *j,
                task: *t,
                attempt: Some(*a),
                machine: Some(machine),
                from: TaskState::Assigned,
                to: TaskState::Starting,
                reason: "sent to its borglet".into(),
                backoff: None,
                placed: false,
                failed_runs: None,
            })
            .collect();
        let mut moved = Transitions::default();
        move_tasks(&mut tx, &task_moves, &mut moved).await?;
        tx.commit().await?;
        moved.emit();
        Ok(())
    }

    /// Apply a borglet's report, as leader at `epoch`. `sent` are the attempts
    /// the request listed as wanted.
    ///
    /// Every transaction that writes checks the epoch first (`Deposed` if
    /// another replica leads now), holding the lease row share-locked until it
    /// commits: a paused old leader's late report changes nothing. The attempts and tasks that change are locked (in attempt id order) and
    /// re-read, then all their moves are written in a few statements. The job
    /// rows are not touched here: the jobs' states follow from their counters
    /// right after the commit. Most polls change nothing and take no lock.
    pub async fn apply_report(
        &self,
        machine: MachineId,
        machine_name: &str,
        epoch: i64,
        sent: &[AttemptId],
        reports: &[AttemptReport],
    ) -> crate::Result<ApplyOutcome> {
        let mut out = ApplyOutcome::default();
        let sent: HashSet<AttemptId> = sent.iter().copied().collect();
        let by_report: HashMap<AttemptId, &AttemptReport> =
            reports.iter().map(|r| (r.id, r)).collect();
        let reported: Vec<uuid::Uuid> = reports.iter().map(|r| r.id.0).collect();

        let rows = read_attempts(&self.pool, machine, &reported).await?;
        // Restarts first: a run counted before an end decides on a retry.
        let stored: HashMap<AttemptId, i32> = rows.iter().map(|r| (r.id, r.restarts)).collect();
        let restarted = newly_restarted(reports, &stored);
        if !restarted.is_empty() {
            let mut tx = crate::tx::begin(&self.pool).await?;
            crate::lease::check_epoch(&mut tx, epoch).await?;
            out.restarted = record_restarts(&mut tx, &restarted).await? as usize;
            tx.commit().await?;
        }
        let rows = if restarted.is_empty() {
            rows
        } else {
            read_attempts(&self.pool, machine, &reported).await?
        };
        // Attempts whose end is on record: already terminal, or ended below.
        let mut ended: HashSet<AttemptId> = rows
            .iter()
            .filter(|r| r.state.is_terminal())
            .map(|r| r.id)
            .collect();
        let changing: Vec<AttemptId> = rows
            .iter()
            .filter(|r| {
                !matches!(
                    plan(r, by_report.get(&r.id).copied(), &sent, machine_name),
                    Action::Nothing
                )
            })
            .map(|r| r.id)
            .collect();

        if !changing.is_empty() {
            let mut tx = crate::tx::begin(&self.pool).await?;
            crate::lease::check_epoch(&mut tx, epoch).await?;
            // Re-read under the locks: this sees everything committed before them.
            let locked = lock_attempts(&mut tx, &changing).await?;
            let mut batch = Batch::default();
            for row in &locked {
                let report = by_report.get(&row.id).copied();
                let action = plan(row, report, &sent, machine_name);
                let (job, task, attempt) = (&row.job_id, &row.task_id, &row.id);
                let _in = tracing::debug_span!("apply", %job, %task, %attempt).entered();
                tracing::debug!(state = %row.state, "applying the report");
                collect(&mut batch, row, action, machine, machine_name);
            }
            let mut moved = Transitions::default();
            let attempts_moved = move_attempts(&mut tx, &batch.attempts).await?;
            out.changed = attempts_moved.len();
            let tasks_moved = move_tasks(&mut tx, &batch.tasks, &mut moved).await?;
            let refund: Vec<TaskId> = batch
                .refund
                .iter()
                .copied()
                .filter(|t| tasks_moved.contains(t))
                .collect();
            if !refund.is_empty() {
                sqlx::query("UPDATE tasks SET runs = greatest(runs - 1, 0) WHERE id = ANY($1)")
                    .bind(&refund)
                    .execute(&mut *tx)
                    .await?;
            }
            let requeue: Vec<TaskMove> = batch
                .requeue
                .into_iter()
                .filter(|m| tasks_moved.contains(&m.task))
                .collect();
            out.requeued = move_tasks(&mut tx, &requeue, &mut moved).await?.len();
            // A retry waits for a scheduler, and an ended attempt frees room a
            // waiting task may fit in: wake the schedulers once for both.
            let freed = batch.ended.iter().any(|a| attempts_moved.contains(a));
            if batch.lone.iter().any(|a| attempts_moved.contains(a)) {
                // Room freed that no task event names: stamp the machine so a
                // scheduler's machine cache re-reads its usage (scheduler/src/cache.rs).
                sqlx::query("UPDATE machines SET sched_txid = pg_current_xact_id() WHERE id = $1")
                    .bind(machine)
                    .execute(&mut *tx)
                    .await?;
            }
            if out.requeued > 0 || freed || !refund.is_empty() {
                sqlx::query("SELECT pg_notify($1, 'room')")
                    .bind(CHANNEL_PENDING)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            ended.extend(batch.ended.iter().filter(|a| attempts_moved.contains(a)));
            for (_, waited) in batch.ran.iter().filter(|(a, _)| attempts_moved.contains(a)) {
                metrics::histogram!("borg_task_placed_to_running_seconds")
                    .record(waited.as_secs_f64());
            }
            let jobs = moved.task_jobs();
            moved.emit();
            self.refresh_jobs(epoch, Some(&jobs)).await?;
        }

        // Finished attempts whose end is on record (or that we never knew) may be forgotten.
        let known: HashSet<AttemptId> = rows.iter().map(|r| r.id).collect();
        out.ack = reports
            .iter()
            .filter(|r| matches!(r.phase, AttemptPhase::Exited | AttemptPhase::FailedToStart))
            .filter(|r| ended.contains(&r.id) || !known.contains(&r.id))
            .map(|r| r.id)
            .collect();
        // After the moves: a task reported running and healthy at once runs first.
        let runs: Vec<StoredRun> = rows
            .iter()
            .filter(|r| !ended.contains(&r.id))
            .map(|r| StoredRun {
                id: r.id,
                running: r.state == TaskState::Running,
                pid: r.pid,
                in_backoff: r.in_backoff,
                healthy: r.healthy,
                health_message: r.health_message.clone(),
            })
            .collect();
        self.record_runs(epoch, reports, &runs).await?;
        self.record_usage(machine, epoch, reports).await?;
        Ok(out)
    }
}

/// Turn one attempt's planned action into moves.
fn collect(
    batch: &mut Batch,
    row: &AttemptRow,
    action: Action<'_>,
    machine: MachineId,
    machine_name: &str,
) {
    match action {
        Action::Nothing => {}
        Action::Running(report) => {
            let mut mv = AttemptMove::new(row.id, row.state, TaskState::Running);
            mv.pid = report.pid;
            let started = report.started_at.unwrap_or_else(Utc::now);
            mv.started_at = Some(started);
            batch.attempts.push(mv);
            let waited = (started - row.created_at).to_std().unwrap_or_default();
            batch.ran.push((row.id, waited));
            if row.is_current() {
                let reason = format!("running on {machine_name}");
                batch.tasks.push(row.task_move(
                    machine,
                    row.task_state,
                    TaskState::Running,
                    reason,
                    None,
                ));
            }
        }
        Action::End { to, reason, report } => {
            let mut mv = AttemptMove::new(row.id, row.state, to);
            mv.reason = Some(reason.clone());
            mv.death = death_certificate(row, report);
            if let Some(r) = report {
                mv.pid = r.pid;
                mv.exit_code = r.exit_code;
                mv.signal = r.signal;
                mv.started_at = r.started_at;
                mv.finished_at = r.finished_at;
            }
            batch.attempts.push(mv);
            batch.ended.push(row.id);
            if !row.is_current() {
                batch.lone.push(row.id);
                return;
            }
            if let (Some(why), true) =
                (requeue_after_stop(row.stop_reason.as_deref()), row.job_live)
            {
                // Back to the queue at once, and the run it lost is not spent.
                batch.tasks.push(row.task_move(
                    machine,
                    row.task_state,
                    TaskState::Pending,
                    why,
                    None,
                ));
                batch.refund.push(row.task_id);
                return;
            }
            batch
                .tasks
                .push(row.task_move(machine, row.task_state, to, reason.clone(), None));
            // A task that could not even start (no such program, ...) would fail
            // the same way anywhere: it fails at once, with that reason.
            let failed_to_start = report.is_some_and(|r| r.phase == AttemptPhase::FailedToStart);
            let retry = matches!(to, TaskState::Failed | TaskState::Lost)
                && !failed_to_start
                && row.job_live
                && (row.kind == JobKind::Service || row.runs < row.max_runs);
            if retry {
                let base = row
                    .restart
                    .as_ref()
                    .and_then(|r| r.0.backoff)
                    .unwrap_or(DEFAULT_BACKOFF);
                // A failed run (not a lost machine) counts toward a crash loop
                // unless it ran long enough to end one; each in a row doubles
                // the wait, and the scheduler tries other machines first.
                let failed_runs = (to == TaskState::Failed).then(|| {
                    // The last run's (an in-place restart is a run of its own).
                    let began = report.and_then(|r| r.started_at).unwrap_or(row.created_at);
                    let ended = report.and_then(|r| r.finished_at).unwrap_or_else(Utc::now);
                    let ran = (ended - began).to_std().unwrap_or_default();
                    if ran >= RestartPolicy::RESET_AFTER {
                        1
                    } else {
                        row.failed_runs.saturating_add(1)
                    }
                });
                let backoff =
                    RestartPolicy::backoff_after(base, failed_runs.map_or(1, |n| n.unsigned_abs()));
                // e.g. `restarting in 8s (3 failed runs in a row) after: ...`,
                // `retrying in 1s (run 2 of 3) after: ...`.
                let mut notes = Vec::new();
                let verb = match row.kind {
                    JobKind::Batch => {
                        notes.push(format!("run {} of {}", row.runs + 1, row.max_runs));
                        "retrying"
                    }
                    JobKind::Service => "restarting",
                };
                if let Some(n) = failed_runs.filter(|&n| n > 1) {
                    notes.push(format!("{n} failed runs in a row"));
                }
                let notes = if notes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", notes.join(", "))
                };
                let wait = humantime::format_duration(backoff);
                let why = format!("{verb} in {wait}{notes} after: {reason}");
                let mut requeue =
                    row.task_move(machine, to, TaskState::Pending, why, Some(backoff));
                requeue.failed_runs = failed_runs;
                batch.requeue.push(requeue);
            }
        }
    }
}

/// A task whose attempt was stopped to make room (preemption) or to be
/// replaced by a newer version (rollout) goes back to the queue once the
/// attempt is gone: the reason its task event gives.
fn requeue_after_stop(stop_reason: Option<&str>) -> Option<String> {
    let stop = stop_reason?;
    if let Some(by) = stop.strip_prefix(crate::PREEMPTED_BY) {
        return Some(format!("{}{by}: waiting to run again", crate::PREEMPTED_BY));
    }
    stop.starts_with(crate::REPLACED_BY)
        .then(|| format!("{stop}: placing the new version"))
}

/// What one attempt's report means for the store.
enum Action<'a> {
    Nothing,
    /// Reported alive while we still had it as assigned/starting.
    Running(&'a AttemptReport),
    /// It ended: exited, failed to start, stopped on request, or vanished.
    End {
        to: TaskState,
        reason: String,
        report: Option<&'a AttemptReport>,
    },
}

/// Decide, from the stored row and the borglet's report (if any), what changes. Pure.
fn plan<'a>(
    row: &AttemptRow,
    report: Option<&'a AttemptReport>,
    sent: &HashSet<AttemptId>,
    machine_name: &str,
) -> Action<'a> {
    if row.state.is_terminal() {
        return Action::Nothing;
    }
    match report {
        Some(r) if matches!(r.phase, AttemptPhase::Exited | AttemptPhase::FailedToStart) => {
            let (to, reason) = final_state(row, r);
            Action::End {
                to,
                reason,
                report: Some(r),
            }
        }
        Some(r) if matches!(row.state, TaskState::Assigned | TaskState::Starting) => {
            Action::Running(r)
        }
        Some(_) => Action::Nothing,
        // Live here but unknown to the borglet: it was told to stop it and it is
        // gone, or it never got it (lost). Attempts placed after this sync was
        // prepared are neither.
        None => match &row.stop_reason {
            Some(stop) => Action::End {
                to: TaskState::Killed,
                reason: stop.clone(),
                report: None,
            },
            None if sent.contains(&row.id) => Action::End {
                to: TaskState::Lost,
                reason: format!("the borglet on {machine_name} does not know this attempt"),
                report: None,
            },
            None => Action::Nothing,
        },
    }
}

const ATTEMPT_COLUMNS: &str = concat!(
    "SELECT a.id, a.state, a.stop_reason, a.task_id, t.job_id, t.state AS task_state,
            t.attempt_id AS task_attempt, t.runs, t.max_runs, j.kind, a.restarts,
            a.healthy, a.health_message, a.pid, a.created_at, t.failed_runs, a.in_backoff,
            j.state IN ",
    live_job!(),
    " AS job_live, j.spec->'task'->'restart' AS restart
     FROM attempts a JOIN tasks t ON t.id = a.task_id JOIN jobs j ON j.id = t.job_id"
);

/// This machine's live attempts plus the reported ones, with their task and job.
async fn read_attempts(
    pool: &sqlx::PgPool,
    machine: MachineId,
    reported: &[uuid::Uuid],
) -> crate::Result<Vec<AttemptRow>> {
    Ok(sqlx::query_as(&format!(
        "{ATTEMPT_COLUMNS}
         WHERE a.machine_id = $1 AND (a.id = ANY($2) OR a.state IN {live})",
        live = live_attempt!()
    ))
    .bind(machine)
    .bind(reported)
    .fetch_all(pool)
    .await?)
}

/// Lock these attempts and their tasks, in attempt id order, and read them again.
async fn lock_attempts(
    conn: &mut sqlx::PgConnection,
    ids: &[AttemptId],
) -> crate::Result<Vec<AttemptRow>> {
    Ok(sqlx::query_as(&format!(
        "{ATTEMPT_COLUMNS} WHERE a.id = ANY($1) ORDER BY a.id FOR UPDATE OF a, t"
    ))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?)
}

/// The attempt's final state and a human reason, from how it ended.
fn final_state(row: &AttemptRow, report: &AttemptReport) -> (TaskState, String) {
    let how = match (report.phase, report.exit_code, report.signal) {
        (AttemptPhase::FailedToStart, _, _) => format!(
            "failed to start: {}",
            report.message.as_deref().unwrap_or("unknown error")
        ),
        (_, Some(code), _) => format!("exited with code {code}"),
        (_, _, Some(sig)) => format!("killed by signal {sig}"),
        _ => "ended".to_string(),
    };
    // Why the borglet gave up on it, when it says (e.g. handed back after exiting
    // too often), or why its status is unknown.
    let how = match (&report.message, report.phase) {
        (Some(note), AttemptPhase::Exited) => format!("{how}: {note}"),
        _ => how,
    };
    // The stop's reason names who asked, often in parentheses of its own
    // (`killed by alice (token ci)`): how it ended follows after a colon.
    if let Some(stop) = &row.stop_reason {
        return (TaskState::Killed, format!("{stop}: {how}"));
    }
    if report.stopped_by_borglet {
        return (TaskState::Lost, format!("stopped by its borglet: {how}"));
    }
    if report.oom_killed {
        return (
            TaskState::Failed,
            DeathCause::OomKilled.as_str().to_string(),
        );
    }
    let clean = report.phase == AttemptPhase::Exited && report.exit_code == Some(0);
    match (row.kind, clean) {
        (JobKind::Batch, true) => (TaskState::Succeeded, how),
        _ => (TaskState::Failed, how),
    }
}

/// Why the borglet stopped an attempt the master never asked to stop.
const KILLED_BY_BORGLET: &str = "its borglet: the master no longer wanted it there";

/// The death certificate of an attempt ending now: from the borglet's report if
/// there is one, and the master's own stop request (who asked). A vanished
/// attempt with no stop request has none: nobody knows how it ended.
fn death_certificate(row: &AttemptRow, report: Option<&AttemptReport>) -> Option<DeathCertificate> {
    let killed_by = row.stop_reason.clone().or_else(|| {
        // The borglet says why when it acted on its own (a fence).
        report
            .filter(|r| r.stopped_by_borglet)
            .map(|r| match &r.message {
                Some(why) => format!("its borglet: {why}"),
                None => KILLED_BY_BORGLET.to_string(),
            })
    });
    let Some(r) = report else {
        return killed_by.map(|by| DeathCertificate {
            cause: DeathCause::Killed,
            exit_code: None,
            signal: None,
            killed_by: Some(by),
            peak_memory: None,
            stderr_tail: None,
        });
    };
    let cause = if r.phase == AttemptPhase::FailedToStart {
        DeathCause::FailedToStart
    } else if r.oom_killed {
        DeathCause::OomKilled
    } else if killed_by.is_some() {
        DeathCause::Killed
    } else if r.signal.is_some() {
        DeathCause::Signaled
    } else {
        // An exit code, or a status the borglet could not read (its message says why).
        DeathCause::Exited
    };
    Some(DeathCertificate {
        cause,
        exit_code: r.exit_code,
        signal: r.signal,
        killed_by: killed_by.filter(|_| cause == DeathCause::Killed),
        peak_memory: r.peak_memory,
        stderr_tail: r.stderr_tail.clone(),
    })
}

#[cfg(test)]
#[path = "reports_tests.rs"]
mod tests;
