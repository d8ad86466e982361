//! Which channel counts `ladder bench` tries, and in what order (pure).
//!
//! Doubling from one channel (1, 2, 4, ...) until a trial fails or the cap
//! (`--max-channels`) is reached (the cap itself is tried when doubling would
//! pass it); after the first failure, bisection between the largest count that
//! passed and the smallest that failed, until they are adjacent. The answer is
//! the largest count that passed (0 when one channel already fails). The
//! search assumes that a count that fails would also fail with more channels;
//! on a noisy box a later trial may contradict an earlier one, and the answer
//! is still the largest count whose own trial passed below the smallest that
//! failed.

/// Why the ramp stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// A trial failed: the answer is just below the smallest failing count.
    Criteria,
    /// The cap passed: the box may carry more.
    MaxChannels,
}

impl Limit {
    /// `criteria` or `max-channels` (the JSON's `result.limited_by`).
    pub fn name(self) -> &'static str {
        match self {
            Limit::Criteria => "criteria",
            Limit::MaxChannels => "max-channels",
        }
    }
}

/// The search state: feed it each trial's outcome, ask it for the next count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ramp {
    /// `--max-channels` (at least 1).
    max: u32,
    /// Every count that passed (a few: the search takes about two trials
    /// per doubling).
    passed: Vec<u32>,
    /// Smallest count that failed.
    failed: Option<u32>,
    /// The count to try next; `None` when the search is over.
    next: Option<u32>,
}

impl Ramp {
    /// A search capped at `max` channels (0 is taken as 1).
    pub fn new(max: u32) -> Ramp {
        Ramp {
            max: max.max(1),
            passed: Vec::new(),
            failed: None,
            next: Some(1),
        }
    }

    /// The next count to try; `None` once the answer is known.
    pub fn next(&self) -> Option<u32> {
        self.next
    }

    /// The outcome of the trial at `channels` (which should be [`Ramp::next`]).
    pub fn record(&mut self, channels: u32, pass: bool) {
        if pass {
            self.passed.push(channels);
        } else {
            self.failed = Some(self.failed.map_or(channels, |f| f.min(channels)));
        }
        let low = self.channels();
        self.next = match self.failed {
            // still doubling
            None if low >= self.max => None,
            None => Some(low.saturating_mul(2).clamp(1, self.max)),
            // bisecting between the largest pass below the smallest failure
            Some(failed) => (failed - low > 1).then(|| low + (failed - low) / 2),
        };
    }

    /// The answer so far: the largest count that passed below the smallest
    /// that failed (0 if none did).
    pub fn channels(&self) -> u32 {
        let below = |n: &&u32| self.failed.is_none_or(|f| **n < f);
        self.passed.iter().filter(below).max().copied().unwrap_or(0)
    }

    /// Why the search stopped (meaningful once [`Ramp::next`] is `None`).
    pub fn limit(&self) -> Limit {
        if self.failed.is_some() {
            Limit::Criteria
        } else {
            Limit::MaxChannels
        }
    }

    /// The smallest count that failed, if any.
    pub fn first_failing(&self) -> Option<u32> {
        self.failed
    }
}

/// Run a whole search with `trial` (channels -> passed?), returning the counts
/// tried in order and the final state. What `ladder bench` does, with real
/// trials; here for the tests and for callers that need no progress.
pub fn search(max: u32, mut trial: impl FnMut(u32) -> bool) -> (Vec<u32>, Ramp) {
    let mut ramp = Ramp::new(max);
    let mut tried = Vec::new();
    while let Some(n) = ramp.next() {
        tried.push(n);
        let pass = trial(n);
        ramp.record(n, pass);
    }
    (tried, ramp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A box that carries exactly `capacity` channels.
    fn capacity(capacity: u32, max: u32) -> (Vec<u32>, Ramp) {
        search(max, |n| n <= capacity)
    }

    #[test]
    fn doubles_then_bisects_to_the_exact_capacity() {
        let (tried, ramp) = capacity(5, 1024);
        assert_eq!(tried, vec![1, 2, 4, 8, 6, 5]);
        assert_eq!(ramp.channels(), 5);
        assert_eq!(ramp.limit(), Limit::Criteria);
        assert_eq!(ramp.first_failing(), Some(6));

        let (tried, ramp) = capacity(12, 1024);
        assert_eq!(tried, vec![1, 2, 4, 8, 16, 12, 14, 13]);
        assert_eq!(ramp.channels(), 12);
    }

    #[test]
    fn every_capacity_is_found_within_the_cap() {
        for cap in 0..=70 {
            let (tried, ramp) = capacity(cap, 64);
            assert_eq!(
                ramp.channels(),
                cap.min(64),
                "capacity {cap}: tried {tried:?}"
            );
            // never the same count twice, never above the cap
            let mut sorted = tried.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), tried.len(), "capacity {cap}: tried {tried:?}");
            assert!(tried.iter().all(|&n| (1..=64).contains(&n)));
            let limit = if cap >= 64 {
                Limit::MaxChannels
            } else {
                Limit::Criteria
            };
            assert_eq!(ramp.limit(), limit, "capacity {cap}");
        }
    }

    #[test]
    fn one_failing_channel_is_an_answer_of_zero() {
        let (tried, ramp) = capacity(0, 16);
        assert_eq!(tried, vec![1]);
        assert_eq!(ramp.channels(), 0);
        assert_eq!(ramp.limit(), Limit::Criteria);
    }

    #[test]
    fn the_cap_is_tried_when_doubling_would_pass_it() {
        let (tried, ramp) = capacity(100, 6);
        assert_eq!(tried, vec![1, 2, 4, 6]);
        assert_eq!(ramp.channels(), 6);
        assert_eq!(ramp.limit(), Limit::MaxChannels);

        let (tried, ramp) = capacity(100, 1);
        assert_eq!(tried, vec![1]);
        assert_eq!(ramp.channels(), 1);

        // a cap of 2, as `make test` runs it
        let (tried, ramp) = capacity(1, 2);
        assert_eq!(tried, vec![1, 2]);
        assert_eq!(ramp.channels(), 1);
        assert_eq!(ramp.limit(), Limit::Criteria);
    }

    #[test]
    fn a_contradicting_noisy_trial_does_not_report_a_failed_count() {
        // 4 fails, then 3 fails too, although 2 passed: the answer is 2
        let mut outcomes = vec![(1, true), (2, true), (4, false), (3, false)].into_iter();
        let (tried, ramp) = search(64, |n| {
            let (want, pass) = outcomes.next().expect("no more trials expected");
            assert_eq!(n, want);
            pass
        });
        assert_eq!(tried, vec![1, 2, 4, 3]);
        assert_eq!(ramp.channels(), 2);

        // a pass above a failure is not believed: 2 failed, so 3 cannot be the answer
        let mut ramp = Ramp::new(8);
        ramp.record(1, true);
        ramp.record(2, false);
        assert_eq!(ramp.next(), None);
        ramp.record(3, true);
        assert_eq!(ramp.channels(), 1);
    }
}
