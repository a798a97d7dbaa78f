//! The dev cell's agent secret: the cluster join token, made on the first start
//! and kept in `<data-dir>/join.token` (mode 0600), so a borglet started by hand
//! can join the cell (`borglet --join-token-file <data-dir>/join.token`). The
//! components get it, and the database URL, in their environment, never in argv.

use anyhow::Context;
use std::path::Path;

pub const JOIN_TOKEN_FILE: &str = "join.token";

/// The cell's join token: the one kept in `data_dir`, or a new one written there.
pub fn join_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(JOIN_TOKEN_FILE);
    if path.exists() {
        return borg_shared::agent::read_secret_file(&path)
            .with_context(|| format!("reading {}", path.display()));
    }
    let token = borg_shared::agent::new_secret().context("making a join token")?;
    borg_shared::agent::write_secret_file(&path, &token)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

/// The environment each kind of component gets.
pub fn component_env(
    component: &str,
    database_url: &str,
    join_token: &str,
) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if component != "borglet" {
        env.push(("DATABASE_URL".to_string(), database_url.to_string()));
    }
    if component != "borgscheduler" {
        env.push(("BORG_JOIN_TOKEN".to_string(), join_token.to_string()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_join_token_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = join_token(dir.path()).unwrap();
        assert_eq!(join_token(dir.path()).unwrap(), first);
        let mode = std::fs::metadata(dir.path().join(JOIN_TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let env = component_env("borglet", "postgres://u:p@h/d", &first);
        assert!(
            env.iter().all(|(k, _)| k != "DATABASE_URL"),
            "borglets need no database"
        );
        let env = component_env("borgmaster", "postgres://u:p@h/d", &first);
        assert_eq!(env.len(), 2);
    }
}
