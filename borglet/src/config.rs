//! The borglet's configuration: every flag, each also readable from an environment
//! variable, plus the machine capacity detection used when no override is given.

use crate::isolation::{Choice, DEFAULT_PIDS};
use anyhow::Context;
use borg_shared::resources::Quantity;
use borg_shared::wire::Capacity;
use borg_shared::{Bytes, MilliCpu};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// What the borglet does with its task processes when it shuts down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OnExit {
    /// Leave them running so a restarted borglet can re-adopt them.
    #[default]
    Keep,
    /// Stop every task (SIGTERM, SIGKILL after its grace) and wait: no orphans.
    Stop,
}

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "borglet",
    version,
    about = "The borg machine agent: runs the task processes the master asks for"
)]
pub struct Config {
    /// Address to serve the borglet API on [default: the host and port of
    /// `--advertise`, else 127.0.0.1:7701; never all interfaces unless told].
    #[arg(long, env = "BORGLET_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// This machine's name, as registered with the master.
    #[arg(long, env = "BORGLET_NAME", default_value_t = default_name())]
    pub name: String,

    /// Base URL of the master API, or several comma-separated: registration and
    /// nudges go to the one that answered last, and to the next while one
    /// cannot be reached or answers 503.
    #[arg(
        long,
        env = "BORG_MASTER",
        value_name = "URL[,URL...]",
        default_value = "http://127.0.0.1:7700"
    )]
    pub master: String,

    /// Base URL the master should use to reach this borglet
    /// [default: http://127.0.0.1:<bound port>].
    #[arg(long, env = "BORGLET_ADVERTISE")]
    pub advertise: Option<String>,

    /// Directory holding the per-attempt sandboxes and their logs.
    #[arg(long, env = "BORGLET_DATA_DIR", default_value = "./.borglet")]
    pub data_dir: PathBuf,

    /// Directory for the per-attempt records that only serve re-adoption after
    /// a restart of the borglet (what was launched, pids, exit statuses). Put
    /// it on a tmpfs (e.g. `/run/borglet`), as containerd does its state: a
    /// start then writes no file to the data dir's disk but the sandbox, and a
    /// reboot, which ends the tasks, clears the records with them
    /// [default: <data-dir>/run].
    #[arg(long, env = "BORGLET_RUNTIME_DIR")]
    pub runtime_dir: Option<PathBuf>,

    /// A machine label `key=value` (repeatable; the env var is comma-separated).
    #[arg(long = "label", env = "BORGLET_LABELS", value_delimiter = ',')]
    pub labels: Vec<Label>,

    /// CPU capacity offered (`4`, `3500m`) [default: detected cores].
    #[arg(long, env = "BORGLET_CPU", value_parser = parse_cpu)]
    pub cpu: Option<MilliCpu>,

    /// Memory capacity offered (`8Gi`) [default: MemTotal].
    #[arg(long, env = "BORGLET_MEMORY", value_parser = parse_bytes)]
    pub memory: Option<Bytes>,

    /// Disk capacity offered (`100Gi`) [default: free space of the data dir].
    #[arg(long, env = "BORGLET_DISK", value_parser = parse_bytes)]
    pub disk: Option<Bytes>,

    /// CPU kept back for the system when the capacity is detected (`500m`).
    #[arg(long, env = "BORGLET_RESERVE_CPU", value_parser = parse_cpu, default_value = "0")]
    pub reserve_cpu: MilliCpu,

    /// Memory kept back for the system when the capacity is detected (`512Mi`).
    #[arg(long, env = "BORGLET_RESERVE_MEMORY", value_parser = parse_bytes, default_value = "0")]
    pub reserve_memory: Bytes,

    /// How tasks are isolated: `auto` takes cgroup v2, else v1, else runs them
    /// unisolated (and says so); `v2`/`v1` refuse to start without that hierarchy.
    #[arg(long, env = "BORGLET_ISOLATION", value_enum, default_value_t = Choice::Auto)]
    pub isolation: Choice,

    /// Parent of this borglet's cgroups, under each hierarchy's root; the
    /// machine name is appended, so borglets sharing a host stay apart.
    #[arg(long, env = "BORGLET_CGROUP_PARENT", default_value = "borg")]
    pub cgroup_parent: String,

    /// Most processes (and threads) one attempt may have.
    #[arg(long, env = "BORGLET_PIDS_LIMIT", default_value_t = DEFAULT_PIDS)]
    pub pids_limit: u64,

    /// How often each attempt's cpu and memory use is sampled from its cgroup.
    #[arg(long, env = "BORGLET_USAGE_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub usage_interval: Duration,
    /// Host ports the scheduler may give tasks here (`BORG_PORT0`, ...).
    #[arg(long, env = "BORGLET_PORT_RANGE", default_value = "20000-29999")]
    pub port_range: borg_shared::wire::PortRange,

    /// What happens to running tasks when the borglet shuts down.
    #[arg(long, env = "BORGLET_ON_EXIT", value_enum, default_value_t = OnExit::Keep)]
    pub on_exit: OnExit,

    /// The executable started once as the keeper (`EXE __borglet-keeper
    /// DATA_DIR`), which starts, keeps and reaps every task and outlives the
    /// borglet: this executable, or the smaller `borglet-shim` of the same
    /// build [default: this executable].
    #[arg(long, env = "BORGLET_SHIM_EXE")]
    pub shim_exe: Option<PathBuf>,

    /// The user tasks run as [default: `nobody` when the borglet runs as root,
    /// else the borglet's own user]. Another user than the borglet's needs root.
    #[arg(long, env = "BORGLET_RUN_AS")]
    pub run_as: Option<String>,

    /// Bytes of each task output stream kept (stdout, stderr): the log rotates
    /// once, keeping the newest; `0` keeps everything.
    #[arg(long, env = "BORGLET_LOG_MAX_BYTES", default_value = "10Mi", value_parser = parse_bytes)]
    pub log_max_bytes: Bytes,

    /// How long a finished attempt's sandbox and logs are kept once the master
    /// has recorded its end.
    #[arg(long, env = "BORGLET_SANDBOX_RETENTION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub sandbox_retention: Duration,

    /// Below this much free disk in the data dir, finished sandboxes are removed
    /// before their retention is over, oldest first.
    #[arg(long, env = "BORGLET_MIN_FREE_DISK", default_value = "1Gi", value_parser = parse_bytes)]
    pub min_free_disk: Bytes,

    /// File holding the cluster join token, to register a new machine (or set
    /// `BORG_JOIN_TOKEN`). Once registered, the machine's own credential (kept in
    /// the data dir) is enough.
    #[arg(long, env = "BORG_JOIN_TOKEN_FILE", value_name = "FILE")]
    pub join_token_file: Option<PathBuf>,

    /// Serve the borglet API over HTTPS with this certificate (PEM, leaf
    /// first; it must name the host of `--advertise`); with `--tls-key`.
    #[arg(long, env = "BORGLET_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of `--tls-cert`.
    #[arg(long, env = "BORGLET_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// The cluster CA (PEM): the master's certificate must chain to it, and,
    /// with `--tls-cert`, so must the client certificate every caller of the
    /// borglet API presents (mutual TLS).
    #[arg(long, env = "BORG_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Register again when no sync has arrived for this long (the master may have lost us).
    #[arg(long, env = "BORGLET_REREGISTER_AFTER", default_value = "5s", value_parser = humantime::parse_duration)]
    pub reregister_after: Duration,

    /// Threads running the borglet's async work (its API, syncs, watchers,
    /// probes, nudges). Everything that blocks (sandboxes, cgroups, the
    /// keeper's requests, file writes) runs on a separate blocking pool, so one
    /// is enough, and one is cheaper: each task's start and end wake the
    /// runtime a few times, and with more threads each wake-up parks and
    /// unparks another one (BENCHMARKS.md, "one async thread") [default: 1;
    /// in fleet mode, one per core].
    #[arg(long, env = "BORGLET_ASYNC_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub async_threads: Option<u16>,

    /// Fleet mode, for tests and benchmarks: serve this many simulated
    /// borglets (`<--name>-<i>`, each at `<advertised URL>/b/<its name>`, each
    /// registering and syncing as a real one) whose tasks are simulated.
    #[arg(long, value_name = "N")]
    pub fleet: Option<usize>,

    /// Fleet mode: a simulated task exits after this long (`forever`: it runs until stopped).
    #[arg(long, default_value = "forever")]
    pub fleet_task_runs_for: crate::fleet::RunsFor,

    /// Fleet mode: the exit code a simulated task ends with.
    #[arg(long, default_value_t = 0)]
    pub fleet_task_exit_code: i32,

    #[command(flatten)]
    pub log: borg_shared::logging::LogArgs,
}

