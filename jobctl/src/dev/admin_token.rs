//! The dev cell's admin token: made once per data dir (kept across restarts,
//! so an exported BORG_TOKEN stays good), written to `<data-dir>/admin.token`
//! with mode 0600, and handed to the master as its bootstrap token by file
//! (`--bootstrap-token-file`: the path on argv, never the secret).

use crate::credentials::ADMIN_TOKEN_FILE;
use anyhow::Context;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(ADMIN_TOKEN_FILE)
}

/// The cell's admin secret: the one in `<data-dir>/admin.token`, else a new one written there.
pub fn ensure(data_dir: &Path) -> anyhow::Result<String> {
    let file = path(data_dir);
    if let Ok(text) = std::fs::read_to_string(&file) {
        let secret = text.trim().to_string();
        if secret.len() >= 16 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("setting the mode of {}", file.display()))?;
            return Ok(secret);
        }
    }
    let secret = borg_shared::auth::new_secret().context("making the admin token")?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&file)
        .with_context(|| format!("creating {}", file.display()))?;
    writeln!(f, "{secret}").with_context(|| format!("writing {}", file.display()))?;
    // A file that was there (empty or cut short) kept its mode.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting the mode of {}", file.display()))?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = ensure(dir.path()).unwrap();
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(ensure(dir.path()).unwrap(), a);
    }
}
