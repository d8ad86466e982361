//! Reconnection delays: exponential, capped, with jitter (sans-IO: the caller
//! supplies the randomness).
//!
//! Attempt n waits `min(MAX_DELAY, BASE_DELAY * 2^n)`, of which the second half is
//! random ("equal jitter"), so that many channels that lost one destination at
//! the same moment do not reconnect in step. A connection that stayed up for
//! [`STABLE_AFTER`] resets the sequence; one that drops sooner does not, so a
//! destination that accepts and at once closes is not hammered.

use std::time::Duration;

/// The first wait.
pub const BASE_DELAY: Duration = Duration::from_secs(1);
/// The longest wait: a destination that comes back is used again within a minute.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// A connection up this long counts as a success: the next failure waits
/// [`BASE_DELAY`] again.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);

/// See the module docs.
#[derive(Clone, Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub fn new() -> Self {
        Backoff::default()
    }

    /// The wait before the next attempt, given a random `u64`.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let full = BASE_DELAY
            .saturating_mul(1u32.checked_shl(self.attempt).unwrap_or(u32::MAX))
            .min(MAX_DELAY);
        self.attempt = self.attempt.saturating_add(1);
        let half = full / 2;
        let half_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_millis(random % half_ms)
    }

    /// A connection ended after being up for `up`: reset when it was stable.
    pub fn connection_ended(&mut self, up: Duration) {
        if up >= STABLE_AFTER {
            self.attempt = 0;
        }
    }

    /// Attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// A random `u64` for [`Backoff::next_delay`] (not a secret: std's hasher seed).
pub fn jitter_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_half_jitter() {
        let mut b = Backoff::new();
        let lows: Vec<Duration> = (0..9).map(|_| b.next_delay(0)).collect();
        let secs: Vec<f64> = lows.iter().map(Duration::as_secs_f64).collect();
        assert_eq!(secs, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
        let mut b = Backoff::new();
        let highs: Vec<Duration> = (0..9).map(|_| b.next_delay(u64::MAX - 1)).collect();
        for (lo, hi) in lows.iter().zip(&highs) {
            assert!(hi >= lo && *hi < *lo * 2, "{lo:?} {hi:?}");
        }
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new();
        for i in 0..200u64 {
            assert!(b.next_delay(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) <= MAX_DELAY);
        }
    }

    #[test]
    fn only_a_stable_connection_resets() {
        let mut b = Backoff::new();
        b.next_delay(0);
        b.next_delay(0);
        b.connection_ended(Duration::from_secs(2));
        assert_eq!(b.attempts(), 2);
        b.connection_ended(STABLE_AFTER);
        assert_eq!(b.attempts(), 0);
        assert_eq!(b.next_delay(0), BASE_DELAY / 2);
    }
}
