//! Starting an attempt: sandbox, argv (never a shell), a fresh session per task, log
//! files, and a reaper task that records how the process ended.

use super::{stop, Supervisor};
use crate::isolation::{self, AttemptCgroup, IsolationError};
use crate::metrics::Metrics;
use crate::nudge::Nudger;
use crate::state::{Attempt, AttemptIsolation, AttemptTable, Event, Exit, Phase};
use borg_shared::wire::{borg_env, AttemptSpec};
use borg_shared::AttemptId;
use chrono::Utc;
use nix::sys::signal::Signal;
use std::fs::{File, OpenOptions};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("empty command")]
    EmptyCommand,
    #[error("cannot prepare sandbox {path}: {source}")]
    Sandbox {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("started process has no pid")]
    NoPid,
    #[error("cannot isolate: {0}")]
    Isolation(#[from] IsolationError),
}

impl Supervisor {
    /// Start `spec` and record it in the table as `Running`, or as `FailedToStart`
    /// with the reason. Fast (a fork/exec); the exit is awaited in a spawned task.
    pub fn start(&self, spec: AttemptSpec) {
        let id = spec.id;
        let exited = CancellationToken::new();
        match self.spawn(&spec) {
            Ok((child, pid, cgroup)) => {
                let (job, index) = (spec.job.clone(), spec.index);
                tracing::info!(attempt = %id, job = %job, index, pid, "attempt started");
                self.metrics.started();
                // Insert before the reaper runs so its exit always finds the entry.
                self.table.insert(Attempt {
                    spec,
                    phase: Phase::Running {
                        pid,
                        started_at: Utc::now(),
                    },
                    exited: exited.clone(),
                    isolation: AttemptIsolation {
                        cgroup: cgroup.clone(),
                        ..Default::default()
                    },
                });
                let reaper = Reaper {
                    cgroup,
                    sandbox: self.sandboxes.join(id.to_string()),
                    table: Arc::clone(&self.table),
                    metrics: Arc::clone(&self.metrics),
                    nudger: Arc::clone(&self.nudger),
                    id,
                    job,
                    index,
                    pid,
                    exited,
                };
                tokio::spawn(reaper.reap(child));
            }
            Err(e) => {
                tracing::warn!(attempt = %id, job = %spec.job, index = spec.index, error = %e, "attempt failed to start");
                self.metrics.failed_to_start();
                exited.cancel();
                self.table.insert(Attempt {
                    spec,
                    phase: Phase::FailedToStart {
                        at: Utc::now(),
                        message: e.to_string(),
                    },
                    exited,
                    isolation: AttemptIsolation::default(),
                });
                self.nudger.request();
            }
        }
    }

    fn spawn(
        &self,
        spec: &AttemptSpec,
    ) -> Result<(Child, i32, Option<Arc<AttemptCgroup>>), StartError> {
        let (program, args) = spec.command.split_first().ok_or(StartError::EmptyCommand)?;
        let sandbox = self.sandboxes.join(spec.id.to_string());
        let sandbox_err = |source| StartError::Sandbox {
            path: sandbox.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&sandbox).map_err(sandbox_err)?;
        let stdout = open_log(&sandbox, "stdout").map_err(sandbox_err)?;
        let stderr = open_log(&sandbox, "stderr").map_err(sandbox_err)?;
        let (cgroup, join) = isolation::prepare(&*self.isolator, spec, self.pids_limit)?;

        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("PATH", &self.path_env)
            .env("HOME", &sandbox)
            .envs(borg_env(spec, &self.machine))
            .current_dir(&sandbox)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            // Tasks must outlive a borglet restart; stopping is always explicit.
            .kill_on_drop(false);
        // SAFETY: the closure runs in the forked child before exec and only makes
        // the setsid(2) and write(2) syscalls, which are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                // Own session and process group (pgid = pid): the task survives the
                // borglet's terminal going away, and a stop can signal the whole group.
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                join.join_self()
            });
        }
        let child = cmd.spawn().map_err(|source| {
            if let Some(cg) = &cgroup {
                let _ = cg.remove();
            }
            StartError::Spawn {
                program: program.clone(),
                source,
            }
        })?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or(StartError::NoPid)?;
        Ok((child, pid, cgroup.map(Arc::new)))
    }
}

fn open_log(sandbox: &Path, name: &str) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(sandbox.join(name))
}

/// What the reaper of one attempt needs once the process is gone.
struct Reaper {
    table: Arc<AttemptTable>,
    metrics: Arc<Metrics>,
    nudger: Arc<Nudger>,
    id: AttemptId,
    job: String,
    index: i32,
    pid: i32,
    exited: CancellationToken,
    cgroup: Option<Arc<AttemptCgroup>>,
    sandbox: PathBuf,
}

impl Reaper {
    /// Await the process, clear out what is left of its group, record the exit.
    async fn reap(self, mut child: Child) {
        let Reaper {
            table,
            metrics,
            nudger,
            id,
            job,
            index,
            pid,
            exited,
            cgroup,
            sandbox,
        } = self;
        let exit = match child.wait().await {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => Exit::Code(code),
                (None, Some(sig)) => Exit::Signal(sig),
                (None, None) => Exit::Unknown(format!("unrecognised wait status {status}")),
            },
            Err(e) => Exit::Unknown(format!("waiting for the process failed: {e}")),
        };
        // The attempt ends with its leader: anything it left in its group (background
        // children) goes too, so no stray process outlives the attempt unaccounted.
        // The group id cannot have been reused while members remain; once it is
        // empty this is ESRCH, which counts as success.
        if let Err(e) = stop::signal_group(pid, Signal::SIGKILL) {
            tracing::warn!(attempt = %id, pid, error = %e, "could not kill leftovers of the process group");
        }
        let ending =
            tokio::task::spawn_blocking(move || isolation::finish(id, cgroup.as_deref(), &sandbox))
                .await
                .unwrap_or_default();
        if ending.oom_killed {
            metrics.oom_killed();
            tracing::info!(attempt = %id, job = %job, index, pid, peak_memory = ?ending.peak_memory, "attempt oom-killed");
        }
        table.set_ending(id, ending);
        match &exit {
            Exit::Code(code) => {
                tracing::info!(attempt = %id, job = %job, index, pid, exit_code = code, "attempt exited")
            }
            Exit::Signal(sig) => {
                tracing::info!(attempt = %id, job = %job, index, pid, signal = sig, "attempt killed by signal")
            }
            Exit::Unknown(why) => {
                tracing::warn!(attempt = %id, job = %job, index, pid, why = %why, "attempt ended, status unknown")
            }
        }
        metrics.exited(&exit);
        let event = Event::ProcessExited {
            at: Utc::now(),
            exit,
        };
        if let Err(e) = table.apply(id, event) {
            tracing::error!(attempt = %id, error = %e, "could not record the exit");
        }
        exited.cancel();
        // Recorded first, so the sync this asks for reports the exit.
        nudger.request();
    }
}
