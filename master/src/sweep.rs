//! The safety net under job states. A job's state is checked right after each
//! batch that moves its tasks; if the master dies between that commit and the
//! check, this periodic pass over the live jobs (cheap: their counters) finds it.

use crate::store::Store;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn run(store: Store, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match store.refresh_jobs(None).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "sweep moved jobs whose check was missed"),
            Err(e) => tracing::warn!(error = %e, "job state sweep failed; retrying"),
        }
    }
}
