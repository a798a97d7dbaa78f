//! Stopping an attempt: SIGTERM to its process group; once the attempt's grace
//! is over, SIGKILL to the group and to everything in its cgroup. The watcher
//! (`watch.rs`) records the exit and kills whatever is left in the group and the
//! cgroup after the leader is gone.

use super::adopt::STOPPING;
use super::Supervisor;
use crate::state::StopTicket;
use borg_shared::AttemptId;
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::time::Duration;
use tracing::Instrument;

/// After SIGKILL the leader should be reaped at once; warn if it takes longer.
const AFTER_KILL_PATIENCE: Duration = Duration::from_secs(10);

impl Supervisor {
    /// Begin stopping attempt `id` if it is running; the stop proceeds in a task.
    /// Whether a stop was begun (false if it was not running).
    pub fn stop(&self, id: AttemptId) -> bool {
        let Some(ticket) = self.table.begin_stop(id) else {
            return false;
        };
        // Noted on disk, so an exit a restarted borglet finds is known as asked
        // for, with the reason the borglet had, if any (fenced).
        let note = self
            .table
            .with_attempt(id, |a| a.note.clone())
            .flatten()
            .unwrap_or_default();
        let marker = self.record_dir(id).join(STOPPING);
        // An attempt launched before records had a dir of their own keeps them in its sandbox.
        let old_marker = self.sandboxes.join(id.to_string()).join(STOPPING);
        let span = super::attempt_span(&self.machine, &ticket.job, ticket.index, id);
        self.stops.spawn(
            async move {
                let noted =
                    tokio::task::spawn_blocking(move || match std::fs::write(marker, &note) {
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            std::fs::write(old_marker, note)
                        }
                        done => done,
                    })
                    .await;
                if !matches!(noted, Ok(Ok(()))) {
                    tracing::warn!(attempt = %ticket.id, "cannot note the stop on disk");
                }
                stop_group(ticket).await
            }
            .instrument(span),
        );
        true
    }
}

async fn stop_group(t: StopTicket) {
    tracing::info!(attempt = %t.id, job = %t.job, index = t.index, pid = t.pid,
        grace_ms = t.grace.as_millis() as u64, "stopping attempt: SIGTERM");
    if let Err(e) = signal_group(t.pid, Signal::SIGTERM) {
        tracing::warn!(attempt = %t.id, pid = t.pid, error = %e, "SIGTERM failed");
    }
    let exited_in_grace = tokio::time::timeout(t.grace, t.exited.cancelled())
        .await
        .is_ok();
    if exited_in_grace {
        return;
    }
    tracing::info!(attempt = %t.id, pid = t.pid, "grace over: SIGKILL");
    if let Err(e) = signal_group(t.pid, Signal::SIGKILL) {
        tracing::warn!(attempt = %t.id, pid = t.pid, error = %e, "SIGKILL failed");
    }
    // Everything in the cgroup, including what escaped the group with setsid.
    if let Some(cg) = t.cgroup.clone() {
        match tokio::task::spawn_blocking(move || cg.kill_all()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(attempt = %t.id, error = %e, "could not empty the cgroup"),
            Err(e) => tracing::warn!(attempt = %t.id, error = %e, "cgroup kill task failed"),
        }
    }
    if tokio::time::timeout(AFTER_KILL_PATIENCE, t.exited.cancelled())
        .await
        .is_err()
    {
        tracing::warn!(attempt = %t.id, pid = t.pid, "process not reaped after SIGKILL");
    }
}

/// Signal the process group led by `pgid`. A group that is already gone (ESRCH) is
/// success. Refuses pgid 0 and 1: those would hit the borglet's own group or init.
pub fn signal_group(pgid: i32, signal: Signal) -> nix::Result<()> {
    if pgid <= 1 {
        return Err(Errno::EINVAL);
    }
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}
