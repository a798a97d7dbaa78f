//! `jobctl scale JOB N`: set a service's replica count.

use crate::client::Client;
use crate::output::emit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job's name.
    pub job: String,
    /// The new replica count; scaling down stops the highest indexes first.
    #[arg(value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub replicas: u32,
}

pub async fn run(client: &Client, args: Args) -> anyhow::Result<()> {
    let job = client.scale(&args.job, args.replicas).await?;
    emit(&format!(
        "job/{} scaled to {} replicas",
        job.name, job.replicas
    ))?;
    Ok(())
}
