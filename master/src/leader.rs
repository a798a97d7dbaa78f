//! Leadership: every replica serves the API; the one holding the lease in
//! Postgres also polls borglets and runs the controllers (down detection,
//! draining, rollouts, the job sweep). A replica that cannot renew in time stops leading before its
//! lease can expire, so two leaders never act at once under the same epoch;
//! writes that matter also check the epoch in their own transaction.

use crate::poller::{self, Machines, PollerConfig};
use crate::store::Store;
use crate::{drain, history, liveness, rollout, sweep};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often every live job's state is checked against its task counters.
const JOB_SWEEP_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, clap::Args)]
pub struct LeaderConfig {
    /// A machine that has not answered a sync this long is marked down and its
    /// tasks are placed elsewhere.
    #[arg(long, env = "BORG_DOWN_AFTER", default_value = "10s", value_parser = humantime::parse_duration)]
    pub down_after: Duration,
    /// How long the leader lease lasts unless renewed (renewed every third of
    /// it); a dead leader is replaced after at most about this long.
    #[arg(long, env = "BORG_LEASE_TTL", default_value = "3s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
    /// How long a finished job stays readable (tasks, attempts, events, death
    /// certificates) before the leader deletes it; `0` keeps history forever.
    #[arg(long, env = "BORG_HISTORY_RETENTION", default_value = "48h", value_parser = humantime::parse_duration)]
    pub history_retention: Duration,
    /// The leader keeps each machine's desired set in memory and skips a
    /// report identical to the last one that changed nothing; this often it
    /// reads the set from Postgres and applies the report all the same (a
    /// safety net: every change to a desired set also wakes its loop).
    /// `0s`: read and apply on every sync.
    #[arg(long, env = "BORG_FULL_SYNC_EVERY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub full_sync_every: Duration,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        LeaderConfig {
            down_after: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(3),
            history_retention: Duration::from_secs(48 * 3600),
            full_sync_every: Duration::from_secs(30),
        }
    }
}

/// This replica's role, for `/healthz` and metrics: the epoch it leads at, or 0.
#[derive(Debug, Default)]
pub struct Status {
    epoch: AtomicI64,
}

impl Status {
    /// The epoch this replica leads at, if it leads.
    pub fn leading(&self) -> Option<i64> {
        let e = self.epoch.load(Ordering::Relaxed);
        (e > 0).then_some(e)
    }

    fn set(&self, epoch: Option<i64>) {
        self.epoch.store(epoch.unwrap_or(0), Ordering::Relaxed);
        metrics::gauge!("borg_master_leader").set(if epoch.is_some() { 1.0 } else { 0.0 });
    }
}

/// What a term of leadership runs.
#[derive(Clone)]
pub struct Leading {
    pub store: Store,
    pub http: reqwest::Client,
    pub poll_interval: Duration,
    pub config: LeaderConfig,
    pub machines_changed: Arc<Notify>,
    pub machines: Arc<Machines>,
    pub status: Arc<Status>,
    pub db: Arc<crate::dbhealth::DbHealth>,
}

/// Contend for the lease until `shutdown`; lead while holding it.
pub async fn run(parts: Leading, holder: String, shutdown: CancellationToken) {
    let ttl = parts.config.lease_ttl;
    // Renewal leaves two thirds of the lease as slack; a follower looks often
    // enough that takeover follows expiry closely.
    let renew_every = ttl / 3;
    let retry_every = (ttl / 6).max(Duration::from_millis(50));
    let margin = ttl / 6;
    loop {
        let asked = Instant::now();
        let epoch = match parts.store.acquire_lease(&holder, ttl).await {
            Ok(Some(epoch)) => epoch,
            Ok(None) => {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(retry_every) => continue,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "contending for the leader lease");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(retry_every) => continue,
                }
            }
        };
        // The lease runs from before we asked: our clock can only err on the safe side.
        let mut valid_until = asked + ttl;
        tracing::info!(epoch, holder = %holder, "leading");
        parts.status.set(Some(epoch));
        let term = shutdown.child_token();
        let work = tokio::spawn(lead(parts.clone(), epoch, term.clone()));
        let stepped_down = loop {
            tokio::select! {
                _ = term.cancelled() => break "deposed (the store refused a write at this epoch)",
                _ = tokio::time::sleep(renew_every) => {}
            }
            let asked = Instant::now();
            let left = valid_until.saturating_duration_since(asked + margin);
            match tokio::time::timeout(left, parts.store.renew_lease(&holder, epoch, ttl)).await {
                Ok(Ok(true)) => valid_until = asked + ttl,
                Ok(Ok(false)) => break "another replica took the lease",
                Ok(Err(e)) if Instant::now() + margin < valid_until => {
                    tracing::warn!(error = %e, epoch, "renewing the leader lease; retrying");
                }
                Ok(Err(_)) | Err(_) => break "could not renew the lease before it expires",
            }
        };
        term.cancel();
        let _ = work.await;
        parts.status.set(None);
        if shutdown.is_cancelled() {
            // Let another replica take over at once rather than after expiry.
            if let Err(e) = parts.store.release_lease(&holder, epoch).await {
                tracing::warn!(error = %e, "releasing the leader lease");
            }
            tracing::info!(epoch, "stopped leading: shutting down");
            return;
        }
        tracing::warn!(epoch, why = stepped_down, "stopped leading");
    }
}

/// One term: the poller, down detection, the job sweep, draining, rollouts and
/// history collection, until `term` ends.
async fn lead(parts: Leading, epoch: i64, term: CancellationToken) {
    let sweep = tokio::spawn(sweep::run(
        parts.store.clone(),
        epoch,
        JOB_SWEEP_INTERVAL,
        term.clone(),
    ));
    let drain = tokio::spawn(drain::run(parts.store.clone(), epoch, term.clone()));
    let rollout = tokio::spawn(rollout::run(parts.store.clone(), epoch, term.clone()));
    let history = tokio::spawn(history::run(
        parts.store.clone(),
        epoch,
        parts.config.history_retention,
        term.clone(),
    ));
    let liveness = tokio::spawn(liveness::run(
        parts.store.clone(),
        parts.machines.clone(),
        parts.db.clone(),
        liveness::LivenessConfig {
            down_after: parts.config.down_after,
            epoch,
        },
        term.clone(),
        term.clone(),
    ));
    poller::run(
        parts.store.clone(),
        parts.http.clone(),
        PollerConfig {
            interval: parts.poll_interval,
            full_sync_every: parts.config.full_sync_every,
            epoch,
        },
        parts.machines_changed.clone(),
        parts.machines.clone(),
        term.clone(),
    )
    .await;
    let _ = liveness.await;
    let _ = sweep.await;
    let _ = drain.await;
    let _ = rollout.await;
    let _ = history.await;
}
