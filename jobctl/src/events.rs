//! Reading the master's event stream (`GET /v1/events`): server-sent events
//! parsed by `eventsource-stream`, reconnecting with `Last-Event-ID` when the
//! connection drops (a master restart), so a reader sees every event once.

use crate::client::{Client, ClientError};
use borg_shared::event_stream::StreamEvent;
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::time::Duration;
use tokio::time::Instant;

/// How long the stream may stay unreachable before giving up.
const RECONNECT_FOR: Duration = Duration::from_secs(15);

type Sse = Pin<
    Box<
        dyn Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub job: Option<String>,
    pub machine: Option<String>,
    pub kind: Option<String>,
    /// Start with the whole history (else: what happens from now on).
    pub history: bool,
    /// Stay live after the history (else end once it is sent).
    pub follow: bool,
}

pub struct EventStream<'a> {
    client: &'a Client,
    query: Query,
    last: Option<String>,
    sse: Option<Sse>,
}

impl<'a> EventStream<'a> {
    /// Open the stream (errors such as an unknown job surface here).
    pub async fn open(client: &'a Client, query: Query) -> Result<EventStream<'a>, ClientError> {
        let mut s = EventStream {
            client,
            query,
            last: None,
            sse: None,
        };
        s.connect().await?;
        Ok(s)
    }

    async fn connect(&mut self) -> Result<(), ClientError> {
        let q = &self.query;
        let mut params: Vec<(&str, String)> = Vec::new();
        for (k, v) in [("job", &q.job), ("machine", &q.machine), ("kind", &q.kind)] {
            if let Some(v) = v {
                params.push((k, v.clone()));
            }
        }
        if q.history {
            params.push(("after", "0-0".into()));
        }
        if !q.follow {
            params.push(("follow", "false".into()));
        }
        let resp = self.client.events(&params, self.last.as_deref()).await?;
        self.sse = Some(Box::pin(resp.bytes_stream().eventsource()));
        Ok(())
    }

    /// The next event; `None` when a bounded read (`follow: false`) is complete.
    pub async fn next(&mut self) -> Result<Option<StreamEvent>, ClientError> {
        let mut down_since: Option<Instant> = None;
        loop {
            if let Some(sse) = self.sse.as_mut() {
                match sse.next().await {
                    // Where a live-only stream starts: resume from there.
                    Some(Ok(ev)) if ev.event == "start" => self.last = Some(ev.id),
                    Some(Ok(ev)) => {
                        let e: StreamEvent =
                            serde_json::from_str(&ev.data).map_err(|e| ClientError::Decode {
                                what: "GET /v1/events".into(),
                                reason: e.to_string(),
                            })?;
                        self.last = Some(e.cursor.clone());
                        return Ok(Some(e));
                    }
                    None if !self.query.follow => return Ok(None),
                    // The master went away mid-stream: resume from the last event.
                    None | Some(Err(_)) => self.sse = None,
                }
            }
            match self.connect().await {
                Ok(()) => down_since = None,
                Err(e @ (ClientError::Unreachable { .. } | ClientError::Transport { .. })) => {
                    let since = *down_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > RECONNECT_FOR {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// `12:00:01  task  hello/3  pending -> assigned  on m1  (reason)`.
pub fn event_line(e: &StreamEvent) -> String {
    let subject = match (e.kind.as_str(), &e.job, e.task_index, &e.machine) {
        ("task", Some(job), Some(i), _) => format!("{job}/{i}"),
        ("job", Some(job), _, _) => format!("job/{job}"),
        ("machine", _, _, Some(m)) => format!("machine/{m}"),
        _ => "-".into(),
    };
    let mut line = format!(
        "{}  {:<7}  {subject}  ",
        e.time.format("%H:%M:%S%.3f"),
        e.kind.as_str()
    );
    match &e.from {
        Some(from) => line.push_str(&format!("{from} -> {}", e.to)),
        None => line.push_str(&e.to),
    }
    if e.kind.as_str() == "task" {
        if let Some(m) = &e.machine {
            line.push_str(&format!("  on {m}"));
        }
    }
    if let Some(r) = &e.reason {
        line.push_str(&format!("  ({r})"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use borg_shared::event_stream::EventKind;

    fn ev(kind: EventKind) -> StreamEvent {
        StreamEvent {
            cursor: "10-3".into(),
            id: 3,
            time: "2026-12-01T12:00:01.250Z".parse().unwrap(),
            kind,
            job: Some("hello".into()),
            owner: None,
            job_id: None,
            task_index: Some(2),
            attempt: None,
            machine: Some("m1".into()),
            from: Some("pending".into()),
            to: "assigned".into(),
            reason: None,
        }
    }

    #[test]
    fn lines_name_the_subject() {
        assert_eq!(
            event_line(&ev(EventKind::Task)),
            "12:00:01.250  task     hello/2  pending -> assigned  on m1"
        );
        let mut j = ev(EventKind::Job);
        j.from = None;
        j.to = "pending".into();
        j.reason = Some("submitted".into());
        assert_eq!(
            event_line(&j),
            "12:00:01.250  job      job/hello  pending  (submitted)"
        );
        let mut m = ev(EventKind::Machine);
        m.job = None;
        m.to = "up".into();
        assert_eq!(
            event_line(&m),
            "12:00:01.250  machine  machine/m1  pending -> up"
        );
    }
}
