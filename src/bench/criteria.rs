//! When a trial of `ladder bench` passes (pure): what was measured over the
//! measuring window, against the limits.
//!
//! A trial passes when every channel meets every criterion:
//!
//! - **speed** ([`Criterion::Speed`]): every encoded rung's content encoded in
//!   the window divided by the wall-clock time its thread spent scaling and
//!   encoding it ([`crate::pipeline::graph::RungStats::media_seconds`] over
//!   `encode_seconds`, both differences over the window) is at least
//!   [`SPEED_MIN`]: the rung keeps real time with 20 % headroom. A rung that
//!   encoded nothing in the window fails with no value.
//! - **drops** ([`Criterion::Drops`]): no access unit dropped at the decode
//!   input (queue full, or no decoder), no decode error, no picture dropped at
//!   a rung's input queue, no rung error, no rung frame the packager had to
//!   drop and no segment cut a rung missed, within the window.
//! - **availability** ([`Criterion::Availability`]): for every track (every
//!   encoded rung, the passed-through source and the audio), the 99th
//!   percentile (nearest rank) of the part availability latency of the parts
//!   whose media started in the window is at most the part target plus
//!   [`AVAILABILITY_SLACK`]. A part's latency is the wall-clock time at which
//!   it appeared in the channel's segment store minus the wall-clock time its
//!   first sample was fed (see `bench::channel`). A track with no part in the
//!   window fails with no value.
//! - **feed** ([`Criterion::Feed`]): the 99th percentile of how late the
//!   feeder handed frames over, against their real-time schedule, is at most
//!   [`FEED_LATENESS_MAX`]: otherwise the box could not even pace the input,
//!   and the channel was not fed in real time.

use serde::Serialize;
use std::time::Duration;

/// Least speed (content seconds per busy second) of every encoded rung: real
/// time with 20 % headroom (issue 7).
pub const SPEED_MIN: f64 = 1.2;

/// What a part may take beyond the part target to appear, at the 99th
/// percentile (issue 7: part target + 100 ms).
pub const AVAILABILITY_SLACK: Duration = Duration::from_millis(100);

/// How late, at the 99th percentile, the feeder may hand frames over.
pub const FEED_LATENESS_MAX: Duration = Duration::from_millis(100);

/// Which rule a failure breaks (the JSON's `criterion` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Criterion {
    /// Every encoded rung at [`SPEED_MIN`] or more.
    Speed,
    /// Nothing dropped.
    Drops,
    /// Part availability p99 within the limit.
    Availability,
    /// The feeder on time.
    Feed,
}

impl Criterion {
    /// `speed`, `drops`, `availability`, `feed`.
    pub fn name(self) -> &'static str {
        match self {
            Criterion::Speed => "speed",
            Criterion::Drops => "drops",
            Criterion::Availability => "availability",
            Criterion::Feed => "feed",
        }
    }
}

/// The limits a trial is judged by.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// [`SPEED_MIN`].
    pub speed_min: f64,
    /// Part target + [`AVAILABILITY_SLACK`], in ms.
    pub availability_ms: f64,
    /// [`FEED_LATENESS_MAX`], in ms.
    pub feed_lateness_ms: f64,
}

impl Limits {
    /// The issue's limits for a part target of `part_target` seconds.
    pub fn for_part_target(part_target: f64) -> Limits {
        Limits {
            speed_min: SPEED_MIN,
            availability_ms: part_target * 1000.0 + AVAILABILITY_SLACK.as_secs_f64() * 1000.0,
            feed_lateness_ms: FEED_LATENESS_MAX.as_secs_f64() * 1000.0,
        }
    }
}

/// One encoded rung of one channel over the window (differences of its
/// counters).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RungWindow {
    /// The channel (`b0`, `b1`, ...).
    pub channel: String,
    /// The rung's name.
    pub rung: String,
    /// Content encoded, seconds.
    pub media_seconds: f64,
    /// Wall-clock seconds spent scaling and encoding.
    pub encode_seconds: f64,
    /// Pictures dropped at the rung's full input queue.
    pub dropped: u64,
    /// Pictures refused by an error.
    pub errors: u64,
}

