//! `jobctl get events` and `get jobs|tasks --watch`: read the master's event
//! stream (no polling). A watch prints the list once, then one row per change.

use super::get::What;
use crate::client::Client;
use crate::events::{event_line, EventStream, Query};
use crate::output::{self, emit, ListFormat};
use borg_shared::event_stream::{EventKind, StreamEvent};
use chrono::Utc;

#[derive(Debug, Clone, clap::Args)]
pub struct EventArgs {
    /// Only this job's events.
    #[arg(long)]
    pub job: Option<String>,
    /// Only events on this machine.
    #[arg(long)]
    pub machine: Option<String>,
    /// Only events of this kind.
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    Task,
    Job,
    Machine,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Task => "task",
            Kind::Job => "job",
            Kind::Machine => "machine",
        }
    }
}

/// The history (then, with `watch`, every new event), one line or JSON object each.
pub async fn events(
    client: &Client,
    args: &EventArgs,
    format: ListFormat,
    watch: bool,
) -> anyhow::Result<()> {
    let query = Query {
        job: args.job.clone(),
        machine: args.machine.clone(),
        kind: args.kind.map(|k| k.as_str().to_string()),
        history: true,
        follow: watch,
    };
    let mut stream = EventStream::open(client, query).await?;
    while let Some(e) = stream.next().await? {
        print_event(&e, format)?;
    }
    Ok(())
}

/// One event: a line, a JSON object per line, or a YAML document.
fn print_event(e: &StreamEvent, format: ListFormat) -> anyhow::Result<()> {
    match format {
        ListFormat::Json => emit(&serde_json::to_string(e)?)?,
        ListFormat::Yaml => emit(&format!("---\n{}", output::yaml(e)?))?,
        ListFormat::Table | ListFormat::Wide => emit(&event_line(e))?,
    }
    Ok(())
}

/// Whether a change event passes `get`'s `--state`/`--machine` filters (by
/// the state it moved to and the machine it names).
pub fn passes(what: &What, e: &StreamEvent) -> bool {
    let state_in = |states: Vec<String>| states.is_empty() || states.contains(&e.to);
    match what {
        What::Jobs { state } => state_in(state.iter().map(ToString::to_string).collect()),
        What::Tasks { state, machine, .. } => {
            state_in(state.iter().map(ToString::to_string).collect())
                && (machine.is_none() || e.machine == *machine)
        }
        _ => true,
    }
}

/// `get jobs --watch`, `get tasks JOB --watch`: the filtered list, then each
/// change that passes the filters.
pub async fn watch(client: &Client, what: &What, format: ListFormat) -> anyhow::Result<()> {
    let query = match what {
        What::Jobs { .. } => Query {
            kind: Some("job".into()),
            follow: true,
            ..Default::default()
        },
        What::Tasks { job, .. } => Query {
            job: Some(job.clone()),
            kind: Some("task".into()),
            follow: true,
            ..Default::default()
        },
        other => anyhow::bail!(
            "--watch works with `get jobs`, `get tasks JOB` and `get events`, not {other:?}"
        ),
    };
    // Subscribe first, then print the list: a change in between is printed
    // (twice at worst), never lost.
    let mut stream = EventStream::open(client, query).await?;
    let now = Utc::now();
    let table = matches!(format, ListFormat::Table | ListFormat::Wide);
    match (what, table) {
        (What::Jobs { state }, true) => {
            let jobs = super::get::filter_jobs(client.jobs().await?.jobs, state);
            emit(&output::jobs_table(&jobs, now))?
        }
        (
            What::Tasks {
                job,
                state,
                machine,
            },
            true,
        ) => {
            let mut view = client.job_with_all_tasks(job).await?;
            let all = view.tasks.take().unwrap_or_default();
            let tasks = super::get::filter_tasks(all, state, machine.as_deref());
            emit(&output::tasks_table(&view, &tasks, now))?
        }
        _ => {}
    }
    while let Some(e) = stream.next().await? {
        if !passes(what, &e) {
            continue;
        }
        if !table {
            print_event(&e, format)?;
            continue;
        }
        match (e.kind, &e.job) {
            (EventKind::Job, Some(name)) => {
                // The job's row as it is now, without the header.
                if let Ok(view) = client.job(name).await {
                    let table = output::jobs_table(std::slice::from_ref(&view), Utc::now());
                    if let Some(row) = table.lines().nth(1) {
                        emit(row)?;
                    }
                }
            }
            (EventKind::Task, Some(name)) => {
                let index = e.task_index.unwrap_or(-1);
                let mut row = format!(
                    "{}   {}   {}",
                    output::task_name(name, index),
                    e.to,
                    e.machine.as_deref().unwrap_or("-")
                );
                if let Some(r) = &e.reason {
                    row.push_str(&format!("   {r}"));
                }
                emit(&row)?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use borg_shared::{JobState, TaskState};

    fn event(to: &str, machine: Option<&str>) -> StreamEvent {
        StreamEvent {
            cursor: "1-1".into(),
            id: 1,
            time: chrono::Utc::now(),
            kind: EventKind::Task,
            job: Some("web".into()),
            owner: None,
            job_id: None,
            task_index: Some(0),
            attempt: None,
            machine: machine.map(str::to_string),
            from: None,
            to: to.into(),
            reason: None,
        }
    }

    #[test]
    fn watched_changes_pass_the_filters() {
        let tasks = What::Tasks {
            job: "web".into(),
            state: vec![TaskState::Running],
            machine: Some("m1".into()),
        };
        assert!(passes(&tasks, &event("running", Some("m1"))));
        assert!(!passes(&tasks, &event("running", Some("m2"))));
        assert!(!passes(&tasks, &event("failed", Some("m1"))));
        let jobs = What::Jobs {
            state: vec![JobState::Failed],
        };
        assert!(passes(&jobs, &event("failed", None)));
        assert!(!passes(&jobs, &event("running", None)));
        let all = What::Jobs { state: vec![] };
        assert!(passes(&all, &event("running", None)));
    }
}
