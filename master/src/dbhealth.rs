//! Whether the store answers, watched apart from requests: while Postgres is
//! unreachable the API answers 503 with `Retry-After` at once instead of each
//! request waiting out the pool's acquire timeout, and `/healthz` says
//! `degraded`. Everything resumes by itself when a ping succeeds again.

use crate::store::Store;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const PING_EVERY: Duration = Duration::from_millis(500);
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// What a client is told to wait before trying again.
pub const RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug)]
pub struct DbHealth {
    up: AtomicBool,
}

impl Default for DbHealth {
    fn default() -> Self {
        DbHealth {
            up: AtomicBool::new(true),
        }
    }
}

impl DbHealth {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn set(&self, up: bool, error: Option<String>) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            match error {
                Some(error) => {
                    tracing::error!(%error, "postgres unreachable: answering 503 until it is back")
                }
                None => tracing::info!("postgres reachable again"),
            }
        }
        metrics::gauge!("borg_store_up").set(if up { 1.0 } else { 0.0 });
    }
}

/// Ping the store until `shutdown`, keeping `health` current.
pub async fn watch(store: Store, health: std::sync::Arc<DbHealth>, shutdown: CancellationToken) {
    loop {
        match tokio::time::timeout(PING_TIMEOUT, store.ping()).await {
            Ok(Ok(())) => health.set(true, None),
            Ok(Err(e)) => health.set(false, Some(e.to_string())),
            Err(_) => health.set(false, Some(format!("no answer within {PING_TIMEOUT:?}"))),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PING_EVERY) => {}
        }
    }
}
