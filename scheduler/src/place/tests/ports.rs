//! Placement tests: ports.

use super::*;

#[test]
fn ports_are_the_lowest_free_in_the_range_and_never_shared() {
    let ms = vec![MachineBuilder::new(1, "m1")
        .ports(8000, 8004, &[8001])
        .build()];
    let a = TaskBuilder::new(1).age(2).ports(2).build();
    let b = TaskBuilder::new(2).age(1).ports(2).build();
    let c = TaskBuilder::new(3).ports(1).build();
    let d = place(&snap(ms), &[a.clone(), b.clone(), c.clone()]);
    assert_eq!(ports_of(&d, &a), [8000, 8002]);
    assert_eq!(ports_of(&d, &b), [8003, 8004]);
    assert_eq!(
        reason_of(&d, &c),
        "0/1 machines fit: 1 fewer than 1 free ports"
    );
}

#[test]
fn a_task_without_ports_gets_none_and_ignores_a_full_range() {
    let ms = vec![MachineBuilder::new(1, "m1")
        .ports(8000, 8000, &[8000])
        .build()];
    let t = TaskBuilder::new(1).build();
    let d = place(&snap(ms), std::slice::from_ref(&t));
    assert!(ports_of(&d, &t).is_empty());
}
