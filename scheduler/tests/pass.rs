//! One scheduler against a real Postgres: what a pass writes, what it leaves
//! alone, and how it wakes.

mod common;

use borg_shared::{MachineId, TaskId};
use common::*;
use sqlx::postgres::PgListener;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_places_what_fits_and_explains_the_rest() {
    let (url, pool) = fresh_pool().await;
    let m1 = MachineBuilder::new("m1")
        .cpu(2000)
        .mem(4 * GI)
        .label("zone", "a")
        .insert(&pool)
        .await;
    let m2 = MachineBuilder::new("m2")
        .cpu(1000)
        .mem(2 * GI)
        .label("zone", "b")
        .insert(&pool)
        .await;
    let drained = MachineBuilder::new("m3")
        .cpu(64_000)
        .mem(256 * GI)
        .state("draining")
        .insert(&pool)
        .await;

    // Decided first (highest priority). Its reason follows the cluster: after the
    // placements below, m1 keeps 4Gi - 2 x 512Mi - 64Mi.
    let (_, big) = JobBuilder::new("big")
        .priority(300)
        .mem(64 * GI)
        .insert(&pool)
        .await;
    let (_, web) = JobBuilder::new("web")
        .replicas(3)
        .cpu(500)
        .mem(512 * MI)
        .insert(&pool)
        .await;
    let (_, not_b) = JobBuilder::new("not-b")
        .cpu(250)
        .constraint("zone", "!=", Some("b"))
        .insert(&pool)
        .await;
    let (_, nowhere) = JobBuilder::new("nowhere")
        .constraint("zone", "=", Some("z"))
        .insert(&pool)
        .await;
    let (_, backing_off) = JobBuilder::new("backoff")
        .not_before(3600)
        .insert(&pool)
        .await;
    let (_, dead_job) = JobBuilder::new("dead").state("killed").insert(&pool).await;

    let s = start(&url, "sched-a", Duration::from_millis(100), 1000);
    wait_until("the feasible tasks are assigned", DEADLINE, || async {
        count(&pool, "SELECT count(*) FROM tasks WHERE state = 'assigned'").await == 4
    })
    .await;
    wait_until("the reasons are written", DEADLINE, || async {
        task_state(&pool, big[0]).await.1.is_some()
            && task_state(&pool, nowhere[0]).await.1.is_some()
    })
    .await;
    // Two more passes: nothing else may move.
    let seen = passes("sched-a").len();
    wait_until("two more passes", DEADLINE, || async {
        passes("sched-a").len() >= seen + 2
    })
    .await;
    s.stop().await;

    // The figures are those of the pass that first found it waiting (a changed
    // reason is rewritten only after REASON_REFRESH): before or after this pass's placements.
    let (state, reason) = task_state(&pool, big[0]).await;
    assert_eq!(state, "pending");
    let reason = reason.unwrap_or_default();
    assert!(
        [
            "0/2 machines fit: 2 insufficient memory (nearest: m1 has 4Gi of 64Gi)",
            "0/2 machines fit: 2 insufficient memory (nearest: m1 has 2.9Gi of 64Gi)"
        ]
        .contains(&reason.as_str()),
        "{reason}"
    );
    assert_eq!(
        task_state(&pool, nowhere[0]).await.1.as_deref(),
        Some("0/2 machines fit: 2 zone = z")
    );
    // Backing off and killed-job tasks are left completely alone.
    for t in [backing_off[0], dead_job[0]] {
        assert_eq!(task_state(&pool, t).await, ("pending".to_string(), None));
    }

    // Attempts: one per placed task, copying its request, on an up machine.
    #[derive(sqlx::FromRow)]
    struct Placed {
        task: TaskId,
        machine: MachineId,
        state: String,
        cpu: i64,
        memory: i64,
        disk: i64,
        task_cpu: i64,
        task_memory: i64,
        runs: i32,
        reason: Option<String>,
    }
    let rows: Vec<Placed> = sqlx::query_as(
        "SELECT t.id AS task, a.machine_id AS machine, a.state::text AS state,
                a.cpu_milli AS cpu, a.memory, a.disk,
                t.cpu_milli AS task_cpu, t.memory AS task_memory, t.runs, t.reason
         FROM tasks t JOIN attempts a ON a.id = t.attempt_id AND a.task_id = t.id
         WHERE t.state = 'assigned'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4);
    for r in &rows {
        assert_eq!(r.state, "assigned");
        assert_eq!(
            (r.cpu, r.memory, r.disk),
            (r.task_cpu, r.task_memory, 0),
            "attempt copies the request of {}",
            r.task
        );
        assert_eq!(r.runs, 1);
        assert_eq!(r.reason, None);
        assert_ne!(r.machine, drained, "placed on a draining machine");
    }
    let machine_of = |t: TaskId| rows.iter().find(|r| r.task == t).map(|r| r.machine);
    assert_eq!(machine_of(not_b[0]), Some(m1), "zone != b must land on m1");
    assert!(web.iter().all(|t| machine_of(*t).is_some()));
    // Spread: m2 (1 cpu) can take one 500m task; worst-fit uses both machines.
    assert!(web.iter().any(|t| machine_of(*t) == Some(m2)));

    // Events: exactly one pending -> assigned per attempt, saying where and by whom.
    let events: Vec<(TaskId, String)> = sqlx::query_as(
        "SELECT e.task_id, e.reason FROM events e
         JOIN attempts a ON a.id = e.attempt_id AND a.task_id = e.task_id AND a.machine_id = e.machine_id
         JOIN tasks t ON t.id = e.task_id AND t.job_id = e.job_id
         WHERE e.from_state = 'pending' AND e.to_state = 'assigned'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(count(&pool, "SELECT count(*) FROM events").await, 4);
    for (task, reason) in events {
        let on = if machine_of(task) == Some(m1) {
            "m1"
        } else {
            "m2"
        };
        assert_eq!(reason, format!("placed on {on} by sched-a"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakes_on_borg_pending_and_announces_borg_placed() {
    let (url, pool) = fresh_pool().await;
    let mut placed = PgListener::connect_with(&pool).await.unwrap();
    placed.listen("borg_placed").await.unwrap();

    // An hour between passes: only the notification can wake it in time.
    let s = start(&url, "sched-wake", Duration::from_secs(3600), 1000);
    wait_until("the first pass", DEADLINE, || async {
        !passes("sched-wake").is_empty()
    })
    .await;

    let m = MachineBuilder::new("m1").insert(&pool).await;
    let (_, tasks) = JobBuilder::new("late").replicas(2).insert(&pool).await;
    sqlx::query("SELECT pg_notify('borg_pending', '')")
        .execute(&pool)
        .await
        .unwrap();

    let note = tokio::time::timeout(DEADLINE, placed.recv())
        .await
        .expect("no borg_placed notification")
        .unwrap();
    assert_eq!(note.payload(), m.to_string());
    for t in tasks {
        assert_eq!(task_state(&pool, t).await.0, "assigned");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_the_schema_instead_of_crashing() {
    let (url, pool) = fresh_pool().await;
    sqlx::raw_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        .execute(&pool)
        .await
        .unwrap();

    let s = start(&url, "sched-early", Duration::from_millis(50), 1000);
    wait_until("two passes that find no schema", DEADLINE, || async {
        logged("sched-early")
            .iter()
            .filter(|l| l.message.contains("schema is not there yet"))
            .count()
            >= 2
    })
    .await;
    assert!(!s.is_finished(), "run() gave up on a missing schema");

    // As the master does it, while this scheduler keeps reading.
    borg_store::Store::from_pool(pool.clone())
        .migrate()
        .await
        .unwrap();
    MachineBuilder::new("m1").insert(&pool).await;
    let (_, tasks) = JobBuilder::new("first").insert(&pool).await;
    wait_until("placed once the schema exists", DEADLINE, || async {
        task_state(&pool, tasks[0]).await.0 == "assigned"
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walks_the_whole_queue_past_an_unplaceable_head() {
    let (url, pool) = fresh_pool().await;
    MachineBuilder::new("m1").cpu(1000).insert(&pool).await;
    // 25 high-priority tasks that never fit, then small ones behind them.
    JobBuilder::new("huge")
        .priority(900)
        .replicas(25)
        .cpu(5000)
        .insert(&pool)
        .await;
    let (_, small) = JobBuilder::new("small")
        .priority(10)
        .replicas(4)
        .insert(&pool)
        .await;

    // Pages of 10: the small tasks are on the third page.
    let s = start(&url, "sched-pages", Duration::from_millis(100), 10);
    wait_until("the small tasks are placed", DEADLINE, || async {
        count(&pool, "SELECT count(*) FROM tasks WHERE state = 'assigned'").await == 4
    })
    .await;
    let seen = passes("sched-pages").len();
    wait_until("two more passes", DEADLINE, || async {
        passes("sched-pages").len() >= seen + 2
    })
    .await;
    s.stop().await;

    for t in small {
        assert_eq!(task_state(&pool, t).await.0, "assigned");
    }
    assert_eq!(
        count(&pool, "SELECT count(*) FROM tasks t WHERE state = 'pending' AND task_reason(t) LIKE '0/% machines fit: % insufficient cpu (nearest: % of 5)'").await,
        25
    );
    let last = passes("sched-pages").pop().unwrap();
    // Once one `huge` task does not fit, the rest of that job is skipped for the
    // pass (they ask for the same): the first page, then one that finds the queue
    // has nothing else.
    assert_eq!(
        last.num("batches"),
        2,
        "a quiet pass reads one page per unplaceable job: {last:?}"
    );
    assert_eq!(
        last.num("pending"),
        10,
        "only the first page of `huge` was read"
    );
}

/// `spread` and `max_per_machine` hold across passes and the tasks already
/// placed: 3 zones, 2 machines each; 7 tasks with at most 1 per machine spread
/// over zones: 6 placed, 2 per zone, one per machine; the 7th waits and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_and_max_per_machine_hold_across_passes() {
    let (url, pool) = fresh_pool().await;
    for zone in ["a", "b", "c"] {
        for n in 1..=2 {
            MachineBuilder::new(&format!("{zone}{n}"))
                .cpu(4000)
                .mem(8 * GI)
                .label("zone", zone)
                .insert(&pool)
                .await;
        }
    }
    // Placed in two passes (a small batch), so the second must count the first's.
    let (_, tasks) = JobBuilder::new("web")
        .replicas(7)
        .spread(serde_json::json!({"label": "zone", "max_per_machine": 1}))
        .insert(&pool)
        .await;
    let s = start(&url, "sched-spread", Duration::from_millis(100), 4);
    wait_until(
        "six tasks placed and the seventh explained",
        DEADLINE,
        || async {
            count(&pool, "SELECT count(*) FROM tasks WHERE state = 'assigned'").await == 6
                && count(
                    &pool,
                    "SELECT count(*) FROM tasks t WHERE state = 'pending' AND task_reason(t) IS NOT NULL",
                )
                .await
                    == 1
        },
    )
    .await;
    s.stop().await;
    let per_machine: Vec<(String, i64)> = sqlx::query_as(
        "SELECT m.labels->>'zone', count(*) FROM attempts a JOIN machines m ON m.id = a.machine_id
         GROUP BY m.id, 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(per_machine.len(), 6, "one per machine: {per_machine:?}");
    assert!(per_machine.iter().all(|(_, n)| *n == 1), "{per_machine:?}");
    let mut waiting = Vec::new();
    for t in tasks {
        let (state, reason) = task_state(&pool, t).await;
        if state == "pending" {
            waiting.push(reason.unwrap_or_default());
        }
    }
    assert_eq!(
        waiting,
        ["0/6 machines fit: 6 already hold max_per_machine 1 of the job"]
    );
}

/// A page is placed while the page before it commits, against a snapshot
/// already charged with that page's placements: three machines that 30 tasks
/// fill exactly, placed in pages of 5 in one pass, lose no race (a page placed
/// against what the rows said before the last commit would pick the room that
/// commit takes, and lose it there), and none is over-committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_placed_while_the_last_commits_count_its_placements() {
    let (url, pool) = fresh_pool().await;
    for i in 0..3 {
        MachineBuilder::new(&format!("m{i}"))
            .cpu(1000)
            .mem(GI)
            .insert(&pool)
            .await;
    }
    JobBuilder::new("fill")
        .replicas(30)
        .cpu(100)
        .mem(64 * MI)
        .insert(&pool)
        .await;
    let mut c = config(&url, "sched-ahead", Duration::from_secs(3600), 5);
    c.commit_streams = 1;
    let s = start_config(c);
    wait_until("all 30 placed", DEADLINE, || async {
        count(&pool, "SELECT count(*) FROM tasks WHERE state = 'assigned'").await == 30
    })
    .await;
    s.stop().await;

    let busy: Vec<Logged> = passes("sched-ahead")
        .into_iter()
        .filter(|p| p.num("placed") > 0)
        .collect();
    assert_eq!(busy.len(), 1, "one pass placed them all: {busy:?}");
    let pass = &busy[0];
    assert_eq!(pass.num("placed"), 30, "{pass:?}");
    assert_eq!(pass.num("lost_races"), 0, "{pass:?}");
    // Six pages of 5, then the page that finds the queue's end.
    assert!(pass.num("batches") >= 6, "{pass:?}");
    assert_eq!(
        pass.num("placed_ahead"),
        pass.num("batches") - 1,
        "every page after the first was placed while the one before committed: {pass:?}"
    );
    let over = count(
        &pool,
        "SELECT count(*) FROM (SELECT a.machine_id FROM attempts a GROUP BY a.machine_id
                                HAVING sum(a.cpu_milli) > 1000) o",
    )
    .await;
    assert_eq!(over, 0, "a machine is over-committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_failed_on_a_machine_is_placed_on_another() {
    let (url, pool) = fresh_pool().await;
    // Both empty: best fit would pick m1, the smaller (the fuller after it).
    let m1 = MachineBuilder::new("m1")
        .cpu(1000)
        .mem(2 * GI)
        .insert(&pool)
        .await;
    let m2 = MachineBuilder::new("m2")
        .cpu(4000)
        .mem(8 * GI)
        .insert(&pool)
        .await;
    let (_, fresh) = JobBuilder::new("fresh").insert(&pool).await;
    let (_, failed) = JobBuilder::new("failed").insert(&pool).await;
    sqlx::query("UPDATE tasks SET failed_on = $1, failed_runs = 1 WHERE id = $2")
        .bind(m1)
        .bind(failed[0])
        .execute(&pool)
        .await
        .unwrap();
    let s = start(&url, "sched-a", Duration::from_millis(100), 1000);
    wait_until("both tasks are assigned", DEADLINE, || async {
        count(&pool, "SELECT count(*) FROM tasks WHERE state = 'assigned'").await == 2
    })
    .await;
    s.stop().await;
    let on: Vec<(TaskId, MachineId)> =
        sqlx::query_as("SELECT task_id, machine_id FROM attempts ORDER BY created_at")
            .fetch_all(&pool)
            .await
            .unwrap();
    let machine_of = |t: TaskId| on.iter().find(|(task, _)| *task == t).map(|(_, m)| *m);
    assert_eq!(machine_of(fresh[0]), Some(m1), "the control: best fit");
    assert_eq!(
        machine_of(failed[0]),
        Some(m2),
        "back on the machine it failed on"
    );
    // Placement clears nothing: the record stays until the next move to pending.
    let failed_on: Option<MachineId> =
        sqlx::query_scalar("SELECT failed_on FROM tasks WHERE id = $1")
            .bind(failed[0])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(failed_on, Some(m1));
}

#[tokio::test]
async fn a_services_replicas_spread_over_machines_and_a_batch_jobs_pack() {
    let (url, pool) = fresh_pool().await;
    let mut ms = Vec::new();
    for name in ["m1", "m2", "m3"] {
        let m = MachineBuilder::new(name).cpu(4000).mem(8 * GI);
        let m = if name == "m1" {
            m.label("seed", "yes")
        } else {
            m
        };
        ms.push(m.insert(&pool).await);
    }
    let s = start(&url, "sched-a", Duration::from_millis(100), 1000);
    // m1 in use, m2 and m3 empty.
    JobBuilder::new("seed")
        .constraint("seed", "=", Some("yes"))
        .insert(&pool)
        .await;
    wait_until("the seed task is assigned", DEADLINE, || async {
        count(&pool, "SELECT count(*) FROM tasks WHERE state = 'assigned'").await == 1
    })
    .await;
    let (_, web) = JobBuilder::new("web")
        .service()
        .replicas(3)
        .insert(&pool)
        .await;
    let (_, batch) = JobBuilder::new("crunch").replicas(3).insert(&pool).await;
    wait_until("all seven tasks are assigned", DEADLINE, || async {
        count(&pool, "SELECT count(*) FROM tasks WHERE state = 'assigned'").await == 7
    })
    .await;
    s.stop().await;
    let on: Vec<(TaskId, MachineId)> = sqlx::query_as("SELECT task_id, machine_id FROM attempts")
        .fetch_all(&pool)
        .await
        .unwrap();
    let machines_of = |tasks: &[TaskId]| {
        let mut m: Vec<MachineId> = on
            .iter()
            .filter(|(t, _)| tasks.contains(t))
            .map(|(_, m)| *m)
            .collect();
        m.sort();
        m.dedup();
        m
    };
    assert_eq!(
        machines_of(&web).len(),
        3,
        "one replica per machine: {on:?}"
    );
    assert_eq!(
        machines_of(&batch),
        vec![ms[0]],
        "the batch job packs onto the machine in use: {on:?}"
    );
}
