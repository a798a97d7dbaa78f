//! Fixed views for rendering tests (no clock, no network: data in, text out).
use borg_shared::spec::JobSpec;
use borg_shared::wire::{
    Capacity, EventView, IsolationMode, JobView, MachineView, ResourceUsage, TaskView,
};
use borg_shared::{Bytes, JobId, JobKind, JobState, MachineId, MachineState, MilliCpu, TaskState};
use chrono::{DateTime, TimeZone, Utc};
use std::collections::BTreeMap;

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap()
}

pub fn spec(name: &str, replicas: i64) -> JobSpec {
    let text = format!(
        "name: {name}\nreplicas: {replicas}\ntask:\n  command: [\"/bin/sh\", \"-c\", \"echo hi\"]\n  resources: {{cpu: 0.25, memory: 64Mi}}\n"
    );
    JobSpec::from_yaml(&text).expect("fixture spec parses")
}

pub fn task(index: i32, state: TaskState) -> TaskView {
    TaskView {
        index,
        state,
        reason: None,
        machine: None,
        attempt: None,
        version: None,
        runs: 0,
        pid: None,
        exit_code: None,
        signal: None,
        restarts: 0,
        last_exit: None,
        updated_at: t0(),
        usage: None,
        death: None,
        healthy: None,
        health_message: None,
        backoff: false,
        superseded: None,
    }
}

pub fn job(name: &str, kind: JobKind, state: JobState, tasks: Vec<TaskView>) -> JobView {
    let mut counts = BTreeMap::new();
    for t in &tasks {
        *counts.entry(t.state).or_insert(0) += 1;
    }
    JobView {
        id: JobId(uuid::Uuid::from_u128(0x10b)),
        name: name.into(),
        kind,
        state,
        owner: "default".into(),
        priority: 100,
        replicas: tasks.len() as i64,
        version: 1,
        created_at: t0(),
        finished_at: None,
        task_counts: counts,
        spec: spec(name, (tasks.len() as i64).max(1)),
        tasks: Some(tasks),
        tasks_next: None,
        events: Some(vec![]),
    }
}

pub fn event(id: i64, job: &str, index: i32, from: Option<TaskState>, to: TaskState) -> EventView {
    EventView {
        id,
        time: t0(),
        job: job.into(),
        task_index: Some(index),
        attempt: None,
        machine: None,
        from,
        to,
        reason: None,
    }
}

pub fn machine(name: &str, zone: &str) -> MachineView {
    MachineView {
        id: MachineId(uuid::Uuid::from_u128(0x3ac)),
        name: name.into(),
        address: format!("http://127.0.0.1:770{}", &name[1..]),
        state: MachineState::Up,
        labels: [("zone".to_string(), zone.to_string())].into(),
        capacity: Capacity {
            cpu: MilliCpu(2000),
            memory: Bytes(4 << 30),
            disk: Bytes(10 << 30),
        },
        ports: Default::default(),
        allocated: Capacity {
            cpu: MilliCpu(250),
            memory: Bytes(64 << 20),
            disk: Bytes(0),
        },
        tasks: 1,
        last_heard: Some(t0()),
        isolation: Some(IsolationMode::V1),
        version: Some("0.1.0".into()),
        usage: Some(ResourceUsage {
            cpu: MilliCpu(120),
            memory: Bytes(30 << 20),
        }),
    }
}

/// A fixed attempt id, distinct per `n`.
pub fn attempt(n: u128) -> borg_shared::AttemptId {
    borg_shared::AttemptId(uuid::Uuid::from_u128((0xa77e_0000 + n) << 96 | n))
}
