//! The step decision: examples, a simulated rollout, and properties.

use super::*;
use proptest::prelude::*;

const MIN: Duration = Duration::from_secs(5);

fn running(index: i32, version: i32, secs: u64) -> TaskSnap {
    TaskSnap {
        index,
        state: TaskState::Running,
        version: Some(version),
        stopping: false,
        restarts: 0,
        running_for: Some(Duration::from_secs(secs)),
        healthy: true,
    }
}

fn pending(index: i32) -> TaskSnap {
    TaskSnap {
        index,
        state: TaskState::Pending,
        version: None,
        stopping: false,
        restarts: 0,
        running_for: None,
        healthy: true,
    }
}

fn snap(max_unavailable: u32, tasks: Vec<TaskSnap>) -> Snapshot {
    Snapshot {
        job: "web".into(),
        target: 2,
        max_unavailable,
        min_healthy: MIN,
        tasks,
        failures: vec![],
        ready_before: 0,
        since_progress: Duration::ZERO,
    }
}

#[test]
fn replaces_as_many_running_tasks_as_the_budget_allows() {
    let s = snap(1, (0..3).map(|i| running(i, 1, 100)).collect());
    let p = decide(&s);
    assert_eq!((p.replace, p.outcome), (vec![0], Outcome::Continue));
    let s = snap(2, (0..3).map(|i| running(i, 1, 100)).collect());
    assert_eq!(decide(&s).replace, vec![0, 1]);
}

#[test]
fn a_replaced_task_counts_as_down_until_it_ran_min_healthy() {
    let mut tasks = vec![running(0, 2, 4), running(1, 1, 100), running(2, 1, 100)];
    let p = decide(&snap(1, tasks.clone()));
    assert_eq!((p.replace, p.down, p.updated, p.ready), (vec![], 1, 1, 0));
    tasks[0].running_for = Some(MIN);
    let p = decide(&snap(1, tasks));
    assert_eq!((p.replace, p.down, p.ready), (vec![1], 0, 1));
}

#[test]
fn a_restarted_new_task_is_not_ready() {
    let mut t = running(0, 2, 100);
    t.restarts = 1;
    assert!(!replaced_task_ready(&t, 2, MIN));
    assert!(replaced_task_ready(&running(0, 2, 100), 2, MIN));
    assert!(!replaced_task_ready(&running(0, 1, 100), 2, MIN));
}

#[test]
fn stale_tasks_already_down_are_replaced_at_no_cost() {
    let mut starting = running(1, 1, 0);
    starting.state = TaskState::Starting;
    starting.running_for = None;
    let s = snap(1, vec![pending(0), starting, running(2, 1, 100)]);
    let p = decide(&s);
    // Two are down already: only the one on its way up on the old version goes.
    assert_eq!((p.replace, p.down), (vec![1], 2));
}

#[test]
fn stopping_tasks_are_down_and_not_replaced_twice() {
    let mut t = running(0, 1, 100);
    t.stopping = true;
    let p = decide(&snap(1, vec![t, running(1, 1, 100)]));
    assert_eq!((p.replace, p.down), (vec![], 1));
}

#[test]
fn done_when_every_task_is_ready_on_the_target() {
    let p = decide(&snap(1, (0..3).map(|i| running(i, 2, 10)).collect()));
    assert_eq!((p.outcome, p.ready, p.total), (Outcome::Done, 3, 3));
}

