//! Following one job through the master's event stream until it is done:
//! `run --wait` and `wait`. Task states are rebuilt from the job's events
//! (its whole history first, so nothing is counted twice or missed), shown as
//! a live progress bar on a terminal and as one line per change otherwise.

use crate::client::Client;
use crate::events::{EventStream, Query};
use crate::exit::JobFailed;
use crate::output::{emit, task_name};
use crate::watch::{self, Outcome};
use borg_shared::event_stream::{EventKind, StreamEvent};
use borg_shared::wire::JobView;
use borg_shared::JobKind;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::time::Duration;
use tokio::time::Instant;

/// Why-pending reasons are not events: while tasks wait, the job is read
/// this often to tell the user why (never faster).
const REASONS_EVERY: Duration = Duration::from_secs(2);

/// When following stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// A final job state (`wait`).
    Ended,
    /// A final state, or for a service every task running (`run --wait`).
    EndedOrServing,
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// One line per task transition (piped output).
    Lines,
    /// A live bar on the terminal.
    Bar,
    /// Nothing but the final line.
    Quiet,
}

impl Show {
    /// A bar only when both output streams are a terminal.
    pub fn for_terminal() -> Show {
        if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() {
            Show::Bar
        } else {
            Show::Lines
        }
    }
}

/// The task states of one job, as its events say.
#[derive(Debug, Default)]
pub struct Tracker {
    states: BTreeMap<i32, String>,
    said_reasons: HashMap<i32, String>,
}

impl Tracker {
    /// Apply a task event; the line that tells it (none for a creation).
    pub fn apply(&mut self, job: &str, e: &StreamEvent) -> Option<String> {
        let index = e.task_index?;
        self.states.insert(index, e.to.clone());
        let from = e.from.as_ref()?;
        let mut line = format!("{}  {from} -> {}", task_name(job, index), e.to);
        if let Some(m) = &e.machine {
            line.push_str(&format!("  on {m}"));
        }
        if let Some(r) = &e.reason {
            line.push_str(&format!("  ({r})"));
            self.said_reasons.insert(index, r.clone());
        }
        Some(line)
    }

    pub fn count(&self, state: &str) -> usize {
        self.states.values().filter(|s| *s == state).count()
    }

