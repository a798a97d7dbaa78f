//! Polls every registered borglet with the declarative set of attempts it
//! should run (`POST /v1/sync`) and applies what it reports.
//!
//! One loop per machine, so syncs to one machine never overlap. A loop wakes
//! every poll interval, and at once when the scheduler places work there
//! (NOTIFY on `borg_placed`); NOTIFY is not durable, so the interval is the
//! safety net. A borglet whose task exited asks for a sync at once with a nudge
//! (`POST /v1/machines/{name}/nudge`), authenticated by its machine credential;
//! the API wakes the loop through the shared [`Machines`]. Every sync carries the
//! machine's sync key (`Authorization: Bearer`, see `borg_shared::agent`).
//!
//! An unchanged sync costs the store nothing: the desired set is kept in memory
//! and read again only when something may have changed it, and a report equal
//! to the last one whose application changed nothing is not applied again
//! (`desired.rs`). Syncs run concurrently, at most `MAX_SYNCS_IN_FLIGHT` at once,
//! each loop on its own jittered timer, so a slow or dead borglet holds up only
//! its own loop.

mod desired;
mod reads;

use crate::store::{Store, CHANNEL_PLACED};
use anyhow::Context;
use borg_shared::wire::{SyncRequest, SyncResponse};
use borg_shared::{AttemptId, MachineId, MachineState};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgListener;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

const SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// Syncs in flight at once, over all machines: a thousand borglets answering
/// together must not take every store connection. A slow or dead borglet holds
/// one permit, never another machine's loop.
const MAX_SYNCS_IN_FLIGHT: usize = 128;
/// Of those, at most this many use the store at once (marking attempts
/// starting, applying a report), so a thousand first syncs after a new leader
/// starts leave pool connections for the API and its health check. Desired
/// sets are read apart, many machines per query (`reads.rs`), on one
/// connection. An unchanged sync needs none.
const STORE_SYNCS_IN_FLIGHT: usize = 4;

#[derive(Clone)]
pub struct PollerConfig {
    pub interval: Duration,
    /// Read each desired set from the store and apply the report at least
    /// this often, even with nothing known to have changed (0: every sync).
    pub full_sync_every: Duration,
    /// The leadership epoch this poller runs under, sent with every sync.
    pub epoch: i64,
}

/// What a machine loop knows of its machine; refreshed on every rescan.
pub(crate) struct Slot {
    pub(crate) name: String,
    address: Mutex<String>,
    /// `notify_one` keeps one permit: wakes that arrive during a sync make one more.
    wake: Notify,
    /// `agent::sync_key` of the machine's credential, as the store has it (None for
    /// a machine registered before credentials: its borglet refuses our syncs
    /// until it registers again). Never logged.
    credential_hash: Mutex<Option<String>>,
    /// When it last answered: the leader's memory of liveness (see `liveness`).
    pub(crate) heard: Mutex<Heard>,
    /// The desired set and last quiet report, kept between syncs.
    desired: desired::Desired,
}

/// A machine's liveness as this leader knows it.
pub(crate) struct Heard {
    /// Where the liveness clock starts: the last answered sync, or when this
    /// leader began polling it, or when the store kept it from asking.
    pub(crate) last_ok: Instant,
    /// The last answered sync.
    last_answer: Option<Instant>,
    /// The loop is waiting on the store (a desired set, a report, a state
    /// change; stuck there while the store is unreachable or slow to reconnect):
    /// the machine's silence meanwhile is not the machine's.
    pub(crate) store_waits: u32,
    /// The same, by the wall clock, for `machines.last_heard`.
    pub(crate) at: Option<DateTime<Utc>>,
    /// `at` not yet written to the store.
    pub(crate) unflushed: bool,
    /// The store has the machine `down`.
    pub(crate) down: bool,
}

impl Slot {
    fn credential_hash(&self) -> Option<String> {
        self.credential_hash
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn heard(&self) -> std::sync::MutexGuard<'_, Heard> {
        self.heard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Something changed the machine's desired set: read it again next sync.
    pub(crate) fn invalidate_desired(&self) {
        self.desired.invalidate();
    }
}

/// The running machine loops, shared between the poller and the API.
#[derive(Default)]
pub struct Machines {
    inner: Mutex<Loops>,
}

#[derive(Default)]
struct Loops {
    by_id: HashMap<MachineId, Arc<Slot>>,
    by_name: HashMap<String, MachineId>,
}

/// How a nudge was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nudge {
    /// The machine's loop will sync it now (or right after its sync in flight).
    Accepted,
    /// No loop polls a machine of that name.
    UnknownMachine,
    /// The credential is not that machine's.
    Unauthorized,
}

