//! `jobctl run -f FILE... [--wait]`: submit jobs, and optionally follow each
//! through the event stream until it is done (batch) or fully running (service).
//! Every file is read and parsed before anything is submitted.

use crate::client::Client;
use crate::follow::{self, Show, Until};
use crate::output::emit;
use borg_shared::wire::JobView;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job spec, YAML or JSON (`-` reads standard input); repeat for
    /// several jobs (`-f a.yaml -f b.yaml`).
    #[arg(short = 'f', long = "file", value_name = "FILE", required = true)]
    pub file: Vec<PathBuf>,
    /// Follow the job: a progress bar on a terminal, one line per task state
    /// change when piped; exit 0 when a batch job succeeds or every task of a
    /// service runs, 1 when the job fails.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (e.g. `30s`, `5m`); no limit by default.
    #[arg(long, value_name = "DURATION", requires = "wait")]
    pub timeout: Option<humantime::Duration>,
}

/// Read every file first: one bad file stops the command before anything is submitted.
pub fn load_all(files: &[PathBuf]) -> anyhow::Result<Vec<serde_json::Value>> {
    files.iter().map(|f| crate::spec_file::load(f)).collect()
}

pub async fn run(client: &Client, args: Args) -> anyhow::Result<()> {
    let specs = load_all(&args.file)?;
    let deadline = args.timeout.map(|t| Instant::now() + Duration::from(t));
    let mut jobs = Vec::new();
    for spec in &specs {
        jobs.push(submit(client, spec).await?);
    }
    if !args.wait {
        return Ok(());
    }
    if let [job] = jobs.as_slice() {
        let until = Until::EndedOrServing;
        let line = follow::follow(client, job, until, Show::for_terminal(), deadline).await?;
        emit(&line)?;
        return Ok(());
    }
    // Several jobs: follow each in turn (each from its whole history, so
    // nothing that happened while another was followed is missed).
    let mut failed = Vec::new();
    for job in &jobs {
        let until = Until::EndedOrServing;
        match follow::follow(client, job, until, Show::for_terminal(), deadline).await {
            Ok(line) => emit(&line)?,
            Err(e) if e.downcast_ref::<crate::exit::JobFailed>().is_some() => {
                emit(&e.to_string())?;
                failed.push(job.name.clone());
            }
            Err(e) => return Err(e),
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(crate::exit::JobFailed(format!(
        "{} of {} jobs did not succeed: {}",
        failed.len(),
        jobs.len(),
        failed.join(", ")
    ))
    .into())
}

/// Submit one spec and say so: `job/x submitted (3 tasks)`.
async fn submit(client: &Client, spec: &serde_json::Value) -> anyhow::Result<JobView> {
    let submitted = client.submit(spec).await?;
    let job = submitted.job;
    let tasks = job.tasks.as_ref().map_or(job.replicas, |t| t.len() as i64);
    let what = if submitted.created {
        "submitted"
    } else {
        "unchanged"
    };
    let plural = if tasks == 1 { "" } else { "s" };
    emit(&format!("job/{} {what} ({tasks} task{plural})", job.name))?;
    Ok(job)
}
