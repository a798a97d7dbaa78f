//! A throwaway PostgreSQL server built from the server binaries installed on
//! the machine (`initdb`, `postgres`), for `jobctl dev` and for tests.
//!
//! initdb refuses to run as root, so when we are root the server runs as the
//! unprivileged `postgres` user with a data dir it owns. The server listens on
//! loopback TCP only (no unix socket, so no socket-path length limits), and is
//! started with a parent-death signal so a crashed parent leaves no orphan.

pub mod testing;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{Gid, Pid, Uid, User};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The superuser our clusters are created with.
pub const SUPERUSER: &str = "borg";

#[derive(Debug, Clone)]
pub struct Options {
    /// fsync and synchronous commit: on for a cell that should survive a host crash,
    /// off for test servers where speed matters more.
    pub durable: bool,
    pub max_connections: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durable: true,
            max_connections: 200,
        }
    }
}

/// A running server. Dropping it stops the server (fast shutdown).
pub struct PgServer {
    port: u16,
    pid: Pid,
    /// Its data dir: `postmaster.pid` there names the postmaster running now,
    /// which is not ours if the server was restarted underneath us (`pg_ctl restart`).
    data_dir: PathBuf,
    exited: std::sync::Mutex<mpsc::Receiver<std::io::Result<std::process::ExitStatus>>>,
    stopped: bool,
}

/// Where the server binaries are: `initdb` on PATH, else the highest
/// version under `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
                return Ok(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "no PostgreSQL server binaries found (initdb, postgres): install them, e.g. `apt-get install postgresql`, or set DATABASE_URL"
        ),
    }
}

/// Who runs the server: ourselves, or `postgres` when we are root.
fn server_user() -> Result<Option<User>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let user = User::from_name("postgres")
        .context("looking up the postgres user")?
        .context("running as root, and there is no `postgres` user to run the server as (initdb refuses root)")?;
    Ok(Some(user))
}

fn run_as(cmd: &mut Command, user: &Option<User>) {
    if let Some(user) = user {
        let (uid, gid): (Uid, Gid) = (user.uid, user.gid);
        // SAFETY: only async-signal-safe syscalls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setgroups(&[gid])?;
                nix::unistd::setgid(gid)?;
                nix::unistd::setuid(uid)?;
                Ok(())
            });
        }
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

