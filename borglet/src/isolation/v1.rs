//! cgroup v1: one hierarchy per controller. An attempt gets a directory under the
//! borglet's parent in each of memory, cpu, cpuacct and pids.

use super::cgroup::{AttemptCgroup, CgroupStats};
use super::limits::{Limits, CFS_PERIOD_US};
use super::pool::{self, Pool};
use super::{create_dir, write_limit, IsolationError, Isolator};
use borg_shared::wire::IsolationMode;
use borg_shared::AttemptId;
use std::path::{Path, PathBuf};

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
            pool::sweep(dir);
        }
        let memsw = parents.memory.join("memory.memsw.limit_in_bytes").exists();
        Ok(V1 {
            parents,
            memsw,
            pool: Pool::default(),
        })
    }

    /// The attempt's directory in each hierarchy: memory, cpu, cpuacct, pids.
    fn dirs(&self, id: AttemptId) -> [PathBuf; 4] {
        let name = id.to_string();
        let p = &self.parents;
        [&p.memory, &p.cpu, &p.cpuacct, &p.pids].map(|d| d.join(&name))
    }
}

impl Isolator for V1 {
    fn mode(&self) -> IsolationMode {
        IsolationMode::V1
    }

    fn create(&self, id: AttemptId, limits: &Limits) -> Result<AttemptCgroup, IsolationError> {
        if let Some(taken) = self.pool.take(id, limits, self.memsw) {
            return taken;
        }
        let [memory, cpu, cpuacct, pids] = self.dirs(id);
        let cg = AttemptCgroup::V1 {
            memory: memory.clone(),
            cpu: cpu.clone(),
            cpuacct,
            pids: pids.clone(),
        };
        let (memory, cpu, pids) = (&memory, &cpu, &pids);
        let made = cg
            .dirs()
            .into_iter()
            .try_for_each(|dir| {
                create_dir(dir).or_else(|_| {
                    // The parent may have just been removed by another borglet of
                    // the same name stopping (dev cells on one host): once more.
                    std::fs::create_dir_all(dir).map_err(|source| IsolationError::Create {
                        path: dir.display().to_string(),
                        source,
                    })
                })
            })
            .and_then(|()| {
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
            });
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
        cg: &AttemptCgroup,
        stats: Option<&CgroupStats>,
    ) -> std::io::Result<()> {
        self.pool.retire(id, cg, stats)
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
