//! Equivalence classes: tasks of one job asking for the same request, ports
//! and priority are judged as one. A class keeps the machines its constraints
//! allow and, of those, the ones still open to it: within one `place` call
//! room only shrinks (free capacity, free ports) and job loads only grow, so a
//! machine that could not take one task of the class cannot take the next and
//! is dropped for the rest of the call. Once no machine is left and nothing can
//! be preempted, the class's reason stands for the rest of its tasks.

use super::feasible;
use crate::snapshot::{Machine, PendingTask};
use borg_shared::spec::Constraint;
use borg_shared::JobId;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    job: JobId,
    request: (u64, u64, u64),
    ports: u16,
    priority: i32,
}

pub struct Class {
    constraints: Arc<[Constraint]>,
    /// Machines whose labels the class's constraints accept (shared by the
    /// classes asking the same constraints).
    pub matching: Arc<[usize]>,
    /// Of `matching`, those not yet found unable to take a task of the class.
    pub open: Vec<usize>,
    /// Why the class waits, once none of its tasks can be placed.
    pub stuck: Option<(String, &'static str)>,
}

#[derive(Default)]
pub struct Classes {
    by_key: HashMap<Key, Class>,
    /// The machines each set of constraints accepts: jobs asking the same
    /// (most jobs ask for one of a few) are matched against the labels once.
    matching: HashMap<Arc<[Constraint]>, Arc<[usize]>>,
}

impl Classes {
    pub fn get<'a>(&'a mut self, task: &PendingTask, machines: &[Machine]) -> &'a mut Class {
        let key = Key {
            job: task.job_id,
            request: (
                task.request.cpu.0,
                task.request.memory.0,
                task.request.disk.0,
            ),
            ports: task.ports,
            priority: task.priority,
        };
        let same =
            |c: &Arc<[Constraint]>| Arc::ptr_eq(c, &task.constraints) || **c == *task.constraints;
        let stale = self.by_key.get(&key).is_some_and(|c| !same(&c.constraints));
        if stale {
            // Tasks of one job share its constraints; a caller mixing them gets a
            // class of its own for each change rather than a wrong machine list.
            self.by_key.remove(&key);
        }
        let matching = &mut self.matching;
        self.by_key.entry(key).or_insert_with(|| {
            let list = matching
                .entry(task.constraints.clone())
                .or_insert_with(|| {
                    (0..machines.len())
                        .filter(|&i| {
                            feasible::constraints(&task.constraints, &machines[i]).is_none()
                        })
                        .collect()
                })
                .clone();
            Class {
                constraints: task.constraints.clone(),
                open: list.to_vec(),
                matching: list,
                stuck: None,
            }
        })
    }
}

impl Class {
    /// Walk the open machines from `start` (wrapping round) and put into
    /// `found` (emptied first) up to `sample` of those `wanted` that `fits`
    /// accepts; those it turns down are dropped from `open` (machines not
    /// `wanted` are skipped, not judged).
    pub fn sample(
        &mut self,
        start: usize,
        sample: usize,
        wanted: impl Fn(usize) -> bool,
        mut fits: impl FnMut(usize) -> bool,
        found: &mut Vec<usize>,
    ) {
        found.clear();
        let n = self.open.len();
        let mut dead = Vec::new();
        for step in 0..n {
            if found.len() >= sample {
                break;
            }
            let pos = (start + step) % n;
            let i = self.open[pos];
            if !wanted(i) {
                continue;
            }
            if fits(i) {
                found.push(i);
            } else {
                dead.push(pos);
            }
        }
        // Highest position first: each swap_remove then moves an element that stays.
        dead.sort_unstable_by(|a, b| b.cmp(a));
        for pos in dead {
            self.open.swap_remove(pos);
        }
    }
}
