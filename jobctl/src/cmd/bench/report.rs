//! What the bench found: figures per phase, CPU per task, Slurm side by side;
//! rendered as tables on stdout and, with `--json`, as JSON.

use super::cpu::{Group, PhaseCpu};
use super::slurm::SlurmFigure;
use super::stats::{thousands, Summary};
use comfy_table::{presets::ASCII_MARKDOWN, Cell, CellAlignment, Table};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub key: String,
    pub label: String,
    pub value: f64,
    pub unit: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    pub phase: &'static str,
    pub title: String,
    /// Tasks run in the phase (one per job where jobs have one task).
    pub tasks: u64,
    pub wall_s: f64,
    pub figures: Vec<Figure>,
    pub cpu: Option<PhaseCpu>,
}

impl PhaseResult {
    pub fn new(phase: &'static str, title: String, tasks: u64, wall_s: f64) -> PhaseResult {
        PhaseResult {
            phase,
            title,
            tasks,
            wall_s,
            figures: Vec::new(),
            cpu: None,
        }
    }

    pub fn add(&mut self, key: &str, label: &str, value: f64, unit: &'static str) {
        self.figures.push(Figure {
            key: key.to_string(),
            label: label.to_string(),
            value,
            unit,
        });
    }

    /// `KEY_p50_ms` … `KEY_max_ms` from millisecond samples.
    pub fn summary(&mut self, key: &str, label: &str, samples: &[f64]) {
        if let Some(s) = Summary::of(samples) {
            for (q, v) in [
                ("p50", s.p50),
                ("p90", s.p90),
                ("p99", s.p99),
                ("max", s.max),
            ] {
                self.add(
                    &format!("{key}_{q}_ms"),
                    &format!("{label} {q} (n={})", s.n),
                    v,
                    "ms",
                );
            }
        }
    }

    pub fn summary_p50_p99(&mut self, key: &str, label: &str, samples: &[f64]) {
        if let Some(s) = Summary::of(samples) {
            for (q, v) in [("p50", s.p50), ("p99", s.p99)] {
                self.add(
                    &format!("{key}_{q}_ms"),
                    &format!("{label} {q} (n={})", s.n),
                    v,
                    "ms",
                );
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.figures.iter().find(|f| f.key == key).map(|f| f.value)
    }
}

/// One row of the Slurm comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub workload: String,
    pub ours: f64,
    pub slurm: f64,
    pub unit: &'static str,
    /// Ours / Slurm for throughput, Slurm / ours for latency: above 1 means we are better.
    pub ratio: f64,
}

/// One request of the `reads` phase, timed before and after the history was seeded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadRow {
    pub request: String,
    pub n: usize,
    pub before_p50_ms: f64,
    pub before_p99_ms: f64,
    pub after_p50_ms: f64,
    pub after_p99_ms: f64,
    /// After / before, of the p50s: 1 means history costs nothing.
    pub ratio_p50: f64,
}

impl ReadRow {
    /// From the millisecond samples before and after; None if either side has none.
    pub fn new(request: &str, before: &[f64], after: &[f64]) -> Option<ReadRow> {
        let b = Summary::of(before)?;
        let a = Summary::of(after)?;
        Some(ReadRow {
            request: request.to_string(),
            n: a.n.min(b.n),
            before_p50_ms: b.p50,
            before_p99_ms: b.p99,
            after_p50_ms: a.p50,
            after_p99_ms: a.p99,
            ratio_p50: if b.p50 > 0.0 { a.p50 / b.p50 } else { f64::NAN },
        })
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub master: String,
    pub own_cell: bool,
    pub borglets: Option<u16>,
    pub phases: Vec<PhaseResult>,
    pub slurm: Vec<SlurmFigure>,
    pub slurm_skipped: Option<String>,
    pub comparison: Vec<Comparison>,
    /// The `reads` phase: request latency before and after the seeded history.
    pub reads: Vec<ReadRow>,
    /// Finished tasks seeded between the two measurements.
    pub reads_history: Option<u64>,
}

fn value(v: f64, unit: &str) -> String {
    match unit {
        "ms" => format!("{v:.1} ms"),
        "s" => format!("{v:.2} s"),
        "cores" => format!("{v:.2} cores"),
        _ if v >= 1000.0 => format!("{} {unit}", thousands(v.round() as u64)),
        _ => format!("{v:.1} {unit}"),
    }
}

fn right(s: String) -> Cell {
    Cell::new(s).set_alignment(CellAlignment::Right)
}

impl Report {
    fn phase(&self, name: &str) -> Option<&PhaseResult> {
        self.phases.iter().find(|p| p.phase == name)
    }

