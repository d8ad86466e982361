//! Input rates of a live channel over a sliding window: video and audio
//! bitrate and video frame rate, what the admin API and the metrics report
//! (SPEC.md, "URLs": the API; issue 6 §4).
//!
//! Sans-IO: the publish session [`InputMeter::record`]s each demuxed access
//! unit with `now`; readers ask for [`InputMeter::rates`] at their `now`.
//! The meter keeps running totals and a few samples of them, one per
//! [`SAMPLE_INTERVAL`] at most, [`SAMPLES`] at most (bounded whatever the
//! frame rate); a rate is the growth of the totals from the oldest sample
//! still inside [`WINDOW`] to `now`. A stream that stops shows falling
//! rates, then zero once its last sample is older than the window.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How far back rates look.
pub const WINDOW: Duration = Duration::from_secs(5);
/// Least time between two samples.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(500);
/// Samples kept: enough to cover [`WINDOW`] at [`SAMPLE_INTERVAL`], plus one
/// older sample as the window's start. Older ones are dropped.
pub const SAMPLES: usize = 12;

/// Running totals of what a publisher sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Video access units.
    pub video_frames: u64,
    /// Video payload bytes (elementary stream, no FLV or RTMP framing).
    pub video_bytes: u64,
    /// Audio access units.
    pub audio_frames: u64,
    /// Audio payload bytes.
    pub audio_bytes: u64,
}

/// Rates over the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Rates {
    /// Video bits per second.
    pub video_bitrate: f64,
    /// Audio bits per second.
    pub audio_bitrate: f64,
    /// Video access units per second.
    pub video_fps: f64,
}

/// What a media message was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A video access unit.
    Video,
    /// An audio access unit.
    Audio,
}

#[derive(Debug, Default)]
struct State {
    totals: Totals,
    /// (when, totals then), oldest first.
    samples: VecDeque<(Instant, Totals)>,
}

/// One publish session's meter. Shared by the session (writer) and the
/// admin API (readers); each call holds a small lock briefly.
#[derive(Debug, Default)]
pub struct InputMeter {
    state: Mutex<State>,
}

impl InputMeter {
    /// A meter with nothing recorded.
    pub fn new() -> InputMeter {
        InputMeter::default()
    }

    /// An access unit of `bytes` arrived at `now`.
    pub fn record(&self, kind: Kind, bytes: usize, now: Instant) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // the sample marks the totals *before* this unit: a window starting
        // at it counts the unit
        let due = s
            .samples
            .back()
            .is_none_or(|(t, _)| now.saturating_duration_since(*t) >= SAMPLE_INTERVAL);
        if due {
            let totals = s.totals;
            s.samples.push_back((now, totals));
            while s.samples.len() > SAMPLES {
                s.samples.pop_front();
            }
        }
        let bytes = bytes as u64;
        match kind {
            Kind::Video => {
                s.totals.video_frames += 1;
                s.totals.video_bytes += bytes;
            }
            Kind::Audio => {
                s.totals.audio_frames += 1;
                s.totals.audio_bytes += bytes;
            }
        }
    }

    /// Everything recorded so far.
    pub fn totals(&self) -> Totals {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).totals
    }

    /// The rates over the last [`WINDOW`] before `now`: from the oldest
    /// sample inside it (zero when there is none) to the totals at `now`.
    pub fn rates(&self, now: Instant) -> Rates {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let start = s
            .samples
            .iter()
            .find(|(t, _)| now.saturating_duration_since(*t) <= WINDOW);
        let Some((t0, base)) = start else {
            return Rates::default();
        };
        let secs = now.saturating_duration_since(*t0).as_secs_f64();
        // a window of one instant has no rate yet
        if secs < SAMPLE_INTERVAL.as_secs_f64() {
            return Rates::default();
        }
        let per_second = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
        Rates {
            video_bitrate: per_second(s.totals.video_bytes, base.video_bytes) * 8.0,
            audio_bitrate: per_second(s.totals.audio_bytes, base.audio_bytes) * 8.0,
            video_fps: per_second(s.totals.video_frames, base.video_frames),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 30 fps video of 5,000 bytes and 47 audio frames/s of 300 bytes, for
    /// `secs` seconds from `t0`, in time order, on a fake clock.
    fn feed(m: &InputMeter, t0: Instant, secs: u64) {
        let mut units: Vec<(u64, Kind, usize)> = (0..secs * 30)
            .map(|i| (i * 1_000_000 / 30, Kind::Video, 5_000))
            .chain((0..secs * 47).map(|i| (i * 1_000_000 / 47, Kind::Audio, 300)))
            .collect();
        units.sort_by_key(|u| u.0);
        for (us, kind, bytes) in units {
            m.record(kind, bytes, t0 + Duration::from_micros(us));
        }
    }

    #[test]
    fn steady_stream_rates() {
        let m = InputMeter::new();
        let t0 = Instant::now();
        feed(&m, t0, 10);
        let r = m.rates(t0 + Duration::from_secs(10));
        assert!((r.video_fps - 30.0).abs() < 0.5, "{r:?}");
        assert!((r.video_bitrate - 1_200_000.0).abs() < 20_000.0, "{r:?}");
        assert!((r.audio_bitrate - 112_800.0).abs() < 3_000.0, "{r:?}");
        assert_eq!(m.totals().video_frames, 300);
        assert_eq!(m.totals().audio_bytes, 470 * 300);
    }

    #[test]
    fn a_stopped_stream_falls_to_zero() {
        let m = InputMeter::new();
        let t0 = Instant::now();
        feed(&m, t0, 4);
        let live = m.rates(t0 + Duration::from_secs(4));
        let later = m.rates(t0 + Duration::from_secs(8));
        assert!(later.video_fps < live.video_fps, "{live:?} {later:?}");
        assert_eq!(m.rates(t0 + Duration::from_secs(30)), Rates::default());
    }

    #[test]
    fn nothing_recorded_is_zero_and_samples_stay_bounded() {
        let m = InputMeter::new();
        let t0 = Instant::now();
        assert_eq!(m.rates(t0), Rates::default());
        for i in 0..100_000u64 {
            m.record(Kind::Video, 10, t0 + Duration::from_millis(i * 7));
        }
        assert!(m.state.lock().unwrap().samples.len() <= SAMPLES);
    }
}
