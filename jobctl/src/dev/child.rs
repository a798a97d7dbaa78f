//! One child process of the dev cell: spawned as `jobctl component ...` under
//! its own name, its output prefixed on the terminal and teed to a log file,
//! its exit reported on a channel, and stopped with SIGTERM then SIGKILL.

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What a child's wait task reports: its index in the cell and how it ended.
pub type Exit = (usize, std::io::Result<ExitStatus>);

pub struct Child {
    /// `borgmaster`, `borgscheduler`, `borglet-2`.
    pub name: String,
    pub log: PathBuf,
    pid: Pid,
    /// Set once the wait task has reported; after that the pid may be reused.
    pub exited: Option<String>,
    /// The output copiers, awaited briefly at the end so the last lines land.
    pub copiers: Vec<JoinHandle<()>>,
    /// How it was started, to start it again the same way when it dies.
    spawn: Spawn,
}

/// How to start one child.
#[derive(Debug, Clone)]
pub struct Spawn {
    pub index: usize,
    pub name: String,
    pub component: &'static str,
    pub args: Vec<String>,
    /// Set in its environment: its secrets (never in argv, which is public).
    pub env: Vec<(String, String)>,
    pub log_dir: PathBuf,
    /// Echo output lines to the terminal (always written to the log).
    pub echo: bool,
}

/// This executable, to start a component with. A rebuild that replaced the
/// file under the running cell (`cargo build`) leaves the kernel naming it
/// `<path> (deleted)`: the new build at `<path>` is started then.
fn jobctl_exe() -> anyhow::Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let exe = std::env::current_exe().context("finding the jobctl executable")?;
    let replaced = exe.as_os_str().as_bytes().strip_suffix(b" (deleted)");
    Ok(replaced
        .map(|path| PathBuf::from(std::ffi::OsStr::from_bytes(path)))
        .unwrap_or(exe))
}

impl Spawn {
    /// Start the child from the calling thread, which must outlive it: the
    /// parent-death signal fires when the *thread* that forked exits.
    pub fn start(self, exits: mpsc::UnboundedSender<Exit>) -> anyhow::Result<Child> {
        let exe = jobctl_exe()?;
        let log = self.log_dir.join(format!("{}.log", self.name));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        writeln!(
            file,
            "---- {} started at {} ----",
            self.name,
            chrono::Utc::now().to_rfc3339()
        )?;
        let file = Arc::new(Mutex::new(file));

        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg0(&self.name)
            .arg("component")
            .arg(self.component)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        // Logs are files as much as a terminal: no colour escapes in them.
        if std::env::var_os("NO_COLOR").is_none() {
            cmd.env("NO_COLOR", "1");
        }
        let parent = nix::unistd::getpid();
        // SAFETY: only async-signal-safe calls (setpgid, prctl, getppid) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Its own process group: a terminal Ctrl-C reaches jobctl only, which
                // then stops the children in order.
                nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::other("jobctl exited during start-up"));
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        let pid = child
            .id()
            .map(|id| Pid::from_raw(id as i32))
            .context("the child has no pid")?;

        let mut copiers = Vec::new();
        if let Some(out) = child.stdout.take() {
            copiers.push(copy_lines(out, self.name.clone(), file.clone(), self.echo));
        }
        if let Some(err) = child.stderr.take() {
            copiers.push(copy_lines(err, self.name.clone(), file, self.echo));
        }
        let index = self.index;
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = exits.send((index, status));
        });
        Ok(Child {
            name: self.name.clone(),
            log,
            pid,
            exited: None,
            copiers,
            spawn: self,
        })
    }
}

impl Child {
    pub fn running(&self) -> bool {
        self.exited.is_none()
    }

    /// Start the exited child again, the same way, in its place.
    pub fn restart(&mut self, exits: mpsc::UnboundedSender<Exit>) -> anyhow::Result<()> {
        let mut again = self.spawn.clone().start(exits)?;
        again.copiers.append(&mut self.copiers);
        *self = again;
        Ok(())
    }

    /// Send `signal` if the child still runs. A child that has just exited (ESRCH) is fine.
    pub fn signal(&self, signal: Signal) {
        if self.running() {
            let _ = kill(self.pid, signal);
        }
    }
}

/// `exit status 1` or `signal 9` in a few words.
pub fn describe_status(status: &std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("status {code}"),
            (None, Some(sig)) => match Signal::try_from(sig) {
                Ok(name) => format!("signal {sig} ({name})"),
                Err(_) => format!("signal {sig}"),
            },
            (None, None) => s.to_string(),
        },
        Err(e) => format!("an unknown status ({e})"),
    }
}

/// Copy lines from `from` to the log file, and to the terminal with a `[name]` prefix.
fn copy_lines(
    from: impl AsyncRead + Unpin + Send + 'static,
    name: String,
    file: Arc<Mutex<File>>,
    echo: bool,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(from);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if !buf.ends_with(b"\n") {
                buf.push(b'\n');
            }
            if let Ok(mut f) = file.lock() {
                let _ = f.write_all(&buf);
            }
            if echo {
                let line = String::from_utf8_lossy(&buf);
                let mut term = std::io::stderr().lock();
                let _ = write!(term, "[{name}] {line}");
            }
        }
    })
}
