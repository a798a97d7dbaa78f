//! Unit tests of the attempt table (`state.rs`).

use super::*;
use borg_shared::wire::AttemptPhase;

use crate::test_spec::spec;

fn running(table: &AttemptTable) -> AttemptId {
    running_spec(table, spec())
}

/// `s` running as pid 42 in `table`.
fn running_spec(table: &AttemptTable, s: AttemptSpec) -> AttemptId {
    let id = s.id;
    table.insert(Attempt::new(
        s,
        Phase::Running {
            pid: 42,
            started_at: Utc::now(),
        },
        CancellationToken::new(),
    ));
    id
}

/// A spec restarted in place (`max_restarts` of `None`: a service).
fn restarting(max_restarts: Option<u32>) -> AttemptSpec {
    let mut s = spec();
    s.restart = Some(borg_shared::wire::InPlaceRestart {
        max_restarts,
        backoff_ms: 10,
    });
    s
}

/// Attempt `id`, waiting to restart, runs again as `pid`.
fn restarted(table: &AttemptTable, id: AttemptId, pid: i32) {
    table
        .apply(
            id,
            Event::Restarted {
                at: Utc::now(),
                pid,
            },
        )
        .unwrap();
}

#[test]
fn a_stop_while_waiting_to_restart_is_a_kill_not_the_last_runs_oom() {
    let t = AttemptTable::default();
    let id = running(&t);
    let at = Utc::now();
    let exit = Exit::Signal(9);
    let moved = t.apply(id, Event::RestartScheduled { at, exit });
    assert!(matches!(moved, Ok(Phase::Backoff { .. })));
    t.set_ending(
        id,
        Ending {
            oom_killed: true,
            peak_memory: Some(borg_shared::Bytes(32 << 20)),
            stderr_tail: Some("eating\n".into()),
        },
    );
    assert!(t.begin_stop(id).is_none(), "no process to signal");
    let r = &t.reports()[0];
    assert_eq!(r.phase, AttemptPhase::Exited);
    assert!(r.stopped_by_borglet);
    assert!(!r.oom_killed, "it ended because it was stopped: {r:?}");
    assert_eq!(r.peak_memory, Some(borg_shared::Bytes(32 << 20)));
    assert_eq!(r.stderr_tail.as_deref(), Some("eating\n"));
}

#[test]
fn stop_then_exit_is_stopped_by_borglet() {
    let t = AttemptTable::default();
    let id = running(&t);
    let ticket = t.begin_stop(id).expect("running attempt can stop");
    assert_eq!(ticket.pid, 42);
    assert!(t.begin_stop(id).is_none(), "a stop is begun once");
    let exit = Event::ProcessExited {
        at: Utc::now(),
        exit: Exit::Signal(15),
    };
    let phase = t.apply(id, exit).unwrap();
    assert!(matches!(
        phase,
        Phase::Exited {
            stopped_by_borglet: true,
            ..
        }
    ));
    let r = &t.reports()[0];
    assert_eq!(r.phase, AttemptPhase::Exited);
    assert_eq!(r.signal, Some(15));
    assert!(r.stopped_by_borglet);
}

#[test]
fn finished_attempts_take_no_events() {
    let t = AttemptTable::default();
    let id = running(&t);
    let exit = Event::ProcessExited {
        at: Utc::now(),
        exit: Exit::Code(0),
    };
    t.apply(id, exit.clone()).unwrap();
    assert!(matches!(
        t.apply(id, exit),
        Err(ApplyError::Invalid(InvalidTransition {
            phase: AttemptPhase::Exited,
            ..
        }))
    ));
    assert!(t.begin_stop(id).is_none());
}

#[test]
fn ack_forgets_only_finished_and_remembers_them() {
    let t = AttemptTable::default();
    let live = running(&t);
    let done = running(&t);
    let exit = Event::ProcessExited {
        at: Utc::now(),
        exit: Exit::Code(1),
    };
    t.apply(done, exit).unwrap();
    assert_eq!(t.forget(&[live, done]), vec![done]);
    assert_eq!(t.len(), 1);
    assert!(t.seen(done), "a forgotten attempt is never started again");
    assert!(t.seen(live));
    assert!(!t.seen(AttemptId::new()));
}

#[test]
fn a_run_ended_by_its_health_check_restarts_with_that_cause() {
    let t = AttemptTable::default();
    let mut s = restarting(None);
    s.health = Some(borg_shared::wire::HealthProbe {
        probe: borg_shared::wire::ProbeKind::Tcp { port: 1 },
        interval_ms: 100,
        timeout_ms: 100,
        failures: 1,
        initial_delay_ms: 0,
    });
    let id = running_spec(&t, s);
    t.with_attempt(id, |a| {
        a.health.kill_reason = Some("health check failed: refused".into())
    });
    let d = t.on_exit(id, Exit::Signal(15), Utc::now()).unwrap();
    assert!(matches!(d, Decision::Restart(_)), "{d:?}");
    let r = &t.reports()[0];
    assert_eq!((r.phase, r.restarts), (AttemptPhase::Backoff, 1));
    assert_eq!(r.last_exit.as_deref(), Some("health check failed: refused"));
    // The next exit, not ended by the check, says how it exited.
    restarted(&t, id, 43);
    t.with_attempt(id, |a| a.health.healthy = Some(true));
    t.on_exit(id, Exit::Code(2), Utc::now()).unwrap();
    let r = &t.reports()[0];
    assert_eq!(r.last_exit.as_deref(), Some("exited with code 2"));
    // Waiting to restart, it serves nothing.
    assert_eq!(r.healthy, Some(false));
    assert_eq!(
        r.health_message.as_deref(),
        Some("not running: exited with code 2")
    );
}

