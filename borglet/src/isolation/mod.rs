//! Isolation of attempts: a cgroup per attempt under a parent the borglet owns
//! (one per machine name, so several borglets share a host), holding all of the
//! attempt's processes and its limits. cgroup v2 or v1, whichever is writable
//! (`detect.rs`); without either, tasks run unisolated and the machine reports it.
//! On v1 a finished attempt's clean set is kept for the next one (`pool.rs`).

mod cgroup;
mod detect;
mod ending;
mod join;
mod limits;
mod pool;
mod usage;
mod v1;
mod v2;

pub use cgroup::{AttemptCgroup, CgroupStats};
pub use detect::{detect, parse_mounts, read_mounts, Choice, Mounts};
pub use ending::{finish, stderr_tail, Ending, STDERR_TAIL};
pub use join::CgroupJoin;
pub use limits::{Limits, DEFAULT_PIDS};
pub use pool::{MAX_LEFTOVER, MAX_SPARES};
pub use usage::{sample_forever, Sample, UsageSampler};
pub use v1::{V1Mounts, V1};
pub use v2::V2;

use borg_shared::spec::MIN_MEMORY_LIMIT;
use borg_shared::wire::{AttemptSpec, IsolationMode};
use borg_shared::{AttemptId, Bytes};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    #[error("memory limit {0} is too small to run anything (at least {MIN_MEMORY_LIMIT})")]
    MemoryTooSmall(Bytes),
    #[error("cannot create cgroup {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot set {file} to {value} in cgroup {dir}: {source}")]
    Limit {
        dir: String,
        file: &'static str,
        value: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Unavailable(String),
}

/// Makes attempts' cgroups. The real ones write cgroupfs; `Unisolated` makes none.
pub trait Isolator: Send + Sync + std::fmt::Debug {
    fn mode(&self) -> IsolationMode;

    /// Create attempt `id`'s cgroup with `limits`; on error nothing is left behind.
    /// Blocking (mkdir and small writes).
    fn create(&self, id: AttemptId, limits: &Limits) -> Result<AttemptCgroup, IsolationError>;

    /// Attempt `id` is done with `cg`, which is empty (`stats`: its counters,
    /// read once it emptied). Removed here; an isolator that keeps spare sets
    /// may keep it for a later attempt instead. Blocking.
    fn retire(
        &self,
        _id: AttemptId,
        cg: Arc<AttemptCgroup>,
        _stats: Option<&CgroupStats>,
    ) -> std::io::Result<()> {
        cg.remove()
    }

    /// At start, once re-adoption is done: remove the empty sets a borglet
    /// that is gone left behind, other than those `in_use` (re-adopted
    /// attempts run in them). Blocking.
    fn sweep(&self, _in_use: &[AttemptCgroup]) {}

    /// Never keep a finished attempt's cgroup for another one (tasks run as the
    /// user who owns the cgroup files, so they could change them).
    fn keep_no_spares(&self) {}

    /// Remove the spare cgroups kept for later attempts (at shutdown). Blocking.
    fn drop_spares(&self) {}

    /// Remove the borglet's parent cgroup if it is empty (at shutdown).
    fn remove_parent(&self);
}

/// No writable cgroup hierarchy: tasks run without limits, and the machine says so.
#[derive(Debug)]
pub struct Unisolated;

impl Isolator for Unisolated {
    fn mode(&self) -> IsolationMode {
        IsolationMode::None
    }

    fn create(&self, _: AttemptId, _: &Limits) -> Result<AttemptCgroup, IsolationError> {
        Err(IsolationError::Unavailable(
            "isolation is off on this machine".into(),
        ))
    }

    fn remove_parent(&self) {}
}

/// A new attempt's cgroup with its limits; `None` when unisolated. Blocking.
pub fn create(
    isolator: &dyn Isolator,
    spec: &AttemptSpec,
    pids: u64,
) -> Result<Option<AttemptCgroup>, IsolationError> {
    if isolator.mode() == IsolationMode::None {
        return Ok(None);
    }
    isolator.create(spec.id, &Limits::of(spec, pids)?).map(Some)
}

fn create_dir(dir: &Path) -> Result<(), IsolationError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(IsolationError::Create {
            path: dir.display().to_string(),
            source,
        }),
    }
}

fn write_limit(dir: &Path, file: &'static str, value: impl ToString) -> Result<(), IsolationError> {
    let value = value.to_string();
    std::fs::write(dir.join(file), &value).map_err(|source| IsolationError::Limit {
        dir: dir.display().to_string(),
        file,
        value,
        source,
    })
}

/// The parent cgroup's path relative to a hierarchy's root: `<base>/<machine>`,
/// the machine name reduced to characters safe in a directory name.
pub fn parent_path(base: &str, machine: &str) -> std::path::PathBuf {
    let safe: String = machine
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = if safe.is_empty() || safe.starts_with('.') {
        format!("m{safe}")
    } else {
        safe
    };
    Path::new(base.trim_matches('/')).join(safe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_named_per_machine() {
        assert_eq!(parent_path("borg", "m1"), Path::new("borg/m1"));
        assert_eq!(parent_path("/borg/", "a/b c"), Path::new("borg/a_b_c"));
        assert_eq!(parent_path("borg", ".."), Path::new("borg/m.."));
    }
}
