//! The shim spawner: one small single-threaded process per borglet, started
//! once (`EXE __borglet-spawner`), that forks each run's shim (`crate::shim`)
//! on request. Exec'ing a shim per start mapped and relocated the whole
//! borglet-hosting executable every time (3–4 ms of CPU per task with the 28 MB
//! `jobctl` of the dev cell); a fork of this idle process costs a fraction of
//! that, and since it is single-threaded the forked shim may allocate and start
//! threads like any program. The shims it forks live in sessions of their own and
//! outlive it and the borglet exactly as exec'd shims did; it reaps them as they
//! end (so their CPU is accounted to it, and through it to the borglet).
//!
//! Protocol, over a `SOCK_SEQPACKET` pair whose other end is the spawner's
//! stdin: one message per start, the sandbox's path as bytes, carrying the write
//! end of a fresh pipe (`SCM_RIGHTS`). The forked shim gets that pipe as its
//! stdout, writes its [`crate::shim::Handshake`] into it and closes it; the
//! borglet reads it to EOF (EOF without a line: the shim died or was never
//! forked). The spawner exits when the borglet's end closes: the borglet exited
//! or died.

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use std::ffi::OsStr;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

/// The process name (`/proc/PID/comm`) of every shim the spawner forks.
pub const SHIM_NAME: &std::ffi::CStr = c"borglet-shim";

/// argv\[1\] that turns a borglet-hosting binary into the shim spawner.
pub const SPAWNER_ARG: &str = "__borglet-spawner";

/// Longest sandbox path a request may name.
const MAX_PATH: usize = 4096;

/// How often the spawner wakes, when no request comes, to reap ended shims.
const REAP_EVERY_MS: u16 = 1000;

/// The borglet's handle on its spawner, started on first use and again if it died.
#[derive(Debug)]
pub struct Spawner {
    exe: PathBuf,
    running: Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    /// Our end of the pair (close-on-exec, so no task or probe inherits it).
    sock: OwnedFd,
    process: Child,
}

impl Spawner {
    /// Runs `exe SPAWNER_ARG` when the first shim is needed.
    pub fn new(exe: PathBuf) -> Self {
        Spawner {
            exe,
            running: Mutex::new(None),
        }
    }

    /// The executable the spawner runs from.
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// Blocking: fork a shim for `sandbox` (its `launch.json` written). Returns
    /// the read end of the shim's handshake pipe.
    pub fn spawn(&self, sandbox: &Path) -> std::io::Result<OwnedFd> {
        let path = sandbox.as_os_str().as_bytes();
        if path.len() > MAX_PATH {
            return Err(std::io::Error::other("sandbox path too long"));
        }
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        // A spawner that died (killed, OOM) is started again, once per request.
        for attempt in 0..2 {
            if running.is_none() {
                *running = Some(self.start()?);
            }
            let sock = running.as_ref().map(|r| r.sock.as_raw_fd()).unwrap_or(-1);
            let fds = [write.as_raw_fd()];
            let sent = sendmsg::<()>(
                sock,
                &[IoSlice::new(path)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_NOSIGNAL,
                None,
            );
            match sent {
                Ok(_) => return Ok(read),
                Err(e) if attempt == 0 => {
                    tracing::warn!(error = %e, "the shim spawner is gone; starting it again");
                    if let Some(mut old) = running.take() {
                        let _ = old.process.kill();
                        let _ = old.process.wait();
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(std::io::Error::other("cannot reach the shim spawner"))
    }

    fn start(&self) -> std::io::Result<Running> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let process = Command::new(&self.exe)
            .arg(SPAWNER_ARG)
            // Nothing of the borglet's environment: the tasks get only what
            // their launch record names.
            .env_clear()
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot start the shim spawner {}: {e}", self.exe.display()),
                )
            })?;
        tracing::debug!(pid = process.id(), exe = %self.exe.display(), "shim spawner started");
        Ok(Running {
            sock: ours,
            process,
        })
    }
}

/// The spawner's loop (`EXE __borglet-spawner`, its request socket on stdin):
/// fork a shim per request until the borglet's end closes.
pub(crate) fn serve() -> i32 {
    let sock: RawFd = 0;
    let mut buf = vec![0u8; MAX_PATH + 1];
    loop {
        reap();
        let mut fds = [nix::poll::PollFd::new(
            // SAFETY: fd 0 stays open for the life of this process.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(sock) },
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(REAP_EVERY_MS)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 1,
        }
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let (n, fd) =
            match recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
                Ok(msg) => {
                    let fd = msg.cmsgs().ok().and_then(|mut c| {
                        c.find_map(|m| match m {
                            ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                            _ => None,
                        })
                    });
                    (msg.bytes, fd)
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return 1,
            };
        if n == 0 {
            // The borglet's end closed.
            return 0;
        }
        let Some(fd) = fd else { continue };
        // SAFETY: a descriptor just received, owned by nothing else here.
        let pipe = unsafe { OwnedFd::from_raw_fd(fd) };
        if n > MAX_PATH {
            continue; // Dropping the pipe tells the borglet: no shim.
        }
        let sandbox = PathBuf::from(OsStr::from_bytes(&buf[..n]));
        // SAFETY: this process is single-threaded, so the child may do anything.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                // Named as what it now is (`ps`, `/proc/PID/comm`): argv is still the spawner's.
                let _ = nix::sys::prctl::set_name(SHIM_NAME);
                let _ = nix::unistd::dup2(pipe.as_raw_fd(), 1);
                drop(pipe);
                // The request socket is not the shim's (nor, later, the task's).
                if let Ok(null) = std::fs::File::open("/dev/null") {
                    let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
                }
                std::process::exit(crate::shim::run(&sandbox));
            }
            // The shim runs on its own; our copy of its pipe closes here.
            Ok(nix::unistd::ForkResult::Parent { .. }) => {}
            Err(e) => eprintln!("borglet spawner: fork: {e}"),
        }
    }
}

/// Reap every shim that has ended.
fn reap() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}
