//! Reading a workload trace: any CSV with a header naming its columns, plain or
//! gzipped. Two column sets are understood:
//!
//! - Borg-like (`google2011-replay.csv.gz`): `submit_s, job, task, priority,
//!   cpu, mem, duration_s` — cpu and memory normalized to the largest machine,
//!   scaled by `--cpu-unit` and `--mem-unit`; priority 0–11 (9–11 production).
//! - SWF-like (`swf-hpc2n-replay.csv`): `submit_s, job, procs, runtime_s,
//!   req_mem` — one task per job asking `procs` cores (`--cpu-unit` is one
//!   processor's worth when it is the default) and `req_mem` KB per processor.

use anyhow::{bail, Context};
use std::io::Read;
use std::path::Path;

/// One task of the trace, in our units.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceTask {
    pub submit_s: f64,
    pub job: u64,
    pub index: u32,
    /// 0–1000, production from 200 as ours.
    pub priority: i32,
    pub cpu_milli: u64,
    pub memory: u64,
    /// `None`: still running when the trace ends.
    pub duration_s: Option<f64>,
}

/// What was read, and what was left out and why.
#[derive(Debug, Default)]
pub struct Trace {
    pub tasks: Vec<TraceTask>,
    pub skipped_no_request: usize,
    pub skipped_never_ran: usize,
}

/// Scale factors from trace units to ours.
#[derive(Debug, Clone, Copy)]
pub struct Units {
    /// Millicores per normalized cpu (Borg-like) or per processor (SWF-like).
    pub cpu_milli: f64,
    /// Bytes per normalized memory (Borg-like).
    pub memory: f64,
}

fn open(path: &Path) -> anyhow::Result<Box<dyn Read>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)))
    } else {
        Box::new(std::io::BufReader::new(file))
    })
}

/// Borg priority 0–11 to ours: 9–11 become 200, 300, 400 (production); the
/// rest 0–80.
pub fn map_priority(p: i64) -> i32 {
    if p >= 9 {
        (200 + (p - 9) * 100).min(1000) as i32
    } else {
        (p.max(0) * 10) as i32
    }
}

/// Read `path`, keeping tasks submitted before `until_s`, at most `limit`.
pub fn read_tasks(path: &Path, units: Units, until_s: f64, limit: usize) -> anyhow::Result<Trace> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(open(path)?);
    let headers = reader.headers().context("reading the header")?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let swf = col("procs").is_some();
    let need =
        |name: &str| col(name).with_context(|| format!("{}: no `{name}` column", path.display()));
    let submit = need("submit_s")?;
    let job = need("job")?;
    let (task, priority, cpu, mem, duration) = if swf {
        (
            None,
            None,
            need("procs")?,
            col("req_mem"),
            need("runtime_s")?,
        )
    } else {
        (
            Some(need("task")?),
            Some(need("priority")?),
            need("cpu")?,
            Some(need("mem")?),
            need("duration_s")?,
        )
    };
    let end_event = col("end_event");
    let mut out = Trace::default();
    for (line, record) in reader.records().enumerate() {
        let r = record.with_context(|| format!("{}: row {}", path.display(), line + 2))?;
        let field = |i: usize| r.get(i).map(str::trim).filter(|s| !s.is_empty());
        let number = |i: usize| -> anyhow::Result<Option<f64>> {
            field(i)
                .map(|s| {
                    s.parse::<f64>()
                        .with_context(|| format!("row {}: `{s}` is not a number", line + 2))
                })
                .transpose()
        };
        let Some(submit_s) = number(submit)? else {
            bail!("row {}: no submit_s", line + 2);
        };
        if submit_s >= until_s || out.tasks.len() >= limit {
            break;
        }
        let duration_s = number(duration)?;
        if duration_s.is_none() && end_event.and_then(field).is_some() {
            out.skipped_never_ran += 1; // ended while still pending
            continue;
        }
        let (cpu_milli, memory) = if swf {
            let procs = number(cpu)?.unwrap_or(1.0).max(1.0);
            let kb_per_proc = mem.map(number).transpose()?.flatten().unwrap_or(0.0);
            (procs * units.cpu_milli, procs * kb_per_proc * 1024.0)
        } else {
            match (number(cpu)?, mem.map(number).transpose()?.flatten()) {
                (Some(c), Some(m)) => (c * units.cpu_milli, m * units.memory),
                _ => {
                    out.skipped_no_request += 1;
                    continue;
                }
            }
        };
        out.tasks.push(TraceTask {
            submit_s,
            job: field(job).and_then(|s| s.parse().ok()).unwrap_or(0),
            index: task
                .and_then(field)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            priority: priority
                .and_then(field)
                .and_then(|s| s.parse().ok())
                .map_or(100, map_priority),
            cpu_milli: cpu_milli.round().max(1.0) as u64,
            memory: memory.round().max(0.0) as u64,
            duration_s,
        });
    }
    Ok(out)
}

