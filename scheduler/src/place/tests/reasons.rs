//! Placement tests: reasons.

use super::*;

#[test]
fn no_machines_are_up() {
    let t = TaskBuilder::new(1).build();
    let d = place(&snap(vec![]), std::slice::from_ref(&t));
    assert_eq!(reason_of(&d, &t), "no machines are up");
}

#[test]
fn no_up_machine_matches_the_constraint() {
    let ms = vec![
        MachineBuilder::new(1, "m1").label("zone", "b").build(),
        MachineBuilder::new(2, "m2").build(),
    ];
    let t = TaskBuilder::new(1)
        .constraint("zone", ConstraintOp::Ne, "b")
        .constraint("zone", ConstraintOp::Exists, "")
        .build();
    let d = place(&snap(ms), std::slice::from_ref(&t));
    // Each constraint alone matches a machine; together none.
    assert_eq!(
        reason_of(&d, &t),
        "0/2 machines fit: 1 zone != b, 1 zone exists"
    );
}

#[test]
fn names_only_the_constraint_that_excludes_everything() {
    let ms = vec![MachineBuilder::new(1, "m1").label("zone", "b").build()];
    let t = TaskBuilder::new(1)
        .constraint("zone", ConstraintOp::Exists, "")
        .constraint("zone", ConstraintOp::Ne, "b")
        .build();
    let d = place(&snap(ms), std::slice::from_ref(&t));
    assert_eq!(reason_of(&d, &t), "0/1 machines fit: 1 zone != b");
}

#[test]
fn no_machine_has_the_memory_names_the_most_free() {
    let ms = vec![
        MachineBuilder::new(1, "m1").cap(8000, 4 * GI).build(),
        MachineBuilder::new(2, "m2")
            .cap(8000, 8 * GI)
            .used(0, GI / 2)
            .build(),
    ];
    let t = TaskBuilder::new(1).cpu(1000).mem(64 * GI).build();
    let d = place(&snap(ms), std::slice::from_ref(&t));
    assert_eq!(
        reason_of(&d, &t),
        "0/2 machines fit: 2 insufficient memory (nearest: m2 has 7.5Gi of 64Gi)"
    );
}

#[test]
fn cpu_is_named_before_memory() {
    let ms = vec![MachineBuilder::new(1, "m1").cap(1000, GI).build()];
    let t = TaskBuilder::new(1).cpu(2500).mem(2 * GI).build();
    let d = place(&snap(ms), std::slice::from_ref(&t));
    assert_eq!(
        reason_of(&d, &t),
        "0/1 machines fit: 1 insufficient cpu (nearest: m1 has 1 of 2500m)"
    );
}

#[test]
fn disk_reason() {
    let ms = vec![MachineBuilder::new(1, "m1").disk(10 * GI).build()];
    let t = TaskBuilder::new(1).disk(20 * GI).build();
    let d = place(&snap(ms), std::slice::from_ref(&t));
    assert_eq!(
        reason_of(&d, &t),
        "0/1 machines fit: 1 insufficient disk (nearest: m1 has 10Gi of 20Gi)"
    );
}

#[test]
fn resources_reason_mentions_the_constraints_that_narrowed_the_field() {
    let ms = vec![
        MachineBuilder::new(1, "m1")
            .cap(1000, GI)
            .label("zone", "a")
            .build(),
        MachineBuilder::new(2, "m2")
            .cap(8000, 8 * GI)
            .label("zone", "b")
            .build(),
    ];
    let t = TaskBuilder::new(1)
        .cpu(2000)
        .constraint("zone", ConstraintOp::Eq, "a")
        .build();
    let d = place(&snap(ms), std::slice::from_ref(&t));
    assert_eq!(
        reason_of(&d, &t),
        "0/2 machines fit: 1 zone = a, 1 insufficient cpu (nearest: m1 has 1 of 2)"
    );
}

#[test]
fn no_single_machine_has_everything() {
    let ms = vec![
        MachineBuilder::new(1, "m1").cap(4000, GI).build(),
        MachineBuilder::new(2, "m2").cap(1000, 8 * GI).build(),
    ];
    let t = TaskBuilder::new(1).cpu(2000).mem(2 * GI).build();
    let d = place(&snap(ms), std::slice::from_ref(&t));
    assert_eq!(
        reason_of(&d, &t),
        "0/2 machines fit: 1 insufficient cpu (nearest: m2 has 1 of 2), 1 insufficient memory (nearest: m1 has 1Gi of 2Gi)"
    );
}

#[test]
fn reason_accounts_for_earlier_placements_in_the_batch() {
    let ms = vec![MachineBuilder::new(1, "m1").cap(1000, 8 * GI).build()];
    let big = TaskBuilder::new(1).priority(200).cpu(800).build();
    let small = TaskBuilder::new(2).priority(100).cpu(300).build();
    let d = place(&snap(ms), &[small.clone(), big.clone()]);
    machine_of(&d, &big);
    assert_eq!(
        reason_of(&d, &small),
        "0/1 machines fit: 1 insufficient cpu (nearest: m1 has 200m of 300m)"
    );
}
