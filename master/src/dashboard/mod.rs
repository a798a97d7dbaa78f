//! The web dashboard at `GET /`: one page whose style and script are embedded
//! in the binary at compile time (plain JS, no build step, nothing fetched
//! from the network). It reads the REST API and stays live through
//! `GET /v1/events`: each event updates the page's model of what it touches,
//! and the page redraws only changed rows in view, in an animation frame.

use crate::api::AppState;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The whole page: HTML with its CSS and JS inlined.
const PAGE: &str = concat!(
    include_str!("head.html"),
    "<style>\n",
    include_str!("app.css"),
    "</style>\n</head>\n",
    include_str!("body.html"),
    "<script>\n",
    include_str!("app.js"),
    include_str!("job.js"),
    include_str!("boot.js"),
    "</script>\n</body>\n</html>\n"
);

/// The API reference: a page that draws `/openapi.json` in the browser.
const DOCS: &str = concat!(
    include_str!("docs.html"),
    include_str!("docs.js"),
    "</script>\n</body>\n</html>\n"
);

/// Everything the pages need is in them or from this origin.
const CSP: &str = "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(index))
        .routes(routes!(docs))
}

/// The dashboard: cell overview, jobs, a job's tasks, events and log tail, machines.
#[utoipa::path(
    get,
    path = "/",
    operation_id = "dashboard",
    tag = "operations",
    responses((status = 200, description = "The dashboard page", body = String, content_type = "text/html; charset=utf-8"))
)]
async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        PAGE,
    )
}

/// The API reference, drawn from `/openapi.json`: every operation by tag with
/// its parameters, body fields and limits, answers, and every schema.
#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "docs",
    tag = "operations",
    responses((status = 200, description = "The API reference page", body = String, content_type = "text/html; charset=utf-8"))
)]
async fn docs() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        DOCS,
    )
}
