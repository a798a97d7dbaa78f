//! The sync protocol's store side: what each machine should run, and applying
//! what its borglet reports back. One transaction per report.

use super::jobs::refresh_job_states;
use super::transitions::{move_task, TaskMove};
use super::{Store, CHANNEL_PENDING};
use borg_shared::wire::{AttemptPhase, AttemptReport, AttemptSpec, Capacity};
use borg_shared::{
    AttemptId, Bytes, JobId, JobKind, JobSpec, MachineId, MilliCpu, TaskId, TaskState,
};
use chrono::Utc;
use sqlx::types::Json;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Default wait before a failed task runs again when its spec names no backoff.
const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);

#[derive(sqlx::FromRow)]
struct DesiredRow {
    id: AttemptId,
    state: TaskState,
    job: String,
    index: i32,
    spec: Json<JobSpec>,
    cpu_milli: i64,
    memory: i64,
    disk: i64,
}

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
    spec: Json<JobSpec>,
}

impl AttemptRow {
    /// A move of this attempt's task, recorded against this attempt and machine.
    fn task_move<'a>(
        &self,
        machine: MachineId,
        from: TaskState,
        to: TaskState,
        reason: &'a str,
        backoff: Option<Duration>,
    ) -> TaskMove<'a> {
        TaskMove {
            job: self.job_id,
            task: self.task_id,
            attempt: Some(self.id),
            machine: Some(machine),
            from,
            to,
            reason: Some(reason),
            backoff,
        }
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
}

impl Store {
    /// The attempts that should run on a machine now, and which of them the
    /// borglet has not been told about yet (`assigned`).
    pub async fn desired_attempts(
        &self,
        machine: MachineId,
    ) -> anyhow::Result<(Vec<AttemptSpec>, Vec<AttemptId>)> {
        let rows: Vec<DesiredRow> = sqlx::query_as(
            "SELECT a.id, a.state, j.name AS job, t.index, j.spec, a.cpu_milli, a.memory, a.disk
             FROM attempts a JOIN tasks t ON t.id = a.task_id JOIN jobs j ON j.id = t.job_id
             WHERE a.machine_id = $1 AND a.state IN ('assigned', 'starting', 'running')
               AND a.stop_reason IS NULL
             ORDER BY a.created_at",
        )
        .bind(machine)
        .fetch_all(&self.pool)
        .await?;
        let new = rows
            .iter()
            .filter(|r| r.state == TaskState::Assigned)
            .map(|r| r.id)
            .collect();
        let specs = rows
            .into_iter()
            .map(|r| AttemptSpec {
                id: r.id,
                job: r.job,
                index: r.index,
                command: r.spec.0.task.command.clone(),
                env: r.spec.0.task.env.clone(),
                resources: Capacity {
                    cpu: MilliCpu(r.cpu_milli.max(0) as u64),
                    memory: Bytes(r.memory.max(0) as u64),
                    disk: Bytes(r.disk.max(0) as u64),
                },
                kill_grace_ms: r.spec.0.task.kill_grace().as_millis() as u64,
            })
            .collect();
        Ok((specs, new))
    }

