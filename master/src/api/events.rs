//! `GET /v1/events`: every state change as server-sent events. History comes
//! from Postgres (from the client's cursor), then the live tail from the
//! master's shared reader (`crate::feed`); the two overlap and are de-duplicated
//! by cursor, so a client that resumes sees no gap and no duplicate.

use super::{ApiError, ApiResult, AppState};
use crate::auth::Caller;
use crate::feed::Feed;
use crate::store::{EventCursor, EventFilter, Store};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use borg_shared::event_stream::{EventKind, StreamEvent};
use borg_shared::ErrorBody;
use futures::Stream;
use serde::Deserialize;
use std::convert::Infallible;
use tokio::sync::{broadcast, mpsc};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// History events read per query.
const HISTORY_PAGE: u32 = 500;
/// Events queued for one client's socket; beyond this its reader waits, and
/// a client that takes none for `--event-client-stall` is dropped (as is one
/// that falls a whole feed buffer behind).
const CLIENT_QUEUE: usize = 256;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventQuery {
    /// Only events of the job(s) with this name.
    job: Option<String>,
    /// Only events on this machine.
    machine: Option<String>,
    /// Only events of this kind: `task`, `job` or `machine`.
    kind: Option<String>,
    /// Start after this cursor (`TXID-ID`, the `id:` of an event; `0-0` is the
    /// whole history). `Last-Event-ID` wins when both are sent. Without either,
    /// the stream starts with what happens next.
    after: Option<String>,
    /// `false`: end the stream once the history up to now is sent (a bounded
    /// read, as `jobctl get events` makes). Default `true`: then stay live.
    follow: Option<bool>,
}

/// Every state change (task, job, machine) as server-sent events: `id:` is the
/// event's cursor, `event:` its kind, `data:` a `StreamEvent` in JSON. A
/// stream that starts live (no cursor) opens with a `start` event whose `id:`
/// is where it stands, so even a client that saw no event yet can resume.
/// Reconnect with `Last-Event-ID` to resume with no gap and no duplicate, also
/// across master restarts. A client that falls too far behind is disconnected
/// (it resumes the same way).
#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "events",
    tag = "events",
    params(
        EventQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this cursor"),
    ),
    responses(
        (status = 200, description = "An endless stream of events", body = StreamEvent, content_type = "text/event-stream"),
        (status = 404, description = "No job or machine of that name (`not_found`)", body = ErrorBody),
        (status = 422, description = "A bad filter or cursor; `field` names it (`invalid_spec`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    query: Result<Query<EventQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let Query(q) = query.map_err(|e| ApiError::Invalid {
        field: "query".into(),
        message: e.body_text(),
    })?;
    let kind = q
        .kind
        .as_deref()
        .map(str::parse::<EventKind>)
        .transpose()
        .map_err(|message| ApiError::Invalid {
            field: "kind".into(),
            message,
        })?;
    let after = match headers.get("last-event-id") {
        Some(v) => Some(parse_cursor("Last-Event-ID", v.to_str().unwrap_or("?"))?),
        None => q
            .after
            .as_deref()
            .map(|a| parse_cursor("after", a))
            .transpose()?,
    };
    if let Some(job) = &q.job {
        super::params::known_name("job", job)?;
    }
    if let Some(machine) = &q.machine {
        super::params::known_name("machine", machine)?;
    }
    let filter = EventFilter {
        job: q.job,
        machine: q.machine,
        kind,
        owner: caller.list_scope(),
    };
    let (job_known, machine_known) = state.store.feed_subjects_exist(&filter).await?;
    if !job_known {
        return Err(ApiError::NotFound(format!(
            "no job named {}",
            filter.job.unwrap_or_default()
        )));
    }
    if !machine_known {
        return Err(ApiError::NotFound(format!(
            "no machine named {}",
            filter.machine.unwrap_or_default()
        )));
    }
    // Subscribe before the history read starts, so the two overlap.
    let (live, head) = state.feed.subscribe();
    let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
    let follow = q.follow.unwrap_or(true);
    // A bounded read starts at the beginning unless told otherwise.
    let after = if follow {
        after
    } else {
        Some(after.unwrap_or_default())
    };
    tokio::spawn(serve_client(
        state.store.clone(),
        state.feed.clone(),
        live,
        Client {
            filter,
            after,
            follow,
            head,
            // A bounded read holds nothing live and ends by itself; a client
            // reading it slowly (`jobctl get events | less`) must get all of it.
            stall: follow.then_some(state.limits.event_client_stall),
        },
        tx,
    ));
    let stream =
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn parse_cursor(field: &str, text: &str) -> ApiResult<EventCursor> {
    text.parse().map_err(|message| ApiError::Invalid {
        field: field.into(),
        message,
    })
}

