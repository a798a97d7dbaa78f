//! The sync's body, read and written for speed: a master names every attempt
//! of the machine on every poll (1,000 attempts are ~180 KB), while only the
//! attempts the borglet has not seen yet need their whole spec. So the request
//! is read in two steps: each attempt's id, its spec kept as raw JSON (borrowed
//! from the body), and the whole spec parsed only for an attempt this borglet
//! has not seen. The answer is written from each attempt's cached encoding
//! (`AttemptTable::write_reports`), re-encoded only when the attempt changed.

use crate::api::Error;
use axum::http::{header, HeaderMap, StatusCode};
use borg_shared::wire::AttemptSpec;
use borg_shared::AttemptId;
use serde::Deserialize;
use serde_json::value::RawValue;

/// A `SyncRequest` (borg_shared::wire) with its attempts not parsed yet.
#[derive(Debug, Deserialize)]
pub struct LazySync<'a> {
    pub epoch: i64,
    pub machine: String,
    #[serde(borrow)]
    pub attempts: Vec<&'a RawValue>,
    #[serde(default)]
    pub ack: Vec<AttemptId>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: AttemptId,
}

/// One wanted attempt: its id, and its spec as the master sent it.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    pub id: AttemptId,
    pub raw: &'a RawValue,
}

impl Wanted<'_> {
    /// The whole spec; its id is the one already read.
    pub fn spec(&self) -> Result<AttemptSpec, Error> {
        serde_json::from_str(self.raw.get()).map_err(|e| unprocessable(&e))
    }
}

/// Parse a sync request's body as axum's `Json` would judge it: 415 without a
/// JSON content type, 400 for bad syntax, 422 for a well-formed body of the
/// wrong shape (a spec is checked when it is parsed, see [`Wanted::spec`]).
pub fn parse<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
) -> Result<(LazySync<'a>, Vec<Wanted<'a>>), Error> {
    if !json_content_type(headers) {
        return Err(Error::MalformedJson {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: "Expected request with `Content-Type: application/json`".into(),
        });
    }
    let req: LazySync<'a> = serde_json::from_slice(body).map_err(|e| rejected(&e))?;
    let wanted = req
        .attempts
        .iter()
        .map(|raw| {
            let id = match leading_id(raw.get()) {
                Some(id) => id,
                None => {
                    let IdOnly { id } =
                        serde_json::from_str(raw.get()).map_err(|e| unprocessable(&e))?;
                    id
                }
            };
            Ok(Wanted { id, raw })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok((req, wanted))
}

/// The id of a spec encoded as the master encodes them, id first and no
/// space (`{"id":"<uuid>",…`), read without scanning the rest: reading each
/// spec whole for its id was half the CPU of a sync naming 1,000 unchanged
/// attempts (`perf`, BENCHMARKS.md). `None` for any other form, which is then
/// read whole. A spec with two ids is refused once it is parsed
/// ([`Wanted::spec`]), which every new attempt is.
fn leading_id(raw: &str) -> Option<AttemptId> {
    let rest = raw.strip_prefix(r#"{"id":""#)?;
    let (id, after) = rest.split_at_checked(36)?;
    if !after.starts_with('"') {
        return None;
    }
    id.parse().ok()
}

fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence
            .rsplit_once('+')
            .is_some_and(|(head, tail)| head.contains('/') && tail.eq_ignore_ascii_case("json"))
}

fn rejected(e: &serde_json::Error) -> Error {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => unprocessable(e),
        Category::Syntax | Category::Eof | Category::Io => Error::MalformedJson {
            status: StatusCode::BAD_REQUEST,
            message: format!("Failed to parse the request body as JSON: {e}"),
        },
    }
}

fn unprocessable(e: &serde_json::Error) -> Error {
    Error::MalformedJson {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message: format!("Failed to deserialize the JSON body into the target type: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        h
    }

    fn status(r: Result<(LazySync<'_>, Vec<Wanted<'_>>), Error>) -> StatusCode {
        match r {
            Err(Error::MalformedJson { status, .. }) => status,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn a_leading_id_is_read_as_serde_reads_it() {
        let spec = crate::test_spec::spec();
        let encoded = serde_json::to_string(&spec).unwrap();
        assert_eq!(leading_id(&encoded), Some(spec.id), "the master's encoding");
        let IdOnly { id } = serde_json::from_str(&encoded).unwrap();
        assert_eq!(id, spec.id);
        let id = spec.id;
        for other in [
            format!(r#"{{ "id":"{id}"}}"#),
            format!(r#"{{"job":"j","id":"{id}"}}"#),
            format!(r#"{{"id":"{id}x"}}"#),
            format!(
                r#"{{"id":"{}"}}"#,
                id.to_string().to_uppercase().replace('-', "")
            ),
            r#"{"id":"not-a-uuid-but-thirty-six-chars-long"}"#.to_string(),
            r#"{"id":""#.to_string(),
        ] {
            assert_eq!(leading_id(&other), None, "{other}");
        }
        // Those forms are read whole, as before.
        let body = format!(r#"{{"epoch":1,"machine":"m","attempts":[{{"job":"j","id":"{id}"}}]}}"#);
        let (_, wanted) = parse(&json_headers(), body.as_bytes()).unwrap();
        assert_eq!(wanted[0].id, id);
    }

    #[test]
    fn ids_are_read_and_specs_parsed_on_demand() {
        let id = AttemptId::new();
        let body = format!(
            r#"{{"epoch":3,"machine":"m1","attempts":[{{"kill_grace_ms":5,"id":"{id}","junk":[1,{{"a":2}}]}}],"nudge_token":null}}"#
        );
        let (req, wanted) = parse(&json_headers(), body.as_bytes()).unwrap();
        assert_eq!((req.epoch, req.machine.as_str()), (3, "m1"));
        assert!(req.ack.is_empty());
        assert_eq!(wanted.len(), 1);
        assert_eq!(wanted[0].id, id);
        // The spec lacks required fields: refused when parsed, not before.
        match wanted[0].spec() {
            Err(Error::MalformedJson { status, .. }) => {
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY)
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn bad_bodies_are_refused_as_axum_json_would() {
        let h = json_headers();
        assert_eq!(status(parse(&h, b"{not json")), StatusCode::BAD_REQUEST);
        assert_eq!(
            status(parse(&h, br#"{"epoch":"one","machine":"x","attempts":[]}"#)),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            status(parse(
                &h,
                br#"{"epoch":1,"machine":"x","attempts":[{"no":"id"}]}"#
            )),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            status(parse(&HeaderMap::new(), b"{}")),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        let mut vendor = HeaderMap::new();
        vendor.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.borg+json"),
        );
        assert!(parse(&vendor, br#"{"epoch":1,"machine":"x","attempts":[]}"#).is_ok());
    }
}
