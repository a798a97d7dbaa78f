//! `jobctl dev --tls`: the whole cell over https with its own CA. A job runs end
//! to end; the master's TLS port refuses plain http; jobctl run in the cell's
//! directory finds the CA by itself and, given another CA, says so in one line
//! and exits 4; a borglet whose certificate another CA signed is never synced.

mod support;

use borg_shared::tls::make::Ca;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{stderr, stdout, wait_for, Cell, JOBCTL};

/// jobctl with nothing of the cell given: no master, no CA, no token.
fn bare_jobctl(cell: &Cell, args: &[&str]) -> std::process::Output {
    let config = cell.data_dir().join("no-config");
    Command::new(JOBCTL)
        .args(args)
        .current_dir(cell.data_dir())
        .env_remove("BORG_MASTER")
        .env_remove("BORG_TOKEN")
        .env_remove("BORG_CA_CERT")
        .env("XDG_CONFIG_HOME", &config)
        .output()
        .expect("running jobctl")
}

#[test]
fn a_cell_runs_over_tls_and_jobctl_finds_its_ca_by_itself() {
    let cell = Cell::start_with(2, ".borg-dev", true);
    assert!(cell.master.starts_with("https://"));

    let out = cell.jobctl(&["get", "machines", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for m in v["machines"].as_array().unwrap() {
        let address = m["address"].as_str().unwrap();
        assert!(address.starts_with("https://"), "borglet at {address}");
    }

    let spec = support::repo_root().join("examples/hello.yaml");
    let out = bare_jobctl(&cell, &["run", "-f", spec.to_str().unwrap(), "--wait"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let out = bare_jobctl(&cell, &["logs", "hello/1"]);
    assert!(
        stdout(&out).contains("hello from task 1 of hello"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // The same port answers https and refuses plain http.
    let ca = std::fs::read(cell.ca.as_ref().unwrap()).unwrap();
    let https = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let healthz = https
        .get(format!("{}/healthz", cell.master))
        .send()
        .unwrap();
    assert!(healthz.status().is_success());
    let plain = cell.master.replace("https://", "http://");
    let refused = reqwest::blocking::get(format!("{plain}/healthz"));
    assert!(refused.is_err(), "plain http answered: {refused:?}");

    // Another CA: one clear line, exit 4.
    let foreign = Ca::generate("borg dev cell CA").unwrap();
    let foreign_ca = foreign
        .write_cert(&cell.data_dir().join("foreign-ca.pem"))
        .unwrap();
    let out = cell.jobctl(&["--ca-cert", foreign_ca.to_str().unwrap(), "get", "jobs"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let said = stderr(&out);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(
        said.contains("cannot talk securely to the master")
            && said.contains("not signed by the cluster CA"),
        "{said}"
    );
}

#[test]
fn a_borglet_with_a_certificate_of_another_ca_is_never_synced() {
    let cell = Cell::start_with(1, "", true);
    let foreign = Ca::generate("borg dev cell CA").unwrap();
    let dir = cell.data_dir().join("intruder");
    let id = foreign
        .write_identity(&dir, "intruder", &["mx", "localhost", "127.0.0.1"])
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut intruder = Command::new(JOBCTL)
        .args(["component", "borglet", "--name", "mx", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--master", &cell.master, "--data-dir"])
        .arg(dir.join("data"))
        .arg("--join-token-file")
        .arg(cell.data_dir.join("join.token"))
        .arg("--tls-cert")
        .arg(&id.cert)
        .arg("--tls-key")
        .arg(&id.key)
        .arg("--ca-cert")
        .arg(cell.ca.as_ref().unwrap())
        .args(["--on-exit", "stop", "--cpu", "1", "--memory", "1Gi"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // It trusts the cell's CA, so it registers; the master's poller trusts only
    // that CA too, so every sync to it fails in the handshake.
    wait_for("the intruder registered", Duration::from_secs(60), || {
        let out = cell.jobctl(&["get", "machines", "-o", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["machines"]
            .as_array()?
            .iter()
            .any(|m| m["name"] == "mx")
            .then_some(())
    });
    let log = cell.data_dir.join("logs").join("borgmaster.log");
    let line = wait_for("the master's refusal", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines()
            .find(|l| l.contains("sync failed") && l.contains("machine=mx"))
            .map(str::to_string)
    });
    // Said in words an operator acts on, not rustls's enum names.
    assert!(
        line.contains("not signed by the cluster CA") && !line.contains("UnknownIssuer"),
        "{line}"
    );
    let _ = intruder.kill();
    let _ = intruder.wait();
}
