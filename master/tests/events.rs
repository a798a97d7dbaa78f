//! `GET /v1/events` against a real master and Postgres: a client that
//! reconnects at random points (and across a master restart) during a
//! 1,000-task job sees every event exactly once, in the log's order; filters
//! and bad input.

mod helpers;

use borg_shared::event_stream::StreamEvent;
use borg_shared::wire::{AttemptPhase, AttemptReport, Capacity, RegisterMachine};
use borg_shared::{Bytes, JobId, MachineId, MilliCpu, TaskId};
use borgmaster::store::{EventCursor, EventFilter, Placement, Store};
use chrono::Utc;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use helpers::{spawn_app, spawn_app_on};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TASKS: usize = 1000;
const CHUNK: i64 = 100;

async fn machine(store: &Store) -> MachineId {
    let (m, _) = store
        .register_machine(&RegisterMachine {
            name: "m1".into(),
            address: "http://127.0.0.1:1".into(),
            capacity: Capacity {
                cpu: MilliCpu(1_000_000),
                memory: Bytes(1 << 40),
                disk: Bytes(0),
            },
            labels: Default::default(),
            isolation: None,
            version: None,
            ports: Default::default(),
        })
        .await
        .unwrap();
    m.id
}

/// Run the job's tasks through their lives a chunk at a time, the way the
/// scheduler and the borglet's reports move them.
async fn drive(store: Store, m: MachineId) {
    loop {
        let rows: Vec<(TaskId, JobId)> = sqlx::query_as(
            "SELECT id, job_id FROM tasks WHERE state = 'pending' ORDER BY index LIMIT $1",
        )
        .bind(CHUNK)
        .fetch_all(store.pool())
        .await
        .unwrap();
        if rows.is_empty() {
            return;
        }
        let batch: Vec<Placement> = rows
            .into_iter()
            .map(|(task, job)| Placement {
                task,
                job,
                machine: m,
                request: Capacity {
                    cpu: MilliCpu(10),
                    memory: Bytes(4 << 20),
                    disk: Bytes(0),
                },
                max_per_machine: None,
                ports: vec![],
            })
            .collect();
        store.commit_placements("test", &batch).await.unwrap();
        let (wanted, new) = store.desired_attempts(m).await.unwrap();
        // Across the master's restart the epoch moves on: read it each time, and
        // retry a write made with one that just went stale.
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = store
            .mark_starting(m, helpers::leader_epoch(&store).await, &new)
            .await
        {
            assert!(Instant::now() < deadline, "mark_starting: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ids: Vec<_> = wanted.iter().map(|a| a.id).collect();
        let report = |phase, code| -> Vec<AttemptReport> {
            ids.iter()
                .map(|&id| AttemptReport {
                    id,
                    phase,
                    pid: Some(1),
                    started_at: Some(Utc::now()),
                    finished_at: (phase == AttemptPhase::Exited).then(Utc::now),
                    exit_code: code,
                    signal: None,
                    stopped_by_borglet: false,
                    message: None,
                    restarts: 0,
                    last_exit: None,
                    oom_killed: false,
                    peak_memory: None,
                    stderr_tail: None,
                    usage: None,
                    healthy: None,
                    health_message: None,
                })
                .collect()
        };
        for phase in [
            (AttemptPhase::Running, None),
            (AttemptPhase::Exited, Some(0)),
        ] {
            // As above: a report made with an epoch that just went stale is made again.
            let deadline = Instant::now() + Duration::from_secs(30);
            while let Err(e) = store
                .apply_report(
                    m,
                    "m1",
                    helpers::leader_epoch(&store).await,
                    &ids,
                    &report(phase.0, phase.1),
                )
                .await
            {
                assert!(Instant::now() < deadline, "apply_report: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Every event in the log, read straight from the store.
async fn all_events(store: &Store) -> Vec<String> {
    let mut cursor = EventCursor::default();
    let mut out = Vec::new();
    loop {
        let page = store
            .feed_after(cursor, 1000, &EventFilter::default())
            .await
            .unwrap();
        if page.events.is_empty() {
            return out;
        }
        out.extend(page.events.into_iter().map(|e| e.cursor));
        cursor = page.next;
    }
}

/// A tiny deterministic generator: the reconnect points, reproducible from the seed.
struct XorShift(u64);
impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

async fn job_state(store: &Store) -> String {
    sqlx::query_scalar("SELECT state::text FROM jobs")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_sees_every_event_once_in_order_across_a_restart() {
    let app = spawn_app().await;
    let store = app.store.clone();
    let database_url = app.database_url.clone();
    let m = machine(&store).await;
    let (status, body) = app
        .post_json(
            "/v1/jobs",
            serde_json::json!({"name": "big", "replicas": TASKS,
                "task": {"command": ["/bin/true"], "resources": {"cpu": "10m", "memory": "4Mi"}}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // The master the client should talk to; swapped on restart.
    let master: Arc<Mutex<Option<helpers::TestApp>>> = Arc::new(Mutex::new(Some(app)));
    let url = |m: &Arc<Mutex<Option<helpers::TestApp>>>| {
        m.lock().unwrap().as_ref().map(|a| a.url.clone())
    };
    let driver = tokio::spawn(drive(store.clone(), m));

    let seed = 0x5eed_1234_u64;
    let mut rng = XorShift(seed);
    let http = helpers::client_with(helpers::ADMIN_TOKEN);
    let mut seen: Vec<String> = Vec::new();
    let mut restarted = false;
    let mut connections = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "only {} events after 60 s",
            seen.len()
        );
        // Done when the job is over and the client has everything the log holds.
        if driver.is_finished() && job_state(&store).await == "succeeded" {
            let expected = all_events(&store).await;
            if seen.len() >= expected.len() {
                assert_eq!(seen, expected, "seed {seed:#x}");
                break;
            }
        }
        // Halfway, restart the master mid-stream: the open stream must end cleanly.
        if !restarted && seen.len() > 2 * TASKS {
            restarted = true;
            let old = master.lock().unwrap().take();
            drop(old);
            let new = spawn_app_on(&database_url, Duration::from_millis(200)).await;
            *master.lock().unwrap() = Some(new);
        }
        let Some(base) = url(&master) else { continue };
        let req = http.get(format!("{base}/v1/events"));
        let req = match seen.last() {
            Some(last) => req.header("Last-Event-ID", last),
            None => req.query(&[("after", "0-0")]),
        };
        let Ok(resp) = req.send().await else { continue };
        assert_eq!(resp.status(), 200);
        connections += 1;
        let take = 1 + rng.below(700) as usize;
        let mut stream = resp.bytes_stream().eventsource();
        let mut got = 0;
        while got < take {
            let next = tokio::time::timeout(Duration::from_secs(2), stream.next()).await;
            let Ok(Some(Ok(ev))) = next else { break };
            let e: StreamEvent = serde_json::from_str(&ev.data).unwrap();
            assert_eq!(ev.id, e.cursor);
            assert_eq!(ev.event, e.kind.as_str());
            seen.push(e.cursor);
            got += 1;
        }
        // Dropping the stream disconnects: the next round resumes.
    }
    assert!(restarted, "the master was never restarted");
    assert!(connections > 5, "only {connections} connections");
    let n = seen.len();
    assert!(n > 5 * TASKS, "{n} events for {TASKS} tasks");
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), n, "a duplicate event");
}

#[tokio::test]
async fn a_stream_ends_when_the_master_shuts_down() {
    let app = spawn_app().await;
    let resp = app
        .http
        .get(format!("{}/v1/events", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream().eventsource();
    drop(app);
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(item) = stream.next().await {
            if item.is_err() {
                return false;
            }
        }
        true
    })
    .await;
    assert_eq!(end, Ok(true), "the stream did not end cleanly on shutdown");
}

#[tokio::test]
async fn filters_narrow_the_stream_and_bad_input_is_refused() {
    let app = spawn_app().await;
    machine(&app.store).await;
    for name in ["a", "b"] {
        let (status, _) = app
            .post_json(
                "/v1/jobs",
                serde_json::json!({"name": name, "replicas": 2, "task": {"command": ["/bin/true"]}}),
            )
            .await;
        assert_eq!(status, 201);
    }
    let read = |query: &'static str, n: usize| {
        let http = app.http.clone();
        let url = format!("{}/v1/events?after=0-0&{query}", app.url);
        async move {
            let resp = http.get(url).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let mut stream = resp.bytes_stream().eventsource();
            let mut out = Vec::new();
            while out.len() < n {
                let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
                    .await
                    .expect("events in time")
                    .unwrap()
                    .unwrap();
                out.push(serde_json::from_str::<StreamEvent>(&ev.data).unwrap());
            }
            // Nothing more matches.
            let more = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
            assert!(more.is_err(), "an extra event: {more:?}");
            out
        }
    };
    let b = read("job=b", 3).await;
    assert!(b.iter().all(|e| e.job.as_deref() == Some("b")));
    let jobs = read("kind=job", 2).await;
    assert!(jobs
        .iter()
        .all(|e| e.kind.as_str() == "job" && e.to == "pending"));
    let machines = read("kind=machine", 1).await;
    assert_eq!(machines[0].machine.as_deref(), Some("m1"));
    assert_eq!(machines[0].to, "up");

    // A bounded read: the history, then the stream ends.
    let resp = app
        .http
        .get(format!("{}/v1/events?job=a&follow=false", app.url))
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream().eventsource();
    let mut n = 0;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = stream.next().await {
            ev.unwrap();
            n += 1;
        }
    })
    .await;
    assert!(ended.is_ok(), "a follow=false stream did not end");
    assert_eq!(n, 3, "job a's task and job events");

    for (query, status, field) in [
        ("kind=tasks", 422, Some("kind")),
        ("after=12", 422, Some("after")),
        ("job=nope", 404, None),
        ("machine=nope", 404, None),
    ] {
        let (got, body) = app.get_json(&format!("/v1/events?{query}")).await;
        assert_eq!(got, status, "{query}: {body}");
        if let Some(field) = field {
            assert_eq!(body["error"]["field"], field, "{body}");
        }
    }
}

/// The `id:` of the mark a live-only stream starts with.
async fn live_mark(app: &helpers::TestApp) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no start mark");
        let resp = app
            .http
            .get(format!("{}/v1/events", app.url))
            .send()
            .await
            .unwrap();
        let mut body = resp.bytes_stream();
        let first = tokio::time::timeout(Duration::from_secs(1), body.next()).await;
        if let Ok(Some(Ok(chunk))) = first {
            let text = String::from_utf8_lossy(&chunk).to_string();
            // Before the master's reader has looked once there is no mark yet.
            if text.starts_with("event: start\n") {
                let id = text.lines().find_map(|l| l.strip_prefix("id: "));
                return id.expect("an id").to_string();
            }
        }
    }
}

#[tokio::test]
async fn a_live_only_client_resumes_from_its_start_mark_without_a_gap() {
    let app = spawn_app().await;
    machine(&app.store).await;
    let mark = live_mark(&app).await;
    assert!(mark.parse::<EventCursor>().is_ok(), "{mark}");

    // While no one is connected, a job is submitted.
    let (status, _) = app
        .post_json(
            "/v1/jobs",
            serde_json::json!({"name": "later", "replicas": 2, "task": {"command": ["/bin/true"]}}),
        )
        .await;
    assert_eq!(status, 201);

    let resp = app
        .http
        .get(format!("{}/v1/events?job=later", app.url))
        .header("Last-Event-ID", &mark)
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream().eventsource();
    let mut got = Vec::new();
    while got.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the job's events after the mark")
            .unwrap()
            .unwrap();
        let e: StreamEvent = serde_json::from_str(&ev.data).unwrap();
        got.push((e.kind.as_str().to_string(), e.to));
    }
    assert_eq!(
        got.iter().filter(|(k, _)| k == "task").count(),
        2,
        "{got:?}"
    );
    assert!(
        got.contains(&("job".to_string(), "pending".to_string())),
        "{got:?}"
    );
}

/// Streams dropped for taking no event for their stall limit.
const STALLED: &str = "borg_event_streams_ended_total{why=\"stalled\"}";

/// A client on a raw socket with a 4 KiB receive window: sends `GET path`
/// and reads the answer's head (status line and headers), then nothing more
/// until the test reads again. HTTP/1.0, so the body is not chunked.
async fn raw_events(addr: std::net::SocketAddr, path: &str) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(
            format!(
                "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n\r\n",
                helpers::ADMIN_TOKEN
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // Byte by byte up to the blank line, so no byte of the body is taken.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "the answer's head ended early"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.contains(" 200 "), "{head}");
    assert!(!head.to_ascii_lowercase().contains("chunked"), "{head}");
    (stream, head)
}

/// Submit jobs of 1,000 tasks (1,000 events each) until a stream was dropped
/// for stalling; `jobs` counts every job submitted so far.
async fn flood_until_a_stall(app: &helpers::TestApp, jobs: &mut usize) {
    let before = app.metric(STALLED).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut sent = 0;
    while app.metric(STALLED).await == before {
        assert!(
            Instant::now() < deadline && sent < 200,
            "a client reading nothing was never dropped ({sent} jobs of 1,000 tasks sent)"
        );
        submit_flood_job(app, *jobs).await;
        *jobs += 1;
        sent += 1;
    }
}

async fn submit_flood_job(app: &helpers::TestApp, n: usize) {
    let (status, body) = app
        .post_json(
            "/v1/jobs",
            serde_json::json!({
                "name": format!("flood-{n}"), "replicas": 1000,
                "task": {"command": ["/bin/true"], "resources": {"cpu": "10m", "memory": "4Mi"}}
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_while_a_reading_one_keeps_every_event() {
    use tokio::io::AsyncReadExt;
    let app = helpers::spawn_app_limited(borgmaster::api::LimitsConfig {
        event_client_stall: Duration::from_secs(1),
        submit_rate: 0,
        ..Default::default()
    })
    .await;
    let addr: std::net::SocketAddr = app.url.trim_start_matches("http://").parse().unwrap();

    // The slow client: a tiny receive window, the answer's head read, then nothing.
    let (mut slow, _) = raw_events(addr, "/v1/events").await;

    // The reading client counts task events as they come.
    let seen = Arc::new(Mutex::new(0usize));
    let resp = app
        .http
        .get(format!("{}/v1/events", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream().eventsource();
    let counter = seen.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(e)) = stream.next().await {
            if e.event == "task" {
                *counter.lock().unwrap() += 1;
            }
        }
    });

    // Events until the slow client is dropped (its socket buffers fill first).
    const REPLICAS: usize = 1000;
    let mut jobs = 0;
    flood_until_a_stall(&app, &mut jobs).await;

    // The reading client was not dropped with it: it gets every task's event.
    let want = jobs * REPLICAS;
    let deadline = Instant::now() + Duration::from_secs(60);
    while *seen.lock().unwrap() < want {
        assert!(
            !reader.is_finished(),
            "the reading client's stream ended after {} of {want} task events",
            seen.lock().unwrap()
        );
        assert!(
            Instant::now() < deadline,
            "the reading client saw {} of {want} task events",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The dropped client, reading again, gets what was queued and then the end.
    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert_eq!(drained, Ok(true), "the dropped client's stream never ended");
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_read_that_pauses_is_not_dropped_and_gets_the_whole_history() {
    use tokio::io::AsyncReadExt;
    let app = helpers::spawn_app_limited(borgmaster::api::LimitsConfig {
        event_client_stall: Duration::from_secs(1),
        submit_rate: 0,
        ..Default::default()
    })
    .await;
    let addr: std::net::SocketAddr = app.url.trim_start_matches("http://").parse().unwrap();
    // A history far larger than the buffers between server and client (the
    // kernel's send buffer grows to 4 MiB; an event is ~130 bytes).
    let mut jobs = 0;
    while jobs < 100 {
        submit_flood_job(&app, jobs).await;
        jobs += 1;
    }
    // `jobctl get events | less`, paused: a bounded read that stops reading.
    let (mut bounded, _) = raw_events(addr, "/v1/events?after=0-0&follow=false").await;
    // A live client that stops reading too is dropped meanwhile: the bounded
    // read has been stalled at least as long as the limit by then.
    let (_live, _) = raw_events(addr, "/v1/events").await;
    let stalled = app.metric(STALLED).await;
    flood_until_a_stall(&app, &mut jobs).await;
    assert_eq!(
        app.metric(STALLED).await,
        stalled + 1.0,
        "only the live client is dropped"
    );
    // Reading again, the bounded read gets every event there is, then its end.
    let body = tokio::time::timeout(Duration::from_secs(120), async {
        let mut body = Vec::new();
        bounded.read_to_end(&mut body).await.map(|_| body)
    })
    .await
    .expect("the bounded read never ended")
    .unwrap();
    let got = String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with("data: "))
        .count();
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert!(all >= 100_000, "{all} events");
    assert_eq!(got as i64, all, "the paused bounded read lost events");
}
