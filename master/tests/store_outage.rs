//! Postgres goes away under a running master (its own throwaway server, stopped
//! with `pg_ctl stop -m immediate`): the API answers at once with 503 and
//! `Retry-After`, `/healthz` says `degraded`, and when Postgres is back the
//! master resumes by itself (leads again, accepts jobs, lost nothing).

mod helpers;

use borgmaster::Config;
use devpg::wait::wait_for;
use devpg::{pg_ctl, Options, PgServer};
use serde_json::{json, Value};
/// The join token of the test cell's master and borglets.
const JOIN_TOKEN: &str = "test-join-token";
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A request that hangs on the store fails this test instead of waiting it out.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

async fn health(http: &reqwest::Client, url: &str) -> Option<(u16, Value)> {
    let resp = http.get(format!("{url}/healthz")).send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_503_at_once_while_postgres_is_down_and_resumes_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pg");
    // Durable: an immediate stop must not lose what was committed (a 201).
    let opts = Options {
        durable: true,
        max_connections: 50,
        ..Options::default()
    };
    let server = tokio::task::spawn_blocking({
        let data = data.clone();
        move || PgServer::start(&data, &opts).unwrap()
    })
    .await
    .unwrap();
    let port = server.port();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = Config {
        listen: listener.local_addr().unwrap(),
        database_url: server.url("postgres"),
        database_url_file: None,
        agents: borgmaster::agents::AgentConfig {
            join_token_file: None,
            join_token: Some(JOIN_TOKEN.into()),
        },
        poll_interval: Duration::from_millis(200),
        leader: borgmaster::leader::LeaderConfig {
            lease_ttl: Duration::from_secs(1),
            ..Default::default()
        },
        auth: helpers::test_auth(),
        limits: Default::default(),
        tls: Default::default(),
        log: Default::default(),
    };
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    tokio::spawn(borgmaster::run(listener, config, shutdown));
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {}", helpers::ADMIN_TOKEN).parse().unwrap();
    headers.insert(reqwest::header::AUTHORIZATION, bearer);
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(ANSWER_WITHIN)
        .build()
        .unwrap();
    wait_for("the master leading", Duration::from_secs(30), || async {
        let (s, v) = health(&http, &url).await?;
        (s == 200 && v["role"] == "leader").then_some(())
    })
    .await;
    let job = |name: &str| json!({"name": name, "task": {"command": ["/bin/true"]}});
    let resp = http
        .post(format!("{url}/v1/jobs"))
        .json(&job("before"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);

    tokio::task::spawn_blocking({
        let data = data.clone();
        move || pg_ctl(&data, &["stop", "-m", "immediate", "-w", "-s"]).unwrap()
    })
    .await
    .unwrap();
    let (_, v) = wait_for("/healthz degraded", Duration::from_secs(10), || async {
        health(&http, &url).await.filter(|(s, _)| *s == 503)
    })
    .await;
    assert_eq!(v["status"], "degraded", "{v}");
    for (method, path, body) in [
        ("POST", "/v1/jobs", Some(job("during"))),
        ("GET", "/v1/jobs", None),
        ("GET", "/v1/jobs/before", None),
    ] {
        let mut req = http.request(method.parse().unwrap(), format!("{url}{path}"));
        if let Some(b) = &body {
            req = req.json(b);
        }
        // Within ANSWER_WITHIN, or the client's timeout fails the test here.
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 503, "{method} {path}");
        assert_eq!(resp.headers()["retry-after"], "1", "{method} {path}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "store_unavailable", "{v}");
    }

    let socket_dirs = "unix_socket_directories=''";
    let o = format!("-p {port} -c listen_addresses=127.0.0.1 -c {socket_dirs}");
    tokio::task::spawn_blocking({
        let data = data.clone();
        move || pg_ctl(&data, &["start", "-w", "-s", "-o", &o, "-l", "/dev/null"]).unwrap()
    })
    .await
    .unwrap();
    wait_for(
        "the master healthy and leading again",
        Duration::from_secs(30),
        || async {
            let (s, v) = health(&http, &url).await?;
            (s == 200 && v["role"] == "leader").then_some(())
        },
    )
    .await;
    let resp = http
        .post(format!("{url}/v1/jobs"))
        .json(&job("after"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let resp = http
        .get(format!("{url}/v1/jobs/before"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "the job accepted before the outage"
    );
    // Stops the restarted postmaster too (it is not our child).
    tokio::task::spawn_blocking(move || server.stop().unwrap())
        .await
        .unwrap();
}
