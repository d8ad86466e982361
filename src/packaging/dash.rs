//! The LL-DASH manifest: one dynamic MPD per channel.
//!
//! ISO/IEC 23009-1 (DASH, 4th/5th edition: §5.3 MPD and Period, §5.3.9
//! SegmentTemplate and §5.3.9.6 SegmentTimeline, the `ServiceDescription` and
//! `UTCTiming` elements) with the DASH-IF "Low-latency Modes for DASH" and
//! IOP timing-model constraints (chunked CMAF segments,
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
//! - A Period has every kind of track: a new one is announced once each
//!   track of the Period before it has begun in it (or once its first
//!   segment is complete, whatever came), since a client builds a Period's
//!   AdaptationSets when it first sees it; a first Period reduced to one
//!   segment of some tracks by the window's edge is left out.
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
/// encode, transfer and jitter, in seconds: 2.0 s at the default 0.5 s parts.
/// dash.js holds the target itself (its p50 is the target). Shaka settles a
/// little above it and stalled when the target was lower (1.75 s and 1.9 s);
/// measured in docs/PERFORMANCE.md section 11. Players that fall behind still
/// catch up: `max` is two segments above the target.
pub const LATENCY_SLACK_SECS: f64 = 0.5;

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
        // One AdaptationSet per kind and codec family: players switch
        // seamlessly only within one codec (DASH-IF IOP 3.2.13), so AV1
        // rungs get a set of their own beside the H.264 ones. Ids: the
        // first video set 0, audio 1, further video sets 2, 3, ...
        let mut sets: Vec<(u32, TrackKind, &str)> = Vec::new();
        for r in &p.reps {
            let kind = r.track.info.kind;
            let family = codec_family(&r.track.info.codec);
            if !sets.iter().any(|(_, k, f)| *k == kind && *f == family) {
                let id = match kind {
                    TrackKind::Audio => 1,
                    TrackKind::Video => {
                        let videos = sets
                            .iter()
                            .filter(|(_, k, _)| *k == TrackKind::Video)
                            .count();
                        if videos == 0 {
                            0
                        } else {
                            videos as u32 + 1
                        }
                    }
                };
                sets.push((id, kind, family));
            }
        }
        sets.sort_by_key(|(id, kind, _)| (*kind == TrackKind::Audio, *id));
        for (as_id, kind, family) in sets {
            let reps: Vec<&Rep> = p
                .reps
                .iter()
                .filter(|r| {
                    r.track.info.kind == kind && codec_family(&r.track.info.codec) == family
                })
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

/// The codec family of an RFC 6381 string: `avc1`, `av01`, `mp4a`.
fn codec_family(codec: &str) -> &str {
    codec.split('.').next().unwrap_or(codec)
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
    // The tracks' windows may differ by a segment: the first Period can be
    // the last segment of an old session in the tracks whose window reaches
    // further back, a Period without sound (or without pictures). It is
    // leaving the window anyway: it goes now.
    while let [first, second, ..] = out.as_slice() {
        let kinds =
            |p: &Period| -> Vec<TrackKind> { p.reps.iter().map(|r| r.track.info.kind).collect() };
        let lacks_a_kind = kinds(second).iter().any(|k| !kinds(first).contains(k));
        let one_segment = first
            .reps
            .iter()
            .all(|r| r.entries.iter().map(|e| e.r + 1).sum::<u64>() <= 1);
        if !(lacks_a_kind && one_segment) {
            break;
        }
        out.remove(0);
    }
    // A new Period is announced once it holds every track of the Period
    // before it, or once its first reference segment is complete. A DASH
    // client builds a Period's AdaptationSets when it first sees it: one
    // announced before its audio (a reconnected publisher's video comes
    // first) would play to its end without sound. A track that does not
    // come back (the publisher now sends no audio) holds it back one
    // segment at most.
    if let ([.., prev, last], Some(&(first_msn, ..))) = (out.as_slice(), runs.last()) {
        let missing = prev
            .reps
            .iter()
            .any(|p| !last.reps.iter().any(|r| r.track.info.id == p.track.info.id));
        let begun = ref_segs.iter().any(|s| s.msn >= first_msn && s.complete);
        if missing && !begun {
            out.pop();
        }
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
/// Complete segments looked at to announce the growing one's duration.
const EXPECTED_DURATION_LOOKBACK: usize = 4;

fn expected_duration(state: &ChannelState, track: &Track, open: &Segment) -> u64 {
    let ts = track.info.timescale.max(1) as f64;
    // The longest of the last few complete segments: announcing the growing
    // segment shorter than it turns out makes dash.js fetch it twice (AAC
    // segments alternate 93/94 frames, for one); a little long only delays the
    // next request by a frame.
    let prev = track
        .segments
        .iter()
        .rev()
        .filter(|s| s.complete && s.msn < open.msn && s.init_id == open.init_id)
        .take(EXPECTED_DURATION_LOOKBACK)
        .map(|s| s.duration)
        .max();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packaging::hls::tests::{epoch, Fx, AUDIO_TS, VIDEO_TS};
    use bytes::Bytes;
    use quick_xml::events::Event;
    use std::time::Duration;

    /// A parsed element: just enough DOM to check an MPD.
    #[derive(Debug, Default)]
    struct El {
        name: String,
        attrs: Vec<(String, String)>,
        children: Vec<El>,
    }

    impl El {
        fn attr(&self, k: &str) -> &str {
            self.attrs
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{} has no {k}", self.name))
        }
        fn has(&self, k: &str) -> bool {
            self.attrs.iter().any(|(n, _)| n == k)
        }
        fn num(&self, k: &str) -> u64 {
            self.attr(k).parse().unwrap()
        }
        fn all(&self, name: &str) -> Vec<&El> {
            self.children.iter().filter(|c| c.name == name).collect()
        }
        fn one(&self, name: &str) -> &El {
            let v = self.all(name);
            assert_eq!(v.len(), 1, "one {name} in {}", self.name);
            v[0]
        }
    }

    /// Parse with quick-xml, failing on any malformed input.
    fn parse(xml: &str) -> El {
        let mut r = quick_xml::Reader::from_str(xml);
        let mut stack = vec![El::default()];
        let element = |e: &quick_xml::events::BytesStart| El {
            name: String::from_utf8(e.name().as_ref().to_vec()).unwrap(),
            attrs: e
                .attributes()
                .map(|a| {
                    let a = a.expect("well-formed attribute");
                    (
                        String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                        a.normalized_value(quick_xml::XmlVersion::default())
                            .expect("escaped value")
                            .into_owned(),
                    )
                })
                .collect(),
            children: Vec::new(),
        };
        loop {
            match r.read_event().expect("well-formed XML") {
                Event::Start(e) => stack.push(element(&e)),
                Event::Empty(e) => stack.last_mut().unwrap().children.push(element(&e)),
                Event::End(e) => {
                    let el = stack.pop().unwrap();
                    assert_eq!(el.name.as_bytes(), e.name().as_ref());
                    stack.last_mut().unwrap().children.push(el);
                }
                Event::Eof => break,
                Event::Text(t) => assert!(t.iter().all(|b| b.is_ascii_whitespace())),
                _ => {}
            }
        }
        assert_eq!(stack.len(), 1, "unclosed elements");
        let mut root = stack.pop().unwrap();
        assert_eq!(root.children.len(), 1);
        root.children.pop().unwrap()
    }

    fn now() -> SystemTime {
        epoch() + Duration::from_millis(9_250)
    }

    fn reps<'a>(period: &'a El, content: &str) -> Vec<&'a El> {
        period
            .all("AdaptationSet")
            .into_iter()
            .filter(|a| a.attr("contentType") == content)
            .flat_map(|a| a.all("Representation"))
            .collect()
    }

    /// (t, d) of every segment a SegmentTimeline lists, expanding @r.
    fn segments(rep: &El) -> Vec<(u64, u64)> {
        let tl = rep.one("SegmentTemplate").one("SegmentTimeline");
        let mut out = Vec::new();
        let mut t = 0;
        for (i, s) in tl.all("S").into_iter().enumerate() {
            if i == 0 {
                assert!(s.has("t"), "first S has t");
            }
            if s.has("t") {
                t = s.num("t");
            }
            let d = s.num("d");
            let r = if s.has("r") { s.num("r") } else { 0 };
            for _ in 0..=r {
                out.push((t, d));
                t += d;
            }
        }
        out
    }

    #[test]
    fn mpd_header_service_description_and_timing() {
        let mut fx = Fx::new(8);
        fx.segment(4);
        fx.open(false);
        fx.part();
        let xml = mpd(&fx.st, now());
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MPD "));
        let m = parse(&xml);
        assert_eq!(m.name, "MPD");
        assert_eq!(m.attr("xmlns"), "urn:mpeg:dash:schema:mpd:2011");
        assert_eq!(m.attr("type"), "dynamic");
        assert!(m
            .attr("profiles")
            .split(',')
            .any(|p| p == "urn:mpeg:dash:profile:isoff-live:2011"));
        assert_eq!(m.attr("availabilityStartTime"), "2023-11-14T22:13:20.000Z");
        assert_eq!(m.attr("publishTime"), "2023-11-14T22:13:29.250Z");
        assert_eq!(m.attr("minimumUpdatePeriod"), "PT0.5S");
        assert_eq!(m.attr("timeShiftBufferDepth"), "PT16S");
        assert_eq!(m.attr("maxSegmentDuration"), "PT2S");
        assert_eq!(m.attr("minBufferTime"), "PT2S");
        assert_eq!(m.attr("suggestedPresentationDelay"), "PT2S");
        let sd = m.one("ServiceDescription");
        let lat = sd.one("Latency");
        assert_eq!(
            (lat.num("min"), lat.num("target"), lat.num("max")),
            (1500, 2000, 6000)
        );
        // the target leaves room for at least three chunks
        assert!(lat.num("target") as f64 >= 3.0 * fx.st.config.part_target * 1000.0);
        let rate = sd.one("PlaybackRate");
        assert_eq!((rate.attr("min"), rate.attr("max")), ("0.96", "1.04"));
        let utc = m.one("UTCTiming");
        assert_eq!(utc.attr("schemeIdUri"), "urn:mpeg:dash:utc:http-iso:2014");
        assert_eq!(utc.attr("value"), "/time");
        // schema order: ServiceDescription, Period(s), UTCTiming
        let names: Vec<&str> = m.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["ServiceDescription", "Period", "UTCTiming"]);
    }

    #[test]
    fn representations_and_segment_template() {
        let mut fx = Fx::new(8);
        for _ in 0..4 {
            fx.segment(4);
        }
        fx.open(false);
        fx.part();
        fx.part();
        let m = parse(&mpd(&fx.st, now()));
        let p = m.one("Period");
        assert_eq!((p.attr("id"), p.attr("start")), ("0-0", "PT0S"));

        let sets = p.all("AdaptationSet");
        assert_eq!(sets.len(), 2);
        for a in &sets {
            assert_eq!(a.attr("segmentAlignment"), "true");
            assert_eq!(a.attr("startWithSAP"), "1");
        }
        let v = reps(p, "video");
        assert_eq!(v.len(), 1);
        let v = v[0];
        assert_eq!(v.attr("id"), "720p");
        assert_eq!(v.attr("codecs"), "avc1.64001f");
        assert_eq!(v.num("bandwidth"), 16_000);
        assert_eq!((v.num("width"), v.num("height")), (1280, 720));
        assert_eq!(v.attr("frameRate"), "30");
        let a = reps(p, "audio")[0];
        assert_eq!(a.attr("id"), "audio");
        assert_eq!(a.num("audioSamplingRate"), 48_000);
        assert_eq!(a.one("AudioChannelConfiguration").attr("value"), "2");

        for (rep, ts) in [(v, VIDEO_TS), (a, AUDIO_TS)] {
            let st = rep.one("SegmentTemplate");
            assert_eq!(st.num("timescale"), ts);
            assert_eq!(st.attr("initialization"), "$RepresentationID$/init-0.mp4");
            assert_eq!(st.attr("media"), "$RepresentationID$/seg-$Number$.m4s");
            assert_eq!(st.num("startNumber"), 0);
            assert_eq!(st.num("presentationTimeOffset"), 0);
            // segment 2 s - chunk 0.5 s
            assert_eq!(st.attr("availabilityTimeOffset"), "1.5");
            assert_eq!(st.attr("availabilityTimeComplete"), "false");
            // four complete segments and the growing one at its expected 2 s,
            // all in one S
            let s = st.one("SegmentTimeline").one("S");
            assert_eq!((s.num("t"), s.num("d"), s.num("r")), (0, 2 * ts, 4));
        }
    }

    #[test]
    fn growing_segment_is_listed_once_it_has_a_chunk() {
        let mut fx = Fx::new(8);
        fx.segment(4);
        fx.segment(4);
        fx.open(false);
        // no chunk yet: not listed
        let m = parse(&mpd(&fx.st, now()));
        let v = reps(m.one("Period"), "video")[0];
        assert_eq!(segments(v), [(0, 180_000), (180_000, 180_000)]);
        // one chunk: listed with the previous segment's duration; available
        // (per ATO) at its start + one chunk
        fx.part();
        let m = parse(&mpd(&fx.st, now()));
        let v = reps(m.one("Period"), "video")[0];
        let segs = segments(v);
        assert_eq!(segs.len(), 3);
        assert_eq!(segs[2], (360_000, 180_000));
        let ato: f64 = v
            .one("SegmentTemplate")
            .attr("availabilityTimeOffset")
            .parse()
            .unwrap();
        let available = (segs[2].0 + segs[2].1) as f64 / VIDEO_TS as f64 - ato;
        assert_eq!(available, 4.5);
        // running longer than expected: never announced shorter than written
        for _ in 0..4 {
            fx.part();
        }
        let m = parse(&mpd(&fx.st, now()));
        let v = reps(m.one("Period"), "video")[0];
        assert_eq!(segments(v)[2], (360_000, 225_000));
        assert_eq!(m.attr("maxSegmentDuration"), "PT2.5S");
    }

    #[test]
    fn timeline_is_continuous_and_slides_with_the_window() {
        let mut fx = Fx::new(4);
        for _ in 0..10 {
            fx.segment(4);
        }
        fx.open(false);
        fx.part();
        let m = parse(&mpd(&fx.st, now()));
        assert_eq!(m.attr("timeShiftBufferDepth"), "PT8S");
        let p = m.one("Period");
        for (content, ts) in [("video", VIDEO_TS), ("audio", AUDIO_TS)] {
            let r = reps(p, content)[0];
            let st = r.one("SegmentTemplate");
            // window: seg-6..seg-9 complete, seg-10 growing
            assert_eq!(st.num("startNumber"), 6);
            let segs = segments(r);
            assert_eq!(segs.len(), 5);
            assert_eq!(segs[0].0, 6 * 2 * ts);
            for w in segs.windows(2) {
                assert_eq!(w[0].0 + w[0].1, w[1].0, "gapless");
            }
            // $Number$ of each listed segment is its msn and its time is the
            // store's start
            for (i, (t, _)) in segs.iter().enumerate() {
                let msn = st.num("startNumber") + i as u64;
                let track = if content == "video" { 0 } else { 1 };
                assert_eq!(fx.st.tracks[track].segment(msn).unwrap().start, *t);
            }
        }
    }

    #[test]
    fn discontinuity_starts_a_period() {
        let mut fx = Fx::new(8);
        for _ in 0..3 {
            fx.segment(4);
        }
        fx.discontinuity(4);
        fx.segment(4);
        fx.open(false);
        fx.part();
        let m = parse(&mpd(&fx.st, now()));
        let periods = m.all("Period");
        assert_eq!(periods.len(), 2);
        let (p0, p1) = (periods[0], periods[1]);
        assert_eq!((p0.attr("id"), p0.attr("start")), ("0-0", "PT0S"));
        assert_eq!((p1.attr("id"), p1.attr("start")), ("1-1", "PT6S"));
        for (content, ts) in [("video", VIDEO_TS), ("audio", AUDIO_TS)] {
            let r0 = reps(p0, content)[0];
            let r1 = reps(p1, content)[0];
            let (s0, s1) = (r0.one("SegmentTemplate"), r1.one("SegmentTemplate"));
            assert_eq!(s0.num("startNumber"), 0);
            assert_eq!(s0.attr("initialization"), "$RepresentationID$/init-0.mp4");
            assert_eq!(segments(r0).len(), 3);
            assert_eq!(s1.num("startNumber"), 3);
            assert_eq!(s1.attr("initialization"), "$RepresentationID$/init-1.mp4");
            assert_eq!(s1.num("presentationTimeOffset"), 6 * ts);
            let segs1 = segments(r1);
            assert_eq!(segs1.len(), 3); // seg-3, seg-4, growing seg-5
                                        // wall clock of a segment = AST + Period@start + (t - PTO)/ts: the
                                        // segment's program date time (and its prft)
            for (i, (t, _)) in segs1.iter().enumerate() {
                let secs = 6.0 + (t - s1.num("presentationTimeOffset")) as f64 / ts as f64;
                let wall = epoch() + Duration::from_secs_f64(secs);
                let seg = fx.st.tracks[0].segment(3 + i as u64).unwrap();
                assert_eq!(wall, seg.program_date_time);
            }
        }

        // the old period slides out: the later one is first and starts at 0
        // with PTO 0 (the same mapping), keeping its id
        for _ in 0..6 {
            fx.segment(4);
        }
        let m = parse(&mpd(&fx.st, now()));
        let p = m.one("Period");
        assert_eq!((p.attr("id"), p.attr("start")), ("1-1", "PT0S"));
        let v = reps(p, "video")[0];
        assert_eq!(v.one("SegmentTemplate").num("presentationTimeOffset"), 0);
        assert_eq!(
            v.one("SegmentTemplate").attr("initialization"),
            "$RepresentationID$/init-1.mp4"
        );
    }

    /// A new Period is announced with every track the one before it had,
    /// or once its first segment is complete whatever came.
    #[test]
    fn a_new_period_waits_for_every_track_of_the_one_before() {
        let part = || Bytes::from(vec![0u8; 1000]);
        for audio_returns in [true, false] {
            let mut fx = Fx::new(8);
            fx.segment(4);
            fx.segment(4);
            fx.new_init();
            // the reconnected publisher's video comes first
            let pdt = epoch() + Duration::from_secs(4);
            fx.st.open_segment(0, 2, 1, true, 4 * VIDEO_TS, pdt);
            fx.st.add_part(0, VIDEO_TS / 2, true, part());
            let m = parse(&mpd(&fx.st, now()));
            assert_eq!(m.all("Period").len(), 1, "announced without its audio");
            if audio_returns {
                fx.st.open_segment(1, 2, 1, true, 4 * AUDIO_TS, pdt);
                fx.st.add_part(1, AUDIO_TS / 2, true, part());
                let m = parse(&mpd(&fx.st, now()));
                let periods = m.all("Period");
                assert_eq!(periods.len(), 2);
                assert_eq!(periods[1].attr("id"), "1-1");
                assert_eq!(reps(periods[1], "video").len(), 1);
                assert_eq!(reps(periods[1], "audio").len(), 1);
            } else {
                // no audio came: the Period is announced once its first
                // segment is complete
                for _ in 0..3 {
                    fx.st.add_part(0, VIDEO_TS / 2, false, part());
                }
                fx.st.close_segment(0);
                fx.st.open_segment(0, 3, 1, false, 6 * VIDEO_TS, pdt);
                fx.st.add_part(0, VIDEO_TS / 2, true, part());
                let m = parse(&mpd(&fx.st, now()));
                let periods = m.all("Period");
                assert_eq!(periods.len(), 2);
                assert_eq!(reps(periods[1], "video").len(), 1);
                assert!(reps(periods[1], "audio").is_empty());
            }
        }
    }

    /// When the tracks' windows differ by a segment at their start (audio
    /// completed its segment first), a first Period of one video segment
    /// without its audio is not listed.
    #[test]
    fn a_first_period_without_its_audio_is_not_listed() {
        let mut fx = Fx::new(4);
        fx.segment(4);
        fx.segment(4);
        fx.discontinuity(4);
        fx.segment(4);
        fx.segment(4);
        let listed = |fx: &Fx| {
            let m = parse(&mpd(&fx.st, now()));
            m.all("Period")
                .iter()
                .map(|p| {
                    (
                        p.attr("id").to_owned(),
                        reps(p, "video").len(),
                        reps(p, "audio").len(),
                    )
                })
                .collect::<Vec<_>>()
        };
        // video and audio list msn 1 (the old session's) to 4
        assert_eq!(listed(&fx), [("0-0".into(), 1, 1), ("1-1".into(), 1, 1)]);
        // audio completes msn 5 first: its window is 2..5, video's still
        // 1..4 and the open 5
        fx.open(false);
        fx.part();
        fx.st.close_segment(1);
        assert_eq!(listed(&fx), [("1-1".into(), 1, 1)]);
    }

    #[test]
    fn empty_channel_and_hostile_names_stay_well_formed() {
        let fx = Fx::new(8);
        let m = parse(&mpd(&fx.st, now()));
        let p = m.one("Period");
        assert_eq!(p.attr("start"), "PT0S");
        assert!(p.children.is_empty());

        let mut fx = Fx::new(8);
        fx.st.tracks[0].info.id = "a\"<b>&'c\n".into();
        fx.st.tracks[0].info.codec = "avc1\"".into();
        fx.segment(4);
        let m = parse(&mpd(&fx.st, now()));
        assert_eq!(reps(m.one("Period"), "video")[0].attr("id"), "a\"<b>&'c");
    }

    #[test]
    fn degenerate_config_does_not_panic() {
        for (seg, part, window) in [(0.0, 0.0, 0), (f64::NAN, -1.0, 1), (1.0, 2.0, 3)] {
            let mut fx = Fx::with(crate::packaging::store::StoreConfig {
                segment_target: seg,
                part_target: part,
                window_segments: window,
                ..crate::packaging::store::StoreConfig::default()
            });
            fx.segment(4);
            fx.open(false);
            fx.part();
            let m = parse(&mpd(&fx.st, now()));
            assert_eq!(m.attr("type"), "dynamic");
        }
    }

    #[test]
    fn xs_duration_and_frame_rate_formats() {
        assert_eq!(duration(0.0), "PT0S");
        assert_eq!(duration(-3.0), "PT0S");
        assert_eq!(duration(f64::NAN), "PT0S");
        assert_eq!(duration(1.5), "PT1.5S");
        assert_eq!(duration(3600.0), "PT3600S");
        assert_eq!(duration(1.0 / 90_000.0), "PT0.000011S");
        assert_eq!(frame_rate(30.0).as_deref(), Some("30"));
        assert_eq!(frame_rate(29.97).as_deref(), Some("30000/1001"));
        assert_eq!(frame_rate(30_000.0 / 1001.0).as_deref(), Some("30000/1001"));
        assert_eq!(frame_rate(59.94).as_deref(), Some("60000/1001"));
        assert_eq!(frame_rate(12.5).as_deref(), Some("12500/1000"));
        assert_eq!(frame_rate(0.0), None);
        assert_eq!(frame_rate(f64::INFINITY), None);
        assert_eq!(rescale(540_000, 90_000, 48_000), 288_000);
        assert_eq!(rescale(u64::MAX, 1, 90_000), u64::MAX);
    }
}
