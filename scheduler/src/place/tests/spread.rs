//! Placement tests: spread and max_per_machine.

use super::*;

#[test]
fn max_per_machine_counts_what_already_runs_and_the_batch() {
    let ms = vec![
        MachineBuilder::new(1, "m1").build(),
        MachineBuilder::new(2, "m2").build(),
    ];
    let tasks: Vec<PendingTask> = (1..=3)
        .map(|n| {
            TaskBuilder::new(n)
                .job(9)
                .age(10 - n as i64)
                .spread(None, Some(1))
                .build()
        })
        .collect();
    let mut snapshot = snap(ms.clone());
    // One of the job's tasks already runs on m2.
    snapshot
        .job_counts
        .insert(tasks[0].job_id, HashMap::from([(ms[1].id, 1)]));
    let d = place(&snapshot, &tasks);
    assert_eq!(machine_of(&d, &tasks[0]), ms[0].id);
    assert_eq!(
        reason_of(&d, &tasks[1]),
        "0/2 machines fit: 2 already hold max_per_machine 1 of the job"
    );
}

#[test]
fn spread_evens_a_job_over_the_label_values_before_scoring() {
    // Zone a has two big empty machines, zone b one small busy one.
    let ms = vec![
        MachineBuilder::new(1, "a1")
            .label("zone", "a")
            .cap(16000, 64 * GI)
            .build(),
        MachineBuilder::new(2, "a2")
            .label("zone", "a")
            .cap(16000, 64 * GI)
            .build(),
        MachineBuilder::new(3, "b1")
            .label("zone", "b")
            .used(3000, 6 * GI)
            .build(),
    ];
    let tasks: Vec<PendingTask> = (1..=3)
        .map(|n| {
            TaskBuilder::new(n)
                .job(4)
                .age(10 - n as i64)
                .spread(Some("zone"), None)
                .build()
        })
        .collect();
    let d = place(&snap(ms.clone()), &tasks);
    let zones: Vec<&str> = tasks
        .iter()
        .map(|t| {
            let m = machine_of(&d, t);
            ms.iter().find(|x| x.id == m).unwrap().labels["zone"].as_str()
        })
        .collect();
    // Best fit alone would put all three on the busy b1. The group with the
    // fewest of the job goes first: b1 (in use, fullest), then zone a (which
    // has none), then with one in each zone, b1 again (in use and fullest).
    assert_eq!(zones, ["b", "a", "b"]);
}

#[test]
fn spread_counts_the_job_where_it_already_runs() {
    let ms = vec![
        MachineBuilder::new(1, "a1").label("zone", "a").build(),
        MachineBuilder::new(2, "b1").label("zone", "b").build(),
    ];
    let t = TaskBuilder::new(1)
        .job(4)
        .spread(Some("zone"), None)
        .build();
    let mut snapshot = snap(ms.clone());
    snapshot
        .job_counts
        .insert(t.job_id, HashMap::from([(ms[0].id, 2), (ms[1].id, 1)]));
    let d = place(&snapshot, std::slice::from_ref(&t));
    assert_eq!(machine_of(&d, &t), ms[1].id);
}

#[test]
fn reasons_count_machines_per_cause_most_first() {
    let mut ms: Vec<Machine> = (0..5)
        .map(|n| {
            MachineBuilder::new(n, &format!("m{n}"))
                .cap(1000, GI)
                .label("zone", "a")
                .build()
        })
        .collect();
    ms.push(MachineBuilder::new(9, "m9").label("zone", "b").build());
    let t = TaskBuilder::new(1)
        .mem(4 * GI)
        .constraint("zone", ConstraintOp::Eq, "a")
        .build();
    let d = place(&snap(ms), std::slice::from_ref(&t));
    assert_eq!(
        reason_of(&d, &t),
        "0/6 machines fit: 5 insufficient memory (nearest: m0 has 1Gi of 4Gi), 1 zone = a"
    );
}
