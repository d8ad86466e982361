//! The LL-DASH manifest: one dynamic MPD per channel.
//!
//! ISO/IEC 23009-1 (DASH, 4th/5th edition: §5.3 MPD, §5.3.9.6 SegmentTimeline,
//! §5.12 ServiceDescription, §5.8.5.7 UTCTiming) with the DASH-IF
//! "Low-latency Modes for DASH" constraints (chunked CMAF segments,
//! `availabilityTimeOffset` with `availabilityTimeComplete="false"`,
//! `UTCTiming`, `ServiceDescription`). A pure function of the channel state and
//! `now` (used for `publishTime` only).
//!
//! # Addressing
//! `SegmentTemplate` with `$Number$` (the store's msn) and a `SegmentTimeline`
//! of the listed segments, per Representation: `<track>/seg-<msn>.m4s`, init
//! `<track>/init-<init_id>.mp4`, relative to the MPD (no `BaseURL`).
//!
//! # The growing segment
//! The segment being written is listed once its first chunk exists, with its
//! expected duration (the previous complete segment's, or the segment target,
//! never less than what is already written). Reasons:
//! - dash.js (and DASH generally) only requests segments a `SegmentTimeline`
//!   lists; an unlisted growing segment is only discovered after it completes,
//!   which costs a whole segment of latency.
//! - dash.js computes a timeline segment's availability start as
//!   `Period@start + (t + d - presentationTimeOffset)/timescale - ATO`. With
//!   `ATO = segment target - part target` (the DASH-IF recommendation: the
//!   segment becomes available when its first chunk is), the growing segment
//!   is available at its start plus one chunk, exactly when it is listed. The
//!   origin then sends it with chunked transfer, each CMAF chunk as written.
//! - The DASH-IF reference live source (livesim2) publishes SegmentTimeline
//!   low-latency MPDs the same way: the newest `S` appears one chunk after the
//!   segment starts.
//!
//! When the segment completes, the next MPD carries its real duration (segments
//! start at IDR, so a longer GOP gives longer segments); only the last `S` ever
//! changes. `minimumUpdatePeriod` is one part target so players learn a new
//! segment within about a chunk of its start.
//!
//! # Time
//! Wall clock ↔ media time: `availabilityStartTime` is the wall-clock time of
//! media time zero, and the packager keeps media time continuous across the
//! channel's life (tfdt never jumps back; a reconnect gap is time that passed).
//! So for every segment, `wall ≈ AST + Period@start + (t - PTO)/timescale =
//! AST + t/timescale`, the same instant its `prft` box carries.
//! - The first Period listed starts at `PT0S` with `presentationTimeOffset`
//!   0, so its values never depend on which segments are still listed.
//! - A later Period (after a discontinuity: a new init segment or a flagged
//!   segment) starts at its first segment's media time in the reference track,
//!   and each Representation's `presentationTimeOffset` is that time in its own
//!   timescale (so audio keeps its sync with video even though audio segments
//!   do not start on exactly the same instant).
//! - Known limit: when the Period before it leaves the MPD, a later Period
//!   becomes the first one and its `@start`/`presentationTimeOffset` change to
//!   0/0. The media-to-wall mapping stays identical; keeping the old values
//!   needs the store to remember Period starts.
//! - Period ids are `<discontinuity sequence number>-<init id>`: stable for as
//!   long as the Period is listed.
//!
//! `UTCTiming` is `urn:mpeg:dash:utc:http-iso:2014` at `/time`; dash.js (since
//! v4) resolves a relative value against the MPD's URL.

use super::hls::{discontinuity_sequence, listed, secs_trimmed};
use super::store::{ChannelState, Segment, Track, TrackKind};
use std::fmt::Write as _;
use std::time::SystemTime;

