//! Where attempts' records are found. Attempts launched by a borglet from
//! before records had a dir of their own keep them in their sandbox: a newer
//! borglet started on that data dir still finds, reports, acknowledges and
//! removes them. A borglet restarted with another `--runtime-dir` while the
//! last one's holds records refuses to start: it would start those attempts a
//! second time.

mod common;

use borg_shared::wire::{AttemptPhase, AttemptSpec};
use borglet::records::{self, Ended, ExitRecord, Launch};
use chrono::Utc;
use clap::Parser;
use common::{eventually, AttemptBuilder, MasterStub, TestBorglet};
use std::path::{Path, PathBuf};

/// Write what a borglet and its keeper leave for an attempt that ended with
/// `code`: its launch and its exit, in `dir`. `records` empty: an older
/// borglet's launch, whose records are in the sandbox.
fn write_ended(dir: &Path, sandbox: &Path, spec: &AttemptSpec, records: PathBuf, code: i32) {
    std::fs::create_dir_all(dir).unwrap();
    let launch = Launch {
        argv: spec.command.clone(),
        spec: spec.clone(),
        env: Default::default(),
        cwd: sandbox.to_path_buf(),
        records,
        stdout: sandbox.join("stdout"),
        stderr: sandbox.join("stderr"),
        pid_files: vec![dir.join(records::TASK_PID)],
        log_max_bytes: 0,
        run_as: None,
        cgroup: None,
        created_at: Utc::now(),
    };
    records::write(dir, records::LAUNCH, &launch).unwrap();
    let exit = ExitRecord {
        ended: Ended::Code(code),
        at: Utc::now(),
        stderr_bytes: None,
    };
    records::write(dir, records::EXIT, &exit).unwrap();
}

#[tokio::test]
async fn an_attempt_recorded_in_its_sandbox_is_reported_acknowledged_and_removed() {
    let data_dir = tempfile::tempdir().unwrap();
    let spec = AttemptBuilder::sh("exit 3").build();
    let id = spec.id;
    // What an older borglet and its keeper left: the launch and the exit, in the sandbox.
    let sandbox = data_dir.path().join("attempts").join(id.to_string());
    write_ended(&sandbox, &sandbox, &spec, PathBuf::new(), 3);

    let master = MasterStub::spawn().await;
    let name = "m-old-records".to_string();
    let b = TestBorglet::spawn_in(master, data_dir, name, &["--sandbox-retention", "0s"]).await;
    let resp = b.sync(std::slice::from_ref(&spec), &[]).await;
    let report = common::find(&resp, id).expect("the old attempt is reported");
    assert_eq!(report.phase, AttemptPhase::Exited, "{report:?}");
    assert_eq!(report.exit_code, Some(3), "the code its keeper recorded");
    assert!(!b.records(id).exists(), "not moved, not started again");

    // Acknowledged: the mark lands in the sandbox, and the janitor removes it.
    b.sync(&[], &[id]).await;
    eventually("the old sandbox removed", || async {
        (!sandbox.exists()).then_some(())
    })
    .await;
}

/// An attempt of the old layout that a newer borglet restarted in place has
/// records in both places: its record dir's are the current ones.
#[tokio::test]
async fn an_attempt_with_records_in_both_places_is_read_from_its_record_dir() {
    let data_dir = tempfile::tempdir().unwrap();
    let spec = AttemptBuilder::sh("exit 3").build();
    let id = spec.id;
    let sandbox = data_dir.path().join("attempts").join(id.to_string());
    let records_dir = data_dir.path().join("run/attempts").join(id.to_string());
    write_ended(&sandbox, &sandbox, &spec, PathBuf::new(), 3);
    write_ended(&records_dir, &sandbox, &spec, records_dir.clone(), 7);
    let b = TestBorglet::spawn_in(MasterStub::spawn().await, data_dir, "m-both".into(), &[]).await;
    let resp = b.sync(std::slice::from_ref(&spec), &[]).await;
    let reports: Vec<_> = resp.attempts.iter().filter(|r| r.id == id).collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].exit_code, Some(7), "the record dir's exit");
}

#[tokio::test]
async fn a_borglet_given_another_runtime_dir_than_its_records_refuses_to_start() {
    let runtime = tempfile::tempdir().unwrap();
    let runtime_arg = runtime.path().display().to_string();
    let mut b = TestBorglet::spawn_with(&["--runtime-dir", &runtime_arg]).await;
    let spec = AttemptBuilder::sh("exit 0").build();
    b.sync_until(std::slice::from_ref(&spec), spec.id, "exited", |r| {
        r.phase == AttemptPhase::Exited
    })
    .await;
    b.shutdown().await.unwrap();

    let run = |runtime_dir: String| {
        let config = borglet::config::Config::try_parse_from([
            "borglet".to_string(),
            "--name".into(),
            b.name.clone(),
            "--master".into(),
            b.master.url.clone(),
            "--data-dir".into(),
            b.data_dir.path().display().to_string(),
            "--runtime-dir".into(),
            runtime_dir,
        ])
        .unwrap();
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let shutdown = tokio_util::sync::CancellationToken::new();
            shutdown.cancel();
            borglet::run(listener, config, shutdown).await
        }
    };
    let elsewhere = tempfile::tempdir().unwrap();
    let refused = run(elsewhere.path().display().to_string())
        .await
        .expect_err("the records are in the first runtime dir");
    let text = format!("{refused:#}");
    assert!(text.contains(&runtime_arg), "{text}");
    assert!(
        !elsewhere
            .path()
            .join("attempts")
            .read_dir()
            .unwrap()
            .any(|_| true),
        "nothing started there"
    );
    // Given the dir that holds its records, it starts (and, told to stop, stops).
    run(runtime_arg.clone()).await.unwrap();
}
