//! The isolation side of an attempt's end: anything its leader left in the
//! cgroup is killed, the final counters are read (an OOM kill, the peak memory),
//! the cgroup is removed, and the last 4 KiB of stderr are kept for the death
//! certificate.

use super::cgroup::AttemptCgroup;
use borg_shared::{AttemptId, Bytes};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

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
/// escaped with setsid goes too), read its counters, remove it, and read the
/// stderr tail from `sandbox`. Blocking: run it off the async threads.
pub fn finish(id: AttemptId, cgroup: Option<&AttemptCgroup>, sandbox: &Path) -> Ending {
    let mut ending = Ending {
        stderr_tail: stderr_tail(&sandbox.join("stderr")),
        ..Ending::default()
    };
    let Some(cg) = cgroup else {
        return ending;
    };
    if let Err(e) = cg.kill_all() {
        tracing::warn!(attempt = %id, error = %e, "could not empty the attempt's cgroup");
    }
    let stats = cg.stats();
    ending.oom_killed = stats.oom_kills > 0;
    ending.peak_memory = stats.peak_memory.map(Bytes);
    if let Err(e) = cg.remove() {
        tracing::warn!(attempt = %id, error = %e, "could not remove the attempt's cgroup");
    }
    ending
}

/// The last `STDERR_TAIL` bytes of a file as text (invalid UTF-8 replaced, a
/// character cut at the start dropped); `None` if it is missing or empty.
pub fn stderr_tail(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    if len == 0 {
        return None;
    }
    let start = len.saturating_sub(STDERR_TAIL);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.take(STDERR_TAIL).read_to_end(&mut buf).ok()?;
    let skip = if start > 0 {
        buf.iter()
            .take(3)
            .take_while(|b| (**b & 0xC0) == 0x80)
            .count()
    } else {
        0
    };
    Some(String::from_utf8_lossy(&buf[skip..]).into_owned())
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
    fn without_a_cgroup_only_the_tail_is_known() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stderr"), "boom\n").unwrap();
        let e = finish(AttemptId::new(), None, dir.path());
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
