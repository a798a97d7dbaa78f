//! `jobctl bench`: benchmark a cell end to end. Starts its own dev cell (or uses
//! `--master`), runs the phases (idle latency, one big job, many small jobs and a
//! `jobctl run` loop; on request, read cost against history), records the CPU each component burned per task, and prints
//! one table; optionally runs Slurm on the same machine for comparison.

mod api;
mod big;
mod cell;
mod cli;
mod cpu;
mod fleet;
mod idle;
mod reads;
mod report;
mod slurm;
mod small;
mod stats;

use anyhow::{anyhow, bail, Context};
use api::Api;
use report::{PhaseResult, Report};
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// One-task jobs one at a time: submit→running/succeeded latency.
    Idle,
    /// One job of `--tasks` replicas: tasks/s.
    Big,
    /// `--small-jobs` one-task jobs from `--clients` clients, then the `--cli-loop`.
    Small,
    /// Not by default: request latency around a 10,000-task job, before and after
    /// `--history` finished tasks are seeded in the cell's Postgres (own cell only).
    Reads,
    /// Alone, not by default: one master polling `--borglets` simulated
    /// borglets (one fleet process) with a service of `--tasks` on them:
    /// syncs/s against the 1 s interval, sync gaps and durations, CPU.
    Fleet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// `../shared/bench/peers/slurm.sh N tuned` on this machine, after our phases.
    Slurm,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Phases to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "idle,big,small"
    )]
    pub only: Vec<Phase>,
    /// Idle phase: how many one-task jobs, each submitted after the previous finished.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub idle_jobs: u64,
    /// Big phase: replicas of the one big job.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub tasks: u64,
    /// Small phase: how many one-task jobs.
    #[arg(long, default_value_t = 2_000, value_name = "N")]
    pub small_jobs: u64,
    /// Small phase: concurrent submitting clients.
    #[arg(long, default_value_t = 8, value_name = "C",
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub clients: u64,
    /// Small phase: sequential `jobctl run -f` processes afterwards (0 skips them).
    #[arg(long, default_value_t = 200, value_name = "M")]
    pub cli_loop: u64,
    /// Reads phase: finished tasks of history to seed (in jobs of 10,000).
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub history: u64,
    /// Borglets of the cell the bench starts (ignored with --master; at most
    /// 200), or with `--only fleet` the simulated borglets of the fleet.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=10000))]
    pub borglets: u16,
    /// Fleet phase: how long the steady polling is measured.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub fleet_window: humantime::Duration,
    /// Give up on a phase that has not finished after this long.
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub timeout: humantime::Duration,
    /// Also run a peer scheduler on this machine and print its figures beside ours.
    #[arg(long, value_enum)]
    pub compare: Option<Peer>,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// What every phase gets.
pub struct Ctx {
    pub api: Api,
    pub token: Option<String>,
    /// `bench-<random>-`: every job name of this run starts with it.
    pub prefix: String,
    pub timeout: Duration,
    /// Scratch files (the cli loop's spec files).
    pub workdir: PathBuf,
}

/// Says "time for a progress line" once a second.
pub struct Ticker {
    next: Instant,
}

impl Default for Ticker {
    fn default() -> Ticker {
        Ticker::new()
    }
}

impl Ticker {
    pub fn new() -> Ticker {
        Ticker {
            next: Instant::now() + Duration::from_secs(1),
        }
    }

    pub fn due(&mut self) -> bool {
        let now = Instant::now();
        if now < self.next {
            return false;
        }
        self.next = now + Duration::from_secs(1);
        true
    }
}

/// Run the bench. `master`: a cell to use instead of starting one.
pub fn run(args: Args, master: Option<String>, token: Option<String>) -> anyhow::Result<()> {
    // Current-thread: the dev cell is forked from this thread, which outlives it
    // (its parent-death signal follows the thread).
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(run_async(args, master, token))
}

