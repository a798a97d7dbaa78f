//! The cell's role and database: `borg` logs in with its own password and owns
//! the cell's database (so the master can apply the migrations), and is no
//! superuser, cannot create roles or databases: a component that leaks its URL
//! leaks the cell's data, not the server.

use crate::{read_password, write_private, PgServer, CELL_PASSWORD_FILE, CELL_ROLE};
use anyhow::{Context, Result};
use sqlx::Connection;
use std::time::Duration;
use tokio::time::Instant;

/// A restarted cluster may still be replaying its WAL when its port opens.
const READY_WITHIN: Duration = Duration::from_secs(60);

pub(crate) async fn provision(server: &PgServer, database: &str) -> Result<String> {
    anyhow::ensure!(
        !database.is_empty()
            && database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "database name `{database}`: letters, digits and _ only"
    );
    let file = server.data_dir.join(CELL_PASSWORD_FILE);
    let password = if file.exists() {
        read_password(&file)?
    } else {
        let pw = crate::new_password()?;
        write_private(&file, &pw)?;
        pw
    };
    let mut conn = connect(&server.url("postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(CELL_ROLE)
            .fetch_one(&mut conn)
            .await?;
    let verb = if exists { "ALTER" } else { "CREATE" };
    // Utility statements take no parameters; the password is hex, the name ours.
    sqlx::query(&format!(
        "{verb} ROLE {CELL_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
         PASSWORD '{password}'"
    ))
    .execute(&mut conn)
    .await
    .with_context(|| format!("{verb} ROLE {CELL_ROLE}"))?;
    let db_exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut conn)
            .await?;
    if db_exists {
        sqlx::query(&format!("ALTER DATABASE {database} OWNER TO {CELL_ROLE}"))
            .execute(&mut conn)
            .await?;
    } else {
        sqlx::query(&format!("CREATE DATABASE {database} OWNER {CELL_ROLE}"))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {database}"))?;
    }
    let _ = conn.close().await;
    Ok(format!(
        "postgres://{CELL_ROLE}:{password}@127.0.0.1:{}/{database}",
        server.port
    ))
}

/// Connect, waiting while the server says it is starting up (57P03).
async fn connect(url: &str) -> Result<sqlx::PgConnection> {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        match sqlx::PgConnection::connect(url).await {
            Ok(conn) => return Ok(conn),
            Err(e)
                if e.as_database_error()
                    .and_then(|d| d.code())
                    .is_some_and(|c| c == "57P03")
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context("connecting to the embedded postgres"),
        }
    }
}
