//! The borglet: the agent on each machine. It serves the API the master polls
//! (`POST /v1/sync`), starts and stops task processes to match the master's desired
//! set, reports what runs, and keeps tasks running while no master talks to it.

pub mod api;
pub mod config;
pub mod credential;
pub mod fence;
pub mod fleet;
pub mod health;
pub mod isolation;
pub mod janitor;
pub mod keeper;
mod kernel_file;
pub mod logs;
pub mod metrics;
pub mod nudge;
mod os_words;
pub mod records;
pub mod register;
pub mod restart;
pub mod run_as;
pub mod runtime_dir;
pub mod shim;
mod shim_logs;
mod shim_spawn;
pub mod state;
pub mod supervisor;
pub mod sync_wire;
pub mod tasks;
#[cfg(test)]
mod test_spec;

pub use config::{Config, Label, OnExit};

use anyhow::Context;
use borg_shared::wire::RegisterMachine;
use clap::Parser;
use std::ffi::OsString;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Parse `args` (argv, including the program name) and run until SIGINT/SIGTERM.
/// The `borglet` binary and `jobctl dev` both enter here.
pub fn run_cli<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let config = match Config::try_parse_from(args) {
        Ok(config) => config,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            e.print().context("printing help")?;
            return Ok(());
        }
        Err(e) => anyhow::bail!("{}", e.render().to_string().trim_end()),
    };
    borg_shared::logging::init(config.log.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.async_threads())
        .enable_all()
        .thread_name("borglet")
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(async move {
        let listen = config.listen_addr()?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            match wait_for_signal().await {
                Ok(sig) => tracing::info!(signal = sig, "shutting down"),
                Err(e) => tracing::error!(error = %e, "cannot listen for signals; shutting down"),
            }
            on_signal.cancel();
        });
        match config.fleet {
            Some(n) => fleet::run(listener, config, n, shutdown).await,
            None => run(listener, config, shutdown).await,
        }
    })
}

async fn wait_for_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT"),
        _ = term.recv() => Ok("SIGTERM"),
    }
}

