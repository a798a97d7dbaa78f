//! Re-adoption across `kill -9` of the borglet: a real borglet process (the
//! binary), killed and started again on the same data dir many times, while 10
//! services keep running and 10 batch tasks exit during one of its absences.
//! Afterwards the services run with their first pids, each batch task's real exit
//! code is reported, and no attempt ever had two copies (checked in /proc).
//! `BORGLET_READOPT_ROUNDS` sets the number of kill/restart rounds (default 20).

mod common;

use borg_shared::wire::{AttemptPhase, AttemptSpec, IsolationMode, SyncRequest, SyncResponse};
use borg_shared::AttemptId;
use common::{eventually, AttemptBuilder, MasterStub};
use devpg::ports::free_port;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const SERVICES: usize = 10;
const BATCH: usize = 10;

/// A borglet process on a fixed port and data dir, killed on drop.
struct BorgletProcess {
    child: Option<Child>,
    url: String,
}

impl BorgletProcess {
    fn start(data: &Path, port: u16, master: &str, name: &str) -> Self {
        Self::start_with(data, port, master, name, &[])
    }

    fn start_with(data: &Path, port: u16, master: &str, name: &str, extra: &[&str]) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("borglet.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_borglet"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--name", name])
            .args(["--master", master, "--data-dir"])
            .arg(data.join("data"))
            .arg("--runtime-dir")
            .arg(runtime_dir(name))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        BorgletProcess {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }
}

impl Drop for BorgletProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Kills every task process group named in it, and every one running an
/// attempt named in it (a second copy, should the test fail), when the test ends.
#[derive(Default)]
struct Reaper(
    std::sync::Mutex<HashSet<i32>>,
    std::sync::Mutex<Vec<AttemptId>>,
);

impl Drop for Reaper {
    fn drop(&mut self) {
        let mut groups = self.0.lock().unwrap().clone();
        for id in self.1.lock().unwrap().iter() {
            groups.extend(groups_of(*id));
        }
        for pgid in groups.iter() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(*pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// What each test starts from. Destructure it in field order: locals drop in
/// reverse, so the tasks are killed first and the master stub goes last.
struct Rig {
    master: MasterStub,
    /// Open to others: tasks of a root borglet run as `nobody` and must reach
    /// their sandboxes.
    dir: tempfile::TempDir,
    port: u16,
    /// The machine's cgroups, removed at the end.
    _cleanup: CgroupCleanup,
    http: reqwest::Client,
    reaper: Reaper,
}

async fn rig(name: &'static str) -> Rig {
    use std::os::unix::fs::PermissionsExt;
    let master = MasterStub::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let http = master.client();
    Rig {
        master,
        dir,
        port: free_port(),
        _cleanup: CgroupCleanup(name),
        http,
        reaper: Reaper::default(),
    }
}

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
    // 401 until a fresh borglet holds the credential the stub issues it.
    if resp.status() == 401 {
        return None;
    }
    assert_eq!(resp.status(), 200);
    resp.json().await.ok()
}

/// Process groups of live (non-zombie) processes whose environment names attempt `id`.
fn groups_of(id: AttemptId) -> HashSet<i32> {
    let want = format!("BORG_ATTEMPT={id}");
    let mut groups = HashSet::new();
    for p in procfs::process::all_processes().unwrap().flatten() {
        let Ok(stat) = p.stat() else { continue };
        if stat.state == 'Z' {
            continue;
        }
        let Ok(env) = p.environ() else { continue };
        if env
            .get(std::ffi::OsStr::new("BORG_ATTEMPT"))
            .is_some_and(|v| format!("BORG_ATTEMPT={}", v.to_string_lossy()) == want)
        {
            groups.insert(stat.pgrp);
        }
    }
    groups
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_survive_kill_9_of_the_borglet_and_are_never_started_twice() {
    let rounds: usize = std::env::var("BORGLET_READOPT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let name = "m-readopt";
    let Rig {
        master,
        dir,
        port,
        _cleanup,
        http,
        reaper,
    } = rig(name).await;

    let services: Vec<AttemptSpec> = (0..SERVICES)
        .map(|i| {
            AttemptBuilder::new(&["/bin/sleep", "1000"])
                .job("svc", i as i32)
                .build()
        })
        .collect();
    // Batch task i exits with code 10 + i once a `go` file appears in its sandbox.
    let batch: Vec<AttemptSpec> = (0..BATCH)
        .map(|i| {
            AttemptBuilder::sh(&format!(
                "while [ ! -e go ]; do sleep 0.02; done; exit {}",
                10 + i
            ))
            .job("batch", i as i32)
            .build()
        })
        .collect();
    let all: Vec<AttemptSpec> = services.iter().chain(&batch).cloned().collect();
    reaper.1.lock().unwrap().extend(all.iter().map(|s| s.id));

    let mut borglet = BorgletProcess::start(dir.path(), port, &master.url, name);
    let first = eventually("the borglet to start every attempt", || async {
        sync(&http, &borglet.url, name, &all).await
    })
    .await;
    let mut pids = BTreeMap::new();
    for r in &first.attempts {
        assert_eq!(r.phase, AttemptPhase::Running, "{r:?}");
        let pid = r.pid.unwrap();
        reaper.0.lock().unwrap().insert(pid);
        pids.insert(r.id, pid);
    }
    assert_eq!(pids.len(), SERVICES + BATCH);

    let sandbox = |id: AttemptId| dir.path().join("data/attempts").join(id.to_string());
    // The records are in the runtime dir, apart from the sandboxes: the
    // restarts below re-adopt from there.
    for spec in &all {
        for record in ["launch.json", "run.json", "task.pid"] {
            assert!(record_dir(name, spec.id).join(record).exists(), "{record}");
            assert!(
                !sandbox(spec.id).join(record).exists(),
                "{record} in the sandbox"
            );
        }
    }
    let exit_round = rounds / 2;
    for round in 0..rounds {
        borglet.kill9();
        if round == exit_round {
            // The batch tasks end while no borglet runs.
            for spec in &batch {
                std::fs::write(sandbox(spec.id).join("go"), "").unwrap();
            }
            for spec in &batch {
                let pid = pids[&spec.id];
                eventually("a batch task to exit while the borglet is down", || async {
                    (!common::pid_running(pid)).then_some(())
                })
                .await;
            }
        }
        borglet = BorgletProcess::start(dir.path(), port, &master.url, name);
        let resp = eventually("the restarted borglet to answer a sync", || async {
            sync(&http, &borglet.url, name, &all).await
        })
        .await;
        assert_eq!(resp.attempts.len(), SERVICES + BATCH, "round {round}");
        for spec in &services {
            let r = common::find(&resp, spec.id).unwrap();
            assert_eq!(r.phase, AttemptPhase::Running, "round {round}: {r:?}");
            assert_eq!(r.pid, Some(pids[&spec.id]), "round {round}: same process");
            assert!(common::pid_running(pids[&spec.id]));
        }
        for (i, spec) in batch.iter().enumerate() {
            let r = common::find(&resp, spec.id).unwrap();
            assert_eq!(r.pid, Some(pids[&spec.id]), "round {round}: {r:?}");
            if round >= exit_round {
                assert_eq!(r.phase, AttemptPhase::Exited, "round {round}: {r:?}");
                assert_eq!(
                    r.exit_code,
                    Some(10 + i as i32),
                    "round {round}: the real code"
                );
            } else {
                assert_eq!(r.phase, AttemptPhase::Running, "round {round}: {r:?}");
            }
        }
        // Never a second copy: one process group per running attempt, none per ended one.
        for spec in &all {
            let groups = groups_of(spec.id);
            let running = services.contains(spec) || round < exit_round;
            let want: HashSet<i32> = if running {
                HashSet::from([pids[&spec.id]])
            } else {
                HashSet::new()
            };
            assert_eq!(groups, want, "round {round}: processes of {}", spec.job);
        }
    }

    // A restarted borglet still stops what the master no longer wants.
    let none = eventually("a sync without the services", || async {
        sync(&http, &borglet.url, name, &batch).await
    })
    .await;
    assert!(none.attempts.len() >= BATCH);
    for spec in &services {
        let pid = pids[&spec.id];
        eventually("a re-adopted service to be stopped", || async {
            (!common::pid_running(pid)).then_some(())
        })
        .await;
        let r = eventually("the stop to be reported", || async {
            let resp = sync(&http, &borglet.url, name, &batch).await?;
            common::find(&resp, spec.id)
                .filter(|r| r.phase == AttemptPhase::Exited)
                .cloned()
        })
        .await;
        assert!(r.stopped_by_borglet, "{r:?}");
        assert_eq!(r.signal, Some(15), "{r:?}");
    }
}

#[tokio::test]
async fn restart_counts_survive_kill_9_of_the_borglet() {
    let name = "m-restarts";
    let Rig {
        master,
        dir,
        port,
        _cleanup,
        http,
        reaper,
    } = rig(name).await;
    // Fails its first two runs, then stays up.
    let spec = AttemptBuilder::sh(
        "echo run >> runs; [ $(wc -l < runs) -ge 3 ] && exec sleep 1000; exit 5",
    )
    .restart(None, 10)
    .build();
    let specs = [spec.clone()];
    reaper.1.lock().unwrap().push(spec.id);
    let mut borglet = BorgletProcess::start(dir.path(), port, &master.url, name);
    let running = eventually("running after two restarts", || async {
        let resp = sync(&http, &borglet.url, name, &specs).await?;
        common::find(&resp, spec.id)
            .filter(|r| r.phase == AttemptPhase::Running && r.restarts == 2)
            .cloned()
    })
    .await;
    let pid = running.pid.unwrap();
    reaper.0.lock().unwrap().insert(pid);
    borglet.kill9();
    borglet = BorgletProcess::start(dir.path(), port, &master.url, name);
    let again = eventually("the restarted borglet", || async {
        sync(&http, &borglet.url, name, &specs).await
    })
    .await;
    let r = common::find(&again, spec.id).unwrap();
    assert_eq!(
        (r.phase, r.pid, r.restarts),
        (AttemptPhase::Running, Some(pid), 2)
    );
    assert_eq!(r.last_exit.as_deref(), Some("exited with code 5"));
}

/// The records of borglet `name`: on a tmpfs where there is one, apart from
/// its data dir, as a production borglet keeps them (`--runtime-dir`).
fn runtime_dir(name: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = match shm.is_dir() {
        true => shm.to_path_buf(),
        false => std::env::temp_dir(),
    };
    base.join(format!("borglet-readopt-{name}-{}", std::process::id()))
}

/// Where attempt `id`'s records are.
fn record_dir(name: &str, id: AttemptId) -> PathBuf {
    runtime_dir(name).join("attempts").join(id.to_string())
}

/// Removes the test borglet's cgroups and runtime dir when the test ends
/// (after the Reaper).
struct CgroupCleanup(&'static str);

impl Drop for CgroupCleanup {
    fn drop(&mut self) {
        common::remove_cgroups(self.0);
        let _ = std::fs::remove_dir_all(runtime_dir(self.0));
    }
}

#[tokio::test]
async fn an_adopted_task_keeps_its_cgroup_for_usage_and_kill_all() {
    let name = "m-adopt-cgroup";
    let Rig {
        master,
        dir,
        port,
        _cleanup,
        http,
        reaper,
    } = rig(name).await;
    let fast = ["--usage-interval", "100ms"];
    let mut borglet = BorgletProcess::start_with(dir.path(), port, &master.url, name, &fast);
    let reg = master.first_registration().await;
    let mode = reg
        .isolation
        .expect("the registration says how tasks are isolated");
    if mode == IsolationMode::None {
        eprintln!("SKIP: no writable cgroup hierarchy on this host (not root?)");
        return;
    }
    let cgroup_of = |pid: i32| common::cgroup_dir(pid, mode, "memory");
    // A daemon that leaves the task's session and ignores TERM: only the cgroup
    // still knows it belongs to the attempt.
    let spec = AttemptBuilder::sh(
        "setsid sh -c 'trap \"\" TERM; echo $$ > daemon.tmp; mv daemon.tmp daemon; while :; do sleep 1; done' & sleep 1000",
    )
    .grace_ms(300)
    .build();
    let specs = [spec.clone()];
    reaper.1.lock().unwrap().push(spec.id);
    let running = eventually("the task running", || async {
        let resp = sync(&http, &borglet.url, name, &specs).await?;
        common::find(&resp, spec.id)
            .filter(|r| r.phase == AttemptPhase::Running)
            .cloned()
    })
    .await;
    let pid = running.pid.unwrap();
    reaper.0.lock().unwrap().insert(pid);
    let sandbox = dir.path().join("data/attempts").join(spec.id.to_string());
    let daemon: i32 = eventually("the daemon wrote its pid", || async {
        std::fs::read_to_string(sandbox.join("daemon"))
            .ok()?
            .trim()
            .parse()
            .ok()
    })
    .await;
    reaper.0.lock().unwrap().insert(daemon);
    let cgroup = cgroup_of(pid);
    assert_eq!(
        cgroup,
        common::recorded_cgroup(&record_dir(name, spec.id)),
        "the task joined the cgroup its launch record names"
    );
    assert_eq!(cgroup_of(daemon), cgroup);
    // The keeper keeps the task from outside: its memory is not the task's.
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record_dir(name, spec.id).join("run.json")).unwrap())
            .unwrap();
    let keeper = run["shim"]["pid"].as_i64().unwrap() as i32;
    assert_ne!(cgroup_of(keeper), cgroup);

    borglet.kill9();
    let mut borglet = BorgletProcess::start_with(dir.path(), port, &master.url, name, &fast);
    // The restarted borglet neither removed nor replaced the cgroup, and samples it.
    let adopted = eventually("usage of the adopted task", || async {
        let resp = sync(&http, &borglet.url, name, &specs).await?;
        common::find(&resp, spec.id)
            .filter(|r| r.usage.is_some())
            .cloned()
    })
    .await;
    assert_eq!(
        (adopted.phase, adopted.pid),
        (AttemptPhase::Running, Some(pid))
    );
    assert!(adopted.usage.unwrap().memory.0 > 0, "{adopted:?}");
    assert!(cgroup.exists());
    assert_eq!(cgroup_of(daemon), cgroup);

    // Its stop kills everything in the re-attached cgroup, the escaped daemon too.
    let stopped = eventually("the stop to be reported", || async {
        let resp = sync(&http, &borglet.url, name, &[]).await?;
        common::find(&resp, spec.id)
            .filter(|r| r.phase == AttemptPhase::Exited)
            .cloned()
    })
    .await;
    assert!(stopped.stopped_by_borglet, "{stopped:?}");
    eventually("the escaped daemon is dead too", || async {
        (!common::pid_running(daemon)).then_some(())
    })
    .await;
    eventually("the attempt's cgroup is removed", || async {
        (!cgroup.exists()).then_some(())
    })
    .await;
    borglet.kill9();
}

/// The keeper processes (`/proc/PID/comm` = `borglet-keeper`) serving `data`.
fn keepers_of(data: &Path) -> Vec<i32> {
    let data = data.canonicalize().unwrap().display().to_string();
    let mut found = Vec::new();
    for p in procfs::process::all_processes().unwrap().flatten() {
        let Ok(stat) = p.stat() else { continue };
        if stat.comm != "borglet-keeper" || stat.state == 'Z' {
            continue;
        }
        if p.cmdline().is_ok_and(|argv| argv.contains(&data)) {
            found.push(p.pid);
        }
    }
    found
}

#[tokio::test]
async fn an_exit_while_no_borglet_runs_is_recorded_by_the_one_keeper_it_reconnects_to() {
    let name = "m-keeper";
    let Rig {
        master,
        dir,
        port,
        _cleanup,
        http,
        reaper,
    } = rig(name).await;
    let service = AttemptBuilder::new(&["/bin/sleep", "1000"])
        .job("svc", 0)
        .build();
    // Each exits with its own code once its file appears in its sandbox.
    let waits_for = |file: &str, code: i32| {
        AttemptBuilder::sh(&format!(
            "while [ ! -e {file} ]; do sleep 0.02; done; exit {code}"
        ))
        .job(file, 0)
        .build()
    };
    let (early, late) = (waits_for("early", 7), waits_for("late", 9));
    let specs = [service.clone(), early.clone(), late.clone()];
    reaper.1.lock().unwrap().extend(specs.iter().map(|s| s.id));
    let data = dir.path().join("data");
    let sandbox = |id: AttemptId| data.join("attempts").join(id.to_string());

    let mut borglet = BorgletProcess::start(dir.path(), port, &master.url, name);
    let first = eventually("every attempt running", || async {
        let resp = sync(&http, &borglet.url, name, &specs).await?;
        resp.attempts
            .iter()
            .all(|r| r.phase == AttemptPhase::Running)
            .then_some(resp)
    })
    .await;
    let pid = |id| common::find(&first, id).and_then(|r| r.pid).unwrap();
    for spec in &specs {
        reaper.0.lock().unwrap().insert(pid(spec.id));
    }
    let keeper = keepers_of(&data);
    assert_eq!(keeper.len(), 1, "one keeper: {keeper:?}");

    borglet.kill9();
    std::fs::write(sandbox(early.id).join("early"), "").unwrap();
    eventually("the task to exit while no borglet runs", || async {
        (!common::pid_running(pid(early.id))).then_some(())
    })
    .await;
    assert_eq!(keepers_of(&data), keeper, "the keeper outlived the borglet");

    let borglet = BorgletProcess::start(dir.path(), port, &master.url, name);
    let again = eventually("the restarted borglet", || async {
        sync(&http, &borglet.url, name, &specs).await
    })
    .await;
    let r = common::find(&again, early.id).unwrap();
    assert_eq!(
        (r.phase, r.exit_code, r.pid),
        (AttemptPhase::Exited, Some(7), Some(pid(early.id))),
        "the real exit code: {r:?}"
    );
    for spec in [&service, &late] {
        let r = common::find(&again, spec.id).unwrap();
        assert_eq!(
            (r.phase, r.pid),
            (AttemptPhase::Running, Some(pid(spec.id)))
        );
    }
    assert_eq!(
        keepers_of(&data),
        keeper,
        "the restarted borglet reconnected to the same keeper, no second one"
    );

    // An exit after the restart comes through the reconnected keeper.
    std::fs::write(sandbox(late.id).join("late"), "").unwrap();
    let r = eventually("the later exit to be reported", || async {
        let resp = sync(&http, &borglet.url, name, &specs).await?;
        common::find(&resp, late.id)
            .filter(|r| r.phase == AttemptPhase::Exited)
            .cloned()
    })
    .await;
    assert_eq!(r.exit_code, Some(9), "{r:?}");
    assert_eq!(keepers_of(&data), keeper);
}

#[tokio::test]
async fn tasks_of_a_killed_keeper_keep_running_and_are_never_started_twice() {
    let name = "m-keeper-killed";
    let Rig {
        master,
        dir,
        port,
        _cleanup,
        http,
        reaper,
    } = rig(name).await;
    let service = AttemptBuilder::new(&["/bin/sleep", "1000"])
        .job("svc", 0)
        .build();
    let later = AttemptBuilder::new(&["/bin/sleep", "1000"])
        .job("later", 0)
        .build();
    reaper.1.lock().unwrap().extend([service.id, later.id]);
    let data = dir.path().join("data");

    let mut borglet = BorgletProcess::start(dir.path(), port, &master.url, name);
    let specs = [service.clone()];
    let running = eventually("the service running", || async {
        let resp = sync(&http, &borglet.url, name, &specs).await?;
        common::find(&resp, service.id)
            .filter(|r| r.phase == AttemptPhase::Running)
            .cloned()
    })
    .await;
    let pid = running.pid.unwrap();
    reaper.0.lock().unwrap().insert(pid);
    let keeper = keepers_of(&data);
    assert_eq!(keeper.len(), 1, "{keeper:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(keeper[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("the keeper gone", || async {
        keepers_of(&data).is_empty().then_some(())
    })
    .await;
    assert!(common::pid_running(pid), "the task outlives its keeper");

    // The borglet starts a new keeper for the next start; the old task is still its own.
    let both = [service.clone(), later.clone()];
    let resp = eventually("the later attempt running", || async {
        let resp = sync(&http, &borglet.url, name, &both).await?;
        common::find(&resp, later.id)
            .filter(|r| r.phase == AttemptPhase::Running)
            .map(|_| resp.clone())
    })
    .await;
    reaper
        .0
        .lock()
        .unwrap()
        .extend(common::find(&resp, later.id).unwrap().pid);
    let r = common::find(&resp, service.id).unwrap();
    assert_eq!((r.phase, r.pid), (AttemptPhase::Running, Some(pid)));
    assert_eq!(keepers_of(&data).len(), 1, "one new keeper");

    // A restarted borglet finds both: the orphan by its records, never started again.
    borglet.kill9();
    let borglet = BorgletProcess::start(dir.path(), port, &master.url, name);
    let again = eventually("the restarted borglet", || async {
        sync(&http, &borglet.url, name, &both).await
    })
    .await;
    let r = common::find(&again, service.id).unwrap();
    assert_eq!((r.phase, r.pid), (AttemptPhase::Running, Some(pid)));
    for spec in &both {
        assert_eq!(groups_of(spec.id).len(), 1, "one process group per attempt");
    }
    assert_eq!(keepers_of(&data).len(), 1);

    // Its end is seen, though its status is not.
    let stopped = eventually("the orphan stopped", || async {
        let resp = sync(&http, &borglet.url, name, std::slice::from_ref(&later)).await?;
        common::find(&resp, service.id)
            .filter(|r| r.phase == AttemptPhase::Exited)
            .cloned()
    })
    .await;
    assert!(stopped.stopped_by_borglet, "{stopped:?}");
    assert!(!common::pid_running(pid));
}
