//! The OpenAPI schemas of bounded fields, built from the same constants and
//! patterns that `bounds.rs` enforces (used as `#[schema(schema_with = ...)]`).

use super::bounds::*;
use super::{MAX_PRIORITY, MAX_REPLICAS};
use serde_json::{json, Value};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;

fn schema(v: Value) -> RefOr<Schema> {
    RefOr::T(serde_json::from_value(v).expect("a valid schema"))
}

fn text(pattern: &str, max: usize) -> Value {
    json!({"type": "string", "pattern": pattern, "maxLength": max})
}

pub fn name() -> RefOr<Schema> {
    schema(
        json!({"type": "string", "pattern": NAME_PATTERN, "minLength": 1, "maxLength": 63,
        "description": "1 to 63 lowercase letters, digits or '-', starting with a letter or digit"}),
    )
}

pub fn owner() -> RefOr<Schema> {
    schema(
        json!({"type": "string", "pattern": OWNER_PATTERN, "minLength": 1,
        "maxLength": MAX_OWNER_CHARS, "default": "default",
        "description": "Whose quota the job counts against: 1 to 63 characters, no control characters"}),
    )
}

pub fn priority() -> RefOr<Schema> {
    schema(
        json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_PRIORITY,
        "default": 100, "description": ">= 200 is the production band"}),
    )
}

pub fn replicas() -> RefOr<Schema> {
    schema(
        json!({"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_REPLICAS,
        "default": 1}),
    )
}

pub fn command() -> RefOr<Schema> {
    schema(json!({"type": "array", "minItems": 1, "maxItems": MAX_ARGS,
        "prefixItems": [text(PROGRAM_PATTERN, MAX_ARG_CHARS)],
        "items": text(ARG_PATTERN, MAX_ARG_CHARS),
        "description": "argv, run without a shell: the program (not blank), then its arguments; no NUL"}))
}

pub fn env() -> RefOr<Schema> {
    schema(json!({"type": "object", "maxProperties": MAX_ENV,
        "propertyNames": {"type": "string", "pattern": ENV_NAME_SCHEMA_PATTERN,
            "maxLength": MAX_ENV_NAME_CHARS},
        "additionalProperties": text(ARG_PATTERN, MAX_ENV_VALUE_CHARS),
        "description": "Environment variables: POSIX names (not BORG_*, which the borglet sets), values without NUL"}))
}

fn cpu(minimum: f64, description: &str) -> RefOr<Schema> {
    schema(json!({"anyOf": [
            {"type": "string", "pattern": CPU_PATTERN},
            {"type": "number", "minimum": minimum, "maximum": MAX_CPU_CORES},
        ],
        "description": description, "example": "250m"}))
}

/// A task's cpu request: more than 0 once rounded to millicores.
pub fn cpu_request() -> RefOr<Schema> {
    cpu(0.001, "Cores: `\"250m\"` (millicores), `\"2\"` or a number of cores; more than 0. Default `100m`.")
}

/// A cpu cap or quota.
pub fn cpu_amount() -> RefOr<Schema> {
    cpu(0.0, "Cores, as `cpu`: `\"500m\"`, `\"2\"` or a number")
}

pub fn size() -> RefOr<Schema> {
    schema(json!({"anyOf": [
            {"type": "string", "pattern": SIZE_PATTERN},
            {"type": "number", "minimum": 0, "maximum": MAX_SIZE_BYTES},
        ],
        "description": "A size: `\"64Mi\"`, `\"1Gi\"`, `\"512k\"` or bytes; at most 1Pi in all", "example": "64Mi"}))
}

pub fn duration() -> RefOr<Schema> {
    schema(json!({"type": "string", "pattern": DURATION_PATTERN,
        "description": "A duration: up to 4 parts of a number and a unit (ms, s, m, h), e.g. `10s`, `1m30s`; at most 999999h in all",
        "example": "10s"}))
}

