//! Command-line flags (each also read from its environment variable).

use std::time::Duration;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "borgscheduler",
    version,
    about = "Places pending tasks on machines; shares state with the master through Postgres"
)]
pub struct Config {
    /// Postgres URL of the cell (the master runs the migrations): `DATABASE_URL`,
    /// else the content of `--database-url-file`. Never an argument: argv is
    /// public on the host.
    #[arg(skip)]
    pub database_url: String,

    /// File holding the Postgres URL (when `DATABASE_URL` is not set).
    #[arg(long, env = "BORG_DATABASE_URL_FILE", value_name = "FILE")]
    pub database_url_file: Option<std::path::PathBuf>,

    /// Longest wait between passes; `borg_pending` notifications wake the scheduler sooner.
    #[arg(long, env = "BORG_SCHEDULER_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,

    /// Pending tasks placed and committed per transaction (at most, but for a
    /// commit stream's tail of up to an eighth of a batch, which joins its
    /// last batch; pages start at 128 and double). Bigger batches spend less per placement on
    /// each statement (4,000 against 1,000: ~1.2× the placements/s in
    /// BENCHMARKS.md) but hold their machines' row locks longer, and the
    /// master's writes to those machines (heartbeats, usage) wait for them.
    #[arg(long, env = "BORG_SCHEDULER_BATCH_SIZE", default_value_t = 4000, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,

    /// Name recorded in the events of the placements this scheduler makes.
    #[arg(long, env = "BORG_SCHEDULER_NAME", default_value_t = format!("scheduler-{}", std::process::id()))]
    pub name: String,

    /// How feasible machines are ranked: `hybrid` (spread each job, then best
    /// fit; see score.rs), `best-fit` or `worst-fit`.
    #[arg(long, env = "BORG_SCHEDULER_SCORING", value_enum, default_value_t)]
    pub scoring: crate::Scoring,

    /// Longest time between passes while nothing changes (no notification, no
    /// event written, no backoff ended): an interval wake-up with nothing new
    /// does not judge the queue again before this. 0: a pass every interval.
    #[arg(long, env = "BORG_SCHEDULER_RECHECK_AFTER", default_value = "30s", value_parser = humantime::parse_duration)]
    pub recheck_after: Duration,

    /// Judge the whole pending queue instead of this scheduler's slice of it
    /// (by default the running schedulers share the queue out by job; see slice.rs).
    #[arg(long, env = "BORG_SCHEDULER_WHOLE_QUEUE")]
    pub whole_queue: bool,

    /// Score at most this many feasible machines per task (relaxed
    /// randomization: each task walks the machines from a place of its own);
    /// 0 scores every feasible machine.
    #[arg(long, env = "BORG_SCHEDULER_SAMPLE", default_value_t = 128)]
    pub sample: usize,

    /// Concurrent transactions a page's placements are committed in (split by
    /// machine, so they never wait on each other): Postgres spends a core on
    /// each. 1: one batch after another.
    #[arg(long, env = "BORG_SCHEDULER_COMMIT_STREAMS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub commit_streams: u16,

    /// Keep the machines in memory between passes, re-reading only those that
    /// changed, once the cell has at least this many (below it every pass reads
    /// them all: one query, cheaper than the change queries); 0: always.
    #[arg(long, env = "BORG_SCHEDULER_CACHE_MACHINES", default_value_t = 100)]
    pub cache_machines: usize,

    /// Serve `GET /metrics` (Prometheus) and `GET /healthz` here, e.g. `127.0.0.1:7710`
    /// [default: not served].
    #[arg(long, env = "BORG_SCHEDULER_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,

    #[command(flatten)]
    pub log: borg_shared::logging::LogArgs,
}

impl Config {
    /// Read the database URL from `DATABASE_URL` or `--database-url-file`.
    pub fn resolve_secrets(&mut self) -> anyhow::Result<()> {
        use anyhow::Context;
        if self.database_url.is_empty() {
            let file = self.database_url_file.as_deref();
            self.database_url = borg_shared::agent::secret_from_env_or_file("DATABASE_URL", file)
                .context("reading the database URL")?
                .context("no database: set DATABASE_URL or --database-url-file")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_and_flags() {
        let c = Config::try_parse_from(["borgscheduler"]).unwrap();
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.batch_size, 4000);
        assert_eq!(c.commit_streams, 2);
        assert_eq!(c.name, format!("scheduler-{}", std::process::id()));

        let c = Config::try_parse_from([
            "borgscheduler",
            "--database-url-file=/run/url",
            "--interval=250ms",
            "--batch-size=10",
            "--name=s1",
        ])
        .unwrap();
        assert_eq!(c.interval, Duration::from_millis(250));
        assert_eq!(c.batch_size, 10);
        assert_eq!(c.name, "s1");
        assert!(
            Config::try_parse_from(["borgscheduler", "--database-url=postgres://x/y"]).is_err(),
            "the URL is never an argument"
        );
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            "--batch-size=0",
            "--interval=soon",
            "--commit-streams=0",
            "--commit-streams=17",
        ] {
            let err = Config::try_parse_from(["borgscheduler", bad]);
            assert!(err.is_err(), "{bad} accepted");
        }
    }
}
