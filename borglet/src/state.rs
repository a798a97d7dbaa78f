//! The attempt table: every attempt this borglet knows, what phase it is in, and the
//! only function that moves an attempt between phases (`Phase::transition`).
//! Everything the borglet knows about its tasks lives here, in one place, so that
//! re-adoption after a restart has a single table to rebuild.

use crate::health::HealthStatus;
use crate::isolation::{AttemptCgroup, Ending, Sample};
use crate::restart::{Decision, RestartLog};
use borg_shared::wire::{AttemptReport, AttemptSpec, ResourceUsage};
use borg_shared::AttemptId;
use chrono::{DateTime, Utc};
use metrics::Gauge;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How many acknowledged attempt ids are remembered so that a delayed duplicate poll
/// still naming one cannot start it a second time.
const TOMBSTONES: usize = 16_384;

#[path = "state_phase.rs"]
mod phase;
pub use phase::{Event, Exit, InvalidTransition, Phase};

/// One attempt: what the master asked for and where it is now.
#[derive(Debug)]
pub struct Attempt {
    pub spec: AttemptSpec,
    pub phase: Phase,
    /// Cancelled once the process has exited and been reaped (at once for a
    /// failed start), so a stopper can wait for the exit instead of polling.
    pub exited: CancellationToken,
    /// In-place restarts so far.
    pub restarts: RestartLog,
    /// Why the attempt ended where the exit alone does not say (handed back, ...).
    pub note: Option<String>,
    pub isolation: AttemptIsolation,
    /// The current run's health, when the attempt has a health check.
    pub health: HealthStatus,
    /// `report()` as JSON, dropped at every change (`Inner::change`).
    encoded: Option<Box<[u8]>>,
}

/// What isolation knows of an attempt: its cgroup (none when unisolated), the
/// latest usage sample, and what its end added to the exit status.
#[derive(Debug, Default)]
pub struct AttemptIsolation {
    pub cgroup: Option<Arc<AttemptCgroup>>,
    pub usage: Option<ResourceUsage>,
    pub ending: Option<Ending>,
}

impl AttemptIsolation {
    /// `oom-killed, peak memory 64Mi` when the kernel killed the run for memory.
    pub fn oom_cause(&self) -> Option<String> {
        let ending = self.ending.as_ref().filter(|e| e.oom_killed)?;
        Some(match ending.peak_memory {
            Some(peak) => format!("oom-killed, peak memory {peak}"),
            None => "oom-killed".into(),
        })
    }
}

impl Attempt {
    pub fn new(spec: AttemptSpec, phase: Phase, exited: CancellationToken) -> Self {
        Attempt {
            spec,
            phase,
            exited,
            restarts: RestartLog::default(),
            note: None,
            isolation: AttemptIsolation::default(),
            health: HealthStatus::default(),
            encoded: None,
        }
    }

    /// The same, with its cgroup (`None` when unisolated).
    pub fn with_cgroup(mut self, cgroup: Option<Arc<AttemptCgroup>>) -> Self {
        self.isolation.cgroup = cgroup;
        self
    }

