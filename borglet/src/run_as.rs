//! Which user tasks run as. A borglet running as root runs them as an
//! unprivileged user (`--run-as`, `nobody` by default), so a task cannot touch
//! the machine or the other tasks; any other borglet runs them as itself.

use serde::{Deserialize, Serialize};

/// A user and its primary group, as a task is switched to them before exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RunAsError {
    #[error("no user `{0}` on this machine")]
    NoSuchUser(String),
    #[error("looking up user `{name}`: {source}")]
    Lookup { name: String, source: nix::Error },
    #[error("--run-as {0} needs a borglet running as root")]
    NotRoot(String),
}

/// The user for tasks: `wanted` (a name), or by default `nobody` when root and
/// the borglet's own user otherwise (`None`: no switch).
pub fn resolve(wanted: Option<&str>) -> Result<Option<RunAs>, RunAsError> {
    let root = nix::unistd::geteuid().is_root();
    let name = match (wanted, root) {
        (Some(name), _) => name,
        (None, true) => "nobody",
        (None, false) => return Ok(None),
    };
    let user = nix::unistd::User::from_name(name)
        .map_err(|source| RunAsError::Lookup {
            name: name.to_string(),
            source,
        })?
        .ok_or_else(|| RunAsError::NoSuchUser(name.to_string()))?;
    let me = nix::unistd::geteuid();
    if user.uid == me {
        return Ok(None);
    }
    if !root {
        return Err(RunAsError::NotRoot(name.to_string()));
    }
    Ok(Some(RunAs {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_users_are_refused_and_oneself_needs_no_switch() {
        assert!(matches!(
            resolve(Some("no-such-user-here")),
            Err(RunAsError::NoSuchUser(_))
        ));
        let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap();
        assert_eq!(resolve(Some(&me.name)).unwrap(), None);
        let default = resolve(None).unwrap();
        if nix::unistd::geteuid().is_root() {
            assert!(
                default.is_some_and(|u| u.uid != 0),
                "root runs tasks as nobody"
            );
        } else {
            assert_eq!(default, None);
        }
    }
}
