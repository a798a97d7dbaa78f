//! Turning a batch of decisions into rows: the store re-checks capacity, the
//! job and the task under locks (see `borg_store::placements`); this side only
//! pairs each decision with the request the snapshot accounted for.

use crate::snapshot::PendingTask;
use borg_shared::{MachineId, TaskId};
use borg_store::{Committed, Placement, Store};
use std::collections::HashMap;

/// Commit `placements` (in queue order) made by scheduler `scheduler`.
/// `tasks` must hold every task named in `placements`.
pub async fn commit(
    store: &Store,
    scheduler: &str,
    tasks: &HashMap<TaskId, &PendingTask>,
    placements: &[(TaskId, MachineId, Vec<u16>)],
) -> anyhow::Result<Committed> {
    let batch = placements
        .iter()
        .map(|(task, machine, ports)| {
            let t = tasks
                .get(task)
                .ok_or_else(|| anyhow::anyhow!("placement of unknown task {task}"))?;
            Ok(Placement {
                task: *task,
                job: t.job_id,
                machine: *machine,
                request: t.request,
                max_per_machine: t.max_per_machine(),
                ports: ports.clone(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(store.commit_placements(scheduler, &batch).await?)
}

#[cfg(test)]
mod tests;
