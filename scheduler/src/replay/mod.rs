//! `borg-replay`: replay a workload trace (`../shared/traces/` or any file of
//! the same columns) through the real placement core on a simulated cell, in
//! simulated time, and report pending times, utilization and how many machines
//! the placements kept busy, for each scoring. No Postgres and no processes:
//! this measures placement quality, not speed (see `jobctl bench` for that).

mod sim;
mod trace;

pub use sim::{simulate, SimConfig, SimReport};
pub use trace::{read_machines, read_tasks, Trace, TraceTask, Units};

use crate::Scoring;
use anyhow::Context;
use borg_shared::resources::Quantity;
use borg_shared::Bytes;
use clap::Parser;
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "borg-replay",
    about = "Replay a workload trace through the placement core"
)]
pub struct Args {
    /// The trace: a CSV (optionally .gz) with a header; see replay/trace.rs for the columns.
    #[arg(long)]
    pub trace: PathBuf,
    /// A Borg `machine_events` file: the cell is the machines present at time 0.
    #[arg(long, conflicts_with = "machine_count")]
    pub machines: Option<PathBuf>,
    /// Or a cell of this many identical machines.
    #[arg(long)]
    pub machine_count: Option<usize>,
    /// Cores of each identical machine.
    #[arg(long, default_value_t = 16.0)]
    pub machine_cpu: f64,
    /// Memory of each identical machine.
    #[arg(long, default_value = "64Gi")]
    pub machine_memory: String,
    /// Cores per normalized cpu unit (Borg-like traces) or per processor (SWF-like).
    #[arg(long, default_value_t = 32.0)]
    pub cpu_unit: f64,
    /// Memory per normalized unit (Borg-like traces).
    #[arg(long, default_value = "128Gi")]
    pub mem_unit: String,
    /// Replay trace time up to this many seconds.
    #[arg(long, default_value_t = 7200.0)]
    pub until: f64,
    /// Read at most this many rows.
    #[arg(long, default_value_t = usize::MAX)]
    pub limit: usize,
    /// Simulated seconds between passes.
    #[arg(long, default_value_t = 10.0)]
    pub tick: f64,
    /// Tasks judged per pass at most.
    #[arg(long, default_value_t = 5000)]
    pub batch: usize,
    /// Scorings to compare (repeatable) [default: all three].
    #[arg(long, value_enum)]
    pub scoring: Vec<Scoring>,
    /// A progress line every this many simulated seconds (0: none).
    #[arg(long, default_value_t = 1800.0)]
    pub progress: f64,
}

fn bytes(s: &str) -> anyhow::Result<Bytes> {
    Bytes::parse(&Quantity::Text(s.to_string())).with_context(|| format!("size `{s}`"))
}

pub fn run_cli<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = match Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let units = Units {
        cpu_milli: args.cpu_unit * 1000.0,
        memory: bytes(&args.mem_unit)?.0 as f64,
    };
    let machines: Vec<(u64, u64)> = match (&args.machines, args.machine_count) {
        (Some(path), _) => read_machines(path, units)?
            .into_iter()
            .map(|(_, c, m)| (c, m))
            .collect(),
        (None, Some(n)) => {
            let memory = bytes(&args.machine_memory)?.0;
            vec![((args.machine_cpu * 1000.0) as u64, memory); n]
        }
        (None, None) => anyhow::bail!("give --machines FILE or --machine-count N"),
    };
    anyhow::ensure!(!machines.is_empty(), "the cell has no machines");
    eprintln!("reading {}...", args.trace.display());
    let trace = read_tasks(&args.trace, units, args.until, args.limit)?;
    eprintln!(
        "{} tasks up to t={}s on {} machines ({} rows without a request and {} that never ran left out)",
        trace.tasks.len(),
        args.until,
        machines.len(),
        trace.skipped_no_request,
        trace.skipped_never_ran
    );
    let scorings = if args.scoring.is_empty() {
        vec![Scoring::Hybrid, Scoring::BestFit, Scoring::WorstFit]
    } else {
        args.scoring.clone()
    };
    let mut rows = Vec::new();
    for scoring in scorings {
        let started = std::time::Instant::now();
        let config = SimConfig {
            scoring,
            tick_s: args.tick,
            batch: args.batch,
            until_s: args.until,
            progress_every_s: args.progress,
        };
        let r = simulate(&machines, &trace.tasks, &config);
        eprintln!(
            "[{scoring:?}] done in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        rows.push(r);
    }
    println!("| scoring | placed | pending at end | pending p50 / p90 / p99 (s) | production p99 (s) | cpu / mem allocated | machines in use avg / peak | tasks next to their job's |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.0} / {:.0} / {:.0} | {:.0} | {:.1}% / {:.1}% | {:.0} / {} | {:.1}% |",
            r.scoring,
            r.placed,
            r.pending_at_end,
            r.pending_p50,
            r.pending_p90,
            r.pending_p99,
            r.prod_pending_p99,
            100.0 * r.cpu_util,
            100.0 * r.mem_util,
            r.machines_used_avg,
            r.machines_used_peak,
            100.0 * r.same_job_colocated
        );
    }
    Ok(())
}