impl RungWindow {
    /// Content seconds per busy second; `None` when nothing was encoded.
    pub fn speed(&self) -> Option<f64> {
        (self.media_seconds > 0.0 && self.encode_seconds > 0.0)
            .then(|| self.media_seconds / self.encode_seconds)
    }
}

/// One channel's decode stage and packager over the window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChannelWindow {
    /// The channel.
    pub channel: String,
    /// Access units dropped at the full decode input.
    pub decode_dropped: u64,
    /// Access units dropped for want of a decoder.
    pub decode_no_decoder: u64,
    /// Decode errors.
    pub decode_errors: u64,
    /// Rung frames the packager dropped, plus segment cuts a rung missed.
    pub packager_dropped: u64,
    /// 99th percentile of the feeder's lateness, ms (`None`: nothing fed).
    pub feed_lateness_p99_ms: Option<f64>,
}

/// One track of one channel: the availability latencies of its parts, ms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrackWindow {
    /// The channel.
    pub channel: String,
    /// The track: a rendition's name or `audio`.
    pub track: String,
    /// Availability latency of each part that started in the window, ms.
    pub latencies_ms: Vec<f64>,
}

/// A broken rule, with what was measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Failure {
    /// The rule broken.
    pub criterion: Criterion,
    /// The channel (`b0`, `b1`, ...).
    pub channel: String,
    /// The rung or track, when the rule is about one.
    pub track: Option<String>,
    /// What was measured (`None`: nothing to measure, e.g. no output).
    pub value: Option<f64>,
    /// The limit it is judged by.
    pub limit: f64,
    /// In words, for the table and the logs.
    pub message: String,
}

/// The `p`-th percentile (0-100) of `values` by nearest rank: the smallest
/// value with at least `p` % of the values at or below it. `None` when empty.
/// Not-a-number values are ignored.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The median of `values` (the 50th percentile by nearest rank).
pub fn median(values: &[f64]) -> Option<f64> {
    percentile(values, 50.0)
}

