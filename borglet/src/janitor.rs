//! Removes the sandboxes (working directory and logs) and records of finished
//! attempts whose end the master has recorded (`acked`): once they are older
//! than the retention, or sooner, oldest first, while the data dir's disk has
//! less free space than asked for. A running or unrecorded attempt is never
//! touched. A sandbox left without records (a reboot cleared a runtime dir on
//! tmpfs) goes once it is older than the retention.

use crate::records;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Janitor {
    pub sandboxes: PathBuf,
    /// The record dirs (`crate::supervisor::records_dir`).
    pub records: PathBuf,
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
        let mut done = self.finished();
        // Oldest first.
        done.sort_by_key(|f| f.since);
        let now = SystemTime::now();
        let mut swept = Swept::default();
        let mut left = Vec::new();
        for f in done {
            let age = now.duration_since(f.since).unwrap_or_default();
            if age >= self.retention {
                if f.remove() {
                    swept.expired += 1;
                }
            } else if f.acked {
                left.push(f);
            }
        }
        for f in left {
            if free_bytes(&self.sandboxes).is_none_or(|free| free >= self.min_free) {
                break;
            }
            if f.remove() {
                swept.for_space += 1;
            }
        }
        swept
    }

    /// Attempts whose end is recorded, and sandboxes without records.
    fn finished(&self) -> Vec<Finished> {
        let mut done: Vec<Finished> = entries(&self.records)
            .filter_map(|(name, records)| {
                let acked = std::fs::metadata(records.join(records::ACKED)).ok()?;
                Some(Finished {
                    sandbox: self.sandboxes.join(name),
                    records: Some(records),
                    since: acked.modified().ok()?,
                    acked: true,
                })
            })
            .collect();
        for (name, sandbox) in entries(&self.sandboxes) {
            if self.records.join(&name).exists() {
                continue;
            }
            let (since, acked) = match std::fs::metadata(sandbox.join(records::ACKED)) {
                // Launched before records had dirs of their own.
                Ok(acked) => (acked.modified(), true),
                Err(_) if sandbox.join(records::LAUNCH).exists() => continue,
                // No records (cleared by a reboot): by its own age.
                Err(_) => (
                    std::fs::metadata(&sandbox).and_then(|m| m.modified()),
                    false,
                ),
            };
            if let Ok(since) = since {
                done.push(Finished {
                    sandbox,
                    records: None,
                    since,
                    acked,
                });
            }
        }
        done
    }
}

/// One finished attempt's dirs.
struct Finished {
    sandbox: PathBuf,
    records: Option<PathBuf>,
    /// When the master recorded its end (or, without records, the sandbox's age).
    since: SystemTime,
    /// Its end is recorded: it may go early for disk space.
    acked: bool,
}

impl Finished {
    /// The sandbox first: while it is there, so are the records that say it may go.
    fn remove(&self) -> bool {
        [Some(&self.sandbox), self.records.as_ref()]
            .into_iter()
            .flatten()
            .all(|dir| match std::fs::remove_dir_all(dir) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a finished attempt's files");
                    false
                }
            })
    }
}

/// The entries of `dir`: name and path.
fn entries(dir: &Path) -> impl Iterator<Item = (std::ffi::OsString, PathBuf)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flat_map(|d| d.flatten())
        .map(|e| (e.file_name(), e.path()))
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    #[allow(clippy::unnecessary_cast)] // the field widths differ between targets
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}
