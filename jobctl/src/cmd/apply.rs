//! `jobctl apply -f FILE [--wait]`: make the cell run this spec, as `kubectl
//! apply` does: a job not live yet is submitted; a live one is updated
//! (`PUT /v1/jobs/{name}`): a new version rolls out, a new replica count alone
//! scales, a new update policy alone is kept, the same spec changes nothing.
//! `--wait` follows the rollout.

use crate::client::{Client, ClientError};
use crate::cmd::rollout;
use crate::follow::{self, Show, Until};
use crate::output::emit;
use reqwest::StatusCode;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job spec, YAML or JSON (`-` reads standard input); repeat for
    /// several jobs, applied in the order given.
    #[arg(short = 'f', long = "file", value_name = "FILE", required = true)]
    pub file: Vec<PathBuf>,
    /// Follow the rollout until it is done (exit 0) or rolled back (exit 1); a
    /// new job, as `run --wait` does.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10m",
        requires = "wait"
    )]
    pub timeout: humantime::Duration,
}

pub async fn run(client: &Client, args: Args) -> anyhow::Result<()> {
    // Every file is read before anything is applied.
    let specs = super::run::load_all(&args.file)?;
    for spec in specs {
        apply(client, spec, &args).await?;
    }
    Ok(())
}

async fn apply(client: &Client, spec: serde_json::Value, args: &Args) -> anyhow::Result<()> {
    let name = spec["name"].as_str().unwrap_or_default().to_string();
    let before = match client.job(&name).await {
        Ok(job) if !job.state.is_terminal() => Some(job),
        Ok(_) => None,
        Err(ClientError::Api { status, .. }) if status == StatusCode::NOT_FOUND => None,
        Err(e) => return Err(e.into()),
    };
    let Some(before) = before else {
        let submitted = client.submit(&spec).await?;
        emit(&format!("job/{} created", submitted.job.name))?;
        if args.wait {
            let deadline = Instant::now() + Duration::from(args.timeout);
            let until = Until::EndedOrServing;
            let line = follow::follow(
                client,
                &submitted.job,
                until,
                Show::for_terminal(),
                Some(deadline),
            )
            .await?;
            emit(&line)?;
        }
        return Ok(());
    };
    let after = client.update(&name, &spec).await?;
    let what = if after.version != before.version {
        format!(
            "configured (version {} → {}, rolling out)",
            before.version, after.version
        )
    } else if after.replicas != before.replicas {
        format!("scaled to {} replicas", after.replicas)
    } else if after.spec != before.spec {
        "configured (update policy only: nothing to roll)".to_string()
    } else {
        "unchanged".to_string()
    };
    emit(&format!("job/{} {what}", after.name))?;
    if args.wait {
        rollout::run(
            client,
            rollout::Args {
                action: rollout::Action::Status(rollout::StatusArgs {
                    job: name,
                    wait: true,
                    timeout: args.timeout,
                    output: None,
                }),
            },
        )
        .await?;
    }
    Ok(())
}
