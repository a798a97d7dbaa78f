//! Stopping unwanted attempts and shutting down, with real process groups.

mod common;

use borg_shared::wire::AttemptPhase;
use common::{eventually, find, AttemptBuilder, TestBorglet};
use std::time::Instant;

#[tokio::test]
async fn dropped_attempt_is_stopped_with_sigterm() {
    let b = TestBorglet::spawn().await;
    let spec = AttemptBuilder::new(&["sleep", "1000"]).build();
    let r = b.sync(std::slice::from_ref(&spec), &[]).await;
    let pid = find(&r, spec.id).and_then(|a| a.pid).expect("pid");
    assert!(common::pid_running(pid));

    let r = b.sync(&[], &[]).await;
    let report = find(&r, spec.id).expect("still reported while stopping");
    assert!(
        matches!(report.phase, AttemptPhase::Stopping | AttemptPhase::Exited),
        "{report:?}"
    );
    assert!(report.stopped_by_borglet);

    let done = b
        .sync_until(&[], spec.id, "stopped attempt exited", |r| {
            r.phase == AttemptPhase::Exited
        })
        .await;
    assert_eq!(done.signal, Some(15));
    assert_eq!(done.exit_code, None);
    assert!(done.stopped_by_borglet);
    assert!(!common::pid_exists(pid), "pid {pid} still exists");
}

#[tokio::test]
async fn term_ignoring_group_is_killed_after_grace() {
    let b = TestBorglet::spawn().await;
    let spec = AttemptBuilder::sh("trap '' TERM; sleep 1000 & echo $! > sleeper; wait")
        .grace_ms(300)
        .build();
    let r = b.sync(std::slice::from_ref(&spec), &[]).await;
    let pid = find(&r, spec.id).and_then(|a| a.pid).expect("pid");
    let sleeper_file = b.sandbox(spec.id).join("sleeper");
    let sleeper: i32 = eventually("the child sleep started", || async {
        std::fs::read_to_string(&sleeper_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    })
    .await;
    assert!(common::group_running(pid));
    assert!(common::pid_running(sleeper));

    let asked = Instant::now();
    let r = b.sync(&[], &[]).await;
    assert_eq!(
        find(&r, spec.id).map(|a| a.phase),
        Some(AttemptPhase::Stopping),
        "TERM is ignored, so it must still be stopping"
    );
    let done = b
        .sync_until(&[], spec.id, "killed after grace", |r| {
            r.phase == AttemptPhase::Exited
        })
        .await;
    assert!(
        asked.elapsed().as_millis() >= 300,
        "killed before the grace"
    );
    assert_eq!(done.signal, Some(9));
    assert!(done.stopped_by_borglet);
    assert!(!common::pid_exists(pid));
    eventually("the whole group is gone", || async {
        (!common::group_running(pid) && !common::pid_running(sleeper)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn on_exit_stop_kills_running_tasks() {
    let mut b = TestBorglet::spawn_with(&["--on-exit", "stop"]).await;
    let a = AttemptBuilder::new(&["sleep", "1000"]).build();
    let c = AttemptBuilder::sh("trap '' TERM; sleep 1000 & wait")
        .grace_ms(200)
        .build();
    let r = b.sync(&[a.clone(), c.clone()], &[]).await;
    let pids: Vec<i32> = [a.id, c.id]
        .iter()
        .map(|id| find(&r, *id).and_then(|x| x.pid).expect("pid"))
        .collect();
    assert!(pids.iter().all(|p| common::pid_running(*p)));

    b.shutdown().await.expect("clean shutdown");
    // `run` returns only after every task was reaped.
    for pid in &pids {
        assert!(!common::pid_exists(*pid), "pid {pid} survived shutdown");
    }
    eventually("task groups are gone", || async {
        pids.iter()
            .all(|p| !common::group_running(*p))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn on_exit_keep_leaves_tasks_running() {
    let mut b = TestBorglet::spawn_with(&["--on-exit", "keep"]).await;
    let a = AttemptBuilder::new(&["sleep", "1000"]).build();
    let r = b.sync(std::slice::from_ref(&a), &[]).await;
    let pid = find(&r, a.id).and_then(|x| x.pid).expect("pid");
    b.shutdown().await.expect("clean shutdown");
    assert!(common::pid_running(pid), "task must outlive the borglet");
    // Drop of `b` kills the recorded group.
}

#[tokio::test]
async fn stragglers_die_with_the_group_leader() {
    let b = TestBorglet::spawn().await;
    // The leader dies of SIGTERM at once; its child ignores TERM and stays in the group.
    let stopped = AttemptBuilder::sh("(trap '' TERM; sleep 1000) & echo $! > child; wait")
        .grace_ms(60_000)
        .build();
    // The leader exits by itself, leaving a background child behind.
    let finished = AttemptBuilder::sh("sleep 1000 & echo $! > child").build();
    let r = b.sync(&[stopped.clone(), finished.clone()], &[]).await;
    let pgid = find(&r, stopped.id).and_then(|a| a.pid).expect("pid");
    let child_of = |id| {
        let file = b.sandbox(id).join("child");
        async move {
            eventually("the child started", || async {
                std::fs::read_to_string(&file)
                    .ok()?
                    .trim()
                    .parse::<i32>()
                    .ok()
            })
            .await
        }
    };
    let stopped_child = child_of(stopped.id).await;
    let finished_child = child_of(finished.id).await;

    let done = b
        .sync_until(
            std::slice::from_ref(&finished),
            stopped.id,
            "leader exited",
            |r| r.phase == AttemptPhase::Exited,
        )
        .await;
    assert_eq!(done.signal, Some(15), "the leader took the SIGTERM");
    let done = b
        .sync_until(
            std::slice::from_ref(&finished),
            finished.id,
            "exited",
            |r| r.phase == AttemptPhase::Exited,
        )
        .await;
    assert_eq!(done.exit_code, Some(0));
    // Well inside the 60 s grace: the group was cleared when its leader went.
    eventually("stragglers are gone", || async {
        (!common::pid_running(stopped_child)
            && !common::pid_running(finished_child)
            && !common::group_running(pgid))
        .then_some(())
    })
    .await;
}
