//! Command-line flags (each also read from its environment variable).

use std::time::Duration;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "borgscheduler",
    version,
    about = "Places pending tasks on machines; shares state with the master through Postgres"
)]
pub struct Config {
    /// Postgres URL of the cell (the master runs the migrations).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Longest wait between passes; `borg_pending` notifications wake the scheduler sooner.
    #[arg(long, env = "BORG_SCHEDULER_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,

    /// Pending tasks placed and committed per transaction.
    #[arg(long, env = "BORG_SCHEDULER_BATCH_SIZE", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,

    /// Name recorded in the events of the placements this scheduler makes.
    #[arg(long, env = "BORG_SCHEDULER_NAME", default_value_t = format!("scheduler-{}", std::process::id()))]
    pub name: String,

    /// How feasible machines are ranked: `hybrid` (spread each job, then best
    /// fit; see score.rs), `best-fit` or `worst-fit`.
    #[arg(long, env = "BORG_SCHEDULER_SCORING", value_enum, default_value_t)]
    pub scoring: crate::Scoring,

    /// Serve `GET /metrics` (Prometheus) and `GET /healthz` here, e.g. `127.0.0.1:7710`
    /// [default: not served].
    #[arg(long, env = "BORG_SCHEDULER_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_and_flags() {
        let c =
            Config::try_parse_from(["borgscheduler", "--database-url", "postgres://x/y"]).unwrap();
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.batch_size, 1000);
        assert_eq!(c.name, format!("scheduler-{}", std::process::id()));

        let c = Config::try_parse_from([
            "borgscheduler",
            "--database-url=postgres://x/y",
            "--interval=250ms",
            "--batch-size=10",
            "--name=s1",
        ])
        .unwrap();
        assert_eq!(c.interval, Duration::from_millis(250));
        assert_eq!(c.batch_size, 10);
        assert_eq!(c.name, "s1");
    }

    #[test]
    fn rejects_bad_values() {
        for bad in ["--batch-size=0", "--interval=soon"] {
            let err =
                Config::try_parse_from(["borgscheduler", "--database-url=postgres://x/y", bad]);
            assert!(err.is_err(), "{bad} accepted");
        }
    }
}
