//! The rollout controller, run by the leader: a step of every active rollout
//! twice a second (the store reads each job's tasks, decides with the pure
//! `borg_store::rollout::decide` and writes what it decided).

use crate::store::{Store, StoreError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const STEP_EVERY: Duration = Duration::from_millis(500);

pub async fn run(store: Store, epoch: i64, term: CancellationToken) {
    loop {
        tokio::select! {
            _ = term.cancelled() => return,
            _ = tokio::time::sleep(STEP_EVERY) => {}
        }
        let started = std::time::Instant::now();
        match store.rollout_step(epoch).await {
            Ok(r) if r.replaced + r.surged + r.finished + r.failed > 0 => tracing::info!(
                rollouts = r.rollouts,
                replaced = r.replaced,
                surged = r.surged,
                finished = r.finished,
                failed = r.failed,
                took_ms = started.elapsed().as_millis() as u64,
                "rollout step"
            ),
            Ok(_) => {}
            Err(StoreError::Deposed { epoch, current }) => {
                tracing::warn!(epoch, current, "another master leads: stepping down");
                term.cancel();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "rollout step failed; retrying"),
        }
    }
}
