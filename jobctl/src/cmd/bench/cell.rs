//! The dev cell the bench starts: `jobctl dev` (this same binary) on a fresh
//! temp data dir and free ports, in its own process group so that a Ctrl-C at
//! the terminal reaches the bench only, which then stops the cell in order
//! (SIGINT, as a user would). Dropping the handle stops it too.

use super::api::Api;
use anyhow::{bail, Context};
use devpg::ports::free_port_run;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::time::Instant;

const START_WITHIN: Duration = Duration::from_secs(120);
const STOP_WITHIN: Duration = Duration::from_secs(60);

pub struct DevCell {
    pub master: String,
    /// The cell's admin token (its `admin.token`).
    pub token: String,
    pub pid: i32,
    child: tokio::process::Child,
    /// Removed when the cell stops, unless kept after a failure.
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    log: PathBuf,
}

/// The port in a `postmaster.pid` (its fourth line).
fn postmaster_port(pid_file: &str) -> Option<u16> {
    pid_file.lines().nth(3)?.trim().parse().ok()
}

impl DevCell {
    /// Start the cell and wait until the master answers and `borglets` machines are up.
    pub async fn start(borglets: u16) -> anyhow::Result<DevCell> {
        let dir = tempfile::Builder::new()
            .prefix("borg-bench-")
            .tempdir_in(std::env::temp_dir())
            .context("creating the cell's data dir")?;
        // The cell's scheduler listens 10 ports above its master.
        let port = free_port_run(11);
        let base = free_port_run(borglets);
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
            token: String::new(),
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
        cell.wait_up(borglets as usize).await?;
        Ok(cell)
    }

    pub fn data_dir(&self) -> &Path {
        &self.path
    }

    /// The URL of the cell's own database on its embedded Postgres (`<data-dir>/pg`),
    /// as `jobctl dev` gives it to its components (the cell role, its password).
    pub fn database_url(&self) -> anyhow::Result<String> {
        let pg = self.path.join("pg");
        let pid_file = pg.join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("reading {}", pid_file.display()))?;
        let port = postmaster_port(&text)
            .with_context(|| format!("{} names no port", pid_file.display()))?;
        devpg::cell_url_of(&pg, port, crate::dev::DATABASE)
    }

    async fn wait_up(&mut self, want: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_WITHIN;
        let mut api = None;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.keep();
                bail!(
                    "jobctl dev exited during start-up ({status}); see {}",
                    self.log.display()
                );
            }
            // `jobctl dev` writes its admin token before it starts the master.
            if api.is_none() {
                let file = self.path.join(crate::credentials::ADMIN_TOKEN_FILE);
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                if text.ends_with('\n') {
                    self.token = text.trim().to_string();
                    api = Some(Api::new(&self.master, Some(self.token.clone()))?);
                }
            }
            let up = match &api {
                Some(api) if api.healthz().await.is_ok() => {
                    Some(api.machines_up().await.unwrap_or(0))
                }
                _ => None,
            };
            // With no borglet of its own (`--only fleet`): up once the master answers.
            if up.is_some_and(|up| up >= want) {
                return Ok(());
            }
            let up = up.unwrap_or(0);
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
    fn port_from_the_postmaster_pid() {
        let pid =
            "4242\n/tmp/borg-bench-x/pg\n1700000000\n54321\n/tmp\n127.0.0.1\n  1 2\nready   \n";
        assert_eq!(postmaster_port(pid), Some(54321));
        assert_eq!(postmaster_port("4242\n/tmp\n"), None);
        assert_eq!(postmaster_port("4242\n/tmp\n1\nnot-a-port\n"), None);
    }
}
