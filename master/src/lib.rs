//! borgmaster: the REST API, the store of record (Postgres), and the poller
//! that drives every borglet toward the desired state.

pub mod agents;
pub mod api;
pub mod auth;
pub mod dashboard;
pub mod dbhealth;
pub mod drain;
pub mod feed;
pub mod history;
pub mod leader;
pub mod liveness;
pub mod metrics;
pub mod poller;
pub mod rollout;
pub mod sweep;
pub mod tls;

/// The store of record: every state change goes through it.
pub use borg_store as store;

use anyhow::Context;
use clap::Parser;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "borgmaster",
    version,
    about = "The borg cell's master: REST API and borglet poller"
)]
pub struct Config {
    /// Address the REST API listens on.
    #[arg(long, env = "BORG_LISTEN", default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,
    /// PostgreSQL URL of the cell's store: `DATABASE_URL`, else the content of
    /// `--database-url-file`. Never an argument: argv is public on the host.
    #[arg(skip)]
    pub database_url: String,
    /// File holding the PostgreSQL URL (when `DATABASE_URL` is not set).
    #[arg(long, env = "BORG_DATABASE_URL_FILE", value_name = "FILE")]
    pub database_url_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub agents: agents::AgentConfig,
    /// How often every borglet is polled (new work is sent at once regardless).
    #[arg(long, env = "BORG_POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    #[command(flatten)]
    pub leader: leader::LeaderConfig,
    #[command(flatten)]
    pub auth: auth::AuthConfig,
    #[command(flatten)]
    pub limits: api::LimitsConfig,
    #[command(flatten)]
    pub tls: tls::TlsConfig,
    #[command(flatten)]
    pub log: borg_shared::logging::LogArgs,
}

impl Config {
    /// Read what never comes from argv: the database URL and the join token.
    pub fn resolve_secrets(&mut self) -> anyhow::Result<()> {
        if self.database_url.is_empty() {
            self.database_url =
                agents::secret_from("DATABASE_URL", self.database_url_file.as_deref())?
                    .context("no database: set DATABASE_URL or --database-url-file")?;
        }
        self.agents.resolve()
    }
}

/// Run the master on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Bad certificate files stop the start before anything else happens.
    let serve_tls = config.tls.server()?;
    let store = store::Store::connect(&config.database_url)
        .await
        .context("connecting to postgres")?;
    store.migrate().await.context("applying migrations")?;
    auth::prepare(&store, &config.auth).await?;
    let http = config
        .tls
        .client(reqwest::Client::builder().connect_timeout(Duration::from_secs(2)))?
        .build()
        .context("building the HTTP client")?;
    let machines_changed = Arc::new(Notify::new());
    let machines = Arc::new(poller::Machines::default());
    let gate = agents::Gate {
        join_token: config.agents.join_token.clone(),
        insecure: config.auth.insecure,
    };
    if gate.insecure {
        tracing::warn!("--insecure: any borglet registration is admitted without proof");
    } else if gate.join_token.is_none() {
        tracing::warn!(
            "no join token (--join-token-file, BORG_JOIN_TOKEN): new machines cannot join"
        );
    }
    let (feed, feed_task) = feed::Feed::start(store.clone(), shutdown.clone());
    let status = Arc::new(leader::Status::default());
    let db = Arc::new(dbhealth::DbHealth::default());
    let db_watch = tokio::spawn(dbhealth::watch(store.clone(), db.clone(), shutdown.clone()));
    let state = api::AppState {
        store: store.clone(),
        http: http.clone(),
        machines_changed: machines_changed.clone(),
        machines: machines.clone(),
        metrics: metrics::install(),
        feed,
        leader: status.clone(),
        db: db.clone(),
        insecure: config.auth.insecure,
        agents: Arc::new(gate),
        limits: Arc::new(api::Limits::new(&config.limits)),
    };
    let listen = listener.local_addr()?;
    // Unique per process: a restarted replica is a new holder and takes the
    // lease only once it expired.
    let holder = format!("{listen}/{}", uuid::Uuid::new_v4());
    let leading = leader::Leading {
        store,
        http,
        poll_interval: config.poll_interval,
        config: config.leader.clone(),
        machines_changed,
        machines,
        status,
        db,
    };
    let leader = tokio::spawn(leader::run(leading, holder, shutdown.clone()));
    tracing::info!(%listen, tls = serve_tls.is_some(), "borgmaster serving");
    // The peer's address keys the submit rate of callers without a token.
    let app = api::router(state).into_make_service_with_connect_info::<SocketAddr>();
    match serve_tls {
        Some(config) => {
            use axum::serve::ListenerExt;
            // tap_io: axum gives `ConnectInfo<SocketAddr>` to a tapped listener.
            let listener = borg_shared::tls::TlsListener::new(listener, config)?.tap_io(|_| {});
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .await?
        }
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .await?
        }
    }
    shutdown.cancel();
    leader.await?;
    db_watch.await?;
    feed_task.await?;
    Ok(())
}

/// Parse `args` (argv, including the program name) and run until SIGINT/SIGTERM.
/// The `borgmaster` binary and `jobctl dev` both enter here.
pub fn run_cli<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut config = match Config::try_parse_from(args) {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            e.print()?;
            return Ok(());
        }
        Err(e) => anyhow::bail!("{}", e.render().to_string().trim_end()),
    };
    // The secret itself only ever comes from the environment, never argv.
    config.auth.bootstrap_token = std::env::var("BORG_BOOTSTRAP_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty());
    borg_shared::logging::init(config.log.log_format);
    config.resolve_secrets()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        run(listener, config, shutdown).await
    })
}

async fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
    token.cancel();
}
