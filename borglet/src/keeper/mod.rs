//! The keeper: one long-lived process per borglet (per data dir) that starts
//! every task, is its parent, copies its output into its capped log files,
//! reaps it and writes how it ended (`exit.json`) into its record dir. It runs in
//! a session of its own and outlives the borglet: a borglet killed with
//! `kill -9` leaves the keeper and every task running, and exits that happen
//! while no borglet is there are still recorded with their real status. A
//! restarted borglet connects to the same keeper again (a unix socket in the
//! data dir, `keeper.sock`) instead of starting a second one; a lock file
//! (`keeper.lock`, held for the keeper's life) makes sure there is never more
//! than one.
//!
//! It replaces a shim process per task (as containerd-shim and conmon): the
//! fork of that shim, its exit and its own files were more than half of the
//! CPU a start cost (BENCHMARKS.md).
//!
//! Protocol, over a `SOCK_SEQPACKET` connection, one JSON message per packet:
//! the borglet says [`ToKeeper::Hello`] first and waits for
//! [`FromKeeper::Hello`] (from then on it hears of every exit), then asks
//! [`ToKeeper::Start`] per run (the launch record, which it has also written
//! to its record dir); the keeper answers `Started` (after `run.json` is written)
//! or `Failed` (after `exit.json` says why), and tells every connected borglet
//! `Exited` once a task's `exit.json` is written.
//!
//! The keeper exits once no borglet is connected, it keeps no task and no
//! start is in flight (so a borglet that stops its tasks at shutdown leaves
//! nothing behind); one no borglet ever connected to exits after 10 s.
//!
//! Started as `EXE __borglet-keeper DATA_DIR` (by [`client::KeeperClient`]);
//! every binary that can run a borglet calls [`crate::shim::main_if_shim`]
//! first thing in `main`.

pub mod client;
mod serve;
mod starters;
mod task;

use crate::records::{ExitRecord, Launch, ProcId, Run};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use client::KeeperClient;
pub(crate) use serve::serve;

/// argv\[1\] that turns a borglet-hosting binary into the keeper.
pub const KEEPER_ARG: &str = "__borglet-keeper";

/// The process name (`/proc/PID/comm`) of the keeper.
pub const KEEPER_NAME: &std::ffi::CStr = c"borglet-keeper";

/// In the data dir: the keeper's socket, its lock, and its own error log.
pub const SOCKET: &str = "keeper.sock";
pub const LOCK: &str = "keeper.lock";
pub const LOG: &str = "keeper.log";

/// Largest message either side accepts (a launch record with its spec).
const MAX_MESSAGE: usize = 256 * 1024;

/// From a borglet to the keeper.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToKeeper {
    Hello,
    /// Start the run `launch` describes, in `launch.cwd` (its sandbox).
    Start(Box<Launch>),
}

/// From the keeper to a borglet. `sandbox` names the attempt.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromKeeper {
    Hello { keeper: ProcId },
    Started { sandbox: PathBuf, run: Run },
    Failed { sandbox: PathBuf, why: String },
    Exited { sandbox: PathBuf, exit: ExitRecord },
}

/// A unix socket address for `dir/SOCKET`. Paths are limited to 107 bytes: a
/// longer one is reached through `/proc/self/fd/N/` of `dir` opened here, which
/// must then stay open while the address is used.
fn socket_addr(dir: &Path) -> std::io::Result<(nix::sys::socket::UnixAddr, Option<OwnedFd>)> {
    let path = dir.join(SOCKET);
    if path.as_os_str().as_bytes().len() < 100 {
        return Ok((nix::sys::socket::UnixAddr::new(&path)?, None));
    }
    let dirfd: OwnedFd = std::fs::File::open(dir)?.into();
    let short = PathBuf::from(format!("/proc/self/fd/{}/{SOCKET}", dirfd.as_raw_fd()));
    Ok((nix::sys::socket::UnixAddr::new(&short)?, Some(dirfd)))
}
