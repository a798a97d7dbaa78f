//! `/v1/machines`: borglets register and nudge; operators list.

use super::params::{known_name, MachineName, MachinePage, PageQuery};
use super::{json_rejection, ApiError, ApiResult, AppState};
use crate::agents::{admission, Proof, Refusal};
use crate::poller::Nudge;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use borg_shared::agent::{bearer, JOIN_TOKEN_HEADER};
use borg_shared::spec::{bounds, validate_name};
use borg_shared::wire::{MachineList, MachineRegistered, RegisterMachine};
use borg_shared::ErrorBody;
use borg_store::Enrolled;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register, list))
        .routes(routes!(nudge))
}

/// Register a machine (what a borglet does at start-up); registering again updates it.
/// Needs proof: the cluster join token (`x-borg-join-token`) for a new name or the
/// machine's current address, or the machine's own credential (`Authorization:
/// Bearer`) for anything, including a move to another address. A registration
/// with the join token is answered with a new credential, shown once.
#[utoipa::path(
    post,
    path = "/v1/machines",
    operation_id = "register_machine",
    tag = "machines",
    params(
        ("Authorization" = Option<String>, Header, description = "`Bearer <credential>`: the machine's credential"),
        ("x-borg-join-token" = Option<String>, Header, description = "The cluster join token"),
    ),
    request_body(content = RegisterMachine, content_type = "application/json"),
    responses(
        (status = 201, description = "The machine is new", body = MachineRegistered),
        (status = 200, description = "The machine was known; its address, capacity and labels were updated", body = MachineRegistered),
        (status = 400, description = "The body is not JSON (`malformed_json`)", body = ErrorBody),
        (status = 401, description = "No valid proof: neither the machine's credential nor the join token (`unauthorized`)", body = ErrorBody),
        (status = 403, description = "The join token does not allow this: a known machine at another address, or no join token configured (`forbidden`)", body = ErrorBody),
        (status = 413, description = "The body is larger than the master's `--max-body-bytes` (`payload_too_large`)", body = ErrorBody),
        (status = 415, description = "The body is not `application/json` (`unsupported_media_type`)", body = ErrorBody),
        (status = 422, description = "A field is missing or invalid; `field` names it (`invalid_spec`). Besides the schema's bounds, `ports.last` must be at least `ports.first`", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<RegisterMachine>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<MachineRegistered>)> {
    let Json(req) = body.map_err(json_rejection)?;
    validate_registration(&req)?;
    let proof = Proof {
        credential: bearer(
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        ),
        join_token: headers
            .get(JOIN_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim),
    };
    let fresh = borg_shared::agent::new_secret()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("no randomness for a credential: {e}")))?;
    let mut verdict = None;
    let enrolled = state
        .store
        .enroll_machine(&req, |known| {
            admission(&state.agents, proof, &req, known, &fresh, &mut verdict)
        })
        .await?;
    let issued = matches!(verdict, Some(Ok(true)));
    let (machine, inserted) = match enrolled {
        Enrolled::Registered { machine, inserted } => (machine, inserted),
        Enrolled::Refused { reason } => {
            tracing::warn!(machine = %req.name, address = %req.address, %reason,
                "machine registration refused");
            return Err(match verdict {
                Some(Err(Refusal::Forbidden(r))) => ApiError::Forbidden(r),
                _ => ApiError::Unauthorized(reason),
            });
        }
    };
    state.machines_changed.notify_one();
    let status = if inserted {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(MachineRegistered {
            machine,
            credential: issued.then_some(fresh),
        }),
    ))
}

