//! Waiting for an attempt's end: the keeper tells once it has written how the
//! task ended (if the keeper dies first, the record or the task's own end is
//! looked at instead); the watcher then clears out what is left of the task's process
//! group and of its cgroup (reading its OOM kills and peak memory, with the
//! stderr tail, for the death certificate), records the exit, or restarts the
//! task in place after a backoff (`crate::restart` decides) in a cgroup whose
//! counters are its own.

use super::{stop, Supervisor};
use crate::health::{self, ExecTarget, Probing};
use crate::isolation::{self, AttemptCgroup};
use crate::records::{self, Ended, ExitRecord, ProcId, Restarts};
use crate::restart::Decision;
use crate::state::{Event, Exit};
use borg_shared::wire::ProbeKind;
use borg_shared::AttemptId;
use chrono::Utc;
use nix::sys::signal::Signal;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How often to look for a process's end where pidfds are not available.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// What keeps the task and tells of its end.
pub(super) enum Keeper {
    /// The keeper this borglet is connected to: its end comes on `exit`, which
    /// fails if the keeper dies first.
    Connected {
        task: ProcId,
        exit: tokio::sync::oneshot::Receiver<ExitRecord>,
    },
    /// Another process that writes `exit.json` and then exits: a keeper this
    /// borglet is not connected to, or a per-attempt shim of an earlier version.
    Shim(ProcId),
    /// The task itself, whose keeper is gone: its end is seen, its status is not.
    Orphan(ProcId),
}

/// What the watcher of one attempt needs once the process is gone.
pub(super) struct Watch {
    sup: Arc<Supervisor>,
    id: AttemptId,
    job: String,
    index: i32,
    pgid: i32,
    sandbox: PathBuf,
    /// Its record dir (`exit.json`, `restarts.json`).
    records: PathBuf,
    exited: CancellationToken,
    /// The current run's cgroup (`None` when unisolated).
    cgroup: Option<Arc<AttemptCgroup>>,
}

impl Supervisor {
    /// Watch attempt `id` (already in the table, its records in `records`)
    /// until it ends, restarting it in place when its policy says so.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn watch(
        self: &Arc<Self>,
        id: AttemptId,
        job: String,
        index: i32,
        pgid: i32,
        exited: CancellationToken,
        cgroup: Option<Arc<AttemptCgroup>>,
        keeper: Keeper,
        records: PathBuf,
    ) {
        let span = super::attempt_span(&self.machine, &job, index, id);
        let w = Watch {
            sup: Arc::clone(self),
            sandbox: self.sandboxes.join(id.to_string()),
            records,
            id,
            job,
            index,
            pgid,
            exited,
            cgroup,
        };
        tokio::spawn(w.run(keeper).instrument(span));
        self.probe(id);
    }

    /// Probe attempt `id` for its lifetime if its spec has a health check.
    fn probe(self: &Arc<Self>, id: AttemptId) {
        let Some(Some((spec, exited))) = self.table.with_attempt(id, |a| {
            a.spec
                .health
                .is_some()
                .then(|| (a.spec.clone(), a.exited.clone()))
        }) else {
            return;
        };
        let Some(check) = spec.health.clone() else {
            return;
        };
        let exec = match &check.probe {
            ProbeKind::Exec { .. } => self.launch_record(&spec).ok().map(|l| ExecTarget {
                argv: Vec::new(),
                env: l.env,
                cwd: l.cwd,
                run_as: l.run_as,
                cgroup: None,
            }),
            _ => None,
        };
        health::spawn(Probing {
            table: Arc::clone(&self.table),
            prober: Arc::clone(&self.prober),
            metrics: Arc::clone(&self.metrics),
            nudger: Arc::clone(&self.nudger),
            id,
            job: spec.job.clone(),
            index: spec.index,
            kill_grace: Duration::from_millis(spec.kill_grace_ms),
            check,
            exec,
            exited,
        });
    }
}