    /// `assigned → starting` for attempts about to be sent to their borglet.
    pub async fn mark_starting(&self, attempts: &[AttemptId]) -> anyhow::Result<()> {
        if attempts.is_empty() {
            return Ok(());
        }
        let ids: Vec<uuid::Uuid> = attempts.iter().map(|a| a.0).collect();
        let res = sqlx::query(
            "WITH s AS (
                UPDATE attempts SET state = 'starting' WHERE id = ANY($1) AND state = 'assigned'
                RETURNING id, task_id, machine_id),
             t AS (
                UPDATE tasks SET state = 'starting', updated_at = now() FROM s
                WHERE tasks.id = s.task_id AND tasks.attempt_id = s.id AND tasks.state = 'assigned'
                RETURNING tasks.id, tasks.job_id, s.id AS attempt_id, s.machine_id)
             INSERT INTO events (job_id, task_id, attempt_id, machine_id, from_state, to_state, reason)
             SELECT job_id, id, attempt_id, machine_id, 'assigned', 'starting', 'sent to its borglet' FROM t",
        )
        .bind(&ids)
        .execute(&self.pool)
        .await?;
        metrics::counter!("borg_task_transitions_total", "from" => "assigned", "to" => "starting")
            .increment(res.rows_affected());
        Ok(())
    }

    /// Apply a borglet's report. `sent` are the attempts the request listed as wanted.
    ///
    /// Lock order is job → attempt → task everywhere a job's state may follow,
    /// so reports from two machines about one job serialize instead of each
    /// missing the other's change (or deadlocking). Most polls change nothing
    /// and take no lock at all.
    pub async fn apply_report(
        &self,
        machine: MachineId,
        machine_name: &str,
        sent: &[AttemptId],
        reports: &[AttemptReport],
    ) -> anyhow::Result<ApplyOutcome> {
        let mut out = ApplyOutcome::default();
        let sent: HashSet<AttemptId> = sent.iter().copied().collect();
        let by_report: HashMap<AttemptId, &AttemptReport> =
            reports.iter().map(|r| (r.id, r)).collect();
        let reported: Vec<uuid::Uuid> = reports.iter().map(|r| r.id.0).collect();

        let rows = read_attempts(&self.pool, machine, &reported, false).await?;
        // Attempts whose end is on record: already terminal, or ended below.
        let mut ended: HashSet<AttemptId> = rows
            .iter()
            .filter(|r| r.state.is_terminal())
            .map(|r| r.id)
            .collect();
        let mut jobs: Vec<JobId> = rows
            .iter()
            .filter(|r| {
                !matches!(
                    plan(r, by_report.get(&r.id).copied(), &sent, machine_name),
                    Action::Nothing
                )
            })
            .map(|r| r.job_id)
            .collect();
        jobs.sort();
        jobs.dedup();

        if !jobs.is_empty() {
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT id FROM jobs WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
                .bind(jobs.iter().map(|j| j.0).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
            // Re-read under the locks: this statement sees everything committed before them.
            let locked = read_attempts(&mut *tx, machine, &reported, true).await?;
            for row in locked
                .iter()
                .filter(|r| jobs.binary_search(&r.job_id).is_ok())
            {
                let report = by_report.get(&row.id).copied();
                match plan(row, report, &sent, machine_name) {
                    Action::Nothing => {}
                    Action::Running(report) => {
                        mark_running(&mut tx, row, report, machine, machine_name).await?;
                        out.changed += 1;
                    }
                    Action::End { to, reason, report } => {
                        finish_attempt(&mut tx, row, report, to, &reason).await?;
                        if end_task(&mut tx, row, machine, to, &reason).await? == Some(true) {
                            out.requeued += 1;
                        }
                        out.changed += 1;
                        ended.insert(row.id);
                    }
                }
            }
            refresh_job_states(&mut tx, &jobs).await?;
            if out.requeued > 0 {
                sqlx::query("SELECT pg_notify($1, 'retry')")
                    .bind(CHANNEL_PENDING)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }

        // Finished attempts whose end is on record (or that we never knew) may be forgotten.
        let known: HashSet<AttemptId> = rows.iter().map(|r| r.id).collect();
        out.ack = reports
            .iter()
            .filter(|r| matches!(r.phase, AttemptPhase::Exited | AttemptPhase::FailedToStart))
            .filter(|r| ended.contains(&r.id) || !known.contains(&r.id))
            .map(|r| r.id)
            .collect();
        self.touch_machine(machine).await?;
        Ok(out)
    }
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

/// This machine's live attempts plus the reported ones, with their task and job.
async fn read_attempts<'e, E: sqlx::PgExecutor<'e>>(
    db: E,
    machine: MachineId,
    reported: &[uuid::Uuid],
    lock: bool,
) -> anyhow::Result<Vec<AttemptRow>> {
    let sql = format!(
        "SELECT a.id, a.state, a.stop_reason, a.task_id, t.job_id, t.state AS task_state,
                t.attempt_id AS task_attempt, t.runs, t.max_runs, j.kind,
                j.state IN ('pending', 'running') AS job_live, j.spec
         FROM attempts a JOIN tasks t ON t.id = a.task_id JOIN jobs j ON j.id = t.job_id
         WHERE a.machine_id = $1
           AND (a.id = ANY($2) OR a.state IN ('assigned', 'starting', 'running'))
         ORDER BY a.id {}",
        if lock { "FOR UPDATE OF a, t" } else { "" }
    );
    Ok(sqlx::query_as(&sql)
        .bind(machine)
        .bind(reported)
        .fetch_all(db)
        .await?)
}

async fn mark_running(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    row: &AttemptRow,
    report: &AttemptReport,
    machine: MachineId,
    machine_name: &str,
) -> anyhow::Result<()> {
    sqlx::query("UPDATE attempts SET state = 'running', pid = $2, started_at = $3 WHERE id = $1")
        .bind(row.id)
        .bind(report.pid)
        .bind(report.started_at.unwrap_or_else(Utc::now))
        .execute(&mut **tx)
        .await?;
    if row.task_attempt == Some(row.id) {
        let reason = format!("running on {machine_name}");
        move_task(
            tx,
            row.task_move(machine, row.task_state, TaskState::Running, &reason, None),
        )
        .await?;
    }
    Ok(())
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
    if let Some(stop) = &row.stop_reason {
        return (TaskState::Killed, format!("{stop} ({how})"));
    }
    if report.stopped_by_borglet {
        return (TaskState::Lost, format!("stopped by its borglet ({how})"));
    }
    let clean = report.phase == AttemptPhase::Exited && report.exit_code == Some(0);
    match (row.kind, clean) {
        (JobKind::Batch, true) => (TaskState::Succeeded, how),
        _ => (TaskState::Failed, how),
    }
}

async fn finish_attempt(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    row: &AttemptRow,
    report: Option<&AttemptReport>,
    to: TaskState,
    reason: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE attempts SET state = $2, reason = $3, pid = COALESCE($4, pid), exit_code = $5,
                signal = $6, started_at = COALESCE(started_at, $7), finished_at = COALESCE($8, now())
         WHERE id = $1",
    )
    .bind(row.id)
    .bind(to)
    .bind(reason)
    .bind(report.and_then(|r| r.pid))
    .bind(report.and_then(|r| r.exit_code))
    .bind(report.and_then(|r| r.signal))
    .bind(report.and_then(|r| r.started_at))
    .bind(report.and_then(|r| r.finished_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Move the task of an attempt that ended; put it back to pending when its
/// job is live and its budget allows (services: always). Returns
/// `Some(true)` when requeued, `None` when the attempt was not the task's current one.
async fn end_task(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    row: &AttemptRow,
    machine: MachineId,
    to: TaskState,
    reason: &str,
) -> anyhow::Result<Option<bool>> {
    if row.task_attempt != Some(row.id) || row.task_state.is_terminal() {
        return Ok(None);
    }
    let moved = move_task(tx, row.task_move(machine, row.task_state, to, reason, None)).await?;
    let retry = matches!(to, TaskState::Failed | TaskState::Lost)
        && row.job_live
        && (row.kind == JobKind::Service || row.runs < row.max_runs);
    if !moved || !retry {
        return Ok(Some(false));
    }
    let backoff = row
        .spec
        .0
        .task
        .restart
        .as_ref()
        .and_then(|r| r.backoff)
        .unwrap_or(DEFAULT_BACKOFF);
    let why = match row.kind {
        JobKind::Batch => format!(
            "retrying (run {} of {}) after: {reason}",
            row.runs + 1,
            row.max_runs
        ),
        JobKind::Service => format!("restarting after: {reason}"),
    };
    move_task(
        tx,
        row.task_move(machine, to, TaskState::Pending, &why, Some(backoff)),
    )
    .await?;
    Ok(Some(true))
}
