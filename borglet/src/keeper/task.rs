//! One task the keeper keeps: how it is started (the process started by
//! `crate::shim_spawn`, `run.json` written) and what the
//! keeper holds of it until its `exit.json` is written: its pid and pidfd, and
//! each piped output stream with its rotating log file.

use crate::records::{self, Ended, ExitRecord, Launch, ProcId, Run};
use crate::shim_logs::Rotating;
use crate::shim_spawn;
use chrono::Utc;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A task started and not yet recorded as ended.
#[derive(Debug)]
pub(super) struct Task {
    /// Names the attempt to the borglet.
    pub sandbox: PathBuf,
    /// Where its `exit.json` goes.
    pub records: PathBuf,
    pub pid: i32,
    /// Readable once the task exited; `None` without pidfds (the keeper then
    /// looks for its end whenever a wait of up to a second passes idle).
    pub pidfd: Option<std::os::fd::OwnedFd>,
    /// stdout, stderr: the pipe's read end and its log, while the pipe is open
    /// (`None` once closed, or when output goes straight to the files).
    pub streams: [Option<(File, Rotating)>; 2],
    /// How it ended, and until when its pipes are drained (a process that
    /// escaped its group may hold them open).
    pub ended: Option<(Ended, Instant)>,
    /// Bytes copied from its stderr pipe so far; `None` when there is no such
    /// pipe (output straight to the files, or its log could not be kept).
    pub stderr_bytes: Option<u64>,
}

impl Task {
    /// Both pipes closed: nothing more to copy.
    pub fn drained(&self) -> bool {
        self.streams.iter().all(Option::is_none)
    }
}

/// The keeper's own soft and hard limit of open files as it found them, given
/// back to each task before it execs (the keeper raises its own).
pub(super) type NoFile = Option<(u64, u64)>;

/// Start the run `launch` describes; on success `run.json` is written. On
/// failure, why (the caller records it in `exit.json`).
pub(super) fn start(
    launch: &Launch,
    keeper: ProcId,
    nofile: NoFile,
) -> Result<(Task, Run), String> {
    let sandbox = launch.cwd.clone();
    let (program, args) = launch
        .argv
        .split_first()
        .ok_or_else(|| "empty command".to_string())?;
    // Capped: through a pipe the keeper copies and rotates into files made at
    // their first byte (a silent task makes none); else straight to the files,
    // which the task then needs open before it starts.
    let (output, logs) = if launch.log_max_bytes > 0 {
        (shim_spawn::Output::Pipes, true)
    } else {
        let open = |path: &Path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))
        };
        let files = shim_spawn::Output::Files(open(&launch.stdout)?, open(&launch.stderr)?);
        (files, false)
    };
    let mut child = shim_spawn::spawn(shim_spawn::Plan {
        program,
        args,
        env: &launch.env,
        cwd: &launch.cwd,
        pid_files: &launch.pid_files,
        output,
        run_as: launch.run_as.map(|u| (u.uid, u.gid)),
        nofile,
    })
    .map_err(|e| {
        format!(
            "cannot start `{program}`: {}",
            crate::os_words::io_error(&e)
        )
    })?;
    let mut streams = [None, None];
    if logs {
        let pipes = [child.stdout.take(), child.stderr.take()];
        let paths = [&launch.stdout, &launch.stderr];
        for (slot, (pipe, path)) in streams.iter_mut().zip(pipes.into_iter().zip(paths)) {
            let Some(pipe) = pipe else { continue };
            let out = Rotating::lazy(path.clone(), launch.log_max_bytes);
            *slot = Some((File::from(pipe), out));
        }
    }
    let pid = child.pid;
    let stop = |why: String| {
        // Without its record a restarted borglet could not find the task: stop it.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        why
    };
    // The task has exec'd (spawn returns only then) and is not reaped yet, so
    // its /proc entry exists even if it already exited.
    let Some(task) = ProcId::of(pid) else {
        return Err(stop("cannot read the task's start time".into()));
    };
    let run = Run {
        shim: keeper,
        task,
        pgid: pid,
        started_at: Utc::now(),
    };
    let dir = launch.record_dir().to_path_buf();
    if let Err(e) = records::write_fresh(&dir, records::RUN, &run) {
        return Err(stop(e.to_string()));
    }
    let pidfd = crate::shim_logs::pidfd(pid);
    let stderr_bytes = streams[1].is_some().then_some(0);
    Ok((
        Task {
            sandbox,
            records: dir,
            pid,
            pidfd,
            streams,
            ended: None,
            stderr_bytes,
        },
        run,
    ))
}

/// Record how a run ended (or why it never started) in its record dir `dir`,
/// with the bytes it wrote to stderr where they were counted.
pub(super) fn record_exit(dir: &Path, ended: Ended, stderr_bytes: Option<u64>) -> ExitRecord {
    let record = ExitRecord {
        ended,
        at: Utc::now(),
        stderr_bytes,
    };
    if let Err(e) = records::write_fresh(dir, records::EXIT, &record) {
        eprintln!("borglet keeper: {e}");
    }
    record
}

/// A wait status as the record says it.
pub(super) fn ended_of(status: nix::sys::wait::WaitStatus) -> Option<(i32, Ended)> {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), Ended::Code(code))),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), Ended::Signal(sig as i32))),
        _ => None,
    }
}
