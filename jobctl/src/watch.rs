//! What `jobctl run --wait` prints while it polls a job, and when it stops.
//! Pure functions of two consecutive views, so the printer is testable
//! without a master.

use crate::output::task_name;
use borg_shared::wire::{JobView, TaskView};
use borg_shared::{JobKind, JobState, TaskState};
use std::collections::{BTreeMap, HashSet};

/// The lines that describe what changed between `prev` and `new`, in order:
/// state changes (from the job's events when the view carries them, else
/// from comparing task states), then reasons that are new since `prev`.
pub fn changes(prev: &JobView, new: &JobView) -> Vec<String> {
    let mut lines = Vec::new();
    // Reasons already said by a state-change line in this round.
    let mut said: HashSet<(i32, String)> = HashSet::new();

    match &new.events {
        Some(events) => {
            let seen = prev
                .events
                .iter()
                .flatten()
                .map(|e| e.id)
                .max()
                .unwrap_or(0);
            let mut fresh: Vec<_> = events.iter().filter(|e| e.id > seen).collect();
            fresh.sort_by_key(|e| e.id);
            for e in fresh {
                // A task's creation (no `from`) is not news: it was just submitted.
                let (Some(from), Some(index)) = (e.from, e.task_index) else {
                    continue;
                };
                lines.push(change_line(
                    &new.name,
                    index,
                    from,
                    e.to,
                    e.machine.as_deref(),
                    e.reason.as_deref(),
                ));
                if let Some(r) = &e.reason {
                    said.insert((index, r.clone()));
                }
            }
        }
        None => {
            let before = by_index(prev);
            for task in new.tasks.iter().flatten() {
                let Some(old) = before.get(&task.index) else {
                    continue;
                };
                if old.state != task.state {
                    let reason = task.reason.as_deref().filter(|_| task.state.is_terminal());
                    lines.push(change_line(
                        &new.name,
                        task.index,
                        old.state,
                        task.state,
                        task.machine.as_deref(),
                        reason,
                    ));
                    if let Some(r) = reason {
                        said.insert((task.index, r.to_string()));
                    }
                }
            }
        }
    }

    // Why a task waits is news each time it changes; other reasons arrive with
    // the state change that caused them.
    let before = by_index(prev);
    let last_event_reason = |index: i32| {
        new.events
            .iter()
            .flatten()
            .filter(|e| e.task_index == Some(index))
            .max_by_key(|e| e.id)
            .and_then(|e| e.reason.clone())
    };
    for task in new.tasks.iter().flatten() {
        let Some(reason) = &task.reason else { continue };
        if task.state != TaskState::Pending {
            continue;
        }
        let old_reason = before.get(&task.index).and_then(|t| t.reason.as_ref());
        if old_reason == Some(reason)
            || said.contains(&(task.index, reason.clone()))
            || last_event_reason(task.index).as_ref() == Some(reason)
        {
            continue;
        }
        lines.push(format!(
            "{}  {}: {reason}",
            task_name(&new.name, task.index),
            task.state
        ));
    }
    lines
}

fn by_index(job: &JobView) -> BTreeMap<i32, &TaskView> {
    job.tasks.iter().flatten().map(|t| (t.index, t)).collect()
}

fn change_line(
    job: &str,
    index: i32,
    from: TaskState,
    to: TaskState,
    machine: Option<&str>,
    reason: Option<&str>,
) -> String {
    let mut line = format!("{}  {from} -> {to}", task_name(job, index));
    if let Some(m) = machine {
        line.push_str(&format!("  on {m}"));
    }
    if let Some(r) = reason {
        line.push_str(&format!("  ({r})"));
    }
    line
}

/// Whether waiting is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Keep polling.
    Waiting,
    /// Done, and it went well: the line to print.
    Done(String),
    /// Done, and it did not: the error line.
    Failed(String),
}

/// A batch job is done when it reaches a final state; a service when every task runs.
pub fn outcome(job: &JobView) -> Outcome {
    let name = &job.name;
    match job.state {
        JobState::Succeeded => return Outcome::Done(format!("job/{name} succeeded")),
        JobState::Failed | JobState::Killed => {
            let failed = failed_tasks(job);
            let mut line = format!("job/{name} {}", job.state);
            if !failed.is_empty() {
                line.push_str(": ");
                line.push_str(&failed.join(", "));
            }
            return Outcome::Failed(line);
        }
        JobState::Pending | JobState::Running => {}
    }
    if job.kind == JobKind::Service {
        let tasks = job.tasks.as_deref().unwrap_or_default();
        let running = tasks
            .iter()
            .filter(|t| t.state == TaskState::Running)
            .count();
        if running as i64 == job.replicas && running == tasks.len() {
            return Outcome::Done(format!("job/{name} is running ({running}/{running} tasks)"));
        }
    }
    Outcome::Waiting
}

