//! `GET /v1/attempts/{id}/logs?follow=true` against a real borglet and real
//! processes: streaming as the task writes, ending when it ends, and letting go
//! when the client or the borglet goes away.

mod common;

use borg_shared::wire::AttemptPhase;
use borg_shared::{AttemptId, ErrorBody};
use common::{eventually, AttemptBuilder, TestBorglet, DEADLINE};
use std::path::Path;

/// Read chunks of a streaming body into `got` until it contains `want`.
async fn read_until(resp: &mut reqwest::Response, got: &mut String, want: &str) {
    tokio::time::timeout(DEADLINE, async {
        while !got.contains(want) {
            let chunk = resp.chunk().await.unwrap();
            let chunk = chunk.unwrap_or_else(|| panic!("body ended before {want:?}: {got:?}"));
            got.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {want:?}; got {got:?}"));
}

/// Read the rest of a streaming body; fails the test if it does not end in time.
async fn read_to_end(resp: &mut reqwest::Response, got: &mut String) {
    tokio::time::timeout(DEADLINE, async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            got.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the follow did not end; got {got:?}"));
}

/// How many descriptors this process (the test, which hosts the borglet) holds on `path`.
fn open_fds(path: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target == path)
        .count()
}

#[tokio::test]
async fn follow_streams_new_output_and_ends_with_the_attempt() {
    let b = TestBorglet::spawn().await;
    let spec =
        AttemptBuilder::sh("echo 'line 1'; while [ ! -e go ]; do sleep 0.02; done; echo 'line 2'")
            .build();
    let id = spec.id;
    b.sync(std::slice::from_ref(&spec), &[]).await;

    let mut resp = b.logs(&id.to_string(), "?follow=true").await;
    assert_eq!(resp.status(), 200);
    let mut got = String::new();
    read_until(&mut resp, &mut got, "line 1\n").await;
    assert_eq!(got, "line 1\n", "line 2 cannot exist before `go`");

    std::fs::write(b.sandbox(id).join("go"), "").unwrap();
    read_until(&mut resp, &mut got, "line 2\n").await;
    read_to_end(&mut resp, &mut got).await;
    assert_eq!(got, "line 1\nline 2\n");
}

/// A log file is made at its stream's first byte: a follow that begins before
/// it waits for the file, then streams it and ends with the attempt.
#[tokio::test]
async fn follow_waits_for_a_log_the_task_has_not_written_yet() {
    let b = TestBorglet::spawn().await;
    let spec = AttemptBuilder::sh("while [ ! -e go ]; do sleep 0.02; done; echo late").build();
    let id = spec.id;
    b.sync(std::slice::from_ref(&spec), &[]).await;
    let stdout = b.sandbox(id).join("stdout");
    assert!(!stdout.exists(), "nothing written yet, so no file");

    let mut resp = b.logs(&id.to_string(), "?follow=true").await;
    assert_eq!(resp.status(), 200);
    let plain = b.logs(&id.to_string(), "").await;
    assert_eq!(plain.status(), 200, "an unwritten log reads as empty");
    assert_eq!(plain.text().await.unwrap(), "");

    std::fs::write(b.sandbox(id).join("go"), "").unwrap();
    let mut got = String::new();
    read_to_end(&mut resp, &mut got).await;
    assert_eq!(got, "late\n");
    assert!(stdout.exists());
}

/// The files a start makes: a task that writes nothing leaves no log files.
#[tokio::test]
async fn a_silent_task_makes_no_log_files() {
    let b = TestBorglet::spawn().await;
    let spec = AttemptBuilder::new(&["/bin/true"]).build();
    let id = spec.id;
    b.sync_until(std::slice::from_ref(&spec), id, "exited", |r| {
        r.phase == AttemptPhase::Exited
    })
    .await;
    for name in ["stdout", "stderr"] {
        assert!(!b.sandbox(id).join(name).exists(), "{name} was made");
    }
    let resp = b.logs(&id.to_string(), "?stream=stderr").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "");
}

#[tokio::test]
async fn follow_of_a_finished_attempt_sends_the_log_and_ends() {
    let b = TestBorglet::spawn().await;
    let spec = AttemptBuilder::sh("printf 'a\\nb\\nc\\n'; echo oops >&2").build();
    let id = spec.id;
    b.sync_until(std::slice::from_ref(&spec), id, "exited", |r| {
        r.phase == AttemptPhase::Exited
    })
    .await;

    for (query, want) in [
        ("?follow=true", "a\nb\nc\n"),
        ("?follow=true&tail=1", "c\n"),
        ("?follow=true&stream=stderr", "oops\n"),
        ("?follow=false&tail=2", "b\nc\n"),
    ] {
        let mut resp = b.logs(&id.to_string(), query).await;
        assert_eq!(resp.status(), 200, "{query}");
        let mut got = String::new();
        read_to_end(&mut resp, &mut got).await;
        assert_eq!(got, want, "{query}");
    }
}

#[tokio::test]
async fn follow_with_tail_starts_at_the_last_lines() {
    let b = TestBorglet::spawn().await;
    let spec =
        AttemptBuilder::sh("printf 'a\\nb\\nc\\n'; while [ ! -e go ]; do sleep 0.02; done; echo d")
            .build();
    let id = spec.id;
    b.sync(std::slice::from_ref(&spec), &[]).await;
    let stdout = b.sandbox(id).join("stdout");
    eventually("the task printed its first lines", || async {
        (std::fs::read_to_string(&stdout).ok()? == "a\nb\nc\n").then_some(())
    })
    .await;

    let mut resp = b.logs(&id.to_string(), "?follow=true&tail=1").await;
    let mut got = String::new();
    read_until(&mut resp, &mut got, "c\n").await;
    std::fs::write(b.sandbox(id).join("go"), "").unwrap();
    read_to_end(&mut resp, &mut got).await;
    assert_eq!(got, "c\nd\n");
}

#[tokio::test]
async fn follow_of_a_sandbox_the_table_does_not_know_is_a_plain_read() {
    // As after a borglet restart: the sandbox is on disk, the attempt is not in the table.
    let b = TestBorglet::spawn().await;
    let id = AttemptId::new();
    std::fs::create_dir_all(b.sandbox(id)).unwrap();
    std::fs::write(b.sandbox(id).join("stdout"), "old\n").unwrap();

    let mut resp = b.logs(&id.to_string(), "?follow=true").await;
    assert_eq!(resp.status(), 200);
    let mut got = String::new();
    read_to_end(&mut resp, &mut got).await;
    assert_eq!(got, "old\n");
}

#[tokio::test]
async fn follow_must_be_a_boolean() {
    let b = TestBorglet::spawn().await;
    let spec = AttemptBuilder::sh("echo hi").build();
    b.sync(std::slice::from_ref(&spec), &[]).await;
    let resp = b.logs(&spec.id.to_string(), "?follow=maybe").await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<ErrorBody>().await.unwrap().error.code,
        "invalid_query"
    );
}

#[tokio::test]
async fn follow_lets_go_of_the_file_when_the_client_leaves() {
    let b = TestBorglet::spawn().await;
    let spec = AttemptBuilder::sh("echo hi; sleep 1000").build();
    let id = spec.id;
    b.sync(std::slice::from_ref(&spec), &[]).await;

    let mut resp = b.logs(&id.to_string(), "?follow=true").await;
    let mut got = String::new();
    read_until(&mut resp, &mut got, "hi\n").await;
    let stdout = std::fs::canonicalize(b.sandbox(id).join("stdout")).unwrap();
    assert_eq!(open_fds(&stdout), 1, "the follower holds the log open");

    drop(resp);
    eventually("the follower closed the log", || async {
        (open_fds(&stdout) == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn shutdown_ends_a_follow_of_a_running_attempt() {
    let mut b = TestBorglet::spawn().await;
    let spec = AttemptBuilder::sh("echo hi; sleep 1000").build();
    let id = spec.id;
    b.sync(std::slice::from_ref(&spec), &[]).await;

    let mut resp = b.logs(&id.to_string(), "?follow=true").await;
    let mut got = String::new();
    read_until(&mut resp, &mut got, "hi\n").await;
    // Graceful shutdown waits for open responses: the follow must end on its own.
    b.shutdown().await.unwrap();
    read_to_end(&mut resp, &mut got).await;
    assert_eq!(got, "hi\n");
}

/// A task can write its sandbox: one that replaces its own log with a symlink
/// to a file outside (here a "secret" beside the sandboxes) must not get the
/// borglet to serve that file; a log path that escapes is refused.
#[tokio::test]
async fn a_log_that_points_outside_the_sandbox_is_refused() {
    let b = TestBorglet::spawn().await;
    let probe = AttemptBuilder::sh("true").build();
    let secret = b
        .sandbox(probe.id)
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("secret");
    std::fs::write(&secret, "the borglet's secret\n").unwrap();
    let script = format!(
        "echo fine; rm -f stderr; ln -s {} stderr; touch linked",
        secret.display()
    );
    let spec = AttemptBuilder::sh(&script).build();
    let id = spec.id;
    b.sync_until(std::slice::from_ref(&spec), id, "exited", |r| {
        r.phase == AttemptPhase::Exited
    })
    .await;
    assert!(
        b.sandbox(id).join("linked").exists(),
        "the task ran in its sandbox"
    );

    let resp = b.logs(&id.to_string(), "?stream=stdout").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "fine\n");
    for query in [
        "?stream=stderr",
        "?stream=stderr&tail=5",
        "?stream=stderr&follow=true",
    ] {
        let resp = b.logs(&id.to_string(), query).await;
        assert_eq!(resp.status(), 400, "{query}");
        let body: ErrorBody = resp.json().await.unwrap();
        assert_eq!(body.error.code, "log_outside_sandbox", "{query}");
        assert!(!body.error.message.contains("secret"), "{query}");
    }
    for id in ["..%2F..%2Fsecret", "..", "%2Fetc%2Fpasswd"] {
        let resp = b.logs(id, "").await;
        assert!(resp.status().is_client_error(), "{id}: {}", resp.status());
        assert!(!resp.text().await.unwrap().contains("borglet's secret"));
    }
}

/// `previous=true`: the run before the current one, kept at an in-place
/// restart; an attempt that has not restarted has none (404), and the previous
/// run's file is confined to the sandbox like the current one's.
#[tokio::test]
async fn previous_serves_the_run_before_the_restart() {
    let b = TestBorglet::spawn().await;
    let script = "n=$(( $(cat runs 2>/dev/null || echo 0) + 1 )); echo $n > runs; \
                  echo \"out $n\"; echo \"err $n\" >&2; [ $n -ge 3 ] || exit 1; touch up; exec sleep 60";
    let spec = AttemptBuilder::sh(script).restart(None, 10).build();
    let id = spec.id;
    let once = AttemptBuilder::sh("echo only; exec sleep 60").build();
    let specs = [spec, once.clone()];
    b.sync_until(&specs, id, "the third run", |r| r.restarts == 2)
        .await;
    eventually("the third run's output", || async {
        let resp = b.logs(&id.to_string(), "").await;
        (resp.text().await.unwrap() == "out 3\n").then_some(())
    })
    .await;
    for (query, want) in [
        ("?previous=true", "out 2\n"),
        ("?previous=true&stream=stderr", "err 2\n"),
        ("?previous=true&tail=1&follow=true", "out 2\n"),
    ] {
        let resp = b.logs(&id.to_string(), query).await;
        assert_eq!(resp.status(), 200, "{query}");
        assert_eq!(resp.text().await.unwrap(), want, "{query}");
    }

    let resp = b.logs(&once.id.to_string(), "?previous=true").await;
    assert_eq!(resp.status(), 404);
    let body: ErrorBody = resp.json().await.unwrap();
    assert!(body.error.message.contains("no previous run"), "{body:?}");

    let outside = b.sandbox(id).parent().unwrap().join("outside");
    std::fs::write(&outside, "not a log\n").unwrap();
    let previous = b.sandbox(id).join("stdout.previous");
    std::fs::remove_file(&previous).unwrap();
    std::os::unix::fs::symlink(&outside, &previous).unwrap();
    let resp = b.logs(&id.to_string(), "?previous=true").await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn an_exit_is_recorded_though_an_escaped_process_holds_the_output_open() {
    let b = TestBorglet::spawn().await;
    // The background process leaves the task's session and keeps its stdout:
    // the keeper drains the pipe only a short while after the task exited.
    let spec = AttemptBuilder::sh("setsid sleep 120 & echo $! > bg; echo bye; exit 3").build();
    let id = spec.id;
    let began = std::time::Instant::now();
    let r = b
        .sync_until(std::slice::from_ref(&spec), id, "exited", |r| {
            r.phase == AttemptPhase::Exited
        })
        .await;
    assert_eq!(r.exit_code, Some(3), "{r:?}");
    assert!(began.elapsed() < DEADLINE, "the exit waited for the pipe");
    let out = std::fs::read_to_string(b.sandbox(id).join("stdout")).unwrap();
    assert_eq!(out, "bye\n");
    if let Some(pid) = std::fs::read_to_string(b.sandbox(id).join("bg"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[tokio::test]
async fn the_keeper_counts_each_runs_stderr_and_the_tail_is_read_when_there_is_one() {
    let b = TestBorglet::spawn().await;
    let loud = AttemptBuilder::sh("printf 'to out\\n'; printf 'last words\\n' >&2").build();
    let quiet = AttemptBuilder::sh("printf 'only out\\n'").build();
    let specs = [loud.clone(), quiet.clone()];
    for spec in &specs {
        b.sync_until(&specs, spec.id, "exited", |r| {
            r.phase == AttemptPhase::Exited
        })
        .await;
    }
    let record = |id| {
        let text = std::fs::read_to_string(b.records(id).join("exit.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()
    };
    assert_eq!(record(loud.id)["stderr_bytes"], 11, "{}", record(loud.id));
    assert_eq!(record(quiet.id)["stderr_bytes"], 0, "{}", record(quiet.id));
    let loud_done = b
        .sync_until(&specs, loud.id, "reported", |r| {
            r.phase == AttemptPhase::Exited
        })
        .await;
    assert_eq!(loud_done.stderr_tail.as_deref(), Some("last words\n"));
    let quiet_done = b
        .sync_until(&specs, quiet.id, "reported", |r| {
            r.phase == AttemptPhase::Exited
        })
        .await;
    assert_eq!(quiet_done.stderr_tail, None);
}
