//! The batch claim's plan stays good: `borg_store::CLAIM_TASKS` prepared and
//! run again and again (as the scheduler's connection does) is still planned
//! for the array at hand under the commit's `plan_cache_mode` (the planner
//! expects the batch's rows from the `unnest`). Under the default mode Postgres settles on a generic
//! plan that guesses 10 rows for the `unnest`: the control shows the check
//! can tell them apart.

use borg_store::Store;
use borgscheduler::synth;
use sqlx::{Connection, Executor, Row};

const BATCH: usize = 1000;

/// The `EXPLAIN EXECUTE` of the prepared claim after `runs` executions, in
/// one transaction under `mode`: (rows the planner expects from the unnest,
/// whether tasks are scanned sequentially).
async fn plan_after(url: &str, ids: &str, mode: &str, runs: usize) -> (f64, bool) {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let sql = borg_store::CLAIM_TASKS
        .replace("$1::uuid[]", "$1")
        .replace("$2::bigint[]", "$2")
        .replace("$3::bigint[]", "$3")
        .replace("$4::bigint[]", "$4");
    conn.execute(format!("PREPARE claim(uuid[], bigint[], bigint[], bigint[]) AS {sql}").as_str())
        .await
        .unwrap();
    let args = format!(
        "'{{{ids}}}', '{{{z}}}', '{{{z}}}', '{{{z}}}'",
        z = vec!["0"; BATCH].join(",")
    );
    let mut tx = conn.begin().await.unwrap();
    tx.execute(format!("SET LOCAL plan_cache_mode = {mode}").as_str())
        .await
        .unwrap();
    for _ in 0..runs {
        tx.execute(format!("EXECUTE claim({args})").as_str())
            .await
            .unwrap();
    }
    let row = sqlx::query(&format!("EXPLAIN (FORMAT JSON) EXECUTE claim({args})"))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let plan: serde_json::Value = row.get(0);
    tx.rollback().await.unwrap();
    let mut unnest_rows = None;
    let mut seq_tasks = false;
    walk(&plan[0]["Plan"], &mut |node| {
        if node["Node Type"] == "Function Scan" {
            unnest_rows = node["Plan Rows"].as_f64();
        }
        if node["Node Type"] == "Seq Scan" && node["Relation Name"] == "tasks" {
            seq_tasks = true;
        }
    });
    let Some(rows) = unnest_rows else {
        panic!("no unnest in the plan: {plan:#}")
    };
    (rows, seq_tasks)
}

fn walk(node: &serde_json::Value, f: &mut impl FnMut(&serde_json::Value)) {
    f(node);
    if let Some(children) = node["Plans"].as_array() {
        for c in children {
            walk(c, f);
        }
    }
}

#[tokio::test]
async fn the_claim_is_planned_for_its_batch_every_time() {
    let url = devpg::testing::fresh_database(&borg_store::MIGRATOR)
        .await
        .expect("a fresh database");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let store = Store::from_pool(pool.clone());
    synth::seed(&store, 100, 20_000).await.unwrap();
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id::text FROM tasks ORDER BY random() LIMIT $1")
            .bind(BATCH as i64)
            .fetch_all(&pool)
            .await
            .unwrap();
    let ids = ids.join(",");

    // What commit_placements runs under.
    for runs in [0, 6, 12] {
        let (rows, seq) = plan_after(&url, &ids, "force_custom_plan", runs).await;
        assert_eq!(
            rows, BATCH as f64,
            "after {runs} runs the claim expects {rows} rows"
        );
        // A seq scan of tasks may be the right plan for 1,000 of 20,000 rows; what
        // matters is that the planner knows the batch's size when it chooses.
        eprintln!("after {runs} runs: unnest rows {rows}, seq scan of tasks {seq}");
    }
    // The control: a generic plan (what the default mode switches to) guesses.
    let (rows, _) = plan_after(&url, &ids, "force_generic_plan", 0).await;
    assert_ne!(
        rows, BATCH as f64,
        "a generic plan cannot know the batch size"
    );
}
