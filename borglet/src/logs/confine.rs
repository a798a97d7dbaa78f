//! Log files are opened only where they belong: inside the attempt's own
//! sandbox. A task can write its sandbox, so it could replace `stdout` with a
//! symlink to any file the borglet (often root) can read; the path is
//! canonicalized and must stay under the canonical sandbox, and the file is
//! opened without following a final symlink and must be a regular file.

use std::io;
use std::path::Path;
use tokio::fs::File;

/// Why a log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenLogError {
    #[error("no such log")]
    NotFound,
    #[error("the log is not a regular file inside the attempt's sandbox")]
    OutsideSandbox,
    #[error(transparent)]
    Io(io::Error),
}

fn io_error(e: io::Error) -> OpenLogError {
    if e.kind() == io::ErrorKind::NotFound {
        OpenLogError::NotFound
    } else {
        OpenLogError::Io(e)
    }
}

/// Open `file` (a path inside `sandbox`) for reading, if it really lies there.
pub async fn open_log(sandbox: &Path, file: &Path) -> Result<File, OpenLogError> {
    let sandbox = tokio::fs::canonicalize(sandbox).await.map_err(io_error)?;
    let real = tokio::fs::canonicalize(file).await.map_err(io_error)?;
    if !real.starts_with(&sandbox) || real == sandbox {
        tracing::warn!(path = %file.display(), target = %real.display(), "log outside its sandbox refused");
        return Err(OpenLogError::OutsideSandbox);
    }
    let opened = tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&real)
        .await
        .map_err(|e| match e.raw_os_error() {
            // A symlink put there since the check.
            Some(libc::ELOOP) => OpenLogError::OutsideSandbox,
            _ => io_error(e),
        })?;
    let meta = opened.metadata().await.map_err(OpenLogError::Io)?;
    if !meta.is_file() {
        return Err(OpenLogError::OutsideSandbox);
    }
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_regular_files_inside_the_sandbox_open() {
        let root = tempfile::tempdir().unwrap();
        let sandbox = root.path().join("sandbox");
        std::fs::create_dir(&sandbox).unwrap();
        let secret = root.path().join("secret");
        std::fs::write(&secret, "root's").unwrap();
        std::fs::write(sandbox.join("stdout"), "hello").unwrap();
        std::os::unix::fs::symlink(&secret, sandbox.join("stderr")).unwrap();
        std::os::unix::fs::symlink("../secret", sandbox.join("rel")).unwrap();
        std::fs::create_dir(sandbox.join("dir")).unwrap();

        assert!(open_log(&sandbox, &sandbox.join("stdout")).await.is_ok());
        for bad in ["stderr", "rel", "dir", "../secret"] {
            let r = open_log(&sandbox, &sandbox.join(bad)).await;
            assert!(
                matches!(r, Err(OpenLogError::OutsideSandbox)),
                "{bad}: {r:?}"
            );
        }
        assert!(matches!(
            open_log(&sandbox, &sandbox.join("missing")).await,
            Err(OpenLogError::NotFound)
        ));
    }
}
