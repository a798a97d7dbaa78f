//! The master's TLS flags: its own certificate for serving HTTPS, and the
//! cluster CA its client to borglets trusts (presenting the master's own
//! certificate as a client certificate: borglets given the CA require it).
//! The files are read by `borg_shared::tls`.

use anyhow::Context;
use borg_shared::tls::{self, Identity};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsConfig {
    /// Serve the API over HTTPS with this certificate (PEM, leaf first); with
    /// `--tls-key`. Without both, the API is plain http.
    #[arg(long, env = "BORG_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `--tls-cert`.
    #[arg(long, env = "BORG_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA (PEM): borglets' certificates must chain to it (https
    /// borglet addresses trust nothing else), and the master presents
    /// `--tls-cert` to them as its client certificate.
    #[arg(long, env = "BORG_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

impl TlsConfig {
    fn identity(&self) -> anyhow::Result<Option<Identity>> {
        Identity::from_flags(self.tls_cert.as_deref(), self.tls_key.as_deref())
            .map_err(anyhow::Error::msg)
    }

    /// The API's TLS configuration, if it serves HTTPS (clients show no certificate).
    pub fn server(&self) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
        match self.identity()? {
            Some(identity) => Ok(Some(
                tls::server_config(&identity, None).context("--tls-cert/--tls-key")?,
            )),
            None => Ok(None),
        }
    }

    /// `builder` set to trust only the cluster CA and to present the master's
    /// certificate, when `--ca-cert` is given; else as it is.
    pub fn client(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> anyhow::Result<reqwest::ClientBuilder> {
        let Some(ca) = &self.ca_cert else {
            if self.tls_cert.is_some() {
                tracing::warn!("--tls-cert without --ca-cert: https borglets are checked against the public roots and get no client certificate");
            }
            return Ok(builder);
        };
        let identity = self.identity()?;
        let config = tls::client_config(ca, identity.as_ref()).context("--ca-cert")?;
        Ok(builder.use_preconfigured_tls(config))
    }
}
