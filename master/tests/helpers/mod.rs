#![allow(dead_code)] // each test binary uses a different part
//! Start the real master on a random port against a fresh database.

use borgmaster::store::Store;
use borgmaster::Config;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The admin token every test master is started with (as `bootstrap`), and
/// which `TestApp::http` sends by default.
pub const ADMIN_TOKEN: &str = "borg_test-admin-0123456789abcdef";

/// The auth settings of a test master: the bootstrap admin token above.
pub fn test_auth() -> borgmaster::auth::AuthConfig {
    borgmaster::auth::AuthConfig {
        bootstrap_token: Some(ADMIN_TOKEN.into()),
        ..Default::default()
    }
}

/// A client that sends `token` on every request.
pub fn client_with(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = format!("Bearer {token}").parse().unwrap();
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// The join token of every test master.
pub const JOIN_TOKEN: &str = "test-join-token";

/// The master config of a test (a join token set, nothing open).
pub fn test_config(
    listen: std::net::SocketAddr,
    database_url: &str,
    poll_interval: Duration,
) -> Config {
    Config {
        listen,
        database_url: database_url.to_string(),
        database_url_file: None,
        agents: borgmaster::agents::AgentConfig {
            join_token_file: None,
            join_token: Some(JOIN_TOKEN.into()),
        },
        poll_interval,
        leader: Default::default(),
        auth: test_auth(),
        limits: Default::default(),
        tls: Default::default(),
        log: Default::default(),
    }
}

pub struct TestApp {
    pub url: String,
    pub store: Store,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    pub database_url: String,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_polling_every(Duration::from_millis(200)).await
}

/// A master whose poll loops wake every `poll_interval` (and when woken).
pub async fn spawn_app_polling_every(poll_interval: Duration) -> TestApp {
    let database_url = devpg::testing::fresh_database(&borg_store::MIGRATOR)
        .await
        .expect("test database");
    spawn_app_on(&database_url, poll_interval).await
}

/// A master on an existing database (a second master, or one restarted).
pub async fn spawn_app_on(database_url: &str, poll_interval: Duration) -> TestApp {
    spawn_app_with(
        database_url,
        poll_interval,
        Default::default(),
        Default::default(),
    )
    .await
}

/// A master with these leader settings (e.g. a long `down_after`).
pub async fn spawn_app_leading(
    database_url: &str,
    poll_interval: Duration,
    leader: borgmaster::leader::LeaderConfig,
) -> TestApp {
    spawn_app_with(database_url, poll_interval, leader, Default::default()).await
}

/// A master on a fresh database with these API limits.
pub async fn spawn_app_limited(limits: borgmaster::api::LimitsConfig) -> TestApp {
    let database_url = devpg::testing::fresh_database(&borg_store::MIGRATOR)
        .await
        .expect("test database");
    spawn_app_with(
        &database_url,
        Duration::from_millis(200),
        Default::default(),
        limits,
    )
    .await
}

async fn spawn_app_with(
    database_url: &str,
    poll_interval: Duration,
    leader: borgmaster::leader::LeaderConfig,
    limits: borgmaster::api::LimitsConfig,
) -> TestApp {
    let database_url = database_url.to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = Config {
        leader,
        limits,
        ..test_config(listener.local_addr().unwrap(), &database_url, poll_interval)
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(borgmaster::run(listener, config, shutdown.clone()));
    let store = Store::connect(&database_url).await.unwrap();
    let http = client_with(ADMIN_TOKEN);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !http
        .get(format!("{url}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "master did not come up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    TestApp {
        url,
        store,
        http,
        shutdown,
        database_url,
    }
}

impl TestApp {
    /// POST `body`; a registration (`/v1/machines`) carries the join token.
    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let mut post = self.http.post(format!("{}{path}", self.url)).json(&body);
        if path == "/v1/machines" {
            post = post.header(borg_shared::agent::JOIN_TOKEN_HEADER, JOIN_TOKEN);
        }
        let resp = post.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// The text of `GET /metrics`.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The sum of the samples whose line starts with `line_start` (a name, or
    /// a name and its labels): 0 when there is none.
    pub async fn metric(&self, line_start: &str) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .filter(|l| l.starts_with(line_start))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(self.store.pool())
            .await
            .unwrap()
    }
}

/// The epoch of the lease the test's master holds (waiting for it to take it).
pub async fn leader_epoch(store: &Store) -> i64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(lease) = store.lease().await.unwrap() {
            return lease.epoch;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the master took no lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
