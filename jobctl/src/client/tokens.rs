//! Admin calls: API tokens and the audit log.

use super::{Client, ClientError, REQUEST_TIMEOUT};
use borg_shared::auth::{CreateToken, CreatedToken, Role, TokenList, TokenView};
use reqwest::Method;

impl Client {
    /// `POST /v1/tokens`: the answer holds the secret, shown this once.
    pub async fn create_token(
        &self,
        name: &str,
        owner: &str,
        role: Role,
    ) -> Result<CreatedToken, ClientError> {
        let body = CreateToken {
            name: name.to_string(),
            owner: owner.to_string(),
            role,
        };
        let req = self
            .request(Method::POST, &["v1", "tokens"])
            .timeout(REQUEST_TIMEOUT)
            .json(&body);
        let resp = self.send(req).await?;
        self.json("POST /v1/tokens", resp).await
    }

    /// `GET /v1/tokens`.
    pub async fn tokens(&self) -> Result<TokenList, ClientError> {
        let req = self
            .request(Method::GET, &["v1", "tokens"])
            .timeout(REQUEST_TIMEOUT);
        let resp = self.send(req).await?;
        self.json("GET /v1/tokens", resp).await
    }

    /// `DELETE /v1/tokens/{token}`.
    pub async fn revoke_token(&self, name: &str) -> Result<TokenView, ClientError> {
        let req = self
            .request(Method::DELETE, &["v1", "tokens", name])
            .timeout(REQUEST_TIMEOUT);
        let resp = self.send(req).await?;
        self.json("DELETE /v1/tokens/{token}", resp).await
    }
}
