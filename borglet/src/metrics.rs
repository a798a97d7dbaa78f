//! The borglet's Prometheus metrics: the process-wide recorder (installed once),
//! the handles one borglet records into (every series labelled with its machine
//! name, since tests run several borglets in one process), and `GET /metrics`.

use crate::api::AppState;
use crate::state::Exit;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use borg_shared::wire::ResourceUsage;
use borg_shared::AttemptId;
use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

const SYNC_DURATION: &str = "borglet_sync_duration_seconds";
/// A sync is map operations plus fork/exec per started attempt: milliseconds.
const SYNC_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
/// Without a scrape, histogram samples pile up until drained; drain them this often.
const TASK_CPU: &str = "borg_task_cpu_cores";
const TASK_MEMORY: &str = "borg_task_memory_bytes";
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the process-wide recorder on first call. `None` when another recorder
/// was installed first (e.g. by an embedding program): metrics then go there and
/// this borglet's `/metrics` is empty, which is no reason to refuse to run.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            // Only fails for an empty bucket list, which SYNC_BUCKETS is not; a
            // summary instead of a histogram would still be better than nothing.
            let builder = builder
                .set_buckets_for_metric(Matcher::Full(SYNC_DURATION.into()), SYNC_BUCKETS)
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "sync duration buckets rejected");
                    PrometheusBuilder::new()
                });
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
                return None;
            }
            describe();
            spawn_upkeep(handle.clone());
            Some(handle)
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "borglet_attempts_started_total",
        "Attempts whose process was started"
    );
    describe_counter!(
        "borglet_attempts_failed_to_start_total",
        "Attempts that could not be started (bad command, sandbox error)"
    );
    describe_counter!(
        "borglet_attempts_exited_total",
        "Attempt processes reaped, by how they ended (exited, signaled, unknown)"
    );
    describe_counter!(
        "borglet_attempts_stopped_total",
        "Stops begun because the master no longer wants the attempt"
    );
    describe_counter!(
        "borglet_attempts_fenced_total",
        "Stops begun because no master synced for longer than the attempt's fence_after"
    );
    describe_counter!(
        "borglet_attempts_oom_killed_total",
        "Attempts in whose cgroup the kernel OOM-killed a process"
    );
    describe_gauge!(
        "borglet_attempts_running",
        "Attempts whose process has not exited yet (running or stopping)"
    );
    describe_counter!(
        "borglet_syncs_total",
        "Sync requests from the master, by result (ok, stale_epoch, wrong_machine)"
    );
    describe_counter!(
        "borglet_nudges_total",
        "Nudges asking the master to sync now after task exits, by result (sent, failed)"
    );
    describe_counter!(
        "borglet_health_probes_total",
        "Health probes of attempts with a health check, by result (passed, failed)"
    );
    describe_counter!(
        "borglet_health_restarts_total",
        "Runs ended because they failed their health check too many times in a row"
    );
    describe_histogram!(
        SYNC_DURATION,
        Unit::Seconds,
        "Time to handle one sync request from the master"
    );
}

/// The exporter's own `install_recorder` runs upkeep on a thread; `build_recorder`
/// leaves it to us.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start metrics upkeep; histograms drain only on scrape");
    }
}

/// How a sync request ended, as the `result` label.
#[derive(Debug, Clone, Copy)]
pub enum SyncResult {
    Ok,
    StaleEpoch,
    WrongMachine,
}

/// One borglet's metric handles, registered once with its `machine` label.
#[derive(Debug)]
pub struct Metrics {
    handle: Option<PrometheusHandle>,
    started: Counter,
    failed_to_start: Counter,
    exited: Counter,
    signaled: Counter,
    exit_unknown: Counter,
    stopped: Counter,
    fenced: Counter,
    running: Gauge,
    syncs_ok: Counter,
    syncs_stale_epoch: Counter,
    syncs_wrong_machine: Counter,
    syncs_unauthorized: Counter,
    sync_duration: Histogram,
    nudges_sent: Counter,
    nudges_failed: Counter,
    oom_killed: Counter,
    probes_passed: Counter,
    probes_failed: Counter,
    health_restarts: Counter,
}

impl Metrics {
    /// Installs the recorder if needed: handles taken before it exists would be no-ops.
    pub fn new(machine: &str) -> Self {
        let handle = install();
        let m = || ("machine", machine.to_string());
        let how = |how: &'static str| [m(), ("how", how.to_string())];
        let result = |r: &'static str| [m(), ("result", r.to_string())];
        Metrics {
            handle,
            started: metrics::counter!("borglet_attempts_started_total", &[m()]),
            failed_to_start: metrics::counter!("borglet_attempts_failed_to_start_total", &[m()]),
            exited: metrics::counter!("borglet_attempts_exited_total", &how("exited")),
            signaled: metrics::counter!("borglet_attempts_exited_total", &how("signaled")),
            exit_unknown: metrics::counter!("borglet_attempts_exited_total", &how("unknown")),
            stopped: metrics::counter!("borglet_attempts_stopped_total", &[m()]),
            fenced: metrics::counter!("borglet_attempts_fenced_total", &[m()]),
            running: metrics::gauge!("borglet_attempts_running", &[m()]),
            syncs_ok: metrics::counter!("borglet_syncs_total", &result("ok")),
            syncs_stale_epoch: metrics::counter!("borglet_syncs_total", &result("stale_epoch")),
            syncs_wrong_machine: metrics::counter!("borglet_syncs_total", &result("wrong_machine")),
            syncs_unauthorized: metrics::counter!("borglet_syncs_total", &result("unauthorized")),
            sync_duration: metrics::histogram!(SYNC_DURATION, &[m()]),
            nudges_sent: metrics::counter!("borglet_nudges_total", &result("sent")),
            nudges_failed: metrics::counter!("borglet_nudges_total", &result("failed")),
            oom_killed: metrics::counter!("borglet_attempts_oom_killed_total", &[m()]),
            probes_passed: metrics::counter!("borglet_health_probes_total", &result("passed")),
            probes_failed: metrics::counter!("borglet_health_probes_total", &result("failed")),
            health_restarts: metrics::counter!("borglet_health_restarts_total", &[m()]),
        }
    }

