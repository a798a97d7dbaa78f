//! Phase `reads`: what a read costs must not grow with the cell's history. One
//! live job of 10,000 pending tasks; five requests timed; then `--history`
//! finished tasks (with their attempts, events and counters) seeded straight
//! into the cell's Postgres, as if they had run; the same five requests again.
//! Needs the bench's own cell: it writes to its database.

use super::report::{PhaseResult, ReadRow};
use super::stats::{thousands, Summary};
use super::Ctx;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use sqlx::Connection;
use std::time::Duration;
use tokio::time::Instant;

/// Requests per measurement, sequential on one client; the first `WARM_UP` are not counted.
const REQUESTS: usize = 50;
const WARM_UP: usize = 5;
/// Replicas of the live job, and tasks per seeded history job (the replicas cap).
const LIVE_TASKS: u64 = 10_000;
const TASKS_PER_HISTORY_JOB: u64 = 10_000;

/// What is timed, in the order of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    /// `GET /v1/jobs/{live}`: the default page, the first 1,000 tasks.
    Detail,
    /// `GET /v1/jobs/{live}?tasks_limit=10000`: all its tasks.
    DetailAll,
    /// `GET /v1/jobs`.
    List,
    /// `GET /metrics`.
    Metrics,
    /// `POST /v1/jobs` of a one-task job (which stays pending).
    Submit,
}

impl Request {
    const ALL: [Request; 5] = [
        Request::Detail,
        Request::DetailAll,
        Request::List,
        Request::Metrics,
        Request::Submit,
    ];

    fn label(self) -> &'static str {
        match self {
            Request::Detail => "GET /v1/jobs/{live} (first 1,000 tasks)",
            Request::DetailAll => "GET /v1/jobs/{live}?tasks_limit=10000",
            Request::List => "GET /v1/jobs",
            Request::Metrics => "GET /metrics",
            Request::Submit => "POST /v1/jobs (one task)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Request::Detail => "detail",
            Request::DetailAll => "detail_all",
            Request::List => "list",
            Request::Metrics => "metrics",
            Request::Submit => "submit",
        }
    }
}

/// `replicas` tasks of `/bin/sleep 3600` asking for 100 cores: nothing fits, all stay pending.
fn pending_job(name: &str, replicas: u64) -> Value {
    json!({
        "name": name,
        "kind": "batch",
        "replicas": replicas,
        "task": {
            "command": ["/bin/sleep", "3600"],
            "resources": {"cpu": 100, "memory": "4Mi"}
        }
    })
}

/// The stored spec of a seeded job: what its tasks' columns say it ran.
fn history_spec(name: &str, tasks: u64) -> Value {
    json!({
        "name": name,
        "kind": "batch",
        "owner": "bench",
        "replicas": tasks,
        "task": {
            "command": ["/bin/true"],
            "resources": {"cpu": "10m", "memory": "4Mi"}
        }
    })
}

/// The task count of each seeded job: full jobs of `per_job`, then the rest.
fn history_jobs(history: u64, per_job: u64) -> Vec<u64> {
    let mut jobs = vec![per_job; (history / per_job) as usize];
    let rest = history % per_job;
    if rest > 0 {
        jobs.push(rest);
    }
    jobs
}

pub struct Outcome {
    pub phase: PhaseResult,
    pub rows: Vec<ReadRow>,
}

