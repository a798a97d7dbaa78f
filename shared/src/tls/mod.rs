//! TLS for every connection of a cell, in one place: reading the cluster CA and
//! a component's certificate and key (PEM files), the rustls configurations built
//! from them, the TLS listener the master and the borglet serve on
//! ([`TlsListener`]), the plain words for a failed handshake ([`failure`]), and
//! the making of a CA and certificates ([`make`], used by `jobctl dev --tls` and
//! tests).
//!
//! Who checks what: every client (jobctl, the borglet's registration and nudges,
//! the master's poller) trusts only the cluster CA given with `--ca-cert` and
//! checks the server's name against its certificate. A borglet given
//! `--ca-cert` with its own certificate requires the master to present a client
//! certificate chained to that CA (mutual TLS): it runs whatever a sync sends.
//! The master asks clients for no certificate (they carry tokens).

mod listener;
pub mod make;

pub use listener::TlsListener;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why TLS could not be set up, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the {what} {}: {reason}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the {what} {} holds no PEM {kind}", path.display())]
    Empty {
        what: &'static str,
        path: PathBuf,
        kind: &'static str,
    },
    #[error("the {what} {} is not usable: {reason}", path.display())]
    Invalid {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("making certificates: {0}")]
    Make(String),
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A component's own certificate (chain, PEM) and private key (PEM) files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Identity {
    /// The pair from `--tls-cert`/`--tls-key`: both or neither.
    pub fn from_flags(
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Option<Identity>, &'static str> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(Identity {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })),
            (None, None) => Ok(None),
            _ => Err("--tls-cert and --tls-key go together: give both or neither"),
        }
    }

    fn load(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let chain = certs(&self.cert, "certificate")?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
                what: "private key",
                path: self.key.clone(),
                kind: "private key",
            },
            e => TlsError::Read {
                what: "private key",
                path: self.key.clone(),
                reason: e.to_string(),
            },
        })?;
        Ok((chain, key))
    }
}

/// The one crypto provider of every configuration (ring: no C toolchain beyond cc).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |e: rustls::pki_types::pem::Error| TlsError::Read {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_path_buf(),
            kind: "certificate",
        });
    }
    Ok(certs)
}

fn roots(ca: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca, "CA certificate")? {
        roots.add(cert).map_err(|e| TlsError::Invalid {
            what: "CA certificate",
            path: ca.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

/// The server side: `identity` presented to every client; with `client_ca`, a
/// client must present a certificate chained to it (mutual TLS).
pub fn server_config(
    identity: &Identity,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let (chain, key) = identity.load()?;
    let invalid = |reason: String| TlsError::Invalid {
        what: "certificate and key",
        path: identity.cert.clone(),
        reason,
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
                    .build()
                    .map_err(|e| TlsError::Invalid {
                        what: "CA certificate",
                        path: ca.to_path_buf(),
                        reason: e.to_string(),
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| invalid(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The client side: trust only the cluster CA `ca`; present `identity` when a
/// server asks for a client certificate. Give it to reqwest with
/// `ClientBuilder::use_preconfigured_tls`.
pub fn client_config(ca: &Path, identity: Option<&Identity>) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Make(e.to_string()))?
        .with_root_certificates(roots(ca)?);
    match identity {
        Some(identity) => {
            let (chain, key) = identity.load()?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Invalid {
                    what: "certificate and key",
                    path: identity.cert.clone(),
                    reason: e.to_string(),
                })
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// If a failed request failed in TLS, what went wrong, in a few words a user
/// can act on (`the master's certificate is not signed by the cluster CA`).
pub fn failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(describe(tls));
        }
        // io::Error's `source` skips the error it wraps: step into it instead.
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

fn describe(e: &rustls::Error) -> String {
    use rustls::{CertificateError, Error};
    match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer)
        | Error::InvalidCertificate(CertificateError::BadSignature) => {
            "its certificate is not signed by the cluster CA (--ca-cert, BORG_CA_CERT)".into()
        }
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            "its certificate does not name this host".into()
        }
        Error::InvalidCertificate(CertificateError::Expired)
        | Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
            "its certificate has expired".into()
        }
        Error::InappropriateMessage { .. } | Error::InvalidMessage(_) => {
            "it does not speak TLS (a plain http server?)".into()
        }
        Error::AlertReceived(alert) => {
            format!(
                "it refused the TLS handshake ({alert:?}; a client certificate from another CA?)"
            )
        }
        e => format!("TLS failed: {e}"),
    }
}

#[cfg(test)]
mod tests;
