//! `follow=true`: stream a log file as it grows, like `tail -f`, and end once the
//! attempt has finished and everything it wrote has been sent.
//!
//! Growth is found by polling the file: inotify would save a few reads a second
//! per follower but costs a watch per follower and a crate. The attempt's exit is
//! not polled: the table's exit token wakes the stream at once.

use axum::body::Bytes;
use futures::Stream;
use std::path::PathBuf;
use std::time::Duration;
use tokio::fs::File;
use tokio::io::AsyncReadExt;
use tokio::time::{interval, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// How long new output may sit in the file before a follower sees it.
const POLL_EVERY: Duration = Duration::from_millis(150);
const READ_CHUNK: usize = 64 * 1024;

struct Follower {
    /// `None` until the task's first byte creates the file.
    file: Option<File>,
    /// Where the file is found by name: when the log rotates, a new file is
    /// there and the follow moves on to it (if it still lies in `sandbox`).
    path: PathBuf,
    sandbox: PathBuf,
    /// Cancelled once the process has been reaped: it can write no more.
    exited: CancellationToken,
    shutdown: CancellationToken,
    poll: Interval,
    /// The exit was seen at an EOF: the next EOF is the end of the log.
    drained: bool,
}

/// The bytes of `file` from its current position on (or of the file at `path`
/// once it appears, when `file` is `None`), then whatever is appended, until
/// `exited` is cancelled and the file is read to its end, or until `shutdown`.
/// Dropping the stream (the client went away) stops it; no lock or task
/// outlives it.
pub fn follow(
    file: Option<File>,
    sandbox: PathBuf,
    path: PathBuf,
    exited: CancellationToken,
    shutdown: CancellationToken,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
    let mut poll = interval(POLL_EVERY);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = Follower {
        file,
        path,
        sandbox,
        exited,
        shutdown,
        poll,
        drained: false,
    };
    futures::stream::unfold(Some(state), |state| async move {
        let mut f = state?;
        match f.next_chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(f))),
            Ok(None) => None,
            // Report the error to the body (the connection is cut) and end.
            Err(e) => Some((Err(e), None)),
        }
    })
}

impl Follower {
    /// The name now points at another file than the one being read (or at
    /// one at all, when none was there).
    async fn rotated(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(named) = tokio::fs::metadata(&self.path).await else {
            return false;
        };
        let Some(file) = &self.file else {
            return true;
        };
        let Ok(open) = file.metadata().await else {
            return false;
        };
        named.ino() != open.ino() || named.dev() != open.dev()
    }

    /// The next non-empty chunk, or `None` at the end of the follow.
    async fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = match &mut self.file {
                Some(file) => file.read(&mut buf).await?,
                None => 0,
            };
            if n > 0 {
                buf.truncate(n);
                return Ok(Some(Bytes::from(buf)));
            }
            if self.rotated().await {
                // Everything in the old file has been read: go on with the new one.
                self.file = Some(super::open_log(&self.sandbox, &self.path).await.map_err(
                    |e| match e {
                        super::OpenLogError::Io(e) => e,
                        other => std::io::Error::other(other.to_string()),
                    },
                )?);
                continue;
            }
            if self.drained || self.shutdown.is_cancelled() {
                return Ok(None);
            }
            if self.exited.is_cancelled() {
                // Bytes written just before the exit may have landed after the
                // read above saw EOF: read once more before ending.
                self.drained = true;
                continue;
            }
            tokio::select! {
                _ = self.poll.tick() => {}
                () = self.exited.cancelled() => {}
                () = self.shutdown.cancelled() => {}
            }
        }
    }
}
