//! The keeper's starter threads: each start runs on one of a few threads, so
//! that starts overlap where they wait (the vfork'd child joining its cgroups,
//! which on v1 waits for an RCU grace period, and its exec), while the keeper's
//! main thread goes on copying output and reaping. A finished start comes back
//! to the main thread through a channel and an eventfd in its epoll set; only
//! the main thread touches the keeper's tables.
//!
//! The child is cloned by the starter thread with `CLONE_VM | CLONE_VFORK`,
//! which suspends only that thread; it is a child of the keeper process, so
//! the main thread waits for it (by its pid) like any other.

use super::task::{self, NoFile, Task};
use crate::records::{Ended, Launch, ProcId, Run};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};

/// Starts that may be in flight at once.
pub(super) const THREADS: usize = 8;

/// A start asked for by borglet connection `client`.
pub(super) struct Job {
    pub client: u64,
    pub launch: Box<Launch>,
}

/// A start done: the task, or why it did not start (already in `exit.json`).
pub(super) struct Done {
    pub client: u64,
    pub sandbox: PathBuf,
    pub result: Result<(Task, Run), String>,
}

pub(super) struct Starters {
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<Done>,
    wake: Arc<OwnedFd>,
}

impl Starters {
    pub fn spawn(me: ProcId, nofile: NoFile) -> std::io::Result<Starters> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nothing else.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel::<Done>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        for _ in 0..THREADS {
            let (job_rx, done_tx, wake) = (Arc::clone(&job_rx), done_tx.clone(), Arc::clone(&wake));
            std::thread::Builder::new()
                .name("starter".into())
                .stack_size(256 * 1024)
                .spawn(move || loop {
                    let job = match job_rx.lock().map(|rx| rx.recv()) {
                        Ok(Ok(job)) => job,
                        _ => return,
                    };
                    let sandbox = job.launch.cwd.clone();
                    let result = task::start(&job.launch, me, nofile);
                    if let Err(why) = &result {
                        let dir = job.launch.record_dir();
                        task::record_exit(dir, Ended::ExecFailed(why.clone()), None);
                    }
                    let done = Done {
                        client: job.client,
                        sandbox,
                        result,
                    };
                    if done_tx.send(done).is_err() {
                        return;
                    }
                    let one = 1u64.to_ne_bytes();
                    // SAFETY: an 8-byte write to our eventfd.
                    unsafe { libc::write(wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
                })?;
        }
        Ok(Starters { jobs, done, wake })
    }

    /// Readable when starts are done.
    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    pub fn submit(&self, job: Job) -> Result<(), Box<Launch>> {
        self.jobs.send(job).map_err(|e| e.0.launch)
    }

    /// The starts done so far.
    pub fn take(&self) -> Vec<Done> {
        let mut count = [0u8; 8];
        // SAFETY: an 8-byte read from our eventfd (non-blocking), which resets it.
        unsafe {
            libc::read(
                self.wake.as_raw_fd(),
                count.as_mut_ptr().cast(),
                count.len(),
            )
        };
        self.done.try_iter().collect()
    }
}
