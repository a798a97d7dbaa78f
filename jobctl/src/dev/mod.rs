//! `jobctl dev`: a whole local cell in the foreground, the newcomer's one
//! command. Postgres (embedded unless DATABASE_URL is set), one master, one
//! scheduler and N borglets, all children of this process; one that dies is
//! started again. Ctrl-C stops them in order (borglets, scheduler, master,
//! Postgres); tasks keep running, as on a real machine whose agent stops.
//! Restarting with the same data dir resumes the same cell, and its borglets
//! re-adopt the tasks.

mod admin_token;
mod child;
mod db;
mod secrets;
mod tls;

/// The cell's database on its embedded Postgres (the bench seeds history in it).
pub use db::DATABASE;

use anyhow::{bail, Context};
use child::{describe_status, Child, Exit, Spawn};
use nix::sys::signal::Signal;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::signal::unix::{signal, Signal as SignalStream, SignalKind};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, Instant};

const ZONES: [&str; 3] = ["a", "b", "c"];
const STOP_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many borglets (machines m1..mN) to run (0: machines join from elsewhere).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(0..=200))]
    pub borglets: u16,
    /// Where the cell keeps its database, borglet state and logs.
    #[arg(long, value_name = "DIR", default_value = ".borg-dev")]
    pub data_dir: PathBuf,
    /// Address the master's API listens on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,
    /// Borglet i listens on 127.0.0.1:(P + i - 1).
    #[arg(long, value_name = "P", default_value_t = 7701)]
    pub borglet_base_port: u16,
    /// How long to wait for the master and every borglet to come up.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub startup_timeout: humantime::Duration,
    /// Do not echo the components' logs on the terminal (they still go to DIR/logs).
    #[arg(short, long)]
    pub quiet: bool,
    /// Run the whole cell over https: a cluster CA and certificates in DIR/tls
    /// (keys 0600); borglets require the master's client certificate.
    #[arg(long)]
    pub tls: bool,
    /// Format of the components' log lines: `text` or `json` (passed to each as `--log-format`).
    #[arg(long, value_enum, default_value_t)]
    pub log_format: borg_shared::logging::LogFormat,
}

/// Run the cell until Ctrl-C/SIGTERM (Ok), restarting a component that dies, or
/// until one keeps dying (Err).
pub fn run(args: Args) -> anyhow::Result<()> {
    let data_dir = std::path::absolute(&args.data_dir)
        .with_context(|| format!("resolving {}", args.data_dir.display()))?;
    let borglet_addrs = borglet_addrs(args.borglet_base_port, args.borglets)?;
    check_free(args.listen, "--listen")?;
    for addr in &borglet_addrs {
        check_free(*addr, "--borglet-base-port")?;
    }
    let log_dir = data_dir.join("logs");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let token = Some(admin_token::ensure(&data_dir)?);

    let join_token = secrets::join_token(&data_dir)?;
    let tls = match args.tls {
        true => Some(tls::prepare(&data_dir, args.listen, borglet_addrs.len())?),
        false => None,
    };
    // jobctl run in or below this directory calls this cell (and trusts its CA).
    let url_file = data_dir.join(crate::credentials::MASTER_URL_FILE);
    std::fs::write(
        &url_file,
        format!("{}\n", master_url(args.listen, tls.is_some())),
    )
    .with_context(|| format!("writing {}", url_file.display()))?;

    let (pg, given_url) = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            println!("using the database at DATABASE_URL");
            (None, Some(url))
        }
        _ => {
            let pg_dir = data_dir.join("pg");
            println!("starting postgres in {}...", pg_dir.display());
            let pg = devpg::PgServer::start(&pg_dir, &devpg::Options::default())
                .context("starting the embedded postgres")?;
            (Some(pg), None)
        }
    };

    // Current-thread on purpose: children are forked from this (main) thread,
    // which lives until the end, so their parent-death signal means "jobctl died".
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(async {
            let database_url = match (&pg, given_url) {
                (_, Some(url)) => url,
                (Some(pg), None) => db::cell_database(pg).await?,
                (None, None) => bail!("no database: neither DATABASE_URL nor an embedded postgres"),
            };
            let cell = Cell {
                borglets: borglet_addrs,
                listen: args.listen,
                data_dir: data_dir.clone(),
                log_dir,
                database_url,
                join_token,
                echo: !args.quiet,
                startup_timeout: args.startup_timeout.into(),
                token,
                tls,
                log_format: args.log_format,
            };
            cell.run().await
        });

    if let Some(pg) = pg {
        println!("stopping postgres...");
        if let Err(e) = pg.stop() {
            eprintln!("warning: {e:#}");
        }
    }
    if result.is_ok() {
        println!("cell stopped");
    }
    // Also when the cell stopped on an error: its borglets left their tasks too.
    let mut left: Vec<i32> = (1..=usize::from(args.borglets))
        .flat_map(|n| borglet::runtime_dir::tasks_left_running(&borglet_dir(&data_dir, n)))
        .collect();
    left.sort_unstable();
    if !left.is_empty() {
        println!("{}", left_running(&left));
    }
    result
}

