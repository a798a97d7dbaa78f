//! CPU time per component of the cell, from /proc: each process's utime+stime,
//! plus the cutime+cstime of the parents that reap short-lived children
//! (Postgres backends under the postmaster, task processes under a borglet),
//! and of their live children (a borglet's keeper, which reaps the tasks).
//! The delta of that sum between two samples is the CPU spent in between, even
//! for processes that started or ended meanwhile. Also the whole machine's
//! busy share from /proc/stat.

use anyhow::Context;
use procfs::CurrentSI;
use procfs::KernelStats;
use serde::Serialize;
use std::collections::BTreeMap;

/// Who burned the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    Postgres,
    Borgmaster,
    Borgscheduler,
    Borglets,
    /// The task processes themselves (fork, exec, `/bin/true`), reaped by the borglets.
    Tasks,
    /// This bench process, and the `jobctl run` processes it starts.
    Client,
}

impl Group {
    pub const ALL: [Group; 6] = [
        Group::Postgres,
        Group::Borgmaster,
        Group::Borgscheduler,
        Group::Borglets,
        Group::Tasks,
        Group::Client,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Group::Postgres => "postgres",
            Group::Borgmaster => "borgmaster",
            Group::Borgscheduler => "borgscheduler",
            Group::Borglets => "borglets",
            Group::Tasks => "tasks",
            Group::Client => "bench client",
        }
    }

    /// Part of the cell (everything but the client).
    pub fn in_cell(self) -> bool {
        self != Group::Client
    }
}

/// One process's CPU ticks as read from `/proc/<pid>/stat`.
#[derive(Debug, Clone)]
pub struct ProcTicks {
    pub pid: i32,
    pub ppid: i32,
    pub comm: String,
    /// `argv[0]`, read only for the dev cell's direct children (that is how
    /// `jobctl dev` names them: `borgmaster`, `borgscheduler`, `borglet-2`).
    pub argv0: Option<String>,
    /// utime + stime.
    pub own: u64,
    /// cutime + cstime: reaped children.
    pub reaped: u64,
}

/// Sort the processes of the cell started by `dev` (and the bench `me`) into groups.
pub fn classify(procs: &[ProcTicks], dev: Option<i32>, me: i32) -> BTreeMap<Group, u64> {
    let mut ticks: BTreeMap<Group, u64> = BTreeMap::new();
    let mut add = |g: Group, t: u64| *ticks.entry(g).or_default() += t;
    // The cell's components and, for the postmaster and borglets, who reaps their children.
    let mut parents: Vec<(i32, Group)> = Vec::new();
    for p in procs {
        if p.pid == me {
            add(Group::Client, p.own + p.reaped);
            continue;
        }
        if dev != Some(p.ppid) {
            continue;
        }
        let name = p.argv0.as_deref().unwrap_or("");
        let group = if p.comm == "postgres" {
            Group::Postgres
        } else if name == "borgmaster" {
            Group::Borgmaster
        } else if name == "borgscheduler" {
            Group::Borgscheduler
        } else if name.starts_with("borglet") {
            Group::Borglets
        } else {
            continue;
        };
        add(group, p.own);
        let children = if group == Group::Borglets {
            Group::Tasks
        } else {
            group
        };
        add(children, p.reaped);
        parents.push((p.pid, children));
    }
    // Their live children, with what those reaped in turn (a borglet's keeper
    // reaps its tasks).
    for p in procs {
        if let Some((_, g)) = parents.iter().find(|(pid, _)| *pid == p.ppid) {
            add(*g, p.own + p.reaped);
        }
    }
    ticks
}

/// Every process's ticks now. Processes that vanish while being read are skipped.
fn read_procs(dev: Option<i32>) -> anyhow::Result<Vec<ProcTicks>> {
    let mut out = Vec::new();
    for process in procfs::process::all_processes().context("reading /proc")? {
        let Ok(process) = process else { continue };
        let Ok(stat) = process.stat() else { continue };
        let argv0 = if dev == Some(stat.ppid) {
            process.cmdline().ok().and_then(|c| c.into_iter().next())
        } else {
            None
        };
        out.push(ProcTicks {
            pid: stat.pid,
            ppid: stat.ppid,
            comm: stat.comm,
            argv0,
            own: stat.utime + stat.stime,
            reaped: (stat.cutime + stat.cstime).max(0) as u64,
        });
    }
    Ok(out)
}

/// The whole machine's ticks: busy (not idle, not iowait) and in all.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MachineTicks {
    pub busy: u64,
    pub total: u64,
}

impl MachineTicks {
    pub fn of(stats: &KernelStats) -> MachineTicks {
        let t = &stats.total;
        let idle = t.idle + t.iowait.unwrap_or(0);
        let busy = t.user
            + t.nice
            + t.system
            + t.irq.unwrap_or(0)
            + t.softirq.unwrap_or(0)
            + t.steal.unwrap_or(0);
        MachineTicks {
            busy,
            total: busy + idle,
        }
    }
}

/// CPU ticks by group and of the machine at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    groups: BTreeMap<Group, u64>,
    machine: MachineTicks,
}

/// What a phase cost: CPU-ms per group, and the machine's busy share.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseCpu {
    /// CPU milliseconds per group (only groups that could be found).
    pub ms: BTreeMap<Group, f64>,
    /// Busy share of all cores over the phase, 0..=1.
    pub machine_busy: f64,
    pub cpus: usize,
}

impl PhaseCpu {
    /// The cell's groups summed (postgres, master, scheduler, borglets, tasks).
    pub fn cell_ms(&self) -> f64 {
        self.ms
            .iter()
            .filter(|(g, _)| g.in_cell())
            .map(|(_, ms)| ms)
            .sum()
    }
}