#[test]
fn failures_of_the_new_version_fail_the_rollout() {
    let mut s = snap(1, vec![running(0, 2, 1), running(1, 1, 100)]);
    s.failures = vec![Failure {
        index: 0,
        count: 1,
        what: "exited with code 1".into(),
    }];
    assert_eq!(decide(&s).outcome, Outcome::Continue);
    s.failures[0].count = 2;
    match decide(&s).outcome {
        Outcome::Failed(why) => assert!(why.contains("web/0 exited with code 1"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_progress_past_the_deadline_fails_naming_a_stuck_task() {
    let mut s = snap(1, vec![pending(0), running(1, 1, 100)]);
    s.since_progress = PROGRESS_DEADLINE + MIN + Duration::from_secs(1);
    match decide(&s).outcome {
        Outcome::Failed(why) => assert!(why.contains("web/0 is pending"), "{why}"),
        other => panic!("{other:?}"),
    }
    s.since_progress = PROGRESS_DEADLINE;
    assert_eq!(decide(&s).outcome, Outcome::Continue);
}

/// Steps and a world that brings replaced tasks back (pending, starting,
/// running, then ready with time): every task ends on the target, and no step
/// ever takes more than the budget down.
#[test]
fn a_simulated_rollout_ends_on_the_target_within_the_budget() {
    for max_unavailable in 1..=4 {
        let mut tasks: Vec<TaskSnap> = (0..7).map(|i| running(i, 1, 100)).collect();
        let mut steps = 0;
        loop {
            let p = decide(&snap(max_unavailable, tasks.clone()));
            if p.outcome == Outcome::Done {
                break;
            }
            for i in &p.replace {
                tasks[*i as usize] = pending(*i);
            }
            let down = tasks
                .iter()
                .filter(|t| !available(t, &snap(max_unavailable, vec![])))
                .count();
            assert!(
                down <= max_unavailable as usize,
                "step {steps}: {down} down"
            );
            // The world moves one stage per step.
            for t in tasks.iter_mut() {
                *t = match (t.state, t.running_for) {
                    (TaskState::Pending, _) => TaskSnap {
                        state: TaskState::Starting,
                        version: Some(2),
                        ..t.clone()
                    },
                    (TaskState::Starting, _) => running(t.index, 2, 0),
                    (TaskState::Running, Some(r)) => TaskSnap {
                        running_for: Some(r + Duration::from_secs(3)),
                        ..t.clone()
                    },
                    _ => t.clone(),
                };
            }
            steps += 1;
            assert!(steps < 100, "the rollout never ends");
        }
        assert!(tasks.iter().all(|t| t.version == Some(2)));
    }
}

fn arb_task(index: i32) -> impl Strategy<Value = TaskSnap> {
    (
        0usize..4,
        proptest::option::of(1i32..=3),
        any::<bool>(),
        0i32..2,
        0u64..10,
        any::<bool>(),
    )
        .prop_map(move |(state, version, stopping, restarts, secs, healthy)| {
            let state = [
                TaskState::Pending,
                TaskState::Assigned,
                TaskState::Starting,
                TaskState::Running,
            ][state];
            let live = state != TaskState::Pending;
            TaskSnap {
                index,
                state,
                version: if live { version.or(Some(1)) } else { None },
                stopping: live && stopping,
                restarts,
                running_for: (state == TaskState::Running).then(|| Duration::from_secs(secs)),
                healthy,
            }
        })
}

fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
    (1u32..5, 1usize..12).prop_flat_map(|(max_unavailable, n)| {
        let tasks: Vec<_> = (0..n as i32).map(arb_task).collect();
        tasks.prop_map(move |tasks| snap(max_unavailable, tasks))
    })
}

proptest! {
    /// The step never takes a task down beyond the budget: tasks down after it
    /// are at most `max_unavailable`, or what was down before if that was more.
    #[test]
    fn never_more_than_max_unavailable_down(s in arb_snapshot()) {
        let p = decide(&s);
        let newly_down = s
            .tasks
            .iter()
            .filter(|t| p.replace.contains(&t.index) && available(t, &s))
            .count() as i64;
        let limit = i64::from(s.max_unavailable).max(p.down);
        prop_assert!(p.down + newly_down <= limit, "{} down + {} replaced > {}", p.down, newly_down, limit);
    }

    /// Only stale tasks are replaced, each once; done means all ready on the target.
    #[test]
    fn replaces_only_stale_tasks_and_is_done_only_when_all_are_ready(s in arb_snapshot()) {
        let p = decide(&s);
        for i in &p.replace {
            let t = &s.tasks[*i as usize];
            prop_assert!(stale(t, s.target), "{t:?} is not stale");
        }
        let mut unique = p.replace.clone();
        unique.dedup();
        prop_assert_eq!(unique.len(), p.replace.len());
        if p.outcome == Outcome::Done {
            prop_assert!(s.tasks.iter().all(|t| replaced_task_ready(t, s.target, s.min_healthy)));
        }
    }

    /// It never stalls: with room in the budget and a running stale task, it replaces one.
    #[test]
    fn makes_progress_when_the_budget_allows(s in arb_snapshot()) {
        let p = decide(&s);
        let room = p.down < i64::from(s.max_unavailable);
        if room && s.tasks.iter().any(|t| stale(t, s.target) && available(t, &s)) {
            prop_assert!(!p.replace.is_empty());
        }
    }
}

#[test]
fn an_unhealthy_replacement_is_not_ready_however_long_it_runs() {
    let mut t = running(0, 2, 3600);
    assert!(replaced_task_ready(&t, 2, MIN));
    t.healthy = false;
    assert!(!replaced_task_ready(&t, 2, MIN));
}