/// Where the cell's borglet `n` (1-based) keeps its data.
fn borglet_dir(data_dir: &Path, n: usize) -> PathBuf {
    data_dir.join(format!("borglet-{n}"))
}

/// The line that tells of the tasks the borglets left running (their process
/// groups), and what to do about them.
fn left_running(groups: &[i32]) -> String {
    let tasks = match groups.len() {
        1 => "1 task".to_string(),
        n => format!("{n} tasks"),
    };
    let kill: String = groups.iter().map(|g| format!(" -{g}")).collect();
    format!(
        "{tasks} left running, as a machine's tasks outlive its borglet: \
         `jobctl dev` here again re-adopts them; to end them now: kill --{kill}"
    )
}

/// `127.0.0.1:<base + i - 1>` for i in 1..=n.
fn borglet_addrs(base: u16, n: u16) -> anyhow::Result<Vec<SocketAddr>> {
    (0..n)
        .map(|i| {
            let port = base.checked_add(i).with_context(|| {
                format!("--borglet-base-port {base} leaves no room for {n} borglets")
            })?;
            Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        })
        .collect()
}

/// Fail early, and clearly, when another process holds a port the cell needs.
fn check_free(addr: SocketAddr, flag: &str) -> anyhow::Result<()> {
    match TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            bail!("{addr} is in use: is another cell running? use {flag}")
        }
        Err(e) => bail!("cannot listen on {addr}: {e}"),
    }
}

/// The URL clients use for a listen address (`0.0.0.0` is reached on loopback).
fn master_url(listen: SocketAddr, tls: bool) -> String {
    let ip = match listen.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(ip, listen.port()))
}

struct Cell {
    borglets: Vec<SocketAddr>,
    listen: SocketAddr,
    data_dir: PathBuf,
    log_dir: PathBuf,
    /// Given to the master and the scheduler in their environment.
    database_url: String,
    /// Given to the master and the borglets in their environment.
    join_token: String,
    echo: bool,
    startup_timeout: Duration,
    token: Option<String>,
    /// `--tls`: the CA and every component's certificate.
    tls: Option<tls::CellTls>,
    log_format: borg_shared::logging::LogFormat,
}

/// A component that dies is started again, up to `REVIVE_LIMIT` times within
/// `REVIVE_WINDOW`; past that it is taken as broken (bad flags, a port taken)
/// and the cell stops, saying why.
const REVIVE_LIMIT: usize = 5;
const REVIVE_WINDOW: Duration = Duration::from_secs(60);

/// Recent restarts of each component, by its index in the cell.
#[derive(Default)]
struct Revive {
    recent: std::collections::HashMap<usize, std::collections::VecDeque<Instant>>,
}

impl Revive {
    /// Start the component that exited again, with one line saying so; `Err`
    /// when it cannot be or keeps dying, which stops the cell.
    fn revive(
        &mut self,
        children: &mut [Child],
        (index, status): Exit,
        exits: &mpsc::UnboundedSender<Exit>,
    ) -> Result<(), Stop> {
        let text = describe_status(&status);
        let Some(child) = children.get_mut(index) else {
            return Err(Stop::ChildExited(format!("a component exited with {text}")));
        };
        child.exited = Some(text.clone());
        let now = Instant::now();
        let recent = self.recent.entry(index).or_default();
        recent.retain(|t| now.duration_since(*t) < REVIVE_WINDOW);
        if recent.len() >= REVIVE_LIMIT {
            return Err(Stop::ChildExited(format!(
                "{} exited with {text}, {} times within {} s: giving up; see {}",
                child.name,
                recent.len() + 1,
                REVIVE_WINDOW.as_secs(),
                child.log.display()
            )));
        }
        recent.push_back(now);
        println!(
            "{} exited with {text}; restarting it (see {})",
            child.name,
            child.log.display()
        );
        child.restart(exits.clone()).map_err(Stop::Failed)
    }
}

