//! Operator calls: scale a job, drain and uncordon a machine.

use super::{Client, ClientError, REQUEST_TIMEOUT};
use borg_shared::wire::{JobView, MachineView};
use reqwest::Method;

impl Client {
    /// `POST /v1/jobs/{name}/scale`.
    pub async fn scale(&self, name: &str, replicas: u32) -> Result<JobView, ClientError> {
        let req = self
            .request(Method::POST, &["v1", "jobs", name, "scale"])
            .timeout(REQUEST_TIMEOUT)
            .json(&serde_json::json!({ "replicas": replicas }));
        let resp = self.send(req).await?;
        self.json("POST /v1/jobs/{name}/scale", resp).await
    }

    /// `POST /v1/machines/{name}/drain` or `/uncordon` (`action`).
    pub async fn cordon(&self, name: &str, action: &str) -> Result<MachineView, ClientError> {
        let req = self
            .request(Method::POST, &["v1", "machines", name, action])
            .timeout(REQUEST_TIMEOUT);
        let resp = self.send(req).await?;
        self.json("POST /v1/machines/{name}/{action}", resp).await
    }
}
