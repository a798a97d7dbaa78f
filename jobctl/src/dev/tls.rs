//! `jobctl dev --tls`: the cell's own CA (made once per data dir and kept, so an
//! exported `BORG_CA_CERT` stays good) and a certificate for the master and
//! each borglet, signed by it at every start, in `<data-dir>/tls/` (keys 0600).
//! The master serves https, borglets serve https and require the master's
//! client certificate, and every client trusts only this CA.

use crate::credentials::CA_CERT_FILE;
use anyhow::Context;
use borg_shared::tls::make::Ca;
use borg_shared::tls::Identity;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Every file the cell's components are given.
pub struct CellTls {
    pub ca: PathBuf,
    pub master: Identity,
    /// Borglet n (1-based) is `borglets[n - 1]`.
    pub borglets: Vec<Identity>,
}

pub fn ca_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CA_CERT_FILE)
}

/// Make (or keep) the CA and issue the certificates for a master on `listen`
/// and `borglets` borglets, all on this host.
pub fn prepare(data_dir: &Path, listen: SocketAddr, borglets: usize) -> anyhow::Result<CellTls> {
    let ca_file = ca_path(data_dir);
    let dir = ca_file.parent().context("the CA has a directory")?;
    let ca = Ca::load_or_generate(dir, "borg dev cell CA").context("the dev cell's CA")?;
    let listen_ip = listen.ip().to_string();
    let mut names = vec!["localhost", "127.0.0.1"];
    if !listen.ip().is_unspecified() && !names.contains(&listen_ip.as_str()) {
        names.push(&listen_ip);
    }
    let master = ca
        .write_identity(dir, "master", &names)
        .context("the master's certificate")?;
    let borglets = (1..=borglets)
        .map(|n| {
            let name = format!("m{n}");
            ca.write_identity(
                dir,
                &format!("borglet-{n}"),
                &[&name, "localhost", "127.0.0.1"],
            )
            .with_context(|| format!("borglet {n}'s certificate"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(CellTls {
        ca: ca_file,
        master,
        borglets,
    })
}

/// The flags giving a component its certificate, key and the CA.
pub fn flags(identity: &Identity, ca: &Path) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        identity.cert.display().to_string(),
        "--tls-key".into(),
        identity.key.display().to_string(),
        "--ca-cert".into(),
        ca.display().to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_ca_is_kept_and_keys_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let listen: SocketAddr = "127.0.0.1:7700".parse().unwrap();
        let first = prepare(dir.path(), listen, 2).unwrap();
        let ca = std::fs::read_to_string(&first.ca).unwrap();
        let again = prepare(dir.path(), listen, 3).unwrap();
        assert_eq!(std::fs::read_to_string(&again.ca).unwrap(), ca);
        assert_eq!(again.borglets.len(), 3);
        let keys = [dir.path().join("tls/ca.key"), again.master.key.clone()];
        for key in keys.iter().chain(again.borglets.iter().map(|b| &b.key)) {
            let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }
}
