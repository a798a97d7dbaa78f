//! The shim's log copier: the task writes into a pipe, the copier appends to the
//! log file and rotates it (`stdout` → `stdout.1`) when it reaches half the cap,
//! so at most about `log_max_bytes` of each stream is kept however much the task
//! writes. Runs on a thread of the shim; ends at the pipe's EOF.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const CHUNK: usize = 64 * 1024;
/// The copier threads do little: a small stack each.
const STACK: usize = 128 * 1024;

/// `path` with `.1` appended: where the previous half of the log goes.
pub fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// Copy `from` into `path`, rotating at `max_bytes / 2`, on a thread of its
/// own; `done` hears once the copy ended (EOF or an error).
pub fn spawn_copier(
    from: impl Read + Send + 'static,
    path: PathBuf,
    max_bytes: u64,
    done: std::sync::mpsc::Sender<()>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("log-copier".into())
        .stack_size(STACK)
        .spawn(move || {
            if let Err(e) = copy_rotating(from, &path, max_bytes) {
                eprintln!("borglet shim: copying to {}: {e}", path.display());
            }
            let _ = done.send(());
        })
        .map(drop)
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Blocking: until EOF of `from`.
pub fn copy_rotating(mut from: impl Read, path: &Path, max_bytes: u64) -> std::io::Result<()> {
    let per_file = (max_bytes / 2).max(1);
    let mut file = open(path)?;
    let mut written = file.metadata()?.len();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            if written >= per_file {
                std::fs::rename(path, rotated(path))?;
                file = open(path)?;
                written = 0;
            }
            let room = (per_file - written).min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..room])?;
            written += room as u64;
            chunk = &chunk[room..];
        }
    }
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
}
