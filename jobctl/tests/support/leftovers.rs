//! A test cell's borglets leave running tasks behind when they exit (to be
//! re-adopted, as in production), and a SIGKILLed borglet cannot stop them:
//! once a cell is gone its tests end every task it left, found by working
//! directory (each task runs in its sandbox under the cell's data dir). Each
//! task's shim then records the exit and ends too.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::path::Path;

/// SIGKILL the process group of every process whose working directory is under `dir`.
pub fn kill_tasks_under(dir: &Path) {
    let Ok(procs) = procfs::process::all_processes() else {
        return;
    };
    for p in procs.flatten() {
        let inside = p.cwd().is_ok_and(|cwd| cwd.starts_with(dir));
        let pgrp = p.stat().map(|s| s.pgrp).unwrap_or(0);
        // pgid 0 or 1 would be the caller's own group or init's.
        if inside && pgrp > 1 {
            let _ = killpg(Pid::from_raw(pgrp), Signal::SIGKILL);
        }
    }
}