/// Samples the cell started by `dev` (None: a cell we did not start, whose
/// processes we cannot tell apart from others; only the client and the machine are measured).
pub struct Meter {
    dev: Option<i32>,
    me: i32,
    ticks_per_sec: u64,
    cpus: usize,
}

impl Meter {
    pub fn new(dev: Option<i32>) -> Meter {
        let cpus = KernelStats::current()
            .map(|k| k.cpu_time.len())
            .unwrap_or(1)
            .max(1);
        Meter {
            dev,
            me: std::process::id() as i32,
            ticks_per_sec: procfs::ticks_per_second().max(1),
            cpus,
        }
    }

    pub fn sample(&self) -> anyhow::Result<Sample> {
        let machine = MachineTicks::of(&KernelStats::current().context("reading /proc/stat")?);
        let procs = read_procs(self.dev)?;
        Ok(Sample {
            groups: classify(&procs, self.dev, self.me),
            machine,
        })
    }

    pub fn between(&self, a: &Sample, b: &Sample) -> PhaseCpu {
        let mut ms = BTreeMap::new();
        for g in Group::ALL {
            if g.in_cell() && self.dev.is_none() {
                continue;
            }
            let d = b.groups.get(&g).copied().unwrap_or(0);
            let d = d.saturating_sub(a.groups.get(&g).copied().unwrap_or(0));
            ms.insert(g, d as f64 * 1000.0 / self.ticks_per_sec as f64);
        }
        PhaseCpu {
            ms,
            machine_busy: busy_share(a.machine, b.machine),
            cpus: self.cpus,
        }
    }
}

/// Busy share of the machine between two readings of /proc/stat.
pub fn busy_share(a: MachineTicks, b: MachineTicks) -> f64 {
    let total = b.total.saturating_sub(a.total);
    if total == 0 {
        return 0.0;
    }
    b.busy.saturating_sub(a.busy) as f64 / total as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use procfs::FromReadSI;

    fn stats(text: &str) -> KernelStats {
        let info = procfs::ExplicitSystemInfo {
            boot_time_secs: 0,
            ticks_per_second: 100,
            page_size: 4096,
            is_little_endian: true,
        };
        KernelStats::from_read(text.as_bytes(), &info).unwrap()
    }

    const STAT_A: &str = "cpu  1000 10 500 8000 90 0 40 0 0 0
cpu0 500 5 250 4000 45 0 20 0 0 0
cpu1 500 5 250 4000 45 0 20 0 0 0
intr 1 2 3
ctxt 12345
btime 1700000000
processes 999
procs_running 2
procs_blocked 0
";
    const STAT_B: &str = "cpu  1150 10 600 8040 100 0 50 0 0 0
cpu0 575 5 300 4020 50 0 25 0 0 0
cpu1 575 5 300 4020 50 0 25 0 0 0
intr 1 2 3
ctxt 12399
btime 1700000000
processes 1010
procs_running 1
procs_blocked 0
";

    #[test]
    fn proc_stat_busy_and_total() {
        let a = MachineTicks::of(&stats(STAT_A));
        // user + nice + system + irq + softirq; idle + iowait.
        assert_eq!(a.busy, 1000 + 10 + 500 + 40);
        assert_eq!(a.total, a.busy + 8000 + 90);
        let b = MachineTicks::of(&stats(STAT_B));
        // 260 busy ticks out of 310.
        assert!((busy_share(a, b) - 260.0 / 310.0).abs() < 1e-9);
        assert_eq!(busy_share(a, a), 0.0);
        assert_eq!(stats(STAT_A).cpu_time.len(), 2);
    }

    fn p(pid: i32, ppid: i32, comm: &str, argv0: Option<&str>, own: u64, reaped: u64) -> ProcTicks {
        ProcTicks {
            pid,
            ppid,
            comm: comm.into(),
            argv0: argv0.map(String::from),
            own,
            reaped,
        }
    }

    #[test]
    fn processes_are_grouped_by_how_the_dev_cell_names_them() {
        let procs = vec![
            p(1, 0, "systemd", None, 999, 999),
            p(10, 1, "jobctl", Some("jobctl"), 5, 0), // the dev cell itself
            p(
                11,
                10,
                "postgres",
                Some("/usr/lib/postgresql/15/bin/postgres"),
                100,
                40,
            ),
            p(12, 11, "postgres", None, 30, 0), // a backend
            p(13, 11, "postgres", None, 20, 0),
            p(14, 10, "jobctl", Some("borgmaster"), 200, 0),
            p(15, 10, "jobctl", Some("borgscheduler"), 50, 0),
            p(16, 10, "jobctl", Some("borglet-1"), 60, 300),
            p(17, 10, "jobctl", Some("borglet-2"), 70, 200),
            p(18, 16, "sleep", None, 7, 0),   // a live task
            p(19, 17, "jobctl", None, 3, 90), // a keeper and the tasks it reaped
            p(20, 1, "jobctl", Some("borgmaster"), 1000, 0), // another cell's: not ours
            p(30, 2, "jobctl", None, 8, 4),   // the bench
        ];
        let g = classify(&procs, Some(10), 30);
        assert_eq!(g[&Group::Postgres], 100 + 40 + 30 + 20);
        assert_eq!(g[&Group::Borgmaster], 200);
        assert_eq!(g[&Group::Borgscheduler], 50);
        assert_eq!(g[&Group::Borglets], 130);
        assert_eq!(g[&Group::Tasks], 500 + 7 + 3 + 90);
        assert_eq!(g[&Group::Client], 12);
        let alone = classify(&procs, None, 30);
        assert_eq!(alone.len(), 1);
    }
}
