//! Spare cgroup sets (v1): a finished attempt's set of directories, emptied, is
//! kept under a spare name instead of removed, and the next attempt takes it by
//! renaming it to its own id (cgroup v1 renames a directory within its parent),
//! rather than making four new directories and removing four old ones. A memory
//! cgroup's mkdir allocates and its rmdir tears down (later, on kernel workers)
//! the controller's per-cgroup state; a rename is a name change.
//!
//! Exactness: only a set the borglet made itself, whose kernel counters say
//! nothing ended badly in it, is kept. A set that saw an OOM kill, or that
//! still has more than [`MAX_LEFTOVER`] of memory charged once empty (files the
//! task wrote stay charged as page cache), is removed as before. A kept set has
//! its cpu time (`cpuacct.usage`) and its peak (`memory.max_usage_in_bytes`,
//! which restarts from what is charged now) reset before it is put aside, so
//! the next attempt's peak memory, cpu time and OOM kills are its own. What a
//! reused set may still hold from before is the small leftover: the kernel's
//! per-cpu charge batch and some slab, which a fresh cgroup charges as soon as
//! its first process runs anyway.
//!
//! Limits are written on take only where they differ from the set's last ones:
//! a set's files belong to root, and tasks run as another user (`--run-as`,
//! `nobody` by default), so no task can have changed them. Where tasks run as
//! the borglet's own user (no `--run-as` switch) no set is kept at all.
//! Spares are named `spare-<borglet pid>-<n>`; a borglet that starts removes the
//! spares of one that is gone (killed before it could).

use super::cgroup::{AttemptCgroup, CgroupStats};
use super::limits::{Limits, CFS_PERIOD_US};
use super::{write_limit, IsolationError};
use borg_shared::AttemptId;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Most spare sets kept at once.
pub const MAX_SPARES: usize = 64;
/// Most memory a set may still have charged, once empty, to be kept.
pub const MAX_LEFTOVER: u64 = 1 << 20;
const PREFIX: &str = "spare-";

#[derive(Debug)]
struct Spare {
    /// Under its spare name.
    cg: AttemptCgroup,
    /// What its limit files hold.
    limits: Limits,
}

/// The spares, and the limits of every set in use that this borglet made or
/// handed out (a set re-adopted from an earlier borglet is not known here, so
/// it is removed at its end).
#[derive(Debug, Default)]
pub struct Pool {
    spares: Mutex<Vec<Spare>>,
    in_use: Mutex<HashMap<AttemptId, Limits>>,
    next: AtomicU64,
    /// No set is kept (`disable`).
    off: AtomicBool,
    /// The parent directories sets are renamed in, open (`O_PATH`): a rename
    /// by name within an open directory skips walking both full paths, a
    /// third of its cost (4 µs against 6 µs, measured on this box's v1 memory
    /// hierarchy).
    parents: Mutex<HashMap<std::ffi::OsString, Arc<OwnedFd>>>,
}

impl Pool {
    /// Spares kept now.
    pub fn len(&self) -> usize {
        lock(&self.spares).len()
    }

    /// A set for attempt `id` from the spares, renamed to its id, its limits set
    /// (`memsw`: swap is counted and capped too); `None` when there is none (or
    /// the one taken could not be renamed: it is dropped). Blocking.
    pub fn take(
        &self,
        id: AttemptId,
        limits: &Limits,
        memsw: bool,
    ) -> Option<Result<AttemptCgroup, IsolationError>> {
        let spare = lock(&self.spares).pop()?;
        let name = id.to_string();
        let cg = match self.rename_all(&spare.cg, &name) {
            Ok(cg) => cg,
            Err(e) => {
                tracing::warn!(attempt = %id, error = %e, "could not take a spare cgroup; making one");
                // Whatever half is left under either name goes.
                let _ = spare.cg.remove();
                let _ = renamed(&spare.cg, &name).remove();
                return None;
            }
        };
        Some(match set_limits(&cg, &spare.limits, limits, memsw) {
            Ok(()) => {
                self.made(id, *limits);
                Ok(cg)
            }
            Err(e) => {
                if let Err(rm) = cg.remove() {
                    tracing::warn!(attempt = %id, error = %rm, "could not remove a half-set cgroup");
                }
                Err(e)
            }
        })
    }

    /// Keep no set from now on.
    pub fn disable(&self) {
        self.off.store(true, Ordering::Relaxed);
    }

