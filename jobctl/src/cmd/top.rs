//! `jobctl top [jobs|machines]`: what is used now, as `kubectl top`: cpu and
//! memory by job (summed over its tasks' last samples) and by machine, the
//! biggest first. `--watch` redraws every `--interval`. Fetching is in `run`;
//! the summing, sorting and rendering are pure.

use crate::client::Client;
use crate::output::{emit, table};
use borg_shared::wire::{JobView, MachineView};
use borg_shared::{Bytes, JobState, MilliCpu, TaskState};
use std::cmp::Reverse;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Jobs, machines, or (by default) both.
    #[arg(value_enum)]
    pub what: Option<What>,
    /// Biggest first by this.
    #[arg(long, value_enum, default_value_t)]
    pub sort: Sort,
    /// Redraw every `--interval` until interrupted.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// How often `--watch` redraws (usage is sampled by the borglets every few seconds).
    #[arg(long, default_value = "2s", requires = "watch")]
    pub interval: humantime::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    #[value(alias = "job")]
    Jobs,
    #[value(alias = "machine")]
    Machines,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Sort {
    #[default]
    Cpu,
    Memory,
}

/// One job's usage: the sum over its running tasks that reported a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobUsage {
    pub name: String,
    /// Its running tasks.
    pub running: usize,
    /// Those of them with a sample (a task just started has none yet).
    pub sampled: usize,
    pub cpu: MilliCpu,
    pub memory: Bytes,
    /// What those tasks asked for together.
    pub cpu_requested: MilliCpu,
    pub memory_requested: Bytes,
}

pub fn job_usage(job: &JobView) -> JobUsage {
    let res = &job.spec.task.resources;
    let running: Vec<_> = job
        .tasks
        .iter()
        .flatten()
        .filter(|t| t.state == TaskState::Running)
        .collect();
    let sampled: Vec<_> = running.iter().filter_map(|t| t.usage).collect();
    let n = sampled.len() as u64;
    JobUsage {
        name: job.name.clone(),
        running: running.len(),
        sampled: sampled.len(),
        cpu: MilliCpu(sampled.iter().map(|u| u.cpu.0).sum()),
        memory: Bytes(sampled.iter().map(|u| u.memory.0).sum()),
        cpu_requested: MilliCpu(res.cpu.0 * n),
        memory_requested: Bytes(res.memory.0 * n),
    }
}

/// `37%`; `-` when nothing was asked for.
fn percent(used: u64, of: u64) -> String {
    if of == 0 {
        return "-".into();
    }
    format!("{}%", (used as f64 * 100.0 / of as f64).round() as u64)
}

pub fn jobs_table(mut rows: Vec<JobUsage>, sort: Sort) -> String {
    rows.sort_by_key(|r| {
        let key = match sort {
            Sort::Cpu => (r.cpu.0, r.memory.0),
            Sort::Memory => (r.memory.0, r.cpu.0),
        };
        (Reverse(key), r.name.clone())
    });
    let rows = rows
        .into_iter()
        .map(|r| {
            // No sample yet (just started): unknown, not zero.
            let sampled = |s: String| if r.sampled == 0 { "-".to_string() } else { s };
            // The sums cover the sampled tasks only: say so when that is not all.
            let tasks = match r.sampled < r.running {
                true => format!("{} ({} sampled)", r.running, r.sampled),
                false => r.running.to_string(),
            };
            vec![
                r.name,
                tasks,
                sampled(r.cpu.to_string()),
                percent(r.cpu.0, r.cpu_requested.0),
                sampled(r.memory.to_string()),
                percent(r.memory.0, r.memory_requested.0),
            ]
        })
        .collect();
    table(
        &[
            "JOB",
            "TASKS",
            "CPU",
            "CPU/REQUEST",
            "MEMORY",
            "MEMORY/REQUEST",
        ],
        rows,
    )
}

pub fn machines_table(machines: &[MachineView], sort: Sort) -> String {
    let mut ms: Vec<&MachineView> = machines.iter().collect();
    ms.sort_by_key(|m| {
        let u = m.usage.unwrap_or_default();
        let key = match sort {
            Sort::Cpu => (u.cpu.0, u.memory.0),
            Sort::Memory => (u.memory.0, u.cpu.0),
        };
        (Reverse(key), m.name.clone())
    });
    let rows = ms
        .into_iter()
        .map(|m| {
            let (cpu, memory, cpu_pct, memory_pct) = match m.usage {
                Some(u) => (
                    u.cpu.to_string(),
                    u.memory.to_string(),
                    percent(u.cpu.0, m.capacity.cpu.0),
                    percent(u.memory.0, m.capacity.memory.0),
                ),
                None => ("-".into(), "-".into(), "-".into(), "-".into()),
            };
            vec![
                m.name.clone(),
                m.state.to_string(),
                m.tasks.to_string(),
                cpu,
                cpu_pct,
                memory,
                memory_pct,
            ]
        })
        .collect();
    table(
        &[
            "MACHINE",
            "STATE",
            "TASKS",
            "CPU",
            "CPU/CAPACITY",
            "MEMORY",
            "MEMORY/CAPACITY",
        ],
        rows,
    )
}

