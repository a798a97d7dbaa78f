//! The dev cell's database: `borg` on the embedded server, created on first start.

use anyhow::Context;
use sqlx::Connection;
use std::time::Duration;
use tokio::time::Instant;

pub const DATABASE: &str = "borg";

/// A restarted cluster may still be replaying its WAL when its port opens.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Create the `borg` database through the admin database at `admin_url`, unless it exists.
pub async fn create_database(admin_url: &str) -> anyhow::Result<()> {
    let mut conn = connect(admin_url).await?;
    let created = sqlx::query(&format!("CREATE DATABASE {DATABASE}"))
        .execute(&mut conn)
        .await;
    match created {
        Ok(_) => println!("created database {DATABASE}"),
        // duplicate_database: a restart of the same cell.
        Err(e) if sqlstate(&e).as_deref() == Some("42P04") => {}
        Err(e) => return Err(e).context(format!("creating database {DATABASE}")),
    }
    let _ = conn.close().await;
    Ok(())
}

/// Connect, waiting while the server says it is starting up (57P03).
async fn connect(url: &str) -> anyhow::Result<sqlx::PgConnection> {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        match sqlx::PgConnection::connect(url).await {
            Ok(conn) => return Ok(conn),
            Err(e) if sqlstate(&e).as_deref() == Some("57P03") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context("connecting to the embedded postgres"),
        }
    }
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
}
