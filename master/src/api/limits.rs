//! What the API takes from a caller: the largest body, and how fast one caller
//! may submit jobs (a token bucket per caller; `governor`).

use super::{ApiError, AppState};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use borg_shared::resources::{Bytes, Quantity};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::num::NonZeroU32;

/// The default largest request body: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, clap::Args)]
pub struct LimitsConfig {
    /// The largest request body the API reads (a size: `1Mi`, `512Ki`); a larger
    /// one answers 413.
    #[arg(long, env = "BORG_MAX_BODY_BYTES", default_value = "1Mi", value_parser = parse_size)]
    pub max_body_bytes: u64,
    /// Job submissions (`POST /v1/jobs`) per second one caller may make (keyed on
    /// its `Authorization` header, else its address); past the burst the API
    /// answers 429 with `Retry-After`. 0 turns the limit off.
    #[arg(long, env = "BORG_SUBMIT_RATE", default_value_t = 100)]
    pub submit_rate: u32,
    /// Submissions one caller may make at once before `--submit-rate` applies.
    #[arg(long, env = "BORG_SUBMIT_BURST", default_value_t = 500)]
    pub submit_burst: u32,
    /// An event-stream client (`GET /v1/events`) that takes no event for this
    /// long while events wait for it is dropped: its queue is freed and it
    /// resumes from its `Last-Event-ID` when it reads again.
    #[arg(long, env = "BORG_EVENT_CLIENT_STALL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub event_client_stall: std::time::Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            submit_rate: 100,
            submit_burst: 500,
            event_client_stall: std::time::Duration::from_secs(30),
        }
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let b = Bytes::parse(&Quantity::Text(s.to_string())).map_err(|e| format!("`{s}`: {e}"))?;
    if b.0 == 0 {
        return Err("must be more than 0".into());
    }
    Ok(b.0)
}

/// The limits in force, shared by every request.
pub struct Limits {
    pub max_body_bytes: usize,
    /// `--event-client-stall`.
    pub event_client_stall: std::time::Duration,
    submit: Option<DefaultKeyedRateLimiter<u64>>,
    /// Keyed per process: a caller's key says nothing of its token.
    hasher: std::collections::hash_map::RandomState,
}

/// Callers remembered before idle buckets are dropped.
const MAX_TRACKED_CALLERS: usize = 10_000;

impl Limits {
    pub fn new(config: &LimitsConfig) -> Limits {
        let submit = NonZeroU32::new(config.submit_rate).map(|rate| {
            let burst = NonZeroU32::new(config.submit_burst.max(1)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Limits {
            max_body_bytes: usize::try_from(config.max_body_bytes).unwrap_or(usize::MAX),
            event_client_stall: config.event_client_stall,
            submit,
            hasher: Default::default(),
        }
    }

    /// The caller: a hash of its `Authorization` header when it sends one (so
    /// each token has its own bucket), else its IP address.
    fn caller(&self, req: &Request) -> u64 {
        if let Some(auth) = req.headers().get(header::AUTHORIZATION) {
            return self.hasher.hash_one(("auth", auth.as_bytes()));
        }
        let ip = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        self.hasher.hash_one(("peer", ip))
    }

    /// `Err(seconds to wait)` when this caller has no submission left now.
    fn check_submit(&self, req: &Request) -> Result<(), u64> {
        let Some(limiter) = &self.submit else {
            return Ok(());
        };
        let key = self.caller(req);
        let verdict = limiter.check_key(&key);
        if limiter.len() > MAX_TRACKED_CALLERS {
            limiter.retain_recent();
        }
        verdict.map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs_f64().ceil().max(1.0) as u64
        })
    }
}

/// 429 with `Retry-After` for a caller that submits past its rate. A dry run
/// (`POST /v1/plan`) costs the master what a submit does (the spec's checks and
/// a placement over the whole cell), so it draws on the same bucket.
pub(super) async fn submit_rate(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let route = match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/jobs") => Some("submit"),
        (&Method::POST, "/v1/plan") => Some("plan"),
        _ => None,
    };
    if let Some(route) = route {
        if let Err(retry_after) = state.limits.check_submit(&req) {
            metrics::counter!("borg_api_rate_limited_total", "route" => route).increment(1);
            return ApiError::TooManyRequests { retry_after }.into_response();
        }
    }
    next.run(req).await
}
