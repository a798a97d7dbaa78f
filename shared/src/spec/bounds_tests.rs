//! The bounds refuse what they say, and accept everything their documented
//! pattern admits (strings generated from the very patterns the schema holds).

use super::bounds::*;
use super::*;
use proptest::prelude::*;

/// Strings that match `re` (proptest takes no anchors: the patterns' are dropped).
fn pattern(re: &str) -> proptest::string::RegexGeneratorStrategy<String> {
    let bare = re.trim_start_matches('^').trim_end_matches('$');
    proptest::string::string_regex(bare).expect("a pattern proptest can generate from")
}
use serde_json::json;

fn parse(v: serde_json::Value) -> Result<JobSpec, SpecError> {
    JobSpec::from_json(v.to_string().as_bytes())
}

fn with_task(task: serde_json::Value) -> serde_json::Value {
    json!({"name": "a", "task": task})
}

fn refused_at(v: serde_json::Value, field: &str) {
    match parse(v.clone()) {
        Err(SpecError::Invalid { field: f, .. }) => assert_eq!(f, field, "{v}"),
        other => panic!("expected 422 at {field} for {v}, got {other:?}"),
    }
}

#[test]
fn bounds_refuse_with_the_field() {
    let many_args: Vec<String> = (0..=MAX_ARGS).map(|i| i.to_string()).collect();
    refused_at(with_task(json!({"command": many_args})), "task.command");
    let long = "x".repeat(MAX_ARG_CHARS + 1);
    refused_at(
        with_task(json!({"command": ["x", long]})),
        "task.command[1]",
    );
    refused_at(with_task(json!({"command": [" \t"]})), "task.command[0]");
    refused_at(
        with_task(json!({"command": ["x", "a\u{0}b"]})),
        "task.command[1]",
    );
    let env: BTreeMap<String, String> = (0..=MAX_ENV)
        .map(|i| (format!("V{i}"), "1".into()))
        .collect();
    refused_at(with_task(json!({"command": ["x"], "env": env})), "task.env");
    for bad in ["1A", "A=B", "A-B", "", "A\u{0}", "BORG_PORT0"] {
        let env = json!({ bad: "v" });
        refused_at(
            with_task(json!({"command": ["x"], "env": env})),
            &format!("task.env.{bad}"),
        );
    }
    let long = "v".repeat(MAX_ENV_VALUE_CHARS + 1);
    refused_at(
        with_task(json!({"command": ["x"], "env": {"A": long}})),
        "task.env.A",
    );
    refused_at(
        with_task(json!({"command": ["x"], "resources": {"ports": 1001}})),
        "task.resources.ports",
    );
    let c = |label: &str| {
        json!({"name": "a", "task": {"command": ["x"]},
        "constraints": [{"label": label, "op": "exists"}]})
    };
    for bad in ["", "a\u{0}b", "-a", "a b", &"k".repeat(64), "Bad.Prefix/x"] {
        refused_at(c(bad), "constraints[0].label");
    }
    let cs: Vec<_> = (0..=MAX_CONSTRAINTS)
        .map(|_| json!({"label": "zone", "op": "exists"}))
        .collect();
    refused_at(
        json!({"name": "a", "task": {"command": ["x"]}, "constraints": cs}),
        "constraints",
    );
    refused_at(
        json!({"name": "a", "task": {"command": ["x"]},
        "constraints": [{"label": "zone", "op": "=", "value": "a\u{0}"}]}),
        "constraints[0].value",
    );
    refused_at(
        json!({"name": "a", "task": {"command": ["x"]},
        "constraints": [{"label": "zone", "op": "in", "values": ["ok", "-no"]}]}),
        "constraints[0].values[1]",
    );
    refused_at(
        json!({"name": "a", "task": {"command": ["x"]}, "spread": {"label": "a\u{0}"}}),
        "spread.label",
    );
    refused_at(
        json!({"name": "a", "owner": "a\nb", "task": {"command": ["x"]}}),
        "owner",
    );
    refused_at(
        json!({"name": "a", "owner": "é".repeat(64), "task": {"command": ["x"]}}),
        "owner",
    );
    refused_at(
        with_task(json!({"command": ["x"], "restart": {"max_attempts": 4_000_000_000u64}})),
        "task.restart.max_attempts",
    );
    refused_at(
        with_task(json!({"command": ["x"], "kill_grace": "99999999999999999999s"})),
        "task.kill_grace",
    );
    refused_at(
        with_task(json!({"command": ["x"], "resources": {"memory": 1e300}})),
        "task.resources.memory",
    );
    refused_at(
        with_task(json!({"command": ["x"], "resources": {"cpu": "+5"}})),
        "task.resources.cpu",
    );
}

