//! Fleet mode (`borglet --fleet N`, for tests and benchmarks): one process
//! serves N simulated borglets. Each is a real borglet's API (`crate::api`:
//! the sync handler with its credential and epoch checks, the attempt table,
//! registration with the join token, nudges) under its own path
//! (`/b/<name>/...`, advertised as its address), with simulated processes
//! behind the [`Tasks`](crate::tasks::Tasks) seam instead of the supervisor
//! (`sim.rs`). `GET /fleet/stats` tells how often the master syncs them.

mod sim;
mod stats;

pub use sim::{Behaviour, SimTasks};
pub use stats::{quantile_ms, FleetStats, Stats};

use crate::api::{self, AppState};
use crate::credential::Credentials;
use crate::metrics::Metrics;
use crate::nudge::{NudgeSender, Nudger};
use crate::register::{Contact, Registrar};
use crate::state::AttemptTable;
use crate::Config;
use anyhow::Context;
use axum::routing::get;
use axum::Router;
use borg_shared::wire::{Capacity, IsolationMode, RegisterMachine};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serve `borglets` simulated borglets named `<--name>-<i>` on `listener`
/// until `shutdown`. From `config` it takes the master, join token, data dir
/// (one credential directory per borglet), capacity (`--cpu`, `--memory`,
/// `--disk`: each borglet's), labels, port range, re-registration, the
/// advertised base URL and the simulated tasks' behaviour.
pub async fn run(
    listener: TcpListener,
    config: Config,
    borglets: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let behaviour = Behaviour {
        runs_for: config.fleet_task_runs_for.0,
        exit_code: config.fleet_task_exit_code,
    };
    let bound = listener.local_addr().context("reading the bound address")?;
    let base = config.advertise_url(bound);
    let base = base.trim_end_matches('/');
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let capacity = Capacity {
        cpu: config.cpu.context("--fleet needs --cpu (each borglet's)")?,
        memory: config
            .memory
            .context("--fleet needs --memory (each borglet's)")?,
        disk: config.disk.unwrap_or_default(),
    };
    let join_token = config.join_token()?;
    let stats = Arc::new(Stats::new(borglets));
    let stop_background = shutdown.child_token();
    let mut background = Vec::new();
    let mut app = Router::new()
        .route("/fleet/stats", get(stats::serve))
        .with_state(Arc::clone(&stats));
    // One client each for registrations and nudges, shared by the fleet's borglets.
    let masters =
        Arc::new(borg_shared::masters::Masters::parse(&config.master).context("--master")?);
    let register_client = config.master_client(crate::register::REQUEST_TIMEOUT)?;
    let nudge_client = config.master_client(crate::nudge::REQUEST_TIMEOUT)?;
    for i in 0..borglets {
        let name = format!("{}-{i}", config.name);
        let data_dir = config.data_dir.join(&name);
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let data_dir = std::fs::canonicalize(&data_dir)?;
        let credentials = Arc::new(Credentials::load(&data_dir, join_token.clone())?);
        let metrics = Arc::new(Metrics::new(&name));
        let table = Arc::new(AttemptTable::new(metrics.running_gauge()));
        let nudger = Arc::new(Nudger::default());
        let tasks = Arc::new(SimTasks::new(
            Arc::clone(&table),
            Arc::clone(&nudger),
            behaviour,
            stop_background.clone(),
        ));
        let contact = Arc::new(Contact::default());
        let registrar = Registrar::new(
            register_client.clone(),
            Arc::clone(&masters),
            RegisterMachine {
                name: name.clone(),
                address: format!("{base}/b/{name}"),
                capacity,
                labels: config.labels_map(),
                isolation: Some(IsolationMode::None),
                version: Some(env!("CARGO_PKG_VERSION").to_string()),
                ports: config.port_range,
            },
            Arc::clone(&contact),
            config.reregister_after,
            Arc::clone(&credentials),
        )?;
        // Staggered, as machines of a real fleet do not all join in the same millisecond.
        let (stop, delay) = (stop_background.clone(), REGISTER_STAGGER * i as u32);
        background.push(tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(delay) => registrar.run(stop).await,
            }
        }));
        let sender = NudgeSender::new(
            nudge_client.clone(),
            Arc::clone(&masters),
            &name,
            Arc::clone(&nudger),
            Arc::clone(&metrics),
            Arc::clone(&credentials),
        );
        background.push(tokio::spawn(sender.run(stop_background.clone())));
        // Syncs are recorded as a real borglet's are; simulated tasks are never fenced.
        let fence = Arc::new(crate::fence::Fence::load(&data_dir));
        let state = AppState {
            fence,
            name: name.as_str().into(),
            data_dir: Arc::new(data_dir),
            supervisor: tasks,
            sync_gate: Default::default(),
            contact,
            metrics,
            nudger,
            credentials,
            shutdown: shutdown.clone(),
        };
        let counted = api::router(state).layer(axum::middleware::from_fn_with_state(
            (Arc::clone(&stats), i),
            stats::count_syncs,
        ));
        app = app.nest(&format!("/b/{name}"), counted);
    }
    tracing::info!(listen = %bound, borglets = borglets, base = %base,
        master = %config.master, runs_for = ?behaviour.runs_for,
        cpu = %capacity.cpu, memory = %capacity.memory, "fleet serving");
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await;
    stop_background.cancel();
    for task in background {
        let _ = task.await;
    }
    served.context("serving the fleet")
}

/// Between the registrations of two simulated borglets.
const REGISTER_STAGGER: Duration = Duration::from_millis(5);

/// `--fleet-task-runs-for`: a duration, or `forever`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunsFor(pub Option<Duration>);

impl std::str::FromStr for RunsFor {
    type Err = humantime::DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "forever" {
            return Ok(RunsFor(None));
        }
        humantime::parse_duration(s).map(|d| RunsFor(Some(d)))
    }
}
