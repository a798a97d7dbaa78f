#![allow(dead_code)] // each test binary uses a different part
//! A real `jobctl dev` cell for end-to-end tests, stopped when dropped.

mod leftovers;
use devpg::ports::free_port_run;
pub use devpg::wait::wait_for_blocking as wait_for;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const JOBCTL: &str = env!("CARGO_BIN_EXE_jobctl");

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub struct Cell {
    child: Child,
    pub master: String,
    /// The cell's admin token (`<data-dir>/admin.token`), which `command` sends.
    pub token: String,
    pub data_dir: PathBuf,
    /// `jobctl dev --tls`: the cell's CA, which `command` trusts.
    pub ca: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

/// The admin token `jobctl dev` writes into its data dir before it starts the master.
pub fn wait_admin_token(data_dir: &Path) -> String {
    wait_for("the cell's admin.token", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(data_dir.join("admin.token")).ok()?;
        text.ends_with('\n').then(|| text.trim().to_string())
    })
}

impl Cell {
    /// A cell of `borglets` machines, once they are all up.
    pub fn start(borglets: usize) -> Cell {
        Cell::start_at(borglets, "")
    }

    /// The same with its data dir at `sub` in a fresh temporary directory.
    pub fn start_at(borglets: usize, sub: &str) -> Cell {
        Cell::start_with(borglets, sub, false)
    }

    /// The same, `jobctl dev --tls` when `tls`: the whole cell over https.
    pub fn start_with(borglets: usize, sub: &str, tls: bool) -> Cell {
        Cell::start_flags(borglets, sub, tls, &[])
    }

    /// The same, with more `jobctl dev` flags (e.g. `--log-format json`).
    pub fn start_flags(borglets: usize, sub: &str, tls: bool, flags: &[&str]) -> Cell {
        Cell::start_env(borglets, sub, tls, flags, &[])
    }

    /// The same, with variables in the cell's environment (e.g. `RUST_LOG`).
    pub fn start_env(
        borglets: usize,
        sub: &str,
        tls: bool,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> Cell {
        let dir = tempfile::Builder::new()
            .prefix("borg-e2e-")
            .tempdir_in("/tmp")
            .unwrap();
        let data_dir = dir.path().join(sub);
        // The cell's scheduler listens 10 ports above its master.
        let port = free_port_run(11);
        let base = free_port_run(borglets as u16);
        let scheme = if tls { "https" } else { "http" };
        let master = format!("{scheme}://127.0.0.1:{port}");
        let child = Command::new(JOBCTL)
            .args(["dev", "--borglets", &borglets.to_string()])
            .args(tls.then_some("--tls"))
            .args(flags)
            .arg("--data-dir")
            .arg(&data_dir)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--borglet-base-port",
                &base.to_string(),
            ])
            .env_remove("DATABASE_URL")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting jobctl dev");
        let token = wait_admin_token(&data_dir);
        let cell = Cell {
            child,
            master,
            token,
            ca: tls.then(|| data_dir.join("tls").join("ca.pem")),
            data_dir,
            _dir: dir,
        };
        wait_for("machines up", Duration::from_secs(120), || {
            let out = cell.jobctl(&["get", "machines", "-o", "json"]);
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            let machines = v.get("machines").and_then(Value::as_array)?;
            (machines.iter().filter(|m| m["state"] == "up").count() == borglets).then_some(())
        });
        cell
    }

    /// The cell's `--data-dir`.
    pub fn data_dir(&self) -> &Path {
        self._dir.path()
    }

    pub fn jobctl(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running jobctl")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(JOBCTL);
        c.arg("--master")
            .arg(&self.master)
            .args(args)
            .env("BORG_TOKEN", &self.token)
            .current_dir(repo_root());
        match &self.ca {
            Some(ca) => c.env("BORG_CA_CERT", ca),
            None => c.env_remove("BORG_CA_CERT"),
        };
        c
    }
}

impl Drop for Cell {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        leftovers::kill_tasks_under(self._dir.path());
    }
}

/// A child's stdout lines, read on a thread (so a test can wait with a deadline).
pub fn lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let out = child.stdout.take().expect("a piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The first line from `rx` that `f` accepts, within `timeout`.
pub fn line_where(
    rx: &std::sync::mpsc::Receiver<String>,
    what: &str,
    timeout: Duration,
    f: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if f(&line) => return line,
            Ok(_) => {}
            Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
        }
    }
}
