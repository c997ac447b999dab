//! How often a client refetches what a trigger names.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// Refetches of one step's events are at most this frequent (except `finished` triggers).
pub const STEP_REFETCH_EVERY: Duration = Duration::from_millis(500);

/// Leading-edge throttle with a trailing fetch: the first request runs at once, later ones
/// inside the window are folded into one that runs when the window ends, so the newest
/// events are never left unfetched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Throttle {
    last: Option<Instant>,
    due: Option<Instant>,
}

impl Throttle {
    /// Whether to fetch now; otherwise a trailing fetch is scheduled.
    pub fn request(&mut self, now: Instant, every: Duration, immediate: bool) -> bool {
        match self.last {
            Some(last) if !immediate && now < last + every => {
                self.due = Some(last + every);
                false
            }
            _ => {
                self.last = Some(now);
                self.due = None;
                true
            }
        }
    }

    /// Whether a scheduled trailing fetch is due now (and if so, it counts as done).
    pub fn poll(&mut self, now: Instant) -> bool {
        match self.due {
            Some(due) if now >= due => {
                self.last = Some(now);
                self.due = None;
                true
            }
            _ => false,
        }
    }

    /// When the scheduled trailing fetch is due, if one is.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Whether nothing was ever fetched through this throttle.
    pub fn never_fetched(&self) -> bool {
        self.last.is_none()
    }
}

/// One [`Throttle`] per step, for a client that follows every step a trigger names (as
/// the dashboard does with its open step panels).
#[derive(Debug, Clone)]
pub struct StepRefetch {
    every: Duration,
    steps: HashMap<String, Throttle>,
}

impl Default for StepRefetch {
    fn default() -> Self {
        Self::new(STEP_REFETCH_EVERY)
    }
}

impl StepRefetch {
    pub fn new(every: Duration) -> Self {
        Self { every, steps: HashMap::new() }
    }

    /// A `refresh_step_events` trigger named `steps`: the ones to fetch now. A `finished`
    /// trigger fetches all of them at once; the others get a trailing fetch (see [`Self::due`]).
    pub fn trigger(&mut self, steps: &[String], finished: bool, now: Instant) -> Vec<String> {
        let every = self.every;
        steps
            .iter()
            .filter(|s| self.steps.entry((*s).clone()).or_default().request(now, every, finished))
            .cloned()
            .collect()
    }

    /// The steps whose trailing fetch is due at `now` (each counts as fetched).
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        self.steps.iter_mut().filter_map(|(s, t)| t.poll(now).then(|| s.clone())).collect()
    }

    /// The earliest trailing fetch still to run.
    pub fn next_due(&self) -> Option<Instant> {
        self.steps.values().filter_map(Throttle::due).min()
    }

    /// Stops tracking a step (a finished step gets no more triggers).
    pub fn forget(&mut self, step: &str) {
        self.steps.remove(step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_burst_is_one_fetch_now_and_one_trailing_fetch() {
        let t0 = Instant::now();
        let mut r = StepRefetch::default();
        let s = vec!["m1-s1".to_string()];
        assert_eq!(r.trigger(&s, false, t0), s, "the first trigger fetches at once");
        for i in 1..10 {
            assert!(r.trigger(&s, false, t0 + i * 40 * MS).is_empty(), "folded into the window");
        }
        assert_eq!(r.next_due(), Some(t0 + 500 * MS));
        assert!(r.due(t0 + 499 * MS).is_empty());
        assert_eq!(r.due(t0 + 500 * MS), s, "the trailing fetch is not lost");
        assert!(r.due(t0 + 2000 * MS).is_empty(), "then quiet");
        assert_eq!(r.next_due(), None);
    }

    #[test]
    fn finished_fetches_at_once_and_steps_are_independent() {
        let t0 = Instant::now();
        let mut r = StepRefetch::default();
        let a = vec!["m1-s1".to_string()];
        let b = vec!["m1-s2".to_string()];
        assert_eq!(r.trigger(&a, false, t0), a);
        assert_eq!(r.trigger(&b, false, t0 + MS), b, "another step has its own window");
        assert_eq!(r.trigger(&a, true, t0 + 2 * MS), a, "finished is never held back");
        assert_eq!(r.next_due(), None, "the finished fetch replaced the trailing one");
        r.forget("m1-s1");
        assert_eq!(r.trigger(&a, false, t0 + 3 * MS), a, "a forgotten step starts afresh");
    }
}
