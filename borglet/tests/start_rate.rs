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
    let cpu_before = cpu_seconds();
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
    // Every task reaped by the keeper, whose CPU (and its tasks') is read
    // from /proc while it lives. Less sensitive than wall time to what else
    // runs on the machine.
    eprintln!(
        "CPU per start (borglet, keeper, tasks, this test): {:.2} ms",
        (cpu_seconds() - cpu_before) * 1000.0 / n as f64
    );
}

/// user + system CPU of this process (the borglet runs in it), of every
/// descendant it reaped, and of its live children (the keeper) with what they
/// reaped (the tasks).
fn cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let own: f64 = [UsageWho::RUSAGE_SELF, UsageWho::RUSAGE_CHILDREN]
        .into_iter()
        .map(|who| {
            let u = getrusage(who).unwrap();
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            secs(u.user_time()) + secs(u.system_time())
        })
        .sum();
    let me = std::process::id() as i32;
    let ticks = procfs::ticks_per_second() as f64;
    let children: f64 = procfs::process::all_processes()
        .unwrap()
        .flatten()
        .filter_map(|p| p.stat().ok())
        .filter(|s| s.ppid == me)
        .map(|s| (s.utime + s.stime) as f64 + (s.cutime + s.cstime).max(0) as f64)
        .sum::<f64>()
        / ticks;
    own + children
}
