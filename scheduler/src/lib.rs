//! borgscheduler: reads pending tasks and machine capacity from Postgres,
//! places them with a pure core (`place`), and commits each batch in one
//! transaction that re-checks capacity, so any number of schedulers can run
//! side by side (Omega's shared-state design). It never talks to the master.

mod cache;
mod commit;
mod config;
mod dry_run;
mod metrics;
mod place;
pub mod replay;
mod run;
mod score;
mod slice;
mod snapshot;
pub mod synth;

pub use borg_store::{
    Committed, Placed, CHANNEL_PENDING as PENDING_CHANNEL, CHANNEL_PLACED as PLACED_CHANNEL,
};
pub use config::Config;
pub use dry_run::{dry_run, DryRun};
pub use place::{place, Decision};
pub use run::{run, PassStats, STAMP};
pub use score::Scoring;
pub use slice::Slice;
pub use snapshot::{
    machines_full_read_sql, pending_page_sql, read_machines, read_used_ports, read_victims,
    Machine, PendingTask, Snapshot, HASH_THE_USAGE, JOB_COUNTS, WALK_IN_QUEUE_ORDER,
};

use anyhow::Context;
use clap::error::ErrorKind;
use clap::Parser;
use std::ffi::OsString;
use tokio_util::sync::CancellationToken;

/// Parse `args` (argv, including the program name) and run until SIGINT/SIGTERM.
/// The `borgscheduler` binary and `jobctl dev` both enter here. It builds its own
/// runtime, so it must not be called from inside one.
pub fn run_cli<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut config = match Config::try_parse_from(args) {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            // Nothing useful to do if stdout is gone (`--help | head`).
            let _ = e.print();
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };

    // Someone else (jobctl dev) may have installed a subscriber already; keep theirs.
    borg_shared::logging::init(config.log.log_format);
    config.resolve_secrets()?;

    anyhow::ensure!(
        tokio::runtime::Handle::try_current().is_err(),
        "run_cli builds its own runtime; call borgscheduler::run from async code instead"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("borgscheduler")
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            match wait_for_signal().await {
                Ok(()) => tracing::info!("signal received, shutting down"),
                Err(e) => tracing::error!("cannot wait for signals, shutting down: {e:#}"),
            }
            on_signal.cancel();
        });
        run(config, shutdown).await
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT"),
        _ = term.recv() => Ok(()),
    }
}
