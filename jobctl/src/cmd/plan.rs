//! `jobctl plan -f FILE`: a dry run (`POST /v1/plan`). Says whether the master
//! would take the spec, what a `run`/`apply` would do (create, scale, roll out
//! a new version, nothing), the diff against the live job, and where each task
//! would go now, why it would wait, or which tasks it would preempt. Nothing
//! is written. Exit 0 if it would be accepted, 1 if not.

use crate::client::{api_error_line, Client};
use crate::exit::JobFailed;
use crate::output::{self, emit, table, ListFormat};
use borg_shared::plan::{PlanAction, PlanOutcome, PlanView};
use std::fmt::Write;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job spec, YAML or JSON (`-` reads standard input).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Output format: `table` (default; `wide` is the same), `json` or `yaml`.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: ListFormat,
}

pub async fn run(client: &Client, args: Args) -> anyhow::Result<()> {
    let spec = crate::spec_file::load(&args.file)?;
    let plan = client.plan(&spec).await?;
    let text = match output::structured(args.output, &plan)? {
        Some(text) => text,
        None => render(&plan),
    };
    emit(&text)?;
    match &plan.refusal {
        Some(why) if !plan.accepted => Err(JobFailed(format!(
            "job/{} would not be accepted: {}",
            plan.job,
            api_error_line(why)
        ))
        .into()),
        _ => Ok(()),
    }
}

/// The headline: what a `run`/`apply` of the spec would do.
fn headline(plan: &PlanView) -> String {
    let job = &plan.job;
    let n = plan.tasks.len();
    let tasks = if n == 1 { "task" } else { "tasks" };
    match plan.action {
        PlanAction::Create => format!("job/{job}: accepted; would be created ({n} {tasks})"),
        PlanAction::Unchanged => {
            format!("job/{job}: accepted; unchanged (the live job has this spec)")
        }
        PlanAction::Scale => format!(
            "job/{job}: accepted; would scale (only the replica count changes; {n} new {tasks})"
        ),
        PlanAction::Policy => {
            format!("job/{job}: accepted; only the update policy changes (kept, no task replaced)")
        }
        PlanAction::Update => format!(
            "job/{job}: accepted; version {} would roll out, replacing {n} {tasks} in turn",
            plan.current_version.map_or(1, |v| v + 1)
        ),
        PlanAction::Refused => format!(
            "job/{job}: NOT accepted: {}",
            plan.refusal
                .as_ref()
                .map(api_error_line)
                .unwrap_or_else(|| "refused".into())
        ),
    }
}

pub fn render(plan: &PlanView) -> String {
    let mut out = headline(plan);
    out.push('\n');
    if let Some(diff) = &plan.diff {
        let version = plan
            .current_version
            .map(|v| format!(" (version {v})"))
            .unwrap_or_default();
        write!(out, "\nChanges against the live job{version}:\n").ok();
        for line in diff.lines() {
            writeln!(out, "  {line}").ok();
        }
    }
    if !plan.tasks.is_empty() {
        out.push_str("\nWhere the tasks would go now:\n");
        let rows = plan
            .tasks
            .iter()
            .map(|t| {
                vec![
                    output::task_name(&plan.job, t.index),
                    outcome_text(t.outcome).into(),
                    t.machine.clone().unwrap_or_else(|| "-".into()),
                    output::ports_text(&t.ports),
                    if t.preempts.is_empty() {
                        "-".into()
                    } else {
                        t.preempts.join(",")
                    },
                    t.reason.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        let t = table(
            &["TASK", "PLAN", "MACHINE", "PORTS", "PREEMPTS", "REASON"],
            rows,
        );
        for line in t.lines() {
            writeln!(out, "  {line}").ok();
        }
        writeln!(out, "\n{}", summary(plan)).ok();
    }
    out.trim_end().to_string()
}

fn outcome_text(o: PlanOutcome) -> &'static str {
    match o {
        PlanOutcome::Place => "place",
        PlanOutcome::Preempt => "preempt",
        PlanOutcome::Wait => "wait",
    }
}

/// `3 would start now, 1 would wait, 1 would preempt 2 tasks`.
fn summary(plan: &PlanView) -> String {
    let count = |o| plan.tasks.iter().filter(|t| t.outcome == o).count();
    let victims: usize = plan.tasks.iter().map(|t| t.preempts.len()).sum();
    let mut parts = vec![format!("{} would start now", count(PlanOutcome::Place))];
    let waiting = count(PlanOutcome::Wait);
    if waiting > 0 {
        parts.push(format!("{waiting} would wait"));
    }
    let preempting = count(PlanOutcome::Preempt);
    if preempting > 0 {
        let plural = if victims == 1 { "" } else { "s" };
        parts.push(format!(
            "{preempting} would preempt {victims} task{plural} first"
        ));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use borg_shared::plan::PlannedTask;
    use borg_shared::ApiError;

    fn task(index: i32, outcome: PlanOutcome) -> PlannedTask {
        PlannedTask {
            index,
            outcome,
            machine: None,
            ports: vec![],
            preempts: vec![],
            reason: None,
        }
    }

    #[test]
    fn plan_of_an_update_with_a_diff_and_every_outcome() {
        let mut placed = task(0, PlanOutcome::Place);
        placed.machine = Some("m1".into());
        placed.ports = vec![20000];
        let mut preempt = task(1, PlanOutcome::Preempt);
        preempt.machine = Some("m2".into());
        preempt.preempts = vec!["batch/3".into(), "batch/4".into()];
        preempt.reason = Some("preempting 2 lower-priority tasks on m2".into());
        let mut wait = task(2, PlanOutcome::Wait);
        wait.reason = Some("no machine has 4Gi free memory (most free: 1Gi on m1)".into());
        let plan = PlanView {
            job: "web".into(),
            accepted: true,
            action: PlanAction::Update,
            refusal: None,
            current_version: Some(3),
            diff: Some(
                "--- live (version 3)\n+++ this spec\n@@ -3,3 +3,3 @@\n task:\n-  command: [a]\n+  command: [b]\n"
                    .into(),
            ),
            tasks: vec![placed, preempt, wait],
        };
        insta::assert_snapshot!("plan_update", render(&plan));
    }

    #[test]
    fn plan_refused_and_plan_unchanged() {
        let refused = PlanView {
            job: "etl".into(),
            accepted: false,
            action: PlanAction::Refused,
            refusal: Some(ApiError {
                code: "conflict".into(),
                message: "job etl is a running batch job: a batch job is not updated in place"
                    .into(),
                field: None,
            }),
            current_version: Some(1),
            diff: None,
            tasks: vec![],
        };
        let unchanged = PlanView {
            action: PlanAction::Unchanged,
            accepted: true,
            refusal: None,
            ..refused.clone()
        };
        insta::assert_snapshot!(
            "plan_refused_and_unchanged",
            format!("{}\n\n{}", render(&refused), render(&unchanged))
        );
    }
}
