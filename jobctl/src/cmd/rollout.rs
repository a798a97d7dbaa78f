//! `jobctl rollout status|pause|resume|undo JOB`: a job's rolling update, in
//! kubectl's words. `status --wait` polls until the rollout settles.

use crate::client::Client;
use crate::exit::JobFailed;
use crate::output::{self, emit};
use borg_shared::rollout::{RolloutState, RolloutView};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Where the job's latest rollout stands; exits 1 if it was rolled back or failed.
    Status(StatusArgs),
    /// Replace no more tasks until resumed.
    Pause(JobArg),
    /// Go on with a paused rollout.
    Resume(JobArg),
    /// Roll back: a rollout in progress to the version it started from, a
    /// completed one to the version before it.
    Undo(JobArg),
}

#[derive(Debug, clap::Args)]
pub struct JobArg {
    /// The job's name.
    pub job: String,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The job's name.
    pub job: String,
    /// Follow the rollout, a line per change, until it is done (exit 0), rolled
    /// back or failed (exit 1), or paused (exit 0, saying so).
    #[arg(long, short = 'w')]
    pub wait: bool,
    /// Give up waiting after this long (exit 1).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10m",
        requires = "wait"
    )]
    pub timeout: humantime::Duration,
    /// `json`: the rollout as the API gives it.
    #[arg(long, short = 'o', value_parser = ["json"])]
    pub output: Option<String>,
}

/// How often `status --wait` asks.
const POLL_EVERY: Duration = Duration::from_millis(500);

pub async fn run(client: &Client, args: Args) -> anyhow::Result<()> {
    match args.action {
        Action::Status(a) => status(client, a).await,
        Action::Pause(a) => {
            let r = client.rollout_action(&a.job, "pause").await?;
            emit(&format!("job/{} rollout paused ({})", r.job, progress(&r)))?;
            Ok(())
        }
        Action::Resume(a) => {
            let r = client.rollout_action(&a.job, "resume").await?;
            emit(&format!("job/{} rollout resumed ({})", r.job, progress(&r)))?;
            Ok(())
        }
        Action::Undo(a) => {
            let r = client.rollout_action(&a.job, "undo").await?;
            emit(&format!(
                "job/{} rolling back to version {}",
                r.job, r.target_version
            ))?;
            Ok(())
        }
    }
}

async fn status(client: &Client, args: StatusArgs) -> anyhow::Result<()> {
    let mut r = client.rollout(&args.job).await?;
    if args.output.is_some() {
        emit(&output::json(&r)?)?;
        return settled(&r);
    }
    if !args.wait {
        emit(&line(&r))?;
        return settled(&r);
    }
    let deadline = Instant::now() + Duration::from(args.timeout);
    let mut last = String::new();
    loop {
        let text = line(&r);
        if text != last {
            emit(&text)?;
            last = text;
        }
        if r.state.is_settled() || r.state == RolloutState::Paused {
            return settled(&r);
        }
        if Instant::now() >= deadline {
            return Err(JobFailed(format!(
                "job/{}: gave up waiting after {} ({})",
                r.job,
                args.timeout,
                progress(&r)
            ))
            .into());
        }
        tokio::time::sleep(POLL_EVERY).await;
        r = client.rollout(&args.job).await?;
    }
}

/// Exit 1 for a rollout that ended badly (the line said why).
fn settled(r: &RolloutView) -> anyhow::Result<()> {
    match r.state {
        RolloutState::RolledBack | RolloutState::Failed | RolloutState::Aborted => {
            Err(JobFailed(format!(
                "job/{} rollout of version {} {}",
                r.job,
                r.to_version,
                match r.state {
                    RolloutState::RolledBack => "was rolled back",
                    RolloutState::Aborted => "was aborted",
                    _ => "failed",
                }
            ))
            .into())
        }
        _ => Ok(()),
    }
}

fn progress(r: &RolloutView) -> String {
    format!(
        "{} of {} tasks on version {}, {} ready{}",
        r.updated,
        r.total,
        r.target_version,
        r.ready,
        surge(r)
    )
}

/// ", surge N/M": old attempts still running beside new ones, of `max_surge`
/// (nothing when the job does not surge).
fn surge(r: &RolloutView) -> String {
    if r.max_surge == 0 && r.surging == 0 {
        return String::new();
    }
    format!(", surge {}/{}", r.surging, r.max_surge)
}

/// One line, as `kubectl rollout status` would say it.
pub fn line(r: &RolloutView) -> String {
    let why = r
        .reason
        .as_deref()
        .map(|w| format!(": {w}"))
        .unwrap_or_default();
    match r.state {
        RolloutState::Rolling => format!(
            "Waiting for job/{} rollout to finish: {} of {} tasks updated, {} ready{} (version {})...",
            r.job,
            r.updated,
            r.total,
            r.ready,
            surge(r),
            r.target_version
        ),
        RolloutState::Paused => format!(
            "job/{} rollout is paused ({}){why}",
            r.job,
            progress(r)
        ),
        RolloutState::Done => format!(
            "job/{} successfully rolled out (version {}, {} of {} tasks ready)",
            r.job, r.target_version, r.ready, r.total
        ),
        RolloutState::RollingBack => format!(
            "Waiting for job/{} rollback to version {}: {} of {} tasks back, {} ready{}{why}",
            r.job,
            r.target_version,
            r.updated,
            r.total,
            r.ready,
            surge(r)
        ),
        RolloutState::RolledBack => format!(
            "job/{} rolled back to version {} (version {} was not kept){why}",
            r.job, r.target_version, r.to_version
        ),
        RolloutState::Failed => format!("job/{} rollout failed ({}){why}", r.job, progress(r)),
        RolloutState::Aborted => format!("job/{} rollout aborted ({}){why}", r.job, progress(r)),
    }
}

/// The rollout as `describe job` shows it: the status line and the recent steps.
pub fn describe(r: &RolloutView, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut out = format!("\nRollout:\n  {}\n", line(r));
    for s in &r.steps {
        out.push_str(&format!(
            "  {} ({} ago)  {}\n",
            s.time.format("%H:%M:%S"),
            output::age(s.time, now),
            s.reason
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(max_surge: u32, surging: i64) -> RolloutView {
        RolloutView {
            job: "web".into(),
            state: RolloutState::Rolling,
            from_version: 1,
            to_version: 2,
            target_version: 2,
            updated: 1,
            ready: 0,
            total: 3,
            max_unavailable: 0,
            max_surge,
            surging,
            min_healthy_ms: 5000,
            reason: None,
            started_at: None,
            steps: vec![],
        }
    }

    #[test]
    fn a_surging_rollout_says_its_surge() {
        assert_eq!(
            line(&view(1, 1)),
            "Waiting for job/web rollout to finish: 1 of 3 tasks updated, 0 ready, surge 1/1 (version 2)..."
        );
        assert!(!line(&view(0, 0)).contains("surge"));
        let paused = RolloutView {
            state: RolloutState::Paused,
            ..view(2, 1)
        };
        assert!(
            line(&paused).contains("0 ready, surge 1/2)"),
            "{}",
            line(&paused)
        );
    }
}
