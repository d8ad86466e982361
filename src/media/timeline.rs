//! One 64-bit media timeline per channel from 32-bit RTMP timestamps.
//!
//! RTMP message timestamps (RTMP spec §5.3.1.2, FLV spec v10.1 annex E.4.1) are
//! 32-bit milliseconds: they wrap after about 49.7 days, and real publishers
//! also send timestamps that step backwards, repeat, or jump (encoder restarts,
//! OBS scene changes, relays that splice streams). CMAF needs decode times that
//! are continuous and strictly increasing per track (ISO/IEC 23000-19 §7.3.2.2,
//! `tfdt`/`trun`), so this module turns the raw values into a [`Timestamp`] in
//! milliseconds that never goes backwards:
//!
//! - **Rollover**: each track unwraps its raw value against the previous one as
//!   a signed 32-bit delta, so `0xFFFF_FFF0 → 0x0000_0010` is +32 ms.
//! - **Jumps**: a step forward of more than [`MAX_FORWARD_JUMP_MS`] or back by
//!   more than [`MAX_BACKWARD_STEP_MS`], measured on the track's own output,
//!   re-anchors the offset shared by audio and video so the timeline continues
//!   one frame interval after the track's last output. Both tracks use the same
//!   offset, so a jump the publisher makes on both keeps them in sync.
//! - **Small steps back and repeats**: the output becomes `last + 1 ms` with a
//!   notice; the offset is left alone so the next good timestamp lands where
//!   the publisher meant it.
//!
//! Monotonicity is per track: audio running 20 ms behind video is normal
//! interleaving, not a step back.

use std::fmt;

use super::{RtmpTimestamp, Timestamp};

/// A step forward larger than this (on one track's output) is a discontinuity,
/// not a gap: a publisher whose clock leaps hours ahead would otherwise stall
/// players waiting for media that never comes.
pub const MAX_FORWARD_JUMP_MS: i64 = 5_000;

/// A step backward larger than this is a discontinuity (encoder restart).
/// Smaller ones are clamped to keep decode times strictly increasing.
pub const MAX_BACKWARD_STEP_MS: i64 = 1_000;

/// Frame interval assumed for video when a jump comes before two frames.
pub const DEFAULT_VIDEO_INTERVAL_MS: i64 = 33;
/// Frame interval assumed for audio when a jump comes before two frames
/// (1024 samples at 48 kHz).
pub const DEFAULT_AUDIO_INTERVAL_MS: i64 = 21;

/// Notices held until [`Timeline::take_notices`]; beyond this they are only
/// counted. A publisher sending garbage timestamps on every frame must not grow
/// memory without bound if the caller is slow to drain.
pub const MAX_PENDING_NOTICES: usize = 64;

/// Which track a timestamp belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrackKind {
    Video,
    Audio,
}

impl fmt::Display for TrackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrackKind::Video => "video",
            TrackKind::Audio => "audio",
        })
    }
}

/// Something about the publisher's timestamps worth a log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimelineNotice {
    /// The 32-bit timestamp wrapped past 0xFFFF_FFFF (normal after 49.7 days).
    Rollover {
        kind: TrackKind,
        from_ms: u32,
        to_ms: u32,
    },
    /// The publisher's timestamp jumped (raw values shown); the timeline was
    /// re-anchored and continues at `continued_at_ms`.
    Jump {
        kind: TrackKind,
        from_ms: u32,
        to_ms: u32,
        continued_at_ms: i64,
    },
    /// A timestamp at or before the track's previous one; the output was
    /// clamped to `output_ms` (previous + 1 ms).
    NonMonotonic {
        kind: TrackKind,
        from_ms: u32,
        to_ms: u32,
        output_ms: i64,
    },
    /// This many notices were dropped because nobody collected them.
    Suppressed { count: u64 },
}

