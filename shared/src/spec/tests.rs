use super::*;
use serde_json::json;

fn parse(v: serde_json::Value) -> Result<JobSpec, SpecError> {
    JobSpec::from_json(v.to_string().as_bytes())
}

fn hello() -> serde_json::Value {
    json!({
        "name": "hello",
        "replicas": 3,
        "task": {"command": ["/bin/echo", "hi"], "resources": {"cpu": 0.25, "memory": "64Mi"}}
    })
}

fn field_of(r: Result<JobSpec, SpecError>) -> String {
    match r {
        Err(SpecError::Invalid { field, .. }) => field,
        other => panic!("expected an invalid-spec error, got {other:?}"),
    }
}

#[test]
fn minimal_spec_gets_defaults() {
    let spec = parse(hello()).unwrap();
    assert_eq!(spec.kind, JobKind::Batch);
    assert_eq!(spec.priority, 100);
    assert_eq!(spec.owner, "default");
    assert_eq!(spec.task.resources.cpu, MilliCpu(250));
    assert_eq!(spec.task.resources.memory, Bytes(64 << 20));
    assert_eq!(spec.task.kill_grace(), Duration::from_secs(10));
}

#[test]
fn design_md_example_parses_from_yaml() {
    let yaml = r#"
name: hello
kind: batch
owner: default
priority: 100
replicas: 3
task:
  command: ["/bin/sh", "-c", "echo hello from task $BORG_TASK_INDEX"]
  env: {GREETING: hi}
  resources: {cpu: 0.25, memory: 64Mi, disk: 100Mi, ports: 1}
  restart: {max_attempts: 3, backoff: 1s}
  health: {http: {path: /healthz, port: 0}, interval: 5s, timeout: 2s, failures: 3}
  kill_grace: 10s
  fence_after: 30s
constraints:
  - {label: zone, op: "!=", value: b}
spread: {label: zone}
update: {max_unavailable: 1, max_surge: 0, min_healthy: 5s}
"#;
    // Health checks are for services: the example's batch job with one is refused.
    let err = JobSpec::from_yaml(yaml).unwrap_err();
    assert_eq!(err.field(), Some("task.health"), "{err}");
    assert!(err.to_string().contains("not supported yet"), "{err}");
    let spec = JobSpec::from_yaml(&yaml.replace("kind: batch", "kind: service")).unwrap();
    let health = spec.task.health.as_ref().unwrap();
    assert_eq!(health.interval(), Duration::from_secs(5));
    assert_eq!(health.initial_delay(), Duration::ZERO);
    assert_eq!(spec.task.resources.disk, Bytes(100 << 20));
    assert_eq!(spec.task.max_attempts(), 3);
    assert_eq!(spec.constraints[0].op, ConstraintOp::Ne);
    assert_eq!(spec.task.fence_after, Some(Duration::from_secs(30)));
}

#[test]
fn stored_form_round_trips_exactly() {
    let mut v = hello();
    v["task"]["resources"]["memory"] = json!(1_000_000_000u64);
    v["task"]["kill_grace"] = json!("1m30s");
    let spec = parse(v).unwrap();
    let again = parse(spec.to_json()).unwrap();
    assert_eq!(spec, again);
    assert_eq!(again.task.resources.memory, Bytes(1_000_000_000));
}