    /// `2 pending, 3 running, 5 succeeded` in lifecycle order.
    pub fn summary(&self) -> String {
        let order = [
            "pending",
            "assigned",
            "starting",
            "running",
            "succeeded",
            "failed",
            "killed",
            "lost",
        ];
        order
            .iter()
            .map(|s| (s, self.count(s)))
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn finished(&self) -> usize {
        ["succeeded", "failed", "killed", "lost"]
            .iter()
            .map(|s| self.count(s))
            .sum()
    }

    /// New why-pending reasons in `view`, each said once.
    fn pending_reasons(&mut self, view: &JobView) -> Vec<String> {
        let mut lines = Vec::new();
        for t in view.tasks.iter().flatten() {
            let Some(reason) = &t.reason else { continue };
            if self.states.get(&t.index).map(String::as_str) != Some("pending") {
                continue;
            }
            if self.said_reasons.get(&t.index) == Some(reason) {
                continue;
            }
            self.said_reasons.insert(t.index, reason.clone());
            lines.push(format!(
                "{}  pending: {reason}",
                task_name(&view.name, t.index)
            ));
        }
        lines
    }
}

struct Display {
    show: Show,
    bar: Option<ProgressBar>,
}

impl Display {
    fn new(show: Show, job: &JobView) -> Display {
        let bar = (show == Show::Bar).then(|| {
            let bar = ProgressBar::new(job.replicas.max(0) as u64);
            let style = ProgressStyle::with_template(
                "{spinner} job/{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(job.name.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Display { show, bar }
    }

    fn line(&self, text: &str) -> std::io::Result<()> {
        match (self.show, &self.bar) {
            (Show::Lines, _) => emit(text),
            _ => Ok(()),
        }
    }

    /// Lines a terminal user should see even with a bar: failures, reasons.
    fn notice(&self, text: &str) -> std::io::Result<()> {
        match (&self.bar, self.show) {
            (Some(bar), _) => {
                bar.println(text);
                Ok(())
            }
            (None, Show::Lines) => emit(text),
            (None, _) => Ok(()),
        }
    }

    fn update(&self, kind: JobKind, t: &Tracker) {
        if let Some(bar) = &self.bar {
            let done = match kind {
                JobKind::Batch => t.finished(),
                JobKind::Service => t.count("running"),
            };
            bar.set_position(done as u64);
            bar.set_message(t.summary());
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Follow `job` until `until`; the final line on success, `JobFailed` when
/// the job failed or was killed.
pub async fn follow(
    client: &Client,
    job: &JobView,
    until: Until,
    show: Show,
    deadline: Option<Instant>,
) -> anyhow::Result<String> {
    if job.state.is_terminal() {
        return final_outcome(client, &job.name).await;
    }
    let display = Display::new(show, job);
    let result = follow_events(client, job, until, &display, deadline).await;
    display.finish();
    result
}

async fn follow_events(
    client: &Client,
    job: &JobView,
    until: Until,
    display: &Display,
    deadline: Option<Instant>,
) -> anyhow::Result<String> {
    let mut stream = EventStream::open(
        client,
        Query {
            job: Some(job.name.clone()),
            history: true,
            follow: true,
            ..Default::default()
        },
    )
    .await?;
    let mut tracker = Tracker::default();
    let mut next_reasons = Instant::now() + REASONS_EVERY;
    let far = Instant::now() + Duration::from_secs(365 * 86400);
    loop {
        let event = tokio::select! {
            e = stream.next() => e?,
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)) => {
                anyhow::bail!(
                    "gave up waiting for job/{}: {}",
                    job.name,
                    tracker.summary()
                );
            }
            _ = tokio::time::sleep_until(next_reasons) => {
                next_reasons = Instant::now() + REASONS_EVERY;
                if tracker.count("pending") > 0 {
                    if let Ok(view) = client.job(&job.name).await {
                        for line in tracker.pending_reasons(&view) {
                            display.notice(&line)?;
                        }
                    }
                }
                continue;
            }
        };
        let Some(e) = event else {
            anyhow::bail!("the master ended the event stream");
        };
        if e.job_id != Some(job.id) {
            continue; // an earlier job of the same name
        }
        match e.kind {
            EventKind::Task => {
                if let Some(line) = tracker.apply(&job.name, &e) {
                    if matches!(e.to.as_str(), "failed" | "lost") {
                        display.notice(&line)?;
                    } else {
                        display.line(&line)?;
                    }
                }
                display.update(job.kind, &tracker);
                let n = job.replicas as usize;
                if until == Until::EndedOrServing
                    && job.kind == JobKind::Service
                    && tracker.count("running") == n
                {
                    return Ok(format!("job/{} is running ({n}/{n} tasks)", job.name));
                }
            }
            EventKind::Job => {
                if matches!(e.to.as_str(), "succeeded" | "failed" | "killed") {
                    return final_outcome(client, &job.name).await;
                }
            }
            EventKind::Machine => {}
        }
    }
}

async fn final_outcome(client: &Client, name: &str) -> anyhow::Result<String> {
    let view = client.job_with_all_tasks(name).await?;
    match watch::outcome(&view) {
        Outcome::Done(line) => Ok(line),
        Outcome::Failed(line) => Err(JobFailed(line).into()),
        Outcome::Waiting => Ok(format!("job/{name} is {}", view.state)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(index: i32, from: Option<&str>, to: &str) -> StreamEvent {
        StreamEvent {
            cursor: "1-1".into(),
            id: 1,
            time: chrono::Utc::now(),
            kind: EventKind::Task,
            job: Some("hello".into()),
            owner: None,
            job_id: None,
            task_index: Some(index),
            attempt: None,
            machine: from.map(|_| "m1".to_string()),
            from: from.map(str::to_string),
            to: to.into(),
            reason: None,
        }
    }

    #[test]
    fn the_tracker_counts_and_tells_transitions() {
        let mut t = Tracker::default();
        assert_eq!(t.apply("hello", &ev(0, None, "pending")), None);
        assert_eq!(t.apply("hello", &ev(1, None, "pending")), None);
        assert_eq!(t.summary(), "2 pending");
        assert_eq!(
            t.apply("hello", &ev(0, Some("pending"), "assigned"))
                .as_deref(),
            Some("hello/0  pending -> assigned  on m1")
        );
        t.apply("hello", &ev(0, Some("running"), "succeeded"));
        assert_eq!(t.summary(), "1 pending, 1 succeeded");
        assert_eq!(t.finished(), 1);
    }
}
