#![allow(dead_code)] // each test binary uses a different part
//! The cell of the no-loss tests: a fresh database, and the master, the
//! scheduler and 3 borglets as `jobctl component` processes with the argv and
//! the environment (database URL, join token) `jobctl dev` gives them. Dropping it stops every process, pass or fail.

#[path = "../support/leftovers.rs"]
mod leftovers;
pub use devpg::ports::free_port;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const JOBCTL: &str = env!("CARGO_BIN_EXE_jobctl");
/// Borglets of the test cell (`m1`..`m3`, zones a, b, c as in `jobctl dev`).
const BORGLETS: usize = 3;
const POLL: Duration = Duration::from_millis(20);
/// The cell's join token, in every component's environment as `jobctl dev` does.
pub const JOIN_TOKEN: &str = "no-loss-join-token";

/// The admin token every master of the cell is bootstrapped with
/// (`BORG_BOOTSTRAP_TOKEN`), and which the cell's client sends.
pub const ADMIN_TOKEN: &str = "borg_e2e-admin-0123456789abcdef";

/// A client that sends the cell's admin token.
pub fn http_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {ADMIN_TOKEN}").parse().unwrap();
    headers.insert(reqwest::header::AUTHORIZATION, bearer);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// The cell's processes; dropping it stops every one of them, pass or fail.
pub struct Cell {
    dir: Option<tempfile::TempDir>,
    pub database_url: String,
    master_port: u16,
    master: String,
    /// Flags given to every master this cell starts, after the `jobctl dev` ones.
    master_flags: Vec<String>,
    procs: Vec<(String, Child)>,
    http: reqwest::Client,
}

impl Cell {
    pub async fn start() -> Cell {
        Cell::start_with(Vec::new()).await
    }

    /// A cell whose masters also get `master_flags` (e.g. `--down-after 1s`).
    pub async fn start_with(master_flags: Vec<String>) -> Cell {
        let database_url = devpg::testing::fresh_database(&borg_store::MIGRATOR)
            .await
            .unwrap();
        Cell::start_on(database_url, master_flags).await
    }

