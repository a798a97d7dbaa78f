//! Isolation on real cgroups: each attempt in its own cgroup with its limits, a
//! stop that kills what escaped with setsid, the kernel's OOM kill reported with
//! the peak memory, usage sampled. Runs on whatever hierarchy this host lets the
//! borglet write (v1 here, v2 on current distributions); where none is writable
//! (not root) each test says so and skips.

mod common;

use borg_shared::wire::{AttemptPhase, IsolationMode};
use common::{
    cgroup_dir, eventually, find, recorded_cgroup, AttemptBuilder, MasterStub, TestBorglet,
};

/// A borglet with `extra` flags and its isolation mode, or `None` (after saying
/// why) when this host has no writable cgroup hierarchy.
async fn isolated_borglet(extra: &[&str]) -> Option<(TestBorglet, IsolationMode)> {
    let b = TestBorglet::spawn_with(extra).await;
    let reg = b.master.first_registration().await;
    match reg.isolation {
        Some(IsolationMode::None) => {
            eprintln!("SKIP: no writable cgroup hierarchy on this host (not root?); isolation tests need one");
            None
        }
        Some(mode) => Some((b, mode)),
        None => panic!("the registration must say how tasks are isolated"),
    }
}

fn read(dir: &std::path::Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()))
        .trim()
        .to_string()
}

