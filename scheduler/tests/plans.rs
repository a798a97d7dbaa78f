//! The commit's plans stay good. The batch claim, `borg_store::CLAIM_TASKS`, prepared and
//! run again and again (as the scheduler's connection does) is still planned
//! for the array at hand under the commit's `plan_cache_mode` (the planner
//! expects the batch's rows from the `unnest`). Under the default mode Postgres settles on a generic
//! plan that guesses 10 rows for the `unnest`: the control shows the check
//! can tell them apart. And the scheduler's reads of big tables use their indexes.

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

/// A fresh database with 100 machines and 20,000 pending tasks.
async fn seeded() -> (String, sqlx::PgPool) {
    let url = devpg::testing::fresh_database(&borg_store::MIGRATOR)
        .await
        .expect("a fresh database");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    synth::seed(&Store::from_pool(pool.clone()), 100, 20_000)
        .await
        .unwrap();
    (url, pool)
}

#[tokio::test]
async fn the_claim_is_planned_for_its_batch_every_time() {
    let (url, pool) = seeded().await;
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
        // Whether tasks are scanned is decided by the commit's KEYED_JOINS (see
        // below); here what matters is that the planner knows the batch's size.
        eprintln!("after {runs} runs: unnest rows {rows}, seq scan of tasks {seq}");
    }
    // The control: a generic plan (what the default mode switches to) guesses.
    let (rows, _) = plan_after(&url, &ids, "force_generic_plan", 0).await;
    assert_ne!(
        rows, BATCH as f64,
        "a generic plan cannot know the batch size"
    );
}

/// Whether `sql`'s plan for the jobs `$1` scans `attempts` sequentially.
async fn scans_attempts(pool: &sqlx::PgPool, sql: &str, jobs: &[uuid::Uuid]) -> bool {
    let mut tx = borg_store::begin(pool).await.unwrap();
    // Planned for the array at hand, as the scheduler's one-off reads are.
    tx.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        .await
        .unwrap();
    let row = sqlx::query(&format!("EXPLAIN (FORMAT JSON) {sql}"))
        .bind(jobs)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    seq_scans(&row.get(0), "attempts")
}

/// Whether an `EXPLAIN (FORMAT JSON)` plan reads `table` sequentially.
fn seq_scans(plan: &serde_json::Value, table: &str) -> bool {
    let mut seq = false;
    walk(&plan[0]["Plan"], &mut |node| {
        seq |= node["Node Type"] == "Seq Scan" && node["Relation Name"] == table;
    });
    seq
}

/// Where a page's spreading jobs already run is read through their tasks, not
/// by hashing every live attempt of the cell.
#[tokio::test]
async fn a_pages_job_counts_do_not_scan_every_attempt() {
    let (_url, pool) = seeded().await;
    // Most tasks run somewhere; the page's jobs are a few of the rest: the
    // biggest, so that joined by job alone (the control below) the planner
    // always expects enough rows to hash every attempt. With jobs of a few
    // tasks it may probe the index instead, and the control proved nothing.
    let jobs: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT job_id FROM tasks GROUP BY job_id ORDER BY count(*) DESC, job_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let (page, running) = jobs.split_at(jobs.len() / 20);
    sqlx::query(
        "WITH m AS (SELECT array_agg(id) ids FROM machines)
         INSERT INTO attempts (id, task_id, machine_id, state, cpu_milli, memory, disk, version)
         SELECT gen_random_uuid(), t.id, m.ids[1 + (random() * 99)::int], 'running',
                t.cpu_milli, t.memory, t.disk, 1
         FROM tasks t, m WHERE t.job_id = ANY($1)",
    )
    .bind(running)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE tasks SET state = 'running' WHERE job_id = ANY($1)")
        .bind(running)
        .execute(&pool)
        .await
        .unwrap();
    // Their counters as the placements would have left them: on a machine's shard.
    sqlx::query(
        "INSERT INTO job_counts AS c (job_id, shard, pending, running)
         SELECT job_id, 1, -count(*), count(*) FROM tasks WHERE job_id = ANY($1) GROUP BY job_id
         ON CONFLICT (job_id, shard) DO UPDATE
         SET pending = c.pending + EXCLUDED.pending, running = c.running + EXCLUDED.running",
    )
    .bind(running)
    .execute(&pool)
    .await
    .unwrap();
    pool.execute("ANALYZE").await.unwrap();
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(live > 10_000, "{live} live attempts");

    assert!(
        !scans_attempts(&pool, borgscheduler::JOB_COUNTS, page).await,
        "the page's job counts scan every attempt"
    );
    // The control: joined by job alone, the planner hashes every live attempt.
    let by_job = borgscheduler::JOB_COUNTS.replace(
        "a.task_id = ANY(ARRAY(SELECT id FROM tasks WHERE job_id = ANY(ARRAY(
               SELECT DISTINCT c.job_id FROM job_counts c
               WHERE c.job_id = ANY($1)
                 AND (c.shard > 0 OR c.assigned + c.starting + c.running > 0)))))
       AND ",
        "",
    );
    assert_ne!(by_job, borgscheduler::JOB_COUNTS);
    assert!(scans_attempts(&pool, &by_job, page).await);
    // And the counts are right for jobs that run.
    let counts: Vec<(uuid::Uuid, uuid::Uuid, i64)> = sqlx::query_as(borgscheduler::JOB_COUNTS)
        .bind(&running[..3])
        .fetch_all(&pool)
        .await
        .unwrap();
    let total: i64 = counts.iter().map(|c| c.2).sum();
    let expected: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE t.job_id = ANY($1)",
    )
    .bind(&running[..3])
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(total, expected);
    assert!(total > 0);
}

