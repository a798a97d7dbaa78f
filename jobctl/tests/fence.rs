//! `task.fence_after` end to end, with real parts: a throwaway Postgres, and the
//! master, the scheduler and 3 borglets as separate processes. Two services run
//! on the same borglet, one with `fence_after: 3s` and one without; the master
//! is killed (SIGKILL, not restarted). The borglet kills the fenced task once no
//! sync has come for 3 s, and not while the master still synced; the other task
//! keeps running. A new master then hears why the fenced task ended.

#[path = "no_loss/cell.rs"]
mod cell;

use cell::{wait_for, Cell};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const FENCE_AFTER: Duration = Duration::from_secs(3);
/// How often the test's master syncs each borglet.
const POLL: Duration = Duration::from_millis(200);

/// The task of `job` as the API shows it, once it runs with a pid: (attempt, pid, machine).
async fn running(cell: &Cell, job: &str) -> (String, i32, String) {
    wait_for(
        &format!("{job} running"),
        Duration::from_secs(60),
        || async {
            let v = cell.get(&format!("/v1/jobs/{job}")).await?;
            let t = v["tasks"].as_array()?.first()?.clone();
            (t["state"] == "running").then_some(())?;
            Some((
                t["attempt"].as_str()?.to_string(),
                t["pid"].as_i64()? as i32,
                t["machine"].as_str()?.to_string(),
            ))
        },
    )
    .await
}

/// Is a process of this attempt alive (by its environment, so a reused pid does not count)?
fn attempt_alive(pid: i32, attempt: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
        env.split(|b| *b == 0)
            .any(|kv| kv == format!("BORG_ATTEMPT={attempt}").as_bytes())
    }) && procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .is_ok_and(|s| s.state != 'Z')
}

/// How long process `pid` has been running.
fn age(pid: i32) -> Option<Duration> {
    let stat = procfs::process::Process::new(pid).ok()?.stat().ok()?;
    use procfs::Current;
    let uptime = procfs::Uptime::current().ok()?.uptime_duration();
    let started =
        Duration::from_secs_f64(stat.starttime as f64 / procfs::ticks_per_second() as f64);
    uptime.checked_sub(started)
}

fn service(name: &str, fence_after: Option<&str>) -> Value {
    let mut task = json!({
        "command": ["/bin/sleep", "100000"],
        "resources": {"cpu": "10m", "memory": "4Mi"},
        "kill_grace": "1s",
    });
    if let Some(f) = fence_after {
        task["fence_after"] = json!(f);
    }
    // Both on m1 (zone a), so one borglet's silence decides for both.
    json!({"name": name, "kind": "service", "task": task,
        "constraints": [{"label": "zone", "op": "=", "value": "a"}]})
}

#[tokio::test]
async fn a_fenced_task_is_killed_once_no_master_synced_for_fence_after_and_others_keep_running() {
    let flags = ["--poll-interval", "200ms"].map(String::from).to_vec();
    let mut cell = Cell::start_with(flags).await;
    for spec in [service("fenced", Some("3s")), service("free", None)] {
        let (status, body) = cell.post("/v1/jobs", spec).await;
        assert_eq!(status, 201, "{body}");
    }
    let (fenced, fenced_pid, m_fenced) = running(&cell, "fenced").await;
    let (free, free_pid, m_free) = running(&cell, "free").await;
    assert_eq!((m_fenced.as_str(), m_free.as_str()), ("m1", "m1"));

    // While the master syncs, the fence never fires: the fenced task lives past
    // its fence_after (waited for on the process's own age, not a sleep).
    wait_for(
        "the fenced task to run longer than its fence_after",
        Duration::from_secs(60),
        || async {
            assert!(
                attempt_alive(fenced_pid, &fenced),
                "the fenced task ended while the master still synced"
            );
            (age(fenced_pid)? > FENCE_AFTER + Duration::from_secs(1)).then_some(())
        },
    )
    .await;

    cell.kill_master();
    let master_gone = Instant::now();
    assert!(
        attempt_alive(fenced_pid, &fenced),
        "the fenced task ended before the master went away"
    );

    wait_for(
        "the borglet to kill the fenced task",
        FENCE_AFTER + Duration::from_secs(30),
        || async { (!attempt_alive(fenced_pid, &fenced)).then_some(()) },
    )
    .await;
    let after = master_gone.elapsed();
    // The last sync came at most one poll before the kill: the fence cannot
    // have fired sooner than fence_after less that poll after it.
    assert!(
        after >= FENCE_AFTER - POLL,
        "fenced {after:?} after the master went away, before its fence_after of {FENCE_AFTER:?}"
    );
    assert!(
        attempt_alive(free_pid, &free),
        "the task without fence_after was killed too"
    );

    // A new master on the same database: the fenced attempt's end is reported
    // with its cause, and the other task is still the same process.
    cell.start_master();
    let pool = sqlx::PgPool::connect(&cell.database_url).await.unwrap();
    let reason = wait_for(
        "the fenced attempt's end reported to the new master",
        Duration::from_secs(60),
        || async {
            let reason: Option<String> =
                sqlx::query_scalar("SELECT reason FROM attempts WHERE id = $1::uuid")
                    .bind(&fenced)
                    .fetch_one(&pool)
                    .await
                    .ok()?;
            reason
        },
    )
    .await;
    assert!(
        reason.contains("fenced: no master sync for"),
        "reason: {reason}"
    );
    // The death certificate names who killed it and why: the borglet's fence.
    let killed_by: Option<String> =
        sqlx::query_scalar("SELECT killed_by FROM attempts WHERE id = $1::uuid")
            .bind(&fenced)
            .fetch_one(&pool)
            .await
            .unwrap();
    let killed_by = killed_by.unwrap_or_default();
    assert!(
        killed_by.starts_with("its borglet: fenced: no master sync for"),
        "killed_by: {killed_by}"
    );
    assert!(
        attempt_alive(free_pid, &free),
        "the task without fence_after did not survive the master's absence"
    );
    assert_eq!(running(&cell, "free").await.1, free_pid);
}
