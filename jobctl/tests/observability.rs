//! Observability end to end on a real cell run with `--log-format json`: the
//! latency histograms grow by one per task placed and per task that came up,
//! the borglet's per-task usage gauges exist while the attempt runs and go
//! with it, every component writes JSON lines whose spans name the attempt,
//! and `jobctl logs --previous` shows the run before the current one (an
//! in-place restart, else the attempt before) or says there is none (exit 3).

mod support;

use serde_json::Value;
use std::time::Duration;
use support::{stderr, stdout, wait_for, Cell};

const LONG: Duration = Duration::from_secs(90);

/// Two long-running tasks that say which version of the spec they run.
fn sleepers(version: u32) -> String {
    format!(
        r#"
name: sleepers
kind: service
replicas: 2
task:
  command: [/bin/sh, -c, 'echo "v$V"; exec sleep 600']
  env: {{V: "{version}"}}
  resources: {{cpu: 100m, memory: 32Mi}}
  kill_grace: 1s
"#
    )
}

/// A service whose runs 1 and 2 print their number and exit; run 3 stays up.
const AGAIN: &str = r#"
name: again
kind: service
task:
  command: [/bin/sh, -c, 'n=$(( $(cat runs 2>/dev/null || echo 0) + 1 )); echo $n > runs; echo "run $n"; if [ $n -ge 3 ]; then exec sleep 600; fi; exit 1']
  resources: {cpu: 100m, memory: 32Mi}
  restart: {backoff: 100ms}
  kill_grace: 1s
"#;

fn scrape(url: &str) -> Option<String> {
    let resp = reqwest::blocking::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .ok()?;
    resp.status()
        .is_success()
        .then(|| resp.text().ok())
        .flatten()
}

/// A sample's value from a Prometheus text page; 0 when the series is absent.
fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

fn apply(cell: &Cell, name: &str, spec: &str) {
    let path = std::env::temp_dir().join(format!("borg-{}-{name}.yaml", std::process::id()));
    std::fs::write(&path, spec).unwrap();
    let out = cell.jobctl(&["apply", "-f", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
}

fn logs(cell: &Cell, args: &[&str]) -> std::process::Output {
    let mut all = vec!["logs"];
    all.extend_from_slice(args);
    cell.jobctl(&all)
}

/// Every line of a component's log (its stderr, teed by `jobctl dev`), parsed as JSON.
/// Panics on any line that is not.
fn json_lines(cell: &Cell, component: &str) -> Vec<Value> {
    let path = cell.data_dir.join("logs").join(format!("{component}.log"));
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        // `jobctl dev`'s own marker between runs of the component.
        .filter(|l| !(l.starts_with("---- ") && l.ends_with(" ----")))
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{component}: not a JSON line ({e}): {l}"))
        })
        .collect()
}

