//! The scheduler loop: wait for `borg_pending` (or the interval), then make a
//! pass over the pending queue. A pass walks the queue in pages of
//! `batch_size` (highest priority first), each page being read, placed and
//! committed on its own against a fresh capacity snapshot, so a head of
//! unplaceable tasks can neither starve the tasks behind it nor make us spin.
//! While a page commits, the next one is read and, as a rule, placed (against
//! the snapshot charged with the committing page's placements; see `ahead`),
//! so Postgres does not wait for this process to place.

mod ahead;

use crate::cache::{MachineCache, Refreshed};
use crate::commit::commit_page;
use crate::place::{place, Decision};
use crate::slice::{Membership, Slice};
use crate::snapshot::{read_job_counts, read_pending, read_used_ports, PendingTask, QueueKey};
use crate::Config;
use ahead::{
    charge, new_spreading_jobs, place_ahead, read_quotas_and_victims, Ahead, Charge, JobCounts,
};
use anyhow::Context;
use borg_shared::{JobId, MachineId, TaskId};
use borg_store::Preemption;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use borg_store::{Store, CHANNEL_PENDING as PENDING_CHANNEL};

/// Rows in a pass's first page of the pending queue (see `pass`).
const FIRST_PAGE: u32 = 128;
/// A page that places nothing may be followed by one this many batches long.
const STUCK_PAGES: u32 = 16;
const LISTEN_TIMEOUT: Duration = Duration::from_secs(2);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A [`Stamp`]'s read. The newest event is the last in the events' key,
/// `(txid, id)`: one descent of that index (`id` alone has none).
pub const STAMP: &str = "
SELECT COALESCE((SELECT id FROM events ORDER BY txid DESC, id DESC LIMIT 1), 0), now(),
       (SELECT min(t.not_before) FROM task_queue q JOIN tasks t ON t.id = q.task_id
        WHERE t.state = 'pending' AND t.not_before > now())";

/// What could change a pass's answers, read as a pass begins: the newest
/// event (every change of tasks, attempts, jobs and machines writes one) and
/// the next end of a backoff.
struct Stamp {
    event: i64,
    now: chrono::DateTime<chrono::Utc>,
    next_due: Option<chrono::DateTime<chrono::Utc>>,
}

impl Stamp {
    async fn read(pool: &PgPool) -> Result<Stamp, sqlx::Error> {
        let (event, now, next_due) = sqlx::query_as(STAMP).fetch_one(pool).await?;
        Ok(Stamp {
            event,
            now,
            next_due,
        })
    }

    /// Nothing written since `self`, and no backoff ended by `later`.
    fn unchanged_at(&self, later: &Stamp) -> bool {
        later.event == self.event && self.next_due.is_none_or(|due| due > later.now)
    }
}

/// Figures of one pass, logged with it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassStats {
    /// Pending tasks read (all pages).
    pub pending: usize,
    pub placed: usize,
    pub unplaceable: usize,
    /// Placements dropped at commit because another writer got there first.
    pub lost_races: usize,
    /// Pages (transactions) in the pass.
    pub batches: usize,
    /// Of them, pages placed while the page before them committed.
    pub placed_ahead: usize,
    /// Pending reasons that changed.
    pub reasons_written: u64,
    /// Attempts asked to stop to make room for production tasks.
    pub preempted: usize,
    /// `unplaceable`, by the cause that ruled out most machines.
    pub unplaceable_by_cause: BTreeMap<&'static str, usize>,
    /// Where the pass spent its time (ms): reading the queue, machines and
    /// loads; placing in memory; committing; writing reasons.
    pub read_ms: u64,
    pub place_ms: u64,
    pub commit_ms: u64,
    pub reasons_ms: u64,
    /// Machine rows read (each with its usage): all of them on a full read,
    /// else only those changed since the last read (see `cache`).
    pub machines_read: u64,
    /// Reads of every machine.
    pub full_reads: usize,
}

