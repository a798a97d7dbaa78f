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
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A durable Postgres of the test's own, with the schema: its dir, data dir, server and URL.
async fn own_postgres() -> (tempfile::TempDir, PathBuf, PgServer, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pg");
    let server = tokio::task::spawn_blocking({
        let data = data.clone();
        move || {
            let opts = Options {
                durable: true,
                max_connections: 100,
                ..Options::default()
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
    (dir, data, server, url)
}

async fn pg(data: &Path, args: Vec<String>) {
    let data = data.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        pg_ctl(&data, &args).unwrap()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn postgres_restarted_mid_stream_loses_no_accepted_job_and_runs_nothing_twice() {
    let _serial = SERIAL.lock().await;
    let n: usize = std::env::var("BORG_PG_RESTART_SUBMITS")
        .ok()
        .map(|v| v.parse().expect("BORG_PG_RESTART_SUBMITS must be a number"))
        .unwrap_or(200);
    let (_dir, data, server, url) = own_postgres().await;
    let cell = Cell::start_on(url.clone(), Vec::new()).await;
    let http = cell::http_client();

    let mut accepted = Vec::new();
    let mut unavailable = 0;
    for i in 0..n {
        if i == n / 4 {
            let args = ["restart", "-m", "immediate", "-w", "-s"];
            pg(&data, args.map(String::from).to_vec()).await;
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

async fn health(http: &reqwest::Client, cell: &Cell) -> Option<(u16, Value)> {
    let resp = http
        .get(format!("{}/healthz", cell.master_url()))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    Some((resp.status().as_u16(), resp.json().await.ok()?))
}

/// An outage longer than `down_after` is the store's silence, not the
/// machines': the leader (holding its lease through it) marks none down.
#[tokio::test]
async fn a_postgres_outage_longer_than_down_after_marks_no_machine_down() {
    let _serial = SERIAL.lock().await;
    let (_dir, data, server, url) = own_postgres().await;
    let flags = [
        "--poll-interval",
        "200ms",
        "--down-after",
        "1s",
        "--lease-ttl",
        "20s",
    ];
    let cell = Cell::start_on(url.clone(), flags.map(String::from).to_vec()).await;
    let http = cell::http_client();
    let (_, before) = wait_for("a leader", Duration::from_secs(30), || async {
        health(&http, &cell)
            .await
            .filter(|(_, v)| v["role"] == "leader")
    })
    .await;
    let spec = json!({"name": "svc", "kind": "service", "replicas": 3, "task": {
        "command": ["/bin/sleep", "600"], "resources": {"cpu": "10m", "memory": "4Mi"}}});
    assert_eq!(cell.post("/v1/jobs", spec).await.0, 201);
    wait_for("the job running", Duration::from_secs(30), || async {
        let v = cell.get("/v1/jobs/svc").await?;
        (v["task_counts"]["running"] == 3).then_some(())
    })
    .await;

    let port = url
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    pg(
        &data,
        ["stop", "-m", "immediate", "-w", "-s"]
            .map(String::from)
            .to_vec(),
    )
    .await;
    let stopped = Instant::now();
    wait_for("the master degraded", Duration::from_secs(10), || async {
        health(&http, &cell).await.filter(|(s, _)| *s == 503)
    })
    .await;
    wait_for(
        "the outage to outlast down_after twice",
        Duration::from_secs(30),
        || async { (stopped.elapsed() > Duration::from_secs(3)).then_some(()) },
    )
    .await;
    let o = format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''");
    let start = ["start", "-w", "-s", "-l", "/dev/null", "-o", &o];
    pg(&data, start.map(String::from).to_vec()).await;
    let (_, after) = wait_for("the master healthy", Duration::from_secs(30), || async {
        health(&http, &cell).await.filter(|(s, _)| *s == 200)
    })
    .await;
    assert_eq!(
        after["epoch"], before["epoch"],
        "the leader kept its lease through the outage"
    );
    // Long enough for the detector to act on stale silence (it looks every 50 ms)
    // and for every machine to answer syncs again.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let recovered = Instant::now();
    wait_for(
        "machines heard after the outage",
        Duration::from_secs(30),
        || async {
            let heard: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM machines WHERE last_heard > now() - interval '1 second'",
            )
            .fetch_one(&pool)
            .await
            .ok()?;
            (heard == 3 && recovered.elapsed() > Duration::from_secs(1)).then_some(())
        },
    )
    .await;
    let downs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE kind = 'machine' AND to_state = 'down'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(downs, 0, "machines marked down for the store's outage");
    let job = cell.get("/v1/jobs/svc").await.unwrap();
    assert_eq!(job["task_counts"]["running"], 3, "{job}");
    pool.close().await;
    drop(cell);
    tokio::task::spawn_blocking(move || server.stop().unwrap())
        .await
        .unwrap();
}
