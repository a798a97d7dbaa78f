//! Start throughput: one sync naming N `/bin/true` attempts, timed until the
//! borglet answers (every process started). Prints a figure; runs only with
//! `BORGLET_BENCH=1` (`BORGLET_BENCH_N` sets N, default 500), as it measures
//! rather than checks.

mod common;

use borg_shared::wire::AttemptPhase;
use common::{eventually, AttemptBuilder, TestBorglet};
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_rate_of_bin_true() {
    if std::env::var_os("BORGLET_BENCH").is_none() {
        eprintln!("skipped: set BORGLET_BENCH=1 to measure start throughput");
        return;
    }
    let n: usize = std::env::var("BORGLET_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let b = TestBorglet::spawn().await;
    let specs: Vec<_> = (0..n)
        .map(|i| {
            AttemptBuilder::new(&["/bin/true"])
                .job("bench", i as i32)
                .build()
        })
        .collect();
    let began = Instant::now();
    let resp = b.sync(&specs, &[]).await;
    let took = began.elapsed();
    assert_eq!(resp.attempts.len(), n);
    eprintln!(
        "{n} starts of /bin/true in {:.3} s: {:.0} starts/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    eventually("every attempt exited", || async {
        let r = b.sync(&specs, &[]).await;
        r.attempts
            .iter()
            .all(|a| a.phase == AttemptPhase::Exited)
            .then_some(())
    })
    .await;
}