/// One `key=value` machine label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub key: String,
    pub value: String,
}

#[derive(Debug, thiserror::Error)]
#[error("label `{0}` must look like key=value with a non-empty key")]
pub struct LabelError(String);

impl FromStr for Label {
    type Err = LabelError;
    /// A blank entry (an empty `BORGLET_LABELS`, a trailing comma) parses to an
    /// empty label, which `labels_map` skips.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Ok(Label {
                key: String::new(),
                value: String::new(),
            });
        }
        match s.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => Ok(Label {
                key: key.trim().to_string(),
                value: value.trim().to_string(),
            }),
            _ => Err(LabelError(s.to_string())),
        }
    }
}

fn parse_cpu(s: &str) -> Result<MilliCpu, String> {
    MilliCpu::parse(&Quantity::Text(s.to_string())).map_err(|e| format!("cpu `{s}` {e}"))
}

fn parse_bytes(s: &str) -> Result<Bytes, String> {
    Bytes::parse(&Quantity::Text(s.to_string())).map_err(|e| format!("size `{s}` {e}"))
}

fn default_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

impl Config {
    /// Threads of the async runtime: `--async-threads`, else one (one per
    /// core in fleet mode, which serves many borglets).
    pub fn async_threads(&self) -> usize {
        match (self.async_threads, self.fleet) {
            (Some(n), _) => usize::from(n),
            (None, None) => 1,
            (None, Some(_)) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    pub fn labels_map(&self) -> BTreeMap<String, String> {
        self.labels
            .iter()
            .filter(|l| !l.key.is_empty())
            .map(|l| (l.key.clone(), l.value.clone()))
            .collect()
    }

    /// The advertised base URL, defaulting to loopback on the port actually bound
    /// (the listener may have been bound to port 0).
    pub fn advertise_url(&self, bound: SocketAddr) -> String {
        let scheme = if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        match &self.advertise {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("{scheme}://127.0.0.1:{}", bound.port()),
        }
    }

    fn identity(&self) -> anyhow::Result<Option<borg_shared::tls::Identity>> {
        borg_shared::tls::Identity::from_flags(self.tls_cert.as_deref(), self.tls_key.as_deref())
            .map_err(anyhow::Error::msg)
    }

    /// The API's TLS configuration when it serves HTTPS; with `--ca-cert`,
    /// callers must present a certificate of the cluster CA.
    pub fn server_tls(&self) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
        let Some(identity) = self.identity()? else {
            return Ok(None);
        };
        if self.ca_cert.is_none() {
            tracing::warn!("--tls-cert without --ca-cert: the API asks callers for no client certificate (only the machine credential keeps out forged syncs)");
        }
        borg_shared::tls::server_config(&identity, self.ca_cert.as_deref())
            .map(Some)
            .context("--tls-cert/--tls-key/--ca-cert")
    }

    /// A client for calls to the master, trusting only the cluster CA when
    /// `--ca-cert` is given.
    pub fn master_client(&self, timeout: Duration) -> anyhow::Result<reqwest::Client> {
        let builder = reqwest::Client::builder().timeout(timeout);
        let builder = match &self.ca_cert {
            Some(ca) => builder.use_preconfigured_tls(
                borg_shared::tls::client_config(ca, None).context("--ca-cert")?,
            ),
            None => builder,
        };
        builder.build().context("building the client to the master")
    }

    /// Where to listen: `--listen`, else the address advertised, else loopback.
    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        const DEFAULT_PORT: u16 = 7701;
        if let Some(listen) = self.listen {
            return Ok(listen);
        }
        let Some(advertise) = &self.advertise else {
            return Ok(SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)));
        };
        let url = reqwest::Url::parse(advertise)
            .with_context(|| format!("--advertise `{advertise}` is not a URL"))?;
        let host = url
            .host_str()
            .with_context(|| format!("--advertise `{advertise}` has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = url.port().unwrap_or(DEFAULT_PORT);
        use std::net::ToSocketAddrs;
        (host, port)
            .to_socket_addrs()
            .with_context(|| format!("resolving the --advertise host `{host}`"))?
            .next()
            .with_context(|| format!("the --advertise host `{host}` has no address; use --listen"))
    }

    /// The join token: `BORG_JOIN_TOKEN`, else the content of `--join-token-file`.
    pub fn join_token(&self) -> anyhow::Result<Option<String>> {
        let file = self.join_token_file.as_deref();
        borg_shared::agent::secret_from_env_or_file("BORG_JOIN_TOKEN", file)
            .context("reading the join token (BORG_JOIN_TOKEN, --join-token-file)")
    }

    /// Capacity offered to the master: the overrides, else what this machine has
    /// minus the reserves.
    pub fn capacity(&self, data_dir: &Path) -> anyhow::Result<Capacity> {
        let cpu = match self.cpu {
            Some(cpu) => cpu,
            None => MilliCpu(detect_cpu().0.saturating_sub(self.reserve_cpu.0)),
        };
        let memory = match self.memory {
            Some(m) => m,
            None => {
                let total = detect_memory().context("reading MemTotal from /proc/meminfo")?;
                Bytes(total.0.saturating_sub(self.reserve_memory.0))
            }
        };
        let disk = match self.disk {
            Some(d) => d,
            None => detect_disk(data_dir)
                .with_context(|| format!("statvfs of {}", data_dir.display()))?,
        };
        Ok(Capacity { cpu, memory, disk })
    }
}

