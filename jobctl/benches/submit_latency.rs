//! Submit→running latency of one trivial task on an idle dev cell.
//!
//! Starts the real `jobctl dev` cell (embedded Postgres, master, scheduler,
//! 3 borglets), then submits N one-task jobs one after another and measures,
//! for each, the time from sending `POST /v1/jobs` until `GET /v1/jobs/{name}`
//! shows the task `running` (client view, polled every 1 ms), and the same
//! span from the job's own event rows (server view: `pending` event → `running`
//! event). Prints p50/p90/p99/max of both.
//!
//! cargo bench -p jobctl --bench submit_latency [-- --jobs 50]

mod common;

use common::BenchCell;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summary(name: &str, mut v: Vec<f64>) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{name:<28} n={:<4} p50={:>7.1} ms  p90={:>7.1} ms  p99={:>7.1} ms  max={:>7.1} ms",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.9),
        percentile(&v, 0.99),
        v[v.len() - 1]
    );
}

fn main() {
    let jobs: usize = common::arg("--jobs", 50);
    let cell = BenchCell::start(3);
    let (http, master) = (&cell.http, &cell.master);

    let mut client = Vec::new();
    let mut server = Vec::new();
    for i in 0..jobs {
        let name = format!("lat-{i}");
        let spec = json!({"name": name, "task": {"command": ["/bin/sleep", "60"],
                          "resources": {"cpu": "10m", "memory": "4Mi"}, "kill_grace": "1s"}});
        let t0 = Instant::now();
        cell.submit(&spec);
        let job = loop {
            let job: Value = http
                .get(format!("{master}/v1/jobs/{name}"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            if job["tasks"][0]["state"] == "running" {
                break job;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "{name} never ran: {job}"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        client.push(t0.elapsed().as_secs_f64() * 1000.0);
        let events = job["events"].as_array().unwrap();
        let at = |state: &str| {
            events
                .iter()
                .find(|e| e["to"] == state)
                .and_then(|e| e["time"].as_str())
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        };
        if let (Some(p), Some(r)) = (at("pending"), at("running")) {
            server.push((r - p).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
        http.post(format!("{master}/v1/jobs/{name}/kill"))
            .send()
            .unwrap();
    }
    println!(
        "submit -> running, one trivial task, idle dev cell (3 borglets), {jobs} jobs in sequence"
    );
    summary("client (POST -> GET shows)", client);
    summary("server (pending -> running)", server);
}
