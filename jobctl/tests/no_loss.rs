//! Correctness under speed, with real parts only: a throwaway Postgres, and the
//! master, the scheduler and 3 borglets as separate `jobctl component`
//! processes. A big batch job runs every task exactly once, with a complete
//! event chain, also when the master is SIGKILLed mid-job and a new one takes
//! over. `BORG_TEST_TASKS` sets the job's size (300 here; run 2,000 by hand).

// Not `tests/cell.rs` (the dev cell test): this test's own processes.
#[path = "no_loss/cell.rs"]
mod cell;

use cell::{wait_for, Cell};
use serde_json::Value;
use sqlx::types::Uuid;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Both tests load the machine hard: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn tasks_wanted() -> usize {
    std::env::var("BORG_TEST_TASKS")
        .ok()
        .map(|v| v.parse().expect("BORG_TEST_TASKS must be a number"))
        .unwrap_or(300)
}

/// A task's events as `∅→pending, pending→assigned, ...`.
fn show_chain(events: &[(Option<String>, String)]) -> String {
    let step =
        |(from, to): &(Option<String>, String)| format!("{}→{to}", from.as_deref().unwrap_or("∅"));
    events.iter().map(step).collect::<Vec<_>>().join(", ")
}

/// Why a task's event chain is not pending → ... → succeeded without gaps.
fn chain_fault(events: &[(Option<String>, String)]) -> Option<String> {
    let Some(first) = events.first() else {
        return Some("no events".into());
    };
    if *first != (None, "pending".to_string()) {
        return Some("does not start with ∅→pending".into());
    }
    if let Some(w) = events.windows(2).find(|w| w[1].0.as_ref() != Some(&w[0].1)) {
        return Some(format!("gap after {}", show_chain(&w[..1])));
    }
    if !events
        .iter()
        .any(|e| e.0.as_deref() == Some("pending") && e.1 == "assigned")
    {
        return Some("no pending→assigned".into());
    }
    (events.last().unwrap().1 != "succeeded").then(|| "does not end succeeded".into())
}

