use super::*;
use crate::snapshot::Victim;
use borg_shared::spec::{Constraint, ConstraintOp, Spread};
use borg_shared::wire::PortRange;
use borg_shared::JobId;
use borg_shared::{Bytes, MilliCpu};
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;
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
            failed_on: None,
            service: false,
        })
    }
    fn service(mut self) -> Self {
        self.0.service = true;
        self
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
    fn failed_on(mut self, machine: MachineId) -> Self {
        self.0.failed_on = Some(machine);
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

fn victim(n: u128, priority: i32, cpu: u64) -> Victim {
    Victim {
        attempt: borg_shared::AttemptId(uuid(70_000 + n)),
        priority,
        request: cap(cpu, 0, 0),
        name: format!("v/{n}"),
    }
}

mod choice;
mod ports;
mod preempt;
mod props;
mod quota;
mod reasons;
mod spread;