/// DASH profiles: ISO BMFF live, and CMAF (every segment is a CMAF segment,
/// every AdaptationSet a switching set).
pub const PROFILES: &str = "urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019";
/// UTCTiming scheme and where the origin serves its clock.
pub const UTC_TIMING_SCHEME: &str = "urn:mpeg:dash:utc:http-iso:2014";
pub const UTC_TIMING_PATH: &str = "/time";
/// Playback-rate range the player may use to hold the latency target.
pub const PLAYBACK_RATE_MIN: &str = "0.96";
pub const PLAYBACK_RATE_MAX: &str = "1.04";
/// Latency target: three parts (as LL-HLS PART-HOLD-BACK) plus this much for
/// encode, transfer and jitter, in seconds.
pub const LATENCY_SLACK_SECS: f64 = 1.0;

/// The MPD (`/live/<ch>/manifest.mpd`).
pub fn mpd(state: &ChannelState, now: SystemTime) -> String {
    let cfg = &state.config;
    let part = positive(cfg.part_target, 0.5);
    let seg = positive(cfg.segment_target, 2.0).max(part);
    let latency_min = 3.0 * part;
    let latency_target = latency_min + LATENCY_SLACK_SECS;
    let latency_max = latency_target + 2.0 * seg;
    let tsbd = seg * cfg.window_segments.max(1) as f64;

    let periods = periods(state);
    let max_seg = periods
        .iter()
        .flat_map(|p| p.reps.iter())
        .flat_map(|r| r.entries.iter().map(|e| e.d as f64 / r.timescale as f64))
        .fold(seg, f64::max);

    let mut out = String::with_capacity(4096);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"{PROFILES}\" type=\"dynamic\" \
availabilityStartTime=\"{ast}\" publishTime=\"{pt}\" minimumUpdatePeriod=\"{mup}\" \
timeShiftBufferDepth=\"{tsbd}\" maxSegmentDuration=\"{msd}\" minBufferTime=\"{mbt}\" \
suggestedPresentationDelay=\"{spd}\">",
        ast = date_time(state.availability_start),
        pt = date_time(now),
        mup = duration(part),
        tsbd = duration(tsbd),
        msd = duration(max_seg),
        mbt = duration(seg),
        spd = duration(latency_target),
    );
    let _ = writeln!(
        out,
        "  <ServiceDescription id=\"0\">\n    <Latency target=\"{}\" min=\"{}\" max=\"{}\"/>\n    \
<PlaybackRate min=\"{PLAYBACK_RATE_MIN}\" max=\"{PLAYBACK_RATE_MAX}\"/>\n  </ServiceDescription>",
        millis(latency_target),
        millis(latency_min),
        millis(latency_max),
    );

    if periods.is_empty() {
        // Nothing to play yet (the origin should wait for `has_media`); still
        // a valid MPD.
        out.push_str("  <Period id=\"0\" start=\"PT0S\"/>\n");
    }
    let ato = seg - part;
    for p in &periods {
        let _ = writeln!(
            out,
            "  <Period id=\"{}\" start=\"{}\">",
            esc(&p.id),
            duration(p.start_secs)
        );
        for (as_id, kind) in [(0u32, TrackKind::Video), (1, TrackKind::Audio)] {
            let reps: Vec<&Rep> = p
                .reps
                .iter()
                .filter(|r| r.track.info.kind == kind)
                .collect();
            if reps.is_empty() {
                continue;
            }
            let (content, mime) = match kind {
                TrackKind::Video => ("video", "video/mp4"),
                TrackKind::Audio => ("audio", "audio/mp4"),
            };
            let _ = writeln!(
                out,
                "    <AdaptationSet id=\"{as_id}\" contentType=\"{content}\" mimeType=\"{mime}\" \
segmentAlignment=\"true\" startWithSAP=\"1\">"
            );
            for r in reps {
                write_representation(&mut out, r, ato);
            }
            out.push_str("    </AdaptationSet>\n");
        }
        out.push_str("  </Period>\n");
    }
    let _ = writeln!(
        out,
        "  <UTCTiming schemeIdUri=\"{UTC_TIMING_SCHEME}\" value=\"{UTC_TIMING_PATH}\"/>\n</MPD>"
    );
    out
}