impl Nudge {
    pub fn as_str(self) -> &'static str {
        match self {
            Nudge::Accepted => "accepted",
            Nudge::UnknownMachine => "unknown_machine",
            Nudge::Unauthorized => "unauthorized",
        }
    }
}

impl Machines {
    fn lock(&self) -> std::sync::MutexGuard<'_, Loops> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: MachineId) -> Option<Arc<Slot>> {
        self.lock().by_id.get(&id).cloned()
    }

    /// Every polled machine.
    pub(crate) fn slots(&self) -> Vec<(MachineId, Arc<Slot>)> {
        self.lock()
            .by_id
            .iter()
            .map(|(id, s)| (*id, s.clone()))
            .collect()
    }

    fn clear(&self) {
        let mut loops = self.lock();
        loops.by_id.clear();
        loops.by_name.clear();
    }

    fn wake_all(&self) {
        for slot in self.lock().by_id.values() {
            slot.desired.invalidate();
            slot.wake.notify_one();
        }
    }

    /// Wake the loop of machine `name` if `credential` is its credential.
    pub fn nudge(&self, name: &str, credential: &str) -> Nudge {
        let slot = {
            let loops = self.lock();
            loops
                .by_name
                .get(name)
                .and_then(|id| loops.by_id.get(id))
                .cloned()
        };
        let Some(slot) = slot else {
            return Nudge::UnknownMachine;
        };
        let key = borg_shared::agent::sync_key(credential);
        let own = slot
            .credential_hash()
            .is_some_and(|h| borg_shared::agent::same_secret(&h, &key));
        if !own {
            return Nudge::Unauthorized;
        }
        slot.wake.notify_one();
        Nudge::Accepted
    }
}

pub async fn run(
    store: Store,
    http: reqwest::Client,
    config: PollerConfig,
    machines_changed: Arc<Notify>,
    machines: Arc<Machines>,
    shutdown: CancellationToken,
) {
    // A new term polls every machine afresh (a former term's loops have ended).
    machines.clear();
    let tracker = TaskTracker::new();
    let in_flight = Arc::new(Semaphore::new(MAX_SYNCS_IN_FLIGHT));
    let store_in_flight = Arc::new(Semaphore::new(STORE_SYNCS_IN_FLIGHT));
    tracker.spawn(listen(store.clone(), machines.clone(), shutdown.clone()));
    let reader = reads::Reader::start(store.clone(), shutdown.clone());
    loop {
        match store.poll_targets().await {
            Ok(targets) => {
                for t in targets {
                    let mut loops = machines.lock();
                    if let Some(slot) = loops.by_id.get(&t.id) {
                        *slot.address.lock().unwrap_or_else(|p| p.into_inner()) = t.address;
                        *slot
                            .credential_hash
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()) = t.credential_hash;
                        continue;
                    }
                    let slot = Arc::new(Slot {
                        name: t.name.clone(),
                        address: Mutex::new(t.address),
                        wake: Notify::new(),
                        credential_hash: Mutex::new(t.credential_hash),
                        // Every machine gets a full `down_after` from when this leader starts.
                        heard: Mutex::new(Heard {
                            last_ok: Instant::now(),
                            last_answer: None,
                            store_waits: 0,
                            at: None,
                            unflushed: false,
                            down: t.state == MachineState::Down,
                        }),
                        desired: Default::default(),
                    });
                    loops.by_id.insert(t.id, slot.clone());
                    loops.by_name.insert(t.name.clone(), t.id);
                    drop(loops);
                    tracing::info!(machine = %t.name, "polling machine");
                    let path = StorePath {
                        store: store.clone(),
                        reader: reader.clone(),
                        slots: store_in_flight.clone(),
                    };
                    tracker.spawn(machine_loop(
                        path,
                        http.clone(),
                        config.clone(),
                        t.id,
                        slot,
                        in_flight.clone(),
                        shutdown.clone(),
                    ));
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing machines to poll"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = machines_changed.notified() => {}
            _ = tokio::time::sleep(config.interval) => {}
        }
    }
    tracker.close();
    tracker.wait().await;
    machines.clear();
}

/// Route `borg_placed` notifications to the machine loops.
async fn listen(store: Store, machines: Arc<Machines>, shutdown: CancellationToken) {
    loop {
        let mut listener = match PgListener::connect_with(store.pool()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "connecting the notification listener");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if let Err(e) = listener.listen(CHANNEL_PLACED).await {
            tracing::warn!(error = %e, "LISTEN {CHANNEL_PLACED}");
            continue;
        }
        loop {
            let note = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = listener.recv() => n,
            };
            match note {
                Ok(n) => {
                    let slot = n
                        .payload()
                        .parse::<MachineId>()
                        .ok()
                        .and_then(|id| machines.get(id));
                    if let Some(slot) = slot {
                        slot.desired.invalidate();
                        slot.wake.notify_one();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "notification listener lost; reconnecting");
                    break;
                }
            }
        }
        // Notifications may have been missed while reconnecting: sync everyone.
        machines.wake_all();
    }
}

