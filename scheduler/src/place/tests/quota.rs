//! Placement tests: quota.

use super::*;

#[test]
fn a_task_over_its_owners_quota_waits_and_says_by_how_much() {
    use borg_shared::quota::{Band, Limits};
    let ms = vec![MachineBuilder::new(1, "m1").cap(16000, 64 * GI).build()];
    let mut snapshot = snap(ms);
    snapshot.quotas.insert(
        ("alice".into(), Band::Production),
        Limits {
            cpu: Some(MilliCpu(10_000)),
            memory: None,
        },
    );
    snapshot
        .quota_used
        .insert(("alice".into(), Band::Production), cap(6000, GI, 0));
    // In queue order: 3 cores fit (6 + 3 <= 10), then 4 do not (9 + 4 > 10), then
    // 1 still fits; another job of alice's also waits, second in line; alice's
    // batch band and bob have no quota.
    let fits = TaskBuilder::new(1)
        .job(1)
        .owner("alice")
        .priority(300)
        .age(9)
        .cpu(3000)
        .build();
    let over = TaskBuilder::new(2)
        .job(2)
        .owner("alice")
        .priority(300)
        .age(8)
        .cpu(4000)
        .build();
    let small = TaskBuilder::new(3)
        .job(3)
        .owner("alice")
        .priority(300)
        .age(7)
        .cpu(1000)
        .build();
    let over2 = TaskBuilder::new(4)
        .job(4)
        .owner("alice")
        .priority(300)
        .age(6)
        .cpu(2000)
        .build();
    let batch = TaskBuilder::new(5)
        .job(5)
        .owner("alice")
        .priority(100)
        .cpu(2000)
        .build();
    let bob = TaskBuilder::new(6)
        .job(6)
        .owner("bob")
        .priority(300)
        .cpu(2000)
        .build();
    let tasks = [
        fits.clone(),
        over.clone(),
        small.clone(),
        over2.clone(),
        batch.clone(),
        bob.clone(),
    ];
    let d = place(&snapshot, &tasks);
    machine_of(&d, &fits);
    assert_eq!(
        reason_of(&d, &over),
        "waiting for quota: owner alice, production cpu 10, in use 9, asks 4 (job 1 in line for it)"
    );
    machine_of(&d, &small);
    assert_eq!(
        reason_of(&d, &over2),
        "waiting for quota: owner alice, production cpu 10, in use 10, asks 2 (job 2 in line for it)"
    );
    machine_of(&d, &batch);
    machine_of(&d, &bob);
}
