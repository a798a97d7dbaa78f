//! The simulated cell: machines as capacity only, tasks that end after their
//! recorded durations, and the real placement core (`place`) deciding, in
//! simulated time (no sleeping: a day of trace runs in minutes).

use super::trace::TraceTask;
use crate::place::{place, Decision};
use crate::snapshot::{Machine, PendingTask, Snapshot};
use crate::Scoring;
use borg_shared::wire::{Capacity, PortRange};
use borg_shared::{Bytes, JobId, MachineId, MilliCpu, TaskId};
use chrono::{DateTime, Utc};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

/// How the simulation runs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub scoring: Scoring,
    /// Simulated seconds between scheduler passes.
    pub tick_s: f64,
    /// Tasks judged per pass at most (queue order), as the scheduler's batch.
    pub batch: usize,
    /// Stop at this trace time.
    pub until_s: f64,
    /// Print a progress line every this many simulated seconds (0: never).
    pub progress_every_s: f64,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    pub scoring: String,
    pub machines: usize,
    pub tasks: usize,
    pub placed: usize,
    pub pending_at_end: usize,
    /// Pending time (submit → placed) of placed tasks, in seconds.
    pub pending_p50: f64,
    pub pending_p90: f64,
    pub pending_p99: f64,
    /// Same, production band only.
    pub prod_pending_p99: f64,
    /// Allocated cpu and memory over capacity, averaged over the passes.
    pub cpu_util: f64,
    pub mem_util: f64,
    /// Machines holding at least one task: averaged over passes, and at peak.
    pub machines_used_avg: f64,
    pub machines_used_peak: usize,
    /// Placements onto a machine already running a task of the same job.
    pub same_job_colocated: f64,
}

struct Running {
    machine: usize,
    job: JobId,
    request: Capacity,
}

fn t0() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

