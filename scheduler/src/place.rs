//! The placement core. Pure: the same snapshot and tasks always give the same
//! decisions, with no I/O, clock or randomness, so its invariants can be
//! property-tested and a batch can be replayed from a log.

mod class;
mod feasible;
mod load;
mod ports;
mod preempt;
mod quota;
mod reason;

use crate::score::tie_break;
use crate::snapshot::{fits, sub, Machine, PendingTask, Snapshot};
use borg_shared::wire::Capacity;
use borg_shared::{MachineId, TaskId};
use class::Classes;
use load::JobLoads;
use ports::PortsTaken;
use preempt::{Outcome, Preemptor};
use quota::QuotaLedger;
use std::cmp::Ordering;
use std::collections::HashSet;

/// What to do with one pending task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Place {
        task: TaskId,
        machine: MachineId,
        /// Host ports picked from the machine's range, as many as the task asks for.
        ports: Vec<u16>,
    },
    /// Stays pending while these lower-band attempts on `machine` are stopped
    /// to make room for it; `reason` says so.
    Preempt {
        task: TaskId,
        machine: MachineId,
        victims: Vec<borg_shared::AttemptId>,
        reason: String,
    },
    /// Stays pending; `reason` is shown to the user as why, `cause` names
    /// the check that ruled out most machines (a metrics label).
    Unplaceable {
        task: TaskId,
        reason: String,
        cause: &'static str,
    },
}