#[test]
fn bad_inputs_name_their_field() {
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            json!({"name": "Bad_Name", "task": {"command": ["x"]}}),
            "name",
        ),
        (json!({"name": "", "task": {"command": ["x"]}}), "name"),
        (
            json!({"name": "a", "task": {"command": ["x"], "fence_after": "500ms"}}),
            "task.fence_after",
        ),
        (
            json!({"name": "a", "replicas": 0, "task": {"command": ["x"]}}),
            "replicas",
        ),
        (
            json!({"name": "a", "replicas": 10001, "task": {"command": ["x"]}}),
            "replicas",
        ),
        (
            json!({"name": "a", "task": {"command": []}}),
            "task.command",
        ),
        (
            json!({"name": "a", "task": {"command": [""]}}),
            "task.command[0]",
        ),
        (
            json!({"name": "a", "bogus": 1, "task": {"command": ["x"]}}),
            "bogus",
        ),
        (
            json!({"name": "a", "task": {"command": ["x"], "colour": 1}}),
            "task.colour",
        ),
        (
            json!({"name": "a", "task": {"command": ["x"], "resources": {"cpu": "lots"}}}),
            "task.resources.cpu",
        ),
        (
            json!({"name": "a", "task": {"command": ["x"], "resources": {"memory": "-5Mi"}}}),
            "task.resources.memory",
        ),
        (
            json!({"name": "a", "task": {"command": ["x"], "resources": {"cpu": -1}}}),
            "task.resources.cpu",
        ),
        (
            json!({"name": "a", "task": {"command": ["x"], "resources": {"memory": "64Mi", "memory_limit": "32Mi"}}}),
            "task.resources.memory_limit",
        ),
        (
            json!({"name": "a", "task": {"command": ["x"], "resources": {"memory": "1Mi", "memory_limit": "2Mi"}}}),
            "task.resources.memory_limit",
        ),
        (
            // Without a limit the request is the hard cap: too small to start anything.
            json!({"name": "a", "task": {"command": ["x"], "resources": {"memory": "1Mi"}}}),
            "task.resources.memory",
        ),
        (
            json!({"name": "a", "task": {"command": ["x"], "resources": {"memory_limit": "lots"}}}),
            "task.resources.memory_limit",
        ),
        (
            json!({"name": "a", "task": {"command": ["x"], "resources": {"cpu": "1", "cpu_limit": "500m"}}}),
            "task.resources.cpu_limit",
        ),
        (
            json!({"name": "a", "priority": 1001, "task": {"command": ["x"]}}),
            "priority",
        ),
        (
            json!({"name": "a", "priority": -1, "task": {"command": ["x"]}}),
            "priority",
        ),
        (
            json!({"name": "a", "kind": "cron", "task": {"command": ["x"]}}),
            "kind",
        ),
        (
            json!({"name": "a", "task": {"command": ["x"], "kill_grace": "soon"}}),
            "task.kill_grace",
        ),
        (
            json!({"name": "a", "task": {"command": ["x"], "env": {"BORG_JOB": "x"}}}),
            "task.env.BORG_JOB",
        ),
        (
            json!({"name": "a", "constraints": [{"label": "zone", "op": "="}], "task": {"command": ["x"]}}),
            "constraints[0].value",
        ),
        (
            json!({"name": "a", "constraints": [{"label": "zone", "op": "~"}], "task": {"command": ["x"]}}),
            "constraints[0].op",
        ),
        (json!({"name": "a"}), "."),
    ];
    for (input, want) in cases {
        let got = field_of(parse(input.clone()));
        assert_eq!(got, want, "for {input}");
    }
}

#[test]
fn malformed_json_is_not_a_field_error() {
    let err = JobSpec::from_json(b"{\"name\": ").unwrap_err();
    assert!(matches!(err, SpecError::Malformed { .. }), "{err:?}");
    let err = JobSpec::from_yaml("name: [unclosed").unwrap_err();
    assert!(matches!(err, SpecError::Malformed { .. }), "{err:?}");
}

#[test]
fn constraints_match_labels() {
    let labels: BTreeMap<String, String> = [("zone".to_string(), "a".to_string())].into();
    let c = |op, value: Option<&str>| Constraint {
        label: "zone".into(),
        op,
        value: value.map(str::to_string),
        values: vec![],
    };
    assert!(c(ConstraintOp::Eq, Some("a")).matches(&labels));
    assert!(!c(ConstraintOp::Ne, Some("a")).matches(&labels));
    assert!(c(ConstraintOp::In, Some("b, a")).matches(&labels));
    assert!(!c(ConstraintOp::NotIn, Some("a,b")).matches(&labels));
    assert!(c(ConstraintOp::Exists, None).matches(&labels));
    assert!(!c(ConstraintOp::Exists, None).matches(&BTreeMap::new()));
    assert!(c(ConstraintOp::Ne, Some("a")).matches(&BTreeMap::new()));
}

#[test]
fn hard_limits_round_trip() {
    let spec = JobSpec::from_yaml(
        "name: capped\ntask:\n  command: [x]\n  resources: {cpu: 250m, cpu_limit: 1, memory: 64Mi, memory_limit: 128Mi}\n",
    )
    .unwrap();
    let r = &spec.task.resources;
    assert_eq!(r.cpu_limit, Some(MilliCpu(1000)));
    assert_eq!(r.memory_limit, Some(Bytes(128 << 20)));
    let again = JobSpec::from_json(&serde_json::to_vec(&spec).unwrap()).unwrap();
    assert_eq!(again, spec);
    assert_eq!(spec.to_json()["task"]["resources"]["memory_limit"], "128Mi");
}

fn service_with(health: serde_json::Value) -> serde_json::Value {
    json!({"name": "web", "kind": "service",
           "task": {"command": ["x"], "resources": {"ports": 2}, "health": health}})
}

