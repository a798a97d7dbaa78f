//! The event-driven verbs against a real cell: `run --wait` (piped: one line
//! per change), `wait`, `get events`, and their exit codes.

mod support;

use std::process::Stdio;
use std::time::Duration;
use support::{stderr, stdout, Cell};

fn spec(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("borg-{}-{name}.yaml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn run_wait_wait_and_get_events_follow_the_stream() {
    let cell = Cell::start(1);

    // Piped: plain lines, one per task transition, then the result.
    let run = cell.jobctl(&["run", "-f", "examples/hello.yaml", "--wait"]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&run),
        stderr(&run)
    );
    let text = stdout(&run);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "job/hello submitted (3 tasks)", "{text}");
    assert_eq!(lines.last(), Some(&"job/hello succeeded"), "{text}");
    for i in 0..3 {
        let done = text
            .lines()
            .filter(|l| l.starts_with(&format!("hello/{i}  ")))
            .filter(|l| l.ends_with("-> succeeded  on m1  (exited with code 0)"))
            .count();
        assert_eq!(done, 1, "{text}");
    }
    assert!(
        !text.contains('\u{1b}'),
        "no terminal codes when piped: {text:?}"
    );

    // On a terminal (a pty from `script`): a live progress bar instead of the lines.
    let tty = spec(
        "tty",
        "name: tty\nreplicas: 2\ntask:\n  command: [/bin/sh, -c, 'sleep 1']\n",
    );
    let line = format!(
        "{} --master {} run -f {} --wait",
        support::JOBCTL,
        cell.master,
        tty.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("BORG_TOKEN", &cell.token)
        .output()
        .expect("script(1) from util-linux");
    let _ = std::fs::remove_file(&tty);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("job/tty ["), "a progress bar: {text:?}");
    assert!(text.contains('\u{1b}'), "terminal codes: {text:?}");
    assert!(
        !text.contains("pending -> assigned"),
        "no per-task lines: {text:?}"
    );
    assert!(text.contains("job/tty succeeded"), "{text:?}");

    // A finished job: `wait` answers at once with its result.
    let out = cell.jobctl(&["wait", "hello"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "job/hello succeeded\n");

    // A job that fails later: `wait`, started before it ends, exits 1 naming the task.
    let failing = spec(
        "fails",
        "name: fails\ntask:\n  command: [/bin/sh, -c, 'sleep 1; exit 3']\n  restart: {max_attempts: 1}\n",
    );
    let out = cell.jobctl(&["run", "-f", failing.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let waiter = cell
        .command(&["wait", "fails"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("error: job/fails failed: fails/0 (exit code 3"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_file(&failing);

    // The job's history, in order, one line each.
    let out = cell.jobctl(&["get", "events", "--job", "hello"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let first = text.lines().next().unwrap_or_default();
    assert!(first.contains("  pending  (submitted)"), "{text}");
    assert!(
        text.contains("  task     hello/0  pending  (submitted)\n"),
        "{text}"
    );
    assert!(
        text.lines()
            .last()
            .unwrap_or_default()
            .contains("job      job/hello  running -> succeeded"),
        "{text}"
    );
    assert_eq!(text.matches(" -> succeeded  on m1").count(), 3, "{text}");

    // JSON, filtered by kind: the machine coming up.
    let out = cell.jobctl(&["get", "events", "--kind", "machine", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let first: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
    assert_eq!(first["kind"], "machine");
    assert_eq!(first["machine"], "m1");
    assert_eq!(first["to"], "up");

    // Not found: exit 3.
    let out = cell.jobctl(&["get", "events", "--job", "nope"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = cell.jobctl(&["wait", "nope"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    // `get tasks --watch` prints the table, then a row per change as it happens.
    let slow = spec(
        "slow",
        "name: slow\ntask:\n  command: [/bin/sh, -c, 'sleep 0.5']\n",
    );
    let out = cell.jobctl(&["run", "-f", slow.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut watch = cell
        .command(&["get", "tasks", "slow", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = support::lines(&mut watch);
    let seen = support::line_where(
        &rx,
        "the watch to see slow/0 succeed",
        Duration::from_secs(30),
        |l| l.starts_with("slow/0   succeeded"),
    );
    assert!(seen.contains("m1"), "{seen}");
    let _ = watch.kill();
    let _ = watch.wait();
    let _ = std::fs::remove_file(&slow);
}

#[test]
fn run_wait_on_a_service_returns_once_all_run_and_resolve_finds_them() {
    let cell = Cell::start(1);
    let web = spec(
        "web",
        "name: web\nkind: service\nreplicas: 2\ntask:\n  command: [/bin/sleep, '600']\n  resources: {cpu: 0.1, memory: 16Mi, ports: 1}\n",
    );
    let mut watch = cell
        .command(&["get", "jobs", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = cell.jobctl(&["run", "-f", web.to_str().unwrap(), "--wait"]);
    let _ = std::fs::remove_file(&web);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).ends_with("job/web is running (2/2 tasks)\n"),
        "{}",
        stdout(&out)
    );

    // The watch printed the (empty) table, then web's row as it changed.
    let rx = support::lines(&mut watch);
    let row = support::line_where(&rx, "web's row running", Duration::from_secs(30), |l| {
        l.starts_with("web ") && l.contains(" running ")
    });
    assert!(row.contains("service"), "{row}");
    let _ = watch.kill();
    let _ = watch.wait();

    let out = cell.jobctl(&["resolve", "web"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table.starts_with("TASK    MACHINE   HOST        PORTS\nweb/0   m1        127.0.0.1   200"),
        "{table}"
    );
    let out = cell.jobctl(&["resolve", "web", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tasks"][1]["host"], "127.0.0.1");
    // One port each from m1's range (the dev cell's first borglet: 20000-20099), never shared.
    let mut ports: Vec<u64> = (0..2)
        .map(|i| v["tasks"][i]["ports"][0].as_u64().expect("a port"))
        .collect();
    ports.sort();
    assert_eq!(ports, [20000, 20001], "{v}");
    let out = cell.jobctl(&["resolve", "nope"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}
