//! `jobctl version`: jobctl's own version, and the master's when it answers.

use crate::client::Client;
use crate::output::emit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only jobctl's version: do not ask the master.
    #[arg(long)]
    pub client: bool,
}

pub async fn run(client: &Client, args: Args) -> anyhow::Result<()> {
    emit(&format!("jobctl {}", env!("CARGO_PKG_VERSION")))?;
    if args.client {
        return Ok(());
    }
    let line = match client.master_version().await {
        Ok(v) => format!("borgmaster {v} at {}", client.master()),
        Err(e) => format!("borgmaster at {}: {e}", client.master()),
    };
    emit(&line)?;
    Ok(())
}
