//! `--compare slurm`: run `../shared/bench/peers/slurm.sh` after our phases and
//! read its `slurm[PROFILE,MODE]: ...` figure lines.

use anyhow::{bail, Context};
use serde::Serialize;
use std::path::PathBuf;
use std::process::Stdio;

/// One `slurm[...]` line: what the script measured for one submit mode.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SlurmFigure {
    pub profile: String,
    /// `idle`, `sbatch` (N jobs one by one) or `array` (one array of N).
    pub mode: String,
    pub n: Option<u64>,
    pub submit_s: Option<f64>,
    pub all_done_s: Option<f64>,
    pub jobs_per_s: Option<f64>,
    /// submit→start, seconds.
    pub p50_s: Option<f64>,
    pub p90_s: Option<f64>,
    pub p99_s: Option<f64>,
    pub max_s: Option<f64>,
}

/// `0.512s` → 0.512.
fn secs(token: &str) -> Option<f64> {
    token.strip_suffix('s')?.parse().ok()
}

/// Parse one figure line; `None` for every other line (details, warnings).
///
/// ```text
/// slurm[tuned,idle]: 20 jobs one at a time on an idle cell, submit->start p50 0.512s p90 0.901s p99 0.960s, max 0.970s
/// slurm[tuned,sbatch]: N=200 submit 4.12s, all done 5.67s (35.3 jobs/s), submit->start p50 0.5s p90 0.9s p99 1.0s
/// ```
pub fn parse_line(line: &str) -> Option<SlurmFigure> {
    let rest = line.trim().strip_prefix("slurm[")?;
    let (label, rest) = rest.split_once("]:")?;
    let (profile, mode) = label.split_once(',')?;
    let mut fig = SlurmFigure {
        profile: profile.trim().to_string(),
        mode: mode.trim().to_string(),
        ..SlurmFigure::default()
    };
    let tokens: Vec<&str> = rest
        .split_whitespace()
        .map(|t| t.trim_matches(|c| c == ',' || c == '(' || c == ')'))
        .collect();
    for (i, t) in tokens.iter().enumerate() {
        let next = tokens.get(i + 1).copied().unwrap_or("");
        match *t {
            "p50" => fig.p50_s = secs(next),
            "p90" => fig.p90_s = secs(next),
            "p99" => fig.p99_s = secs(next),
            "max" => fig.max_s = secs(next),
            "submit" => fig.submit_s = fig.submit_s.or(secs(next)),
            "done" => fig.all_done_s = secs(next),
            "jobs/s" if i > 0 => fig.jobs_per_s = tokens[i - 1].parse().ok(),
            _ => {
                if let Some(n) = t.strip_prefix("N=") {
                    fig.n = n.parse().ok();
                }
            }
        }
    }
    // The idle line starts with its count: `20 jobs one at a time ...`.
    if fig.n.is_none() {
        fig.n = tokens.first().and_then(|t| t.parse().ok());
    }
    Some(fig)
}

/// Every figure line of the script's output.
pub fn parse_output(text: &str) -> Vec<SlurmFigure> {
    text.lines().filter_map(parse_line).collect()
}

/// The script, relative to the repo root: next to the source tree this binary
/// was built from, or next to the current directory.
pub fn script() -> Option<PathBuf> {
    let rel = "../shared/bench/peers/slurm.sh";
    let from_build = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    let from_cwd = std::env::current_dir().ok().map(|d| d.join(rel));
    [Some(from_build), from_cwd]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .map(|p| p.canonicalize().unwrap_or(p))
}

/// Run the script for `n` jobs (tuned profile, all three modes) and parse its figures.
pub async fn run(n: u64, idle_jobs: u64) -> anyhow::Result<Vec<SlurmFigure>> {
    let Some(path) = script() else {
        bail!("../shared/bench/peers/slurm.sh is not there (run from the repo root)");
    };
    eprintln!(
        "slurm: running {} {n} tuned \"idle sbatch array\" (installs Slurm on first use)...",
        path.display()
    );
    let out = tokio::process::Command::new("bash")
        .arg(&path)
        .arg(n.to_string())
        .arg("tuned")
        .arg("idle sbatch array")
        .env("IDLE_K", idle_jobs.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .await
        .with_context(|| format!("starting bash {}", path.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let figures = parse_output(&text);
    if !out.status.success() {
        bail!(
            "slurm.sh failed ({}); its last lines: {}",
            out.status,
            tail(&text)
        );
    }
    if figures.is_empty() {
        bail!(
            "slurm.sh printed no slurm[...] figure line: {}",
            tail(&text)
        );
    }
    Ok(figures)
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
slurm[tuned,idle]: 20 jobs one at a time on an idle cell, submit->start p50 0.512s p90 0.901s p99 0.960s, max 0.970s
    detail: launched 20, submit->allocate p50 0.500s p90 0.9s p99 0.95s; jobcomp (1 s res.) submit->start p50 0s p99 1s, n=20
slurm[tuned,sbatch]: N=200 submit 4.12s, all done 5.67s (35.3 jobs/s), submit->start p50 0.600s p90 0.950s p99 1.100s
    detail: launched 200, ...
WARNING: only 199/200 jobs completed
slurm[tuned,array]: N=200 submit 0.05s, all done 4.10s (48.8 jobs/s), submit->start n/a
";

    #[test]
    fn figure_lines_are_parsed_and_the_rest_skipped() {
        let figs = parse_output(OUTPUT);
        assert_eq!(figs.len(), 3);
        let idle = &figs[0];
        assert_eq!(
            (idle.profile.as_str(), idle.mode.as_str()),
            ("tuned", "idle")
        );
        assert_eq!(idle.n, Some(20));
        assert_eq!(idle.p50_s, Some(0.512));
        assert_eq!(idle.p90_s, Some(0.901));
        assert_eq!(idle.p99_s, Some(0.960));
        assert_eq!(idle.max_s, Some(0.970));
        assert_eq!(idle.jobs_per_s, None);

        let sbatch = &figs[1];
        assert_eq!(sbatch.mode, "sbatch");
        assert_eq!(sbatch.n, Some(200));
        assert_eq!(sbatch.submit_s, Some(4.12));
        assert_eq!(sbatch.all_done_s, Some(5.67));
        assert_eq!(sbatch.jobs_per_s, Some(35.3));
        assert_eq!(sbatch.p50_s, Some(0.6));
        assert_eq!(sbatch.p99_s, Some(1.1));

        let array = &figs[2];
        assert_eq!(array.jobs_per_s, Some(48.8));
        assert_eq!(array.p50_s, None);
    }

    #[test]
    fn other_lines_are_not_figures() {
        assert!(parse_line("    detail: launched 20").is_none());
        assert!(parse_line("slurm did not come up; see /tmp/x").is_none());
        assert!(parse_line("").is_none());
    }
}
