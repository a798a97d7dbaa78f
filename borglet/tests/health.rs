//! Health checks against a real borglet running real tasks: an HTTP server task,
//! a TCP listener, an exec probe in the task's sandbox and cgroup. A task that
//! fails its check `failures` times in a row is restarted in place (a new pid,
//! cause `health check failed: ...`); no probe runs before the initial delay;
//! a re-adopted task is probed again by the next borglet.

mod common;

use borg_shared::wire::{AttemptPhase, AttemptReport, HealthProbe, ProbeKind, SyncRequest};
use borg_shared::wire::{AttemptSpec, SyncResponse};
use common::{eventually, pid_running, AttemptBuilder, MasterStub, TestBorglet};
use devpg::ports::free_port;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Not the pyenv shim on PATH: tasks run as `nobody`, who cannot reach /root.
const PYTHON: &str = "/usr/bin/python3";

fn check(probe: ProbeKind, interval_ms: u64, failures: u32) -> HealthProbe {
    HealthProbe {
        probe,
        interval_ms,
        timeout_ms: interval_ms.max(1000),
        failures,
        initial_delay_ms: 0,
    }
}

fn running(r: &AttemptReport) -> bool {
    r.phase == AttemptPhase::Running
}

/// Wait until attempt `spec` runs and is healthy; its pid.
async fn healthy_pid(b: &TestBorglet, specs: &[AttemptSpec], restarts: u32) -> i32 {
    let id = specs[0].id;
    let r = b
        .sync_until(specs, id, "running and healthy", |r| {
            running(r) && r.healthy == Some(true) && r.restarts == restarts
        })
        .await;
    r.pid.unwrap()
}

/// Wait until attempt `spec` was restarted in place once more; its report.
async fn restarted(b: &TestBorglet, specs: &[AttemptSpec], restarts: u32) -> AttemptReport {
    let id = specs[0].id;
    b.sync_until(specs, id, "restarted in place", |r| {
        running(r) && r.restarts == restarts
    })
    .await
}

#[tokio::test]
async fn an_http_server_is_healthy_then_restarted_in_place_when_its_check_fails() {
    let b = TestBorglet::spawn().await;
    let port = free_port();
    let probe = ProbeKind::Http {
        port,
        path: "/healthy".into(),
    };
    // http.server serves the sandbox: /healthy answers 200 while the file exists, 404 after.
    let spec = AttemptBuilder::sh(&format!(
        "touch healthy; exec {PYTHON} -m http.server $BORG_PORT0 --bind 127.0.0.1"
    ))
    .ports(&[port])
    .restart(None, 10)
    .grace_ms(2000)
    // Ten failures in a row: room for the interpreter to start on a loaded machine.
    .health(check(probe, 200, 10))
    .build();
    let (id, specs) = (spec.id, [spec]);
    let pid = healthy_pid(&b, &specs, 0).await;

    std::fs::remove_file(b.sandbox(id).join("healthy")).unwrap();
    let r = restarted(&b, &specs, 1).await;
    assert_ne!(r.pid, Some(pid), "a new process: {r:?}");
    let last = r.last_exit.clone().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "health check failed: GET /healthy on port {port}: 404 Not Found"
        )),
        "{r:?}"
    );
    assert!(!pid_running(pid), "the unhealthy run is gone");
    // The new run makes itself healthy again, and is seen so.
    let again = healthy_pid(&b, &specs, 1).await;
    assert_eq!(Some(again), r.pid);
}

#[tokio::test]
async fn a_tcp_check_passes_while_the_port_listens_and_restarts_a_task_that_does_not() {
    let b = TestBorglet::spawn().await;
    let port = free_port();
    let listening = AttemptBuilder::sh(&format!(
        "exec {PYTHON} -m http.server $BORG_PORT0 --bind 127.0.0.1"
    ))
    .ports(&[port])
    .restart(None, 10)
    .health(check(ProbeKind::Tcp { port }, 200, 10))
    .build();
    let silent_port = free_port();
    let silent = AttemptBuilder::sh("exec sleep 1000")
        .ports(&[silent_port])
        .restart(None, 10)
        .grace_ms(1000)
        .health(check(ProbeKind::Tcp { port: silent_port }, 100, 2))
        .job("silent", 0)
        .build();
    let specs = [listening.clone(), silent.clone()];
    let ok = b
        .sync_until(&specs, listening.id, "the listener healthy", |r| {
            running(r) && r.healthy == Some(true)
        })
        .await;
    let r = b
        .sync_until(&specs, silent.id, "the silent task restarted", |r| {
            running(r) && r.restarts >= 1
        })
        .await;
    let last = r.last_exit.clone().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "health check failed: connect to port {silent_port}: Connection refused"
        )),
        "{r:?}"
    );
    assert!(last.ends_with("(2 probes in a row)"), "{r:?}");
    assert!(
        !last.contains("os error"),
        "words, not Rust's error number: {r:?}"
    );
    // The listener was never touched.
    let now = b.sync(&specs, &[]).await;
    let still = common::find(&now, listening.id).unwrap();
    assert_eq!((still.pid, still.restarts), (ok.pid, 0));
}