async fn machine_loop(
    path: StorePath,
    http: reqwest::Client,
    config: PollerConfig,
    id: MachineId,
    slot: Arc<Slot>,
    in_flight: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let mut acks: Vec<AttemptId> = Vec::new();
    let mut failing_since: Option<Instant> = None;
    let mut last_warn: Option<Instant> = None;
    loop {
        let Ok(permit) = in_flight.acquire().await else {
            return;
        };
        let started = Instant::now();
        let result = sync_once(&path, &http, &config, id, &slot, &mut acks)
            .instrument(tracing::info_span!("sync", machine = %slot.name))
            .await;
        drop(permit);
        metrics::histogram!("borg_sync_duration_seconds").record(started.elapsed().as_secs_f64());
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("borg_syncs_total", "result" => outcome).increment(1);
        if slot.heard().last_answer.is_some_and(|t| t >= started) {
            back_up(&path.store, &config, id, &slot).await;
        }
        match result {
            Ok(()) => {
                if let Some(since) = failing_since.take() {
                    tracing::info!(machine = %slot.name, after = ?since.elapsed(), "borglet answers again");
                }
            }
            Err(e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                // One warning per 10 s per machine, not one per poll.
                if last_warn.is_none_or(|w| w.elapsed() > Duration::from_secs(10)) {
                    // A TLS failure in words an operator can act on, not rustls's.
                    let error = match e.chain().find_map(borg_shared::tls::failure) {
                        Some(tls) => format!("the borglet's TLS: {tls}"),
                        None => format!("{e:#}"),
                    };
                    tracing::warn!(machine = %slot.name, failing_for = ?since.elapsed(), %error, "sync failed");
                    last_warn = Some(Instant::now());
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = slot.wake.notified() => {}
            // ±10%, so loops started together (a new leader's first scan) drift apart.
            _ = tokio::time::sleep(config.interval.mul_f64(0.9 + 0.2 * fastrand::f64())) => {}
        }
    }
}

impl Slot {
    /// The borglet answered a sync: the leader's liveness clock restarts.
    fn note_answer(&self) {
        let mut heard = self.heard();
        let now = Instant::now();
        heard.last_ok = now;
        heard.last_answer = Some(now);
        heard.at = Some(Utc::now());
        heard.unflushed = true;
    }

    /// The sync could not be tried (the store failed before the borglet was
    /// asked): silence we caused is not the machine's, so it is not counted.
    fn excuse(&self) {
        self.heard().last_ok = Instant::now();
    }

    /// The loop waits on the store until the guard drops: the liveness clock
    /// stops meanwhile, so a store outage or a pool still reconnecting after
    /// one never counts as the machine's silence.
    fn waiting_on_store(&self) -> StoreWait<'_> {
        self.heard().store_waits += 1;
        StoreWait {
            slot: self,
            since: Instant::now(),
        }
    }
}

/// See [`Slot::waiting_on_store`].
struct StoreWait<'a> {
    slot: &'a Slot,
    since: Instant,
}

impl Drop for StoreWait<'_> {
    fn drop(&mut self) {
        let mut heard = self.slot.heard();
        heard.store_waits -= 1;
        heard.last_ok = resume_clock(heard.last_ok, self.since, Instant::now());
    }
}

/// Where the liveness clock starts once a store wait that began at `since`
/// ends at `now`: it ran until the wait began (or from an answer during it)
/// and stood still for the rest.
fn resume_clock(last_ok: Instant, since: Instant, now: Instant) -> Instant {
    let stopped = now.saturating_duration_since(since.max(last_ok));
    (last_ok + stopped).min(now)
}

/// The machine answered: bring it back `up` if the store has it `down`.
async fn back_up(store: &Store, config: &PollerConfig, id: MachineId, slot: &Slot) {
    if !slot.heard().down {
        return;
    }
    let _wait = slot.waiting_on_store();
    match store
        .mark_machine_up(id, config.epoch, "answers syncs again")
        .await
    {
        Ok(_) => {
            slot.heard().down = false;
            slot.desired.invalidate();
            tracing::info!(machine = %slot.name, "machine up again");
        }
        Err(e) => tracing::warn!(machine = %slot.name, error = %e, "marking the machine up"),
    }
}

/// How a sync reaches the store: desired sets through the batched reader,
/// other writes within the store slots.
struct StorePath {
    store: Store,
    reader: reads::Reader,
    slots: Arc<Semaphore>,
}

