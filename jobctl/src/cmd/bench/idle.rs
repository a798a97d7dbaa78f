//! Phase `idle`: one-task jobs submitted one at a time on an idle cell, each
//! after the previous one finished. Submit→running and submit→succeeded from
//! the event rows (server clock) and as the client sees them (GET every 1 ms).

use super::api::true_job;
use super::report::PhaseResult;
use super::stats::{thousands, Summary};
use super::{Ctx, Ticker};
use anyhow::bail;
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio::time::Instant;

const POLL_EVERY: Duration = Duration::from_millis(1);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn span_ms(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Option<f64> {
    let d = to? - from?;
    Some(d.num_microseconds()? as f64 / 1000.0)
}

pub async fn run(ctx: &Ctx, jobs: u64) -> anyhow::Result<PhaseResult> {
    let deadline = Instant::now() + ctx.timeout;
    let mut ticker = Ticker::new();
    let (mut client_run, mut client_done) = (Vec::new(), Vec::new());
    let (mut server_run, mut server_done) = (Vec::new(), Vec::new());
    let began = Instant::now();
    for i in 0..jobs {
        let name = format!("{}idle-{i}", ctx.prefix);
        let t0 = Instant::now();
        ctx.api.submit(&true_job(&name, 1)).await?;
        let mut seen_running = None;
        let job = loop {
            let job = ctx.api.job(&name).await?;
            let task = job.task_state(0).unwrap_or("pending").to_string();
            if seen_running.is_none() && matches!(task.as_str(), "running" | "succeeded") {
                seen_running = Some(t0.elapsed());
            }
            if job.state == "succeeded" {
                break job;
            }
            if job.state == "failed" || task == "failed" {
                bail!("idle: job {name} failed (task 0 is {task})");
            }
            if Instant::now() > deadline {
                bail!(
                    "idle: did not finish within {}: {i}/{jobs} jobs done, {name} is {} (task 0 {task})",
                    humantime::format_duration(ctx.timeout),
                    job.state
                );
            }
            if ticker.due() {
                eprintln!("idle: {}/{} jobs done", thousands(i), thousands(jobs));
            }
            tokio::time::sleep(POLL_EVERY).await;
        };
        let done = t0.elapsed();
        client_run.push(ms(seen_running.unwrap_or(done)));
        client_done.push(ms(done));
        let pending = job.event_time(0, "pending");
        server_run.extend(span_ms(pending, job.event_time(0, "running")));
        server_done.extend(span_ms(pending, job.event_time(0, "succeeded")));
    }
    let wall = began.elapsed().as_secs_f64();
    eprintln!("idle: {jobs}/{jobs} jobs done in {wall:.1} s");

    let mut r = PhaseResult::new(
        "idle",
        format!("idle latency: {jobs} one-task jobs, one at a time"),
        jobs,
        wall,
    );
    r.summary(
        "server_running",
        "submit→running, server (events)",
        &server_run,
    );
    r.summary(
        "client_running",
        "submit→running, client (GET)",
        &client_run,
    );
    r.summary(
        "server_succeeded",
        "submit→succeeded, server (events)",
        &server_done,
    );
    r.summary(
        "client_succeeded",
        "submit→succeeded, client (GET)",
        &client_done,
    );
    if Summary::of(&server_run).is_none() {
        eprintln!("idle: warning: no `running` event rows were found");
    }
    Ok(r)
}
