//! A minimal attempt spec for the crate's unit tests (`/bin/true`-like, no
//! limits, no checks), so each test module does not spell it out again.

use borg_shared::wire::AttemptSpec;
use borg_shared::AttemptId;

pub fn spec() -> AttemptSpec {
    AttemptSpec {
        id: AttemptId::new(),
        job: "j".into(),
        index: 0,
        command: vec!["true".into()],
        env: Default::default(),
        resources: Default::default(),
        kill_grace_ms: 100,
        restart: None,
        memory_limit: None,
        cpu_limit: None,
        ports: vec![],
        health: None,
        fence_after_ms: None,
    }
}
