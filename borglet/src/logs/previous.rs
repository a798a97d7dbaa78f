//! The previous run's output (`jobctl logs --previous`): before an in-place
//! restart, each stream's file (and its rotated half, `.1`, see
//! `crate::shim_logs`) is renamed to `<stream>.previous` (`.previous.1`),
//! replacing the run before it. So an attempt's sandbox keeps at most two runs
//! of each stream, each under the `--log-max-bytes` cap.

use borg_shared::wire::LogStream;
use std::io;
use std::path::Path;

/// The file holding `stream` of the run before the current one.
pub fn file_name(stream: LogStream) -> String {
    format!("{}.previous", stream.file_name())
}

/// Blocking: keep the ended run's logs in `sandbox` as the previous run's.
/// Renames never follow a symlink the task may have put there; serving checks
/// the file lies in the sandbox (`confine.rs`).
pub fn keep_previous_run(sandbox: &Path) -> io::Result<()> {
    for stream in [LogStream::Stdout, LogStream::Stderr] {
        let current = stream.file_name();
        let previous = file_name(stream);
        move_or_clear(sandbox, current, &previous)?;
        move_or_clear(sandbox, &format!("{current}.1"), &format!("{previous}.1"))?;
    }
    Ok(())
}

/// Rename `from` to `to` in `dir`; when `from` does not exist, remove `to`
/// (an older run's file must not pass for the last one's).
fn move_or_clear(dir: &Path, from: &str, to: &str) -> io::Result<()> {
    let ignore_missing = |r: io::Result<()>| match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    };
    match std::fs::rename(dir.join(from), dir.join(to)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            ignore_missing(std::fs::remove_file(dir.join(to)))
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ended_run_becomes_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("stdout"), "run 1\n").unwrap();
        std::fs::write(d.join("stdout.1"), "run 1, older half\n").unwrap();
        std::fs::write(d.join("stderr"), "err 1\n").unwrap();
        keep_previous_run(d).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("stdout.previous")).unwrap(),
            "run 1\n"
        );
        assert!(d.join("stdout.previous.1").exists());
        assert!(!d.join("stdout").exists() && !d.join("stdout.1").exists());

        // The next run did not rotate: the older run's rotated half is gone.
        std::fs::write(d.join("stdout"), "run 2\n").unwrap();
        std::fs::write(d.join("stderr"), "err 2\n").unwrap();
        keep_previous_run(d).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("stdout.previous")).unwrap(),
            "run 2\n"
        );
        assert_eq!(
            std::fs::read_to_string(d.join("stderr.previous")).unwrap(),
            "err 2\n"
        );
        assert!(
            !d.join("stdout.previous.1").exists(),
            "run 1's half is not run 2's"
        );
    }
}
