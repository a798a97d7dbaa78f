//! The on-disk record of each attempt, so that a borglet started after a crash
//! knows what runs on its machine. They live in the attempt's record dir under
//! the runtime dir (`--runtime-dir`, best a tmpfs), apart from its sandbox on
//! the data dir: only re-adoption reads them, and a reboot, which ends the
//! tasks, may clear them. (Attempts launched before records had a dir of
//! their own keep them in the sandbox: [`Launch::record_dir`].) Three writers, each file written
//! once, atomically (a temporary file renamed into place) or, for `launch.json`,
//! `run.json` and `exit.json`, in one write whose readers take a partial file as
//! none ([`write_fresh`]):
//! - `launch.json`, by the borglet, before the task starts: what to run and how;
//! - `task.pid`, by the task's own process just before it execs, and `run.json`
//!   (pids and start times) by the keeper (`crate::keeper`) once the exec
//!   succeeded;
//! - `exit.json`, by the keeper, once the task has exited (or could not start);
//! - `restarts.json`, by the borglet, before each in-place restart;
//! - `acked`, by the borglet, once the master has recorded the end.

use borg_shared::wire::AttemptSpec;
use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const LAUNCH: &str = "launch.json";
pub const RUN: &str = "run.json";
pub const TASK_PID: &str = "task.pid";
pub const EXIT: &str = "exit.json";
pub const ACKED: &str = "acked";
pub const RESTARTS: &str = "restarts.json";

/// Everything the keeper needs to start the task, and the borglet to report it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    pub spec: AttemptSpec,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    /// The attempt's record dir; empty in a launch from before it had one,
    /// whose records are in `cwd`.
    #[serde(default, skip_serializing_if = "is_empty_path")]
    pub records: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// Files the task writes itself into before it execs, so that the task (not
    /// the keeper) is what lands in them: its cgroups' membership files
    /// (`cgroup.procs` or v1 `tasks`, written `0`: "the caller", see
    /// `AttemptCgroup::join_files`), and `task.pid` (written its pid).
    pub pid_files: Vec<PathBuf>,
    /// Bytes of each output stream kept: the file and one rotated `.1` file
    /// hold half each. 0: unlimited (output goes straight to the file).
    #[serde(default)]
    pub log_max_bytes: u64,
    /// The user the task runs as (`None`: the keeper's own, the borglet's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<crate::run_as::RunAs>,
    /// The attempt's cgroup, when the borglet isolates tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<crate::isolation::AttemptCgroup>,
    pub created_at: DateTime<Utc>,
}

impl Launch {
    /// Where this attempt's records are.
    pub fn record_dir(&self) -> &Path {
        if self.records.as_os_str().is_empty() {
            &self.cwd
        } else {
            &self.records
        }
    }
}

fn is_empty_path(p: &Path) -> bool {
    p.as_os_str().is_empty()
}

/// A process, named so that a reused pid is never mistaken for it: its start
/// time in clock ticks since boot (`/proc/PID/stat` field 22).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    pub pid: i32,
    pub start_ticks: u64,
}

impl ProcId {
    /// `pid` as it is now; `None` if there is no such process.
    pub fn of(pid: i32) -> Option<ProcId> {
        let (_, start_ticks) = state_and_start(pid)?;
        Some(ProcId { pid, start_ticks })
    }

    /// The same process still exists and has not exited (a zombie has).
    pub fn is_alive(&self) -> bool {
        state_and_start(self.pid).is_some_and(|(state, start)| {
            start == self.start_ticks && state != b'Z' && state != b'X'
        })
    }
}

/// Fields 3 (state) and 22 (start time) of `/proc/PID/stat`, read with one
/// open, read and close (see `kernel_file`).
fn state_and_start(pid: i32) -> Option<(u8, u64)> {
    let stat = crate::kernel_file::read(Path::new(&format!("/proc/{pid}/stat"))).ok()?;
    parse_state_and_start(&stat)
}

/// The command (field 2) is in parentheses and may hold spaces and `)`: the
/// fields after it start after the last `)`.
fn parse_state_and_start(stat: &[u8]) -> Option<(u8, u64)> {
    let close = stat.iter().rposition(|b| *b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    // Field 3 was the state; field 22 is 19 further on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Written by the keeper once the task has exec'd.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// The process that keeps the task and records its end: the borglet's
    /// keeper (named `shim` on disk, as the per-attempt shim it replaced).
    pub shim: ProcId,
    pub task: ProcId,
    /// The task leads its own session and process group.
    pub pgid: i32,
    pub started_at: DateTime<Utc>,
}

/// How the task ended, written by the keeper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    Code(i32),
    Signal(i32),
    /// The task could not be started at all (exec failed): never retried.
    ExecFailed(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExitRecord {
    pub ended: Ended,
    pub at: DateTime<Utc>,
    /// Bytes the task wrote to stderr in this run, where the keeper copied them
    /// (capped logs); `None` when it did not count them (an older keeper,
    /// output straight to the file, a task that never started): the borglet
    /// then reads the stderr tail as it always did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_bytes: Option<u64>,
}

/// In-place restarts so far, kept across borglet restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Restarts {
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<Ended>,
    /// Why the borglet ended that run, when it did (a failed health check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_cause: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RecordError + '_ {
    move |source| RecordError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `value` to `dir/name` atomically: readers see the old file or the whole
/// new one, never a part. No fsync: the records outlive a borglet crash, and a
/// machine crash ends the tasks they describe anyway.
pub fn write<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), RecordError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let bytes = serde_json::to_vec(value).map_err(|source| RecordError::Json {
        path: path.clone(),
        source,
    })?;
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&bytes).map_err(io_err(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io_err(&path))
}

