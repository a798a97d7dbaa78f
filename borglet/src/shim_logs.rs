//! The shim's log copying: the task writes into a pipe per stream, and the shim
//! appends each to its log file and rotates it (`stdout` → `stdout.1`) when it
//! reaches half the cap, so at most about `log_max_bytes` of each stream is kept
//! however much the task writes. The shim's own thread copies both streams while
//! it waits for the task ([`pump`], on a pidfd); without pidfds, a thread per
//! stream does ([`spawn_copier`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CHUNK: usize = 64 * 1024;
/// What the pump reads with at first: most tasks say little, and zeroing (and
/// faulting in) a whole `CHUNK` per start showed in the start path's profile.
/// It grows to `CHUNK` once a read fills it.
const FIRST_CHUNK: usize = 4 * 1024;
/// The copier threads do little: a small stack each.
const STACK: usize = 128 * 1024;

/// `path` with `.1` appended: where the previous half of the log goes.
pub fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// Copy `from` into `out` on a thread of its own; `done` hears once the copy
/// ended (EOF or an error).
pub fn spawn_copier(
    from: impl Read + Send + 'static,
    out: Rotating,
    done: std::sync::mpsc::Sender<()>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("log-copier".into())
        .stack_size(STACK)
        .spawn(move || {
            let path = out.path.clone();
            if let Err(e) = copy_into(from, out) {
                eprintln!("borglet shim: copying to {}: {e}", path.display());
            }
            let _ = done.send(());
        })
        .map(drop)
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// One stream's log file, rotated at half the cap.
#[derive(Debug)]
pub struct Rotating {
    path: PathBuf,
    per_file: u64,
    file: File,
    written: u64,
}

impl Rotating {
    /// Append to `path` (what is there counts against the cap).
    #[cfg(test)]
    pub fn open(path: PathBuf, max_bytes: u64) -> std::io::Result<Rotating> {
        let file = open(&path)?;
        Rotating::with_file(path, file, max_bytes)
    }

    /// The same with `file`, `path` opened for appending.
    pub fn with_file(path: PathBuf, file: File, max_bytes: u64) -> std::io::Result<Rotating> {
        let written = file.metadata()?.len();
        Ok(Rotating {
            path,
            per_file: (max_bytes / 2).max(1),
            file,
            written,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, mut chunk: &[u8]) -> std::io::Result<()> {
        while !chunk.is_empty() {
            if self.written >= self.per_file {
                std::fs::rename(&self.path, rotated(&self.path))?;
                self.file = open(&self.path)?;
                self.written = 0;
            }
            let room = (self.per_file - self.written).min(chunk.len() as u64) as usize;
            self.file.write_all(&chunk[..room])?;
            self.written += room as u64;
            chunk = &chunk[room..];
        }
        Ok(())
    }
}

/// Blocking: until EOF of `from`.
#[cfg(test)]
pub fn copy_rotating(from: impl Read, path: &Path, max_bytes: u64) -> std::io::Result<()> {
    copy_into(from, Rotating::open(path.to_path_buf(), max_bytes)?)
}

fn copy_into(mut from: impl Read, mut out: Rotating) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
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

/// Blocking: copy each stream (the read end of a task's pipe) into its log until
/// `exited` (the task's pidfd) is readable, then until each stream's EOF or
/// `patience` after the exit, whichever is first: a process that escaped the
/// task's group may hold a pipe open. A stream whose log cannot be written is
/// closed, as a copier thread that ended would have.
pub fn pump(streams: Vec<(OwnedFd, Rotating)>, exited: &OwnedFd, patience: Duration) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut streams: Vec<(File, Rotating)> = streams
        .into_iter()
        .map(|(fd, out)| (File::from(fd), out))
        .collect();
    let mut buf = vec![0u8; FIRST_CHUNK];
    let mut deadline: Option<Instant> = None;
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(_) if streams.is_empty() => return,
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return;
                }
                // Rounded up: a timeout of 0 would spin.
                PollTimeout::try_from(left.as_millis() as u64 + 1).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds: Vec<PollFd> = streams
            .iter()
            .map(|(f, _)| PollFd::new(f.as_fd(), PollFlags::POLLIN))
            .collect();
        if deadline.is_none() {
            fds.push(PollFd::new(exited.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("borglet shim: polling the task's output: {e}");
                return;
            }
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if deadline.is_none() && ready[streams.len()] {
            deadline = Some(Instant::now() + patience);
        }
        for i in (0..streams.len()).rev() {
            if !ready[i] {
                continue;
            }
            let (from, out) = &mut streams[i];
            let keep = match from.read(&mut buf) {
                Ok(0) => false,
                Ok(n) => {
                    let kept = out.write(&buf[..n]).map_err(|e| {
                        eprintln!("borglet shim: copying to {}: {e}", out.path().display())
                    });
                    if n == buf.len() && n < CHUNK {
                        buf.resize(CHUNK, 0);
                    }
                    kept.is_ok()
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => true,
                Err(e) => {
                    eprintln!("borglet shim: reading the task's output: {e}");
                    false
                }
            };
            if !keep {
                streams.remove(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// `sh -c script` with its output piped, pumped into `dir` (cap `max`) until
    /// it exited and its pipes closed, or `patience` after.
    fn pumped(dir: &Path, script: &str, max: u64, patience: Duration) -> std::process::Child {
        let mut child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let streams = vec![
            (
                OwnedFd::from(child.stdout.take().unwrap()),
                Rotating::open(dir.join("stdout"), max).unwrap(),
            ),
            (
                OwnedFd::from(child.stderr.take().unwrap()),
                Rotating::open(dir.join("stderr"), max).unwrap(),
            ),
        ];
        let exited = pidfd(child.id() as i32).expect("pidfds (Linux 5.3)");
        pump(streams, &exited, patience);
        child
    }

    #[test]
    fn one_thread_copies_both_streams_until_the_task_ended_and_its_pipes_closed() {
        let dir = tempfile::tempdir().unwrap();
        let script = "i=0; while [ $i -lt 300 ]; do echo out $i; echo err $i >&2; i=$((i+1)); done; echo last";
        let mut child = pumped(dir.path(), script, 2000, Duration::from_secs(60));
        assert!(child.wait().unwrap().success());
        let out = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
        let err = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
        assert!(out.ends_with("out 299\nlast\n"), "{out}");
        assert!(err.ends_with("err 299\n"), "{err}");
        let rotated_out = std::fs::read(rotated(&dir.path().join("stdout"))).unwrap();
        assert!(out.len() + rotated_out.len() <= 2000, "capped");
    }

    #[test]
    fn a_process_that_keeps_a_pipe_open_is_waited_for_only_patience_long() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        // `cat` (its stdin the test's pipe, explicitly: a background job's would be
        // /dev/null) outlives the shell and holds its stdout until that stdin closes,
        // which only happens once `pump` has returned.
        let script = "exec 9<&0; cat <&9 >/dev/null & echo bye";
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let child = pumped(&path, script, 1 << 20, Duration::from_millis(100));
            let _ = tx.send(child);
        });
        let mut child = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("pump returned though a pipe is still open");
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
        let out = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
        assert_eq!(out, "bye\n");
    }

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
}
