//! Re-adoption: at start-up, before serving, the borglet reads the records a
//! previous borglet left (in the record dirs, and in the sandboxes of attempts
//! launched before records had dirs of their own) and rebuilds its table from them,
//! once connected to the keeper (the one still running, or a new one). A task
//! that kept running is watched again through its keeper (never started a
//! second time: the master's next sync finds it known), its cgroup re-attached
//! from the launch record so usage, OOM and kill-all still apply; one that ended
//! while no borglet ran is reported with the status its keeper recorded, and its
//! cgroup is emptied, read (OOM kill, peak) and removed then. A task whose
//! keeper died is watched as an orphan: its end is seen, not its status.
//! Nothing here removes a cgroup whose task still runs.
//!
//! A v1 cgroup set may have served several attempts one after another (kept as
//! a spare between them), so several records can name it. Only an attempt that
//! is the one record naming it reads it as its own; where several name it, a
//! re-adopted running one keeps it and the ended ones report no counters (which
//! of them ran in it last is not on record). Once every record is read, the
//! empty sets no re-adopted attempt runs in are swept.

use super::watch::Keeper;
use super::Supervisor;
use crate::isolation::{self, AttemptCgroup, Ending};
use crate::records::{self, Ended, ExitRecord, Launch, ProcId, RecordError, Restarts, Run};
use crate::restart::RestartLog;
use crate::state::{Attempt, Exit, Phase};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long start-up waits, in all, for starts a dead borglet left half done
/// (a keeper that was about to record its task).
const UNFINISHED_START_PATIENCE: Duration = Duration::from_secs(2);

/// Marker written when a stop begins, so an exit seen after a restart is still
/// known to have been asked for.
pub(super) const STOPPING: &str = "stopping";

/// What one sandbox holds.
#[derive(Debug)]
enum Found {
    /// Finished and recorded by the master: only remembered, never started again.
    Acked(Launch),
    Exited {
        launch: Launch,
        run: Option<Run>,
        exit: ExitRecord,
        stopping: bool,
    },
    /// Its keeper still keeps it.
    Running { launch: Launch, run: Run },
    /// Running without a keeper: its end will be seen, not its status.
    Orphan { launch: Launch, task: ProcId },
    /// Ended with no keeper to record how.
    Lost {
        launch: Launch,
        run: Run,
        stopping: bool,
    },
}

/// What start-up found, for its log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Adopted {
    pub running: usize,
    pub exited: usize,
    pub acked: usize,
    pub never_started: usize,
}

