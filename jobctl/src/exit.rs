//! jobctl's exit codes, one place: scripts branch on them.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | done; the job (if waited for) succeeded or runs |
//! | 1 | the job failed or was killed, or any other error |
//! | 2 | usage: a bad flag or argument (clap) |
//! | 3 | not found: no such job, task or machine |
//! | 4 | the master is unreachable, or TLS with it failed (the line names the URL tried) |

use crate::client::ClientError;
use reqwest::StatusCode;

pub const OK: u8 = 0;
pub const FAILED: u8 = 1;
pub const USAGE: u8 = 2;
pub const NOT_FOUND: u8 = 3;
pub const UNREACHABLE: u8 = 4;

/// A job that ended badly: its line is the error, the exit code is 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JobFailed(pub String);

/// The exit code for an error from any command.
pub fn code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            return match c {
                ClientError::Unreachable { .. }
                | ClientError::Timeout { .. }
                | ClientError::Tls { .. } => UNREACHABLE,
                ClientError::Api { status, .. } | ClientError::Status { status, .. }
                    if *status == StatusCode::NOT_FOUND =>
                {
                    NOT_FOUND
                }
                ClientError::BadUrl { .. } => USAGE,
                _ => FAILED,
            };
        }
    }
    FAILED
}

#[cfg(test)]
mod tests {
    use super::*;
    use borg_shared::ApiError;

    #[test]
    fn errors_map_to_codes() {
        let unreachable = anyhow::Error::new(ClientError::Unreachable {
            master: "http://h:1".into(),
        });
        assert_eq!(code(&unreachable), UNREACHABLE);
        let missing = anyhow::Error::new(ClientError::Api {
            status: StatusCode::NOT_FOUND,
            error: ApiError {
                code: "not_found".into(),
                message: "no job named x".into(),
                field: None,
            },
        })
        .context("waiting");
        assert_eq!(code(&missing), NOT_FOUND);
        assert_eq!(code(&anyhow::Error::new(JobFailed("x".into()))), FAILED);
        assert_eq!(code(&anyhow::anyhow!("other")), FAILED);
    }
}
