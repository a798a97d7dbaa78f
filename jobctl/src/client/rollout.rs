//! Updates and rollouts: `PUT /v1/jobs/{name}` and `/v1/jobs/{name}/rollout`.

use super::{Client, ClientError, REQUEST_TIMEOUT};
use borg_shared::rollout::RolloutView;
use borg_shared::wire::JobView;
use reqwest::Method;

impl Client {
    /// `PUT /v1/jobs/{name}` with the full spec: the job, updated, scaled or unchanged.
    pub async fn update(
        &self,
        name: &str,
        spec: &serde_json::Value,
    ) -> Result<JobView, ClientError> {
        let req = self
            .request(Method::PUT, &["v1", "jobs", name])
            .timeout(REQUEST_TIMEOUT)
            .json(spec);
        let resp = self.send(req).await?;
        self.json("PUT /v1/jobs/{name}", resp).await
    }

    /// `GET /v1/jobs/{name}/rollout`.
    pub async fn rollout(&self, name: &str) -> Result<RolloutView, ClientError> {
        let req = self
            .request(Method::GET, &["v1", "jobs", name, "rollout"])
            .timeout(REQUEST_TIMEOUT);
        let resp = self.send(req).await?;
        self.json("GET /v1/jobs/{name}/rollout", resp).await
    }

    /// `POST /v1/jobs/{name}/rollout/{action}`: `pause`, `resume` or `undo`.
    pub async fn rollout_action(
        &self,
        name: &str,
        action: &str,
    ) -> Result<RolloutView, ClientError> {
        let req = self
            .request(Method::POST, &["v1", "jobs", name, "rollout", action])
            .timeout(REQUEST_TIMEOUT);
        let resp = self.send(req).await?;
        self.json("POST /v1/jobs/{name}/rollout/{action}", resp)
            .await
    }
}
