//! `jobctl kill JOB`: stop every task of a job.

use crate::client::Client;
use crate::output::emit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job's name.
    pub job: String,
}

pub async fn run(client: &Client, args: Args) -> anyhow::Result<()> {
    client.kill(&args.job).await?;
    emit(&format!("job/{} killed", args.job))?;
    Ok(())
}