impl Decision {
    pub fn task(&self) -> TaskId {
        match self {
            Decision::Place { task, .. }
            | Decision::Preempt { task, .. }
            | Decision::Unplaceable { task, .. } => *task,
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
    // What scoring reads of every machine a task walks, side by side rather
    // than spread over the machines' records (names, labels, ports).
    let capacity: Vec<Capacity> = machines.iter().map(|m| m.capacity).collect();
    let unused: Vec<bool> = machines
        .iter()
        .map(|m| m.used == Capacity::default())
        .collect();
    let ids: Vec<uuid::Uuid> = machines.iter().map(|m| m.id.0).collect();
    let mut classes = Classes::default();
    let mut loads = JobLoads::new(snapshot);
    let mut ports = PortsTaken::default();
    let mut quotas = QuotaLedger::new(snapshot);
    let spread_jobs = snapshot.scoring.spreads_jobs();
    let sample = if snapshot.sample == 0 {
        usize::MAX
    } else {
        snapshot.sample
    };
    // Which machines are this scheduler's home (see `Slice::is_home`); all
    // of them when it is alone.
    let home: Option<Vec<bool>> = (snapshot.home.of > 1).then(|| {
        machines
            .iter()
            .map(|m| snapshot.home.is_home(m.id))
            .collect()
    });
    let mut preemptor = Preemptor::new(machines, &snapshot.victims, &snapshot.stopping);
    let mut seen = HashSet::with_capacity(queue.len());
    // The machines a task may go to, filled anew for each task.
    let mut feasible: Vec<usize> = Vec::with_capacity(sample.min(machines.len()));
    let mut decisions = Vec::with_capacity(queue.len());

    for task in queue {
        if !seen.insert(task.id) {
            continue;
        }
        if let Some(reason) = quotas.check(task) {
            decisions.push(Decision::Unplaceable {
                task: task.id,
                reason,
                cause: "quota",
            });
            continue;
        }
        loads.prepare(task, snapshot, spread_jobs);
        let class = classes.get(task, machines, home.as_deref());
        if let Some((reason, cause)) = &class.stuck {
            decisions.push(Decision::Unplaceable {
                task: task.id,
                reason: reason.clone(),
                cause,
            });
            continue;
        }
        // Relaxed randomization: from a place of its own in the class's open
        // machines, the first `sample` feasible ones are scored. A task that
        // spreads over a label samples the group(s) holding the fewest of its
        // job's tasks first, then the next fewest, until one has room: the
        // group comes before the score.
        let start = tie_break(task.id.0, uuid::Uuid::nil()) as usize;
        let load = loads.of(task);
        let on_machine = |i: usize| load.map_or(0, |l| l.on(i));
        let group_of = |i: usize| load.map_or(0, |l| l.in_spread_group(i));
        let capped = task.max_per_machine().is_some();
        let mut fits_here = |i: usize| {
            fits(&task.request, &free[i])
                && (!capped || feasible::per_machine(task, on_machine(i)).is_none())
                && (task.ports == 0 || feasible::ports(task, ports.free(machines, i)).is_none())
        };
        // Within a group (or all of them), this scheduler's home machines first.
        let spread_levels: Vec<Option<u32>>;
        let levels: &[Option<u32>] = match load.filter(|_| task.spread_label().is_some()) {
            None => &[None],
            Some(l) => {
                spread_levels = l.spread_levels().into_iter().map(Some).collect();
                &spread_levels
            }
        };
        'levels: for &level in levels {
            for part in 0..class.open.len() {
                let wanted = |i: usize| level.is_none_or(|l| group_of(i) == l);
                class.sample(part, start, sample, wanted, &mut fits_here, &mut feasible);
                if !feasible.is_empty() {
                    break 'levels;
                }
            }
            if class.is_closed() {
                break;
            }
        }
        // Among them: any but the machine the task's last run failed on (a
        // crash loop there is moved, as Nomad's rescheduling avoids the node),
        // then (hybrid scoring) a machine in use before an empty one and the
        // fewest of the job's tasks on it (a service's task: the fewest of
        // its job's tasks first, then in use before empty, so its replicas
        // spread over machines before they pack, as Nomad's job
        // anti-affinity and Kubernetes' default spreading do), then the best
        // score, then the tie-break (hashed only between candidates equal on
        // the rest; of candidates equal on all, the last one walked).
        let failed_on = task.failed_on;
        let mut best: Option<Best> = None;
        for &i in &feasible {
            let failed_here = u8::from(failed_on == Some(machines[i].id));
            let (empty, on) = if spread_jobs {
                let empty = free[i] == capacity[i] || unused[i];
                (u32::from(empty), on_machine(i))
            } else {
                (0, 0)
            };
            let (first, second) = if task.service {
                (on, empty)
            } else {
                (empty, on)
            };
            let rank = (group_of(i), failed_here, first, second);
            let score = snapshot
                .scoring
                .score(&capacity[i], &sub(&free[i], &task.request));
            let better = match &mut best {
                None => true,
                Some(b) => match b.rank.cmp(&rank).then_with(|| score.total_cmp(&b.score)) {
                    Ordering::Greater => true,
                    Ordering::Less => false,
                    Ordering::Equal => {
                        let b_tie = *b
                            .tie
                            .get_or_insert_with(|| tie_break(task.id.0, ids[b.machine]));
                        tie_break(task.id.0, ids[i]) >= b_tie
                    }
                },
            };
            if better {
                best = Some(Best {
                    machine: i,
                    rank,
                    score,
                    tie: None,
                });
            }
        }
        match best.map(|b| b.machine) {
            Some(i) => {
                free[i] = sub(&free[i], &task.request);
                loads.add(task, i);
                quotas.charge(task);
                decisions.push(Decision::Place {
                    task: task.id,
                    machine: machines[i].id,
                    ports: ports.take(machines, i, task.ports),
                });
            }
            None => {
                let planned = preemptor.plan(task, machines, &mut free, &class.matching, |i| {
                    feasible::per_machine(task, loads.on_machine(task, i)).is_none()
                        && (task.ports == 0
                            || feasible::ports(task, ports.free(machines, i)).is_none())
                });
                match planned {
                    Some(Outcome::Wait { machine }) => {
                        decisions.push(Decision::Unplaceable {
                            task: task.id,
                            reason: format!(
                                "waiting for preempted tasks to stop on {}",
                                machines[machine].name
                            ),
                            cause: "preempting",
                        });
                        continue;
                    }
                    Some(Outcome::Preempt {
                        machine,
                        victims,
                        names,
                    }) => {
                        decisions.push(Decision::Preempt {
                            task: task.id,
                            machine: machines[machine].id,
                            reason: format!(
                                "preempting {} on {}: {}",
                                plural(victims.len(), "task"),
                                machines[machine].name,
                                names.join(", ")
                            ),
                            victims,
                        });
                        continue;
                    }
                    None => {}
                }
                let (reason, cause) = reason::why_unplaceable(
                    task,
                    machines,
                    &free,
                    |i| loads.on_machine(task, i),
                    |i| ports.free(machines, i),
                );
                class.stuck = Some((reason.clone(), cause));
                decisions.push(Decision::Unplaceable {
                    task: task.id,
                    reason,
                    cause,
                })
            }
        }
    }
    decisions
}

/// The best candidate so far of a task's scoring: its machine, its rank
/// (spread group, failed on, empty, the job's tasks on it; lower is better), its score
/// (higher is better) and, once a rival equal on both needed it, its tie-break.
struct Best {
    machine: usize,
    rank: (u32, u8, u32, u32),
    score: f64,
    tie: Option<u64>,
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests;
