//! Turning a batch of decisions into rows: the store re-checks capacity, the
//! job and the task under locks (see `borg_store::placements`); this side only
//! pairs each decision with the request the snapshot accounted for, and splits
//! a page into streams that commit side by side.

use crate::snapshot::PendingTask;
use borg_shared::{MachineId, TaskId};
use borg_store::{commit_stream, Committed, Placement, Store};
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

/// Commit a page's `placements` (in queue order): split by machine into
/// `streams` groups whose batches never wait on each other (see
/// `borg_store::commit_stream`), each group committed batch after batch in
/// queue order, the groups concurrently, so Postgres works one transaction per
/// core instead of one in all. A failed batch fails the page; batches that
/// committed before it stay committed (the caller re-reads its machines).
pub async fn commit_page(
    store: &Store,
    scheduler: &str,
    tasks: &HashMap<TaskId, &PendingTask>,
    placements: &[(TaskId, MachineId, Vec<u16>)],
    batch_size: usize,
    streams: usize,
) -> anyhow::Result<Committed> {
    let streams = streams.max(1);
    let mut groups: Vec<Vec<(TaskId, MachineId, Vec<u16>)>> = vec![Vec::new(); streams];
    for p in placements {
        groups[commit_stream(p.1, streams)].push(p.clone());
    }
    let runs = groups
        .iter()
        .filter(|g| !g.is_empty())
        .map(|group| async move {
            let mut out = Committed::default();
            for chunk in group.chunks(chunk_len(group.len(), batch_size)) {
                let c = commit(store, scheduler, tasks, chunk).await?;
                out.placed.extend(c.placed);
                out.lost_races += c.lost_races;
            }
            anyhow::Ok(out)
        });
    let mut committed = Committed::default();
    // Every stream runs to its end, even after another failed: one dropped
    // during its `COMMIT` may or may not have landed, and no stream is left
    // half done for the pass's error path to guess about.
    for c in futures::future::join_all(runs).await {
        let c = c?;
        committed.placed.extend(c.placed);
        committed.lost_races += c.lost_races;
    }
    Ok(committed)
}

/// How many placements each transaction of a stream of `n` takes: batches of
/// `batch_size`, except that a tail of up to an eighth of a batch joins the
/// batches before it (each then up to 1/8 over) instead of committing alone.
/// A page holds a batch per stream, split by machine, so streams come out a
/// little uneven: 4,049 and 3,951, say. The 49 then cost a transaction of their
/// own (its statements and its commit's flush, 5–14 ms) while the other
/// stream, and so the page, waited for them.
fn chunk_len(n: usize, batch_size: usize) -> usize {
    let batch = batch_size.max(1);
    let mut chunks = n.div_ceil(batch).max(1);
    if chunks > 1 && !n.is_multiple_of(batch) && n % batch <= batch / 8 {
        chunks -= 1;
    }
    n.div_ceil(chunks).max(1)
}

#[cfg(test)]
mod tests;