/// Why the cell is stopping.
enum Stop {
    Signal,
    ChildExited(String),
    Failed(anyhow::Error),
}

struct Signals {
    int: SignalStream,
    term: SignalStream,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("handling SIGINT")?,
            term: signal(SignalKind::terminate()).context("handling SIGTERM")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

impl Cell {
    async fn run(self) -> anyhow::Result<()> {
        let mut signals = Signals::new()?;
        let (exit_tx, mut exits) = mpsc::unbounded_channel::<Exit>();
        let mut children: Vec<Child> = Vec::new();
        let mut revive = Revive::default();
        let started = self.spawn_all(&exit_tx, &mut children);

        let stop = match started {
            Err(e) => Stop::Failed(e),
            Ok(()) => {
                let wait_up = self.wait_up();
                tokio::pin!(wait_up);
                let mut up = false;
                loop {
                    tokio::select! {
                        r = &mut wait_up, if !up => match r {
                            Ok(()) => {
                                self.banner();
                                up = true;
                            }
                            Err(e) => break Stop::Failed(e),
                        },
                        () = signals.recv() => break Stop::Signal,
                        Some(exit) = exits.recv() => {
                            if let Err(stop) = revive.revive(&mut children, exit, &exit_tx) {
                                break stop;
                            }
                        }
                    }
                }
            }
        };
        println!("stopping the cell...");
        stop_all(&mut children, &mut exits, &mut signals).await;
        match stop {
            Stop::Signal => Ok(()),
            Stop::ChildExited(msg) => bail!(msg),
            Stop::Failed(e) => Err(e),
        }
    }

    fn spawn_all(
        &self,
        exits: &mpsc::UnboundedSender<Exit>,
        children: &mut Vec<Child>,
    ) -> anyhow::Result<()> {
        let master = master_url(self.listen, self.tls.is_some());
        let mut master_args = vec![
            "--listen".into(),
            self.listen.to_string(),
            "--bootstrap-token-file".into(),
            admin_token::path(&self.data_dir).display().to_string(),
        ];
        if let Some(cell) = &self.tls {
            master_args.extend(tls::flags(&cell.master, &cell.ca));
        }
        let mut specs: Vec<(String, &'static str, Vec<String>)> = vec![
            ("borgmaster".into(), "borgmaster", master_args),
            (
                "borgscheduler".into(),
                "borgscheduler",
                vec!["--listen".into(), scheduler_listen(self.listen).to_string()],
            ),
        ];
        for (i, addr) in self.borglets.iter().enumerate() {
            let n = i + 1;
            let dir = borglet_dir(&self.data_dir, n);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut args = borglet_args(n, *addr, &master, &dir);
            if let Some(cell) = &self.tls {
                args.extend(tls::flags(&cell.borglets[i], &cell.ca));
            }
            specs.push((format!("borglet-{n}"), "borglet", args));
        }
        let log_format = clap::ValueEnum::to_possible_value(&self.log_format)
            .map(|v| v.get_name().to_string())
            .unwrap_or_else(|| "text".into());
        for (name, component, mut args) in specs {
            args.extend(["--log-format".into(), log_format.clone()]);
            let child = Spawn {
                index: children.len(),
                name,
                component,
                args,
                env: secrets::component_env(component, &self.database_url, &self.join_token),
                log_dir: self.log_dir.clone(),
                echo: self.echo,
            }
            .start(exits.clone())?;
            children.push(child);
        }
        Ok(())
    }

