//! Agent trust: the secrets a borglet and the master prove themselves with.
//!
//! A borglet joins with the cluster's join token and is given a per-machine
//! credential `C` (random), which it keeps on disk. The master stores only
//! `sync_key(C)` (a SHA-256): the borglet presents `C` to the master (registration,
//! nudges), and the master presents `sync_key(C)` to the borglet (syncs, log
//! reads). A copy of the master's table lets nobody pose as a borglet.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Header carrying the cluster join token on `POST /v1/machines`.
pub const JOIN_TOKEN_HEADER: &str = "x-borg-join-token";

/// A fresh random secret (the same kind as API tokens).
pub use crate::auth::new_secret;

/// What the master keeps of a machine credential, and presents to its borglet.
pub fn sync_key(credential: &str) -> String {
    hex::encode(Sha256::digest(credential.as_bytes()))
}

/// Constant-time equality of two secrets (their lengths are not secret).
pub fn same_secret(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(value: Option<&str>) -> Option<&str> {
    let token = value?.strip_prefix("Bearer ")?.trim();
    (!token.is_empty()).then_some(token)
}

/// A secret read from a file: surrounding whitespace (a trailing newline) dropped.
/// An empty file is an error, never an empty secret.
pub fn read_secret_file(path: &std::path::Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(secret.to_string())
}

/// A secret that never comes from argv: the environment variable `var` when set
/// and not blank, else the content of `file`, else None.
pub fn secret_from_env_or_file(
    var: &str,
    file: Option<&std::path::Path>,
) -> std::io::Result<Option<String>> {
    if let Some(v) = std::env::var(var).ok().filter(|v| !v.trim().is_empty()) {
        return Ok(Some(v.trim().to_string()));
    }
    file.map(read_secret_file).transpose()
}

/// Write `secret` to `path` with mode 0600, atomically (a temp file renamed over
/// it), so a crash never leaves half a secret.
pub fn write_secret_file(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_keys_are_their_hash() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), crate::auth::SECRET_PREFIX.len() + 64);
        assert_eq!(sync_key(&a), sync_key(&a));
        assert_ne!(sync_key(&a), a);
        assert!(same_secret(&a, &a.clone()) && !same_secret(&a, &b));
        assert_eq!(bearer(Some("Bearer xyz")), Some("xyz"));
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(Some("Basic xyz")), None);
    }

    #[test]
    fn secret_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("borg-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("credential");
        write_secret_file(&path, "s3cret").unwrap();
        write_secret_file(&path, "s3cret2").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_secret_file(&path).unwrap(), "s3cret2");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_secret_file(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
