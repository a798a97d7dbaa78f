//! This machine's proof of identity. The join token (from `BORG_JOIN_TOKEN` or
//! `--join-token-file`) gets it registered; the master answers with a
//! per-machine credential, kept in `<data dir>/credential` (mode 0600) so a
//! restarted borglet still has it. The borglet presents the credential to the
//! master, and accepts a sync or a log read only with its sync key
//! (`borg_shared::agent::sync_key`), which only the master has.

use anyhow::Context;
use borg_shared::agent::{read_secret_file, same_secret, sync_key, write_secret_file};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

pub const FILE: &str = "credential";

#[derive(Debug)]
pub struct Credentials {
    path: PathBuf,
    join_token: Option<String>,
    /// The credential and its sync key; None until the first registration.
    current: RwLock<Option<(String, String)>>,
}

impl Credentials {
    /// The credential a previous run kept in `data_dir`, if any.
    pub fn load(data_dir: &Path, join_token: Option<String>) -> anyhow::Result<Self> {
        let path = data_dir.join(FILE);
        let current = if path.exists() {
            let c = read_secret_file(&path)
                .with_context(|| format!("reading the machine credential {}", path.display()))?;
            let key = sync_key(&c);
            Some((c, key))
        } else {
            None
        };
        Ok(Credentials {
            path,
            join_token,
            current: RwLock::new(current),
        })
    }

    pub fn join_token(&self) -> Option<&str> {
        self.join_token.as_deref()
    }

    pub fn credential(&self) -> Option<String> {
        self.read().as_ref().map(|(c, _)| c.clone())
    }

    /// Keep the credential the master issued: on disk first, so a crash right
    /// after never leaves the borglet with one the master no longer knows.
    pub fn replace(&self, credential: &str) -> anyhow::Result<()> {
        write_secret_file(&self.path, credential)
            .with_context(|| format!("writing the machine credential {}", self.path.display()))?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) =
            Some((credential.to_string(), sync_key(credential)));
        Ok(())
    }

    /// Whether an `Authorization` header value carries this machine's sync key.
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        let Some(token) = borg_shared::agent::bearer(authorization) else {
            return false;
        };
        self.read()
            .as_ref()
            .is_some_and(|(_, key)| same_secret(key, token))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<(String, String)>> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_credential_survives_a_restart_and_only_its_key_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let first = Credentials::load(dir.path(), Some("join".into())).unwrap();
        assert!(first.credential().is_none());
        assert!(!first.accepts(Some("Bearer anything")));
        first.replace("c1").unwrap();
        let again = Credentials::load(dir.path(), None).unwrap();
        assert_eq!(again.credential().as_deref(), Some("c1"));
        assert!(again.accepts(Some(&format!("Bearer {}", sync_key("c1")))));
        assert!(
            !again.accepts(Some("Bearer c1")),
            "the credential itself is not the key"
        );
        assert!(!again.accepts(None));
    }
}
