//! The per-attempt shim (as containerd-shim and conmon): a small process the
//! borglet starts for each run of a task, in its own session, that starts the
//! task, waits for it and writes how it ended into the sandbox. It outlives a
//! borglet that crashes or restarts, so an exit while no borglet runs is still
//! known with its real code: a process that is not your child has no other way
//! to tell its status.
//!
//! Each shim is forked by the borglet's shim spawner (`crate::spawner`), the
//! borglet's own executable (or `jobctl`'s, which hosts the borglet) started
//! once as `EXE __borglet-spawner`; `EXE __borglet-shim SANDBOX` runs one shim
//! directly (by hand, or to debug). Every binary that can run a borglet calls
//! [`main_if_shim`] first thing in `main`.
//!
//! Protocol: the shim reads `SANDBOX/launch.json`, starts the task, writes
//! `run.json`, then tells the borglet one [`Handshake`] line on its stdout and
//! closes it. When the task exits it writes `exit.json` and exits.

use crate::records::{self, Ended, ExitRecord, Launch, ProcId, Run};
use crate::{shim_logs, shim_spawn};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitCode;

/// argv\[1\] that turns a borglet-hosting binary into a shim.
pub const SHIM_ARG: &str = "__borglet-shim";

/// The one line the shim writes to the borglet once the task started or failed to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handshake {
    Started(Run),
    Failed(String),
}

/// Run as a shim, or as the shim spawner, if argv says so (returns the exit
/// code); `None` otherwise.
pub fn main_if_shim() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    let first: Option<OsString> = args.next();
    let code = match first.as_deref().and_then(|a| a.to_str()) {
        Some(crate::spawner::SPAWNER_ARG) => crate::spawner::serve(),
        Some(SHIM_ARG) => match args.next() {
            Some(sandbox) => run(Path::new(&sandbox)),
            None => {
                eprintln!("usage: {SHIM_ARG} SANDBOX");
                2
            }
        },
        _ => return None,
    };
    Some(ExitCode::from(code.clamp(0, 255) as u8))
}

/// One shim, for the attempt in `sandbox`; the process's exit code.
pub(crate) fn run(sandbox: &Path) -> i32 {
    // Its own session: neither the borglet's terminal nor its process group
    // reach it. Fails only if already a group leader, which is as good.
    let _ = nix::unistd::setsid();
    let launch: Launch = match records::read(sandbox, records::LAUNCH) {
        Ok(Some(l)) => l,
        Ok(None) => return fail(sandbox, format!("no {}", records::LAUNCH)),
        Err(e) => return fail(sandbox, e.to_string()),
    };
    let (mut child, logs) = match spawn(&launch) {
        Ok(c) => c,
        Err(message) => return fail(sandbox, message),
    };
    // Each capped stream: the pipe's read end and its log file.
    let mut streams = Vec::new();
    if let Some([out_file, err_file]) = logs {
        let pipes = [child.stdout.take(), child.stderr.take()];
        for (pipe, (path, file)) in pipes
            .into_iter()
            .zip([(&launch.stdout, out_file), (&launch.stderr, err_file)])
        {
            let Some(pipe) = pipe else { continue };
            match shim_logs::Rotating::with_file(path.clone(), file, launch.log_max_bytes) {
                Ok(out) => streams.push((pipe, out)),
                Err(e) => eprintln!("borglet shim: cannot keep {}: {e}", path.display()),
            }
        }
    }
    let task_pid = child.pid;
    // The task has exec'd (spawn returns only then) and is not reaped yet, so
    // its /proc entry exists even if it already exited.
    let (Some(shim), Some(task)) = (ProcId::of(std::process::id() as i32), ProcId::of(task_pid))
    else {
        child.kill();
        let _ = child.wait();
        return fail(sandbox, "cannot read the task's start time".into());
    };
    let run = Run {
        shim,
        task,
        pgid: task_pid,
        started_at: Utc::now(),
    };
    if let Err(e) = records::write(sandbox, records::RUN, &run) {
        // Without the record a restarted borglet could not find the task: stop it.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(task_pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        return fail(sandbox, e.to_string());
    }
    tell(&Handshake::Started(run));

    // The task's output is copied on this thread while it runs (its pidfd says
    // when it exited), or by a thread per stream without pidfds.
    let pidfd = shim_logs::pidfd(task_pid);
    let (copied, all_copied) = std::sync::mpsc::channel::<()>();
    let mut copiers = 0;
    match &pidfd {
        Some(pidfd) => shim_logs::pump(streams, pidfd, COPIER_PATIENCE),
        None => {
            for (pipe, out) in streams {
                match shim_logs::spawn_copier(std::fs::File::from(pipe), out, copied.clone()) {
                    Ok(()) => copiers += 1,
                    Err(e) => eprintln!("borglet shim: cannot start a log copier: {e}"),
                }
            }
        }
    }
    drop(copied);
    let ended = match child.wait() {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => Ended::Code(code),
            (None, Some(sig)) => Ended::Signal(sig),
            // Neither a code nor a signal does not happen for a waited child.
            (None, None) => Ended::Code(-1),
        },
        Err(e) => {
            eprintln!("borglet shim: waiting for the task: {e}");
            return 1;
        }
    };
    // The task's last words are in the pipes: let the copiers drain them. Not
    // forever: a process that escaped the group may hold a pipe open.
    let deadline = std::time::Instant::now() + COPIER_PATIENCE;
    for _ in 0..copiers {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if all_copied.recv_timeout(left).is_err() {
            break;
        }
    }
    let record = ExitRecord {
        ended,
        at: Utc::now(),
    };
    match records::write_fresh(sandbox, records::EXIT, &record) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("borglet shim: {e}");
            1
        }
    }
}