pub async fn run(ctx: &Ctx, database_url: &str, history: u64) -> anyhow::Result<Outcome> {
    let t0 = Instant::now();
    let deadline = t0 + ctx.timeout;
    let live = format!("{}reads-live", ctx.prefix);
    let t = Instant::now();
    ctx.api.submit(&pending_job(&live, LIVE_TASKS)).await?;
    eprintln!(
        "reads: live job {live} of {} pending tasks submitted in {:.1} ms",
        thousands(LIVE_TASKS),
        ms(t.elapsed())
    );

    let before = measure(ctx, &live, "before", deadline).await?;
    let seeded = seed(ctx, database_url, history, deadline).await?;
    let after = measure(ctx, &live, "after", deadline).await?;

    let mut phase = PhaseResult::new(
        "reads",
        format!(
            "requests around one live job of {} pending tasks, before and after {} finished tasks of history",
            thousands(LIVE_TASKS),
            thousands(history)
        ),
        0,
        t0.elapsed().as_secs_f64(),
    );
    phase.add(
        "history_tasks",
        "history seeded (finished tasks)",
        history as f64,
        "tasks",
    );
    phase.add("seed_s", "seeding it (SQL, then ANALYZE)", seeded, "s");
    let mut rows = Vec::new();
    for (i, req) in Request::ALL.iter().enumerate() {
        let row = ReadRow::new(req.label(), &before[i], &after[i])
            .with_context(|| format!("reads: no samples of {}", req.label()))?;
        phase.add(
            &format!("{}_ratio_p50", req.key()),
            &format!("{}: p50 after / before", req.label()),
            row.ratio_p50,
            "×",
        );
        rows.push(row);
    }
    Ok(Outcome { phase, rows })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The samples (ms) of every request, in `Request::ALL` order.
async fn measure(
    ctx: &Ctx,
    live: &str,
    tag: &str,
    deadline: Instant,
) -> anyhow::Result<Vec<Vec<f64>>> {
    let detail = format!("/v1/jobs/{live}");
    let detail_all = format!("/v1/jobs/{live}?tasks_limit={LIVE_TASKS}");
    let mut all = Vec::new();
    for req in Request::ALL {
        let mut samples = Vec::with_capacity(REQUESTS - WARM_UP);
        for i in 0..REQUESTS {
            let t = Instant::now();
            match req {
                Request::Detail => drop(ctx.api.get(&detail).await?),
                Request::DetailAll => drop(ctx.api.get(&detail_all).await?),
                Request::List => drop(ctx.api.get("/v1/jobs").await?),
                Request::Metrics => drop(ctx.api.get("/metrics").await?),
                Request::Submit => {
                    let name = format!("{}reads-{tag}-{i}", ctx.prefix);
                    ctx.api.submit(&pending_job(&name, 1)).await?;
                }
            }
            if i >= WARM_UP {
                samples.push(ms(t.elapsed()));
            }
        }
        if let Some(s) = Summary::of(&samples) {
            eprintln!(
                "reads: {tag}: {}: p50 {:.1} ms, p99 {:.1} ms (n={})",
                req.label(),
                s.p50,
                s.p99,
                s.n
            );
        }
        if Instant::now() > deadline {
            bail!(
                "reads: did not finish within {}",
                humantime::format_duration(ctx.timeout)
            );
        }
        all.push(samples);
    }
    Ok(all)
}

/// Seed `history` finished tasks; the seconds it took.
async fn seed(ctx: &Ctx, url: &str, history: u64, deadline: Instant) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let mut db = sqlx::PgConnection::connect(url)
        .await
        .context("reads: connecting to the cell's postgres")?;
    let machine: Option<String> = sqlx::query_scalar("SELECT id::text FROM machines LIMIT 1")
        .fetch_optional(&mut db)
        .await
        .context("reads: reading a machine")?;
    let machine = machine.context("reads: the cell has no machine to put attempts on")?;
    let jobs = history_jobs(history, TASKS_PER_HISTORY_JOB);
    let mut done = 0;
    for (i, tasks) in jobs.iter().enumerate() {
        let name = format!("{}hist-{i}", ctx.prefix);
        let spec = history_spec(&name, *tasks);
        let t = Instant::now();
        borg_store::fixtures::seed_finished_job(&mut db, &name, *tasks as i32, &spec, &machine)
            .await
            .with_context(|| format!("reads: seeding job {name}"))?;
        done += tasks;
        eprintln!(
            "reads: seeded {name} ({} tasks) in {:.2} s: {}/{} tasks of history",
            thousands(*tasks),
            t.elapsed().as_secs_f64(),
            thousands(done),
            thousands(history)
        );
        if Instant::now() > deadline {
            bail!(
                "reads: seeding did not finish within {}",
                humantime::format_duration(ctx.timeout)
            );
        }
    }
    // The master must read the seeded rows as a finished job.
    if let Some(tasks) = jobs.first() {
        let name = format!("{}hist-0", ctx.prefix);
        let job = ctx.api.job(&name).await?;
        if job.state != "succeeded" || job.count("succeeded") != *tasks {
            bail!(
                "reads: the master shows the seeded {name} as {} with {} of {} tasks succeeded",
                job.state,
                thousands(job.count("succeeded")),
                thousands(*tasks)
            );
        }
    }
    let t = Instant::now();
    sqlx::query("ANALYZE")
        .execute(&mut db)
        .await
        .context("reads: ANALYZE")?;
    eprintln!("reads: ANALYZE in {:.2} s", t.elapsed().as_secs_f64());
    let _ = db.close().await;
    Ok(t0.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_cut_into_jobs_of_at_most_ten_thousand() {
        assert_eq!(history_jobs(100_000, 10_000), vec![10_000; 10]);
        assert_eq!(history_jobs(25_000, 10_000), vec![10_000, 10_000, 5_000]);
        assert_eq!(history_jobs(500, 10_000), vec![500]);
        assert!(history_jobs(0, 10_000).is_empty());
    }

    #[test]
    fn the_live_job_asks_for_more_than_any_machine() {
        let spec: borg_shared::spec::JobSpec =
            serde_json::from_value(pending_job("bench-x-reads-live", LIVE_TASKS)).unwrap();
        assert_eq!(spec.replicas, LIVE_TASKS as i64);
        assert_eq!(spec.task.resources.cpu.0, 100_000);
        let spec: borg_shared::spec::JobSpec =
            serde_json::from_value(history_spec("bench-x-hist-0", 10_000)).unwrap();
        assert_eq!((spec.owner.as_str(), spec.replicas), ("bench", 10_000));
        assert_eq!(spec.task.resources.cpu.0, 10);
        assert_eq!(spec.task.resources.memory.0, 4 * 1024 * 1024);
    }
}
