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

/// `get jobs --watch`, `get tasks JOB --watch`.
pub async fn watch(client: &Client, what: &What, format: ListFormat) -> anyhow::Result<()> {
    let (query, job) = match what {
        What::Jobs { .. } => (
            Query {
                kind: Some("job".into()),
                follow: true,
                ..Default::default()
            },
            None,
        ),
        What::Tasks { job, .. } => (
            Query {
                job: Some(job.clone()),
                kind: Some("task".into()),
                follow: true,
                ..Default::default()
            },
            Some(job.clone()),
        ),
        other => anyhow::bail!(
            "--watch works with `get jobs`, `get tasks JOB` and `get events`, not {other:?}"
        ),
    };
    // Subscribe first, then print the list: a change in between is printed
    // (twice at worst), never lost.
    let mut stream = EventStream::open(client, query).await?;
    let now = Utc::now();
    let table = matches!(format, ListFormat::Table | ListFormat::Wide);
    match (&job, table) {
        (None, true) => emit(&output::jobs_table(&client.jobs().await?.jobs, now))?,
        (Some(job), true) => {
            let mut view = client.job_with_all_tasks(job).await?;
            let tasks = view.tasks.take().unwrap_or_default();
            emit(&output::tasks_table(&view, &tasks, now))?
        }
        (_, false) => {}
    }
    while let Some(e) = stream.next().await? {
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
