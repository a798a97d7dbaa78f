//! Cost of isolation in the borglet, unisolated vs on cgroups, side by side:
//! `/bin/true` starts per second (each started inside one sync) and the latency
//! of a sync naming 1,000 unchanged running attempts. Not a pass/fail test:
//! runs only with `BORG_BENCH_BORGLET=1` and prints its figures, e.g.
//! `BORG_BENCH_BORGLET=1 cargo test --release -p borglet --test bench -- --nocapture`.

mod common;

use borg_shared::wire::AttemptPhase;
use common::{eventually, AttemptBuilder, TestBorglet};
use std::time::{Duration, Instant};

const STARTS: usize = 500;
const RUNNING: usize = 1000;

async fn measure(isolation: &str) {
    let b = TestBorglet::spawn_with(&["--isolation", isolation]).await;
    let mode = b.master.first_registration().await.isolation.unwrap();

    let trues: Vec<_> = (0..STARTS)
        .map(|i| {
            AttemptBuilder::new(&["/bin/true"])
                .job("t", i as i32)
                .memory(4 << 20)
                .build()
        })
        .collect();
    let began = Instant::now();
    b.sync(&trues, &[]).await;
    let start_sync = began.elapsed();
    eventually("every /bin/true exited", || async {
        let r = b.sync(&trues, &[]).await;
        r.attempts
            .iter()
            .all(|a| a.phase == AttemptPhase::Exited)
            .then_some(())
    })
    .await;
    let until_exited = began.elapsed();
    let ids: Vec<_> = trues.iter().map(|a| a.id).collect();
    b.sync(&[], &ids).await;

    let sleepers: Vec<_> = (0..RUNNING)
        .map(|i| {
            AttemptBuilder::new(&["sleep", "1000"])
                .job("s", i as i32)
                .build()
        })
        .collect();
    b.sync(&sleepers, &[]).await;
    let mut times: Vec<Duration> = (0..50).map(|_| Duration::ZERO).collect();
    for t in times.iter_mut() {
        let began = Instant::now();
        let r = b.sync(&sleepers, &[]).await;
        *t = began.elapsed();
        assert_eq!(r.attempts.len(), RUNNING);
    }
    times.sort();
    println!(
        "isolation {:>4}: {STARTS} /bin/true started in one sync in {:.0} ms ({:.0} starts/s), all exited after {:.0} ms; \
         sync of {RUNNING} unchanged running attempts: median {:.2} ms, p90 {:.2} ms",
        mode.as_str(),
        start_sync.as_secs_f64() * 1e3,
        STARTS as f64 / start_sync.as_secs_f64(),
        until_exited.as_secs_f64() * 1e3,
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() * 9 / 10].as_secs_f64() * 1e3,
    );
    let mut b = b;
    b.sync(&[], &[]).await;
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_cost() {
    if std::env::var_os("BORG_BENCH_BORGLET").is_none() {
        eprintln!("SKIP: set BORG_BENCH_BORGLET=1 to measure the borglet's start and sync costs");
        return;
    }
    measure("none").await;
    measure("auto").await;
}
