//! End to end: the real `jobctl dev` cell (embedded Postgres, borgmaster,
//! borgscheduler, 3 borglets as separate processes) driven by the real
//! `jobctl` binary over HTTP, exactly as the README's quick start does.

#[path = "cell_support/procs.rs"]
mod procs;

use devpg::ports::free_port_run;
use devpg::wait::wait_for_blocking as wait_for;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use procs::{alive, alive_not_zombie, argv, descendants, is_task_or_keeper};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const JOBCTL: &str = env!("CARGO_BIN_EXE_jobctl");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

struct Cell {
    child: Child,
    master: String,
    /// The cell's admin token (`<data-dir>/admin.token`).
    token: String,
    /// What `jobctl dev` printed on stdout.
    out: PathBuf,
}

fn data_dir() -> tempfile::TempDir {
    // Reachable by tasks, which a root borglet runs as `nobody`.
    tempfile::Builder::new()
        .prefix("borg-e2e-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir_in("/tmp")
        .unwrap()
}

impl Cell {
    fn start(dir: &Path) -> Cell {
        Cell::start_from(dir, Path::new(JOBCTL))
    }

    /// A cell `jobctl dev` runs from the executable at `exe`.
    fn start_from(dir: &Path, exe: &Path) -> Cell {
        // The cell's scheduler listens 10 ports above its master.
        let port = free_port_run(11);
        let base = free_port_run(3);
        let master = format!("http://127.0.0.1:{port}");
        let out = dir.join(format!("jobctl-dev-{port}.out"));
        let child = Command::new(exe)
            .args(["dev", "--borglets", "3", "--data-dir"])
            .arg(dir)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--borglet-base-port",
                &base.to_string(),
            ])
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting jobctl dev");
        let token = wait_for("the cell's admin.token", Duration::from_secs(60), || {
            let text = std::fs::read_to_string(dir.join("admin.token")).ok()?;
            text.ends_with('\n').then(|| text.trim().to_string())
        });
        let cell = Cell {
            child,
            master,
            token,
            out,
        };
        wait_for("3 machines up", Duration::from_secs(120), || {
            let out = cell.jobctl(&["get", "machines", "-o", "json"]);
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            let machines = v
                .get("machines")
                .and_then(Value::as_array)
                .or(v.as_array())?;
            (machines.iter().filter(|m| m["state"] == "up").count() == 3).then_some(())
        });
        cell
    }

    fn jobctl(&self, args: &[&str]) -> Output {
        Command::new(JOBCTL)
            .arg("--master")
            .arg(&self.master)
            .args(args)
            .env("BORG_TOKEN", &self.token)
            .current_dir(repo_root())
            .output()
            .expect("running jobctl")
    }

    /// `jobctl kill JOB`, then wait until none of its tasks runs: the cell's
    /// borglets leave running tasks behind at exit, to be re-adopted.
    fn kill_and_wait(&self, name: &str) {
        let out = self.jobctl(&["kill", name]);
        assert!(out.status.success(), "{}", stderr(&out));
        wait_for(
            "the killed job's tasks ended",
            Duration::from_secs(30),
            || {
                let job = self.job(name);
                let tasks = job["tasks"].as_array()?.clone();
                tasks
                    .iter()
                    .all(|t| {
                        ["killed", "failed", "succeeded", "lost"]
                            .contains(&t["state"].as_str().unwrap_or(""))
                    })
                    .then_some(())
            },
        );
    }

    fn job(&self, name: &str) -> Value {
        self.get(&format!("/v1/jobs/{name}")).json().unwrap()
    }

    /// `GET path` with the cell's admin token.
    fn get(&self, path: &str) -> reqwest::blocking::Response {
        reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.master))
            .bearer_auth(&self.token)
            .send()
            .unwrap()
    }

    /// SIGINT, as Ctrl-C does; the cell must stop every child and exit 0,
    /// leaving none of its processes (Postgres, components, tasks) behind.
    fn stop(self) {
        let out = self.out.clone();
        let left = self.stop_leaving_tasks();
        assert!(left.is_empty(), "processes left behind: {left:?}");
        let printed = std::fs::read_to_string(out).unwrap();
        assert!(
            printed.contains("cell stopped") && !printed.contains("left running"),
            "{printed}"
        );
    }

    /// As `stop`, but running tasks keep running (borglets leave them to be
    /// re-adopted), with their keeper: returns those; anything else left fails.
    fn stop_leaving_tasks(mut self) -> Vec<i32> {
        let family = descendants(self.child.id() as i32);
        assert!(
            family.len() >= 6,
            "expected postgres, master, scheduler, 3 borglets: {family:?}"
        );
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).unwrap();
        let status = wait_for("jobctl dev to exit", Duration::from_secs(60), || {
            self.child.try_wait().unwrap()
        });
        assert!(status.success(), "jobctl dev exited with {status}");
        let left: Vec<i32> = family
            .into_iter()
            .filter(|p| alive_not_zombie(*p))
            .collect();
        let components: Vec<i32> = left
            .iter()
            .copied()
            .filter(|p| !is_task_or_keeper(*p))
            .collect();
        assert!(
            components.is_empty(),
            "cell processes left behind: {:?}",
            components
                .iter()
                .map(|p| (*p, argv(*p)))
                .collect::<Vec<_>>()
        );
        left
    }

    /// The pid of the component named `name` (its argv[0], as `jobctl dev` names it).
    fn component_pid(&self, name: &str) -> i32 {
        descendants(self.child.id() as i32)
            .into_iter()
            .find(|p| argv(*p).first().map(String::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no process named {name}"))
    }

    fn printed(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The pids of the running tasks of job `name`, once it has `n` of them.
    fn running_pids(&self, name: &str, n: usize) -> Vec<i32> {
        wait_for(
            &format!("{n} running tasks of {name}"),
            Duration::from_secs(60),
            || {
                let job = self.job(name);
                let mut pids: Vec<i32> = job["tasks"]
                    .as_array()?
                    .iter()
                    .filter(|t| t["state"] == "running")
                    .filter_map(|t| t["pid"].as_i64())
                    .map(|p| p as i32)
                    .collect();
                pids.sort();
                (pids.len() == n).then_some(pids)
            },
        )
    }
}

impl Drop for Cell {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn quick_start_hello_runs_to_success_and_kill_leaves_no_process() {
    let dir = data_dir();
    let cell = Cell::start(dir.path());
    // The banner says how to use the cell's admin token from another directory.
    let export = format!("export BORG_TOKEN={}", cell.token);
    wait_for("the banner", Duration::from_secs(30), || {
        cell.printed().contains(&export).then_some(())
    });

    // The README's quick start, word for word (but for the master URL).
    let run = cell.jobctl(&["run", "-f", "examples/hello.yaml", "--wait"]);
    assert!(
        run.status.success(),
        "run --wait failed:\n{}\n{}",
        stdout(&run),
        stderr(&run)
    );
    let job = cell.job("hello");
    assert_eq!(job["state"], "succeeded", "{job}");
    let machines: std::collections::BTreeSet<_> = job["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["machine"].as_str().unwrap().to_string())
        .collect();
    assert!(!machines.is_empty());
    let logs = cell.jobctl(&["logs", "hello/2"]);
    assert!(logs.status.success(), "{}", stderr(&logs));
    assert!(
        stdout(&logs).contains("hello from task 2 of hello"),
        "logs: {}",
        stdout(&logs)
    );

    // A service: wait until both tasks run, then kill it and check its processes are gone.
    let run = cell.jobctl(&["run", "-f", "examples/sleeper.yaml", "--wait"]);
    assert!(run.status.success(), "{}\n{}", stdout(&run), stderr(&run));
    let pids: Vec<i32> = wait_for("sleeper pids", Duration::from_secs(30), || {
        let job = cell.job("sleeper");
        let pids: Vec<i32> = job["tasks"]
            .as_array()?
            .iter()
            .filter_map(|t| t["pid"].as_i64())
            .map(|p| p as i32)
            .collect();
        (pids.len() == 2).then_some(pids)
    });
    assert!(
        pids.iter().all(|p| alive(*p)),
        "sleeper processes should run: {pids:?}"
    );
    let killed = cell.jobctl(&["kill", "sleeper"]);
    assert!(killed.status.success(), "{}", stderr(&killed));
    wait_for("sleeper tasks killed", Duration::from_secs(30), || {
        let job = cell.job("sleeper");
        let all_killed = job["tasks"]
            .as_array()?
            .iter()
            .all(|t| t["state"] == "killed");
        all_killed.then_some(())
    });
    for pid in &pids {
        assert!(!alive(*pid), "pid {pid} of a killed job is still alive");
    }

    // Too big: stays pending with a human reason.
    let run = cell.jobctl(&["run", "-f", "examples/too-big.yaml"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let reason = wait_for("a pending reason", Duration::from_secs(30), || {
        let job = cell.job("too-big");
        job["tasks"][0]["reason"].as_str().map(str::to_string)
    });
    assert!(reason.contains("memory"), "reason: {reason}");
    assert_eq!(cell.job("too-big")["tasks"][0]["state"], "pending");

    // A bad spec: one clear line, non-zero exit, nothing stored.
    let bad = std::env::temp_dir().join(format!("borg-bad-{}.yaml", std::process::id()));
    std::fs::write(
        &bad,
        "name: bad\ntask:\n  command: [\"/bin/true\"]\n  resources: {cpu: lots}\n",
    )
    .unwrap();
    let out = cell.jobctl(&["run", "-f", bad.to_str().unwrap()]);
    let _ = std::fs::remove_file(&bad);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    assert!(err.contains("task.resources.cpu"), "{err}");
    let status = cell.get("/v1/jobs/bad").status();
    assert_eq!(status.as_u16(), 404);

    cell.stop();
}

#[test]
fn a_restarted_cell_readopts_the_tasks_that_kept_running() {
    let dir = data_dir();
    let cell = Cell::start(dir.path());
    let run = cell.jobctl(&["run", "-f", "examples/sleeper.yaml", "--wait"]);
    assert!(run.status.success(), "{}\n{}", stdout(&run), stderr(&run));
    let pids = cell.running_pids("sleeper", 2);
    // Ctrl-C stops the cell; the borglets leave their tasks running (the
    // production default) for the next borglets to re-adopt, and it says so.
    let out = cell.out.clone();
    let left = cell.stop_leaving_tasks();
    for pid in &pids {
        assert!(alive(*pid), "task pid {pid} should outlive the cell");
        assert!(left.contains(pid));
    }
    let printed = std::fs::read_to_string(&out).unwrap();
    let said = format!("kill -- -{} -{}", pids[0], pids[1]);
    assert!(
        printed.contains("2 tasks left running") && printed.contains(&said),
        "{printed}"
    );

    let again = Cell::start(dir.path());
    let job = again.job("sleeper");
    assert_eq!(
        job["name"], "sleeper",
        "the job must survive a cell restart: {job}"
    );
    // The same processes, re-adopted, not started a second time.
    assert_eq!(again.running_pids("sleeper", 2), pids);
    let killed = again.jobctl(&["kill", "sleeper"]);
    assert!(killed.status.success(), "{}", stderr(&killed));
    wait_for("sleeper tasks gone", Duration::from_secs(30), || {
        pids.iter().all(|p| !alive_not_zombie(*p)).then_some(())
    });
    again.stop();
}

#[test]
fn a_component_killed_with_sigkill_is_restarted_and_its_tasks_keep_running() {
    let dir = data_dir();
    // Run from a link of its own, replaced while the cell runs, as a rebuild
    // replaces target/release/jobctl: components still start again.
    let bin = tempfile::tempdir().unwrap();
    let exe = bin.path().join("jobctl");
    std::fs::hard_link(JOBCTL, &exe)
        .or_else(|_| std::fs::copy(JOBCTL, &exe).map(|_| ()))
        .unwrap();
    let cell = Cell::start_from(dir.path(), &exe);
    let run = cell.jobctl(&["run", "-f", "examples/sleeper.yaml", "--wait"]);
    assert!(run.status.success(), "{}\n{}", stdout(&run), stderr(&run));
    let pids = cell.running_pids("sleeper", 2);
    // A file of its own (renaming a link of the same file over it does nothing).
    let rebuilt = bin.path().join("jobctl.new");
    std::fs::copy(JOBCTL, &rebuilt).unwrap();
    std::fs::rename(&rebuilt, &exe).unwrap();
    for name in ["borglet-1", "borgmaster", "borgscheduler"] {
        let pid = cell.component_pid(name);
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        let line = format!("{name} exited with signal 9 (SIGKILL); restarting it");
        wait_for(&line, Duration::from_secs(30), || {
            cell.printed().contains(&line).then_some(())
        });
        wait_for("the component back", Duration::from_secs(60), || {
            let again = descendants(cell.child.id() as i32)
                .into_iter()
                .find(|p| argv(*p).first().map(String::as_str) == Some(name))?;
            (again != pid).then_some(())
        });
    }
    // Every machine up again, the same task processes running.
    wait_for("3 machines up again", Duration::from_secs(60), || {
        let out = cell.jobctl(&["get", "machines", "-o", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let machines = v.get("machines").and_then(Value::as_array)?;
        (machines.iter().filter(|m| m["state"] == "up").count() == 3).then_some(())
    });
    assert_eq!(cell.running_pids("sleeper", 2), pids);
    let killed = cell.jobctl(&["kill", "sleeper"]);
    assert!(killed.status.success(), "{}", stderr(&killed));
    wait_for("sleeper tasks gone", Duration::from_secs(30), || {
        pids.iter().all(|p| !alive_not_zombie(*p)).then_some(())
    });
    cell.stop();
}

#[test]
fn logs_follow_streams_until_the_task_ends() {
    let dir = data_dir();
    let cell = Cell::start(dir.path());
    let go = dir.path().join("go");
    let spec = format!(
        "name: follow\ntask:\n  command: [\"/bin/sh\", \"-c\", \"echo first; while [ ! -e {} ]; do sleep 0.05; done; echo second\"]\n",
        go.display()
    );
    let spec_file = dir.path().join("follow.yaml");
    std::fs::write(&spec_file, spec).unwrap();
    let run = cell.jobctl(&["run", "-f", spec_file.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    wait_for("follow/0 running", Duration::from_secs(30), || {
        (cell.job("follow")["tasks"][0]["state"] == "running").then_some(())
    });

    let mut logs = Command::new(JOBCTL)
        .args(["--master", &cell.master, "logs", "-f", "follow/0"])
        .env("BORG_TOKEN", &cell.token)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let seen = seen.clone();
        let mut out = logs.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut out, &mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    wait_for("the first line", Duration::from_secs(30), || {
        seen.lock().unwrap().contains("first").then_some(())
    });
    // Still streaming: the task has not written its second line yet.
    assert!(
        logs.try_wait().unwrap().is_none(),
        "logs -f ended before the task did"
    );
    std::fs::write(&go, "").unwrap();
    let status = wait_for(
        "logs -f to end with the task",
        Duration::from_secs(30),
        || logs.try_wait().unwrap(),
    );
    reader.join().unwrap();
    assert!(status.success());
    assert_eq!(seen.lock().unwrap().as_str(), "first\nsecond\n");
    cell.stop();
}

#[test]
fn tasks_get_host_ports_from_their_machine_never_shared() {
    let dir = data_dir();
    let cell = Cell::start(dir.path());
    // More tasks than machines, so some share a machine (and must not share a port).
    let spec = "name: ported\nreplicas: 5\ntask:\n  command: [\"/bin/sh\", \"-c\", \"echo $BORG_PORT0 $BORG_PORT1\"]\n  resources: {ports: 2}\n";
    let spec_file = dir.path().join("ported.yaml");
    std::fs::write(&spec_file, spec).unwrap();
    let run = cell.jobctl(&["run", "--wait", "-f", spec_file.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));

    let machines: Value = cell.get("/v1/machines").json().unwrap();
    let range_of = |name: &str| -> (u64, u64) {
        let m = machines["machines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap();
        (
            m["ports"]["first"].as_u64().unwrap(),
            m["ports"]["last"].as_u64().unwrap(),
        )
    };
    let job = cell.job("ported");
    let mut held: std::collections::HashSet<(String, u64)> = Default::default();
    for task in job["tasks"].as_array().unwrap() {
        let index = task["index"].as_u64().unwrap();
        let machine = task["machine"].as_str().unwrap().to_string();
        let out = cell.jobctl(&["logs", &format!("ported/{index}")]);
        let ports: Vec<u64> = stdout(&out)
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(ports.len(), 2, "task {index} printed {:?}", stdout(&out));
        let (first, last) = range_of(&machine);
        for p in ports {
            assert!(
                (first..=last).contains(&p),
                "port {p} outside {machine}'s {first}-{last}"
            );
            assert!(
                held.insert((machine.clone(), p)),
                "port {p} given twice on {machine}"
            );
        }
    }
    assert_eq!(held.len(), 10);
    cell.stop();
}

#[test]
fn a_job_over_its_owners_quota_waits_and_starts_when_quota_frees() {
    let dir = data_dir();
    let cell = Cell::start(dir.path());
    let set = cell.jobctl(&["quota", "set", "alice", "--band", "batch", "--cpu", "500m"]);
    assert!(set.status.success(), "{}", stderr(&set));
    let spec = |name: &str| {
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!(
                "name: {name}\nkind: service\nowner: alice\ntask:\n  command: [\"sleep\", \"600\"]\n  resources: {{cpu: 300m}}\n"
            ),
        )
        .unwrap();
        file
    };
    let first = cell.jobctl(&["run", "-f", spec("first").to_str().unwrap()]);
    assert!(first.status.success(), "{}", stderr(&first));
    wait_for("first running", Duration::from_secs(30), || {
        (cell.job("first")["tasks"][0]["state"] == "running").then_some(())
    });
    let second = cell.jobctl(&["run", "-f", spec("second").to_str().unwrap()]);
    assert!(second.status.success(), "{}", stderr(&second));
    let reason = wait_for("second explained", Duration::from_secs(30), || {
        let task = &cell.job("second")["tasks"][0];
        assert_eq!(task["state"], "pending", "{task}");
        task["reason"].as_str().map(str::to_string)
    });
    assert_eq!(
        reason,
        "waiting for quota: owner alice, batch cpu 500m, in use 300m, asks 300m (job 1 in line for it)"
    );
    let quota = cell.jobctl(&["quota", "get", "alice", "-o", "json"]);
    let quota: Value = serde_json::from_slice(&quota.stdout).unwrap();
    assert_eq!(quota["batch"]["in_use"]["cpu"], 300, "millicores: {quota}");
    assert_eq!(quota["batch"]["limit"]["cpu"], "500m", "{quota}");

    let kill = cell.jobctl(&["kill", "first"]);
    assert!(kill.status.success(), "{}", stderr(&kill));
    wait_for(
        "second running once first is gone",
        Duration::from_secs(30),
        || (cell.job("second")["tasks"][0]["state"] == "running").then_some(()),
    );
    cell.kill_and_wait("second");
    cell.stop();
}

#[test]
fn production_preempts_batch_in_a_full_cell_and_the_batch_task_runs_again() {
    let dir = data_dir();
    let cell = Cell::start(dir.path());
    let spec = |name: &str, priority: u32, replicas: u32| {
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!(
                "name: {name}\nkind: service\npriority: {priority}\nreplicas: {replicas}\ntask:\n  command: [\"sleep\", \"600\"]\n  resources: {{cpu: 1, memory: 64Mi}}\n  kill_grace: 1s\n"
            ),
        )
        .unwrap();
        file
    };
    let running = |job: &str| -> usize {
        cell.job(job)["tasks"]
            .as_array()
            .map_or(0, |t| t.iter().filter(|t| t["state"] == "running").count())
    };
    // 3 machines x 2 cores: six 1-core batch tasks fill the cell.
    let filler = cell.jobctl(&["run", "-f", spec("filler", 100, 6).to_str().unwrap()]);
    assert!(filler.status.success(), "{}", stderr(&filler));
    wait_for("the cell full", Duration::from_secs(60), || {
        (running("filler") == 6).then_some(())
    });

    let urgent = cell.jobctl(&["run", "-f", spec("urgent", 300, 1).to_str().unwrap()]);
    assert!(urgent.status.success(), "{}", stderr(&urgent));
    wait_for("urgent running", Duration::from_secs(60), || {
        (running("urgent") == 1).then_some(())
    });
    // Exactly one filler task made room; it went back to pending, its run not spent.
    let job = cell.job("filler");
    let tasks = job["tasks"].as_array().unwrap();
    assert_eq!(running("filler"), 5, "{job}");
    let victim = tasks
        .iter()
        .find(|t| t["state"] == "pending")
        .expect("a pending filler task");
    assert_eq!(victim["runs"], 0, "preemption spends no run: {victim}");
    let events = job["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["to"] == "pending"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("preempted by urgent/0"))),
        "no preemption event: {events:?}"
    );

    let kill = cell.jobctl(&["kill", "urgent"]);
    assert!(kill.status.success(), "{}", stderr(&kill));
    wait_for(
        "the preempted task running again",
        Duration::from_secs(60),
        || (running("filler") == 6).then_some(()),
    );
    cell.kill_and_wait("filler");
    cell.stop();
}
