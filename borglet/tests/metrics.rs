//! `GET /metrics` of real borglets sharing one process (and so one recorder):
//! each borglet's series carry its own machine label.

mod common;

use borg_shared::wire::AttemptPhase;
use common::{eventually, AttemptBuilder, TestBorglet};

async fn scrape(b: &TestBorglet) -> String {
    let resp = b
        .client
        .get(format!("{}/metrics", b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4",
        "Prometheus text format"
    );
    resp.text().await.unwrap()
}

/// The value of the sample `name{labels...}` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{')?;
        let have: Vec<&str> = rest.strip_suffix('}')?.split(',').collect();
        let all = labels
            .iter()
            .all(|(k, v)| have.contains(&format!("{k}=\"{v}\"").as_str()));
        (metric == name && all).then(|| value.parse().ok())?
    })
}

#[tokio::test]
async fn metrics_count_starts_stops_and_syncs_per_machine() {
    let b = TestBorglet::spawn().await;
    let other = TestBorglet::spawn().await;
    let m = b.name.as_str();
    let spec = AttemptBuilder::new(&["sleep", "1000"])
        .grace_ms(5_000)
        .build();
    let r = b.sync(std::slice::from_ref(&spec), &[]).await;
    assert_eq!(r.attempts[0].phase, AttemptPhase::Running);
    other.sync(&[], &[]).await;

    let text = scrape(&b).await;
    let machine = [("machine", m)];
    assert!(
        text.contains(&format!(
            "borglet_attempts_started_total{{machine=\"{m}\"}} 1\n"
        )),
        "{text}"
    );
    assert_eq!(
        sample(&text, "borglet_attempts_running", &machine),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "borglet_syncs_total",
            &[("machine", m), ("result", "ok")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "borglet_sync_duration_seconds_count", &machine),
        Some(1.0)
    );
    assert!(
        text.contains("borglet_sync_duration_seconds_bucket{"),
        "a histogram, not a summary: {text}"
    );
    assert!(text.contains("# HELP borglet_attempts_started_total "));
    // The other borglet started nothing.
    let theirs = [("machine", other.name.as_str())];
    assert_eq!(
        sample(&text, "borglet_attempts_started_total", &theirs).unwrap_or(0.0),
        0.0
    );

    // No longer wanted: stopped with SIGTERM; the gauge follows the reaper.
    b.sync_until(&[], spec.id, "stopped", |r| r.phase == AttemptPhase::Exited)
        .await;
    let text = scrape(&b).await;
    assert_eq!(
        sample(&text, "borglet_attempts_stopped_total", &machine),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "borglet_attempts_exited_total",
            &[("machine", m), ("how", "signaled")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "borglet_attempts_running", &machine),
        Some(0.0)
    );
}

#[tokio::test]
async fn metrics_count_failed_starts_and_rejected_syncs() {
    let b = TestBorglet::spawn().await;
    let m = b.name.as_str();
    let missing = AttemptBuilder::new(&["/nonexistent/program"]).build();
    let done = AttemptBuilder::sh("exit 3").build();
    b.sync(&[missing], &[]).await;
    b.sync_until(std::slice::from_ref(&done), done.id, "exited", |r| {
        r.phase == AttemptPhase::Exited
    })
    .await;
    let mut wrong = b.request(&[], &[]);
    wrong.machine = "someone-else".into();
    assert_eq!(b.post_sync(&wrong).await.status(), 409);

    let text = eventually("the exit is counted", || async {
        let text = scrape(&b).await;
        let exited = sample(
            &text,
            "borglet_attempts_exited_total",
            &[("machine", m), ("how", "exited")],
        );
        (exited == Some(1.0)).then_some(text)
    })
    .await;
    let machine = [("machine", m)];
    assert_eq!(
        sample(&text, "borglet_attempts_failed_to_start_total", &machine),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "borglet_attempts_started_total", &machine),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "borglet_syncs_total",
            &[("machine", m), ("result", "wrong_machine")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "borglet_attempts_running", &machine),
        Some(0.0)
    );
}