    pub fn report(&self) -> AttemptReport {
        let mut r = AttemptReport {
            id: self.spec.id,
            phase: self.phase.wire(),
            pid: None,
            started_at: None,
            finished_at: None,
            exit_code: None,
            signal: None,
            stopped_by_borglet: false,
            message: self.note.clone(),
            restarts: self.restarts.restarts,
            last_exit: self.restarts.last_end(),
            oom_killed: false,
            peak_memory: None,
            stderr_tail: None,
            usage: None,
            healthy: self.health.healthy,
            health_message: self.health.message.clone(),
        };
        if self.phase.is_live() {
            r.usage = self.isolation.usage;
        }
        if let Some(e) = &self.isolation.ending {
            r.oom_killed = e.oom_killed;
            r.peak_memory = e.peak_memory;
            r.stderr_tail = e.stderr_tail.clone();
        }
        match &self.phase {
            Phase::Running { pid, started_at } => {
                r.pid = Some(*pid);
                r.started_at = Some(*started_at);
            }
            Phase::Stopping {
                pid, started_at, ..
            } => {
                r.pid = Some(*pid);
                r.started_at = Some(*started_at);
                r.stopped_by_borglet = true;
            }
            Phase::Exited {
                pid,
                started_at,
                finished_at,
                exit,
                stopped_by_borglet,
            } => {
                r.pid = Some(*pid);
                r.started_at = Some(*started_at);
                r.finished_at = Some(*finished_at);
                r.stopped_by_borglet = *stopped_by_borglet;
                match exit {
                    Exit::Code(c) => r.exit_code = Some(*c),
                    Exit::Signal(s) => r.signal = Some(*s),
                    Exit::Unknown(why) => r.message = Some(why.clone()),
                }
            }
            Phase::FailedToStart { at, message } => {
                r.finished_at = Some(*at);
                r.message = Some(message.clone());
            }
            Phase::Backoff {
                pid, started_at, ..
            } => {
                r.pid = Some(*pid);
                r.started_at = Some(*started_at);
            }
        }
        r
    }
}

/// What a stopper needs to stop one attempt's process group.
#[derive(Debug, Clone)]
pub struct StopTicket {
    pub id: AttemptId,
    pub job: String,
    pub index: i32,
    pub pid: i32,
    pub grace: Duration,
    pub exited: CancellationToken,
    pub cgroup: Option<Arc<AttemptCgroup>>,
}

#[derive(Debug, Default)]
struct Inner {
    attempts: BTreeMap<AttemptId, Attempt>,
    /// How many of `attempts` have a live process: kept by every change of a
    /// phase (`live_delta`), not counted anew at each (a sync of 1,000 starts
    /// made that a walk of the table per start).
    live: usize,
    forgotten: HashSet<AttemptId>,
    forgotten_order: VecDeque<AttemptId>,
}

impl Inner {
    /// Attempt `id`, to be changed: its cached report is dropped. Every change
    /// of an attempt in the table goes through here.
    fn change(&mut self, id: &AttemptId) -> Option<&mut Attempt> {
        let a = self.attempts.get_mut(id)?;
        a.encoded = None;
        Some(a)
    }

    /// Count an attempt's move from a phase that was `was_live` to `now_live`.
    fn live_delta(&mut self, was_live: bool, now_live: bool) {
        match (was_live, now_live) {
            (false, true) => self.live += 1,
            (true, false) => self.live = self.live.saturating_sub(1),
            _ => {}
        }
    }

    /// Run `f` on attempt `id` (through `change`), keeping the live count.
    fn change_with<R>(&mut self, id: &AttemptId, f: impl FnOnce(&mut Attempt) -> R) -> Option<R> {
        let a = self.change(id)?;
        let was = a.phase.is_live();
        let r = f(a);
        let now = a.phase.is_live();
        self.live_delta(was, now);
        Some(r)
    }
}

/// The table, behind a plain mutex: every critical section is a few map operations,
/// never I/O, so it is never held across an await.
#[derive(Debug)]
pub struct AttemptTable {
    inner: Mutex<Inner>,
    /// Attempts with a live process, set under the lock at every change that can
    /// move it, so the gauge is exact even between syncs (a reaper runs any time).
    live: Gauge,
}

impl Default for AttemptTable {
    fn default() -> Self {
        Self::new(Gauge::noop())
    }
}

