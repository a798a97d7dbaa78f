//! Fencing (`task.fence_after`): an attempt whose job asked for it is killed by
//! the borglet when no accepted sync from a master has arrived for that long, so
//! a task the master has given up on (machine partitioned, marked down, its task
//! placed again elsewhere) does not keep running next to its replacement. Other
//! attempts keep running however long no master polls.
//!
//! The time of the last accepted sync is kept in memory and, at most once a
//! second, in `<data-dir>/last-sync.json`, so a restarted borglet counts from
//! the last sync before it went away (up to a second earlier: it fences a little
//! early rather than late). A fenced attempt is stopped as any other stop
//! (SIGTERM, SIGKILL after its grace, its cgroup emptied), is not restarted in
//! place, and its report says why (`fenced: no master sync for 31s`) once a
//! master syncs again; the cause is kept on disk with the stop.

use crate::metrics::Metrics;
use crate::records;
use crate::supervisor::Supervisor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// The record's file in the data dir.
pub const FILE: &str = "last-sync.json";
/// How often the fences are looked at.
const TICK: Duration = Duration::from_millis(200);
/// How often at most the last sync's time is written to disk.
const PERSIST_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Fence {
    dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    last_sync: Instant,
    persisted: Option<Instant>,
}

impl Fence {
    /// The last sync as recorded in `data_dir` by a previous borglet, or now.
    pub fn load(data_dir: &Path) -> Fence {
        let now = Instant::now();
        let recorded: Option<u64> = records::read(data_dir, FILE).ok().flatten();
        let last_sync = recorded
            .and_then(|ms| {
                let ago = SystemTime::now()
                    .duration_since(UNIX_EPOCH + Duration::from_millis(ms))
                    .unwrap_or_default();
                now.checked_sub(ago)
            })
            .unwrap_or(now);
        Fence {
            dir: data_dir.to_path_buf(),
            state: Mutex::new(State {
                last_sync,
                persisted: None,
            }),
        }
    }

    /// A master's sync was accepted now.
    pub fn synced(&self) {
        let now = Instant::now();
        let persist = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.last_sync = now;
            let due = s.persisted.is_none_or(|at| now - at >= PERSIST_EVERY);
            if due {
                s.persisted = Some(now);
            }
            due
        };
        if persist {
            let dir = self.dir.clone();
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64;
            tokio::task::spawn_blocking(move || {
                if let Err(e) = records::write(&dir, FILE, &ms) {
                    tracing::warn!(error = %e, "cannot record the last sync's time");
                }
            });
        }
    }

    /// How long since the last accepted sync.
    pub fn silence(&self) -> Duration {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_sync
            .elapsed()
    }
}

/// Why a fenced attempt was stopped, as its report says.
pub fn cause(silence: Duration) -> String {
    format!(
        "fenced: no master sync for {}",
        humantime::format_duration(Duration::from_secs(silence.as_secs()))
    )
}

/// Stop every attempt whose fence has passed, until `stop`.
pub async fn run(
    fence: Arc<Fence>,
    sup: Arc<Supervisor>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let silence = fence.silence();
        let why = cause(silence);
        for id in sup.table().fence(silence, &why) {
            tracing::warn!(attempt = %id, silence_ms = silence.as_millis() as u64, "no master sync for longer than the attempt's fence_after: stopping it");
            if sup.stop(id) {
                metrics.fenced();
            }
        }
    }
}
