//! Nothing is lost when the master goes away: tasks keep running on their
//! borglet while no master polls, and a new master on the same database picks
//! them up without starting second copies. The components run in this process
//! from their libraries (real Postgres, real HTTP, real task processes).

use borg_shared::wire::JobView;
use devpg::wait::wait_for;
use std::net::SocketAddr;
/// The join token of the test cell's master and borglets.
const JOIN_TOKEN: &str = "test-join-token";
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The admin token the test's master is bootstrapped with, sent on every call.
const ADMIN_TOKEN: &str = "borg_test-admin-0123456789abcdef";

fn start_master(listener: TcpListener, database_url: &str) -> (CancellationToken, JoinHandle<()>) {
    let config = borgmaster::Config {
        listen: listener.local_addr().unwrap(),
        database_url: database_url.to_string(),
        database_url_file: None,
        agents: borgmaster::agents::AgentConfig {
            join_token_file: None,
            join_token: Some(JOIN_TOKEN.into()),
        },
        poll_interval: Duration::from_millis(200),
        leader: Default::default(),
        auth: borgmaster::auth::AuthConfig {
            bootstrap_token: Some(ADMIN_TOKEN.into()),
            ..Default::default()
        },
        limits: Default::default(),
        tls: Default::default(),
        log: Default::default(),
    };
    let token = CancellationToken::new();
    let handle = tokio::spawn({
        let token = token.clone();
        async move { borgmaster::run(listener, config, token).await.unwrap() }
    });
    (token, handle)
}

async fn job(http: &reqwest::Client, master: &str, name: &str) -> Option<JobView> {
    http.get(format!("{master}/v1/jobs/{name}"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

fn pid_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_outlive_the_master_and_a_new_master_adopts_them() {
    let database_url = devpg::testing::fresh_database(&borg_store::MIGRATOR)
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let master = format!("http://{addr}");
    let (master_a, master_a_done) = start_master(listener, &database_url);

    let shutdown = CancellationToken::new();
    let scheduler = borgscheduler::Config {
        database_url: database_url.clone(),
        database_url_file: None,
        interval: Duration::from_millis(200),
        batch_size: 100,
        name: "test-scheduler".into(),
        listen: None,
        scoring: Default::default(),
        recheck_after: Duration::from_secs(30),
        whole_queue: false,
        sample: 128,
        commit_streams: 2,
        cache_machines: 100,
        log: Default::default(),
    };
    tokio::spawn(borgscheduler::run(scheduler, shutdown.clone()));
    // Reachable by tasks, which a root borglet runs as `nobody`.
    let sandbox = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir()
        .unwrap();
    let borglet_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token = sandbox.path().join("join.token");
    std::fs::write(&token, JOIN_TOKEN).unwrap();
    let borglet = <borglet::Config as clap::Parser>::try_parse_from([
        "borglet",
        "--join-token-file",
        token.to_str().unwrap(),
        "--name",
        "m1",
        "--master",
        &master,
        "--data-dir",
        sandbox.path().to_str().unwrap(),
        "--on-exit",
        "stop",
        "--shim-exe",
        env!("CARGO_BIN_EXE_jobctl"),
        "--cpu",
        "2",
        "--memory",
        "1Gi",
        "--disk",
        "1Gi",
    ])
    .unwrap();
    let borglet_done = tokio::spawn(borglet::run(borglet_listener, borglet, shutdown.clone()));

    let http = {
        let mut headers = reqwest::header::HeaderMap::new();
        let bearer = format!("Bearer {ADMIN_TOKEN}").parse().unwrap();
        headers.insert(reqwest::header::AUTHORIZATION, bearer);
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap()
    };
    let spec = serde_json::json!({"name": "svc", "kind": "service",
        "task": {"command": ["/bin/sleep", "1000"], "kill_grace": "1s"}});
    wait_for(
        "the master to accept the job",
        Duration::from_secs(30),
        || {
            let (http, master, spec) = (&http, &master, &spec);
            async move {
                let resp = http
                    .post(format!("{master}/v1/jobs"))
                    .json(spec)
                    .send()
                    .await
                    .ok()?;
                resp.status().is_success().then_some(())
            }
        },
    )
    .await;
    let running = |http: reqwest::Client, master: String| async move {
        let job = job(&http, &master, "svc").await?;
        let task = job.tasks?.into_iter().next()?;
        (task.state == borg_shared::TaskState::Running).then_some((task.pid?, task.attempt?))
    };
    let (pid, attempt) = wait_for("svc running", Duration::from_secs(30), || {
        running(http.clone(), master.clone())
    })
    .await;
    assert!(pid_alive(pid));

    // The master goes away; the task keeps running.
    master_a.cancel();
    master_a_done.await.unwrap();
    assert!(pid_alive(pid), "the task must outlive the master");

    // A new master on the same address and database adopts it: same attempt, same pid.
    let listener = TcpListener::bind(addr).await.unwrap();
    let (master_b, master_b_done) = start_master(listener, &database_url);
    let (pid_b, attempt_b) = wait_for(
        "svc seen by the new master",
        Duration::from_secs(30),
        || running(http.clone(), master.clone()),
    )
    .await;
    assert_eq!(
        (pid_b, attempt_b),
        (pid, attempt),
        "no second copy may start"
    );
    // One attempt, sent to its borglet once, across both masters.
    let starts: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE to_state = 'starting'")
        .fetch_one(&sqlx::PgPool::connect(&database_url).await.unwrap())
        .await
        .unwrap();
    assert_eq!(starts, 1, "the attempt was sent to start exactly once");

    let resp = http
        .post(format!("{master}/v1/jobs/svc/kill"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    wait_for(
        "the task process to end",
        Duration::from_secs(30),
        || async { (!pid_alive(pid)).then_some(()) },
    )
    .await;

    master_b.cancel();
    shutdown.cancel();
    master_b_done.await.unwrap();
    borglet_done.await.unwrap().unwrap();
}
