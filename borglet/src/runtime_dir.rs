//! Which runtime dir holds a data dir's records (`--runtime-dir`): named in
//! `<data-dir>/runtime-dir`, so that a borglet restarted with another runtime
//! dir refuses to start instead of missing the attempts the last one recorded
//! and starting them a second time beside the ones still running.

use crate::records::{self, RecordError};
use crate::supervisor::records_dir;
use std::path::{Path, PathBuf};

pub const FILE: &str = "runtime-dir";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeDirError {
    #[error(
        "the attempts of data dir {data} are recorded in {recorded}, not in --runtime-dir {asked}: \
         start with --runtime-dir {recorded}, or remove {recorded}/attempts if those attempts are gone"
    )]
    Moved {
        data: String,
        recorded: String,
        asked: String,
    },
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// Blocking: check that `runtime` is where the last borglet on `data` kept
/// its records (or that nothing is recorded where it did), then note it.
/// Both paths canonical.
pub fn claim(data: &Path, runtime: &Path) -> Result<(), RuntimeDirError> {
    let recorded: Option<PathBuf> = records::read(data, FILE)?;
    match recorded {
        Some(recorded) if recorded == runtime => return Ok(()),
        Some(recorded) if has_records(&recorded) => {
            return Err(RuntimeDirError::Moved {
                data: data.display().to_string(),
                recorded: recorded.display().to_string(),
                asked: runtime.display().to_string(),
            })
        }
        _ => {}
    }
    records::write(data, FILE, &runtime)?;
    Ok(())
}

/// The process groups of the tasks the borglet on `data` left running (its
/// record has a run and no exit, and the task is alive), sorted: what keeps
/// running when a borglet stops with `--on-exit keep`. Blocking.
pub fn tasks_left_running(data: &Path) -> Vec<i32> {
    let Ok(Some(runtime)) = records::read::<PathBuf>(data, FILE) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(records_dir(&runtime)) else {
        return Vec::new();
    };
    let mut groups: Vec<i32> = entries
        .flatten()
        .filter_map(|e| {
            let dir = e.path();
            if dir.join(records::EXIT).exists() {
                return None;
            }
            let run: records::Run = records::read(&dir, records::RUN).ok()??;
            run.task.is_alive().then_some(run.pgid)
        })
        .collect();
    groups.sort_unstable();
    groups
}

fn has_records(runtime: &Path) -> bool {
    std::fs::read_dir(records_dir(runtime)).is_ok_and(|mut d| d.next().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_runtime_dir_is_refused_while_the_last_one_holds_records() {
        let data = tempfile::tempdir().unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        claim(data.path(), a.path()).unwrap();
        claim(data.path(), a.path()).unwrap();
        // Nothing recorded in a yet: moving is fine, and b is noted.
        claim(data.path(), b.path()).unwrap();
        std::fs::create_dir_all(records_dir(b.path()).join("some-attempt")).unwrap();
        let refused = claim(data.path(), a.path()).unwrap_err();
        let text = refused.to_string();
        assert!(text.contains(&b.path().display().to_string()), "{text}");
        // The records gone (a reboot cleared a tmpfs): a is taken.
        std::fs::remove_dir_all(records_dir(b.path())).unwrap();
        claim(data.path(), a.path()).unwrap();
        let noted: Option<PathBuf> = records::read(data.path(), FILE).unwrap();
        assert_eq!(noted.as_deref(), Some(a.path()));
    }

    #[test]
    fn the_tasks_left_running_are_those_with_a_live_run_and_no_exit() {
        let data = tempfile::tempdir().unwrap();
        assert!(
            tasks_left_running(data.path()).is_empty(),
            "no borglet ran here"
        );
        let runtime = tempfile::tempdir().unwrap();
        claim(data.path(), runtime.path()).unwrap();
        let me = records::ProcId::of(std::process::id() as i32).unwrap();
        let gone = records::ProcId {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        let record = |name: &str, task: records::ProcId, pgid: i32, exited: bool| {
            let dir = records_dir(runtime.path()).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let run = records::Run {
                shim: me,
                task,
                pgid,
                started_at: chrono::Utc::now(),
            };
            records::write(&dir, records::RUN, &run).unwrap();
            if exited {
                std::fs::write(dir.join(records::EXIT), "{}").unwrap();
            }
        };
        record("running", me, 42, false);
        record("ended", me, 43, true);
        record("pid-reused", gone, 44, false);
        std::fs::create_dir_all(records_dir(runtime.path()).join("never-ran")).unwrap();
        assert_eq!(tasks_left_running(data.path()), vec![42]);
    }
}