async fn sync_once(
    path: &StorePath,
    http: &reqwest::Client,
    config: &PollerConfig,
    id: MachineId,
    slot: &Slot,
    acks: &mut Vec<AttemptId>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let wait = slot.waiting_on_store();
    let desired = slot
        .desired
        .get(&path.reader, id, config.full_sync_every)
        .await;
    drop(wait);
    let (attempts, new, source) = match desired {
        Ok(d) => d,
        Err(e) => {
            slot.excuse();
            return Err(e);
        }
    };
    let sent: Vec<AttemptId> = attempts.iter().map(|a| a.id).collect();
    let address = slot
        .address
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let req = SyncRequest {
        epoch: config.epoch,
        machine: slot.name.clone(),
        attempts,
        ack: std::mem::take(acks),
        nudge_token: None,
    };
    let key = slot.credential_hash();
    let url = format!("{}/v1/sync", address.trim_end_matches('/'));
    let post = async {
        let mut post = http.post(&url).timeout(SYNC_TIMEOUT).json(&req);
        if let Some(key) = &key {
            post = post.bearer_auth(key);
        }
        let resp = post.send().await.with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            anyhow::bail!("{url} answered {status}: {body}");
        }
        let body = resp
            .bytes()
            .await
            .with_context(|| format!("reading the sync answer of {url}"))?;
        // Alive, whatever the store makes of the report.
        slot.note_answer();
        Ok(body)
    };
    // `assigned → starting` commits while the request travels and the borglet
    // forks: the two are independent, and the report is applied only after both.
    let mark = async {
        if new.is_empty() {
            return Ok(());
        }
        let _wait = slot.waiting_on_store();
        let _permit = path.slots.acquire().await;
        path.store.mark_starting(id, config.epoch, &new).await
    };
    let (marked, result) = tokio::join!(mark, post);
    if let Err(e) = marked {
        *acks = req.ack;
        return Err(e.into());
    }
    slot.desired.started(&new);
    let body = match result {
        Ok(r) => r,
        Err(e) => {
            // Not acknowledged: send them again next time.
            *acks = req.ack;
            return Err(e);
        }
    };
    metrics::counter!("borg_sync_desired_total", "source" => source.as_str()).increment(1);
    if new.is_empty() && req.ack.is_empty() && slot.desired.is_quiet(&body) {
        // Nothing was sent that could change it, and it says what it said last
        // time, when applying it changed nothing: it would change nothing now.
        metrics::counter!("borg_sync_reports_total", "applied" => "no").increment(1);
        return Ok(());
    }
    let resp = match serde_json::from_slice::<SyncResponse>(&body) {
        Ok(r) => r,
        Err(e) => {
            *acks = req.ack;
            return Err(anyhow::Error::new(e).context(format!("reading the sync answer of {url}")));
        }
    };
    slot.desired.applying();
    let wait = slot.waiting_on_store();
    let permit = path.slots.acquire().await?;
    let out = path
        .store
        .apply_report(id, &slot.name, config.epoch, &sent, &resp.attempts)
        .await;
    drop(permit);
    drop(wait);
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            slot.desired.invalidate();
            return Err(anyhow::Error::new(e).context("applying the borglet's report"));
        }
    };
    metrics::counter!("borg_sync_reports_total", "applied" => "yes").increment(1);
    let quiet = out.changed == 0 && out.requeued == 0 && out.restarted == 0 && out.ack.is_empty();
    slot.desired.applied(body, quiet);
    *acks = out.ack;
    tracing::debug!(
        machine = %slot.name, wanted = sent.len(), new = new.len(), reported = resp.attempts.len(),
        changed = out.changed, requeued = out.requeued, ms = started.elapsed().as_millis() as u64,
        source = source.as_str(), "synced"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::resume_clock;
    use std::time::{Duration, Instant};

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_store_wait_stops_the_liveness_clock_for_its_length() {
        let now = Instant::now() + 100 * S;
        // Last answer 5 s ago, a wait of 3 s: silent for 2 s, not 5.
        assert_eq!(resume_clock(now - 5 * S, now - 3 * S, now), now - 2 * S);
    }

    #[test]
    fn an_answer_during_a_store_wait_restarts_the_clock_at_the_waits_end() {
        let now = Instant::now() + 100 * S;
        assert_eq!(resume_clock(now - S, now - 3 * S, now), now);
    }

    #[test]
    fn a_wait_that_took_no_time_excuses_nothing() {
        let now = Instant::now() + 100 * S;
        assert_eq!(resume_clock(now - 5 * S, now, now), now - 5 * S);
    }
}
