//! The scheduler keeps its machines between passes and reads again only what
//! changed (see `borgscheduler`'s `cache`): a pass after a small change reads
//! that change, and placements follow attempts that end, machines that are
//! added and machines that go down or come back.

mod common;

use borg_shared::MachineId;
use common::*;
use sqlx::PgPool;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);

/// End the live attempt on `machine` (and its task) with the event the store
/// writes for it, and wake the schedulers.
async fn finish_on(pool: &PgPool, machine: MachineId) {
    sqlx::query(
        "WITH done AS (
             SELECT id, task_id, machine_id FROM attempts
             WHERE machine_id = $1 AND state = 'assigned'
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
    .bind(machine)
    .execute(pool)
    .await
    .unwrap();
    wake(pool).await;
}

async fn wake(pool: &PgPool) {
    sqlx::query("SELECT pg_notify('borg_pending', '')")
        .execute(pool)
        .await
        .unwrap();
}

/// Where the task's live attempt is.
async fn machine_of(pool: &PgPool, task: borg_shared::TaskId) -> Option<MachineId> {
    sqlx::query_scalar(
        "SELECT machine_id FROM attempts
         WHERE task_id = $1 AND state IN ('assigned', 'starting', 'running')",
    )
    .bind(task)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// `n` machines of one core (`{prefix}0`..), and a job of one task per
/// machine that fills them once placed.
async fn filled(pool: &PgPool, prefix: &str, n: i32) -> Vec<MachineId> {
    let mut machines = Vec::new();
    for i in 0..n {
        let m = MachineBuilder::new(&format!("{prefix}{i}"))
            .cpu(1000)
            .mem(GI)
            .insert(pool)
            .await;
        machines.push(m);
    }
    JobBuilder::new("fill")
        .replicas(n)
        .cpu(1000)
        .mem(64 * MI)
        .insert(pool)
        .await;
    machines
}

/// The first pass of `scheduler` logged after `seq` whose `field` is above 0.
/// A pass is logged when it ends, after its commits: waited for.
async fn pass_after(scheduler: &str, seq: usize, field: &str) -> Logged {
    let found = || {
        passes(scheduler)
            .into_iter()
            .find(|p| p.seq > seq && p.num(field) > 0)
    };
    wait_until(
        &format!("a pass with {field} is logged"),
        DEADLINE,
        || async { found().is_some() },
    )
    .await;
    found().expect("logged")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_reads_only_the_machines_that_changed() {
    let (url, pool) = fresh_pool().await;
    // One task fills each machine.
    let machines = filled(&pool, "m", 8).await;
    let s = start(&url, "cache", Duration::from_millis(100), 1000);
    wait_until("every machine is filled", DEADLINE, || async {
        count(&pool, "SELECT count(*) FROM tasks WHERE state = 'assigned'").await == 8
    })
    .await;
    // A pass is logged when it ends, after its commits.
    wait_until("the first pass is logged", DEADLINE, || async {
        !passes("cache").is_empty()
    })
    .await;
    let first = passes("cache");
    assert_eq!(
        first[0].num("full_reads"),
        1,
        "the first pass reads every machine: {:?}",
        first[0].fields
    );
    assert_eq!(first[0].num("machines_read"), 8);

    // A task that cannot fit anywhere now.
    let (_, waiting) = JobBuilder::new("waiting")
        .cpu(1000)
        .mem(64 * MI)
        .insert(&pool)
        .await;
    wake(&pool).await;
    wait_until("the waiting task is explained", DEADLINE, || async {
        task_state(&pool, waiting[0]).await.1.is_some()
    })
    .await;
    assert_eq!(task_state(&pool, waiting[0]).await.0, "pending");

    // An attempt ends on m3: the next pass reads m3 alone and places there.
    let seq = log_seq();
    finish_on(&pool, machines[3]).await;
    wait_until("the waiting task is placed", DEADLINE, || async {
        machine_of(&pool, waiting[0]).await.is_some()
    })
    .await;
    assert_eq!(machine_of(&pool, waiting[0]).await, Some(machines[3]));
    let placing = pass_after("cache", seq, "placed").await;
    assert_eq!(
        (placing.num("machines_read"), placing.num("full_reads")),
        (1, 0),
        "the pass read only the machine that changed: {:?}",
        placing.fields
    );

    // A machine added behind the store's back is still seen (its row is stamped).
    let seq = log_seq();
    let added = MachineBuilder::new("m8")
        .cpu(1000)
        .mem(GI)
        .insert(&pool)
        .await;
    let (_, late) = JobBuilder::new("late")
        .cpu(1000)
        .mem(64 * MI)
        .insert(&pool)
        .await;
    wake(&pool).await;
    wait_until("the late task is placed", DEADLINE, || async {
        machine_of(&pool, late[0]).await.is_some()
    })
    .await;
    assert_eq!(machine_of(&pool, late[0]).await, Some(added));
    let placing = pass_after("cache", seq, "placed").await;
    // m8, and m3 once more (its placement's event came after the last read began).
    assert!(
        placing.num("machines_read") <= 2 && placing.num("full_reads") == 0,
        "{:?}",
        placing.fields
    );

    // m5 goes down as its attempt ends: its room is not used.
    sqlx::query("UPDATE machines SET state = 'down' WHERE id = $1")
        .bind(machines[5])
        .execute(&pool)
        .await
        .unwrap();
    finish_on(&pool, machines[5]).await;
    let (_, after_down) = JobBuilder::new("after-down")
        .cpu(1000)
        .mem(64 * MI)
        .insert(&pool)
        .await;
    wake(&pool).await;
    wait_until(
        "the task after the machine went down is explained",
        DEADLINE,
        || async { task_state(&pool, after_down[0]).await.1.is_some() },
    )
    .await;
    assert_eq!(machine_of(&pool, after_down[0]).await, None);

    // m5 comes back: the task goes there.
    sqlx::query("UPDATE machines SET state = 'up' WHERE id = $1")
        .bind(machines[5])
        .execute(&pool)
        .await
        .unwrap();
    wake(&pool).await;
    wait_until(
        "the task is placed on the machine back up",
        DEADLINE,
        || async { machine_of(&pool, after_down[0]).await.is_some() },
    )
    .await;
    assert_eq!(machine_of(&pool, after_down[0]).await, Some(machines[5]));
    s.stop().await;

    // Nothing over-committed through all of it.
    let over = count(
        &pool,
        "SELECT count(*) FROM (
             SELECT m.id FROM machines m JOIN attempts a ON a.machine_id = m.id
             WHERE a.state IN ('assigned', 'starting', 'running')
             GROUP BY m.id HAVING sum(a.cpu_milli) > m.cpu_milli) x",
    )
    .await;
    assert_eq!(over, 0);
}

/// Below `cache_machines` a pass reads every machine, every time (one query
/// instead of the change queries), and still places where room was freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_cell_reads_all_its_machines_each_pass() {
    let (url, pool) = fresh_pool().await;
    let machines = filled(&pool, "s", 3).await;
    let mut config = config(&url, "small", Duration::from_millis(100), 1000);
    config.cache_machines = 100;
    let s = start_config(config);
    wait_until("every machine is filled", DEADLINE, || async {
        count(&pool, "SELECT count(*) FROM tasks WHERE state = 'assigned'").await == 3
    })
    .await;
    let (_, waiting) = JobBuilder::new("waiting")
        .cpu(1000)
        .mem(64 * MI)
        .insert(&pool)
        .await;
    let seq = log_seq();
    finish_on(&pool, machines[1]).await;
    wait_until("the waiting task is placed", DEADLINE, || async {
        machine_of(&pool, waiting[0]).await.is_some()
    })
    .await;
    assert_eq!(machine_of(&pool, waiting[0]).await, Some(machines[1]));
    s.stop().await;
    let after: Vec<Logged> = passes("small")
        .into_iter()
        .filter(|p| p.seq > seq)
        .collect();
    assert!(!after.is_empty());
    for p in &after {
        assert_eq!(
            (p.num("machines_read"), p.num("full_reads")),
            (3, 1),
            "{:?}",
            p.fields
        );
    }
}

/// A commit that lost races on a machine (another writer filled it between the
/// read and the commit) makes the next page read that machine again, and only
/// that one: not every machine, though far more changed since the last read
/// than a quarter of the cell (this pass's own placements).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_race_reads_again_only_the_machine_it_lost_on() {
    let (url, pool) = fresh_pool().await;
    let machines = filled(&pool, "l", 8).await;
    let s = start(&url, "lost", Duration::from_millis(100), 1000);
    wait_until("every machine is filled", DEADLINE, || async {
        count(&pool, "SELECT count(*) FROM tasks WHERE state = 'assigned'").await == 8
    })
    .await;
    // Room on l1 and l2 only, seen by a pass.
    let seq = log_seq();
    finish_on(&pool, machines[1]).await;
    finish_on(&pool, machines[2]).await;
    wait_until("a pass read the freed machines", DEADLINE, || async {
        passes("lost").iter().any(|p| p.seq > seq)
    })
    .await;

    // Another writer takes l1's room away and holds its row until the pass
    // is waiting for it.
    let mut other = borg_store::begin(&pool).await.unwrap();
    sqlx::query("UPDATE machines SET cpu_milli = 0 WHERE id = $1")
        .bind(machines[1])
        .execute(&mut *other)
        .await
        .unwrap();
    // 200 small tasks: a first page of 128 placed on l1 and l2 (nothing else
    // has room), then a second page.
    let seq = log_seq();
    let (job, _) = JobBuilder::new("small")
        .replicas(200)
        .cpu(10)
        .mem(MI)
        .insert(&pool)
        .await;
    wake(&pool).await;
    wait_until("the commit waits for l1's row", DEADLINE, || async {
        count(&pool, "SELECT count(*) FROM pg_locks WHERE NOT granted").await > 0
    })
    .await;
    other.commit().await.unwrap();

    let pass = pass_after("lost", seq, "lost_races").await;
    assert!(
        pass.num("batches") >= 2,
        "a page after the lost race: {:?}",
        pass.fields
    );
    assert_eq!(
        pass.num("full_reads"),
        0,
        "the page after the lost race read only l1: {:?}",
        pass.fields
    );
    // What changed when the pass began (l1, l2 at most), and l1 again.
    assert!(pass.num("machines_read") <= 3, "{:?}", pass.fields);
    // Every task ends on l2, which has room for 100 of them: nothing on l1.
    // How many of the job's attempts are on a machine.
    let on = |machine: MachineId| {
        let sql = format!(
            "SELECT count(*) FROM attempts a JOIN tasks t ON t.id = a.task_id
             WHERE t.job_id = '{job}' AND a.machine_id = '{machine}'"
        );
        let pool = pool.clone();
        async move { count(&pool, &sql).await }
    };
    wait_until("l2 is full", DEADLINE, || async {
        on(machines[2]).await == 100
    })
    .await;
    s.stop().await;
    assert_eq!(on(machines[1]).await, 0);
}
