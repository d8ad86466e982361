//! LL-HLS playlists and the blocking-reload decisions behind them.
//!
//! Implements the server side of HTTP Live Streaming 2nd edition
//! (draft-pantos-hls-rfc8216bis-16, "RFC 8216bis" below) and the Apple HLS
//! authoring specification's low-latency rules. Everything here is a pure
//! function of a [`ChannelState`] (and the request's query string): no I/O, no
//! clock, no panics. The origin does the waiting; this module only says
//! whether to answer, wait or refuse.
//!
//! # Playlists
//! - Multivariant playlist (§4.4.6): `EXT-X-VERSION` as the media playlists',
//!   one `EXT-X-STREAM-INF` per video track,
//!   audio tracks as an `EXT-X-MEDIA` group `"audio"`; `CODECS` lists every
//!   codec of the variant (§6.2.4); `BANDWIDTH` is the measured peak segment
//!   bitrate (the nominal rate until a segment is complete) plus the audio's.
//! - Media playlists (§4.4.3, §4.4.4, §4.4.5): every value shared by the
//!   renditions (target duration, server control, discontinuity sequence)
//!   comes from the channel state, so all media playlists agree (§6.2.4).
//!   - `HOLD-BACK` = 3 × target duration, `PART-HOLD-BACK` = 3 × part target,
//!     `CAN-SKIP-UNTIL` = 6 × target duration (§4.4.3.8, the minimums).
//!   - `EXT-X-PART` only for segments that start within 3 target durations of
//!     the playlist end (§6.2.2); older parts stay downloadable in the store.
//!   - One `EXT-X-PRELOAD-HINT` for `part-<next_part_seq>.m4s` (§4.4.5.3, §6.2.6).
//!   - `EXT-X-PROGRAM-DATE-TIME` on every segment: the ingest wall-clock time
//!     of its first sample, the same instant its `prft` carries. Every segment
//!     (not just the first) so a delta update still dates what it lists.
//!   - `EXT-X-RENDITION-REPORT` for every other track (§4.4.5.4).
//!   - `EXT-X-VERSION:9`: `EXT-X-SKIP` may appear in any response (§8), and a
//!     version that changed between full and delta answers would only confuse.
//! - Discontinuities: the store advances `discontinuity_sequence` when a
//!   segment flagged `discontinuity` becomes the *first listed* segment of the
//!   reference track, so the first listed segment never carries an
//!   `EXT-X-DISCONTINUITY` tag (it would be counted twice); every other flagged
//!   segment does. A track whose window is one segment behind or ahead of the
//!   reference track gets its `EXT-X-DISCONTINUITY-SEQUENCE` adjusted so that
//!   every segment has the same Discontinuity Sequence Number in every
//!   rendition (§4.4.3.3, §6.2.2).
//!
//! # Delivery directives (§6.2.5)
//! - `_HLS_skip=YES` (and `v2`, the same here: there are no date ranges)
//!   answers a delta update (§6.2.5.1): the segments that end at least
//!   `CAN-SKIP-UNTIL` before the end of the playlist become one `EXT-X-SKIP`.
//!   The first segment after the skip repeats `EXT-X-MAP`, so the init segment
//!   is known without the skipped lines.
//! - `_HLS_msn=M`: wait until segment M is complete (a Media Segment is in the
//!   playlist once its `EXTINF` is). With `_HLS_part=N`: until part N of M is
//!   listed; a part index past the end of a complete segment M means part 0 of
//!   M+1 (§6.2.5.2). A segment already gone from the store is answered at once.
//! - Refused at once (400): `_HLS_part` without `_HLS_msn`; `_HLS_msn` more
//!   than two past the last complete segment; a part further ahead of the last
//!   part than the Advance Part Limit (3 / PART-TARGET parts when PART-TARGET
//!   < 1 s, else 3). Query strings are capped and parsed strictly
//!   ([`MAX_QUERY_LEN`], [`MAX_DECIMAL_DIGITS`]).
//!
//! URIs in media playlists are relative to `<track>/index.m3u8`.

use super::store::{ChannelState, Segment, Track, TrackKind};
use std::fmt::Write as _;
use std::time::SystemTime;

/// EXT-X-VERSION of media playlists: 9 for EXT-X-SKIP (RFC 8216bis §8).
pub const MEDIA_PLAYLIST_VERSION: u32 = 9;
/// EXT-X-VERSION of the multivariant playlist. Its own tags need no more than
/// version 1, but the version covers "the Playlist file, its associated
/// media, and its server" (RFC 8216bis §4.3.1.2), and Apple's validator
/// wants the tag: the same as the media playlists, one protocol version for
/// the whole presentation.
pub const MULTIVARIANT_PLAYLIST_VERSION: u32 = MEDIA_PLAYLIST_VERSION;
/// HOLD-BACK in target durations (§4.4.3.8: at least 3).
pub const HOLD_BACK_TARGET_DURATIONS: u64 = 3;
/// PART-HOLD-BACK in part targets (§4.4.3.8: at least 2, should be 3; Apple: 3).
pub const PART_HOLD_BACK_PARTS: f64 = 3.0;
/// CAN-SKIP-UNTIL in target durations (§4.4.3.8: at least 6).
pub const SKIP_TARGET_DURATIONS: u64 = 6;
/// EXT-X-PART tags are listed for segments starting within this many target
/// durations of the playlist end (§6.2.2).
pub const PART_LISTING_TARGET_DURATIONS: u64 = 3;
/// `_HLS_msn` may be at most this far past the last complete segment (§6.2.5.2).
pub const MSN_LOOKAHEAD: u64 = 2;
/// Longest query string parsed for directives; longer is refused (hostile
/// input: a megabyte of `&`).
pub const MAX_QUERY_LEN: usize = 1024;
/// Longest decimal-integer accepted (u64::MAX has 20 digits).
pub const MAX_DECIMAL_DIGITS: usize = 20;

/// `_HLS_skip`: whether a delta update was asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Skip {
    #[default]
    No,
    /// `_HLS_skip=YES` or `_HLS_skip=v2`.
    Yes,
}

/// The delivery directives of a media playlist request (RFC 8216bis §6.2.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    /// `_HLS_msn`
    pub msn: Option<u64>,
    /// `_HLS_part`
    pub part: Option<u64>,
    /// `_HLS_skip`
    pub skip: Skip,
}

/// Why a playlist query string is refused (the origin answers 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectiveError {
    #[error("query string of {0} bytes is longer than {MAX_QUERY_LEN}")]
    TooLong(usize),
    #[error("{0} is not a decimal integer in 0..2^64")]
    NotANumber(&'static str),
    #[error("{0} given more than once")]
    Repeated(&'static str),
    #[error("_HLS_skip must be YES or v2")]
    BadSkip,
    #[error("_HLS_part without _HLS_msn")]
    PartWithoutMsn,
}

/// What to do with a media playlist request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Answer now.
    Ready,
    /// Hold the request until the state changes (the origin gives up with 503
    /// after 3 target durations, §6.2.5.2).
    Wait,
    /// Refuse at once with 400; the reason is for the response body.
    Bad(String),
}

