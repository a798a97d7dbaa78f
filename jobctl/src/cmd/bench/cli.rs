//! Phase `small` (second part): M sequential `jobctl run -f FILE`, each a new
//! process of this binary, as users and scripts submit (and as Slurm's `sbatch`
//! loop does). Per-call wall time, and jobs/s until all of them succeeded.

use super::api::true_job;
use super::report::PhaseResult;
use super::small::wait_succeeded;
use super::stats::{rate, thousands};
use super::{Ctx, Ticker};
use anyhow::{bail, Context};
use std::process::Stdio;
use tokio::time::Instant;

pub async fn run(ctx: &Ctx, jobs: u64) -> anyhow::Result<PhaseResult> {
    let deadline = Instant::now() + ctx.timeout;
    let prefix = format!("{}cli-", ctx.prefix);
    let exe = std::env::current_exe().context("finding the jobctl executable")?;
    // Every spec file is written before the clock starts.
    let mut files = Vec::with_capacity(jobs as usize);
    for i in 0..jobs {
        let path = ctx.workdir.join(format!("cli-{i}.json"));
        let spec = serde_json::to_vec(&true_job(&format!("{prefix}{i}"), 1))?;
        std::fs::write(&path, spec).with_context(|| format!("writing {}", path.display()))?;
        files.push(path);
    }
    let mut ticker = Ticker::new();
    let mut calls = Vec::with_capacity(files.len());
    let t0 = Instant::now();
    for (i, file) in files.iter().enumerate() {
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.args(["--master", ctx.api.master(), "run", "-f"])
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(t) = &ctx.token {
            cmd.env("BORG_TOKEN", t);
        }
        let sent = Instant::now();
        let out = cmd.output().await.context("starting jobctl run")?;
        calls.push(sent.elapsed().as_secs_f64() * 1000.0);
        if !out.status.success() {
            bail!(
                "cli: `jobctl run -f {}` failed: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "cli: did not finish within {}: {i}/{jobs} `jobctl run` calls made",
                humantime::format_duration(ctx.timeout)
            );
        }
        if ticker.due() {
            eprintln!(
                "cli: {}/{} jobctl run calls",
                thousands(i as u64 + 1),
                thousands(jobs)
            );
        }
    }
    let submitted = t0.elapsed();
    let done = wait_succeeded(ctx, "cli", &prefix, jobs, t0, deadline).await?;
    eprintln!(
        "cli: {jobs} jobs submitted in {:.2} s, all succeeded in {:.2} s",
        submitted.as_secs_f64(),
        done.as_secs_f64()
    );

    let mut r = PhaseResult::new(
        "cli",
        format!("{} sequential `jobctl run -f` processes", thousands(jobs)),
        jobs,
        done.as_secs_f64(),
    );
    r.summary_p50_p99("call", "one `jobctl run` call", &calls);
    r.add(
        "submit_per_s",
        "submit rate",
        rate(jobs, submitted.as_secs_f64()),
        "jobs/s",
    );
    r.add("all_succeeded_s", "all succeeded", done.as_secs_f64(), "s");
    r.add(
        "jobs_per_s",
        "throughput",
        rate(jobs, done.as_secs_f64()),
        "jobs/s",
    );
    Ok(r)
}
