//! Spare cgroup sets (v1): a finished attempt's set of directories, emptied, is
//! kept instead of removed, and the next attempt takes it as it is, rather than
//! making four new directories and removing four old ones. A memory cgroup's
//! mkdir allocates and its rmdir tears down (later, on kernel workers) the
//! controller's per-cgroup state. Sets are never renamed: v1 renames take the
//! cgroup and kernfs locks every start's joins need too, and dropping the eight
//! renames a start cost cut the borglet's CPU per start by a quarter
//! (BENCHMARKS.md). So a set keeps the neutral name it was made under (see
//! `v1.rs`), and an attempt finds its set through its launch record.
//!
//! Exactness: only a set the borglet made itself, whose kernel counters say
//! nothing ended badly in it, is kept. A set that saw an OOM kill, or that
//! still has more than [`MAX_LEFTOVER`] of memory charged once empty (files the
//! task wrote stay charged as page cache), is removed as before. A taken set
//! has its cpu time (`cpuacct.usage`) and its peak (`memory.max_usage_in_bytes`,
//! which restarts from what is charged now) reset before it is handed out, so
//! the next attempt's peak memory, cpu time and OOM kills are its own; until
//! then a kept set still holds the counters of the attempt that ended in it (a
//! borglet restarted meanwhile reads them as that attempt's). What a reused set
//! may still hold from before is the small leftover: the kernel's per-cpu
//! charge batch and some slab, which a fresh cgroup charges as soon as its
//! first process runs anyway.
//!
//! A kept set is handed out only once nothing else holds it (its `Arc` is the
//! pool's alone): a stop still killing what was left in it, a usage sample or
//! the attempt table's entry would otherwise act on the next attempt's tasks.
//!
//! Limits are written on take only where they differ from the set's last ones:
//! a set's files belong to root, and tasks run as another user (`--run-as`,
//! `nobody` by default), so no task can have changed them. Where tasks run as
//! the borglet's own user (no `--run-as` switch) no set is kept at all. A
//! borglet removes its spares when it stops, and at start ([`sweep`]) the
//! empty sets a borglet that is gone left (and the empty cgroups older
//! borglets named for their attempts) in which no re-adopted attempt runs.

use super::cgroup::{AttemptCgroup, CgroupStats};
use super::limits::{Limits, CFS_PERIOD_US};
use super::{write_limit, IsolationError};
use borg_shared::AttemptId;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Most spare sets kept at once.
pub const MAX_SPARES: usize = 64;
/// Most memory a set may still have charged, once empty, to be kept.
pub const MAX_LEFTOVER: u64 = 1 << 20;
/// How every set's name starts (`set-<borglet pid>-<its start ticks>-<n>`).
pub const SET_PREFIX: &str = "set-";
/// Spares were renamed to `spare-<pid>-<n>` by borglets before sets kept their names.
const OLD_SPARE_PREFIX: &str = "spare-";

#[derive(Debug)]
struct Spare {
    cg: Arc<AttemptCgroup>,
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
    /// No set is kept (`disable`).
    off: AtomicBool,
}