/// Run the scheduler until `shutdown` is cancelled. A batch in flight is
/// finished (or rolled back by Postgres) before returning. Database errors,
/// including a schema that is not there yet, are logged and retried.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = Store::from_pool(
        PgPoolOptions::new()
            // A connection per commit stream, and one for the reads.
            .max_connections(u32::from(config.commit_streams) + 2)
            .acquire_timeout(Duration::from_secs(5))
            // Plans made for the arrays and page at hand: a cached generic plan
            // guesses 10 rows for every `unnest` and ANY (see borg_store::placements).
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::Executor::execute(conn, "SET plan_cache_mode = force_custom_plan")
                        .await
                        .map(|_| ())
                })
            })
            .connect_lazy(&config.database_url)
            .context("the database URL (DATABASE_URL) is not a usable postgres URL")?,
    );
    let pool = store.pool().clone();
    crate::metrics::install();
    if let Some(addr) = config.listen {
        // Bound here, so a port in use stops the scheduler with a clear error.
        let listener = crate::metrics::bind(addr).await?;
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(listener, stop).await {
                tracing::error!("{e:#}");
            }
        });
    }
    tracing::info!(
        scheduler = %config.name,
        interval = %humantime::format_duration(config.interval),
        batch_size = config.batch_size,
        "scheduler starting"
    );

    let mut listener: Option<PgListener> = None;
    let mut membership = Membership::default();
    let mut machines = MachineCache::new(config.cache_machines);
    let mut pass_no: u64 = 0;
    let mut healthy = true;
    'passes: while !shutdown.is_cancelled() {
        // LISTEN before the pass, so nothing notified after the pass read the
        // queue is missed. While the database is unreachable, don't spend the
        // pool's acquire timeout on the listener as well: the interval wakes us.
        if listener.is_none() && healthy {
            listener = tokio::select! {
                _ = shutdown.cancelled() => break,
                l = tokio::time::timeout(LISTEN_TIMEOUT, listen(&pool)) => l.ok().flatten(),
            };
        }
        pass_no += 1;
        let span = tracing::info_span!("pass", scheduler = %config.name, pass = pass_no);
        let started = Instant::now();
        let stamp = Stamp::read(&pool).await.ok();
        let pass = pass(&store, &config, &mut membership, &mut machines, &shutdown)
            .instrument(span.clone());
        tokio::pin!(pass);
        let result = tokio::select! {
            r = &mut pass => r,
            // The pass stops between batches once cancelled; a batch stuck on an
            // unreachable database is abandoned after a grace period (its
            // transaction never commits, so nothing is half-written).
            _ = shutdown.cancelled() => match tokio::time::timeout(SHUTDOWN_GRACE, &mut pass).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(scheduler = %config.name, "pass abandoned at shutdown");
                    break;
                }
            },
        };
        healthy = result.is_ok();
        let ms = started.elapsed().as_millis() as u64;
        crate::metrics::record(result.as_ref().ok(), started.elapsed().as_secs_f64());
        let again = span.in_scope(|| match result {
            Ok(s) => {
                log_pass(&config.name, &s, ms);
                // Lost races with progress made: the losers may fit elsewhere now; retry at once.
                s.lost_races > 0 && s.placed > 0
            }
            Err(e) if is_missing_schema(&e) => {
                tracing::warn!(
                    scheduler = %config.name,
                    "the schema is not there yet (the master runs the migrations): {e:#}; retrying"
                );
                false
            }
            Err(e) => {
                tracing::warn!(scheduler = %config.name, "pass failed, retrying: {e:#}");
                false
            }
        });
        if again {
            continue;
        }

        // Notifications mean work (submit, retry, freed room, a machine or a
        // quota changed): pass at once. The interval is the safety net: it
        // passes again only if some state changed since this pass began (an
        // event was written, a backoff ended), and at least every `--recheck-after`,
        // so a queue of unplaceable tasks is not judged again every second.
        loop {
            let by_interval = tokio::select! {
                _ = shutdown.cancelled() => break 'passes,
                _ = tokio::time::sleep(config.interval) => true,
                woke = notified(&mut listener) => {
                    if let Err(e) = woke {
                        tracing::warn!(scheduler = %config.name, "LISTEN {PENDING_CHANNEL} failed, relying on the interval: {e:#}");
                        listener = None;
                    }
                    false
                }
            };
            if !by_interval || !healthy || started.elapsed() >= config.recheck_after {
                break;
            }
            match (&stamp, Stamp::read(&pool).await) {
                (Some(before), Ok(now)) if before.unchanged_at(&now) => {
                    tracing::debug!(scheduler = %config.name, "nothing changed since the last pass; no pass");
                    crate::metrics::skipped();
                    continue;
                }
                _ => break,
            }
        }
    }
    drop(listener);
    pool.close().await;
    tracing::info!(scheduler = %config.name, "scheduler stopped");
    Ok(())
}

