//! Several master URLs: two `borgmaster` processes on one database; jobctl and
//! a borglet are given both. Once the first is killed, jobctl's calls and a new
//! borglet's registration go through the second.

#[path = "no_loss/cell.rs"]
mod cell;

use cell::{free_port, wait_for, Cell, ADMIN_TOKEN};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const JOBCTL: &str = env!("CARGO_BIN_EXE_jobctl");

fn jobctl(masters: &str, args: &[&str]) -> std::process::Output {
    Command::new(JOBCTL)
        .args(["--master", masters])
        .args(args)
        .env("BORG_TOKEN", ADMIN_TOKEN)
        .env_remove("BORG_CA_CERT")
        .output()
        .unwrap()
}

fn machines(masters: &str) -> Option<Vec<Value>> {
    let out = jobctl(masters, &["get", "machines", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["machines"].as_array().cloned()
}

#[tokio::test]
async fn jobctl_and_borglets_fail_over_to_the_next_master() {
    let mut cell = Cell::start().await;
    let first = cell.master_url().to_string();
    let port = free_port();
    cell.start_master_on("borgmaster-2", port);
    let second = format!("http://127.0.0.1:{port}");
    let both = format!("{first},{second}");
    wait_for("the second master", Duration::from_secs(60), || async {
        let out = jobctl(&second, &["get", "machines"]);
        out.status.success().then_some(())
    })
    .await;

    cell.kill_master();
    // jobctl: the first is refused, the second answers.
    let out = jobctl(&both, &["get", "machines", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = jobctl(&first, &["get", "machines"]);
    assert_eq!(out.status.code(), Some(4), "the first master is gone");

    // A new borglet given both registers through the second.
    cell.start_borglet(9, &both);
    wait_for("m9 registered", Duration::from_secs(60), || async {
        machines(&second)?
            .iter()
            .any(|m| m["name"] == "m9" && m["state"] == "up")
            .then_some(())
    })
    .await;

    // And work still runs: the second master leads and polls once the lease is free.
    let spec = std::env::temp_dir().join(format!("masters-{}.yaml", std::process::id()));
    std::fs::write(
        &spec,
        "name: after-failover\nkind: batch\nreplicas: 4\ntask:\n  command: [\"/bin/true\"]\n",
    )
    .unwrap();
    let out = jobctl(&both, &["run", "-f", spec.to_str().unwrap(), "--wait"]);
    let _ = std::fs::remove_file(&spec);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