    /// Side-by-side rows for the workloads both sides ran.
    pub fn compare(&mut self) {
        let slurm = |mode: &str| self.slurm.iter().find(|f| f.mode == mode);
        let ours = |phase: &str, key: &str| self.phase(phase).and_then(|p| p.get(key));
        let mut rows = Vec::new();
        let mut throughput = |workload: &str, ours: Option<f64>, theirs: Option<f64>| {
            if let (Some(o), Some(s)) = (ours, theirs) {
                rows.push((workload.to_string(), o, s, "jobs/s", o / s));
            }
        };
        throughput(
            "jobs one by one, one process per submit (cli loop / sbatch)",
            ours("cli", "jobs_per_s"),
            slurm("sbatch").and_then(|f| f.jobs_per_s),
        );
        throughput(
            "one-task jobs from concurrent clients / sbatch loop",
            ours("small", "tasks_per_s"),
            slurm("sbatch").and_then(|f| f.jobs_per_s),
        );
        throughput(
            "one job of N tasks / job array of N",
            ours("big", "tasks_per_s"),
            slurm("array").and_then(|f| f.jobs_per_s),
        );
        let mut latency = |workload: &str, ours: Option<f64>, theirs: Option<f64>| {
            if let (Some(o), Some(s)) = (ours, theirs) {
                rows.push((workload.to_string(), o, s * 1000.0, "ms", s * 1000.0 / o));
            }
        };
        latency(
            "idle cell, submit→start p50",
            ours("idle", "server_running_p50_ms"),
            slurm("idle").and_then(|f| f.p50_s),
        );
        latency(
            "idle cell, submit→start p99",
            ours("idle", "server_running_p99_ms"),
            slurm("idle").and_then(|f| f.p99_s),
        );
        self.comparison = rows
            .into_iter()
            .map(|(workload, ours, slurm, unit, ratio)| Comparison {
                workload,
                ours,
                slurm,
                unit,
                ratio,
            })
            .collect();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut figures = Table::new();
        figures.load_preset(ASCII_MARKDOWN);
        figures.set_header(["phase", "figure", "value"]);
        for p in &self.phases {
            for f in &p.figures {
                figures.add_row(vec![
                    Cell::new(p.phase),
                    Cell::new(&f.label),
                    right(value(f.value, f.unit)),
                ]);
            }
        }
        out += &format!("{figures}\n");
        for p in &self.phases {
            out += &format!("- {}: {}\n", p.phase, p.title);
        }

        let with_cpu: Vec<&PhaseResult> = self.phases.iter().filter(|p| p.cpu.is_some()).collect();
        if !with_cpu.is_empty() {
            let mut cpu = Table::new();
            cpu.load_preset(ASCII_MARKDOWN);
            let mut header = vec!["CPU-ms per task".to_string(), "tasks".to_string()];
            header.extend(Group::ALL.iter().map(|g| g.label().to_string()));
            header.push("cell in all".into());
            header.push("machine busy".into());
            cpu.set_header(header);
            for p in with_cpu {
                let Some(c) = &p.cpu else { continue };
                let per = |ms: f64| ms / p.tasks.max(1) as f64;
                let mut row = vec![Cell::new(p.phase), right(thousands(p.tasks))];
                let ms: &BTreeMap<Group, f64> = &c.ms;
                for g in Group::ALL {
                    row.push(right(match ms.get(&g) {
                        Some(v) => format!("{:.2}", per(*v)),
                        None => "—".into(),
                    }));
                }
                row.push(right(if self.own_cell {
                    format!("{:.2}", per(c.cell_ms()))
                } else {
                    "—".into()
                }));
                row.push(right(format!(
                    "{:.0}% of {} cores",
                    c.machine_busy * 100.0,
                    c.cpus
                )));
                cpu.add_row(row);
            }
            out += &format!("\n{cpu}\n");
            if self.phase("idle").is_some() {
                out += "(idle: CPU includes the bench's own GET of the job every 1 ms)\n";
            }
            if !self.own_cell {
                out += "(a cell the bench did not start: its processes are not told apart)\n";
            }
        }

        if !self.comparison.is_empty() {
            let mut cmp = Table::new();
            cmp.load_preset(ASCII_MARKDOWN);
            cmp.set_header([
                "workload (/bin/true)",
                "borg",
                "Slurm tuned",
                "ratio (>1: borg better)",
            ]);
            for c in &self.comparison {
                cmp.add_row(vec![
                    Cell::new(&c.workload),
                    right(value(c.ours, c.unit)),
                    right(value(c.slurm, c.unit)),
                    right(format!("{:.1}×", c.ratio)),
                ]);
            }
            out += &format!("\n{cmp}\n");
        }
        if !self.reads.is_empty() {
            let mut reads = Table::new();
            reads.load_preset(ASCII_MARKDOWN);
            let history = self.reads_history.map(thousands).unwrap_or_default();
            reads.set_header([
                format!("request (n={})", self.reads[0].n),
                "p50 / p99 before".to_string(),
                format!("p50 / p99 after {history} finished tasks"),
                "p50 after / before".to_string(),
            ]);
            for r in &self.reads {
                reads.add_row(vec![
                    Cell::new(&r.request),
                    right(format!(
                        "{:.1} / {:.1} ms",
                        r.before_p50_ms, r.before_p99_ms
                    )),
                    right(format!("{:.1} / {:.1} ms", r.after_p50_ms, r.after_p99_ms)),
                    right(format!("{:.2}×", r.ratio_p50)),
                ]);
            }
            out += &format!("\n{reads}\n");
        }
        if let Some(why) = &self.slurm_skipped {
            out += &format!("\nSlurm comparison skipped: {why}\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_ratios_favour_the_better_side() {
        let mut idle = PhaseResult::new("idle", "idle".into(), 20, 1.0);
        idle.add("server_running_p50_ms", "x", 10.0, "ms");
        let mut big = PhaseResult::new("big", "big".into(), 1000, 1.0);
        big.add("tasks_per_s", "x", 300.0, "tasks/s");
        let mut report = Report {
            phases: vec![idle, big],
            slurm: vec![
                SlurmFigure {
                    mode: "idle".into(),
                    p50_s: Some(0.5),
                    ..SlurmFigure::default()
                },
                SlurmFigure {
                    mode: "array".into(),
                    jobs_per_s: Some(50.0),
                    ..SlurmFigure::default()
                },
            ],
            ..Report::default()
        };
        report.compare();
        assert_eq!(report.comparison.len(), 2);
        let array = &report.comparison[0];
        assert_eq!((array.ours, array.slurm, array.ratio), (300.0, 50.0, 6.0));
        let idle = &report.comparison[1];
        assert_eq!((idle.ours, idle.slurm, idle.ratio), (10.0, 500.0, 50.0));
        assert!(report.render().contains("50.0×"));
    }

    #[test]
    fn read_rows_compare_p50s() {
        let before: Vec<f64> = (1..=45).map(f64::from).collect();
        let after: Vec<f64> = before.iter().map(|x| x * 2.0).collect();
        let row = ReadRow::new("GET /v1/jobs", &before, &after).unwrap();
        assert_eq!(row.n, 45);
        assert_eq!((row.before_p50_ms, row.before_p99_ms), (23.0, 45.0));
        assert_eq!((row.after_p50_ms, row.after_p99_ms), (46.0, 90.0));
        assert_eq!(row.ratio_p50, 2.0);
        assert!(ReadRow::new("x", &[], &after).is_none());
        let report = Report {
            reads: vec![row],
            reads_history: Some(100_000),
            ..Report::default()
        };
        let text = report.render();
        assert!(text.contains("after 100,000 finished tasks"), "{text}");
        assert!(text.contains("23.0 / 45.0 ms"), "{text}");
        assert!(text.contains("2.00×"), "{text}");
    }
}
