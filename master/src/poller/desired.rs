//! What a machine loop keeps between syncs so that an unchanged sync costs the
//! store nothing: the machine's desired set, read from Postgres only when
//! something may have changed it, and the borglet's last report when applying
//! it changed nothing (an identical report is then not applied again).
//!
//! Who marks a set stale: every change to a machine's desired set made
//! elsewhere (the scheduler places; a kill, scale, drain, preemption or rollout
//! asks for a stop) sends `NOTIFY borg_placed` with the machine's id, which the
//! poller's listener turns into [`Desired::invalidate`]; a lost listener marks
//! every set stale. Changes this leader makes itself (marking attempts
//! `starting`, a report that moved something, marking the machine down or up)
//! mark it stale here. Every `full_sync_every` the set is read and the report
//! applied regardless (0: on every sync, as without the cache).

use super::reads::Reader;
use borg_shared::wire::AttemptSpec;
use borg_shared::{AttemptId, MachineId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub(crate) struct Desired {
    /// Something may have changed the set since it was read.
    stale: AtomicBool,
    kept: Mutex<Option<Kept>>,
}

struct Kept {
    attempts: Vec<AttemptSpec>,
    /// Of `attempts`, those still `assigned` (not yet marked `starting`).
    new: Vec<AttemptId>,
    read_at: Instant,
    /// The body of the last report, when applying it changed nothing.
    quiet_report: Option<bytes::Bytes>,
}

/// How a sync got its desired set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Cache,
    Store,
}

impl Source {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Store => "store",
        }
    }
}

impl Desired {
    fn kept(&self) -> std::sync::MutexGuard<'_, Option<Kept>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The set may have changed: the next sync reads it from the store.
    pub(crate) fn invalidate(&self) {
        self.stale.store(true, Ordering::SeqCst);
    }

    /// The attempts the machine should run and which of them are new, from
    /// memory when nothing can have changed them, else from the store.
    pub(crate) async fn get(
        &self,
        reader: &Reader,
        machine: MachineId,
        full_every: Duration,
    ) -> anyhow::Result<(Vec<AttemptSpec>, Vec<AttemptId>, Source)> {
        // Cleared before the read: a change committed during it marks it stale again.
        let stale = self.stale.swap(false, Ordering::SeqCst);
        if !stale {
            if let Some(k) = self.kept().as_ref() {
                if k.read_at.elapsed() < full_every {
                    return Ok((k.attempts.clone(), k.new.clone(), Source::Cache));
                }
            }
        }
        let read_at = Instant::now();
        let (attempts, new) = match reader.read(machine).await {
            Ok(d) => (d.attempts, d.new),
            Err(e) => {
                self.invalidate();
                return Err(e);
            }
        };
        *self.kept() = Some(Kept {
            attempts: attempts.clone(),
            new: new.clone(),
            read_at,
            quiet_report: None,
        });
        Ok((attempts, new, Source::Store))
    }

    /// These new attempts are now `starting` in the store.
    pub(crate) fn started(&self, ids: &[AttemptId]) {
        if let Some(k) = self.kept().as_mut() {
            k.new.retain(|id| !ids.contains(id));
        }
    }

    /// Is `body` the report whose application last changed nothing (with the
    /// set unchanged since)? Then applying it again would change nothing either.
    pub(crate) fn is_quiet(&self, body: &[u8]) -> bool {
        self.kept()
            .as_ref()
            .and_then(|k| k.quiet_report.as_deref())
            .is_some_and(|q| q == body)
    }

    /// A report is about to be applied: until it is, no report counts as quiet.
    pub(crate) fn applying(&self) {
        if let Some(k) = self.kept().as_mut() {
            k.quiet_report = None;
        }
    }

    /// Report `body` was applied; `quiet` when that moved, recorded and acked nothing.
    pub(crate) fn applied(&self, body: bytes::Bytes, quiet: bool) {
        if !quiet {
            // What it moved may have left the set (an ended attempt).
            self.invalidate();
            return;
        }
        if let Some(k) = self.kept().as_mut() {
            k.quiet_report = Some(body);
        }
    }
}
