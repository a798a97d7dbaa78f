//! A dev cell for benchmarks: the real `jobctl dev` (embedded Postgres,
//! master, scheduler, borglets) on free ports in a temp dir, stopped on drop.

use serde_json::Value;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct BenchCell {
    pub master: String,
    pub http: reqwest::blocking::Client,
    child: Child,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl BenchCell {
    pub fn start(borglets: u16) -> BenchCell {
        let dir = tempfile::Builder::new()
            .prefix("borg-bench-")
            .tempdir_in("/tmp")
            .unwrap();
        let port = free_port();
        let base = loop {
            let p = free_port();
            if p < 60000 && (p..p + borglets).all(|q| TcpListener::bind(("127.0.0.1", q)).is_ok()) {
                break p;
            }
        };
        let master = format!("http://127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_jobctl"))
            .args(["dev", "--borglets", &borglets.to_string(), "--data-dir"])
            .arg(dir.path())
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--borglet-base-port",
                &base.to_string(),
            ])
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting jobctl dev");
        let cell = BenchCell {
            master,
            http: reqwest::blocking::Client::new(),
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while cell.machines_up() < borglets as usize {
            assert!(Instant::now() < deadline, "cell did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        cell
    }

    fn machines_up(&self) -> usize {
        self.get("/v1/machines")
            .and_then(|v| {
                v["machines"]
                    .as_array()
                    .map(|m| m.iter().filter(|m| m["state"] == "up").count())
            })
            .unwrap_or(0)
    }

    /// `POST /v1/jobs`, which must answer 201.
    pub fn submit(&self, spec: &Value) {
        let resp = self
            .http
            .post(format!("{}/v1/jobs", self.master))
            .json(spec)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "submitting {spec}");
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.http
            .get(format!("{}{path}", self.master))
            .send()
            .ok()?
            .json()
            .ok()
    }
}

impl Drop for BenchCell {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = self.child.wait();
    }
}

/// `--name value` from the bench's arguments.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}
