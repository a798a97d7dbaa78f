//! The keeper process (`EXE __borglet-keeper DATA_DIR`): a main thread with
//! one `epoll` set holding its listening socket, each borglet's connection,
//! each task's pidfd and output pipes, and the starters' wake-up; it alone
//! holds the tables. Starts run on the starter threads (`starters.rs`).

use super::starters::{Done, Job, Starters};
use super::task::{self, NoFile, Task};
use super::{FromKeeper, ToKeeper, KEEPER_NAME, LOCK, MAX_MESSAGE};
use crate::records::ProcId;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the task's pipes are drained after it exited, at most.
const DRAIN_PATIENCE: Duration = Duration::from_millis(500);
/// How long a keeper no borglet ever connected to waits before it exits.
const UNCLAIMED_PATIENCE: Duration = Duration::from_secs(10);
/// How long a second keeper waits for the lock a dying one still holds.
const LOCK_PATIENCE: Duration = Duration::from_secs(2);
/// The longest sleep between looks for ended children without pidfds.
const TICK: Duration = Duration::from_secs(1);
/// What the keeper reads a pipe with at first: most tasks say little. It grows
/// to `CHUNK` once a read fills it.
const FIRST_CHUNK: usize = 4 * 1024;
const CHUNK: usize = 64 * 1024;

/// epoll tokens: the listener, the starters' wake-up, else `id << 2 | kind`.
const LISTENER: u64 = u64::MAX;
const STARTED: u64 = u64::MAX - 1;
const KIND_CLIENT: u64 = 0;
const KIND_PIDFD: u64 = 1;
/// stdout is `KIND_STREAM`, stderr `KIND_STREAM + 1`.
const KIND_STREAM: u64 = 2;

/// The keeper's main: take the lock, listen, say so on stdout, serve.
pub(crate) fn serve(dir: &Path) -> i32 {
    // Its own session: neither the borglet's terminal nor its process group reach it.
    let _ = nix::unistd::setsid();
    let _ = nix::sys::prctl::set_name(KEEPER_NAME);
    let lock = match take_lock(dir) {
        Ok(Some(lock)) => lock,
        // Another keeper serves this data dir: the borglet connects to it.
        Ok(None) => return 0,
        Err(e) => {
            eprintln!("borglet keeper: {}: {e}", dir.join(LOCK).display());
            return 1;
        }
    };
    let listener = match listen(dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("borglet keeper: cannot listen in {}: {e}", dir.display());
            return 1;
        }
    };
    let Some(me) = ProcId::of(std::process::id() as i32) else {
        eprintln!("borglet keeper: cannot read its own start time");
        return 1;
    };
    let nofile = raise_nofile();
    // Tell the borglet that started us, and let go of its pipe (and of a
    // terminal, if run by hand).
    let _ = std::io::stdout().write_all(b"ready\n");
    let _ = std::io::stdout().flush();
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
    let code = match Keeper::new(listener, me, nofile) {
        Ok(mut k) => k.run(),
        Err(e) => {
            eprintln!("borglet keeper: epoll: {e}");
            1
        }
    };
    drop(lock);
    code
}

/// The lock file, locked: `None` if another keeper still holds it after `LOCK_PATIENCE`.
fn take_lock(dir: &Path) -> std::io::Result<Option<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK))?;
    let until = Instant::now() + LOCK_PATIENCE;
    loop {
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(file));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(e);
        }
        if Instant::now() >= until {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Bind `dir/SOCKET` (a stale one from a dead keeper is replaced: we hold the
/// lock), reachable by its owner only.
fn listen(dir: &Path) -> std::io::Result<OwnedFd> {
    let path = dir.join(super::SOCKET);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let sock = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    let (addr, _dirfd) = super::socket_addr(dir)?;
    // Owner only from the start: a task (another user) must never reach it.
    // SAFETY: umask changes the process's mask; no other thread exists yet.
    let old = unsafe { libc::umask(0o077) };
    let bound = socket::bind(sock.as_raw_fd(), &addr);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    bound?;
    socket::listen(&sock, socket::Backlog::new(128)?)?;
    Ok(sock)
}

/// Raise the soft limit of open files to the hard one (five per task); the
/// limits as they were, for the tasks.
fn raise_nofile() -> NoFile {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) < 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
        }
    }
    Some((limit.rlim_cur, limit.rlim_max))
}

struct Client {
    sock: OwnedFd,
    /// Messages the socket had no room for yet.
    queued: VecDeque<Vec<u8>>,
    /// Whether the keeper waits for room (`EPOLLOUT`) on it.
    waits_for_room: bool,
}

