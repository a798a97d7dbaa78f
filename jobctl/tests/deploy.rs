//! The systemd units of `examples/deploy/` run a cell as they are: each
//! component is started the way its unit starts it (its `ExecStart` argv, its
//! environment file), with only the host-specific values replaced (addresses,
//! database URL, data dir, name). Two master replicas, a scheduler and two
//! borglets, as separate processes (not through `jobctl dev`): jobs run, and
//! after kill -9 of the leader the other replica leads and runs new work.

use devpg::ports::free_port;
use devpg::wait::wait_for;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const JOBCTL: &str = env!("CARGO_BIN_EXE_jobctl");

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/deploy")
}

/// The unit's `ExecStart`: the binary's name and its arguments.
fn exec_start(unit: &str) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(deploy_dir().join(unit)).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("{unit} has no ExecStart"));
    let mut words = line.split_whitespace();
    let bin = words.next().unwrap();
    let name = Path::new(bin).file_name().unwrap().to_str().unwrap();
    (name.to_string(), words.map(String::from).collect())
}

/// `KEY=VALUE` lines of an environment file.
fn env_file(name: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(deploy_dir().join(name)).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{name}: {l}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

struct Procs {
    dir: tempfile::TempDir,
    children: Vec<(String, Child)>,
}

impl Procs {
    /// Start `unit` as systemd would, its env file's values with `host` replacing
    /// the host-specific ones (each must be in the file, commented or not).
    fn start(&mut self, label: &str, unit: &str, env: &str, host: &[(&str, String)]) {
        let (bin, args) = exec_start(unit);
        let mut vars = env_file(env);
        let text = std::fs::read_to_string(deploy_dir().join(env)).unwrap();
        for (k, v) in host {
            assert!(text.contains(&format!("{k}=")), "{env} does not name {k}");
            vars.insert(k.to_string(), v.clone());
        }
        let log = std::fs::File::create(self.dir.path().join(format!("{label}.log"))).unwrap();
        let mut cmd = Command::new(JOBCTL);
        cmd.arg("component").arg(&bin).args(&args);
        for (k, _) in std::env::vars() {
            if k.starts_with("BORG") || k == "DATABASE_URL" || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.envs(&vars)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.children
            .push((label.to_string(), cmd.spawn().unwrap()));
    }

    fn kill9(&mut self, label: &str) {
        let i = self.children.iter().position(|(l, _)| l == label).unwrap();
        let (_, mut child) = self.children.remove(i);
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        // Tasks end when their flag file goes (the units keep tasks on borglet exit).
        let _ = std::fs::remove_file(self.dir.path().join("alive"));
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn get(http: &reqwest::Client, url: &str) -> Option<Value> {
    let resp = http
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    resp.json().await.ok()
}

#[tokio::test]
async fn the_deploy_units_run_a_cell_of_replicas_that_survives_killing_the_leader() {
    let database_url = devpg::testing::fresh_database(&borg_store::MIGRATOR)
        .await
        .unwrap();
    let mut p = Procs {
        dir: tempfile::tempdir().unwrap(),
        children: Vec::new(),
    };
    let alive = p.dir.path().join("alive");
    std::fs::write(&alive, b"").unwrap();
    // The secrets are files, as the units name them (never argv).
    let url_file = p.dir.path().join("database-url");
    std::fs::write(&url_file, &database_url).unwrap();
    let token_file = p.dir.path().join("join.token");
    std::fs::write(&token_file, "deploy-test-join-token\n").unwrap();
    let url_file = url_file.display().to_string();
    let token_file = token_file.display().to_string();
    // The operator's admin token file, as the env file names it.
    let admin = "borg_deploy-admin-0123456789abcdef";
    let admin_file = p.dir.path().join("admin.token");
    std::fs::write(&admin_file, format!("{admin}\n")).unwrap();
    let masters: Vec<(String, String)> = (1..=2)
        .map(|n| (format!("master-{n}"), format!("127.0.0.1:{}", free_port())))
        .collect();
    for (label, addr) in &masters {
        let host = [
            ("BORG_LISTEN", addr.clone()),
            ("BORG_DATABASE_URL_FILE", url_file.clone()),
            ("BORG_JOIN_TOKEN_FILE", token_file.clone()),
            (
                "BORG_BOOTSTRAP_TOKEN_FILE",
                admin_file.display().to_string(),
            ),
        ];
        p.start(label, "borgmaster.service", "borgmaster.env", &host);
    }
    let host = [("BORG_DATABASE_URL_FILE", url_file.clone())];
    p.start(
        "scheduler",
        "borgscheduler.service",
        "borgscheduler.env",
        &host,
    );
    for n in 1..=2 {
        let port = free_port();
        let data = p.dir.path().join(format!("borglet-{n}"));
        let host = [
            ("BORGLET_LISTEN", format!("127.0.0.1:{port}")),
            ("BORGLET_ADVERTISE", format!("http://127.0.0.1:{port}")),
            ("BORGLET_NAME", format!("m{n}")),
            ("BORG_MASTER", format!("http://{}", masters[n - 1].1)),
            ("BORGLET_DATA_DIR", data.display().to_string()),
            ("BORG_JOIN_TOKEN_FILE", token_file.clone()),
        ];
        p.start(
            &format!("borglet-{n}"),
            "borglet.service",
            "borglet.env",
            &host,
        );
    }
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {admin}").parse().unwrap();
    headers.insert(reqwest::header::AUTHORIZATION, bearer);
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let urls: Vec<String> = masters.iter().map(|(_, a)| format!("http://{a}")).collect();
    wait_for("2 machines up", Duration::from_secs(60), || async {
        let v = get(&http, &format!("{}/v1/machines", urls[0])).await?;
        let up = v["machines"]
            .as_array()?
            .iter()
            .filter(|m| m["state"] == "up");
        (up.count() == 2).then_some(())
    })
    .await;
    let leader = wait_for("a leader", Duration::from_secs(30), || async {
        for (i, u) in urls.iter().enumerate() {
            if get(&http, &format!("{u}/healthz")).await?["role"] == "leader" {
                return Some(i);
            }
        }
        None
    })
    .await;
    let line = format!("while [ -e {} ]; do sleep 0.1; done", alive.display());
    let submit = |url: String, name: &str| {
        let spec = json!({"name": name, "kind": "service", "replicas": 2, "task": {
            "command": ["/bin/sh", "-c", line.clone()],
            "resources": {"cpu": "10m", "memory": "4Mi"}}});
        let http = http.clone();
        async move {
            let resp = http
                .post(format!("{url}/v1/jobs"))
                .json(&spec)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 201);
        }
    };
    let running = |url: String, name: &'static str| {
        let http = http.clone();
        async move {
            wait_for(
                &format!("{name} running"),
                Duration::from_secs(60),
                || async {
                    let v = get(&http, &format!("{url}/v1/jobs/{name}")).await?;
                    (v["task_counts"]["running"] == 2).then_some(())
                },
            )
            .await
        }
    };
    submit(urls[1 - leader].clone(), "before").await;
    running(urls[1 - leader].clone(), "before").await;

    p.kill9(&masters[leader].0);
    let other = urls[1 - leader].clone();
    wait_for(
        "the other replica leading",
        Duration::from_secs(30),
        || async {
            (get(&http, &format!("{other}/healthz")).await?["role"] == "leader").then_some(())
        },
    )
    .await;
    submit(other.clone(), "after").await;
    running(other.clone(), "after").await;
    // The first job's tasks kept running through the failover.
    let v = get(&http, &format!("{other}/v1/jobs/before"))
        .await
        .unwrap();
    assert_eq!(v["task_counts"]["running"], 2, "{v}");
}
