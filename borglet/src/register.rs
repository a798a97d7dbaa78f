//! Registration with the master: announce this machine at start, and again whenever
//! no sync has arrived for a while (the master may have lost us or restarted).
//! Runs in the background; serving never waits for it. Each registration
//! presents the machine credential (if it has one) and the join token (if
//! given); a credential the master issues in answer replaces the kept one.

use crate::credential::Credentials;
use anyhow::Context;
use borg_shared::agent::JOIN_TOKEN_HEADER;
use borg_shared::wire::RegisterMachine;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// While the master stays unreachable, warn at most this often.
const WARN_EVERY: Duration = Duration::from_secs(30);
/// Each registration call gets this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// When the master last showed it knows us: a successful registration or a sync.
#[derive(Debug)]
pub struct Contact {
    last: Mutex<Instant>,
    synced: Mutex<bool>,
}

impl Default for Contact {
    fn default() -> Self {
        Contact {
            last: Mutex::new(Instant::now()),
            synced: Mutex::new(false),
        }
    }
}

impl Contact {
    pub fn synced(&self) {
        self.touch();
        *self.synced.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }

    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn last(&self) -> Instant {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a sync arrived since the last call; resets the flag.
    fn take_synced(&self) -> bool {
        std::mem::take(&mut *self.synced.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

pub struct Registrar {
    pub client: reqwest::Client,
    /// The master(s): registration goes to the one that answered last.
    pub masters: std::sync::Arc<borg_shared::masters::Masters>,
    pub body: RegisterMachine,
    pub contact: std::sync::Arc<Contact>,
    /// Register again after this long without a sync.
    pub silence: Duration,
    pub credentials: std::sync::Arc<Credentials>,
}

impl Registrar {
    pub fn new(
        client: reqwest::Client,
        masters: std::sync::Arc<borg_shared::masters::Masters>,
        body: RegisterMachine,
        contact: std::sync::Arc<Contact>,
        silence: Duration,
        credentials: std::sync::Arc<Credentials>,
    ) -> anyhow::Result<Self> {
        Ok(Registrar {
            client,
            masters,
            body,
            contact,
            silence,
            credentials,
        })
    }

    /// Register, then re-register after every silence, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut first = true;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.register_until_ok(first) => {}
            }
            first = false;
            self.contact.touch();
            self.contact.take_synced();
            loop {
                let deadline = self.contact.last() + self.silence;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(deadline) => {}
                }
                if self.contact.last().elapsed() >= self.silence {
                    break;
                }
            }
            // Say it once per silence that follows real syncs, not every few
            // seconds while a master that has us registered simply never polls.
            if self.contact.take_synced() {
                tracing::info!(silence = ?self.silence, "no sync from the master lately: registering again");
            } else {
                tracing::debug!(silence = ?self.silence, "still no sync: registering again");
            }
        }
    }

    async fn register_until_ok(&self, first: bool) {
        let mut backoff = BACKOFF_START;
        let mut failures: u64 = 0;
        let mut last_warn: Option<Instant> = None;
        loop {
            match self.register_once().await {
                Ok(()) => {
                    if first || failures > 0 {
                        tracing::info!(master = %self.masters.current(), name = %self.body.name,
                            address = %self.body.address, failures, "registered with the master");
                    } else {
                        tracing::debug!(master = %self.masters.current(), "registered again");
                    }
                    return;
                }
                Err(e) => {
                    failures += 1;
                    if last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                        tracing::warn!(master = %self.masters.current(), failures, error = %format!("{e:#}"),
                            "cannot register with the master; retrying");
                        last_warn = Some(Instant::now());
                    } else {
                        tracing::debug!(master = %self.masters.current(), failures, error = %format!("{e:#}"), "registration failed");
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn register_once(&self) -> anyhow::Result<()> {
        let mut post = self
            .client
            .post(self.masters.url(&["v1", "machines"]))
            .json(&self.body);
        if let Some(credential) = self.credentials.credential() {
            post = post.bearer_auth(credential);
        }
        if let Some(join) = self.credentials.join_token() {
            post = post.header(JOIN_TOKEN_HEADER, join);
        }
        let resp = self.masters.execute(&self.client, post.build()?).await?;
        let status = resp.status();
        if status.is_success() {
            let answer: Answer = resp
                .json()
                .await
                .context("reading the master's answer to the registration")?;
            if let Some(credential) = answer.credential {
                self.credentials.replace(&credential)?;
                tracing::info!(name = %self.body.name, "the master issued this machine a new credential");
            }
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        anyhow::bail!("master answered {status}: {}", body.trim())
    }
}

/// The part of the master's answer the borglet needs.
#[derive(serde::Deserialize)]
struct Answer {
    #[serde(default)]
    credential: Option<String>,
}