/// The reports as the sync writes them (from cached encodings).
fn written(t: &AttemptTable) -> Vec<AttemptReport> {
    let mut out = Vec::new();
    let n = t.write_reports(&mut out);
    let reports: Vec<AttemptReport> = serde_json::from_slice(&out).unwrap();
    assert_eq!(n, reports.len());
    reports
}

#[test]
fn written_reports_follow_every_change_of_an_attempt() {
    let t = AttemptTable::default();
    let id = running(&t);
    let phase = |t: &AttemptTable| written(t)[0].phase;
    assert_eq!(phase(&t), AttemptPhase::Running);
    assert_eq!(phase(&t), AttemptPhase::Running, "cached, the same");
    let usage = ResourceUsage {
        cpu: borg_shared::MilliCpu(250),
        memory: borg_shared::Bytes(1 << 20),
    };
    t.set_usage(&[Sample { id, usage }]);
    assert_eq!(written(&t)[0].usage, Some(usage));
    t.with_attempt(id, |a| a.note = Some("noted".into()));
    assert_eq!(written(&t)[0].message.as_deref(), Some("noted"));
    assert!(t.begin_stop(id).is_some());
    assert_eq!(phase(&t), AttemptPhase::Stopping);
    let exit = Exit::Signal(15);
    t.on_exit(id, exit, Utc::now()).unwrap();
    assert_eq!(phase(&t), AttemptPhase::Exited);
    let other = running(&t);
    assert_eq!(written(&t).len(), 2);
    assert_eq!(t.fence(Duration::ZERO, "fenced").len(), 0, "no fence_after");
    t.with_attempt(other, |a| a.spec.fence_after_ms = Some(1));
    assert_eq!(t.fence(Duration::from_secs(1), "fenced: x"), vec![other]);
    let r = written(&t);
    let o = r.iter().find(|r| r.id == other).unwrap();
    assert_eq!(o.message.as_deref(), Some("fenced: x"));
    assert_eq!(t.forget(&[id]), vec![id]);
    assert_eq!(written(&t).len(), 1);
}

#[test]
fn the_live_gauge_follows_every_phase_change() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let cell = Arc::new(AtomicU64::new(0));
    let t = AttemptTable::new(Gauge::from_arc(cell.clone()));
    let live = || f64::from_bits(cell.load(Ordering::Relaxed));
    let (a, b, c) = (running(&t), running(&t), running(&t));
    assert_eq!(live(), 3.0);
    let at = Utc::now();
    t.apply(
        a,
        Event::RestartScheduled {
            at,
            exit: Exit::Code(1),
        },
    )
    .unwrap();
    assert_eq!(live(), 2.0, "waiting to restart: no process");
    t.apply(a, Event::Restarted { at, pid: 43 }).unwrap();
    assert_eq!(live(), 3.0);
    assert!(t.begin_stop(b).is_some());
    assert_eq!(live(), 3.0, "stopping: its process still runs");
    t.on_exit(b, Exit::Signal(15), at).unwrap();
    assert_eq!(live(), 2.0);
    assert!(t.apply(b, Event::Restarted { at, pid: 44 }).is_err());
    assert_eq!(live(), 2.0, "a refused move counts nothing");
    // The same attempt inserted again (a re-adoption) replaces the old entry.
    let again = t.spec_of(c).unwrap().0;
    t.insert(Attempt::new(
        again,
        Phase::Running {
            pid: 45,
            started_at: at,
        },
        CancellationToken::new(),
    ));
    assert_eq!(live(), 2.0);
    t.on_exit(c, Exit::Code(0), at).unwrap();
    assert_eq!(t.forget(&[b, c]), vec![b, c]);
    assert_eq!(live(), 1.0);
    assert_eq!(t.len(), 1);
}

#[test]
fn a_run_the_kernel_killed_for_memory_is_restarted_saying_so_not_signal_9() {
    let t = AttemptTable::default();
    let id = running_spec(&t, restarting(Some(3)));
    let oom = Ending {
        oom_killed: true,
        peak_memory: Some(borg_shared::Bytes(64 << 20)),
        stderr_tail: None,
    };
    t.set_ending(id, oom);
    let d = t.on_exit(id, Exit::Signal(9), Utc::now()).unwrap();
    assert!(matches!(d, Decision::Restart(_)), "{d:?}");
    let r = &t.reports()[0];
    assert_eq!((r.phase, r.restarts), (AttemptPhase::Backoff, 1));
    assert_eq!(r.last_exit.as_deref(), Some("oom-killed, peak memory 64Mi"));
    // The next run's own end, without an OOM kill, says how it exited.
    restarted(&t, id, 43);
    t.set_cgroup(id, None);
    t.on_exit(id, Exit::Signal(9), Utc::now()).unwrap();
    let r = &t.reports()[0];
    assert_eq!(r.last_exit.as_deref(), Some("killed by signal 9"));
}
