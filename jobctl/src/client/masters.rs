//! Several master URLs (`--master URL[,URL...]`, `BORG_MASTER`): every request
//! goes to the master that answered last; one that cannot be reached, or
//! answers 503 (its store unreachable), hands the request to the next.

use super::{Client, ClientError};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct Masters {
    bases: Vec<Url>,
    /// The one that answered last: tried first.
    current: AtomicUsize,
}

impl Masters {
    /// A comma-separated list of base URLs, each http(s).
    pub fn parse(list: &str) -> Result<Masters, ClientError> {
        let bases = list
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|one| {
                let bad = |reason: String| ClientError::BadUrl {
                    url: one.to_string(),
                    reason,
                };
                let base = Url::parse(one).map_err(|e| bad(e.to_string()))?;
                if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
                    return Err(bad("use http://HOST:PORT".into()));
                }
                Ok(base)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if bases.is_empty() {
            return Err(ClientError::BadUrl {
                url: list.to_string(),
                reason: "no URL given".into(),
            });
        }
        Ok(Masters {
            bases,
            current: AtomicUsize::new(0),
        })
    }

    /// The master tried first, for messages.
    pub fn current(&self) -> &Url {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// The current base + path segments, each escaped (job names come from the user).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.current().clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// `url`, made against base `from`, moved onto base `to`.
    fn rebase(url: &Url, from: &Url, to: &Url) -> Url {
        let rest = url
            .path()
            .strip_prefix(from.path().trim_end_matches('/'))
            .unwrap_or(url.path());
        let mut moved = to.clone();
        moved.set_path(&format!("{}{rest}", to.path().trim_end_matches('/')));
        moved.set_query(url.query());
        moved
    }
}

impl Client {
    /// Send `req` to the current master, then to the others in turn while
    /// one cannot be reached or answers 503; the one that answered is kept.
    pub(super) async fn execute(&self, req: RequestBuilder) -> Result<Response, ClientError> {
        let masters = &self.masters;
        let req = req.build().map_err(|e| self.transport_error(e))?;
        let n = masters.bases.len();
        let start = masters.current.load(Ordering::Relaxed) % n;
        if n == 1 {
            return self.http.execute(req).await.map_err(|e| self.transport_error(e));
        }
        let mut req = Some(req);
        for k in 0..n {
            let i = (start + k) % n;
            let Some(original) = req.as_ref() else { break };
            let last = k + 1 == n;
            // A streamed body cannot be sent twice: its only chance is the last.
            let attempt = match original.try_clone() {
                Some(mut attempt) => {
                    *attempt.url_mut() =
                        Masters::rebase(original.url(), &masters.bases[start], &masters.bases[i]);
                    attempt
                }
                None => match req.take() {
                    Some(only) => only,
                    None => break,
                },
            };
            match self.http.execute(attempt).await {
                Ok(resp) if resp.status() == StatusCode::SERVICE_UNAVAILABLE && !last => {}
                Ok(resp) => {
                    masters.current.store(i, Ordering::Relaxed);
                    return Ok(resp);
                }
                Err(e) if (e.is_connect() || e.is_timeout()) && !last && req.is_some() => {}
                Err(e) => return Err(self.transport_error(e)),
            }
        }
        Err(ClientError::Unreachable {
            master: self.master.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_urls_move_between_bases() {
        let m = Masters::parse("http://a:1, https://b:2/borg/").unwrap();
        assert_eq!(m.bases.len(), 2);
        let url = m.url(&["v1", "jobs", "x y"]);
        assert_eq!(url.as_str(), "http://a:1/v1/jobs/x%20y");
        let mut with_query = url.clone();
        with_query.set_query(Some("limit=5"));
        let moved = Masters::rebase(&with_query, &m.bases[0], &m.bases[1]);
        assert_eq!(moved.as_str(), "https://b:2/borg/v1/jobs/x%20y?limit=5");
        let back = Masters::rebase(&moved, &m.bases[1], &m.bases[0]);
        assert_eq!(back.as_str(), "http://a:1/v1/jobs/x%20y?limit=5");
        assert!(Masters::parse("http://a:1,nope").is_err());
        assert!(Masters::parse(" , ").is_err());
    }
}
