//! Fleet mode: one process (`jobctl component borglet --fleet N`) serves N
//! simulated borglets, each registering with the join token and syncing
//! through the real borglet sync handler; a real master and scheduler
//! (separate processes, real Postgres) place and run jobs on them. The
//! measurement at 1,000 borglets is `jobctl bench --only fleet`.

use devpg::ports::free_port;
use devpg::wait::wait_for;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The admin token the test's master is bootstrapped with, sent on every call.
const ADMIN_TOKEN: &str = "borg_test-admin-0123456789abcdef";
const JOIN_TOKEN: &str = "fleet-join-token";
const JOBCTL: &str = env!("CARGO_BIN_EXE_jobctl");
const BORGLETS: usize = 20;

struct Kids(Vec<Child>);

impl Drop for Kids {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn get(http: &reqwest::Client, url: &str) -> Option<Value> {
    http.get(url).send().await.ok()?.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_simulated_borglets_registers_runs_finishes_and_stops_tasks() {
    let database_url = devpg::testing::fresh_database(&borg_store::MIGRATOR)
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let (port, fleet_port) = (free_port(), free_port());
    let master = format!("http://127.0.0.1:{port}");
    let spawn = |component: &str, args: Vec<String>| {
        Command::new(JOBCTL)
            .arg("component")
            .arg(component)
            .args(args)
            .env("RUST_LOG", "warn")
            .env("BORG_BOOTSTRAP_TOKEN", ADMIN_TOKEN)
            .env("DATABASE_URL", &database_url)
            .env("BORG_JOIN_TOKEN", JOIN_TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let master_proc = spawn(
        "borgmaster",
        vec!["--listen".into(), format!("127.0.0.1:{port}")],
    );
    let scheduler = spawn("borgscheduler", vec![]);
    let fleet = spawn(
        "borglet",
        [
            "--fleet",
            &BORGLETS.to_string(),
            "--name",
            "f",
            "--master",
            &master,
            "--listen",
            &format!("127.0.0.1:{fleet_port}"),
            "--data-dir",
            &data.path().display().to_string(),
            "--cpu",
            "1",
            "--memory",
            "1Gi",
            "--fleet-task-runs-for",
            "1s",
        ]
        .map(String::from)
        .to_vec(),
    );
    let _kids = Kids(vec![master_proc, scheduler, fleet]);
    let http = {
        let mut headers = reqwest::header::HeaderMap::new();
        let bearer = format!("Bearer {ADMIN_TOKEN}").parse().unwrap();
        headers.insert(reqwest::header::AUTHORIZATION, bearer);
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap()
    };

    // Every simulated borglet joined with the join token, each under its own name and path.
    let machines = wait_for(
        "every simulated borglet up",
        Duration::from_secs(120),
        || async {
            let v = get(&http, &format!("{master}/v1/machines?limit=1000")).await?;
            let list = v["machines"].as_array()?.clone();
            let up = list.iter().filter(|m| m["state"] == "up").count();
            (up == BORGLETS).then_some(list)
        },
    )
    .await;
    for m in &machines {
        let name = m["name"].as_str().unwrap();
        let address = m["address"].as_str().unwrap();
        assert!(address.ends_with(&format!("/b/{name}")), "{m}");
    }

    // A batch job: every task runs on a simulated borglet and exits 0 after 1 s.
    let batch = json!({"name": "batch", "kind": "batch", "replicas": 2 * BORGLETS, "task": {
        "command": ["/bin/true"], "resources": {"cpu": "10m", "memory": "4Mi"}}});
    let r = http
        .post(format!("{master}/v1/jobs"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let job = wait_for(
        "the batch job to succeed",
        Duration::from_secs(120),
        || async {
            let v = get(&http, &format!("{master}/v1/jobs/batch")).await?;
            assert_ne!(v["state"], "failed", "{v}");
            (v["state"] == "succeeded").then_some(v)
        },
    )
    .await;
    assert_eq!(job["task_counts"]["succeeded"], 2 * BORGLETS, "{job}");

    // A service restarts in place on its simulated borglet; a kill stops it there.
    let service = json!({"name": "svc", "kind": "service", "replicas": BORGLETS, "task": {
        "command": ["/bin/true"], "resources": {"cpu": "10m", "memory": "4Mi"}}});
    let r = http
        .post(format!("{master}/v1/jobs"))
        .json(&service)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    wait_for(
        "every service task running",
        Duration::from_secs(120),
        || async {
            let v = get(&http, &format!("{master}/v1/jobs/svc")).await?;
            (v["task_counts"]["running"] == BORGLETS).then_some(())
        },
    )
    .await;
    let r = http
        .post(format!("{master}/v1/jobs/svc/kill"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // Each stop reaches its simulated borglet, whose task dies of the SIGTERM.
    let job = wait_for(
        "every service task killed",
        Duration::from_secs(120),
        || async {
            let v = get(&http, &format!("{master}/v1/jobs/svc")).await?;
            (v["task_counts"]["killed"] == BORGLETS).then_some(v)
        },
    )
    .await;
    assert_eq!(job["state"], "killed", "{job}");
    for t in job["tasks"].as_array().unwrap() {
        assert_eq!(t["signal"], 15, "{t}");
    }
}
