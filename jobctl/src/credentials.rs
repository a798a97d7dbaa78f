//! Which token jobctl sends: `--token` or `BORG_TOKEN`, else the file
//! `~/.config/borg/token` (`$XDG_CONFIG_HOME/borg/token`), else, run where a
//! dev cell was started (its default data dir `.borg-dev` in this directory or
//! one above), that cell's `admin.token`.

use std::path::{Path, PathBuf};

/// The dev cell's admin token, in its data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// `jobctl dev`'s default data dir, relative to where it was started.
pub const DEV_DATA_DIR: &str = ".borg-dev";

/// The token to send, if any is found.
pub fn resolve(given: Option<String>) -> Option<String> {
    let given = given
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    given
        .or_else(|| config_file().and_then(|f| read(&f)))
        .or_else(|| {
            let cwd = std::env::current_dir().ok()?;
            dev_cell_token_file(&cwd).and_then(|f| read(&f))
        })
}

/// `$XDG_CONFIG_HOME/borg/token`, else `$HOME/.config/borg/token`.
fn config_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("borg").join("token"))
}

/// The nearest `.borg-dev/admin.token` from `dir` upwards.
pub fn dev_cell_token_file(dir: &Path) -> Option<PathBuf> {
    dev_cell_file(dir, Path::new(ADMIN_TOKEN_FILE))
}

/// The dev cell's CA certificate, in its data dir (`jobctl dev --tls`).
pub const CA_CERT_FILE: &str = "tls/ca.pem";
/// The URL the dev cell's master serves, in its data dir.
pub const MASTER_URL_FILE: &str = "master.url";

/// The nearest `.borg-dev/<name>` from `dir` upwards.
pub fn dev_cell_file(dir: &Path, name: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|d| d.join(DEV_DATA_DIR).join(name))
        .find(|f| f.is_file())
}

/// The master URL(s) to call: `--master` or `BORG_MASTER`, else the URL of a
/// dev cell started in this directory or one above, else the default.
pub fn master(given: Option<String>) -> String {
    given
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .or_else(|| {
            let cwd = std::env::current_dir().ok()?;
            dev_cell_file(&cwd, Path::new(MASTER_URL_FILE)).and_then(|f| read(&f))
        })
        .unwrap_or_else(|| crate::DEFAULT_MASTER.to_string())
}

/// The CA to trust: `--ca-cert` or `BORG_CA_CERT`, else the CA of a dev cell
/// started with `--tls` in this directory or one above.
pub fn ca_cert(given: Option<PathBuf>) -> Option<PathBuf> {
    given.filter(|p| !p.as_os_str().is_empty()).or_else(|| {
        let cwd = std::env::current_dir().ok()?;
        dev_cell_file(&cwd, Path::new(CA_CERT_FILE))
    })
}

/// A token file's first line, if it has one.
fn read(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let token = text.lines().next()?.trim().to_string();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dev_cells_token_is_found_from_below_its_directory() {
        let top = tempfile::tempdir().unwrap();
        let below = top.path().join("a").join("b");
        std::fs::create_dir_all(&below).unwrap();
        assert_eq!(dev_cell_token_file(&below), None);
        let data = top.path().join(DEV_DATA_DIR);
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join(ADMIN_TOKEN_FILE), "borg_abc\n").unwrap();
        let found = dev_cell_token_file(&below).unwrap();
        assert_eq!(found, data.join(ADMIN_TOKEN_FILE));
        assert_eq!(read(&found).as_deref(), Some("borg_abc"));
    }

    #[test]
    fn a_dev_cells_url_and_ca_are_found_from_below_its_directory() {
        let top = tempfile::tempdir().unwrap();
        let below = top.path().join("a");
        std::fs::create_dir_all(top.path().join(DEV_DATA_DIR).join("tls")).unwrap();
        std::fs::create_dir_all(&below).unwrap();
        assert_eq!(dev_cell_file(&below, Path::new(CA_CERT_FILE)), None);
        let ca = top.path().join(DEV_DATA_DIR).join(CA_CERT_FILE);
        std::fs::write(&ca, "pem").unwrap();
        assert_eq!(dev_cell_file(&below, Path::new(CA_CERT_FILE)), Some(ca));
    }

    #[test]
    fn a_given_token_wins() {
        assert_eq!(resolve(Some(" borg_x ".into())).as_deref(), Some("borg_x"));
    }
}
