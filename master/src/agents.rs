//! Which borglets the master admits, and the secrets it reads at start: the
//! cluster join token and the database URL, each from the environment or a
//! file, never from argv (anyone on the host can read /proc/PID/cmdline).
//!
//! A registration is admitted when it proves one of: the machine's own
//! credential (any address: the machine moved), or the join token for a new
//! name or the address the machine already has. Moving a known machine to
//! another address without its credential is refused, so nobody holding only the
//! join token can draw a machine's tasks to themselves.

use anyhow::Context;
use borg_shared::agent::{same_secret, sync_key};
use borg_shared::wire::RegisterMachine;
use borg_store::{Admission, KnownMachine};
use std::path::{Path, PathBuf};

/// Where the join token comes from.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AgentConfig {
    /// File holding the cluster join token new borglets present (or set
    /// `BORG_JOIN_TOKEN`). Without one the master admits only machines that
    /// prove their own credential, unless it runs `--insecure`.
    #[arg(long, env = "BORG_JOIN_TOKEN_FILE", value_name = "FILE")]
    pub join_token_file: Option<PathBuf>,
    /// The token itself: `BORG_JOIN_TOKEN`, else the file's content.
    #[arg(skip)]
    pub join_token: Option<String>,
}

impl AgentConfig {
    /// Fill `join_token` from `BORG_JOIN_TOKEN` or `--join-token-file`.
    pub fn resolve(&mut self) -> anyhow::Result<()> {
        if self.join_token.is_some() {
            return Ok(());
        }
        self.join_token = secret_from("BORG_JOIN_TOKEN", self.join_token_file.as_deref())?;
        Ok(())
    }
}

/// `var` from the environment when set and not empty, else the content of `file`.
pub fn secret_from(var: &str, file: Option<&Path>) -> anyhow::Result<Option<String>> {
    borg_shared::agent::secret_from_env_or_file(var, file).with_context(|| match file {
        Some(path) => format!("reading {}", path.display()),
        None => format!("reading {var}"),
    })
}

/// What the master admits with.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    pub join_token: Option<String>,
    /// Admit any registration (`--insecure`).
    pub insecure: bool,
}

/// What a registration presented.
#[derive(Debug, Clone, Copy, Default)]
pub struct Proof<'a> {
    /// `Authorization: Bearer`: the machine's credential.
    pub credential: Option<&'a str>,
    /// The `x-borg-join-token` header.
    pub join_token: Option<&'a str>,
}

/// Why a registration was refused: 401 (no valid proof) or 403 (a valid join
/// token that does not reach this far).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Unauthenticated(String),
    Forbidden(String),
}

impl Refusal {
    pub fn reason(&self) -> &str {
        match self {
            Refusal::Unauthenticated(r) | Refusal::Forbidden(r) => r,
        }
    }
}

/// The verdict: `Ok(Some(_))` issues `fresh` as the machine's new credential,
/// `Ok(None)` keeps the one it proved.
pub fn decide(
    gate: &Gate,
    proof: Proof<'_>,
    req: &RegisterMachine,
    known: Option<&KnownMachine>,
) -> Result<bool, Refusal> {
    if let (Some(known), Some(credential)) = (known, proof.credential) {
        let own = known
            .credential_hash
            .as_deref()
            .is_some_and(|h| same_secret(h, &sync_key(credential)));
        if own {
            return Ok(false);
        }
    }
    let joins = match (&gate.join_token, proof.join_token) {
        (Some(want), Some(got)) => same_secret(want, got),
        _ => false,
    };
    if gate.insecure {
        return Ok(true);
    }
    if joins {
        return match known {
            None => Ok(true),
            Some(k) if k.address == req.address => Ok(true),
            Some(k) => Err(Refusal::Forbidden(format!(
                "machine `{}` is registered at {}: registering it at {} needs its own credential",
                req.name, k.address, req.address
            ))),
        };
    }
    let what = match (proof.credential.is_some(), proof.join_token.is_some()) {
        (false, false) => "no credential and no join token presented",
        (true, false) => "the credential is not this machine's",
        (_, true) => "the join token is wrong",
    };
    if gate.join_token.is_none() && known.is_none() {
        return Err(Refusal::Forbidden(format!(
            "{what}, and this master has no join token configured to admit new machines \
             (--join-token-file or BORG_JOIN_TOKEN)"
        )));
    }
    Err(Refusal::Unauthenticated(what.to_string()))
}

/// Run [`decide`] as the store's admission check, issuing `fresh` when it says so.
pub fn admission(
    gate: &Gate,
    proof: Proof<'_>,
    req: &RegisterMachine,
    known: Option<&KnownMachine>,
    fresh: &str,
    verdict: &mut Option<Result<bool, Refusal>>,
) -> Admission {
    let v = decide(gate, proof, req, known);
    let admission = match &v {
        Ok(true) => Admission::Admit {
            credential_hash: Some(sync_key(fresh)),
        },
        Ok(false) => Admission::Admit {
            credential_hash: None,
        },
        Err(r) => Admission::Refuse {
            reason: r.reason().to_string(),
        },
    };
    *verdict = Some(v);
    admission
}

#[cfg(test)]
mod tests {
    use super::*;
    use borg_shared::{MachineId, MachineState};

    fn req(address: &str) -> RegisterMachine {
        serde_json::from_value(serde_json::json!({
            "name": "m1", "address": address,
            "capacity": {"cpu": 1000, "memory": 1, "disk": 0}
        }))
        .unwrap()
    }

    fn known(address: &str, credential: &str) -> KnownMachine {
        KnownMachine {
            id: MachineId::new(),
            address: address.into(),
            state: MachineState::Up,
            credential_hash: Some(sync_key(credential)),
        }
    }

    #[test]
    fn who_may_register_what() {
        let gate = Gate {
            join_token: Some("join".into()),
            insecure: false,
        };
        let join = Proof {
            credential: None,
            join_token: Some("join"),
        };
        let own = Proof {
            credential: Some("c1"),
            join_token: None,
        };
        let a = "http://10.0.0.1:7701";
        let b = "http://10.0.0.2:7701";
        let m = known(a, "c1");
        assert_eq!(decide(&gate, join, &req(a), None), Ok(true), "new name");
        assert_eq!(
            decide(&gate, join, &req(a), Some(&m)),
            Ok(true),
            "same address"
        );
        assert!(matches!(
            decide(&gate, join, &req(b), Some(&m)),
            Err(Refusal::Forbidden(_))
        ));
        assert_eq!(
            decide(&gate, own, &req(b), Some(&m)),
            Ok(false),
            "moved with its credential"
        );
        let stolen = Proof {
            credential: Some("c2"),
            join_token: Some("join"),
        };
        assert!(decide(&gate, stolen, &req(b), Some(&m)).is_err());
        assert!(matches!(
            decide(&gate, Proof::default(), &req(a), None),
            Err(Refusal::Unauthenticated(_))
        ));
        let wrong = Proof {
            credential: None,
            join_token: Some("nope"),
        };
        assert!(matches!(
            decide(&gate, wrong, &req(a), Some(&m)),
            Err(Refusal::Unauthenticated(_))
        ));
        let closed = Gate::default();
        assert!(matches!(
            decide(&closed, join, &req(a), None),
            Err(Refusal::Forbidden(_))
        ));
        assert_eq!(decide(&closed, own, &req(b), Some(&m)), Ok(false));
        let open = Gate {
            join_token: None,
            insecure: true,
        };
        assert_eq!(decide(&open, Proof::default(), &req(b), Some(&m)), Ok(true));
    }
}
