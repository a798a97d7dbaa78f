//! What a spec and a machine's registration may hold. Each bound is a constant
//! or a pattern that the validation and the OpenAPI document (`schema.rs`) both
//! read, so a request the document admits is never refused for a reason it
//! hides. Lengths count characters (as JSON Schema's `maxLength` does).

use super::SpecError;
use regex::Regex;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// Job and machine names.
pub const NAME_PATTERN: &str = "^[a-z0-9][a-z0-9-]{0,62}$";
/// Owners: 1 to 63 characters, none of them a control character.
pub const OWNER_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]{1,63}$";
pub const MAX_OWNER_CHARS: usize = 63;

/// argv: at most this many arguments, each at most this many characters, no NUL.
pub const MAX_ARGS: usize = 1024;
pub const MAX_ARG_CHARS: usize = 16384;
pub const ARG_PATTERN: &str = r"^[^\x00]*$";
/// The program (argv[0]) holds something besides blanks.
pub const PROGRAM_PATTERN: &str = r"^[^\x00]*[^\x00\x09-\x0d\x20][^\x00]*$";

/// Environment: at most this many variables; POSIX names (not `BORG_*`, which
/// the borglet sets); values without NUL.
pub const MAX_ENV: usize = 256;
pub const ENV_NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]{0,255}$";
/// The same, saying in the document that `BORG_*` is refused.
pub const ENV_NAME_SCHEMA_PATTERN: &str = "^(?!BORG_)[A-Za-z_][A-Za-z0-9_]{0,255}$";
pub const MAX_ENV_NAME_CHARS: usize = 256;
pub const MAX_ENV_VALUE_CHARS: usize = 16384;

/// Labels as Kubernetes has them: a key is an optional DNS-subdomain prefix
/// and `/`, then a name of 1 to 63 of `[A-Za-z0-9-_.]` starting and ending
/// alphanumeric; a value is empty or such a name.
pub const MAX_LABELS: usize = 64;
pub const LABEL_KEY_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";
pub const MAX_LABEL_KEY_CHARS: usize = 253;
pub const LABEL_VALUE_PATTERN: &str = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$";
pub const MAX_LABEL_VALUE_CHARS: usize = 63;

/// Constraints: at most this many, each with at most this many `values`; a
/// `value` is a label value or a comma-separated list of them.
pub const MAX_CONSTRAINTS: usize = 64;
pub const MAX_CONSTRAINT_VALUES: usize = 64;
pub const VALUE_LIST_PATTERN: &str = r"^( *[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])? *(, *[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])? *)*)?$";
pub const MAX_VALUE_LIST_CHARS: usize = 4096;

/// `restart.max_attempts`, `spread.max_per_machine`, `resources.ports`.
pub const MAX_ATTEMPTS: u32 = 10_000;
pub const MAX_PER_MACHINE: u32 = 10_000;
pub const MAX_PORTS: u16 = 1000;

/// Cores as text: `2`, `0.5` (at most 3 decimals) or `250m`.
pub const CPU_PATTERN: &str = r"^ *([0-9]{1,6}(\.[0-9]{1,3})?|[0-9]{1,9}m) *$";
/// Cores as a number.
pub const MAX_CPU_CORES: f64 = 999_999.0;
/// Sizes as text: plain bytes, or a number with a unit (k, M, G, T or Ki, Mi,
/// Gi, Ti); each form's digits cover `MAX_SIZE_BYTES`, so the stored form
/// (`Bytes::exact`: a whole binary unit or plain bytes) matches it again.
pub const SIZE_PATTERN: &str = r"^ *([0-9]{1,16}(\.[0-9]{1,3})?|[0-9]{1,13}(\.[0-9]{1,3})?(k|K|Ki)|[0-9]{1,10}(\.[0-9]{1,3})?(M|Mi)|[0-9]{1,7}(\.[0-9]{1,3})?(G|Gi)|[0-9]{1,4}(\.[0-9]{1,3})?(T|Ti)) *$";
/// The largest size, 1 PiB (a size past it, in any form, is refused).
pub const MAX_SIZE_BYTES: u64 = 1 << 50;
/// Durations: up to 4 parts of a number and a unit (ms, s, m, h): `10s`, `1m30s`;
/// at most `MAX_DURATION` in all.
pub const DURATION_PATTERN: &str = r"^ *([0-9]{1,6}(ms|s|m|h) *){1,4}$";
/// The longest duration: 999,999 hours.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(999_999 * 3600);

