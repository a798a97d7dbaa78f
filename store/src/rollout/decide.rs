//! The step decision of a rollout, pure: one job's tasks in, what to do now
//! out. No I/O and no clock: durations come in the snapshot.
//!
//! A task is *available* while it runs and nobody asked it to stop, and, if it
//! already runs the target version, once it is ready (`replaced_task_ready`);
//! a surging task is available while its superseded attempt runs. A step
//! replaces stale tasks (on another version): those already down at no cost,
//! running ones by a surge (their new attempt comes up before the old one
//! stops) while fewer than `max_surge` superseded attempts live, else by
//! stopping them first while fewer than `max_unavailable` tasks are down.
//! A superseded attempt stops once its task is ready on the target, or when it
//! does not run while its task's attempt went stale and may not go down; on a
//! rollback to its version it becomes its task's attempt again.

use borg_shared::TaskState;
use std::time::Duration;

/// Failures of the target version (in-place restarts and failed attempts since
/// the rollout began) that stop it: one may be bad luck, two are the version.
pub const FAILURES_TO_ROLL_BACK: i64 = 2;
/// A rollout in which no task became ready for this long (plus `min_healthy`)
/// has failed: its new tasks do not come up (no room, crash before running, ...).
pub const PROGRESS_DEADLINE: Duration = Duration::from_secs(60);

/// One live task of the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSnap {
    pub index: i32,
    pub state: TaskState,
    /// The version its live attempt runs; `None` without one (pending: its
    /// next attempt runs the job's version of then, the target).
    pub version: Option<i32>,
    /// Its live attempt was asked to stop (replaced, preempted, ...).
    pub stopping: bool,
    /// In-place restarts of its live attempt.
    pub restarts: i32,
    /// How long it has been running, if it is.
    pub running_for: Option<Duration>,
    /// Passes its health check (or has none).
    pub healthy: bool,
    /// Its live superseded attempt not yet asked to stop, while it surges.
    pub surged: Option<Surged>,
}

/// The old attempt of a surging task: no longer the task's attempt, still
/// live until the rollout stops it (or makes it the task's attempt again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Surged {
    /// The version it runs.
    pub version: i32,
    /// It runs (it was running when superseded; not on its way up).
    pub running: bool,
}

/// A failure of the target version, said for the rollout's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub index: i32,
    /// Restarts and failed ends of that attempt.
    pub count: i64,
    pub what: String,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub job: String,
    pub target: i32,
    pub max_unavailable: u32,
    pub max_surge: u32,
    pub min_healthy: Duration,
    pub tasks: Vec<TaskSnap>,
    /// Superseded attempts already asked to stop and still live: they hold
    /// their room until their borglet reports them gone.
    pub surges_stopping: i64,
    pub failures: Vec<Failure>,
    /// Ready tasks at the last progress, and how long ago that was.
    pub ready_before: i64,
    pub since_progress: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Replace `Plan::replace` (possibly none: waiting for tasks to be ready).
    Continue,
    /// Every task runs the target and is ready.
    Done,
    /// The target version does not come up: why.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Indexes of the tasks whose attempts to stop now (they come back on the target).
    pub replace: Vec<i32>,
    /// Tasks to surge now: their attempt is superseded (it keeps running) and
    /// the task waits for a new attempt on the target.
    pub surge: Vec<i32>,
    /// Tasks whose superseded attempt to stop now: ready on the target, or
    /// stale and available while their superseded attempt does not run.
    pub retire: Vec<i32>,
    /// Tasks whose superseded attempt runs the target (a rollback): it becomes
    /// their attempt again, and their current attempt, if any, stops.
    pub restore: Vec<i32>,
    /// Live superseded attempts before this step.
    pub surging: i64,
    /// Tasks whose live attempt runs the target.
    pub updated: i64,
    pub ready: i64,
    pub total: i64,
    /// Tasks not available before this step.
    pub down: i64,
    pub outcome: Outcome,
}

/// Is this replaced task ready, so the rollout may take its next step? It runs
/// the target version, has not restarted, passes its health check (if it has
/// one), and has run for `min_healthy`.
pub fn replaced_task_ready(t: &TaskSnap, target: i32, min_healthy: Duration) -> bool {
    t.state == TaskState::Running
        && !t.stopping
        && t.version == Some(target)
        && t.restarts == 0
        && t.healthy
        && t.running_for.is_some_and(|r| r >= min_healthy)
}

