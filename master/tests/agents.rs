//! Registration with proof, against the real master and Postgres: the join token
//! admits a new name or the address a machine has; only the machine's own
//! credential moves it elsewhere; every refusal answers 401/403 and leaves an event.

mod helpers;

use borg_shared::agent::JOIN_TOKEN_HEADER;
use helpers::{spawn_app, TestApp, JOIN_TOKEN};
use serde_json::{json, Value};

const A: &str = "http://127.0.0.1:1";
const B: &str = "http://127.0.0.1:2";

async fn register(
    app: &TestApp,
    address: &str,
    credential: Option<&str>,
    join: Option<&str>,
) -> (u16, Value) {
    let mut post = app
        .http
        .post(format!("{}/v1/machines", app.url))
        .json(&json!({"name": "m1", "address": address,
                      "capacity": {"cpu": 1000, "memory": 1073741824u64, "disk": 0}}));
    if let Some(c) = credential {
        post = post.bearer_auth(c);
    }
    if let Some(j) = join {
        post = post.header(JOIN_TOKEN_HEADER, j);
    }
    let resp = post.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn address_of_m1(app: &TestApp) -> String {
    let (_, list) = app.get_json("/v1/machines").await;
    list["machines"][0]["address"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn only_the_machines_credential_moves_it_to_another_address() {
    let app = spawn_app().await;
    let (status, body) = register(&app, A, None, Some(JOIN_TOKEN)).await;
    assert_eq!(status, 201, "{body}");
    let first = body["credential"].as_str().unwrap().to_string();
    assert_eq!(body["name"], "m1");

    // Forged: "m1 is now at B", with the join token, with a wrong credential, or nothing.
    let (status, body) = register(&app, B, None, Some(JOIN_TOKEN)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, body) = register(&app, B, Some("not-m1s"), Some(JOIN_TOKEN)).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = register(&app, B, None, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = register(&app, A, None, Some("wrong-join-token")).await;
    assert_eq!(status, 401);
    assert_eq!(
        address_of_m1(&app).await,
        A,
        "no forged registration moved it"
    );
    let refused: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE kind = 'machine' AND reason LIKE 'registration refused:%'",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(refused, 4, "each refusal leaves an event row");
    let hash: Option<String> =
        sqlx::query_scalar("SELECT credential_hash FROM machines WHERE name = 'm1'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(
        hash.as_deref(),
        Some(borg_shared::agent::sync_key(&first).as_str()),
        "only the hash is stored"
    );

    // Its own credential moves it, and is kept (none issued).
    let (status, body) = register(&app, B, Some(&first), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("credential").is_none(), "{body}");
    assert_eq!(address_of_m1(&app).await, B);

    // The join token at its current address issues a new credential; the old one
    // then moves nothing.
    let (status, body) = register(&app, B, None, Some(JOIN_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let second = body["credential"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    let (status, _) = register(&app, A, Some(&first), None).await;
    assert_eq!(status, 401);
    let (status, _) = register(&app, A, Some(&second), None).await;
    assert_eq!(status, 200);
    assert_eq!(address_of_m1(&app).await, A);
}
