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
    let done = eventually("every /bin/true exited", || async {
        let r = b.sync(&trues, &[]).await;
        r.attempts
            .iter()
            .all(|a| a.phase == AttemptPhase::Exited)
            .then_some(r)
    })
    .await;
    assert!(
        done.attempts.iter().all(|a| a.exit_code == Some(0)),
        "/bin/true runs in 4 MiB"
    );
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
    let sample = sampling_cost(&b, &sleepers).await;
    println!(
        "isolation {:>4}: {STARTS} /bin/true started in one sync in {:.0} ms ({:.0} starts/s), all exited after {:.0} ms; \
         sync of {RUNNING} unchanged running attempts: median {:.2} ms, p90 {:.2} ms; \
         one usage sample of them all: {sample}",
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

/// How long one usage sample of every running attempt's cgroup takes (the
/// borglet's sampler does this every `--usage-interval`, off the async threads).
async fn sampling_cost(b: &TestBorglet, running: &[borg_shared::wire::AttemptSpec]) -> String {
    use borglet::isolation::{AttemptCgroup, UsageSampler};
    use std::sync::Arc;
    let r = b.sync(running, &[]).await;
    let mounts = borglet::isolation::read_mounts();
    let mut cgroups = Vec::new();
    for a in &r.attempts {
        let Some(pid) = a.pid else { continue };
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let path_of = |controller: &str| {
            text.lines().find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, c, p) = (f.next()?, f.next()?, f.next()?);
                let root = match controller {
                    "" if c.is_empty() => mounts.unified.clone()?,
                    "" => return None,
                    _ if c.split(',').any(|x| x == controller) => {
                        mounts.v1.get(controller)?.clone()
                    }
                    _ => return None,
                };
                Some(root.join(p.trim_start_matches('/')))
            })
        };
        let cg = match (path_of("memory"), path_of("cpuacct"), path_of("")) {
            (Some(memory), Some(cpuacct), _) if memory.ends_with(a.id.to_string()) => {
                AttemptCgroup::V1 {
                    cpu: cpuacct.clone(),
                    pids: memory.clone(),
                    memory,
                    cpuacct,
                }
            }
            (_, _, Some(dir)) if dir.ends_with(a.id.to_string()) => AttemptCgroup::V2 { dir },
            _ => return "- (unisolated)".into(),
        };
        cgroups.push((a.id, Arc::new(cg)));
    }
    let mut sampler = UsageSampler::default();
    sampler.sample(&cgroups);
    let began = Instant::now();
    let n = sampler.sample(&cgroups).len();
    format!(
        "{:.1} ms for {n} attempts",
        began.elapsed().as_secs_f64() * 1e3
    )
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
