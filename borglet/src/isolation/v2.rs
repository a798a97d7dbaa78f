//! cgroup v2 (unified): one directory per attempt under the borglet's parent, with
//! memory, cpu and pids enabled for the parent's children.

use super::cgroup::AttemptCgroup;
use super::limits::Limits;
use super::{create_dir, write_limit, IsolationError, Isolator};
use borg_shared::wire::IsolationMode;
use borg_shared::AttemptId;
use std::path::{Path, PathBuf};

/// The controllers an attempt's cgroup needs.
pub const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

#[derive(Debug)]
pub struct V2 {
    mount: PathBuf,
    /// Absolute.
    parent: PathBuf,
}

impl V2 {
    /// Create `parent` (relative, e.g. `borg/m1`) under the unified `mount`, enabling
    /// the controllers at every level down to it (a cgroup can only use controllers
    /// its parent enabled in `cgroup.subtree_control`).
    pub fn new(mount: &Path, parent: &Path) -> Result<V2, IsolationError> {
        let controllers =
            std::fs::read_to_string(mount.join("cgroup.controllers")).map_err(|source| {
                IsolationError::Create {
                    path: mount.display().to_string(),
                    source,
                }
            })?;
        let have: Vec<&str> = controllers.split_whitespace().collect();
        let missing: Vec<&str> = CONTROLLERS
            .into_iter()
            .filter(|c| !have.contains(c))
            .collect();
        if !missing.is_empty() {
            return Err(IsolationError::Unavailable(format!(
                "cgroup2 at {} lacks the {} controller(s)",
                mount.display(),
                missing.join(", ")
            )));
        }
        let v2 = V2 {
            mount: mount.to_path_buf(),
            parent: mount.join(parent),
        };
        v2.make_parent()?;
        Ok(v2)
    }

    /// Create the parent's levels, enabling the controllers at each.
    fn make_parent(&self) -> Result<(), IsolationError> {
        let enable = CONTROLLERS.map(|c| format!("+{c}")).join(" ");
        let mut dir = self.mount.clone();
        write_limit(&dir, "cgroup.subtree_control", &enable)?;
        let rel = self
            .parent
            .strip_prefix(&self.mount)
            .unwrap_or(&self.parent);
        for part in rel.components() {
            dir.push(part);
            create_dir(&dir)?;
            write_limit(&dir, "cgroup.subtree_control", &enable)?;
        }
        Ok(())
    }
}

impl Isolator for V2 {
    fn mode(&self) -> IsolationMode {
        IsolationMode::V2
    }

    fn create(&self, id: AttemptId, limits: &Limits) -> Result<AttemptCgroup, IsolationError> {
        let dir = self.parent.join(id.to_string());
        if create_dir(&dir).is_err() {
            // The parent may have just been removed by another borglet of the
            // same name stopping (dev cells on one host): make it again, once.
            self.make_parent()?;
            create_dir(&dir)?;
        }
        let cg = AttemptCgroup::V2 { dir: dir.clone() };
        let made = (|| {
            write_limit(&dir, "memory.max", limits.memory.0)?;
            // The cap covers RAM; without this the task swaps past it.
            if dir.join("memory.swap.max").exists() {
                write_limit(&dir, "memory.swap.max", 0)?;
            }
            write_limit(&dir, "cpu.weight", limits.cpu_weight())?;
            if limits.cpu_limit.is_some() {
                write_limit(&dir, "cpu.max", limits.cpu_max())?;
            }
            write_limit(&dir, "pids.max", limits.pids)
        })();
        match made {
            Ok(()) => Ok(cg),
            Err(e) => {
                if let Err(rm) = cg.remove() {
                    tracing::warn!(attempt = %id, error = %rm, "could not remove a half-made cgroup");
                }
                Err(e)
            }
        }
    }

    fn remove_parent(&self) {
        let _ = std::fs::remove_dir(&self.parent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use borg_shared::{Bytes, MilliCpu};

    /// A directory laid out like a unified mount: the files v2 reads or writes.
    fn fake_mount(controllers: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), controllers).unwrap();
        root
    }

    #[test]
    fn limits_are_written_as_v2_files() {
        let root = fake_mount("cpuset cpu io memory hugetlb pids rdma\n");
        let v2 = V2::new(root.path(), Path::new("borg/m1")).unwrap();
        let parent = root.path().join("borg/m1");
        let enabled = std::fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap();
        assert_eq!(enabled, "+memory +cpu +pids");
        let limits = Limits {
            memory: Bytes(32 << 20),
            cpu: MilliCpu(500),
            cpu_limit: Some(MilliCpu(1500)),
            pids: 64,
        };
        let id = AttemptId::new();
        let cg = v2.create(id, &limits).unwrap();
        let dir = parent.join(id.to_string());
        assert_eq!(cg, AttemptCgroup::V2 { dir: dir.clone() });
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("memory.max"), (32u64 << 20).to_string());
        assert_eq!(read("cpu.weight"), "20");
        assert_eq!(read("cpu.max"), "150000 100000");
        assert_eq!(read("pids.max"), "64");
        assert_eq!(cg.join_files(), vec![dir.join("cgroup.procs")]);
    }

    #[test]
    fn a_mount_without_the_controllers_is_not_usable() {
        let root = fake_mount("hugetlb\n");
        let err = V2::new(root.path(), Path::new("borg/m1")).unwrap_err();
        assert!(err.to_string().contains("memory, cpu, pids"), "{err}");
    }
}