fn detect_cpu() -> MilliCpu {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    MilliCpu(cpus as u64 * 1000)
}

fn detect_memory() -> anyhow::Result<Bytes> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    parse_meminfo_total(&meminfo).context("no MemTotal line")
}

/// `MemTotal:       16318480 kB` → bytes.
fn parse_meminfo_total(meminfo: &str) -> Option<Bytes> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(Bytes(kib.saturating_mul(1024)))
}

fn detect_disk(dir: &Path) -> anyhow::Result<Bytes> {
    let st = nix::sys::statvfs::statvfs(dir)?;
    #[allow(clippy::unnecessary_cast)] // the field widths differ between targets
    let free = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
    Ok(Bytes(free))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let text = "MemTotal:       16318480 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_meminfo_total(text), Some(Bytes(16318480 * 1024)));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn one_async_thread_unless_asked_or_in_fleet_mode() {
        let threads = |args: &[&str]| {
            Config::try_parse_from(std::iter::once("borglet").chain(args.iter().copied()))
                .map(|c| c.async_threads())
        };
        assert_eq!(threads(&[]).unwrap(), 1);
        assert_eq!(threads(&["--async-threads", "3"]).unwrap(), 3);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(threads(&["--fleet", "10"]).unwrap(), cores);
        assert_eq!(
            threads(&["--fleet", "10", "--async-threads", "2"]).unwrap(),
            2
        );
        assert!(
            threads(&["--async-threads", "0"]).is_err(),
            "zero threads refused"
        );
    }

    #[test]
    fn flags_parse() {
        let c = Config::try_parse_from([
            "borglet",
            "--name",
            "m1",
            "--label",
            "zone=a",
            "--label",
            "ssd=",
            "--cpu",
            "1500m",
            "--memory",
            "2Gi",
            "--on-exit",
            "stop",
            "--reregister-after",
            "250ms",
        ])
        .unwrap();
        assert_eq!(c.name, "m1");
        assert_eq!(c.cpu, Some(MilliCpu(1500)));
        assert_eq!(c.memory, Some(Bytes(2 << 30)));
        assert_eq!(c.on_exit, OnExit::Stop);
        assert_eq!(c.reregister_after, Duration::from_millis(250));
        let labels = c.labels_map();
        assert_eq!(labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(labels.get("ssd").map(String::as_str), Some(""));
        let c = Config::try_parse_from(["borglet", "--label", "a=1,,b=2,"]).unwrap();
        assert_eq!(c.labels_map().len(), 2);
    }

    #[test]
    fn reserves_come_off_detected_capacity_only() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::try_parse_from([
            "borglet",
            "--reserve-cpu",
            "500m",
            "--reserve-memory",
            "1Mi",
        ])
        .unwrap();
        let detected = Config::try_parse_from(["borglet"])
            .unwrap()
            .capacity(dir.path())
            .unwrap();
        let reserved = c.capacity(dir.path()).unwrap();
        assert_eq!(reserved.cpu.0, detected.cpu.0 - 500);
        assert_eq!(reserved.memory.0, detected.memory.0 - (1 << 20));
        let c = Config::try_parse_from(["borglet", "--reserve-cpu", "1", "--cpu", "3"]).unwrap();
        assert_eq!(
            c.capacity(dir.path()).unwrap().cpu,
            MilliCpu(3000),
            "an override is taken as given"
        );
        assert_eq!(c.isolation, Choice::Auto);
        assert_eq!(c.pids_limit, 4096);
    }

    #[test]
    fn bad_flags_are_errors() {
        assert!(Config::try_parse_from(["borglet", "--label", "novalue"]).is_err());
        assert!(Config::try_parse_from(["borglet", "--cpu", "lots"]).is_err());
        assert!(Config::try_parse_from(["borglet", "--on-exit", "maybe"]).is_err());
    }

    #[test]
    fn listens_where_it_advertises_unless_told() {
        let c = Config::try_parse_from(["borglet"]).unwrap();
        assert_eq!(c.listen_addr().unwrap().to_string(), "127.0.0.1:7701");
        let c =
            Config::try_parse_from(["borglet", "--advertise", "http://127.0.0.2:9000"]).unwrap();
        assert_eq!(c.listen_addr().unwrap().to_string(), "127.0.0.2:9000");
        let c = Config::try_parse_from([
            "borglet",
            "--advertise",
            "http://127.0.0.2:9000",
            "--listen",
            "0.0.0.0:7000",
        ])
        .unwrap();
        assert_eq!(c.listen_addr().unwrap().to_string(), "0.0.0.0:7000");
    }

    #[test]
    fn advertise_defaults_to_the_bound_port() {
        let c = Config::try_parse_from(["borglet"]).unwrap();
        let bound: SocketAddr = "0.0.0.0:4321".parse().unwrap();
        assert_eq!(c.advertise_url(bound), "http://127.0.0.1:4321");
    }
}
