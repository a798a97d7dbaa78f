use super::*;
use crate::snapshot::Victim;
use borg_shared::spec::{ConstraintOp, Spread};
use borg_shared::wire::PortRange;
use borg_shared::{Bytes, MilliCpu};
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use std::collections::BTreeMap;
use uuid::Uuid;

const GI: u64 = 1 << 30;
const MI: u64 = 1 << 20;

fn cap(cpu: u64, memory: u64, disk: u64) -> Capacity {
    Capacity {
        cpu: MilliCpu(cpu),
        memory: Bytes(memory),
        disk: Bytes(disk),
    }
}

fn uuid(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

struct MachineBuilder(Machine);

impl MachineBuilder {
    fn new(n: u128, name: &str) -> Self {
        MachineBuilder(Machine {
            id: MachineId(uuid(1000 + n)),
            name: name.to_string(),
            labels: BTreeMap::new(),
            capacity: cap(4000, 8 * GI, 100 * GI),
            used: cap(0, 0, 0),
            ports: PortRange::default(),
            used_ports: vec![],
        })
    }
    fn cap(mut self, cpu: u64, memory: u64) -> Self {
        self.0.capacity.cpu = MilliCpu(cpu);
        self.0.capacity.memory = Bytes(memory);
        self
    }
    fn disk(mut self, disk: u64) -> Self {
        self.0.capacity.disk = Bytes(disk);
        self
    }
    fn used(mut self, cpu: u64, memory: u64) -> Self {
        self.0.used.cpu = MilliCpu(cpu);
        self.0.used.memory = Bytes(memory);
        self
    }
    fn ports(mut self, first: u16, last: u16, used: &[u16]) -> Self {
        self.0.ports = PortRange { first, last };
        self.0.used_ports = used.to_vec();
        self
    }
    fn label(mut self, k: &str, v: &str) -> Self {
        self.0.labels.insert(k.to_string(), v.to_string());
        self
    }
    fn build(self) -> Machine {
        self.0
    }
}

struct TaskBuilder(PendingTask);

impl TaskBuilder {
    fn new(n: u128) -> Self {
        TaskBuilder(PendingTask {
            id: TaskId(uuid(n)),
            job_id: JobId(uuid(500_000 + n)),
            priority: 100,
            created_at: t0(),
            request: cap(100, 64 * MI, 0),
            constraints: Arc::from(Vec::new()),
            spread: None,
            ports: 0,
            owner: Arc::from("default"),
            name: format!("j/{n}"),
        })
    }
    fn owner(mut self, owner: &str) -> Self {
        self.0.owner = Arc::from(owner);
        self
    }
    fn ports(mut self, n: u16) -> Self {
        self.0.ports = n;
        self
    }
    fn job(mut self, n: u128) -> Self {
        self.0.job_id = JobId(uuid(500_000 + n));
        self
    }
    fn priority(mut self, p: i32) -> Self {
        self.0.priority = p;
        self
    }
    fn age(mut self, secs: i64) -> Self {
        self.0.created_at = t0() - chrono::Duration::seconds(secs);
        self
    }
    fn cpu(mut self, m: u64) -> Self {
        self.0.request.cpu = MilliCpu(m);
        self
    }
    fn mem(mut self, b: u64) -> Self {
        self.0.request.memory = Bytes(b);
        self
    }
    fn disk(mut self, b: u64) -> Self {
        self.0.request.disk = Bytes(b);
        self
    }
    fn constraint(mut self, label: &str, op: ConstraintOp, value: &str) -> Self {
        let mut v = self.0.constraints.to_vec();
        v.push(Constraint {
            label: label.to_string(),
            op,
            value: (!value.is_empty()).then(|| value.to_string()),
            values: vec![],
        });
        self.0.constraints = Arc::from(v);
        self
    }
    fn spread(mut self, label: Option<&str>, max_per_machine: Option<u32>) -> Self {
        self.0.spread = Some(Arc::new(Spread {
            label: label.map(str::to_string),
            max_per_machine,
        }));
        self
    }
    fn build(self) -> PendingTask {
        self.0
    }
}

fn snap(machines: Vec<Machine>) -> Snapshot {
    Snapshot {
        machines,
        ..Snapshot::default()
    }
}

fn reason_of(d: &[Decision], task: &PendingTask) -> String {
    match d.iter().find(|d| d.task() == task.id) {
        Some(Decision::Unplaceable { reason, .. }) => reason.clone(),
        other => panic!("expected unplaceable, got {other:?}"),
    }
}

fn ports_of(d: &[Decision], task: &PendingTask) -> Vec<u16> {
    match d.iter().find(|d| d.task() == task.id) {
        Some(Decision::Place { ports, .. }) => ports.clone(),
        other => panic!("expected a placement, got {other:?}"),
    }
}

fn machine_of(d: &[Decision], task: &PendingTask) -> MachineId {
    match d.iter().find(|d| d.task() == task.id) {
        Some(Decision::Place { machine, .. }) => *machine,
        other => panic!("expected a placement, got {other:?}"),
    }
}

// ---------- reasons ----------

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

// ---------- constraints and choice ----------

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
fn hybrid_spreads_a_job_before_packing_and_packs_other_jobs() {
    let ms = vec![
        MachineBuilder::new(1, "m1").build(),
        MachineBuilder::new(2, "m2").used(2000, 4 * GI).build(),
    ];
    // Two tasks of one job: the fuller m2 first, then m1 (no second task of
    // the job on m2 while m1 has none). Another job's task packs onto m2.
    let a0 = TaskBuilder::new(1).job(1).age(3).build();
    let a1 = TaskBuilder::new(2).job(1).age(2).build();
    let b0 = TaskBuilder::new(3).job(2).age(1).build();
    let d = place(&snap(ms.clone()), &[a0.clone(), a1.clone(), b0.clone()]);
    assert_eq!(machine_of(&d, &a0), ms[1].id);
    assert_eq!(machine_of(&d, &a1), ms[0].id);
    assert_eq!(machine_of(&d, &b0), ms[1].id);
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

// ---------- spread and max_per_machine ----------

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
    // fewest of the job goes first; within a group, the fewest on the machine.
    assert_eq!(zones, ["b", "a", "a"]);
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

// ---------- ports ----------

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

// ---------- quota ----------

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

// ---------- preemption ----------

fn victim(n: u128, priority: i32, cpu: u64) -> Victim {
    Victim {
        attempt: borg_shared::AttemptId(uuid(70_000 + n)),
        priority,
        request: cap(cpu, 0, 0),
        name: format!("v/{n}"),
    }
}

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

// ---------- properties ----------

const ZONES: [&str; 3] = ["a", "b", "c"];

fn arb_machine(i: usize) -> impl Strategy<Value = Machine> {
    (
        0u64..=4000,
        0u64..=4096,
        0u64..=2048,
        0u64..=4000,
        0u64..=4096,
        proptest::option::of(0usize..3),
        (0u16..6, proptest::collection::vec(9000u16..9006, 0..3)),
    )
        .prop_map(
            move |(cpu, mem_mi, disk_mi, ucpu, umem_mi, zone, (nports, used))| {
                let mut m = MachineBuilder::new(i as u128, &format!("m{i:02}"))
                    .cap(cpu, mem_mi * MI)
                    .disk(disk_mi * MI)
                    .used(ucpu.min(cpu), umem_mi.min(mem_mi) * MI)
                    .ports(9000, 9000 + nports, &used);
                if let Some(z) = zone {
                    m = m.label("zone", ZONES[z]);
                }
                m.build()
            },
        )
}

fn arb_constraints() -> impl Strategy<Value = Vec<Constraint>> {
    let one = (0usize..3, 0usize..5).prop_map(|(z, op)| {
        let (op, value) = match op {
            0 => (ConstraintOp::Eq, Some(ZONES[z].to_string())),
            1 => (ConstraintOp::Ne, Some(ZONES[z].to_string())),
            2 => (
                ConstraintOp::In,
                Some(format!("{},{}", ZONES[z], ZONES[(z + 1) % 3])),
            ),
            3 => (ConstraintOp::NotIn, Some(ZONES[z].to_string())),
            _ => (ConstraintOp::Exists, None),
        };
        Constraint {
            label: "zone".to_string(),
            op,
            value,
            values: vec![],
        }
    });
    proptest::collection::vec(one, 0..3)
}

#[derive(Debug, Clone)]
struct Case {
    machines: Vec<Machine>,
    /// In the (shuffled) order handed to place().
    tasks: Vec<PendingTask>,
}

fn arb_case() -> impl Strategy<Value = Case> {
    let machines = (0usize..8).prop_flat_map(|n| (0..n).map(arb_machine).collect::<Vec<_>>());
    // A handful of jobs, each with its constraints; tasks pick a job.
    let spread = proptest::option::of((proptest::bool::ANY, proptest::option::of(1u32..3)));
    let jobs = proptest::collection::vec((0i32..4, arb_constraints(), spread), 1..5);
    (machines, jobs)
        .prop_flat_map(|(machines, jobs)| {
            let njobs = jobs.len();
            let task = (
                0..njobs,
                0i64..5,
                0u64..=1500,
                0u64..=1500,
                0u64..=256,
                0u16..3,
            );
            (
                Just(machines),
                Just(jobs),
                proptest::collection::vec(task, 0..40),
            )
        })
        .prop_flat_map(|(machines, jobs, raw)| {
            type Job = (i32, Arc<[Constraint]>, Option<Arc<Spread>>);
            let jobs: Vec<Job> = jobs
                .into_iter()
                .map(|(p, c, spread)| {
                    let spread = spread.map(|(by_zone, max_per_machine)| {
                        Arc::new(Spread {
                            label: by_zone.then(|| "zone".to_string()),
                            max_per_machine,
                        })
                    });
                    (p, Arc::from(c), spread)
                })
                .collect();
            let tasks: Vec<PendingTask> = raw
                .into_iter()
                .enumerate()
                .map(|(n, (job, age, cpu, mem_mi, disk_mi, ports))| PendingTask {
                    id: TaskId(uuid(n as u128 + 1)),
                    job_id: JobId(uuid(900 + job as u128)),
                    priority: jobs[job].0,
                    created_at: t0() - chrono::Duration::seconds(age),
                    request: cap(cpu, mem_mi * MI, disk_mi * MI),
                    constraints: jobs[job].1.clone(),
                    spread: jobs[job].2.clone(),
                    ports,
                    owner: Arc::from("default"),
                    name: format!("t/{n}"),
                })
                .collect();
            (Just(machines), Just(tasks).prop_shuffle())
        })
        .prop_map(|(machines, tasks)| Case { machines, tasks })
}

fn matches_all(t: &PendingTask, m: &Machine) -> bool {
    t.constraints.iter().all(|c| c.matches(&m.labels))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn placement_invariants(case in arb_case()) {
        let snapshot = snap(case.machines.clone());
        let decisions = place(&snapshot, &case.tasks);
        let by_id: HashMap<TaskId, &PendingTask> = case.tasks.iter().map(|t| (t.id, t)).collect();
        let index: HashMap<MachineId, usize> =
            case.machines.iter().enumerate().map(|(i, m)| (m.id, i)).collect();

        // Every task decided exactly once.
        let mut decided = HashSet::new();
        for d in &decisions {
            prop_assert!(decided.insert(d.task()), "task decided twice: {:?}", d);
        }
        prop_assert_eq!(decided.len(), case.tasks.len());

        let mut placed_on: HashMap<TaskId, usize> = HashMap::new();
        let mut ports_held: HashSet<(usize, u16)> = HashSet::new();
        let mut used: Vec<Capacity> = case.machines.iter().map(|m| m.used).collect();
        for d in &decisions {
            match d {
                Decision::Place { task, machine, ports } => {
                    let t = by_id[task];
                    let i = index[machine];
                    prop_assert!(matches_all(t, &case.machines[i]), "constraints broken: {:?}", d);
                    // Ports: as many as asked, in the range, never one held already.
                    let m = &case.machines[i];
                    prop_assert_eq!(ports.len(), usize::from(t.ports));
                    for p in ports {
                        prop_assert!((m.ports.first..=m.ports.last).contains(p), "port {} outside {:?}", p, m.ports);
                        prop_assert!(!m.used_ports.contains(p), "port {} already in use on {}", p, m.name);
                        prop_assert!(ports_held.insert((i, *p)), "port {} given twice on {}", p, m.name);
                    }
                    used[i] = used[i].saturating_add(&t.request);
                    placed_on.insert(*task, i);
                }
                Decision::Unplaceable { reason, .. } => {
                    prop_assert!(!reason.trim().is_empty());
                }
                Decision::Preempt { .. } => {
                    prop_assert!(false, "nothing to preempt in these cases: {:?}", d);
                }
            }
        }
        // Never over-commit: what was already there plus the batch fits the capacity
        // (machines generated with used <= capacity).
        for (i, m) in case.machines.iter().enumerate() {
            prop_assert!(fits(&used[i], &m.capacity), "{} over-committed: {:?} > {:?}", m.name, used[i], m.capacity);
        }

        // Priority order: an unplaceable task did not fit even with only the tasks
        // ahead of it in the queue placed; lower ones never took its room.
        let mut queue: Vec<&PendingTask> = case.tasks.iter().collect();
        queue.sort_by(|a, b| a.queue_cmp(b));
        // Replayed with each job's tasks per machine: max_per_machine is never
        // exceeded, and a spread task went to a group holding the fewest of its job
        // among the machines it could go to.
        let mut free: Vec<Capacity> = case.machines.iter().map(Machine::free).collect();
        let mut on: HashMap<(JobId, usize), u32> = HashMap::new();
        let mut ports_free: Vec<usize> = case
            .machines
            .iter()
            .map(|m| {
                let held: HashSet<u16> = m
                    .used_ports
                    .iter()
                    .copied()
                    .filter(|p| (m.ports.first..=m.ports.last).contains(p))
                    .collect();
                m.ports.len() - held.len()
            })
            .collect();
        let zone = |i: usize| case.machines[i].labels.get("zone").cloned();
        let group = |on: &HashMap<(JobId, usize), u32>, job: JobId, i: usize| -> u32 {
            (0..case.machines.len())
                .filter(|&k| zone(k) == zone(i))
                .map(|k| on.get(&(job, k)).copied().unwrap_or(0))
                .sum()
        };
        for t in queue {
            let max = t.max_per_machine().unwrap_or(u32::MAX);
            let feasible = |i: usize, on: &HashMap<(JobId, usize), u32>, free: &[Capacity], ports_free: &[usize]| {
                matches_all(t, &case.machines[i])
                    && fits(&t.request, &free[i])
                    && on.get(&(t.job_id, i)).copied().unwrap_or(0) < max
                    && ports_free[i] >= usize::from(t.ports)
            };
            match placed_on.get(&t.id) {
                Some(&i) => {
                    prop_assert!(feasible(i, &on, &free, &ports_free), "task {} placed where it does not fit", t.id);
                    if t.spread_label().is_some() {
                        let mine = group(&on, t.job_id, i);
                        for k in 0..case.machines.len() {
                            prop_assert!(
                                !(feasible(k, &on, &free, &ports_free) && group(&on, t.job_id, k) < mine),
                                "spread task {} went to a fuller group than {}'s", t.id, case.machines[k].name
                            );
                        }
                    }
                    free[i] = sub(&free[i], &t.request);
                    ports_free[i] -= usize::from(t.ports);
                    *on.entry((t.job_id, i)).or_insert(0) += 1;
                }
                None => {
                    for (i, m) in case.machines.iter().enumerate() {
                        prop_assert!(
                            !feasible(i, &on, &free, &ports_free),
                            "task {} left unplaced but fits on {} given only higher-priority placements",
                            t.id, m.name
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn input_order_does_not_matter(case in arb_case()) {
        let snapshot = snap(case.machines.clone());
        let a = place(&snapshot, &case.tasks);
        let mut reversed = case.tasks.clone();
        reversed.reverse();
        let b = place(&snapshot, &reversed);
        prop_assert_eq!(a, b);
    }
}

fn arb_preemption_case() -> impl Strategy<Value = (Snapshot, Vec<PendingTask>)> {
    let machine = (
        500u64..=4000,
        proptest::collection::vec((0i32..400, 100u64..=1500), 0..4),
        0u64..=1500,
    );
    (
        proptest::collection::vec(machine, 1..5),
        proptest::collection::vec((0i32..400, 100u64..=2500), 1..12),
    )
        .prop_map(|(machines, tasks)| {
            let mut snapshot = snap(vec![]);
            let mut n = 0u128;
            for (i, (cpu, victims, stopping)) in machines.into_iter().enumerate() {
                let used: u64 = victims.iter().map(|(_, c)| c).sum::<u64>() + stopping;
                let m = MachineBuilder::new(i as u128, &format!("m{i}"))
                    .cap(cpu.max(used), 8 * GI)
                    .used(used, 0)
                    .build();
                let list = victims
                    .into_iter()
                    .map(|(p, c)| {
                        n += 1;
                        victim(n, p, c)
                    })
                    .collect();
                snapshot.victims.insert(m.id, list);
                if stopping > 0 {
                    snapshot.stopping.insert(m.id, cap(stopping, 0, 0));
                }
                snapshot.machines.push(m);
            }
            let tasks = tasks
                .into_iter()
                .enumerate()
                .map(|(k, (p, c))| TaskBuilder::new(k as u128 + 1).priority(p).cpu(c).build())
                .collect();
            (snapshot, tasks)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Only production preempts, only lower bands are preempted, a victim is
    /// taken once, the victims make enough room, and placements still never
    /// over-commit (victims keep their capacity until they have stopped).
    #[test]
    fn preemption_invariants((snapshot, tasks) in arb_preemption_case()) {
        let decisions = place(&snapshot, &tasks);
        let by_id: HashMap<TaskId, &PendingTask> = tasks.iter().map(|t| (t.id, t)).collect();
        let victims: HashMap<borg_shared::AttemptId, (MachineId, &Victim)> = snapshot
            .victims
            .iter()
            .flat_map(|(m, l)| l.iter().map(move |v| (v.attempt, (*m, v))))
            .collect();
        let mut taken = HashSet::new();
        let mut placed: HashMap<MachineId, u64> = HashMap::new();
        // Per machine: what preempting tasks will take, and the room their victims make.
        let mut promised: HashMap<MachineId, u64> = HashMap::new();
        let mut made: HashMap<MachineId, u64> = HashMap::new();
        for d in &decisions {
            match d {
                Decision::Preempt { task, machine, victims: chosen, .. } => {
                    let t = by_id[task];
                    prop_assert!(t.priority >= 200, "a batch task preempted: {:?}", d);
                    prop_assert!(!chosen.is_empty());
                    for a in chosen {
                        let (on, v) = victims[a];
                        prop_assert_eq!(on, *machine);
                        prop_assert!(v.priority < 200, "production preempted: {:?}", v);
                        prop_assert!(taken.insert(*a), "victim taken twice: {:?}", a);
                        *made.entry(*machine).or_insert(0) += v.request.cpu.0;
                    }
                    *promised.entry(*machine).or_insert(0) += t.request.cpu.0;
                }
                Decision::Place { task, machine, .. } => {
                    *placed.entry(*machine).or_insert(0) += by_id[task].request.cpu.0;
                }
                Decision::Unplaceable { .. } => {}
            }
        }
        for m in &snapshot.machines {
            let placed = placed.get(&m.id).copied().unwrap_or(0);
            prop_assert!(placed <= m.free().cpu.0, "{} over-committed", m.name);
            // Enough room made for every preempting task, beside what was placed now.
            let room = m.free().cpu.0
                + snapshot.stopping.get(&m.id).map_or(0, |c| c.cpu.0)
                + made.get(&m.id).copied().unwrap_or(0);
            prop_assert!(
                placed + promised.get(&m.id).copied().unwrap_or(0) <= room,
                "not enough room made on {}", m.name
            );
        }
    }
}
