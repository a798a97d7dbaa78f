//! A job's state follows its task counters, checked after the moves commit
//! rather than under the job's row lock during them: reports from many
//! machines about one job then never queue on the job row. The check is cheap
//! (the job's counter shards), runs after every batch that moved its tasks, and
//! a periodic sweep over live jobs repairs a check lost to a crash.
//!
//! Lock order, everywhere: machine rows (a scheduler's batch) → job rows (in id
//! order) → task and attempt rows → counter rows (upserted in key order). No
//! transaction waits for a lock earlier in that order than one it holds: the
//! scheduler takes its jobs `FOR SHARE` after its machines and before any task;
//! a job's end locks the job before its tasks and attempts; a report holds only
//! its attempts, their tasks and then counters (it touches the machine row in a
//! statement of its own). So none of these transactions can deadlock another.

use crate::error::Result;
use crate::jobs::set_job_states;
use crate::moves::{move_tasks, MovedJob, TaskMove, Transitions};
use crate::rows::{Counts, COUNTS_JOIN};
use crate::{live_attempt, live_job, Store, CHANNEL_PLACED};
use borg_shared::{JobId, JobKind, JobState, TaskId, TaskState};
use sqlx::PgConnection;

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct LiveJob {
    pub id: JobId,
    pub name: String,
    pub kind: JobKind,
    pub state: JobState,
    pub replicas: i32,
    #[sqlx(flatten)]
    pub counts: Counts,
}

/// What a job's counters say its state is. Batch: succeeded when every task
/// succeeded, failed as soon as one failed for good (a failed or lost task that
/// is retried goes back to pending in the same transaction). Either kind:
/// running once any task runs. Pure.
pub(crate) fn next_state(kind: JobKind, state: JobState, replicas: i32, c: &Counts) -> JobState {
    if state.is_terminal() {
        return state;
    }
    match kind {
        JobKind::Batch if c.n_succeeded >= i64::from(replicas) => JobState::Succeeded,
        JobKind::Batch if c.n_failed + c.n_lost > 0 => JobState::Failed,
        _ if c.n_running > 0 => JobState::Running,
        _ => state,
    }
}

fn live_jobs_sql(lock: bool) -> String {
    format!(
        "SELECT j.id, j.name, j.kind, j.state, j.replicas, c.*
         FROM jobs j {COUNTS_JOIN}
         WHERE j.id = ANY($1) AND j.state IN {live}
         ORDER BY j.id {lock}",
        live = live_job!(),
        lock = if lock { "FOR NO KEY UPDATE OF j" } else { "" }
    )
}

/// Lock the live ones of `jobs` (in id order) and read their counters.
pub(crate) async fn lock_live_jobs(
    conn: &mut PgConnection,
    jobs: &[JobId],
) -> Result<Vec<LiveJob>> {
    Ok(sqlx::query_as(&live_jobs_sql(true))
        .bind(jobs)
        .fetch_all(&mut *conn)
        .await?)
}

/// A job to finish, and why.
pub(crate) struct EndJob {
    pub job: JobId,
    pub name: String,
    pub from: JobState,
    pub to: JobState,
    pub reason: String,
}

/// Finish jobs whose rows the caller has locked: end their pending tasks, ask
/// every placed attempt to stop (their borglets are told at once), and set the
/// final state with its event.
pub(crate) async fn end_jobs(
    conn: &mut PgConnection,
    ends: &[EndJob],
    out: &mut Transitions,
) -> Result<()> {
    if ends.is_empty() {
        return Ok(());
    }
    // A job that succeeded has nothing left to stop.
    let cascade: Vec<&EndJob> = ends
        .iter()
        .filter(|e| e.to != JobState::Succeeded)
        .collect();
    if !cascade.is_empty() {
        let ids: Vec<JobId> = cascade.iter().map(|e| e.job).collect();
        let pending: Vec<(TaskId, JobId)> = sqlx::query_as(
            "SELECT id, job_id FROM tasks WHERE job_id = ANY($1) AND state = 'pending' ORDER BY id",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        let moves: Vec<TaskMove> = pending
            .into_iter()
            .map(|(task, job)| TaskMove {
                job,
                task,
                attempt: None,
                machine: None,
                from: TaskState::Pending,
                to: TaskState::Killed,
                reason: cascade
                    .iter()
                    .find(|e| e.job == job)
                    .map_or_else(String::new, |e| e.reason.clone()),
                backoff: None,
                placed: false,
                failed_runs: None,
            })
            .collect();
        move_tasks(conn, &moves, out).await?;
        let reasons: Vec<&str> = cascade.iter().map(|e| e.reason.as_str()).collect();
        sqlx::query(concat!(
            "WITH stopped AS (
                 UPDATE attempts a SET stop_reason = u.reason
                 FROM tasks t, unnest($1::uuid[], $2::text[]) AS u(job_id, reason)
                 WHERE t.id = a.task_id AND t.job_id = u.job_id
                   AND a.state IN ",
            live_attempt!(),
            " AND a.stop_reason IS NULL
                 RETURNING a.machine_id)
             SELECT pg_notify($3, m.machine_id::text)
             FROM (SELECT DISTINCT machine_id FROM stopped) m"
        ))
        .bind(&ids)
        .bind(&reasons)
        .bind(CHANNEL_PLACED)
        .execute(&mut *conn)
        .await?;
    }
    // A rollout under way ends with its job.
    let aborts: Vec<(JobId, JobState, String)> = ends
        .iter()
        .map(|e| (e.job, e.to, e.reason.clone()))
        .collect();
    crate::rollout::abort_rollouts(conn, &aborts).await?;
    let moved: Vec<MovedJob> = ends
        .iter()
        .map(|e| MovedJob {
            job: e.job,
            name: e.name.clone(),
            from: Some(e.from),
            to: e.to,
            reason: e.reason.clone(),
        })
        .collect();
    set_job_states(conn, &moved).await?;
    out.jobs.extend(moved);
    Ok(())
}

