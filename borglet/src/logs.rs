//! Serving a task's log files from its sandbox: the whole file or its last N lines,
//! streamed. Sandboxes outlive their attempts, so logs of finished tasks stay readable.

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
use std::io::{Read, Seek, SeekFrom};
use tokio_util::io::ReaderStream;

const TAIL_CHUNK: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    #[serde(default)]
    stream: LogStream,
    tail: Option<u64>,
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
    let path = dir.join(q.stream.file_name());
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return if tokio::fs::try_exists(&dir).await.unwrap_or(false) {
                // A sandbox without that file yet: nothing written.
                Ok(text_response(Body::empty()))
            } else {
                Err(Error::NotFound(format!("no logs for attempt {id}")))
            };
        }
        Err(e) => {
            return Err(Error::Internal(
                anyhow::Error::new(e).context(format!("opening {}", path.display())),
            ))
        }
    };
    let file = match q.tail {
        None => file,
        Some(lines) => {
            let mut std_file = file.into_std().await;
            let std_file = tokio::task::spawn_blocking(move || {
                let start = tail_offset(&mut std_file, lines)?;
                std_file.seek(SeekFrom::Start(start))?;
                Ok::<_, std::io::Error>(std_file)
            })
            .await
            .context("tail task")?
            .with_context(|| format!("finding the tail of {}", path.display()))?;
            tokio::fs::File::from_std(std_file)
        }
    };
    Ok(text_response(Body::from_stream(ReaderStream::new(file))))
}

fn text_response(body: Body) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// Byte offset where the last `lines` lines of `f` begin. A final newline ends the
/// last line rather than starting an empty one. Reads backwards in chunks, so a
/// large log costs only as much as its tail.
fn tail_offset<F: Read + Seek>(f: &mut F, lines: u64) -> std::io::Result<u64> {
    let len = f.seek(SeekFrom::End(0))?;
    if lines == 0 {
        return Ok(len);
    }
    let mut buf = vec![0u8; TAIL_CHUNK];
    let mut pos = len;
    let mut seen = 0u64;
    while pos > 0 {
        let n = usize::try_from(pos).map_or(TAIL_CHUNK, |p| p.min(TAIL_CHUNK));
        pos -= n as u64;
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut buf[..n])?;
        for i in (0..n).rev() {
            let after = pos + i as u64 + 1;
            if buf[i] == b'\n' && after != len {
                seen += 1;
                if seen == lines {
                    return Ok(after);
                }
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::tail_offset;
    use std::io::Cursor;

    fn tail(text: &str, n: u64) -> &str {
        let off = tail_offset(&mut Cursor::new(text.as_bytes()), n).unwrap();
        &text[off as usize..]
    }

    #[test]
    fn tail_counts_lines_from_the_end() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a\nb\nc\n", 10), "a\nb\nc\n");
        assert_eq!(tail("a\nb\nc\n", 0), "");
        assert_eq!(tail("", 3), "");
        assert_eq!(tail("\n\n", 1), "\n");
    }

    #[test]
    fn tail_crosses_chunks() {
        let line = "x".repeat(1000) + "\n";
        let text = line.repeat(200);
        assert_eq!(tail(&text, 3), line.repeat(3));
    }
}
