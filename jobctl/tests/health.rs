//! Health checks end to end on a real cell: a service with an HTTP check on its
//! host port shows `running/healthy` in `jobctl get tasks`; once its check
//! fails it is restarted in place, and `describe` shows both transitions.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::{stderr, stdout, wait_for, Cell};

const SPEC: &str = r#"
name: web
kind: service
task:
  command: [/bin/sh, -c, 'touch healthy; exec /usr/bin/python3 -m http.server $BORG_PORT0 --bind 127.0.0.1']
  resources: {ports: 1}
  restart: {backoff: 100ms}
  kill_grace: 2s
  health: {http: {path: /healthy, port: 0}, interval: 300ms, timeout: 300ms, failures: 10}
"#;

fn task0(cell: &Cell) -> Option<Value> {
    let out = cell.jobctl(&["get", "tasks", "web", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let tasks = v.get("tasks").or(Some(&v))?.as_array()?.clone();
    tasks.into_iter().next()
}

#[test]
fn a_service_with_an_http_check_shows_healthy_and_is_restarted_when_it_fails() {
    let cell = Cell::start(1);
    let path = std::env::temp_dir().join(format!("borg-{}-web.yaml", std::process::id()));
    std::fs::write(&path, SPEC).unwrap();
    let run = cell.jobctl(&["run", "-f", path.to_str().unwrap()]);
    assert!(run.status.success(), "{}\n{}", stdout(&run), stderr(&run));

    let table = wait_for("web/0 healthy", Duration::from_secs(60), || {
        let out = stdout(&cell.jobctl(&["get", "tasks", "web"]));
        out.lines()
            .any(|l| l.starts_with("web/0") && l.contains("running/healthy"))
            .then_some(out)
    });
    assert!(table.contains("STATE"), "{table}");
    let t = task0(&cell).expect("web/0 as json");
    assert_eq!(t["healthy"], true, "{t}");
    let pid = t["pid"].as_i64().expect("a pid") as i32;

    // The task's sandbox is its working directory: without the file, /healthy is a 404.
    std::fs::remove_file(format!("/proc/{pid}/cwd/healthy")).unwrap();
    let t = wait_for("web/0 restarted in place", Duration::from_secs(60), || {
        task0(&cell).filter(|t| {
            t["restarts"] == 1 && t["healthy"] == true && t["pid"].as_i64() != Some(pid as i64)
        })
    });
    let last = t["last_exit"].as_str().unwrap_or_default();
    assert!(
        last.starts_with("health check failed: GET /healthy on port"),
        "{t}"
    );

    let describe = stdout(&cell.jobctl(&["describe", "job", "web"]));
    assert!(
        describe.contains("Health check:") && describe.contains("http GET /healthy on port 0"),
        "{describe}"
    );
    assert!(describe.contains("web/0: healthy"), "{describe}");
    let events: Vec<&str> = describe
        .lines()
        .filter(|l| l.contains("running -> running"))
        .collect();
    assert!(
        events.iter().any(|l| l.contains("unhealthy: GET /healthy")),
        "{describe}"
    );
    assert!(
        events
            .iter()
            .any(|l| l.contains("restarted in place (restart 1) after: health check failed")),
        "{describe}"
    );
    assert!(
        events
            .iter()
            .filter(|l| l.trim_end().ends_with("healthy"))
            .count()
            >= 2,
        "healthy before and after: {describe}"
    );

    let kill = cell.jobctl(&["kill", "web"]);
    assert!(kill.status.success(), "{}", stderr(&kill));
    wait_for("web killed", Duration::from_secs(30), || {
        task0(&cell).filter(|t| t["state"] == "killed")
    });
    let _ = std::fs::remove_file(path);
}
