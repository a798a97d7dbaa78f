//! Throughput of trivial batch tasks through the whole path on the dev cell:
//! submit one job of N replicas of `/bin/true` and time it to `succeeded`
//! (every task placed, started by a borglet, seen exited by the master).
//! Then N one-task jobs (at most 500) submitted one by one, timed to submitted
//! and to all succeeded, as `../shared/bench/peers/slurm.sh` times `sbatch` loops.
//!
//! cargo bench -p jobctl --bench submit_throughput [-- --tasks 1000]

mod common;

use common::BenchCell;
use serde_json::json;
use std::time::{Duration, Instant};

fn main() {
    let tasks: u64 = common::arg("--tasks", 1000);
    let cell = BenchCell::start(3);

    // One job, many tasks: the placement → sync → report pipeline.
    let spec = json!({"name": "burst", "replicas": tasks,
        "task": {"command": ["/bin/true"], "resources": {"cpu": "10m", "memory": "4Mi"}}});
    let t0 = Instant::now();
    cell.submit(&spec);
    let submitted = t0.elapsed();
    let mut first_running = None;
    loop {
        let job = cell.get("/v1/jobs/burst").expect("job");
        let counts = &job["task_counts"];
        let n = |s: &str| counts[s].as_u64().unwrap_or(0);
        if first_running.is_none() && n("running") + n("succeeded") > 0 {
            first_running = Some(t0.elapsed());
        }
        if job["state"] == "succeeded" {
            break;
        }
        assert!(job["state"] != "failed", "burst failed: {job}");
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "burst did not finish: {counts}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let total = t0.elapsed();
    println!(
        "one job of {tasks} x /bin/true (10m cpu, 4Mi) on 3 borglets x 2 cpu (600 fit at once):"
    );
    println!(
        "  submit (201)        {:>8.1} ms",
        submitted.as_secs_f64() * 1000.0
    );
    println!(
        "  first task running  {:>8.1} ms",
        first_running.unwrap_or(total).as_secs_f64() * 1000.0
    );
    println!(
        "  all succeeded       {:>8.1} ms  -> {:.0} tasks/s end to end",
        total.as_secs_f64() * 1000.0,
        tasks as f64 / total.as_secs_f64()
    );

    // Many one-task jobs, one client submitting in sequence (Slurm's `sbatch` loop):
    // how fast the API commits them, and how long until all of them have run.
    let jobs = tasks.min(500);
    let t0 = Instant::now();
    for i in 0..jobs {
        let spec = json!({"name": format!("one-{i}"), "task": {"command": ["/bin/true"],
            "resources": {"cpu": "10m", "memory": "4Mi"}}});
        cell.submit(&spec);
    }
    let took = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = cell
            .get("/v1/jobs?state=succeeded")
            .and_then(|v| {
                v["jobs"]
                    .as_array()
                    .map(|j| j.iter().filter(|j| j["name"] != "burst").count())
            })
            .unwrap_or(0);
        if done as u64 >= jobs {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "one-task jobs did not finish: {done}/{jobs}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let all_done = t0.elapsed();
    println!(
        "{jobs} one-task jobs submitted one by one: submitted in {:.2} s ({:.0} submits/s), all succeeded in {:.2} s ({:.1} jobs/s)",
        took.as_secs_f64(),
        jobs as f64 / took.as_secs_f64(),
        all_done.as_secs_f64(),
        jobs as f64 / all_done.as_secs_f64()
    );
}
