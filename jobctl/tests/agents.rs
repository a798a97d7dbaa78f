//! The dev cell's agent and store secrets, end to end: `jobctl dev` writes the
//! join token (0600), a borglet started by hand with it joins the cell and runs a
//! task (its real master's syncs still taken after a forged one with a huge
//! epoch), and no component's command line holds a secret.

mod support;

use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{wait_for, Cell, JOBCTL};

/// Every process whose command line names `needle`, with that command line.
fn cmdlines_naming(needle: &str) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
        if line.contains(needle) {
            found.push((pid, line));
        }
    }
    found
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_borglet_started_by_hand_joins_the_dev_cell_and_no_secret_is_on_a_command_line() {
    let cell = Cell::start(1);
    let dir = cell.data_dir();
    let token_file = dir.join("join.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "join.token must be private");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    let db_password = std::fs::read_to_string(dir.join("pg/borg.password"))
        .unwrap()
        .trim()
        .to_string();

    // The cell's components (master, scheduler, borglet) run now.
    let dir_text = dir.display().to_string();
    let port: u16 = cell.master.rsplit(':').next().unwrap().parse().unwrap();
    let master = format!("127.0.0.1:{port} ");
    // The dev cell's scheduler serves its metrics 10 ports above the master.
    let scheduler = format!("127.0.0.1:{} ", port + 10);
    let components: Vec<(i32, String)> = cmdlines_naming(" component ")
        .into_iter()
        .filter(|(_, l)| l.contains(&dir_text) || l.contains(&master) || l.contains(&scheduler))
        .collect();
    assert!(components.len() >= 3, "found {components:?}");
    for (pid, line) in &components {
        assert!(
            !line.contains(&db_password),
            "{pid}: the database password on argv: {line}"
        );
        assert!(
            !line.contains("postgres://"),
            "{pid}: a database URL on argv: {line}"
        );
        assert!(
            !line.contains(&token),
            "{pid}: the join token on argv: {line}"
        );
    }

    // A machine started by hand, as an operator would, with the cell's token file.
    let sandbox = tempfile::Builder::new()
        .prefix("borg-hand-")
        .permissions(std::fs::Permissions::from_mode(0o755))
        .tempdir_in("/tmp")
        .unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listen.local_addr().unwrap();
    drop(listen);
    let log = std::fs::File::create(sandbox.path().join("borglet.log")).unwrap();
    let hand = Killed(
        Command::new(JOBCTL)
            .args(["component", "borglet", "--join-token-file"])
            .arg(&token_file)
            .args([
                "--master",
                &cell.master,
                "--name",
                "by-hand",
                "--label",
                "hand=yes",
            ])
            .args(["--listen", &addr.to_string(), "--on-exit", "stop"])
            .args(["--cpu", "1", "--memory", "1Gi", "--disk", "1Gi"])
            .arg("--data-dir")
            .arg(sandbox.path().join("data"))
            .env_remove("BORG_JOIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    // The cell's admin token on every call to the master (a forged sync to the
    // borglet below carries it too, and is refused all the same).
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {}", cell.token).parse().unwrap();
    headers.insert(reqwest::header::AUTHORIZATION, bearer);
    let http = reqwest::blocking::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    wait_for(
        "the hand-started machine up",
        Duration::from_secs(60),
        || {
            let v: Value = http
                .get(format!("{}/v1/machines", cell.master))
                .send()
                .ok()?
                .json()
                .ok()?;
            v["machines"]
                .as_array()?
                .iter()
                .any(|m| m["name"] == "by-hand" && m["state"] == "up")
                .then_some(())
        },
    );
    // Registered, the master shows it up at once; the borglet writes the
    // credential it was given right after.
    let credential = sandbox.path().join("data/credential");
    wait_for(
        "the machine credential kept",
        Duration::from_secs(20),
        || credential.exists().then_some(()),
    );
    let mode = std::fs::metadata(&credential).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the machine credential must be private"
    );

    // A forged sync with a huge epoch is refused; the real master's syncs (which
    // run the job below) are still taken: the epoch was not wedged.
    let forged = json!({"epoch": i64::MAX, "machine": "by-hand", "attempts": []});
    for auth in [None, Some(format!("Bearer {token}"))] {
        let mut post = http.post(format!("http://{addr}/v1/sync")).json(&forged);
        if let Some(a) = auth {
            post = post.header("authorization", a);
        }
        assert_eq!(post.send().unwrap().status().as_u16(), 401);
    }

    let spec = json!({"name": "on-hand", "kind": "batch", "replicas": 1,
        "constraints": [{"label": "hand", "op": "=", "value": "yes"}],
        "task": {"command": ["/bin/sh", "-c", "echo ran by hand"],
                 "resources": {"cpu": "100m", "memory": "16Mi"}}});
    let resp = http
        .post(format!("{}/v1/jobs", cell.master))
        .json(&spec)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201, "{}", resp.text().unwrap());
    wait_for(
        "the task succeeded on by-hand",
        Duration::from_secs(60),
        || {
            let v: Value = http
                .get(format!("{}/v1/jobs/on-hand", cell.master))
                .send()
                .ok()?
                .json()
                .ok()?;
            (v["state"] == "succeeded").then_some(())
        },
    );
    let out = cell.jobctl(&["logs", "on-hand/0"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran by hand\n");
    drop(hand);
}