fn write_representation(out: &mut String, r: &Rep, ato: f64) {
    let info = &r.track.info;
    let bandwidth = if r.track.peak_bandwidth > 0 {
        r.track.peak_bandwidth
    } else {
        info.nominal_bandwidth
    }
    .max(1);
    let _ = write!(
        out,
        "      <Representation id=\"{}\" codecs=\"{}\" bandwidth=\"{bandwidth}\"",
        esc(&info.id),
        esc(&info.codec)
    );
    match info.kind {
        TrackKind::Video => {
            if info.width > 0 && info.height > 0 {
                let _ = write!(out, " width=\"{}\" height=\"{}\"", info.width, info.height);
            }
            if let Some(fr) = info.frame_rate.and_then(frame_rate) {
                let _ = write!(out, " frameRate=\"{fr}\"");
            }
            out.push_str(">\n");
        }
        TrackKind::Audio => {
            let _ = writeln!(
                out,
                " audioSamplingRate=\"{}\">\n        <AudioChannelConfiguration \
schemeIdUri=\"urn:mpeg:dash:23003:3:audio_channel_configuration:2011\" value=\"{}\"/>",
                info.sample_rate, info.channels
            );
        }
    }
    let _ = write!(
        out,
        "        <SegmentTemplate timescale=\"{}\" initialization=\"$RepresentationID$/init-{}.mp4\" \
media=\"$RepresentationID$/seg-$Number$.m4s\" startNumber=\"{}\" presentationTimeOffset=\"{}\"",
        r.timescale, r.init_id, r.start_number, r.pto
    );
    if ato > 0.0 {
        let _ = write!(
            out,
            " availabilityTimeOffset=\"{}\" availabilityTimeComplete=\"false\"",
            secs_trimmed(ato)
        );
    }
    out.push_str(">\n          <SegmentTimeline>\n");
    for e in &r.entries {
        let _ = write!(out, "            <S t=\"{}\" d=\"{}\"", e.t, e.d);
        if e.r > 0 {
            let _ = write!(out, " r=\"{}\"", e.r);
        }
        out.push_str("/>\n");
    }
    out.push_str(
        "          </SegmentTimeline>\n        </SegmentTemplate>\n      </Representation>\n",
    );
}

/// One `<S>`: `r + 1` segments of duration `d` from `t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    t: u64,
    d: u64,
    r: u64,
}

/// One Representation in one Period.
struct Rep<'a> {
    track: &'a Track,
    timescale: u32,
    init_id: u32,
    start_number: u64,
    pto: u64,
    entries: Vec<Entry>,
}

struct Period<'a> {
    id: String,
    start_secs: f64,
    reps: Vec<Rep<'a>>,
}

/// Does `s` start a new Period after `prev`?
fn is_boundary(prev: &Segment, s: &Segment) -> bool {
    s.discontinuity || s.init_id != prev.init_id
}

/// The Periods of the listed window: runs of the reference track's listed
/// segments split at discontinuities; every track's listed segments grouped
/// by msn into them.
fn periods(state: &ChannelState) -> Vec<Period<'_>> {
    // Reference: the first track with something listed (normally track 0,
    // the first video rendition).
    let Some((ref_idx, ref_track, ref_segs)) = state
        .tracks
        .iter()
        .enumerate()
        .map(|(i, t)| (i, t, listed(state, t)))
        .find(|(_, _, segs)| !segs.is_empty())
    else {
        return Vec::new();
    };
    let ref_ts = ref_track.info.timescale.max(1);

    // (first msn, media start in reference ticks, discontinuity sequence, init)
    let mut runs: Vec<(u64, u64, u64, u32)> = Vec::new();
    let mut dsn = discontinuity_sequence(state, ref_idx);
    for (i, s) in ref_segs.iter().enumerate() {
        let prev = i.checked_sub(1).map(|j| ref_segs[j]);
        match prev {
            None => runs.push((s.msn, 0, dsn, s.init_id)),
            Some(p) if is_boundary(p, s) => {
                if s.discontinuity {
                    dsn = dsn.saturating_add(1);
                }
                runs.push((s.msn, s.start, dsn, s.init_id));
            }
            Some(_) => {}
        }
    }

    let mut out = Vec::with_capacity(runs.len());
    for (k, &(first_msn, start_ticks, dsn, init_id)) in runs.iter().enumerate() {
        let end_msn = runs.get(k + 1).map(|r| r.0);
        let mut reps = Vec::new();
        for t in &state.tracks {
            let ts = t.info.timescale.max(1);
            let segs: Vec<&Segment> = listed(state, t)
                .into_iter()
                .filter(|s| s.msn >= first_msn && end_msn.is_none_or(|e| s.msn < e))
                .collect();
            let Some(first) = segs.first() else {
                continue;
            };
            let pto = rescale(start_ticks, ref_ts, ts);
            reps.push(Rep {
                track: t,
                timescale: ts,
                init_id: first.init_id,
                start_number: first.msn,
                pto,
                entries: timeline(state, t, &segs),
            });
        }
        out.push(Period {
            id: format!("{dsn}-{init_id}"),
            start_secs: start_ticks as f64 / ref_ts as f64,
            reps,
        });
    }
    out
}