    /// Attempt `id`'s new set holds `limits`.
    pub fn made(&self, id: AttemptId, limits: Limits) {
        lock(&self.in_use).insert(id, limits);
    }

    /// Attempt `id` is done with `cg` (empty; `stats` read after it emptied, if
    /// they were): kept as a spare when clean, else removed. Blocking.
    pub fn retire(
        &self,
        id: AttemptId,
        cg: &AttemptCgroup,
        stats: Option<&CgroupStats>,
    ) -> std::io::Result<()> {
        let limits = lock(&self.in_use).remove(&id);
        let clean =
            stats.is_some_and(|s| s.oom_kills == 0 && s.memory.is_some_and(|m| m <= MAX_LEFTOVER));
        let (Some(limits), true, AttemptCgroup::V1 { .. }) = (limits, clean, cg) else {
            return cg.remove();
        };
        if self.off.load(Ordering::Relaxed)
            || self.len() >= MAX_SPARES
            || reset_counters(cg).is_err()
        {
            return cg.remove();
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}", std::process::id());
        match self.rename_all(cg, &name) {
            Ok(spare) => {
                lock(&self.spares).push(Spare { cg: spare, limits });
                Ok(())
            }
            Err(_) => {
                let _ = renamed(cg, &name).remove();
                cg.remove()
            }
        }
    }

    /// Remove every spare (the borglet is stopping). Blocking.
    pub fn drain(&self) {
        let spares = std::mem::take(&mut *lock(&self.spares));
        for s in spares {
            if let Err(e) = s.cg.remove() {
                tracing::warn!(error = %e, "could not remove a spare cgroup");
            }
        }
    }
}