/// Whether a part (`part-<seq>.m4s`) can be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartAvailability {
    Ready,
    /// The hinted part (or the one after it): hold until it is complete.
    Wait,
    NotFound,
}

/// Whether a segment (`seg-<msn>.m4s`) can be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentAvailability {
    /// All parts are written.
    Complete,
    /// Open: serve what exists and stream the rest as it is written.
    Growing,
    /// The next segment, not started yet: hold until it opens.
    Wait,
    NotFound,
}

// A playlist request's query is fed from the network.
network_input! {
    /// Parse the delivery directives out of a playlist request's query string.
    ///
    /// Unknown parameters are ignored (players add cache busters); known ones are
    /// parsed strictly: decimal digits only, at most 20, no sign, each given once.
    pub fn parse_directives(query: Option<&str>) -> Result<Directives, DirectiveError> {
        let mut d = Directives::default();
        let Some(q) = query else {
            return Ok(d);
        };
        if q.len() > MAX_QUERY_LEN {
            return Err(DirectiveError::TooLong(q.len()));
        }
        let mut skip_seen = false;
        for pair in q.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "_HLS_msn" => {
                    if d.msn.is_some() {
                        return Err(DirectiveError::Repeated("_HLS_msn"));
                    }
                    d.msn = Some(decimal(value).ok_or(DirectiveError::NotANumber("_HLS_msn"))?);
                }
                "_HLS_part" => {
                    if d.part.is_some() {
                        return Err(DirectiveError::Repeated("_HLS_part"));
                    }
                    d.part = Some(decimal(value).ok_or(DirectiveError::NotANumber("_HLS_part"))?);
                }
                "_HLS_skip" => {
                    if skip_seen {
                        return Err(DirectiveError::Repeated("_HLS_skip"));
                    }
                    skip_seen = true;
                    d.skip = match value {
                        "YES" | "v2" => Skip::Yes,
                        _ => return Err(DirectiveError::BadSkip),
                    };
                }
                _ => {}
            }
        }
        if d.part.is_some() && d.msn.is_none() {
            return Err(DirectiveError::PartWithoutMsn);
        }
        Ok(d)
    }

    /// RFC 8216bis §4.2 decimal-integer: `[0-9]+`, within u64.
    fn decimal(s: &str) -> Option<u64> {
        if s.is_empty() || s.len() > MAX_DECIMAL_DIGITS || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }
}

/// The multivariant playlist (`/live/<ch>/master.m3u8`).
pub fn master_playlist(state: &ChannelState) -> String {
    let mut out = String::with_capacity(1024);
    let _ = writeln!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:{MULTIVARIANT_PLAYLIST_VERSION}\n#EXT-X-INDEPENDENT-SEGMENTS"
    );
    let audio: Vec<&Track> = state
        .tracks
        .iter()
        .filter(|t| t.info.kind == TrackKind::Audio)
        .collect();
    let video: Vec<&Track> = state
        .tracks
        .iter()
        .filter(|t| t.info.kind == TrackKind::Video)
        .collect();

    if video.is_empty() {
        // audio-only channel: each audio track is a variant of its own
        for a in &audio {
            let _ = writeln!(
                out,
                "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{}\"",
                peak_bandwidth(a),
                average_bandwidth(a).min(peak_bandwidth(a)),
                attr(&a.info.codec)
            );
            let _ = writeln!(out, "{}/index.m3u8", attr(&a.info.id));
        }
        return out;
    }

    for (i, a) in audio.iter().enumerate() {
        let default = if i == 0 { "YES" } else { "NO" };
        let _ = writeln!(
            out,
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"{id}\",DEFAULT={default},AUTOSELECT=YES,CHANNELS=\"{ch}\",URI=\"{id}/index.m3u8\"",
            id = attr(&a.info.id),
            ch = a.info.channels,
        );
    }
    let audio_peak = audio.iter().map(|a| peak_bandwidth(a)).max().unwrap_or(0);
    let audio_avg = audio
        .iter()
        .map(|a| average_bandwidth(a))
        .max()
        .unwrap_or(0);
    let mut audio_codecs: Vec<&str> = Vec::new();
    for a in &audio {
        if !audio_codecs.contains(&a.info.codec.as_str()) {
            audio_codecs.push(&a.info.codec);
        }
    }
    for v in &video {
        let peak = peak_bandwidth(v).saturating_add(audio_peak);
        let avg = average_bandwidth(v).saturating_add(audio_avg).min(peak);
        let mut codecs = attr(&v.info.codec);
        for c in &audio_codecs {
            codecs.push(',');
            codecs.push_str(&attr(c));
        }
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={avg},CODECS=\"{codecs}\""
        );
        if v.info.width > 0 && v.info.height > 0 {
            let _ = write!(out, ",RESOLUTION={}x{}", v.info.width, v.info.height);
        }
        if let Some(fr) = v.info.frame_rate.filter(|f| f.is_finite() && *f > 0.0) {
            let _ = write!(out, ",FRAME-RATE={fr:.3}");
        }
        if !audio.is_empty() {
            out.push_str(",AUDIO=\"audio\"");
        }
        out.push('\n');
        let _ = writeln!(out, "{}/index.m3u8", attr(&v.info.id));
    }
    out
}

/// BANDWIDTH of one track: the measured peak, or the nominal rate before any
/// segment is complete.
fn peak_bandwidth(t: &Track) -> u64 {
    if t.peak_bandwidth > 0 {
        t.peak_bandwidth
    } else {
        t.info.nominal_bandwidth
    }
}

fn average_bandwidth(t: &Track) -> u64 {
    if t.average_bandwidth > 0 {
        t.average_bandwidth
    } else {
        t.info.nominal_bandwidth
    }
}

/// Make a string safe inside a quoted-string attribute or on a URI line: no
/// `"`, CR or LF (§4.2). Track ids and codecs come from configuration and
/// codec parsing; this is a last line of defence, not validation.
fn attr(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '"' && *c != '\r' && *c != '\n')
        .collect()
}

/// Seconds as a decimal-floating-point with at most three decimals, rounded
/// up to the millisecond (PART-TARGET must not be below any part, hold-backs
/// are minimums), trailing zeros trimmed (`1.5`, `6`, `0.334`).
pub(crate) fn secs_trimmed(s: f64) -> String {
    if !(s.is_finite() && s > 0.0) {
        return "0".into();
    }
    // the epsilon keeps float noise (0.333 * 3 = 0.9990000000000001) from
    // rounding up a whole millisecond
    let s = (s * 1000.0 - 1e-6).ceil().max(0.0) / 1000.0;
    let mut v = format!("{s:.3}");
    while v.ends_with('0') {
        v.pop();
    }
    if v.ends_with('.') {
        v.pop();
    }
    v
}

fn ticks_to_secs(ticks: u64, timescale: u32) -> f64 {
    ticks as f64 / timescale.max(1) as f64
}

