//! Ids against a real Postgres: the ids a statement makes (tasks at submit and
//! at scale-up) are UUID v7 like those made in Rust, carrying their creation
//! time in their leading bits, so rows made later sort after earlier ones.

mod common;

use borg_shared::{JobId, JobSpec, TaskId};
use borg_store::{ScaleOutcome, Store, SubmitOutcome};
use common::store;
use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The Unix time in milliseconds a UUID v7 carries in its first 48 bits.
fn ms_of(id: Uuid) -> u64 {
    assert_eq!(id.get_version_num(), 7, "{id} is not a UUID v7");
    assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
    let (secs, nanos) = id.get_timestamp().expect("a v7 id has a time").to_unix();
    secs * 1000 + u64::from(nanos) / 1_000_000
}

async fn tasks_of(store: &Store, job: JobId) -> Vec<(i32, TaskId)> {
    sqlx::query_as("SELECT index, id FROM tasks WHERE job_id = $1 ORDER BY index")
        .bind(job)
        .fetch_all(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn ids_made_in_a_statement_are_time_ordered_like_those_made_in_rust() {
    let store = store().await;
    let spec: JobSpec = serde_json::from_value(serde_json::json!({
        "name": "web", "kind": "service", "replicas": 3,
        "task": {"command": ["/bin/sleep", "100"]}
    }))
    .unwrap();

    let before = unix_ms();
    let SubmitOutcome::Created(job) = store.submit(&spec).await.unwrap() else {
        panic!("the job is new")
    };
    let submitted = unix_ms();
    let job_ms = ms_of(job.id.0);
    assert!((before..=submitted).contains(&job_ms), "job id {}", job.id);
    let first = tasks_of(&store, job.id).await;
    assert_eq!(first.len(), 3);
    for (index, id) in &first {
        let ms = ms_of(id.0);
        assert!(
            (job_ms..=submitted).contains(&ms),
            "task {index}'s id {id} was not made at submit"
        );
    }

    // Scaled up in a later millisecond: the new tasks' ids sort after every earlier one.
    while unix_ms() <= submitted {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let scaled = unix_ms();
    assert!(matches!(
        store.scale_job("web", None, 5).await.unwrap(),
        ScaleOutcome::Scaled(_)
    ));
    let after = unix_ms();
    let all = tasks_of(&store, job.id).await;
    assert_eq!(all.len(), 5);
    let newest_first = first.iter().map(|(_, id)| *id).max().unwrap();
    for (index, id) in &all[3..] {
        assert!(
            (scaled..=after).contains(&ms_of(id.0)),
            "task {index}: {id}"
        );
        assert!(*id > newest_first, "task {index}'s id {id} sorts too early");
    }
}
