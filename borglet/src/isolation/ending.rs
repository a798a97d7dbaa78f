//! The isolation side of an attempt's end: anything its leader left in the
//! cgroup is killed, the final counters are read (an OOM kill, the peak memory),
//! the cgroup is removed, and the last 4 KiB of stderr are kept for the death
//! certificate.

use super::cgroup::AttemptCgroup;
use super::Isolator;
use borg_shared::{AttemptId, Bytes};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How much of the end of stderr the death certificate keeps.
pub const STDERR_TAIL: u64 = 4096;

/// What the end of an attempt adds to its exit status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ending {
    pub oom_killed: bool,
    pub peak_memory: Option<Bytes>,
    pub stderr_tail: Option<String>,
}

/// After the leader exited: kill what is left in the cgroup (a daemon that
/// escaped with setsid goes too), read its counters, retire it (removed, or
/// kept as a spare by `isolator`), and read the stderr tail from `sandbox` (its
/// `stderr` file, and the rotated `stderr.1` before it when `stderr` holds less
/// than the tail) unless `tail` is false (the run is known to have written
/// none). Blocking: run it off the async threads.
pub fn finish(
    isolator: &dyn Isolator,
    id: AttemptId,
    cgroup: Option<Arc<AttemptCgroup>>,
    sandbox: &Path,
    tail: bool,
) -> Ending {
    let mut ending = Ending {
        stderr_tail: tail
            .then(|| tail_of(&[sandbox.join("stderr.1"), sandbox.join("stderr")]))
            .flatten(),
        ..Ending::default()
    };
    let Some(cg) = cgroup else {
        return ending;
    };
    let emptied = cg.kill_all();
    if let Err(e) = &emptied {
        tracing::warn!(attempt = %id, error = %e, "could not empty the attempt's cgroup");
    }
    let stats = cg.stats();
    ending.oom_killed = stats.oom_kills > 0;
    ending.peak_memory = stats.peak_memory.map(Bytes);
    if let Err(e) = isolator.retire(id, cg, emptied.is_ok().then_some(&stats)) {
        tracing::warn!(attempt = %id, error = %e, "could not remove the attempt's cgroup");
    }
    ending
}

/// The last `STDERR_TAIL` bytes of a file as text (invalid UTF-8 replaced, a
/// character cut at the start dropped); `None` if it is missing or empty.
pub fn stderr_tail(path: &Path) -> Option<String> {
    tail_of(&[path.to_path_buf()])
}

/// The last `STDERR_TAIL` bytes of `files` read one after the other (oldest
/// first; missing ones are empty), as text like `stderr_tail`.
fn tail_of(files: &[PathBuf]) -> Option<String> {
    let mut buf: Vec<u8> = Vec::new();
    for path in files.iter().rev() {
        let want = STDERR_TAIL - buf.len() as u64;
        if want == 0 {
            break;
        }
        let mut older = last_bytes(path, want).unwrap_or_default();
        older.append(&mut buf);
        buf = older;
    }
    if buf.is_empty() {
        return None;
    }
    // A character cut at the start: its continuation bytes are dropped (text
    // never starts with one otherwise).
    let skip = buf
        .iter()
        .take(3)
        .take_while(|b| (**b & 0xC0) == 0x80)
        .count();
    Some(String::from_utf8_lossy(&buf[skip..]).into_owned())
}

/// Up to the last `n` bytes of a file.
fn last_bytes(path: &Path, n: u64) -> Option<Vec<u8>> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(n);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.take(n).read_to_end(&mut buf).ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_is_the_last_4_kib() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stderr");
        assert_eq!(stderr_tail(&p), None, "missing");
        std::fs::write(&p, "").unwrap();
        assert_eq!(stderr_tail(&p), None, "empty");
        std::fs::write(&p, "short\n").unwrap();
        assert_eq!(stderr_tail(&p).as_deref(), Some("short\n"));
        let mut long = "x".repeat(10_000);
        long.push_str("the end\n");
        std::fs::write(&p, &long).unwrap();
        let tail = stderr_tail(&p).unwrap();
        assert_eq!(tail.len(), 4096);
        assert!(tail.ends_with("the end\n"));
        // A 3-byte character cut by the 4 KiB boundary is dropped, not garbled.
        let mut cut = "€".repeat(2000);
        cut.push('!');
        std::fs::write(&p, &cut).unwrap();
        let tail = stderr_tail(&p).unwrap();
        assert!(tail.chars().all(|c| c == '€' || c == '!'), "{tail:?}");
    }

    #[test]
    fn a_rotated_stderr_gives_the_start_of_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("stderr.1"), format!("{}older\n", "o".repeat(8000))).unwrap();
        std::fs::write(d.join("stderr"), "newest\n").unwrap();
        let tail_of = |d: &std::path::Path| {
            finish(
                &crate::isolation::Unisolated,
                AttemptId::new(),
                None,
                d,
                true,
            )
            .stderr_tail
            .unwrap()
        };
        let tail = tail_of(d);
        assert_eq!(tail.len(), 4096);
        assert!(tail.ends_with("older\nnewest\n"), "{tail:?}");
        // The newest file alone when it holds the whole tail.
        std::fs::write(d.join("stderr"), "n".repeat(5000)).unwrap();
        let tail = tail_of(d);
        assert_eq!(tail, "n".repeat(4096));
    }

    #[test]
    fn without_a_cgroup_only_the_tail_is_known() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stderr"), "boom\n").unwrap();
        let e = finish(
            &crate::isolation::Unisolated,
            AttemptId::new(),
            None,
            dir.path(),
            true,
        );
        assert_eq!(
            e,
            Ending {
                oom_killed: false,
                peak_memory: None,
                stderr_tail: Some("boom\n".into())
            }
        );
    }
}
