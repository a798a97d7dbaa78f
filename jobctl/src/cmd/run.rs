//! `jobctl run -f FILE [--wait]`: submit a job, and optionally follow it
//! through the event stream until it is done (batch) or fully running (service).

use crate::client::Client;
use crate::follow::{self, Show, Until};
use crate::output::emit;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job spec, YAML or JSON (`-` reads standard input).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Follow the job: a progress bar on a terminal, one line per task state
    /// change when piped; exit 0 when a batch job succeeds or every task of a
    /// service runs, 1 when the job fails.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (e.g. `30s`, `5m`); no limit by default.
    #[arg(long, value_name = "DURATION", requires = "wait")]
    pub timeout: Option<humantime::Duration>,
}

pub async fn run(client: &Client, args: Args) -> anyhow::Result<()> {
    let spec = crate::spec_file::load(&args.file)?;
    let submitted = client.submit(&spec).await?;
    let job = submitted.job;
    let tasks = job.tasks.as_ref().map_or(job.replicas, |t| t.len() as i64);
    let what = if submitted.created {
        "submitted"
    } else {
        "unchanged"
    };
    let plural = if tasks == 1 { "" } else { "s" };
    emit(&format!("job/{} {what} ({tasks} task{plural})", job.name))?;
    if !args.wait {
        return Ok(());
    }
    let deadline = args.timeout.map(|t| Instant::now() + Duration::from(t));
    let line = follow::follow(
        client,
        &job,
        Until::EndedOrServing,
        Show::for_terminal(),
        deadline,
    )
    .await?;
    emit(&line)?;
    Ok(())
}
