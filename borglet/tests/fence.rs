//! `task.fence_after`: a fenced task is killed by its borglet once no master has
//! synced for that long, an unfenced one keeps running, the cause is reported
//! when a master syncs again, and the fence counts across a borglet restart.

mod common;

use borg_shared::wire::AttemptPhase;
use common::{eventually, find, pid_running, AttemptBuilder, MasterStub, TestBorglet};

const FENCE_MS: u64 = 1500;

fn sleeper(job: &str, fence_ms: Option<u64>) -> borg_shared::wire::AttemptSpec {
    let mut spec = AttemptBuilder::new(&["sleep", "1000"])
        .job(job, 0)
        .grace_ms(200)
        .build();
    spec.fence_after_ms = fence_ms;
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_task_dies_when_no_master_syncs_and_an_unfenced_one_keeps_running() {
    let b = TestBorglet::spawn().await;
    let fenced = sleeper("fenced", Some(FENCE_MS));
    let free = sleeper("free", None);
    let both = [fenced.clone(), free.clone()];
    let r = b.sync(&both, &[]).await;
    let pid_of = |id| find(&r, id).and_then(|a| a.pid).expect("started");
    let (fenced_pid, free_pid) = (pid_of(fenced.id), pid_of(free.id));
    assert!(pid_running(fenced_pid) && pid_running(free_pid));

    // No master syncs from now on.
    eventually("the fenced task to be killed", || async {
        (!pid_running(fenced_pid)).then_some(())
    })
    .await;
    assert!(pid_running(free_pid), "an unfenced task keeps running");

    // A master comes back: the report says why, and nothing is started again.
    // (The task is a zombie before its keeper reaped it and the borglet heard:
    // until then it is still `stopping`.)
    let r = eventually("the fenced attempt's end to be reported", || async {
        let r = b.sync(&both, &[]).await;
        (find(&r, fenced.id)?.phase != AttemptPhase::Stopping).then_some(r)
    })
    .await;
    let f = find(&r, fenced.id).unwrap();
    assert_eq!(f.phase, AttemptPhase::Exited, "{f:?}");
    assert!(f.stopped_by_borglet, "{f:?}");
    let message = f.message.as_deref().unwrap_or_default();
    assert!(
        message.starts_with("fenced: no master sync for"),
        "{message}"
    );
    let u = find(&r, free.id).unwrap();
    assert_eq!((u.phase, u.pid), (AttemptPhase::Running, Some(free_pid)));
    assert!(pid_running(free_pid));
    assert!(!pid_running(fenced_pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_keep_a_fenced_task_alive() {
    let b = TestBorglet::spawn().await;
    let fence_ms = 3000;
    let fenced = sleeper("kept", Some(fence_ms));
    let r = b.sync(std::slice::from_ref(&fenced), &[]).await;
    let pid = find(&r, fenced.id).and_then(|a| a.pid).unwrap();
    // Syncs far more often than the fence, for two fences' time.
    let began = std::time::Instant::now();
    while began.elapsed() < std::time::Duration::from_millis(2 * fence_ms) {
        let r = b.sync(std::slice::from_ref(&fenced), &[]).await;
        assert_eq!(phase(&r, fenced.id), AttemptPhase::Running);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(pid_running(pid));
}

fn phase(r: &borg_shared::wire::SyncResponse, id: borg_shared::AttemptId) -> AttemptPhase {
    find(r, id).map(|a| a.phase).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fence_counts_from_the_last_sync_across_a_borglet_restart() {
    let b = TestBorglet::spawn_with(&["--on-exit", "keep"]).await;
    let fenced = sleeper("fenced", Some(5000));
    let free = sleeper("free", None);
    let both = [fenced.clone(), free.clone()];
    let r = b.sync(&both, &[]).await;
    let fenced_pid = find(&r, fenced.id).and_then(|a| a.pid).unwrap();
    let free_pid = find(&r, free.id).and_then(|a| a.pid).unwrap();
    let master_client = b.client.clone();

    // Restarted: the new borglet re-adopts both and has never been synced, yet
    // fences from the previous borglet's last sync.
    let (data_dir, name) = b.stop_keeping_data().await;
    let mut again = TestBorglet::spawn_in(
        MasterStub::spawn_refusing().await,
        data_dir,
        name,
        &["--on-exit", "keep"],
    )
    .await;
    again.client = master_client.clone();
    assert!(pid_running(fenced_pid), "re-adopted, not killed at start");
    eventually("the re-adopted fenced task to be killed", || async {
        (!pid_running(fenced_pid)).then_some(())
    })
    .await;
    assert!(pid_running(free_pid));

    // Restarted once more before any master returns: the cause is kept on disk.
    let (data_dir, name) = again.stop_keeping_data().await;
    let mut third =
        TestBorglet::spawn_in(MasterStub::spawn_refusing().await, data_dir, name, &[]).await;
    third.client = master_client;
    let r = third.sync(&both, &[]).await;
    let f = find(&r, fenced.id).unwrap();
    assert_eq!(f.phase, AttemptPhase::Exited, "{f:?}");
    assert!(f.stopped_by_borglet);
    assert!(
        f.message
            .as_deref()
            .is_some_and(|m| m.starts_with("fenced: no master sync for")),
        "{f:?}"
    );
    let u = find(&r, free.id).unwrap();
    assert_eq!((u.phase, u.pid), (AttemptPhase::Running, Some(free_pid)));
    third.shutdown().await.unwrap();
}
