//! A service's health check as users write it (`task.health`), its validation and
//! defaults, and its resolution into what a borglet probes (`wire::HealthProbe`):
//! the port index becomes the attempt's host port.

use super::{opt_duration, SpecError};
use crate::states::JobKind;
use crate::wire::{HealthProbe, ProbeKind};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_FAILURES: u32 = 3;
pub const DEFAULT_INITIAL_DELAY: Duration = Duration::ZERO;

const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
const MAX_INITIAL_DELAY: Duration = Duration::from_secs(3600);
const MAX_FAILURES: u32 = 100;
const MAX_PATH: usize = 1024;

/// `http`, `tcp` or `exec` (exactly one), how often, how long each probe may
/// take, how many failures in a row restart the task, and how long after a
/// run starts the first probe waits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecProbe>,
    /// Between probes (default 10s).
    #[schema(value_type = String, example = "10s")]
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<Duration>,
    /// One probe's limit (default 2s, or the interval if shorter); at most `interval`.
    #[schema(value_type = String, example = "2s")]
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Failed probes in a row that restart the task (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    /// Wait after each start of the task before the first probe (default 0s).
    #[schema(value_type = String, example = "30s")]
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub initial_delay: Option<Duration>,
}

/// `GET http://127.0.0.1:PORT/PATH`: healthy on a 2xx or 3xx answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    pub path: String,
    /// Index into the task's requested ports (`BORG_PORT0` is 0).
    pub port: u16,
}

/// A TCP connect to `127.0.0.1:PORT`: healthy once it is accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpProbe {
    /// Index into the task's requested ports (`BORG_PORT0` is 0).
    pub port: u16,
}

/// A command (argv, no shell) run in the task's sandbox, environment and
/// cgroup, as its user: healthy when it exits 0 within the timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecProbe {
    pub command: Vec<String>,
}

fn invalid(field: &str, message: impl Into<String>) -> SpecError {
    SpecError::invalid(format!("task.health{field}"), message)
}

impl HealthCheck {
    pub fn interval(&self) -> Duration {
        self.interval.unwrap_or(DEFAULT_INTERVAL)
    }
    /// Given, or 2s but never more than the interval.
    pub fn timeout(&self) -> Duration {
        self.timeout
            .unwrap_or_else(|| DEFAULT_TIMEOUT.min(self.interval()))
    }
    pub fn failures(&self) -> u32 {
        self.failures.unwrap_or(DEFAULT_FAILURES)
    }
    pub fn initial_delay(&self) -> Duration {
        self.initial_delay.unwrap_or(DEFAULT_INITIAL_DELAY)
    }

    /// Checks beyond the shape: one probe, ports the task has, sane times.
    pub(super) fn validate(&self, kind: JobKind, ports: u16) -> Result<(), SpecError> {
        if kind != JobKind::Service {
            return Err(invalid(
                "",
                "not supported yet: health checks are for services; a batch task is not probed",
            ));
        }
        let given = [self.http.is_some(), self.tcp.is_some(), self.exec.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(invalid("", "give exactly one of http, tcp or exec"));
        }
        let port_ok = |field: &str, port: u16| {
            if port >= ports {
                return Err(invalid(
                    field,
                    format!(
                        "port {port} is an index into the task's ports, and it asks for {ports} (task.resources.ports)"
                    ),
                ));
            }
            Ok(())
        };
        if let Some(http) = &self.http {
            port_ok(".http.port", http.port)?;
            let p = &http.path;
            if !p.starts_with('/')
                || p.len() > MAX_PATH
                || p.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(invalid(
                    ".http.path",
                    format!("must start with '/', hold no spaces or control characters, and be at most {MAX_PATH} bytes"),
                ));
            }
        }
        if let Some(tcp) = &self.tcp {
            port_ok(".tcp.port", tcp.port)?;
        }
        if let Some(exec) = &self.exec {
            match exec.command.first() {
                None => return Err(invalid(".exec.command", "must not be empty")),
                Some(argv0) if argv0.trim().is_empty() => {
                    return Err(invalid(".exec.command[0]", "the program must not be empty"))
                }
                _ => {}
            }
            if let Some(i) = exec.command.iter().position(|a| a.contains('\0')) {
                return Err(invalid(
                    &format!(".exec.command[{i}]"),
                    "must not contain NUL bytes",
                ));
            }
        }
        let interval = self.interval();
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) {
            return Err(invalid(".interval", "must be between 100ms and 1h"));
        }
        let timeout = self.timeout();
        if timeout.is_zero() || timeout > interval {
            return Err(invalid(
                ".timeout",
                format!(
                    "must be more than 0 and at most the interval ({})",
                    humantime::format_duration(interval)
                ),
            ));
        }
        if !(1..=MAX_FAILURES).contains(&self.failures()) {
            return Err(invalid(
                ".failures",
                format!("must be between 1 and {MAX_FAILURES}"),
            ));
        }
        if self.initial_delay() > MAX_INITIAL_DELAY {
            return Err(invalid(".initial_delay", "must be at most 1h"));
        }
        Ok(())
    }

    /// What the borglet probes for an attempt holding host `ports`; `None` when a
    /// port index has no port (a spec that passed validation always has it).
    pub fn resolve(&self, ports: &[u16]) -> Option<HealthProbe> {
        let host_port = |i: u16| ports.get(usize::from(i)).copied();
        let probe = match (&self.http, &self.tcp, &self.exec) {
            (Some(h), _, _) => ProbeKind::Http {
                port: host_port(h.port)?,
                path: h.path.clone(),
            },
            (_, Some(t), _) => ProbeKind::Tcp {
                port: host_port(t.port)?,
            },
            (_, _, Some(e)) => ProbeKind::Exec {
                command: e.command.clone(),
            },
            _ => return None,
        };
        Some(HealthProbe {
            probe,
            interval_ms: self.interval().as_millis() as u64,
            timeout_ms: self.timeout().as_millis() as u64,
            failures: self.failures(),
            initial_delay_ms: self.initial_delay().as_millis() as u64,
        })
    }
}
