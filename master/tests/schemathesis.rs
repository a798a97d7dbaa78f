//! Fuzz the API from its own `/openapi.json` with schemathesis against a real
//! master on a TCP port and a real Postgres: no 5xx, and no answer that breaks
//! the documented schema (status codes, content types, bodies, headers).
//! Bounded: a fixed number of examples per operation and a time budget.
//!
//! Needs the `schemathesis` CLI (`pip install schemathesis==4.32.5`; `.ci/run`
//! installs it). `BORG_SCHEMATHESIS_EXAMPLES` raises the examples per operation;
//! `BORG_SCHEMATHESIS_ARGS` adds arguments (later ones win).

mod helpers;

use std::process::Stdio;
use std::time::Duration;

/// The checks that judge the server against its document. `positive_data_acceptance`
/// and `negative_data_rejection` are left out: cross-field rules (a cpu limit at
/// least the request, ...) are said in words, not in the schema.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_schema_conformance,response_headers_conformance";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_to_its_own_document_under_fuzzing() {
    let version = std::process::Command::new("schemathesis")
        .arg("--version")
        .output()
        .expect("schemathesis not found: pip install schemathesis==4.32.5 (.ci/run installs it)");
    assert!(version.status.success(), "schemathesis --version failed");

    let app = helpers::spawn_app().await;
    // Something to read and act on, so paths with names reach real rows.
    let (s, _) = app
        .post_json(
            "/v1/jobs",
            serde_json::json!({"name": "fuzz", "kind": "service", "task": {"command": ["/bin/true"]}}),
        )
        .await;
    assert_eq!(s, 201);
    let machine = serde_json::json!({"name": "m1", "address": "http://127.0.0.1:9",
        "capacity": {"cpu": 1000, "memory": 1u64 << 30, "disk": 0}});
    assert_eq!(app.post_json("/v1/machines", machine).await.0, 201);

    let examples = std::env::var("BORG_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "40".into());
    let report = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new("schemathesis");
    cmd.arg("run")
        .arg(format!("{}/openapi.json", app.url))
        .args(["--checks", CHECKS])
        .args([
            "--header",
            &format!("Authorization: Bearer {}", helpers::ADMIN_TOKEN),
        ])
        .args(["--max-examples", &examples])
        .args(["--phases", "examples,coverage,fuzzing"])
        // One worker: with two, CPython 3.11's AST recursion counter is not thread
        // safe and schemathesis now and then fails itself ("AST constructor
        // recursion depth mismatch"), whatever the server answers.
        .args(["--workers", "1"])
        .args(["--max-time", "90"])
        .args(["--request-timeout", "10"])
        .args(["--seed", "11"])
        .args(["--generation-database", "none"])
        // SSE streams never end by themselves; metrics are Prometheus text.
        .args(["--exclude-path", "/v1/events"])
        // Logs are proxied to a borglet this test does not run.
        .args(["--exclude-path-regex", "/logs$"])
        .args(["--no-color", "--output-truncate", "true"])
        // More arguments to explore with, e.g. `--checks all --mode positive`.
        .args(
            std::env::var("BORG_SCHEMATHESIS_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .arg("--report-dir")
        .arg(report.path())
        .current_dir(report.path())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("schemathesis ran past 300 s")
        .expect("running schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The whole report stays as an artifact.
    let artifact = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis.txt");
    let _ = std::fs::write(&artifact, format!("{stdout}\n{stderr}"));
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{stdout}\n{stderr}"
    );
    eprintln!(
        "{}",
        stdout
            .lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
