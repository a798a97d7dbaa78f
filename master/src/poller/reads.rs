//! Desired-set reads, batched: machine loops that need their set from the store
//! ask this reader, which answers every request waiting at that moment with one
//! query (`Store::desired_attempts_of`), so a thousand stale sets after a new
//! leader starts (or after a lost listener) cost a few queries, not a thousand,
//! and one store connection at a time.

use crate::store::{DesiredSet, Store, StoreError};
use borg_shared::MachineId;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Machines read in one query at most.
const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<DesiredSet, Arc<StoreError>>>;

/// The asking end, one per term, shared by the machine loops.
#[derive(Clone)]
pub(crate) struct Reader {
    tx: mpsc::UnboundedSender<(MachineId, Reply)>,
}

impl Reader {
    /// Start the reader; it ends with `shutdown` (pending asks then fail).
    pub(crate) fn start(store: Store, shutdown: CancellationToken) -> Reader {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx, shutdown));
        Reader { tx }
    }

    /// `machine`'s desired set, read with those of every machine asking meanwhile.
    pub(crate) async fn read(&self, machine: MachineId) -> anyhow::Result<DesiredSet> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((machine, reply))
            .map_err(|_| anyhow::anyhow!("the desired-set reader stopped"))?;
        match answer.await {
            Ok(Ok(set)) => Ok(set),
            Ok(Err(e)) => Err(anyhow::anyhow!("reading desired sets: {e}")),
            Err(_) => Err(anyhow::anyhow!("the desired-set reader stopped")),
        }
    }
}

async fn run(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<(MachineId, Reply)>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = rx.recv() => match r {
                Some(r) => r,
                None => return,
            },
        };
        // Everything asked while the previous query ran goes in this one.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut ids: Vec<MachineId> = batch.iter().map(|(m, _)| *m).collect();
        ids.sort();
        ids.dedup();
        metrics::histogram!("borg_desired_read_batch").record(ids.len() as f64);
        match store.desired_attempts_of(&ids).await {
            Ok(sets) => {
                for (m, reply) in batch {
                    // A machine asked twice in one batch gets the same set twice.
                    let set = sets.get(&m).cloned().unwrap_or_default();
                    let _ = reply.send(Ok(set));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for (_, reply) in batch {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
