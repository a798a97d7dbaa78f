//! Registration with the master (a stub that records what arrives).

mod common;

use borg_shared::{Bytes, MilliCpu};
use common::{eventually, MasterStub, TestBorglet};
use std::time::{Duration, Instant};

#[tokio::test]
async fn registers_name_address_labels_and_capacity() {
    let b = TestBorglet::spawn_with(&[
        "--label", "zone=a", "--label", "rack=r1", "--cpu", "1500m", "--memory", "2Gi",
    ])
    .await;
    let reg = b.master.first_registration().await;
    assert_eq!(reg.name, b.name);
    assert_eq!(reg.address, b.url);
    assert_eq!(reg.capacity.cpu, MilliCpu(1500));
    assert_eq!(reg.capacity.memory, Bytes(2 << 30));
    assert!(reg.capacity.disk.0 > 0, "disk detected from the data dir");
    assert_eq!(reg.labels.len(), 2);
    assert_eq!(reg.labels["zone"], "a");
    assert_eq!(reg.labels["rack"], "r1");
}

#[tokio::test]
async fn detects_capacity_and_honours_advertise() {
    let b = TestBorglet::spawn_with(&[
        "--advertise",
        "http://borglet.example:7701/",
        "--disk",
        "10Gi",
    ])
    .await;
    let reg = b.master.first_registration().await;
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    assert_eq!(reg.capacity.cpu, MilliCpu(cpus * 1000));
    assert!(reg.capacity.memory.0 > 1 << 20, "MemTotal read");
    assert_eq!(reg.capacity.disk, Bytes(10 << 30));
    assert_eq!(reg.address, "http://borglet.example:7701");
    assert!(reg.labels.is_empty());
}

#[tokio::test]
async fn retries_until_the_master_comes_up() {
    // Reserve a port, free it, and start the master there only later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let master_url = format!("http://127.0.0.1:{port}");
    let b = TestBorglet::spawn_against(
        MasterStub::not_listening(master_url),
        &["--reregister-after", "1h"],
    )
    .await;
    // Healthy while the master is away: registration never blocks serving.
    let health = reqwest::get(format!("{}/healthz", b.url)).await.unwrap();
    assert_eq!(health.status(), 200);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let master = MasterStub::serve(listener);
    let reg = master.first_registration().await;
    assert_eq!(reg.name, b.name);
    assert_eq!(master.count(), 1);
}

#[tokio::test]
async fn registers_again_only_when_syncs_stop() {
    let b = TestBorglet::spawn_with(&["--reregister-after", "800ms"]).await;
    b.master.first_registration().await;

    // While the master keeps syncing, no new registration.
    let polling_until = Instant::now() + Duration::from_millis(1600);
    while Instant::now() < polling_until {
        b.sync(&[], &[]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.master.count(), 1, "re-registered while being synced");

    // Silence: it registers again.
    eventually("a second registration", || async {
        (b.master.count() >= 2).then_some(())
    })
    .await;
}
