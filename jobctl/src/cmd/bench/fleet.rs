//! Phase `fleet` (alone, `--only fleet --borglets N`): one master polling N
//! simulated borglets. The bench's cell runs no real borglet; a fleet process
//! (`jobctl component borglet --fleet N`: real borglet sync handling, with its
//! credentials and epoch checks, over simulated processes) registers N
//! machines with the cell's join token. A service of `--tasks` replicas is
//! placed on them; once all run, the bench measures over `--fleet-window`: the
//! syncs the fleet answered against the N per second wanted (the master's 1 s
//! interval), the gap between two syncs of one borglet, the master's sync
//! durations (its `borg_sync_duration_seconds` histogram), and the CPU of the
//! master, Postgres, scheduler and the fleet from /proc.

use super::cpu::{Group, Meter};
use super::report::PhaseResult;
use super::stats::thousands;
use super::Ctx;
use anyhow::{bail, Context};
use borglet::fleet::{quantile_ms, FleetStats};
use serde_json::json;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::time::Instant;

/// The master's default poll interval, which the cell runs with.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
const SYNC_DURATION: &str = "borg_sync_duration_seconds";

/// What the fleet phase needs from the bench.
pub struct FleetRun<'a> {
    pub borglets: usize,
    pub tasks: u64,
    pub window: Duration,
    /// The cell's data dir (its join token; the fleet's credentials go there too).
    pub cell_dir: &'a Path,
    pub meter: &'a Meter,
}

/// The fleet process; stopped (SIGTERM, then kill) when dropped.
struct FleetProc {
    child: tokio::process::Child,
    url: String,
    http: reqwest::Client,
}

impl Drop for FleetProc {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

impl FleetProc {
    async fn start(ctx: &Ctx, run: &FleetRun<'_>) -> anyhow::Result<FleetProc> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = run.cell_dir.join("fleet");
        let log = std::fs::File::create(run.cell_dir.join("fleet.log"))?;
        let exe = std::env::current_exe().context("finding the jobctl executable")?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.args(["component", "borglet", "--fleet", &run.borglets.to_string()])
            .args(["--name", "fleet", "--master", ctx.api.master()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&dir)
            .arg("--join-token-file")
            .arg(run.cell_dir.join("join.token"))
            .args(["--cpu", "4", "--memory", "16Gi", "--disk", "100Gi"])
            // A machine registers again after this long without a sync; the
            // first syncs of a thousand new machines take longer than the 5 s default.
            .args(["--reregister-after", "60s"])
            .env_remove("BORG_JOIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let child = cmd.spawn().context("starting the fleet")?;
        Ok(FleetProc {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        })
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn stats(&self) -> anyhow::Result<FleetStats> {
        let resp = self
            .http
            .get(format!("{}/fleet/stats", self.url))
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        Ok(resp.error_for_status()?.json().await?)
    }
}

/// CPU seconds (utime + stime) of process `pid`.
fn cpu_seconds(pid: u32) -> f64 {
    procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .map(|s| (s.utime + s.stime) as f64 / procfs::ticks_per_second().max(1) as f64)
        .unwrap_or(0.0)
}

/// Cumulative `le` buckets of a Prometheus histogram in `text`.
fn histogram(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let n = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, n))
        })
        .collect()
}

/// The `q` quantile of the observations between two scrapes, as the upper
/// edge of its bucket (seconds).
fn histogram_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let b = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, n)| *n);
            (*le, n - b)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    delta
        .iter()
        .find(|(_, n)| *n >= total * q)
        .map(|(le, _)| *le)
}

async fn master_metrics(ctx: &Ctx) -> anyhow::Result<String> {
    let url = format!("{}/metrics", ctx.api.master());
    Ok(reqwest::get(&url).await?.error_for_status()?.text().await?)
}

