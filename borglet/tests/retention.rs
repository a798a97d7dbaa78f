//! Finished attempts' sandboxes go once the master has recorded their end: after
//! the retention, or at once when the disk runs short. Running or unrecorded
//! attempts keep theirs. Output is capped and rotated per stream.

mod common;

use borg_shared::wire::AttemptPhase;
use common::{eventually, AttemptBuilder, TestBorglet};

/// Start `script`, wait for its exit; returns its id.
async fn run_to_exit(b: &TestBorglet, script: &str) -> borg_shared::AttemptId {
    let spec = AttemptBuilder::sh(script).build();
    let id = spec.id;
    b.sync_until(std::slice::from_ref(&spec), id, "exited", |r| {
        r.phase == AttemptPhase::Exited
    })
    .await;
    id
}

#[tokio::test]
async fn acked_sandboxes_are_removed_after_the_retention_others_kept() {
    let b = TestBorglet::spawn_with(&["--sandbox-retention", "0s"]).await;
    let acked = run_to_exit(&b, "echo one").await;
    let unacked = run_to_exit(&b, "echo two").await;
    let running = AttemptBuilder::new(&["/bin/sleep", "1000"]).build();
    b.sync(std::slice::from_ref(&running), &[acked]).await;
    eventually("the acked sandbox and records removed", || async {
        (!b.sandbox(acked).exists() && !b.records(acked).exists()).then_some(())
    })
    .await;
    assert!(
        b.sandbox(unacked).exists() && b.records(unacked).exists(),
        "not recorded by the master yet"
    );
    assert!(b.sandbox(running.id).exists() && b.records(running.id).exists());
    b.sync(&[], &[]).await;
}

/// The records live in the runtime dir, which a reboot clears when it is a
/// tmpfs: a sandbox left without them goes after the retention, like a
/// finished one.
#[tokio::test]
async fn a_sandbox_whose_records_are_gone_is_removed_after_the_retention() {
    let b = TestBorglet::spawn_with(&["--sandbox-retention", "0s"]).await;
    let cleared = run_to_exit(&b, "echo one").await;
    let kept = run_to_exit(&b, "echo two").await;
    std::fs::remove_dir_all(b.records(cleared)).unwrap();
    eventually("the sandbox without records removed", || async {
        (!b.sandbox(cleared).exists()).then_some(())
    })
    .await;
    assert!(
        b.sandbox(kept).exists() && b.records(kept).exists(),
        "recorded, not acknowledged: kept"
    );
}

#[tokio::test]
async fn a_short_disk_removes_acked_sandboxes_before_their_time() {
    // More free space than any disk has: always short.
    let b = TestBorglet::spawn_with(&["--min-free-disk", "1000000Gi"]).await;
    let first = run_to_exit(&b, "echo one").await;
    let second = run_to_exit(&b, "echo two").await;
    let running = AttemptBuilder::new(&["/bin/sleep", "1000"]).build();
    b.sync(std::slice::from_ref(&running), &[first, second])
        .await;
    eventually("both acked sandboxes removed", || async {
        (!b.sandbox(first).exists() && !b.sandbox(second).exists()).then_some(())
    })
    .await;
    assert!(
        b.sandbox(running.id).exists(),
        "a running attempt keeps its sandbox"
    );
    b.sync(&[], &[]).await;
}

#[tokio::test]
async fn output_is_capped_and_the_newest_kept() {
    let b = TestBorglet::spawn_with(&["--log-max-bytes", "64Ki"]).await;
    // 1 MiB of lines, then a last one.
    let id = run_to_exit(
        &b,
        "i=0; while [ $i -lt 16384 ]; do echo 0123456789012345678901234567890123456789012345678901234567890; i=$((i+1)); done; echo END",
    )
    .await;
    let dir = b.sandbox(id);
    let kept = std::fs::metadata(dir.join("stdout")).unwrap().len()
        + std::fs::metadata(dir.join("stdout.1")).map_or(0, |m| m.len());
    assert!(kept <= 64 * 1024, "{kept} bytes kept");
    let tail = b
        .logs(&id.to_string(), "?tail=1")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(tail, "END\n");
}
