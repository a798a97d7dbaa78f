//! cgroup v1: one hierarchy per controller. An attempt gets a set of
//! directories, one under the borglet's parent in each of memory, cpu, cpuacct
//! and pids, all of one name: `set-<borglet pid>-<its start ticks>-<n>`, unique
//! on the host until it reboots, since a set may serve several attempts one
//! after another (`pool.rs`). The attempt's launch record names its set.

use super::cgroup::{AttemptCgroup, CgroupStats};
use super::limits::{Limits, CFS_PERIOD_US};
use super::pool::{self, Pool};
use super::{write_limit, IsolationError, Isolator};
use borg_shared::wire::IsolationMode;
use borg_shared::AttemptId;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Mount points of the v1 controllers the borglet uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mounts {
    pub memory: PathBuf,
    pub cpu: PathBuf,
    pub cpuacct: PathBuf,
    pub pids: PathBuf,
}

/// The borglet's parent cgroup in every v1 hierarchy it uses.
#[derive(Debug)]
pub struct V1 {
    parents: V1Mounts,
    /// The memory controller counts swap (`memory.memsw.*`): looked at once
    /// here, not at every start.
    memsw: bool,
    /// Sets of finished attempts kept for the next ones (`pool.rs`).
    pool: Pool,
    /// `set-<pid>-<start ticks>-`: what this borglet's sets' names start with.
    names: String,
    /// The number of the next set made.
    next: AtomicU64,
}

impl V1 {
    /// Create (if missing) `parent` (relative, e.g. `borg/m1`) in every hierarchy.
    pub fn new(mounts: &V1Mounts, parent: &Path) -> Result<V1, IsolationError> {
        let at = |m: &Path| m.join(parent);
        let parents = V1Mounts {
            memory: at(&mounts.memory),
            cpu: at(&mounts.cpu),
            cpuacct: at(&mounts.cpuacct),
            pids: at(&mounts.pids),
        };
        for dir in [
            &parents.memory,
            &parents.cpu,
            &parents.cpuacct,
            &parents.pids,
        ]
        .into_iter()
        {
            std::fs::create_dir_all(dir).map_err(|source| IsolationError::Create {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let memsw = parents.memory.join("memory.memsw.limit_in_bytes").exists();
        let pid = std::process::id() as i32;
        let ticks = crate::records::ProcId::of(pid).map_or(0, |me| me.start_ticks);
        Ok(V1 {
            parents,
            memsw,
            pool: Pool::default(),
            names: format!("{}{pid}-{ticks}-", pool::SET_PREFIX),
            next: AtomicU64::new(0),
        })
    }

    /// A new, empty set, under a name no directory held in any hierarchy (a
    /// borglet started before in the same process, as tests do, used the same
    /// names: those are skipped).
    fn make_set(&self) -> Result<AttemptCgroup, IsolationError> {
        for _ in 0..MAX_NAME_TRIES {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let name = format!("{}{n}", self.names);
            let p = &self.parents;
            let [memory, cpu, cpuacct, pids] =
                [&p.memory, &p.cpu, &p.cpuacct, &p.pids].map(|d| d.join(&name));
            let cg = AttemptCgroup::V1 {
                memory,
                cpu,
                cpuacct,
                pids,
            };
            let dirs = cg.dirs();
            let failed = dirs
                .iter()
                .enumerate()
                .find_map(|(i, dir)| make_dir(dir).err().map(|e| (i, e)));
            let Some((made, error)) = failed else {
                return Ok(cg);
            };
            for dir in dirs[..made].iter().rev() {
                if let Err(rm) = std::fs::remove_dir(dir) {
                    tracing::warn!(dir = %dir.display(), error = %rm, "could not remove a half-made cgroup");
                }
            }
            if error.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(IsolationError::Create {
                    path: dirs[made].display().to_string(),
                    source: error,
                });
            }
        }
        Err(IsolationError::Unavailable(format!(
            "no free cgroup name after {MAX_NAME_TRIES} tries under {}",
            self.parents.memory.display()
        )))
    }
}

/// How many names `make_set` tries before it gives up.
const MAX_NAME_TRIES: usize = 1000;

/// Make `dir`, which must not exist; its parent too if it was removed (by
/// another borglet of the same name stopping: dev cells on one host).
fn make_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::create_dir(dir)
        }
        done => done,
    }
}

impl Isolator for V1 {
    fn mode(&self) -> IsolationMode {
        IsolationMode::V1
    }

    fn create(&self, id: AttemptId, limits: &Limits) -> Result<AttemptCgroup, IsolationError> {
        if let Some(taken) = self.pool.take(id, limits, self.memsw) {
            return Ok(taken);
        }
        let cg = self.make_set()?;
        let AttemptCgroup::V1 {
            memory, cpu, pids, ..
        } = &cg
        else {
            unreachable!("make_set makes v1 sets")
        };
        let made = (|| {
            write_limit(memory, "memory.limit_in_bytes", limits.memory.0)?;
            // Without this the cap only covers RAM and the task swaps past it.
            if self.memsw {
                write_limit(memory, "memory.memsw.limit_in_bytes", limits.memory.0)?;
            }
            write_limit(cpu, "cpu.shares", limits.cpu_shares())?;
            if let Some(quota) = limits.cfs_quota_us() {
                write_limit(cpu, "cpu.cfs_period_us", CFS_PERIOD_US)?;
                write_limit(cpu, "cpu.cfs_quota_us", quota)?;
            }
            write_limit(pids, "pids.max", limits.pids)
        })();
        match made {
            Ok(()) => {
                self.pool.made(id, *limits);
                Ok(cg)
            }
            Err(e) => {
                if let Err(rm) = cg.remove() {
                    tracing::warn!(attempt = %id, error = %rm, "could not remove a half-made cgroup");
                }
                Err(e)
            }
        }
    }

    fn retire(
        &self,
        id: AttemptId,
        cg: Arc<AttemptCgroup>,
        stats: Option<&CgroupStats>,
    ) -> std::io::Result<()> {
        self.pool.retire(id, cg, stats)
    }

    fn sweep(&self, in_use: &[AttemptCgroup]) {
        let keep: HashSet<PathBuf> = in_use
            .iter()
            .flat_map(|cg| cg.dirs())
            .map(Path::to_path_buf)
            .collect();
        let p = &self.parents;
        let mut removed = 0;
        for dir in [&p.memory, &p.cpu, &p.cpuacct, &p.pids] {
            removed += pool::sweep(dir, &keep);
        }
        if removed > 0 {
            tracing::info!(
                directories = removed,
                parent = %p.memory.display(),
                "removed the empty cgroup sets a borglet that is gone left behind"
            );
        }
    }

    fn keep_no_spares(&self) {
        self.pool.disable();
    }

    fn drop_spares(&self) {
        self.pool.drain();
    }

    fn remove_parent(&self) {
        self.pool.drain();
        let p = &self.parents;
        for dir in [&p.memory, &p.cpu, &p.cpuacct, &p.pids].into_iter() {
            // Not empty (tasks kept running for the next borglet) is fine.
            let _ = std::fs::remove_dir(dir);
        }
    }
}