/// What one client asked for.
struct Client {
    filter: EventFilter,
    after: Option<EventCursor>,
    follow: bool,
    /// The live tail's position when the client subscribed.
    head: Option<EventCursor>,
    /// How long an event may wait for room in the client's queue (live
    /// streams only: `None` waits as long as the client takes).
    stall: Option<std::time::Duration>,
}

/// Why a client's stream ended (for the log).
#[derive(Debug)]
enum End {
    ClientGone,
    Shutdown,
    Lagged(u64),
    /// The client took no event for its stall limit.
    Stalled,
    FeedClosed,
    Store(String),
    /// A `follow=false` read has sent everything up to now.
    HistoryDone,
}

async fn serve_client(
    store: Store,
    feed: Feed,
    live: broadcast::Receiver<crate::feed::Batch>,
    client: Client,
    tx: mpsc::Sender<Event>,
) {
    let end = stream_to(&store, &feed, live, &client, &tx).await;
    metrics::counter!("borg_event_streams_ended_total", "why" => match end {
        End::ClientGone => "client_gone",
        End::Shutdown => "shutdown",
        End::Lagged(_) => "lagged",
        End::Stalled => "stalled",
        End::FeedClosed => "feed_closed",
        End::Store(_) => "store_error",
        End::HistoryDone => "history_done",
    })
    .increment(1);
    match end {
        End::Lagged(n) => {
            tracing::info!(
                missed = n,
                "event stream client too slow: dropped (it resumes from its cursor)"
            )
        }
        End::Stalled => tracing::info!(
            stall = ?client.stall,
            "event stream client took no event for its stall limit: dropped (it resumes from its cursor)"
        ),
        End::Store(e) => tracing::warn!(error = %e, "event stream ended: store error"),
        _ => tracing::debug!(why = ?end, "event stream ended"),
    }
}

async fn stream_to(
    store: &Store,
    feed: &Feed,
    mut live: broadcast::Receiver<crate::feed::Batch>,
    client: &Client,
    tx: &mpsc::Sender<Event>,
) -> End {
    let filter = &client.filter;
    let after = client.after;
    // Events at or before `last` have been sent (or were skipped by the filter).
    let mut last = after;
    if let Some(mut cursor) = after {
        loop {
            let page = tokio::select! {
                _ = feed.shutdown.cancelled() => return End::Shutdown,
                p = store.feed_after(cursor, HISTORY_PAGE, filter) => match p {
                    Ok(p) => p,
                    Err(e) => return End::Store(e.to_string()),
                },
            };
            let n = page.events.len();
            for e in &page.events {
                if let Err(end) = send(feed, tx, e, client.stall).await {
                    return end;
                }
            }
            cursor = page.next;
            if n < HISTORY_PAGE as usize {
                break;
            }
        }
        last = Some(cursor);
    } else if let Some(head) = client.head {
        // A live-only start: tell the client where it stands (a `start` event
        // whose id is the position), so a reconnect resumes here without a gap.
        let mark = Event::default()
            .event("start")
            .id(head.to_string())
            .data(format!("{{\"cursor\":\"{head}\"}}"));
        if tx.send(mark).await.is_err() {
            return End::ClientGone;
        }
        last = Some(head);
    }
    if !client.follow {
        return End::HistoryDone;
    }
    loop {
        let batch = tokio::select! {
            _ = feed.shutdown.cancelled() => return End::Shutdown,
            _ = tx.closed() => return End::ClientGone,
            b = live.recv() => match b {
                Ok(b) => b,
                Err(broadcast::error::RecvError::Lagged(n)) => return End::Lagged(n),
                Err(broadcast::error::RecvError::Closed) => return End::FeedClosed,
            },
        };
        for e in batch.iter() {
            let Ok(cursor) = e.cursor.parse::<EventCursor>() else {
                continue;
            };
            if last.is_some_and(|l| cursor <= l) || !filter.matches(e) {
                continue;
            }
            if let Err(end) = send(feed, tx, e, client.stall).await {
                return end;
            }
            last = Some(cursor);
        }
    }
}

async fn send(
    feed: &Feed,
    tx: &mpsc::Sender<Event>,
    e: &StreamEvent,
    stall: Option<std::time::Duration>,
) -> Result<(), End> {
    let data = match serde_json::to_string(e) {
        Ok(d) => d,
        Err(err) => return Err(End::Store(err.to_string())),
    };
    let event = Event::default()
        .id(e.cursor.clone())
        .event(e.kind.as_str())
        .data(data);
    tokio::select! {
        _ = feed.shutdown.cancelled() => Err(End::Shutdown),
        r = async {
            match stall {
                Some(stall) => tokio::time::timeout(stall, tx.send(event)).await.ok(),
                None => Some(tx.send(event).await),
            }
        } => match r {
            Some(sent) => sent.map_err(|_| End::ClientGone),
            None => Err(End::Stalled),
        },
    }
}