fn pdt(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The segments a playlist lists: the window, without an open segment that
/// has no part yet (nothing of it can be listed; the preload hint covers it).
pub(crate) fn listed<'a>(state: &ChannelState, track: &'a Track) -> Vec<&'a Segment> {
    track
        .window(state.config.window_segments)
        .filter(|s| s.complete || !s.parts.is_empty())
        .collect()
}

/// Number of discontinuity-flagged segments of `track` with msn in `(lo, hi]`.
fn discontinuities_between(track: &Track, lo: u64, hi: u64) -> u64 {
    track
        .segments
        .iter()
        .filter(|s| s.msn > lo && s.msn <= hi && s.discontinuity)
        .count() as u64
}

/// EXT-X-DISCONTINUITY-SEQUENCE for a track: the channel's value refers to the
/// first listed segment of the reference track (track 0); a track whose
/// window starts elsewhere is shifted by the discontinuities in between, so
/// that Discontinuity Sequence Numbers agree across renditions.
pub(crate) fn discontinuity_sequence(state: &ChannelState, track: usize) -> u64 {
    let d = state.discontinuity_sequence;
    let window = state.config.window_segments;
    let (Some(reference), Some(this)) = (state.tracks.first(), state.tracks.get(track)) else {
        return d;
    };
    let f0 = reference.window(window).next().map(|s| s.msn);
    let ft = this.window(window).next().map(|s| s.msn);
    match (f0, ft) {
        (Some(f0), Some(ft)) if ft < f0 => d.saturating_sub(discontinuities_between(this, ft, f0)),
        (Some(f0), Some(ft)) if ft > f0 => {
            d.saturating_add(discontinuities_between(reference, f0, ft))
        }
        _ => d,
    }
}

/// The last part of a track: (msn of its segment, index in the segment).
fn last_part(track: &Track) -> Option<(u64, usize)> {
    track
        .segments
        .iter()
        .rev()
        .find(|s| !s.parts.is_empty())
        .map(|s| (s.msn, s.parts.len() - 1))
}

/// A media playlist (`/live/<ch>/<track>/index.m3u8`), full or delta.
///
/// An unknown track index gives an empty string (the origin answers 404
/// before asking).
pub fn media_playlist(state: &ChannelState, track: usize, skip: Skip) -> String {
    let Some(t) = state.tracks.get(track) else {
        return String::new();
    };
    let ts = t.info.timescale.max(1);
    let td = state.target_duration.max(1);
    let part_target = state.config.part_target;
    let segs = listed(state, t);

    let mut out = String::with_capacity(256 + segs.len() * 400);
    let _ = writeln!(out, "#EXTM3U\n#EXT-X-VERSION:{MEDIA_PLAYLIST_VERSION}");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{td}");
    let _ = writeln!(
        out,
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={},PART-HOLD-BACK={},HOLD-BACK={}",
        td.saturating_mul(SKIP_TARGET_DURATIONS),
        secs_trimmed(part_target * PART_HOLD_BACK_PARTS),
        td.saturating_mul(HOLD_BACK_TARGET_DURATIONS),
    );
    let _ = writeln!(
        out,
        "#EXT-X-PART-INF:PART-TARGET={}",
        secs_trimmed(part_target)
    );
    out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    let media_sequence = segs.first().map(|s| s.msn).unwrap_or_else(|| {
        // nothing listable yet: the segment being opened, or the next one
        t.segments.back().map(|s| s.msn).unwrap_or(0)
    });
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{media_sequence}");
    let _ = writeln!(
        out,
        "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
        discontinuity_sequence(state, track)
    );

    // Distance of each segment's start and end from the playlist end, in ticks.
    let total: u128 = segs.iter().map(|s| s.duration as u128).sum();
    let part_window = td as u128 * PART_LISTING_TARGET_DURATIONS as u128 * ts as u128;
    let skip_boundary = td as u128 * SKIP_TARGET_DURATIONS as u128 * ts as u128;

    // Delta update: skip the segments that end at least the skip boundary
    // before the playlist end (§6.2.5.1).
    let mut skipped = 0usize;
    if skip == Skip::Yes {
        let mut end = 0u128;
        for s in &segs {
            end += s.duration as u128;
            if s.complete && total - end >= skip_boundary {
                skipped += 1;
            } else {
                break;
            }
        }
    }
    if skipped > 0 {
        let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
    }

    let mut start = 0u128; // ticks from the first listed segment
    let mut prev_init: Option<u32> = None;
    for (i, s) in segs.iter().enumerate() {
        let seg_start = start;
        start += s.duration as u128;
        if i < skipped {
            prev_init = Some(s.init_id);
            continue;
        }
        if s.discontinuity && i > 0 {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if i == skipped || prev_init != Some(s.init_id) {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"init-{}.mp4\"", s.init_id);
        }
        prev_init = Some(s.init_id);
        let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", pdt(s.program_date_time));
        if total - seg_start <= part_window {
            for p in &s.parts {
                let _ = write!(
                    out,
                    "#EXT-X-PART:DURATION={:.5},URI=\"part-{}.m4s\"",
                    ticks_to_secs(p.duration, ts),
                    p.seq
                );
                if p.independent {
                    out.push_str(",INDEPENDENT=YES");
                }
                out.push('\n');
            }
        }
        if s.complete {
            let _ = writeln!(
                out,
                "#EXTINF:{:.5},\nseg-{}.m4s",
                ticks_to_secs(s.duration, ts),
                s.msn
            );
        }
    }
    let _ = writeln!(
        out,
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-{}.m4s\"",
        t.next_part_seq
    );
    for (j, other) in state.tracks.iter().enumerate() {
        if j == track {
            continue;
        }
        if let Some((msn, part)) = last_part(other) {
            let _ = writeln!(
                out,
                "#EXT-X-RENDITION-REPORT:URI=\"../{}/index.m3u8\",LAST-MSN={msn},LAST-PART={part}",
                attr(&other.info.id)
            );
        }
    }
    out
}

/// The Advance Part Limit (§6.2.5.2): 3 / PART-TARGET parts when PART-TARGET
/// is under a second, else 3.
pub fn advance_part_limit(part_target: f64) -> f64 {
    if part_target.is_finite() && part_target > 0.0 && part_target < 1.0 {
        3.0 / part_target
    } else {
        3.0
    }
}