    pub fn started(&self) {
        self.started.increment(1);
    }

    pub fn failed_to_start(&self) {
        self.failed_to_start.increment(1);
    }

    pub fn exited(&self, exit: &Exit) {
        match exit {
            Exit::Code(_) => self.exited.increment(1),
            Exit::Signal(_) => self.signaled.increment(1),
            Exit::Unknown(_) => self.exit_unknown.increment(1),
        }
    }

    pub fn oom_killed(&self) {
        self.oom_killed.increment(1);
    }

    pub fn stopped(&self) {
        self.stopped.increment(1);
    }

    pub fn fenced(&self) {
        self.fenced.increment(1);
    }

    /// One health probe ended: passed or not.
    pub fn probed(&self, passed: bool) {
        if passed {
            self.probes_passed.increment(1);
        } else {
            self.probes_failed.increment(1);
        }
    }

    /// A run failed its health check `failures` times in a row and is being ended.
    pub fn health_restart(&self) {
        self.health_restarts.increment(1);
    }

    /// The gauge handle the attempt table keeps exact.
    pub fn running_gauge(&self) -> Gauge {
        self.running.clone()
    }

    pub fn synced(&self, result: SyncResult, took: Duration) {
        match result {
            SyncResult::Ok => self.syncs_ok.increment(1),
            SyncResult::StaleEpoch => self.syncs_stale_epoch.increment(1),
            SyncResult::WrongMachine => self.syncs_wrong_machine.increment(1),
        }
        self.sync_duration.record(took);
    }

    /// A sync refused before it was read: not from the master.
    pub fn sync_refused(&self) {
        self.syncs_unauthorized.increment(1);
    }

    /// One nudge sent to the master: accepted (`sent`) or not (`failed`).
    pub fn nudged(&self, accepted: bool) {
        if accepted {
            self.nudges_sent.increment(1);
        } else {
            self.nudges_failed.increment(1);
        }
    }
}

/// `GET /metrics`: everything recorded in this process, in the Prometheus text
/// format, then the per-task usage gauges.
pub async fn serve(State(app): State<AppState>) -> impl IntoResponse {
    let mut body = app
        .metrics
        .handle
        .as_ref()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    task_usage(&mut body, &app.supervisor.table().live_usage());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// Append `borg_task_cpu_cores` and `borg_task_memory_bytes` of each live
/// attempt's latest usage sample (the one sync reports carry). Written at
/// scrape time from the attempt table, so an attempt's series end with it.
pub fn task_usage(out: &mut String, usage: &[(String, i32, AttemptId, ResourceUsage)]) {
    use std::fmt::Write;
    if usage.is_empty() {
        return;
    }
    let labels = |job: &str, index: i32, attempt: &AttemptId| {
        format!(
            "job=\"{}\",index=\"{index}\",attempt=\"{attempt}\"",
            escape_label(job)
        )
    };
    let _ = writeln!(
        out,
        "# HELP {TASK_CPU} CPU used by a running attempt (cores, between the last two usage samples)\n\
         # TYPE {TASK_CPU} gauge"
    );
    for (job, index, attempt, u) in usage {
        let cores = u.cpu.0 as f64 / 1000.0;
        let _ = writeln!(
            out,
            "{TASK_CPU}{{{}}} {cores}",
            labels(job, *index, attempt)
        );
    }
    let _ = writeln!(
        out,
        "# HELP {TASK_MEMORY} Memory used by a running attempt (its cgroup, at the last usage sample)\n\
         # TYPE {TASK_MEMORY} gauge"
    );
    for (job, index, attempt, u) in usage {
        let bytes = u.memory.0;
        let _ = writeln!(
            out,
            "{TASK_MEMORY}{{{}}} {bytes}",
            labels(job, *index, attempt)
        );
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use borg_shared::{Bytes, MilliCpu};

    #[test]
    fn task_usage_is_one_series_per_live_attempt() {
        let id = AttemptId::new();
        let usage = ResourceUsage {
            cpu: MilliCpu(1500),
            memory: Bytes(4096),
        };
        let mut out = String::new();
        task_usage(&mut out, &[("we\"b".into(), 3, id, usage)]);
        let labels = format!("job=\"we\\\"b\",index=\"3\",attempt=\"{id}\"");
        assert!(
            out.contains(&format!("borg_task_cpu_cores{{{labels}}} 1.5\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("borg_task_memory_bytes{{{labels}}} 4096\n")),
            "{out}"
        );
        let mut none = String::new();
        task_usage(&mut none, &[]);
        assert_eq!(none, "", "no attempt, no series");
    }
}
