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
        surged: None,
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
        surged: None,
    }
}

fn snap(max_unavailable: u32, tasks: Vec<TaskSnap>) -> Snapshot {
    Snapshot {
        job: "web".into(),
        target: 2,
        max_unavailable,
        max_surge: 0,
        min_healthy: MIN,
        tasks,
        surges_stopping: 0,
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
        proptest::option::weighted(0.3, (1i32..=3, any::<bool>())),
    )
        .prop_map(
            move |(state, version, stopping, restarts, secs, healthy, surged)| {
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
                    surged: surged.map(|(version, running)| Surged { version, running }),
                }
            },
        )
}

fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
    (0u32..5, 0u32..3, 0i64..3, 1usize..12).prop_flat_map(
        |(max_unavailable, max_surge, stopping, n)| {
            let tasks: Vec<_> = (0..n as i32).map(arb_task).collect();
            tasks.prop_map(move |tasks| Snapshot {
                // Both zero is refused with the spec.
                max_surge: if max_unavailable == 0 {
                    max_surge.max(1)
                } else {
                    max_surge
                },
                surges_stopping: stopping,
                ..snap(max_unavailable, tasks)
            })
        },
    )
}

/// Tasks the step takes down: replaced while available and without a running
/// superseded attempt that keeps serving.
fn newly_down(s: &Snapshot, p: &Plan) -> i64 {
    s.tasks
        .iter()
        .filter(|t| p.replace.contains(&t.index) && available(t, s))
        .filter(|t| !t.surged.as_ref().is_some_and(|g| g.running))
        .count() as i64
}