#[test]
fn bounds_accept_what_kubernetes_and_posix_accept() {
    let spec = parse(json!({"name": "a", "owner": "é".repeat(63),
        "task": {"command": ["/bin/x", ""], "env": {"_A1": "", "path": "x y"}},
        "constraints": [
            {"label": "example.com/rack", "op": "in", "value": "r1, r2,r-3"},
            {"label": "zone", "op": "!=", "value": "a_b"},
            {"label": "Zone_1.x", "op": "not_in", "values": ["a", "b.c"]}],
        "spread": {"label": "zone", "max_per_machine": 2}}));
    assert!(spec.is_ok(), "{spec:?}");
}

#[test]
fn deep_or_huge_documents_are_refused_not_fatal() {
    let deep_json = "[".repeat(100_000);
    assert!(JobSpec::from_json(deep_json.as_bytes()).is_err());
    let deep_value = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(serde_json::from_str::<serde_json::Value>(&deep_value).is_err());
    let deep_json = format!("{{\"name\":{}", "{\"a\":".repeat(10_000));
    assert!(JobSpec::from_json(deep_json.as_bytes()).is_err());
    let deep_yaml = "[".repeat(100_000);
    assert!(JobSpec::from_yaml(&deep_yaml).is_err());
    let deep_yaml = (0..2_000)
        .map(|i| format!("{}a:\n", " ".repeat(i)))
        .collect::<String>();
    assert!(JobSpec::from_yaml(&deep_yaml).is_err());
    // A billion laughs: aliases that expand without bound.
    let mut laughs = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 0..9u8 {
        let (prev, next) = ((b'a' + i) as char, (b'b' + i) as char);
        laughs.push_str(&format!("{next}: &{next} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
    }
    assert!(JobSpec::from_yaml(&laughs).is_err());
}

fn accepted(task: serde_json::Value) -> Result<(), TestCaseError> {
    let v = with_task(task);
    let r = parse(v.clone());
    prop_assert!(r.is_ok(), "{} refused: {:?}", v, r);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn what_the_patterns_admit_is_accepted(
        program in pattern(PROGRAM_PATTERN),
        arg in pattern(ARG_PATTERN),
        env_name in pattern(ENV_NAME_PATTERN),
        cpu in pattern(CPU_PATTERN),
        size in pattern(SIZE_PATTERN),
        duration in pattern(DURATION_PATTERN),
    ) {
        prop_assume!(program.chars().count() <= MAX_ARG_CHARS && arg.chars().count() <= MAX_ARG_CHARS);
        accepted(json!({"command": [program, arg]}))?;
        if !env_name.starts_with("BORG_") {
            accepted(json!({"command": ["x"], "env": {env_name: "v"}}))?;
        }
        let cpu_is_zero = MilliCpu::parse(&Quantity::Text(cpu.clone())).is_ok_and(|c| c.0 == 0);
        if !cpu_is_zero {
            accepted(json!({"command": ["x"], "resources": {"cpu": cpu.clone()}}))?;
        }
        let in_range = |v: serde_json::Value| match parse(v.clone()) {
            Err(SpecError::Invalid { message, .. }) if message.contains("in all") || message.contains("longer than") => Ok(None),
            Ok(spec) => Ok(Some(spec)),
            Err(e) => Err(TestCaseError::fail(format!("{v} refused: {e:?}"))),
        };
        // What is stored and shown matches the patterns again (or a read would fail).
        if let Some(spec) = in_range(with_task(json!({"command": ["x"], "resources": {"disk": size}})))? {
            let stored = spec.to_json();
            let text = stored["task"]["resources"]["disk"].as_str().unwrap().to_string();
            prop_assert!(check_size_text(&text).is_ok(), "{} stored as {}", size, text);
            prop_assert_eq!(parse(stored).unwrap(), spec);
        }
        if let Some(spec) = in_range(with_task(json!({"command": ["x"], "kill_grace": duration})))? {
            let stored = spec.to_json();
            let text = stored["task"]["kill_grace"].as_str().unwrap().to_string();
            prop_assert!(check_duration_text(&text).is_ok(), "{} stored as {}", duration, text);
            prop_assert_eq!(parse(stored).unwrap(), spec);
        }
        if cpu_is_zero {
            return Ok(());
        }
        if let Some(spec) = in_range(with_task(json!({"command": ["x"], "resources": {"cpu": cpu.clone()}})))? {
            let text = spec.to_json()["task"]["resources"]["cpu"].as_str().unwrap().to_string();
            prop_assert!(check_cpu_text(&text).is_ok(), "{} stored as {}", cpu, text);
        }
    }

    #[test]
    fn label_patterns_admit_what_the_checks_accept(
        key in pattern(LABEL_KEY_PATTERN),
        value in pattern(LABEL_VALUE_PATTERN),
        list in pattern(VALUE_LIST_PATTERN),
    ) {
        if key.chars().count() <= MAX_LABEL_KEY_CHARS {
            prop_assert!(check_label_key(&key).is_ok(), "{key}");
        }
        prop_assert!(check_label_value(&value).is_ok(), "{value}");
        if list.chars().count() <= MAX_VALUE_LIST_CHARS {
            prop_assert!(check_value_list(&list).is_ok(), "{list}");
        }
    }
}