/// `hello/1 (exit code 3)`, `hello/2 (signal 9)`, `hello/0 (killed: ...)`.
fn failed_tasks(job: &JobView) -> Vec<String> {
    job.tasks
        .iter()
        .flatten()
        .filter(|t| {
            matches!(
                t.state,
                TaskState::Failed | TaskState::Killed | TaskState::Lost
            )
        })
        .map(|t| {
            let how = match (t.exit_code, t.signal) {
                (_, Some(sig)) => format!("signal {sig}"),
                (Some(code), None) => format!("exit code {code}"),
                (None, None) => t.state.to_string(),
            };
            let mut text = format!("{} ({how}", task_name(&job.name, t.index));
            if let Some(r) = &t.reason {
                text.push_str(&format!(": {r}"));
            }
            text.push(')');
            text
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fixtures::*;

    fn hello(tasks: Vec<TaskView>) -> JobView {
        job("hello", JobKind::Batch, JobState::Running, tasks)
    }

    #[test]
    fn events_become_one_line_each_in_order() {
        let prev = hello(vec![
            task(0, TaskState::Pending),
            task(1, TaskState::Pending),
        ]);
        let mut new = prev.clone();
        let mut e2 = event(2, "hello", 1, Some(TaskState::Pending), TaskState::Assigned);
        e2.machine = Some("m2".into());
        let mut e3 = event(3, "hello", 1, Some(TaskState::Assigned), TaskState::Running);
        e3.machine = Some("m2".into());
        // Creation events and events already seen are skipped.
        let e1 = event(1, "hello", 0, None, TaskState::Pending);
        new.events = Some(vec![e1, e3, e2]);
        assert_eq!(
            changes(&prev, &new),
            vec![
                "hello/1  pending -> assigned  on m2",
                "hello/1  assigned -> running  on m2",
            ]
        );
        let mut later = new.clone();
        let mut e4 = event(4, "hello", 1, Some(TaskState::Running), TaskState::Failed);
        e4.machine = Some("m2".into());
        e4.reason = Some("exited with code 3".into());
        later.events.as_mut().unwrap().push(e4);
        later.tasks.as_mut().unwrap()[1].reason = Some("exited with code 3".into());
        // The task's reason was said by the event line: not repeated.
        assert_eq!(
            changes(&new, &later),
            vec!["hello/1  running -> failed  on m2  (exited with code 3)"]
        );
    }

    #[test]
    fn without_events_task_states_are_compared() {
        let prev = hello(vec![
            task(0, TaskState::Pending),
            task(1, TaskState::Running),
        ]);
        let mut new = hello(vec![
            task(0, TaskState::Running),
            task(1, TaskState::Running),
        ]);
        new.events = None;
        new.tasks.as_mut().unwrap()[0].machine = Some("m1".into());
        assert_eq!(
            changes(&prev, &new),
            vec!["hello/0  pending -> running  on m1"]
        );
    }

    #[test]
    fn a_pending_reason_is_printed_once() {
        let prev = hello(vec![task(0, TaskState::Pending)]);
        let mut new = prev.clone();
        new.tasks.as_mut().unwrap()[0].reason = Some("no machine has 64Gi free memory".into());
        assert_eq!(
            changes(&prev, &new),
            vec!["hello/0  pending: no machine has 64Gi free memory"]
        );
        assert!(changes(&new, &new.clone()).is_empty());
        let mut newer = new.clone();
        newer.tasks.as_mut().unwrap()[0].reason = Some("quota exceeded".into());
        assert_eq!(
            changes(&new, &newer),
            vec!["hello/0  pending: quota exceeded"]
        );
    }

    #[test]
    fn reasons_of_running_tasks_and_retries_come_from_events_only() {
        let mut prev = hello(vec![task(0, TaskState::Starting)]);
        prev.tasks.as_mut().unwrap()[0].reason = Some("sent to its borglet".into());
        let mut new = hello(vec![task(0, TaskState::Running)]);
        new.tasks.as_mut().unwrap()[0].reason = Some("running on m2".into());
        // The event was printed by an earlier poll; the task view caught up later.
        assert!(changes(&prev, &new).is_empty());

        let mut retry = event(9, "hello", 0, Some(TaskState::Failed), TaskState::Pending);
        retry.reason = Some("retrying (run 2 of 3)".into());
        let mut again = hello(vec![task(0, TaskState::Pending)]);
        again.tasks.as_mut().unwrap()[0].reason = Some("retrying (run 2 of 3)".into());
        again.events = Some(vec![retry]);
        assert_eq!(
            changes(&new, &again),
            vec!["hello/0  failed -> pending  (retrying (run 2 of 3))"]
        );
        // The next poll repeats nothing.
        let mut same = again.clone();
        same.events = Some(vec![]);
        assert!(changes(&again, &same).is_empty());
    }

    #[test]
    fn batch_outcomes() {
        let mut j = hello(vec![task(0, TaskState::Succeeded)]);
        assert_eq!(outcome(&j), Outcome::Waiting);
        j.state = JobState::Succeeded;
        assert_eq!(outcome(&j), Outcome::Done("job/hello succeeded".into()));

        let mut ok = task(0, TaskState::Succeeded);
        ok.exit_code = Some(0);
        let mut bad = task(1, TaskState::Failed);
        bad.exit_code = Some(3);
        let mut killed = task(2, TaskState::Failed);
        killed.signal = Some(9);
        let mut j = hello(vec![ok, bad, killed]);
        j.state = JobState::Failed;
        assert_eq!(
            outcome(&j),
            Outcome::Failed("job/hello failed: hello/1 (exit code 3), hello/2 (signal 9)".into())
        );
        j.state = JobState::Killed;
        j.tasks = Some(vec![task(0, TaskState::Killed)]);
        assert_eq!(
            outcome(&j),
            Outcome::Failed("job/hello killed: hello/0 (killed)".into())
        );
    }

    #[test]
    fn a_service_is_done_when_every_task_runs() {
        let mut j = job(
            "web",
            JobKind::Service,
            JobState::Running,
            vec![task(0, TaskState::Running), task(1, TaskState::Starting)],
        );
        assert_eq!(outcome(&j), Outcome::Waiting);
        j.tasks.as_mut().unwrap()[1].state = TaskState::Running;
        assert_eq!(
            outcome(&j),
            Outcome::Done("job/web is running (2/2 tasks)".into())
        );
    }
}