/// Machines present at time 0 in a Borg `machine_events` file (no header:
/// time, machine_id, event_type, platform_id, cpus, memory), scaled by `units`.
pub fn read_machines(path: &Path, units: Units) -> anyhow::Result<Vec<(u64, u64, u64)>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(open(path)?);
    let mut machines = Vec::new();
    for record in reader.records() {
        let r = record.context("reading machine events")?;
        let get = |i: usize| r.get(i).map(str::trim).unwrap_or("");
        if get(0) != "0" || get(2) != "0" {
            continue; // only ADDs at time 0
        }
        let (Ok(id), Ok(cpus), Ok(mem)) = (
            get(1).parse::<u64>(),
            get(4).parse::<f64>(),
            get(5).parse::<f64>(),
        ) else {
            continue;
        };
        machines.push((
            id,
            (cpus * units.cpu_milli) as u64,
            (mem * units.memory) as u64,
        ));
    }
    Ok(machines)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNITS: Units = Units {
        cpu_milli: 32_000.0,
        memory: 128.0 * (1u64 << 30) as f64,
    };

    fn write(name: &str, text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(name), text).unwrap();
        dir
    }

    #[test]
    fn borg_rows_scale_and_skip_what_never_ran() {
        let dir = write(
            "t.csv",
            "submit_s,job,task,priority,sched_class,cpu,mem,duration_s,end_event,pending_s\n\
             0,1,0,9,3,0.5,0.25,,,0\n\
             600.5,2,3,0,0,0.0625,0.006,23.2,FAIL,1.5\n\
             601,3,0,1,0,,,10,FINISH,1\n\
             602,4,0,1,0,0.1,0.1,,KILL,\n\
             9000,5,0,1,0,0.1,0.1,5,FINISH,1\n",
        );
        let t = read_tasks(&dir.path().join("t.csv"), UNITS, 3600.0, usize::MAX).unwrap();
        assert_eq!(t.tasks.len(), 2);
        assert_eq!(t.tasks[0].cpu_milli, 16_000);
        assert_eq!(t.tasks[0].priority, 200);
        assert_eq!(t.tasks[0].duration_s, None);
        assert_eq!((t.tasks[1].job, t.tasks[1].index), (2, 3));
        assert_eq!((t.skipped_no_request, t.skipped_never_ran), (1, 1));
    }

    #[test]
    fn swf_rows_ask_procs_cores() {
        let dir = write(
            "s.csv",
            "submit_s,job,procs,runtime_s,req_mem,req_time_s,wait_s,status\n342072,11,32,43306,1024,43200,32,1\n",
        );
        let units = Units {
            cpu_milli: 1000.0,
            memory: 0.0,
        };
        let t = read_tasks(&dir.path().join("s.csv"), units, f64::MAX, usize::MAX).unwrap();
        assert_eq!(t.tasks[0].cpu_milli, 32_000);
        assert_eq!(t.tasks[0].memory, 32 * 1024 * 1024);
        assert_eq!(t.tasks[0].duration_s, Some(43306.0));
    }

    #[test]
    fn a_file_without_the_columns_is_refused() {
        let dir = write("x.csv", "a,b\n1,2\n");
        let e = read_tasks(&dir.path().join("x.csv"), UNITS, f64::MAX, 10).unwrap_err();
        assert!(format!("{e:#}").contains("no `submit_s` column"), "{e:#}");
    }
}
