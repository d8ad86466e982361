//! Media time as a newtype with its timebase (ARCHITECTURE.md convention 8).
//!
//! RTMP carries 32-bit millisecond timestamps ([`RtmpTimestamp`]); after
//! normalisation ([`super::timeline`]) everything is a [`Timestamp`]: a signed
//! 64-bit tick count with the timescale it is counted in. CMAF tracks use 90 kHz
//! for video and the sample rate for audio.

use std::cmp::Ordering;

/// Milliseconds: the timescale of RTMP and FLV.
pub const MILLIS: u32 = 1_000;
/// The timescale of video tracks in CMAF (90 kHz, as MPEG systems use).
pub const VIDEO_TIMESCALE: u32 = 90_000;

/// A raw RTMP/FLV timestamp: 32-bit milliseconds that wrap after about 49.7 days.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RtmpTimestamp(pub u32);

/// A point (or a span) on a media timeline: `ticks / timescale` seconds.
#[derive(Clone, Copy, Debug)]
pub struct Timestamp {
    pub ticks: i64,
    pub timescale: u32,
}

impl Timestamp {
    pub const fn new(ticks: i64, timescale: u32) -> Self {
        Timestamp { ticks, timescale }
    }

    pub const fn from_millis(ms: i64) -> Self {
        Timestamp {
            ticks: ms,
            timescale: MILLIS,
        }
    }

    pub const fn zero(timescale: u32) -> Self {
        Timestamp {
            ticks: 0,
            timescale,
        }
    }

    /// The same instant in another timescale, rounded to the nearest tick.
    pub fn rescale(self, timescale: u32) -> Timestamp {
        if timescale == self.timescale || self.timescale == 0 {
            return Timestamp {
                ticks: self.ticks,
                timescale,
            };
        }
        // i64 x u32 fits in an i128 many times over: these cannot saturate
        let num = (self.ticks as i128).saturating_mul(timescale as i128);
        let den = self.timescale as i128;
        // round half away from zero (den > 0: checked above)
        let q = if num >= 0 {
            num.saturating_add(den / 2)
        } else {
            num.saturating_sub(den / 2)
        }
        .checked_div(den)
        .unwrap_or(0);
        Timestamp {
            ticks: q.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
            timescale,
        }
    }

    pub fn as_millis(self) -> i64 {
        self.rescale(MILLIS).ticks
    }

    pub fn as_secs_f64(self) -> f64 {
        if self.timescale == 0 {
            return 0.0;
        }
        self.ticks as f64 / self.timescale as f64
    }
}

/// `self - other`, in `self`'s timescale (saturating).
impl std::ops::Sub for Timestamp {
    type Output = Timestamp;
    fn sub(self, other: Timestamp) -> Timestamp {
        let o = other.rescale(self.timescale);
        Timestamp {
            ticks: self.ticks.saturating_sub(o.ticks),
            timescale: self.timescale,
        }
    }
}

/// `self + other`, in `self`'s timescale (saturating).
impl std::ops::Add for Timestamp {
    type Output = Timestamp;
    fn add(self, other: Timestamp) -> Timestamp {
        let o = other.rescale(self.timescale);
        Timestamp {
            ticks: self.ticks.saturating_add(o.ticks),
            timescale: self.timescale,
        }
    }
}

impl PartialEq for Timestamp {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Timestamp {}

impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> Ordering {
        // (cannot saturate: i64 x u32 fits in an i128)
        let a = (self.ticks as i128).saturating_mul(other.timescale as i128);
        let b = (other.ticks as i128).saturating_mul(self.timescale as i128);
        a.cmp(&b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescale_rounds_to_nearest() {
        assert_eq!(
            Timestamp::from_millis(33).rescale(VIDEO_TIMESCALE).ticks,
            2970
        );
        assert_eq!(Timestamp::new(1024, 48_000).rescale(MILLIS).ticks, 21);
        assert_eq!(Timestamp::new(-1500, 1000).rescale(1).ticks, -2);
    }

    #[test]
    fn compares_across_timescales() {
        assert_eq!(
            Timestamp::from_millis(1000),
            Timestamp::new(90_000, VIDEO_TIMESCALE)
        );
        assert!(Timestamp::from_millis(999) < Timestamp::new(90_000, VIDEO_TIMESCALE));
        assert_eq!(
            Timestamp::from_millis(2000) - Timestamp::new(48_000, 48_000),
            Timestamp::from_millis(1000)
        );
    }
}