impl Watch {
    async fn run(mut self, mut keeper: Keeper) {
        loop {
            let (exit, stderr_bytes) = self.wait(keeper).await;
            let (id, pgid) = (self.id, self.pgid);
            // The run ends with its leader: anything it left in its group (background
            // children) goes too, so no stray process outlives it unaccounted. The
            // group id cannot have been reused while members remain; once it is
            // empty this is ESRCH, which counts as success.
            if let Err(e) = stop::signal_group(pgid, Signal::SIGKILL) {
                tracing::warn!(attempt = %id, pgid, error = %e, "could not kill leftovers of the process group");
            }
            self.finish_run(stderr_bytes).await;
            self.log_exit(&exit);
            self.sup.metrics.exited(&exit);
            let decision = self.sup.table.on_exit(id, exit.clone(), Utc::now());
            // Recorded first, so the sync this asks for reports the exit.
            self.sup.nudger.request();
            let wait = match decision {
                Ok(Decision::Restart(wait)) => wait,
                Ok(Decision::Final(note)) => {
                    if let Some(note) = note {
                        tracing::info!(attempt = %id, job = %self.job, index = self.index, why = %note, "attempt over");
                    }
                    self.exited.cancel();
                    return;
                }
                Err(e) => {
                    tracing::error!(attempt = %id, error = %e, "could not record the exit");
                    self.exited.cancel();
                    return;
                }
            };
            match self.restart_after(wait, &exit).await {
                Some((pgid, cgroup, next)) => {
                    self.pgid = pgid;
                    self.cgroup = cgroup;
                    // A run launched now records in the attempt's record dir,
                    // though a re-adopted one may have kept its sandbox's.
                    self.records = self.sup.record_dir(self.id);
                    keeper = next;
                }
                None => return,
            }
        }
    }

    /// Wait out the backoff (a stop ends it), then run the task again. `None`
    /// when the attempt is over instead.
    async fn restart_after(
        &self,
        wait: Duration,
        exit: &Exit,
    ) -> Option<(i32, Option<Arc<AttemptCgroup>>, Keeper)> {
        let (id, sup) = (self.id, &self.sup);
        let (spec, restarts, last_cause) = sup.table.spec_of(id)?;
        tracing::info!(attempt = %id, job = %self.job, index = self.index, restarts,
            wait_ms = wait.as_millis() as u64, last_exit = %exit.describe(), "restarting in place after a backoff");
        let dir = self.records.clone();
        let record = Restarts {
            restarts,
            last_exit: Some(ended_of(exit)),
            last_cause,
        };
        let noted =
            tokio::task::spawn_blocking(move || records::write(&dir, records::RESTARTS, &record))
                .await;
        if !matches!(noted, Ok(Ok(()))) {
            tracing::warn!(attempt = %id, "cannot note the restart count on disk");
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            // Stopped while waiting: the table has already ended it.
            () = self.exited.cancelled() => return None,
        }
        match sup.relaunch(&spec).await {
            Ok((run, cgroup, exit)) => {
                let event = Event::Restarted {
                    at: run.started_at,
                    pid: run.task.pid,
                };
                if sup.table.apply(id, event).is_err() {
                    // Stopped during the start: this run is not wanted.
                    let _ = stop::signal_group(run.pgid, Signal::SIGKILL);
                    let sandbox = self.sandbox.clone();
                    let isolator = Arc::clone(&sup.isolator);
                    let _ = tokio::task::spawn_blocking(move || {
                        isolation::finish(&*isolator, id, cgroup, &sandbox, true)
                    })
                    .await;
                    return None;
                }
                // Set after `Restarted`: a stop from now on kills this run's cgroup.
                sup.table.set_cgroup(id, cgroup.clone());
                sup.metrics.started();
                let cg = cgroup.as_ref().map(|cg| cg.name());
                tracing::info!(attempt = %id, pid = run.task.pid, restarts,
                    cgroup = cg.as_deref().unwrap_or("-"), "attempt restarted in place");
                sup.nudger.request();
                let keeper = Keeper::Connected {
                    task: run.task,
                    exit,
                };
                Some((run.pgid, cgroup, keeper))
            }
            Err(e) => {
                tracing::warn!(attempt = %id, error = %e, "restart failed");
                sup.metrics.failed_to_start();
                let event = Event::RestartFailed {
                    at: Utc::now(),
                    message: e.to_string(),
                };
                if let Err(e) = sup.table.apply(id, event) {
                    tracing::warn!(attempt = %id, error = %e, "could not record the failed restart");
                }
                self.exited.cancel();
                sup.nudger.request();
                None
            }
        }
    }

