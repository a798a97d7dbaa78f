//! Joining a cgroup from a forked child before exec. The files to join through
//! (`AttemptCgroup::join_files`) are opened in the parent (allocation, paths);
//! the child then only write(2)s `0` ("the caller") to each open descriptor:
//! async-signal-safe, so it may run in `pre_exec`. The descriptors are
//! close-on-exec: the task never sees them.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// Open cgroup membership files, ready for `join_self` in a forked child.
#[derive(Debug)]
pub struct CgroupJoin {
    files: Vec<File>,
}

impl CgroupJoin {
    /// Open every file for writing (close-on-exec, as std opens them).
    pub fn open(procs_files: &[PathBuf]) -> std::io::Result<CgroupJoin> {
        let files = procs_files
            .iter()
            .map(|p| OpenOptions::new().write(true).open(p))
            .collect::<std::io::Result<Vec<File>>>()?;
        Ok(CgroupJoin { files })
    }

    /// No cgroup to join (isolation off).
    pub fn none() -> CgroupJoin {
        CgroupJoin { files: Vec::new() }
    }

    /// Move the calling process into every cgroup. Only write(2) and errno: safe
    /// between fork and exec, where allocating or locking could deadlock.
    pub fn join_self(&self) -> std::io::Result<()> {
        for f in &self.files {
            // SAFETY: a valid open descriptor and a 1-byte static buffer.
            let n = unsafe { libc::write(f.as_raw_fd(), b"0".as_ptr().cast(), 1) };
            if n != 1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}
