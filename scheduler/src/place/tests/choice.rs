//! Placement tests: constraints and choice.

use super::*;

#[test]
fn constraints_pick_the_matching_machine() {
    let ms = vec![
        MachineBuilder::new(1, "m1").label("zone", "a").build(),
        MachineBuilder::new(2, "m2").label("zone", "b").build(),
        MachineBuilder::new(3, "m3").build(),
    ];
    let eq_b = TaskBuilder::new(1)
        .constraint("zone", ConstraintOp::Eq, "b")
        .build();
    let in_a = TaskBuilder::new(2)
        .constraint("zone", ConstraintOp::In, "a,c")
        .build();
    let unlabelled = TaskBuilder::new(3)
        .constraint("zone", ConstraintOp::NotIn, "a,b")
        .build();
    let d = place(
        &snap(ms.clone()),
        &[eq_b.clone(), in_a.clone(), unlabelled.clone()],
    );
    assert_eq!(machine_of(&d, &eq_b), ms[1].id);
    assert_eq!(machine_of(&d, &in_a), ms[0].id);
    assert_eq!(machine_of(&d, &unlabelled), ms[2].id);
}

#[test]
fn worst_fit_goes_to_the_emptiest_machine() {
    let ms = vec![
        MachineBuilder::new(1, "m-b").used(1000, GI).build(),
        MachineBuilder::new(2, "m-a").build(),
        MachineBuilder::new(3, "m-c").used(2000, 4 * GI).build(),
    ];
    let mut s = snap(ms.clone());
    s.scoring = crate::Scoring::WorstFit;
    let first = TaskBuilder::new(1).job(1).age(3).build();
    let second = TaskBuilder::new(2).job(2).age(2).build();
    let d = place(&s, &[second.clone(), first.clone()]);
    assert_eq!(machine_of(&d, &first), ms[1].id);
    // m-a now holds 100m and 64Mi: still emptier than m-b.
    assert_eq!(machine_of(&d, &second), ms[1].id);
}

#[test]
fn best_fit_packs_onto_the_fullest_machine_that_fits() {
    let ms = vec![
        MachineBuilder::new(1, "m1").build(),
        MachineBuilder::new(2, "m2").used(3000, 6 * GI).build(),
        MachineBuilder::new(3, "m3").used(3950, GI).build(),
    ];
    let mut s = snap(ms.clone());
    s.scoring = crate::Scoring::BestFit;
    let t = TaskBuilder::new(1).cpu(500).build();
    let d = place(&s, std::slice::from_ref(&t));
    // m3 is fuller but has only 50m free: m2 is the fullest that fits.
    assert_eq!(machine_of(&d, &t), ms[1].id);
}

#[test]
fn hybrid_packs_onto_used_machines_and_spreads_a_job_among_them() {
    let ms = vec![
        MachineBuilder::new(1, "m1").used(500, GI).build(),
        MachineBuilder::new(2, "m2").used(2000, 4 * GI).build(),
        MachineBuilder::new(3, "m3").build(),
    ];
    // Two tasks of one job: the fuller m2 first, then m1: in use too, and
    // without a task of the job (m3 is empty: opened only when nothing else
    // fits). Another job's task packs onto the fullest, m2.
    let a0 = TaskBuilder::new(1).job(1).age(3).build();
    let a1 = TaskBuilder::new(2).job(1).age(2).build();
    let b0 = TaskBuilder::new(3).job(2).age(1).build();
    let big = TaskBuilder::new(4).job(3).cpu(3900).build();
    let d = place(
        &snap(ms.clone()),
        &[a0.clone(), a1.clone(), b0.clone(), big.clone()],
    );
    assert_eq!(machine_of(&d, &a0), ms[1].id);
    assert_eq!(machine_of(&d, &a1), ms[0].id);
    assert_eq!(machine_of(&d, &b0), ms[1].id);
    assert_eq!(
        machine_of(&d, &big),
        ms[2].id,
        "only the empty machine fits it"
    );
}

#[test]
fn a_services_replicas_spread_over_machines_before_they_pack() {
    let ms = vec![
        MachineBuilder::new(1, "m1").used(500, GI).build(),
        MachineBuilder::new(2, "m2").build(),
        MachineBuilder::new(3, "m3").build(),
    ];
    // Three replicas of a service: the one machine in use first, then the
    // empty ones, one each (a batch job's three tasks all pack onto m1).
    let web: Vec<PendingTask> = (1..=3)
        .map(|n| {
            TaskBuilder::new(n)
                .job(1)
                .age(10 - n as i64)
                .service()
                .build()
        })
        .collect();
    let d = place(&snap(ms.clone()), &web);
    let on: Vec<MachineId> = web.iter().map(|t| machine_of(&d, t)).collect();
    assert_eq!(on[0], ms[0].id, "in use before empty");
    let mut spread = on.clone();
    spread.sort();
    spread.dedup();
    assert_eq!(spread.len(), 3, "one replica per machine: {on:?}");

    let batch: Vec<PendingTask> = (4..=6)
        .map(|n| TaskBuilder::new(n).job(2).age(10 - n as i64).build())
        .collect();
    let d = place(&snap(ms.clone()), &batch);
    for t in &batch {
        assert_eq!(machine_of(&d, t), ms[0].id, "a batch job packs");
    }

    // With a replica already on every machine, the next goes where fewest are.
    let mut s = snap(ms.clone());
    s.job_counts.insert(
        web[0].job_id,
        [(ms[0].id, 2), (ms[1].id, 1), (ms[2].id, 2)]
            .into_iter()
            .collect(),
    );
    let more = TaskBuilder::new(7).job(1).service().build();
    let d = place(&s, std::slice::from_ref(&more));
    assert_eq!(machine_of(&d, &more), ms[1].id);
}

