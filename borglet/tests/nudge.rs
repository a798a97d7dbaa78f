//! Nudges: a task exit makes the borglet ask the master stub for a sync at once,
//! with the machine credential, and a burst of exits makes only a few nudges.

mod common;

use borg_shared::wire::{AttemptPhase, AttemptSpec, SyncResponse};
use common::{eventually, AttemptBuilder, SeenNudge, TestBorglet};
use nix::fcntl::{Flock, FlockArg};

/// One sync that must succeed.
async fn sync_with_token(b: &TestBorglet, attempts: &[AttemptSpec]) -> SyncResponse {
    let resp = b.post_sync(&b.request(attempts, &[])).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    resp.json().await.unwrap()
}

/// Sync until every attempt in `attempts` is reported exited.
async fn wait_all_exited(b: &TestBorglet, attempts: &[AttemptSpec]) {
    eventually("every attempt exited", || async {
        let resp = sync_with_token(b, attempts).await;
        let exited = resp
            .attempts
            .iter()
            .filter(|a| a.phase == AttemptPhase::Exited)
            .count();
        (exited == attempts.len()).then_some(())
    })
    .await;
}

/// A nudge as the borglet must send it: with the credential the stub issued.
fn nudge(b: &TestBorglet) -> SeenNudge {
    SeenNudge {
        machine: b.name.clone(),
        authorization: Some(format!(
            "Bearer {}",
            b.master.credential.as_deref().unwrap()
        )),
    }
}

#[tokio::test]
async fn an_exit_nudges_the_master_with_the_machine_credential() {
    let b = TestBorglet::spawn().await;
    let nudges = &b.master.nudges;
    let first = AttemptBuilder::new(&["/bin/true"]).build();
    sync_with_token(&b, std::slice::from_ref(&first)).await;
    eventually("a nudge after the exit", || async {
        (nudges.count() > 0).then_some(())
    })
    .await;
    assert!(
        nudges.seen().iter().all(|n| *n == nudge(&b)),
        "{:?}",
        nudges.seen()
    );
}

#[tokio::test]
async fn an_unregistered_borglet_does_not_nudge() {
    let master = common::MasterStub::spawn_refusing().await;
    let b = TestBorglet::spawn_against(master, &[]).await;
    eventually("a refused registration", || async {
        (b.master.count() > 0).then_some(())
    })
    .await;
    // Nothing can be synced to it either: it has no credential to check a key against.
    let resp = b.post_sync(&b.request(&[], &[])).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(b.master.nudges.count(), 0);
}

/// A file in `b`'s data dir, locked exclusively until the lock is dropped:
/// tasks that take it shared wait until then.
fn hold_gate(b: &TestBorglet) -> (Flock<std::fs::File>, String) {
    let gate = b.data_dir.path().join("gate");
    let file = std::fs::File::create(&gate).unwrap();
    let lock = Flock::lock(file, FlockArg::LockExclusive).unwrap();
    (lock, gate.display().to_string())
}

#[tokio::test]
async fn a_burst_of_exits_makes_a_few_nudges_one_at_a_time() {
    let b = TestBorglet::spawn().await;
    let nudges = &b.master.nudges;
    // The tasks wait for a shared lock on `gate` while the test holds it exclusively,
    // so all 200 run first and then exit together when it is dropped.
    let (lock, gate) = hold_gate(&b);
    let burst: Vec<AttemptSpec> = (0..200)
        .map(|i| {
            AttemptBuilder::new(&["flock", "--shared", &gate, "true"])
                .job("burst", i)
                .build()
        })
        .collect();
    let started = sync_with_token(&b, &burst).await;
    assert!(started
        .attempts
        .iter()
        .all(|a| a.phase == AttemptPhase::Running));
    assert_eq!(nudges.count(), 0);

    // Every nudge waits for its answer until released: exits pile up meanwhile.
    nudges.hold(true);
    drop(lock);
    eventually("the first nudge", || async {
        (nudges.count() > 0).then_some(())
    })
    .await;
    wait_all_exited(&b, &burst).await;
    let while_held = nudges.count();

    nudges.hold(false);
    // A last exit after the release: its nudge comes after whatever the burst still owed.
    let mut wanted = burst.clone();
    wanted.push(AttemptBuilder::new(&["/bin/true"]).job("marker", 0).build());
    sync_with_token(&b, &wanted).await;
    eventually("a nudge for the marker", || async {
        (nudges.count() > while_held).then_some(())
    })
    .await;

    let total = nudges.count();
    assert_eq!(nudges.max_in_flight(), 1, "more than one nudge in flight");
    assert!(
        total < 20,
        "201 exits made {total} nudges ({while_held} while the first was held)"
    );
    assert!(nudges.seen().iter().all(|n| *n == nudge(&b)));
}

#[tokio::test]
async fn the_nudges_of_a_burst_of_exits_are_spaced_by_the_gap() {
    let b = TestBorglet::spawn().await;
    let nudges = &b.master.nudges;
    // As above, 100 tasks held until the test drops the lock; then each exits
    // after its own delay, one every 5 ms for half a second. The stub answers
    // every nudge at once, so only the gap spaces them.
    let (lock, gate) = hold_gate(&b);
    let burst: Vec<AttemptSpec> = (0..100)
        .map(|i| {
            AttemptBuilder::new(&[
                "sh",
                "-c",
                "flock --shared \"$0\" true; sleep 0.$1",
                &gate,
                &format!("{:03}", i * 5),
            ])
            .job("burst", i)
            .build()
        })
        .collect();
    sync_with_token(&b, &burst).await;
    drop(lock);
    wait_all_exited(&b, &burst).await;
    let arrivals = nudges.arrivals();
    // Without a gap every exit that finds no nudge in flight makes one: a
    // median gap of 6 ms here, measured with the wait taken out.
    assert!(arrivals.len() >= 3, "{} nudges", arrivals.len());
    let mut gaps: Vec<_> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    // The median, so that one nudge delayed on its way and the next not do not
    // decide: on a slow box the gaps only grow.
    let median = gaps[gaps.len() / 2];
    assert!(
        median >= borglet::nudge::MIN_GAP * 3 / 4,
        "median gap {median:?} between {} nudges",
        arrivals.len()
    );
}