/// SegmentTimeline entries for consecutive listed segments; the open one gets
/// its expected duration.
fn timeline(state: &ChannelState, track: &Track, segs: &[&Segment]) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    for s in segs {
        let d = if s.complete {
            s.duration
        } else {
            expected_duration(state, track, s)
        };
        if let Some(last) = entries.last_mut() {
            let next_t = (last.t as u128) + (last.d as u128) * (last.r as u128 + 1);
            if last.d == d && next_t == s.start as u128 {
                last.r += 1;
                continue;
            }
        }
        entries.push(Entry {
            t: s.start,
            d,
            r: 0,
        });
    }
    entries
}

/// Duration to announce for the segment being written: the previous complete
/// segment's (the GOP repeats), or the segment target; never less than what
/// is already written.
fn expected_duration(state: &ChannelState, track: &Track, open: &Segment) -> u64 {
    let ts = track.info.timescale.max(1) as f64;
    let prev = track
        .segments
        .iter()
        .rev()
        .find(|s| s.complete && s.msn < open.msn && s.init_id == open.init_id)
        .map(|s| s.duration);
    let target = (positive(state.config.segment_target, 2.0) * ts).round() as u64;
    prev.unwrap_or(target).max(open.duration).max(1)
}

/// `ticks` of timescale `from` in timescale `to`, rounded to nearest.
fn rescale(ticks: u64, from: u32, to: u32) -> u64 {
    if from == to || from == 0 {
        return ticks;
    }
    let v = (ticks as u128 * to as u128 + from as u128 / 2) / from as u128;
    u64::try_from(v).unwrap_or(u64::MAX)
}

fn positive(v: f64, default: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v
    } else {
        default
    }
}

fn millis(secs: f64) -> u64 {
    (secs * 1000.0).round() as u64
}

/// xs:duration in seconds, at most millisecond precision: `PT0S`, `PT1.5S`.
fn duration(secs: f64) -> String {
    let secs = if secs.is_finite() && secs > 0.0 {
        secs
    } else {
        0.0
    };
    let mut v = format!("{secs:.6}");
    while v.ends_with('0') {
        v.pop();
    }
    if v.ends_with('.') {
        v.pop();
    }
    format!("PT{v}S")
}

/// xs:dateTime in UTC with milliseconds.
fn date_time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// DASH FrameRateType (`[0-9]+(/[1-9][0-9]*)?`): `30`, `30000/1001`.
fn frame_rate(fps: f64) -> Option<String> {
    if !fps.is_finite() || fps <= 0.0 || fps > 1000.0 {
        return None;
    }
    let whole = fps.round();
    if (fps - whole).abs() < 1e-3 {
        return Some(format!("{}", whole as u64));
    }
    let ntsc = (fps * 1001.0).round();
    if (ntsc / 1001.0 - fps).abs() < 1e-3 && (ntsc as u64) % 1000 == 0 {
        return Some(format!("{}/1001", ntsc as u64));
    }
    Some(format!("{}/1000", (fps * 1000.0).round() as u64))
}

/// Escape text for an XML attribute value.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 => {}
            c => o.push(c),
        }
    }
    o
}
