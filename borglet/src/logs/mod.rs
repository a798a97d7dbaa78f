//! Serving a task's log files from its sandbox: the whole file or its last N lines
//! (`tail.rs`), streamed, and with `follow=true` kept open for what the task writes
//! next until it ends (`follow.rs`). Sandboxes outlive their attempts, so logs of
//! finished tasks stay readable. An in-place restart keeps the run that ended as
//! `stdout.previous`/`stderr.previous` (`previous.rs`), served with `previous=true`.

mod confine;
mod follow;
mod previous;
mod tail;

pub use previous::keep_previous_run;

use confine::{open_log, OpenLogError};

use crate::api::{AppState, Error};
use crate::supervisor::sandbox_dir;
use anyhow::Context;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use borg_shared::wire::LogStream;
use borg_shared::AttemptId;
use serde::Deserialize;
use std::io::{Seek, SeekFrom};
use tokio_util::io::ReaderStream;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    #[serde(default)]
    stream: LogStream,
    tail: Option<u64>,
    /// Keep streaming what the task writes until it has finished.
    #[serde(default)]
    follow: bool,
    /// The run before the current one (kept at an in-place restart); 404 when
    /// the attempt has not restarted.
    #[serde(default)]
    previous: bool,
}

pub async fn get_logs(
    State(app): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Response, Error> {
    let id: AttemptId = id.parse().map_err(|_| Error::BadRequest {
        code: "invalid_id",
        message: format!("`{id}` is not an attempt id"),
        field: Some("id"),
    })?;
    let Query(q) = query.map_err(|e| Error::BadRequest {
        code: "invalid_query",
        message: e.body_text(),
        field: None,
    })?;
    let dir = sandbox_dir(&app.data_dir, id);
    let name = match q.previous {
        true => previous::file_name(q.stream),
        false => q.stream.file_name().to_string(),
    };
    let path = dir.join(&name);
    let file = match open_log(&dir, &path).await {
        Ok(f) => Some(f),
        Err(OpenLogError::NotFound) if q.previous => {
            return Err(Error::NotFound(format!(
                "attempt {id} has not restarted in place: no previous run"
            )))
        }
        Err(OpenLogError::NotFound) => {
            if !tokio::fs::try_exists(&dir).await.unwrap_or(false) {
                return Err(Error::NotFound(format!("no logs for attempt {id}")));
            }
            // A sandbox without that file: the task has not written to that
            // stream (the file is made at its first byte). Followed, the file
            // is read once it appears.
            None
        }
        Err(OpenLogError::OutsideSandbox) => {
            return Err(Error::BadRequest {
                code: "log_outside_sandbox",
                message: format!("the {name} log of attempt {id} is not a file in its sandbox"),
                field: Some("stream"),
            })
        }
        Err(OpenLogError::Io(e)) => {
            return Err(Error::Internal(
                anyhow::Error::new(e).context(format!("opening {}", path.display())),
            ))
        }
    };
    let file = match (file, q.tail) {
        (Some(file), Some(lines)) => {
            let mut std_file = file.into_std().await;
            let std_file = tokio::task::spawn_blocking(move || {
                let start = tail::tail_offset(&mut std_file, lines)?;
                std_file.seek(SeekFrom::Start(start))?;
                Ok::<_, std::io::Error>(std_file)
            })
            .await
            .context("tail task")?
            .with_context(|| format!("finding the tail of {}", path.display()))?;
            Some(tokio::fs::File::from_std(std_file))
        }
        (file, _) => file,
    };
    // An attempt the table does not know (e.g. from before a borglet restart) has
    // no exit to wait for: its log is served as it stands.
    // The previous run is over: nothing to follow.
    let exited = (q.follow && !q.previous)
        .then(|| app.supervisor.table().exit_token(id))
        .flatten();
    let body = match exited {
        Some(exited) => {
            tracing::debug!(attempt = %id, stream = q.stream.file_name(), "following log");
            Body::from_stream(follow::follow(
                file,
                dir,
                path,
                exited,
                app.shutdown.clone(),
            ))
        }
        None => match file {
            Some(file) => Body::from_stream(ReaderStream::new(file)),
            None => Body::empty(),
        },
    };
    Ok(text_response(body))
}

fn text_response(body: Body) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}