/// Write `value` to `dir/name` in one `write` to a fresh file, with no temporary
/// file and rename: two fewer path operations per start. Only for a record whose
/// readers take a missing, empty or unparsable file as not written yet:
/// `launch.json` (written before the keeper is asked; a borglet that dies writing it
/// started nothing), `run.json` (a restarting borglet that finds none waits a
/// while for it, then goes by `task.pid`, which the task wrote before its exec)
/// and `exit.json` (read once the keeper said so or is gone, or else taken
/// as not there yet), so a process killed while writing one leaves the same
/// state to its reader as one killed just before.
pub fn write_fresh<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), RecordError> {
    let bytes = serde_json::to_vec(value).map_err(|source| RecordError::Json {
        path: dir.join(name),
        source,
    })?;
    write_fresh_bytes(dir, name, &bytes)
}

/// [`write_fresh`] of a record already encoded.
pub fn write_fresh_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), RecordError> {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).map_err(io_err(&path))?;
    f.write_all(bytes).map_err(io_err(&path))
}

/// `dir/name`, or `None` if it does not exist.
pub fn read<T: DeserializeOwned>(dir: &Path, name: &str) -> Result<Option<T>, RecordError> {
    let path = dir.join(name);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| RecordError::Json { path, source })
}

/// The pid the task wrote into `task.pid` before exec; `None` if it never did.
pub fn read_task_pid(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join(TASK_PID))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A sandbox that is gone (the attempt never got one) has nothing to mark.
pub fn mark_acked(dir: &Path) -> Result<(), RecordError> {
    let path = dir.join(ACKED);
    match std::fs::write(&path, b"") {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(io_err(&path)),
    }
}

pub fn is_acked(dir: &Path) -> bool {
    dir.join(ACKED).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let rec = ExitRecord {
            ended: Ended::Signal(9),
            at: Utc::now(),
            stderr_bytes: None,
        };
        assert!(read::<ExitRecord>(dir.path(), EXIT).unwrap().is_none());
        write(dir.path(), EXIT, &rec).unwrap();
        let back: ExitRecord = read(dir.path(), EXIT).unwrap().unwrap();
        assert_eq!(back.ended, Ended::Signal(9));
        std::fs::write(dir.path().join(RUN), b"{not json").unwrap();
        assert!(read::<Run>(dir.path(), RUN).is_err());
    }

    #[test]
    fn a_launch_from_before_record_dirs_keeps_its_records_in_the_sandbox() {
        let spec = crate::test_spec::spec();
        let mut launch = Launch {
            argv: spec.command.clone(),
            spec,
            env: Default::default(),
            cwd: "/data/attempts/a".into(),
            records: "/run/borglet/attempts/a".into(),
            stdout: "/data/attempts/a/stdout".into(),
            stderr: "/data/attempts/a/stderr".into(),
            pid_files: vec![],
            log_max_bytes: 0,
            run_as: None,
            cgroup: None,
            created_at: Utc::now(),
        };
        assert_eq!(launch.record_dir(), Path::new("/run/borglet/attempts/a"));
        launch.records = PathBuf::new();
        let old = serde_json::to_value(&launch).unwrap();
        assert!(
            old.get("records").is_none(),
            "written as an old borglet did"
        );
        let back: Launch = serde_json::from_value(old).unwrap();
        assert_eq!(back.record_dir(), Path::new("/data/attempts/a"));
    }

    #[test]
    fn the_start_time_is_read_after_a_command_with_spaces_and_parens() {
        let line =
            b"4242 (a b) c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 8 9 10\n";
        assert_eq!(parse_state_and_start(line), Some((b'S', 987654)));
        assert_eq!(parse_state_and_start(b"4242 (x) Z 1 2"), None, "cut short");
        let me = std::process::id() as i32;
        let by_procfs = procfs::process::Process::new(me).unwrap().stat().unwrap();
        assert_eq!(ProcId::of(me).unwrap().start_ticks, by_procfs.starttime);
    }

    #[test]
    fn a_process_is_named_by_pid_and_start_time() {
        let me = ProcId::of(std::process::id() as i32).unwrap();
        assert!(me.is_alive());
        let reused = ProcId {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!reused.is_alive(), "same pid, other start time: not us");
    }
}
