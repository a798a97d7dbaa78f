//! What a run of probe results means (pure): a run is unknown until a probe
//! passes, healthy from then on, and unhealthy once `failures` probes in a row
//! have failed, which ends the run (it is restarted in place).

/// What one probe result changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Passed, and it already was healthy.
    StillHealthy,
    /// Passed after being unknown or failing: healthy now.
    BecameHealthy,
    /// Failed, fewer than `failures` times in a row: its health stands.
    Failing { message: String, in_a_row: u32 },
    /// Failed `failures` times in a row: unhealthy, and the run is ended.
    Unhealthy { reason: String },
}

/// One run's probe results so far.
#[derive(Debug, Clone)]
pub struct Tracker {
    failures: u32,
    in_a_row: u32,
    healthy: Option<bool>,
}

impl Tracker {
    /// A fresh run, ended after `failures` failed probes in a row (at least 1).
    pub fn new(failures: u32) -> Self {
        Tracker {
            failures: failures.max(1),
            in_a_row: 0,
            healthy: None,
        }
    }

    pub fn healthy(&self) -> Option<bool> {
        self.healthy
    }

    /// Record one probe's result.
    pub fn observe(&mut self, result: Result<(), String>) -> Verdict {
        match result {
            Ok(()) => {
                self.in_a_row = 0;
                let was = self.healthy.replace(true);
                if was == Some(true) {
                    Verdict::StillHealthy
                } else {
                    Verdict::BecameHealthy
                }
            }
            Err(message) => {
                self.in_a_row += 1;
                if self.in_a_row < self.failures {
                    return Verdict::Failing {
                        message,
                        in_a_row: self.in_a_row,
                    };
                }
                self.healthy = Some(false);
                let reason = if self.failures == 1 {
                    message
                } else {
                    format!("{message} ({} probes in a row)", self.in_a_row)
                };
                Verdict::Unhealthy { reason }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(t: &mut Tracker) -> Verdict {
        t.observe(Err("connection refused".into()))
    }

    #[test]
    fn a_run_is_unknown_until_a_probe_passes_then_healthy() {
        let mut t = Tracker::new(3);
        assert_eq!(t.healthy(), None);
        assert!(matches!(fail(&mut t), Verdict::Failing { in_a_row: 1, .. }));
        assert_eq!(t.healthy(), None, "one failure decides nothing");
        assert_eq!(t.observe(Ok(())), Verdict::BecameHealthy);
        assert_eq!(t.observe(Ok(())), Verdict::StillHealthy);
        assert_eq!(t.healthy(), Some(true));
    }

    #[test]
    fn only_failures_in_a_row_make_it_unhealthy() {
        let mut t = Tracker::new(3);
        t.observe(Ok(()));
        fail(&mut t);
        fail(&mut t);
        assert_eq!(t.healthy(), Some(true), "below the threshold it stands");
        t.observe(Ok(()));
        fail(&mut t);
        fail(&mut t);
        assert_eq!(
            fail(&mut t),
            Verdict::Unhealthy {
                reason: "connection refused (3 probes in a row)".into()
            }
        );
        assert_eq!(t.healthy(), Some(false));
        let mut once = Tracker::new(1);
        assert_eq!(
            fail(&mut once),
            Verdict::Unhealthy {
                reason: "connection refused".into()
            }
        );
    }
}