proptest! {
    /// The step never takes a task down beyond the budget: tasks down after it
    /// are at most `max_unavailable`, or what was down before if that was more.
    #[test]
    fn never_more_than_max_unavailable_down(s in arb_snapshot()) {
        let p = decide(&s);
        let newly_down = newly_down(&s, &p);
        let limit = i64::from(s.max_unavailable).max(p.down);
        prop_assert!(p.down + newly_down <= limit, "{} down + {} replaced > {}", p.down, newly_down, limit);
    }

    /// The step never surges beyond the budget: live superseded attempts after
    /// it are at most `max_surge`, or what lived before if that was more; only
    /// running stale tasks without a superseded attempt surge, and a task is in
    /// at most one of the step's lists.
    #[test]
    fn never_more_than_max_surge_superseded(s in arb_snapshot()) {
        let p = decide(&s);
        let limit = i64::from(s.max_surge).max(p.surging);
        prop_assert!(p.surging + p.surge.len() as i64 <= limit,
            "{} surging + {} surged > {}", p.surging, p.surge.len(), limit);
        for i in &p.surge {
            let t = &s.tasks[*i as usize];
            prop_assert!(stale(t, s.target) && available(t, &s) && t.surged.is_none(), "{t:?}");
        }
        let mut all: Vec<i32> = [&p.replace, &p.surge, &p.retire, &p.restore]
            .into_iter()
            .flatten()
            .copied()
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        prop_assert_eq!(all.len(), n, "{:?}", p);
        for i in &p.retire {
            let t = &s.tasks[*i as usize];
            let idle = t.surged.as_ref().is_some_and(|g| !g.running) && stale(t, s.target);
            prop_assert!(idle || replaced_task_ready(t, s.target, s.min_healthy), "{t:?} retired early");
        }
        if p.outcome == Outcome::Done {
            prop_assert!(s.tasks.iter().all(|t| t.surged.is_none()));
        }
    }

    /// With `max_unavailable: 0` a step takes no task down.
    #[test]
    fn a_zero_budget_takes_nothing_down(s in arb_snapshot()) {
        let s = Snapshot { max_unavailable: 0, max_surge: s.max_surge.max(1), ..s };
        let p = decide(&s);
        prop_assert_eq!(newly_down(&s, &p), 0, "{:?}", p);
    }

    /// Only stale tasks are replaced, each once; done means all ready on the target.
    #[test]
    fn replaces_only_stale_tasks_and_is_done_only_when_all_are_ready(s in arb_snapshot()) {
        let p = decide(&s);
        for i in p.replace.iter().chain(&p.surge) {
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
        let room = p.down < i64::from(s.max_unavailable) || p.surging < i64::from(s.max_surge);
        if room && s.tasks.iter().any(|t| stale(t, s.target) && available(t, &s)) {
            prop_assert!(p.acts());
        }
    }
}

/// A task surged to one version, then updated again: its new attempt runs a
/// stale version and its superseded attempt does not run. With no budget to
/// take the task down, the step stops the superseded attempt (it serves
/// nothing), so the task can surge next; it used to wait until the deadline.
#[test]
fn a_stale_surge_whose_old_attempt_does_not_run_is_retired_not_stuck() {
    let mut t = running(0, 1, 0);
    t.healthy = false;
    t.surged = Some(Surged {
        version: 3,
        running: false,
    });
    let s = Snapshot {
        max_surge: 2,
        ..snap(0, vec![t])
    };
    let p = decide(&s);
    assert_eq!(p.retire, vec![0], "{p:?}");
    assert!(p.replace.is_empty() && p.surge.is_empty(), "{p:?}");
    // Once it is gone, the task surges.
    let s = Snapshot {
        tasks: vec![TaskSnap {
            surged: None,
            ..s.tasks[0].clone()
        }],
        ..s
    };
    assert_eq!(decide(&s).surge, vec![0]);
}

#[test]
fn an_unhealthy_replacement_is_not_ready_however_long_it_runs() {
    let mut t = running(0, 2, 3600);
    assert!(replaced_task_ready(&t, 2, MIN));
    t.healthy = false;
    assert!(!replaced_task_ready(&t, 2, MIN));
}

#[test]
fn surges_within_max_surge_then_replaces_within_max_unavailable() {
    let tasks: Vec<TaskSnap> = (0..4).map(|i| running(i, 1, 100)).collect();
    let s = Snapshot {
        max_surge: 2,
        ..snap(1, tasks.clone())
    };
    let p = decide(&s);
    assert_eq!((p.surge, p.replace), (vec![0, 1], vec![2]));
    let s = Snapshot {
        max_surge: 1,
        surges_stopping: 1,
        ..snap(0, tasks)
    };
    let p = decide(&s);
    assert!(
        !p.acts(),
        "a stopping superseded attempt holds the surge: {p:?}"
    );
}

fn surged(index: i32, new: Option<TaskSnap>) -> TaskSnap {
    TaskSnap {
        surged: Some(Surged {
            version: 1,
            running: true,
        }),
        ..new.unwrap_or_else(|| pending(index))
    }
}

#[test]
fn a_surging_task_is_up_and_its_old_attempt_stops_once_the_new_one_is_ready() {
    let s = Snapshot {
        max_surge: 1,
        ..snap(0, vec![surged(0, None), running(1, 1, 100)])
    };
    let p = decide(&s);
    assert_eq!(p.down, 0, "its old attempt serves");
    assert!(!p.acts(), "the surge is used: {p:?}");
    let s = Snapshot {
        max_surge: 1,
        ..snap(
            0,
            vec![surged(0, Some(running(0, 2, 1))), running(1, 1, 100)],
        )
    };
    assert!(!decide(&s).acts(), "not ready yet");
    let s = Snapshot {
        max_surge: 1,
        ..snap(
            0,
            vec![surged(0, Some(running(0, 2, 5))), running(1, 1, 100)],
        )
    };
    let p = decide(&s);
    assert_eq!((p.retire, p.surge), (vec![0], vec![]));
    let s = Snapshot {
        max_surge: 1,
        ..snap(0, vec![surged(0, Some(running(0, 2, 5))), running(1, 2, 5)])
    };
    let p = decide(&s);
    assert_eq!(
        (p.retire, p.outcome),
        (vec![0], Outcome::Continue),
        "not done while an old attempt runs aside"
    );
}

#[test]
fn a_rollback_restores_the_superseded_attempts_of_its_version() {
    // Rolling back to version 1: the old attempt of task 0 is the target again.
    let s = Snapshot {
        target: 1,
        max_surge: 1,
        ..snap(
            0,
            vec![surged(0, Some(running(0, 2, 1))), running(1, 1, 100)],
        )
    };
    let p = decide(&s);
    assert_eq!((p.restore, p.replace), (vec![0], vec![]));
}

/// A surging rollout with `max_unavailable: 0` in a world that brings tasks
/// up one stage per step and ends retired attempts the step after: every task
/// ends on the target, and all tasks serve at every step.
#[test]
fn a_simulated_surge_never_lowers_the_tasks_up() {
    for max_surge in 1..=3 {
        let n = 5;
        let mut tasks: Vec<TaskSnap> = (0..n).map(|i| running(i, 1, 100)).collect();
        let mut stopping = 0;
        let mut steps = 0;
        loop {
            let s = Snapshot {
                max_surge,
                surges_stopping: stopping,
                ..snap(0, tasks.clone())
            };
            let p = decide(&s);
            if p.outcome == Outcome::Done {
                break;
            }
            assert_eq!(p.outcome, Outcome::Continue);
            assert!(p.replace.is_empty() && p.restore.is_empty(), "{p:?}");
            stopping = 0;
            for i in &p.surge {
                tasks[*i as usize] = surged(*i, None);
            }
            for i in &p.retire {
                tasks[*i as usize].surged = None;
                stopping += 1;
            }
            let live_surges = tasks.iter().filter(|t| t.surged.is_some()).count() as i64;
            assert!(live_surges + stopping <= i64::from(max_surge));
            let serving = tasks
                .iter()
                .filter(|t| t.surged.is_some() || (t.state == TaskState::Running && !t.stopping))
                .count();
            assert_eq!(serving, n as usize, "step {steps}");
            for t in tasks.iter_mut() {
                *t = match (t.state, t.running_for) {
                    (TaskState::Pending, _) => TaskSnap {
                        state: TaskState::Starting,
                        version: Some(2),
                        ..t.clone()
                    },
                    (TaskState::Starting, _) => TaskSnap {
                        surged: t.surged.clone(),
                        ..running(t.index, 2, 0)
                    },
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
        assert!(tasks
            .iter()
            .all(|t| t.version == Some(2) && t.surged.is_none()));
    }
}
