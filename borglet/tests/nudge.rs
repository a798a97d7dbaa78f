//! Nudges: a task exit makes the borglet ask the master stub for a sync at once,
//! with the token of the latest sync, and a burst of exits makes only a few nudges.

mod common;

use borg_shared::wire::{AttemptPhase, AttemptSpec, SyncResponse};
use common::{eventually, AttemptBuilder, SeenNudge, TestBorglet};
use nix::fcntl::{Flock, FlockArg};

/// One sync carrying `token` that must succeed.
async fn sync_with_token(
    b: &TestBorglet,
    attempts: &[AttemptSpec],
    token: Option<&str>,
) -> SyncResponse {
    let mut req = b.request(attempts, &[]);
    req.nudge_token = token.map(str::to_string);
    let resp = b.post_sync(&req).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    resp.json().await.unwrap()
}

/// Sync (with `token`) until every attempt in `attempts` is reported exited.
async fn wait_all_exited(b: &TestBorglet, attempts: &[AttemptSpec], token: Option<&str>) {
    eventually("every attempt exited", || async {
        let resp = sync_with_token(b, attempts, token).await;
        let exited = resp
            .attempts
            .iter()
            .filter(|a| a.phase == AttemptPhase::Exited)
            .count();
        (exited == attempts.len()).then_some(())
    })
    .await;
}

fn nudge(b: &TestBorglet, token: &str) -> SeenNudge {
    SeenNudge {
        machine: b.name.clone(),
        authorization: Some(format!("Bearer {token}")),
    }
}

#[tokio::test]
async fn an_exit_nudges_the_master_with_the_latest_token() {
    let b = TestBorglet::spawn().await;
    let nudges = &b.master.nudges;

    // Before any sync carried a token there is nothing to authenticate with.
    let early = AttemptBuilder::new(&["/bin/true"]).build();
    wait_all_exited(&b, std::slice::from_ref(&early), None).await;
    assert_eq!(nudges.count(), 0, "nudged without a token");

    let first = AttemptBuilder::new(&["/bin/true"]).build();
    let mut wanted = vec![early, first];
    sync_with_token(&b, &wanted, Some("token-one")).await;
    eventually("a nudge after the exit", || async {
        (nudges.count() > 0).then_some(())
    })
    .await;
    // The early exit may still have had its wake-up pending: then it is sent now, too.
    assert!(
        nudges.seen().iter().all(|n| *n == nudge(&b, "token-one")),
        "{:?}",
        nudges.seen()
    );

    // A new master loop (say, after a master restart) sends a new token: it is used.
    let sent_before = nudges.count();
    wanted.push(AttemptBuilder::new(&["/bin/true"]).build());
    sync_with_token(&b, &wanted, Some("token-two")).await;
    let later = eventually("a nudge with the new token", || async {
        let seen = nudges.seen();
        (seen.len() > sent_before).then(|| seen[sent_before..].to_vec())
    })
    .await;
    assert!(
        later.iter().all(|n| *n == nudge(&b, "token-two")),
        "{later:?}"
    );
}

#[tokio::test]
async fn a_burst_of_exits_makes_a_few_nudges_one_at_a_time() {
    let b = TestBorglet::spawn().await;
    let nudges = &b.master.nudges;
    // The tasks wait for a shared lock on `gate` while the test holds it exclusively,
    // so all 200 run first and then exit together when it is dropped.
    let gate = b.data_dir.path().join("gate");
    let file = std::fs::File::create(&gate).unwrap();
    let lock = Flock::lock(file, FlockArg::LockExclusive).unwrap();
    let gate = gate.display().to_string();
    let burst: Vec<AttemptSpec> = (0..200)
        .map(|i| {
            AttemptBuilder::new(&["flock", "--shared", &gate, "true"])
                .job("burst", i)
                .build()
        })
        .collect();
    let started = sync_with_token(&b, &burst, Some("burst-token")).await;
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
    wait_all_exited(&b, &burst, Some("burst-token")).await;
    let while_held = nudges.count();

    nudges.hold(false);
    // A last exit after the release: its nudge comes after whatever the burst still owed.
    let mut wanted = burst.clone();
    wanted.push(AttemptBuilder::new(&["/bin/true"]).job("marker", 0).build());
    sync_with_token(&b, &wanted, Some("marker-token")).await;
    eventually("a nudge with the marker's token", || async {
        nudges
            .seen()
            .contains(&nudge(&b, "marker-token"))
            .then_some(())
    })
    .await;

    let total = nudges.count();
    assert_eq!(nudges.max_in_flight(), 1, "more than one nudge in flight");
    assert!(
        total < 20,
        "201 exits made {total} nudges ({while_held} while the first was held)"
    );
    assert!(nudges
        .seen()
        .iter()
        .all(|n| *n == nudge(&b, "burst-token") || *n == nudge(&b, "marker-token")));
}
