//! The borglet's HTTP API: the router, the sync handler the master polls, the health
//! check, and the one error type every handler answers with. Syncs and log reads
//! need the machine's sync key (`Authorization: Bearer`): only the master has it.

use crate::credential::Credentials;
use crate::logs;
use crate::metrics::{self, Metrics, SyncResult};
use crate::nudge::Nudger;
use crate::register::Contact;
use crate::sync_wire;
use crate::tasks::Tasks;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use borg_shared::{ApiError, AttemptId, ErrorBody};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct AppState {
    pub name: Arc<str>,
    /// Absolute.
    pub data_dir: Arc<PathBuf>,
    /// What runs the tasks: the real supervisor, or simulated processes (fleet mode).
    pub supervisor: Arc<dyn Tasks>,
    /// Serialises syncs (so one attempt is never started by two concurrent polls)
    /// and holds the highest leadership epoch seen.
    pub sync_gate: Arc<tokio::sync::Mutex<SyncGate>>,
    pub contact: Arc<Contact>,
    pub metrics: Arc<Metrics>,
    pub nudger: Arc<Nudger>,
    /// This machine's credential: what the master must prove it knows.
    pub credentials: Arc<Credentials>,
    /// When the last accepted sync came (`task.fence_after`).
    pub fence: Arc<crate::fence::Fence>,
    /// Cancelled when the borglet shuts down: long-lived responses (log follows)
    /// end then, or graceful shutdown would wait on them forever.
    pub shutdown: CancellationToken,
}

#[derive(Debug, Default)]
pub struct SyncGate {
    highest_epoch: Option<i64>,
}

pub fn router(state: AppState) -> Router {
    let master_only = Router::new()
        .route("/v1/sync", post(sync))
        .route("/v1/attempts/{id}/logs", get(logs::get_logs))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            from_the_master,
        ));
    Router::new()
        .merge(master_only)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::serve))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Refuse, with 401 and a warning, a request without this machine's sync key:
/// whatever it carries (a huge epoch, commands to run) is never looked at.
async fn from_the_master(
    State(app): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let authorization = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if app.credentials.accepts(authorization) {
        return next.run(req).await;
    }
    let why = match (
        authorization.is_some(),
        app.credentials.credential().is_some(),
    ) {
        (_, false) => "this machine is not registered yet",
        (false, true) => "no credential presented",
        (true, true) => "wrong credential",
    };
    tracing::warn!(path = %req.uri().path(), reason = why, "refused a request not from the master");
    if req.uri().path() == "/v1/sync" {
        app.metrics.sync_refused();
    }
    Error::Unauthorized(why).into_response()
}

async fn healthz(State(app): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok", "name": &*app.name}))
}

/// Reconcile with the master's desired set and report every attempt we know.
/// The body is read lazily (`crate::sync_wire`): only specs of attempts not
/// seen yet are parsed, and the answer is written from cached encodings.
async fn sync(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let began = Instant::now();
    // In a task of its own: a master that gives up on the request (timeout, crash)
    // drops this handler, and a reconcile cut short between starting processes
    // and recording them would let the next sync start them a second time.
    let result = match tokio::spawn({
        let app = app.clone();
        async move { reconcile(&app, &headers, &body).await }
    })
    .await
    {
        Ok(result) => result,
        Err(e) => Err(Error::Internal(anyhow::anyhow!("sync task failed: {e}"))),
    };
    let label = match &result {
        Ok(_) => Some(SyncResult::Ok),
        Err(Error::StaleEpoch { .. }) => Some(SyncResult::StaleEpoch),
        Err(Error::WrongMachine { .. }) => Some(SyncResult::WrongMachine),
        Err(_) => None,
    };
    if let Some(label) = label {
        app.metrics.synced(label, began.elapsed());
    }
    match result {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The `SyncResponse` (borg_shared::wire) as JSON.
async fn reconcile(app: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, Error> {
    let (req, wanted) = sync_wire::parse(headers, body)?;
    if req.machine != *app.name {
        return Err(Error::WrongMachine {
            ours: app.name.to_string(),
            theirs: req.machine,
        });
    }
    let sup = &app.supervisor;
    let table = sup.table();
    // Parsed before anything changes, so a bad spec refuses the whole sync.
    let mut new = table
        .unseen(&wanted, |w| w.id)
        .into_iter()
        .map(|w| w.spec())
        .collect::<Result<Vec<_>, Error>>()?;

    let mut gate = app.sync_gate.lock().await;
    if let Some(seen) = gate.highest_epoch.filter(|seen| req.epoch < *seen) {
        return Err(Error::StaleEpoch {
            seen,
            got: req.epoch,
        });
    }
    gate.highest_epoch = Some(req.epoch.max(gate.highest_epoch.unwrap_or(req.epoch)));
    app.contact.synced();
    app.fence.synced();

    let forgotten = table.forget(&req.ack);
    let forgotten_n = forgotten.len();
    sup.mark_acked(forgotten);
    let wanted: HashSet<AttemptId> = wanted.iter().map(|w| w.id).collect();
    // Known, or finished and acknowledged: never a second start. Looked at again
    // under the gate (a concurrent sync may have started some), which is held
    // until every start is in the table, so no concurrent sync starts one again.
    let unseen: HashSet<AttemptId> = table
        .unseen(&new, |s| s.id)
        .into_iter()
        .map(|s| s.id)
        .collect();
    new.retain(|s| unseen.contains(&s.id));
    let started = new.len();
    Arc::clone(sup).start_all(new).await;
    sup.stop_unwanted(&wanted);
    let mut out = Vec::with_capacity(256 + table.len() * 192);
    out.extend_from_slice(b"{\"machine\":");
    serde_json::to_writer(&mut out, &*app.name).map_err(|e| Error::Internal(e.into()))?;
    out.extend_from_slice(b",\"attempts\":");
    let known = table.write_reports(&mut out);
    out.push(b'}');
    drop(gate);
    tracing::debug!(
        epoch = req.epoch,
        wanted = wanted.len(),
        started,
        forgotten = forgotten_n,
        known,
        "sync"
    );
    Ok(out)
}

/// Every failure an endpoint can answer with, mapped to a status and the
/// `{"error":{"code","message","field"}}` body in one place.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("this is machine `{ours}`, not `{theirs}`")]
    WrongMachine { ours: String, theirs: String },
    #[error("epoch {got} is older than epoch {seen} already seen")]
    StaleEpoch { seen: i64, got: i64 },
    #[error("{0}: syncs and log reads need this machine's key from the master")]
    Unauthorized(&'static str),
    #[error("{message}")]
    MalformedJson { status: StatusCode, message: String },
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        field: Option<&'static str>,
    },
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<JsonRejection> for Error {
    fn from(r: JsonRejection) -> Self {
        Error::MalformedJson {
            status: r.status(),
            message: r.body_text(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code, field) = match &self {
            Error::WrongMachine { .. } => (StatusCode::CONFLICT, "wrong_machine", Some("machine")),
            Error::StaleEpoch { .. } => (StatusCode::CONFLICT, "stale_epoch", Some("epoch")),
            Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            Error::MalformedJson { status, .. } => (*status, "malformed_json", None),
            Error::BadRequest { code, field, .. } => (StatusCode::BAD_REQUEST, *code, *field),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        };
        let message = match &self {
            Error::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "internal error");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: ApiError {
                code: code.to_string(),
                message,
                field: field.map(str::to_string),
            },
        };
        (status, Json(body)).into_response()
    }
}