impl fmt::Display for TimelineNotice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimelineNotice::Rollover { kind, from_ms, to_ms } => write!(
                f,
                "{kind} timestamp wrapped around 32 bits ({from_ms} -> {to_ms} ms); continuing"
            ),
            TimelineNotice::Jump {
                kind,
                from_ms,
                to_ms,
                continued_at_ms,
            } => write!(
                f,
                "{kind} timestamp jumped from {from_ms} to {to_ms} ms; timeline re-anchored at {continued_at_ms} ms"
            ),
            TimelineNotice::NonMonotonic {
                kind,
                from_ms,
                to_ms,
                output_ms,
            } => write!(
                f,
                "{kind} timestamp went from {from_ms} to {to_ms} ms (not increasing); using {output_ms} ms"
            ),
            TimelineNotice::Suppressed { count } => {
                write!(f, "{count} further timestamp notices suppressed")
            }
        }
    }
}

/// Per-track state.
#[derive(Clone, Copy, Debug)]
struct Track {
    /// Last raw timestamp and its unwrapped (64-bit) value.
    last_raw: u32,
    unwrapped: i64,
    /// Last output, in ms.
    last_out: i64,
    /// Last normal step between outputs, used to continue after a jump.
    interval: i64,
}

/// Maps RTMP timestamps of one channel (video and audio) onto one timeline.
#[derive(Clone, Debug)]
pub struct Timeline {
    start_ms: i64,
    /// output = unwrapped + offset; set by the first timestamp of either kind.
    offset: Option<i64>,
    video: Option<Track>,
    audio: Option<Track>,
    notices: Vec<TimelineNotice>,
    suppressed: u64,
}

impl Timeline {
    /// The first timestamp seen (of either kind) maps to `start`.
    pub fn new(start: Timestamp) -> Self {
        Timeline {
            start_ms: start.as_millis(),
            offset: None,
            video: None,
            audio: None,
            notices: Vec::new(),
            suppressed: 0,
        }
    }

    /// Decode time of a video message.
    pub fn video(&mut self, raw: RtmpTimestamp) -> Timestamp {
        self.map(TrackKind::Video, raw.0)
    }

    /// Decode time of an audio message.
    pub fn audio(&mut self, raw: RtmpTimestamp) -> Timestamp {
        self.map(TrackKind::Audio, raw.0)
    }

    /// Notices since the last call, oldest first (the caller rate-limits logging).
    pub fn take_notices(&mut self) -> Vec<TimelineNotice> {
        let mut out = std::mem::take(&mut self.notices);
        if self.suppressed > 0 {
            out.push(TimelineNotice::Suppressed {
                count: std::mem::take(&mut self.suppressed),
            });
        }
        out
    }

    fn notice(&mut self, n: TimelineNotice) {
        if self.notices.len() < MAX_PENDING_NOTICES {
            self.notices.push(n);
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
        }
    }

