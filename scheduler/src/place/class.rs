//! Equivalence classes: tasks of one job asking for the same request, ports
//! and priority are judged as one. A class keeps the machines its constraints
//! allow and, of those, the ones still open to it: within one `place` call
//! room only shrinks (free capacity, free ports) and job loads only grow, so a
//! machine that could not take one task of the class cannot take the next and
//! is dropped for the rest of the call. Once no machine is left and nothing can
//! be preempted, the class's reason stands for the rest of its tasks.
//!
//! The open machines are kept in two lists, this scheduler's home machines
//! (see `Slice::is_home`) and the others, so a task looking at home first
//! walks only home machines: once a class has filled its home machines, a
//! walk of one list that skipped the others cost every later task of the class
//! a step over each open machine (a scheduler of two spent as much placing
//! half the queue as one did placing all of it).

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
    /// Of `matching`, those not yet found unable to take a task of the class:
    /// `open[0]` this scheduler's home machines, `open[1]` the others.
    pub open: [Vec<usize>; 2],
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
    /// The class of `task`; `home[i]` says whether machine `i` is home
    /// (`None`: all are).
    pub fn get<'a>(
        &'a mut self,
        task: &PendingTask,
        machines: &[Machine],
        home: Option<&[bool]>,
    ) -> &'a mut Class {
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
            let (home, away) = match home {
                Some(home) => list.iter().partition(|&&i| home[i]),
                None => (list.to_vec(), Vec::new()),
            };
            Class {
                constraints: task.constraints.clone(),
                open: [home, away],
                matching: list,
                stuck: None,
            }
        })
    }
}

impl Class {
    /// No machine left open to the class.
    pub fn is_closed(&self) -> bool {
        self.open.iter().all(Vec::is_empty)
    }

    /// Walk the open machines of `part` (0: home, 1: away) from `start`
    /// (modulo their count, wrapping round) and put into `found` (emptied
    /// first) up to `sample` of those `wanted` that `fits` accepts; those it
    /// turns down are dropped from the list (machines not `wanted` are
    /// skipped, not judged).
    pub fn sample(
        &mut self,
        part: usize,
        start: usize,
        sample: usize,
        wanted: impl Fn(usize) -> bool,
        mut fits: impl FnMut(usize) -> bool,
        found: &mut Vec<usize>,
    ) {
        found.clear();
        let open = &mut self.open[part];
        let n = open.len();
        if n == 0 {
            return;
        }
        let mut pos = start % n;
        let mut dead = Vec::new();
        for _ in 0..n {
            if found.len() >= sample {
                break;
            }
            let i = open[pos];
            if wanted(i) {
                if fits(i) {
                    found.push(i);
                } else {
                    dead.push(pos);
                }
            }
            pos += 1;
            if pos == n {
                pos = 0;
            }
        }
        // Highest position first: each swap_remove then moves an element that stays.
        dead.sort_unstable_by(|a, b| b.cmp(a));
        for pos in dead {
            open.swap_remove(pos);
        }
    }
}
