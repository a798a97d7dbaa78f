//! `POST /v1/sync` and the log endpoint, against a real borglet running real processes.

mod common;

use borg_shared::wire::{AttemptPhase, SyncResponse};
use borg_shared::{AttemptId, ErrorBody};
use common::{eventually, find, phase_of, AttemptBuilder, TestBorglet};

#[tokio::test]
async fn wanted_attempt_runs_reports_exit_and_keeps_its_logs() {
    let b = TestBorglet::spawn().await;
    // Waits for a `go` file so the test sees it Running before letting it finish.
    let spec = AttemptBuilder::sh(
        "while [ ! -e go ]; do sleep 0.02; done; \
         echo out $BORG_TASK_INDEX; echo err >&2; \
         echo job=$BORG_JOB attempt=$BORG_ATTEMPT machine=$BORG_MACHINE; \
         echo greeting=$GREETING home=$HOME",
    )
    .job("hello", 3)
    .env("GREETING", "hi")
    .build();
    let id = spec.id;

    let first = b.sync(std::slice::from_ref(&spec), &[]).await;
    let report = find(&first, id).expect("a just-started attempt is reported");
    assert_eq!(report.phase, AttemptPhase::Running);
    let pid = report.pid.expect("running attempt has a pid");
    assert!(report.started_at.is_some());
    assert!(common::pid_running(pid));

    std::fs::write(b.sandbox(id).join("go"), "").unwrap();
    let done = b
        .sync_until(std::slice::from_ref(&spec), id, "attempt exited", |r| {
            r.phase == AttemptPhase::Exited
        })
        .await;
    assert_eq!(done.exit_code, Some(0));
    assert_eq!(done.signal, None);
    assert_eq!(done.pid, Some(pid));
    assert!(!done.stopped_by_borglet);
    assert!(done.finished_at >= done.started_at);

    let stdout = b.logs(&id.to_string(), "?stream=stdout").await;
    assert_eq!(stdout.status(), 200);
    assert!(stdout.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let stdout = stdout.text().await.unwrap();
    assert!(stdout.contains("out 3\n"), "stdout: {stdout}");
    assert!(
        stdout.contains(&format!("job=hello attempt={id} machine={}\n", b.name)),
        "stdout: {stdout}"
    );
    let sandbox = std::fs::canonicalize(b.sandbox(id)).unwrap();
    assert!(
        stdout.contains(&format!("greeting=hi home={}\n", sandbox.display())),
        "stdout: {stdout}"
    );
    // Default stream is stdout; tail gives the last lines only.
    let default = b.logs(&id.to_string(), "").await.text().await.unwrap();
    assert_eq!(default, stdout);
    let tail = b
        .logs(&id.to_string(), "?tail=1")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(tail, format!("greeting=hi home={}\n", sandbox.display()));

    let stderr = b.logs(&id.to_string(), "?stream=stderr").await;
    assert_eq!(stderr.status(), 200);
    assert_eq!(stderr.text().await.unwrap(), "err\n");
}

#[tokio::test]
async fn log_endpoint_rejects_unknown_and_bad_ids() {
    let b = TestBorglet::spawn().await;
    let unknown = b.logs(&AttemptId::new().to_string(), "").await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.json::<ErrorBody>().await.unwrap().error.code,
        "not_found"
    );
    let bad = b.logs("not-a-uuid", "").await;
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.json::<ErrorBody>().await.unwrap().error.code,
        "invalid_id"
    );
    let bad_stream = b.logs(&AttemptId::new().to_string(), "?stream=both").await;
    assert_eq!(bad_stream.status(), 400);
}

