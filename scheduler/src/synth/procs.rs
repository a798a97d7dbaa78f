//! Real `borgscheduler` processes for the benchmark and the tests, and what
//! their `pass` log lines say (read from their stderr as they come).

use anyhow::Context;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One `pass` line of one scheduler.
#[derive(Debug, Clone)]
pub struct PassLine {
    pub scheduler: usize,
    /// When the bench read the line (the pass had just ended).
    pub at: Instant,
    pub pending: u64,
    pub placed: u64,
    pub lost_races: u64,
    pub ms: u64,
}

impl PassLine {
    pub fn started(&self) -> Instant {
        self.at - Duration::from_millis(self.ms)
    }
    fn busy(&self) -> bool {
        self.placed > 0 || self.lost_races > 0
    }
}

/// Scheduler processes, killed on drop.
pub struct SchedulerProcs {
    children: Vec<Child>,
    /// Killed by `kill`: no longer expected to pass.
    dead: Vec<usize>,
    pub started: Instant,
    pub lines: Arc<Mutex<Vec<PassLine>>>,
}

impl SchedulerProcs {
    /// Start `count` schedulers: `program` with `args` then each one's own
    /// `--name`, the database URL in the environment, every pass logged.
    pub fn spawn(
        program: &Path,
        args: &[String],
        database_url: &str,
        count: usize,
    ) -> anyhow::Result<SchedulerProcs> {
        Self::spawn_showing(program, args, database_url, count, false)
    }

    /// As `spawn`; with `show_passes`, each pass line is also printed on stderr
    /// as `bench-N: LINE` (where a pass spent its time: `read_ms`, `place_ms`,
    /// `commit_ms`, `reasons_ms`).
    pub fn spawn_showing(
        program: &Path,
        args: &[String],
        database_url: &str,
        count: usize,
        show_passes: bool,
    ) -> anyhow::Result<SchedulerProcs> {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let mut children = Vec::new();
        for i in 0..count {
            let mut child = Command::new(program)
                .args(args)
                .arg(format!("--name=bench-{i}"))
                .env("DATABASE_URL", database_url)
                .env("RUST_LOG", "warn,borgscheduler::run=debug")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("starting {}", program.display()))?;
            let stderr = child.stderr.take().context("the scheduler's stderr")?;
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    match parse(i, &line) {
                        Some(p) => {
                            if show_passes {
                                eprintln!("bench-{i}: {line}");
                            }
                            lines.lock().unwrap().push(p)
                        }
                        None if line.contains("WARN") || line.contains("ERROR") => {
                            eprintln!("bench-{i}: {line}")
                        }
                        None => {}
                    }
                }
            });
            children.push(child);
        }
        Ok(SchedulerProcs {
            children,
            dead: Vec::new(),
            started,
            lines,
        })
    }

    /// SIGKILL scheduler `i` (its session ends with it, as a crash would).
    pub fn kill(&mut self, i: usize) {
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
        self.dead.push(i);
    }

    pub fn passes(&self) -> Vec<PassLine> {
        self.lines.lock().unwrap().clone()
    }

    /// Each scheduler has made a pass with nothing placed and no race lost
    /// that started after the last busy pass of any of them ended.
    pub fn quiet(&self) -> bool {
        let passes = self.passes();
        let Some(last_busy) = passes.iter().filter(|p| p.busy()).map(|p| p.at).max() else {
            return false;
        };
        (0..self.children.len())
            .filter(|i| !self.dead.contains(i))
            .all(|i| {
                passes
                    .iter()
                    .any(|p| p.scheduler == i && !p.busy() && p.started() >= last_busy)
            })
    }
}

impl Drop for SchedulerProcs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `... pass scheduler="bench-0" pending=5 placed=3 ... ms=12` (tracing's fmt).
fn parse(scheduler: usize, line: &str) -> Option<PassLine> {
    if !line.contains(" pass ") && !line.ends_with(" pass") {
        return None;
    }
    let field = |name: &str| -> Option<u64> {
        let key = format!(" {name}=");
        let rest = &line[line.find(&key)? + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some(PassLine {
        scheduler,
        at: Instant::now(),
        pending: field("pending")?,
        placed: field("placed")?,
        lost_races: field("lost_races")?,
        ms: field("ms")?,
    })
}

/// Figures of one run, from the pass lines.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Placements committed (sum of the passes').
    pub placed: u64,
    /// From starting the processes to the end of the last pass that placed.
    pub secs: f64,
    pub conflicts: u64,
    /// The first pass of each scheduler: (pending seen, ms).
    pub first_pass: Vec<(u64, u64)>,
    /// The last pass of each scheduler, when nothing was left to do: (pending seen, ms).
    pub settled_pass: Vec<(u64, u64)>,
}

impl Measured {
    pub fn rate(&self) -> f64 {
        self.placed as f64 / self.secs.max(1e-9)
    }
}

/// Wait until the schedulers are quiet (at most `limit`), then sum up.
pub async fn measure(procs: &SchedulerProcs, limit: Duration) -> anyhow::Result<Measured> {
    let deadline = Instant::now() + limit;
    while !procs.quiet() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the schedulers did not go quiet within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let passes = procs.passes();
    let last_placing = passes
        .iter()
        .filter(|p| p.placed > 0)
        .map(|p| p.at)
        .max()
        .unwrap_or(procs.started);
    let n = procs.children.len();
    let of = |i: usize| passes.iter().filter(move |p| p.scheduler == i);
    Ok(Measured {
        placed: passes.iter().map(|p| p.placed).sum(),
        secs: (last_placing - procs.started).as_secs_f64(),
        conflicts: passes.iter().map(|p| p.lost_races).sum(),
        first_pass: (0..n)
            .filter_map(|i| of(i).next().map(|p| (p.pending, p.ms)))
            .collect(),
        settled_pass: (0..n)
            .filter_map(|i| of(i).next_back().map(|p| (p.pending, p.ms)))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_a_pass_line() {
        let line = "2026-12-02T03:40:00.1Z DEBUG pass{scheduler=bench-0 pass=3}: borgscheduler::run: pass scheduler=\"bench-0\" pending=100000 placed=31000 preempted=0 unplaceable=12 lost_races=4 batches=100 reasons_written=7 ms=5123";
        let p = super::parse(1, line).unwrap();
        assert_eq!(
            (p.pending, p.placed, p.lost_races, p.ms),
            (100_000, 31_000, 4, 5123)
        );
        assert!(super::parse(0, "INFO scheduler starting interval=1s").is_none());
    }
}