    /// Wait for the master's health check, then for every borglet to register as up.
    async fn wait_up(&self) -> anyhow::Result<()> {
        let master = master_url(self.listen, self.tls.is_some());
        let ca = self.tls.as_ref().map(|t| t.ca.as_path());
        let client = crate::client::Client::with_ca(&master, self.token.clone(), ca)?;
        let deadline = Instant::now() + self.startup_timeout;
        let logs = self.log_dir.display();
        let limit = humantime::format_duration(self.startup_timeout);

        println!("waiting for the master at {master}...");
        while client.healthz().await.is_err() {
            if Instant::now() > deadline {
                bail!("the master did not answer {master}/healthz within {limit}; see {logs}");
            }
            sleep(Duration::from_millis(200)).await;
        }

        let want = self.borglets.len();
        let names: Vec<String> = (1..=want).map(|i| format!("m{i}")).collect();
        let mut shown = None;
        loop {
            if let Ok(list) = client.machines().await {
                let up = list
                    .machines
                    .iter()
                    .filter(|m| names.contains(&m.name))
                    .filter(|m| m.state == borg_shared::MachineState::Up)
                    .count();
                if shown != Some(up) {
                    println!("{up}/{want} borglets registered");
                    shown = Some(up);
                }
                if up >= want {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "only {}/{want} borglets registered within {limit}; see {logs}",
                    shown.unwrap_or(0)
                );
            }
            sleep(Duration::from_millis(200)).await;
        }
    }

