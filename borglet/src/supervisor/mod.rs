//! The supervisor owns the task processes: starting them (`start.rs`), stopping
//! them (`stop.rs`) and reaping them. It is the seam where cgroups and re-adoption
//! of processes left by a previous borglet will plug in; the API layer only says
//! "start this spec" and "stop what is not wanted".

mod start;
mod stop;

use crate::isolation::Isolator;
use crate::metrics::Metrics;
use crate::nudge::Nudger;
use crate::state::AttemptTable;
use borg_shared::AttemptId;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;

pub use stop::signal_group;

/// PATH given to tasks when the borglet itself has none.
const FALLBACK_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How long shutdown waits for a SIGKILLed process to be reaped before giving up on it.
const REAP_PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Supervisor {
    table: Arc<AttemptTable>,
    metrics: Arc<Metrics>,
    /// Told of every exit and failed start, so the master hears of it at once.
    nudger: Arc<Nudger>,
    machine: String,
    /// `<data-dir>/attempts`
    sandboxes: PathBuf,
    path_env: String,
    stops: TaskTracker,
    /// Makes each attempt's cgroup (or none, when the machine runs unisolated).
    isolator: Arc<dyn Isolator>,
    /// `pids.max` of each attempt.
    pids_limit: u64,
}

impl Supervisor {
    /// `data_dir` should be absolute: it becomes the tasks' working directory and HOME.
    pub fn new(
        table: Arc<AttemptTable>,
        metrics: Arc<Metrics>,
        nudger: Arc<Nudger>,
        machine: String,
        data_dir: &Path,
        isolator: Arc<dyn Isolator>,
        pids_limit: u64,
    ) -> Self {
        let path_env = std::env::var("PATH")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| FALLBACK_PATH.to_string());
        Supervisor {
            table,
            metrics,
            nudger,
            machine,
            sandboxes: sandboxes_dir(data_dir),
            path_env,
            stops: TaskTracker::new(),
            isolator,
            pids_limit,
        }
    }

    pub fn table(&self) -> &Arc<AttemptTable> {
        &self.table
    }

    /// Stop every running attempt not in `wanted`.
    pub fn stop_unwanted(&self, wanted: &HashSet<AttemptId>) {
        for id in self.table.running_ids_except(|id| wanted.contains(id)) {
            if self.stop(id) {
                self.metrics.stopped();
            }
        }
    }

    /// Stop every task and wait until all are reaped (`--on-exit stop`).
    pub async fn stop_all(&self) {
        for id in self.table.running_ids_except(|_| false) {
            self.stop(id);
        }
        self.stops.close();
        self.stops.wait().await;
        let live = self.table.live_exit_tokens();
        let all_reaped = futures::future::join_all(live.iter().map(|t| t.cancelled()));
        if tokio::time::timeout(REAP_PATIENCE, all_reaped)
            .await
            .is_err()
        {
            tracing::warn!("some task processes were not reaped after SIGKILL");
        }
        self.isolator.remove_parent();
    }
}

/// Where the per-attempt sandboxes live.
pub fn sandboxes_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("attempts")
}

/// The sandbox of one attempt: its working directory, HOME and log files.
pub fn sandbox_dir(data_dir: &Path, id: AttemptId) -> PathBuf {
    sandboxes_dir(data_dir).join(id.to_string())
}
