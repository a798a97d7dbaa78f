//! Reading a job spec file. YAML and JSON are told apart by content (a YAML
//! parser reads both); nothing is validated here beyond "is a mapping": the
//! master validates and names the offending field.

use anyhow::{bail, Context};
use borg_shared::spec::yaml_to_json;
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
        Value::Object(_) => Ok(value),
        Value::Null => bail!("the file is empty: expected a job spec (name, task, ...)"),
        other => bail!(
            "expected a job spec (a mapping with name, task, ...), found {}",
            kind(&other)
        ),
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
    fn invalid_fields_are_left_to_the_server() {
        // A nonsense cpu is the master's to refuse, with the field's name.
        let v = parse("name: x\ntask: {command: [a], resources: {cpu: lots}}").unwrap();
        assert_eq!(v["task"]["resources"]["cpu"], "lots");
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
