//! Unit tests of `reports.rs`: death certificates and final states.

use super::*;
use borg_shared::Bytes;

fn row(stop_reason: Option<&str>) -> AttemptRow {
    AttemptRow {
        id: AttemptId::new(),
        state: TaskState::Running,
        stop_reason: stop_reason.map(str::to_string),
        task_id: TaskId::new(),
        job_id: JobId::new(),
        task_state: TaskState::Running,
        task_attempt: None,
        runs: 1,
        max_runs: 3,
        kind: JobKind::Batch,
        job_live: true,
        restart: None,
        restarts: 0,
        healthy: None,
        health_message: None,
        pid: None,
        created_at: Utc::now(),
        failed_runs: 0,
        in_backoff: false,
    }
}

fn exited(code: Option<i32>, signal: Option<i32>) -> AttemptReport {
    AttemptReport {
        id: AttemptId::new(),
        phase: AttemptPhase::Exited,
        pid: Some(7),
        started_at: None,
        finished_at: None,
        exit_code: code,
        signal,
        stopped_by_borglet: false,
        message: None,
        restarts: 0,
        last_exit: None,
        oom_killed: false,
        peak_memory: Some(Bytes(5 << 20)),
        stderr_tail: Some("bye\n".into()),
        usage: None,
        healthy: None,
        health_message: None,
    }
}

#[test]
fn causes_follow_the_report_and_who_asked() {
    let cause = |row: &AttemptRow, r: Option<&AttemptReport>| {
        death_certificate(row, r).map(|d| (d.cause, d.killed_by))
    };
    let plain = row(None);
    assert_eq!(
        cause(&plain, Some(&exited(Some(3), None))),
        Some((DeathCause::Exited, None))
    );
    assert_eq!(
        cause(&plain, Some(&exited(None, Some(11)))),
        Some((DeathCause::Signaled, None))
    );
    let mut oom = exited(None, Some(9));
    oom.oom_killed = true;
    assert_eq!(
        cause(&plain, Some(&oom)),
        Some((DeathCause::OomKilled, None))
    );
    assert_eq!(
        final_state(&plain, &oom),
        (TaskState::Failed, "oom-killed".into())
    );

    let killed = row(Some("killed by alice"));
    let by = Some("killed by alice".to_string());
    assert_eq!(
        cause(&killed, Some(&exited(None, Some(15)))),
        Some((DeathCause::Killed, by.clone()))
    );
    assert_eq!(cause(&killed, None), Some((DeathCause::Killed, by)));
    assert_eq!(
        final_state(
            &row(Some("killed by alice (token ci)")),
            &exited(None, Some(15))
        ),
        (
            TaskState::Killed,
            "killed by alice (token ci): killed by signal 15".into()
        )
    );
    let mut unwanted = exited(None, Some(15));
    unwanted.stopped_by_borglet = true;
    assert_eq!(
        cause(&plain, Some(&unwanted)),
        Some((DeathCause::Killed, Some(KILLED_BY_BORGLET.to_string())))
    );
    assert_eq!(cause(&plain, None), None, "vanished: nobody knows how");

    let full = death_certificate(&plain, Some(&exited(Some(1), None))).unwrap();
    assert_eq!(full.peak_memory, Some(Bytes(5 << 20)));
    assert_eq!(full.stderr_tail.as_deref(), Some("bye\n"));
    assert_eq!(full.exit_code, Some(1));
}

#[test]
fn only_the_end_of_an_attempt_no_longer_its_tasks_is_lone() {
    let machine = MachineId::new();
    let report = exited(Some(0), None);
    let end = |row: &AttemptRow| {
        let mut batch = Batch::default();
        let action = Action::End {
            to: TaskState::Succeeded,
            reason: "exit 0".into(),
            report: Some(&report),
        };
        collect(&mut batch, row, action, machine, "m1");
        (batch.ended.len(), batch.lone.len(), batch.tasks.len())
    };
    // Superseded by a surge: the task points elsewhere, its end moves no task.
    let superseded = row(None);
    assert_eq!(end(&superseded), (1, 1, 0));
    // The task's own attempt: its task moves (and that event names the machine).
    let mut current = row(None);
    current.task_attempt = Some(current.id);
    assert_eq!(end(&current), (1, 0, 1));
}