/// A machine's capacity as it registers: millicores and bytes.
pub const MAX_MACHINE_CPU: u64 = 1_000_000_000;
pub const MAX_MACHINE_BYTES: u64 = 1 << 60;
pub const MAX_ADDRESS_CHARS: usize = 2048;
/// An http(s) URL of an IPv4 address or a host name (labels starting with a
/// letter, no `--`, so no punycode), an optional port, an optional path.
pub const ADDRESS_PATTERN: &str = r"^https?://(((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])|[A-Za-z][A-Za-z0-9]*(-[A-Za-z0-9]+)*(\.[A-Za-z][A-Za-z0-9]*(-[A-Za-z0-9]+)*)*)(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?(/[!-~]*)?$";
pub const VERSION_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]{0,64}$";

/// A duration as it is stored and shown: hours, minutes, seconds and
/// milliseconds, each only if not zero (`1h30m`, `500ms`, `0s`): it matches
/// `DURATION_PATTERN` for every duration up to `MAX_DURATION`.
pub fn format_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    let parts = [
        (ms / 3_600_000, "h"),
        (ms / 60_000 % 60, "m"),
        (ms / 1000 % 60, "s"),
        (ms % 1000, "ms"),
    ];
    let text: String = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if text.is_empty() {
        "0s".into()
    } else {
        text
    }
}

macro_rules! pattern {
    ($name:ident, $pattern:expr) => {
        static $name: LazyLock<Regex> =
            LazyLock::new(|| Regex::new($pattern).expect("a valid pattern"));
    };
}

pattern!(NAME, NAME_PATTERN);
pattern!(OWNER, OWNER_PATTERN);
pattern!(PROGRAM, PROGRAM_PATTERN);
pattern!(ENV_NAME, ENV_NAME_PATTERN);
pattern!(LABEL_KEY, LABEL_KEY_PATTERN);
pattern!(LABEL_VALUE, LABEL_VALUE_PATTERN);
pattern!(VALUE_LIST, VALUE_LIST_PATTERN);
pattern!(CPU, CPU_PATTERN);
pattern!(SIZE, SIZE_PATTERN);
pattern!(DURATION, DURATION_PATTERN);
pattern!(VERSION, VERSION_PATTERN);
pattern!(ADDRESS, ADDRESS_PATTERN);

