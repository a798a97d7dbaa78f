//! Removes the sandboxes (working directory and logs) of finished attempts whose
//! end the master has recorded (`acked`): once they are older than the
//! retention, or sooner, oldest first, while the data dir's disk has less free
//! space than asked for. A running or unrecorded attempt is never touched.

use crate::records;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Janitor {
    pub sandboxes: PathBuf,
    pub retention: Duration,
    /// Bytes of free disk wanted in `sandboxes`' file system.
    pub min_free: u64,
    /// Notified when attempts are acknowledged: a sweep then runs at once.
    pub acked: Arc<Notify>,
}

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub expired: usize,
    pub for_space: usize,
}

impl Janitor {
    /// Sweep now and then until `shutdown`: a quarter of the retention, between 1 s and 1 min.
    pub async fn run(self, shutdown: CancellationToken) {
        let every = (self.retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.acked.notified() => {}
                () = shutdown.cancelled() => return,
            }
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.sweep()).await {
                Ok(s) if s != Swept::default() => tracing::info!(
                    expired = s.expired,
                    for_space = s.for_space,
                    "removed finished sandboxes"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "sandbox sweep failed"),
            }
        }
    }

    /// Blocking: one pass.
    pub fn sweep(&self) -> Swept {
        let mut done = finished_sandboxes(&self.sandboxes);
        // Oldest first.
        done.sort_by_key(|(_, acked_at)| *acked_at);
        let now = SystemTime::now();
        let mut swept = Swept::default();
        let mut left = Vec::new();
        for (dir, acked_at) in done {
            let age = now.duration_since(acked_at).unwrap_or_default();
            if age >= self.retention {
                if remove(&dir) {
                    swept.expired += 1;
                }
            } else {
                left.push(dir);
            }
        }
        for dir in left {
            if free_bytes(&self.sandboxes).is_none_or(|free| free >= self.min_free) {
                break;
            }
            if remove(&dir) {
                swept.for_space += 1;
            }
        }
        swept
    }
}

/// Sandboxes of acknowledged attempts, with when they were acknowledged.
fn finished_sandboxes(sandboxes: &Path) -> Vec<(PathBuf, SystemTime)> {
    let Ok(entries) = std::fs::read_dir(sandboxes) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let dir = e.path();
            let acked = std::fs::metadata(dir.join(records::ACKED)).ok()?;
            Some((dir, acked.modified().ok()?))
        })
        .collect()
}

fn remove(dir: &Path) -> bool {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(sandbox = %dir.display(), error = %e, "cannot remove a finished sandbox");
            false
        }
    }
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    #[allow(clippy::unnecessary_cast)] // the field widths differ between targets
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}