#[tokio::test]
async fn duplicated_syncs_start_an_attempt_once() {
    let b = TestBorglet::spawn().await;
    let spec =
        AttemptBuilder::sh("echo $$ >> runs; while [ ! -e go ]; do sleep 0.02; done").build();
    let id = spec.id;
    let wanted = [spec];

    // Two polls racing, then a few more in a row.
    let (r1, r2) = tokio::join!(b.sync(&wanted, &[]), b.sync(&wanted, &[]));
    let pid = find(&r1, id).and_then(|r| r.pid).expect("pid");
    assert_eq!(find(&r2, id).and_then(|r| r.pid), Some(pid));
    for _ in 0..3 {
        let r = b.sync(&wanted, &[]).await;
        assert_eq!(r.attempts.len(), 1);
        assert_eq!(find(&r, id).and_then(|r| r.pid), Some(pid));
    }
    let runs_file = b.sandbox(id).join("runs");
    let runs = eventually("the task wrote its pid", || async {
        std::fs::read_to_string(&runs_file)
            .ok()
            .filter(|s| s.ends_with('\n'))
    })
    .await;
    assert_eq!(runs, format!("{pid}\n"));

    std::fs::write(b.sandbox(id).join("go"), "").unwrap();
    b.sync_until(&wanted, id, "exited", |r| r.phase == AttemptPhase::Exited)
        .await;
    // Still wanted after it finished: not started again.
    b.sync(&wanted, &[]).await;
    assert_eq!(
        std::fs::read_to_string(&runs_file).unwrap(),
        format!("{pid}\n")
    );
}

#[tokio::test]
async fn missing_program_is_failed_to_start() {
    let b = TestBorglet::spawn().await;
    let missing = AttemptBuilder::new(&["/nonexistent/program", "x"]).build();
    let empty = AttemptBuilder::new(&[]).build();
    let r = b.sync(&[missing.clone(), empty.clone()], &[]).await;

    let m = find(&r, missing.id).expect("reported");
    assert_eq!(m.phase, AttemptPhase::FailedToStart);
    assert_eq!(m.pid, None);
    let msg = m.message.as_deref().unwrap_or_default();
    assert!(msg.contains("/nonexistent/program"), "message: {msg}");

    let e = find(&r, empty.id).expect("reported");
    assert_eq!(e.phase, AttemptPhase::FailedToStart);
    assert!(e.message.as_deref().unwrap_or_default().contains("empty"));

    // Reported until acked, never retried.
    let again = b.sync(&[missing.clone(), empty.clone()], &[]).await;
    assert_eq!(again.attempts.len(), 2);
    let acked = b.sync(&[], &[missing.id, empty.id]).await;
    assert!(acked.attempts.is_empty());
}

#[tokio::test]
async fn ack_forgets_a_finished_attempt_for_good() {
    let b = TestBorglet::spawn().await;
    let done = AttemptBuilder::sh("echo ran >> runs").build();
    let live = AttemptBuilder::new(&["sleep", "1000"]).build();
    let wanted = [done.clone(), live.clone()];
    b.sync_until(&wanted, done.id, "exited", |r| {
        r.phase == AttemptPhase::Exited
    })
    .await;

    // Acking a running attempt does nothing; acking a finished one forgets it.
    let r = b.sync(&wanted, &[done.id, live.id]).await;
    assert_eq!(phase_of(&r, done.id), None);
    assert_eq!(phase_of(&r, live.id), Some(AttemptPhase::Running));

    // A delayed duplicate of an old poll still naming it must not run it again.
    let r = b.sync(&wanted, &[]).await;
    assert_eq!(phase_of(&r, done.id), None);
    let runs = std::fs::read_to_string(b.sandbox(done.id).join("runs")).unwrap();
    assert_eq!(runs, "ran\n");
}

#[tokio::test]
async fn stale_epoch_and_wrong_machine_are_conflicts() {
    let mut b = TestBorglet::spawn().await;
    b.epoch = 5;
    b.sync(&[], &[]).await;

    let spec = AttemptBuilder::new(&["sleep", "1000"]).build();
    let mut old = b.request(std::slice::from_ref(&spec), &[]);
    old.epoch = 4;
    let resp = b.post_sync(&old).await;
    assert_eq!(resp.status(), 409);
    assert_eq!(
        resp.json::<ErrorBody>().await.unwrap().error.code,
        "stale_epoch"
    );

    let mut wrong = b.request(std::slice::from_ref(&spec), &[]);
    wrong.machine = "someone-else".into();
    let resp = b.post_sync(&wrong).await;
    assert_eq!(resp.status(), 409);
    assert_eq!(
        resp.json::<ErrorBody>().await.unwrap().error.code,
        "wrong_machine"
    );

    // Neither rejected request started anything; the same epoch is still accepted,
    // and a newer one raises the bar.
    assert!(b.sync(&[], &[]).await.attempts.is_empty());
    b.epoch = 6;
    b.sync(&[], &[]).await;
    b.epoch = 5;
    let resp = b.post_sync(&b.request(&[], &[])).await;
    assert_eq!(resp.status(), 409);
}