#[test]
fn health_checks_get_defaults_and_resolve_to_host_ports() {
    let spec = parse(service_with(
        json!({"http": {"path": "/healthz", "port": 1}}),
    ))
    .unwrap();
    let h = spec.task.health.clone().unwrap();
    assert_eq!(h.interval(), Duration::from_secs(10));
    assert_eq!(h.timeout(), Duration::from_secs(2));
    assert_eq!(h.failures(), 3);
    assert_eq!(h.initial_delay(), Duration::ZERO);
    let probe = h.resolve(&[20000, 20001]).unwrap();
    assert_eq!(
        probe.probe,
        crate::wire::ProbeKind::Http {
            port: 20001,
            path: "/healthz".into()
        }
    );
    assert_eq!(
        (probe.interval_ms, probe.timeout_ms, probe.failures),
        (10_000, 2_000, 3)
    );
    assert!(h.resolve(&[20000]).is_none(), "no host port for index 1");
    let exec = parse(service_with(json!({
        "exec": {"command": ["test", "-f", "healthy"]},
        "interval": "500ms", "timeout": "200ms", "failures": 1, "initial_delay": "1m"
    })))
    .unwrap();
    let probe = exec.task.health.as_ref().unwrap().resolve(&[]).unwrap();
    assert_eq!(
        (probe.interval_ms, probe.timeout_ms, probe.initial_delay_ms),
        (500, 200, 60_000)
    );
    assert_eq!(parse(exec.to_json()).unwrap().to_json(), exec.to_json());
}

#[test]
fn bad_health_checks_name_their_field() {
    let cases = [
        (json!({}), "task.health"),
        (
            json!({"tcp": {"port": 0}, "exec": {"command": ["x"]}}),
            "task.health",
        ),
        (json!({"tcp": {"port": 2}}), "task.health.tcp.port"),
        (
            json!({"http": {"path": "healthz", "port": 0}}),
            "task.health.http.path",
        ),
        (
            json!({"http": {"path": "/a b", "port": 0}}),
            "task.health.http.path",
        ),
        (json!({"exec": {"command": []}}), "task.health.exec.command"),
        (
            json!({"exec": {"command": [" "]}}),
            "task.health.exec.command[0]",
        ),
        (
            json!({"tcp": {"port": 0}, "interval": "10ms"}),
            "task.health.interval",
        ),
        (
            json!({"tcp": {"port": 0}, "interval": "1s", "timeout": "2s"}),
            "task.health.timeout",
        ),
        (
            json!({"tcp": {"port": 0}, "timeout": "0s"}),
            "task.health.timeout",
        ),
        (
            json!({"tcp": {"port": 0}, "failures": 0}),
            "task.health.failures",
        ),
        (
            json!({"tcp": {"port": 0}, "initial_delay": "2h"}),
            "task.health.initial_delay",
        ),
        (
            json!({"tcp": {"port": 0}, "grace": "1s"}),
            "task.health.grace",
        ),
        (json!({"udp": {"port": 0}}), "task.health.udp"),
    ];
    for (health, want) in cases {
        let got = field_of(parse(service_with(health.clone())));
        assert_eq!(got, want, "for {health}");
    }
    let mut batch = service_with(json!({"tcp": {"port": 0}}));
    batch["kind"] = json!("batch");
    assert_eq!(field_of(parse(batch)), "task.health");
}

#[test]
fn the_web_example_parses() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/web.yaml"))
            .unwrap();
    let spec = JobSpec::from_yaml(&text).unwrap();
    assert_eq!(
        spec.task.health.unwrap().initial_delay(),
        Duration::from_secs(2)
    );
}

#[test]
fn a_small_request_under_a_limit_is_accepted() {
    let spec = parse(json!({"name": "a", "task": {"command": ["x"],
        "resources": {"memory": "1Mi", "memory_limit": "4Mi"}}}))
    .expect("a request below 4Mi with a 4Mi cap");
    assert_eq!(spec.task.resources.memory, Bytes(1 << 20));
}

#[test]
fn a_retry_waits_twice_as_long_after_each_failure_up_to_five_minutes() {
    let after = |n| RestartPolicy::backoff_after(Duration::from_secs(1), n);
    assert_eq!(after(0), Duration::from_secs(1));
    assert_eq!(after(1), Duration::from_secs(1));
    assert_eq!(after(2), Duration::from_secs(2));
    assert_eq!(after(4), Duration::from_secs(8));
    assert_eq!(after(9), Duration::from_secs(256));
    assert_eq!(after(10), RestartPolicy::MAX_BACKOFF);
    assert_eq!(after(u32::MAX), RestartPolicy::MAX_BACKOFF);
    // A base above the cap is the wait itself.
    let long = Duration::from_secs(600);
    assert_eq!(RestartPolicy::backoff_after(long, 3), long);
}
