//! Phase `small`: N one-task jobs submitted by C concurrent clients (one tokio
//! task and one HTTP client each). Accept rate until every POST has answered,
//! POST latency as each client saw it, and tasks/s until all succeeded.

use super::api::{true_job, Api};
use super::report::PhaseResult;
use super::stats::{rate, thousands};
use super::{Ctx, Ticker};
use anyhow::{anyhow, bail};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub async fn run(ctx: &Ctx, jobs: u64, clients: u64) -> anyhow::Result<PhaseResult> {
    let deadline = Instant::now() + ctx.timeout;
    let prefix = format!("{}small-", ctx.prefix);
    let accepted = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    let t0 = Instant::now();
    for c in 0..clients {
        let api = Api::new(ctx.api.master(), ctx.token.clone())?;
        let names: Vec<String> = (c..jobs)
            .step_by(clients as usize)
            .map(|i| format!("{prefix}{i}"))
            .collect();
        let accepted = accepted.clone();
        set.spawn(async move {
            let mut latencies = Vec::with_capacity(names.len());
            for name in names {
                let sent = Instant::now();
                api.submit(&true_job(&name, 1)).await?;
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(latencies)
        });
    }

    let mut ticker = Ticker::new();
    let mut latencies = Vec::with_capacity(jobs as usize);
    loop {
        let joined = tokio::time::timeout_at(deadline, set.join_next()).await;
        match joined {
            Err(_) => bail!(
                "small: did not finish within {}: {}/{} jobs accepted",
                humantime::format_duration(ctx.timeout),
                thousands(accepted.load(Ordering::Relaxed)),
                thousands(jobs)
            ),
            Ok(None) => break,
            Ok(Some(result)) => {
                let lat = result.map_err(|e| anyhow!("small: a client panicked: {e}"))??;
                latencies.extend(lat);
            }
        }
        if ticker.due() {
            eprintln!(
                "small: {}/{} accepted",
                thousands(accepted.load(Ordering::Relaxed)),
                thousands(jobs)
            );
        }
    }
    let accept = t0.elapsed();
    eprintln!(
        "small: {} jobs accepted in {:.2} s ({:.0} jobs/s)",
        thousands(jobs),
        accept.as_secs_f64(),
        rate(jobs, accept.as_secs_f64())
    );
    let done = wait_succeeded(ctx, "small", &prefix, jobs, t0, deadline).await?;

    let mut r = PhaseResult::new(
        "small",
        format!(
            "{} one-task jobs from {clients} concurrent clients",
            thousands(jobs)
        ),
        jobs,
        done.as_secs_f64(),
    );
    r.add("accept_s", "all accepted", accept.as_secs_f64(), "s");
    r.add(
        "accept_per_s",
        "accept rate",
        rate(jobs, accept.as_secs_f64()),
        "jobs/s",
    );
    r.summary_p50_p99("post", "POST latency, client", &latencies);
    r.add("all_succeeded_s", "all succeeded", done.as_secs_f64(), "s");
    r.add(
        "tasks_per_s",
        "throughput",
        rate(jobs, done.as_secs_f64()),
        "tasks/s",
    );
    Ok(r)
}

/// Poll `GET /v1/jobs` until the `n` jobs named `prefix*` all succeeded; the
/// time since `t0`. The list grows with every job, so the poll backs off to
/// four times as long as a call took (20 ms at least), to keep its own load small.
pub async fn wait_succeeded(
    ctx: &Ctx,
    phase: &str,
    prefix: &str,
    n: u64,
    t0: Instant,
    deadline: Instant,
) -> anyhow::Result<Duration> {
    let mut ticker = Ticker::new();
    let mut last = (Instant::now(), 0u64);
    loop {
        let asked = Instant::now();
        let jobs = ctx.api.jobs().await?;
        let took = asked.elapsed();
        let ours = jobs.iter().filter(|j| j.name.starts_with(prefix));
        let (mut succeeded, mut failed) = (0u64, None);
        for job in ours {
            match job.state.as_str() {
                "succeeded" => succeeded += 1,
                "failed" | "killed" => failed = Some(job.name.clone()),
                _ => {}
            }
        }
        if let Some(name) = failed {
            bail!("{phase}: job {name} failed ({succeeded} of {n} succeeded)");
        }
        if succeeded >= n {
            return Ok(t0.elapsed());
        }
        if Instant::now() > deadline {
            bail!(
                "{phase}: did not finish within {}: {}/{} jobs succeeded",
                humantime::format_duration(ctx.timeout),
                thousands(succeeded),
                thousands(n)
            );
        }
        if ticker.due() {
            let per_s = rate(
                succeeded.saturating_sub(last.1),
                last.0.elapsed().as_secs_f64(),
            );
            eprintln!(
                "{phase}: {}/{} succeeded, {} tasks/s",
                thousands(succeeded),
                thousands(n),
                thousands(per_s.round() as u64)
            );
            last = (Instant::now(), succeeded);
        }
        let pause = (took * 4).clamp(Duration::from_millis(20), Duration::from_millis(500));
        tokio::time::sleep(pause).await;
    }
}