    /// The run is over: empty its cgroup (a daemon that escaped with setsid goes
    /// too), read what the kernel counted (an OOM kill, the peak), remove it, and
    /// keep the stderr tail; all of it goes on the attempt's report.
    /// `stderr_bytes`: what the keeper counted of the run's stderr, if it did
    /// (none: its tail is not read).
    async fn finish_run(&mut self, stderr_bytes: Option<u64>) {
        let (id, cgroup, sandbox) = (self.id, self.cgroup.take(), self.sandbox.clone());
        let isolator = Arc::clone(&self.sup.isolator);
        let ending = tokio::task::spawn_blocking(move || {
            let tail = stderr_bytes != Some(0);
            isolation::finish(&*isolator, id, cgroup, &sandbox, tail)
        })
        .await
        .unwrap_or_default();
        if ending.oom_killed {
            self.sup.metrics.oom_killed();
            tracing::info!(attempt = %id, job = %self.job, index = self.index, pid = self.pgid,
                peak_memory = ?ending.peak_memory, "attempt oom-killed");
        }
        self.sup.table.set_ending(id, ending);
    }

    /// How the run ended, and the bytes of stderr its keeper counted, if it did.
    async fn wait(&self, keeper: Keeper) -> (Exit, Option<u64>) {
        let exit = match keeper {
            Keeper::Connected { task, exit } => match exit.await {
                Ok(record) => return (exit_of(record.ended), record.stderr_bytes),
                // The keeper died: it may have recorded the end just before.
                Err(_) => match self.read_record().await {
                    Ok(Some(record)) => exit_of(record.ended),
                    _ => {
                        wait_gone(task).await;
                        match self.read_record().await {
                            Ok(Some(record)) => exit_of(record.ended),
                            _ => Exit::Unknown(
                                "the keeper was gone: the task's exit status is unknown".into(),
                            ),
                        }
                    }
                },
            },
            Keeper::Shim(shim) => {
                wait_gone(shim).await;
                self.read_exit().await
            }
            Keeper::Orphan(task) => {
                wait_gone(task).await;
                Exit::Unknown("the task's keeper was gone: its exit status is unknown".into())
            }
        };
        (exit, None)
    }

    fn log_exit(&self, exit: &Exit) {
        let (id, job, index, pid) = (self.id, &self.job, self.index, self.pgid);
        match exit {
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
    }

    async fn read_record(&self) -> Result<Option<ExitRecord>, String> {
        let dir = self.records.clone();
        let read =
            tokio::task::spawn_blocking(move || records::read::<ExitRecord>(&dir, records::EXIT))
                .await;
        match read {
            Ok(Ok(rec)) => Ok(rec),
            Ok(Err(e)) => Err(format!("cannot read the exit record: {e}")),
            Err(e) => Err(format!("reading the exit record was interrupted: {e}")),
        }
    }

    async fn read_exit(&self) -> Exit {
        match self.read_record().await {
            Ok(Some(rec)) => exit_of(rec.ended),
            Ok(None) => Exit::Unknown("its keeper ended without recording the task's exit".into()),
            Err(e) => Exit::Unknown(e),
        }
    }
}

fn ended_of(exit: &Exit) -> Ended {
    match exit {
        Exit::Code(c) => Ended::Code(*c),
        Exit::Signal(s) => Ended::Signal(*s),
        Exit::Unknown(why) => Ended::ExecFailed(why.clone()),
    }
}

pub(super) fn exit_of(ended: Ended) -> Exit {
    match ended {
        Ended::Code(c) => Exit::Code(c),
        Ended::Signal(s) => Exit::Signal(s),
        Ended::ExecFailed(why) => Exit::Unknown(why),
    }
}

/// Until process `p` has exited (a zombie has). Uses a pidfd, which becomes
/// readable when the process exits whether or not it is our child.
pub(super) async fn wait_gone(p: ProcId) {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p.pid, 0) };
    if fd >= 0 {
        // SAFETY: a fresh fd this process owns and nothing else holds.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // Checked after opening: the fd names the process we verified, not a reuse.
        if !p.is_alive() {
            return;
        }
        // SAFETY: the OwnedFd moves into the AsyncFd, which alone holds it until dropped.
        let registered =
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
        if let Ok(fd) = registered {
            let _ = fd.readable().await;
            return;
        }
    }
    while p.is_alive() {
        tokio::time::sleep(POLL_EVERY).await;
    }
}
