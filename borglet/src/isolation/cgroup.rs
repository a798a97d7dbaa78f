//! One attempt's cgroup once created: the files a process joins it through, its
//! statistics, killing everything in it, and removing it. Plain cgroupfs files,
//! so every reader here also works on a directory laid out like cgroupfs.

use super::join::CgroupJoin;
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long `kill_all` keeps killing before it gives up on an unkillable cgroup.
const KILL_PATIENCE: Duration = Duration::from_secs(5);
/// How long `remove` retries an rmdir the kernel still calls busy (exiting tasks).
const REMOVE_PATIENCE: Duration = Duration::from_secs(2);
const RETRY_EVERY: Duration = Duration::from_millis(5);

/// Kept in the attempt's launch record, so a restarted borglet finds it again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptCgroup {
    /// One directory in the unified hierarchy.
    V2 { dir: PathBuf },
    /// One directory per v1 hierarchy (memory, cpu, cpuacct, pids), deduplicated
    /// where controllers share a mount.
    V1 {
        memory: PathBuf,
        cpu: PathBuf,
        cpuacct: PathBuf,
        pids: PathBuf,
    },
}

/// What the kernel counted for a cgroup that an attempt's end needs; `None`
/// where the file is missing. (Its cpu time is sampled while it runs, by
/// `usage_counters`: the end does not read it.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Memory charged now, bytes.
    pub memory: Option<u64>,
    /// Highest memory charged, bytes (v2 needs Linux 5.19 for `memory.peak`).
    pub peak_memory: Option<u64>,
    /// Processes the OOM killer killed in it.
    pub oom_kills: u64,
}

impl AttemptCgroup {
    /// Every directory, each once. Told apart by their bytes (they are all
    /// made by joining names to the mounts' paths): `Path`'s `==` compares
    /// component by component, which showed in the profile (a few calls per start).
    pub fn dirs(&self) -> Vec<&Path> {
        let mut dirs: Vec<&Path> = match self {
            AttemptCgroup::V2 { dir } => vec![dir],
            AttemptCgroup::V1 {
                memory,
                cpu,
                cpuacct,
                pids,
            } => vec![memory, cpu, cpuacct, pids],
        };
        let mut seen: Vec<&std::ffi::OsStr> = Vec::with_capacity(dirs.len());
        dirs.retain(|d| {
            let new = !seen.contains(&d.as_os_str());
            seen.push(d.as_os_str());
            new
        });
        dirs
    }

    /// The files a process joins the cgroup through by writing `0` ("the
    /// caller") to each, from a child that is still single-threaded (between
    /// fork and exec): v2's `cgroup.procs`; on v1, each hierarchy's `tasks`.
    /// A write to a v1 `cgroup.procs`, or of a pid, moves a thread group and so
    /// takes the kernel's global `cgroup_threadgroup_rwsem` for writing,
    /// which waits for every fork, exec and exit on the host to leave it and
    /// holds the next ones meanwhile (`perf`: starters and exiting tasks asleep
    /// in it during a burst of starts). `0` into `tasks` moves the calling
    /// thread alone and skips that lock; a child with one thread is the whole
    /// process, and the threads it makes later are born in its cgroups. (A v2
    /// domain cgroup takes processes only, through `cgroup.procs`.)
    pub fn join_files(&self) -> Vec<PathBuf> {
        let name = match self {
            AttemptCgroup::V2 { .. } => "cgroup.procs",
            AttemptCgroup::V1 { .. } => "tasks",
        };
        self.dirs().into_iter().map(|d| d.join(name)).collect()
    }

    /// Open the files for a child to join the cgroup through before exec.
    pub fn joiner(&self) -> std::io::Result<CgroupJoin> {
        CgroupJoin::open(&self.join_files())
    }

