//! The dashboard in a real browser: headless chromium driven through
//! chromedriver (WebDriver) against a real cell. Loads the page, submits a job
//! through the API, sees it appear and reach `running` without a reload, opens
//! its log tail, and keeps screenshots under `target/tmp/` as artifacts.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them).

mod support;

use fantoccini::{ClientBuilder, Locator};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::Cell;

struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver not found: apt-get install -y chromium chromium-driver");
        let url = format!("http://127.0.0.1:{port}");
        support::wait_for("chromedriver", Duration::from_secs(20), || {
            reqwest::blocking::get(format!("{url}/status"))
                .ok()
                .filter(|r| r.status().is_success())
        });
        Driver { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until `f` gives a value, polling the page with a deadline.
async fn until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text(c: &fantoccini::Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

/// The page asks for a token (the cell runs secured): type the cell's in.
async fn login(c: &fantoccini::Client, token: &str) {
    until("the token prompt", Duration::from_secs(20), || async {
        let form = c.find(Locator::Css("#login")).await.ok()?;
        form.is_displayed().await.ok()?.then_some(())
    })
    .await;
    let input = c.find(Locator::Css("#token-input")).await.unwrap();
    input.send_keys(token).await.unwrap();
    c.find(Locator::Css("#token-save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

fn artifact(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

#[test]
fn the_dashboard_shows_a_job_reach_running_and_tails_its_log() {
    let cell = Cell::start(1);
    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(browse(&cell, &driver, profile.path()));
}

async fn browse(cell: &Cell, driver: &Driver, profile: &std::path::Path) {
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", format!("--user-data-dir={}", profile.display()),
                "--window-size=1400,900",
            ]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session");

    c.goto(&format!("{}/", cell.master)).await.unwrap();
    login(&c, &cell.token).await;
    // A mark that a reload would wipe.
    c.execute("window.__loadedOnce = true;", vec![])
        .await
        .unwrap();
    until(
        "the event stream to open",
        Duration::from_secs(20),
        || async { (text(&c, "#live").await? == "live").then_some(()) },
    )
    .await;
    until(
        "machine m1 in the overview",
        Duration::from_secs(20),
        || async {
            text(&c, "#machine-bars")
                .await?
                .contains("m1")
                .then_some(())
        },
    )
    .await;

    // Submit through the API, not the page.
    let spec = serde_json::json!({
        "name": "web", "kind": "service", "replicas": 2,
        "task": {"command": ["/bin/sh", "-c", "echo dashboard says hello from $BORG_TASK_INDEX; exec sleep 600"],
                 "resources": {"cpu": 0.1, "memory": "16Mi"}}
    });
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/jobs", cell.master))
        .bearer_auth(&cell.token)
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);

    until(
        "job web running in the jobs table",
        Duration::from_secs(30),
        || async {
            let state = text(&c, "#jobs tr[data-job='web'] .state").await?;
            let tasks = text(&c, "#jobs tr[data-job='web'] .tasks").await?;
            (state == "running" && tasks == "2 running").then_some(())
        },
    )
    .await;
    until(
        "2 running tasks in the summary",
        Duration::from_secs(10),
        || async {
            text(&c, "#task-summary")
                .await?
                .contains("2 running")
                .then_some(())
        },
    )
    .await;
    until(
        "m1's cpu bar to show the 2 tasks",
        Duration::from_secs(10),
        || async {
            text(&c, "#machine-bars")
                .await?
                .contains("cpu 0.20 / 2")
                .then_some(())
        },
    )
    .await;
    std::fs::write(
        artifact("dashboard-overview.png"),
        c.screenshot().await.unwrap(),
    )
    .unwrap();

    // The job's page: its tasks, then the log tail of task 0.
    c.find(Locator::Css("#jobs tr[data-job='web'] .name a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        "task web/0 running on m1",
        Duration::from_secs(20),
        || async {
            let state = text(&c, "#tasks tr[data-task='0'] .state").await?;
            let machine = text(&c, "#tasks tr[data-task='0'] .machine").await?;
            (state == "running" && machine == "m1").then_some(())
        },
    )
    .await;
    c.find(Locator::Css("#tasks tr[data-task='0'] button.logs"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until("the log tail", Duration::from_secs(20), || async {
        text(&c, "#log")
            .await?
            .contains("dashboard says hello from 0")
            .then_some(())
    })
    .await;
    let events = text(&c, "#job-events").await.unwrap_or_default();
    assert!(events.contains("web/0"), "the job's events: {events}");
    std::fs::write(artifact("dashboard-job.png"), c.screenshot().await.unwrap()).unwrap();

    let still = c
        .execute("return window.__loadedOnce === true;", vec![])
        .await
        .unwrap();
    assert_eq!(
        still,
        serde_json::Value::Bool(true),
        "the page was reloaded"
    );

    // The machines page, also without a reload.
    c.find(Locator::Css("nav a[data-nav='machines']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        "m1 on the machines page",
        Duration::from_secs(10),
        || async {
            let state = text(&c, "#machines tr[data-machine='m1'] .state").await?;
            let tasks = text(&c, "#machines tr[data-machine='m1'] .tasks").await?;
            (state == "up" && tasks == "2").then_some(())
        },
    )
    .await;
    std::fs::write(
        artifact("dashboard-machines.png"),
        c.screenshot().await.unwrap(),
    )
    .unwrap();

    // The API reference, drawn from the master's own document.
    c.goto(&format!("{}/docs", cell.master)).await.unwrap();
    until(
        "the submit operation on /docs",
        Duration::from_secs(20),
        || async {
            let op = text(&c, "#submit_job").await?;
            (op.contains("POST") && op.contains("/v1/jobs") && op.contains("201")).then_some(())
        },
    )
    .await;
    let schema = text(&c, "#schema-JobSpec").await.unwrap_or_default();
    assert!(schema.contains("replicas"), "the JobSpec schema: {schema}");
    std::fs::write(artifact("docs.png"), c.screenshot().await.unwrap()).unwrap();
    c.close().await.unwrap();
}

/// By hand: `BORG_DASHBOARD_TASKS=10000 cargo test -p jobctl --test dashboard
/// -- --nocapture big`. Opens a job of that many tasks while it runs and
/// checks the page keeps up (every row live, the page answering) until all
/// succeed; prints how long it took and the slowest answer of the page.
#[test]
fn big_job_page_stays_live_when_asked() {
    let Some(n) = std::env::var("BORG_DASHBOARD_TASKS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    let cell = Cell::start(3);
    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(big(&cell, &driver, profile.path(), n));
}

async fn big(cell: &Cell, driver: &Driver, profile: &std::path::Path, n: usize) {
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", format!("--user-data-dir={}", profile.display()),
                "--window-size=1400,900",
            ]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session");
    c.goto(&format!("{}/", cell.master)).await.unwrap();
    login(&c, &cell.token).await;
    until(
        "the event stream to open",
        Duration::from_secs(20),
        || async { (text(&c, "#live").await? == "live").then_some(()) },
    )
    .await;
    let spec = serde_json::json!({
        "name": "many", "replicas": n,
        "task": {"command": ["/bin/true"], "resources": {"cpu": "10m", "memory": "4Mi"}}
    });
    let started = Instant::now();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/jobs", cell.master))
        .bearer_auth(&cell.token)
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    c.execute("location.hash = '#/jobs/many'", vec![])
        .await
        .unwrap();
    // (when asked, how long the page took to answer)
    let slowest = std::cell::RefCell::new((Duration::ZERO, Duration::ZERO));
    let rows_at = std::cell::RefCell::new(None);
    let want = format!("{n} succeeded");
    // The page answers while the cell works: every row is read in.
    let page_rows = || async {
        let asked = Instant::now();
        let rows = c
            .execute(
                "return document.querySelectorAll('#tasks tbody tr').length",
                vec![],
            )
            .await
            .ok()?;
        let took = asked.elapsed();
        slowest.replace_with(|s| (*s).max((took, asked - started)));
        if rows.as_u64() == Some(n as u64) && rows_at.borrow().is_none() {
            rows_at.replace(Some(started.elapsed()));
        }
        Some(())
    };
    // First the cell: the job succeeds (by the API), however long this machine takes.
    let api = reqwest::Client::new();
    until(
        "the job to succeed (by the API)",
        Duration::from_secs(120 + n as u64 / 5),
        || async {
            page_rows().await;
            let job: serde_json::Value = api
                .get(format!("{}/v1/jobs/many?tasks_limit=1", cell.master))
                .bearer_auth(&cell.token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            assert!(
                !matches!(job["state"].as_str(), Some("failed" | "killed")),
                "the job ended {}: {}",
                job["state"],
                job["tasks"][0]["reason"]
            );
            (job["state"] == "succeeded").then_some(())
        },
    )
    .await;
    let cell_done = started.elapsed();
    // Then the page: it shows what the API shows, without a reload.
    until(
        "every task succeeded on the page",
        Duration::from_secs(60),
        || async {
            page_rows().await;
            text(&c, "#job-counts")
                .await?
                .contains(want.as_str())
                .then_some(())
        },
    )
    .await;
    let slowest = slowest.into_inner();
    let rows_at = rows_at.into_inner();
    let done = started.elapsed();
    let succeeded_rows = c
        .execute(
            "return document.querySelectorAll('#tasks tbody td.state.s-succeeded').length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(succeeded_rows.as_u64(), Some(n as u64), "every row updated");
    // Rows updated by events show the run and its exit code as a page read would.
    let ran_once_exit_0 = c
        .execute(
            "return [...document.querySelectorAll('#tasks tbody tr')].filter(r => \
             r.querySelector('.runs').textContent === '1' && \
             r.querySelector('.exit').textContent === '0').length",
            vec![],
        )
        .await
        .unwrap();
    let seen = c
        .execute(
            "const m = {}; for (const r of document.querySelectorAll('#tasks tbody tr')) { \
             const k = r.querySelector('.runs').textContent + '/' + r.querySelector('.exit').textContent; \
             m[k] = (m[k] || 0) + 1; } return m",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        ran_once_exit_0.as_u64(),
        Some(n as u64),
        "runs 1, exit 0: rows by runs/exit {seen}"
    );
    std::fs::write(artifact("dashboard-big.png"), c.screenshot().await.unwrap()).unwrap();
    eprintln!(
        "{n} tasks: all rows on the page after {:?}, job succeeded after {cell_done:?}, every row succeeded on the page after {done:?}, slowest page answer {:?} (asked at {:?})",
        rows_at.unwrap_or_default(),
        slowest.0,
        slowest.1
    );
    c.close().await.unwrap();
}
