//! The keeper's log files: the task writes into a pipe per stream, and the
//! keeper appends each to its log file and rotates it (`stdout` → `stdout.1`)
//! when it reaches half the cap, so at most about `log_max_bytes` of each stream
//! is kept however much the task writes. The keeper's main thread copies every
//! task's streams (`crate::keeper`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// `path` with `.1` appended: where the previous half of the log goes.
pub fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// One stream's log file, rotated at half the cap.
#[derive(Debug)]
pub struct Rotating {
    path: PathBuf,
    per_file: u64,
    /// Opened (created if need be) at the first byte: a stream the task never
    /// writes to makes no file.
    file: Option<File>,
    written: u64,
}

impl Rotating {
    /// Append to `path` from the first byte written on (what is there then
    /// counts against the cap).
    pub fn lazy(path: PathBuf, max_bytes: u64) -> Rotating {
        Rotating {
            path,
            per_file: (max_bytes / 2).max(1),
            file: None,
            written: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, mut chunk: &[u8]) -> std::io::Result<()> {
        while !chunk.is_empty() {
            let file = match self.file.take() {
                Some(file) if self.written < self.per_file => file,
                Some(_) => {
                    std::fs::rename(&self.path, rotated(&self.path))?;
                    self.written = 0;
                    open(&self.path)?
                }
                None => {
                    let file = open(&self.path)?;
                    self.written = file.metadata()?.len();
                    if self.written >= self.per_file {
                        // Full from an earlier writer: rotate before writing.
                        self.file = Some(file);
                        continue;
                    }
                    file
                }
            };
            let file = self.file.insert(file);
            let room = (self.per_file - self.written).min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..room])?;
            self.written += room as u64;
            chunk = &chunk[room..];
        }
        Ok(())
    }
}

/// Blocking: until EOF of `from`.
#[cfg(test)]
pub fn copy_rotating(from: impl std::io::Read, path: &Path, max_bytes: u64) -> std::io::Result<()> {
    copy_into(from, Rotating::lazy(path.to_path_buf(), max_bytes))
}

#[cfg(test)]
fn copy_into(mut from: impl std::io::Read, mut out: Rotating) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => out.write(&buf[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A pidfd of process `pid` (our child, not reaped yet); `None` without pidfds.
pub fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a fresh fd this process owns and nothing else holds.
    (fd >= 0).then(|| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_the_cap_and_the_newest_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout");
        let mut input = vec![b'x'; 10_000];
        input.extend_from_slice(b"the end\n");
        copy_rotating(&input[..], &path, 1000).unwrap();
        let now = std::fs::read(&path).unwrap();
        let before = std::fs::read(rotated(&path)).unwrap();
        assert!(now.len() + before.len() <= 1000);
        assert!(now.ends_with(b"the end\n"));
        assert_eq!(before.len(), 500);
        // A second writer (a restart) appends to what is there, under the same cap.
        copy_rotating(&b"again\n"[..], &path, 1000).unwrap();
        let total = std::fs::metadata(&path).unwrap().len()
            + std::fs::metadata(rotated(&path)).unwrap().len();
        assert!(total <= 1000);
        assert!(std::fs::read(&path).unwrap().ends_with(b"again\n"));
    }

    #[test]
    fn the_file_is_made_at_the_first_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stderr");
        let mut log = Rotating::lazy(path.clone(), 1000);
        log.write(b"").unwrap();
        assert!(!path.exists(), "nothing written, no file");
        log.write(b"x").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
        // A file already full from an earlier run rotates before the first byte.
        let full = dir.path().join("stdout");
        std::fs::write(&full, vec![b'o'; 500]).unwrap();
        let mut log = Rotating::lazy(full.clone(), 1000);
        log.write(b"new").unwrap();
        assert_eq!(std::fs::read(&full).unwrap(), b"new");
        assert_eq!(std::fs::read(rotated(&full)).unwrap().len(), 500);
    }
}