#[tokio::test]
async fn an_exec_check_runs_in_the_tasks_sandbox_env_and_cgroup_and_restarts_it_when_failing() {
    let b = TestBorglet::spawn().await;
    let probe = ProbeKind::Exec {
        command: vec![
            "/bin/sh".into(),
            "-c".into(),
            "cat /proc/self/cgroup > probe.cgroup; echo $BORG_JOB > probe.job; test -f healthy"
                .into(),
        ],
    };
    let spec = AttemptBuilder::sh("touch healthy; exec sleep 1000")
        .restart(None, 10)
        .grace_ms(1000)
        .health(check(probe, 200, 2))
        .build();
    let (id, specs) = (spec.id, [spec]);
    let pid = healthy_pid(&b, &specs, 0).await;
    let sandbox = b.sandbox(id);
    let job = std::fs::read_to_string(sandbox.join("probe.job")).unwrap();
    assert_eq!(job.trim(), "test", "the task's environment");
    let task_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let probe_cgroup = std::fs::read_to_string(sandbox.join("probe.cgroup")).unwrap();
    assert_eq!(
        probe_cgroup, task_cgroup,
        "the probe ran in the task's cgroup"
    );

    std::fs::remove_file(sandbox.join("healthy")).unwrap();
    let r = restarted(&b, &specs, 1).await;
    assert_ne!(r.pid, Some(pid));
    let last = r.last_exit.clone().unwrap_or_default();
    assert!(
        last.starts_with("health check failed: `/bin/sh -c cat")
            && last.contains("exited with code 1"),
        "{r:?}"
    );
    assert!(!pid_running(pid));
    healthy_pid(&b, &specs, 1).await;
}

