//! History collection, run by the leader: finished jobs past the retention are
//! deleted in small steps (see `Store::collect_history`), a pass every quarter
//! of the retention (at least every minute), each step a short transaction.

use crate::store::{Collected, Store, StoreError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Rows one statement of a step may delete.
const ROWS_PER_STEP: i64 = 1000;

fn pass_every(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_millis(200), Duration::from_secs(60))
}

pub async fn run(store: Store, epoch: i64, retention: Duration, term: CancellationToken) {
    if retention.is_zero() {
        tracing::info!("history retention 0: finished jobs are kept forever");
        return;
    }
    loop {
        tokio::select! {
            _ = term.cancelled() => return,
            _ = tokio::time::sleep(pass_every(retention)) => {}
        }
        let started = std::time::Instant::now();
        let mut total = Collected::default();
        let mut steps = 0u64;
        // One pass: step until nothing is left or the term ends.
        let outcome = loop {
            if term.is_cancelled() {
                break Ok(());
            }
            match store.collect_history(epoch, retention, ROWS_PER_STEP).await {
                Ok(c) if c.is_empty() => break Ok(()),
                Ok(c) => {
                    steps += 1;
                    total.jobs += c.jobs;
                    total.tasks += c.tasks;
                    total.events += c.events;
                    // Let the hot paths at the database between steps.
                    tokio::task::yield_now().await;
                }
                Err(e) => break Err(e),
            }
        };
        if steps > 0 {
            tracing::info!(
                jobs = total.jobs,
                tasks = total.tasks,
                events = total.events,
                steps,
                took_ms = started.elapsed().as_millis() as u64,
                "history collected"
            );
        }
        match outcome {
            Ok(()) => {}
            Err(StoreError::Deposed { epoch, current }) => {
                tracing::warn!(epoch, current, "another master leads: stepping down");
                term.cancel();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "history collection failed; retrying"),
        }
    }
}
