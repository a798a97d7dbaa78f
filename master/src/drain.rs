//! The drain controller, run by the leader: moves tasks off draining machines
//! a step at a time (each job within its unavailability budget; the store
//! decides what moves).

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
        match store.drain_step(epoch).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "moved tasks off draining machines"),
            Err(StoreError::Deposed { epoch, current }) => {
                tracing::warn!(epoch, current, "another master leads: stepping down");
                term.cancel();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "drain step failed; retrying"),
        }
    }
}
