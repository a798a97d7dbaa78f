//! The job spec as users write it (YAML or JSON) and its validation.
//!
//! Parsing and validation both report the offending field's path
//! (`task.resources.cpu`) so the API can answer 422 naming it. Resource and
//! duration fields are typed at parse time, and serialize back to the same
//! human form, so a stored spec reads like the submitted one.

pub mod bounds;
pub mod schema;

use crate::resources::{Bytes, MilliCpu, Quantity};
use crate::states::JobKind;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::time::Duration;

mod health;
pub use health::{ExecProbe, HealthCheck, HttpProbe, TcpProbe};

pub const MAX_REPLICAS: i64 = 10_000;
pub const MAX_PRIORITY: i64 = 1000;
/// `>= PRODUCTION_PRIORITY` is the production band.
pub const PRODUCTION_PRIORITY: i64 = 200;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    #[schema(schema_with = schema::name)]
    pub name: String,
    #[serde(default)]
    pub kind: JobKind,
    #[schema(schema_with = schema::owner)]
    #[serde(default = "default_owner")]
    pub owner: String,
    #[schema(schema_with = schema::priority)]
    #[serde(default = "default_priority")]
    pub priority: i64,
    #[schema(schema_with = schema::replicas)]
    #[serde(default = "default_replicas")]
    pub replicas: i64,
    pub task: TaskTemplate,
    /// At most 64 (`bounds::MAX_CONSTRAINTS`).
    #[schema(max_items = 64)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<Spread>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdatePolicy>,
}

fn default_owner() -> String {
    "default".to_string()
}
fn default_priority() -> i64 {
    100
}
fn default_replicas() -> i64 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskTemplate {
    /// argv; never run through a shell.
    #[schema(schema_with = schema::command)]
    pub command: Vec<String>,
    #[schema(schema_with = schema::env)]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// SIGTERM, then SIGKILL after this long (default 10s).
    #[schema(schema_with = schema::duration)]
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub kill_grace: Option<Duration>,
    /// Kill the task (on its machine, by its borglet) when no master has synced
    /// that machine for this long: at most one copy runs once the master has
    /// given up on the machine and placed the task elsewhere. At least 1s; make it
    /// several poll intervals. Absent (the default): the task keeps running
    /// while no master polls.
    #[schema(schema_with = schema::duration)]
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub fence_after: Option<Duration>,
}

pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);
/// The shortest `task.fence_after`.
pub const MIN_FENCE_AFTER: Duration = Duration::from_secs(1);
pub const DEFAULT_BATCH_MAX_ATTEMPTS: u32 = 3;

impl TaskTemplate {
    pub fn kill_grace(&self) -> Duration {
        self.kill_grace.unwrap_or(DEFAULT_KILL_GRACE)
    }

    /// Runs a batch task may take in total, across attempts.
    pub fn max_attempts(&self) -> u32 {
        self.restart
            .as_ref()
            .and_then(|r| r.max_attempts)
            .unwrap_or(DEFAULT_BATCH_MAX_ATTEMPTS)
    }
}

/// What one task asks for. Defaults are small so `hello` needs no resources block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Cores: `"250m"` (millicores) or `"2"`; a plain number of cores is also accepted. Default `100m`.
    #[schema(schema_with = schema::cpu_request)]
    #[serde(default = "default_cpu", with = "cpu_qty")]
    pub cpu: MilliCpu,
    /// A size: `"64Mi"`, `"1Gi"`, `"512k"` or plain bytes. Default `64Mi`.
    #[schema(schema_with = schema::size)]
    #[serde(default = "default_memory", with = "size_qty")]
    pub memory: Bytes,
    /// A size like `memory`. Default `0`.
    #[schema(schema_with = schema::size)]
    #[serde(default, with = "size_qty")]
    pub disk: Bytes,
    /// How many ports to allocate.
    #[schema(schema_with = schema::ports)]
    #[serde(default)]
    pub ports: u16,
    /// Hard cpu cap (cgroup quota); by default a task may burst.
    #[schema(schema_with = schema::cpu_amount)]
    #[serde(default, with = "opt_cpu_qty", skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<MilliCpu>,
    /// Hard memory cap (the kernel OOM-kills beyond it); by default the request.
    #[schema(schema_with = schema::size)]
    #[serde(
        default,
        with = "opt_size_qty",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_limit: Option<Bytes>,
}

fn default_cpu() -> MilliCpu {
    MilliCpu(100)
}
fn default_memory() -> Bytes {
    Bytes(64 << 20)
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu: default_cpu(),
            memory: default_memory(),
            disk: Bytes(0),
            ports: 0,
            cpu_limit: None,
            memory_limit: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    #[schema(schema_with = schema::max_attempts)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// A duration such as `5s` or `1m30s`.
    #[schema(schema_with = schema::duration)]
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub backoff: Option<Duration>,
}

