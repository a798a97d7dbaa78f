//! The REST API: one router per resource, merged here.

mod audit;
mod body;
mod cordon;
mod error;
mod events;
mod health;
mod jobs;
mod limits;
mod logs;
mod machines;
mod metrics;
mod params;
mod plan;
mod quotas;
mod rejections;
mod resolve;
mod rollout;
mod scale;
mod tokens;

pub use error::{ApiError, ApiResult};
pub use limits::{Limits, LimitsConfig};

use crate::store::Store;
use axum::extract::rejection::JsonRejection;
use axum::http::header;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use tokio::sync::Notify;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// One pooled client for proxying to borglets.
    pub http: reqwest::Client,
    /// Wakes the poller to rescan machines (a borglet registered).
    pub machines_changed: Arc<Notify>,
    /// The poller's machine loops: a nudge wakes one.
    pub machines: Arc<crate::poller::Machines>,
    /// The process's Prometheus recorder, if this process installed one.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The shared reader of the event log behind `GET /v1/events`.
    pub feed: crate::feed::Feed,
    /// Whether this replica leads (and at which epoch).
    pub leader: Arc<crate::leader::Status>,
    /// Whether Postgres answers (watched apart from requests).
    pub db: Arc<crate::dbhealth::DbHealth>,
    /// `--insecure`: no authentication, every caller is an admin.
    pub insecure: bool,
    /// Which borglet registrations are admitted.
    pub agents: Arc<crate::agents::Gate>,
    /// Body size and submission rate limits (`limits.rs`).
    pub limits: Arc<Limits>,
}

/// The document's root; paths and schemas come from the handlers' `#[utoipa::path]`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "borgmaster",
        version = env!("CARGO_PKG_VERSION"),
        description = "The borg master's REST API (v1). Errors answer with `ErrorBody`: \
            `{\"error\":{\"code\",\"message\",\"field\"}}`."
    ),
    tags(
        (name = "jobs", description = "Submit, list, read and kill jobs; read task logs"),
        (name = "machines", description = "Borglets register and nudge; operators list them"),
        (name = "quotas", description = "Cpu and memory per owner and priority band; work over quota waits"),
        (name = "operations", description = "Health and metrics"),
        (name = "events", description = "Every state change as server-sent events, resumable"),
        (name = "access", description = "API tokens and the audit log (admins)"),
    )
)]
struct ApiDoc;

/// Every resource's router, each carrying the OpenAPI paths of its handlers.
fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(jobs::router())
        .merge(machines::router())
        .merge(scale::router())
        .merge(rollout::router())
        .merge(cordon::router())
        .merge(logs::router())
        .merge(health::router())
        .merge(metrics::router())
        .merge(quotas::router())
        .merge(events::router())
        .merge(crate::dashboard::router())
        .merge(resolve::router())
        .merge(plan::router())
        .merge(tokens::router())
        .merge(audit::router())
}

pub fn router(state: AppState) -> Router {
    let (api, mut doc) = api_router().split_for_parts();
    document_access(&mut doc);
    // Rendered once; `Bytes` makes each answer a cheap clone.
    let doc = axum::body::Bytes::from(doc.to_json().expect("the OpenAPI document serializes"));
    api.route(
        "/openapi.json",
        get(|| async move { ([(header::CONTENT_TYPE, "application/json")], doc) }),
    )
    // Runs on matched routes only, after routing: it needs the path template.
    .route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        crate::auth::authorize,
    ))
    // Outside authorization, so refused calls are timed too.
    .route_layer(axum::middleware::from_fn(request_metrics))
    .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
    .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        store_unavailable,
    ))
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        limits::submit_rate,
    ))
    .layer(axum::extract::DefaultBodyLimit::max(
        state.limits.max_body_bytes,
    ))
    .layer(axum::middleware::from_fn(rejections::error_bodies))
    .layer(tower_http::catch_panic::CatchPanicLayer::custom(
        rejections::panicked,
    ))
    // Spans name the path, never the query: `?access_token=` must not reach a log.
    .layer(
        tower_http::trace::TraceLayer::new_for_http().make_span_with(
            |req: &axum::http::Request<axum::body::Body>| {
                tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
            },
        ),
    )
    .with_state(state)
}

/// `borg_api_request_duration_seconds` by route template, method and status:
/// the time to the response's head (a stream's body is not included).
async fn request_metrics(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let method = req.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    ::metrics::histogram!(
        "borg_api_request_duration_seconds",
        "route" => route,
        "method" => method,
        "status" => resp.status().as_u16().to_string(),
    )
    .record(started.elapsed().as_secs_f64());
    resp
}

/// Add the bearer scheme, and to every operation that needs a token its
/// security requirement and its 401 and 403 answers (from `auth::policy`).
fn document_access(doc: &mut utoipa::openapi::OpenApi) {
    use crate::auth::{policy, Access};
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            (axum::http::Method::GET, item.get.as_mut()),
            (axum::http::Method::PUT, item.put.as_mut()),
            (axum::http::Method::POST, item.post.as_mut()),
            (axum::http::Method::DELETE, item.delete.as_mut()),
        ];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            let access = policy(&method, path);
            if access == Access::Public {
                continue;
            }
            op.security = Some(vec![SecurityRequirement::new(
                "bearer",
                Vec::<String>::new(),
            )]);
            let responses = &mut op.responses.responses;
            responses.entry("401".into()).or_insert_with(|| {
                error("No token, or an unknown or revoked one (`unauthorized`)").into()
            });
            let why = match access {
                Access::Token => "The token's owner may not do this to this resource (`forbidden`)",
                Access::Operator => "The token is not an operator's or an admin's (`forbidden`)",
                _ => "The token is not an admin's (`forbidden`)",
            };
            responses
                .entry("403".into())
                .or_insert_with(|| error(why).into());
        }
    }
}

/// Map axum's JSON body rejections onto our error body: a wrong content type is
/// 415, a body past `--max-body-bytes` 413 (see `body.rs`).
pub(crate) fn json_rejection(rej: JsonRejection) -> ApiError {
    match rej {
        JsonRejection::JsonDataError(e) => ApiError::Invalid {
            field: ".".into(),
            message: e.body_text(),
        },
        JsonRejection::MissingJsonContentType(_) => body::unsupported_media_type(),
        JsonRejection::BytesRejection(e) => body::bytes_rejection(e),
        other => ApiError::Malformed {
            message: other.body_text(),
        },
    }
}

/// While Postgres is unreachable, answer 503 with `Retry-After` at once; the
/// operational endpoints still answer (and say `degraded`).
async fn store_unavailable(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let operational = matches!(req.uri().path(), "/healthz" | "/metrics" | "/openapi.json");
    if operational || state.db.is_up() {
        return next.run(req).await;
    }
    ApiError::Unavailable("the cell's store (Postgres) is unreachable; retry shortly".into())
        .into_response()
}