#[test]
fn histograms_usage_gauges_json_logs_with_spans_and_previous_logs() {
    // Every task's state change at debug, from the store (one line per move).
    let cell = Cell::start_env(
        1,
        "",
        false,
        &["--log-format", "json"],
        &[("RUST_LOG", "info,borg_store=debug")],
    );
    let port: u16 = cell.master.rsplit(':').next().unwrap().parse().unwrap();
    let scheduler_metrics = format!("http://127.0.0.1:{}/metrics", port + 10);
    let master_metrics = format!("{}/metrics", cell.master);
    let placed_count = "borg_task_submit_to_placed_seconds_count";
    let running_count = "borg_task_placed_to_running_seconds_count";
    let placed_before = sample(
        &scrape(&scheduler_metrics).expect("scheduler /metrics"),
        placed_count,
    );
    let running_before = sample(
        &scrape(&master_metrics).expect("master /metrics"),
        running_count,
    );

    // 1. Two tasks placed and running: each histogram counts exactly two more.
    apply(&cell, "sleepers", &sleepers(1));
    wait_for("sleepers running", LONG, || {
        let out = stdout(&cell.jobctl(&["get", "tasks", "sleepers"]));
        (out.lines().filter(|l| l.contains("running")).count() == 2).then_some(())
    });
    let placed = wait_for("two placements observed", LONG, || {
        let n = sample(&scrape(&scheduler_metrics)?, placed_count) - placed_before;
        (n >= 2.0).then_some(n)
    });
    let running = wait_for("two starts observed", LONG, || {
        let n = sample(&scrape(&master_metrics)?, running_count) - running_before;
        (n >= 2.0).then_some(n)
    });
    assert_eq!((placed, running), (2.0, 2.0), "one observation per task");
    let page = scrape(&scheduler_metrics).unwrap();
    assert!(
        page.contains("borg_task_submit_to_placed_seconds_bucket{le=\"600\"}"),
        "buckets up to minutes: {page}"
    );

    // 2. JSON lines from every component; the borglet's start of each task is
    //    logged in a span naming machine, job, index and attempt.
    for component in ["borgmaster", "borgscheduler"] {
        assert!(
            !json_lines(&cell, component).is_empty(),
            "{component} logged nothing"
        );
    }
    let borglet = json_lines(&cell, "borglet-1");
    let started: Vec<&Value> = borglet
        .iter()
        .filter(|l| l["fields"]["message"] == "attempt started")
        .filter(|l| l["span"]["job"] == "sleepers")
        .collect();
    assert_eq!(started.len(), 2, "{borglet:#?}");
    for line in &started {
        let span = &line["span"];
        assert_eq!(span["name"], "attempt", "{line}");
        assert_eq!(span["machine"], "m1", "{line}");
        assert_eq!(span["attempt"], line["fields"]["attempt"], "{line}");
        assert!(span["index"] == 0 || span["index"] == 1, "{line}");
    }
    // Every state change of a task is a structured line naming its job, index,
    // attempt and machine, whichever controller made it (here: the report).
    let master = json_lines(&cell, "borgmaster");
    let to_running: Vec<&Value> = master
        .iter()
        .filter(|l| l["fields"]["message"] == "task state" && l["fields"]["to"] == "running")
        .collect();
    assert_eq!(to_running.len(), 2, "{master:#?}");
    let mut indexes: Vec<i64> = to_running
        .iter()
        .map(|l| l["fields"]["index"].as_i64().expect("an index"))
        .collect();
    indexes.sort();
    assert_eq!(indexes, [0, 1]);
    for line in &to_running {
        for field in ["job_id", "attempt", "machine_id"] {
            let value = line["fields"][field].as_str().unwrap_or_default();
            assert!(
                value.len() == 36 && value.matches('-').count() == 4,
                "{field} is a uuid in {line}"
            );
        }
    }
    let isolation = borglet
        .iter()
        .find(|l| l["fields"]["message"] == "borglet serving")
        .map(|l| {
            l["fields"]["isolation"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .expect("the borglet's start line");

    // 3. Per-task usage on the borglet's /metrics, measured from the cgroups.
    let borglet_metrics = {
        let out = cell.jobctl(&["get", "machines", "-o", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let address = v["machines"][0]["address"].as_str().expect("m1's address");
        format!("{}/metrics", address.trim_end_matches('/'))
    };
    let series = |page: &str, name: &str, index: u32| {
        let prefix = format!("{name}{{job=\"sleepers\",index=\"{index}\",attempt=\"");
        page.lines().any(|l| l.starts_with(&prefix))
    };
    if isolation == "none" {
        eprintln!("SKIPPED the usage gauges: this borglet runs unisolated (no writable cgroup)");
    } else {
        let page = wait_for("usage gauges of both sleepers", LONG, || {
            let page = scrape(&borglet_metrics)?;
            (0..2)
                .all(|i| {
                    series(&page, "borg_task_cpu_cores", i)
                        && series(&page, "borg_task_memory_bytes", i)
                })
                .then_some(page)
        });
        let memory = page
            .lines()
            .find(|l| l.starts_with("borg_task_memory_bytes{job=\"sleepers\""))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap();
        assert!(memory > 0.0, "{page}");
    }

    // 4. No restart and no attempt before: one clear line, exit 3.
    let none = logs(&cell, &["sleepers/0", "--previous"]);
    assert_eq!(none.status.code(), Some(3), "{}", stderr(&none));
    assert_eq!(stderr(&none).trim().lines().count(), 1, "{}", stderr(&none));
    assert!(
        stderr(&none).contains("no previous run"),
        "{}",
        stderr(&none)
    );

    // 5. An in-place restart: the previous run's output, not the current one's.
    apply(&cell, "again", AGAIN);
    wait_for("again/0 on its third run", LONG, || {
        stdout(&logs(&cell, &["again/0"]))
            .contains("run 3")
            .then_some(())
    });
    let current = logs(&cell, &["again/0"]);
    assert_eq!(stdout(&current), "run 3\n", "{}", stderr(&current));
    let previous = logs(&cell, &["again/0", "--previous"]);
    assert!(previous.status.success(), "{}", stderr(&previous));
    assert_eq!(stdout(&previous), "run 2\n");

    // 6. A new attempt (a rollout to v2): --previous is the attempt before.
    apply(&cell, "sleepers", &sleepers(2));
    wait_for("sleepers/0 on v2", LONG, || {
        (stdout(&logs(&cell, &["sleepers/0"])) == "v2\n").then_some(())
    });
    let previous = logs(&cell, &["sleepers/0", "--previous"]);
    assert!(previous.status.success(), "{}", stderr(&previous));
    assert_eq!(stdout(&previous), "v1\n");

    // 7. The gauges go with the attempts.
    if isolation != "none" {
        let out = cell.jobctl(&["kill", "sleepers"]);
        assert!(out.status.success(), "{}", stderr(&out));
        wait_for("the sleepers' series gone", LONG, || {
            let page = scrape(&borglet_metrics)?;
            (!page.contains("job=\"sleepers\"")).then_some(())
        });
    }
}
