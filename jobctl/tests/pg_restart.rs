//! Postgres restarted underneath a running cell (`pg_ctl restart -m immediate`)
//! in the middle of a stream of submissions: the cell's processes (master,
//! scheduler, 3 borglets) keep running and resume by themselves, the client
//! retries what got 503 or no answer (same name and spec: safe), and every
//! accepted job exists exactly once and ran its task exactly once. The cell
//! has a durable Postgres of its own (the test harness's shared one is not
//! restarted under other tests).

#[path = "no_loss/cell.rs"]
mod cell;

use cell::{wait_for, Cell};
use devpg::{pg_ctl, Options, PgServer};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn postgres_restarted_mid_stream_loses_no_accepted_job_and_runs_nothing_twice() {
    let n: usize = std::env::var("BORG_PG_RESTART_SUBMITS")
        .ok()
        .map(|v| v.parse().expect("BORG_PG_RESTART_SUBMITS must be a number"))
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pg");
    let server = tokio::task::spawn_blocking({
        let data = data.clone();
        move || {
            let opts = Options {
                durable: true,
                max_connections: 100,
            };
            PgServer::start(&data, &opts).unwrap()
        }
    })
    .await
    .unwrap();
    let url = server.url("postgres");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    borg_store::MIGRATOR.run(&pool).await.unwrap();
    pool.close().await;
    let cell = Cell::start_on(url.clone(), Vec::new()).await;
    let http = reqwest::Client::new();

    let mut accepted = Vec::new();
    let mut unavailable = 0;
    for i in 0..n {
        if i == n / 4 {
            let data = data.clone();
            tokio::task::spawn_blocking(move || {
                pg_ctl(&data, &["restart", "-m", "immediate", "-w", "-s"]).unwrap()
            })
            .await
            .unwrap();
        }
        let name = format!("p{i}");
        let spec = json!({"name": name, "task": {"command": ["/bin/true"],
            "resources": {"cpu": "10m", "memory": "4Mi"}}});
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let resp = http
                .post(format!("{}/v1/jobs", cell.master_url()))
                .timeout(Duration::from_secs(15))
                .json(&spec)
                .send()
                .await;
            match resp.map(|r| r.status().as_u16()) {
                Ok(201) | Ok(200) => break,
                Ok(503) | Err(_) => unavailable += 1,
                Ok(other) => panic!("{name}: {other}"),
            }
            assert!(Instant::now() < deadline, "{name} never accepted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        accepted.push(name);
    }
    eprintln!("{n} jobs accepted; {unavailable} answers were 503 or none");

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    wait_for(
        "every accepted job succeeded",
        Duration::from_secs(180),
        || async {
            let done: i64 =
                sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'succeeded'")
                    .fetch_one(&pool)
                    .await
                    .ok()?;
            (done as usize >= n).then_some(())
        },
    )
    .await;
    let names: Vec<(String, i64)> =
        sqlx::query_as("SELECT name, count(*) FROM jobs GROUP BY name ORDER BY name")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(names.len(), n, "jobs in the store");
    assert!(names.iter().all(|(_, c)| *c == 1), "a name twice");
    let missing: Vec<&String> = accepted
        .iter()
        .filter(|a| !names.iter().any(|(n, _)| n == *a))
        .collect();
    assert!(missing.is_empty(), "accepted but missing: {missing:?}");
    let odd: Vec<(String, i64)> = sqlx::query_as(
        "SELECT j.name, count(a.id) FROM jobs j JOIN tasks t ON t.job_id = j.id
         LEFT JOIN attempts a ON a.task_id = t.id
         GROUP BY j.name HAVING count(a.id) <> 1 OR bool_or(a.state <> 'succeeded')",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        odd.is_empty(),
        "tasks with other than one succeeded attempt: {odd:?}"
    );
    pool.close().await;
    drop(cell);
    // Stops the restarted postmaster (not our child) too.
    tokio::task::spawn_blocking(move || server.stop().unwrap())
        .await
        .unwrap();
}
