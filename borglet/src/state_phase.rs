//! The phases of an attempt and the one function that moves it between them.

use borg_shared::wire::AttemptPhase;
use chrono::{DateTime, Utc};

/// How an exited process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Waiting for the process failed; its status is unknown.
    Unknown(String),
}

impl Exit {
    /// `exited with code 3`, `killed by signal 9`, or the reason it is unknown.
    pub fn describe(&self) -> String {
        match self {
            Exit::Code(c) => format!("exited with code {c}"),
            Exit::Signal(s) => format!("killed by signal {s}"),
            Exit::Unknown(why) => why.clone(),
        }
    }
}

/// The phase of one attempt, carrying what is known in that phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Running {
        pid: i32,
        started_at: DateTime<Utc>,
    },
    /// SIGTERM sent because the attempt is no longer wanted; not yet exited.
    Stopping {
        pid: i32,
        started_at: DateTime<Utc>,
        since: DateTime<Utc>,
    },
    Exited {
        pid: i32,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        exit: Exit,
        stopped_by_borglet: bool,
    },
    FailedToStart {
        at: DateTime<Utc>,
        message: String,
    },
    /// Exited; to be started again in place (same attempt) after a wait.
    Backoff {
        pid: i32,
        started_at: DateTime<Utc>,
        exited_at: DateTime<Utc>,
        exit: Exit,
    },
}

/// What can happen to a started attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    StopRequested {
        at: DateTime<Utc>,
    },
    ProcessExited {
        at: DateTime<Utc>,
        exit: Exit,
    },
    /// Exited, and will be restarted in place.
    RestartScheduled {
        at: DateTime<Utc>,
        exit: Exit,
    },
    /// The restart started a new process.
    Restarted {
        at: DateTime<Utc>,
        pid: i32,
    },
    /// The restart could not start the task.
    RestartFailed {
        at: DateTime<Utc>,
        message: String,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("attempt in phase {phase:?} cannot take event {event:?}")]
pub struct InvalidTransition {
    pub phase: AttemptPhase,
    pub event: Event,
}

impl Phase {
    /// The allowed moves, in one screen. Anything else is a race lost to the
    /// process (e.g. a stop requested just after it exited) and is refused.
    pub fn transition(&self, event: Event) -> Result<Phase, InvalidTransition> {
        match (self, event) {
            (Phase::Running { pid, started_at }, Event::StopRequested { at }) => {
                Ok(Phase::Stopping {
                    pid: *pid,
                    started_at: *started_at,
                    since: at,
                })
            }
            (Phase::Running { pid, started_at }, Event::ProcessExited { at, exit }) => {
                Ok(Phase::Exited {
                    pid: *pid,
                    started_at: *started_at,
                    finished_at: at,
                    exit,
                    stopped_by_borglet: false,
                })
            }
            (
                Phase::Stopping {
                    pid, started_at, ..
                },
                Event::ProcessExited { at, exit },
            ) => Ok(Phase::Exited {
                pid: *pid,
                started_at: *started_at,
                finished_at: at,
                exit,
                stopped_by_borglet: true,
            }),
            (Phase::Running { pid, started_at }, Event::RestartScheduled { at, exit }) => {
                Ok(Phase::Backoff {
                    pid: *pid,
                    started_at: *started_at,
                    exited_at: at,
                    exit,
                })
            }
            (Phase::Backoff { .. }, Event::Restarted { at, pid }) => Ok(Phase::Running {
                pid,
                started_at: at,
            }),
            (Phase::Backoff { .. }, Event::RestartFailed { at, message }) => {
                Ok(Phase::FailedToStart { at, message })
            }
            // No process to signal: the stop is done at once.
            (
                Phase::Backoff {
                    pid,
                    started_at,
                    exited_at,
                    exit,
                },
                Event::StopRequested { .. },
            ) => Ok(Phase::Exited {
                pid: *pid,
                started_at: *started_at,
                finished_at: *exited_at,
                exit: exit.clone(),
                stopped_by_borglet: true,
            }),
            (phase, event) => Err(InvalidTransition {
                phase: phase.wire(),
                event,
            }),
        }
    }

    pub fn wire(&self) -> AttemptPhase {
        match self {
            Phase::Running { .. } => AttemptPhase::Running,
            Phase::Stopping { .. } => AttemptPhase::Stopping,
            Phase::Exited { .. } => AttemptPhase::Exited,
            Phase::FailedToStart { .. } => AttemptPhase::FailedToStart,
            Phase::Backoff { .. } => AttemptPhase::Backoff,
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(self, Phase::Exited { .. } | Phase::FailedToStart { .. })
    }

    /// The process exists and has not been reaped.
    pub fn is_live(&self) -> bool {
        matches!(self, Phase::Running { .. } | Phase::Stopping { .. })
    }
}