    fn map(&mut self, kind: TrackKind, raw: u32) -> Timestamp {
        let (this, other) = match kind {
            TrackKind::Video => (self.video, self.audio),
            TrackKind::Audio => (self.audio, self.video),
        };
        // Unwrap against this track's previous value or, for a track's first
        // message, against the other track's (so audio that starts after the
        // video has wrapped lands in the same epoch).
        let reference = this.or(other).map(|t| (t.last_raw, t.unwrapped));
        let unwrapped = match reference {
            Some((prev_raw, prev_unwrapped)) => {
                let delta = i64::from(raw.wrapping_sub(prev_raw) as i32);
                if this.is_some() && delta > 0 && raw < prev_raw {
                    self.notice(TimelineNotice::Rollover {
                        kind,
                        from_ms: prev_raw,
                        to_ms: raw,
                    });
                }
                prev_unwrapped.saturating_add(delta)
            }
            None => i64::from(raw),
        };
        let offset = *self
            .offset
            .get_or_insert(self.start_ms.saturating_sub(unwrapped));
        let candidate = unwrapped.saturating_add(offset);
        let default_interval = match kind {
            TrackKind::Video => DEFAULT_VIDEO_INTERVAL_MS,
            TrackKind::Audio => DEFAULT_AUDIO_INTERVAL_MS,
        };

        let (out, interval) = match this {
            None => (candidate, default_interval),
            Some(prev) => {
                let step = candidate.saturating_sub(prev.last_out);
                if !(-MAX_BACKWARD_STEP_MS..=MAX_FORWARD_JUMP_MS).contains(&step) {
                    let target = prev.last_out.saturating_add(prev.interval);
                    self.offset = Some(target.saturating_sub(unwrapped));
                    self.notice(TimelineNotice::Jump {
                        kind,
                        from_ms: prev.last_raw,
                        to_ms: raw,
                        continued_at_ms: target,
                    });
                    (target, prev.interval)
                } else if step <= 0 {
                    let clamped = prev.last_out.saturating_add(1);
                    self.notice(TimelineNotice::NonMonotonic {
                        kind,
                        from_ms: prev.last_raw,
                        to_ms: raw,
                        output_ms: clamped,
                    });
                    (clamped, prev.interval)
                } else {
                    (candidate, step)
                }
            }
        };

        let track = Track {
            last_raw: raw,
            unwrapped,
            last_out: out,
            interval,
        };
        match kind {
            TrackKind::Video => self.video = Some(track),
            TrackKind::Audio => self.audio = Some(track),
        }
        Timestamp::from_millis(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(t: &mut Timeline, raw: u32) -> i64 {
        t.video(RtmpTimestamp(raw)).as_millis()
    }
    fn a(t: &mut Timeline, raw: u32) -> i64 {
        t.audio(RtmpTimestamp(raw)).as_millis()
    }

    #[test]
    fn first_timestamp_maps_to_start() {
        let mut t = Timeline::new(Timestamp::from_millis(10_000));
        assert_eq!(v(&mut t, 5_000), 10_000);
        assert_eq!(a(&mut t, 5_010), 10_010);
        assert_eq!(v(&mut t, 5_033), 10_033);
        assert!(t.take_notices().is_empty());
        // Start in another timescale is converted.
        let mut t = Timeline::new(Timestamp::new(90_000, 90_000));
        assert_eq!(a(&mut t, 7), 1_000);
    }

    #[test]
    fn rollover_unwraps() {
        let mut t = Timeline::new(Timestamp::from_millis(0));
        let base = 0xFFFF_FF00u32;
        assert_eq!(v(&mut t, base), 0);
        assert_eq!(a(&mut t, base + 0x10), 0x10);
        assert_eq!(v(&mut t, base + 0xF0), 0xF0);
        // Video wraps: 0xFFFF_FFF0 -> 0x20 is +0x30.
        assert_eq!(v(&mut t, 0x20), 0x120);
        // Audio (still before the wrap) then wraps too.
        assert_eq!(a(&mut t, 0xFFFF_FFFA), 0xFA);
        assert_eq!(a(&mut t, 0x0000_0015), 0x115);
        let notices = t.take_notices();
        assert_eq!(
            notices,
            vec![
                TimelineNotice::Rollover {
                    kind: TrackKind::Video,
                    from_ms: base + 0xF0,
                    to_ms: 0x20
                },
                TimelineNotice::Rollover {
                    kind: TrackKind::Audio,
                    from_ms: 0xFFFF_FFFA,
                    to_ms: 0x15
                },
            ]
        );
        assert!(notices[0].to_string().contains("wrapped"));
    }

    #[test]
    fn audio_first_seen_after_video_wrapped_is_in_the_same_epoch() {
        let mut t = Timeline::new(Timestamp::from_millis(0));
        assert_eq!(v(&mut t, 0xFFFF_FFE0), 0);
        assert_eq!(v(&mut t, 0x0000_0001), 0x21);
        // Audio's first message, slightly behind, from before the wrap.
        assert_eq!(a(&mut t, 0xFFFF_FFF0), 0x10);
        assert_eq!(a(&mut t, 0x0000_0005), 0x25);
    }

    #[test]
    fn forward_jump_re_anchors_both_tracks() {
        let mut t = Timeline::new(Timestamp::from_millis(0));
        for i in 0..10u32 {
            assert_eq!(v(&mut t, i * 40), i64::from(i * 40));
            assert_eq!(a(&mut t, i * 40 + 5), i64::from(i * 40 + 5));
        }
        // Publisher restarts its clock 1 hour ahead, on both tracks.
        let jump = 3_600_000u32;
        assert_eq!(v(&mut t, jump), 360 + 40);
        assert_eq!(a(&mut t, jump + 5), 405, "audio follows the shared offset");
        assert_eq!(v(&mut t, jump + 40), 440);
        assert_eq!(a(&mut t, jump + 45), 445);
        let n = t.take_notices();
        assert_eq!(
            n,
            vec![TimelineNotice::Jump {
                kind: TrackKind::Video,
                from_ms: 360,
                to_ms: jump,
                continued_at_ms: 400
            }]
        );
        assert!(n[0].to_string().contains("re-anchored"));
    }

    #[test]
    fn backward_jump_re_anchors() {
        let mut t = Timeline::new(Timestamp::from_millis(0));
        for i in 0..5u32 {
            v(&mut t, 10_000 + i * 33);
        }
        // Encoder restart: back to 0.
        assert_eq!(v(&mut t, 0), 132 + 33);
        assert_eq!(v(&mut t, 33), 198);
        assert!(matches!(
            t.take_notices().as_slice(),
            [TimelineNotice::Jump {
                kind: TrackKind::Video,
                ..
            }]
        ));
    }

    #[test]
    fn jump_on_second_frame_uses_default_interval() {
        let mut t = Timeline::new(Timestamp::from_millis(0));
        assert_eq!(a(&mut t, 0), 0);
        assert_eq!(a(&mut t, 100_000), DEFAULT_AUDIO_INTERVAL_MS);
    }

    #[test]
    fn small_backward_steps_are_clamped_per_track() {
        let mut t = Timeline::new(Timestamp::from_millis(0));
        assert_eq!(v(&mut t, 1_000), 0);
        assert_eq!(v(&mut t, 990), 1);
        assert_eq!(v(&mut t, 990), 2);
        // The next good timestamp lands where the publisher meant it.
        assert_eq!(v(&mut t, 1_033), 33);
        let n = t.take_notices();
        assert_eq!(n.len(), 2);
        assert_eq!(
            n[0],
            TimelineNotice::NonMonotonic {
                kind: TrackKind::Video,
                from_ms: 1_000,
                to_ms: 990,
                output_ms: 1
            }
        );
    }

    #[test]
    fn interleaved_audio_behind_video_is_not_clamped() {
        let mut t = Timeline::new(Timestamp::from_millis(0));
        // Video at 0, 33, 67, 100; audio 20 ms behind, arriving after video.
        let mut out = vec![];
        for (vt, at) in [(0, 0), (33, 13), (67, 47), (100, 80), (133, 113)] {
            out.push((v(&mut t, vt), a(&mut t, at)));
        }
        assert_eq!(out, vec![(0, 0), (33, 13), (67, 47), (100, 80), (133, 113)]);
        assert!(t.take_notices().is_empty());
    }

    #[test]
    fn notices_are_bounded() {
        let mut t = Timeline::new(Timestamp::from_millis(0));
        v(&mut t, 100);
        for _ in 0..(MAX_PENDING_NOTICES + 10) {
            v(&mut t, 50);
        }
        let n = t.take_notices();
        assert_eq!(n.len(), MAX_PENDING_NOTICES + 1);
        assert_eq!(n.last(), Some(&TimelineNotice::Suppressed { count: 10 }));
        assert!(t.take_notices().is_empty());
    }

    proptest! {
        #[test]
        fn strictly_increasing_per_kind(
            steps in proptest::collection::vec((any::<bool>(), prop_oneof![
                any::<u32>(),
                (0u32..200).prop_map(|d| d.wrapping_sub(50)),
                Just(0xFFFF_FFF0u32),
            ], any::<bool>()), 1..300),
            start in -1_000_000_000i64..1_000_000_000,
        ) {
            let mut t = Timeline::new(Timestamp::from_millis(start));
            let mut raw = [0u32; 2];
            let mut last: [Option<i64>; 2] = [None, None];
            for (video, value, relative) in steps {
                let k = usize::from(video);
                // Either an arbitrary value or a small step from the last raw one.
                raw[k] = if relative { raw[k].wrapping_add(value) } else { value };
                let out = if video { v(&mut t, raw[k]) } else { a(&mut t, raw[k]) };
                if let Some(prev) = last[k] {
                    prop_assert!(out > prev, "{out} after {prev}");
                    prop_assert!(out - prev <= MAX_FORWARD_JUMP_MS);
                }
                last[k] = Some(out);
            }
            prop_assert!(t.take_notices().len() <= MAX_PENDING_NOTICES + 1);
        }
    }
}