impl RestartPolicy {
    /// The longest wait before a failed task runs again, in place or elsewhere
    /// (as the kubelet's CrashLoopBackOff).
    pub const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);
    /// A run this long ends a crash loop: the next failure waits `backoff` again.
    pub const RESET_AFTER: Duration = Duration::from_secs(10 * 60);

    /// The wait after the `failed_in_a_row`-th failed run in a row (1 for the
    /// first): `base` doubled for each one before it, up to `MAX_BACKOFF`.
    pub fn backoff_after(base: Duration, failed_in_a_row: u32) -> Duration {
        let doublings = failed_in_a_row.saturating_sub(1).min(31);
        base.saturating_mul(1 << doublings)
            .min(Self::MAX_BACKOFF.max(base))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ConstraintOp {
    #[serde(rename = "=")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = "in")]
    In,
    #[serde(rename = "not_in")]
    NotIn,
    #[serde(rename = "exists")]
    Exists,
}

impl std::fmt::Display for ConstraintOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConstraintOp::Eq => "=",
            ConstraintOp::Ne => "!=",
            ConstraintOp::In => "in",
            ConstraintOp::NotIn => "not_in",
            ConstraintOp::Exists => "exists",
        })
    }
}

/// A label constraint on machines. `value` for `=`/`!=`, `values` for `in`/`not_in`;
/// a comma-separated `value` is also accepted for `in`/`not_in`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Constraint {
    #[schema(schema_with = schema::label_key)]
    pub label: String,
    pub op: ConstraintOp,
    #[schema(schema_with = schema::value_list)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[schema(schema_with = schema::label_values)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl Constraint {
    fn set(&self) -> Vec<&str> {
        let mut set: Vec<&str> = self.values.iter().map(String::as_str).collect();
        if let Some(v) = &self.value {
            set.extend(v.split(',').map(str::trim).filter(|s| !s.is_empty()));
        }
        set
    }

    /// Does a machine with these labels satisfy the constraint?
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let have = labels.get(&self.label).map(String::as_str);
        match self.op {
            ConstraintOp::Exists => have.is_some(),
            ConstraintOp::Eq => have.is_some() && have == self.value.as_deref(),
            ConstraintOp::Ne => have != self.value.as_deref(),
            ConstraintOp::In => have.is_some_and(|h| self.set().contains(&h)),
            ConstraintOp::NotIn => !have.is_some_and(|h| self.set().contains(&h)),
        }
    }
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.op {
            ConstraintOp::Exists => write!(f, "{} exists", self.label),
            _ => write!(f, "{} {} {}", self.label, self.op, self.set().join(",")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Spread {
    #[schema(schema_with = schema::label_key)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[schema(schema_with = schema::max_per_machine)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_machine: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<u32>,
    /// A duration such as `30s`.
    #[schema(schema_with = schema::duration)]
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_healthy: Option<Duration>,
}

/// Why a spec was refused. `Malformed` is not JSON/YAML at all (HTTP 400);
/// `Invalid` is well-formed but wrong (HTTP 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("malformed document: {message}")]
    Malformed { message: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl SpecError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            SpecError::Malformed { .. } => None,
            SpecError::Invalid { field, .. } => Some(field),
        }
    }
}

fn from_path_error<E: std::fmt::Display>(
    err: serde_path_to_error::Error<E>,
    syntax: bool,
) -> SpecError {
    let path = err.path().to_string();
    let message = err.inner().to_string();
    if syntax {
        SpecError::Malformed { message }
    } else {
        let field = path;
        SpecError::Invalid { field, message }
    }
}