fn chars(s: &str) -> usize {
    s.chars().count()
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

pub fn is_name(s: &str) -> bool {
    NAME.is_match(s)
}

pub fn check_owner(owner: &str) -> Result<(), String> {
    if OWNER.is_match(owner) {
        Ok(())
    } else {
        Err(format!(
            "an owner is 1 to {MAX_OWNER_CHARS} characters, none of them a control character"
        ))
    }
}

/// argv: count, lengths, no NUL, a program that is not blank.
pub fn check_command(command: &[String], field: &str) -> Result<(), SpecError> {
    if command.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if command.len() > MAX_ARGS {
        return Err(invalid(
            field,
            format!("at most {MAX_ARGS} arguments, got {}", command.len()),
        ));
    }
    for (i, arg) in command.iter().enumerate() {
        let field = format!("{field}[{i}]");
        if arg.contains('\0') {
            return Err(invalid(field, "must not contain NUL bytes"));
        }
        if chars(arg) > MAX_ARG_CHARS {
            return Err(invalid(
                field,
                format!("at most {MAX_ARG_CHARS} characters"),
            ));
        }
    }
    if !PROGRAM.is_match(&command[0]) {
        return Err(invalid(
            format!("{field}[0]"),
            "the program must not be empty",
        ));
    }
    Ok(())
}

/// Environment variables: count, POSIX names, not `BORG_*`, bounded values without NUL.
pub fn check_env(env: &BTreeMap<String, String>, field: &str) -> Result<(), SpecError> {
    if env.len() > MAX_ENV {
        return Err(invalid(
            field,
            format!("at most {MAX_ENV} variables, got {}", env.len()),
        ));
    }
    for (k, v) in env {
        let field = format!("{field}.{k}");
        if !ENV_NAME.is_match(k) {
            return Err(invalid(
                field,
                format!(
                    "a variable's name is 1 to {MAX_ENV_NAME_CHARS} of letters, digits and '_', not starting with a digit"
                ),
            ));
        }
        if k.starts_with("BORG_") {
            return Err(invalid(field, "BORG_* variables are set by the borglet"));
        }
        if v.contains('\0') {
            return Err(invalid(field, "a value must not contain NUL bytes"));
        }
        if chars(v) > MAX_ENV_VALUE_CHARS {
            return Err(invalid(
                field,
                format!("a value is at most {MAX_ENV_VALUE_CHARS} characters"),
            ));
        }
    }
    Ok(())
}

pub fn check_label_key(key: &str) -> Result<(), String> {
    if chars(key) <= MAX_LABEL_KEY_CHARS && LABEL_KEY.is_match(key) {
        return Ok(());
    }
    Err(format!(
        "`{}` is not a label key: an optional DNS prefix and '/', then 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit ({MAX_LABEL_KEY_CHARS} characters at most)",
        key.escape_debug()
    ))
}

pub fn check_label_value(value: &str) -> Result<(), String> {
    if LABEL_VALUE.is_match(value) {
        return Ok(());
    }
    Err(format!(
        "`{}` is not a label value: empty, or 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        value.escape_debug()
    ))
}

/// A machine's labels: count, keys and values.
pub fn check_labels(labels: &BTreeMap<String, String>, field: &str) -> Result<(), SpecError> {
    if labels.len() > MAX_LABELS {
        return Err(invalid(
            field,
            format!("at most {MAX_LABELS} labels, got {}", labels.len()),
        ));
    }
    for (k, v) in labels {
        check_label_key(k).map_err(|m| invalid(field, m))?;
        check_label_value(v).map_err(|m| invalid(format!("{field}.{k}"), m))?;
    }
    Ok(())
}

/// A constraint's `value`: a label value or a comma-separated list of them.
pub fn check_value_list(value: &str) -> Result<(), String> {
    if chars(value) <= MAX_VALUE_LIST_CHARS && VALUE_LIST.is_match(value) {
        return Ok(());
    }
    Err(format!(
        "a label value or a comma-separated list of them ({MAX_VALUE_LIST_CHARS} characters at most)"
    ))
}

/// A borglet's address (the master also parses it as a URL).
pub fn check_address(address: &str) -> Result<(), String> {
    if chars(address) <= MAX_ADDRESS_CHARS && ADDRESS.is_match(address) {
        return Ok(());
    }
    Err(format!(
        "`{}` is not an http(s) URL of an IPv4 address or host name, with an optional port and path",
        address.escape_debug()
    ))
}

/// A machine's self-reported version: short, no control characters.
pub fn check_version(version: &str) -> Result<(), String> {
    if VERSION.is_match(version) {
        return Ok(());
    }
    Err("at most 64 characters, none of them a control character".into())
}

/// Quantities and durations as text, before they are parsed.
pub(crate) fn check_cpu_text(s: &str) -> Result<(), String> {
    if CPU.is_match(s) {
        return Ok(());
    }
    Err(format!(
        "`{}` is not a cpu amount: cores (`2`, `0.5`, at most 3 decimals and {MAX_CPU_CORES} cores) or millicores (`250m`)",
        s.escape_debug()
    ))
}

pub(crate) fn check_size_text(s: &str) -> Result<(), String> {
    if SIZE.is_match(s) {
        return Ok(());
    }
    Err(format!(
        "`{}` is not a size: bytes, or a number with a unit (`64Mi`, `1.5Gi`; k, M, G, T, Ki, Mi, Gi, Ti)",
        s.escape_debug()
    ))
}

pub(crate) fn check_duration_text(s: &str) -> Result<(), String> {
    if DURATION.is_match(s) {
        return Ok(());
    }
    Err(format!(
        "`{}` is not a duration: write e.g. 10s, 500ms or 1m30s (units ms, s, m, h)",
        s.escape_debug()
    ))
}
