//! The dev cell the bench starts: `jobctl dev` (this same binary) on a fresh
//! temp data dir and free ports, in its own process group so that a Ctrl-C at
//! the terminal reaches the bench only, which then stops the cell in order
//! (SIGINT, as a user would). Dropping the handle stops it too.

use super::api::Api;
use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::time::Instant;

const START_WITHIN: Duration = Duration::from_secs(120);
const STOP_WITHIN: Duration = Duration::from_secs(60);

pub struct DevCell {
    pub master: String,
    pub pid: i32,
    child: tokio::process::Child,
    /// Removed when the cell stops, unless kept after a failure.
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    log: PathBuf,
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// A base port with `n` free ports from it.
fn free_range(n: u16) -> anyhow::Result<u16> {
    for _ in 0..100 {
        let p = free_port()?;
        if p < 60000 && (p..p + n).all(|q| TcpListener::bind(("127.0.0.1", q)).is_ok()) {
            return Ok(p);
        }
    }
    bail!("found no {n} free consecutive ports for the borglets")
}

/// The port in a `postmaster.pid` (its fourth line).
fn postmaster_port(pid_file: &str) -> Option<u16> {
    pid_file.lines().nth(3)?.trim().parse().ok()
}

/// The dev cell's database on an embedded server listening on `port`.
fn database_url(port: u16) -> String {
    format!(
        "postgres://{}@127.0.0.1:{port}/{}",
        devpg::SUPERUSER,
        crate::dev::DATABASE
    )
}

impl DevCell {
    /// Start the cell and wait until the master answers and `borglets` machines are up.
    pub async fn start(borglets: u16, token: Option<String>) -> anyhow::Result<DevCell> {
        let dir = tempfile::Builder::new()
            .prefix("borg-bench-")
            .tempdir_in(std::env::temp_dir())
            .context("creating the cell's data dir")?;
        let port = free_port()?;
        let base = free_range(borglets)?;
        let master = format!("http://127.0.0.1:{port}");
        let log = dir.path().join("cell.log");
        let out = std::fs::File::create(&log).context("creating the cell's log")?;
        let exe = std::env::current_exe().context("finding the jobctl executable")?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.args(["dev", "--quiet", "--borglets", &borglets.to_string()])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--borglet-base-port", &base.to_string()])
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        // The components log at warn, as the old benches ran them: info lines per
        // task would be part of what is measured.
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        if let Some(t) = &token {
            cmd.env("BORG_TOKEN", t);
        }
        // The bench measures the cell, not the master's per-caller submit limit.
        cmd.env("BORG_SUBMIT_RATE", "0");
        // SAFETY: prctl is async-signal-safe. If the bench dies, the cell stops
        // itself (SIGTERM is a clean stop for `jobctl dev`).
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().context("starting jobctl dev")?;
        let pid = child.id().context("jobctl dev has no pid")? as i32;
        let mut cell = DevCell {
            master,
            pid,
            child,
            path: dir.path().to_path_buf(),
            dir: Some(dir),
            log,
        };
        eprintln!(
            "cell: starting jobctl dev ({borglets} borglets) at {}, data in {}",
            cell.master,
            cell.data_dir().display()
        );
        cell.wait_up(borglets as usize, token).await?;
        Ok(cell)
    }

    pub fn data_dir(&self) -> &Path {
        &self.path
    }

    /// The URL of the cell's own database on its embedded Postgres (`<data-dir>/pg`),
    /// as `jobctl dev` connects to it.
    pub fn database_url(&self) -> anyhow::Result<String> {
        let pid_file = self.path.join("pg").join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("reading {}", pid_file.display()))?;
        let port = postmaster_port(&text)
            .with_context(|| format!("{} names no port", pid_file.display()))?;
        Ok(database_url(port))
    }

    async fn wait_up(&mut self, want: usize, token: Option<String>) -> anyhow::Result<()> {
        let api = Api::new(&self.master, token)?;
        let deadline = Instant::now() + START_WITHIN;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.keep();
                bail!(
                    "jobctl dev exited during start-up ({status}); see {}",
                    self.log.display()
                );
            }
            let up = match api.healthz().await {
                Ok(()) => api.machines_up().await.unwrap_or(0),
                Err(_) => 0,
            };
            if up >= want {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.keep();
                bail!(
                    "the cell did not come up within {} s ({up}/{want} machines up); see {}",
                    START_WITHIN.as_secs(),
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Keep the data dir (its logs) after a failure.
    pub fn keep(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
    }

    /// SIGINT, as Ctrl-C in `jobctl dev`'s terminal; SIGKILL if it has not stopped in time.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        eprintln!("cell: stopping...");
        let pid = Pid::from_raw(self.pid);
        let _ = kill(pid, Signal::SIGINT);
        let deadline = std::time::Instant::now() + STOP_WITHIN;
        while std::time::Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = kill(pid, Signal::SIGKILL);
        let _ = self.child.try_wait();
        self.keep();
        bail!(
            "jobctl dev did not stop within {} s: killed it; see {}",
            STOP_WITHIN.as_secs(),
            self.log.display()
        )
    }
}

impl Drop for DevCell {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("warning: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_from_the_postmaster_pid() {
        let pid =
            "4242\n/tmp/borg-bench-x/pg\n1700000000\n54321\n/tmp\n127.0.0.1\n  1 2\nready   \n";
        assert_eq!(postmaster_port(pid), Some(54321));
        assert_eq!(postmaster_port("4242\n/tmp\n"), None);
        assert_eq!(postmaster_port("4242\n/tmp\n1\nnot-a-port\n"), None);
        assert_eq!(
            database_url(54321),
            format!(
                "postgres://{}@127.0.0.1:54321/{}",
                devpg::SUPERUSER,
                crate::dev::DATABASE
            )
        );
    }
}