struct Keeper {
    epoll: OwnedFd,
    listener: OwnedFd,
    me: ProcId,
    starters: Starters,
    /// Starts handed to the starters and not back yet.
    in_flight: usize,
    clients: HashMap<u64, Client>,
    tasks: HashMap<u64, Task>,
    next_id: u64,
    /// Whether a borglet ever connected, and since when none is and no task runs.
    claimed: bool,
    idle_since: Instant,
    /// Ended tasks whose pipes are drained: their end is recorded next.
    done: Vec<u64>,
    /// Ended tasks still draining, by deadline (in order: the patience is fixed).
    draining: VecDeque<(Instant, u64)>,
    pipe_buf: Vec<u8>,
    msg_buf: Vec<u8>,
}

impl Keeper {
    fn new(listener: OwnedFd, me: ProcId, nofile: NoFile) -> std::io::Result<Keeper> {
        // SAFETY: epoll_create1 returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let k = Keeper {
            epoll,
            listener,
            me,
            starters: Starters::spawn(me, nofile)?,
            in_flight: 0,
            clients: HashMap::new(),
            tasks: HashMap::new(),
            next_id: 1,
            claimed: false,
            idle_since: Instant::now(),
            done: Vec::new(),
            draining: VecDeque::new(),
            pipe_buf: vec![0; FIRST_CHUNK],
            msg_buf: vec![0; MAX_MESSAGE],
        };
        k.ctl(
            libc::EPOLL_CTL_ADD,
            k.listener.as_raw_fd(),
            LISTENER,
            libc::EPOLLIN,
        )?;
        k.ctl(
            libc::EPOLL_CTL_ADD,
            k.starters.wake_fd(),
            STARTED,
            libc::EPOLLIN,
        )?;
        Ok(k)
    }

    fn ctl(
        &self,
        op: libc::c_int,
        fd: RawFd,
        token: u64,
        events: libc::c_int,
    ) -> std::io::Result<()> {
        ctl(self.epoll.as_raw_fd(), op, fd, token, events)
    }

    fn run(&mut self) -> i32 {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        loop {
            if self.clients.is_empty() && self.tasks.is_empty() && self.in_flight == 0 {
                let patience = if self.claimed {
                    Duration::ZERO
                } else {
                    UNCLAIMED_PATIENCE
                };
                if self.idle_since.elapsed() >= patience && !self.accept_pending() {
                    return 0;
                }
            }
            let timeout = self.timeout();
            // SAFETY: epoll_wait into a buffer of `events.len()` entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as libc::c_int,
                    timeout,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("borglet keeper: epoll_wait: {e}");
                return 1;
            }
            if n == 0 {
                self.reap_unwatched();
            }
            for ev in &events[..n as usize] {
                let token = ev.u64;
                let flags = ev.events as libc::c_int;
                match token {
                    LISTENER => self.accept_all(),
                    STARTED => self.on_started(),
                    _ => {
                        let (id, kind) = (token >> 2, token & 3);
                        match kind {
                            KIND_CLIENT => self.on_client(id, flags),
                            KIND_PIDFD => self.reap(id),
                            _ => self.on_stream(id, (kind - KIND_STREAM) as usize),
                        }
                    }
                }
            }
            self.finish_drained();
        }
    }

    /// Until the next drain deadline, or `TICK`; forever when nothing runs.
    fn timeout(&self) -> libc::c_int {
        let wait = if let Some((until, _)) = self.draining.front() {
            Some(until.saturating_duration_since(Instant::now()).min(TICK))
        } else if !self.tasks.is_empty() {
            Some(TICK)
        } else if self.clients.is_empty() && !self.claimed {
            Some(UNCLAIMED_PATIENCE.saturating_sub(self.idle_since.elapsed()))
        } else {
            None
        };
        // Rounded up: a timeout of 0 ms before the deadline would spin.
        wait.map_or(-1, |w| (w.as_millis() as libc::c_int).saturating_add(1))
    }

    /// Whether a connection was waiting (now accepted): checked before exiting,
    /// so a borglet that connected just then is served.
    fn accept_pending(&mut self) -> bool {
        let before = self.clients.len();
        self.accept_all();
        self.clients.len() > before
    }

    fn accept_all(&mut self) {
        loop {
            let fd = match socket::accept4(
                self.listener.as_raw_fd(),
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            ) {
                Ok(fd) => fd,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            };
            // SAFETY: a fresh descriptor owned by nothing else.
            let sock = unsafe { OwnedFd::from_raw_fd(fd) };
            // Only the keeper's own user (the borglet) may ask it anything.
            let allowed = socket::getsockopt(&sock, socket::sockopt::PeerCredentials)
                .is_ok_and(|c| c.uid() == nix::unistd::geteuid().as_raw());
            if !allowed {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            if self
                .ctl(
                    libc::EPOLL_CTL_ADD,
                    fd,
                    id << 2 | KIND_CLIENT,
                    libc::EPOLLIN,
                )
                .is_ok()
            {
                self.clients.insert(
                    id,
                    Client {
                        sock,
                        queued: VecDeque::new(),
                        waits_for_room: false,
                    },
                );
                self.claimed = true;
            }
        }
    }

    fn on_client(&mut self, id: u64, flags: libc::c_int) {
        if flags & libc::EPOLLOUT != 0 {
            self.flush(id);
        }
        if flags & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) == 0 {
            return;
        }
        let Some(client) = self.clients.get(&id) else {
            return;
        };
        let got = socket::recv(
            client.sock.as_raw_fd(),
            &mut self.msg_buf,
            MsgFlags::MSG_DONTWAIT,
        );
        let n = match got {
            Ok(0) => {
                self.drop_client(id);
                return;
            }
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => return,
            Err(_) => {
                self.drop_client(id);
                return;
            }
        };
        match serde_json::from_slice::<ToKeeper>(&self.msg_buf[..n]) {
            Ok(ToKeeper::Hello) => self.send(id, &FromKeeper::Hello { keeper: self.me }),
            Ok(ToKeeper::Start(launch)) => {
                let job = Job { client: id, launch };
                match self.starters.submit(job) {
                    Ok(()) => self.in_flight += 1,
                    Err(launch) => {
                        let why = "the keeper's starters are gone".to_string();
                        task::record_exit(
                            launch.record_dir(),
                            crate::records::Ended::ExecFailed(why.clone()),
                            None,
                        );
                        let sandbox = launch.cwd;
                        self.send(id, &FromKeeper::Failed { sandbox, why });
                    }
                }
            }
            Err(e) => eprintln!("borglet keeper: a message it cannot read: {e}"),
        }
    }

    fn drop_client(&mut self, id: u64) {
        if let Some(c) = self.clients.remove(&id) {
            let _ = ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                c.sock.as_raw_fd(),
                0,
                0,
            );
        }
        if self.clients.is_empty() {
            self.idle_since = Instant::now();
        }
    }

    /// Take over the tasks the starters started, and answer their borglets.
    fn on_started(&mut self) {
        for Done {
            client,
            sandbox,
            result,
        } in self.starters.take()
        {
            self.in_flight = self.in_flight.saturating_sub(1);
            let reply = match result {
                Ok((t, run)) => {
                    self.keep(t);
                    FromKeeper::Started { sandbox, run }
                }
                Err(why) => FromKeeper::Failed { sandbox, why },
            };
            self.send(client, &reply);
        }
    }

    /// Watch a started task's pidfd and output pipes.
    fn keep(&mut self, t: Task) {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(pidfd) = &t.pidfd {
            if let Err(e) = self.ctl(
                libc::EPOLL_CTL_ADD,
                pidfd.as_raw_fd(),
                id << 2 | KIND_PIDFD,
                libc::EPOLLIN,
            ) {
                eprintln!("borglet keeper: watching pid {}: {e}", t.pid);
            }
        }
        for (i, stream) in t.streams.iter().enumerate() {
            if let Some((pipe, _)) = stream {
                let token = id << 2 | (KIND_STREAM + i as u64);
                if let Err(e) =
                    self.ctl(libc::EPOLL_CTL_ADD, pipe.as_raw_fd(), token, libc::EPOLLIN)
                {
                    eprintln!("borglet keeper: watching output of pid {}: {e}", t.pid);
                }
            }
        }
        self.tasks.insert(id, t);
    }

    /// Copy what one pipe holds into its log; close it at EOF or on an error.
    fn on_stream(&mut self, id: u64, i: usize) {
        let Some(t) = self.tasks.get_mut(&id) else {
            return;
        };
        let Some((pipe, out)) = &mut t.streams[i] else {
            return;
        };
        let keep = match pipe.read(&mut self.pipe_buf) {
            Ok(0) => false,
            Ok(n) => {
                if i == 1 {
                    t.stderr_bytes = t.stderr_bytes.map(|b| b + n as u64);
                }
                let kept = out.write(&self.pipe_buf[..n]).map_err(|e| {
                    eprintln!("borglet keeper: copying to {}: {e}", out.path().display())
                });
                if n == self.pipe_buf.len() && n < CHUNK {
                    self.pipe_buf.resize(CHUNK, 0);
                }
                kept.is_ok()
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => true,
            Err(e) => {
                eprintln!("borglet keeper: reading a task's output: {e}");
                false
            }
        };
        if !keep {
            // Out of the epoll set explicitly: a copy of the descriptor in a
            // child not yet exec'd would keep it there after the close.
            if let Some((pipe, _)) = t.streams[i].take() {
                let _ = ctl(
                    self.epoll.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    pipe.as_raw_fd(),
                    0,
                    0,
                );
            }
            if t.ended.is_some() && t.drained() {
                self.done.push(id);
            }
        }
    }

    /// Reap task `id` if it ended (its pidfd is readable); its drain starts.
    /// By its pid only: a child another thread just started, or whose exec
    /// failed, is not this one's to take.
    fn reap(&mut self, id: u64) {
        use nix::sys::wait::{waitpid, WaitPidFlag};
        let Some(t) = self.tasks.get_mut(&id) else {
            return;
        };
        if t.ended.is_some() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(t.pid);
        let Some((_, ended)) = waitpid(pid, Some(WaitPidFlag::WNOHANG))
            .ok()
            .and_then(task::ended_of)
        else {
            return;
        };
        let until = Instant::now() + DRAIN_PATIENCE;
        if let Some(pidfd) = t.pidfd.take() {
            let _ = ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                pidfd.as_raw_fd(),
                0,
                0,
            );
        }
        t.ended = Some((ended, until));
        if t.drained() {
            self.done.push(id);
        } else {
            self.draining.push_back((until, id));
        }
    }

    /// Look for the end of every task no pidfd watches (where there are none).
    fn reap_unwatched(&mut self) {
        let ids: Vec<u64> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.pidfd.is_none() && t.ended.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.reap(id);
        }
    }

    /// Record the end of every ended task whose pipes are drained or whose
    /// drain time is over, and tell every borglet.
    fn finish_drained(&mut self) {
        let now = Instant::now();
        while let Some((until, id)) = self.draining.front().copied() {
            if until > now {
                break;
            }
            self.draining.pop_front();
            self.done.push(id);
        }
        // A task may be named twice (drained after its deadline): the second finds it gone.
        for id in std::mem::take(&mut self.done) {
            let Some(mut t) = self.tasks.remove(&id) else {
                continue;
            };
            for (pipe, _) in t.streams.iter_mut().filter_map(Option::take) {
                let _ = ctl(
                    self.epoll.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    pipe.as_raw_fd(),
                    0,
                    0,
                );
            }
            let Some((ended, _)) = t.ended else { continue };
            // Its stderr file holds of this run what was counted, no more:
            // nothing is copied once the end is recorded.
            let exit = task::record_exit(&t.records, ended, t.stderr_bytes);
            let msg = FromKeeper::Exited {
                sandbox: t.sandbox,
                exit,
            };
            let ids: Vec<u64> = self.clients.keys().copied().collect();
            for c in ids {
                self.send(c, &msg);
            }
            if self.tasks.is_empty() && self.clients.is_empty() {
                self.idle_since = Instant::now();
            }
        }
    }

    /// Send `msg` to client `id`, queued behind what it has not taken yet. A
    /// borglet that stopped reading never blocks the keeper.
    fn send(&mut self, id: u64, msg: &FromKeeper) {
        let Ok(bytes) = serde_json::to_vec(msg) else {
            return;
        };
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        client.queued.push_back(bytes);
        self.flush(id);
    }

    fn flush(&mut self, id: u64) {
        let epoll = self.epoll.as_raw_fd();
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        let fd = client.sock.as_raw_fd();
        while let Some(front) = client.queued.front() {
            match socket::send(fd, front, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL) {
                Ok(_) => {
                    client.queued.pop_front();
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => {
                    if !client.waits_for_room {
                        client.waits_for_room = true;
                        let events = libc::EPOLLIN | libc::EPOLLOUT;
                        let _ = ctl(
                            epoll,
                            libc::EPOLL_CTL_MOD,
                            fd,
                            id << 2 | KIND_CLIENT,
                            events,
                        );
                    }
                    return;
                }
                Err(_) => {
                    // Gone: its hangup is read next.
                    client.queued.clear();
                    return;
                }
            }
        }
        if client.waits_for_room {
            client.waits_for_room = false;
            let _ = ctl(
                epoll,
                libc::EPOLL_CTL_MOD,
                fd,
                id << 2 | KIND_CLIENT,
                libc::EPOLLIN,
            );
        }
    }
}

fn ctl(
    epoll: RawFd,
    op: libc::c_int,
    fd: RawFd,
    token: u64,
    events: libc::c_int,
) -> std::io::Result<()> {
    let mut ev = libc::epoll_event {
        events: events as u32,
        u64: token,
    };
    // SAFETY: epoll_ctl on our epoll fd with a live fd and a valid event.
    if unsafe { libc::epoll_ctl(epoll, op, fd, &mut ev) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
