//! The embedded Postgres asks every connection for a password, and the cell's
//! role is no superuser yet can apply the migrations to the database it owns.

use sqlx::{Connection, PgConnection};
use std::os::unix::fs::PermissionsExt;

#[tokio::test]
async fn passwords_are_required_and_the_cell_role_is_not_a_superuser() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pg");
    let opts = devpg::Options {
        durable: false,
        max_connections: 20,
        zero_fill_wal: false,
    };
    let server = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || devpg::PgServer::start(&data, &opts).unwrap())
            .await
            .unwrap()
    };
    let port = server.port();
    let cell_url = server.cell_url("borg").await.unwrap();

    for user in [devpg::SUPERUSER, devpg::CELL_ROLE] {
        let err = PgConnection::connect(&format!("postgres://{user}@127.0.0.1:{port}/postgres"))
            .await
            .expect_err("a connection without a password was let in");
        assert!(
            err.to_string().contains("password"),
            "{user} without a password: {err}"
        );
        let wrong = format!("postgres://{user}:wrong@127.0.0.1:{port}/postgres");
        assert!(PgConnection::connect(&wrong).await.is_err());
    }
    for file in ["superuser.password", "borg.password"] {
        let mode = std::fs::metadata(data.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }

    let mut conn = PgConnection::connect(&cell_url).await.unwrap();
    let (zero_fill,): (String,) = sqlx::query_as("SHOW wal_init_zero")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(zero_fill, "off", "Options::zero_fill_wal is applied");
    let (superuser, createrole, createdb): (bool, bool, bool) = sqlx::query_as(
        "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(!superuser && !createrole && !createdb);
    borg_store::MIGRATOR.run(&mut conn).await.unwrap();
    let refused = sqlx::query("CREATE DATABASE elsewhere")
        .execute(&mut conn)
        .await;
    assert!(refused.is_err(), "the cell role created a database");
    conn.close().await.unwrap();

    // A second start of the same cluster keeps both passwords.
    let again_url = server.cell_url("borg").await.unwrap();
    assert_eq!(again_url, cell_url);
    drop(server);
    let restarted = tokio::task::spawn_blocking(move || {
        devpg::PgServer::start(&data, &devpg::Options::default()).unwrap()
    })
    .await
    .unwrap();
    let url = restarted.cell_url("borg").await.unwrap();
    assert_eq!(
        url.split('@').next(),
        cell_url.split('@').next(),
        "the same role and password"
    );
    PgConnection::connect(&url)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
}
