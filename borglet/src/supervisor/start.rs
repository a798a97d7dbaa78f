//! Starting an attempt: its sandbox and launch record (written before anything
//! runs), then a request to the borglet's keeper (`crate::keeper`), which
//! starts the task in a fresh session and answers with the task's pid or why it
//! could not start, and later tells its end. The blocking part (mkdir, cgroup
//! and file writes, the request to the keeper) runs on the blocking pool; a
//! sync's starts run a few at a time, and the answers are awaited without
//! holding a thread.
//!
//! Isolation: each run gets a cgroup before the task starts: on v1 a spare set
//! a finished attempt left clean, under the name it was made with, its counters
//! reset and its limits rewritten, else one made fresh (`isolation/pool.rs`);
//! an in-place restart gets one again (on v2 under the same path) once the
//! previous run's end retired it. The launch record names it. Either way its
//! counters and OOM kills are the run's own. The task joins it itself, before exec
//! (`Launch.pid_files`); the keeper stays outside, so its memory is not charged
//! to the task and an OOM kill in the cgroup cannot take it.

use super::watch::Keeper;
use super::Supervisor;
use crate::isolation::{self, AttemptCgroup, IsolationError, Isolator};
use crate::keeper::client::{Answer, KeeperClient, StartReceivers};
use crate::records::{self, Launch, RecordError, Run};
use crate::state::{Attempt, Phase};
use borg_shared::wire::{borg_env, AttemptSpec};
use borg_shared::AttemptId;
use chrono::Utc;
use futures::StreamExt;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Starts in flight at once within one sync: enough to keep the keeper busy
/// while sandboxes and cgroups are prepared, few enough not to flood the
/// blocking pool (on 2 cores, 8 gave 3-4% more starts/s than 16; 4 no more
/// than 16: BENCHMARKS.md).
const START_CONCURRENCY: usize = 8;