/// Whether a plan reads every task: a sequential scan of `tasks`, or a walk of
/// one of its indexes with no condition (what a merge join does).
fn reads_every_task(plan: &serde_json::Value) -> bool {
    let mut every = false;
    walk(&plan[0]["Plan"], &mut |node| {
        let on_tasks = node["Relation Name"] == "tasks";
        let kind = node["Node Type"].as_str().unwrap_or_default();
        every |= on_tasks
            && (kind == "Seq Scan" || (kind.starts_with("Index") && node["Index Cond"].is_null()));
    });
    every
}

/// The `EXPLAIN` of `query` in a transaction under the commit's settings, with
/// `KEYED_JOINS` or without.
async fn commit_plan<'q>(
    pool: &sqlx::PgPool,
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    keyed: bool,
) -> serde_json::Value {
    let mut tx = borg_store::begin(pool).await.unwrap();
    tx.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        .await
        .unwrap();
    if keyed {
        tx.execute(borg_store::KEYED_JOINS).await.unwrap();
    }
    let row = query.fetch_one(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    row.get(0)
}

/// A batch's claim and move reach its tasks through the primary key, whatever
/// share of the table the batch is: left to its costs the planner hashes or
/// merges every task of the cell for each batch (the control).
#[tokio::test]
async fn the_commit_reaches_a_batchs_tasks_by_key() {
    let (_url, pool) = seeded().await;
    const BIG: usize = 4000; // the scheduler's default batch, 20% of the table
    let ids: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM tasks ORDER BY random() LIMIT $1")
            .bind(BIG as i64)
            .fetch_all(&pool)
            .await
            .unwrap();
    let zeros = vec![0i64; BIG];
    let claim_sql = format!("EXPLAIN (FORMAT JSON) {}", borg_store::CLAIM_TASKS);
    let move_sql = format!("EXPLAIN (FORMAT JSON) {}", borg_store::MOVE_TASKS);
    let machine = Some(uuid::Uuid::now_v7());
    for keyed in [true, false] {
        let claim = sqlx::query(&claim_sql)
            .bind(&ids)
            .bind(&zeros)
            .bind(&zeros)
            .bind(&zeros);
        let claim = commit_plan(&pool, claim, keyed).await;
        let mv = sqlx::query(&move_sql)
            .bind(&ids)
            .bind(
                ids.iter()
                    .map(|_| Some(uuid::Uuid::now_v7()))
                    .collect::<Vec<_>>(),
            )
            .bind(vec![machine; BIG])
            .bind(vec!["pending"; BIG])
            .bind(vec!["assigned"; BIG])
            .bind(vec!["placed"; BIG])
            .bind(&zeros)
            .bind(vec![true; BIG])
            .bind(vec![1i16; BIG])
            .bind(vec![None::<i32>; BIG]);
        let mv = commit_plan(&pool, mv, keyed).await;
        // Keyed: no plan reads every task. The control: without, both do.
        assert_eq!(reads_every_task(&claim), !keyed, "the claim: {claim:#}");
        assert_eq!(reads_every_task(&mv), !keyed, "the move: {mv:#}");
    }
}

/// Whether a plan has a node of type `kind` ("Sort", "Nested Loop", ...).
fn has_node(plan: &serde_json::Value, kind: &str) -> bool {
    let mut found = false;
    walk(&plan[0]["Plan"], &mut |node| {
        found |= node["Node Type"] == kind;
    });
    found
}

/// The condition the plan's walk of the queue's index starts at, if it walks it.
fn queue_index_cond(plan: &serde_json::Value) -> Option<String> {
    let mut cond = None;
    walk(&plan[0]["Plan"], &mut |node| {
        if node["Index Name"] == "task_queue_order" {
            cond = node["Index Cond"].as_str().map(str::to_string);
        }
    });
    cond
}

/// A page read after a cursor starts its walk of the queue at the cursor (one
/// row comparison, an index condition) and reaches the tasks by key, also late
/// in a pass, when a page is a big share of what is left of the queue. The
/// control: left to its costs, the planner reads every task and sorts.
#[tokio::test]
async fn a_page_read_starts_at_its_cursor() {
    let (_url, pool) = seeded().await;
    const PAGE: i64 = 4000;
    // The cursor: where a walk stands with 2.5 pages of the 20,000 left.
    let (rank, created_at, task): (i32, chrono::DateTime<chrono::Utc>, uuid::Uuid) =
        sqlx::query_as(
            "SELECT rank, created_at, task_id FROM task_queue
             ORDER BY rank, created_at, task_id OFFSET $1 LIMIT 1",
        )
        .bind(20_000 - PAGE * 5 / 2 - 1)
        .fetch_one(&pool)
        .await
        .unwrap();
    let sql = format!(
        "EXPLAIN (FORMAT JSON) {}",
        borgscheduler::pending_page_sql(true)
    );
    for walk in [true, false] {
        let page = sqlx::query(&sql)
            .bind(PAGE)
            .bind(Vec::<uuid::Uuid>::new())
            .bind(5000.0f64)
            .bind(1i32)
            .bind(0i32)
            .bind(-rank)
            .bind(created_at)
            .bind(task);
        let mut tx = borg_store::begin(&pool).await.unwrap();
        if walk {
            tx.execute(borgscheduler::WALK_IN_QUEUE_ORDER)
                .await
                .unwrap();
        }
        let plan: serde_json::Value = page.fetch_one(&mut *tx).await.unwrap().get(0);
        tx.rollback().await.unwrap();
        if walk {
            let cond = queue_index_cond(&plan).unwrap_or_default();
            assert!(
                cond.contains("ROW(rank, created_at, task_id) >"),
                "{plan:#}"
            );
            assert!(
                !reads_every_task(&plan) && !has_node(&plan, "Sort"),
                "{plan:#}"
            );
        } else {
            assert!(
                reads_every_task(&plan) && has_node(&plan, "Sort"),
                "{plan:#}"
            );
        }
    }
}

/// One of two schedulers reading a page leaves the other's tasks at the
/// queue: the walk of the queue's index drops their rows by the part on each
/// (migration 0025), and reaches the tasks by key only for its own. It used to
/// reach every task of the walk to read its job before dropping half of them.
#[tokio::test]
async fn a_sliced_page_leaves_the_other_schedulers_tasks_at_the_queue() {
    let (_url, pool) = seeded().await;
    const PAGE: i64 = 2000;
    let sql = format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) {}",
        borgscheduler::pending_page_sql(false)
    );
    for rank in [0i32, 1] {
        let mut tx = borg_store::begin(&pool).await.unwrap();
        tx.execute(borgscheduler::WALK_IN_QUEUE_ORDER)
            .await
            .unwrap();
        let plan: serde_json::Value = sqlx::query(&sql)
            .bind(PAGE)
            .bind(Vec::<uuid::Uuid>::new())
            .bind(5000.0f64)
            .bind(2i32)
            .bind(rank)
            .fetch_one(&mut *tx)
            .await
            .unwrap()
            .get(0);
        tx.rollback().await.unwrap();
        let (mut dropped, mut filter, mut tasks_reached) = (0, String::new(), 0);
        walk(&plan[0]["Plan"], &mut |node| {
            if node["Index Name"] == "task_queue_order" {
                filter = node["Filter"].as_str().unwrap_or_default().to_string();
                dropped = node["Rows Removed by Filter"].as_i64().unwrap_or(0);
            }
            if node["Relation Name"] == "tasks" {
                tasks_reached = node["Actual Loops"].as_i64().unwrap_or(0);
            }
        });
        assert!(filter.contains("part"), "{plan:#}");
        assert!(dropped > 0, "the other's rows: {plan:#}");
        assert!(
            (1..=PAGE).contains(&tasks_reached),
            "tasks reached {tasks_reached} times for a page of {PAGE}: {plan:#}"
        );
    }
}

