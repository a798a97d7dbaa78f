//! One throwaway server per test binary, one fresh database per test.
//!
//! The first call starts the server and builds a template database with every
//! migration applied; each test then gets `CREATE DATABASE ... TEMPLATE`, which
//! takes milliseconds. `DATABASE_URL` set means: use that server instead.

use crate::{Options, PgServer};
use anyhow::{Context, Result};
use sqlx::migrate::Migrator;
use sqlx::{Connection, Executor, PgConnection};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

const TEMPLATE: &str = "borg_template";
/// Test clusters live in `$TMPDIR/devpg-test-<uuid>`.
const DIR_PREFIX: &str = "devpg-test-";

struct Shared {
    /// URL of the maintenance database; the server lives until the process exits.
    admin_url: String,
    _server: Option<PgServer>,
}

static SHARED: OnceLock<Shared> = OnceLock::new();
static TEMPLATE_READY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

fn shared() -> &'static Shared {
    SHARED.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return Shared {
                admin_url: url,
                _server: None,
            };
        }
        sweep_finished_servers(&std::env::temp_dir(), Duration::from_secs(60));
        let dir =
            std::env::temp_dir().join(format!("{DIR_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        let opts = Options {
            durable: false,
            max_connections: 300,
            ..Options::default()
        };
        let server = PgServer::start(&dir, &opts)
            .unwrap_or_else(|e| panic!("starting the test postgres: {e:#}"));
        Shared {
            admin_url: server.url("postgres"),
            _server: Some(server),
        }
    })
}

/// A fresh database for one test, with `migrator`'s schema (the store's
/// `borg_store::MIGRATOR`; one per test binary); returns its URL.
pub async fn fresh_database(migrator: &'static Migrator) -> Result<String> {
    let admin_url = tokio::task::spawn_blocking(|| shared().admin_url.clone()).await?;
    TEMPLATE_READY
        .get_or_try_init(|| async {
            let mut admin = PgConnection::connect(&admin_url).await?;
            admin
                .execute(format!("DROP DATABASE IF EXISTS {TEMPLATE}").as_str())
                .await?;
            admin
                .execute(format!("CREATE DATABASE {TEMPLATE}").as_str())
                .await?;
            let mut tpl = PgConnection::connect(&with_db(&admin_url, TEMPLATE)).await?;
            migrator
                .run(&mut tpl)
                .await
                .context("migrating the template")?;
            tpl.close().await?;
            admin.close().await?;
            anyhow::Ok(())
        })
        .await?;
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_url).await?;
    // The template's own migration session may still be closing on the server
    // side ("source database is being accessed by other users"): retry briefly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let res = admin
            .execute(format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}").as_str())
            .await;
        match res {
            Ok(_) => break,
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some("55006") && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => return Err(anyhow::Error::new(e).context("creating a test database")),
        }
    }
    admin.close().await?;
    Ok(with_db(&admin_url, &name))
}

/// Remove the clusters of earlier test runs: their server is gone (each test
/// binary's server dies with it), and each holds tens of MiB. A directory younger
/// than `grace` may be a concurrent run's cluster still in initdb, so it stays.
fn sweep_finished_servers(tmp: &Path, grace: Duration) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = entry.file_name().to_string_lossy().starts_with(DIR_PREFIX);
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > grace);
        if ours && old && crate::running_postmaster(&path).is_none() {
            if let Err(e) = std::fs::remove_dir_all(&path) {
                tracing::debug!(path = %path.display(), error = %e, "sweeping an old test cluster");
            }
        }
    }
}

/// Replace the database part of a postgres URL.
pub fn with_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.rfind('/') {
        Some(i) if base[..i].contains("://") && i > base.find("://").unwrap_or(0) + 2 => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_db;

    #[test]
    fn sweep_removes_only_old_clusters_without_a_server() {
        let tmp = tempfile::tempdir().unwrap();
        let old = tmp.path().join(format!("{}old", super::DIR_PREFIX));
        let other = tmp.path().join("something-else");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        // A pid file naming a process that is not postgres (ourselves) does not keep it.
        std::fs::write(
            old.join("postmaster.pid"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        super::sweep_finished_servers(tmp.path(), std::time::Duration::from_secs(3600));
        assert!(old.exists(), "younger than the grace period: kept");
        super::sweep_finished_servers(tmp.path(), std::time::Duration::ZERO);
        assert!(!old.exists(), "old and without a server: removed");
        assert!(other.exists(), "not ours: kept");
    }

    #[test]
    fn replaces_database() {
        assert_eq!(
            with_db("postgres://u@h:1/postgres", "x"),
            "postgres://u@h:1/x"
        );
        assert_eq!(with_db("postgres://u@h:1", "x"), "postgres://u@h:1/x");
        assert_eq!(
            with_db("postgres://u@h:1/a?sslmode=disable", "x"),
            "postgres://u@h:1/x?sslmode=disable"
        );
    }
}
