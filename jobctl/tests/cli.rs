//! The real `jobctl` binary against an unreachable master and against a tiny
//! stub of the master's API: exit codes, the one `error:` line, and output.

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use borg_shared::spec::JobSpec;
use borg_shared::wire::{JobList, JobView, TaskView};
use borg_shared::{JobKind, JobState, TaskState};
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};

fn jobctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args(args)
        .env_remove("BORG_MASTER")
        .env_remove("BORG_TOKEN")
        .output()
        .expect("running jobctl")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Exactly one line, starting with `error: `; returns it.
fn one_error_line(out: &Output) -> String {
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "stderr should be one line: {err:?}");
    assert!(lines[0].starts_with("error: "), "{err:?}");
    lines[0].to_string()
}

/// Serve `router` on a random port from a background thread; the server lives
/// as long as the test process.
fn serve(router: Router) -> String {
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, router).await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

fn spec_file(name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("jobctl-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

const HELLO_ID: &str = "6f2c1a3e-7d7b-4c62-9a51-0b1f1d1e2a01";

/// A server-sent event of job `hello`'s, as the master streams it.
fn sse_event(
    n: i64,
    kind: &str,
    task: Option<i32>,
    machine: Option<&str>,
    from: Option<&str>,
    to: &str,
) -> Event {
    let e = serde_json::json!({
        "cursor": format!("1-{n}"), "id": n, "time": "2026-12-01T12:00:00Z", "kind": kind,
        "job": "hello", "job_id": HELLO_ID, "task_index": task, "machine": machine,
        "from": from, "to": to,
    });
    Event::default()
        .id(format!("1-{n}"))
        .event(kind)
        .data(e.to_string())
}

/// `GET /v1/events` answering `events`, then holding the stream open.
fn events_route(events: Vec<Event>) -> axum::routing::MethodRouter {
    get(move || {
        let events = events.clone();
        async move {
            let head =
                futures::stream::iter(events.into_iter().map(Ok::<_, std::convert::Infallible>));
            Sse::new(head.chain(futures::stream::pending()))
        }
    })
}

const HELLO: &str = "name: hello\nreplicas: 2\ntask:\n  command: [/bin/echo, hi]\n";

fn hello_view(state: JobState, tasks: Vec<(TaskState, Option<i32>)>) -> JobView {
    let spec = JobSpec::from_yaml(HELLO).unwrap();
    let now = chrono::Utc::now();
    let tasks: Vec<TaskView> = tasks
        .into_iter()
        .enumerate()
        .map(|(i, (state, exit_code))| TaskView {
            index: i as i32,
            state,
            reason: None,
            machine: Some("m1".into()),
            attempt: None,
            version: None,
            runs: 1,
            pid: None,
            exit_code,
            signal: None,
            restarts: 0,
            last_exit: None,
            updated_at: now,
            usage: None,
            death: None,
            healthy: None,
            health_message: None,
            backoff: false,
            superseded: None,
        })
        .collect();
    let mut counts = BTreeMap::new();
    for t in &tasks {
        *counts.entry(t.state).or_insert(0) += 1;
    }
    JobView {
        id: HELLO_ID.parse().unwrap(),
        name: "hello".into(),
        kind: JobKind::Batch,
        state,
        owner: "default".into(),
        priority: 100,
        replicas: tasks.len() as i64,
        version: 1,
        created_at: now,
        finished_at: None,
        task_counts: counts,
        spec,
        tasks: Some(tasks),
        tasks_next: None,
        events: None,
    }
}

#[test]
fn unreachable_master_is_one_clear_line() {
    let out = jobctl(&["--master", "http://127.0.0.1:1", "get", "jobs"]);
    assert_eq!(out.status.code(), Some(4));
    let line = one_error_line(&out);
    assert_eq!(
        line,
        "error: cannot reach the master at http://127.0.0.1:1: is it running? (jobctl dev starts a local cell)"
    );
}

#[test]
fn api_errors_name_the_field() {
    let router = Router::new().route(
        "/v1/jobs",
        post(|| async {
            let body = serde_json::json!({"error": {
                "code": "invalid_spec",
                "message": "`lots` is not a number",
                "field": "task.resources.cpu"
            }});
            (StatusCode::UNPROCESSABLE_ENTITY, Json(body))
        }),
    );
    let master = serve(router);
    let file = spec_file(
        "bad-cpu.yaml",
        "name: hello\ntask:\n  command: [/bin/true]\n  resources: {cpu: 0}\n",
    );
    let out = jobctl(&["--master", &master, "run", "-f", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        one_error_line(&out),
        "error: task.resources.cpu: `lots` is not a number (invalid_spec)"
    );
}

#[test]
fn malformed_spec_fails_before_any_request() {
    let file = spec_file("broken.yaml", "name: [unclosed\n");
    let out = jobctl(&[
        "--master",
        "http://127.0.0.1:1",
        "run",
        "-f",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let line = one_error_line(&out);
    assert!(line.contains("broken.yaml: malformed document"), "{line}");
}

#[test]
fn a_yaml_shape_error_names_the_files_line_and_column() {
    let file = spec_file(
        "wrong-type.yaml",
        "name: hello\ntask:\n  command: [/bin/true]\n  resources: {cpu: lots}\n",
    );
    let out = jobctl(&[
        "--master",
        "http://127.0.0.1:1",
        "run",
        "-f",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let line = one_error_line(&out);
    assert!(
        line.contains(
            "wrong-type.yaml: line 4 column 14: task.resources.cpu: `lots` is not a cpu amount"
        ),
        "{line}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = jobctl(&["get", "jobs", "-o", "xml"]);
    assert_eq!(out.status.code(), Some(2));
    let out = jobctl(&["logs", "hello"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn submit_then_wait_for_a_batch_job() {
    // The job's events say what happens; its view is read once, at the end.
    let events = vec![
        sse_event(1, "task", Some(0), None, None, "pending"),
        sse_event(2, "task", Some(1), None, None, "pending"),
        sse_event(3, "job", None, None, None, "pending"),
        sse_event(4, "task", Some(0), Some("m1"), Some("pending"), "running"),
        sse_event(5, "task", Some(0), Some("m1"), Some("running"), "succeeded"),
        sse_event(6, "task", Some(1), Some("m2"), Some("pending"), "succeeded"),
        sse_event(7, "job", None, None, Some("pending"), "succeeded"),
    ];
    let router = Router::new()
        .route(
            "/v1/jobs",
            post(|Json(spec): Json<serde_json::Value>| async move {
                assert_eq!(spec["name"], "hello");
                let view = hello_view(
                    JobState::Pending,
                    vec![(TaskState::Pending, None), (TaskState::Pending, None)],
                );
                (StatusCode::CREATED, Json(view))
            }),
        )
        .route("/v1/events", events_route(events))
        .route(
            "/v1/jobs/hello",
            get(|| async {
                Json(hello_view(
                    JobState::Succeeded,
                    vec![
                        (TaskState::Succeeded, Some(0)),
                        (TaskState::Succeeded, Some(0)),
                    ],
                ))
            }),
        );
    let master = serve(router);
    let file = spec_file("hello.yaml", HELLO);
    let out = jobctl(&[
        "--master",
        &master,
        "run",
        "-f",
        file.to_str().unwrap(),
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "job/hello submitted (2 tasks)\n\
         hello/0  pending -> running  on m1\n\
         hello/0  running -> succeeded  on m1\n\
         hello/1  pending -> succeeded  on m2\n\
         job/hello succeeded\n"
    );
}

#[test]
fn a_failed_batch_job_exits_1_naming_the_tasks() {
    let router = Router::new()
        .route(
            "/v1/jobs",
            post(|| async {
                let view = hello_view(JobState::Pending, vec![(TaskState::Pending, None)]);
                // 200: already live with this exact spec.
                (StatusCode::OK, Json(view))
            }),
        )
        .route(
            "/v1/events",
            events_route(vec![sse_event(
                9,
                "job",
                None,
                None,
                Some("running"),
                "failed",
            )]),
        )
        .route(
            "/v1/jobs/hello",
            get(|| async {
                Json(hello_view(
                    JobState::Failed,
                    vec![
                        (TaskState::Succeeded, Some(0)),
                        (TaskState::Failed, Some(3)),
                    ],
                ))
            }),
        );
    let master = serve(router);
    let file = spec_file("hello-fail.yaml", HELLO);
    let out = jobctl(&[
        "--master",
        &master,
        "run",
        "-f",
        file.to_str().unwrap(),
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).starts_with("job/hello unchanged (1 task)\n"));
    assert_eq!(
        one_error_line(&out),
        "error: job/hello failed: hello/1 (exit code 3)"
    );
}

#[test]
fn get_jobs_prints_a_table_and_json() {
    let router = Router::new().route(
        "/v1/jobs",
        get(|| async {
            let mut view = hello_view(
                JobState::Running,
                vec![(TaskState::Running, None), (TaskState::Running, None)],
            );
            view.tasks = None;
            Json(JobList {
                jobs: vec![view],
                next: None,
            })
        }),
    );
    let master = serve(router);
    let out = jobctl(&["--master", &master, "get", "jobs"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("NAME    KIND    STATE     TASKS"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("hello   batch   running   2/2 running"),
        "{text}"
    );

    let out = jobctl(&["--master", &master, "get", "jobs", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["jobs"][0]["name"], "hello");
}

#[test]
fn logs_and_kill() {
    let router = Router::new()
        .route(
            "/v1/jobs/hello/tasks/1/logs",
            get(|Query(q): Query<HashMap<String, String>>| async move {
                format!(
                    "stream={} tail={}\n",
                    q.get("stream").cloned().unwrap_or_default(),
                    q.get("tail").cloned().unwrap_or_default()
                )
            }),
        )
        .route(
            "/v1/jobs/hello/kill",
            post(|| async { StatusCode::OK.into_response() }),
        )
        .route(
            "/v1/jobs/nope/kill",
            post(|| async {
                let body = serde_json::json!({"error": {"code": "not_found", "message": "no job named nope"}});
                (StatusCode::NOT_FOUND, Json(body))
            }),
        );
    let master = serve(router);
    let out = jobctl(&[
        "--master", &master, "logs", "hello/1", "--stderr", "--tail", "5",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "stream=stderr tail=5\n");

    let out = jobctl(&["--master", &master, "kill", "hello"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "job/hello killed\n");

    let out = jobctl(&["--master", &master, "kill", "nope"]);
    assert_eq!(out.status.code(), Some(3), "not found");
    assert_eq!(one_error_line(&out), "error: no job named nope (not_found)");
}

#[test]
fn wait_exits_with_the_jobs_result_and_3_when_there_is_none() {
    let router = Router::new()
        .route(
            "/v1/jobs/hello",
            get(|| async {
                Json(hello_view(JobState::Running, vec![(TaskState::Running, None)]))
            }),
        )
        .route(
            "/v1/events",
            events_route(vec![
                sse_event(1, "task", Some(0), Some("m1"), Some("running"), "failed"),
                sse_event(2, "job", None, None, Some("running"), "failed"),
            ]),
        )
        .route(
            "/v1/jobs/nope",
            get(|| async {
                let body = serde_json::json!({"error": {"code": "not_found", "message": "no job named nope"}});
                (StatusCode::NOT_FOUND, Json(body))
            }),
        );
    let master = serve(router);
    // The view read after the job's end event still says running: the line says so.
    let out = jobctl(&["--master", &master, "wait", "hello"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "job/hello is running\n");

    let out = jobctl(&["--master", &master, "wait", "nope"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(one_error_line(&out), "error: no job named nope (not_found)");

    let out = jobctl(&["--master", "http://127.0.0.1:1", "wait", "hello"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(one_error_line(&out).contains("http://127.0.0.1:1"));
}

#[test]
fn completion_scripts_and_version() {
    for shell in ["bash", "zsh", "fish"] {
        let out = jobctl(&["completion", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains("jobctl"), "{shell}");
        assert!(
            script.contains("wait"),
            "{shell}: the subcommands are offered"
        );
    }
    let out = jobctl(&["completion", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));

    let out = jobctl(&["version", "--client"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        format!("jobctl {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn get_jobs_follows_every_page() {
    let router = Router::new().route(
        "/v1/jobs",
        get(|Query(q): Query<HashMap<String, String>>| async move {
            let mut view = hello_view(JobState::Running, vec![(TaskState::Running, None)]);
            view.tasks = None;
            let next = match q.get("after").map(String::as_str) {
                None => {
                    view.name = "first".into();
                    Some("page-2".to_string())
                }
                Some("page-2") => {
                    view.name = "second".into();
                    None
                }
                Some(other) => panic!("unexpected cursor {other}"),
            };
            Json(JobList {
                jobs: vec![view],
                next,
            })
        }),
    );
    let master = serve(router);
    let out = jobctl(&["--master", &master, "get", "jobs", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["first", "second"]);
    assert!(list.get("next").is_none(), "{list}");
}

#[test]
fn a_submission_past_the_rate_is_retried_after_the_wait() {
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let router = Router::new().route(
        "/v1/jobs",
        post(move || {
            let refused = refused.clone();
            async move {
                if !refused.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    let body = serde_json::json!({"error": {"code": "rate_limited",
                        "message": "too many submissions from this caller; retry in 1 s"}});
                    return (
                        StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "1")],
                        Json(body),
                    )
                        .into_response();
                }
                let view = hello_view(JobState::Pending, vec![(TaskState::Pending, None)]);
                (StatusCode::CREATED, Json(view)).into_response()
            }
        }),
    );
    let master = serve(router);
    let file = spec_file("hello-rate.yaml", HELLO);
    let out = jobctl(&["--master", &master, "run", "-f", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("job/hello submitted"),
        "{}",
        stdout(&out)
    );
}