impl Supervisor {
    /// Rebuild the table from the sandboxes. Call once, before serving.
    pub async fn adopt(self: &Arc<Self>) -> Result<Adopted, RecordError> {
        // First: from the hello on, the keeper tells this borglet every exit,
        // and what ended before is on disk when the scan reads it.
        let client = Arc::clone(&self.keeper);
        let keeper = match tokio::task::spawn_blocking(move || client.connect()).await {
            Ok(Ok(k)) => Some(k),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot reach the keeper; starts will try again");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "connecting to the keeper was interrupted");
                None
            }
        };
        let dirs = [self.records.clone(), self.sandboxes.clone()];
        let (found, never_started) = tokio::task::spawn_blocking(move || scan(&dirs))
            .await
            .map_err(|e| RecordError::Io {
                path: self.records.clone(),
                source: std::io::Error::other(e),
            })??;
        let mut n = Adopted {
            never_started,
            ..Adopted::default()
        };
        let shared = shared_cgroups(&found);
        let mut in_use = Vec::new();
        for f in found {
            match f {
                Found::Acked(launch) => {
                    self.table.tombstone(launch.spec.id);
                    n.acked += 1;
                }
                Found::Exited {
                    launch,
                    run,
                    exit,
                    stopping,
                } => {
                    let restarts = restarts_of(&launch);
                    self.keeper.forget(&launch.cwd);
                    let done = CancellationToken::new();
                    done.cancel();
                    let phase = match (exit.ended, run) {
                        (Ended::ExecFailed(message), _) => Phase::FailedToStart {
                            at: exit.at,
                            message,
                        },
                        (ended, run) => Phase::Exited {
                            pid: run.as_ref().map_or(0, |r| r.task.pid),
                            started_at: run.map_or(launch.created_at, |r| r.started_at),
                            finished_at: exit.at,
                            exit: super::watch::exit_of(ended),
                            stopped_by_borglet: stopping,
                        },
                    };
                    tracing::info!(attempt = %launch.spec.id, job = %launch.spec.job,
                        index = launch.spec.index, phase = ?phase.wire(), "attempt ended while no borglet ran");
                    let ending = self.ending_of(&launch, &shared).await;
                    let note = stop_note(&launch);
                    let mut attempt = Attempt::new(launch.spec, phase, done);
                    attempt.restarts = restarts;
                    attempt.note = note;
                    attempt.isolation.ending = Some(ending);
                    self.table.insert(attempt);
                    n.exited += 1;
                }
                Found::Lost {
                    launch,
                    run,
                    stopping,
                } => {
                    let restarts = restarts_of(&launch);
                    let done = CancellationToken::new();
                    done.cancel();
                    tracing::warn!(attempt = %launch.spec.id, "attempt ended with no keeper to record its status");
                    let ending = self.ending_of(&launch, &shared).await;
                    let note = stop_note(&launch);
                    let mut attempt = Attempt::new(
                        launch.spec,
                        Phase::Exited {
                            pid: run.task.pid,
                            started_at: run.started_at,
                            finished_at: chrono::Utc::now(),
                            exit: Exit::Unknown(
                                "ended while neither borglet nor keeper watched it".into(),
                            ),
                            stopped_by_borglet: stopping,
                        },
                        done,
                    );
                    attempt.restarts = restarts;
                    attempt.note = note;
                    attempt.isolation.ending = Some(ending);
                    self.table.insert(attempt);
                    n.exited += 1;
                }
                Found::Running { launch, run } => {
                    let restarts = restarts_of(&launch);
                    let exit = (keeper == Some(run.shim))
                        .then(|| self.keeper.exit_of(&launch.cwd))
                        .flatten();
                    let how = match exit {
                        Some(exit) => Keeper::Connected {
                            task: run.task,
                            exit,
                        },
                        None => Keeper::Shim(run.shim),
                    };
                    in_use.extend(launch.cgroup.clone());
                    self.readopt(
                        launch,
                        restarts,
                        run.task.pid,
                        run.started_at,
                        run.pgid,
                        how,
                    );
                    n.running += 1;
                }
                Found::Orphan { launch, task } => {
                    let since = launch.created_at;
                    let restarts = restarts_of(&launch);
                    in_use.extend(launch.cgroup.clone());
                    self.readopt(
                        launch,
                        restarts,
                        task.pid,
                        since,
                        task.pid,
                        Keeper::Orphan(task),
                    );
                    n.running += 1;
                }
            }
        }
        let isolator = Arc::clone(&self.isolator);
        let _ = tokio::task::spawn_blocking(move || isolator.sweep(&in_use)).await;
        Ok(n)
    }

    /// What the end of an attempt that ended while no borglet ran adds: its
    /// cgroup (left behind) emptied, read and removed, unless other records
    /// name it too (`shared`), and the stderr tail.
    async fn ending_of(&self, launch: &Launch, shared: &HashSet<AttemptCgroup>) -> Ending {
        let id = launch.spec.id;
        let cgroup = launch
            .cgroup
            .clone()
            .filter(|cg| !shared.contains(cg))
            .map(Arc::new);
        let sandbox = self.sandboxes.join(id.to_string());
        let isolator = Arc::clone(&self.isolator);
        tokio::task::spawn_blocking(move || {
            isolation::finish(&*isolator, id, cgroup, &sandbox, true)
        })
        .await
        .unwrap_or_default()
    }

    #[allow(clippy::too_many_arguments)]
    fn readopt(
        self: &Arc<Self>,
        launch: Launch,
        restarts: RestartLog,
        pid: i32,
        started_at: chrono::DateTime<chrono::Utc>,
        pgid: i32,
        keeper: Keeper,
    ) {
        let records = launch.record_dir().to_path_buf();
        let spec = launch.spec;
        let (id, job, index) = (spec.id, spec.job.clone(), spec.index);
        tracing::info!(attempt = %id, job = %job, index, pid, cgroup = ?launch.cgroup, "re-adopted a running attempt");
        let exited = CancellationToken::new();
        let cgroup = launch.cgroup.map(Arc::new);
        let mut attempt = Attempt::new(spec, Phase::Running { pid, started_at }, exited.clone())
            .with_cgroup(cgroup.clone());
        attempt.restarts = restarts;
        self.table.insert(attempt);
        self.watch(id, job, index, pgid, exited, cgroup, keeper, records);
    }
}

/// The cgroups more than one record names (a set kept and handed on; see the
/// module's note).
fn shared_cgroups(found: &[Found]) -> HashSet<AttemptCgroup> {
    let mut seen = HashSet::new();
    let mut shared = HashSet::new();
    for f in found {
        let launch = match f {
            Found::Acked(launch)
            | Found::Exited { launch, .. }
            | Found::Running { launch, .. }
            | Found::Orphan { launch, .. }
            | Found::Lost { launch, .. } => launch,
        };
        if let Some(cg) = &launch.cgroup {
            if !seen.insert(cg) {
                shared.insert(cg.clone());
            }
        }
    }
    shared
}

/// The restarts a previous borglet recorded for this attempt (none if it did not).
fn restarts_of(launch: &Launch) -> RestartLog {
    match read_opt::<Restarts>(launch.record_dir(), records::RESTARTS) {
        Some(r) => RestartLog::resumed(
            r.restarts,
            r.last_exit.map(super::watch::exit_of),
            r.last_cause,
        ),
        None => RestartLog::default(),
    }
}