/// Run `tasks` (in submit order) on machines of the given (cpu, memory).
pub fn simulate(machines: &[(u64, u64)], tasks: &[TraceTask], config: &SimConfig) -> SimReport {
    let mut snapshot = Snapshot {
        machines: machines
            .iter()
            .enumerate()
            .map(|(i, &(cpu, memory))| Machine {
                id: MachineId(uuid::Uuid::from_u128(i as u128 + 1)),
                name: format!("m{i:05}"),
                labels: Default::default(),
                capacity: Capacity {
                    cpu: MilliCpu(cpu),
                    memory: Bytes(memory),
                    disk: Bytes(0),
                },
                used: Capacity::default(),
                ports: PortRange::default(),
                used_ports: vec![],
            })
            .collect(),
        scoring: config.scoring,
        ..Snapshot::default()
    };
    let index: HashMap<MachineId, usize> = snapshot.machine_index();
    let owner: Arc<str> = Arc::from("trace");
    let pending_task = |k: usize, t: &TraceTask| PendingTask {
        id: TaskId(uuid::Uuid::from_u128(k as u128 + 1)),
        job_id: JobId(uuid::Uuid::from_u128((t.job as u128) << 1 | 1)),
        priority: t.priority,
        created_at: t0() + chrono::Duration::milliseconds((t.submit_s * 1000.0) as i64),
        request: Capacity {
            cpu: MilliCpu(t.cpu_milli),
            memory: Bytes(t.memory),
            disk: Bytes(0),
        },
        constraints: Arc::from(Vec::new()),
        spread: None,
        ports: 0,
        owner: owner.clone(),
        name: format!("{}/{}", t.job, t.index),
        failed_on: None,
        // The trace's tasks are replayed as batch tasks: packed first.
        service: false,
    };

    let mut report = SimReport {
        scoring: format!("{:?}", config.scoring),
        machines: machines.len(),
        tasks: tasks.len(),
        ..SimReport::default()
    };
    let mut next = 0usize; // next trace row to arrive
    let mut queue: Vec<(usize, PendingTask)> = Vec::new();
    let mut ends: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new(); // (end ms, running id)
    let mut running: HashMap<usize, Running> = HashMap::new();
    let mut on_machine = vec![0u32; machines.len()];
    let mut waits: Vec<f64> = Vec::new();
    let mut prod_waits: Vec<f64> = Vec::new();
    let mut colocated = 0usize;
    let (mut passes, mut util_cpu, mut util_mem, mut used_sum) = (0usize, 0.0, 0.0, 0usize);
    let total_cpu: f64 = machines.iter().map(|m| m.0 as f64).sum();
    let total_mem: f64 = machines.iter().map(|m| m.1 as f64).sum();
    let mut now = 0.0f64;
    let mut last_progress = 0.0f64;

    while now <= config.until_s && (next < tasks.len() || !queue.is_empty() || !ends.is_empty()) {
        // Ends first: what finished by now frees its room.
        let now_ms = (now * 1000.0) as u64;
        while let Some(Reverse((end, id))) = ends.peek().copied() {
            if end > now_ms {
                break;
            }
            ends.pop();
            if let Some(r) = running.remove(&id) {
                let m = &mut snapshot.machines[r.machine];
                m.used = m.used.saturating_sub(&r.request);
                on_machine[r.machine] -= 1;
                if let Some(per) = snapshot.job_counts.get_mut(&r.job) {
                    let id = m.id;
                    if let Some(n) = per.get_mut(&id) {
                        *n -= 1;
                        if *n == 0 {
                            per.remove(&id);
                        }
                    }
                    if per.is_empty() {
                        snapshot.job_counts.remove(&r.job);
                    }
                }
            }
        }
        while next < tasks.len() && tasks[next].submit_s <= now {
            queue.push((next, pending_task(next, &tasks[next])));
            next += 1;
        }
        // One pass: the head of the queue in queue order, in chunks; a request
        // at least as big as one that just failed is not judged again this pass.
        queue.sort_by(|a, b| a.1.queue_cmp(&b.1));
        let mut failed: Vec<Capacity> = Vec::new();
        let mut placed_now: Vec<usize> = Vec::new();
        let head = queue.len().min(config.batch);
        for chunk in queue[..head].chunks(256) {
            let judged: Vec<PendingTask> = chunk
                .iter()
                .filter(|(_, t)| !failed.iter().any(|f| f.fits_in(&t.request)))
                .map(|(_, t)| t.clone())
                .collect();
            if judged.is_empty() {
                continue;
            }
            let by_task: HashMap<TaskId, usize> = chunk.iter().map(|(k, t)| (t.id, *k)).collect();
            for d in place(&snapshot, &judged) {
                match d {
                    Decision::Place { task, machine, .. } => {
                        let k = by_task[&task];
                        let t = &tasks[k];
                        let i = index[&machine];
                        let request = Capacity {
                            cpu: MilliCpu(t.cpu_milli),
                            memory: Bytes(t.memory),
                            disk: Bytes(0),
                        };
                        let job = JobId(uuid::Uuid::from_u128((t.job as u128) << 1 | 1));
                        let m = &mut snapshot.machines[i];
                        m.used = m.used.saturating_add(&request);
                        let per = snapshot.job_counts.entry(job).or_default();
                        let n = per.entry(m.id).or_insert(0);
                        if *n > 0 {
                            colocated += 1;
                        }
                        *n += 1;
                        on_machine[i] += 1;
                        let wait = (now - t.submit_s).max(0.0);
                        waits.push(wait);
                        if t.priority >= 200 {
                            prod_waits.push(wait);
                        }
                        if let Some(d) = t.duration_s {
                            let end = ((now + d.max(0.0)) * 1000.0) as u64;
                            ends.push(Reverse((end, k)));
                            running.insert(
                                k,
                                Running {
                                    machine: i,
                                    job,
                                    request,
                                },
                            );
                        } else {
                            // Runs past the end of the trace: holds its room for good.
                            running.insert(
                                k,
                                Running {
                                    machine: i,
                                    job,
                                    request,
                                },
                            );
                        }
                        placed_now.push(k);
                    }
                    Decision::Unplaceable { task, .. } | Decision::Preempt { task, .. } => {
                        let k = by_task[&task];
                        let t = &tasks[k];
                        failed.push(Capacity {
                            cpu: MilliCpu(t.cpu_milli),
                            memory: Bytes(t.memory),
                            disk: Bytes(0),
                        });
                    }
                }
            }
        }
        if !placed_now.is_empty() {
            placed_now.sort_unstable();
            queue.retain(|(k, _)| placed_now.binary_search(k).is_err());
        }
        report.placed += placed_now.len();

        passes += 1;
        let (cpu, mem) = snapshot.machines.iter().fold((0.0, 0.0), |(c, m), x| {
            (c + x.used.cpu.0 as f64, m + x.used.memory.0 as f64)
        });
        util_cpu += cpu / total_cpu.max(1.0);
        util_mem += mem / total_mem.max(1.0);
        let in_use = on_machine.iter().filter(|&&n| n > 0).count();
        used_sum += in_use;
        report.machines_used_peak = report.machines_used_peak.max(in_use);
        if config.progress_every_s > 0.0 && now - last_progress >= config.progress_every_s {
            last_progress = now;
            eprintln!(
                "[{:?}] t={:.0}s: {} placed, {} pending, {} running, cpu {:.0}%, machines in use {}",
                config.scoring,
                now,
                report.placed,
                queue.len(),
                running.len(),
                100.0 * cpu / total_cpu.max(1.0),
                in_use
            );
        }
        now += config.tick_s;
    }
    report.pending_at_end = queue.len() + tasks.len() - next;
    let pct = |v: &mut Vec<f64>, p: f64| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * p).round() as usize]
    };
    report.pending_p50 = pct(&mut waits, 0.50);
    report.pending_p90 = pct(&mut waits, 0.90);
    report.pending_p99 = pct(&mut waits, 0.99);
    report.prod_pending_p99 = pct(&mut prod_waits, 0.99);
    let passes = passes.max(1) as f64;
    report.cpu_util = util_cpu / passes;
    report.mem_util = util_mem / passes;
    report.machines_used_avg = used_sum as f64 / passes;
    report.same_job_colocated = colocated as f64 / report.placed.max(1) as f64;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(submit_s: f64, job: u64, cpu_milli: u64, duration_s: f64) -> TraceTask {
        TraceTask {
            submit_s,
            job,
            index: 0,
            priority: 100,
            cpu_milli,
            memory: 1 << 20,
            duration_s: Some(duration_s),
        }
    }

    fn config(scoring: Scoring) -> SimConfig {
        SimConfig {
            scoring,
            tick_s: 1.0,
            batch: 1000,
            until_s: 1000.0,
            progress_every_s: 0.0,
        }
    }

    #[test]
    fn a_task_waits_for_room_and_runs_when_it_frees() {
        // One 1-core machine: the second task waits until the first ends at 10 s.
        let tasks = [task(0.0, 1, 1000, 10.0), task(0.0, 2, 1000, 5.0)];
        let r = simulate(&[(1000, 1 << 30)], &tasks, &config(Scoring::Hybrid));
        assert_eq!(r.placed, 2);
        assert_eq!(r.pending_at_end, 0);
        assert_eq!(r.pending_p99, 10.0);
    }

    #[test]
    fn best_fit_packs_onto_fewer_machines_than_worst_fit() {
        let tasks: Vec<TraceTask> = (0..8).map(|j| task(0.0, j, 250, 100.0)).collect();
        let machines = [(1000, 1 << 30); 8];
        let packed = simulate(&machines, &tasks, &config(Scoring::BestFit));
        let spread = simulate(&machines, &tasks, &config(Scoring::WorstFit));
        assert_eq!(packed.machines_used_peak, 2);
        assert_eq!(spread.machines_used_peak, 8);
    }
}
