//! `jobctl wait JOB`: block until the job ends, driven by the event stream;
//! the exit code is its result (0 succeeded, 1 failed or killed, 3 no such job).

use crate::client::Client;
use crate::follow::{self, Show, Until};
use crate::output::emit;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job's name.
    pub job: String,
    /// Give up after this long (e.g. `30s`, `5m`); no limit by default.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<humantime::Duration>,
}

pub async fn run(client: &Client, args: Args) -> anyhow::Result<()> {
    let job = client.job(&args.job).await?;
    let deadline = args.timeout.map(|t| Instant::now() + Duration::from(t));
    let line = follow::follow(client, &job, Until::Ended, Show::Quiet, deadline).await?;
    emit(&line)?;
    Ok(())
}
