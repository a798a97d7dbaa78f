//! History retention against a real Postgres: collection deletes only finished
//! jobs past the retention, in bounded steps, as the leader only; and a
//! finished job's name is free for a new, distinct job at once.

mod common;

use borg_shared::{JobId, JobSpec};
use borg_store::{
    Collected, EventCursor, EventPage, KillOutcome, Store, StoreError, StoredEvent, SubmitOutcome,
};
use common::{machine, store};
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);

async fn lead(store: &Store) -> i64 {
    store
        .acquire_lease("test", HOUR)
        .await
        .unwrap()
        .expect("nobody else leads")
}

async fn seed(store: &Store, name: &str, tasks: i32, machine: &str) -> JobId {
    let mut conn = store.pool().acquire().await.unwrap();
    let spec = serde_json::json!({"name": name, "task": {"command": ["/bin/true"]}});
    borg_store::fixtures::seed_finished_job(&mut conn, name, tasks, &spec, machine)
        .await
        .unwrap();
    sqlx::query_scalar("SELECT id FROM jobs WHERE name = $1")
        .bind(name)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Rows of a job in every table that holds part of its history.
async fn rows_of(store: &Store, job: JobId) -> [i64; 6] {
    let mut out = [0; 6];
    let queries = [
        "SELECT count(*) FROM jobs WHERE id = $1",
        "SELECT count(*) FROM tasks WHERE job_id = $1",
        "SELECT count(*) FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE t.job_id = $1",
        "SELECT count(*) FROM events WHERE job_id = $1",
        "SELECT count(*) FROM job_counts WHERE job_id = $1",
        "SELECT count(*) FROM job_versions WHERE job_id = $1",
    ];
    for (i, q) in queries.iter().enumerate() {
        out[i] = sqlx::query_scalar(q)
            .bind(job)
            .fetch_one(store.pool())
            .await
            .unwrap();
    }
    out
}

/// Read the stream from `after` until an event matches `until`. Events show
/// only once every older transaction of the server ended (other tests' too),
/// so the reader waits for them as a client would.
async fn read_until(
    store: &Store,
    after: EventCursor,
    until: impl Fn(&StoredEvent) -> bool,
) -> EventPage {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut all = EventPage {
        events: vec![],
        next: after,
    };
    while !all.events.iter().any(&until) {
        assert!(
            std::time::Instant::now() < deadline,
            "never came: {:?}",
            all.events
        );
        let page = store.events_after(all.next, 1000).await.unwrap();
        all.next = page.next;
        all.events.extend(page.events);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    all
}

/// Make a job look finished `ago`: the test does not wait hours.
async fn finished_ago(store: &Store, job: JobId, ago: Duration) {
    sqlx::query("UPDATE jobs SET finished_at = now() - make_interval(secs => $2) WHERE id = $1")
        .bind(job)
        .bind(ago.as_secs_f64())
        .execute(store.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn collection_deletes_only_finished_jobs_past_retention_in_bounded_steps() {
    let store = store().await;
    let epoch = lead(&store).await;
    let m = machine(&store, "m1").await.to_string();
    let old = seed(&store, "old", 20, &m).await;
    let recent = seed(&store, "recent", 3, &m).await;
    finished_ago(&store, old, 3 * HOUR).await;
    finished_ago(&store, recent, HOUR / 2).await;
    // A killed service whose attempt is still stopping stays whatever its age.
    let stopping = seed(&store, "stopping", 1, &m).await;
    sqlx::query("UPDATE job_counts SET succeeded = 0, running = 1 WHERE job_id = $1")
        .bind(stopping)
        .execute(store.pool())
        .await
        .unwrap();
    finished_ago(&store, stopping, 3 * HOUR).await;
    // So does one whose tasks all ended while a superseded attempt (a surging
    // rollout's old copy, no task's any more) is still stopping.
    let surged = seed(&store, "surged", 1, &m).await;
    sqlx::query(
        "UPDATE attempts a SET state = 'running', finished_at = NULL, superseded = true
         FROM tasks t WHERE t.id = a.task_id AND t.job_id = $1",
    )
    .bind(surged)
    .execute(store.pool())
    .await
    .unwrap();
    finished_ago(&store, surged, 3 * HOUR).await;
    let recent_before = rows_of(&store, recent).await;
    let stopping_before = rows_of(&store, stopping).await;
    let surged_before = rows_of(&store, surged).await;
    assert_eq!(
        rows_of(&store, old).await,
        [1, 20, 20, 20 * 5 + 3, 1, 0],
        "the fixture's rows"
    );

    let max_rows = 7;
    let mut steps = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let step = store
            .collect_history(epoch, 2 * HOUR, max_rows)
            .await
            .unwrap();
        if step.is_empty() {
            break;
        }
        assert!(step.events <= max_rows as u64 && step.tasks <= max_rows as u64);
        steps.push(step);
        assert!(
            std::time::Instant::now() < deadline,
            "never done: {steps:?}"
        );
    }
    // 103 events in 7s, then 20 tasks in 7s, then the job: 15 + 3 + 1 steps.
    assert_eq!(steps.len(), 19, "{steps:?}");
    let total = steps.iter().fold(Collected::default(), |a, s| Collected {
        jobs: a.jobs + s.jobs,
        tasks: a.tasks + s.tasks,
        events: a.events + s.events,
    });
    assert_eq!(
        total,
        Collected {
            jobs: 1,
            tasks: 20,
            events: 103
        }
    );
    assert_eq!(rows_of(&store, old).await, [0; 6]);
    assert_eq!(rows_of(&store, recent).await, recent_before);
    assert_eq!(rows_of(&store, stopping).await, stopping_before);
    assert_eq!(rows_of(&store, surged).await, surged_before);
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(attempts, 5, "only the kept jobs' attempts are left");
}

#[tokio::test]
async fn a_deposed_leader_collects_nothing() {
    let store = store().await;
    let epoch = lead(&store).await;
    let m = machine(&store, "m1").await.to_string();
    let old = seed(&store, "old", 2, &m).await;
    finished_ago(&store, old, 3 * HOUR).await;
    // Another replica takes over.
    sqlx::query("UPDATE leader_lease SET epoch = epoch + 1, holder = 'other'")
        .execute(store.pool())
        .await
        .unwrap();
    let err = store
        .collect_history(epoch, HOUR, 1000)
        .await
        .expect_err("an old epoch is refused");
    assert!(matches!(err, StoreError::Deposed { .. }), "{err}");
    assert_eq!(rows_of(&store, old).await, [1, 2, 2, 13, 1, 0]);
}

#[tokio::test]
async fn a_finished_name_is_reused_at_once_by_a_distinct_job() {
    let store = store().await;
    let epoch = lead(&store).await;
    let spec = JobSpec::from_json(br#"{"name": "x", "task": {"command": ["/bin/true"]}}"#).unwrap();
    let SubmitOutcome::Created(first) = store.submit(&spec).await.unwrap() else {
        panic!("first submit");
    };
    assert!(matches!(
        store.kill_job("x", None, "test").await.unwrap(),
        KillOutcome::Killed(_)
    ));
    let before = read_until(&store, EventCursor::default(), |e| {
        e.job_id == Some(first.id) && e.kind == "job" && e.to_state.as_deref() == Some("killed")
    })
    .await;
    // The same name and the very same spec: a new job, not the finished one.
    let SubmitOutcome::Created(second) = store.submit(&spec).await.unwrap() else {
        panic!("a finished name is free");
    };
    assert_ne!(first.id, second.id);
    let shown = store
        .job_detail("x", borg_store::TaskPage::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shown.id, second.id, "the name stands for the newest job");
    assert_eq!(shown.state, borg_shared::JobState::Pending);
    let events = shown.events.unwrap();
    assert!(!events.is_empty());
    assert!(
        events
            .iter()
            .all(|e| e.to == borg_shared::TaskState::Pending),
        "only the new job's events: {events:?}"
    );
    // The stream goes on from where it was: the new job's events, none again.
    let after = read_until(&store, before.next, |e| e.job_id == Some(second.id)).await;
    assert!(
        after.events.iter().all(|e| e.job_id == Some(second.id)),
        "{:?}",
        after.events
    );

    // Collecting the first job leaves the second and the stream alone.
    let first_id = first.id;
    finished_ago(&store, first_id, 3 * HOUR).await;
    while !store
        .collect_history(epoch, HOUR, 1000)
        .await
        .unwrap()
        .is_empty()
    {}
    assert_eq!(rows_of(&store, first_id).await, [0; 6]);
    let second_rows = rows_of(&store, second.id).await;
    assert_eq!(second_rows[..2], [1, 1]);
    store.kill_job("x", None, "test").await.unwrap();
    let resumed = read_until(&store, after.next, |e| {
        e.job_id == Some(second.id) && e.kind == "job" && e.to_state.as_deref() == Some("killed")
    })
    .await;
    assert!(
        resumed.events.iter().all(|e| e.job_id == Some(second.id)),
        "{:?}",
        resumed.events
    );
}