pub fn max_attempts() -> RefOr<Schema> {
    schema(
        json!({"type": "integer", "format": "int32", "minimum": 1, "maximum": MAX_ATTEMPTS,
        "description": "Runs a batch task may take in total, across attempts (default 3)"}),
    )
}

pub fn ports() -> RefOr<Schema> {
    schema(
        json!({"type": "integer", "format": "int32", "minimum": 0, "maximum": MAX_PORTS,
        "default": 0, "description": "How many host ports to allocate (`BORG_PORT0`, ...)"}),
    )
}

pub fn max_per_machine() -> RefOr<Schema> {
    schema(
        json!({"type": "integer", "format": "int32", "minimum": 1, "maximum": MAX_PER_MACHINE,
        "description": "At most this many of the job's tasks on one machine"}),
    )
}

pub fn label_key() -> RefOr<Schema> {
    schema(
        json!({"type": "string", "pattern": LABEL_KEY_PATTERN, "minLength": 1,
        "maxLength": MAX_LABEL_KEY_CHARS,
        "description": "A label key, as Kubernetes has them: `zone`, `example.com/rack`"}),
    )
}

pub fn labels() -> RefOr<Schema> {
    schema(json!({"type": "object", "maxProperties": MAX_LABELS,
        "propertyNames": {"type": "string", "pattern": LABEL_KEY_PATTERN, "minLength": 1,
            "maxLength": MAX_LABEL_KEY_CHARS},
        "additionalProperties": text(LABEL_VALUE_PATTERN, MAX_LABEL_VALUE_CHARS),
        "description": "Labels, as Kubernetes has them (keys `zone`, `example.com/rack`; values of at most 63 characters)"}))
}

pub fn value_list() -> RefOr<Schema> {
    schema(json!({"type": "string", "pattern": VALUE_LIST_PATTERN,
        "maxLength": MAX_VALUE_LIST_CHARS,
        "description": "For `=` and `!=` a label value; for `in` and `not_in` also a comma-separated list"}))
}

pub fn label_values() -> RefOr<Schema> {
    schema(json!({"type": "array", "maxItems": MAX_CONSTRAINT_VALUES,
        "items": text(LABEL_VALUE_PATTERN, MAX_LABEL_VALUE_CHARS),
        "description": "The values for `in` and `not_in`"}))
}

pub fn address() -> RefOr<Schema> {
    schema(json!({"type": "string", "pattern": ADDRESS_PATTERN,
        "maxLength": MAX_ADDRESS_CHARS,
        "description": "Base URL the master reaches the borglet at, e.g. `http://127.0.0.1:7701`"}))
}

pub fn version() -> RefOr<Schema> {
    schema(json!({"type": "string", "pattern": VERSION_PATTERN, "maxLength": 64}))
}

pub fn machine_capacity() -> RefOr<Schema> {
    let bytes =
        json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_MACHINE_BYTES});
    schema(
        json!({"type": "object", "required": ["cpu", "memory", "disk"],
        "properties": {
            "cpu": {"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_MACHINE_CPU,
                "description": "millicores"},
            "memory": bytes, "disk": bytes,
        }}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each schema survives the trip through utoipa's types unchanged.
    #[test]
    fn schemas_render_as_written() {
        for (name, f) in [
            ("command", command as fn() -> RefOr<Schema>),
            ("env", env),
            ("cpu", cpu_request),
            ("size", size),
            ("labels", labels),
            ("capacity", machine_capacity),
        ] {
            let v = serde_json::to_value(f()).unwrap();
            let back = serde_json::to_value(schema(v.clone())).unwrap();
            assert_eq!(v, back, "{name}");
            assert!(v.to_string().len() > 40, "{name}: {v}");
        }
        let cmd = serde_json::to_value(command()).unwrap();
        assert_eq!(cmd["prefixItems"][0]["pattern"], PROGRAM_PATTERN);
        assert_eq!(cmd["maxItems"], MAX_ARGS);
        let env = serde_json::to_value(env()).unwrap();
        assert_eq!(env["propertyNames"]["pattern"], ENV_NAME_SCHEMA_PATTERN);
    }
}
