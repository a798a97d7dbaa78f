//! The supervisor owns the task processes: starting them through the
//! borglet's keeper (`start.rs`, `crate::keeper`), stopping them (`stop.rs`), watching for
//! their end (`watch.rs`) and re-adopting those a previous borglet left running
//! (`adopt.rs`). It is the seam where cgroups plug in; the API layer only says
//! "start these specs" and "stop what is not wanted".

mod adopt;
mod start;
mod stop;
mod watch;

pub use adopt::Adopted;
pub use start::default_keeper_exe;

use crate::health::Prober;
use crate::isolation::Isolator;
use crate::metrics::Metrics;
use crate::nudge::Nudger;
use crate::run_as::RunAs;
use crate::state::AttemptTable;
use borg_shared::AttemptId;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

pub use stop::signal_group;

/// The span of what is done to one attempt (start, watch, restarts, stop):
/// its machine, job, task index and attempt id.
pub(crate) fn attempt_span(machine: &str, job: &str, index: i32, id: AttemptId) -> tracing::Span {
    tracing::info_span!("attempt", machine, job, index, attempt = %id)
}

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
    /// `<runtime-dir>/attempts`: each attempt's records (`crate::records`).
    records: PathBuf,
    path_env: String,
    /// Starts, keeps and reaps every task (`crate::keeper`).
    keeper: Arc<crate::keeper::KeeperClient>,
    /// Bytes of each output stream kept per attempt (0: unlimited).
    log_max_bytes: u64,
    /// The user tasks run as (`None`: the borglet's own).
    run_as: Option<RunAs>,
    /// Notified once acknowledged attempts are marked on disk (the janitor listens).
    pub acked: Arc<Notify>,
    stops: TaskTracker,
    /// Makes each attempt's cgroup (or none, when the machine runs unisolated).
    isolator: Arc<dyn Isolator>,
    /// `pids.max` of each attempt.
    pids_limit: u64,
    /// Runs the health probes of attempts that have a health check.
    prober: Arc<dyn Prober>,
}

/// Where attempts live: sandboxes and logs under `data`, records under `runtime`.
#[derive(Debug, Clone, Copy)]
pub struct Dirs<'a> {
    /// Absolute: it holds the tasks' working directories and HOMEs.
    pub data: &'a Path,
    pub runtime: &'a Path,
}

/// How every task of this borglet is run.
#[derive(Debug, Clone)]
pub struct HowToRun {
    /// The executable run (once) as the keeper (`crate::keeper`).
    pub keeper_exe: PathBuf,
    /// Bytes of each output stream kept per attempt (0: unlimited).
    pub log_max_bytes: u64,
    /// The user tasks run as (`None`: the borglet's own).
    pub run_as: Option<RunAs>,
    /// Makes each attempt's cgroup (or none, when the machine runs unisolated).
    pub isolator: Arc<dyn Isolator>,
    /// `pids.max` of each attempt.
    pub pids_limit: u64,
    /// Runs the health probes (`crate::health::RealProber`).
    pub prober: Arc<dyn Prober>,
}

impl Supervisor {
    pub fn new(
        table: Arc<AttemptTable>,
        metrics: Arc<Metrics>,
        nudger: Arc<Nudger>,
        machine: String,
        dirs: Dirs<'_>,
        how: HowToRun,
    ) -> Self {
        let HowToRun {
            keeper_exe,
            log_max_bytes,
            run_as,
            isolator,
            pids_limit,
            prober,
        } = how;
        let path_env = std::env::var("PATH")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| FALLBACK_PATH.to_string());
        if run_as.is_none() {
            // Tasks run as the user who owns the cgroup files, so a task could
            // change its set's files: none is handed on to another attempt.
            isolator.keep_no_spares();
        }
        Supervisor {
            table,
            metrics,
            nudger,
            machine,
            sandboxes: sandboxes_dir(dirs.data),
            records: records_dir(dirs.runtime),
            path_env,
            keeper: Arc::new(crate::keeper::KeeperClient::new(keeper_exe, dirs.data)),
            log_max_bytes,
            run_as,
            acked: Arc::default(),
            stops: TaskTracker::new(),
            isolator,
            pids_limit,
            prober,
        }
    }

    pub fn table(&self) -> &Arc<AttemptTable> {
        &self.table
    }

    /// Where attempt `id`'s records are.
    fn record_dir(&self, id: AttemptId) -> PathBuf {
        self.records.join(id.to_string())
    }

    /// Note on disk that the master has recorded these finished attempts, so a
    /// restarted borglet neither reports nor starts them again.
    pub fn mark_acked(&self, ids: Vec<AttemptId>) {
        if ids.is_empty() {
            return;
        }
        // An attempt launched before records had a dir of their own keeps
        // them in its sandbox.
        let dirs: Vec<[PathBuf; 2]> = ids
            .iter()
            .map(|id| [self.record_dir(*id), self.sandboxes.join(id.to_string())])
            .collect();
        let acked = Arc::clone(&self.acked);
        tokio::task::spawn_blocking(move || {
            for [dir, sandbox] in dirs {
                let marked = match dir.is_dir() {
                    true => crate::records::mark_acked(&dir),
                    false => crate::records::mark_acked(&sandbox),
                };
                if let Err(e) = marked {
                    tracing::warn!(error = %e, "cannot mark an attempt acknowledged");
                }
            }
            acked.notify_one();
        });
    }

    /// Stop every running attempt not in `wanted`.
    pub fn stop_unwanted(&self, wanted: &HashSet<AttemptId>) {
        for id in self.table.running_ids_except(|id| wanted.contains(id)) {
            if self.stop(id) {
                self.metrics.stopped();
            }
        }
    }

    /// Remove the spare cgroups (at a shutdown that leaves the tasks running).
    pub async fn drop_spares(&self) {
        let isolator = Arc::clone(&self.isolator);
        let _ = tokio::task::spawn_blocking(move || isolator.drop_spares()).await;
    }

    /// Close the connection to the keeper (at shutdown): it goes on keeping
    /// the tasks left running, and exits if there are none.
    pub fn disconnect_keeper(&self) {
        self.keeper.disconnect();
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

/// Where the per-attempt records live.
pub fn records_dir(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("attempts")
}

/// The sandbox of one attempt: its working directory, HOME and log files.
pub fn sandbox_dir(data_dir: &Path, id: AttemptId) -> PathBuf {
    sandboxes_dir(data_dir).join(id.to_string())
}