impl PgServer {
    /// Start a server on `data_dir`, creating the cluster first if the directory
    /// holds none. An existing cluster is reused: that is how a dev cell resumes.
    pub fn start(data_dir: &Path, opts: &Options) -> Result<PgServer> {
        let bin = find_bin_dir()?;
        let user = server_user()?;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        if let Some(user) = &user {
            nix::unistd::chown(data_dir, Some(user.uid), Some(user.gid))
                .with_context(|| format!("giving {} to the postgres user", data_dir.display()))?;
        }
        // Postgres insists on a private data dir.
        std::fs::set_permissions(
            data_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;

        if !data_dir.join("PG_VERSION").exists() {
            let mut cmd = Command::new(bin.join("initdb"));
            cmd.arg("-D")
                .arg(data_dir)
                .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            run_as(&mut cmd, &user);
            let out = cmd.output().context("running initdb")?;
            if !out.status.success() {
                bail!(
                    "initdb failed for {} (is the directory readable by the postgres user?): {}",
                    data_dir.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        // A cluster left behind by a killed parent still holds its pid file; stop it first.
        stop_stale(data_dir);

        let mut last_err = None;
        for _ in 0..5 {
            match Self::launch(&bin, data_dir, opts, &user) {
                Ok(server) => return Ok(server),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one launch attempt"))
    }

    fn launch(
        bin: &Path,
        data_dir: &Path,
        opts: &Options,
        user: &Option<User>,
    ) -> Result<PgServer> {
        let port = free_port()?;
        let log = std::fs::File::create(data_dir.join("server.log"))
            .or_else(|_| {
                std::fs::File::create(std::env::temp_dir().join(format!("devpg-{port}.log")))
            })
            .context("creating the server log")?;
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D").arg(data_dir).arg("-p").arg(port.to_string());
        let durable = if opts.durable { "on" } else { "off" };
        for setting in [
            "listen_addresses=127.0.0.1".to_string(),
            "unix_socket_directories=".to_string(),
            format!("max_connections={}", opts.max_connections),
            format!("fsync={durable}"),
            format!("synchronous_commit={durable}"),
            format!("full_page_writes={durable}"),
            // The cell's queue tables churn in seconds; the default one-minute
            // autovacuum round leaves the pending queue's index full of dead entries.
            "autovacuum_naptime=5s".to_string(),
        ] {
            cmd.arg("-c").arg(setting);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        run_as(&mut cmd, user);
        // SAFETY: setsid and prctl are async-signal-safe. Its own session keeps the
        // terminal's Ctrl-C away from it: its owner decides when it stops. The death
        // signal is set after the uid change, which would clear it.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()?;
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }

        // The parent-death signal fires when the *thread* that forked exits, so the
        // child is spawned and awaited by a thread that lives exactly as long as it.
        let (pid_tx, pid_rx) = mpsc::channel();
        let (exit_tx, exit_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("postgres-{port}"))
            .spawn(move || match cmd.spawn() {
                Ok(mut child) => {
                    let _ = pid_tx.send(Ok(child.id()));
                    let _ = exit_tx.send(child.wait());
                }
                Err(e) => {
                    let _ = pid_tx.send(Err(e));
                }
            })?;
        let pid = pid_rx.recv()?.context("starting postgres")?;
        let server = PgServer {
            port,
            pid: Pid::from_raw(pid as i32),
            data_dir: data_dir.to_path_buf(),
            exited: std::sync::Mutex::new(exit_rx),
            stopped: false,
        };
        server.wait_ready(data_dir)?;
        Ok(server)
    }

    fn wait_ready(&self, data_dir: &Path) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Ok(status) = self.exited_rx().try_recv() {
                let log = std::fs::read_to_string(data_dir.join("server.log")).unwrap_or_default();
                bail!(
                    "postgres exited during start-up ({status:?}): {}",
                    log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                );
            }
            // Accepting TCP is not enough (another server may hold the port if ours
            // lost the race for it): wait until *our* postmaster says it is ready.
            if self.pid_file_says_ready(data_dir)
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("postgres did not become ready within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn exited_rx(
        &self,
    ) -> std::sync::MutexGuard<'_, mpsc::Receiver<std::io::Result<std::process::ExitStatus>>> {
        self.exited.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `postmaster.pid` holds our pid on line 1, our port on line 4 and the
    /// server's status on line 8 (`ready` once it accepts queries).
    fn pid_file_says_ready(&self, data_dir: &Path) -> bool {
        let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else {
            return false;
        };
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        lines.len() >= 8
            && lines[0] == self.pid.as_raw().to_string()
            && lines[3] == self.port.to_string()
            && lines[7] == "ready"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Fast shutdown: disconnect clients, checkpoint, exit. Waits up to 30 s.
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let _ = kill(self.pid, Signal::SIGINT);
        let ours = self.exited_rx().recv_timeout(Duration::from_secs(30));
        // Restarted underneath us, the server runs under another pid that is
        // not our child: stop the postmaster its pid file names too.
        stop_stale(&self.data_dir);
        match ours {
            Ok(_) | Err(mpsc::RecvTimeoutError::Disconnected) => Ok(()),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Immediate shutdown: the next start runs crash recovery, nothing committed is lost.
                let _ = kill(self.pid, Signal::SIGQUIT);
                let _ = self.exited_rx().recv_timeout(Duration::from_secs(10));
                bail!("postgres took more than 30 s to stop; sent SIGQUIT")
            }
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            tracing::warn!(error = %e, "stopping postgres");
        }
    }
}

/// Run `pg_ctl` on `data_dir` with `args` (as the server's user when we are
/// root): restart or stop a server underneath its owner, as an operator would.
pub fn pg_ctl(data_dir: &Path, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new(find_bin_dir()?.join("pg_ctl"));
    cmd.args(args)
        .arg("-D")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    run_as(&mut cmd, &server_user()?);
    let out = cmd.output().context("running pg_ctl")?;
    if !out.status.success() {
        bail!(
            "pg_ctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The live postmaster that `data_dir`'s `postmaster.pid` names, if any.
pub(crate) fn running_postmaster(data_dir: &Path) -> Option<Pid> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    // A pid is only trusted together with what runs under it (pids are reused).
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let pid = Pid::from_raw(pid);
    (comm.trim() == "postgres" && alive(pid)).then_some(pid)
}

/// Running, not a zombie: a daemonized postmaster that exited stays a zombie
/// until its parent (pid 1, which in a container may never reap) collects it.
fn alive(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z')
    })
}

/// If `postmaster.pid` names a live postgres, ask it to stop and wait for it.
fn stop_stale(data_dir: &Path) {
    let Some(pid) = running_postmaster(data_dir) else {
        return;
    };
    // Its pid file stays until it has exited; a pid that is gone is fine.
    tracing::warn!(%pid, "stopping a postgres left running on {}", data_dir.display());
    let _ = kill(pid, Signal::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pg_ctl restart` leaves a postmaster that is not our child; stopping the
    /// server must stop that one (read from `postmaster.pid`), not only ours.
    #[test]
    fn stop_stops_a_server_restarted_underneath() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("pg");
        let opts = Options {
            durable: false,
            max_connections: 20,
        };
        let server = PgServer::start(&data, &opts).unwrap();
        let first = server.pid;
        pg_ctl(&data, &["restart", "-m", "immediate", "-w", "-s"]).unwrap();
        let second = running_postmaster(&data).expect("a restarted postmaster");
        assert_ne!(second, first);
        server.stop().unwrap();
        assert!(
            running_postmaster(&data).is_none() && !alive(second),
            "the restarted postmaster {second} still runs"
        );
    }
}
