//! The borglet over TLS with the cluster CA: it serves https, and only a caller
//! presenting a client certificate of that CA gets past the handshake (mutual
//! TLS), so a master holding another CA's certificate cannot sync it, even with
//! the right sync key.

mod common;

use borg_shared::tls::make::Ca;
use borg_shared::tls::{client_config, Identity};
use common::{AttemptBuilder, TestBorglet};

fn client(b: &TestBorglet, ca: &std::path::Path, identity: Option<&Identity>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        b.master.authorization().parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .use_preconfigured_tls(client_config(ca, identity).unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn only_a_master_with_a_certificate_of_the_cluster_ca_syncs() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_generate(pki.path(), "cluster").unwrap();
    let ca_file = pki.path().join("ca.pem");
    let borglet_id = ca
        .write_identity(pki.path(), "borglet", &["127.0.0.1"])
        .unwrap();
    let master_id = ca
        .write_identity(pki.path(), "master", &["master"])
        .unwrap();
    let foreign = Ca::generate("cluster").unwrap();
    let foreign_id = foreign
        .write_identity(pki.path(), "foreign", &["master"])
        .unwrap();

    let b = TestBorglet::spawn_with(&[
        "--tls-cert",
        borglet_id.cert.to_str().unwrap(),
        "--tls-key",
        borglet_id.key.to_str().unwrap(),
        "--ca-cert",
        ca_file.to_str().unwrap(),
    ])
    .await;
    let https = b.url.replace("http://", "https://");
    // Tasks may run as `nobody`: the marker goes where anyone may write.
    let open = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let marker = open.path().join("ran");
    let attempt = AttemptBuilder::sh(&format!("touch {}", marker.display())).build();
    let req = b.request(std::slice::from_ref(&attempt), &[]);

    for (who, identity) in [
        ("no client certificate", None),
        ("another CA's certificate", Some(&foreign_id)),
    ] {
        let sent = client(&b, &ca_file, identity)
            .post(format!("{https}/v1/sync"))
            .json(&req)
            .send()
            .await;
        assert!(
            sent.is_err(),
            "{who}: answered {:?}",
            sent.map(|r| r.status())
        );
    }
    let plain = b
        .client
        .post(format!("{}/v1/sync", b.url))
        .json(&req)
        .send()
        .await;
    assert!(plain.is_err(), "plain http answered");
    assert!(!marker.exists(), "a refused sync ran its command");

    let resp = client(&b, &ca_file, Some(&master_id))
        .post(format!("{https}/v1/sync"))
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    common::eventually("the synced command ran", || async {
        marker.exists().then_some(())
    })
    .await;
}