#[tokio::test]
async fn each_attempt_runs_in_its_own_cgroup_with_its_limits() {
    let Some((b, mode)) = isolated_borglet(&["--pids-limit", "64"]).await else {
        return;
    };
    let reg = b.master.first_registration().await;
    assert_eq!(reg.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    let spec = AttemptBuilder::new(&["sleep", "1000"])
        .memory(32 << 20)
        .cpu_limit(500)
        .build();
    let other = AttemptBuilder::new(&["sleep", "1000"])
        .memory_limit(96 << 20)
        .build();
    let r = b.sync(&[spec.clone(), other.clone()], &[]).await;
    let pid = find(&r, spec.id).and_then(|a| a.pid).expect("pid");
    let other_pid = find(&r, other.id).and_then(|a| a.pid).expect("pid");

    let memory = cgroup_dir(pid, mode, "memory");
    assert_eq!(
        memory,
        recorded_cgroup(&b.records(spec.id)),
        "the cgroup its launch record names"
    );
    assert!(
        memory
            .parent()
            .unwrap()
            .ends_with(format!("borg/{}", b.name)),
        "{}",
        memory.display()
    );
    assert_ne!(
        memory,
        cgroup_dir(other_pid, mode, "memory"),
        "one cgroup per attempt"
    );
    match mode {
        IsolationMode::V1 => {
            // Joined through each hierarchy's `tasks` file (`join_files`): the
            // kernel has the task in all four.
            // One set: the same name in every hierarchy.
            let set = memory
                .strip_prefix(memory.parent().unwrap().parent().unwrap())
                .unwrap();
            for controller in ["memory", "cpu", "cpuacct", "pids"] {
                let dir = cgroup_dir(pid, mode, controller);
                assert!(dir.ends_with(set), "{controller}: {}", dir.display());
            }
            assert_eq!(
                read(&memory, "memory.limit_in_bytes"),
                (32u64 << 20).to_string()
            );
            let cpu = cgroup_dir(pid, mode, "cpu");
            assert_eq!(
                read(&cpu, "cpu.shares"),
                "102",
                "100m of 1024 shares per core"
            );
            assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "50000");
            assert_eq!(read(&cpu, "cpu.cfs_period_us"), "100000");
            assert_eq!(read(&cgroup_dir(pid, mode, "pids"), "pids.max"), "64");
            let other_mem = cgroup_dir(other_pid, mode, "memory");
            assert_eq!(
                read(&other_mem, "memory.limit_in_bytes"),
                (96u64 << 20).to_string()
            );
            assert_eq!(
                read(&cgroup_dir(other_pid, mode, "cpu"), "cpu.cfs_quota_us"),
                "-1"
            );
        }
        IsolationMode::V2 => {
            assert_eq!(read(&memory, "memory.max"), (32u64 << 20).to_string());
            assert_eq!(read(&memory, "cpu.max"), "50000 100000");
            assert_eq!(read(&memory, "pids.max"), "64");
        }
        IsolationMode::None => unreachable!(),
    }
    b.sync(&[], &[]).await;
    let done = b
        .sync_until(&[], spec.id, "stopped", |r| r.phase == AttemptPhase::Exited)
        .await;
    assert_eq!(done.signal, Some(15));
    // Removed, or on v1 kept empty for a later attempt (`a_reused_cgroup_...`).
    eventually("the attempt's cgroup emptied", || async {
        let procs = std::fs::read_to_string(memory.join("cgroup.procs"));
        procs.map_or(true, |p| p.trim().is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn stop_kills_a_daemon_that_escaped_with_setsid() {
    let Some((b, _)) = isolated_borglet(&[]).await else {
        return;
    };
    // The daemon leaves the task's session and process group and ignores TERM:
    // only the cgroup still knows it belongs to the attempt.
    let spec = AttemptBuilder::sh(
        "setsid sh -c 'trap \"\" TERM; echo $$ > daemon.tmp; mv daemon.tmp daemon; while :; do sleep 1; done' & sleep 1000",
    )
    .grace_ms(300)
    .build();
    let r = b.sync(std::slice::from_ref(&spec), &[]).await;
    let pid = find(&r, spec.id).and_then(|a| a.pid).expect("pid");
    let daemon_file = b.sandbox(spec.id).join("daemon");
    let daemon: i32 = eventually("the daemon wrote its pid", || async {
        std::fs::read_to_string(&daemon_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    })
    .await;
    assert!(common::pid_running(daemon));
    assert_ne!(
        nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(daemon))).unwrap(),
        nix::unistd::Pid::from_raw(pid),
        "the daemon escaped the task's process group"
    );

    b.sync(&[], &[]).await;
    b.sync_until(&[], spec.id, "stopped", |r| r.phase == AttemptPhase::Exited)
        .await;
    eventually("the escaped daemon is dead too", || async {
        (!common::pid_running(daemon)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_task_past_its_memory_limit_is_oom_killed_with_its_peak() {
    let Some((b, _)) = isolated_borglet(&[]).await else {
        return;
    };
    // `tail` keeps a newline-free stream in memory: far past 32 MiB.
    let spec = AttemptBuilder::sh("echo about to eat >&2; head -c 200M /dev/zero | tail")
        .memory(32 << 20)
        .build();
    let done = b
        .sync_until(
            std::slice::from_ref(&spec),
            spec.id,
            "the task ended",
            |r| r.phase == AttemptPhase::Exited,
        )
        .await;
    assert!(done.oom_killed, "{done:?}");
    let peak = done.peak_memory.expect("peak memory").0;
    assert!(peak >= 30 << 20, "peak {peak} near the 32 MiB limit");
    assert!(
        peak <= 34 << 20,
        "peak {peak} not far past the 32 MiB limit"
    );
    assert_ne!(done.exit_code, Some(0));
    let tail = done.stderr_tail.as_deref().unwrap_or_default();
    assert!(tail.starts_with("about to eat\n"), "{tail:?}");
    let metrics = b
        .client
        .get(format!("{}/metrics", b.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = format!(
        "borglet_attempts_oom_killed_total{{machine=\"{}\"}} 1",
        b.name
    );
    assert!(metrics.contains(&line), "{metrics}");
}

#[tokio::test]
async fn an_attempt_that_cannot_be_limited_fails_alone() {
    let Some((b, _)) = isolated_borglet(&[]).await else {
        return;
    };
    let bad = AttemptBuilder::new(&["sleep", "1000"])
        .memory(1 << 20)
        .build();
    let good = AttemptBuilder::new(&["sleep", "1000"]).build();
    let r = b.sync(&[bad.clone(), good.clone()], &[]).await;
    let failed = find(&r, bad.id).unwrap();
    assert_eq!(failed.phase, AttemptPhase::FailedToStart);
    let why = failed.message.as_deref().unwrap();
    assert!(why.contains("memory limit 1Mi is too small"), "{why}");
    assert_eq!(find(&r, good.id).unwrap().phase, AttemptPhase::Running);
}

#[tokio::test]
async fn usage_is_sampled_from_the_cgroup() {
    let Some((b, _)) = isolated_borglet(&["--usage-interval", "100ms"]).await else {
        return;
    };
    let spec = AttemptBuilder::sh("while :; do :; done").build();
    let usage = b
        .sync_until(
            std::slice::from_ref(&spec),
            spec.id,
            "a busy task's usage",
            |r| r.usage.is_some_and(|u| u.cpu.0 >= 300),
        )
        .await
        .usage
        .unwrap();
    assert!(usage.memory.0 > 0, "{usage:?}");
    assert!(
        usage.cpu.0 <= 1100,
        "one busy loop is about one core: {usage:?}"
    );
}

#[tokio::test]
async fn without_isolation_tasks_run_and_the_machine_says_so() {
    let b = TestBorglet::spawn_with(&["--isolation", "none"]).await;
    let reg = b.master.first_registration().await;
    assert_eq!(reg.isolation, Some(IsolationMode::None));
    let spec = AttemptBuilder::new(&["sleep", "1000"])
        .memory(1 << 20)
        .build();
    let r = b.sync(std::slice::from_ref(&spec), &[]).await;
    let pid = find(&r, spec.id)
        .and_then(|a| a.pid)
        .expect("runs, unlimited");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(!cgroups.contains(&spec.id.to_string()), "{cgroups}");
}

/// The v2 handle on the real unified hierarchy, wherever one is mounted and
/// writable (here it holds no memory/cpu/pids controllers, so the limits are
/// covered by the unit tests on a cgroupfs-shaped directory): a child joins in
/// `pre_exec`, its setsid'd grandchild is in the cgroup too, `cgroup.kill`
/// empties it and it is removed.
#[test]
fn v2_cgroup_join_kill_and_remove_on_the_unified_hierarchy() {
    use borglet::isolation::AttemptCgroup;
    use std::os::unix::process::CommandExt;

    let Some(unified) = borglet::isolation::read_mounts().unified else {
        eprintln!("SKIP: no cgroup2 mounted on this host");
        return;
    };
    let dir = unified.join(format!("borg-test-{}", borg_shared::AttemptId::new()));
    if let Err(e) = std::fs::create_dir(&dir) {
        eprintln!(
            "SKIP: cgroup2 at {} is not writable: {e}",
            unified.display()
        );
        return;
    }
    let cg = AttemptCgroup::V2 { dir: dir.clone() };
    let join = cg.joiner().unwrap();
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.args(["-c", "setsid sleep 1000 & exec sleep 1000"]);
    // SAFETY: setsid(2) and write(2) only, both async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            join.join_self()
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    let deadline = std::time::Instant::now() + common::DEADLINE;
    let pids = loop {
        let pids = cg.pids().unwrap();
        if pids.len() == 2 {
            break pids;
        }
        assert!(std::time::Instant::now() < deadline, "pids {pids:?}");
        std::thread::yield_now();
    };
    assert!(pids.contains(&pid));
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let name = dir.file_name().unwrap().to_str().unwrap();
    assert!(own.contains(&format!("0::/{name}")), "{own}");

    cg.kill_all().unwrap();
    assert!(cg.pids().unwrap().is_empty());
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    for p in pids {
        assert!(!common::pid_running(p), "pid {p} survived");
    }
    cg.remove().unwrap();
    assert!(!dir.exists());
}

#[tokio::test]
async fn an_in_place_restart_runs_in_a_fresh_cgroup_of_the_same_attempt() {
    let Some((b, mode)) = isolated_borglet(&["--usage-interval", "100ms"]).await else {
        return;
    };
    // The first run eats past its limit and is OOM-killed; the second stays up.
    let spec = AttemptBuilder::sh(
        "echo run >> runs; [ $(wc -l < runs) -ge 2 ] && exec sleep 1000; head -c 200M /dev/zero | tail",
    )
    .memory(32 << 20)
    .restart(None, 10)
    .build();
    let r = b
        .sync_until(
            std::slice::from_ref(&spec),
            spec.id,
            "running again after an oom kill, with usage",
            |r| r.phase == AttemptPhase::Running && r.restarts == 1 && r.usage.is_some(),
        )
        .await;
    assert!(!r.oom_killed, "the new run was not OOM-killed: {r:?}");
    let pid = r.pid.expect("pid");
    let memory = cgroup_dir(pid, mode, "memory");
    assert_eq!(
        memory,
        recorded_cgroup(&b.records(spec.id)),
        "the cgroup the new run's launch record names"
    );
    match mode {
        IsolationMode::V1 => {
            assert_eq!(
                read(&memory, "memory.limit_in_bytes"),
                (32u64 << 20).to_string()
            );
            let oom = read(&memory, "memory.oom_control");
            assert!(
                oom.lines().any(|l| l == "oom_kill 0"),
                "fresh counters: {oom}"
            );
        }
        IsolationMode::V2 => {
            assert_eq!(read(&memory, "memory.max"), (32u64 << 20).to_string());
            let events = read(&memory, "memory.events");
            assert!(
                events.lines().any(|l| l == "oom_kill 0"),
                "fresh counters: {events}"
            );
        }
        IsolationMode::None => unreachable!(),
    }
    let metrics = b
        .client
        .get(format!("{}/metrics", b.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = format!(
        "borglet_attempts_oom_killed_total{{machine=\"{}\"}} 1",
        b.name
    );
    assert!(
        metrics.contains(&line),
        "the first run's OOM kill was seen: {metrics}"
    );
}

/// The sets under this borglet's memory parent (v1) with no process in them,
/// with their inode numbers.
fn spares(b: &TestBorglet) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mounts = borglet::isolation::read_mounts();
    let parent = mounts.v1["memory"].join(borglet::isolation::parent_path("borg", &b.name));
    std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let empty = std::fs::read_to_string(e.path().join("cgroup.procs")).ok()?;
            (e.path().is_dir() && empty.trim().is_empty())
                .then(|| (name, e.metadata().unwrap().ino()))
        })
        .collect()
}

#[tokio::test]
async fn a_reused_cgroup_reports_the_new_attempts_peak_and_oom_not_the_previous_ones() {
    let Some((b, mode)) = isolated_borglet(&[]).await else {
        return;
    };
    if mode != IsolationMode::V1 {
        eprintln!("SKIP: spare cgroups are kept on v1 only; this host isolates with {mode:?}");
        return;
    }
    let ended = |r: &borg_shared::wire::AttemptReport| r.phase == AttemptPhase::Exited;
    // A holds 20 MiB at its peak and ends cleanly: its set is kept.
    let a = AttemptBuilder::sh("head -c 20M /dev/zero | tail > /dev/null")
        .memory(64 << 20)
        .build();
    let a_done = b
        .sync_until(std::slice::from_ref(&a), a.id, "A ended", ended)
        .await;
    assert_eq!(a_done.exit_code, Some(0), "{a_done:?}");
    let a_peak = a_done.peak_memory.expect("A's peak").0;
    assert!(a_peak >= 20 << 20, "A's peak {a_peak}");
    let (_, spare) = eventually("A's cgroup kept as a spare", || async {
        let s = spares(&b);
        (s.len() == 1).then(|| s[0].clone())
    })
    .await;

    // B takes it, as it is, with its own (smaller) limit and counters that
    // start from nothing.
    let b_spec = AttemptBuilder::new(&["sleep", "1000"])
        .memory(32 << 20)
        .build();
    let r = b.sync(std::slice::from_ref(&b_spec), &[a.id]).await;
    let pid = find(&r, b_spec.id).and_then(|x| x.pid).expect("B's pid");
    let memory = cgroup_dir(pid, mode, "memory");
    assert_eq!(memory, recorded_cgroup(&b.records(b_spec.id)));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&memory).unwrap().ino(),
        spare,
        "B runs in A's former cgroup"
    );
    assert!(spares(&b).is_empty(), "the spare was taken");
    assert_eq!(
        read(&memory, "memory.limit_in_bytes"),
        (32u64 << 20).to_string()
    );
    b.sync(&[], &[]).await;
    let b_done = b.sync_until(&[], b_spec.id, "B stopped", ended).await;
    assert!(!b_done.oom_killed, "{b_done:?}");
    let b_peak = b_done.peak_memory.expect("B's peak").0;
    assert!(
        b_peak < 4 << 20,
        "B's peak {b_peak} is its own, not A's {a_peak}"
    );
    eventually("B's cgroup kept as a spare", || async {
        (spares(&b).len() == 1).then_some(())
    })
    .await;

    // C takes it again and is OOM-killed: reported, with C's peak near its limit.
    let c = AttemptBuilder::sh("head -c 200M /dev/zero | tail")
        .memory(32 << 20)
        .build();
    let c_done = b
        .sync_until(std::slice::from_ref(&c), c.id, "C ended", ended)
        .await;
    assert!(c_done.oom_killed, "{c_done:?}");
    let c_peak = c_done.peak_memory.expect("C's peak").0;
    assert!((30 << 20..=34 << 20).contains(&c_peak), "C's peak {c_peak}");
    // A set that saw an OOM kill is never handed out again: D's is fresh.
    eventually("C's cgroup removed, not kept", || async {
        (!memory.exists() && spares(&b).is_empty()).then_some(())
    })
    .await;
    let d = AttemptBuilder::new(&["sleep", "1000"]).build();
    let r = b.sync(std::slice::from_ref(&d), &[c.id]).await;
    let pid = find(&r, d.id).and_then(|x| x.pid).expect("D's pid");
    let oom = read(&cgroup_dir(pid, mode, "memory"), "memory.oom_control");
    assert!(oom.lines().any(|l| l == "oom_kill 0"), "{oom}");
}

#[tokio::test]
async fn spare_cgroups_are_removed_when_the_borglet_shuts_down_leaving_its_tasks() {
    let Some((mut b, mode)) = isolated_borglet(&["--on-exit", "keep"]).await else {
        return;
    };
    if mode != IsolationMode::V1 {
        eprintln!("SKIP: spare cgroups are kept on v1 only; this host isolates with {mode:?}");
        return;
    }
    let done = AttemptBuilder::new(&["true"]).build();
    b.sync_until(std::slice::from_ref(&done), done.id, "ended", |r| {
        r.phase == AttemptPhase::Exited
    })
    .await;
    eventually("a spare is kept", || async {
        (spares(&b).len() == 1).then_some(())
    })
    .await;
    b.shutdown().await.unwrap();
    assert!(spares(&b).is_empty(), "{:?}", spares(&b));
}

#[tokio::test]
async fn a_restarted_borglet_leaves_a_handed_on_set_to_the_task_running_in_it() {
    let keep = ["--on-exit", "keep"];
    let Some((b, mode)) = isolated_borglet(&keep).await else {
        return;
    };
    if mode != IsolationMode::V1 {
        eprintln!("SKIP: spare cgroups are kept on v1 only; this host isolates with {mode:?}");
        return;
    }
    let ended = |r: &borg_shared::wire::AttemptReport| r.phase == AttemptPhase::Exited;
    // A ends and is never acknowledged; its set goes to B, which keeps running.
    let a = AttemptBuilder::new(&["true"]).build();
    b.sync_until(std::slice::from_ref(&a), a.id, "A ended", ended)
        .await;
    eventually("A's set kept as a spare", || async {
        (spares(&b).len() == 1).then_some(())
    })
    .await;
    let b_spec = AttemptBuilder::new(&["sleep", "1000"]).build();
    let r = b.sync(std::slice::from_ref(&b_spec), &[]).await;
    let pid = find(&r, b_spec.id).and_then(|x| x.pid).expect("B's pid");
    let set = cgroup_dir(pid, mode, "memory");
    assert_eq!(recorded_cgroup(&b.records(a.id)), set, "B runs in A's set");
    // An empty set a borglet that is gone left behind.
    let leftover = set.with_file_name(format!("set-{}-1-0", i32::MAX - 1));
    std::fs::create_dir(&leftover).unwrap();

    let master_client = b.client.clone();
    let (data_dir, name) = b.stop_keeping_data().await;
    let mut again =
        TestBorglet::spawn_in(MasterStub::spawn_refusing().await, data_dir, name, &keep).await;
    again.client = master_client;
    let r = again.sync(std::slice::from_ref(&b_spec), &[]).await;
    let b_now = find(&r, b_spec.id).expect("B re-adopted");
    assert_eq!((b_now.phase, b_now.pid), (AttemptPhase::Running, Some(pid)));
    assert!(common::pid_running(pid), "B was not killed with A's end");
    assert_eq!(cgroup_dir(pid, mode, "memory"), set, "B's set kept");
    let a_now = find(&r, a.id).expect("A still reported, never acknowledged");
    assert_eq!(a_now.exit_code, Some(0), "{a_now:?}");
    assert_eq!(
        a_now.peak_memory, None,
        "B's counters are not A's: {a_now:?}"
    );
    assert!(!leftover.exists(), "swept at start");
}
