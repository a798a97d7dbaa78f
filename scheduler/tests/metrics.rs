//! The scheduler's `/metrics`, in a test binary of its own: the metrics
//! recorder is process-wide, so other tests' passes would blur the gauges.

mod common;

use common::*;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);

/// `--listen` serves Prometheus metrics of the passes: placements and the
/// tasks left waiting, by cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_placements_and_waiting_causes() {
    let (url, pool) = fresh_pool().await;
    MachineBuilder::new("m1")
        .cpu(1000)
        .mem(GI)
        .insert(&pool)
        .await;
    JobBuilder::new("fits").replicas(2).insert(&pool).await;
    JobBuilder::new("huge").mem(64 * GI).insert(&pool).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let config = borgscheduler::Config {
        database_url: url.clone(),
        database_url_file: None,
        interval: Duration::from_millis(100),
        batch_size: 100,
        name: "sched-metrics".into(),
        scoring: Default::default(),
        recheck_after: Duration::from_secs(30),
        whole_queue: false,
        sample: 128,
        commit_streams: 2,
        cache_machines: 100,
        log: Default::default(),
        listen: Some(format!("127.0.0.1:{port}").parse().unwrap()),
    };
    let handle = tokio::spawn(borgscheduler::run(config, shutdown.clone()));
    let scrape = || async {
        let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(body)
    };
    let value = |body: &str, series: &str| -> Option<f64> {
        body.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    wait_until("metrics show the pass", DEADLINE, || async {
        let Some(body) = scrape().await else {
            return false;
        };
        value(&body, "borg_scheduler_placements_total") >= Some(2.0)
            && value(&body, "borg_scheduler_unplaceable{cause=\"memory\"}") == Some(1.0)
            && value(&body, "borg_scheduler_unplaceable{cause=\"cpu\"}") == Some(0.0)
            && body.contains("borg_scheduler_pass_duration_seconds")
            // A pass's first page is placed after the commit before it.
            && value(&body, "borg_scheduler_pages_total{placed=\"after\"}") >= Some(1.0)
    })
    .await;
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}
