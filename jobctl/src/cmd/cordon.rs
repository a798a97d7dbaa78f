//! `jobctl drain MACHINE` and `jobctl uncordon MACHINE`.

use crate::client::Client;
use crate::output::emit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The machine's name.
    pub machine: String,
}

/// `drain`: nothing new is placed there; its tasks move elsewhere, one task of
/// a job at a time.
pub async fn drain(client: &Client, args: Args) -> anyhow::Result<()> {
    let m = client.cordon(&args.machine, "drain").await?;
    emit(&format!(
        "machine/{} {} ({} tasks to move)",
        m.name, m.state, m.tasks
    ))?;
    Ok(())
}

/// `uncordon`: the machine takes new work again.
pub async fn uncordon(client: &Client, args: Args) -> anyhow::Result<()> {
    let m = client.cordon(&args.machine, "uncordon").await?;
    emit(&format!("machine/{} {}", m.name, m.state))?;
    Ok(())
}
