//! Reading a job spec file. YAML and JSON are told apart by content (a YAML
//! parser reads both). The document's shape (field names and types) is
//! checked here against the user's own text, so an error names the file's
//! line and column rather than a position in the JSON sent to the master;
//! the master does the semantic validation and names the offending field.

use anyhow::{bail, Context};
use borg_shared::spec::{yaml_to_json, JobSpec};
use serde_json::Value;
use std::io::Read;
use std::path::Path;

/// Load `path` (`-` is standard input) as a JSON value ready to POST.
pub fn load(path: &Path) -> anyhow::Result<Value> {
    let (text, name) = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the spec from standard input")?;
        (text, "standard input".to_string())
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        (text, path.display().to_string())
    };
    parse(&text).with_context(|| name)
}

/// Parse a YAML or JSON document that should hold one job spec.
pub fn parse(text: &str) -> anyhow::Result<Value> {
    let value = yaml_to_json(text)?;
    match value {
        Value::Object(_) => {
            check_shape(text)?;
            Ok(value)
        }
        Value::Null => bail!("the file is empty: expected a job spec (name, task, ...)"),
        other => bail!(
            "expected a job spec (a mapping with name, task, ...), found {}",
            kind(&other)
        ),
    }
}

/// Deserialize the text itself into a spec: a wrong type or an unknown field
/// is reported at its line and column in the file, with the field's path.
fn check_shape(text: &str) -> anyhow::Result<()> {
    let (path, message, at) = if text.trim_start().starts_with('{') {
        let de = &mut serde_json::Deserializer::from_str(text);
        match serde_path_to_error::deserialize::<_, JobSpec>(de) {
            Ok(_) => return Ok(()),
            Err(e) => {
                let inner = e.inner();
                let at = (inner.line(), inner.column());
                // serde_json appends the position to its message; we say it first.
                let message = inner.to_string();
                let message = message
                    .rsplit_once(" at line ")
                    .map_or(message.as_str(), |(m, _)| m)
                    .to_string();
                (e.path().to_string(), message, Some(at))
            }
        }
    } else {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        match serde_path_to_error::deserialize::<_, JobSpec>(de) {
            Ok(_) => return Ok(()),
            Err(e) => {
                let inner = e.inner();
                let at = inner.location().map(|l| (l.line(), l.column()));
                let path = e.path().to_string();
                let message = inner.to_string();
                let message = message
                    .rsplit_once(" at line ")
                    .map_or(message.as_str(), |(m, _)| m);
                // serde_yaml_ng starts with its own (shorter) path: ours is said already.
                let message = match message.split_once(": ") {
                    Some((p, rest)) if path.starts_with(p) => rest,
                    _ => message,
                }
                .to_string();
                (path, message, at)
            }
        }
    };
    let field = if path == "." {
        String::new()
    } else {
        format!("{path}: ")
    };
    match at {
        Some((line, column)) => bail!("line {line} column {column}: {field}{message}"),
        None => bail!("{field}{message}"),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::error_line;
    use serde_json::json;

    #[test]
    fn yaml_and_json_give_the_same_document() {
        let yaml = "name: hello\nreplicas: 3\ntask:\n  command: [/bin/echo, hi]\n  resources: {cpu: 0.25, memory: 64Mi}\n";
        let json_text = r#"{"name":"hello","replicas":3,"task":{"command":["/bin/echo","hi"],"resources":{"cpu":0.25,"memory":"64Mi"}}}"#;
        let expected = json!({
            "name": "hello",
            "replicas": 3,
            "task": {"command": ["/bin/echo", "hi"], "resources": {"cpu": 0.25, "memory": "64Mi"}}
        });
        assert_eq!(parse(yaml).unwrap(), expected);
        assert_eq!(parse(json_text).unwrap(), expected);
    }

    #[test]
    fn semantic_checks_are_left_to_the_server() {
        // Well-formed but refused (replicas 0): the master's to say, with the field's name.
        let v = parse("name: x\nreplicas: 0\ntask: {command: [a]}").unwrap();
        assert_eq!(v["replicas"], 0);
    }

    #[test]
    fn shape_errors_name_the_files_line_and_column() {
        let yaml = "name: x\ntask:\n  command: [a]\n  resources:\n    cpu: lots\n";
        let line = error_line(&parse(yaml).unwrap_err());
        assert!(
            line.starts_with("line 5 column 5: task.resources.cpu: `lots` is not a cpu amount"),
            "{line}"
        );
        assert!(!line.contains("line 1 column"), "{line}");

        let yaml = "name: x\nreplicas: many\ntask: {command: [a]}\n";
        let line = error_line(&parse(yaml).unwrap_err());
        assert!(line.starts_with("line 2 column 11: replicas: "), "{line}");

        let yaml = "name: x\ntask:\n  command: [a]\n  colour: red\n";
        let line = error_line(&parse(yaml).unwrap_err());
        assert!(
            line.starts_with("line 4 column 3: task.colour: unknown field `colour`"),
            "{line}"
        );

        let json = "{\n  \"name\": \"x\",\n  \"replicas\": \"many\",\n  \"task\": {\"command\": [\"a\"]}\n}";
        let line = error_line(&parse(json).unwrap_err());
        assert!(line.starts_with("line 3 column 20: replicas: "), "{line}");
    }

    #[test]
    fn malformed_documents_say_so_in_one_line() {
        let err = parse("name: [unclosed\ntask: {").unwrap_err();
        let line = error_line(&err);
        assert!(line.starts_with("malformed document:"), "{line}");
        assert!(!line.contains('\n'));

        let err = parse("").unwrap_err();
        assert!(error_line(&err).contains("empty"));
        let err = parse("- a\n- b\n").unwrap_err();
        assert!(error_line(&err).contains("found a list"), "{err}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("jobctl-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("hello.json");
        std::fs::write(&good, r#"{"name":"hello","task":{"command":["true"]}}"#).unwrap();
        assert_eq!(load(&good).unwrap()["name"], "hello");

        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, "name: [").unwrap();
        let line = error_line(&load(&bad).unwrap_err());
        assert!(
            line.starts_with(&format!("{}: malformed document", bad.display())),
            "{line}"
        );

        let missing = dir.join("missing.yaml");
        let line = error_line(&load(&missing).unwrap_err());
        assert!(line.starts_with("cannot read"), "{line}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