/// Every task succeeded once: one run, one attempt, a complete event chain, and
/// its attempt id written exactly once by the task itself into `starts`.
async fn check_every_task_ran_once(database_url: &str, n: usize, starts: &Path) {
    let db = sqlx::PgPool::connect(database_url).await.unwrap();
    let job: Uuid = sqlx::query_scalar("SELECT id FROM jobs WHERE name = 'big'")
        .fetch_one(&db)
        .await
        .unwrap();
    let tasks: Vec<(Uuid, i32, String, i32)> = sqlx::query_as(
        "SELECT id, index, state::text, runs FROM tasks WHERE job_id = $1 ORDER BY index",
    )
    .bind(job)
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(tasks.len(), n, "the job has {} tasks, not {n}", tasks.len());
    let mut attempts: BTreeMap<Uuid, Vec<(String, String)>> = BTreeMap::new();
    let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT a.task_id, a.id::text, a.state::text FROM attempts a \
         JOIN tasks t ON t.id = a.task_id WHERE t.job_id = $1 ORDER BY a.created_at",
    )
    .bind(job)
    .fetch_all(&db)
    .await
    .unwrap();
    for (task, id, state) in rows {
        attempts.entry(task).or_default().push((id, state));
    }
    let mut events: BTreeMap<Uuid, Vec<(Option<String>, String)>> = BTreeMap::new();
    let rows: Vec<(Uuid, Option<String>, String)> = sqlx::query_as(
        "SELECT task_id, from_state, to_state FROM events WHERE kind = 'task' \
         AND task_id IN (SELECT id FROM tasks WHERE job_id = $1) ORDER BY id",
    )
    .bind(job)
    .fetch_all(&db)
    .await
    .unwrap();
    for (task, from, to) in rows {
        events.entry(task).or_default().push((from, to));
    }

    let mut faults = Vec::new();
    for (id, index, state, runs) in &tasks {
        let tries = attempts.get(id).map(Vec::as_slice).unwrap_or_default();
        let chain = events.get(id).map(Vec::as_slice).unwrap_or_default();
        let mut wrong = Vec::new();
        if state != "succeeded" || *runs != 1 {
            wrong.push(format!("state {state} with runs = {runs}"));
        }
        if tries.len() != 1 || tries[0].1 != "succeeded" {
            wrong.push(format!("attempts (id, state) {tries:?}"));
        }
        if let Some(fault) = chain_fault(chain) {
            wrong.push(format!("event chain {fault}"));
        }
        if !wrong.is_empty() {
            faults.push(format!(
                "task big/{index} ({id}): {}; attempts {tries:?}; events [{}]",
                wrong.join("; "),
                show_chain(chain)
            ));
        }
    }
    assert!(
        faults.is_empty(),
        "{} of {n} tasks wrong (first 10):\n{}",
        faults.len(),
        faults[..faults.len().min(10)].join("\n")
    );

    let job_states: Vec<String> = sqlx::query_scalar(
        "SELECT to_state FROM events WHERE kind = 'job' AND job_id = $1 ORDER BY id",
    )
    .bind(job)
    .fetch_all(&db)
    .await
    .unwrap();
    assert!(
        job_states == ["pending", "running", "succeeded"] || job_states == ["pending", "succeeded"],
        "job events go {job_states:?}"
    );

    // The processes' own record: each attempt wrote its id once, none twice, none lost.
    let text = std::fs::read_to_string(starts).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut seen = HashSet::new();
    let twice: Vec<&str> = lines.iter().copied().filter(|l| !seen.insert(*l)).collect();
    assert!(
        twice.is_empty(),
        "attempts started more than once: {twice:?}"
    );
    let ids: HashSet<&str> = attempts
        .values()
        .flatten()
        .map(|(id, _)| id.as_str())
        .collect();
    let never: Vec<_> = ids.difference(&seen).collect();
    let unknown: Vec<_> = seen.difference(&ids).collect();
    assert!(
        lines.len() == n && never.is_empty() && unknown.is_empty(),
        "{} lines in {} for {n} tasks; attempts that never wrote: {never:?}; \
         lines that are no attempt: {unknown:?}",
        lines.len(),
        starts.display()
    );
}

#[tokio::test]
async fn a_big_job_runs_every_task_exactly_once() {
    let _serial = SERIAL.lock().await;
    let n = tasks_wanted();
    let up = Instant::now();
    let cell = Cell::start().await;
    eprintln!("cell up in {:?}", up.elapsed());
    let began = Instant::now();
    let starts: PathBuf = cell.path().join("starts");
    cell.submit(n, &starts).await;
    cell.wait_succeeded(n).await;
    eprintln!("{n} tasks succeeded {:?} after the submit", began.elapsed());
    check_every_task_ran_once(&cell.database_url, n, &starts).await;
}

#[tokio::test]
async fn a_master_killed_mid_job_loses_nothing_and_runs_nothing_twice() {
    let _serial = SERIAL.lock().await;
    let n = tasks_wanted();
    let up = Instant::now();
    let mut cell = Cell::start().await;
    eprintln!("cell up in {:?}", up.elapsed());
    let began = Instant::now();
    let starts: PathBuf = cell.path().join("starts");
    cell.submit(n, &starts).await;
    let succeeded = |job: &Value| job["task_counts"]["succeeded"].as_u64().unwrap_or(0) as usize;
    let at_kill = wait_for(
        "a quarter of the tasks to succeed",
        Duration::from_secs(120),
        || async {
            let done = succeeded(&cell.job().await?);
            (done >= n / 4).then_some(done)
        },
    )
    .await;
    cell.kill_master();
    eprintln!("killed the master with {at_kill} of {n} tasks succeeded");
    assert!(
        at_kill < n,
        "the job ended before the kill: nothing was tested"
    );
    cell.start_master();
    cell.wait_succeeded(n).await;
    eprintln!("{n} tasks succeeded {:?} after the submit", began.elapsed());
    check_every_task_ran_once(&cell.database_url, n, &starts).await;
}