/// Blocking-reload decision for a media playlist request (§6.2.5.2).
pub fn readiness(state: &ChannelState, track: usize, d: &Directives) -> Readiness {
    let Some(t) = state.tracks.get(track) else {
        return Readiness::Bad("no such track".into());
    };
    if d.part.is_some() && d.msn.is_none() {
        return Readiness::Bad("_HLS_part without _HLS_msn".into());
    }
    // Nothing to list yet: every request waits for the first part (the origin
    // turns a long wait into 503).
    let (Some(front), Some(back)) = (t.segments.front(), t.segments.back()) else {
        return Readiness::Wait;
    };
    if t.next_part_seq == 0 || last_part(t).is_none() {
        return Readiness::Wait;
    }
    let Some(msn) = d.msn else {
        return Readiness::Ready;
    };

    let last_complete = t.segments.iter().rev().find(|s| s.complete).map(|s| s.msn);
    // "the last Media Segment in the current Playlist": the last complete one;
    // before any is complete, the one before the open segment.
    let msn_limit = match last_complete {
        Some(l) => l.saturating_add(MSN_LOOKAHEAD),
        None => back.msn.saturating_add(MSN_LOOKAHEAD - 1),
    };
    if msn > msn_limit {
        return Readiness::Bad(format!(
            "_HLS_msn={msn} is more than {MSN_LOOKAHEAD} past the last segment"
        ));
    }
    if msn < front.msn {
        // gone from the store: answer with the current playlist (§6.2.5.2)
        return Readiness::Ready;
    }

    let Some(part) = d.part else {
        return match last_complete {
            Some(l) if l >= msn => Readiness::Ready,
            _ => Readiness::Wait,
        };
    };

    // A part index past the end of a complete segment is part 0 of the next.
    let (msn, part) = match t.segment(msn) {
        Some(s) if s.complete && part >= s.parts.len() as u64 => (msn.saturating_add(1), 0),
        _ => (msn, part),
    };

    // How far past the last existing part the request is, in parts.
    let (edge_msn, edge_first_seq, edge_parts) = if back.complete {
        (back.msn.saturating_add(1), t.next_part_seq, 0u64)
    } else {
        (
            back.msn,
            back.parts.first().map(|p| p.seq).unwrap_or(t.next_part_seq),
            back.parts.len() as u64,
        )
    };
    if msn >= edge_msn {
        let per_segment = expected_parts_per_segment(state);
        let requested: u128 = if msn == edge_msn {
            edge_first_seq as u128 + part as u128
        } else {
            edge_first_seq as u128
                + edge_parts.max(per_segment) as u128
                + (msn - edge_msn - 1) as u128 * per_segment as u128
                + part as u128
        };
        let last_seq = t.next_part_seq as u128 - 1;
        let ahead = requested.saturating_sub(last_seq);
        if ahead as f64 > advance_part_limit(state.config.part_target) {
            return Readiness::Bad(format!(
                "_HLS_part is {ahead} parts past the last part, beyond the Advance Part Limit"
            ));
        }
    }

    match t.segment(msn) {
        Some(s) if (part as u128) < s.parts.len() as u128 => Readiness::Ready,
        _ => Readiness::Wait,
    }
}

/// Parts a segment is expected to have: segment target / part target, rounded.
fn expected_parts_per_segment(state: &ChannelState) -> u64 {
    let n = state.config.segment_target / state.config.part_target;
    if n.is_finite() && n >= 1.0 {
        (n.round() as u64).max(1)
    } else {
        1
    }
}

/// Can `part-<part_seq>.m4s` be served?
pub fn part_availability(state: &ChannelState, track: usize, part_seq: u64) -> PartAvailability {
    let Some(t) = state.tracks.get(track) else {
        return PartAvailability::NotFound;
    };
    if t.part(part_seq).is_some() {
        return PartAvailability::Ready;
    }
    // Only the hinted part is requestable before it exists; anything else
    // neither present nor hinted is 404 (RFC 8216bis §6.2.6). A conforming
    // player asks only for what its playlist lists or hints.
    if part_seq == t.next_part_seq {
        PartAvailability::Wait
    } else {
        PartAvailability::NotFound
    }
}

