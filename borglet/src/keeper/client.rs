//! The borglet's side of the keeper: connect to the one serving the data dir,
//! or start it (`EXE __borglet-keeper DATA_DIR`) when none does; send starts;
//! hand each answer and each exit to whoever waits for it. A task per
//! connection, on the borglet's runtime, reads what the keeper says.
//! When the connection ends (the keeper died), every waiter hears so (its
//! receiver fails) and the next start connects again, to a new keeper.

use super::{FromKeeper, ToKeeper, MAX_MESSAGE};
use crate::records::{ExitRecord, Launch, ProcId, Run};
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};
use std::collections::HashMap;
use std::io::BufRead;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The keeper's answer to a start.
#[derive(Debug)]
pub enum Answer {
    Started(Run),
    Failed(String),
}

/// What a start hands back: the answer to come, then the run's end.
pub type StartReceivers = (oneshot::Receiver<Answer>, oneshot::Receiver<ExitRecord>);

#[derive(Debug)]
pub struct KeeperClient {
    exe: PathBuf,
    dir: PathBuf,
    conn: Arc<Mutex<Option<Conn>>>,
    waiters: Arc<Mutex<Waiters>>,
}

#[derive(Debug, Clone)]
struct Conn {
    sock: Arc<OwnedFd>,
    keeper: ProcId,
    generation: u64,
}

/// Who waits for what, by sandbox; each tagged with its connection's generation,
/// so the end of an old connection fails only its own waiters.
#[derive(Debug, Default)]
struct Waiters {
    generation: u64,
    /// Whether the connection of `generation` is still open.
    open: bool,
    answers: HashMap<PathBuf, (u64, oneshot::Sender<Answer>)>,
    exits: HashMap<PathBuf, (u64, oneshot::Sender<ExitRecord>)>,
    /// Exits nobody waited for yet (a re-adopted task's, heard before its watcher asked).
    unclaimed: HashMap<PathBuf, ExitRecord>,
}

impl KeeperClient {
    /// The keeper of `data_dir`, run from `exe` when one must be started.
    pub fn new(exe: PathBuf, data_dir: &Path) -> Self {
        KeeperClient {
            exe,
            dir: data_dir.to_path_buf(),
            conn: Arc::default(),
            waiters: Arc::default(),
        }
    }

    /// The executable the keeper runs from.
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// Blocking: connect (starting the keeper if none runs); the keeper's process.
    pub fn connect(&self) -> std::io::Result<ProcId> {
        self.conn().map(|c| c.keeper)
    }

    /// Blocking: ask the keeper to start the run `launch` describes (its
    /// `launch.json` written). Its answer, then its end, come on the receivers.
    pub fn start(&self, launch: &Launch) -> std::io::Result<StartReceivers> {
        self.start_encoded(&launch.cwd, &serde_json::to_vec(launch)?)
    }

