//! The placement core. Pure: the same snapshot and tasks always give the same
//! decisions, with no I/O, clock or randomness, so its invariants can be
//! property-tested and a batch can be replayed from a log.

use crate::score::score;
use crate::snapshot::{fits, sub, Machine, PendingTask, Snapshot};
use borg_shared::spec::Constraint;
use borg_shared::wire::Capacity;
use borg_shared::{Bytes, JobId, MachineId, MilliCpu, TaskId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// What to do with one pending task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Place {
        task: TaskId,
        machine: MachineId,
    },
    /// Stays pending; `reason` is shown to the user as why.
    Unplaceable {
        task: TaskId,
        reason: String,
    },
}

impl Decision {
    pub fn task(&self) -> TaskId {
        match self {
            Decision::Place { task, .. } | Decision::Unplaceable { task, .. } => *task,
        }
    }
}

/// Decide where each pending task goes, in queue order (higher priority first,
/// then older), whatever order `pending` comes in. Each placement is charged to
/// the machine before the next task is considered, so a batch never over-commits.
/// A task id given twice is decided once.
pub fn place(snapshot: &Snapshot, pending: &[PendingTask]) -> Vec<Decision> {
    let machines = &snapshot.machines;
    let mut queue: Vec<&PendingTask> = pending.iter().collect();
    queue.sort_by(|a, b| a.queue_cmp(b));

    let mut free: Vec<Capacity> = machines.iter().map(Machine::free).collect();
    let mut matching = MatchCache::default();
    let mut seen = HashSet::with_capacity(queue.len());
    let mut decisions = Vec::with_capacity(queue.len());

    for task in queue {
        if !seen.insert(task.id) {
            continue;
        }
        let candidates = matching.get(task, machines);
        let best = candidates
            .iter()
            .copied()
            .filter(|&i| fits(&task.request, &free[i]))
            .map(|i| {
                (
                    i,
                    score(&machines[i].capacity, &sub(&free[i], &task.request)),
                )
            })
            // Highest score; on a tie the smaller name wins (so compare names reversed).
            .max_by(|(a, sa), (b, sb)| {
                sa.total_cmp(sb)
                    .then_with(|| machines[*b].name.cmp(&machines[*a].name))
                    .then_with(|| machines[*b].id.cmp(&machines[*a].id))
            });
        match best {
            Some((i, _)) => {
                free[i] = sub(&free[i], &task.request);
                decisions.push(Decision::Place {
                    task: task.id,
                    machine: machines[i].id,
                });
            }
            None => decisions.push(Decision::Unplaceable {
                task: task.id,
                reason: why_unplaceable(task, machines, &free, candidates),
            }),
        }
    }
    decisions
}

/// Which machines satisfy a job's constraints, computed once per job: a batch is
/// often thousands of tasks of a few jobs, and matching is per label lookup.
#[derive(Default)]
struct MatchCache {
    by_job: HashMap<JobId, (Arc<[Constraint]>, Vec<usize>)>,
    scratch: Vec<usize>,
}

impl MatchCache {
    fn get<'a>(&'a mut self, task: &PendingTask, machines: &[Machine]) -> &'a [usize] {
        let compute = || -> Vec<usize> {
            (0..machines.len())
                .filter(|&i| {
                    task.constraints
                        .iter()
                        .all(|c| c.matches(&machines[i].labels))
                })
                .collect()
        };
        // Tasks of one job share its constraints; if a caller mixes them anyway,
        // fall back to computing rather than trusting the cache.
        let cached = self
            .by_job
            .get(&task.job_id)
            .is_some_and(|(c, _)| Arc::ptr_eq(c, &task.constraints) || **c == *task.constraints);
        if cached {
            return &self.by_job[&task.job_id].1;
        }
        if self.by_job.contains_key(&task.job_id) {
            self.scratch = compute();
            return &self.scratch;
        }
        let list = compute();
        &self
            .by_job
            .entry(task.job_id)
            .or_insert((task.constraints.clone(), list))
            .1
    }
}

#[derive(Clone, Copy)]
enum Dim {
    Cpu,
    Memory,
    Disk,
}

impl Dim {
    const ALL: [Dim; 3] = [Dim::Cpu, Dim::Memory, Dim::Disk];

    fn of(self, c: &Capacity) -> u64 {
        match self {
            Dim::Cpu => c.cpu.0,
            Dim::Memory => c.memory.0,
            Dim::Disk => c.disk.0,
        }
    }

    fn show(self, v: u64) -> String {
        match self {
            Dim::Cpu => MilliCpu(v).to_string(),
            Dim::Memory | Dim::Disk => Bytes(v).to_string(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Dim::Cpu => "cpu",
            Dim::Memory => "memory",
            Dim::Disk => "disk",
        }
    }
}

/// A sentence for the user: the first thing that rules out every machine.
fn why_unplaceable(
    task: &PendingTask,
    machines: &[Machine],
    free: &[Capacity],
    candidates: &[usize],
) -> String {
    if machines.is_empty() {
        return "no machines are up".to_string();
    }
    let all_constraints = || join_and(task.constraints.iter().map(ToString::to_string));
    if candidates.is_empty() {
        // Name the constraints that alone exclude every machine; if none does,
        // it is their combination.
        let alone: Vec<String> = task
            .constraints
            .iter()
            .filter(|c| !machines.iter().any(|m| c.matches(&m.labels)))
            .map(ToString::to_string)
            .collect();
        let named = if alone.is_empty() {
            all_constraints()
        } else {
            join_and(alone)
        };
        return format!("no up machine matches {named}");
    }
    let among = if candidates.len() < machines.len() {
        format!(" matching {}", all_constraints())
    } else {
        String::new()
    };
    for dim in Dim::ALL {
        let need = dim.of(&task.request);
        if candidates.iter().all(|&i| dim.of(&free[i]) < need) {
            let (most, name) = candidates
                .iter()
                .map(|&i| (dim.of(&free[i]), &machines[i].name))
                .max_by(|(a, na), (b, nb)| a.cmp(b).then_with(|| nb.cmp(na)))
                .unwrap_or((0, &machines[candidates[0]].name));
            return format!(
                "no machine{among} has {} free {} (most free: {} on {})",
                dim.show(need),
                dim.name(),
                dim.show(most),
                name
            );
        }
    }
    // Each dimension fits somewhere, never all of them on one machine.
    let wanted = Dim::ALL
        .iter()
        .filter(|d| d.of(&task.request) > 0)
        .map(|d| format!("{} {}", d.show(d.of(&task.request)), d.name()));
    format!("no machine{among} has {} free at once", join_and(wanted))
}

/// `a`, `a and b`, `a, b and c`.
fn join_and(items: impl IntoIterator<Item = String>) -> String {
    let items: Vec<String> = items.into_iter().collect();
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests;
