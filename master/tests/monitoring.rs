//! The Grafana dashboard and Prometheus configuration under
//! `examples/monitoring/` name only metrics the cell's processes record: a
//! renamed metric breaks this test, not an SRE's board. Quantiles over
//! `_bucket` series need a histogram with buckets, which only the master's, the
//! task latency histograms (`borg_task_*_seconds`) and the borglet's sync
//! histogram have; summaries are read by their `quantile` label.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every string literal `"borg…"` in the Rust sources of these crates.
fn recorded_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for krate in ["master", "scheduler", "borglet", "store"] {
        let mut dirs = vec![root().join(krate).join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for piece in text.split('"').skip(1).step_by(2) {
                        if piece.starts_with("borg") {
                            names.insert(piece.to_string());
                        }
                    }
                }
            }
        }
    }
    names
}

/// Metric names in a PromQL expression: identifiers starting with `borg`.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("borg") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn the_grafana_dashboard_names_only_recorded_metrics() {
    let text = std::fs::read_to_string(root().join("examples/monitoring/grafana-dashboard.json"))
        .expect("examples/monitoring/grafana-dashboard.json");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let recorded = recorded_names();
    let panels = doc["panels"].as_array().expect("panels");
    let mut exprs = 0;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap_or("?");
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {title} must use the dashboard's datasource variable"
        );
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            exprs += 1;
            for name in metric_names(expr) {
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    recorded.contains(base),
                    "panel {title}: {name} is recorded by no process ({expr})"
                );
                if name.ends_with("_bucket") {
                    assert!(
                        base.starts_with("borg_api_")
                            || base == "borg_sync_duration_seconds"
                            || base.starts_with("borg_task_"),
                        "panel {title}: {base} has no buckets (a summary: use its quantile label)"
                    );
                }
            }
        }
    }
    assert!(exprs >= 20, "only {exprs} queries on the board");
}

#[test]
fn the_prometheus_config_scrapes_the_dev_cells_default_ports() {
    let text = std::fs::read_to_string(root().join("examples/monitoring/prometheus.yml"))
        .expect("examples/monitoring/prometheus.yml");
    let doc: serde_json::Value = serde_yaml_ng::from_str(&text).expect("the config is YAML");
    let jobs: Vec<(String, Vec<String>)> = doc["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .map(|c| {
            let targets = c["static_configs"][0]["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect();
            (c["job_name"].as_str().unwrap().to_string(), targets)
        })
        .collect();
    let master: std::net::SocketAddr = "127.0.0.1:7700".parse().unwrap();
    let want = [
        ("borgmaster", vec![master.to_string()]),
        (
            "borgscheduler",
            vec![jobctl_dev_scheduler(master).to_string()],
        ),
        (
            "borglet",
            (7701..=7703).map(|p| format!("127.0.0.1:{p}")).collect(),
        ),
    ];
    for (job, targets) in want {
        let got = jobs.iter().find(|(j, _)| j == job);
        assert_eq!(
            got.map(|(_, t)| t.clone()),
            Some(targets),
            "scrape job {job}"
        );
    }
}

/// Where `jobctl dev` puts the scheduler's `/metrics` (10 ports above the master).
fn jobctl_dev_scheduler(master: std::net::SocketAddr) -> std::net::SocketAddr {
    std::net::SocketAddr::new(master.ip(), master.port() + 10)
}
