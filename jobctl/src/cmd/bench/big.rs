//! Phase `big`: one job of N replicas of `/bin/true`. The POST round trip
//! (accept), then `GET /v1/jobs` every 20 ms (the list's `task_counts`, never
//! the job's task list, which the new store caps at 1,000) until all succeeded.

use super::api::true_job;
use super::report::PhaseResult;
use super::stats::{rate, thousands};
use super::{Ctx, Ticker};
use anyhow::{bail, Context};
use std::time::Duration;
use tokio::time::Instant;

const POLL_EVERY: Duration = Duration::from_millis(20);

pub async fn run(ctx: &Ctx, tasks: u64) -> anyhow::Result<PhaseResult> {
    let name = format!("{}big", ctx.prefix);
    let deadline = Instant::now() + ctx.timeout;
    let t0 = Instant::now();
    ctx.api.submit(&true_job(&name, tasks)).await?;
    let accept = t0.elapsed();
    eprintln!(
        "big: {} tasks accepted in {:.1} ms",
        thousands(tasks),
        accept.as_secs_f64() * 1000.0
    );
    let mut ticker = Ticker::new();
    let mut first_running = None;
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::time::sleep(POLL_EVERY).await;
        let jobs = ctx.api.jobs().await?;
        let job = jobs
            .iter()
            .find(|j| j.name == name)
            .with_context(|| format!("big: {name} is missing from GET /v1/jobs"))?;
        let succeeded = job.count("succeeded");
        if first_running.is_none() && job.count("running") + succeeded > 0 {
            first_running = Some(t0.elapsed());
        }
        if job.state == "succeeded" {
            break;
        }
        let failed = job.count("failed");
        if job.state == "failed" || failed > 0 {
            bail!(
                "big: job {name} failed ({failed} tasks failed, {} succeeded)",
                thousands(succeeded)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "big: did not finish within {}: {}/{} succeeded",
                humantime::format_duration(ctx.timeout),
                thousands(succeeded),
                thousands(tasks)
            );
        }
        if ticker.due() {
            let per_s = rate(
                succeeded.saturating_sub(last.1),
                last.0.elapsed().as_secs_f64(),
            );
            eprintln!(
                "big: {}/{} succeeded, {} tasks/s",
                thousands(succeeded),
                thousands(tasks),
                thousands(per_s.round() as u64)
            );
            last = (Instant::now(), succeeded);
        }
    }
    let total = t0.elapsed();
    eprintln!(
        "big: {}/{} succeeded in {:.2} s",
        thousands(tasks),
        thousands(tasks),
        total.as_secs_f64()
    );

    let mut r = PhaseResult::new(
        "big",
        format!("one big job of {} tasks", thousands(tasks)),
        tasks,
        total.as_secs_f64(),
    );
    r.add(
        "accept_ms",
        "accept (POST round trip)",
        accept.as_secs_f64() * 1000.0,
        "ms",
    );
    if let Some(f) = first_running {
        r.add(
            "first_running_ms",
            "first task running",
            f.as_secs_f64() * 1000.0,
            "ms",
        );
    }
    r.add("all_succeeded_s", "all succeeded", total.as_secs_f64(), "s");
    r.add(
        "tasks_per_s",
        "throughput",
        rate(tasks, total.as_secs_f64()),
        "tasks/s",
    );
    Ok(r)
}