/// The machines' full read joins their usage by hashing, also when the costs
/// favour walking the machines in name order (the bench's settled pass, right
/// after 100,000 placements and before autovacuum's analyze, took ~1 s that
/// way in about a third of its runs). The control: the planner then runs the
/// usage aggregate once and scans all of it again for every machine.
#[tokio::test]
async fn the_machines_full_read_hashes_their_usage() {
    let url = devpg::testing::fresh_database(&borg_store::MIGRATOR)
        .await
        .expect("a fresh database");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    borg_store::fixtures::seed_machines(&mut conn, 2000)
        .await
        .unwrap();
    drop(conn);
    // Statistics from before the attempts, as after a burst; then 20,000 live.
    pool.execute("ALTER TABLE attempts SET (autovacuum_enabled = false)")
        .await
        .unwrap();
    pool.execute("ANALYZE machines, attempts").await.unwrap();
    pool.execute(
        "WITH m AS (SELECT array_agg(id ORDER BY id) AS a FROM machines)
         INSERT INTO attempts (id, task_id, machine_id, state, cpu_milli, memory, disk)
         SELECT gen_random_uuid(), gen_random_uuid(), m.a[1 + i % 2000], 'running', 100, 1, 0
         FROM m, generate_series(1, 20000) i",
    )
    .await
    .unwrap();
    let sql = format!(
        "EXPLAIN (FORMAT JSON) {}",
        borgscheduler::machines_full_read_sql()
    );
    for hash in [true, false] {
        let mut tx = borg_store::begin(&pool).await.unwrap();
        // Costs that favour the machines in name order (the stall's plan),
        // forced here by making the sort of every machine dear.
        tx.execute("SET LOCAL enable_sort = off").await.unwrap();
        if hash {
            tx.execute(borgscheduler::HASH_THE_USAGE).await.unwrap();
        }
        let plan: serde_json::Value = sqlx::query(&sql).fetch_one(&mut *tx).await.unwrap().get(0);
        tx.rollback().await.unwrap();
        assert_eq!(has_node(&plan, "Nested Loop"), !hash, "{plan:#}");
    }
}