fn log_pass(scheduler: &str, s: &PassStats, ms: u64) {
    // Quiet passes are the norm every interval; keep them out of the default log.
    if s.placed > 0 || s.lost_races > 0 || s.reasons_written > 0 || s.preempted > 0 {
        tracing::info!(
            scheduler,
            pending = s.pending,
            placed = s.placed,
            preempted = s.preempted,
            unplaceable = s.unplaceable,
            lost_races = s.lost_races,
            batches = s.batches,
            placed_ahead = s.placed_ahead,
            reasons_written = s.reasons_written,
            read_ms = s.read_ms,
            place_ms = s.place_ms,
            commit_ms = s.commit_ms,
            reasons_ms = s.reasons_ms,
            machines_read = s.machines_read,
            full_reads = s.full_reads,
            ms,
            "pass"
        );
    } else {
        tracing::debug!(
            scheduler,
            pending = s.pending,
            placed = s.placed,
            preempted = s.preempted,
            unplaceable = s.unplaceable,
            lost_races = s.lost_races,
            batches = s.batches,
            placed_ahead = s.placed_ahead,
            reasons_written = s.reasons_written,
            read_ms = s.read_ms,
            place_ms = s.place_ms,
            commit_ms = s.commit_ms,
            reasons_ms = s.reasons_ms,
            machines_read = s.machines_read,
            full_reads = s.full_reads,
            ms,
            "pass"
        );
    }
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let attempt = async {
        let mut l = PgListener::connect_with(pool).await?;
        l.listen(PENDING_CHANNEL).await?;
        Ok::<_, sqlx::Error>(l)
    };
    match attempt.await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::debug!("cannot LISTEN {PENDING_CHANNEL} yet: {e}");
            None
        }
    }
}

/// Resolves on a notification (or a reconnect, after which some may have been
/// missed); never resolves without a listener, leaving the interval to wake us.
async fn notified(listener: &mut Option<PgListener>) -> Result<(), sqlx::Error> {
    match listener {
        Some(l) => {
            l.try_recv().await?;
            // Coalesce a burst: one pass serves them all.
            while l.next_buffered().is_some() {}
            Ok(())
        }
        None => std::future::pending().await,
    }
}

/// Milliseconds since `clock`, which restarts.
fn lap(clock: &mut Instant) -> u64 {
    let ms = clock.elapsed().as_millis() as u64;
    *clock = Instant::now();
    ms
}

/// Undefined table / type: the master has not migrated this database yet.
fn is_missing_schema(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .and_then(|e| e.as_database_error())
            .and_then(|d| d.code())
            .is_some_and(|c| c == "42P01" || c == "42704")
    })
}

/// What of the machines a walk reads again before its next page.
enum Reload {
    Nothing,
    /// The machines a commit lost races on (someone else filled them): those
    /// alone, whatever else changed meanwhile.
    Lost(Vec<MachineId>),
    /// What changed since the last read (see `cache`): at the start of a pass,
    /// and after a preemption.
    All,
}

/// One walk over the pending queue (this scheduler's slice of it).
///
/// The machines are brought up to date once per pass (from what changed since
/// the last pass, see `cache`) and kept up to date with this scheduler's own
/// commits page after page. A page that lost races reads the machines it lost
/// on again; one that preempted reads what changed. What other writers free
/// meanwhile is seen at the next pass; what they fill, the commit re-checks.
async fn pass(
    store: &Store,
    config: &Config,
    membership: &mut Membership,
    machines: &mut MachineCache,
    shutdown: &CancellationToken,
) -> anyhow::Result<PassStats> {
    let result = walk(store, config, membership, machines, shutdown).await;
    if result.is_err() {
        // A commit may have landed without its placements charged: read all.
        machines.invalidate();
    }
    result
}