    /// Its name, the same in every hierarchy (`set-…` on v1, the attempt's id on
    /// v2), for log lines.
    pub fn name(&self) -> std::borrow::Cow<'_, str> {
        self.members_dir()
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
    }

    /// The directory whose `cgroup.procs` lists every process of the attempt.
    fn members_dir(&self) -> &Path {
        match self {
            AttemptCgroup::V2 { dir } => dir,
            AttemptCgroup::V1 { pids, .. } => pids,
        }
    }

    /// Pids in the cgroup now.
    pub fn pids(&self) -> std::io::Result<Vec<i32>> {
        let text = read_file(&self.members_dir().join("cgroup.procs"))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Memory charged now and total cpu time (ns): the two files usage sampling
    /// reads, every few seconds for every live attempt.
    pub fn usage_counters(&self) -> (Option<u64>, Option<u64>) {
        match self {
            AttemptCgroup::V2 { dir } => (
                read_u64(&dir.join("memory.current")),
                read_keyed(&dir.join("cpu.stat"), "usage_usec").map(|us| us * 1000),
            ),
            AttemptCgroup::V1 {
                memory, cpuacct, ..
            } => (
                read_u64(&memory.join("memory.usage_in_bytes")),
                read_u64(&cpuacct.join("cpuacct.usage")),
            ),
        }
    }

    /// Read the counters an attempt's end needs (three small files).
    pub fn stats(&self) -> CgroupStats {
        match self {
            AttemptCgroup::V2 { dir } => CgroupStats {
                memory: read_u64(&dir.join("memory.current")),
                peak_memory: read_u64(&dir.join("memory.peak")),
                oom_kills: read_keyed(&dir.join("memory.events"), "oom_kill").unwrap_or(0),
            },
            AttemptCgroup::V1 { memory, .. } => CgroupStats {
                memory: read_u64(&memory.join("memory.usage_in_bytes")),
                peak_memory: read_u64(&memory.join("memory.max_usage_in_bytes")),
                oom_kills: read_keyed(&memory.join("memory.oom_control"), "oom_kill").unwrap_or(0),
            },
        }
    }

    /// SIGKILL every process in the cgroup, including any that left the task's
    /// process group or session, and wait until it is empty. Blocking: run it off
    /// the async threads. v2 uses `cgroup.kill` where the kernel has it (5.14+);
    /// otherwise every listed pid is killed, again until none is left: what a
    /// dying process forked shows up in the next round, and `pids.max` bounds
    /// how many there can be. (The v1 freezer would stop forks meanwhile, at the
    /// price of one more cgroup per attempt on every start: not worth it.)
    pub fn kill_all(&self) -> std::io::Result<()> {
        let deadline = Instant::now() + KILL_PATIENCE;
        // The common case at an attempt's end: nothing left, nothing to freeze.
        match self.pids() {
            Ok(p) if p.is_empty() => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            _ => {}
        }
        if let AttemptCgroup::V2 { dir } = self {
            match std::fs::write(dir.join("cgroup.kill"), "1") {
                Ok(()) => return self.wait_empty(deadline),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        loop {
            let pids = match self.pids() {
                Ok(p) => p,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            if pids.is_empty() {
                return Ok(());
            }
            for pid in pids {
                // Gone already (ESRCH) is what we want; anything else is retried.
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            if Instant::now() >= deadline {
                return Err(std::io::Error::other(format!(
                    "processes still in {} after SIGKILL",
                    self.members_dir().display()
                )));
            }
            // Killed processes leave the cgroup once they have exited.
            std::thread::sleep(RETRY_EVERY);
        }
    }

    fn wait_empty(&self, deadline: Instant) -> std::io::Result<()> {
        loop {
            match self.pids() {
                Ok(p) if p.is_empty() => return Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
                Ok(_) if Instant::now() >= deadline => {
                    return Err(std::io::Error::other(format!(
                        "processes still in {} after cgroup.kill",
                        self.members_dir().display()
                    )))
                }
                Ok(_) => std::thread::sleep(RETRY_EVERY),
            }
        }
    }

    /// Remove the cgroup's directories. It must be empty; an rmdir the kernel
    /// calls busy right after the last exit is retried briefly. Gone is success.
    pub fn remove(&self) -> std::io::Result<()> {
        let deadline = Instant::now() + REMOVE_PATIENCE;
        for dir in self.dirs() {
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(Errno::EBUSY as i32)
                            && Instant::now() < deadline =>
                    {
                        std::thread::sleep(RETRY_EVERY)
                    }
                    Err(e) => {
                        return Err(std::io::Error::other(format!(
                            "removing {}: {e}",
                            dir.display()
                        )))
                    }
                }
            }
        }
        Ok(())
    }
}

/// A cgroupfs file's text (see `kernel_file`).
fn read_file(path: &Path) -> std::io::Result<String> {
    String::from_utf8(crate::kernel_file::read(path)?)
        .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))
}