/// What the store can hold and the poller can reach: bounded capacity (the
/// columns are BIGINT), Kubernetes-style labels, an http(s) URL.
fn validate_registration(req: &RegisterMachine) -> ApiResult<()> {
    let invalid = |field: &str, message: String| ApiError::Invalid {
        field: field.into(),
        message,
    };
    validate_name(&req.name).map_err(|m| invalid("name", m))?;
    bounds::check_address(&req.address).map_err(|m| invalid("address", m))?;
    if reqwest::Url::parse(&req.address).is_err() {
        return Err(invalid(
            "address",
            format!("`{}` is not an http(s) URL", req.address.escape_debug()),
        ));
    }
    let c = &req.capacity;
    if c.cpu.0 > bounds::MAX_MACHINE_CPU {
        let max = bounds::MAX_MACHINE_CPU;
        return Err(invalid("capacity.cpu", format!("at most {max} millicores")));
    }
    for (field, v) in [("capacity.memory", c.memory), ("capacity.disk", c.disk)] {
        if v.0 > bounds::MAX_MACHINE_BYTES {
            let max = bounds::MAX_MACHINE_BYTES;
            return Err(invalid(field, format!("at most {max} bytes")));
        }
    }
    bounds::check_labels(&req.labels, "labels")?;
    if let Some(v) = &req.version {
        bounds::check_version(v).map_err(|m| invalid("version", m))?;
    }
    if req.ports.first == 0 || req.ports.last < req.ports.first {
        return Err(invalid(
            "ports",
            format!(
                "port range {}-{} must be non-empty and start at 1 or above",
                req.ports.first, req.ports.last
            ),
        ));
    }
    Ok(())
}

/// List registered machines with their capacity and allocation.
#[utoipa::path(
    get,
    path = "/v1/machines",
    operation_id = "list_machines",
    tag = "machines",
    params(MachinePage),
    responses(
        (status = 200, description = "A page of machines by name; `next` is where the next page starts", body = MachineList),
        (status = 400, description = "The query string does not parse, e.g. a parameter given twice (`bad_request`)", body = ErrorBody),
        (status = 422, description = "`limit` is out of range, or `after` is not a page's `next` (`invalid_spec`)", body = ErrorBody),
        (status = 500, description = "Internal error (`internal`)", body = ErrorBody),
    )
)]
async fn list(
    State(state): State<AppState>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<MachineList>> {
    let limit = page.limit()?;
    let page = state.store.list_machines(page.after()?, limit).await?;
    Ok(Json(MachineList {
        machines: page.items,
        next: page.next,
    }))
}

/// A borglet asks to be synced now (a task exited). Its machine's poll loop wakes at
/// once, or right after the sync in flight; many nudges meanwhile make one sync.
#[utoipa::path(
    post,
    path = "/v1/machines/{name}/nudge",
    operation_id = "nudge_machine",
    tag = "machines",
    params(
        MachineName,
        ("Authorization" = String, Header,
            description = "`Bearer <credential>`: the machine's credential"),
    ),
    responses(
        (status = 202, description = "The machine will be synced now"),
        (status = 401, description = "The credential is missing or not this machine's (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "No poll loop runs for a machine of that name (`not_found`)", body = ErrorBody),
    )
)]
async fn nudge(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    known_name("machine", &name)?;
    let token = bearer(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let outcome = match token {
        Some(token) => state.machines.nudge(&name, token),
        None => Nudge::Unauthorized,
    };
    metrics::counter!("borg_nudges_total", "result" => outcome.as_str()).increment(1);
    tracing::debug!(machine = %name, result = outcome.as_str(), "nudge");
    match outcome {
        Nudge::Accepted => Ok(StatusCode::ACCEPTED),
        Nudge::UnknownMachine => Err(ApiError::NotFound(format!(
            "no machine `{name}` is being polled"
        ))),
        Nudge::Unauthorized => Err(ApiError::Unauthorized(
            "a nudge needs `Authorization: Bearer <credential>` with the machine's credential"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use borg_shared::spec::bounds::{check_address, ADDRESS_PATTERN};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Every address the document's pattern admits is one the master can parse.
        #[test]
        fn documented_addresses_parse(
            address in proptest::string::string_regex(
                ADDRESS_PATTERN.trim_start_matches('^').trim_end_matches('$')
            ).unwrap()
        ) {
            prop_assume!(address.chars().count() <= 2048);
            prop_assert!(check_address(&address).is_ok(), "{}", address);
            prop_assert!(reqwest::Url::parse(&address).is_ok(), "{}", address);
        }
    }
}
