//! Which cgroup hierarchy the borglet can use, found at start: the mounts from
//! /proc/self/mounts, then an attempt to create the borglet's parent cgroup
//! (which also proves it is writable). v2 first, then v1, else none.

use super::v1::{V1Mounts, V1};
use super::v2::V2;
use super::{IsolationError, Isolator, Unisolated};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `--isolation`: what to use; `auto` takes the first that works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Choice {
    #[default]
    Auto,
    V2,
    V1,
    None,
}

/// The cgroup filesystems mounted: the unified one and each v1 controller's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounts {
    pub unified: Option<PathBuf>,
    pub v1: BTreeMap<String, PathBuf>,
}

const V1_CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];

/// Read `/proc/self/mounts` text: `device mountpoint fstype options ...`.
pub fn parse_mounts(text: &str) -> Mounts {
    let mut m = Mounts::default();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [_, point, fstype, options, ..] = f[..] else {
            continue;
        };
        match fstype {
            "cgroup2" if m.unified.is_none() => m.unified = Some(point.into()),
            "cgroup" => {
                for opt in options.split(',') {
                    if V1_CONTROLLERS.contains(&opt) {
                        m.v1.entry(opt.to_string()).or_insert_with(|| point.into());
                    }
                }
            }
            _ => {}
        }
    }
    m
}

impl Mounts {
    fn v1_mounts(&self) -> Result<V1Mounts, IsolationError> {
        let get = |c: &str| {
            self.v1.get(c).cloned().ok_or_else(|| {
                IsolationError::Unavailable(format!("no cgroup v1 {c} hierarchy mounted"))
            })
        };
        Ok(V1Mounts {
            memory: get("memory")?,
            cpu: get("cpu")?,
            cpuacct: get("cpuacct")?,
            pids: get("pids")?,
        })
    }

    fn v2(&self, parent: &Path) -> Result<V2, IsolationError> {
        let mount = self
            .unified
            .as_ref()
            .ok_or_else(|| IsolationError::Unavailable("no cgroup2 mounted".into()))?;
        V2::new(mount, parent)
    }

    fn v1(&self, parent: &Path) -> Result<V1, IsolationError> {
        V1::new(&self.v1_mounts()?, parent)
    }
}

/// The isolator for `choice`, with the borglet's parent cgroup at `parent`
/// (relative to each hierarchy's root). `auto` falls back to running
/// unisolated, saying why; an explicit `v2`/`v1` that cannot be used is an error.
pub fn detect(
    choice: Choice,
    mounts: &Mounts,
    parent: &Path,
) -> Result<Arc<dyn Isolator>, IsolationError> {
    match choice {
        Choice::None => Ok(Arc::new(Unisolated)),
        Choice::V2 => Ok(Arc::new(mounts.v2(parent)?)),
        Choice::V1 => Ok(Arc::new(mounts.v1(parent)?)),
        Choice::Auto => {
            let v2 = match mounts.v2(parent) {
                Ok(v2) => return Ok(Arc::new(v2)),
                Err(e) => e,
            };
            let v1 = match mounts.v1(parent) {
                Ok(v1) => return Ok(Arc::new(v1)),
                Err(e) => e,
            };
            tracing::warn!(v2 = %v2, v1 = %v1,
                "no writable cgroup hierarchy: tasks run WITHOUT isolation or limits");
            Ok(Arc::new(Unisolated))
        }
    }
}

/// The mounts of this process's mount namespace.
pub fn read_mounts() -> Mounts {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|t| parse_mounts(&t))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use borg_shared::wire::IsolationMode;

    const HYBRID: &str = "\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/freezer cgroup rw,relatime,freezer 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";

    #[test]
    fn mounts_name_each_controller() {
        let m = parse_mounts(HYBRID);
        assert_eq!(m.unified, Some("/sys/fs/cgroup/unified".into()));
        assert_eq!(m.v1["memory"], Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(m.v1["pids"], Path::new("/sys/fs/cgroup/pids"));
        assert!(!m.v1.contains_key("name=systemd"));
        // Ubuntu 18-style co-mounted cpu,cpuacct.
        let m = parse_mounts("cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n");
        assert_eq!(m.v1["cpu"], m.v1["cpuacct"]);
        let pure = parse_mounts("cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n");
        assert_eq!(pure.unified, Some("/sys/fs/cgroup".into()));
        assert!(pure.v1.is_empty());
    }

    #[test]
    fn auto_prefers_a_usable_v2_then_v1_then_none() {
        let root = tempfile::tempdir().unwrap();
        let uni = root.path().join("unified");
        std::fs::create_dir_all(&uni).unwrap();
        std::fs::write(uni.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let mut m = Mounts {
            unified: Some(uni.clone()),
            v1: BTreeMap::new(),
        };
        for c in ["memory", "cpu", "cpuacct", "pids"] {
            let d = root.path().join(c);
            std::fs::create_dir_all(&d).unwrap();
            m.v1.insert(c.into(), d);
        }
        let parent = Path::new("borg/m1");
        let mode = |m: &Mounts| detect(Choice::Auto, m, parent).unwrap().mode();
        assert_eq!(mode(&m), IsolationMode::V2);
        std::fs::write(uni.join("cgroup.controllers"), "hugetlb\n").unwrap();
        assert_eq!(mode(&m), IsolationMode::V1);
        assert!(root.path().join("memory/borg/m1").is_dir());
        m.v1.remove("pids");
        assert_eq!(mode(&m), IsolationMode::None);
        assert!(
            detect(Choice::V1, &m, parent).is_err(),
            "asked for v1 explicitly"
        );
        assert_eq!(
            detect(Choice::None, &m, parent).unwrap().mode(),
            IsolationMode::None
        );
    }
}