impl Pool {
    /// Spares kept now.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.spares).len()
    }

    /// A set for attempt `id` from the spares nothing else holds, its counters
    /// reset and its limits set (`memsw`: swap is counted and capped too);
    /// `None` when there is none, or when the one taken could not be reset (it
    /// is removed: the caller makes a fresh one). Blocking.
    pub fn take(&self, id: AttemptId, limits: &Limits, memsw: bool) -> Option<AttemptCgroup> {
        let (cg, old) = {
            let mut spares = lock(&self.spares);
            let free = spares.iter().rposition(|s| Arc::strong_count(&s.cg) == 1)?;
            let spare = spares.swap_remove(free);
            // Held by no one else, it cannot be cloned from outside the pool.
            match Arc::try_unwrap(spare.cg) {
                Ok(cg) => (cg, spare.limits),
                Err(cg) => {
                    spares.push(Spare {
                        cg,
                        limits: spare.limits,
                    });
                    return None;
                }
            }
        };
        match reset_counters(&cg).and_then(|()| set_limits(&cg, &old, limits, memsw)) {
            Ok(()) => {
                self.made(id, *limits);
                Some(cg)
            }
            Err(e) => {
                tracing::warn!(attempt = %id, error = %e, "could not take a spare cgroup; making one");
                if let Err(rm) = cg.remove() {
                    tracing::warn!(attempt = %id, error = %rm, "could not remove a spare cgroup");
                }
                None
            }
        }
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
        cg: Arc<AttemptCgroup>,
        stats: Option<&CgroupStats>,
    ) -> std::io::Result<()> {
        let limits = lock(&self.in_use).remove(&id);
        let clean =
            stats.is_some_and(|s| s.oom_kills == 0 && s.memory.is_some_and(|m| m <= MAX_LEFTOVER));
        let (Some(limits), true, AttemptCgroup::V1 { .. }) = (limits, clean, &*cg) else {
            return cg.remove();
        };
        if self.off.load(Ordering::Relaxed) {
            return cg.remove();
        }
        let mut spares = lock(&self.spares);
        if spares.len() >= MAX_SPARES {
            drop(spares);
            return cg.remove();
        }
        spares.push(Spare { cg, limits });
        Ok(())
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

/// Remove the sets under `parent` (one hierarchy's borglet parent) that a
/// borglet no longer running left: every one not in `keep` (those re-adopted
/// attempts run in) whose maker is gone. A set named for its attempt (made by
/// a borglet from before sets kept their names) has no maker on record: it is
/// left only if in `keep`. An rmdir of a set that still holds processes fails
/// and leaves it. Other names are never touched. Returns how many it removed.
/// Blocking.
pub fn sweep(parent: &Path, keep: &HashSet<PathBuf>) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let Some(maker) = e.file_name().to_str().and_then(Maker::of) else {
            continue;
        };
        let path = e.path();
        if !maker.alive() && !keep.contains(&path) && std::fs::remove_dir(path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Who made a set, as its name tells.
enum Maker {
    /// `set-<pid>-<start ticks>-<n>`.
    Borglet(crate::records::ProcId),
    /// `spare-<pid>-<n>`, from a borglet before sets kept their names.
    Pid(i32),
    /// Named for its attempt, by a borglet before sets kept their names.
    Unknown,
}

impl Maker {
    /// `None`: not a set's name.
    fn of(name: &str) -> Option<Maker> {
        if let Some(rest) = name.strip_prefix(SET_PREFIX) {
            let mut parts = rest.splitn(3, '-');
            let pid = parts.next()?.parse().ok()?;
            let start_ticks = parts.next()?.parse().ok()?;
            return Some(Maker::Borglet(crate::records::ProcId { pid, start_ticks }));
        }
        if let Some(rest) = name.strip_prefix(OLD_SPARE_PREFIX) {
            let (pid, _) = rest.split_once('-')?;
            return Some(Maker::Pid(pid.parse().ok()?));
        }
        name.parse::<AttemptId>().is_ok().then_some(Maker::Unknown)
    }

    fn alive(&self) -> bool {
        match self {
            Maker::Borglet(me) => me.is_alive(),
            Maker::Pid(pid) => Path::new(&format!("/proc/{pid}")).exists(),
            Maker::Unknown => false,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
    fn a_clean_set_is_kept_and_handed_to_the_next_attempt_reset_under_its_name() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (AttemptId::new(), AttemptId::new());
        let cg = set(root.path(), "set-1-2-0");
        let AttemptCgroup::V1 {
            memory, cpuacct, ..
        } = &cg
        else {
            unreachable!()
        };
        std::fs::write(memory.join("memory.max_usage_in_bytes"), "52428800").unwrap();
        std::fs::write(cpuacct.join("cpuacct.usage"), "123456").unwrap();
        let pool = Pool::default();
        pool.made(a, limits(32 << 20, Some(500)));
        pool.retire(a, Arc::new(cg.clone()), Some(&clean()))
            .unwrap();
        assert_eq!(pool.len(), 1);
        assert!(cg.dirs().iter().all(|d| d.is_dir()), "kept where it is");
        let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap();
        assert_eq!(
            read(memory, "memory.max_usage_in_bytes"),
            "52428800",
            "A's counters stand until the set is taken"
        );

        // Another memory limit and no cpu cap: only those are written, and the
        // counters start again.
        let got = pool.take(b, &limits(96 << 20, None), false).unwrap();
        assert_eq!(pool.len(), 0);
        assert_eq!(got, cg, "the same set, under its own name");
        let AttemptCgroup::V1 { cpu, pids, .. } = &got else {
            unreachable!()
        };
        assert_eq!(read(memory, "memory.max_usage_in_bytes"), "0");
        assert_eq!(read(cpuacct, "cpuacct.usage"), "0");
        assert_eq!(
            read(memory, "memory.limit_in_bytes"),
            (96u64 << 20).to_string()
        );
        assert_eq!(read(cpu, "cpu.cfs_quota_us"), "-1");
        assert!(!cpu.join("cpu.shares").exists(), "unchanged: not written");
        assert!(!pids.join("pids.max").exists(), "unchanged: not written");
    }

    #[test]
    fn a_set_something_else_still_holds_is_not_handed_out() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (AttemptId::new(), AttemptId::new());
        let cg = Arc::new(set(root.path(), "set-1-2-0"));
        let pool = Pool::default();
        pool.made(a, limits(32 << 20, None));
        // A stop still killing what was left in A's set holds it.
        let held = Arc::clone(&cg);
        pool.retire(a, cg, Some(&clean())).unwrap();
        assert_eq!(pool.len(), 1);
        assert!(pool.take(b, &limits(32 << 20, None), false).is_none());
        drop(held);
        assert_eq!(
            pool.take(b, &limits(32 << 20, None), false).as_ref(),
            Some(&set(root.path(), "set-1-2-0"))
        );
    }

    #[test]
    fn a_spare_that_cannot_be_reset_is_removed_and_none_is_handed_out() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (AttemptId::new(), AttemptId::new());
        let cg = set(root.path(), "set-1-2-0");
        let pool = Pool::default();
        pool.made(a, limits(32 << 20, None));
        pool.retire(a, Arc::new(cg.clone()), Some(&clean()))
            .unwrap();
        // Gone from under the pool (another borglet of the same name swept it).
        std::fs::remove_dir_all(root.path().join("cpuacct")).unwrap();
        assert!(pool.take(b, &limits(32 << 20, None), false).is_none());
        assert_eq!(pool.len(), 0);
        assert!(cg.dirs().iter().all(|d| !d.exists()), "{cg:?}");
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
        for (n, stats) in [Some(oom), Some(charged), None].into_iter().enumerate() {
            let id = AttemptId::new();
            let cg = set(root.path(), &format!("set-1-2-{n}"));
            pool.made(id, limits(32 << 20, None));
            pool.retire(id, Arc::new(cg.clone()), stats.as_ref())
                .unwrap();
            assert!(cg.dirs().iter().all(|d| !d.exists()), "removed: {stats:?}");
        }
        // Re-adopted: made by an earlier borglet, its limits unknown here.
        let id = AttemptId::new();
        let cg = set(root.path(), "set-1-2-5");
        pool.retire(id, Arc::new(cg.clone()), Some(&clean()))
            .unwrap();
        assert!(cg.dirs().iter().all(|d| !d.exists()));
        assert_eq!(pool.len(), 0);
        assert!(pool.take(id, &limits(32 << 20, None), false).is_none());
        // Tasks that could have changed their set's files: nothing is kept.
        pool.disable();
        let id = AttemptId::new();
        let cg = set(root.path(), "set-1-2-6");
        pool.made(id, limits(32 << 20, None));
        pool.retire(id, Arc::new(cg.clone()), Some(&clean()))
            .unwrap();
        assert!(cg.dirs().iter().all(|d| !d.exists()));
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn sets_a_borglet_that_is_gone_left_are_swept_but_not_those_in_use() {
        let root = tempfile::tempdir().unwrap();
        let me = crate::records::ProcId::of(std::process::id() as i32).unwrap();
        let gone = |n: u32| format!("{SET_PREFIX}{}-1-{n}", i32::MAX - 1);
        let names = [
            gone(0),
            gone(1),
            format!("{SET_PREFIX}{}-{}-0", me.pid, me.start_ticks),
            // Our pid, but another start: a borglet before us with the same pid.
            format!("{SET_PREFIX}{}-{}-0", me.pid, me.start_ticks + 1),
            format!("{OLD_SPARE_PREFIX}{}-3", i32::MAX - 1),
            format!("{OLD_SPARE_PREFIX}{}-3", std::process::id()),
            "not-a-set".to_string(),
            // Named for its attempt by an older borglet: gone unless re-adopted.
            AttemptId::new().to_string(),
            AttemptId::new().to_string(),
        ];
        for n in &names {
            std::fs::create_dir(root.path().join(n)).unwrap();
        }
        let keep = HashSet::from([root.path().join(gone(1)), root.path().join(&names[8])]);
        assert_eq!(sweep(root.path(), &keep), 4);
        let left = |n: &String| root.path().join(n).exists();
        let kept: Vec<bool> = names.iter().map(left).collect();
        assert_eq!(
            kept,
            [false, true, true, false, false, true, true, false, true],
            "{names:?}"
        );
    }
}
