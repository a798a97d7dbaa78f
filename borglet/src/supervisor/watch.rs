//! Waiting for an attempt's end: the shim that keeps it (our child, or one a
//! previous borglet started) exits once it has written how the task ended; the
//! watcher then reads that record, clears out what is left of the task's process
//! group and records the exit.

use super::{stop, Supervisor};
use crate::metrics::Metrics;
use crate::nudge::Nudger;
use crate::records::{self, Ended, ExitRecord, ProcId};
use crate::state::{AttemptTable, Event, Exit};
use borg_shared::AttemptId;
use chrono::Utc;
use nix::sys::signal::Signal;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;

/// How often to look for a process's end where pidfds are not available.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// What keeps the task and tells of its end.
pub(super) enum Keeper {
    /// A shim this borglet started.
    Child(tokio::process::Child),
    /// A shim a previous borglet started.
    Shim(ProcId),
    /// The task itself, whose shim is gone: its end is seen, its status is not.
    Orphan(ProcId),
}

/// What the watcher of one attempt needs once the process is gone.
pub(super) struct Watch {
    table: Arc<AttemptTable>,
    metrics: Arc<Metrics>,
    nudger: Arc<Nudger>,
    id: AttemptId,
    job: String,
    index: i32,
    pgid: i32,
    sandbox: PathBuf,
    exited: CancellationToken,
}

impl Supervisor {
    /// Watch attempt `id` (already in the table) until it ends.
    pub(super) fn watch(
        &self,
        id: AttemptId,
        job: String,
        index: i32,
        pgid: i32,
        exited: CancellationToken,
        keeper: Keeper,
    ) {
        let w = Watch {
            table: Arc::clone(&self.table),
            metrics: Arc::clone(&self.metrics),
            nudger: Arc::clone(&self.nudger),
            sandbox: self.sandboxes.join(id.to_string()),
            id,
            job,
            index,
            pgid,
            exited,
        };
        tokio::spawn(w.run(keeper));
    }
}

impl Watch {
    async fn run(self, keeper: Keeper) {
        let exit = match keeper {
            Keeper::Child(mut child) => {
                if let Err(e) = child.wait().await {
                    tracing::warn!(attempt = %self.id, error = %e, "waiting for the shim failed");
                }
                self.read_exit().await
            }
            Keeper::Shim(shim) => {
                wait_gone(shim).await;
                self.read_exit().await
            }
            Keeper::Orphan(task) => {
                wait_gone(task).await;
                Exit::Unknown("the task's shim was gone: its exit status is unknown".into())
            }
        };
        let Watch {
            table,
            metrics,
            nudger,
            id,
            job,
            index,
            pgid,
            exited,
            ..
        } = self;
        // The attempt ends with its leader: anything it left in its group (background
        // children) goes too, so no stray process outlives the attempt unaccounted.
        // The group id cannot have been reused while members remain; once it is
        // empty this is ESRCH, which counts as success.
        if let Err(e) = stop::signal_group(pgid, Signal::SIGKILL) {
            tracing::warn!(attempt = %id, pgid, error = %e, "could not kill leftovers of the process group");
        }
        match &exit {
            Exit::Code(code) => {
                tracing::info!(attempt = %id, job = %job, index, pid = pgid, exit_code = code, "attempt exited")
            }
            Exit::Signal(sig) => {
                tracing::info!(attempt = %id, job = %job, index, pid = pgid, signal = sig, "attempt killed by signal")
            }
            Exit::Unknown(why) => {
                tracing::warn!(attempt = %id, job = %job, index, pid = pgid, why = %why, "attempt ended, status unknown")
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

    async fn read_exit(&self) -> Exit {
        let dir = self.sandbox.clone();
        let read =
            tokio::task::spawn_blocking(move || records::read::<ExitRecord>(&dir, records::EXIT))
                .await;
        match read {
            Ok(Ok(Some(rec))) => exit_of(rec.ended),
            Ok(Ok(None)) => {
                Exit::Unknown("the shim ended without recording the task's exit".into())
            }
            Ok(Err(e)) => Exit::Unknown(format!("cannot read the exit record: {e}")),
            Err(e) => Exit::Unknown(format!("reading the exit record was interrupted: {e}")),
        }
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
