//! The reading verbs against a real cell: `run -f` of several files, `get`
//! with `-o wide|yaml` and filters, `describe task|machine`, `top`, and
//! `plan` (a dry run that writes nothing).

mod support;

use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use support::{stderr, stdout, wait_for, Cell};

fn spec(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

const WEB: &str = "name: web\nkind: service\nreplicas: 2\ntask:\n  command: [sleep, '600']\n  resources: {cpu: 250m, memory: 64Mi, ports: 1}\n";
const HI: &str = "name: hi\ntask:\n  command: [/bin/sh, -c, 'echo hi']\n";
const FILLER: &str = "name: filler\nkind: service\npriority: 100\ntask:\n  command: [sleep, '600']\n  resources: {cpu: 100m, memory: 3Gi}\n";

fn ok(out: &std::process::Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// The one `error:` line of a failed call, and its exit code.
fn failed(out: &std::process::Output) -> (i32, String) {
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "one error line: {err:?}");
    (out.status.code().unwrap_or(-1), err)
}

fn task_rows<'a>(text: &'a str, job: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{job}/")))
        .collect()
}

/// TASK, PLAN and MACHINE of a task's row in a plan.
fn plan_row<'a>(text: &'a str, task: &str) -> Vec<&'a str> {
    let row = text
        .lines()
        .map(str::trim_start)
        .find(|l| l.split_whitespace().next() == Some(task));
    row.map(|l| l.split_whitespace().take(3).collect())
        .unwrap_or_default()
}

