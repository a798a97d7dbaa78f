//! One probe of one run: an HTTP GET, a TCP connect, or a command run in the
//! task's sandbox, environment and cgroup, as its user. Behind [`Prober`] so the
//! probing loop can be driven by a double; [`RealProber`] is the one that runs.
//! A probe never blocks an async thread: the exec probe forks on the blocking
//! pool, and every probe ends by its timeout.

use crate::isolation::AttemptCgroup;
use crate::run_as::RunAs;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Bytes of an exec probe's stderr kept for the failure message.
const STDERR_KEPT: usize = 256;

/// What to probe, resolved for the current run.
#[derive(Debug, Clone)]
pub enum Target {
    Http { port: u16, path: String },
    Tcp { port: u16 },
    Exec(ExecTarget),
}

/// A command to run as the task would be: its environment, sandbox and user,
/// inside the run's cgroup (when isolated).
#[derive(Debug, Clone)]
pub struct ExecTarget {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub run_as: Option<RunAs>,
    pub cgroup: Option<Arc<AttemptCgroup>>,
}

/// Runs one probe; `Err` says why it failed, in words for the task's record.
pub trait Prober: Send + Sync + std::fmt::Debug {
    fn probe<'a>(
        &'a self,
        target: &'a Target,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// Probes for real, against 127.0.0.1 (tasks share the machine's network).
#[derive(Debug, Clone)]
pub struct RealProber {
    http: reqwest::Client,
}

impl RealProber {
    pub fn new() -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .no_proxy()
            // A redirect is an answer: 3xx counts as healthy, never followed.
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .build()?;
        Ok(RealProber { http })
    }
}

impl Prober for RealProber {
    fn probe<'a>(
        &'a self,
        target: &'a Target,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let limit = humantime::format_duration(timeout);
            match target {
                Target::Http { port, path } => {
                    let url = format!("http://127.0.0.1:{port}{path}");
                    let answer = self.http.get(&url).timeout(timeout).send().await;
                    match answer {
                        Ok(r) if r.status().is_success() || r.status().is_redirection() => Ok(()),
                        Ok(r) => Err(format!("GET {path} on port {port}: {}", r.status())),
                        Err(e) if e.is_timeout() => Err(format!(
                            "GET {path} on port {port}: no answer within {limit}"
                        )),
                        Err(e) if e.is_connect() => Err(format!(
                            "GET {path} on port {port}: cannot connect: {}",
                            root_cause(&e)
                        )),
                        Err(e) => Err(format!("GET {path} on port {port}: {}", root_cause(&e))),
                    }
                }
                Target::Tcp { port } => {
                    let connect = tokio::net::TcpStream::connect(("127.0.0.1", *port));
                    match tokio::time::timeout(timeout, connect).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(format!(
                            "connect to port {port}: {}",
                            crate::os_words::io_error(&e)
                        )),
                        Err(_) => Err(format!(
                            "connect to port {port}: not accepted within {limit}"
                        )),
                    }
                }
                Target::Exec(exec) => run_exec(exec, timeout).await,
            }
        })
    }
}

/// The innermost error's words (`Connection refused`), not the wrapper's
/// (`error sending request for url ...`).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    match cur.downcast_ref::<std::io::Error>() {
        Some(io) => crate::os_words::io_error(io),
        None => cur.to_string(),
    }
}

/// Run the command; its whole process group is killed if it outlives `timeout`.
async fn run_exec(t: &ExecTarget, timeout: Duration) -> Result<(), String> {
    let shown = t.argv.join(" ");
    let target = t.clone();
    // Fork/exec and the cgroup file opens are blocking work.
    let spawned = tokio::task::spawn_blocking(move || spawn(&target)).await;
    let mut child = match spawned {
        Ok(Ok(child)) => child,
        Ok(Err(e)) => {
            let why = crate::os_words::io_error(&e);
            return Err(format!("`{shown}` could not start: {why}"));
        }
        Err(e) => return Err(format!("`{shown}` could not start: {e}")),
    };
    let pgid = child.id().map(|p| p as i32);
    let mut stderr = child.stderr.take();
    let read_stderr = async {
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        if let Some(err) = stderr.as_mut() {
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let room = STDERR_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
        kept
    };
    let ran = tokio::time::timeout(timeout, async {
        let (status, said) = tokio::join!(child.wait(), read_stderr);
        (status, said)
    })
    .await;
    match ran {
        Ok((Ok(status), _)) if status.success() => Ok(()),
        Ok((Ok(status), said)) => {
            let said = String::from_utf8_lossy(&said).trim().to_string();
            let how = match status.code() {
                Some(code) => format!("exited with code {code}"),
                None => "was killed by a signal".to_string(),
            };
            if said.is_empty() {
                Err(format!("`{shown}` {how}"))
            } else {
                Err(format!("`{shown}` {how}: {said}"))
            }
        }
        Ok((Err(e), _)) => Err(format!("`{shown}`: waiting for it failed: {e}")),
        Err(_) => {
            if let Some(pgid) = pgid {
                let _ = crate::supervisor::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
            }
            // Reaped here, not left to a zombie.
            let _ = child.wait().await;
            Err(format!(
                "`{shown}` did not finish within {}",
                humantime::format_duration(timeout)
            ))
        }
    }
}

/// Blocking: start the command in its own process group, in the run's cgroup,
/// as the task's user, with the task's environment and working directory.
fn spawn(t: &ExecTarget) -> std::io::Result<tokio::process::Child> {
    let (program, args) = t
        .argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    let join = match &t.cgroup {
        Some(cg) => cg.joiner()?,
        None => crate::isolation::CgroupJoin::none(),
    };
    let run_as = t.run_as;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(&t.env)
        .current_dir(&t.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: between fork and exec the child only write(2)s to descriptors
    // opened above and switches its user: no allocation, no locks.
    unsafe {
        cmd.pre_exec(move || {
            join.join_self()?;
            if let Some(user) = run_as {
                let gid = nix::unistd::Gid::from_raw(user.gid);
                nix::unistd::setgroups(&[gid])?;
                nix::unistd::setgid(gid)?;
                nix::unistd::setuid(nix::unistd::Uid::from_raw(user.uid))?;
            }
            Ok(())
        });
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    cmd.spawn()
}
