//! Snapshot tests of what people read: `get` (normal and wide), `describe`,
//! and the one-line errors, each rendered from fixed data at a fixed clock.
//! A change of layout shows as a diff of `snapshots/*.snap`; review it and
//! accept with `cargo insta review` (or `INSTA_UPDATE=always`).

use super::fixtures::*;
use super::*;
use crate::client::ClientError;
use crate::cmd::describe;
use crate::cmd::describe_more::{render_machine, render_task};
use borg_shared::event_stream::{EventKind, StreamEvent};
use borg_shared::wire::{DeathCause, DeathCertificate, ResourceUsage};
use borg_shared::{ApiError, Bytes, JobKind, JobState, MachineState, MilliCpu, TaskState};
use chrono::Duration;
use reqwest::StatusCode;

fn usage(cpu: u64, mib: u64) -> Option<ResourceUsage> {
    Some(ResourceUsage {
        cpu: MilliCpu(cpu),
        memory: Bytes(mib << 20),
    })
}

/// A service of four tasks in every interesting state, on version 2.
fn web() -> JobView {
    let mut a = task(0, TaskState::Running);
    a.machine = Some("m1".into());
    a.attempt = Some(attempt(1));
    a.version = Some(2);
    a.runs = 1;
    a.pid = Some(4242);
    a.usage = usage(120, 30);
    a.healthy = Some(true);
    let mut b = task(1, TaskState::Running);
    b.machine = Some("m2".into());
    b.attempt = Some(attempt(2));
    b.version = Some(1);
    b.runs = 3;
    b.pid = Some(4343);
    b.restarts = 2;
    b.last_exit = Some("exited with code 3".into());
    b.usage = usage(1500, 48);
    b.healthy = Some(false);
    b.health_message = Some("GET /healthz: 503".into());
    let mut c = task(2, TaskState::Pending);
    c.reason = Some("no machine has 4Gi free memory (most free: 3968Mi on m1)".into());
    let mut d = task(3, TaskState::Failed);
    d.machine = Some("m3".into());
    d.attempt = Some(attempt(3));
    d.version = Some(2);
    d.runs = 3;
    d.signal = Some(9);
    d.reason = Some("oom-killed".into());
    d.death = Some(DeathCertificate {
        cause: DeathCause::OomKilled,
        exit_code: None,
        signal: Some(9),
        killed_by: None,
        peak_memory: Some(Bytes(64 << 20)),
        stderr_tail: Some("allocating\nallocating more\n".into()),
    });
    let mut j = job("web", JobKind::Service, JobState::Running, vec![a, b, c, d]);
    j.version = 2;
    j.spec.task.resources.ports = 2;
    let mut e1 = event(1, "web", 0, None, TaskState::Pending);
    e1.time = t0();
    let mut e2 = event(2, "web", 0, Some(TaskState::Pending), TaskState::Running);
    e2.time = t0() + Duration::seconds(2);
    e2.machine = Some("m1".into());
    let mut e3 = event(3, "web", 2, None, TaskState::Pending);
    e3.reason = Some("no machine has 4Gi free memory".into());
    let mut e4 = event(4, "web", 3, Some(TaskState::Running), TaskState::Failed);
    e4.time = t0() + Duration::seconds(40);
    e4.machine = Some("m3".into());
    e4.reason = Some("oom-killed".into());
    j.events = Some(vec![e1, e2, e3, e4]);
    j
}

fn jobs() -> Vec<JobView> {
    let mut done = job(
        "hello",
        JobKind::Batch,
        JobState::Succeeded,
        vec![task(0, TaskState::Succeeded), task(1, TaskState::Succeeded)],
    );
    done.finished_at = Some(t0() + Duration::seconds(30));
    done.owner = "alice".into();
    vec![web(), done]
}

fn machines() -> Vec<MachineView> {
    let mut m2 = machine("m2", "b");
    m2.state = MachineState::Draining;
    m2.usage = None;
    let mut m3 = machine("m3", "c");
    m3.state = MachineState::Down;
    m3.last_heard = None;
    m3.tasks = 0;
    m3.allocated = Default::default();
    vec![machine("m1", "a"), m2, m3]
}

