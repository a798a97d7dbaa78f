//! The probing loop driven by a scripted prober on tokio's paused clock: no
//! network, no waiting. The run it ends is a real process in its own group.

use super::*;
use crate::state::Attempt;
use borg_shared::wire::{AttemptSpec, Capacity};
use futures::future::BoxFuture;
use std::collections::VecDeque;
use std::os::unix::process::CommandExt;
use std::sync::Mutex;

/// Answers from a script (then passes) and notes when it was asked.
#[derive(Debug, Default)]
struct Scripted {
    answers: Mutex<VecDeque<Result<(), String>>>,
    asked: Mutex<Vec<Instant>>,
}

impl Prober for Scripted {
    fn probe<'a>(&'a self, _: &'a Target, _: Duration) -> BoxFuture<'a, Result<(), String>> {
        self.asked.lock().unwrap().push(Instant::now());
        let answer = self.answers.lock().unwrap().pop_front().unwrap_or(Ok(()));
        Box::pin(async move { answer })
    }
}

fn check() -> HealthProbe {
    HealthProbe {
        probe: ProbeKind::Tcp { port: 1 },
        interval_ms: 1000,
        timeout_ms: 500,
        failures: 2,
        initial_delay_ms: 5000,
    }
}

#[tokio::test(start_paused = true)]
async fn probes_wait_the_delay_keep_the_interval_and_end_the_run_after_failures_in_a_row() {
    let table = Arc::new(AttemptTable::default());
    let mut task = std::process::Command::new("sleep")
        .arg("100")
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = task.id() as i32;
    let spec = AttemptSpec {
        id: AttemptId::new(),
        job: "j".into(),
        index: 0,
        command: vec!["sleep".into()],
        env: Default::default(),
        resources: Capacity::default(),
        kill_grace_ms: 100,
        memory_limit: None,
        cpu_limit: None,
        ports: vec![],
        restart: None,
        health: Some(check()),
        fence_after_ms: None,
    };
    let id = spec.id;
    let exited = CancellationToken::new();
    let phase = Phase::Running {
        pid,
        started_at: Utc::now(),
    };
    table.insert(Attempt::new(spec, phase, exited.clone()));
    let prober = Arc::new(Scripted::default());
    prober.answers.lock().unwrap().extend([
        Ok(()),
        Err("refused".into()),
        Err("still refused".into()),
    ]);
    let t0 = Instant::now();
    spawn(Probing {
        table: Arc::clone(&table),
        prober: Arc::clone(&prober) as Arc<dyn Prober>,
        metrics: Arc::new(Metrics::new("test")),
        nudger: Arc::default(),
        id,
        job: "j".into(),
        index: 0,
        check: check(),
        exec: None,
        kill_grace: Duration::from_millis(100),
        exited: exited.clone(),
    });

    let health = |t: &AttemptTable| t.with_attempt(id, |a| a.health.clone()).unwrap();
    while health(&table).kill_reason.is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let asked = prober.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 3, "{asked:?}");
    // The delay runs from the run's start on the wall clock, which moved on (a
    // little, for real) while the loop was set up.
    let first = asked[0] - t0;
    assert!(
        first >= Duration::from_millis(4900),
        "the initial delay: {first:?}"
    );
    for pair in asked.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(1000),
            "the interval"
        );
    }
    let h = health(&table);
    assert_eq!(h.healthy, Some(false));
    assert_eq!(
        h.kill_reason.as_deref(),
        Some("health check failed: still refused (2 probes in a row)")
    );
    // The run was ended with SIGTERM.
    let status = loop {
        if let Some(status) = task.try_wait().unwrap() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(15));
    exited.cancel();
}
