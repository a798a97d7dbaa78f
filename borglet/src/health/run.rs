//! The probing loop of one attempt: for each run (a new pid after an in-place
//! restart is a new run, with a fresh count), wait out the initial delay from the
//! run's start, then probe every interval. Its findings go into the attempt
//! table (the sync reports them) and a change of health asks the master for a
//! sync. After `failures` failed probes in a row the run is ended (SIGTERM to
//! its group, SIGKILL to the group and its cgroup after the kill grace); the
//! watcher then restarts it in place, with this cause.

use super::probe::{ExecTarget, Prober, Target};
use super::tracker::{Tracker, Verdict};
use crate::isolation::AttemptCgroup;
use crate::metrics::Metrics;
use crate::nudge::Nudger;
use crate::state::{AttemptTable, Phase};
use borg_shared::wire::{HealthProbe, ProbeKind};
use borg_shared::AttemptId;
use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often to look again while there is no run to probe (backoff, stopping,
/// or the ended run not yet gone).
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Everything the loop of one attempt needs.
pub(crate) struct Probing {
    pub table: Arc<AttemptTable>,
    pub prober: Arc<dyn Prober>,
    pub metrics: Arc<Metrics>,
    pub nudger: Arc<Nudger>,
    pub id: AttemptId,
    pub job: String,
    pub index: i32,
    pub check: HealthProbe,
    /// The task's environment, sandbox and user, for an exec probe.
    pub exec: Option<ExecTarget>,
    pub kill_grace: Duration,
    /// Cancelled once the attempt is over: the loop ends.
    pub exited: CancellationToken,
}

/// Probe the attempt until it is over.
pub(crate) fn spawn(p: Probing) {
    tokio::spawn(p.run());
}

/// Where the attempt's current run stands.
enum RunView {
    Over,
    Waiting,
    Running {
        pid: i32,
        started_at: DateTime<Utc>,
        cgroup: Option<Arc<AttemptCgroup>>,
    },
}

impl Probing {
    async fn run(self) {
        let interval = Duration::from_millis(self.check.interval_ms);
        let timeout = Duration::from_millis(self.check.timeout_ms);
        let delay = chrono::Duration::milliseconds(self.check.initial_delay_ms as i64);
        let mut tracker = Tracker::new(self.check.failures);
        let mut probing: Option<i32> = None;
        let mut first_at = Instant::now();
        let mut ended: Option<i32> = None;
        loop {
            let (pid, started_at, cgroup) = match self.view() {
                RunView::Over => return,
                RunView::Waiting => {
                    if !self.pause(IDLE_POLL).await {
                        return;
                    }
                    continue;
                }
                RunView::Running {
                    pid,
                    started_at,
                    cgroup,
                } => (pid, started_at, cgroup),
            };
            if ended == Some(pid) {
                // Ended for failing; waiting for the watcher to see it go.
                if !self.pause(IDLE_POLL).await {
                    return;
                }
                continue;
            }
            if probing != Some(pid) {
                probing = Some(pid);
                tracker = Tracker::new(self.check.failures);
                self.record(pid, None, None);
                // From the run's start (a re-adopted one started long ago), on
                // the monotonic clock from here on.
                let left = (started_at + delay - Utc::now())
                    .to_std()
                    .unwrap_or_default();
                first_at = Instant::now() + left;
            }
            let now = Instant::now();
            if now < first_at {
                if !self.pause((first_at - now).min(interval)).await {
                    return;
                }
                continue;
            }
            let result = match self.target(cgroup) {
                Some(target) => self.prober.probe(&target, timeout).await,
                None => Err("the task's environment is unknown: the command cannot run".into()),
            };
            self.metrics.probed(result.is_ok());
            // A probe of a run that has ended since says nothing of the next one.
            if !matches!(self.view(), RunView::Running { pid: now, .. } if now == pid) {
                continue;
            }
            match tracker.observe(result) {
                Verdict::StillHealthy => {}
                Verdict::BecameHealthy => {
                    tracing::info!(attempt = %self.id, job = %self.job, index = self.index, pid, "healthy");
                    self.record(pid, Some(true), None);
                    self.nudger.request();
                }
                Verdict::Failing { message, in_a_row } => {
                    tracing::info!(attempt = %self.id, job = %self.job, index = self.index, pid,
                        in_a_row, why = %message, "health probe failed");
                    self.record(pid, tracker.healthy(), Some(message));
                }
                Verdict::Unhealthy { reason } => {
                    tracing::warn!(attempt = %self.id, job = %self.job, index = self.index, pid,
                        why = %reason, "unhealthy: ending the run to restart it");
                    self.record(pid, Some(false), Some(reason.clone()));
                    self.nudger.request();
                    self.metrics.health_restart();
                    ended = Some(pid);
                    self.end_run(pid, format!("health check failed: {reason}"))
                        .await;
                    continue;
                }
            }
            if !self.pause(interval).await {
                return;
            }
        }
    }

    /// Sleep `d`; false if the attempt ended meanwhile.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            () = self.exited.cancelled() => false,
        }
    }

    fn view(&self) -> RunView {
        self.table
            .with_attempt(self.id, |a| match &a.phase {
                Phase::Running { pid, started_at } => RunView::Running {
                    pid: *pid,
                    started_at: *started_at,
                    cgroup: a.isolation.cgroup.clone(),
                },
                p if p.is_finished() => RunView::Over,
                _ => RunView::Waiting,
            })
            .unwrap_or(RunView::Over)
    }

    /// What to probe for the current run; `None` for an exec probe without the
    /// task's environment (never run as the borglet instead).
    fn target(&self, cgroup: Option<Arc<AttemptCgroup>>) -> Option<Target> {
        Some(match &self.check.probe {
            ProbeKind::Http { port, path } => Target::Http {
                port: *port,
                path: path.clone(),
            },
            ProbeKind::Tcp { port } => Target::Tcp { port: *port },
            ProbeKind::Exec { command } => {
                let mut t = self.exec.clone()?;
                t.argv.clone_from(command);
                t.cgroup = cgroup;
                Target::Exec(t)
            }
        })
    }

    /// Set the health of run `pid`, if it is still the one running.
    fn record(&self, pid: i32, healthy: Option<bool>, message: Option<String>) {
        self.table.with_attempt(self.id, |a| {
            if matches!(a.phase, Phase::Running { pid: now, .. } if now == pid) {
                a.health.healthy = healthy;
                a.health.message = message;
                if healthy.is_none() {
                    a.health.kill_reason = None;
                }
            }
        });
    }

    /// End run `pid` as a stop would, but leaving the attempt to its restart
    /// policy: the cause is noted first, so the exit the watcher sees carries it.
    async fn end_run(&self, pid: i32, cause: String) {
        let (id, grace) = (self.id, self.kill_grace);
        let marked = self.table.with_attempt(id, |a| match a.phase {
            Phase::Running { pid: now, .. } if now == pid => {
                a.health.kill_reason = Some(cause);
                Some(a.isolation.cgroup.clone())
            }
            _ => None,
        });
        let Some(Some(cgroup)) = marked else {
            return;
        };
        if let Err(e) = crate::supervisor::signal_group(pid, Signal::SIGTERM) {
            tracing::warn!(attempt = %id, pid, error = %e, "SIGTERM failed");
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !matches!(self.view(), RunView::Running { pid: now, .. } if now == pid) {
                return;
            }
            tokio::time::sleep(IDLE_POLL.min(grace)).await;
        }
        if !matches!(self.view(), RunView::Running { pid: now, .. } if now == pid) {
            return;
        }
        tracing::info!(attempt = %id, pid, "grace over: SIGKILL");
        if let Err(e) = crate::supervisor::signal_group(pid, Signal::SIGKILL) {
            tracing::warn!(attempt = %id, pid, error = %e, "SIGKILL failed");
        }
        // The same run still: a restart makes a new cgroup under the same path.
        let same_run = matches!(self.view(), RunView::Running { pid: now, .. } if now == pid);
        if let (Some(cg), true) = (cgroup, same_run) {
            match tokio::task::spawn_blocking(move || cg.kill_all()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(attempt = %id, error = %e, "could not empty the cgroup")
                }
                Err(e) => tracing::warn!(attempt = %id, error = %e, "cgroup kill task failed"),
            }
        }
    }
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
