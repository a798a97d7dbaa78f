//! `jobctl logs JOB/INDEX`: copy a task's output to stdout as it arrives.

use crate::client::Client;
use borg_shared::wire::LogStream;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The task, as JOB/INDEX (e.g. `hello/0`).
    #[arg(value_parser = parse_task, value_name = "JOB/INDEX")]
    pub task: (String, u32),
    /// Show standard error instead of standard output.
    #[arg(long)]
    pub stderr: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
    /// Keep streaming new output until the task ends.
    #[arg(short = 'f', long, conflicts_with = "previous")]
    pub follow: bool,
    /// The run before the current one: before the task's last in-place restart,
    /// else its attempt before the newest (exit 3 when there is none).
    #[arg(short = 'p', long)]
    pub previous: bool,
}

pub(crate) fn parse_task(s: &str) -> Result<(String, u32), String> {
    let bad = || format!("`{s}` is not a task: write JOB/INDEX, e.g. hello/0");
    let (job, index) = s.rsplit_once('/').ok_or_else(bad)?;
    if job.is_empty() {
        return Err(bad());
    }
    let index = index.parse().map_err(|_| bad())?;
    Ok((job.to_string(), index))
}

pub async fn run(client: &Client, args: Args) -> anyhow::Result<()> {
    let (job, index) = &args.task;
    let stream = if args.stderr {
        LogStream::Stderr
    } else {
        LogStream::Stdout
    };
    let mut resp = client
        .logs(job, *index, stream, args.tail, args.follow, args.previous)
        .await?;
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = resp.chunk().await.map_err(|e| client.transport_error(e))? {
        // A closed pipe (`jobctl logs x/0 | head`) is the reader being done, not a failure.
        if let Err(e) = out.write_all(&chunk).and_then(|()| out.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_task;

    #[test]
    fn task_addresses() {
        assert_eq!(parse_task("hello/0"), Ok(("hello".into(), 0)));
        assert_eq!(parse_task("a-b/12"), Ok(("a-b".into(), 12)));
        assert!(parse_task("hello").is_err());
        assert!(parse_task("hello/x").is_err());
        assert!(parse_task("/1").is_err());
        assert!(parse_task("hello/-1").is_err());
    }
}
