//! Attempts launched by a borglet from before records had a dir of their own
//! keep their records in their sandbox: a newer borglet started on that data
//! dir still finds, reports, acknowledges and removes them.

mod common;

use borg_shared::wire::AttemptPhase;
use borglet::records::{self, Ended, ExitRecord, Launch};
use chrono::Utc;
use common::{eventually, AttemptBuilder, MasterStub, TestBorglet};
use std::path::PathBuf;

#[tokio::test]
async fn an_attempt_recorded_in_its_sandbox_is_reported_acknowledged_and_removed() {
    let data_dir = tempfile::tempdir().unwrap();
    let spec = AttemptBuilder::sh("exit 3").build();
    let id = spec.id;
    // What an older borglet and its keeper left: the launch and the exit, in the sandbox.
    let sandbox = data_dir.path().join("attempts").join(id.to_string());
    std::fs::create_dir_all(&sandbox).unwrap();
    let launch = Launch {
        argv: spec.command.clone(),
        spec: spec.clone(),
        env: Default::default(),
        cwd: sandbox.clone(),
        records: PathBuf::new(),
        stdout: sandbox.join("stdout"),
        stderr: sandbox.join("stderr"),
        pid_files: vec![sandbox.join(records::TASK_PID)],
        log_max_bytes: 0,
        run_as: None,
        cgroup: None,
        created_at: Utc::now(),
    };
    records::write(&sandbox, records::LAUNCH, &launch).unwrap();
    let exit = ExitRecord {
        ended: Ended::Code(3),
        at: Utc::now(),
        stderr_bytes: None,
    };
    records::write(&sandbox, records::EXIT, &exit).unwrap();

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