impl AttemptTable {
    /// `live` is kept equal to the number of attempts whose process has not exited.
    pub fn new(live: Gauge) -> Self {
        AttemptTable {
            inner: Mutex::default(),
            live,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish_live(&self, inner: &Inner) {
        #[cfg(test)]
        assert_eq!(
            inner.live,
            inner
                .attempts
                .values()
                .filter(|a| a.phase.is_live())
                .count(),
            "the live count kept by each change"
        );
        self.live.set(inner.live as f64);
    }

    /// Known now, or acknowledged and forgotten: either way it must not be started.
    pub fn seen(&self, id: AttemptId) -> bool {
        let inner = self.lock();
        inner.attempts.contains_key(&id) || inner.forgotten.contains(&id)
    }

    pub fn insert(&self, attempt: Attempt) {
        let mut inner = self.lock();
        let now = attempt.phase.is_live();
        let was = inner
            .attempts
            .insert(attempt.spec.id, attempt)
            .is_some_and(|old| old.phase.is_live());
        inner.live_delta(was, now);
        self.publish_live(&inner);
    }

    /// Run `f` on attempt `id` under the lock: a few field reads or writes, never I/O.
    pub fn with_attempt<R>(&self, id: AttemptId, f: impl FnOnce(&mut Attempt) -> R) -> Option<R> {
        let mut inner = self.lock();
        let r = inner.change_with(&id, f);
        self.publish_live(&inner);
        r
    }

    /// The token cancelled once attempt `id` has finished and its process is
    /// reaped; `None` if the attempt is not in the table.
    pub fn exit_token(&self, id: AttemptId) -> Option<CancellationToken> {
        self.lock().attempts.get(&id).map(|a| a.exited.clone())
    }

    /// Remember `id` as finished and acknowledged (by a previous borglet): never started again.
    pub fn tombstone(&self, id: AttemptId) {
        remember_forgotten(&mut self.lock(), id);
    }

    /// Drop finished attempts the master has recorded; returns those dropped. Acks
    /// of attempts still running are ignored: the master cannot have recorded an
    /// end that has not happened.
    pub fn forget(&self, ids: &[AttemptId]) -> Vec<AttemptId> {
        let mut inner = self.lock();
        let mut gone = Vec::new();
        for id in ids {
            let finished = inner
                .attempts
                .get(id)
                .is_some_and(|a| a.phase.is_finished());
            if !finished {
                continue;
            }
            inner.attempts.remove(id);
            gone.push(*id);
            remember_forgotten(&mut inner, *id);
        }
        gone
    }

    /// Apply `event` to attempt `id`; returns the new phase.
    pub fn apply(&self, id: AttemptId, event: Event) -> Result<Phase, ApplyError> {
        let mut inner = self.lock();
        let next = inner
            .change_with(&id, |attempt| {
                let next = attempt.phase.transition(event)?;
                attempt.phase = next.clone();
                Ok(next)
            })
            .ok_or(ApplyError::Unknown(id))?;
        self.publish_live(&inner);
        next
    }

    /// The process of attempt `id` ended with `exit`: decide whether it restarts
    /// in place (→ `Backoff`) or is over (→ `Exited`), and move it there.
    pub fn on_exit(
        &self,
        id: AttemptId,
        exit: Exit,
        at: DateTime<Utc>,
    ) -> Result<Decision, ApplyError> {
        let mut inner = self.lock();
        let decided = inner
            .change_with(&id, |attempt| {
                let decision = match &attempt.phase {
                    // Only a run nobody asked to stop may restart.
                    Phase::Running { started_at, .. } => {
                        let ran_for = (at - *started_at).to_std().unwrap_or_default();
                        let decision =
                            attempt
                                .restarts
                                .decide(attempt.spec.restart, &exit, ran_for, at);
                        // Ended by its health check: that is the cause, not the signal.
                        let decision = match attempt.health.kill_reason.take() {
                            Some(why) => attempt.restarts.ended_by(decision, why),
                            None => decision,
                        };
                        // Killed by the kernel for memory: a restart says so, not
                        // "signal 9" (a final end reports it as its death cause).
                        let decision = match (decision, attempt.isolation.oom_cause()) {
                            (Decision::Restart(wait), Some(why))
                                if attempt.restarts.last_cause.is_none() =>
                            {
                                attempt.restarts.ended_by(Decision::Restart(wait), why)
                            }
                            (decision, _) => decision,
                        };
                        // Waiting to restart, a checked task serves nothing: not healthy.
                        if attempt.spec.health.is_some() && attempt.health.healthy != Some(false) {
                            attempt.health.healthy = Some(false);
                            attempt.health.message =
                                Some(format!("not running: {}", exit.describe()));
                        }
                        decision
                    }
                    _ => Decision::Final(None),
                };
                let event = match &decision {
                    Decision::Restart(_) => Event::RestartScheduled { at, exit },
                    Decision::Final(note) => {
                        if note.is_some() {
                            attempt.note.clone_from(note);
                        }
                        Event::ProcessExited { at, exit }
                    }
                };
                attempt.phase = attempt.phase.transition(event)?;
                Ok(decision)
            })
            .ok_or(ApplyError::Unknown(id))?;
        self.publish_live(&inner);
        decided
    }

    /// The spec, restart count and cause of the latest restart (when the
    /// borglet ended that run) of attempt `id`, if it is known.
    pub fn spec_of(&self, id: AttemptId) -> Option<(AttemptSpec, u32, Option<String>)> {
        self.lock().attempts.get(&id).map(|a| {
            (
                a.spec.clone(),
                a.restarts.restarts,
                a.restarts.last_cause.clone(),
            )
        })
    }

    /// Move the running attempt `id` to `Stopping`; `None` if it is not running
    /// (already stopping, exited, or unknown), so a stop is begun only once.
    pub fn begin_stop(&self, id: AttemptId) -> Option<StopTicket> {
        let mut inner = self.lock();
        // Backoff → stopped and Running → Stopping: neither changes the live count.
        let attempt = inner.attempts.get_mut(&id)?;
        if !matches!(attempt.phase, Phase::Backoff { .. } | Phase::Running { .. }) {
            return None;
        }
        attempt.encoded = None;
        if matches!(attempt.phase, Phase::Backoff { .. }) {
            // Waiting to restart: no process, so stopped at once.
            let next = attempt
                .phase
                .transition(Event::StopRequested { at: Utc::now() })
                .ok()?;
            attempt.phase = next;
            // It ends because it was stopped, not by how its last run ended (an
            // OOM kill included); that run's peak and stderr tail still stand.
            if let Some(e) = attempt.isolation.ending.as_mut() {
                e.oom_killed = false;
            }
            attempt.exited.cancel();
            return None;
        }
        let next = attempt
            .phase
            .transition(Event::StopRequested { at: Utc::now() })
            .ok()?;
        let Phase::Stopping { pid, .. } = next else {
            return None;
        };
        attempt.phase = next;
        Some(StopTicket {
            id,
            job: attempt.spec.job.clone(),
            index: attempt.spec.index,
            pid,
            grace: Duration::from_millis(attempt.spec.kill_grace_ms),
            exited: attempt.exited.clone(),
            cgroup: attempt.isolation.cgroup.clone(),
        })
    }

    /// The cgroups of attempts whose process has not been reaped, for sampling.
    pub fn live_cgroups(&self) -> Vec<(AttemptId, Arc<AttemptCgroup>)> {
        self.lock()
            .attempts
            .values()
            .filter(|a| a.phase.is_live())
            .filter_map(|a| Some((a.spec.id, Arc::clone(a.isolation.cgroup.as_ref()?))))
            .collect()
    }

    /// Store the latest usage samples (one lock for all of them).
    pub fn set_usage(&self, samples: &[Sample]) {
        let mut inner = self.lock();
        for s in samples {
            let same = inner
                .attempts
                .get(&s.id)
                .is_none_or(|a| a.isolation.usage == Some(s.usage));
            if let (false, Some(a)) = (same, inner.change(&s.id)) {
                a.isolation.usage = Some(s.usage);
            }
        }
    }

    /// Record what the end of attempt `id` added to its exit status. The run's
    /// cgroup is let go: it may be handed to another attempt from now on.
    pub fn set_ending(&self, id: AttemptId, ending: Ending) {
        if let Some(a) = self.lock().change(&id) {
            a.isolation.ending = Some(ending);
            a.isolation.usage = None;
            a.isolation.cgroup = None;
        }
    }

    /// A new run of attempt `id` (an in-place restart) lives in `cgroup`; what the
    /// previous run's end added is dropped with it.
    pub fn set_cgroup(&self, id: AttemptId, cgroup: Option<Arc<AttemptCgroup>>) {
        if let Some(a) = self.lock().change(&id) {
            a.isolation = AttemptIsolation {
                cgroup,
                ..AttemptIsolation::default()
            };
        }
    }

    /// Running attempts (or waiting to restart) whose id `keep` rejects.
    pub fn running_ids_except(&self, keep: impl Fn(&AttemptId) -> bool) -> Vec<AttemptId> {
        self.lock()
            .attempts
            .values()
            .filter(|a| matches!(a.phase, Phase::Running { .. } | Phase::Backoff { .. }))
            .filter(|a| !keep(&a.spec.id))
            .map(|a| a.spec.id)
            .collect()
    }

    /// Exit tokens of every attempt whose process has not been reaped yet.
    pub fn live_exit_tokens(&self) -> Vec<CancellationToken> {
        self.lock()
            .attempts
            .values()
            .filter(|a| a.phase.is_live())
            .map(|a| a.exited.clone())
            .collect()
    }

    /// Running attempts (or waiting to restart) whose `fence_after` is at most
    /// `silence`, noted with `why` (what their report will say): to be stopped.
    pub fn fence(&self, silence: Duration, why: &str) -> Vec<AttemptId> {
        let mut inner = self.lock();
        let mut due = Vec::new();
        for a in inner.attempts.values_mut() {
            let passed = a
                .spec
                .fence_after_ms
                .is_some_and(|ms| silence >= Duration::from_millis(ms));
            if passed && matches!(a.phase, Phase::Running { .. } | Phase::Backoff { .. }) {
                a.note = Some(why.to_string());
                a.encoded = None;
                due.push(a.spec.id);
            }
        }
        due
    }

    /// Each live attempt's latest usage sample, with its job and index (for `/metrics`).
    pub fn live_usage(&self) -> Vec<(String, i32, AttemptId, ResourceUsage)> {
        self.lock()
            .attempts
            .values()
            .filter(|a| a.phase.is_live())
            .filter_map(|a| {
                let usage = a.isolation.usage?;
                Some((a.spec.job.clone(), a.spec.index, a.spec.id, usage))
            })
            .collect()
    }

    pub fn reports(&self) -> Vec<AttemptReport> {
        self.lock().attempts.values().map(Attempt::report).collect()
    }

    /// Every attempt's report as a JSON array, appended to `out`; returns how
    /// many. Each report is encoded once, and again only after its attempt changed.
    pub fn write_reports(&self, out: &mut Vec<u8>) -> usize {
        let mut inner = self.lock();
        out.push(b'[');
        let mut n = 0;
        for a in inner.attempts.values_mut() {
            if a.encoded.is_none() {
                // Plain structs, strings and numbers: encoding cannot fail.
                match serde_json::to_vec(&a.report()) {
                    Ok(json) => a.encoded = Some(json.into_boxed_slice()),
                    Err(e) => {
                        tracing::error!(attempt = %a.spec.id, error = %e, "cannot encode a report")
                    }
                }
            }
            let Some(json) = &a.encoded else { continue };
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(json);
            n += 1;
        }
        out.push(b']');
        n
    }

    /// Which of `ids` are neither known nor forgotten (one lock for all).
    pub fn unseen<'a, T>(&self, items: &'a [T], id: impl Fn(&T) -> AttemptId) -> Vec<&'a T> {
        let inner = self.lock();
        items
            .iter()
            .filter(|t| {
                let id = id(t);
                !inner.attempts.contains_key(&id) && !inner.forgotten.contains(&id)
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().attempts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn remember_forgotten(inner: &mut Inner, id: AttemptId) {
    if inner.forgotten.insert(id) {
        inner.forgotten_order.push_back(id);
    }
    while inner.forgotten_order.len() > TOMBSTONES {
        if let Some(old) = inner.forgotten_order.pop_front() {
            inner.forgotten.remove(&old);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("unknown attempt {0}")]
    Unknown(AttemptId),
    #[error(transparent)]
    Invalid(#[from] InvalidTransition),
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
