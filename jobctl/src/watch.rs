//! When following a job is over, and what its final line says (`run --wait`,
//! `wait`). Pure functions of a job view, testable without a master.

use crate::output::task_name;
use borg_shared::wire::JobView;
use borg_shared::{JobKind, JobState, TaskState};

/// Whether waiting is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Keep following.
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
    use borg_shared::wire::TaskView;

    fn hello(tasks: Vec<TaskView>) -> JobView {
        job("hello", JobKind::Batch, JobState::Running, tasks)
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