fn placement() -> Placement {
    let resolved = borg_shared::naming::Resolved {
        job: "web".into(),
        tasks: vec![
            borg_shared::naming::ResolvedTask {
                index: 0,
                machine: "m1".into(),
                host: "10.0.0.1".into(),
                attempt: attempt(1),
                ports: vec![20000, 20001],
            },
            borg_shared::naming::ResolvedTask {
                index: 1,
                machine: "m2".into(),
                host: "127.0.0.1".into(),
                attempt: attempt(2),
                ports: vec![20002, 20003],
            },
        ],
    };
    Placement::new(&machines(), &resolved)
}

fn now() -> DateTime<Utc> {
    t0() + Duration::minutes(5)
}

#[test]
fn get_jobs() {
    insta::assert_snapshot!(jobs_table(&jobs(), now()));
}

#[test]
fn get_jobs_wide() {
    insta::assert_snapshot!(jobs_table_wide(&jobs(), now()));
}

#[test]
fn get_tasks() {
    let j = web();
    insta::assert_snapshot!(tasks_table(&j, j.tasks.as_deref().unwrap(), now()));
}

#[test]
fn get_tasks_wide() {
    let j = web();
    let tasks = j.tasks.as_deref().unwrap();
    insta::assert_snapshot!(tasks_table_wide(&j, tasks, &placement(), now()));
}

#[test]
fn get_machines() {
    insta::assert_snapshot!(machines_table(&machines(), now()));
}

#[test]
fn get_machines_wide() {
    insta::assert_snapshot!(machines_table_wide(&machines(), now()));
}

#[test]
fn get_machines_yaml() {
    insta::assert_snapshot!(yaml(&machines()[..1]).unwrap());
}

#[test]
fn describe_job() {
    insta::assert_snapshot!(describe::render_with(&web(), &placement(), now()));
}

#[test]
fn describe_task_running_with_ports() {
    let j = web();
    let t = &j.tasks.as_deref().unwrap()[1];
    insta::assert_snapshot!(render_task(&j, t, &placement(), now()));
}

#[test]
fn describe_task_pending() {
    let j = web();
    let t = &j.tasks.as_deref().unwrap()[2];
    insta::assert_snapshot!(render_task(&j, t, &Placement::default(), now()));
}

#[test]
fn describe_task_dead() {
    let j = web();
    let t = &j.tasks.as_deref().unwrap()[3];
    insta::assert_snapshot!(render_task(&j, t, &placement(), now()));
}

#[test]
fn describe_machine() {
    let e =
        |id: i64, kind: EventKind, task: Option<i32>, from: Option<&str>, to: &str| StreamEvent {
            cursor: format!("100-{id}"),
            id,
            time: t0() + Duration::seconds(id),
            kind,
            job: task.map(|_| "web".to_string()),
            owner: None,
            job_id: None,
            task_index: task,
            attempt: None,
            machine: Some("m1".into()),
            from: from.map(str::to_string),
            to: to.into(),
            reason: None,
        };
    let events = vec![
        e(1, EventKind::Machine, None, None, "up"),
        e(2, EventKind::Task, Some(0), Some("assigned"), "running"),
    ];
    insta::assert_snapshot!(render_machine(&machines()[0], &events, now()));
}

#[test]
fn describe_machine_without_events() {
    insta::assert_snapshot!(render_machine(&machines()[2], &[], now()));
}

#[test]
fn errors() {
    let lines = [
        anyhow::Error::new(ClientError::Unreachable {
            master: "http://127.0.0.1:7700".into(),
        }),
        anyhow::Error::new(ClientError::Api {
            status: StatusCode::NOT_FOUND,
            error: ApiError {
                code: "not_found".into(),
                message: "no job named nope".into(),
                field: None,
            },
        }),
        anyhow::Error::new(ClientError::Api {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error: ApiError {
                code: "invalid_spec".into(),
                message: "must be at least 1".into(),
                field: Some("replicas".into()),
            },
        })
        .context("submitting web.yaml"),
        anyhow::Error::new(ClientError::Status {
            status: StatusCode::BAD_GATEWAY,
            body: "<html>\n<h1>bad gateway</h1>\n</html>".into(),
        }),
        crate::spec_file::parse("name: x\nreplicas: [1\n")
            .unwrap_err()
            .context("web.yaml"),
    ]
    .iter()
    .map(|e| format!("error: {}", error_line(e)))
    .collect::<Vec<_>>()
    .join("\n");
    insta::assert_snapshot!(lines);
}
