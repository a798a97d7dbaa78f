//! The placement core alone, without Postgres: the synthetic workload of
//! `borg-schedbench` (10,000 machines as `borg_store::fixtures::seed_machines`
//! writes them, 100,000 pending tasks of `borgscheduler::synth::jobs`), placed in pages of
//! the scheduler's default batch size with each page charged to the snapshot
//! before the next, as a pass does. Prints the time per task (median of the
//! rounds) and a digest of where the tasks went.
//!
//! ```sh
//! cargo bench -p borgscheduler --bench place [-- --machines N --tasks M --rounds R --of S]
//! ```
//!
//! `--of S` places what one of `S` schedulers sharing the cell places: about
//! one job in `S` (the job's index, mixed, modulo `S`), with that scheduler's
//! home machines first (see `Slice`). Per task, it should cost what one
//! scheduler's whole queue does.
//!
//! For counts that do not move with the machine's load:
//! `valgrind --tool=callgrind target/release/deps/place-<hash> --rounds 1`.

use borg_shared::spec::Constraint;
use borg_shared::wire::{Capacity, PortRange};
use borg_shared::{Bytes, JobId, MachineId, MilliCpu, TaskId};
use borgscheduler::{place, synth, Decision, Machine, PendingTask, Slice, Snapshot};
use chrono::{TimeZone, Utc};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

const GI: u64 = 1 << 30;
const ZONES: [&str; 5] = ["a", "b", "c", "d", "e"];
/// The scheduler's default batch size.
const PAGE: usize = 4000;

/// `--name N` from the command line, else `default`; a value that is not a
/// count ends the bench with a message.
fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name).map(|i| args.get(i + 1)) {
        None => default,
        Some(v) => v.and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            eprintln!("place bench: {name} takes a count, e.g. {name} {default}");
            std::process::exit(2)
        }),
    }
}

fn machines(n: usize) -> Vec<Machine> {
    (0..n)
        .map(|i| {
            let mut labels = BTreeMap::from([("zone".to_string(), ZONES[i % 5].to_string())]);
            if i % 4 == 0 {
                labels.insert("ssd".to_string(), "true".to_string());
            }
            let big = i % 3 == 0;
            Machine {
                id: MachineId(uuid::Uuid::from_u128(0x1000_0000 + i as u128)),
                name: format!("m-{i:05}"),
                labels,
                capacity: Capacity {
                    cpu: MilliCpu(if big { 32_000 } else { 16_000 }),
                    memory: Bytes(if big { 128 } else { 64 } * GI),
                    disk: Bytes(1 << 40),
                },
                used: Capacity::default(),
                ports: PortRange::default(),
                used_ports: vec![],
            }
        })
        .collect()
}

/// The pending tasks of `borgscheduler::synth::jobs`, in queue order: those
/// of the jobs whose mixed index is 0 modulo `of` (all of them for 1).
fn tasks(n: usize, of: usize) -> Vec<PendingTask> {
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let mut out = Vec::with_capacity(n);
    for (j, spec) in synth::jobs(n as i64).into_iter().enumerate() {
        let constraints: Arc<[Constraint]> = spec.constraints.into();
        let spread = spec.spread.map(Arc::new);
        let job = JobId(uuid::Uuid::from_u128(0x2000_0000 + j as u128));
        let r = &spec.task.resources;
        // Jobs' sizes come in a cycle of 12: mix the index so a slice gets about its share.
        if (j ^ (j >> 1)) % of.max(1) != 0 {
            continue;
        }
        for index in 0..spec.replicas {
            out.push(PendingTask {
                id: TaskId(uuid::Uuid::from_u128(0x3000_0000 + out.len() as u128)),
                job_id: job,
                priority: spec.priority as i32,
                created_at: t0 + chrono::Duration::milliseconds(out.len() as i64),
                request: Capacity {
                    cpu: r.cpu,
                    memory: r.memory,
                    disk: r.disk,
                },
                constraints: constraints.clone(),
                spread: spread.clone(),
                ports: 0,
                owner: Arc::from("default"),
                name: format!("{}/{index}", spec.name),
                failed_on: None,
                service: false,
            });
        }
    }
    out.sort_by(|a, b| a.queue_cmp(b));
    out
}

/// One pass: every page placed against the snapshot charged with the pages
/// before it. Returns the tasks placed and a digest of where each went (a
/// change meant only to be faster must leave it alone).
fn pass(template: &Snapshot, pending: &[PendingTask]) -> (usize, u64) {
    let mut snapshot = template.clone();
    let index: HashMap<MachineId, usize> = snapshot.machine_index();
    let requests: HashMap<TaskId, &PendingTask> = pending.iter().map(|t| (t.id, t)).collect();
    let mut placed = 0;
    let mut digest = 0u64;
    for page in pending.chunks(PAGE) {
        for d in place(&snapshot, page) {
            if let Decision::Place { task, machine, .. } = d {
                let pair = task.0.as_u128() ^ machine.0.as_u128().rotate_left(64);
                digest = (digest ^ (pair as u64) ^ ((pair >> 64) as u64))
                    .rotate_left(5)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let t = requests[&task];
                let m = &mut snapshot.machines[index[&machine]];
                m.used = m.used.saturating_add(&t.request);
                *snapshot
                    .job_counts
                    .entry(t.job_id)
                    .or_default()
                    .entry(machine)
                    .or_default() += 1;
                placed += 1;
            }
        }
    }
    (placed, digest)
}

fn main() {
    let (n_machines, n_tasks, rounds, of) = (
        arg("--machines", 10_000),
        arg("--tasks", 100_000),
        arg("--rounds", 5),
        arg("--of", 1).max(1),
    );
    let snapshot = Snapshot {
        machines: machines(n_machines),
        sample: 128,
        home: Slice {
            rank: 0,
            of: of as i32,
        },
        ..Snapshot::default()
    };
    let pending = tasks(n_tasks, of);
    let n_tasks = pending.len();
    let mut per_task = Vec::new();
    let (mut placed, mut digest) = (0, 0);
    for _ in 0..rounds.max(1) {
        let began = Instant::now();
        (placed, digest) = pass(&snapshot, &pending);
        per_task.push(began.elapsed().as_secs_f64() * 1e6 / n_tasks as f64);
    }
    per_task.sort_by(f64::total_cmp);
    println!(
        "place: {n_tasks} tasks (1/{of} of the queue) on {n_machines} machines in pages of {PAGE}: {placed} placed \
         (digest {digest:016x}), median {:.2} µs per task (rounds {:?})",
        per_task[per_task.len() / 2],
        per_task
            .iter()
            .map(|v| format!("{v:.2}"))
            .collect::<Vec<_>>()
    );
}
