//! Down detection, run by the leader. Liveness lives in the leader's memory
//! (each machine loop notes when its borglet answered); the store hears of it
//! only when a machine changes state, and of `last_heard` in one batched
//! statement every few seconds, so syncs commit nothing when nothing changed.

use crate::dbhealth::DbHealth;
use crate::poller::Machines;
use crate::store::{Store, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often `machines.last_heard` is written (for people; detection does not read it).
const HEARD_FLUSH: Duration = Duration::from_secs(5);
/// A down-marking that takes longer is abandoned and tried again next look.
const MARK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub struct LivenessConfig {
    /// A machine silent this long is marked down.
    pub down_after: Duration,
    pub epoch: i64,
}

/// How often to look: a small share of `down_after`, so detection lands within
/// ~5% of it, and never a busy loop.
fn tick(down_after: Duration) -> Duration {
    (down_after / 20).clamp(Duration::from_millis(20), Duration::from_millis(500))
}

/// Mark down every machine silent for `down_after`, until `shutdown`; cancels
/// `deposed` if the store says another replica leads.
pub async fn run(
    store: Store,
    machines: Arc<Machines>,
    db: Arc<DbHealth>,
    config: LivenessConfig,
    deposed: CancellationToken,
    shutdown: CancellationToken,
) {
    let mut last_flush = Instant::now();
    // While the store is unreachable the leader cannot ask anyone (syncs need
    // the desired set), so silence counts only from when it is back.
    let mut store_back = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(tick(config.down_after)) => {}
        }
        if !db.is_up() {
            store_back = Instant::now();
            continue;
        }
        for (id, slot) in machines.slots() {
            let silent = {
                let heard = slot.heard();
                let silent = heard.last_ok.max(store_back).elapsed();
                let blamed = !heard.down && heard.store_waits == 0;
                (blamed && silent >= config.down_after).then_some((silent, heard.at))
            };
            let Some((silent, at)) = silent else {
                continue;
            };
            let reason = format!(
                "no answer to syncs for {}",
                humantime::format_duration(Duration::from_millis(silent.as_millis() as u64))
            );
            // Bounded: a write that waited out a store outage would act on
            // silence the outage caused; dropped, it rolls back.
            let marked = tokio::time::timeout(
                MARK_TIMEOUT,
                store.mark_machine_down(id, config.epoch, &reason, at),
            )
            .await;
            let Ok(marked) = marked else {
                tracing::warn!(machine = %slot.name, "marking a machine down timed out; looking again");
                continue;
            };
            match marked {
                Ok(done) => {
                    let mut heard = slot.heard();
                    // Unless it answered meanwhile: then the next answer brings it back up.
                    heard.down = true;
                    drop(heard);
                    // Its attempts are `lost` now: not in its desired set any more.
                    slot.invalidate_desired();
                    if let Some(d) = done {
                        tracing::warn!(machine = %slot.name, ended = d.ended, requeued = d.requeued, %reason, "marked down");
                    }
                }
                Err(StoreError::Deposed { epoch, current }) => {
                    tracing::warn!(epoch, current, "another master leads: stepping down");
                    deposed.cancel();
                    return;
                }
                Err(e) => {
                    tracing::warn!(machine = %slot.name, error = %e, "marking a machine down")
                }
            }
        }
        if last_flush.elapsed() >= HEARD_FLUSH {
            last_flush = Instant::now();
            if let Err(StoreError::Deposed { epoch, current }) =
                flush_heard(&store, &machines, config.epoch).await
            {
                tracing::warn!(epoch, current, "another master leads: stepping down");
                deposed.cancel();
                return;
            }
        }
    }
    // A term that ends by a takeover writes nothing here: the epoch is refused.
    let _ = flush_heard(&store, &machines, config.epoch).await;
}

/// Write the `last_heard` not yet written, as leader at `epoch`.
async fn flush_heard(store: &Store, machines: &Machines, epoch: i64) -> Result<(), StoreError> {
    let heard: Vec<_> = machines
        .slots()
        .into_iter()
        .filter_map(|(id, slot)| {
            let mut h = slot.heard();
            let at = h.at.filter(|_| h.unflushed)?;
            h.unflushed = false;
            Some((id, at))
        })
        .collect();
    let written = store.record_heard(epoch, &heard).await;
    if let Err(e) = &written {
        tracing::warn!(error = %e, machines = heard.len(), "writing last_heard");
    }
    written
}