#[test]
fn higher_priority_wins_the_last_slot_whatever_the_input_order() {
    let ms = vec![MachineBuilder::new(1, "m1").cap(1000, 8 * GI).build()];
    let low = TaskBuilder::new(1).priority(10).age(100).cpu(1000).build();
    let high = TaskBuilder::new(2).priority(500).cpu(1000).build();
    let d = place(&snap(ms), &[low.clone(), high.clone()]);
    assert_eq!(d[0].task(), high.id, "decisions come in queue order");
    machine_of(&d, &high);
    reason_of(&d, &low);
}

#[test]
fn older_first_within_a_priority() {
    let ms = vec![MachineBuilder::new(1, "m1").cap(1000, 8 * GI).build()];
    let young = TaskBuilder::new(1).age(1).cpu(1000).build();
    let old = TaskBuilder::new(2).age(60).cpu(1000).build();
    let d = place(&snap(ms), &[young.clone(), old.clone()]);
    machine_of(&d, &old);
    reason_of(&d, &young);
}

#[test]
fn a_task_given_twice_is_decided_once() {
    let ms = vec![MachineBuilder::new(1, "m1").build()];
    let t = TaskBuilder::new(1).build();
    let d = place(&snap(ms), &[t.clone(), t.clone()]);
    assert_eq!(d.len(), 1);
}

#[test]
fn mixed_constraints_within_one_job_are_not_confused_by_the_cache() {
    let ms = vec![
        MachineBuilder::new(1, "m1").label("zone", "a").build(),
        MachineBuilder::new(2, "m2").label("zone", "b").build(),
    ];
    let a = TaskBuilder::new(1)
        .job(7)
        .constraint("zone", ConstraintOp::Eq, "a")
        .build();
    let b = TaskBuilder::new(2)
        .job(7)
        .constraint("zone", ConstraintOp::Eq, "b")
        .build();
    let d = place(&snap(ms.clone()), &[a.clone(), b.clone()]);
    assert_eq!(machine_of(&d, &a), ms[0].id);
    assert_eq!(machine_of(&d, &b), ms[1].id);
}

#[test]
fn over_used_machine_counts_as_full() {
    let ms = vec![MachineBuilder::new(1, "m1")
        .cap(1000, GI)
        .used(1500, 0)
        .build()];
    let t = TaskBuilder::new(1).cpu(1).build();
    let d = place(&snap(ms), std::slice::from_ref(&t));
    assert_eq!(
        reason_of(&d, &t),
        "0/1 machines fit: 1 insufficient cpu (nearest: m1 has 0 of 1m)"
    );
}

#[test]
fn a_task_that_failed_on_a_machine_goes_elsewhere_while_another_fits() {
    // m1 is where packing (and the job's other task) would put it.
    let ms = vec![
        MachineBuilder::new(1, "m1").used(3000, 6 * GI).build(),
        MachineBuilder::new(2, "m2").build(),
        MachineBuilder::new(3, "m3").used(3950, 7 * GI).build(),
    ];
    for scoring in [
        crate::Scoring::Hybrid,
        crate::Scoring::BestFit,
        crate::Scoring::WorstFit,
    ] {
        let mut s = snap(ms.clone());
        s.scoring = scoring;
        let fresh = TaskBuilder::new(1).build();
        let d = place(&s, std::slice::from_ref(&fresh));
        let packed = machine_of(&d, &fresh);
        let failed = TaskBuilder::new(1).failed_on(packed).build();
        let d = place(&s, std::slice::from_ref(&failed));
        let moved = machine_of(&d, &failed);
        assert_ne!(moved, packed, "{scoring:?}: back where it failed");
        // The machine it failed on is still taken when nothing else fits.
        let only = TaskBuilder::new(2).cpu(1000).failed_on(ms[0].id).build();
        let d = place(
            &snap(vec![ms[0].clone(), ms[2].clone()]),
            std::slice::from_ref(&only),
        );
        assert_eq!(machine_of(&d, &only), ms[0].id, "{scoring:?}");
    }
}
