//! Placement tests: preemption.

use super::*;

fn preempted(
    d: &[Decision],
    task: &PendingTask,
) -> (MachineId, Vec<borg_shared::AttemptId>, String) {
    match d.iter().find(|d| d.task() == task.id) {
        Some(Decision::Preempt {
            machine,
            victims,
            reason,
            ..
        }) => (*machine, victims.clone(), reason.clone()),
        other => panic!("expected a preemption, got {other:?}"),
    }
}

/// Two full machines: m1 runs priority 50 and 150 tasks, m2 two priority 20 ones.
fn full_cell() -> Snapshot {
    let ms = vec![
        MachineBuilder::new(1, "m1")
            .cap(2000, 8 * GI)
            .used(2000, 0)
            .build(),
        MachineBuilder::new(2, "m2")
            .cap(2000, 8 * GI)
            .used(2000, 0)
            .build(),
    ];
    let mut s = snap(ms.clone());
    s.victims
        .insert(ms[0].id, vec![victim(1, 50, 1000), victim(2, 150, 1000)]);
    s.victims
        .insert(ms[1].id, vec![victim(3, 20, 1000), victim(4, 20, 1000)]);
    s
}

#[test]
fn production_preempts_the_lowest_priorities_where_it_evicts_least() {
    let s = full_cell();
    let prod = TaskBuilder::new(1).priority(300).cpu(1000).build();
    let d = place(&s, std::slice::from_ref(&prod));
    let (machine, victims, reason) = preempted(&d, &prod);
    // m2's lowest victim (20) beats m1's (50); one of them is enough.
    assert_eq!(machine, s.machines[1].id);
    assert_eq!(victims.len(), 1);
    assert_eq!(reason, "preempting 1 task on m2: v/3");
}

#[test]
fn a_batch_task_never_preempts_and_production_never_preempts_production() {
    let mut s = full_cell();
    let batch = TaskBuilder::new(1).priority(199).cpu(1000).build();
    let d = place(&s, std::slice::from_ref(&batch));
    reason_of(&d, &batch);
    // Only production tasks left on the machines: nothing to preempt.
    for list in s.victims.values_mut() {
        for v in list.iter_mut() {
            v.priority = 200;
        }
    }
    let prod = TaskBuilder::new(2).priority(900).cpu(1000).build();
    let d = place(&s, std::slice::from_ref(&prod));
    reason_of(&d, &prod);
}

#[test]
fn a_task_waiting_for_its_victims_does_not_preempt_again() {
    let mut s = full_cell();
    // A previous pass asked 1 core on m1 to stop.
    s.stopping.insert(s.machines[0].id, cap(1000, 0, 0));
    let prod = TaskBuilder::new(1).priority(300).cpu(1000).build();
    let other = TaskBuilder::new(2).priority(250).cpu(1000).build();
    let d = place(&s, &[prod.clone(), other.clone()]);
    assert_eq!(
        reason_of(&d, &prod),
        "waiting for preempted tasks to stop on m1"
    );
    // The next production task does not count on the same room: it preempts.
    preempted(&d, &other);
}

#[test]
fn victims_are_not_taken_twice_in_a_batch() {
    let s = full_cell();
    let tasks: Vec<PendingTask> = (1..=5)
        .map(|n| {
            TaskBuilder::new(n)
                .priority(300)
                .age(10 - n as i64)
                .cpu(1000)
                .build()
        })
        .collect();
    let d = place(&s, &tasks);
    let mut all = HashSet::new();
    for t in &tasks[..4] {
        for v in preempted(&d, t).1 {
            assert!(all.insert(v), "victim {v:?} taken twice");
        }
    }
    assert_eq!(all.len(), 4);
    // Nothing left to preempt for the fifth.
    reason_of(&d, &tasks[4]);
}