impl JobSpec {
    /// Parse and validate a JSON document (the API's input).
    pub fn from_json(bytes: &[u8]) -> Result<JobSpec, SpecError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let spec: JobSpec = serde_path_to_error::deserialize(de).map_err(|e| {
            let syntax = matches!(
                e.inner().classify(),
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof
            );
            from_path_error(e, syntax)
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Parse and validate a YAML document (what users keep in files).
    pub fn from_yaml(text: &str) -> Result<JobSpec, SpecError> {
        let value: serde_json::Value = yaml_to_json(text)?;
        let spec: JobSpec =
            serde_path_to_error::deserialize(value).map_err(|e| from_path_error(e, false))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Semantic checks beyond the shape serde already enforced.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_name(&self.name).map_err(|m| SpecError::invalid("name", m))?;
        bounds::check_owner(&self.owner).map_err(|m| SpecError::invalid("owner", m))?;
        if !(0..=MAX_PRIORITY).contains(&self.priority) {
            return Err(SpecError::invalid(
                "priority",
                format!(
                    "must be between 0 and {MAX_PRIORITY}, got {}",
                    self.priority
                ),
            ));
        }
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            return Err(SpecError::invalid(
                "replicas",
                format!(
                    "must be between 1 and {MAX_REPLICAS}, got {}",
                    self.replicas
                ),
            ));
        }
        let task = &self.task;
        bounds::check_command(&task.command, "task.command")?;
        bounds::check_env(&task.env, "task.env")?;
        if task.resources.ports > bounds::MAX_PORTS {
            return Err(SpecError::invalid(
                "task.resources.ports",
                format!("at most {}", bounds::MAX_PORTS),
            ));
        }
        if task.resources.cpu.0 == 0 {
            return Err(SpecError::invalid(
                "task.resources.cpu",
                "must be more than 0 (e.g. 0.1 or 100m)",
            ));
        }
        validate_limits(&task.resources)?;
        if let Some(r) = &task.restart {
            if r.max_attempts
                .is_some_and(|n| !(1..=bounds::MAX_ATTEMPTS).contains(&n))
            {
                return Err(SpecError::invalid(
                    "task.restart.max_attempts",
                    format!("must be between 1 and {}", bounds::MAX_ATTEMPTS),
                ));
            }
        }
        if let Some(u) = &self.update {
            if u.max_unavailable == Some(0) && u.max_surge.unwrap_or(0) == 0 {
                return Err(SpecError::invalid(
                    "update.max_unavailable",
                    "must be at least 1 unless `max_surge` is: a rollout replaces tasks either \
                     by taking them down or by starting their new copies first",
                ));
            }
        }
        if let Some(h) = &task.health {
            h.validate(self.kind, task.resources.ports)?;
        }
        if task.fence_after.is_some_and(|d| d < MIN_FENCE_AFTER) {
            return Err(SpecError::invalid(
                "task.fence_after",
                "must be at least 1s (several of the master's poll intervals is wise)",
            ));
        }
        self.validate_placement()
    }

    /// Constraints and spread: bounded counts, label keys and values.
    fn validate_placement(&self) -> Result<(), SpecError> {
        if self.constraints.len() > bounds::MAX_CONSTRAINTS {
            return Err(SpecError::invalid(
                "constraints",
                format!("at most {} constraints", bounds::MAX_CONSTRAINTS),
            ));
        }
        for (i, c) in self.constraints.iter().enumerate() {
            let field = format!("constraints[{i}]");
            bounds::check_label_key(&c.label)
                .map_err(|m| SpecError::invalid(format!("{field}.label"), m))?;
            if let Some(v) = &c.value {
                bounds::check_value_list(v)
                    .map_err(|m| SpecError::invalid(format!("{field}.value"), m))?;
            }
            if c.values.len() > bounds::MAX_CONSTRAINT_VALUES {
                return Err(SpecError::invalid(
                    format!("{field}.values"),
                    format!("at most {} values", bounds::MAX_CONSTRAINT_VALUES),
                ));
            }
            for (j, v) in c.values.iter().enumerate() {
                bounds::check_label_value(v)
                    .map_err(|m| SpecError::invalid(format!("{field}.values[{j}]"), m))?;
            }
            let needs_value = !matches!(c.op, ConstraintOp::Exists);
            if needs_value && c.set().is_empty() {
                return Err(SpecError::invalid(
                    format!("{field}.value"),
                    format!("operator {} needs a value", c.op),
                ));
            }
        }
        if let Some(spread) = &self.spread {
            if let Some(label) = &spread.label {
                bounds::check_label_key(label)
                    .map_err(|m| SpecError::invalid("spread.label", m))?;
            }
            let max = bounds::MAX_PER_MACHINE;
            if spread
                .max_per_machine
                .is_some_and(|n| !(1..=max).contains(&n))
            {
                return Err(SpecError::invalid(
                    "spread.max_per_machine",
                    format!("must be between 1 and {max}"),
                ));
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a JobSpec always serializes")
    }
}

/// The smallest hard memory cap accepted: below it not even a shell starts.
pub const MIN_MEMORY_LIMIT: Bytes = Bytes(4 << 20);

/// Hard caps must be real caps: at least the request, and enough to run at all.
fn validate_limits(r: &Resources) -> Result<(), SpecError> {
    if let Some(limit) = r.cpu_limit {
        if limit.0 == 0 || limit < r.cpu {
            return Err(SpecError::invalid(
                "task.resources.cpu_limit",
                format!("must be at least the cpu request ({}), got {limit}", r.cpu),
            ));
        }
    }
    if r.memory_limit.is_none() && r.memory < MIN_MEMORY_LIMIT {
        return Err(SpecError::invalid(
            "task.resources.memory",
            format!(
                "must be at least {MIN_MEMORY_LIMIT}: without a `memory_limit` the request is the task's hard memory cap, got {}",
                r.memory
            ),
        ));
    }
    if let Some(limit) = r.memory_limit {
        if limit < r.memory || limit < MIN_MEMORY_LIMIT {
            return Err(SpecError::invalid(
                "task.resources.memory_limit",
                format!(
                    "must be at least the memory request ({}) and at least {MIN_MEMORY_LIMIT}, got {limit}",
                    r.memory
                ),
            ));
        }
    }
    Ok(())
}

/// Convert a YAML document into JSON, reporting YAML syntax errors as malformed.
pub fn yaml_to_json(text: &str) -> Result<serde_json::Value, SpecError> {
    serde_yaml_ng::from_str::<serde_json::Value>(text).map_err(|e| SpecError::Malformed {
        message: e.to_string(),
    })
}

/// `[a-z0-9][a-z0-9-]{0,62}`
pub fn validate_name(name: &str) -> Result<(), String> {
    if !bounds::is_name(name) {
        return Err(format!(
            "`{}` is not a valid name: use 1 to 63 lowercase letters, digits or '-', starting with a letter or digit",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// How a quantity's text and number forms are bounded (see `bounds.rs`).
struct QuantityBounds {
    text: fn(&str) -> Result<(), String>,
    max_number: f64,
    /// The most a parsed value may be, in its unit (millicores, bytes).
    max_parsed: u64,
}

trait Amount {
    fn amount(&self) -> u64;
}
impl Amount for MilliCpu {
    fn amount(&self) -> u64 {
        self.0
    }
}
impl Amount for Bytes {
    fn amount(&self) -> u64 {
        self.0
    }
}

const CPU_BOUNDS: QuantityBounds = QuantityBounds {
    text: bounds::check_cpu_text,
    max_number: bounds::MAX_CPU_CORES,
    max_parsed: u64::MAX,
};
const SIZE_BOUNDS: QuantityBounds = QuantityBounds {
    text: bounds::check_size_text,
    max_number: bounds::MAX_SIZE_BYTES as f64,
    max_parsed: bounds::MAX_SIZE_BYTES,
};

fn de_quantity<'de, D: Deserializer<'de>, T: Amount>(
    d: D,
    limits: &QuantityBounds,
    parse: fn(&Quantity) -> Result<T, crate::resources::UnitError>,
) -> Result<T, D::Error> {
    let q = Quantity::deserialize(d)?;
    match &q {
        Quantity::Text(t) => (limits.text)(t).map_err(serde::de::Error::custom)?,
        Quantity::Number(n) if *n > limits.max_number => {
            return Err(serde::de::Error::custom(format!(
                "must be at most {}",
                limits.max_number
            )))
        }
        Quantity::Number(_) => {}
    }
    let v = parse(&q).map_err(serde::de::Error::custom)?;
    if v.amount() > limits.max_parsed {
        return Err(serde::de::Error::custom(format!(
            "must be at most {} in all",
            limits.max_parsed
        )));
    }
    Ok(v)
}

pub(crate) mod cpu_qty {
    use super::*;
    pub fn serialize<S: Serializer>(v: &MilliCpu, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MilliCpu, D::Error> {
        de_quantity(d, &CPU_BOUNDS, MilliCpu::parse)
    }
}

pub(crate) mod opt_cpu_qty {
    use super::*;
    pub fn serialize<S: Serializer>(v: &Option<MilliCpu>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&v.to_string()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MilliCpu>, D::Error> {
        de_quantity(d, &CPU_BOUNDS, MilliCpu::parse).map(Some)
    }
}

pub(crate) mod size_qty {
    use super::*;
    pub fn serialize<S: Serializer>(v: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.exact())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        de_quantity(d, &SIZE_BOUNDS, Bytes::parse)
    }
}

pub(crate) mod opt_size_qty {
    use super::*;
    pub fn serialize<S: Serializer>(v: &Option<Bytes>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&v.exact()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bytes>, D::Error> {
        de_quantity(d, &SIZE_BOUNDS, Bytes::parse).map(Some)
    }
}

/// Durations as humans write them: `10s`, `1m30s`, `500ms`.
pub mod opt_duration {
    use super::*;
    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&bounds::format_duration(*v)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        bounds::check_duration_text(&text).map_err(serde::de::Error::custom)?;
        let d = humantime::parse_duration(text.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration ({e}); write e.g. 10s or 1m30s"
            ))
        })?;
        if d > bounds::MAX_DURATION {
            return Err(serde::de::Error::custom(format!(
                "`{text}` is longer than {}h",
                bounds::MAX_DURATION.as_secs() / 3600
            )));
        }
        Ok(Some(d))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod bounds_tests;
