//! Several master URLs (`--master URL[,URL...]`, `BORG_MASTER`), as jobctl and
//! the borglet use them: each request goes to the master that answered last;
//! one that cannot be connected to, or answers 503 (its store unreachable),
//! hands the request to the next. A request whose body cannot be sent twice (a
//! stream) goes to the current master only.

use reqwest::{Request, Response, StatusCode, Url};
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, thiserror::Error)]
#[error("`{url}` is not a valid master URL: {reason}")]
pub struct BadMasterUrl {
    pub url: String,
    pub reason: String,
}

#[derive(Debug)]
pub struct Masters {
    bases: Vec<Url>,
    /// The one that answered last: tried first.
    current: AtomicUsize,
}

impl Masters {
    /// A comma-separated list of http(s) base URLs.
    pub fn parse(list: &str) -> Result<Masters, BadMasterUrl> {
        let bases = list
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|one| {
                let bad = |reason: String| BadMasterUrl {
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
            return Err(BadMasterUrl {
                url: list.to_string(),
                reason: "no URL given".into(),
            });
        }
        Ok(Masters {
            bases,
            current: AtomicUsize::new(0),
        })
    }

    /// How many masters there are.
    pub fn len(&self) -> usize {
        self.bases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bases.is_empty()
    }

    /// The master tried first.
    pub fn current(&self) -> &Url {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// The current master's URL + path segments, each escaped.
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

    /// Send `req` (its URL made by [`Masters::url`]) to the current master, then
    /// to the others in turn; the one that answered is kept as current.
    pub async fn execute(
        &self,
        http: &reqwest::Client,
        req: Request,
    ) -> Result<Response, reqwest::Error> {
        let n = self.bases.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let mut k = 0;
        loop {
            let i = (start + k) % n;
            let more = k + 1 < n;
            let (attempt, may_retry) = match (more, req.try_clone()) {
                (true, Some(mut attempt)) => {
                    *attempt.url_mut() =
                        Self::rebase(req.url(), &self.bases[start], &self.bases[i]);
                    (attempt, true)
                }
                // The last master, or a body that cannot be sent twice: this one answers.
                _ => {
                    let mut last = req;
                    let url = Self::rebase(last.url(), &self.bases[start], &self.bases[i]);
                    *last.url_mut() = url;
                    return match http.execute(last).await {
                        Ok(resp) => {
                            self.current.store(i, Ordering::Relaxed);
                            Ok(resp)
                        }
                        Err(e) => Err(e),
                    };
                }
            };
            match http.execute(attempt).await {
                Ok(resp) if may_retry && resp.status() == StatusCode::SERVICE_UNAVAILABLE => {}
                Ok(resp) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(resp);
                }
                Err(e) if may_retry && e.is_connect() => {}
                Err(e) => return Err(e),
            }
            k += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_urls_move_between_bases() {
        let m = Masters::parse("http://a:1, https://b:2/borg/").unwrap();
        assert_eq!(m.len(), 2);
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

    #[tokio::test]
    async fn a_dead_master_is_skipped_and_the_live_one_kept() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_url = format!("http://{}", dead.local_addr().unwrap());
        drop(dead);
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_url = format!("http://{}", live.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = live.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            }
        });
        let m = Masters::parse(&format!("{dead_url},{live_url}")).unwrap();
        let http = reqwest::Client::new();
        for _ in 0..2 {
            let req = http.get(m.url(&["healthz"])).build().unwrap();
            let resp = m.execute(&http, req).await.unwrap();
            assert_eq!(resp.text().await.unwrap(), "ok");
            assert_eq!(m.current().as_str(), format!("{live_url}/"));
        }
    }
}