async fn run_async(
    args: Args,
    master: Option<String>,
    token: Option<String>,
) -> anyhow::Result<()> {
    let mut report = Report::default();
    // Ctrl-C drops the phases' future, whose cell handle then stops the cell.
    let outcome = tokio::select! {
        r = phases(&args, master, token, &mut report) => r,
        r = tokio::signal::ctrl_c() => match r {
            Ok(()) => Err(anyhow!("interrupted")),
            Err(e) => Err(e).context("waiting for Ctrl-C"),
        },
    };
    if outcome.is_ok() && args.compare == Some(Peer::Slurm) {
        let n = args.small_jobs.clamp(1, 2000);
        match slurm::run(n, args.idle_jobs.max(1)).await {
            Ok(figures) => report.slurm = figures,
            Err(e) => {
                eprintln!("slurm: skipped: {e:#}");
                report.slurm_skipped = Some(format!("{e:#}"));
            }
        }
        report.compare();
    }
    if !report.phases.is_empty() {
        print!("{}", report.render());
        if outcome.is_err() {
            println!("(only the phases above finished)");
        }
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    outcome
}

/// Start or find the cell, run the selected phases into `report`, stop the cell.
async fn phases(
    args: &Args,
    master: Option<String>,
    token: Option<String>,
    report: &mut Report,
) -> anyhow::Result<()> {
    if master.is_some() && args.only.contains(&Phase::Reads) {
        bail!("--only reads needs the bench's own cell (it seeds history in its Postgres): drop --master");
    }
    let fleet = args.only.contains(&Phase::Fleet);
    if fleet && (args.only.len() > 1 || master.is_some()) {
        bail!("--only fleet runs alone, on the bench's own cell (no --master)");
    }
    if !fleet && args.borglets > 200 {
        bail!("--borglets: a cell of real borglets has at most 200 (more: --only fleet)");
    }
    let mut cell = match &master {
        Some(_) => None,
        // The fleet's borglets are simulated; the cell runs no real one.
        None => Some(cell::DevCell::start(if fleet { 0 } else { args.borglets }).await?),
    };
    // The bench's own cell takes its own admin token.
    let token = cell.as_ref().map(|c| c.token.clone()).or(token);
    let url = match (&master, &cell) {
        (Some(m), _) => m.clone(),
        (None, Some(c)) => c.master.clone(),
        (None, None) => unreachable!("a cell is started when no master is given"),
    };
    let api = Api::new(&url, token.clone())?;
    api.healthz().await?;
    report.master = url.clone();
    report.own_cell = cell.is_some();
    report.borglets = cell.as_ref().map(|_| args.borglets);

    let workdir = tempfile::Builder::new()
        .prefix("borg-bench-specs-")
        .tempdir()
        .context("creating a scratch dir")?;
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let ctx = Ctx {
        api,
        token,
        prefix: format!("bench-{}-", &run_id[..8]),
        timeout: args.timeout.into(),
        workdir: workdir.path().to_path_buf(),
    };
    eprintln!("bench: master {url}, job names {}*", ctx.prefix);
    let meter = cpu::Meter::new(cell.as_ref().map(|c| c.pid));

    let result = async {
        for phase in [
            Phase::Idle,
            Phase::Big,
            Phase::Small,
            Phase::Reads,
            Phase::Fleet,
        ] {
            if !args.only.contains(&phase) {
                continue;
            }
            match phase {
                Phase::Idle if args.idle_jobs > 0 => {
                    measured(&meter, report, idle::run(&ctx, args.idle_jobs)).await?
                }
                Phase::Big if args.tasks > 0 => {
                    measured(&meter, report, big::run(&ctx, args.tasks)).await?
                }
                Phase::Small => {
                    if args.small_jobs > 0 {
                        let run = small::run(&ctx, args.small_jobs, args.clients);
                        measured(&meter, report, run).await?;
                    }
                    if args.cli_loop > 0 {
                        measured(&meter, report, cli::run(&ctx, args.cli_loop)).await?;
                    }
                }
                Phase::Reads => {
                    let url = match &cell {
                        Some(c) => c.database_url()?,
                        None => bail!("--only reads needs the bench's own cell"),
                    };
                    let out = reads::run(&ctx, &url, args.history).await?;
                    report.phases.push(out.phase);
                    report.reads = out.rows;
                    report.reads_history = Some(args.history);
                }
                Phase::Fleet => {
                    let Some(c) = &cell else {
                        bail!("--only fleet needs the bench's own cell");
                    };
                    let run = fleet::FleetRun {
                        borglets: args.borglets.into(),
                        tasks: args.tasks,
                        window: args.fleet_window.into(),
                        cell_dir: c.data_dir(),
                        meter: &meter,
                    };
                    report.phases.push(fleet::run(&ctx, run).await?);
                }
                _ => {}
            }
        }
        anyhow::Ok(())
    }
    .await;
    if let Some(cell) = &mut cell {
        if result.is_err() {
            cell.keep();
            eprintln!(
                "cell: keeping its data and logs in {}",
                cell.data_dir().display()
            );
        }
        cell.stop()?;
    }
    result
}

/// Run one phase between two CPU samples and add it to the report.
async fn measured(
    meter: &cpu::Meter,
    report: &mut Report,
    phase: impl std::future::Future<Output = anyhow::Result<PhaseResult>>,
) -> anyhow::Result<()> {
    let before = meter.sample()?;
    let mut result = phase.await?;
    let after = meter.sample()?;
    result.cpu = Some(meter.between(&before, &after));
    report.phases.push(result);
    Ok(())
}
