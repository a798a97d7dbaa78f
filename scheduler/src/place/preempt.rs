//! Preemption, for a production task that fits nowhere: pick the machine and
//! the lower-band attempts whose stopping makes room while evicting least
//! (lowest priorities first, then fewest tasks). Never within the task's band
//! or above it.
//!
//! Victims keep their capacity until they have stopped, so the room they free
//! is not `free` yet: it sits in a per-machine pool of capacity being released.
//! A task that chose a machine reserves from that pool first (then from what is
//! free), so neither a later task of the batch nor the next pass counts on the
//! same room twice, and a task waiting for its victims does not preempt again.

use crate::snapshot::{Machine, PendingTask, Victim};
use borg_shared::quota::Band;
use borg_shared::wire::Capacity;
use borg_shared::{AttemptId, MachineId};
use std::collections::{HashMap, HashSet};

pub enum Outcome {
    /// Room on this machine is already being released: wait for it.
    Wait { machine: usize },
    /// Stop these attempts on this machine.
    Preempt {
        machine: usize,
        victims: Vec<AttemptId>,
        names: Vec<String>,
    },
}

pub struct Preemptor<'a> {
    /// Lower-band attempts per machine index, cheapest to evict first.
    victims: HashMap<usize, Vec<&'a Victim>>,
    /// Capacity being released per machine index, not yet reserved.
    pool: HashMap<usize, Capacity>,
    taken: HashSet<AttemptId>,
}

impl<'a> Preemptor<'a> {
    pub fn new(
        machines: &[Machine],
        victims: &'a HashMap<MachineId, Vec<Victim>>,
        stopping: &HashMap<MachineId, Capacity>,
    ) -> Self {
        let index: HashMap<MachineId, usize> = machines
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id, i))
            .collect();
        let mut by_index: HashMap<usize, Vec<&Victim>> = HashMap::new();
        for (machine, list) in victims {
            if let Some(&i) = index.get(machine) {
                let mut list: Vec<&Victim> = list.iter().collect();
                // Lowest priority first; within it the biggest, so fewer go.
                list.sort_by(|a, b| {
                    a.priority
                        .cmp(&b.priority)
                        .then_with(|| size(&b.request).total_cmp(&size(&a.request)))
                        .then_with(|| a.attempt.cmp(&b.attempt))
                });
                by_index.insert(i, list);
            }
        }
        let pool = stopping
            .iter()
            .filter_map(|(m, c)| Some((*index.get(m)?, *c)))
            .collect();
        Preemptor {
            victims: by_index,
            pool,
            taken: HashSet::new(),
        }
    }

    /// For an unplaceable `task`: wait for room being released, or preempt.
    /// `usable(i)`: machine `i` passes every check but capacity. On success the
    /// task's request is reserved (from the pool, then from `free`).
    pub fn plan(
        &mut self,
        task: &PendingTask,
        machines: &[Machine],
        free: &mut [Capacity],
        candidates: &[usize],
        mut usable: impl FnMut(usize) -> bool,
    ) -> Option<Outcome> {
        if Band::of(i64::from(task.priority)) != Band::Production {
            return None;
        }
        let usable: Vec<usize> = candidates.iter().copied().filter(|&i| usable(i)).collect();
        let pool = |p: &HashMap<usize, Capacity>, i: usize| p.get(&i).copied().unwrap_or_default();
        if let Some(&i) = usable.iter().find(|&&i| {
            task.request
                .fits_in(&pool(&self.pool, i).saturating_add(&free[i]))
        }) {
            self.reserve(i, &task.request, free);
            return Some(Outcome::Wait { machine: i });
        }
        // The cheapest machine to make room on: (highest victim priority, victims, name).
        let mut best: Option<(i32, usize, usize, Vec<&Victim>)> = None;
        for &i in &usable {
            let mut room = pool(&self.pool, i).saturating_add(&free[i]);
            let mut chosen: Vec<&Victim> = Vec::new();
            for v in self.victims.get(&i).map(Vec::as_slice).unwrap_or(&[]) {
                if task.request.fits_in(&room) {
                    break;
                }
                // Only lower bands: never the production band, whatever the priority.
                if self.taken.contains(&v.attempt)
                    || Band::of(i64::from(v.priority)) == Band::Production
                {
                    continue;
                }
                room = room.saturating_add(&v.request);
                chosen.push(v);
            }
            if chosen.is_empty() || !task.request.fits_in(&room) {
                continue;
            }
            let worst = chosen.iter().map(|v| v.priority).max().unwrap_or(0);
            let better = match &best {
                None => true,
                Some((w, n, j, _)) => {
                    (worst, chosen.len(), &machines[i].name) < (*w, *n, &machines[*j].name)
                }
            };
            if better {
                best = Some((worst, chosen.len(), i, chosen));
            }
        }
        let (_, _, i, chosen) = best?;
        let freed = chosen
            .iter()
            .fold(Capacity::default(), |acc, v| acc.saturating_add(&v.request));
        let entry = self.pool.entry(i).or_default();
        *entry = entry.saturating_add(&freed);
        self.taken.extend(chosen.iter().map(|v| v.attempt));
        self.reserve(i, &task.request, free);
        Some(Outcome::Preempt {
            machine: i,
            victims: chosen.iter().map(|v| v.attempt).collect(),
            names: chosen.iter().map(|v| v.name.clone()).collect(),
        })
    }

    /// Take `request` on machine `i`: from the pool being released first, the
    /// rest from what is free now.
    fn reserve(&mut self, i: usize, request: &Capacity, free: &mut [Capacity]) {
        let pool = self.pool.entry(i).or_default();
        let from_pool = Capacity {
            cpu: request.cpu.min(pool.cpu),
            memory: request.memory.min(pool.memory),
            disk: request.disk.min(pool.disk),
        };
        *pool = pool.saturating_sub(&from_pool);
        free[i] = free[i].saturating_sub(&request.saturating_sub(&from_pool));
    }
}

/// A rough size to prefer evicting one big task over several small ones.
fn size(c: &Capacity) -> f64 {
    c.cpu.0 as f64 / 1000.0 + c.memory.0 as f64 / (1u64 << 30) as f64
}
