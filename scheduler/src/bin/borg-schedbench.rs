//! The scheduler's synthetic benchmark, one command from a fresh clone:
//!
//! ```sh
//! cargo run --release -p borgscheduler --bin borg-schedbench
//! ```
//!
//! For each machine count and scheduler count: a throwaway (durable)
//! Postgres of its own, N machines as rows (no borglets), M pending
//! tasks submitted through the store (see `borgscheduler::synth`), then real
//! `borgscheduler` processes (this binary re-executed) until they go quiet.
//! Prints committed placements/s, pass latencies and conflicts, and checks the
//! placements from the database (over-commit, double placement, constraints).
//! Before and after each run, the server's row-writing floor as `physical.sh`
//! measures it (`borgscheduler::synth::floor`), and the target, 20,000
//! placements/s on that script's reference box, scaled to their mean.

use anyhow::Context;
use borg_store::Store;
use borgscheduler::synth;
use clap::Parser;
use sqlx::{Connection, Executor};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "borg-schedbench", about = "Synthetic scheduler benchmark")]
struct Args {
    /// Machine counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    machines: Vec<i32>,
    /// Scheduler process counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    schedulers: Vec<usize>,
    /// Pending tasks.
    #[arg(long, default_value_t = 100_000)]
    tasks: i64,
    /// Extra flags for each scheduler, e.g. `--sched-arg=--batch-size=2000`.
    #[arg(long = "sched-arg", allow_hyphen_values = true)]
    sched_args: Vec<String>,
    /// Give up on a run after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    limit: Duration,
    /// Print every scheduler's pass lines on stderr (where each pass spent its time).
    #[arg(long)]
    show_passes: bool,
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("scheduler") {
        // A scheduler process of a run (argv[0] stays ours for `ps`).
        let mut args = vec!["borgscheduler".to_string()];
        args.extend(argv[2..].iter().cloned());
        return borgscheduler::run_cli(args);
    }
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    println!(
        "| machines | schedulers | placed | committed placements/s | first pass (pending, ms) | settled pass (pending, ms) | conflicts | seed s | checked | floor: update / insert of 100,000 rows, s (mean of before and after) | target in this window (20,000/s at 0.62 / 0.45 s) |"
    );
    println!("| ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | --- | --- | ---: |");
    for &machines in &args.machines {
        for &schedulers in &args.schedulers {
            // A server of its own for each run: on a shared one, a run pays for
            // the checkpoints of the runs before it (at 10,000 × 1, 12,000–13,000
            // placements/s after three other runs against 20,000 alone).
            let dir = tempfile::Builder::new()
                .prefix("borg-schedbench-")
                .tempdir()
                .context("a directory for Postgres")?;
            let server = devpg::PgServer::start(
                dir.path(),
                &devpg::Options {
                    durable: true,
                    max_connections: 100,
                    // As a server in service, which recycles its WAL segments.
                    zero_fill_wal: false,
                },
            )?;
            let db = format!("bench_{machines}_{schedulers}");
            let mut admin = sqlx::PgConnection::connect(&server.url("postgres")).await?;
            admin
                .execute(format!("CREATE DATABASE {db}").as_str())
                .await?;
            let url = server.url(&db);
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(4)
                .connect(&url)
                .await?;
            let floor_before = synth::floor::measure(&pool).await?;
            borg_store::MIGRATOR.run(&pool).await?;
            let store = Store::from_pool(pool.clone());
            let seeding = Instant::now();
            synth::seed(&store, machines, args.tasks).await?;
            let seed_s = seeding.elapsed().as_secs_f64();

            let mut sched_args = vec!["scheduler".to_string()];
            sched_args.extend(args.sched_args.iter().cloned());
            let procs = synth::SchedulerProcs::spawn_showing(
                &exe,
                &sched_args,
                &url,
                schedulers,
                args.show_passes,
            )?;
            let m = synth::measure(&procs, args.limit).await?;
            drop(procs);
            let v = synth::verdict(&pool).await?;
            let floor = floor_before.mean(&synth::floor::measure(&pool).await?);
            let pairs = |v: &[(u64, u64)]| {
                v.iter()
                    .map(|(p, ms)| format!("{p}, {ms}"))
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            println!(
                "| {machines} | {schedulers} | {} | {:.0} | {} | {} | {} | {seed_s:.1} | {} | {:.3} / {:.3} | {:.0} |",
                v.placed,
                m.rate(),
                pairs(&m.first_pass),
                pairs(&m.settled_pass),
                m.conflicts,
                if v.clean() {
                    "0 over-commits, 0 double, 0 violations".to_string()
                } else {
                    format!("FAILED {v:?}")
                },
                floor.update_s,
                floor.insert_s,
                floor.target(),
            );
            anyhow::ensure!(
                v.placed as u64 == m.placed,
                "the passes say {} placed, the database {}",
                m.placed,
                v.placed
            );
            pool.close().await;
            drop(admin);
            server.stop()?;
        }
    }
    Ok(())
}
