//! Two schedulers, each with its own pool, racing over one database. Whatever
//! interleaving happens, the database must end up consistent: no machine
//! over-committed, no task placed twice, tasks and attempts agreeing, and the
//! cluster filled as far as the pending work allows.

mod common;

use borg_shared::spec::Constraint;
use borg_shared::{JobId, MachineId, TaskId};
use common::*;
use sqlx::types::Json;
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

const SCHEDULERS: [&str; 2] = ["race-a", "race-b"];
const ROUNDS: usize = 4;

/// Quiet once something was placed after `since` and each scheduler has
/// finished two passes after the last pass (of either) that placed or lost
/// anything: the second of them started after every placement was committed
/// and still found nothing to do.
fn quiet(since: usize) -> bool {
    let all: Vec<Logged> = SCHEDULERS.iter().flat_map(|s| passes(s)).collect();
    let last_busy = all
        .iter()
        .filter(|p| p.seq > since && (p.num("placed") > 0 || p.num("lost_races") > 0))
        .map(|p| p.seq)
        .max();
    let Some(last_busy) = last_busy else {
        return false;
    };
    SCHEDULERS
        .iter()
        .all(|s| passes(s).iter().filter(|p| p.seq > last_busy).count() >= 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_schedulers_racing_never_over_commit() {
    let (url, pool) = fresh_pool().await;

    // 20 small machines in two zones; every third has an ssd.
    for i in 0..20 {
        let mut m = MachineBuilder::new(&format!("m{i:02}"))
            .cpu(1000)
            .mem(GI)
            .label("zone", if i % 2 == 0 { "a" } else { "b" });
        if i % 3 == 0 {
            m = m.label("ssd", "true");
        }
        m.insert(&pool).await;
    }
    // 1,000 tasks asking for ~150 cores against 20: far more than fits.
    let jobs = [
        JobBuilder::new("prod-a")
            .priority(500)
            .replicas(60)
            .cpu(200)
            .cpu_step(50)
            .mem(128 * MI)
            .constraint("zone", "=", Some("a")),
        JobBuilder::new("prod")
            .priority(400)
            .replicas(100)
            .cpu(150)
            .cpu_step(100)
            .mem(96 * MI),
        JobBuilder::new("ssd")
            .priority(300)
            .replicas(80)
            .cpu(100)
            .mem(200 * MI)
            .constraint("ssd", "exists", None),
        JobBuilder::new("not-b")
            .priority(200)
            .replicas(120)
            .cpu(250)
            .mem(64 * MI)
            .constraint("zone", "!=", Some("b")),
        JobBuilder::new("batch")
            .priority(100)
            .replicas(300)
            .cpu(100)
            .cpu_step(100)
            .mem(32 * MI),
        JobBuilder::new("fat-mem")
            .priority(100)
            .replicas(100)
            .cpu(50)
            .mem(300 * MI),
        JobBuilder::new("tiny")
            .priority(50)
            .replicas(220)
            .cpu(10)
            .mem(8 * MI),
        JobBuilder::new("nowhere")
            .priority(900)
            .replicas(10)
            .constraint("zone", "=", Some("z")),
        JobBuilder::new("too-big")
            .priority(800)
            .replicas(10)
            .cpu(2000),
    ];
    for j in jobs {
        j.insert(&pool).await;
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM tasks").await, 1000);

    // Slow every commit down (in this database only): while one scheduler holds
    // its machine locks, the other reads a snapshot that is already stale and
    // places onto the same machines, which is the race the commit must survive.
    sqlx::raw_sql(
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN PERFORM pg_sleep(0.02); RETURN NULL; END $$;
         CREATE TRIGGER slow_commit AFTER INSERT ON attempts
             FOR EACH STATEMENT EXECUTE FUNCTION slow_commit();",
    )
    .execute(&pool)
    .await
    .unwrap();

    // Small pages of different sizes: the cluster fills over many interleaved
    // commits, and the two walk the queue out of step.
    // Both judge the whole queue (no split): every placement of one is a race
    // the other may lose, the hardest case for the commit.
    let racing = |name, batch| {
        let mut c = config(&url, name, Duration::from_millis(50), batch);
        c.whole_queue = true;
        start_config(c)
    };
    let a = racing(SCHEDULERS[0], 10);
    let b = racing(SCHEDULERS[1], 7);

    for round in 0..ROUNDS {
        let since = log_seq();
        if round > 0 {
            // The master's part, played by the test: half the running work
            // finishes, freeing capacity for both schedulers to race for.
            finish_every_other(&pool).await;
            sqlx::query("SELECT pg_notify('borg_pending', '')")
                .execute(&pool)
                .await
                .unwrap();
        }
        let started = Instant::now();
        wait_until(
            "both schedulers to go quiet",
            Duration::from_secs(60),
            || async { quiet(since) },
        )
        .await;
        eprintln!("round {round} settled in {:?}", started.elapsed());
        check(&pool).await;
    }
    a.stop().await;
    b.stop().await;

    for s in SCHEDULERS {
        let p = passes(s);
        let placed: u64 = p.iter().map(|p| p.num("placed")).sum();
        let lost: u64 = p.iter().map(|p| p.num("lost_races")).sum();
        eprintln!(
            "{s}: {} passes, placed {placed}, lost races {lost}",
            p.len()
        );
        assert!(p.len() >= 2 * ROUNDS, "{s} made only {} passes", p.len());
    }

    let nowhere = reasons_of(&pool, "nowhere").await;
    assert!(
        nowhere.len() == 1 && nowhere[0].as_deref().unwrap_or("").ends_with(" zone = z"),
        "{nowhere:?}"
    );
    let too_big = reasons_of(&pool, "too-big").await;
    assert!(
        too_big.len() == 1
            && too_big[0]
                .as_deref()
                .unwrap_or("")
                .contains(" insufficient cpu (nearest: "),
        "{too_big:?}"
    );
}

/// Mark every other live attempt (and its task) succeeded, with the event the
/// store writes for each (what a scheduler's machine cache follows).
async fn finish_every_other(pool: &PgPool) {
    sqlx::raw_sql(
        "WITH done AS (
             SELECT id, task_id, machine_id FROM (
                 SELECT id, task_id, machine_id, row_number() OVER (ORDER BY id) AS n
                 FROM attempts WHERE state = 'assigned') x
             WHERE n % 2 = 0
         ), a AS (
             UPDATE attempts SET state = 'succeeded', finished_at = now()
             WHERE id IN (SELECT id FROM done)
         ), t AS (
             UPDATE tasks SET state = 'succeeded', updated_at = now()
             WHERE id IN (SELECT task_id FROM done)
             RETURNING id, job_id
         )
         INSERT INTO events (kind, job_id, task_id, attempt_id, machine_id, from_state, to_state)
         SELECT 'task', t.job_id, done.task_id, done.id, done.machine_id, 'assigned', 'succeeded'
         FROM done JOIN t ON t.id = done.task_id",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// A machine's free resources, from its live attempts.
#[derive(sqlx::FromRow)]
struct Free {
    id: MachineId,
    name: String,
    labels: Json<BTreeMap<String, String>>,
    cpu: i64,
    memory: i64,
    disk: i64,
}

#[derive(sqlx::FromRow)]
struct TaskRow {
    id: TaskId,
    job_id: JobId,
    state: String,
    machine: Option<MachineId>,
    cpu: i64,
    memory: i64,
    disk: i64,
    reason: Option<String>,
}

/// Everything that must hold, read back from the database.
async fn check(pool: &PgPool) {
    // No machine over-committed on any dimension.
    let over: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT m.name, sum(a.cpu_milli)::bigint, sum(a.memory)::bigint, sum(a.disk)::bigint
         FROM machines m JOIN attempts a ON a.machine_id = m.id
         WHERE a.state IN ('assigned', 'starting', 'running')
         GROUP BY m.id
         HAVING sum(a.cpu_milli) > m.cpu_milli OR sum(a.memory) > m.memory OR sum(a.disk) > m.disk",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        over.is_empty(),
        "over-committed machines (name, cpu, memory, disk): {over:?}"
    );

    // No task placed twice (finished tasks are not retried in this test).
    assert_eq!(
        count(pool, "SELECT count(*) FROM (SELECT task_id FROM attempts GROUP BY task_id HAVING count(*) > 1) d").await,
        0,
        "a task has more than one attempt"
    );
    // Every assigned task has exactly its one live attempt, copying its request.
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM tasks t WHERE t.state = 'assigned' AND NOT EXISTS (
                         SELECT 1 FROM attempts a WHERE a.id = t.attempt_id AND a.task_id = t.id
                         AND a.state = 'assigned'
                         AND (a.cpu_milli, a.memory, a.disk) = (t.cpu_milli, t.memory, t.disk))"
        )
        .await,
        0,
        "assigned task without its attempt"
    );
    let assigned = count(pool, "SELECT count(*) FROM tasks WHERE state = 'assigned'").await;
    let live = count(
        pool,
        "SELECT count(*) FROM attempts WHERE state IN ('assigned', 'starting', 'running')",
    )
    .await;
    assert_eq!(assigned, live, "assigned tasks vs live attempts");
    assert!(assigned > 0);
    assert_eq!(
        count(pool, "SELECT count(*) FROM tasks WHERE state = 'pending' AND (attempt_id IS NOT NULL OR runs <> 0)").await,
        0,
        "a pending task carries an attempt"
    );
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM events WHERE from_state = 'pending' AND to_state = 'assigned'"
        )
        .await,
        count(pool, "SELECT count(*) FROM attempts").await,
        "one event per placement"
    );

    // Constraints hold, and the cluster is full as far as the queue goes: no
    // pending task fits on any machine it may use.
    let machines: Vec<Free> = sqlx::query_as(
        "SELECT m.id, m.name, m.labels,
                m.cpu_milli - COALESCE(sum(a.cpu_milli), 0)::bigint AS cpu,
                m.memory - COALESCE(sum(a.memory), 0)::bigint AS memory,
                m.disk - COALESCE(sum(a.disk), 0)::bigint AS disk
         FROM machines m LEFT JOIN attempts a
           ON a.machine_id = m.id AND a.state IN ('assigned', 'starting', 'running')
         GROUP BY m.id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let constraints: HashMap<JobId, Vec<Constraint>> =
        sqlx::query_as::<_, (JobId, Json<Vec<Constraint>>)>(
            "SELECT id, COALESCE(spec->'constraints', '[]'::jsonb) FROM jobs",
        )
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, c)| (id, c.0))
        .collect();
    let tasks: Vec<TaskRow> = sqlx::query_as(
        "SELECT t.id, t.job_id, t.state::text AS state, a.machine_id AS machine,
                t.cpu_milli AS cpu, t.memory, t.disk, task_reason(t) AS reason
         FROM tasks t LEFT JOIN attempts a ON a.id = t.attempt_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    // A machine where a pending task preempts lower-priority work keeps what it
    // frees for that task: the scheduler leaves it, so it need not look full.
    let reserved: Vec<&str> = tasks
        .iter()
        .filter(|t| t.state == "pending")
        .filter_map(|t| {
            let reason = t.reason.as_deref()?;
            let on = reason
                .strip_prefix("waiting for preempted tasks to stop on ")
                .or_else(|| reason.strip_prefix("preempting ")?.split(" on ").nth(1))?;
            Some(on.split(':').next().unwrap_or(on))
        })
        .collect();
    let open: Vec<&Free> = machines
        .iter()
        .filter(|m| !reserved.contains(&m.name.as_str()))
        .collect();
    for t in &tasks {
        let allowed = |m: &Free| {
            constraints[&t.job_id]
                .iter()
                .all(|c| c.matches(&m.labels.0))
        };
        let task = t.id;
        match t.state.as_str() {
            "assigned" | "succeeded" => {
                let m = machines.iter().find(|m| Some(m.id) == t.machine).unwrap();
                assert!(
                    allowed(m),
                    "task {task} on {} breaks its constraints",
                    m.name
                );
            }
            "pending" => {
                let fits = open.iter().find(|m| {
                    allowed(m) && m.cpu >= t.cpu && m.memory >= t.memory && m.disk >= t.disk
                });
                assert!(
                    fits.is_none(),
                    "task {task} still pending but fits on {}",
                    fits.unwrap().name
                );
                // Either nothing fits (and the reason says why per machine), or
                // this task preempted lower-priority work whose attempts still
                // hold the machine: nobody plays the borglet here to stop them.
                let reason = t.reason.as_deref().unwrap_or_default();
                assert!(
                    reason.contains(" machines fit: ")
                        || reason.starts_with("preempting ")
                        || reason.starts_with("waiting for preempted tasks to stop on "),
                    "pending task {task} without a reason: {reason:?}"
                );
            }
            other => panic!("task {task} in state {other}"),
        }
    }
    // Which makes every machine full: the "tiny" tasks (10m, 8Mi, unconstrained)
    // would otherwise still fit somewhere.
    let tiny_left = count(
        pool,
        "SELECT count(*) FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE j.name = 'tiny' AND t.state = 'pending'",
    )
    .await;
    if tiny_left > 0 {
        for m in &open {
            assert!(
                m.cpu < 10 || m.memory < 8 * MI,
                "{} left with {}m cpu and {} bytes free",
                m.name,
                m.cpu,
                m.memory
            );
        }
    }
    let used_cpu: i64 = machines.iter().map(|m| 1000 - m.cpu).sum();
    eprintln!("{assigned} tasks assigned, {used_cpu}m of 20000m cpu used");
}

async fn reasons_of(pool: &PgPool, job: &str) -> Vec<Option<String>> {
    sqlx::query_scalar(
        "SELECT DISTINCT task_reason(t) FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE j.name = $1",
    )
    .bind(job)
    .fetch_all(pool)
    .await
    .unwrap()
}
