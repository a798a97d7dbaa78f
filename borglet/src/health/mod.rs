//! Health checks (issue 8): each attempt whose spec has one is probed by its own
//! task (`run.rs`) for as long as it lives, across in-place restarts and borglet
//! restarts (the check travels in the attempt's `launch.json`, and re-adoption
//! starts probing again). A run that fails `failures` probes in a row is ended
//! and restarted in place through the normal restart path, its cause `health
//! check failed: ...`. What the probes found is on every sync's report.

mod probe;
mod run;
mod tracker;

pub use probe::{ExecTarget, Prober, RealProber, Target};
pub(crate) use run::{spawn, Probing};
pub use tracker::{Tracker, Verdict};

/// What the attempt table keeps of an attempt's health.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HealthStatus {
    /// The current run's health: `None` until a probe decides.
    pub healthy: Option<bool>,
    /// Why the last probe failed, while none has passed since.
    pub message: Option<String>,
    /// Set when the prober ends the run: the cause its restart is reported with.
    pub kill_reason: Option<String>,
}
