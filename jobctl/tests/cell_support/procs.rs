//! The processes of a test's dev cell, read from `/proc`.

use nix::sys::signal::kill;
use nix::unistd::Pid;

pub fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

/// (pid, parent pid, state) of every process.
fn process_table() -> Vec<(i32, i32, char)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_string_lossy().parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let mut rest = stat.rsplit(')').next()?.split_whitespace();
            let state = rest.next()?.chars().next()?;
            let ppid = rest.next()?.parse().ok()?;
            Some((pid, ppid, state))
        })
        .collect()
}

/// Every live descendant of `root`.
pub fn descendants(root: i32) -> Vec<i32> {
    let table = process_table();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            table
                .iter()
                .filter(|(_, pp, _)| *pp == parent)
                .map(|(p, _, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

pub fn argv(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// A task (its environment names an attempt) or a borglet's keeper, which
/// keeps running tasks after its borglet exited.
pub fn is_task_or_keeper(pid: i32) -> bool {
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    env.split(|b| *b == 0)
        .any(|kv| kv.starts_with(b"BORG_ATTEMPT="))
        || argv(pid).iter().any(|a| a == "__borglet-keeper")
}

pub fn alive_not_zombie(pid: i32) -> bool {
    process_table()
        .iter()
        .any(|(p, _, state)| *p == pid && *state != 'Z')
}
