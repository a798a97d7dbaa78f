//! Agent trust on the borglet's side: only the master's key opens `/v1/sync` and
//! the logs, a forged sync cannot wedge the epoch, registration presents the join
//! token, and the credential the master issued survives a restart.

mod common;

use borg_shared::ErrorBody;
use common::{eventually, AttemptBuilder, MasterStub, TestBorglet};

#[tokio::test]
async fn a_forged_sync_is_refused_and_cannot_wedge_the_epoch() {
    let b = TestBorglet::spawn().await;
    let marker = b.data_dir.path().join("forged-ran");
    let evil = AttemptBuilder::sh(&format!("touch {}", marker.display())).build();
    let mut forged = b.request(std::slice::from_ref(&evil), &[]);
    forged.epoch = i64::MAX;
    let anonymous = reqwest::Client::new();
    for authorization in [
        None,
        Some("Bearer not-the-key".to_string()),
        // The credential itself is what the borglet presents, not what it accepts.
        Some(format!(
            "Bearer {}",
            b.master.credential.as_deref().unwrap()
        )),
    ] {
        let mut post = anonymous.post(format!("{}/v1/sync", b.url)).json(&forged);
        if let Some(a) = &authorization {
            post = post.header("authorization", a);
        }
        let resp = post.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{authorization:?}");
        let err: ErrorBody = resp.json().await.unwrap();
        assert_eq!(err.error.code, "unauthorized");
        let logs = anonymous
            .get(format!("{}/v1/attempts/{}/logs", b.url, evil.id))
            .send()
            .await
            .unwrap();
        assert_eq!(logs.status(), 401, "log reads need the key too");
    }
    // The real master, at its real (low) epoch, is still obeyed.
    let resp = b.sync(&[], &[]).await;
    assert!(resp.attempts.is_empty(), "the forged attempt was not taken");
    assert!(!marker.exists(), "the forged command ran");
    let metrics = b
        .client
        .get(format!("{}/metrics", b.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("result=\"unauthorized\"} 3"),
        "refused syncs are counted: {metrics}"
    );
}

#[tokio::test]
async fn registration_presents_the_join_token_then_the_credential_kept_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("join.token");
    std::fs::write(&token_file, "the-join-token\n").unwrap();
    let token_arg = token_file.display().to_string();
    let b = TestBorglet::spawn_with(&["--join-token-file", &token_arg]).await;
    let (auth, join) = b.master.proofs.lock().unwrap()[0].clone();
    assert_eq!(auth, None, "no credential before the first registration");
    assert_eq!(join.as_deref(), Some("the-join-token"));
    let issued = b.master.credential.clone().unwrap();
    let file = b.data_dir.path().join(borglet::credential::FILE);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key = b.master.authorization();
    b.sync(&[], &[]).await;

    // Restarted on the same data dir, against a master that issues nothing now:
    // it presents the kept credential and still takes the first master's syncs.
    let (data_dir, name) = b.stop_keeping_data().await;
    let refusing = MasterStub::spawn_refusing().await;
    let again = TestBorglet::spawn_in(refusing, data_dir, name, &[]).await;
    eventually("a registration with the kept credential", || async {
        let proofs = again.master.proofs.lock().unwrap().clone();
        proofs
            .first()
            .filter(|(auth, _)| auth.as_deref() == Some(format!("Bearer {issued}").as_str()))
            .map(|_| ())
    })
    .await;
    let resp = again
        .client
        .post(format!("{}/v1/sync", again.url))
        .header("authorization", key)
        .json(&again.request(&[], &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}
