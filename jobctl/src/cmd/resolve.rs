//! `jobctl resolve JOB`: where each running task of a job is (host, ports).

use crate::client::Client;
use crate::output::{self, emit, Format};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job's name.
    pub job: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

pub async fn run(client: &Client, args: Args) -> anyhow::Result<()> {
    let resolved = client.resolve(&args.job).await?;
    if args.output == Format::Json {
        return Ok(emit(&output::json(&resolved)?)?);
    }
    if resolved.tasks.is_empty() {
        eprintln!("no running tasks");
        return Ok(());
    }
    let rows = resolved
        .tasks
        .iter()
        .map(|t| {
            let ports: Vec<String> = t.ports.iter().map(u16::to_string).collect();
            vec![
                output::task_name(&resolved.job, t.index),
                t.machine.clone(),
                t.host.clone(),
                if ports.is_empty() {
                    "-".into()
                } else {
                    ports.join(",")
                },
            ]
        })
        .collect();
    emit(&output::table(&["TASK", "MACHINE", "HOST", "PORTS"], rows))?;
    Ok(())
}