#[derive(Debug, thiserror::Error)]
pub(super) enum StartError {
    #[error("empty command")]
    EmptyCommand,
    #[error("cannot prepare sandbox {path}: {source}")]
    Sandbox {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write the launch record: {0}")]
    Record(#[from] RecordError),
    #[error("cannot reach the keeper {exe}: {source}")]
    Keeper { exe: String, source: std::io::Error },
    #[error("the keeper ended without saying whether the task started")]
    KeeperSilent,
    /// The keeper's own words: why the task could not start (exec failed, ...).
    #[error("{0}")]
    Task(String),
    #[error("cannot isolate: {0}")]
    Isolation(#[from] IsolationError),
    #[error("start interrupted: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl Supervisor {
    /// Start every spec, `START_CONCURRENCY` at a time; each ends in the table as
    /// `Running` or `FailedToStart` with the reason.
    pub async fn start_all(self: &Arc<Self>, specs: Vec<AttemptSpec>) {
        futures::stream::iter(specs)
            .for_each_concurrent(START_CONCURRENCY, |spec| self.start(spec))
            .await;
    }

    async fn start(self: &Arc<Self>, spec: AttemptSpec) {
        let span = super::attempt_span(&self.machine, &spec.job, spec.index, spec.id);
        self.start_in_span(spec).instrument(span).await
    }

    async fn start_in_span(self: &Arc<Self>, spec: AttemptSpec) {
        let id = spec.id;
        match self.launch(&spec, false).await {
            Ok((run, cgroup, exit)) => {
                let (job, index) = (spec.job.clone(), spec.index);
                let cg = cgroup.as_ref().map(|cg| cg.name());
                tracing::info!(attempt = %id, job = %job, index, pid = run.task.pid,
                    keeper = run.shim.pid, cgroup = cg.as_deref().unwrap_or("-"), "attempt started");
                self.metrics.started();
                let exited = CancellationToken::new();
                // Insert before the watcher runs so the exit always finds the entry.
                self.table.insert(
                    Attempt::new(
                        spec,
                        Phase::Running {
                            pid: run.task.pid,
                            started_at: run.started_at,
                        },
                        exited.clone(),
                    )
                    .with_cgroup(cgroup.clone()),
                );
                self.watch(
                    id,
                    job,
                    index,
                    run.pgid,
                    exited,
                    cgroup,
                    Keeper::Connected {
                        task: run.task,
                        exit,
                    },
                    self.record_dir(id),
                );
            }
            Err(e) => {
                tracing::warn!(attempt = %id, job = %spec.job, index = spec.index, error = %e, "attempt failed to start");
                self.metrics.failed_to_start();
                let exited = CancellationToken::new();
                exited.cancel();
                self.table.insert(Attempt::new(
                    spec,
                    Phase::FailedToStart {
                        at: Utc::now(),
                        message: e.to_string(),
                    },
                    exited,
                ));
                self.nudger.request();
            }
        }
    }

    /// What the keeper is told to run: argv (never a shell), a clean environment,
    /// the sandbox as working directory and HOME.
    pub(super) fn launch_record(&self, spec: &AttemptSpec) -> Result<Launch, StartError> {
        if spec.command.is_empty() {
            return Err(StartError::EmptyCommand);
        }
        let sandbox = self.sandboxes.join(spec.id.to_string());
        let records = self.record_dir(spec.id);
        let mut env = borg_env(spec, &self.machine);
        env.insert("PATH".into(), self.path_env.clone());
        env.insert("HOME".into(), sandbox.display().to_string());
        Ok(Launch {
            spec: spec.clone(),
            argv: spec.command.clone(),
            env,
            stdout: sandbox.join("stdout"),
            stderr: sandbox.join("stderr"),
            pid_files: vec![records.join(records::TASK_PID)],
            log_max_bytes: self.log_max_bytes,
            run_as: self.run_as,
            cgroup: None,
            cwd: sandbox,
            records,
            created_at: Utc::now(),
        })
    }

    /// Run attempt `spec` again in place: a new process and cgroup, same sandbox.
    pub(super) async fn relaunch(&self, spec: &AttemptSpec) -> Result<Launched, StartError> {
        self.launch(spec, true).await
    }

    /// `again`: a restart, whose previous run's records are cleared first.
    async fn launch(&self, spec: &AttemptSpec, again: bool) -> Result<Launched, StartError> {
        let mut launch = self.launch_record(spec)?;
        let spec_id = spec.id;
        let keeper = Arc::clone(&self.keeper);
        let isolator = Arc::clone(&self.isolator);
        let isolator_after = Arc::clone(&self.isolator);
        let pids = self.pids_limit;
        let ((answer, exit), cgroup) = tokio::task::spawn_blocking(move || {
            let cgroup = isolation::create(&*isolator, &launch.spec, pids)?;
            if let Some(cg) = &cgroup {
                // First, so `task.pid` names a task that is in its cgroup.
                let mut files = cg.join_files();
                files.append(&mut launch.pid_files);
                launch.pid_files = files;
                launch.cgroup = Some(cg.clone());
            }
            match ask_keeper(&keeper, &launch, again) {
                Ok(receivers) => Ok((receivers, cgroup)),
                Err(e) => {
                    discard(&*isolator, spec_id, cgroup);
                    Err(e)
                }
            }
        })
        .await??;
        let failed = match answer.await {
            Ok(Answer::Started(run)) => return Ok((run, cgroup.map(Arc::new), exit)),
            Ok(Answer::Failed(why)) => StartError::Task(why),
            Err(_) => StartError::KeeperSilent,
        };
        if cgroup.is_some() {
            let _ = tokio::task::spawn_blocking(move || discard(&*isolator_after, spec_id, cgroup))
                .await;
        }
        Err(failed)
    }
}

/// A started run: what the keeper recorded (its pid and the task's), the run's
/// cgroup, and its end to come.
pub(super) type Launched = (
    Run,
    Option<Arc<AttemptCgroup>>,
    tokio::sync::oneshot::Receiver<records::ExitRecord>,
);

/// Blocking: empty and remove the cgroup of a run that did not start.
fn discard(isolator: &dyn Isolator, id: AttemptId, cgroup: Option<AttemptCgroup>) {
    let Some(cg) = cgroup else { return };
    if let Err(e) = cg
        .kill_all()
        .and_then(|()| isolator.retire(id, Arc::new(cg), None))
    {
        tracing::warn!(error = %e, "could not remove the cgroup of a failed start");
    }
}

/// Blocking: sandbox, record dir, launch record, and the request to the
/// keeper; returns where its answer and the run's end come.
fn ask_keeper(
    keeper: &KeeperClient,
    launch: &Launch,
    again: bool,
) -> Result<StartReceivers, StartError> {
    let (sandbox, dir) = (&launch.cwd, launch.record_dir());
    let sandbox_err = |source| StartError::Sandbox {
        path: sandbox.display().to_string(),
        source,
    };
    let record_err = |source| {
        StartError::Record(RecordError::Io {
            path: dir.to_path_buf(),
            source,
        })
    };
    // The records first: the janitor takes a sandbox without records for one
    // a reboot left behind.
    std::fs::create_dir_all(dir).map_err(record_err)?;
    std::fs::create_dir_all(sandbox).map_err(sandbox_err)?;
    if let (Some(user), false) = (launch.run_as, again) {
        // The task's working directory and HOME: its own to write in.
        std::os::unix::fs::chown(sandbox, Some(user.uid), Some(user.gid)).map_err(sandbox_err)?;
    }
    if again {
        crate::logs::keep_previous_run(sandbox).map_err(sandbox_err)?;
        for name in [records::EXIT, records::RUN, records::TASK_PID] {
            match std::fs::remove_file(dir.join(name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(record_err(e)),
                _ => {}
            }
        }
    }
    // Encoded once: the record on disk and the request are the same bytes.
    let json = serde_json::to_vec(launch).map_err(|source| RecordError::Json {
        path: dir.join(records::LAUNCH),
        source,
    })?;
    records::write_fresh_bytes(dir, records::LAUNCH, &json)?;
    keeper
        .start_encoded(sandbox, &json)
        .map_err(|source| StartError::Keeper {
            exe: keeper.exe().display().to_string(),
            source,
        })
}

/// The executable to run the keeper with when none is configured: this one.
pub fn default_keeper_exe() -> std::io::Result<PathBuf> {
    std::env::current_exe()
}