    /// A cell on a database of the caller's (its schema already applied).
    pub async fn start_on(database_url: String, master_flags: Vec<String>) -> Cell {
        let dir = tempfile::Builder::new()
            .prefix("borg-no-loss-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .tempdir()
            .unwrap();
        let master_port = free_port();
        let mut cell = Cell {
            dir: Some(dir),
            database_url,
            master_port,
            master: format!("http://127.0.0.1:{master_port}"),
            master_flags,
            procs: Vec::new(),
            http: http_client(),
        };
        cell.start_master();
        cell.spawn("borgscheduler", "borgscheduler", vec![]);
        for n in 1..=BORGLETS {
            let data = cell.path().join(format!("borglet-{n}"));
            std::fs::create_dir_all(&data).unwrap();
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
            let args = jobctl::dev::borglet_args(n, addr, &cell.master, &data);
            cell.spawn(&format!("borglet-{n}"), "borglet", args);
        }
        let (http, master) = (cell.http.clone(), cell.master.clone());
        wait_for("3 machines up", Duration::from_secs(60), || async {
            let v: Value = get_json(&http, &format!("{master}/v1/machines")).await?;
            let up = v["machines"]
                .as_array()?
                .iter()
                .filter(|m| m["state"] == "up");
            (up.count() == BORGLETS).then_some(())
        })
        .await;
        cell
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    /// The same argv `jobctl dev` gives its master.
    pub fn start_master(&mut self) {
        let port = self.master_port;
        self.start_master_on("borgmaster", port);
    }

    /// Another master replica (same database, flags and argv) named `name` on `port`.
    pub fn start_master_on(&mut self, name: &str, port: u16) {
        let mut args = vec!["--listen".into(), format!("127.0.0.1:{port}")];
        args.extend(self.master_flags.iter().cloned());
        self.spawn(name, "borgmaster", args);
    }

    pub fn master_url(&self) -> &str {
        &self.master
    }

    /// Send `sig` to the component `name` (e.g. SIGSTOP / SIGCONT a borglet).
    pub fn signal(&self, name: &str, sig: Signal) {
        let (_, child) = self
            .procs
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no component {name}"));
        kill(Pid::from_raw(child.id() as i32), sig).unwrap();
    }

    /// SIGKILL the component `name` and forget it (it is not restarted).
    pub fn kill_component(&mut self, name: &str) {
        let i = self
            .procs
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no component {name}"));
        let (_, mut child) = self.procs.remove(i);
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
        child.wait().unwrap();
    }

    pub async fn get(&self, path: &str) -> Option<Value> {
        get_json(&self.http, &format!("{}{path}", self.master)).await
    }

    /// POST `body` to `path`: the status and the answer's JSON (Null if none).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let url = format!("{}{path}", self.master);
        let resp = self.http.post(&url).json(&body).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Another borglet `mN` (its data in the cell's dir) reaching the master(s) at `master`.
    pub fn start_borglet(&mut self, n: usize, master: &str) {
        let data = self.path().join(format!("borglet-{n}"));
        std::fs::create_dir_all(&data).unwrap();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let args = jobctl::dev::borglet_args(n, addr, master, &data);
        self.spawn(&format!("borglet-{n}"), "borglet", args);
    }

    fn spawn(&mut self, name: &str, component: &str, args: Vec<String>) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.path().join(format!("{name}.log")))
            .unwrap();
        let mut cmd = Command::new(JOBCTL);
        cmd.arg0(name)
            .arg("component")
            .arg(component)
            .args(args)
            .env("NO_COLOR", "1")
            .env("DATABASE_URL", &self.database_url)
            .env("BORG_JOIN_TOKEN", JOIN_TOKEN)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        if component == "borgmaster" {
            cmd.env("BORG_BOOTSTRAP_TOKEN", ADMIN_TOKEN);
        }
        // SAFETY: only prctl, async-signal-safe, between fork and exec. Should the
        // test process die without running Drop, its children go with it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.procs.push((name.to_string(), child));
    }

    /// SIGKILL: no shutdown path runs, as in a crash.
    pub fn kill_master(&mut self) {
        let i = self
            .procs
            .iter()
            .position(|(n, _)| n == "borgmaster")
            .unwrap();
        let (_, mut child) = self.procs.remove(i);
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
        child.wait().unwrap();
    }

    pub async fn submit(&self, n: usize, starts: &Path) {
        // Tasks of a root borglet run as `nobody`: the file is theirs to append to.
        std::fs::File::create(starts).unwrap();
        std::fs::set_permissions(starts, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        let line = format!("echo $BORG_ATTEMPT >> {}", starts.display());
        let spec = json!({"name": "big", "replicas": n, "task": {
            "command": ["/bin/sh", "-c", line],
            "resources": {"cpu": "10m", "memory": "4Mi"}}});
        let (http, url) = (&self.http, format!("{}/v1/jobs", self.master));
        let resp = http.post(&url).json(&spec).send().await.unwrap();
        let status = resp.status();
        assert!(
            status.is_success(),
            "submit: {status} {}",
            resp.text().await.unwrap()
        );
    }

    pub async fn job(&self) -> Option<Value> {
        get_json(&self.http, &format!("{}/v1/jobs/big", self.master)).await
    }

    pub async fn wait_succeeded(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(120 + n as u64 / 5);
        let mut last = None;
        loop {
            if let Some(job) = self.job().await {
                if job["state"] == "succeeded" {
                    return;
                }
                last = Some(job["task_counts"].clone());
            }
            assert!(
                Instant::now() < deadline,
                "job big not succeeded in time; last task counts {last:?}; logs in {}",
                self.path().display()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Cell {
    fn drop(&mut self) {
        // Borglets first, gently; the tasks they leave are ended below.
        for (name, child) in &self.procs {
            if name.starts_with("borglet") {
                // A frozen borglet must run to stop.
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (name, child) in &mut self.procs {
            while name.starts_with("borglet")
                && Instant::now() < deadline
                && matches!(child.try_wait(), Ok(None))
            {
                std::thread::sleep(POLL);
            }
        }
        for (_, child) in &mut self.procs {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            leftovers::kill_tasks_under(dir.path());
        }
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("component logs kept in {}", dir.keep().display());
            }
        }
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Option<Value> {
    let resp = http.get(url).send().await.ok()?;
    resp.status().is_success().then_some(())?;
    resp.json().await.ok()
}

pub use devpg::wait::wait_for;

/// Tasks run while this file exists (removed on drop, also when a test fails).
pub struct Alive(PathBuf);

impl Alive {
    pub fn new(dir: &Path) -> Alive {
        let path = dir.join("alive");
        std::fs::write(&path, b"").unwrap();
        Alive(path)
    }

    /// The shell line that runs while the file exists.
    pub fn line(&self) -> String {
        format!("while [ -e {} ]; do sleep 0.1; done", self.0.display())
    }

    /// That line as a task's `command`.
    pub fn command(&self) -> Value {
        json!(["/bin/sh", "-c", self.line()])
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `jobctl --master URL args...` with the admin token: (success, stdout + stderr).
pub fn jobctl(cell: &Cell, args: &[&str]) -> (bool, String) {
    let out = Command::new(JOBCTL)
        .arg("--master")
        .arg(cell.master_url())
        .args(args)
        .env("BORG_TOKEN", ADMIN_TOKEN)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
