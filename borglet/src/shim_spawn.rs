//! How the keeper starts a task: `clone(CLONE_VM | CLONE_VFORK)`, as glibc's
//! `posix_spawn` does, instead of `fork`. The child borrows the keeper's memory
//! until it execs (the keeper waits meanwhile), so nothing of the keeper is
//! copied and nothing torn down at the exec: a fork copied the page tables and
//! faulted the pages back in (`perf`: ~7 % of the CPU of a start, BENCHMARKS.md).
//!
//! Before exec the child makes its own session, writes itself into the
//! `pid_files` (joins its cgroups by writing `0`, then writes its pid into
//! `task.pid`), takes its stdio, moves to the sandbox, gets the limit of open
//! files the keeper found, and drops to the task's user. Everything it needs is
//! prepared by the parent; the child makes only system calls (no allocation,
//! no lock), and reports a failure by storing its errno in the memory it
//! shares with the parent before it exits (as glibc's `posix_spawn` does): 0
//! there once the parent resumes means it exec'd. No pipe per start.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

/// The child's stack: it only makes system calls.
const STACK: usize = 64 * 1024;

/// A started task: the keeper's child, not reaped until [`Task::wait`].
#[derive(Debug)]
pub struct Task {
    pub pid: i32,
    /// Read ends of its output pipes, when its output is piped.
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

impl Task {
    /// Blocking: reap the task.
    pub fn wait(&self) -> std::io::Result<ExitStatus> {
        let mut status = 0;
        loop {
            // SAFETY: waitpid on our own child with a valid status pointer.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == self.pid {
                return Ok(ExitStatus::from_raw(status));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Where the task's stdio goes: stdin is always /dev/null.
pub enum Output {
    /// Into these files (uncapped logs).
    Files(std::fs::File, std::fs::File),
    /// Into pipes, whose read ends the [`Task`] holds.
    Pipes,
}

/// What to start, and how.
pub struct Plan<'a> {
    pub program: &'a str,
    pub args: &'a [String],
    pub env: &'a std::collections::BTreeMap<String, String>,
    pub cwd: &'a Path,
    pub pid_files: &'a [std::path::PathBuf],
    pub output: Output,
    /// (uid, gid) to drop to before exec.
    pub run_as: Option<(u32, u32)>,
    /// Soft and hard `RLIMIT_NOFILE` set before exec (the keeper raises its own).
    pub nofile: Option<(u64, u64)>,
}

/// Everything the child reads: prepared by the parent, only borrowed by the child.
struct ChildArgs {
    programs: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: CString,
    /// Each with whether it is a cgroup membership file (written `0`, "the
    /// caller") rather than a record (written the pid).
    pid_files: Vec<(CString, bool)>,
    stdio: [RawFd; 3],
    run_as: Option<(libc::uid_t, libc::gid_t)>,
    nofile: Option<libc::rlimit>,
    /// The errno of a failure before exec; 0 if the child exec'd.
    report: AtomicI32,
}

/// Whether writing the caller into `path` joins a cgroup (see
/// `AttemptCgroup::join_files`: `0` into a v1 `tasks` file skips a global lock
/// that a pid takes).
fn joins_cgroup(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|name| name == "tasks" || name == "cgroup.procs")
}

fn cstring(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| std::io::Error::other("a NUL byte in an argument"))
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

thread_local! {
    /// The stack the last child cloned by this thread ran on, for the next one
    /// (a thread clones one child at a time, and is suspended until it is done
    /// with it).
    static CHILD_STACK: std::cell::Cell<Option<Vec<u8>>> = const { std::cell::Cell::new(None) };
}

/// Start the task as `plan` says; the error is why it could not start.
pub fn spawn(plan: Plan<'_>) -> std::io::Result<Task> {
    // Candidates for the executable: as given with a `/`, else along the task's PATH.
    let programs: Vec<CString> = if plan.program.contains('/') {
        vec![cstring(plan.program.as_bytes())?]
    } else {
        let path = plan
            .env
            .get("PATH")
            .map(String::as_str)
            .unwrap_or("/usr/local/bin:/usr/bin:/bin");
        path.split(':')
            .map(|dir| match dir {
                "" => cstring(plan.program.as_bytes()),
                dir => cstring(format!("{dir}/{}", plan.program).as_bytes()),
            })
            .collect::<Result<_, _>>()?
    };
    let argv_c: Vec<CString> = std::iter::once(plan.program)
        .chain(plan.args.iter().map(String::as_str))
        .map(|a| cstring(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let envp_c: Vec<CString> = plan
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}").as_bytes()))
        .collect::<Result<_, _>>()?;
    let null = dev_null()?;
    let (stdout_w, stderr_w, stdout_r, stderr_r): (OwnedFd, OwnedFd, _, _) = match plan.output {
        Output::Files(out, err) => (out.into(), err.into(), None, None),
        Output::Pipes => {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            (out_w, err_w, Some(out_r), Some(err_r))
        }
    };
    let mut args = ChildArgs {
        programs,
        argv: argv_c.iter().map(|c| c.as_ptr()).collect(),
        envp: envp_c.iter().map(|c| c.as_ptr()).collect(),
        cwd: cstring(plan.cwd.as_os_str().as_bytes())?,
        pid_files: plan
            .pid_files
            .iter()
            .map(|p| Ok((cstring(OsStr::as_bytes(p.as_os_str()))?, joins_cgroup(p))))
            .collect::<std::io::Result<_>>()?,
        stdio: [null, stdout_w.as_raw_fd(), stderr_w.as_raw_fd()],
        run_as: plan.run_as,
        nofile: plan.nofile.map(|(cur, max)| libc::rlimit {
            rlim_cur: cur,
            rlim_max: max,
        }),
        report: AtomicI32::new(0),
    };
    args.argv.push(std::ptr::null());
    args.envp.push(std::ptr::null());
    // Not zeroed: only the child writes it, as its stack (zeroing and faulting
    // in 64 KiB per start showed in the profile). One per thread, kept: a
    // 64 KiB malloc per start made glibc consolidate its free lists each time.
    let mut stack: Vec<u8> = CHILD_STACK
        .with(|s| s.take())
        .unwrap_or_else(|| Vec::with_capacity(STACK));
    // The stack grows down: its top, aligned to 16 bytes.
    let top = (stack.as_mut_ptr() as usize + STACK) & !15;
    // SAFETY: CLONE_VFORK suspends this thread until the child has exec'd or
    // exited, so `args` and `stack` outlive its use of them; the child only
    // reads `args` and makes system calls (see `child`), on its own stack; what
    // it writes of shared memory is this suspended thread's errno and, when it
    // fails, `args.report`, read only once it has exited. The keeper
    // has no signal handlers of its own, and the child resets SIGPIPE and the mask.
    let pid = unsafe {
        libc::clone(
            child_main,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const ChildArgs as *mut libc::c_void,
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The child exec'd, or stored why not and exited: either way it is done
    // with `args` now.
    let said = args.report.load(Ordering::SeqCst);
    CHILD_STACK.with(|s| s.set(Some(stack)));
    drop((args, argv_c, envp_c, stdout_w, stderr_w));
    let task = Task {
        pid,
        stdout: stdout_r,
        stderr: stderr_r,
    };
    match said {
        0 => Ok(task),
        e => {
            let _ = task.wait();
            Err(std::io::Error::from_raw_os_error(e))
        }
    }
}

/// `/dev/null`, opened once per process (close-on-exec): every task's stdin.
fn dev_null() -> std::io::Result<RawFd> {
    static NULL: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    NULL.get_or_init(|| std::fs::File::open("/dev/null").ok())
        .as_ref()
        .map(|f| f.as_raw_fd())
        .ok_or_else(|| std::io::Error::other("cannot open /dev/null"))
}

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive until this child execs or exits.
    unsafe { child(&*(arg as *const ChildArgs)) }
}

/// Tell the parent why the child could not exec, and end it.
unsafe fn fail(report: &AtomicI32, e: libc::c_int) -> ! {
    // An errno is never 0; EIO stands in should one be.
    report.store(if e == 0 { libc::EIO } else { e }, Ordering::SeqCst);
    // SAFETY: _exit is async-signal-safe and ends only this child.
    unsafe { libc::_exit(127) }
}

fn errno() -> libc::c_int {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The child, between clone and exec: system calls only. Never returns.
unsafe fn child(a: &ChildArgs) -> libc::c_int {
    // SAFETY: system calls on the child's own state and on descriptors and
    // strings the parent prepared; nothing allocates or takes a lock.
    unsafe {
        // The Rust runtime ignores SIGPIPE; a task gets the default, and no mask.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        // Own session and process group (pgid = pid): a stop signals the group.
        if libc::setsid() < 0 {
            fail(&a.report, errno());
        }
        let mut digits = [0u8; 12];
        let n = decimal(libc::getpid() as u32, &mut digits);
        for (path, join) in &a.pid_files {
            let fd = libc::open(
                path.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                0o644 as libc::c_uint,
            );
            if fd < 0 {
                fail(&a.report, errno());
            }
            let (bytes, len) = match join {
                true => (b"0".as_slice(), 1),
                false => (&digits[..], n),
            };
            if libc::write(fd, bytes.as_ptr().cast(), len) != len as isize {
                fail(&a.report, errno());
            }
            libc::close(fd);
        }
        for (to, from) in a.stdio.iter().enumerate() {
            if libc::dup2(*from, to as libc::c_int) < 0 {
                fail(&a.report, errno());
            }
        }
        if libc::chdir(a.cwd.as_ptr()) < 0 {
            fail(&a.report, errno());
        }
        if let Some(limit) = &a.nofile {
            if libc::setrlimit(libc::RLIMIT_NOFILE, limit) < 0 {
                fail(&a.report, errno());
            }
        }
        // Last, once the pid files (cgroups) are written with privileges.
        // Raw system calls, as posix_spawn makes them: glibc's wrappers would
        // apply the change to every thread of the keeper (a signal, a futex
        // wake and a getpid per thread, three times), which this child, sharing
        // the keeper's memory but not its thread group, must not touch.
        if let Some((uid, gid)) = a.run_as {
            let gids = [gid];
            if libc::syscall(libc::SYS_setgroups, 1 as libc::c_long, gids.as_ptr()) < 0
                || libc::syscall(libc::SYS_setgid, gid as libc::c_long) < 0
                || libc::syscall(libc::SYS_setuid, uid as libc::c_long) < 0
            {
                fail(&a.report, errno());
            }
        }
        // As execvp: the first candidate that exists; a permission error is
        // kept over "not found" for the report.
        let mut why = libc::ENOENT;
        for program in &a.programs {
            libc::execve(program.as_ptr(), a.argv.as_ptr(), a.envp.as_ptr());
            let e = errno();
            if e != libc::ENOENT && e != libc::ENOTDIR {
                why = e;
                if e != libc::EACCES {
                    break;
                }
            }
        }
        fail(&a.report, why)
    }
}

/// `n` in decimal into `buf`; its length.
fn decimal(mut n: u32, buf: &mut [u8; 12]) -> usize {
    let mut tmp = [0u8; 12];
    let mut len = 0;
    loop {
        tmp[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (to, from) in buf.iter_mut().zip(tmp[..len].iter().rev()) {
        *to = *from;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn plan<'a>(
        program: &'a str,
        args: &'a [String],
        env: &'a std::collections::BTreeMap<String, String>,
        dir: &'a Path,
        pid_files: &'a [std::path::PathBuf],
    ) -> Plan<'a> {
        Plan {
            program,
            args,
            env,
            cwd: dir,
            pid_files,
            output: Output::Pipes,
            run_as: None,
            nofile: None,
        }
    }

    #[test]
    fn the_task_runs_found_on_its_path_in_its_session_dir_and_env_with_its_pid_written() {
        let dir = tempfile::tempdir().unwrap();
        let env = [("PATH", "/nonexistent:/usr/bin:/bin"), ("ONLY", "this")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        let args = [
            "-c".to_string(),
            "echo $ONLY $HOME; pwd; ps -o sid= -p $$ >&2".to_string(),
        ];
        let pid_file = dir.path().join("task.pid");
        let files = [pid_file.clone()];
        let mut task = spawn(plan("sh", &args, &env, dir.path(), &files)).unwrap();
        let mut out = String::new();
        std::fs::File::from(task.stdout.take().unwrap())
            .read_to_string(&mut out)
            .unwrap();
        let mut err = String::new();
        std::fs::File::from(task.stderr.take().unwrap())
            .read_to_string(&mut err)
            .unwrap();
        assert!(task.wait().unwrap().success());
        let cwd = dir.path().canonicalize().unwrap();
        assert_eq!(
            out,
            format!("this\n{}\n", cwd.display()),
            "no HOME: env is only its own"
        );
        assert_eq!(
            std::fs::read_to_string(&pid_file).unwrap(),
            task.pid.to_string()
        );
        // ps may be missing on a minimal host; where it runs, the task leads its session.
        if !err.trim().is_empty() && !err.contains("not found") {
            assert_eq!(err.trim(), task.pid.to_string(), "its own session");
        }
    }

    #[test]
    fn an_exec_failure_is_the_reason_and_nothing_runs() {
        let dir = tempfile::tempdir().unwrap();
        let env = Default::default();
        let e = spawn(plan("/nonexistent/program", &[], &env, dir.path(), &[])).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
        let files = [dir.path().join("no-such-dir").join("task.pid")];
        let e = spawn(plan("/bin/true", &[], &env, dir.path(), &files)).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::ENOENT),
            "a pid file it cannot write: {e}"
        );
    }

    #[test]
    fn decimal_writes_a_pid() {
        let mut buf = [0u8; 12];
        for n in [0u32, 7, 10, 4_194_304, u32::MAX] {
            let len = decimal(n, &mut buf);
            assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), n.to_string());
        }
    }
}