    /// [`Self::start`] of a launch record already encoded (as `launch.json`
    /// holds it), for the run in `sandbox`: it is encoded once per start.
    pub fn start_encoded(
        &self,
        sandbox: &Path,
        launch_json: &[u8],
    ) -> std::io::Result<StartReceivers> {
        let msg = start_message(launch_json);
        let sandbox = sandbox.to_path_buf();
        // A keeper that died is started again, once per request: a request
        // that could not be sent was never read, so nothing started.
        for attempt in 0..2 {
            let conn = self.conn()?;
            let (answer_tx, answer_rx) = oneshot::channel();
            let (exit_tx, exit_rx) = oneshot::channel();
            {
                let mut w = lock(&self.waiters);
                w.unclaimed.remove(&sandbox);
                w.answers
                    .insert(sandbox.clone(), (conn.generation, answer_tx));
                w.exits.insert(sandbox.clone(), (conn.generation, exit_tx));
            }
            match send(&conn.sock, &msg) {
                Ok(()) => return Ok((answer_rx, exit_rx)),
                Err(e) => {
                    let mut w = lock(&self.waiters);
                    w.answers.remove(&sandbox);
                    w.exits.remove(&sandbox);
                    drop(w);
                    // Only a closed connection means the keeper is gone; a
                    // message it cannot take (too long) fails this start alone.
                    let gone = matches!(
                        e.raw_os_error(),
                        Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN)
                    );
                    if !gone {
                        return Err(e);
                    }
                    self.lost(conn.generation);
                    if attempt == 1 {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, "the keeper is gone; starting it again");
                }
            }
        }
        Err(std::io::Error::other("cannot reach the keeper"))
    }

    /// The end of the run in `sandbox` that the connected keeper keeps (a
    /// re-adopted one). `None` if no keeper is connected.
    pub fn exit_of(&self, sandbox: &Path) -> Option<oneshot::Receiver<ExitRecord>> {
        let generation = lock(&self.conn).as_ref()?.generation;
        let (tx, rx) = oneshot::channel();
        let mut w = lock(&self.waiters);
        if w.generation != generation || !w.open {
            return None;
        }
        match w.unclaimed.remove(sandbox) {
            Some(exit) => {
                let _ = tx.send(exit);
            }
            None => {
                w.exits.insert(sandbox.to_path_buf(), (generation, tx));
            }
        }
        Some(rx)
    }

    /// Forget an exit of `sandbox` heard but not waited for (its record was read instead).
    pub fn forget(&self, sandbox: &Path) {
        lock(&self.waiters).unclaimed.remove(sandbox);
    }

    fn conn(&self) -> std::io::Result<Conn> {
        let mut conn = lock(&self.conn);
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let mut last = None;
        for _ in 0..3 {
            match self.open() {
                Ok(c) => {
                    *conn = Some(c.clone());
                    return Ok(c);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "no keeper to connect to; starting one");
                    last = Some(e);
                    if let Err(e) = self.start_keeper() {
                        last = Some(e);
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("cannot reach the keeper")))
    }

    /// Connect, say hello, and start the reader (a task on the current runtime).
    fn open(&self) -> std::io::Result<Conn> {
        let sock = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let (addr, _dirfd) = super::socket_addr(&self.dir)?;
        socket::connect(sock.as_raw_fd(), &addr)?;
        send(&sock, &serde_json::to_vec(&ToKeeper::Hello)?)?;
        let generation = {
            let mut w = lock(&self.waiters);
            w.generation += 1;
            w.open = true;
            w.generation
        };
        let mut buf = vec![0u8; MAX_MESSAGE];
        // Exits may come before the hello: they are kept as unclaimed.
        let keeper = loop {
            match recv(&sock, &mut buf)? {
                FromKeeper::Hello { keeper } => break keeper,
                other => dispatch(&self.waiters, generation, other),
            }
        };
        let sock = Arc::new(sock);
        let conn = Conn {
            sock: Arc::clone(&sock),
            keeper,
            generation,
        };
        // The reader is a task on the borglet's runtime: a message wakes the
        // task waiting for it from the runtime's own poll, with no thread in
        // between (a reader thread's wake-up and its hand-off to the runtime
        // were two context switches per message, a few per start).
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            std::io::Error::other("the keeper's client runs within a tokio runtime")
        })?;
        let _in_runtime = rt.enter();
        // SAFETY: `Shared` holds the socket's `Arc`, so the descriptor stays
        // open and the same for the `AsyncFd`'s whole life.
        let readable = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                Shared(sock),
                tokio::io::Interest::READABLE,
            )
        }
        .map_err(std::io::Error::from)?;
        let waiters = Arc::clone(&self.waiters);
        let current = Arc::clone(&self.conn);
        rt.spawn(async move {
            loop {
                let Ok(mut ready) = readable.readable().await else {
                    break;
                };
                match try_recv(&readable.get_ref().0, &mut buf) {
                    Ok(Some(msg)) => dispatch(&waiters, generation, msg),
                    Ok(None) => ready.clear_ready(),
                    Err(_) => break,
                }
            }
            forget_conn(&current, generation);
            fail_all(&waiters, generation);
        });
        tracing::debug!(keeper = keeper.pid, "connected to the keeper");
        Ok(conn)
    }

    /// The connection of `generation` failed: the next request connects again.
    fn lost(&self, generation: u64) {
        forget_conn(&self.conn, generation);
        fail_all(&self.waiters, generation);
    }

    /// Close the connection (at shutdown): a keeper with no task left exits.
    pub fn disconnect(&self) {
        if let Some(c) = lock(&self.conn).take() {
            let _ = socket::shutdown(c.sock.as_raw_fd(), socket::Shutdown::Both);
        }
    }

    /// Start a keeper and wait until it listens (or says, by exiting, that
    /// another one holds the data dir). It is our child while we run; it
    /// outlives us by itself (own session), and is reaped by a thread here if
    /// it ends first.
    fn start_keeper(&self) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(super::LOG))?;
        let mut child: Child = Command::new(&self.exe)
            .arg(super::KEEPER_ARG)
            .arg(&self.dir)
            // Nothing of the borglet's environment: the tasks get only what
            // their launch record names.
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot start the keeper {}: {e}", self.exe.display()),
                )
            })?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        tracing::debug!(pid = child.id(), exe = %self.exe.display(), ready = line.trim(), "keeper started");
        std::thread::Builder::new()
            .name("keeper-reaper".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let _ = child.wait();
            })?;
        Ok(())
    }
}