/// How long the log copiers may take to drain after the task exited.
const COPIER_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

/// The task could not be started: record it (a restarted borglet reads it) and tell.
fn fail(sandbox: &Path, message: String) -> i32 {
    let record = ExitRecord {
        ended: Ended::ExecFailed(message.clone()),
        at: Utc::now(),
    };
    let _ = records::write_fresh(sandbox, records::EXIT, &record);
    tell(&Handshake::Failed(message));
    1
}

/// Write the handshake and close stdout, so the borglet's read ends. A borglet
/// that died meanwhile is no reason to stop (EPIPE: Rust ignores SIGPIPE).
fn tell(h: &Handshake) {
    let mut line = serde_json::to_vec(h).unwrap_or_default();
    line.push(b'\n');
    let _ = std::io::stdout().lock().write_all(&line);
    let _ = std::io::stdout().flush();
    if let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1);
    }
}

/// The task's process, and its log files when its output goes through pipes
/// (capped logs): opened before it starts, so it finds them there.
type Spawned = (shim_spawn::Task, Option<[std::fs::File; 2]>);

fn spawn(launch: &Launch) -> Result<Spawned, String> {
    let (program, args) = launch
        .argv
        .split_first()
        .ok_or_else(|| "empty command".to_string())?;
    let open = |path: &Path| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))
    };
    // Created before the task starts, so a reader finds them at once.
    let (out_file, err_file) = (open(&launch.stdout)?, open(&launch.stderr)?);
    // Capped: through a pipe to a copier that rotates; else straight to the file.
    let (output, logs) = if launch.log_max_bytes > 0 {
        (shim_spawn::Output::Pipes, Some([out_file, err_file]))
    } else {
        (shim_spawn::Output::Files(out_file, err_file), None)
    };
    shim_spawn::spawn(shim_spawn::Plan {
        program,
        args,
        env: &launch.env,
        cwd: &launch.cwd,
        pid_files: &launch.pid_files,
        output,
        run_as: launch.run_as.map(|u| (u.uid, u.gid)),
    })
    .map(|task| (task, logs))
    .map_err(|e| format!("cannot start `{program}`: {e}"))
}