#[tokio::test]
async fn a_probe_that_hangs_fails_at_its_timeout() {
    let b = TestBorglet::spawn().await;
    let mut hc = check(
        ProbeKind::Exec {
            command: vec!["sleep".into(), "1000".into()],
        },
        500,
        1,
    );
    hc.timeout_ms = 200;
    let spec = AttemptBuilder::sh("exec sleep 1000")
        .restart(None, 10)
        .grace_ms(1000)
        .health(hc)
        .build();
    let specs = [spec];
    let r = restarted(&b, &specs, 1).await;
    assert_eq!(
        r.last_exit.as_deref(),
        Some("health check failed: `sleep 1000` did not finish within 200ms"),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_service_that_keeps_failing_its_check_is_handed_back_like_any_other() {
    let b = TestBorglet::spawn().await;
    let probe = ProbeKind::Exec {
        command: vec!["false".into()],
    };
    let spec = AttemptBuilder::sh("exec sleep 1000")
        .restart(None, 10)
        .grace_ms(1000)
        .health(check(probe, 100, 1))
        .build();
    let (id, specs) = (spec.id, [spec]);
    let done = b
        .sync_until(&specs, id, "handed back", |r| {
            r.phase == AttemptPhase::Exited
        })
        .await;
    // Five runs ended by the check within ten minutes: four restarts, then handed back.
    assert_eq!(done.restarts, 4, "{done:?}");
    let note = done.message.clone().unwrap_or_default();
    assert!(
        note.starts_with("health check failed: `false` exited with code 1")
            && note.contains("handed back"),
        "{done:?}"
    );
}

/// Nanosecond timestamps, one per line.
fn stamps(path: &Path) -> Vec<i128> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[tokio::test]
async fn no_probe_runs_before_the_initial_delay_of_each_run() {
    let b = TestBorglet::spawn().await;
    const DELAY_MS: u64 = 2000;
    let mut hc = check(
        ProbeKind::Exec {
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                "date +%s%N >> probes; exit 1".into(),
            ],
        },
        100,
        1,
    );
    hc.initial_delay_ms = DELAY_MS;
    let spec = AttemptBuilder::sh("date +%s%N >> starts; exec sleep 1000")
        .restart(None, 10)
        .grace_ms(1000)
        .health(hc)
        .build();
    let (id, specs) = (spec.id, [spec]);
    // Two runs ended by their check: each waited its delay first.
    restarted(&b, &specs, 2).await;
    let sandbox = b.sandbox(id);
    let starts = eventually("the third run stamped its start", || async {
        Some(stamps(&sandbox.join("starts"))).filter(|s| s.len() >= 3)
    })
    .await;
    let probes = stamps(&sandbox.join("probes"));
    for run in 0..2 {
        let (from, to) = (starts[run], starts[run + 1]);
        let of_run: Vec<i128> = probes
            .iter()
            .copied()
            .filter(|p| *p >= from && *p < to)
            .collect();
        assert!(!of_run.is_empty(), "run {run} was probed: {probes:?}");
        let first_ms = (of_run[0] - from) / 1_000_000;
        // The task stamps its start a little after the borglet does.
        assert!(
            first_ms >= (DELAY_MS as i128) * 3 / 4,
            "run {run}: first probe {first_ms}ms after its start"
        );
    }
}

// ---------- across a borglet restart ----------

/// A borglet process (the binary) on a fixed port and data dir, killed on drop.
struct BorgletProcess(Option<Child>);

impl BorgletProcess {
    fn start(data: &Path, port: u16, master: &str, name: &str) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("borglet.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_borglet"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--name", name])
            .args(["--master", master, "--data-dir"])
            .arg(data.join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        BorgletProcess(Some(child))
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.0.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for BorgletProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Kills the task groups it holds and removes the borglet's cgroups at the end.
struct Cleanup(&'static str, std::sync::Mutex<Vec<i32>>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pgid in self.1.lock().unwrap().iter() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(*pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        common::remove_cgroups(self.0);
    }
}

/// A sync as the stub's master sends it (`http` carries its sync key); `None`
/// while the borglet answers otherwise (a fresh one holds no credential yet).
async fn sync(
    http: &reqwest::Client,
    url: &str,
    name: &str,
    specs: &[AttemptSpec],
) -> Option<SyncResponse> {
    let req = SyncRequest {
        epoch: 1,
        machine: name.into(),
        attempts: specs.to_vec(),
        ack: vec![],
        nudge_token: None,
    };
    let resp = http
        .post(format!("{url}/v1/sync"))
        .json(&req)
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

async fn report_until(
    http: &reqwest::Client,
    url: &str,
    name: &str,
    specs: &[AttemptSpec],
    what: &str,
    cond: impl Fn(&AttemptReport) -> bool,
) -> AttemptReport {
    eventually(what, || async {
        let resp = sync(http, url, name, specs).await?;
        common::find(&resp, specs[0].id)
            .filter(|r| cond(r))
            .cloned()
    })
    .await
}

#[tokio::test]
async fn a_readopted_task_is_probed_again_after_kill_9_of_the_borglet() {
    let master = MasterStub::spawn().await;
    let http = master.client();
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (port, name) = (free_port(), "m-health-readopt");
    let cleanup = Cleanup(name, Default::default());
    let url = format!("http://127.0.0.1:{port}");
    let probe = ProbeKind::Exec {
        command: vec!["test".into(), "-f".into(), "healthy".into()],
    };
    let spec = AttemptBuilder::sh("touch healthy; exec sleep 1000")
        .restart(None, 10)
        .grace_ms(1000)
        .health(check(probe, 200, 2))
        .build();
    let specs = [spec.clone()];
    let mut borglet = BorgletProcess::start(dir.path(), port, &master.url, name);
    let first = report_until(&http, &url, name, &specs, "healthy", |r| {
        running(r) && r.healthy == Some(true)
    })
    .await;
    let pid = first.pid.unwrap();
    cleanup.1.lock().unwrap().push(pid);

    borglet.kill9();
    let _borglet = BorgletProcess::start(dir.path(), port, &master.url, name);
    // Health is not kept across the restart: healthy again means probed again.
    let again = report_until(&http, &url, name, &specs, "re-adopted and healthy", |r| {
        running(r) && r.healthy == Some(true)
    })
    .await;
    assert_eq!(
        (again.pid, again.restarts),
        (Some(pid), 0),
        "re-adopted, not restarted"
    );

    let sandbox = dir.path().join("data/attempts").join(spec.id.to_string());
    std::fs::remove_file(sandbox.join("healthy")).unwrap();
    let r = report_until(
        &http,
        &url,
        name,
        &specs,
        "restarted by the new borglet",
        |r| running(r) && r.restarts == 1,
    )
    .await;
    cleanup.1.lock().unwrap().extend(r.pid);
    assert_ne!(r.pid, Some(pid));
    assert!(
        r.last_exit
            .as_deref()
            .unwrap_or_default()
            .starts_with("health check failed: `test -f healthy` exited with code 1"),
        "{r:?}"
    );
    assert!(!pid_running(pid));
}
