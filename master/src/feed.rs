//! The master's one reader of the event log, shared by every `GET /v1/events`
//! client: it reads new events from Postgres (woken by the store's NOTIFY
//! channels, and at least every `FEED_INTERVAL`, since not every change
//! notifies and a late commit can hold the commit-safe read back) and fans each
//! page out through a bounded broadcast. A client that falls a whole buffer
//! behind is dropped (it resumes from Postgres with its `Last-Event-ID`).

use crate::store::{EventCursor, Store, CHANNEL_PENDING, CHANNEL_PLACED};
use borg_shared::event_stream::StreamEvent;
use sqlx::postgres::PgListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

/// The longest a change waits before the reader looks (when nothing notified).
pub const FEED_INTERVAL: Duration = Duration::from_millis(200);
/// Pages of events buffered for the slowest client before it is dropped.
const FEED_BUFFER: usize = 1024;
/// Events read per query.
const PAGE: u32 = 1000;

/// One page of events, shared by every client (cloning is a refcount).
pub type Batch = Arc<Vec<Arc<StreamEvent>>>;

#[derive(Clone)]
pub struct Feed {
    tx: broadcast::Sender<Batch>,
    /// The last cursor sent (`None` before the reader's first look). Sending a
    /// page and moving the head happen under this lock, and so do a client's
    /// subscription and its read of the head: every page after the head it
    /// reads is in its receiver.
    head: Arc<Mutex<Option<EventCursor>>>,
    /// Cancelled when the master shuts down: every stream ends.
    pub shutdown: CancellationToken,
}

impl Feed {
    /// Start the reader; it runs until `shutdown`.
    pub fn start(store: Store, shutdown: CancellationToken) -> (Feed, tokio::task::JoinHandle<()>) {
        let (tx, _) = broadcast::channel(FEED_BUFFER);
        let head = Arc::new(Mutex::new(None));
        let feed = Feed {
            tx: tx.clone(),
            head: head.clone(),
            shutdown: shutdown.clone(),
        };
        let task = tokio::spawn(read_loop(store, tx, head, shutdown));
        (feed, task)
    }

    /// Every page read from now on, and where the live tail stands (every
    /// event after it will be received). Subscribe before reading history, so
    /// that history and live overlap rather than leave a gap.
    pub fn subscribe(&self) -> (broadcast::Receiver<Batch>, Option<EventCursor>) {
        let head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        (self.tx.subscribe(), *head)
    }
}

type Head = Arc<Mutex<Option<EventCursor>>>;

async fn read_loop(
    store: Store,
    tx: broadcast::Sender<Batch>,
    head: Head,
    shutdown: CancellationToken,
) {
    let wake = Arc::new(Notify::new());
    tokio::spawn(listen(store.clone(), wake.clone(), shutdown.clone()));
    // Live starts at the head: history is each client's to read.
    let mut cursor = loop {
        match store.feed_head().await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "reading the event log's head");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(FEED_INTERVAL) => {}
                }
            }
        }
    };
    loop {
        cursor = publish_new(&store, &tx, &head, cursor).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(FEED_INTERVAL) => {}
        }
    }
}

/// Read and broadcast everything after `cursor`; the cursor reached.
async fn publish_new(
    store: &Store,
    tx: &broadcast::Sender<Batch>,
    head: &Head,
    mut cursor: EventCursor,
) -> EventCursor {
    loop {
        let page = match store.feed_after(cursor, PAGE, &Default::default()).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "reading new events");
                return cursor;
            }
        };
        cursor = page.next;
        let n = page.events.len();
        let batch: Batch = Arc::new(page.events.into_iter().map(Arc::new).collect());
        {
            let mut head = head.lock().unwrap_or_else(|p| p.into_inner());
            if n > 0 {
                // No receivers is not an error: nobody is watching.
                let _ = tx.send(batch);
            }
            *head = Some(cursor);
        }
        metrics::counter!("borg_event_feed_events_total").increment(n as u64);
        if n < PAGE as usize {
            return cursor;
        }
    }
}

/// Wake the reader on the store's channels: new pending work, placements and
/// finished attempts notify, so most changes are streamed at once.
async fn listen(store: Store, wake: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        let connected = async {
            let mut l = PgListener::connect_with(store.pool()).await?;
            l.listen_all([CHANNEL_PENDING, CHANNEL_PLACED]).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = tokio::select! {
            _ = shutdown.cancelled() => return,
            l = connected => match l {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(error = %e, "event feed cannot LISTEN; polling only");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                n = listener.recv() => match n {
                    Ok(_) => wake.notify_one(),
                    Err(_) => break,
                },
            }
        }
    }
}
