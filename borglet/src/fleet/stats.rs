//! How the master treats the fleet: syncs answered, and the gap between two
//! syncs of the same borglet (the poll interval it actually gets), as a
//! histogram of 10 ms buckets. `GET /fleet/stats` gives the running totals;
//! a measurement takes two and subtracts.

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Width of a gap bucket.
pub const GAP_BUCKET_MS: u64 = 10;
/// Gaps of a minute or more share the last bucket.
const GAP_BUCKETS: usize = 6_000;

pub struct Stats {
    syncs: AtomicU64,
    /// Per borglet: when its last answered sync arrived.
    last: Vec<Mutex<Option<Instant>>>,
    gaps: Vec<AtomicU64>,
}

/// The running totals (`GET /fleet/stats`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FleetStats {
    pub borglets: usize,
    /// Borglets synced at least once.
    pub synced: usize,
    /// Syncs answered with 200.
    pub syncs: u64,
    /// `[bucket start in ms, count]` for every non-empty bucket of gaps.
    pub gaps_ms: Vec<(u64, u64)>,
}

impl FleetStats {
    /// Gaps counted in `self` but not in `earlier`.
    pub fn gaps_since(&self, earlier: &FleetStats) -> Vec<(u64, u64)> {
        let before: std::collections::HashMap<u64, u64> = earlier.gaps_ms.iter().copied().collect();
        self.gaps_ms
            .iter()
            .map(|(ms, n)| (*ms, n - before.get(ms).copied().unwrap_or(0).min(*n)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// The `q` quantile (0..=1) of a bucketed histogram, as the bucket's upper edge in ms.
pub fn quantile_ms(gaps: &[(u64, u64)], q: f64) -> Option<u64> {
    let total: u64 = gaps.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (ms, n) in gaps {
        seen += n;
        if seen >= rank {
            return Some(ms + GAP_BUCKET_MS);
        }
    }
    gaps.last().map(|(ms, _)| ms + GAP_BUCKET_MS)
}

impl Stats {
    pub fn new(borglets: usize) -> Self {
        Stats {
            syncs: AtomicU64::new(0),
            last: (0..borglets).map(|_| Mutex::new(None)).collect(),
            gaps: (0..GAP_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn synced(&self, i: usize) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let Some(last) = self.last.get(i) else { return };
        let before = last.lock().unwrap_or_else(|p| p.into_inner()).replace(now);
        if let Some(before) = before {
            let ms = now.duration_since(before).as_millis() as u64;
            let bucket = ((ms / GAP_BUCKET_MS) as usize).min(GAP_BUCKETS - 1);
            self.gaps[bucket].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> FleetStats {
        FleetStats {
            borglets: self.last.len(),
            synced: self
                .last
                .iter()
                .filter(|l| l.lock().unwrap_or_else(|p| p.into_inner()).is_some())
                .count(),
            syncs: self.syncs.load(Ordering::Relaxed),
            gaps_ms: self
                .gaps
                .iter()
                .enumerate()
                .map(|(b, n)| (b as u64 * GAP_BUCKET_MS, n.load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

pub(super) async fn serve(State(stats): State<Arc<Stats>>) -> Json<FleetStats> {
    Json(stats.snapshot())
}

/// Count the answered syncs of borglet `i`.
pub(super) async fn count_syncs(
    State((stats, i)): State<(Arc<Stats>, usize)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let is_sync = req.uri().path() == "/v1/sync";
    let resp = next.run(req).await;
    if is_sync && resp.status().is_success() {
        stats.synced(i);
    }
    resp
}
