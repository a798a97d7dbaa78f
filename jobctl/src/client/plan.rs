//! `POST /v1/plan`: a dry run of a spec.

use super::{Client, ClientError, REQUEST_TIMEOUT};
use borg_shared::plan::PlanView;
use reqwest::Method;

impl Client {
    /// `POST /v1/plan`: would the master take this spec, and where would its tasks go.
    pub async fn plan(&self, spec: &serde_json::Value) -> Result<PlanView, ClientError> {
        let req = self
            .request(Method::POST, &["v1", "plan"])
            .timeout(REQUEST_TIMEOUT)
            .json(spec);
        let resp = self.send(req).await?;
        self.json("POST /v1/plan", resp).await
    }
}