/// One screen of `top`: the tables asked for, one after the other.
async fn screen(client: &Client, args: &Args) -> anyhow::Result<String> {
    let mut parts = Vec::new();
    if args.what != Some(What::Machines) {
        let mut usage = Vec::new();
        for job in client.jobs().await?.jobs {
            // Only live jobs have tasks that use anything now.
            if job.state != JobState::Running {
                continue;
            }
            match client.job_with_all_tasks(&job.name).await {
                Ok(view) => usage.push(job_usage(&view)),
                // Ended and gone between the list and the read: nothing to show.
                Err(crate::client::ClientError::Api { status, .. })
                    if status == reqwest::StatusCode::NOT_FOUND => {}
                Err(e) => return Err(e.into()),
            }
        }
        parts.push(if usage.is_empty() {
            "no running jobs".to_string()
        } else {
            jobs_table(usage, args.sort)
        });
    }
    if args.what != Some(What::Jobs) {
        let machines = client.machines().await?.machines;
        parts.push(if machines.is_empty() {
            "no machines".to_string()
        } else {
            machines_table(&machines, args.sort)
        });
    }
    Ok(parts.join("\n\n"))
}

pub async fn run(client: &Client, args: Args) -> anyhow::Result<()> {
    if !args.watch {
        return Ok(emit(&screen(client, &args).await?)?);
    }
    let every = Duration::from(args.interval).max(Duration::from_millis(200));
    let clear = std::io::IsTerminal::is_terminal(&std::io::stdout());
    loop {
        let text = screen(client, &args).await?;
        if clear {
            // Home and clear, then the screen: a terminal shows one table that changes.
            emit(&format!("\x1b[H\x1b[2J{text}"))?;
        } else {
            emit(&format!("{text}\n"))?;
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fixtures::{job, machine, task};
    use borg_shared::wire::ResourceUsage;
    use borg_shared::{JobKind, MachineState};

    fn used(cpu: u64, mib: u64) -> Option<ResourceUsage> {
        Some(ResourceUsage {
            cpu: MilliCpu(cpu),
            memory: Bytes(mib << 20),
        })
    }

    #[test]
    fn job_usage_sums_sampled_tasks_and_their_requests() {
        let mut a = task(0, TaskState::Running);
        a.usage = used(100, 10);
        let mut b = task(1, TaskState::Running);
        b.usage = used(150, 20);
        let c = task(2, TaskState::Pending);
        let j = job("web", JobKind::Service, JobState::Running, vec![a, b, c]);
        let u = job_usage(&j);
        assert_eq!((u.running, u.sampled), (2, 2));
        assert_eq!(u.cpu, MilliCpu(250));
        assert_eq!(u.memory, Bytes(30 << 20));
        // The fixture asks 250m and 64Mi per task.
        assert_eq!(u.cpu_requested, MilliCpu(500));
        assert_eq!(u.memory_requested, Bytes(128 << 20));
    }

    fn rows() -> Vec<JobUsage> {
        let row = |name: &str, cpu: u64, mib: u64| JobUsage {
            name: name.into(),
            running: 2,
            sampled: 2,
            cpu: MilliCpu(cpu),
            memory: Bytes(mib << 20),
            cpu_requested: MilliCpu(500),
            memory_requested: Bytes(128 << 20),
        };
        vec![row("small", 10, 100), row("big", 400, 5), row("idle", 0, 0)]
    }

    #[test]
    fn jobs_sorted_by_cpu_then_by_memory() {
        insta::assert_snapshot!("top_jobs_by_cpu", jobs_table(rows(), Sort::Cpu));
        let by_memory = jobs_table(rows(), Sort::Memory);
        let order: Vec<&str> = by_memory
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(order, ["small", "big", "idle"]);
    }

    #[test]
    fn a_job_not_sampled_yet_shows_unknown_usage_not_zero() {
        let j = job(
            "web",
            JobKind::Service,
            JobState::Running,
            vec![task(0, TaskState::Running)],
        );
        let out = jobs_table(vec![job_usage(&j)], Sort::Cpu);
        let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            ["web", "1", "(0", "sampled)", "-", "-", "-", "-"],
            "{out}"
        );
    }

    #[test]
    fn tasks_counts_the_running_ones_and_says_how_many_the_sums_cover() {
        let mut a = task(0, TaskState::Running);
        a.usage = used(100, 10);
        let b = task(1, TaskState::Running);
        let mut ended = task(2, TaskState::Succeeded);
        ended.usage = used(900, 90);
        let j = job(
            "web",
            JobKind::Service,
            JobState::Running,
            vec![a, b, ended],
        );
        let u = job_usage(&j);
        assert_eq!((u.running, u.sampled), (2, 1));
        assert_eq!(u.cpu, MilliCpu(100), "an ended task uses nothing now");
        let out = jobs_table(vec![u], Sort::Cpu);
        let row = out.lines().nth(1).unwrap();
        assert!(row.starts_with("web   2 (1 sampled)"), "{out}");
    }

    #[test]
    fn machines_sorted_with_unsampled_last() {
        let mut m2 = machine("m2", "b");
        m2.usage = used(900, 1);
        let mut m3 = machine("m3", "c");
        m3.usage = None;
        m3.state = MachineState::Down;
        insta::assert_snapshot!(
            "top_machines_by_cpu",
            machines_table(&[machine("m1", "a"), m3, m2], Sort::Cpu)
        );
    }
}