fn read_u64(path: &Path) -> Option<u64> {
    read_file(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat keyed file (`oom_kill 3`).
fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    parse_keyed(&read_file(path).ok()?, key)
}

fn parse_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_is_named_by_its_last_component() {
        let at = |h: &str| PathBuf::from(format!("/sys/fs/cgroup/{h}/borg/m1/set-7-99-3"));
        let v1 = AttemptCgroup::V1 {
            memory: at("memory"),
            cpu: at("cpu,cpuacct"),
            cpuacct: at("cpu,cpuacct"),
            pids: at("pids"),
        };
        assert_eq!(v1.name(), "set-7-99-3");
        let v2 = AttemptCgroup::V2 {
            dir: PathBuf::from("/sys/fs/cgroup/borg/m1/0190-attempt"),
        };
        assert_eq!(v2.name(), "0190-attempt");
    }

    #[test]
    fn keyed_files_are_read_by_key() {
        let events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_keyed(events, "oom_kill"), Some(1));
        assert_eq!(parse_keyed(events, "oom"), Some(2));
        assert_eq!(parse_keyed(events, "nope"), None);
        let control = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(parse_keyed(control, "oom_kill"), Some(3));
    }

    #[test]
    fn stats_are_read_from_cgroupfs_files() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path();
        std::fs::write(d.join("memory.current"), "1048576\n").unwrap();
        std::fs::write(d.join("memory.peak"), "2097152\n").unwrap();
        std::fs::write(d.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
        std::fs::write(d.join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
        let cg = AttemptCgroup::V2 { dir: d.into() };
        assert_eq!(
            cg.stats(),
            CgroupStats {
                memory: Some(1 << 20),
                peak_memory: Some(2 << 20),
                oom_kills: 1,
            }
        );
        let v1 = AttemptCgroup::V1 {
            memory: d.join("m"),
            cpu: d.join("c"),
            cpuacct: d.join("c"),
            pids: d.join("p"),
        };
        std::fs::create_dir_all(d.join("m")).unwrap();
        std::fs::create_dir_all(d.join("c")).unwrap();
        std::fs::write(d.join("m/memory.usage_in_bytes"), "4096\n").unwrap();
        std::fs::write(d.join("m/memory.max_usage_in_bytes"), "8192\n").unwrap();
        std::fs::write(
            d.join("m/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        std::fs::write(d.join("c/cpuacct.usage"), "77\n").unwrap();
        let s = v1.stats();
        assert_eq!(
            (s.memory, s.peak_memory, s.oom_kills),
            (Some(4096), Some(8192), 2)
        );
        assert_eq!(v1.dirs().len(), 3, "cpu and cpuacct share a mount here");
        assert_eq!(v1.join_files()[0], d.join("m/tasks"));
    }

    #[test]
    fn a_members_list_longer_than_the_first_read_is_read_whole() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path();
        let pids: Vec<i32> = (100_000..100_300).collect();
        let text: String = pids.iter().map(|p| format!("{p}\n")).collect();
        assert!(text.len() > 1024, "several reads' worth");
        std::fs::write(d.join("cgroup.procs"), &text).unwrap();
        let cg = AttemptCgroup::V2 { dir: d.into() };
        assert_eq!(cg.pids().unwrap(), pids);
        std::fs::write(d.join("cgroup.procs"), "").unwrap();
        assert_eq!(cg.pids().unwrap(), Vec::<i32>::new());
    }
}