#[test]
fn get_wide_filters_describe_top_and_plan_on_a_real_cell() {
    let cell = Cell::start(1);
    let dir = tempfile::tempdir().unwrap();
    let (web, hi, filler) = (
        spec(&dir, "web", WEB),
        spec(&dir, "hi", HI),
        spec(&dir, "filler", FILLER),
    );
    let p = |p: &PathBuf| p.to_str().unwrap().to_string();

    // Several files at once, each followed to its end (or to serving).
    let out = ok(&cell.jobctl(&[
        "run",
        "-f",
        &p(&web),
        "-f",
        &p(&hi),
        "-f",
        &p(&filler),
        "--wait",
    ]));
    for line in [
        "job/web submitted (2 tasks)",
        "job/hi submitted (1 task)",
        "job/filler submitted (1 task)",
        "job/hi succeeded",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} in {out}");
    }

    // -o wide: node and ports of each running task, as resolve says.
    let resolved: Value =
        serde_json::from_str(&ok(&cell.jobctl(&["resolve", "web", "-o", "json"]))).unwrap();
    let wide = ok(&cell.jobctl(&["get", "tasks", "web", "-o", "wide"]));
    let header = wide.lines().next().unwrap();
    for column in ["NODE", "PORTS", "PID", "ATTEMPT"] {
        assert!(header.contains(column), "{wide}");
    }
    for t in resolved["tasks"].as_array().unwrap() {
        let row = wide
            .lines()
            .find(|l| l.starts_with(&format!("web/{} ", t["index"])))
            .unwrap_or_else(|| panic!("row of {t} in {wide}"));
        let port = t["ports"][0].as_u64().unwrap().to_string();
        assert!(row.split_whitespace().any(|c| c == port), "{row} {t}");
        assert!(row.contains("127.0.0.1"), "{row}");
    }
    assert_eq!(resolved["tasks"].as_array().unwrap().len(), 2, "{resolved}");

    // Filters.
    let running = ok(&cell.jobctl(&["get", "tasks", "web", "--state", "running"]));
    assert_eq!(task_rows(&running, "web").len(), 2, "{running}");
    let on_m1 = ok(&cell.jobctl(&["get", "tasks", "web", "--machine", "m1"]));
    assert_eq!(task_rows(&on_m1, "web").len(), 2, "{on_m1}");
    let none = cell.jobctl(&["get", "tasks", "web", "--state", "pending,failed"]);
    assert_eq!(
        (ok(&none), stderr(&none).trim()),
        (String::new(), "no tasks")
    );
    let yaml = ok(&cell.jobctl(&["get", "jobs", "--state", "succeeded", "-o", "yaml"]));
    let list: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let names: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hi"], "{yaml}");
    let machines = ok(&cell.jobctl(&["get", "machines", "-o", "wide", "--state", "up"]));
    assert!(
        machines.lines().next().unwrap().contains("FREE"),
        "{machines}"
    );
    assert!(machines.lines().any(|l| l.starts_with("m1 ")), "{machines}");

    // describe task and machine.
    let port = resolved["tasks"][0]["ports"][0].to_string();
    let index = resolved["tasks"][0]["index"].to_string();
    let task = ok(&cell.jobctl(&["describe", "task", &format!("web/{index}")]));
    for want in ["Machine:", "Node:", "Memory:", "Events:"] {
        assert!(task.contains(want), "{want:?} in {task}");
    }
    let ports = task.lines().find_map(|l| l.strip_prefix("Ports:"));
    assert_eq!(ports.map(str::trim), Some(port.as_str()), "{task}");
    let (code, line) = failed(&cell.jobctl(&["describe", "task", "web/9"]));
    assert_eq!(code, 3, "{line}");
    let m1 = ok(&cell.jobctl(&["describe", "machine", "m1"]));
    assert!(m1.contains("Capacity:    cpu 2, memory 4Gi"), "{m1}");
    let events = m1.split("Events (latest):\n").nth(1).unwrap_or_default();
    assert!(
        events.lines().count() <= 10
            && events
                .lines()
                .any(|l| l.contains(" hi/0 ") && l.contains("-> succeeded  on m1")),
        "the latest events on m1: {m1}"
    );
    let (code, line) = failed(&cell.jobctl(&["describe", "machine", "m9"]));
    assert_eq!(
        (code, line.contains("no machine named m9")),
        (3, true),
        "{line}"
    );

    // top: the running jobs' usage once the borglet has sampled it, and the machine.
    let top = wait_for("top shows web's two tasks", Duration::from_secs(60), || {
        let out = ok(&cell.jobctl(&["top"]));
        out.lines()
            .any(|l| l.split_whitespace().take(2).eq(["web", "2"]))
            .then_some(out)
    });
    assert!(top.lines().any(|l| l.starts_with("m1 ")), "{top}");
    assert!(!top.contains("hi "), "a finished job uses nothing: {top}");

    // plan: nothing below may change the cell.
    let before = ok(&cell.jobctl(&["get", "jobs", "-o", "json"]));
    let plan = |text: &str| {
        let f = spec(&dir, "plan", text);
        cell.jobctl(&["plan", "-f", &p(&f)])
    };
    let big = ok(&plan(
        "name: big\ntask:\n  command: [/bin/true]\n  resources: {memory: 64Gi}\n",
    ));
    assert!(big.contains("accepted; would be created (1 task)"), "{big}");
    assert_eq!(plan_row(&big, "big/0")[..2], ["big/0", "wait"], "{big}");
    assert!(
        big.contains("insufficient memory (nearest: m1 has"),
        "{big}"
    );

    let prod = ok(&plan(
        "name: prod\npriority: 300\ntask:\n  command: [/bin/true]\n  resources: {memory: 2Gi}\n",
    ));
    assert_eq!(
        plan_row(&prod, "prod/0"),
        ["prod/0", "preempt", "m1"],
        "{prod}"
    );
    assert!(prod.contains("filler/0"), "{prod}");

    let fits = ok(&plan(&WEB.replace("name: web", "name: web2")));
    assert_eq!(
        plan_row(&fits, "web2/0"),
        ["web2/0", "place", "m1"],
        "{fits}"
    );
    assert!(fits.contains("2 would start now"), "{fits}");

    let update = ok(&plan(&WEB.replace("'600'", "'700'")));
    assert!(update.contains("version 2 would roll out"), "{update}");
    assert!(
        update.contains("--- live (version 1)") && update.contains("+  - '700'"),
        "{update}"
    );
    let scale = ok(&plan(&WEB.replace("replicas: 2", "replicas: 3")));
    assert!(scale.contains("would scale"), "{scale}");
    let rows: Vec<&str> = scale.lines().filter(|l| l.starts_with("  web/")).collect();
    assert_eq!(rows.len(), 1, "only the added task: {scale}");
    assert_eq!(
        plan_row(&scale, "web/2"),
        ["web/2", "place", "m1"],
        "{scale}"
    );
    let same = ok(&plan(WEB));
    assert!(same.contains("unchanged"), "{same}");

    let kind = plan(&WEB.replace("kind: service", "kind: batch"));
    let (code, line) = failed(&kind);
    assert_eq!(code, 1, "{line}");
    assert!(
        stdout(&kind).contains("NOT accepted: kind:"),
        "{}",
        stdout(&kind)
    );
    let (code, line) = failed(&plan(&WEB.replace("replicas: 2", "replicas: -1")));
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("replicas"), "{line}");

    let after = ok(&cell.jobctl(&["get", "jobs", "-o", "json"]));
    let strip = |s: &str| {
        let v: Value = serde_json::from_str(s).unwrap();
        let mut jobs: Vec<(String, i64, String)> = v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| {
                (
                    j["name"].as_str().unwrap().to_string(),
                    j["version"].as_i64().unwrap(),
                    j["spec"].to_string(),
                )
            })
            .collect();
        jobs.sort();
        jobs
    };
    assert_eq!(strip(&before), strip(&after), "plan wrote nothing");
}