/// Why a job failed: the task that failed for good first, and its cause (the
/// exit code, signal or OOM its last attempt ended with).
async fn failure_reason(conn: &mut PgConnection, job: &LiveJob) -> Result<String> {
    let first: Option<(i32, Option<String>)> = sqlx::query_as(
        "SELECT index, reason FROM tasks WHERE job_id = $1 AND state = 'failed'
         ORDER BY updated_at, index LIMIT 1",
    )
    .bind(job.id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match first {
        Some((index, Some(cause))) => format!("{}/{index} failed for good: {cause}", job.name),
        Some((index, None)) => format!("{}/{index} failed for good", job.name),
        None => "a task failed for good".to_string(),
    })
}

impl Store {
    /// Bring the state of `jobs` in line with their counters, as leader at
    /// `epoch` (`Deposed`, moving nothing, if another leads); `None` checks
    /// every live job (the sweep). Returns how many jobs moved.
    pub async fn refresh_jobs(&self, epoch: i64, jobs: Option<&[JobId]>) -> Result<usize> {
        let ids: Vec<JobId> = match jobs {
            Some(j) => j.to_vec(),
            None => sqlx::query_as::<_, (JobId,)>(concat!(
                "SELECT id FROM jobs WHERE state IN ",
                live_job!()
            ))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|(id,)| id)
            .collect(),
        };
        if ids.is_empty() {
            return Ok(0);
        }
        // Most checks find nothing to do: read without locks first.
        let seen: Vec<LiveJob> = sqlx::query_as(&live_jobs_sql(false))
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
        let due: Vec<JobId> = seen
            .iter()
            .filter(|j| next_state(j.kind, j.state, j.replicas, &j.counts) != j.state)
            .map(|j| j.id)
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        let mut tx = crate::tx::begin(&self.pool).await?;
        crate::lease::check_epoch(&mut tx, epoch).await?;
        let locked = lock_live_jobs(&mut tx, &due).await?;
        let mut ends = Vec::new();
        let mut moves = Vec::new();
        for j in &locked {
            let next = next_state(j.kind, j.state, j.replicas, &j.counts);
            if next == j.state {
                continue;
            }
            let reason = match next {
                JobState::Succeeded => "every task succeeded".to_string(),
                JobState::Failed => failure_reason(&mut tx, j).await?,
                _ => "a task is running".to_string(),
            };
            if next.is_terminal() {
                ends.push(EndJob {
                    job: j.id,
                    name: j.name.clone(),
                    from: j.state,
                    to: next,
                    reason,
                });
            } else {
                moves.push(MovedJob {
                    job: j.id,
                    name: j.name.clone(),
                    from: Some(j.state),
                    to: next,
                    reason,
                });
            }
        }
        let mut moved = Transitions::default();
        set_job_states(&mut tx, &moves).await?;
        moved.jobs.extend(moves);
        end_jobs(&mut tx, &ends, &mut moved).await?;
        tx.commit().await?;
        let n = moved.jobs.len();
        moved.emit();
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(f: impl FnOnce(&mut Counts)) -> Counts {
        let mut c = Counts::default();
        f(&mut c);
        c
    }

    #[test]
    fn batch_jobs_end_when_all_succeed_or_one_fails_for_good() {
        let b = JobKind::Batch;
        let all = counts(|c| c.n_succeeded = 3);
        assert_eq!(
            next_state(b, JobState::Running, 3, &all),
            JobState::Succeeded
        );
        let some = counts(|c| {
            c.n_succeeded = 2;
            c.n_running = 1
        });
        assert_eq!(
            next_state(b, JobState::Pending, 3, &some),
            JobState::Running
        );
        let failed = counts(|c| {
            c.n_failed = 1;
            c.n_running = 2
        });
        assert_eq!(
            next_state(b, JobState::Running, 3, &failed),
            JobState::Failed
        );
        let lost = counts(|c| c.n_lost = 1);
        assert_eq!(next_state(b, JobState::Running, 3, &lost), JobState::Failed);
        assert_eq!(
            next_state(b, JobState::Killed, 3, &all),
            JobState::Killed,
            "a finished job never moves"
        );
    }

    #[test]
    fn services_run_and_never_finish_by_counts() {
        let s = JobKind::Service;
        let c = counts(|c| {
            c.n_succeeded = 5;
            c.n_failed = 1;
            c.n_running = 1
        });
        assert_eq!(next_state(s, JobState::Pending, 5, &c), JobState::Running);
        let waiting = counts(|c| c.n_pending = 5);
        assert_eq!(
            next_state(s, JobState::Pending, 5, &waiting),
            JobState::Pending
        );
    }
}
