//! In-place restart policy (DESIGN.md): when a task's process exits, the borglet
//! starts it again itself, same attempt. Services always; batch tasks while
//! their run budget allows and they have not succeeded. The wait doubles from the
//! job's backoff up to `MAX_BACKOFF` and resets after `RESET_AFTER` of running
//! (as the kubelet's CrashLoopBackOff). A service that exits `HANDBACK_EXITS`
//! times within `HANDBACK_WINDOW` is handed back to the master, which moves it.
//! Pure: the caller gives the clock.

use crate::state::Exit;
use borg_shared::spec::RestartPolicy;
use borg_shared::wire::InPlaceRestart;
use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::time::Duration;

pub const MAX_BACKOFF: Duration = RestartPolicy::MAX_BACKOFF;
pub const RESET_AFTER: Duration = RestartPolicy::RESET_AFTER;
pub const HANDBACK_EXITS: usize = 5;
pub const HANDBACK_WINDOW: Duration = Duration::from_secs(10 * 60);

/// What one attempt has been through so far.
#[derive(Debug, Clone, Default)]
pub struct RestartLog {
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    /// Why the borglet ended the run before the latest restart, when it did
    /// (`health check failed: ...`); said instead of how it exited.
    pub last_cause: Option<String>,
    /// The wait before the next restart; zero until the first.
    next_backoff: Duration,
    /// When recent runs ended, for the hand-back rule.
    exits: VecDeque<DateTime<Utc>>,
}

/// What to do about an exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after this wait.
    Restart(Duration),
    /// The attempt is over; why, when it is not the plain end of the task.
    Final(Option<String>),
}

impl RestartLog {
    /// A log that has seen `restarts` restarts already (read back after a borglet restart).
    pub fn resumed(restarts: u32, last_exit: Option<Exit>, last_cause: Option<String>) -> Self {
        RestartLog {
            restarts,
            last_exit,
            last_cause,
            ..RestartLog::default()
        }
    }

    /// How the run before the latest restart ended, as reported: its cause if the
    /// borglet ended it, else its exit.
    pub fn last_end(&self) -> Option<String> {
        self.last_cause
            .clone()
            .or_else(|| self.last_exit.as_ref().map(Exit::describe))
    }

    /// The run `decision` was about was ended by the borglet because `why`: the
    /// restart's cause is that, and a final end says so.
    pub fn ended_by(&mut self, decision: Decision, why: String) -> Decision {
        match decision {
            Decision::Restart(wait) => {
                self.last_cause = Some(why);
                Decision::Restart(wait)
            }
            Decision::Final(None) => Decision::Final(Some(why)),
            Decision::Final(Some(note)) => Decision::Final(Some(format!("{why}; {note}"))),
        }
    }

