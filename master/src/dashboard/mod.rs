//! The web dashboard at `GET /`: one page whose style and script are embedded
//! in the binary at compile time (plain JS, no build step, nothing fetched
//! from the network). It reads the REST API and stays live through
//! `GET /v1/events`: each event updates the rows it touches in place.

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
    "</script>\n</body>\n</html>\n"
);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(index))
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
            // Everything the page needs is in it or from this origin.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        PAGE,
    )
}
