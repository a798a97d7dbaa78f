//! The synthetic benchmark's workload and its checks (`borg-schedbench`, and
//! the two-process integration test): N machines as rows (no borglets), M
//! pending tasks of mixed sizes, constraints, spread and priorities, all
//! deterministic so runs compare.

pub mod floor;
mod procs;

pub use procs::{measure, Measured, PassLine, SchedulerProcs};

use borg_shared::spec::{Constraint, JobSpec};
use borg_store::Store;
use serde_json::json;
use sqlx::types::Json;
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap};

/// Job sizes, taken in turn until the tasks are all asked for (average ~185).
const SIZES: [i64; 12] = [1000, 200, 50, 10, 1, 500, 100, 20, 5, 2, 300, 30];
const CPU: [&str; 5] = ["100m", "250m", "500m", "1", "2"];
const MEMORY: [&str; 7] = ["128Mi", "256Mi", "512Mi", "1Gi", "2Gi", "4Gi", "8Gi"];
/// All below the production band: nothing preempts (no borglet would stop the victims).
const PRIORITY: [i64; 5] = [100, 0, 150, 50, 199];
const ZONES: [&str; 5] = ["a", "b", "c", "d", "e"];

/// The job specs of a workload of `tasks` tasks: job `j` takes its size, cpu,
/// memory, priority and placement rule from fixed cycles. Four in ten have no
/// constraint; the others ask for `zone = X`, `zone != X`, `ssd exists`,
/// `zone in a,b`, or spread over zones with at most 4 per machine.
pub fn jobs(tasks: i64) -> Vec<JobSpec> {
    let mut left = tasks;
    let mut specs = Vec::new();
    let mut j = 0usize;
    while left > 0 {
        let replicas = SIZES[j % SIZES.len()].min(left);
        left -= replicas;
        let zone = ZONES[(j / 10) % ZONES.len()];
        let mut spec = json!({
            "name": format!("synth-{j:05}"),
            "priority": PRIORITY[(j / 2) % PRIORITY.len()],
            "replicas": replicas,
            "task": {"command": ["true"], "resources": {
                "cpu": CPU[j % CPU.len()], "memory": MEMORY[(j / 3) % MEMORY.len()]}},
        });
        match j % 10 {
            4 | 5 => spec["constraints"] = json!([{"label": "zone", "op": "=", "value": zone}]),
            6 => spec["constraints"] = json!([{"label": "zone", "op": "!=", "value": zone}]),
            7 => spec["constraints"] = json!([{"label": "ssd", "op": "exists"}]),
            8 => spec["constraints"] = json!([{"label": "zone", "op": "in", "values": ["a", "b"]}]),
            9 => spec["spread"] = json!({"label": "zone", "max_per_machine": 4}),
            _ => {}
        }
        specs.push(serde_json::from_value(spec).expect("the synthetic specs are valid"));
        j += 1;
    }
    specs
}

/// Write `machines` machine rows and submit the jobs of `tasks` tasks through
/// the store's submit path, then ANALYZE (the statistics a cell would have
/// after autovacuum).
pub async fn seed(store: &Store, machines: i32, tasks: i64) -> anyhow::Result<()> {
    let mut conn = store.pool().acquire().await?;
    borg_store::fixtures::seed_machines(&mut conn, machines).await?;
    drop(conn);
    for spec in jobs(tasks) {
        store.submit(&spec).await?;
    }
    sqlx::query("ANALYZE").execute(store.pool()).await?;
    Ok(())
}

/// What the database says after a run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Tasks with a live attempt.
    pub placed: i64,
    pub pending: i64,
    /// Machines whose live attempts ask for more than they have.
    pub over_committed: i64,
    /// Tasks with more than one attempt.
    pub placed_twice: i64,
    /// Live attempts on a machine their job's constraints rule out, or beyond
    /// the job's `max_per_machine`.
    pub violations: i64,
}

impl Verdict {
    pub fn clean(&self) -> bool {
        self.over_committed == 0 && self.placed_twice == 0 && self.violations == 0
    }
}

/// Check the placements from the rows alone.
pub async fn verdict(pool: &PgPool) -> anyhow::Result<Verdict> {
    let one =
        |sql: &'static str| async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await };
    // Placed and pending from one statement (one snapshot): read apart, a commit
    // landing between them showed its tasks as neither.
    let (placed, pending): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM attempts WHERE state IN ('assigned', 'starting', 'running')),
                (SELECT count(*) FROM tasks WHERE state = 'pending')",
    )
    .fetch_one(pool)
    .await?;
    let mut v = Verdict {
        placed,
        pending,
        over_committed: one(
            "SELECT count(*) FROM (
                 SELECT m.id FROM machines m JOIN attempts a ON a.machine_id = m.id
                 WHERE a.state IN ('assigned', 'starting', 'running')
                 GROUP BY m.id
                 HAVING sum(a.cpu_milli) > min(m.cpu_milli) OR sum(a.memory) > min(m.memory)
                     OR sum(a.disk) > min(m.disk)) o",
        )
        .await?,
        placed_twice: one(
            "SELECT count(*) FROM (SELECT task_id FROM attempts GROUP BY task_id HAVING count(*) > 1) d",
        )
        .await?,
        violations: 0,
    };
    let labels: HashMap<uuid::Uuid, BTreeMap<String, String>> =
        sqlx::query_as::<_, (uuid::Uuid, Json<BTreeMap<String, String>>)>(
            "SELECT id, labels FROM machines",
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|(id, l)| (id, l.0))
        .collect();
    let specs: HashMap<uuid::Uuid, Json<JobSpec>> = sqlx::query_as("SELECT id, spec FROM jobs")
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
    let live: Vec<(uuid::Uuid, uuid::Uuid, i64)> = sqlx::query_as(
        "SELECT t.job_id, a.machine_id, count(*) FROM attempts a JOIN tasks t ON t.id = a.task_id
         WHERE a.state IN ('assigned', 'starting', 'running') GROUP BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    for (job, machine, n) in live {
        let spec = &specs[&job].0;
        let ok = |c: &Constraint| c.matches(&labels[&machine]);
        if !spec.constraints.iter().all(ok) {
            v.violations += n;
        }
        if let Some(max) = spec.spread.as_ref().and_then(|s| s.max_per_machine) {
            v.violations += (n - i64::from(max)).max(0);
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_workload_adds_up_and_mixes() {
        let jobs = super::jobs(100_000);
        let total: i64 = jobs.iter().map(|j| j.replicas).sum();
        assert_eq!(total, 100_000);
        assert!(jobs.len() > 500);
        assert!(jobs.iter().any(|j| !j.constraints.is_empty()));
        assert!(jobs.iter().any(|j| j.spread.is_some()));
        assert!(jobs.iter().all(|j| j.priority < 200));
    }
}