/// Counts as up for the unavailability budget.
fn available(t: &TaskSnap, s: &Snapshot) -> bool {
    if t.surged.as_ref().is_some_and(|g| g.running) {
        return true;
    }
    let running = t.state == TaskState::Running && !t.stopping;
    match t.version {
        Some(v) if v != s.target => running,
        _ => replaced_task_ready(t, s.target, s.min_healthy),
    }
}

/// Runs another version and is not already on its way out.
fn stale(t: &TaskSnap, target: i32) -> bool {
    !t.stopping && t.version.is_some_and(|v| v != target)
}

/// What to do now.
pub fn decide(s: &Snapshot) -> Plan {
    let total = s.tasks.len() as i64;
    let updated = s
        .tasks
        .iter()
        .filter(|t| t.version == Some(s.target))
        .count() as i64;
    let ready = s
        .tasks
        .iter()
        .filter(|t| replaced_task_ready(t, s.target, s.min_healthy))
        .count() as i64;
    let down = s.tasks.iter().filter(|t| !available(t, s)).count() as i64;
    let surging = s.surges_stopping + s.tasks.iter().filter(|t| t.surged.is_some()).count() as i64;
    let plan = |replace: Vec<i32>, outcome| Plan {
        replace,
        surge: vec![],
        retire: vec![],
        restore: vec![],
        surging,
        updated,
        ready,
        total,
        down,
        outcome,
    };
    let failures: i64 = s.failures.iter().map(|f| f.count).sum();
    if failures >= FAILURES_TO_ROLL_BACK {
        let what: Vec<String> = s
            .failures
            .iter()
            .take(3)
            .map(|f| format!("{}/{} {}", s.job, f.index, f.what))
            .collect();
        return plan(
            vec![],
            Outcome::Failed(format!(
                "version {} failed {failures} times: {}",
                s.target,
                what.join("; ")
            )),
        );
    }
    if ready == total && s.tasks.iter().all(|t| t.surged.is_none()) {
        return plan(vec![], Outcome::Done);
    }
    if ready <= s.ready_before && s.since_progress > PROGRESS_DEADLINE + s.min_healthy {
        let stuck = s
            .tasks
            .iter()
            .find(|t| !replaced_task_ready(t, s.target, s.min_healthy))
            .map(|t| format!(" ({}/{} is {})", s.job, t.index, t.state))
            .unwrap_or_default();
        return plan(
            vec![],
            Outcome::Failed(format!(
                "no task became ready on version {} for {}s{stuck}",
                s.target,
                s.since_progress.as_secs()
            )),
        );
    }
    let mut budget = i64::from(s.max_unavailable) - down;
    let mut room = i64::from(s.max_surge) - surging;
    let mut p = plan(vec![], Outcome::Continue);
    for t in &s.tasks {
        if let Some(g) = &t.surged {
            if g.version == s.target {
                p.restore.push(t.index);
            } else if replaced_task_ready(t, s.target, s.min_healthy) {
                p.retire.push(t.index);
            } else if stale(t, s.target) {
                // Its new attempt went stale (another update): replaced at no
                // cost while the superseded one serves (or it is down anyway).
                if g.running || !available(t, s) {
                    p.replace.push(t.index);
                } else if budget > 0 {
                    budget -= 1;
                    p.replace.push(t.index);
                } else {
                    // The superseded attempt serves nothing and the stale one
                    // may not go down: stop the superseded one, so the task
                    // can surge to the target.
                    p.retire.push(t.index);
                }
            }
            continue;
        }
        if !stale(t, s.target) {
            continue;
        }
        if !available(t, s) {
            // Already down: it comes back on the target at no cost.
            p.replace.push(t.index);
        } else if room > 0 {
            room -= 1;
            p.surge.push(t.index);
        } else if budget > 0 {
            budget -= 1;
            p.replace.push(t.index);
        }
    }
    p
}

impl Plan {
    /// Does this step change anything?
    pub fn acts(&self) -> bool {
        !(self.replace.is_empty()
            && self.surge.is_empty()
            && self.retire.is_empty()
            && self.restore.is_empty())
    }
}

#[cfg(test)]
mod tests;