    /// Decide about `exit` of a run that lasted `ran_for`, and record it.
    pub fn decide(
        &mut self,
        policy: Option<InPlaceRestart>,
        exit: &Exit,
        ran_for: Duration,
        now: DateTime<Utc>,
    ) -> Decision {
        let Some(policy) = policy else {
            return Decision::Final(None);
        };
        match (exit, policy.max_restarts) {
            // Nothing ran, or how it ended is unknown: no point in trying again here.
            (Exit::Unknown(_), _) => return Decision::Final(None),
            // A batch task that succeeded is done.
            (Exit::Code(0), Some(_)) => return Decision::Final(None),
            (_, Some(max)) if self.restarts >= max => {
                return Decision::Final(Some(format!("no runs left after {max} restarts")))
            }
            _ => {}
        }
        if policy.max_restarts.is_none() {
            let window = chrono::Duration::from_std(HANDBACK_WINDOW).unwrap_or_default();
            self.exits.retain(|t| now - *t < window);
            self.exits.push_back(now);
            if self.exits.len() >= HANDBACK_EXITS {
                return Decision::Final(Some(format!(
                    "exited {} times within {} min on this machine: handed back",
                    self.exits.len(),
                    HANDBACK_WINDOW.as_secs() / 60
                )));
            }
        }
        let base = Duration::from_millis(policy.backoff_ms);
        let wait = if self.next_backoff.is_zero() || ran_for >= RESET_AFTER {
            base
        } else {
            self.next_backoff
        };
        self.next_backoff = (wait * 2).min(MAX_BACKOFF).max(base);
        self.restarts += 1;
        self.last_exit = Some(exit.clone());
        self.last_cause = None;
        Decision::Restart(wait.min(MAX_BACKOFF))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(backoff_ms: u64) -> Option<InPlaceRestart> {
        Some(InPlaceRestart {
            max_restarts: None,
            backoff_ms,
        })
    }

    fn batch(max: u32) -> Option<InPlaceRestart> {
        Some(InPlaceRestart {
            max_restarts: Some(max),
            backoff_ms: 1000,
        })
    }

    const SHORT: Duration = Duration::from_secs(1);

    #[test]
    fn without_a_policy_nothing_restarts() {
        let mut log = RestartLog::default();
        assert_eq!(
            log.decide(None, &Exit::Code(1), SHORT, Utc::now()),
            Decision::Final(None)
        );
    }

    #[test]
    fn backoff_doubles_to_five_minutes_and_resets_after_ten_of_running() {
        let mut log = RestartLog::default();
        let mut now = Utc::now();
        let mut waits = Vec::new();
        for _ in 0..12 {
            // Spaced out so the hand-back rule does not fire.
            now += chrono::Duration::minutes(11);
            match log.decide(service(1000), &Exit::Code(1), SHORT, now) {
                Decision::Restart(w) => waits.push(w.as_secs()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        now += chrono::Duration::minutes(11);
        let after_long_run = log.decide(service(1000), &Exit::Code(1), RESET_AFTER, now);
        assert_eq!(after_long_run, Decision::Restart(Duration::from_secs(1)));
        assert_eq!(log.restarts, 13);
        assert_eq!(log.last_exit, Some(Exit::Code(1)));
    }

    #[test]
    fn a_service_exiting_five_times_in_ten_minutes_is_handed_back() {
        let mut log = RestartLog::default();
        let now = Utc::now();
        for i in 0..4 {
            let at = now + chrono::Duration::minutes(i);
            assert!(matches!(
                log.decide(service(10), &Exit::Signal(9), SHORT, at),
                Decision::Restart(_)
            ));
        }
        let fifth = log.decide(
            service(10),
            &Exit::Code(0),
            SHORT,
            now + chrono::Duration::minutes(4),
        );
        assert!(matches!(fifth, Decision::Final(Some(ref why)) if why.contains("handed back")));
        // Spread over more than the window, exits never hand it back.
        let mut log = RestartLog::default();
        for i in 0..10 {
            let at = now + chrono::Duration::minutes(3 * i);
            assert!(matches!(
                log.decide(service(10), &Exit::Code(1), SHORT, at),
                Decision::Restart(_)
            ));
        }
    }

    #[test]
    fn batch_restarts_within_its_budget_and_never_after_success() {
        let mut log = RestartLog::default();
        let now = Utc::now();
        assert_eq!(
            log.decide(batch(2), &Exit::Code(0), SHORT, now),
            Decision::Final(None)
        );
        assert!(matches!(
            log.decide(batch(2), &Exit::Code(3), SHORT, now),
            Decision::Restart(_)
        ));
        assert!(matches!(
            log.decide(batch(2), &Exit::Code(3), SHORT, now),
            Decision::Restart(_)
        ));
        assert!(matches!(
            log.decide(batch(2), &Exit::Code(3), SHORT, now),
            Decision::Final(Some(_))
        ));
        assert_eq!(log.restarts, 2);
        let mut none_left = RestartLog::default();
        assert!(matches!(
            none_left.decide(batch(0), &Exit::Code(1), SHORT, now),
            Decision::Final(_)
        ));
    }

    #[test]
    fn an_unknown_end_is_not_restarted() {
        let mut log = RestartLog::default();
        let d = log.decide(
            service(10),
            &Exit::Unknown("gone".into()),
            SHORT,
            Utc::now(),
        );
        assert_eq!(d, Decision::Final(None));
    }
}