/// Serve on `listener` until `shutdown` is cancelled, registering with the master in
/// the background. On shutdown, tasks keep running or are stopped per `config.on_exit`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let bound = listener.local_addr().context("reading the bound address")?;
    // Bad certificate files stop the start before anything else happens.
    let serve_tls = config.server_tls()?;
    std::fs::create_dir_all(supervisor::sandboxes_dir(&config.data_dir))
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    // Absolute, because it becomes the tasks' working directory and HOME.
    let data_dir = std::fs::canonicalize(&config.data_dir)
        .with_context(|| format!("resolving data dir {}", config.data_dir.display()))?;
    let runtime_dir = config
        .runtime_dir
        .clone()
        .unwrap_or_else(|| data_dir.join("run"));
    std::fs::create_dir_all(supervisor::records_dir(&runtime_dir))
        .with_context(|| format!("creating runtime dir {}", runtime_dir.display()))?;
    let runtime_dir = std::fs::canonicalize(&runtime_dir)
        .with_context(|| format!("resolving runtime dir {}", runtime_dir.display()))?;
    runtime_dir::claim(&data_dir, &runtime_dir)?;
    let capacity = config.capacity(&data_dir)?;
    let run_as = run_as::resolve(config.run_as.as_deref())?;
    let keeper_exe = match &config.shim_exe {
        Some(exe) => exe.clone(),
        None => {
            supervisor::default_keeper_exe().context("finding this executable to run the keeper")?
        }
    };
    let advertise = config.advertise_url(bound);

    let cgroup_parent = isolation::parent_path(&config.cgroup_parent, &config.name);
    let isolator = isolation::detect(config.isolation, &isolation::read_mounts(), &cgroup_parent)
        .context("setting up task isolation (--isolation)")?;
    let isolation_mode = isolator.mode();

    let credentials = Arc::new(credential::Credentials::load(
        &data_dir,
        config.join_token()?,
    )?);
    if credentials.credential().is_none() && credentials.join_token().is_none() {
        tracing::warn!("no machine credential yet and no join token (--join-token-file, BORG_JOIN_TOKEN): only an --insecure master will admit this machine");
    }
    let metrics = Arc::new(metrics::Metrics::new(&config.name));
    let table = Arc::new(state::AttemptTable::new(metrics.running_gauge()));
    let nudger = Arc::new(nudge::Nudger::default());
    let supervisor = Arc::new(supervisor::Supervisor::new(
        table,
        Arc::clone(&metrics),
        Arc::clone(&nudger),
        config.name.clone(),
        supervisor::Dirs {
            data: &data_dir,
            runtime: &runtime_dir,
        },
        supervisor::HowToRun {
            keeper_exe,
            log_max_bytes: config.log_max_bytes.0,
            run_as,
            isolator: Arc::clone(&isolator),
            pids_limit: config.pids_limit,
            prober: Arc::new(health::RealProber::new().context("building the health prober")?),
        },
    ));
    // Before serving: a sync must find every attempt a previous borglet left.
    let adopted = supervisor
        .adopt()
        .await
        .context("reading the attempts a previous borglet left")?;
    tracing::info!(
        running = adopted.running,
        exited = adopted.exited,
        acked = adopted.acked,
        never_started = adopted.never_started,
        "attempts re-adopted"
    );
    let contact = Arc::new(register::Contact::default());
    let masters =
        Arc::new(borg_shared::masters::Masters::parse(&config.master).context("--master")?);
    let registrar = register::Registrar::new(
        config.master_client(register::REQUEST_TIMEOUT)?,
        Arc::clone(&masters),
        RegisterMachine {
            name: config.name.clone(),
            address: advertise.clone(),
            capacity,
            labels: config.labels_map(),
            isolation: Some(isolation_mode),
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
            ports: config.port_range,
        },
        Arc::clone(&contact),
        config.reregister_after,
        Arc::clone(&credentials),
    )?;
    let stop_background = shutdown.child_token();
    let registering = tokio::spawn(registrar.run(stop_background.clone()));
    let janitor = janitor::Janitor {
        sandboxes: supervisor::sandboxes_dir(&data_dir),
        records: supervisor::records_dir(&runtime_dir),
        retention: config.sandbox_retention,
        min_free: config.min_free_disk.0,
        acked: Arc::clone(&supervisor.acked),
    };
    let sweeping = tokio::spawn(janitor.run(stop_background.clone()));
    // Without nudges the poll still brings every exit, only later: no reason to refuse to run.
    let nudging = nudge::NudgeSender::new(
        config.master_client(nudge::REQUEST_TIMEOUT)?,
        masters,
        &config.name,
        Arc::clone(&nudger),
        Arc::clone(&metrics),
        Arc::clone(&credentials),
    );
    let nudging = tokio::spawn(nudging.run(stop_background.clone()));

    let sampling = (isolation_mode != borg_shared::wire::IsolationMode::None).then(|| {
        tokio::spawn(isolation::sample_forever(
            Arc::clone(supervisor.table()),
            config.usage_interval,
            stop_background.clone(),
        ))
    });

    let fence = Arc::new(fence::Fence::load(&data_dir));
    let fencing = tokio::spawn(fence::run(
        Arc::clone(&fence),
        Arc::clone(&supervisor),
        Arc::clone(&metrics),
        stop_background.clone(),
    ));
    let state = api::AppState {
        name: config.name.as_str().into(),
        data_dir: Arc::new(data_dir.clone()),
        supervisor: Arc::clone(&supervisor) as Arc<dyn tasks::Tasks>,
        sync_gate: Default::default(),
        contact,
        metrics,
        nudger,
        credentials,
        fence,
        shutdown: shutdown.clone(),
    };
    tracing::info!(listen = %bound, name = %config.name, advertise = %advertise,
        master = %config.master, data_dir = %data_dir.display(),
        runtime_dir = %runtime_dir.display(),
        cpu = %capacity.cpu, memory = %capacity.memory, disk = %capacity.disk,
        on_exit = ?config.on_exit, run_as = ?run_as, isolation = isolation_mode.as_str(),
        cgroup_parent = %cgroup_parent.display(), tls = serve_tls.is_some(),
        mutual_tls = serve_tls.is_some() && config.ca_cert.is_some(), "borglet serving");
    let served = match serve_tls {
        Some(tls) => match borg_shared::tls::TlsListener::new(listener, tls) {
            Ok(listener) => {
                axum::serve(listener, api::router(state))
                    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                    .await
            }
            Err(e) => Err(e),
        },
        None => {
            axum::serve(listener, api::router(state))
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .await
        }
    };

    stop_background.cancel();
    if let Err(e) = sweeping.await {
        tracing::error!(error = %e, "sandbox janitor failed");
    }
    if let Err(e) = fencing.await {
        tracing::error!(error = %e, "fencing task failed");
    }
    if let Err(e) = registering.await {
        tracing::error!(error = %e, "registration task failed");
    }
    if let Some(sampling) = sampling {
        if let Err(e) = sampling.await {
            tracing::error!(error = %e, "usage sampling task failed");
        }
    }
    if let Err(e) = nudging.await {
        tracing::error!(error = %e, "nudge task failed");
    }
    match config.on_exit {
        OnExit::Stop => {
            tracing::info!(
                tasks = supervisor.table().len(),
                "stopping every task before exit"
            );
            supervisor.stop_all().await;
        }
        OnExit::Keep => {
            tracing::info!(
                tasks = supervisor.table().len(),
                "leaving tasks running for the next borglet to re-adopt"
            );
            supervisor.drop_spares().await;
        }
    }
    supervisor.disconnect_keeper();
    served.context("serving the borglet API")
}