/// Blocking: classify every record dir in `roots` (the records, then the
/// sandboxes, where attempts launched before records had dirs of their own
/// keep theirs); remove the attempts whose task never started.
fn scan(roots: &[PathBuf]) -> Result<(Vec<Found>, usize), RecordError> {
    let patience_ends = Instant::now() + UNFINISHED_START_PATIENCE;
    let mut found = Vec::new();
    let mut never_started = 0;
    for (i, root) in roots.iter().enumerate() {
        if roots[..i].contains(root) {
            continue;
        }
        let entries = match std::fs::read_dir(root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(RecordError::Io {
                    path: root.clone(),
                    source,
                })
            }
        };
        for entry in entries.flatten() {
            // An attempt of the old layout restarted in place since has a
            // record dir of its own: that one is its record.
            if roots[..i]
                .iter()
                .any(|r| r.join(entry.file_name()).is_dir())
            {
                continue;
            }
            let dir = entry.path();
            match classify(&dir, patience_ends) {
                Ok(Some(f)) => found.push(f),
                Ok(None) => {}
                Err(Unstarted(sandbox)) => {
                    // Nothing ran: forget it, so the master's next sync starts it afresh.
                    tracing::info!(records = %dir.display(), "removing a start that never ran");
                    for gone in [&dir, &sandbox] {
                        match std::fs::remove_dir_all(gone) {
                            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                                tracing::warn!(dir = %gone.display(), error = %e, "cannot remove")
                            }
                            _ => {}
                        }
                    }
                    never_started += 1;
                }
            }
        }
    }
    Ok((found, never_started))
}

/// A start that never ran, and its sandbox.
struct Unstarted(PathBuf);

/// Why the borglet stopped this attempt, when it said (a fence), from its stop marker.
fn stop_note(launch: &Launch) -> Option<String> {
    std::fs::read_to_string(launch.record_dir().join(STOPPING))
        .ok()
        .filter(|note| !note.is_empty())
}

/// `dir`: an attempt's record dir.
fn classify(dir: &Path, patience_ends: Instant) -> Result<Option<Found>, Unstarted> {
    let Some(launch) = read_opt::<Launch>(dir, records::LAUNCH) else {
        // Not an attempt's records (a sandbox whose records are in the
        // runtime dir, or one from before records existed).
        return Ok(None);
    };
    if launch.record_dir() != dir {
        // Seen from its sandbox, though its records have their own dir.
        return Ok(None);
    }
    if records::is_acked(dir) {
        return Ok(Some(Found::Acked(launch)));
    }
    let stopping = dir.join(STOPPING).exists();
    loop {
        let run = read_opt::<Run>(dir, records::RUN);
        let exit = read_opt::<ExitRecord>(dir, records::EXIT);
        match (run, exit) {
            (run, Some(exit)) => {
                return Ok(Some(Found::Exited {
                    launch,
                    run,
                    exit,
                    stopping,
                }))
            }
            (Some(run), None) if run.shim.is_alive() => {
                return Ok(Some(Found::Running { launch, run }))
            }
            (Some(run), None) => {
                // The keeper is gone; it may have written the exit just now.
                if let Some(exit) = read_opt::<ExitRecord>(dir, records::EXIT) {
                    return Ok(Some(Found::Exited {
                        launch,
                        run: Some(run),
                        exit,
                        stopping,
                    }));
                }
                if run.task.is_alive() {
                    return Ok(Some(Found::Orphan {
                        launch,
                        task: run.task,
                    }));
                }
                return Ok(Some(Found::Lost {
                    launch,
                    run,
                    stopping,
                }));
            }
            (None, None) if Instant::now() < patience_ends => {
                // A start in progress when the borglet died: its keeper records it soon.
                std::thread::sleep(Duration::from_millis(20));
            }
            (None, None) => {
                // The task writes its pid just before exec: without it nothing ran.
                // A pid may have been reused since: it is ours only if its
                // environment names this attempt.
                let task = records::read_task_pid(dir)
                    .filter(|pid| runs_attempt(*pid, &launch))
                    .and_then(ProcId::of);
                return match task {
                    Some(task) => Ok(Some(Found::Orphan { launch, task })),
                    None => Err(Unstarted(launch.cwd)),
                };
            }
        }
    }
}

/// Whether process `pid` was started for `launch` (its initial environment says so).
fn runs_attempt(pid: i32, launch: &Launch) -> bool {
    let want = format!("BORG_ATTEMPT={}", launch.spec.id);
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()))
}

/// A record, or `None` when it is missing or unreadable (logged).
fn read_opt<T: serde::de::DeserializeOwned>(sandbox: &Path, name: &str) -> Option<T> {
    match records::read::<T>(sandbox, name) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable record, ignored");
            None
        }
    }
}