/// Remove the spares under `parent` (one hierarchy's borglet parent) that a
/// borglet no longer running left behind. Blocking.
pub fn sweep(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if owner != std::process::id() && !Path::new(&format!("/proc/{owner}")).exists() {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The same set under another name in each hierarchy.
fn renamed(cg: &AttemptCgroup, name: &str) -> AttemptCgroup {
    let to = |p: &PathBuf| p.with_file_name(name);
    match cg {
        AttemptCgroup::V2 { dir } => AttemptCgroup::V2 { dir: to(dir) },
        AttemptCgroup::V1 {
            memory,
            cpu,
            cpuacct,
            pids,
        } => AttemptCgroup::V1 {
            memory: to(memory),
            cpu: to(cpu),
            cpuacct: to(cpuacct),
            pids: to(pids),
        },
    }
}

impl Pool {
    /// Rename every directory of `cg` to `name`; on a failure the ones done are
    /// renamed back (as far as they can be) and the error returned.
    fn rename_all(&self, cg: &AttemptCgroup, name: &str) -> std::io::Result<AttemptCgroup> {
        let to = renamed(cg, name);
        let pairs: Vec<(&Path, &Path)> = cg.dirs().into_iter().zip(to.dirs()).collect();
        for (i, (from, into)) in pairs.iter().enumerate() {
            if let Err(e) = self.rename(from, into) {
                for (back_from, back_into) in &pairs[..i] {
                    let _ = self.rename(back_into, back_from);
                }
                return Err(e);
            }
        }
        Ok(to)
    }

    /// Rename `from` to `into` (same parent) by name within the open parent;
    /// by path if the parent cannot be opened, or if the open one failed to
    /// find the name (it may be a parent removed and made again since: it is
    /// opened afresh next time).
    fn rename(&self, from: &Path, into: &Path) -> std::io::Result<()> {
        let (Some(parent), Some(a), Some(b)) = (from.parent(), from.file_name(), into.file_name())
        else {
            return std::fs::rename(from, into);
        };
        if into.parent().map(Path::as_os_str) != Some(parent.as_os_str()) {
            return std::fs::rename(from, into);
        }
        let Some(dir) = self.parent(parent) else {
            return std::fs::rename(from, into);
        };
        let (a, b) = (
            std::ffi::CString::new(a.as_bytes())?,
            std::ffi::CString::new(b.as_bytes())?,
        );
        // SAFETY: renameat on a directory descriptor this pool holds open, with
        // two NUL-terminated names.
        let r = unsafe { libc::renameat(dir.as_raw_fd(), a.as_ptr(), dir.as_raw_fd(), b.as_ptr()) };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(e);
        }
        lock(&self.parents).remove(parent.as_os_str());
        std::fs::rename(from, into)
    }

    /// `dir`, open (`O_PATH`), from the cache or now.
    fn parent(&self, dir: &Path) -> Option<Arc<OwnedFd>> {
        let mut parents = lock(&self.parents);
        if let Some(fd) = parents.get(dir.as_os_str()) {
            return Some(Arc::clone(fd));
        }
        let fd: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(dir)
            .ok()?
            .into();
        let fd = Arc::new(fd);
        parents.insert(dir.as_os_str().to_os_string(), Arc::clone(&fd));
        Some(fd)
    }
}

/// Zero the counters an attempt reports (cpu time, peak memory). Its OOM kill
/// count cannot be reset: only sets with none are kept.
fn reset_counters(cg: &AttemptCgroup) -> Result<(), IsolationError> {
    let AttemptCgroup::V1 {
        memory, cpuacct, ..
    } = cg
    else {
        return Ok(());
    };
    write_limit(cpuacct, "cpuacct.usage", 0)?;
    write_limit(memory, "memory.max_usage_in_bytes", 0)
}

/// Write the limit files whose value changes from `old` to `new`.
fn set_limits(
    cg: &AttemptCgroup,
    old: &Limits,
    new: &Limits,
    memsw: bool,
) -> Result<(), IsolationError> {
    let AttemptCgroup::V1 {
        memory, cpu, pids, ..
    } = cg
    else {
        return Ok(());
    };
    if old.memory != new.memory {
        let value = new.memory.0;
        // memsw must stay at or above the RAM limit at every step.
        if memsw && new.memory > old.memory {
            write_limit(memory, "memory.memsw.limit_in_bytes", value)?;
        }
        write_limit(memory, "memory.limit_in_bytes", value)?;
        if memsw && new.memory < old.memory {
            write_limit(memory, "memory.memsw.limit_in_bytes", value)?;
        }
    }
    if old.cpu_shares() != new.cpu_shares() {
        write_limit(cpu, "cpu.shares", new.cpu_shares())?;
    }
    match (old.cfs_quota_us(), new.cfs_quota_us()) {
        (a, b) if a == b => {}
        (_, Some(quota)) => {
            write_limit(cpu, "cpu.cfs_period_us", CFS_PERIOD_US)?;
            write_limit(cpu, "cpu.cfs_quota_us", quota)?;
        }
        (Some(_), None) => write_limit(cpu, "cpu.cfs_quota_us", -1)?,
        (None, None) => {}
    }
    if old.pids != new.pids {
        write_limit(pids, "pids.max", new.pids)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use borg_shared::{Bytes, MilliCpu};

    fn limits(memory: u64, cpu_limit: Option<u64>) -> Limits {
        Limits {
            memory: Bytes(memory),
            cpu: MilliCpu(100),
            cpu_limit: cpu_limit.map(MilliCpu),
            pids: 64,
        }
    }

    /// A v1 set laid out like cgroupfs in a plain directory (cpu and cpuacct
    /// apart), named `name` under `root/<hierarchy>`.
    fn set(root: &Path, name: &str) -> AttemptCgroup {
        let d = |h: &str| {
            let p = root.join(h).join(name);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        AttemptCgroup::V1 {
            memory: d("memory"),
            cpu: d("cpu"),
            cpuacct: d("cpuacct"),
            pids: d("pids"),
        }
    }

    fn clean() -> CgroupStats {
        CgroupStats {
            memory: Some(4096),
            peak_memory: Some(50 << 20),
            oom_kills: 0,
        }
    }

    #[test]
    fn a_set_is_renamed_within_its_open_parent_and_by_path_once_that_parent_is_made_again() {
        let root = tempfile::tempdir().unwrap();
        let (a, b, c) = (AttemptId::new(), AttemptId::new(), AttemptId::new());
        let pool = Pool::default();
        let cg = set(root.path(), &a.to_string());
        let moved = pool.rename_all(&cg, &b.to_string()).unwrap();
        assert!(moved.dirs().iter().all(|d| d.is_dir()), "{moved:?}");
        assert!(cg.dirs().iter().all(|d| !d.exists()));
        assert_eq!(
            lock(&pool.parents).len(),
            4,
            "one open parent per hierarchy"
        );
        // The parents removed and made again (another borglet of the same name
        // stopping and starting): the open ones name dead directories.
        std::fs::remove_dir_all(root.path()).unwrap();
        let again = set(root.path(), &b.to_string());
        let moved = pool.rename_all(&again, &c.to_string()).unwrap();
        assert!(moved.dirs().iter().all(|d| d.is_dir()), "{moved:?}");
        assert!(again.dirs().iter().all(|d| !d.exists()));
    }

    #[test]
    fn a_clean_set_is_kept_reset_and_handed_to_the_next_attempt_under_its_id() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (AttemptId::new(), AttemptId::new());
        let cg = set(root.path(), &a.to_string());
        let pool = Pool::default();
        pool.made(a, limits(32 << 20, Some(500)));
        pool.retire(a, &cg, Some(&clean())).unwrap();
        assert_eq!(pool.len(), 1);
        assert!(cg.dirs().iter().all(|d| !d.exists()), "renamed away");
        let AttemptCgroup::V1 {
            memory, cpuacct, ..
        } = &cg
        else {
            unreachable!()
        };
        let spare = memory.with_file_name(format!("{PREFIX}{}-0", std::process::id()));
        assert_eq!(
            std::fs::read_to_string(spare.join("memory.max_usage_in_bytes")).unwrap(),
            "0"
        );
        let spare_cpuacct = cpuacct.with_file_name(spare.file_name().unwrap());
        assert_eq!(
            std::fs::read_to_string(spare_cpuacct.join("cpuacct.usage")).unwrap(),
            "0"
        );

        // Another memory limit and no cpu cap: only those are written.
        let got = pool
            .take(b, &limits(96 << 20, None), false)
            .unwrap()
            .unwrap();
        assert_eq!(pool.len(), 0);
        assert!(got.dirs().iter().all(|d| d.ends_with(b.to_string())));
        let AttemptCgroup::V1 {
            memory, cpu, pids, ..
        } = &got
        else {
            unreachable!()
        };
        let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap();
        assert_eq!(
            read(memory, "memory.limit_in_bytes"),
            (96u64 << 20).to_string()
        );
        assert_eq!(read(cpu, "cpu.cfs_quota_us"), "-1");
        assert!(!cpu.join("cpu.shares").exists(), "unchanged: not written");
        assert!(!pids.join("pids.max").exists(), "unchanged: not written");
    }

    #[test]
    fn a_set_that_saw_an_oom_kill_or_kept_memory_or_is_not_ours_is_removed() {
        let root = tempfile::tempdir().unwrap();
        let pool = Pool::default();
        let oom = CgroupStats {
            oom_kills: 1,
            ..clean()
        };
        let charged = CgroupStats {
            memory: Some(MAX_LEFTOVER + 1),
            ..clean()
        };
        for stats in [Some(oom), Some(charged), None] {
            let id = AttemptId::new();
            let cg = set(root.path(), &id.to_string());
            pool.made(id, limits(32 << 20, None));
            pool.retire(id, &cg, stats.as_ref()).unwrap();
            assert!(cg.dirs().iter().all(|d| !d.exists()), "removed: {stats:?}");
        }
        // Re-adopted: made by an earlier borglet, its limits unknown here.
        let id = AttemptId::new();
        let cg = set(root.path(), &id.to_string());
        pool.retire(id, &cg, Some(&clean())).unwrap();
        assert!(cg.dirs().iter().all(|d| !d.exists()));
        assert_eq!(pool.len(), 0);
        assert!(pool.take(id, &limits(32 << 20, None), false).is_none());
        // Tasks that could have changed their set's files: nothing is kept.
        pool.disable();
        let id = AttemptId::new();
        let cg = set(root.path(), &id.to_string());
        pool.made(id, limits(32 << 20, None));
        pool.retire(id, &cg, Some(&clean())).unwrap();
        assert!(cg.dirs().iter().all(|d| !d.exists()));
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn spares_of_a_borglet_that_is_gone_are_swept() {
        let root = tempfile::tempdir().unwrap();
        let dead = format!("{PREFIX}{}-3", u32::MAX - 1);
        let ours = format!("{PREFIX}{}-3", std::process::id());
        for n in [&dead, &ours, &"an-attempt".to_string()] {
            std::fs::create_dir(root.path().join(n)).unwrap();
        }
        sweep(root.path());
        assert!(!root.path().join(&dead).exists());
        assert!(root.path().join(&ours).exists());
        assert!(root.path().join("an-attempt").exists());
    }
}