#[tokio::test]
async fn malformed_sync_bodies_are_client_errors() {
    let b = TestBorglet::spawn().await;
    for (body, content_type) in [
        ("{not json", "application/json"),
        (
            r#"{"epoch":"one","machine":"x","attempts":[]}"#,
            "application/json",
        ),
        (r#"{"epoch":1}"#, "application/json"),
        ("{}", "text/plain"),
    ] {
        let resp = b
            .client
            .post(format!("{}/v1/sync", b.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_client_error(),
            "{body}: got {}",
            resp.status()
        );
        let err: ErrorBody = resp.json().await.unwrap();
        assert_eq!(err.error.code, "malformed_json");
    }
    let r: SyncResponse = b.sync(&[], &[]).await;
    assert!(r.attempts.is_empty());
}

#[tokio::test]
async fn healthz_names_the_machine() {
    let b = TestBorglet::spawn().await;
    let body: serde_json::Value = reqwest::get(format!("{}/healthz", b.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["name"], b.name.as_str());
}

#[tokio::test]
async fn a_task_environment_holds_nothing_of_the_borglets() {
    let b = TestBorglet::spawn().await;
    // `env` prints exactly the environment it was given, one variable a line.
    let spec = AttemptBuilder::new(&["/usr/bin/env"])
        .job("envtest", 2)
        .env("GREETING", "hi")
        .build();
    let id = spec.id;
    b.sync_until(std::slice::from_ref(&spec), id, "exited", |r| {
        r.phase == AttemptPhase::Exited
    })
    .await;
    let out = b.logs(&id.to_string(), "").await.text().await.unwrap();
    let mut names: Vec<&str> = out.lines().filter_map(|l| l.split('=').next()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "BORG_ATTEMPT",
            "BORG_JOB",
            "BORG_MACHINE",
            "BORG_TASK_INDEX",
            "GREETING",
            "HOME",
            "PATH"
        ],
        "the borglet's own environment (DATABASE_URL, tokens, ...) must not leak: {out}"
    );
}

#[tokio::test]
async fn tasks_of_a_root_borglet_run_unprivileged() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the borglet is not root here, tasks run as its own user");
        return;
    }
    let b = TestBorglet::spawn().await;
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    // Its own sandbox is writable to it; the machine's root-owned files are not.
    let spec = AttemptBuilder::sh(
        "id -u; echo mine > file && echo wrote; touch /root/x 2>/dev/null || echo denied",
    )
    .build();
    let id = spec.id;
    b.sync_until(std::slice::from_ref(&spec), id, "exited", |r| {
        r.phase == AttemptPhase::Exited
    })
    .await;
    let out = b.logs(&id.to_string(), "").await.text().await.unwrap();
    assert_eq!(out, format!("{}\nwrote\ndenied\n", nobody.uid));
}

#[tokio::test]
async fn a_start_too_large_for_the_keeper_fails_alone() {
    let b = TestBorglet::spawn().await;
    // Its escaped child holds its output open, so the keeper records its end
    // only once the drain time is over: a borglet that had given up on the
    // keeper would find no record at the task's end and report it unknown.
    let other =
        AttemptBuilder::sh("setsid sleep 5 & while [ ! -e go ]; do sleep 0.02; done; exit 4")
            .build();
    b.sync_until(std::slice::from_ref(&other), other.id, "running", |r| {
        r.phase == AttemptPhase::Running
    })
    .await;
    // More than one message to the keeper may hold.
    let huge = "x".repeat(400 * 1024);
    let big = AttemptBuilder::new(&["/bin/echo", &huge]).build();
    let both = [other.clone(), big.clone()];
    let failed = b
        .sync_until(&both, big.id, "the big start failed", |r| {
            r.phase == AttemptPhase::FailedToStart
        })
        .await;
    assert!(
        failed
            .message
            .as_deref()
            .is_some_and(|m| m.contains("keeper")),
        "{failed:?}"
    );
    // The other task is still watched through the keeper: its real code comes.
    std::fs::write(b.sandbox(other.id).join("go"), "").unwrap();
    let r = b
        .sync_until(&both, other.id, "exited", |r| {
            r.phase == AttemptPhase::Exited
        })
        .await;
    assert_eq!(r.exit_code, Some(4), "{r:?}");
}