async fn walk(
    store: &Store,
    config: &Config,
    membership: &mut Membership,
    machines: &mut MachineCache,
    shutdown: &CancellationToken,
) -> anyhow::Result<PassStats> {
    let pool = store.pool();
    let mut stats = PassStats::default();
    let mut after: Option<QueueKey> = None;
    // Jobs with a task this pass could not place: a job's tasks all ask for the
    // same on the same machines, and room only shrinks within a pass, so the
    // rest of the job is skipped (it keeps its place for the next pass). A
    // 10,000-task job waiting for room costs one page per pass, not ten.
    let mut full: Vec<JobId> = Vec::new();
    // The reason of each job's first unplaceable task this pass: what its
    // tasks without a reason of their own show (written once per job, from the
    // page that found it).
    let mut job_reasons: HashMap<JobId, String> = HashMap::new();
    let mut jobs_explained: HashSet<JobId> = HashSet::new();
    // Pages start small and double each time: a pass woken for a few new tasks
    // reads a few rows first, and a walk over a long queue that cannot move
    // (each stuck job judged once, see `full`) takes few, large pages.
    let mut page_size = FIRST_PAGE.min(config.batch_size);
    let mut reload = Reload::All;
    // The next page, read while this one commits.
    let mut prefetched: Option<Ahead> = None;
    loop {
        let mut clock = Instant::now();
        // The membership is read again for every page: a pass that began
        // before another scheduler joined (a long first pass) hands it its
        // share of the jobs and machines from the next page on.
        let slice = if config.whole_queue {
            Slice::ALL
        } else {
            membership.slice(&config.database_url).await
        };
        let ahead = prefetched.take().filter(|a| a.slice == slice);
        let (ahead_page, mut ahead_counts, ahead_placed) = match ahead {
            // Counts read before a refresh of the machines could miss attempts
            // the refreshed usage holds: read them again after it. A reread of
            // the machines a commit lost races on keeps both the counts (the
            // attempts that won there are of other schedulers' jobs) and the
            // decisions: one for a machine that has no room now loses again
            // at its commit, which re-checks, and that machine is read again.
            // Placing the page again cost a page's placing for each commit
            // that lost a race (with two schedulers, about a sixth of their
            // CPU in the synthetic bench: BENCHMARKS.md).
            Some(a) if matches!(reload, Reload::Nothing | Reload::Lost(_)) => match a.placed {
                Some(placed) => (Some(a.page), None, Some(placed)),
                None => (Some(a.page), Some(a.counts), None),
            },
            Some(a) => {
                if a.placed.is_some() {
                    // Placed ahead against the snapshot a refresh (after a
                    // preemption) replaces: its counts went into the
                    // snapshot, so out they come.
                    for job in &a.counts.jobs {
                        machines.snapshot.job_counts.remove(job);
                    }
                }
                (Some(a.page), None, None)
            }
            None => (None, None, None),
        };
        let pending = async {
            match ahead_page {
                Some(page) => Ok(page),
                None => read_pending(pool, after.as_ref(), &full, page_size, slice).await,
            }
        };
        // Both reads run to their end before either's error is returned
        // (`join!`, not `try_join!`): neither is dropped halfway because the
        // other failed. A read may run in a transaction of its own, and a
        // `BEGIN` dropped in flight used to leave its connection inside it
        // (see `borg_store::begin`, which now makes that safe).
        let reread = async {
            match &reload {
                Reload::Nothing => Ok(Refreshed::default()),
                Reload::Lost(lost) => machines.reread(pool, lost).await,
                Reload::All => machines.refresh(pool).await,
            }
        };
        let (read, page) = tokio::join!(reread, pending);
        let (read, page) = (read?, page?);
        stats.machines_read += read.rows;
        stats.full_reads += usize::from(read.full);
        let (snapshot, index) = (&mut machines.snapshot, &machines.index);
        snapshot.scoring = config.scoring;
        snapshot.sample = config.sample;
        snapshot.home = slice;
        stats.batches += 1;
        stats.pending += page.rows;
        let decisions = match ahead_placed {
            // Read and placed while the last page committed (see `place_ahead`).
            Some(placed) => {
                stats.placed_ahead += 1;
                stats.place_ms += placed.ms;
                placed.decisions
            }
            None => {
                // Where the page's jobs already run (read after the machines,
                // so no attempt the usage counted is missing here); kept for
                // the pass.
                let spreading = new_spreading_jobs(&page.tasks, snapshot, config);
                let mut counts = match ahead_counts.take() {
                    Some(c) if c.jobs == spreading => c.counts,
                    _ => read_job_counts(pool, &spreading).await?,
                };
                for job in spreading {
                    let c = counts.remove(&job).unwrap_or_default();
                    snapshot.job_counts.insert(job, c);
                }
                if page.tasks.iter().any(|t| t.ports > 0) {
                    read_used_ports(pool, snapshot).await?;
                }
                read_quotas_and_victims(pool, snapshot, &page.tasks).await?;
                stats.read_ms += lap(&mut clock);
                let decisions = place(snapshot, &page.tasks);
                stats.place_ms += lap(&mut clock);
                decisions
            }
        };
        lap(&mut clock);
        let by_id: HashMap<TaskId, &PendingTask> = page.tasks.iter().map(|t| (t.id, t)).collect();
        let mut placements: Vec<(TaskId, MachineId, Vec<u16>)> = Vec::new();
        let mut preemptions: Vec<Preemption> = Vec::new();
        let mut reasons: Vec<(TaskId, String)> = page.unreadable.clone();
        for _ in &page.unreadable {
            crate::metrics::tally(&mut stats.unplaceable_by_cause, "unreadable_spec");
        }
        for d in decisions {
            match d {
                Decision::Place {
                    task,
                    machine,
                    ports,
                } => placements.push((task, machine, ports)),
                Decision::Preempt {
                    task,
                    machine,
                    victims,
                    reason,
                } => {
                    crate::metrics::tally(&mut stats.unplaceable_by_cause, "preempting");
                    if let Some(t) = by_id.get(&task) {
                        full.push(t.job_id);
                        job_reasons
                            .entry(t.job_id)
                            .or_insert_with(|| reason.clone());
                        preemptions.push(Preemption {
                            machine,
                            by: t.name.clone(),
                            victims,
                        });
                    }
                    reasons.push((task, reason))
                }
                Decision::Unplaceable {
                    task,
                    reason,
                    cause,
                } => {
                    crate::metrics::tally(&mut stats.unplaceable_by_cause, cause);
                    if let Some(t) = by_id.get(&task) {
                        full.push(t.job_id);
                        job_reasons
                            .entry(t.job_id)
                            .or_insert_with(|| reason.clone());
                    }
                    reasons.push((task, reason))
                }
            }
        }
        full.sort();
        full.dedup();
        stats.unplaceable += reasons.len();
        // The page's placements are charged to the snapshot now, so the next
        // page may be placed while they commit; those the commit drops are
        // taken back after it.
        charge(snapshot, index, &by_id, &placements, Charge::Add);
        stats.place_ms += lap(&mut clock);
        let more = page.rows >= page_size as usize;
        let stuck_page = placements.is_empty() && preemptions.is_empty();
        // A page that placed nothing committed nothing: the walk over a queue
        // that cannot move may read pages longer than a batch. Else a page is a
        // batch per commit stream, so each stream's transaction is about a batch.
        let cap = if stuck_page {
            config.batch_size.saturating_mul(STUCK_PAGES)
        } else {
            config
                .batch_size
                .saturating_mul(u32::from(config.commit_streams))
        };
        let next_size = page_size.saturating_mul(2).min(cap);
        // At most `batch_size` placements per transaction, however long the
        // page, in `commit_streams` concurrent streams; the next page is read
        // meanwhile (it starts after this one, so no task of it is in this
        // commit; what this commit changes of the machines is charged above)
        // and placed too when it can be (see `ahead::place_ahead`).
        let read_ahead = more && !shutdown.is_cancelled();
        // A page that preempted must have its victims asked to stop before
        // the next one reads what may be preempted: that one is placed after.
        let ahead_may_place = preemptions.is_empty();
        let (committed, next) = tokio::join!(
            commit_page(
                store,
                &config.name,
                &by_id,
                &placements,
                config.batch_size as usize,
                usize::from(config.commit_streams),
            ),
            async {
                if !read_ahead {
                    return Ok(None);
                }
                let page = read_pending(pool, page.last.as_ref(), &full, next_size, slice).await?;
                // Its new jobs have no task in this page (this page's are all in
                // `job_counts` by now), so this commit changes none of their counts.
                let jobs = new_spreading_jobs(&page.tasks, snapshot, config);
                let counts = read_job_counts(pool, &jobs).await?;
                let mut ahead = Ahead {
                    slice,
                    page,
                    counts: JobCounts { jobs, counts },
                    placed: None,
                };
                if ahead_may_place {
                    ahead.placed = place_ahead(pool, snapshot, &mut ahead).await?;
                }
                anyhow::Ok(Some(ahead))
            }
        );
        let committed = committed?;
        prefetched = next?;
        // After the placements: a victim's capacity stays booked until it has stopped.
        stats.preempted += store.preempt(&preemptions).await?;
        stats.placed += committed.placed.len();
        stats.lost_races += committed.lost_races;
        // Take back what the commit dropped (charged above).
        let mut dropped = Vec::new();
        if committed.placed.len() < placements.len() {
            let kept: HashSet<TaskId> = committed.placed.iter().map(|p| p.task).collect();
            dropped = placements
                .iter()
                .filter(|p| !kept.contains(&p.0))
                .cloned()
                .collect();
            charge(snapshot, index, &by_id, &dropped, Charge::TakeBack);
        }
        reload = if !preemptions.is_empty() {
            Reload::All
        } else if committed.lost_races > 0 {
            let mut lost: Vec<MachineId> = dropped.iter().map(|p| p.1).collect();
            lost.sort();
            lost.dedup();
            Reload::Lost(lost)
        } else {
            Reload::Nothing
        };
        for p in &committed.placed {
            // The span names the task (job, index) and where it went (machine).
            let task = by_id.get(&p.task).map_or("", |t| t.name.as_str());
            let (job, task_index) = task.rsplit_once('/').unwrap_or((task, ""));
            let machine = index
                .get(&p.machine)
                .map_or("", |&i| &snapshot.machines[i].name);
            // Under the placement line's own target: `borgscheduler::run=debug`
            // (the quiet passes) does not turn on a span per placement.
            let _in = tracing::debug_span!(target: "borgscheduler::placed", "place", job, index = task_index, machine)
                .entered();
            tracing::debug!(target: "borgscheduler::placed", task = %p.task, job = %p.job, attempt = %p.attempt, machine = %p.machine, "placed");
        }
        stats.commit_ms += lap(&mut clock);
        // A batch per statement: a page that placed nothing may hold 16 batches'
        // worth of reasons, and one statement would hold all their rows' locks
        // (a kill of one of those tasks waits) for seconds.
        let reasons = page.reasons_to_write(reasons, |task| {
            let job = by_id.get(&task)?.job_id;
            job_reasons.get(&job).map(String::as_str)
        });
        for chunk in reasons.chunks((config.batch_size as usize).max(1)) {
            stats.reasons_written += store.write_pending_reasons(chunk).await?;
        }
        let new_jobs: Vec<(JobId, String)> = job_reasons
            .iter()
            .filter(|(job, _)| jobs_explained.insert(**job))
            .map(|(job, reason)| (*job, reason.clone()))
            .collect();
        stats.reasons_written += store.explain_waiting_jobs(&new_jobs).await?;
        stats.reasons_ms += lap(&mut clock);

        if !more || shutdown.is_cancelled() {
            return Ok(stats);
        }
        after = page.last;
        page_size = next_size;
    }
}