/// Can `seg-<msn>.m4s` be served?
pub fn segment_availability(state: &ChannelState, track: usize, msn: u64) -> SegmentAvailability {
    let Some(t) = state.tracks.get(track) else {
        return SegmentAvailability::NotFound;
    };
    if let Some(s) = t.segment(msn) {
        return if s.complete {
            SegmentAvailability::Complete
        } else {
            SegmentAvailability::Growing
        };
    }
    match t.segments.back() {
        Some(last) if last.msn.checked_add(1) == Some(msn) => SegmentAvailability::Wait,
        _ => SegmentAvailability::NotFound,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::packaging::store::{StoreConfig, TrackInfo};
    use bytes::Bytes;
    use std::time::{Duration, UNIX_EPOCH};

    pub const VIDEO_TS: u64 = 90_000;
    pub const AUDIO_TS: u64 = 48_000;
    /// 2023-11-14T22:13:20Z
    pub fn epoch() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    /// A channel of one video track (90 kHz, track 0) and one audio track
    /// (48 kHz, track 1): 2 s segments of 4 x 0.5 s parts of 1000 bytes.
    pub struct Fx {
        pub st: ChannelState,
        pub msn: u64,
        pub init: u32,
        /// media time of the next segment, seconds x 2 (segment units of 0.5 s)
        pub halves: u64,
    }

    impl Fx {
        pub fn new(window: usize) -> Fx {
            Fx::with(StoreConfig {
                segment_target: 2.0,
                part_target: 0.5,
                window_segments: window,
                ..StoreConfig::default()
            })
        }

        pub fn with(config: StoreConfig) -> Fx {
            let mut st = ChannelState::new(config, epoch());
            let v = st.upsert_track(TrackInfo {
                id: "720p".into(),
                kind: TrackKind::Video,
                timescale: VIDEO_TS as u32,
                codec: "avc1.64001f".into(),
                width: 1280,
                height: 720,
                frame_rate: Some(30.0),
                sample_rate: 0,
                channels: 0,
                nominal_bandwidth: 3_000_000,
            });
            let a = st.upsert_track(TrackInfo {
                id: "audio".into(),
                kind: TrackKind::Audio,
                timescale: AUDIO_TS as u32,
                codec: "mp4a.40.2".into(),
                width: 0,
                height: 0,
                frame_rate: None,
                sample_rate: 48_000,
                channels: 2,
                nominal_bandwidth: 128_000,
            });
            assert_eq!((v, a), (0, 1));
            st.add_init(0, 0, Bytes::from_static(b"v0"));
            st.add_init(1, 0, Bytes::from_static(b"a0"));
            Fx {
                st,
                msn: 0,
                init: 0,
                halves: 0,
            }
        }

        /// Open the next segment on both tracks (closing the open ones).
        pub fn open(&mut self, discontinuity: bool) {
            let secs = self.halves as f64 / 2.0;
            let pdt = epoch() + Duration::from_secs_f64(secs);
            for (track, ts) in [(0, VIDEO_TS), (1, AUDIO_TS)] {
                let start = self.halves * ts / 2;
                self.st
                    .open_segment(track, self.msn, self.init, discontinuity, start, pdt);
            }
            self.msn += 1;
        }

        /// Add one 0.5 s part to both tracks.
        pub fn part(&mut self) {
            let first = self.st.tracks[0]
                .segments
                .back()
                .is_some_and(|s| s.parts.is_empty());
            self.st
                .add_part(0, VIDEO_TS / 2, first, Bytes::from(vec![0u8; 1000]));
            self.st
                .add_part(1, AUDIO_TS / 2, true, Bytes::from(vec![0u8; 1000]));
            self.halves += 1;
        }

        pub fn close(&mut self) {
            self.st.close_segment(0);
            self.st.close_segment(1);
        }

        /// A complete segment of `parts` parts.
        pub fn segment(&mut self, parts: usize) {
            self.open(false);
            for _ in 0..parts {
                self.part();
            }
            self.close();
        }

        /// A whole segment of `parts` parts after a discontinuity (a new init).
        pub fn discontinuity(&mut self, parts: usize) {
            self.new_init();
            self.open(true);
            for _ in 0..parts {
                self.part();
            }
            self.close();
        }

        /// Start a new init id; the next segment opened is a discontinuity.
        pub fn new_init(&mut self) {
            self.init += 1;
            self.st.add_init(0, self.init, Bytes::from_static(b"v"));
            self.st.add_init(1, self.init, Bytes::from_static(b"a"));
        }
    }

    fn lines_with<'a>(s: &'a str, prefix: &str) -> Vec<&'a str> {
        s.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    fn attr_f64(line: &str, name: &str) -> f64 {
        let key = format!("{name}=");
        let v = line
            .split([':', ','])
            .find_map(|kv| kv.strip_prefix(&key))
            .unwrap_or_else(|| panic!("{name} in {line}"));
        v.trim_matches('"').parse().unwrap()
    }

    fn d(msn: Option<u64>, part: Option<u64>) -> Directives {
        Directives {
            msn,
            part,
            skip: Skip::No,
        }
    }

    #[test]
    fn media_playlist_snapshot() {
        let mut fx = Fx::new(8);
        fx.segment(4);
        fx.segment(4);
        fx.open(false);
        fx.part();
        fx.part();
        let expected = "\
#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12,PART-HOLD-BACK=1.5,HOLD-BACK=6
#EXT-X-PART-INF:PART-TARGET=0.5
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-MAP:URI=\"init-0.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z
#EXT-X-PART:DURATION=0.50000,URI=\"part-0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.50000,URI=\"part-1.m4s\"
#EXT-X-PART:DURATION=0.50000,URI=\"part-2.m4s\"
#EXT-X-PART:DURATION=0.50000,URI=\"part-3.m4s\"
#EXTINF:2.00000,
seg-0.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22.000Z
#EXT-X-PART:DURATION=0.50000,URI=\"part-4.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.50000,URI=\"part-5.m4s\"
#EXT-X-PART:DURATION=0.50000,URI=\"part-6.m4s\"
#EXT-X-PART:DURATION=0.50000,URI=\"part-7.m4s\"
#EXTINF:2.00000,
seg-1.m4s
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:24.000Z
#EXT-X-PART:DURATION=0.50000,URI=\"part-8.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.50000,URI=\"part-9.m4s\"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-10.m4s\"
#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\",LAST-MSN=2,LAST-PART=1
";
        assert_eq!(media_playlist(&fx.st, 0, Skip::No), expected);
        // the audio playlist reports the video rendition
        let audio = media_playlist(&fx.st, 1, Skip::No);
        assert!(audio.ends_with(
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-10.m4s\"\n\
#EXT-X-RENDITION-REPORT:URI=\"../720p/index.m3u8\",LAST-MSN=2,LAST-PART=1\n"
        ));
    }

    #[test]
    fn master_playlist_snapshot_nominal_then_measured() {
        let mut fx = Fx::new(8);
        fx.open(false);
        fx.part();
        // no complete segment yet: nominal rates
        assert_eq!(
            master_playlist(&fx.st),
            "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"audio\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"audio/index.m3u8\"
#EXT-X-STREAM-INF:BANDWIDTH=3128000,AVERAGE-BANDWIDTH=3128000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=30.000,AUDIO=\"audio\"
720p/index.m3u8
"
        );
        fx.part();
        fx.part();
        fx.part();
        fx.close();
        // 4 x 1000 bytes in 2 s = 16 kbit/s per track; video + audio
        let m = master_playlist(&fx.st);
        assert!(
            m.contains("#EXT-X-STREAM-INF:BANDWIDTH=32000,AVERAGE-BANDWIDTH=32000,"),
            "{m}"
        );
    }

    #[test]
    fn master_playlist_audio_only() {
        let mut st = ChannelState::new(StoreConfig::default(), epoch());
        st.upsert_track(TrackInfo {
            id: "audio".into(),
            kind: TrackKind::Audio,
            timescale: 48_000,
            codec: "mp4a.40.2".into(),
            width: 0,
            height: 0,
            frame_rate: None,
            sample_rate: 48_000,
            channels: 2,
            nominal_bandwidth: 128_000,
        });
        assert_eq!(
            master_playlist(&st),
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n\
#EXT-X-STREAM-INF:BANDWIDTH=128000,AVERAGE-BANDWIDTH=128000,CODECS=\"mp4a.40.2\"\naudio/index.m3u8\n"
        );
    }

    #[test]
    fn hold_back_arithmetic() {
        for (seg, part) in [(2.0, 0.5), (4.0, 1.0), (6.0, 0.333), (1.0, 0.2)] {
            let mut fx = Fx::with(StoreConfig {
                segment_target: seg,
                part_target: part,
                window_segments: 8,
                ..StoreConfig::default()
            });
            fx.segment(4);
            let p = media_playlist(&fx.st, 0, Skip::No);
            let sc = lines_with(&p, "#EXT-X-SERVER-CONTROL:")[0];
            let td = fx.st.target_duration as f64;
            let pt = attr_f64(lines_with(&p, "#EXT-X-PART-INF:")[0], "PART-TARGET");
            assert_eq!(pt, part);
            assert!(attr_f64(sc, "PART-HOLD-BACK") >= 3.0 * pt - 1e-9, "{sc}");
            assert!(attr_f64(sc, "HOLD-BACK") >= 3.0 * td, "{sc}");
            assert!(attr_f64(sc, "CAN-SKIP-UNTIL") >= 6.0 * td, "{sc}");
        }
        assert_eq!(secs_trimmed(0.3333), "0.334");
        assert_eq!(secs_trimmed(1.5), "1.5");
        assert_eq!(secs_trimmed(12.0), "12");
        assert_eq!(secs_trimmed(-1.0), "0");
        assert_eq!(secs_trimmed(f64::NAN), "0");
        let fx = Fx::with(StoreConfig {
            segment_target: 4.0,
            part_target: 0.333,
            window_segments: 8,
            ..StoreConfig::default()
        });
        let p = media_playlist(&fx.st, 0, Skip::No);
        assert!(p.contains(
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=24,PART-HOLD-BACK=0.999,HOLD-BACK=12\n"
        ));
        assert!(p.contains("#EXT-X-TARGETDURATION:4\n#EXT-X-SERVER-CONTROL"));
    }

    #[test]
    fn parts_only_in_the_last_three_target_durations() {
        let mut fx = Fx::new(8);
        for _ in 0..10 {
            fx.segment(4);
        }
        fx.open(false);
        fx.part();
        let p = media_playlist(&fx.st, 0, Skip::No);
        // listed: seg-2..seg-9 (16 s) + 0.5 s of seg-10. Segments starting within
        // 6 s of the end: seg-10 (0.5 s), seg-9 (2.5 s), seg-8 (4.5 s); seg-7
        // starts 6.5 s from the end.
        let parts = lines_with(&p, "#EXT-X-PART:");
        assert_eq!(parts.len(), 4 + 4 + 1);
        assert!(parts[0].contains("URI=\"part-32.m4s\""), "{}", parts[0]);
        assert!(parts[8].contains("URI=\"part-40.m4s\""));
        assert_eq!(lines_with(&p, "#EXTINF:").len(), 8);
        assert!(p.contains("#EXT-X-MEDIA-SEQUENCE:2\n"));
        let pt = attr_f64(lines_with(&p, "#EXT-X-PART-INF:")[0], "PART-TARGET");
        for l in parts {
            assert!(attr_f64(l, "DURATION") <= pt, "{l}");
        }
        for l in lines_with(&p, "#EXTINF:") {
            let secs: f64 = l["#EXTINF:".len()..].trim_end_matches(',').parse().unwrap();
            assert!(secs.round() <= fx.st.target_duration as f64);
        }
    }

    #[test]
    fn exactly_one_preload_hint_for_the_next_part() {
        let mut fx = Fx::new(8);
        fx.segment(4);
        fx.open(false);
        fx.part();
        let p = media_playlist(&fx.st, 0, Skip::No);
        assert_eq!(
            lines_with(&p, "#EXT-X-PRELOAD-HINT"),
            ["#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-5.m4s\""]
        );
        // a segment just opened, no part yet: the hint is its first part, and it
        // is not listed otherwise
        fx.part();
        fx.part();
        fx.part();
        fx.open(false);
        let p = media_playlist(&fx.st, 0, Skip::No);
        assert_eq!(
            lines_with(&p, "#EXT-X-PRELOAD-HINT"),
            ["#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-8.m4s\""]
        );
        assert!(p.ends_with("seg-1.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-8.m4s\"\n#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\",LAST-MSN=1,LAST-PART=3\n"), "{p}");
    }

    #[test]
    fn rendition_reports_track_the_other_renditions() {
        let mut fx = Fx::new(8);
        fx.segment(4);
        fx.open(false);
        fx.part();
        fx.part();
        fx.part();
        // audio one part behind video
        fx.st
            .add_part(0, VIDEO_TS / 2, false, Bytes::from_static(b"x"));
        let v = media_playlist(&fx.st, 0, Skip::No);
        let a = media_playlist(&fx.st, 1, Skip::No);
        assert_eq!(
            lines_with(&v, "#EXT-X-RENDITION-REPORT"),
            ["#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\",LAST-MSN=1,LAST-PART=2"]
        );
        assert_eq!(
            lines_with(&a, "#EXT-X-RENDITION-REPORT"),
            ["#EXT-X-RENDITION-REPORT:URI=\"../720p/index.m3u8\",LAST-MSN=1,LAST-PART=3"]
        );
    }

    #[test]
    fn delta_update_skips_segments_beyond_the_skip_boundary() {
        let mut fx = Fx::new(8);
        for _ in 0..10 {
            fx.segment(4);
        }
        fx.open(false);
        fx.part();
        let full = media_playlist(&fx.st, 0, Skip::No);
        let delta = media_playlist(&fx.st, 0, Skip::Yes);
        assert!(!full.contains("#EXT-X-SKIP"));
        // 16.5 s listed, boundary 12 s: seg-2 ends 14.5 s and seg-3 12.5 s before
        // the end, seg-4 10.5 s.
        assert!(
            delta.contains(
                "#EXT-X-MEDIA-SEQUENCE:2\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n\
#EXT-X-SKIP:SKIPPED-SEGMENTS=2\n#EXT-X-MAP:URI=\"init-0.mp4\"\n\
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:28.000Z\n#EXTINF:2.00000,\nseg-4.m4s\n"
            ),
            "{delta}"
        );
        assert_eq!(lines_with(&delta, "#EXTINF:").len(), 6);
        assert_eq!(lines_with(&delta, "#EXT-X-MAP:").len(), 1);
        // the skipped lines are exactly what the full playlist has before seg-4
        let tail = &full[full
            .find("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:28")
            .unwrap()..];
        assert!(delta.ends_with(tail));

        // a boundary hit exactly: 16 s listed, seg-3 ends 12 s before the end
        let mut fx = Fx::new(8);
        for _ in 0..10 {
            fx.segment(4);
        }
        let delta = media_playlist(&fx.st, 0, Skip::Yes);
        assert!(
            delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=2\n"),
            "{delta}"
        );

        // shorter than the boundary: nothing to skip
        let mut fx = Fx::new(8);
        for _ in 0..6 {
            fx.segment(4);
        }
        assert_eq!(
            media_playlist(&fx.st, 0, Skip::Yes),
            media_playlist(&fx.st, 0, Skip::No)
        );
    }

    #[test]
    fn delta_update_keeps_discontinuity_and_map_state() {
        let mut fx = Fx::new(8);
        fx.segment(4);
        fx.discontinuity(4);
        for _ in 0..6 {
            fx.segment(4);
        }
        let delta = media_playlist(&fx.st, 0, Skip::Yes);
        // 16 s listed: seg-0 and seg-1 skipped; the discontinuity went with them,
        // the map of what follows is repeated
        assert!(delta.contains(
            "#EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXT-X-SKIP:SKIPPED-SEGMENTS=2\n#EXT-X-MAP:URI=\"init-1.mp4\"\n"
        ), "{delta}");
        assert!(!delta.contains("#EXT-X-DISCONTINUITY\n"));
    }

    #[test]
    fn discontinuity_tags_and_sequence_as_the_window_slides() {
        let mut fx = Fx::new(3);
        fx.segment(4);
        fx.segment(4);
        fx.discontinuity(4);
        let p = media_playlist(&fx.st, 0, Skip::No);
        assert!(p.contains("#EXT-X-DISCONTINUITY-SEQUENCE:0\n"));
        assert!(p.contains(
            "seg-1.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:24.000Z\n"
        ), "{p}");
        assert_eq!(lines_with(&p, "#EXT-X-MAP:").len(), 2);

        // one more: seg-1 first
        fx.segment(4);
        let p = media_playlist(&fx.st, 0, Skip::No);
        assert!(p.contains("#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n"));
        assert_eq!(lines_with(&p, "#EXT-X-DISCONTINUITY\n").len(), 0);
        assert_eq!(p.matches("#EXT-X-DISCONTINUITY\n").count(), 1);

        // the discontinuity is first listed: counted in the sequence, no tag
        fx.segment(4);
        for track in [0, 1] {
            let p = media_playlist(&fx.st, track, Skip::No);
            assert!(
                p.contains("#EXT-X-MEDIA-SEQUENCE:2\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n"),
                "{p}"
            );
            assert_eq!(p.matches("#EXT-X-DISCONTINUITY\n").count(), 0);
            assert!(p.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n#EXT-X-MAP:URI=\"init-1.mp4\"\n"));
        }
        // and stays counted after it slid out
        fx.segment(4);
        fx.segment(4);
        assert!(media_playlist(&fx.st, 0, Skip::No).contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"));
    }

    #[test]
    fn lagging_rendition_keeps_the_same_discontinuity_numbers() {
        let mut fx = Fx::new(3);
        fx.segment(4);
        fx.segment(4);
        fx.discontinuity(4);
        fx.segment(4); // window seg-1..seg-3, seg-2 flagged
                       // video moves on first: seg-4 closes on video only, seg-2 becomes its
                       // first listed segment and the channel sequence becomes 1
        fx.st.open_segment(0, 4, 1, false, 8 * VIDEO_TS, epoch());
        fx.st
            .add_part(0, VIDEO_TS * 2, true, Bytes::from_static(b"x"));
        fx.st.close_segment(0);
        assert_eq!(fx.st.discontinuity_sequence, 1);
        let v = media_playlist(&fx.st, 0, Skip::No);
        let a = media_playlist(&fx.st, 1, Skip::No);
        assert!(v.contains("#EXT-X-MEDIA-SEQUENCE:2\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n"));
        // audio still lists seg-1: sequence 0 and a tag before seg-2, so seg-2
        // has Discontinuity Sequence Number 1 in both
        assert!(
            a.contains("#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n"),
            "{a}"
        );
        assert_eq!(a.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
    }

    #[test]
    fn directive_parsing() {
        assert_eq!(parse_directives(None), Ok(Directives::default()));
        assert_eq!(parse_directives(Some("")), Ok(Directives::default()));
        assert_eq!(
            parse_directives(Some("_HLS_msn=5&_HLS_part=2&_HLS_skip=YES")),
            Ok(Directives {
                msn: Some(5),
                part: Some(2),
                skip: Skip::Yes
            })
        );
        assert_eq!(
            parse_directives(Some("cb=123&_HLS_skip=v2&x")).map(|d| d.skip),
            Ok(Skip::Yes)
        );
        assert_eq!(
            parse_directives(Some("_HLS_msn=9223372036854775808")).map(|d| d.msn),
            Ok(Some(1 << 63))
        );
        assert_eq!(
            parse_directives(Some("_HLS_msn=18446744073709551615")).map(|d| d.msn),
            Ok(Some(u64::MAX))
        );
        assert_eq!(
            parse_directives(Some("_HLS_part=1")),
            Err(DirectiveError::PartWithoutMsn)
        );
        for bad in [
            "-1",
            "abc",
            "",
            "+5",
            " 5",
            "1e3",
            "0x10",
            "5.0",
            "18446744073709551616",
            "000000000000000000001",
            "%35",
        ] {
            assert_eq!(
                parse_directives(Some(&format!("_HLS_msn={bad}"))),
                Err(DirectiveError::NotANumber("_HLS_msn")),
                "{bad}"
            );
            assert_eq!(
                parse_directives(Some(&format!("_HLS_msn=1&_HLS_part={bad}"))),
                Err(DirectiveError::NotANumber("_HLS_part")),
                "{bad}"
            );
        }
        assert_eq!(
            parse_directives(Some("_HLS_msn")),
            Err(DirectiveError::NotANumber("_HLS_msn"))
        );
        assert_eq!(
            parse_directives(Some("_HLS_msn=1&_HLS_msn=2")),
            Err(DirectiveError::Repeated("_HLS_msn"))
        );
        assert_eq!(
            parse_directives(Some("_HLS_skip=NO")),
            Err(DirectiveError::BadSkip)
        );
        let huge = format!("_HLS_msn=1&pad={}", "a".repeat(MAX_QUERY_LEN));
        assert_eq!(
            parse_directives(Some(&huge)),
            Err(DirectiveError::TooLong(huge.len()))
        );
        let many = "&".repeat(MAX_QUERY_LEN);
        assert_eq!(parse_directives(Some(&many)), Ok(Directives::default()));
    }

    /// seg-0..seg-3 complete (parts 0..15), seg-4 open with parts 16 and 17.
    fn live() -> Fx {
        let mut fx = Fx::new(8);
        for _ in 0..4 {
            fx.segment(4);
        }
        fx.open(false);
        fx.part();
        fx.part();
        fx
    }

    #[test]
    fn blocking_reload_on_segments() {
        let fx = live();
        let r = |msn| readiness(&fx.st, 0, &d(Some(msn), None));
        assert_eq!(readiness(&fx.st, 0, &d(None, None)), Readiness::Ready);
        assert_eq!(r(2), Readiness::Ready);
        assert_eq!(r(3), Readiness::Ready); // last complete
        assert_eq!(r(4), Readiness::Wait); // open: not a Media Segment yet
        assert_eq!(r(5), Readiness::Wait); // last + 2
        assert!(matches!(r(6), Readiness::Bad(_))); // last + 3
        assert!(matches!(r(1 << 63), Readiness::Bad(_)));
        assert!(matches!(r(u64::MAX), Readiness::Bad(_)));
    }

    #[test]
    fn blocking_reload_on_parts() {
        let fx = live();
        let r = |msn, part| readiness(&fx.st, 0, &d(Some(msn), Some(part)));
        assert_eq!(r(4, 0), Readiness::Ready);
        assert_eq!(r(4, 1), Readiness::Ready);
        assert_eq!(r(4, 2), Readiness::Wait);
        assert_eq!(r(3, 3), Readiness::Ready);
        // past the end of complete seg-3: part 0 of seg-4, which exists
        assert_eq!(r(3, 4), Readiness::Ready);
        assert_eq!(r(3, 1 << 40), Readiness::Ready);
        // Advance Part Limit at PART-TARGET 0.5 s: 6 parts past the last (17)
        assert_eq!(r(4, 7), Readiness::Wait); // part 23: 6 ahead
        assert!(matches!(r(4, 8), Readiness::Bad(_))); // 7 ahead
        assert_eq!(r(5, 0), Readiness::Wait); // 16 + 4 = 20: 3 ahead
        assert_eq!(r(5, 3), Readiness::Wait); // 6 ahead
        assert!(matches!(r(5, 4), Readiness::Bad(_)));
        assert!(matches!(r(5, u64::MAX), Readiness::Bad(_)));
        assert!(matches!(r(6, 0), Readiness::Bad(_))); // msn limit first
        assert!(matches!(r(4, u64::MAX), Readiness::Bad(_)));
    }

    #[test]
    fn part_past_the_end_waits_for_the_next_segment() {
        let mut fx = live();
        fx.part();
        fx.part();
        fx.open(false); // seg-4 complete, seg-5 open without parts
        let r = |msn, part| readiness(&fx.st, 0, &d(Some(msn), Some(part)));
        assert_eq!(r(4, 3), Readiness::Ready);
        assert_eq!(r(4, 4), Readiness::Wait); // part 0 of seg-5
        assert_eq!(r(5, 0), Readiness::Wait);
        assert_eq!(readiness(&fx.st, 0, &d(Some(4), None)), Readiness::Ready);
        assert_eq!(readiness(&fx.st, 0, &d(Some(6), None)), Readiness::Wait);
        assert!(matches!(
            readiness(&fx.st, 0, &d(Some(7), None)),
            Readiness::Bad(_)
        ));
        fx.part();
        assert_eq!(readiness(&fx.st, 0, &d(Some(4), Some(4))), Readiness::Ready);
    }

    #[test]
    fn advance_part_limit_with_long_parts() {
        assert_eq!(advance_part_limit(0.5), 6.0);
        assert_eq!(advance_part_limit(0.2), 15.0);
        assert_eq!(advance_part_limit(1.0), 3.0);
        assert_eq!(advance_part_limit(2.0), 3.0);
        assert_eq!(advance_part_limit(0.0), 3.0);
        assert_eq!(advance_part_limit(f64::NAN), 3.0);
        let mut fx = Fx::with(StoreConfig {
            segment_target: 4.0,
            part_target: 1.0,
            window_segments: 8,
            ..StoreConfig::default()
        });
        fx.segment(4);
        fx.open(false);
        fx.part(); // the fixture's parts are 0.5 s; the arithmetic is in parts
        let r = |msn, part| readiness(&fx.st, 0, &d(Some(msn), Some(part)));
        assert_eq!(r(1, 3), Readiness::Wait); // last is (1, 0): 3 ahead
        assert!(matches!(r(1, 4), Readiness::Bad(_)));
    }

    #[test]
    fn readiness_before_media_and_for_evicted_segments() {
        let fx = Fx::new(8);
        for dir in [d(None, None), d(Some(0), None), d(Some(1 << 63), Some(3))] {
            assert_eq!(readiness(&fx.st, 0, &dir), Readiness::Wait);
        }
        let mut fx = Fx::new(8);
        fx.open(false);
        assert_eq!(readiness(&fx.st, 0, &d(None, None)), Readiness::Wait);
        fx.part();
        assert_eq!(readiness(&fx.st, 0, &d(None, None)), Readiness::Ready);
        assert_eq!(readiness(&fx.st, 0, &d(Some(0), Some(0))), Readiness::Ready);
        assert_eq!(readiness(&fx.st, 0, &d(Some(1), None)), Readiness::Wait);
        assert!(matches!(
            readiness(&fx.st, 0, &d(Some(2), None)),
            Readiness::Bad(_)
        ));

        let mut fx = Fx::new(2);
        for _ in 0..10 {
            fx.segment(4);
        }
        assert_eq!(fx.st.tracks[0].segments.front().map(|s| s.msn), Some(4));
        assert_eq!(readiness(&fx.st, 0, &d(Some(0), None)), Readiness::Ready);
        assert_eq!(readiness(&fx.st, 0, &d(Some(0), Some(9))), Readiness::Ready);
        assert!(matches!(
            readiness(&fx.st, 7, &d(None, None)),
            Readiness::Bad(_)
        ));
        assert!(matches!(
            readiness(&fx.st, 0, &d(None, Some(1))),
            Readiness::Bad(_)
        ));
    }

    #[test]
    fn part_and_segment_availability() {
        let fx = live();
        assert_eq!(part_availability(&fx.st, 0, 0), PartAvailability::Ready);
        assert_eq!(part_availability(&fx.st, 0, 17), PartAvailability::Ready);
        assert_eq!(part_availability(&fx.st, 0, 18), PartAvailability::Wait); // hinted
                                                                              // neither present nor hinted: 404
        assert_eq!(part_availability(&fx.st, 0, 19), PartAvailability::NotFound);
        assert_eq!(part_availability(&fx.st, 0, 20), PartAvailability::NotFound);
        assert_eq!(
            part_availability(&fx.st, 0, u64::MAX),
            PartAvailability::NotFound
        );
        assert_eq!(part_availability(&fx.st, 9, 0), PartAvailability::NotFound);

        assert_eq!(
            segment_availability(&fx.st, 0, 3),
            SegmentAvailability::Complete
        );
        assert_eq!(
            segment_availability(&fx.st, 1, 4),
            SegmentAvailability::Growing
        );
        assert_eq!(
            segment_availability(&fx.st, 0, 5),
            SegmentAvailability::Wait
        );
        assert_eq!(
            segment_availability(&fx.st, 0, 6),
            SegmentAvailability::NotFound
        );
        assert_eq!(
            segment_availability(&fx.st, 0, u64::MAX),
            SegmentAvailability::NotFound
        );
        assert_eq!(
            segment_availability(&fx.st, 5, 0),
            SegmentAvailability::NotFound
        );

        // evicted parts and segments are gone
        let mut fx = Fx::new(2);
        for _ in 0..10 {
            fx.segment(4);
        }
        assert_eq!(part_availability(&fx.st, 0, 0), PartAvailability::NotFound);
        assert_eq!(part_availability(&fx.st, 0, 16), PartAvailability::Ready);
        assert_eq!(
            segment_availability(&fx.st, 0, 0),
            SegmentAvailability::NotFound
        );
        assert_eq!(
            segment_availability(&fx.st, 0, 10),
            SegmentAvailability::Wait
        );
        assert_eq!(
            segment_availability(&Fx::new(2).st, 0, 0),
            SegmentAvailability::NotFound
        );
    }

    #[test]
    fn degenerate_states_do_not_panic() {
        let fx = Fx::new(8);
        assert_eq!(media_playlist(&fx.st, 3, Skip::Yes), "");
        let p = media_playlist(&fx.st, 0, Skip::Yes);
        assert!(p.contains("#EXT-X-MEDIA-SEQUENCE:0\n"));
        assert!(p.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-0.m4s\"\n"));
        for (seg, part) in [(0.0, 0.0), (f64::NAN, f64::INFINITY), (-1.0, -1.0)] {
            let mut fx = Fx::with(StoreConfig {
                segment_target: seg,
                part_target: part,
                window_segments: 0,
                ..StoreConfig::default()
            });
            fx.segment(4);
            fx.open(false);
            fx.part();
            let _ = media_playlist(&fx.st, 0, Skip::Yes);
            let _ = master_playlist(&fx.st);
            let _ = readiness(&fx.st, 0, &d(Some(1), Some(u64::MAX)));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn any_query_any_directive_never_panics(q in ".{0,80}", msn in proptest::prelude::any::<u64>(), part in proptest::prelude::any::<u64>()) {
            let _ = parse_directives(Some(&q));
            let fx = live();
            let _ = readiness(&fx.st, 0, &d(Some(msn), Some(part)));
            let _ = readiness(&fx.st, 1, &d(Some(msn), None));
            let _ = part_availability(&fx.st, 0, part);
            let _ = segment_availability(&fx.st, 0, msn);
        }
    }
}