/// `ToKeeper::Start` of the launch record encoded as `launch_json`, as serde
/// writes the enum: `{"start":<record>}`.
fn start_message(launch_json: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(launch_json.len() + 10);
    msg.extend_from_slice(b"{\"start\":");
    msg.extend_from_slice(launch_json);
    msg.push(b'}');
    msg
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn send(sock: &OwnedFd, msg: &[u8]) -> std::io::Result<()> {
    loop {
        match socket::send(sock.as_raw_fd(), msg, MsgFlags::MSG_NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Blocking: the next message; an error at EOF.
fn recv(sock: &OwnedFd, buf: &mut [u8]) -> std::io::Result<FromKeeper> {
    loop {
        if let Some(msg) = recv_with(sock, buf, MsgFlags::empty())? {
            return Ok(msg);
        }
    }
}

/// The next message if one is there (`None`: none yet); an error at EOF.
fn try_recv(sock: &OwnedFd, buf: &mut [u8]) -> std::io::Result<Option<FromKeeper>> {
    loop {
        match recv_with(sock, buf, MsgFlags::MSG_DONTWAIT) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
            Ok(None) => continue,
            other => return other,
        }
    }
}

/// One packet read with `flags`, decoded; `None` for one that is not a
/// message (skipped, with a warning); an error at EOF.
fn recv_with(
    sock: &OwnedFd,
    buf: &mut [u8],
    flags: MsgFlags,
) -> std::io::Result<Option<FromKeeper>> {
    let n = loop {
        match socket::recv(sock.as_raw_fd(), buf, flags) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    match serde_json::from_slice(&buf[..n]) {
        Ok(msg) => Ok(Some(msg)),
        Err(e) => {
            tracing::warn!(error = %e, "a message from the keeper it cannot read");
            Ok(None)
        }
    }
}

/// The connection's socket, shared with the senders, for `AsyncFd`.
struct Shared(Arc<OwnedFd>);

impl AsRawFd for Shared {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

fn dispatch(waiters: &Mutex<Waiters>, generation: u64, msg: FromKeeper) {
    let mut w = lock(waiters);
    match msg {
        FromKeeper::Hello { .. } => {}
        FromKeeper::Started { sandbox, run } => {
            if let Some((_, tx)) = w.answers.remove(&sandbox) {
                let _ = tx.send(Answer::Started(run));
            }
        }
        FromKeeper::Failed { sandbox, why } => {
            w.exits.remove(&sandbox);
            if let Some((_, tx)) = w.answers.remove(&sandbox) {
                let _ = tx.send(Answer::Failed(why));
            }
        }
        FromKeeper::Exited { sandbox, exit } => match w.exits.remove(&sandbox) {
            Some((_, tx)) => {
                let _ = tx.send(exit);
            }
            None if w.generation == generation => {
                w.unclaimed.insert(sandbox, exit);
            }
            None => {}
        },
    }
}

/// Drop connection `generation` if it is the current one, so the next request
/// connects again.
fn forget_conn(conn: &Mutex<Option<Conn>>, generation: u64) {
    let mut conn = lock(conn);
    if conn.as_ref().is_some_and(|c| c.generation == generation) {
        tracing::warn!(
            keeper = conn.as_ref().map(|c| c.keeper.pid),
            "the connection to the keeper ended"
        );
        *conn = None;
    }
}

/// Every waiter of connection `generation` hears that it ended (its sender drops).
fn fail_all(waiters: &Mutex<Waiters>, generation: u64) {
    let mut w = lock(waiters);
    w.answers.retain(|_, (g, _)| *g != generation);
    w.exits.retain(|_, (g, _)| *g != generation);
    if w.generation == generation {
        w.open = false;
        w.unclaimed.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_built_from_the_encoded_record_is_the_start_serde_would_write() {
        let spec = borg_shared::wire::AttemptSpec {
            job: "j\"ob".into(),
            index: 3,
            command: vec!["/bin/echo".into(), "a b".into()],
            env: [("E".to_string(), "1".to_string())].into(),
            ..crate::test_spec::spec()
        };
        let launch = Launch {
            argv: spec.command.clone(),
            spec,
            env: [("K".to_string(), "v\u{e9}".to_string())].into(),
            cwd: "/data/attempts/x".into(),
            records: "/run/borglet/attempts/x".into(),
            stdout: "/data/attempts/x/stdout".into(),
            stderr: "/data/attempts/x/stderr".into(),
            pid_files: vec!["/run/borglet/attempts/x/task.pid".into()],
            log_max_bytes: 1024,
            run_as: None,
            cgroup: None,
            created_at: chrono::Utc::now(),
        };
        let built = start_message(&serde_json::to_vec(&launch).unwrap());
        let by_serde = serde_json::to_vec(&ToKeeper::Start(Box::new(launch.clone()))).unwrap();
        assert_eq!(built, by_serde);
        match serde_json::from_slice::<ToKeeper>(&built).unwrap() {
            ToKeeper::Start(back) => {
                assert_eq!(back.cwd, launch.cwd);
                assert_eq!(back.record_dir(), launch.records);
            }
            ToKeeper::Hello => panic!("not a start"),
        }
    }
}
