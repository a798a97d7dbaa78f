//! Nudges: when a task exits (or fails to start) the borglet asks the master to sync
//! it now (`POST {master}/v1/machines/{name}/nudge`) instead of waiting for the next
//! poll. The master still polls and the sync stays the contract: a lost nudge only
//! means the regular poll brings the news a little later.
//!
//! An exit only stores a wake-up ([`Nudger::request`], never blocks); one background
//! sender sends at most one nudge at a time (with the machine credential as
//! `Authorization: Bearer`), and any exits while one is in flight
//! make exactly one more after it. Nudges begin at least [`MIN_GAP`] apart, so
//! a burst of exits against a master that answers at once still costs one
//! nudge (and one sync) per gap, not one per exit; a lone exit is nudged at once.

use crate::credential::Credentials;
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Each nudge gets this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// While nudges keep failing, warn at most this often (the poll covers for them).
const WARN_EVERY: Duration = Duration::from_secs(60);
/// The least time from the start of one nudge to the start of the next.
pub const MIN_GAP: Duration = Duration::from_millis(20);

/// What the supervisor and the sync handler share with the sender.
#[derive(Debug, Default)]
pub struct Nudger {
    /// `notify_one` stores a single permit: many requests during a send make one more.
    wanted: Notify,
}

impl Nudger {
    /// A task exited or failed to start: ask the master for a sync soon.
    pub fn request(&self) {
        self.wanted.notify_one();
    }
}

/// Sends the nudges [`Nudger::request`] asks for, one at a time.
pub struct NudgeSender {
    nudger: Arc<Nudger>,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
    masters: Arc<borg_shared::masters::Masters>,
    /// The machine's name: the nudge's path.
    machine: String,
    credentials: Arc<Credentials>,
}

impl NudgeSender {
    pub fn new(
        client: reqwest::Client,
        masters: Arc<borg_shared::masters::Masters>,
        machine: &str,
        nudger: Arc<Nudger>,
        metrics: Arc<Metrics>,
        credentials: Arc<Credentials>,
    ) -> Self {
        NudgeSender {
            nudger,
            metrics,
            client,
            masters,
            machine: machine.to_string(),
            credentials,
        }
    }

    fn url(&self) -> reqwest::Url {
        self.masters
            .url(&["v1", "machines", &self.machine, "nudge"])
    }

    /// Send a nudge after every request, one at a time, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut last_warn: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.nudger.wanted.notified() => {}
            }
            let Some(token) = self.credentials.credential() else {
                tracing::debug!("task exited before this machine was registered: not nudging");
                continue;
            };
            let began = Instant::now();
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.send(&token) => r,
            };
            self.metrics.nudged(result.is_ok());
            match result {
                Ok(()) => tracing::debug!(url = %self.url(), "nudged the master"),
                Err(e) if last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) => {
                    tracing::warn!(url = %self.url(), error = %format!("{e:#}"),
                        "cannot nudge the master; the next poll will bring the news");
                    last_warn = Some(Instant::now());
                }
                Err(e) => {
                    tracing::debug!(url = %self.url(), error = %format!("{e:#}"), "nudge failed")
                }
            }
            // Exits meanwhile are kept in the one stored wake-up.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(began + MIN_GAP) => {}
            }
        }
    }

    async fn send(&self, token: &str) -> anyhow::Result<()> {
        let post = self.client.post(self.url()).bearer_auth(token).build()?;
        let resp = self.masters.execute(&self.client, post).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        // 401 while the master has not yet seen a credential it just issued, 404
        // before its poll loop for us runs: the poll covers both.
        let body = resp.text().await.unwrap_or_default();
        anyhow::bail!("master answered {status}: {}", body.trim())
    }
}