/// Every failure of a trial, rung by rung and track by track, in a stable
/// order (speed, drops, availability, feed; then channel and track as given).
pub fn evaluate(
    rungs: &[RungWindow],
    channels: &[ChannelWindow],
    tracks: &[TrackWindow],
    limits: &Limits,
) -> Vec<Failure> {
    let mut out = Vec::new();
    for r in rungs {
        match r.speed() {
            Some(speed) if speed >= limits.speed_min => {}
            Some(speed) => out.push(Failure {
                criterion: Criterion::Speed,
                channel: r.channel.clone(),
                track: Some(r.rung.clone()),
                value: Some(speed),
                limit: limits.speed_min,
                message: format!(
                    "channel {} rung {}: {speed:.2}x real time, below {:.2}x",
                    r.channel, r.rung, limits.speed_min
                ),
            }),
            None => out.push(Failure {
                criterion: Criterion::Speed,
                channel: r.channel.clone(),
                track: Some(r.rung.clone()),
                value: None,
                limit: limits.speed_min,
                message: format!(
                    "channel {} rung {}: encoded nothing in the window",
                    r.channel, r.rung
                ),
            }),
        }
    }
    for c in channels {
        let decode = c.decode_dropped + c.decode_no_decoder + c.decode_errors;
        if decode > 0 {
            out.push(Failure {
                criterion: Criterion::Drops,
                channel: c.channel.clone(),
                track: None,
                value: Some(decode as f64),
                limit: 0.0,
                message: format!(
                    "channel {}: decode dropped {} access units (queue full {}, no decoder {}), {} errors",
                    c.channel,
                    c.decode_dropped + c.decode_no_decoder,
                    c.decode_dropped,
                    c.decode_no_decoder,
                    c.decode_errors
                ),
            });
        }
    }
    for r in rungs {
        let lost = r.dropped + r.errors;
        if lost > 0 {
            out.push(Failure {
                criterion: Criterion::Drops,
                channel: r.channel.clone(),
                track: Some(r.rung.clone()),
                value: Some(lost as f64),
                limit: 0.0,
                message: format!(
                    "channel {} rung {}: {} pictures dropped at its full queue, {} errors",
                    r.channel, r.rung, r.dropped, r.errors
                ),
            });
        }
    }
    for c in channels {
        if c.packager_dropped > 0 {
            out.push(Failure {
                criterion: Criterion::Drops,
                channel: c.channel.clone(),
                track: None,
                value: Some(c.packager_dropped as f64),
                limit: 0.0,
                message: format!(
                    "channel {}: the packager dropped {} rung frames or missed segment cuts",
                    c.channel, c.packager_dropped
                ),
            });
        }
    }
    for t in tracks {
        match percentile(&t.latencies_ms, 99.0) {
            Some(p99) if p99 <= limits.availability_ms => {}
            Some(p99) => out.push(Failure {
                criterion: Criterion::Availability,
                channel: t.channel.clone(),
                track: Some(t.track.clone()),
                value: Some(p99),
                limit: limits.availability_ms,
                message: format!(
                    "channel {} track {}: part availability p99 {p99:.0} ms, above {:.0} ms",
                    t.channel, t.track, limits.availability_ms
                ),
            }),
            None => out.push(Failure {
                criterion: Criterion::Availability,
                channel: t.channel.clone(),
                track: Some(t.track.clone()),
                value: None,
                limit: limits.availability_ms,
                message: format!(
                    "channel {} track {}: no part appeared in the window",
                    t.channel, t.track
                ),
            }),
        }
    }
    for c in channels {
        match c.feed_lateness_p99_ms {
            Some(late) if late <= limits.feed_lateness_ms => {}
            Some(late) => out.push(Failure {
                criterion: Criterion::Feed,
                channel: c.channel.clone(),
                track: None,
                value: Some(late),
                limit: limits.feed_lateness_ms,
                message: format!(
                    "channel {}: frames fed {late:.0} ms late (p99), above {:.0} ms: the box cannot pace the input",
                    c.channel, limits.feed_lateness_ms
                ),
            }),
            None => out.push(Failure {
                criterion: Criterion::Feed,
                channel: c.channel.clone(),
                track: None,
                value: None,
                limit: limits.feed_lateness_ms,
                message: format!("channel {}: nothing was fed in the window", c.channel),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::for_part_target(0.5)
    }

    fn rung(speed_media: f64, busy: f64) -> RungWindow {
        RungWindow {
            channel: "b0".into(),
            rung: "720p".into(),
            media_seconds: speed_media,
            encode_seconds: busy,
            ..RungWindow::default()
        }
    }

    fn channel() -> ChannelWindow {
        ChannelWindow {
            channel: "b0".into(),
            feed_lateness_p99_ms: Some(2.0),
            ..ChannelWindow::default()
        }
    }

    fn track(latencies: &[f64]) -> TrackWindow {
        TrackWindow {
            channel: "b0".into(),
            track: "720p".into(),
            latencies_ms: latencies.to_vec(),
        }
    }

    fn criteria(failures: &[Failure]) -> Vec<Criterion> {
        failures.iter().map(|f| f.criterion).collect()
    }

    #[test]
    fn limits_are_the_issues() {
        let l = limits();
        assert_eq!(l.speed_min, 1.2);
        assert_eq!(l.availability_ms, 600.0);
        assert_eq!(l.feed_lateness_ms, 100.0);
        assert_eq!(Limits::for_part_target(0.2).availability_ms, 300.0);
    }

    #[test]
    fn percentiles_are_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        // with 40 parts the 99th percentile is the worst one
        let mut w: Vec<f64> = vec![500.0; 39];
        w.push(900.0);
        assert_eq!(percentile(&w, 99.0), Some(900.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(percentile(&[], 99.0), None);
        assert_eq!(percentile(&[f64::NAN, 4.0], 99.0), Some(4.0));
    }

    #[test]
    fn a_healthy_trial_passes() {
        let f = evaluate(
            &[rung(20.0, 10.0)],
            &[channel()],
            &[track(&[540.0, 560.0, 600.0])],
            &limits(),
        );
        assert_eq!(f, vec![]);
    }

    #[test]
    fn speed_needs_twenty_percent_headroom() {
        // exactly 1.2x passes, just under fails, nothing encoded fails
        assert!(evaluate(&[rung(12.0, 10.0)], &[], &[], &limits()).is_empty());
        let f = evaluate(&[rung(11.0, 10.0)], &[], &[], &limits());
        assert_eq!(criteria(&f), vec![Criterion::Speed]);
        assert_eq!(f[0].value, Some(1.1));
        assert_eq!(f[0].track.as_deref(), Some("720p"));
        assert_eq!(
            f[0].message,
            "channel b0 rung 720p: 1.10x real time, below 1.20x"
        );
        let f = evaluate(&[rung(0.0, 0.0)], &[], &[], &limits());
        assert_eq!(criteria(&f), vec![Criterion::Speed]);
        assert_eq!(f[0].value, None);
    }

    #[test]
    fn any_drop_fails() {
        let mut r = rung(20.0, 10.0);
        r.dropped = 1;
        assert_eq!(
            criteria(&evaluate(&[r], &[], &[], &limits())),
            vec![Criterion::Drops]
        );
        let mut r = rung(20.0, 10.0);
        r.errors = 2;
        let f = evaluate(&[r], &[], &[], &limits());
        assert_eq!(f[0].value, Some(2.0));
        for set in [
            |c: &mut ChannelWindow| c.decode_dropped = 1,
            |c: &mut ChannelWindow| c.decode_no_decoder = 1,
            |c: &mut ChannelWindow| c.decode_errors = 1,
            |c: &mut ChannelWindow| c.packager_dropped = 1,
        ] {
            let mut c = channel();
            set(&mut c);
            assert_eq!(
                criteria(&evaluate(&[], &[c], &[], &limits())),
                vec![Criterion::Drops]
            );
        }
    }

    #[test]
    fn availability_is_judged_at_the_99th_percentile() {
        // 100 parts, one late: p99 is the 99th, on time
        let mut ok = vec![550.0; 99];
        ok.push(2000.0);
        assert!(evaluate(&[], &[], &[track(&ok)], &limits()).is_empty());
        // two late: p99 is late
        let mut late = vec![550.0; 98];
        late.extend([2000.0, 2000.0]);
        let f = evaluate(&[], &[], &[track(&late)], &limits());
        assert_eq!(criteria(&f), vec![Criterion::Availability]);
        assert_eq!(f[0].value, Some(2000.0));
        assert_eq!(f[0].limit, 600.0);
        // the limit itself passes
        assert!(evaluate(&[], &[], &[track(&[600.0])], &limits()).is_empty());
        // no part: a failure without a value
        let f = evaluate(&[], &[], &[track(&[])], &limits());
        assert_eq!(criteria(&f), vec![Criterion::Availability]);
        assert_eq!(f[0].value, None);
    }

    #[test]
    fn a_late_or_silent_feeder_fails() {
        let mut c = channel();
        c.feed_lateness_p99_ms = Some(150.0);
        assert_eq!(
            criteria(&evaluate(&[], &[c], &[], &limits())),
            vec![Criterion::Feed]
        );
        let mut c = channel();
        c.feed_lateness_p99_ms = None;
        assert_eq!(
            criteria(&evaluate(&[], &[c], &[], &limits())),
            vec![Criterion::Feed]
        );
    }

    #[test]
    fn failures_come_in_a_stable_order() {
        let mut r = rung(5.0, 10.0);
        r.dropped = 3;
        let mut c = channel();
        c.feed_lateness_p99_ms = Some(500.0);
        let f = evaluate(&[r], &[c], &[track(&[900.0])], &limits());
        assert_eq!(
            criteria(&f),
            vec![
                Criterion::Speed,
                Criterion::Drops,
                Criterion::Availability,
                Criterion::Feed
            ]
        );
    }
}
