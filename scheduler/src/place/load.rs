//! How many of a job's live tasks each machine holds, and each value of the
//! job's spread label: what `max_per_machine`, `spread` and hybrid scoring
//! decide on. Seeded from the snapshot and charged with each placement of the
//! batch.

use crate::snapshot::{Machine, PendingTask, Snapshot};
use borg_shared::{JobId, MachineId};
use rustc_hash::FxHashMap;
use std::collections::HashMap;

/// Looked up for every machine a task walks: a fast (non-DoS-resistant)
/// hash is enough for ids and indexes the scheduler made itself.
#[derive(Default)]
pub struct JobLoads {
    by_job: FxHashMap<JobId, JobLoad>,
    machine_index: FxHashMap<MachineId, usize>,
}

pub struct JobLoad {
    on_machine: FxHashMap<usize, u32>,
    /// With a spread label: each machine's value (as an index into `per_value`).
    spread: Option<(Vec<usize>, Vec<u32>)>,
}

impl JobLoads {
    pub fn new(snapshot: &Snapshot) -> Self {
        JobLoads {
            by_job: FxHashMap::default(),
            machine_index: snapshot.machine_index(),
        }
    }

    /// The job's tasks on machine `i` (0 for jobs that limit nothing).
    pub fn on_machine(&self, task: &PendingTask, i: usize) -> u32 {
        self.by_job
            .get(&task.job_id)
            .and_then(|l| l.on_machine.get(&i).copied())
            .unwrap_or(0)
    }

    /// The job's load, looked up once for a walk over many machines.
    pub fn of(&self, task: &PendingTask) -> Option<&JobLoad> {
        self.by_job.get(&task.job_id)
    }

    /// Make sure the job's load is known before its first task is judged
    /// (for every job when `all`: hybrid scoring spreads each job).
    pub fn prepare(&mut self, task: &PendingTask, snapshot: &Snapshot, all: bool) {
        if (task.spread.is_none() && !all) || self.by_job.contains_key(&task.job_id) {
            return;
        }
        let mut on_machine = FxHashMap::default();
        if let Some(counts) = snapshot.job_counts.get(&task.job_id) {
            for (machine, n) in counts {
                if let Some(&i) = self.machine_index.get(machine) {
                    on_machine.insert(i, *n);
                }
            }
        }
        let spread = task
            .spread_label()
            .map(|label| groups(&snapshot.machines, label, &on_machine));
        self.by_job
            .insert(task.job_id, JobLoad { on_machine, spread });
    }

    /// Charge a placement of `task` on machine `i`.
    pub fn add(&mut self, task: &PendingTask, i: usize) {
        if let Some(load) = self.by_job.get_mut(&task.job_id) {
            *load.on_machine.entry(i).or_insert(0) += 1;
            if let Some((value_of, per_value)) = &mut load.spread {
                per_value[value_of[i]] += 1;
            }
        }
    }
}

impl JobLoad {
    /// The job's tasks on machine `i`.
    pub fn on(&self, i: usize) -> u32 {
        self.on_machine.get(&i).copied().unwrap_or(0)
    }

    /// The distinct counts of the job's tasks over the spread label's
    /// groups, fewest first (empty without a spread label).
    pub fn spread_levels(&self) -> Vec<u32> {
        let mut levels = self
            .spread
            .as_ref()
            .map(|(_, per_value)| per_value.clone())
            .unwrap_or_default();
        levels.sort_unstable();
        levels.dedup();
        levels
    }

    /// The job's tasks in machine `i`'s value of the spread label (0 without one).
    pub fn in_spread_group(&self, i: usize) -> u32 {
        self.spread
            .as_ref()
            .map_or(0, |(value_of, per_value)| per_value[value_of[i]])
    }
}

/// Each machine's group under `label` (machines without it form a group of
/// their own) and the job's tasks per group.
fn groups(
    machines: &[Machine],
    label: &str,
    on_machine: &FxHashMap<usize, u32>,
) -> (Vec<usize>, Vec<u32>) {
    let mut index: HashMap<Option<&str>, usize> = HashMap::new();
    let value_of: Vec<usize> = machines
        .iter()
        .map(|m| {
            let key = m.labels.get(label).map(String::as_str);
            let next = index.len();
            *index.entry(key).or_insert(next)
        })
        .collect();
    let mut per_value = vec![0u32; index.len()];
    for (&i, &n) in on_machine {
        per_value[value_of[i]] += n;
    }
    (value_of, per_value)
}