/// The machines' full read, the ports in use and the preemption candidates are
/// planned at each read, not kept as prepared statements: one without
/// parameters keeps its first plan on the connection, made with the statistics
/// and settings of then (the first read takes the small cell's way, without
/// [`borgscheduler::HASH_THE_USAGE`], often while `attempts` is empty), and a
/// later read would run that plan. The control: the machines' read prepared as
/// usual is kept.
#[tokio::test]
async fn the_whole_table_reads_are_planned_at_each_read() {
    let url = devpg::testing::fresh_database(&borg_store::MIGRATOR)
        .await
        .expect("a fresh database");
    // One connection: every read below runs on it.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    borg_store::fixtures::seed_machines(&mut conn, 10)
        .await
        .unwrap();
    drop(conn);
    let kept = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%ORDER BY m.name%'
             OR statement LIKE '%unnest(a.ports)%' OR statement LIKE '%t.priority < 200%'",
        )
        // Not kept itself: its text holds what it looks for.
        .persistent(false)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    for many in [false, true, false] {
        let mut read = borgscheduler::read_machines(&pool, many).await.unwrap();
        assert_eq!(read.machines.len(), 10);
        // The other reads of a whole table without parameters.
        borgscheduler::read_used_ports(&pool, &mut read)
            .await
            .unwrap();
        borgscheduler::read_victims(&pool, &mut read).await.unwrap();
    }
    assert_eq!(kept().await, 0, "a whole-table read is kept prepared");
    sqlx::query(&borgscheduler::machines_full_read_sql())
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(kept().await, 1, "the control is not seen");
}

/// Whether `sql`'s plan reads `events` sequentially.
async fn scans_events(pool: &sqlx::PgPool, sql: &str) -> bool {
    let row = sqlx::query(&format!("EXPLAIN (FORMAT JSON) {sql}"))
        .fetch_one(pool)
        .await
        .unwrap();
    seq_scans(&row.get(0), "events")
}

/// The probe a waiting scheduler makes every interval ("anything new?") finds
/// the newest event through the events' key, whatever the table's size.
#[tokio::test]
async fn the_newest_event_is_found_through_the_events_key() {
    let (_url, pool) = seeded().await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(events >= 20_000, "{events} events");
    pool.execute("ANALYZE events").await.unwrap();
    assert!(
        !scans_events(&pool, borgscheduler::STAMP).await,
        "the stamp scans every event"
    );
    // The control: `max(id)` has no index of its own to read (migration 0022).
    assert!(scans_events(&pool, "SELECT max(id) FROM events").await);
}