    fn banner(&self) {
        let master = master_url(self.listen, self.tls.is_some());
        let exe = jobctl_path();
        let flag = if master == crate::DEFAULT_MASTER {
            String::new()
        } else {
            format!(" --master {master}")
        };
        println!(
            "borg dev cell is up: master {master}, {} borglets, data in {}",
            self.borglets.len(),
            self.data_dir.display()
        );
        println!(
            "metrics: {master}/metrics (master), http://{}/metrics (scheduler)",
            scheduler_listen(self.listen)
        );
        // jobctl run from here finds the token by itself; elsewhere, export it.
        if let Some(token) = &self.token {
            println!("export BORG_TOKEN={token}");
        }
        if let Some(cell) = &self.tls {
            println!("export BORG_CA_CERT={}", cell.ca.display());
        }
        println!("try: {exe}{flag} run -f examples/hello.yaml --wait");
        let tls = match &self.tls {
            Some(cell) => format!(
                " --ca-cert {} --tls-cert CERT --tls-key KEY",
                cell.ca.display()
            ),
            None => String::new(),
        };
        println!(
            "more machines join with: borglet --join-token-file {} --master {master}{tls} --name m{} ...",
            self.data_dir.join(secrets::JOIN_TOKEN_FILE).display(),
            self.borglets.len() + 1
        );
        println!("Ctrl-C stops the cell.");
    }
}

/// The arguments of the cell's borglet `n` (1-based): name `mN`, zone label a|b|c in
/// turn, 2 cpu / 4Gi / 10Gi. Its tasks outlive it (the production default,
/// `--on-exit keep`): a borglet started again on the same data dir re-adopts them.
/// Tests that start components as separate processes use the same.
pub fn borglet_args(n: usize, addr: SocketAddr, master: &str, dir: &Path) -> Vec<String> {
    let zone = ZONES[(n - 1) % ZONES.len()];
    [
        "--listen",
        &addr.to_string(),
        "--name",
        &format!("m{n}"),
        "--label",
        &format!("zone={zone}"),
        "--master",
        master,
        "--data-dir",
        &dir.display().to_string(),
        "--cpu",
        "2",
        "--memory",
        "4Gi",
        "--disk",
        "10Gi",
        // Borglets of one dev cell share the host: each gets its own ports.
        "--port-range",
        &format!(
            "{first}-{last}",
            first = 20000 + ((n - 1) % 400) * 100,
            last = 20099 + ((n - 1) % 400) * 100
        ),
    ]
    .map(String::from)
    .to_vec()
}

/// The dev cell's scheduler serves `/metrics` 10 ports above the master.
pub fn scheduler_listen(master: SocketAddr) -> SocketAddr {
    SocketAddr::new(master.ip(), master.port().wrapping_add(10))
}

/// How to call this binary from the current directory: `target/release/jobctl`.
fn jobctl_path() -> String {
    let exe = std::env::current_exe().ok();
    let cwd = std::env::current_dir().ok();
    match (exe, cwd) {
        (Some(exe), Some(cwd)) => match exe.strip_prefix(&cwd) {
            Ok(rel) => rel.display().to_string(),
            Err(_) => exe.display().to_string(),
        },
        _ => "jobctl".into(),
    }
}

/// Borglets first (they stop their tasks), then the scheduler, then the master.
/// A second Ctrl-C (a second later or more) skips the grace period.
async fn stop_all(
    children: &mut [Child],
    exits: &mut mpsc::UnboundedReceiver<Exit>,
    signals: &mut Signals,
) {
    // (what to call the group, the prefix of its members' names)
    let groups = [
        ("borglets", "borglet-"),
        ("borgscheduler", "borgscheduler"),
        ("borgmaster", "borgmaster"),
    ];
    let began = Instant::now();
    for (label, prefix) in groups {
        let group: Vec<usize> = (0..children.len())
            .filter(|&i| children[i].name.starts_with(prefix) && children[i].running())
            .collect();
        if group.is_empty() {
            continue;
        }
        println!("stopping {label}...");
        for &i in &group {
            children[i].signal(Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        let mut hurried = false;
        while group.iter().any(|&i| children[i].running()) {
            tokio::select! {
                exit = exits.recv() => match exit {
                    Some((i, status)) => {
                        if let Some(c) = children.get_mut(i) {
                            c.exited = Some(describe_status(&status));
                        }
                    }
                    None => break,
                },
                () = tokio::time::sleep_until(deadline), if !hurried => {
                    for &i in &group {
                        if children[i].running() {
                            eprintln!("{} did not stop within {} s: killing it", children[i].name, STOP_GRACE.as_secs());
                            children[i].signal(Signal::SIGKILL);
                        }
                    }
                    hurried = true;
                }
                () = signals.recv(), if !hurried => {
                    // The same Ctrl-C often arrives twice (to us and to our process
                    // group, as `timeout` and some supervisors send it): only a
                    // later one means "hurry".
                    if began.elapsed() < Duration::from_secs(1) {
                        continue;
                    }
                    eprintln!("killing {label}");
                    for &i in &group {
                        children[i].signal(Signal::SIGKILL);
                    }
                    hurried = true;
                }
            }
        }
    }
    // Let the last lines of output reach the terminal and the logs.
    for child in children.iter_mut() {
        for copier in child.copiers.drain(..) {
            let _ = timeout(Duration::from_secs(1), copier).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tasks_left_running_are_counted_with_the_command_that_ends_them() {
        assert_eq!(
            left_running(&[4242]),
            "1 task left running, as a machine's tasks outlive its borglet: \
             `jobctl dev` here again re-adopts them; to end them now: kill -- -4242"
        );
        assert!(left_running(&[7, 9]).starts_with("2 tasks left running"));
        assert!(left_running(&[7, 9]).ends_with("kill -- -7 -9"));
    }

    #[test]
    fn borglets_get_ports_names_and_zones() {
        let addrs = borglet_addrs(7701, 4).unwrap();
        assert_eq!(addrs[3].to_string(), "127.0.0.1:7704");
        let args = borglet_args(
            4,
            addrs[3],
            "http://127.0.0.1:7700",
            Path::new("/d/borglet-4"),
        );
        assert_eq!(
            args.join(" "),
            "--listen 127.0.0.1:7704 --name m4 --label zone=a --master http://127.0.0.1:7700 \
             --data-dir /d/borglet-4 --cpu 2 --memory 4Gi --disk 10Gi \
             --port-range 20300-20399"
        );
        assert!(borglet_args(2, addrs[1], "m", Path::new("/d")).contains(&"zone=b".to_string()));
        assert!(borglet_addrs(65535, 2).is_err());
    }

    #[test]
    fn master_url_of_a_wildcard_listen_is_loopback() {
        assert_eq!(
            master_url("0.0.0.0:7700".parse().unwrap(), false),
            "http://127.0.0.1:7700"
        );
        assert_eq!(
            master_url("127.0.0.1:8000".parse().unwrap(), true),
            "https://127.0.0.1:8000"
        );
    }

    #[test]
    fn a_taken_port_is_refused_with_a_hint() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let err = check_free(addr, "--listen").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{addr} is in use: is another cell running? use --listen")
        );
    }
}