pub async fn run(ctx: &Ctx, run: FleetRun<'_>) -> anyhow::Result<PhaseResult> {
    let deadline = Instant::now() + ctx.timeout;
    let n = run.borglets;
    let t0 = Instant::now();
    let fleet = FleetProc::start(ctx, &run).await?;
    eprintln!("fleet: {n} simulated borglets at {}", fleet.url);
    loop {
        let up = ctx.api.machines_up().await.unwrap_or(0);
        if up >= n {
            break;
        }
        if Instant::now() > deadline {
            bail!("fleet: only {up}/{n} machines up; see the cell's fleet.log");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let registered = t0.elapsed();
    eprintln!(
        "fleet: {n} machines up in {:.1} s",
        registered.as_secs_f64()
    );

    let name = format!("{}fleet", ctx.prefix);
    let spec = json!({"name": name, "kind": "service", "replicas": run.tasks,
        "task": {"command": ["/bin/true"], "resources": {"cpu": "10m", "memory": "4Mi"}}});
    let t1 = Instant::now();
    ctx.api.submit(&spec).await?;
    loop {
        let job = ctx.api.job(&name).await?;
        let running = job.count("running");
        let synced = fleet.stats().await.map(|s| s.synced).unwrap_or(0);
        if running >= run.tasks && synced >= n {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "fleet: {running}/{} tasks running, {synced}/{n} borglets synced",
                run.tasks
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_running = t1.elapsed();
    eprintln!(
        "fleet: {} tasks running in {:.1} s; measuring for {} s",
        thousands(run.tasks),
        all_running.as_secs_f64(),
        run.window.as_secs()
    );

    let fleet_pid = fleet.pid().context("the fleet exited")?;
    let (stats0, cpu0, fleet_cpu0, metrics0) = (
        fleet.stats().await?,
        run.meter.sample()?,
        cpu_seconds(fleet_pid),
        master_metrics(ctx).await?,
    );
    let w0 = Instant::now();
    tokio::time::sleep(run.window).await;
    let (stats1, cpu1, fleet_cpu1, metrics1) = (
        fleet.stats().await?,
        run.meter.sample()?,
        cpu_seconds(fleet_pid),
        master_metrics(ctx).await?,
    );
    let wall = w0.elapsed().as_secs_f64();
    let job = ctx.api.job(&name).await?;

    let cpu = run.meter.between(&cpu0, &cpu1);
    let cores = |g: Group| cpu.ms.get(&g).copied().unwrap_or(0.0) / 1000.0 / wall;
    let syncs = stats1.syncs.saturating_sub(stats0.syncs) as f64 / wall;
    let wanted = n as f64 / POLL_INTERVAL.as_secs_f64();
    let gaps = stats1.gaps_since(&stats0);
    let (h0, h1) = (
        histogram(&metrics0, SYNC_DURATION),
        histogram(&metrics1, SYNC_DURATION),
    );

    let mut r = PhaseResult::new(
        "fleet",
        format!(
            "one master polling {n} simulated borglets (one fleet process) at its 1 s interval, \
             a service of {} tasks running on them; figures over {:.0} s of steady polling",
            thousands(run.tasks),
            wall
        ),
        run.tasks,
        wall,
    );
    r.add(
        "fleet_registered_s",
        &format!("{n} machines up"),
        registered.as_secs_f64(),
        "s",
    );
    r.add(
        "fleet_all_running_s",
        "submit → all tasks running",
        all_running.as_secs_f64(),
        "s",
    );
    r.add(
        "fleet_syncs_per_s",
        "syncs answered per second",
        syncs,
        "syncs/s",
    );
    r.add(
        "fleet_syncs_share",
        "of the syncs wanted (N per second)",
        100.0 * syncs / wanted,
        "%",
    );
    for (q, label) in [(0.5, "p50"), (0.99, "p99"), (1.0, "max")] {
        if let Some(ms) = quantile_ms(&gaps, q) {
            r.add(
                &format!("fleet_gap_{label}_ms"),
                &format!("time between two syncs of a borglet, {label} (≤)"),
                ms as f64,
                "ms",
            );
        }
    }
    for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
        if let Some(s) = histogram_quantile(&h0, &h1, q) {
            r.add(
                &format!("fleet_sync_{label}_ms"),
                &format!("master's sync duration, {label} (≤ bucket)"),
                s * 1000.0,
                "ms",
            );
        }
    }
    r.add(
        "fleet_master_cores",
        "borgmaster CPU",
        cores(Group::Borgmaster),
        "cores",
    );
    r.add(
        "fleet_postgres_cores",
        "postgres CPU",
        cores(Group::Postgres),
        "cores",
    );
    r.add(
        "fleet_scheduler_cores",
        "borgscheduler CPU",
        cores(Group::Borgscheduler),
        "cores",
    );
    r.add(
        "fleet_fleet_cores",
        "fleet process CPU",
        (fleet_cpu1 - fleet_cpu0) / wall,
        "cores",
    );
    r.add(
        "fleet_machine_busy",
        "machine busy",
        100.0 * cpu.machine_busy,
        "%",
    );
    r.add(
        "fleet_running_after",
        "tasks still running at the end",
        job.count("running") as f64,
        "tasks",
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_difference_of_two_scrapes() {
        let before = "borg_sync_duration_seconds_bucket{le=\"0.001\"} 10\n\
                      borg_sync_duration_seconds_bucket{le=\"0.01\"} 10\n\
                      borg_sync_duration_seconds_bucket{le=\"+Inf\"} 10\n";
        let after = "borg_sync_duration_seconds_bucket{le=\"0.001\"} 15\n\
                     borg_sync_duration_seconds_bucket{le=\"0.01\"} 19\n\
                     borg_sync_duration_seconds_bucket{le=\"+Inf\"} 20\n";
        let (b, a) = (
            histogram(before, SYNC_DURATION),
            histogram(after, SYNC_DURATION),
        );
        assert_eq!(histogram_quantile(&b, &a, 0.5), Some(0.001));
        assert_eq!(histogram_quantile(&b, &a, 0.9), Some(0.01));
        assert_eq!(histogram_quantile(&b, &a, 0.99), Some(f64::INFINITY));
    }
}
