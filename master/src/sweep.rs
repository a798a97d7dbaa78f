//! The safety net under job states. A job's state is checked right after each
//! batch that moves its tasks; if the master dies between that commit and the
//! check, this periodic pass over the live jobs (cheap: their counters) finds it.
//! Run by the leader at `epoch`: a deposed leader's sweep moves nothing and ends
//! its term.

use crate::store::{Store, StoreError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn run(store: Store, epoch: i64, every: Duration, term: CancellationToken) {
    loop {
        tokio::select! {
            _ = term.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match store.refresh_jobs(epoch, None).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "sweep moved jobs whose check was missed"),
            Err(StoreError::Deposed { epoch, current }) => {
                tracing::warn!(epoch, current, "another master leads: stepping down");
                term.cancel();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "job state sweep failed; retrying"),
        }
    }
}
