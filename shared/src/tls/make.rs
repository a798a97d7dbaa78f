//! Making a cluster CA and the certificates it signs (rcgen), for `jobctl dev
//! --tls` and tests. A real cell can use these or any CA (the README shows
//! openssl). Keys are written with mode 0600.

use super::{Identity, TlsError};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

fn make(e: rcgen::Error) -> TlsError {
    TlsError::Make(e.to_string())
}

/// A CA: its certificate (PEM) and the key that signs.
pub struct Ca {
    name: String,
    key: KeyPair,
    pub cert_pem: String,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl Ca {
    /// A new CA whose subject is `name`.
    pub fn generate(name: &str) -> Result<Ca, TlsError> {
        let key = KeyPair::generate().map_err(make)?;
        let cert = ca_params(name).self_signed(&key).map_err(make)?;
        Ok(Ca {
            name: name.to_string(),
            key,
            cert_pem: cert.pem(),
        })
    }

    /// The CA kept in `dir` (`ca.pem`, `ca.key`) under `name`, else a new one written there.
    pub fn load_or_generate(dir: &Path, name: &str) -> Result<Ca, TlsError> {
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
        if cert.is_file() && key.is_file() {
            let read = |path: &Path, what| {
                std::fs::read_to_string(path).map_err(|e| TlsError::Read {
                    what,
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
            };
            let key_pem = read(&key, "CA key")?;
            return Ok(Ca {
                name: name.to_string(),
                key: KeyPair::from_pem(&key_pem).map_err(|e| TlsError::Invalid {
                    what: "CA key",
                    path: key.clone(),
                    reason: e.to_string(),
                })?,
                cert_pem: read(&cert, "CA certificate")?,
            });
        }
        let ca = Ca::generate(name)?;
        create_dir(dir)?;
        write_private(&key, &ca.key.serialize_pem())?;
        write_public(&cert, &ca.cert_pem)?;
        Ok(ca)
    }

    /// A certificate for `names` (DNS names or IP addresses; the first is its
    /// subject), good as a server's and as a client's: `(cert PEM, key PEM)`.
    pub fn issue(&self, names: &[&str]) -> Result<(String, String), TlsError> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .map_err(make)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names.first().copied().unwrap_or("borg"));
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(make)?;
        // Rebuilt from the same subject and key, the issuer matches the CA certificate.
        let issuer = Issuer::new(ca_params(&self.name), &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(make)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// [`Ca::issue`] written to `dir/<stem>.pem` and `dir/<stem>.key` (0600).
    pub fn write_identity(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
    ) -> Result<Identity, TlsError> {
        let (cert_pem, key_pem) = self.issue(names)?;
        create_dir(dir)?;
        let identity = Identity {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        };
        write_private(&identity.key, &key_pem)?;
        write_public(&identity.cert, &cert_pem)?;
        Ok(identity)
    }

    /// The CA certificate written to `path`.
    pub fn write_cert(&self, path: &Path) -> Result<PathBuf, TlsError> {
        write_public(path, &self.cert_pem)?;
        Ok(path.to_path_buf())
    }
}

fn create_dir(dir: &Path) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

fn write_public(path: &Path, text: &str) -> Result<(), TlsError> {
    std::fs::write(path, text).map_err(|source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Write a key: 0600 from its creation, renamed into place.
fn write_private(path: &Path, text: &str) -> Result<(), TlsError> {
    crate::agent::write_secret_file(path, text.trim_end()).map_err(|source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    })
}
