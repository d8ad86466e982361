//! An LL-HLS playlist validator: the Apple HLS authoring rules and RFC 8216bis
//! (draft 16) requirements that can be checked from playlist text and from
//! the HTTP answers of a live origin (or of a CDN edge in front of one).
//! Apple's `mediastreamvalidator` cannot run here; this checks what it would
//! check of the playlists (not of the media).
//!
//! Every rule is a named check ([`Violation::rule`]) with a message saying
//! what was found and what was required. The pieces:
//!
//! - [`check_multivariant`]: one multivariant playlist's text.
//! - [`check_media`]: one media playlist's text (full, delta or blocking
//!   answer), given the renditions it should report.
//! - [`check_renditions`]: the media playlists of one multivariant playlist
//!   against each other.
//! - [`check_reload`]: a media playlist against the previous one of the same
//!   rendition (nothing goes backwards).
//! - [`check_blocking_answer`]: an answer to `_HLS_msn`/`_HLS_part` holds
//!   what was asked for.
//! - [`validate_live`]: all of the above against a running server, by HTTP:
//!   the master, every media playlist (video and audio), delta updates,
//!   blocking reloads, a bad request that must be 400, and every URI.
//!
//! Rules and their sources (RFC = draft-pantos-hls-rfc8216bis-16; Apple =
//! "HTTP Live Streaming (HLS) authoring specification for Apple devices";
//! PR = /work/shared/PROTOCOL-RULES.md, "LL-HLS"):
//!
//! | rule | what | source |
//! | --- | --- | --- |
//! | `extm3u-first` | the first line is `#EXTM3U` | RFC 4.4.1.1 |
//! | `unique-tags` | playlist tags appear at most once | RFC 4.4.3 |
//! | `version-present` | one EXT-X-VERSION | Apple |
//! | `version-high-enough` | EXT-X-VERSION >= what the tags used need | RFC 8 |
//! | `independent-segments` | EXT-X-INDEPENDENT-SEGMENTS in the multivariant playlist | Apple |
//! | `variant-bandwidth` / `variant-average-bandwidth` | BANDWIDTH; AVERAGE-BANDWIDTH <= BANDWIDTH | RFC 4.4.6.2, Apple |
//! | `variant-codecs` | CODECS lists every codec, audio included | RFC 4.4.6.2, PR |
//! | `variant-resolution` / `variant-frame-rate` | on every video variant | Apple |
//! | `variant-uri` / `audio-group` | a URI after each variant; its AUDIO group exists | RFC 4.4.6.2 |
//! | `media-attrs` | EXT-X-MEDIA: TYPE, GROUP-ID, NAME, URI, CHANNELS (audio) | RFC 4.4.6.1, Apple |
//! | `media-default` | one DEFAULT=YES per group, with AUTOSELECT=YES | RFC 4.4.6.1 |
//! | `target-duration` | present; every EXTINF rounded <= it | RFC 4.4.3.1 |
//! | `media-sequence` | present | RFC 4.4.3.2 |
//! | `part-inf` | EXT-X-PART needs EXT-X-PART-INF | RFC 4.4.3.7 |
//! | `part-attrs` | every EXT-X-PART has DURATION and URI | RFC 4.4.4.9 |
//! | `part-duration-max` | every part <= PART-TARGET | RFC 4.4.4.9 |
//! | `part-duration-min` | >= 85 % of PART-TARGET, except INDEPENDENT/GAP/last parts | RFC 4.4.4.9 |
//! | `part-hold-back` | present with parts, >= 3 x PART-TARGET | RFC 4.4.3.8, Apple, PR |
//! | `hold-back` | >= 3 x target duration | RFC 4.4.3.8, PR |
//! | `can-block-reload` | CAN-BLOCK-RELOAD=YES | RFC 4.4.3.8, PR |
//! | `can-skip-until` | >= 6 x target duration; present for windows over 2 min | RFC 4.4.3.8, Apple |
//! | `preload-hint` | at most one per TYPE; URI; not an already listed part | RFC 4.4.5.3, PR |
//! | `program-date-time` | every segment dated; dates never go back | Apple, PR |
//! | `rendition-reports` | one per other rendition, LAST-MSN and LAST-PART | RFC 4.4.5.4, Apple, PR |
//! | `parts-recent` | parts only within 3 target durations of the end | RFC 6.2.2, PR |
//! | `map-in-effect` | every segment has an EXT-X-MAP | RFC 4.4.4.5 (fMP4) |
//! | `tags-before-parts` | a segment's MAP, DATE, DISCONTINUITY come before its first part | RFC 4.4.4.9 |
//! | `delta-update` | EXT-X-SKIP only with CAN-SKIP-UNTIL, and only beyond it | RFC 4.4.5.2, 6.2.5.1 |
//! | `same-target-duration` / `same-server-control` / `same-part-target` | across media playlists | RFC 6.2.4, PR |
//! | `same-discontinuity-numbering` | a segment's discontinuity number agrees across renditions | RFC 6.2.4, PR |
//! | `sequence-monotonic` | media and discontinuity sequences never decrease | RFC 6.2.1, PR |
//! | `segment-stable` | a segment number keeps its URI and discontinuity number | RFC 6.2.1 |
//! | `window-3td` | segments leave only while >= 3 target durations stay | RFC 6.2.2, PR |
//! | `blocking-reload` | an answer holds the segment / part asked for | RFC 6.2.5.2, PR |
//! | `bad-directive-400` | `_HLS_part` alone, `_HLS_msn` or `_HLS_part` too far ahead: 400 | RFC 6.2.5.2, PR |
//! | `not-hinted-404` | a part neither listed nor hinted is 404 | RFC 6.2.6, PR |
//! | `content-type` | playlists are `application/vnd.apple.mpegurl` | RFC 4 |
//! | `uri-resolves` | every URI listed or hinted answers 200 | RFC 6.2.1, 6.2.6 |
//! | `delta-available` | `_HLS_skip=YES` skips when something is skippable | RFC 6.2.5.1 |
//! | `http` | the server answered at all | |
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, SystemTime};

/// One rule broken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule's name (module docs).
    pub rule: &'static str,
    /// What was found, where, and what the rule wants.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.rule, self.detail)
    }
}

/// Violations found so far.
#[derive(Default, Debug)]
pub struct Report {
    pub violations: Vec<Violation>,
    /// Playlists checked, for the test's own sanity (a validator that saw
    /// nothing passes everything).
    pub playlists_checked: usize,
    /// URIs fetched and found.
    pub uris_checked: usize,
}

impl Report {
    fn push(&mut self, rule: &'static str, detail: impl Into<String>) {
        self.violations.push(Violation {
            rule,
            detail: detail.into(),
        });
    }

    fn extend(&mut self, where_: &str, v: Vec<Violation>) {
        for mut x in v {
            x.detail = format!("{where_}: {}", x.detail);
            self.violations.push(x);
        }
    }

    /// The names of the rules broken, each once.
    pub fn rules(&self) -> BTreeSet<&'static str> {
        self.violations.iter().map(|v| v.rule).collect()
    }

    /// Panics listing every violation, if there is any.
    pub fn assert_clean(&self) {
        if !self.violations.is_empty() {
            let list: Vec<String> = self.violations.iter().map(|v| v.to_string()).collect();
            panic!(
                "{} LL-HLS rule violations:\n{}",
                list.len(),
                list.join("\n")
            );
        }
    }
}

fn v(rule: &'static str, detail: impl Into<String>) -> Violation {
    Violation {
        rule,
        detail: detail.into(),
    }
}

/// Decimal seconds printed by a server are exact to a microsecond or so:
/// comparisons allow this much.
const EPSILON: f64 = 1e-6;

/// RFC 8216bis 4.2 attribute list: `NAME=value,NAME="quoted, with commas"`.
/// Quoted values are returned without their quotes.
pub fn attrs(list: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = list;
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let name = rest[..eq].trim().to_string();
        rest = &rest[eq + 1..];
        let value;
        if let Some(q) = rest.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            value = q[..end].to_string();
            rest = q.get(end + 1..).unwrap_or("");
            rest = rest.strip_prefix(',').unwrap_or(rest);
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].to_string();
            rest = rest.get(end + 1..).unwrap_or("");
        }
        out.insert(name, value);
    }
    out
}

fn num(a: &BTreeMap<String, String>, k: &str) -> Option<f64> {
    a.get(k).and_then(|s| s.parse::<f64>().ok())
}

// ---------------------------------------------------------------- multivariant

/// A variant (EXT-X-STREAM-INF and its URI) of a multivariant playlist.
#[derive(Clone, Debug)]
pub struct Variant {
    pub attrs: BTreeMap<String, String>,
    pub uri: Option<String>,
}

/// A multivariant playlist, parsed enough to find its media playlists.
#[derive(Clone, Debug, Default)]
pub struct Multivariant {
    pub variants: Vec<Variant>,
    /// EXT-X-MEDIA tags.
    pub media: Vec<BTreeMap<String, String>>,
}

impl Multivariant {
    /// Every media playlist URI: the variants', then the renditions'.
    pub fn playlist_uris(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for u in self
            .variants
            .iter()
            .filter_map(|v| v.uri.clone())
            .chain(self.media.iter().filter_map(|m| m.get("URI").cloned()))
        {
            if !out.contains(&u) {
                out.push(u);
            }
        }
        out
    }
}

pub fn parse_multivariant(text: &str) -> Multivariant {
    let mut m = Multivariant::default();
    let mut pending: Option<BTreeMap<String, String>> = None;
    for line in text.lines().map(str::trim) {
        if let Some(a) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            if let Some(p) = pending.take() {
                m.variants.push(Variant {
                    attrs: p,
                    uri: None,
                });
            }
            pending = Some(attrs(a));
        } else if let Some(a) = line.strip_prefix("#EXT-X-MEDIA:") {
            m.media.push(attrs(a));
        } else if !line.is_empty() && !line.starts_with('#') {
            if let Some(p) = pending.take() {
                m.variants.push(Variant {
                    attrs: p,
                    uri: Some(line.to_string()),
                });
            }
        }
    }
    if let Some(p) = pending.take() {
        m.variants.push(Variant {
            attrs: p,
            uri: None,
        });
    }
    m
}

const VIDEO_CODECS: [&str; 6] = ["avc1", "avc3", "hvc1", "hev1", "av01", "vp09"];
const AUDIO_CODECS: [&str; 6] = ["mp4a", "ac-3", "ec-3", "opus", "fLaC", "alac"];

fn codec_kind(c: &str) -> Option<&'static str> {
    let fourcc = c.split('.').next().unwrap_or("");
    if VIDEO_CODECS.contains(&fourcc) {
        Some("video")
    } else if AUDIO_CODECS.contains(&fourcc) {
        Some("audio")
    } else {
        None
    }
}

/// Tags that may appear at most once in a playlist (RFC 4.4.3, 4.3.1.2).
const ONCE: [&str; 8] = [
    "#EXT-X-VERSION",
    "#EXT-X-TARGETDURATION",
    "#EXT-X-MEDIA-SEQUENCE",
    "#EXT-X-DISCONTINUITY-SEQUENCE",
    "#EXT-X-SERVER-CONTROL",
    "#EXT-X-PART-INF",
    "#EXT-X-SKIP",
    "#EXT-X-INDEPENDENT-SEGMENTS",
];

fn tag_count(text: &str, tag: &str) -> usize {
    text.lines()
        .filter(|l| {
            let l = l.trim();
            l == tag || l.starts_with(&format!("{tag}:"))
        })
        .count()
}

fn tag_value<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let prefix = format!("{tag}:");
    text.lines().find_map(|l| l.trim().strip_prefix(&prefix))
}

fn common_header(text: &str, out: &mut Vec<Violation>) -> Option<u32> {
    if text.lines().next().map(str::trim) != Some("#EXTM3U") {
        out.push(v(
            "extm3u-first",
            format!(
                "the first line is {:?}, not #EXTM3U",
                text.lines().next().unwrap_or("")
            ),
        ));
    }
    for tag in ONCE {
        let n = tag_count(text, tag);
        if n > 1 {
            out.push(v("unique-tags", format!("{tag} appears {n} times")));
        }
    }
    match tag_value(text, "#EXT-X-VERSION") {
        None => {
            out.push(v("version-present", "no EXT-X-VERSION"));
            None
        }
        Some(s) => match s.trim().parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                out.push(v(
                    "version-present",
                    format!("EXT-X-VERSION:{s} is not a decimal integer"),
                ));
                None
            }
        },
    }
}

/// The Apple / RFC rules a multivariant playlist's text must follow.
pub fn check_multivariant(text: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    common_header(text, &mut out);
    if tag_count(text, "#EXT-X-INDEPENDENT-SEGMENTS") == 0 {
        out.push(v(
            "independent-segments",
            "no EXT-X-INDEPENDENT-SEGMENTS in the multivariant playlist",
        ));
    }
    let m = parse_multivariant(text);
    if m.variants.is_empty() {
        out.push(v("variant-uri", "no EXT-X-STREAM-INF at all"));
    }
    // EXT-X-MEDIA
    let mut defaults: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut audio_groups: BTreeMap<String, Vec<&BTreeMap<String, String>>> = BTreeMap::new();
    for media in &m.media {
        let name = media.get("NAME").cloned().unwrap_or_default();
        for required in ["TYPE", "GROUP-ID", "NAME"] {
            if !media.contains_key(required) {
                out.push(v(
                    "media-attrs",
                    format!("EXT-X-MEDIA {name:?} has no {required}"),
                ));
            }
        }
        let ty = media.get("TYPE").cloned().unwrap_or_default();
        let group = media.get("GROUP-ID").cloned().unwrap_or_default();
        if ty == "AUDIO" {
            if !media.contains_key("URI") {
                out.push(v(
                    "media-attrs",
                    format!("audio rendition {name:?} has no URI (muxed audio is not CMAF)"),
                ));
            }
            if !media.contains_key("CHANNELS") {
                out.push(v(
                    "media-attrs",
                    format!("audio rendition {name:?} has no CHANNELS (Apple: required)"),
                ));
            }
            audio_groups.entry(group.clone()).or_default().push(media);
        }
        if media.get("DEFAULT").map(String::as_str) == Some("YES") {
            *defaults.entry((ty.clone(), group.clone())).or_default() += 1;
            if media.get("AUTOSELECT").map(String::as_str) != Some("YES") {
                out.push(v(
                    "media-default",
                    format!("rendition {name:?} is DEFAULT=YES without AUTOSELECT=YES"),
                ));
            }
        }
    }
    for ((ty, group), n) in defaults {
        if n > 1 {
            out.push(v(
                "media-default",
                format!("{n} renditions of {ty} group {group:?} are DEFAULT=YES (at most one)"),
            ));
        }
    }
    // EXT-X-STREAM-INF
    for (i, var) in m.variants.iter().enumerate() {
        let a = &var.attrs;
        let label = var
            .uri
            .clone()
            .unwrap_or_else(|| format!("variant {}", i + 1));
        let bandwidth = a.get("BANDWIDTH").and_then(|s| s.parse::<u64>().ok());
        match bandwidth {
            None => out.push(v(
                "variant-bandwidth",
                format!("{label}: no BANDWIDTH (decimal integer)"),
            )),
            Some(0) => out.push(v("variant-bandwidth", format!("{label}: BANDWIDTH=0"))),
            Some(_) => {}
        }
        match a
            .get("AVERAGE-BANDWIDTH")
            .and_then(|s| s.parse::<u64>().ok())
        {
            None => out.push(v(
                "variant-average-bandwidth",
                format!("{label}: no AVERAGE-BANDWIDTH (Apple: required)"),
            )),
            Some(avg) => {
                if let Some(peak) = bandwidth {
                    if avg > peak {
                        out.push(v(
                            "variant-average-bandwidth",
                            format!("{label}: AVERAGE-BANDWIDTH={avg} > BANDWIDTH={peak}"),
                        ));
                    }
                }
            }
        }
        let codecs: Vec<String> = a
            .get("CODECS")
            .map(|c| c.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default();
        if codecs.is_empty() {
            out.push(v("variant-codecs", format!("{label}: no CODECS")));
        }
        for c in &codecs {
            if codec_kind(c).is_none() {
                out.push(v(
                    "variant-codecs",
                    format!("{label}: CODECS entry {c:?} is no known RFC 6381 codec"),
                ));
            }
        }
        let has_video = codecs.iter().any(|c| codec_kind(c) == Some("video"));
        let has_audio = codecs.iter().any(|c| codec_kind(c) == Some("audio"));
        if let Some(group) = a.get("AUDIO") {
            match audio_groups.get(group) {
                None => out.push(v(
                    "audio-group",
                    format!("{label}: AUDIO={group:?} names no EXT-X-MEDIA TYPE=AUDIO group"),
                )),
                Some(_) if !has_audio => out.push(v(
                    "variant-codecs",
                    format!(
                        "{label}: plays audio group {group:?} but CODECS={:?} lists no audio codec",
                        codecs.join(",")
                    ),
                )),
                Some(_) => {}
            }
        }
        if has_video || a.contains_key("RESOLUTION") {
            if !has_video {
                out.push(v(
                    "variant-codecs",
                    format!("{label}: RESOLUTION but no video codec in CODECS"),
                ));
            }
            let res_ok = a.get("RESOLUTION").is_some_and(|r| {
                r.split_once('x').is_some_and(|(w, h)| {
                    w.parse::<u32>().is_ok_and(|w| w > 0) && h.parse::<u32>().is_ok_and(|h| h > 0)
                })
            });
            if !res_ok {
                out.push(v(
                    "variant-resolution",
                    format!(
                        "{label}: video variant without a valid RESOLUTION ({:?})",
                        a.get("RESOLUTION")
                    ),
                ));
            }
            if num(a, "FRAME-RATE").is_none_or(|f| f <= 0.0) {
                out.push(v(
                    "variant-frame-rate",
                    format!("{label}: video variant without FRAME-RATE"),
                ));
            }
        }
        if var.uri.is_none() {
            out.push(v(
                "variant-uri",
                format!("{label}: EXT-X-STREAM-INF with no URI line after it"),
            ));
        }
    }
    out
}

// ---------------------------------------------------------------- media

/// One EXT-X-PART.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    pub duration: Option<f64>,
    pub uri: Option<String>,
    pub independent: bool,
    pub gap: bool,
}

/// A Media Segment: complete (with EXTINF and URI) or the open one (parts only).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Segment {
    pub msn: u64,
    /// Discontinuity Sequence Number.
    pub dsn: u64,
    /// EXTINF; `None` for the open segment.
    pub duration: Option<f64>,
    pub uri: Option<String>,
    pub parts: Vec<Part>,
    pub discontinuity: bool,
    /// EXT-X-PROGRAM-DATE-TIME in effect (its own, or derived from an earlier one).
    pub date: Option<SystemTime>,
    /// Whether its own EXT-X-PROGRAM-DATE-TIME tag was there.
    pub dated_here: bool,
    /// EXT-X-MAP URI in effect.
    pub map: Option<String>,
    /// Segment tags (MAP, DATE, DISCONTINUITY, KEY) seen after its first part.
    pub late_tags: Vec<String>,
}

impl Segment {
    /// EXTINF, or the sum of the parts for the open segment.
    pub fn length(&self) -> f64 {
        self.duration
            .unwrap_or_else(|| self.parts.iter().filter_map(|p| p.duration).sum())
    }
}

/// A media playlist, parsed enough for the rules.
#[derive(Clone, Debug, Default)]
pub struct Media {
    pub version: Option<u32>,
    pub target_duration: Option<u64>,
    pub media_sequence: Option<u64>,
    pub discontinuity_sequence: u64,
    pub server_control: BTreeMap<String, String>,
    pub has_server_control: bool,
    pub part_target: Option<f64>,
    /// EXT-X-SKIP:SKIPPED-SEGMENTS
    pub skipped: Option<u64>,
    /// Listed segments, complete first, then the open one (if it has parts).
    pub segments: Vec<Segment>,
    pub preload_hints: Vec<BTreeMap<String, String>>,
    pub rendition_reports: Vec<BTreeMap<String, String>>,
    pub endlist: bool,
    /// EXTINF values that are not whole numbers (version 3).
    pub float_extinf: bool,
    pub has_map: bool,
    pub has_byterange: bool,
}

impl Media {
    /// Complete segments.
    pub fn complete(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().filter(|s| s.duration.is_some())
    }

    /// The open segment (parts, no EXTINF yet).
    pub fn open(&self) -> Option<&Segment> {
        self.segments.last().filter(|s| s.duration.is_none())
    }

    /// Seconds listed (complete segments and the open one's parts).
    pub fn listed_seconds(&self) -> f64 {
        self.segments.iter().map(Segment::length).sum()
    }

    /// The last segment number with anything listed, and how many of its
    /// parts are listed, and whether it is complete.
    pub fn last_position(&self) -> Option<(u64, usize, bool)> {
        self.segments
            .last()
            .map(|s| (s.msn, s.parts.len(), s.duration.is_some()))
    }

    /// `(msn, part index)` a player asks for next: the part after the last
    /// one listed (RFC 6.2.5.2: an index past the end of a segment means the
    /// first part of the next one, which a server works out).
    pub fn next_part(&self) -> Option<(u64, usize)> {
        let last = self.segments.iter().rev().find(|s| !s.parts.is_empty())?;
        Some((last.msn, last.parts.len()))
    }

    /// Every URI the playlist names: init segments, segments, parts, hints,
    /// rendition reports (relative, as written).
    pub fn uris(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut add = |u: &str| {
            if !out.iter().any(|x| x == u) {
                out.push(u.to_string());
            }
        };
        for s in &self.segments {
            if let Some(m) = &s.map {
                add(m);
            }
            for p in &s.parts {
                if let Some(u) = &p.uri {
                    add(u);
                }
            }
            if let Some(u) = &s.uri {
                add(u);
            }
        }
        for h in &self.preload_hints {
            if let Some(u) = h.get("URI") {
                add(u);
            }
        }
        for r in &self.rendition_reports {
            if let Some(u) = r.get("URI") {
                add(u);
            }
        }
        out
    }
}

fn parse_date(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s.trim().trim_end_matches('Z'))
        .ok()
        .or_else(|| humantime::parse_rfc3339(s.trim()).ok())
}

/// Parse a media playlist. Lenient: what is malformed is left out and the
/// rules report it.
pub fn parse_media(text: &str) -> Media {
    let mut m = Media::default();
    let mut cur = Segment::default();
    let mut started = false; // cur has a tag or part
    let mut map: Option<String> = None;
    let mut date: Option<SystemTime> = None;
    let mut msn: Option<u64> = None;
    let mut dsn: Option<u64> = None;
    let mut pending_extinf: Option<f64> = None;
    let start = |m: &Media, msn: &mut Option<u64>, dsn: &mut Option<u64>| {
        if msn.is_none() {
            *msn = Some(m.media_sequence.unwrap_or(0) + m.skipped.unwrap_or(0));
        }
        if dsn.is_none() {
            *dsn = Some(m.discontinuity_sequence);
        }
    };
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            continue;
        }
        let (tag, value) = match line.split_once(':') {
            Some((t, v)) if line.starts_with('#') => (t, v),
            _ => (line, ""),
        };
        match tag {
            "#EXT-X-VERSION" => m.version = value.parse().ok(),
            "#EXT-X-TARGETDURATION" => m.target_duration = value.parse().ok(),
            "#EXT-X-MEDIA-SEQUENCE" => m.media_sequence = value.parse().ok(),
            "#EXT-X-DISCONTINUITY-SEQUENCE" => {
                m.discontinuity_sequence = value.parse().unwrap_or(0)
            }
            "#EXT-X-SERVER-CONTROL" => {
                m.has_server_control = true;
                m.server_control = attrs(value);
            }
            "#EXT-X-PART-INF" => m.part_target = num(&attrs(value), "PART-TARGET"),
            "#EXT-X-SKIP" => {
                m.skipped = attrs(value)
                    .get("SKIPPED-SEGMENTS")
                    .and_then(|s| s.parse().ok())
            }
            "#EXT-X-ENDLIST" => m.endlist = true,
            "#EXT-X-BYTERANGE" => m.has_byterange = true,
            "#EXT-X-PRELOAD-HINT" => m.preload_hints.push(attrs(value)),
            "#EXT-X-RENDITION-REPORT" => m.rendition_reports.push(attrs(value)),
            "#EXT-X-MAP" | "#EXT-X-PROGRAM-DATE-TIME" | "#EXT-X-DISCONTINUITY" | "#EXT-X-KEY" => {
                start(&m, &mut msn, &mut dsn);
                if !cur.parts.is_empty() {
                    cur.late_tags.push(tag.to_string());
                }
                started = true;
                match tag {
                    "#EXT-X-MAP" => {
                        m.has_map = true;
                        map = attrs(value).get("URI").cloned();
                    }
                    "#EXT-X-PROGRAM-DATE-TIME" => {
                        date = parse_date(value);
                        cur.date = date;
                        cur.dated_here = true;
                    }
                    "#EXT-X-DISCONTINUITY" => cur.discontinuity = true,
                    _ => {}
                }
            }
            "#EXT-X-PART" => {
                start(&m, &mut msn, &mut dsn);
                started = true;
                let a = attrs(value);
                cur.parts.push(Part {
                    duration: num(&a, "DURATION"),
                    uri: a.get("URI").cloned(),
                    independent: a.get("INDEPENDENT").map(String::as_str) == Some("YES"),
                    gap: a.get("GAP").map(String::as_str) == Some("YES"),
                });
            }
            "#EXTINF" => {
                start(&m, &mut msn, &mut dsn);
                started = true;
                let d = value.split(',').next().unwrap_or("").trim();
                pending_extinf = d.parse().ok();
                if d.contains('.') && !d.trim_end_matches('0').ends_with('.') {
                    m.float_extinf = true;
                }
            }
            t if !t.starts_with('#') => {
                // a URI line: closes the segment
                start(&m, &mut msn, &mut dsn);
                let n = msn.unwrap_or(0);
                if cur.discontinuity {
                    dsn = Some(dsn.unwrap_or(0) + 1);
                }
                let seg = Segment {
                    msn: n,
                    dsn: dsn.unwrap_or(0),
                    duration: Some(pending_extinf.take().unwrap_or(f64::NAN)),
                    uri: Some(line.to_string()),
                    map: map.clone(),
                    date: cur.date.or(date),
                    ..std::mem::take(&mut cur)
                };
                // the next segment's date, until its own tag: this one's end
                date = seg
                    .date
                    .map(|d| d + Duration::from_secs_f64(seg.length().max(0.0)));
                m.segments.push(seg);
                msn = Some(n + 1);
                started = false;
            }
            _ => {}
        }
    }
    if started && !cur.parts.is_empty() {
        let n = msn.unwrap_or(0);
        let d = if cur.discontinuity {
            dsn.unwrap_or(0) + 1
        } else {
            dsn.unwrap_or(0)
        };
        m.segments.push(Segment {
            msn: n,
            dsn: d,
            map: map.clone(),
            date: cur.date.or(date),
            ..cur
        });
    }
    m
}

/// What [`check_media`] needs beyond the text.
#[derive(Clone, Debug, Default)]
pub struct MediaContext {
    /// This playlist's URI in the multivariant playlist (`source/index.m3u8`).
    pub uri: String,
    /// The other media playlists' URIs, relative to this one
    /// (`../audio/index.m3u8`): each needs an EXT-X-RENDITION-REPORT.
    pub others: Vec<String>,
}

/// The rules one media playlist's text must follow.
pub fn check_media(text: &str, ctx: &MediaContext) -> Vec<Violation> {
    let mut out = Vec::new();
    let version = common_header(text, &mut out);
    let m = parse_media(text);

    // version-high-enough (RFC 8)
    let mut need = (1u32, "nothing beyond version 1");
    let mut want = |n: u32, why: &'static str| {
        if n > need.0 {
            need = (n, why);
        }
    };
    if m.float_extinf {
        want(3, "decimal EXTINF durations");
    }
    if m.has_byterange {
        want(4, "EXT-X-BYTERANGE");
    }
    if m.has_map {
        want(
            6,
            "EXT-X-MAP in a media playlist without EXT-X-I-FRAMES-ONLY",
        );
    }
    if text.contains("#EXT-X-SKIP") {
        want(9, "EXT-X-SKIP");
        if text.contains("RECENTLY-REMOVED-DATERANGES") {
            want(10, "EXT-X-SKIP with RECENTLY-REMOVED-DATERANGES");
        }
    }
    if let Some(have) = version {
        if have < need.0 {
            out.push(v(
                "version-high-enough",
                format!(
                    "EXT-X-VERSION:{have}, but {} needs version {}",
                    need.1, need.0
                ),
            ));
        }
    }

    // target-duration
    let td = match m.target_duration {
        Some(td) => td,
        None => {
            out.push(v(
                "target-duration",
                "no EXT-X-TARGETDURATION (decimal integer)",
            ));
            0
        }
    };
    for s in m.complete() {
        let d = s.duration.unwrap_or(f64::NAN);
        if !d.is_finite() || d < 0.0 {
            out.push(v(
                "target-duration",
                format!("segment {}: EXTINF is not a duration", s.msn),
            ));
        } else if td > 0 && d.round() as u64 > td {
            out.push(v(
                "target-duration",
                format!(
                    "segment {} lasts {d} s, {} once rounded, over EXT-X-TARGETDURATION:{td}",
                    s.msn,
                    d.round()
                ),
            ));
        }
    }
    if m.media_sequence.is_none() {
        out.push(v("media-sequence", "no EXT-X-MEDIA-SEQUENCE"));
    }

    // parts
    let any_parts = m.segments.iter().any(|s| !s.parts.is_empty());
    let pt = m.part_target;
    if any_parts && pt.is_none() {
        out.push(v(
            "part-inf",
            "EXT-X-PART without EXT-X-PART-INF:PART-TARGET",
        ));
    }
    let last_index = m.segments.len().saturating_sub(1);
    for (si, s) in m.segments.iter().enumerate() {
        for (pi, p) in s.parts.iter().enumerate() {
            let label = format!(
                "segment {} part {pi} ({})",
                s.msn,
                p.uri.as_deref().unwrap_or("?")
            );
            if p.uri.is_none() || p.duration.is_none() {
                out.push(v(
                    "part-attrs",
                    format!("{label}: EXT-X-PART needs DURATION and URI"),
                ));
            }
            let (Some(d), Some(pt)) = (p.duration, pt) else {
                continue;
            };
            if d > pt + EPSILON {
                out.push(v(
                    "part-duration-max",
                    format!("{label} lasts {d} s, over PART-TARGET={pt}"),
                ));
            }
            // 85 % floor; not for INDEPENDENT or GAP parts, the part before a
            // GAP part, the last part of a segment; and not for the last part
            // of the open segment, which may yet turn out to be its last
            let last_of_segment =
                pi + 1 == s.parts.len() && (s.duration.is_some() || si == last_index);
            let before_gap = s.parts.get(pi + 1).is_some_and(|n| n.gap);
            if d < 0.85 * pt - EPSILON
                && !p.independent
                && !p.gap
                && !before_gap
                && !last_of_segment
            {
                out.push(v(
                    "part-duration-min",
                    format!("{label} lasts {d} s, under 85 % of PART-TARGET={pt}"),
                ));
            }
        }
        if !s.late_tags.is_empty() {
            out.push(v(
                "tags-before-parts",
                format!(
                    "segment {}: {} after its first EXT-X-PART",
                    s.msn,
                    s.late_tags.join(", ")
                ),
            ));
        }
        if s.map.is_none() {
            out.push(v(
                "map-in-effect",
                format!("segment {} has no EXT-X-MAP before it", s.msn),
            ));
        }
    }

    // server control
    let sc = &m.server_control;
    if !m.has_server_control {
        out.push(v("can-block-reload", "no EXT-X-SERVER-CONTROL"));
    } else if sc.get("CAN-BLOCK-RELOAD").map(String::as_str) != Some("YES") {
        out.push(v(
            "can-block-reload",
            "EXT-X-SERVER-CONTROL without CAN-BLOCK-RELOAD=YES",
        ));
    }
    if let Some(pt) = pt {
        match num(sc, "PART-HOLD-BACK") {
            None => out.push(v(
                "part-hold-back",
                "EXT-X-PART-INF but no PART-HOLD-BACK in EXT-X-SERVER-CONTROL",
            )),
            Some(phb) if phb + EPSILON < 3.0 * pt => out.push(v(
                "part-hold-back",
                format!("PART-HOLD-BACK={phb} < 3 x PART-TARGET ({})", 3.0 * pt),
            )),
            Some(_) => {}
        }
    }
    if let Some(hb) = num(sc, "HOLD-BACK") {
        if td > 0 && hb + EPSILON < 3.0 * td as f64 {
            out.push(v(
                "hold-back",
                format!("HOLD-BACK={hb} < 3 x EXT-X-TARGETDURATION ({})", 3 * td),
            ));
        }
    }
    let can_skip = num(sc, "CAN-SKIP-UNTIL");
    if let Some(csu) = can_skip {
        if td > 0 && csu + EPSILON < 6.0 * td as f64 {
            out.push(v(
                "can-skip-until",
                format!(
                    "CAN-SKIP-UNTIL={csu} < 6 x EXT-X-TARGETDURATION ({})",
                    6 * td
                ),
            ));
        }
    } else if m.skipped.is_none() && m.listed_seconds() > 120.0 {
        out.push(v(
            "can-skip-until",
            format!(
                "a {:.0} s window without CAN-SKIP-UNTIL (Apple: delta updates for windows over 2 minutes)",
                m.listed_seconds()
            ),
        ));
    }

    // delta update
    if let Some(skipped) = m.skipped {
        match can_skip {
            None => out.push(v(
                "delta-update",
                "EXT-X-SKIP in a playlist whose server control has no CAN-SKIP-UNTIL",
            )),
            Some(csu) => {
                let kept = m.listed_seconds();
                if skipped > 0 && kept + EPSILON < csu {
                    out.push(v(
                        "delta-update",
                        format!(
                            "{skipped} segments skipped but only {kept:.3} s listed after them: segments closer than CAN-SKIP-UNTIL={csu} to the end may not be skipped"
                        ),
                    ));
                }
            }
        }
    } else if text.contains("#EXT-X-SKIP") {
        out.push(v("delta-update", "EXT-X-SKIP without SKIPPED-SEGMENTS"));
    }

    // preload hints
    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    let listed: BTreeSet<&str> = m
        .segments
        .iter()
        .flat_map(|s| s.parts.iter().filter_map(|p| p.uri.as_deref()))
        .collect();
    for h in &m.preload_hints {
        let ty = h.get("TYPE").cloned().unwrap_or_default();
        if ty != "PART" && ty != "MAP" {
            out.push(v(
                "preload-hint",
                format!("EXT-X-PRELOAD-HINT with TYPE={ty:?} (PART or MAP)"),
            ));
        }
        *by_type.entry(ty).or_default() += 1;
        match h.get("URI") {
            None => out.push(v("preload-hint", "EXT-X-PRELOAD-HINT without URI")),
            Some(u) if listed.contains(u.as_str()) => out.push(v(
                "preload-hint",
                format!("the hinted part {u} is already listed as a part"),
            )),
            Some(_) => {}
        }
    }
    for (ty, n) in by_type {
        if n > 1 {
            out.push(v(
                "preload-hint",
                format!("{n} EXT-X-PRELOAD-HINT of TYPE={ty} (at most one per type)"),
            ));
        }
    }

    // dates
    let mut previous: Option<(u64, SystemTime)> = None;
    for s in &m.segments {
        match s.date {
            None => out.push(v(
                "program-date-time",
                format!("segment {} has no EXT-X-PROGRAM-DATE-TIME in effect", s.msn),
            )),
            Some(d) => {
                if let Some((pm, pd)) = previous {
                    if d < pd {
                        out.push(v(
                            "program-date-time",
                            format!(
                                "segment {} is dated {} before segment {pm}",
                                s.msn,
                                humantime::format_rfc3339_millis(d)
                            ),
                        ));
                    }
                }
                previous = Some((s.msn, d));
            }
        }
    }

    // parts only for the last 3 target durations (6.2.2): each part's start
    // distance from the end of the playlist
    if td > 0 {
        let total = m.listed_seconds();
        let mut start = 0.0;
        for s in &m.segments {
            let mut p_start = start;
            for p in &s.parts {
                let from_end = total - p_start;
                if from_end > 3.0 * td as f64 + 0.001 {
                    out.push(v(
                        "parts-recent",
                        format!(
                            "segment {} lists {} starting {from_end:.3} s from the end, beyond 3 x EXT-X-TARGETDURATION ({} s)",
                            s.msn,
                            p.uri.as_deref().unwrap_or("a part"),
                            3 * td
                        ),
                    ));
                    break;
                }
                p_start += p.duration.unwrap_or(0.0);
            }
            start += s.length();
        }
    }

    // rendition reports
    let mut reported: BTreeMap<String, usize> = BTreeMap::new();
    for r in &m.rendition_reports {
        let uri = r.get("URI").cloned().unwrap_or_default();
        *reported.entry(uri.clone()).or_default() += 1;
        if !r.contains_key("LAST-MSN") {
            out.push(v(
                "rendition-reports",
                format!("the report for {uri:?} has no LAST-MSN"),
            ));
        }
        if any_parts && !r.contains_key("LAST-PART") {
            out.push(v(
                "rendition-reports",
                format!("the report for {uri:?} has no LAST-PART (the playlist has parts)"),
            ));
        }
        if !ctx.uri.is_empty() && uri.ends_with(&ctx.uri) {
            out.push(v(
                "rendition-reports",
                format!("a rendition report for the playlist itself ({uri})"),
            ));
        }
    }
    for other in &ctx.others {
        match reported.get(other) {
            None => out.push(v(
                "rendition-reports",
                format!("no EXT-X-RENDITION-REPORT for {other}"),
            )),
            Some(n) if *n > 1 => {
                out.push(v("rendition-reports", format!("{n} reports for {other}")))
            }
            Some(_) => {}
        }
    }
    out
}

/// The media playlists of one multivariant playlist, against each other:
/// `(uri, text)`, fetched at about the same time.
pub fn check_renditions(playlists: &[(String, String)]) -> Vec<Violation> {
    let mut out = Vec::new();
    let parsed: Vec<(&String, Media)> =
        playlists.iter().map(|(u, t)| (u, parse_media(t))).collect();
    let Some((first_uri, first)) = parsed.first() else {
        return out;
    };
    for (uri, m) in &parsed[1..] {
        if m.target_duration != first.target_duration {
            out.push(v(
                "same-target-duration",
                format!(
                    "{uri}: EXT-X-TARGETDURATION {:?}, {first_uri}: {:?}",
                    m.target_duration, first.target_duration
                ),
            ));
        }
        if m.server_control != first.server_control {
            out.push(v(
                "same-server-control",
                format!(
                    "{uri}: {:?}, {first_uri}: {:?}",
                    m.server_control, first.server_control
                ),
            ));
        }
        if m.part_target != first.part_target {
            out.push(v(
                "same-part-target",
                format!(
                    "{uri}: PART-TARGET {:?}, {first_uri}: {:?}",
                    m.part_target, first.part_target
                ),
            ));
        }
    }
    // a segment number has one discontinuity number in every rendition
    for (i, (ua, a)) in parsed.iter().enumerate() {
        for (ub, b) in &parsed[i + 1..] {
            for sa in &a.segments {
                if let Some(sb) = b.segments.iter().find(|s| s.msn == sa.msn) {
                    if sa.dsn != sb.dsn {
                        out.push(v(
                            "same-discontinuity-numbering",
                            format!(
                                "segment {}: discontinuity number {} in {ua}, {} in {ub}",
                                sa.msn, sa.dsn, sb.dsn
                            ),
                        ));
                    }
                }
            }
        }
    }
    out
}

/// A media playlist against the previous one of the same rendition.
pub fn check_reload(previous: &str, next: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    let a = parse_media(previous);
    let b = parse_media(next);
    let (Some(sa), Some(sb)) = (a.media_sequence, b.media_sequence) else {
        return out;
    };
    if sb < sa {
        out.push(v(
            "sequence-monotonic",
            format!("EXT-X-MEDIA-SEQUENCE went from {sa} back to {sb}"),
        ));
    }
    if b.discontinuity_sequence < a.discontinuity_sequence {
        out.push(v(
            "sequence-monotonic",
            format!(
                "EXT-X-DISCONTINUITY-SEQUENCE went from {} back to {}",
                a.discontinuity_sequence, b.discontinuity_sequence
            ),
        ));
    }
    for s in a.complete() {
        if let Some(t) = b
            .segments
            .iter()
            .find(|t| t.msn == s.msn && t.uri.is_some())
        {
            if t.uri != s.uri || t.dsn != s.dsn {
                out.push(v(
                    "segment-stable",
                    format!(
                        "segment {} was {:?} (discontinuity {}), now {:?} (discontinuity {})",
                        s.msn, s.uri, s.dsn, t.uri, t.dsn
                    ),
                ));
            }
        }
    }
    // a segment may leave only if 3 target durations stay (full playlists)
    if sb > sa && b.skipped.is_none() && !b.endlist {
        let td = b.target_duration.unwrap_or(0) as f64;
        let kept: f64 = b.complete().map(Segment::length).sum();
        if kept + EPSILON < 3.0 * td {
            out.push(v(
                "window-3td",
                format!(
                    "segments {sa}..{sb} left, leaving {kept:.3} s of complete segments, under 3 x EXT-X-TARGETDURATION ({} s)",
                    3.0 * td
                ),
            ));
        }
    }
    out
}

/// An answer to `_HLS_msn=msn[&_HLS_part=part]` holds that segment (complete)
/// or that part, or something later.
pub fn check_blocking_answer(msn: u64, part: Option<usize>, answer: &str) -> Vec<Violation> {
    let m = parse_media(answer);
    let ok = match m.last_position() {
        None => false,
        Some((last, parts, complete)) => match part {
            None => last > msn || (last == msn && complete),
            Some(p) => {
                last > msn
                    || (last == msn && (parts > p || complete))
                    || m.complete().any(|s| s.msn == msn)
            }
        },
    };
    if ok {
        Vec::new()
    } else {
        vec![v(
            "blocking-reload",
            format!(
                "asked for segment {msn}{}, the answer ends at {:?} (msn, parts, complete)",
                part.map(|p| format!(" part {p}")).unwrap_or_default(),
                m.last_position()
            ),
        )]
    }
}

// ---------------------------------------------------------------- live

/// A small blocking HTTP client (the tests have no blocking reqwest).
pub struct Fetch {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

/// One answer: status, Content-Type, body.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Default for Fetch {
    fn default() -> Self {
        Fetch::new()
    }
}

impl Fetch {
    pub fn new() -> Fetch {
        Fetch {
            rt: super::runtime(),
            client: super::http_client(Duration::from_secs(20)),
        }
    }

    /// GET (or HEAD); `Err` when no answer came.
    pub fn request(&self, head: bool, url: &str) -> Result<Answer, String> {
        self.rt.block_on(async {
            let req = if head {
                self.client.head(url)
            } else {
                self.client.get(url)
            };
            let r = req.send().await.map_err(|e| format!("{url}: {e}"))?;
            let status = r.status().as_u16();
            let content_type = r
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = r
                .bytes()
                .await
                .map_err(|e| format!("{url}: body: {e}"))?
                .to_vec();
            Ok(Answer {
                status,
                content_type,
                body,
            })
        })
    }

    pub fn get(&self, url: &str) -> Result<Answer, String> {
        self.request(false, url)
    }
}

/// `base` is a directory URL ending in `/`; `rel` a relative reference as
/// playlists write them (`seg-1.m4s`, `../audio/index.m3u8`).
pub fn resolve(base: &str, rel: &str) -> String {
    if rel.starts_with("http://") || rel.starts_with("https://") {
        return rel.to_string();
    }
    let base = base.split('?').next().unwrap_or(base);
    let (origin, path) = match base
        .find("://")
        .and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j))
    {
        Some(k) => (&base[..k], &base[k..]),
        None => (base, "/"),
    };
    let mut parts: Vec<&str> = if rel.starts_with('/') {
        Vec::new()
    } else {
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        dir.split('/').filter(|s| !s.is_empty()).collect()
    };
    let (rel_path, query) = match rel.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rel, None),
    };
    for seg in rel_path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = format!("{origin}/{}", parts.join("/"));
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// `playlist_url` with `query` appended (after `?`, or after `&` when the
/// URL has a query already).
fn with_query(url: &str, query: &str) -> String {
    if url.contains('?') {
        format!("{url}&{query}")
    } else {
        format!("{url}?{query}")
    }
}

/// How much of a live channel [`validate_live`] looks at.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// Blocking reloads followed per media playlist (each checked against
    /// the one before).
    pub reloads: usize,
    /// HEAD every URI every playlist names.
    pub resolve_uris: bool,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            reloads: 4,
            resolve_uris: true,
        }
    }
}

/// Everything against a live channel: `master_url` is its multivariant
/// playlist (on the origin, or on an edge in front of it).
pub fn validate_live(master_url: &str, opts: &LiveOptions) -> Report {
    let mut report = Report::default();
    let f = Fetch::new();
    let get_playlist = |report: &mut Report, url: &str| -> Option<String> {
        match f.get(url) {
            Err(e) => {
                report.push("http", e);
                None
            }
            Ok(a) if a.status != 200 => {
                report.push(
                    "http",
                    format!("{url}: status {} ({})", a.status, a.text().trim()),
                );
                None
            }
            Ok(a) => {
                if a.content_type != "application/vnd.apple.mpegurl"
                    && a.content_type != "audio/mpegurl"
                {
                    report.push(
                        "content-type",
                        format!("{url}: Content-Type {:?}", a.content_type),
                    );
                }
                report.playlists_checked += 1;
                Some(a.text())
            }
        }
    };

    let Some(master) = get_playlist(&mut report, master_url) else {
        return report;
    };
    report.extend(master_url, check_multivariant(&master));
    let mv = parse_multivariant(&master);
    let uris = mv.playlist_uris();

    // every media playlist, fetched together, checked alone and together
    let mut current: Vec<(String, String)> = Vec::new();
    for u in &uris {
        let url = resolve(master_url, u);
        if let Some(text) = get_playlist(&mut report, &url) {
            current.push((u.clone(), text));
        }
    }
    let context = |u: &str| MediaContext {
        uri: u.to_string(),
        others: uris
            .iter()
            .filter(|o| *o != u)
            .map(|o| relative_to(u, o))
            .collect(),
    };
    for (u, text) in &current {
        report.extend(u, check_media(text, &context(u)));
    }
    report.extend("renditions", check_renditions(&current));

    for (u, text) in &current {
        let url = resolve(master_url, u);
        let ctx = context(u);
        let m = parse_media(text);

        // `_HLS_part` without `_HLS_msn`; `_HLS_msn` too far ahead (of a
        // playlist fetched just now: two segments would have to complete
        // before the request for it to become valid)
        let fresh = match f.get(&url) {
            Ok(a) if a.status == 200 => parse_media(&a.text()),
            _ => m.clone(),
        };
        // a part neither present nor hinted: 404 (five after the hinted one,
        // for hints named <prefix><number><suffix>)
        if let Some(hint) = fresh.preload_hints.iter().find_map(|h| h.get("URI")) {
            if let Some(later) = number_plus(hint, 5) {
                let target = resolve(&url, &later);
                match f.request(true, &target) {
                    Ok(a) if a.status == 404 => {}
                    Ok(a) => report.push(
                        "not-hinted-404",
                        format!("{target} (neither listed nor hinted): status {}", a.status),
                    ),
                    Err(e) => report.push("http", e),
                }
            }
        }

        let last = fresh.last_position().map_or(0, |p| p.0);
        for (q, why) in [
            ("_HLS_part=0".to_string(), "_HLS_part without _HLS_msn"),
            (
                format!("_HLS_msn={}", last + 3),
                "_HLS_msn more than 2 past the last segment",
            ),
            (
                format!("_HLS_msn={}&_HLS_part=1000", last + 1),
                "a part beyond the Advance Part Limit",
            ),
        ] {
            let bad = with_query(&url, &q);
            match f.get(&bad) {
                Ok(a) if a.status == 400 => {}
                Ok(a) => report.push(
                    "bad-directive-400",
                    format!("{bad} ({why}): status {}, not 400", a.status),
                ),
                Err(e) => report.push("http", e),
            }
        }

        // a delta update, blocking on the last part listed (so it holds
        // at least what the full playlist held)
        if let Some((msn, part)) = m.next_part() {
            let q = format!(
                "_HLS_msn={msn}&_HLS_part={}&_HLS_skip=YES",
                part.saturating_sub(1)
            );
            let delta_url = with_query(&url, &q);
            if let Some(delta) = get_playlist(&mut report, &delta_url) {
                report.extend(&delta_url, check_media(&delta, &ctx));
                report.extend(&delta_url, check_reload(text, &delta));
                let d = parse_media(&delta);
                let csu = num(&m.server_control, "CAN-SKIP-UNTIL");
                // something was skippable in the full playlist: a complete
                // segment ending at least CAN-SKIP-UNTIL before its end
                // (the delta is as new or newer, so it is skippable there too)
                if let Some(csu) = csu {
                    let total = m.listed_seconds();
                    let first_end = m.complete().next().map(Segment::length);
                    if first_end.is_some_and(|e| total - e >= csu + 0.001)
                        && d.skipped.unwrap_or(0) == 0
                    {
                        report.push(
                            "delta-available",
                            format!(
                                "{delta_url}: no EXT-X-SKIP, though the full playlist's first segment ends {:.3} s before its end (CAN-SKIP-UNTIL={csu})",
                                total - first_end.unwrap_or(0.0)
                            ),
                        );
                    }
                }
                // what the delta lists agrees with the full playlist
                for s in d.complete() {
                    if let Some(t) = m.complete().find(|t| t.msn == s.msn) {
                        if t.uri != s.uri {
                            report.push(
                                "delta-update",
                                format!(
                                    "{delta_url}: segment {} is {:?} in the delta, {:?} in the full playlist",
                                    s.msn, s.uri, t.uri
                                ),
                            );
                        }
                    }
                }
            }
        }

        // blocking reloads: the next part, then the next whole segment
        let mut previous = text.clone();
        for i in 0..opts.reloads {
            let p = parse_media(&previous);
            let (q, msn, part) = if i % 2 == 0 {
                match p.next_part() {
                    Some((msn, part)) => {
                        (format!("_HLS_msn={msn}&_HLS_part={part}"), msn, Some(part))
                    }
                    None => break,
                }
            } else {
                let msn = p
                    .complete()
                    .last()
                    .map_or(p.media_sequence.unwrap_or(0), |s| s.msn + 1);
                (format!("_HLS_msn={msn}"), msn, None)
            };
            let reload_url = with_query(&url, &q);
            let Some(next) = get_playlist(&mut report, &reload_url) else {
                break;
            };
            report.extend(&reload_url, check_media(&next, &ctx));
            report.extend(&reload_url, check_reload(&previous, &next));
            // a part index past the end of a segment is the next one's first
            // part: what the server answers holds segment msn complete then
            report.extend(&reload_url, check_blocking_answer(msn, part, &next));
            previous = next;
        }
        // the last answer's renditions, fetched now, agree with each other
        if opts.resolve_uris {
            let last = parse_media(&previous);
            for rel in last.uris() {
                let target = resolve(&url, &rel);
                match f.request(true, &target) {
                    Ok(a) if a.status == 200 => report.uris_checked += 1,
                    Ok(a) => report.push(
                        "uri-resolves",
                        format!("{target} (in {u}): status {}", a.status),
                    ),
                    Err(e) => report.push("uri-resolves", e),
                }
            }
        }
    }
    report
}

/// `part-41.m4s` plus 5 is `part-46.m4s`: the last run of digits in a URI's
/// file name before its extension, plus `n`.
pub fn number_plus(uri: &str, n: u64) -> Option<String> {
    let path_end = uri.find('?').unwrap_or(uri.len());
    let name_start = uri[..path_end].rfind('/').map_or(0, |i| i + 1);
    let stem_end = uri[name_start..path_end]
        .rfind('.')
        .map_or(path_end, |i| name_start + i);
    let end = uri[..stem_end].rfind(|c: char| c.is_ascii_digit())? + 1;
    if end <= name_start {
        return None;
    }
    let start = uri[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let value: u64 = uri[start..end].parse().ok()?;
    Some(format!(
        "{}{}{}",
        &uri[..start],
        value.checked_add(n)?,
        &uri[end..]
    ))
}

/// `to` relative to the directory of `from` (both relative to the
/// multivariant playlist): `source/index.m3u8` -> `audio/index.m3u8` is
/// `../audio/index.m3u8`.
pub fn relative_to(from: &str, to: &str) -> String {
    let from_dir: Vec<&str> = from.split('/').collect();
    let from_dir = &from_dir[..from_dir.len() - 1];
    let to_parts: Vec<&str> = to.split('/').collect();
    let common = from_dir
        .iter()
        .zip(to_parts.iter())
        .take_while(|(a, b)| a == b)
        .count();
    let mut out: Vec<&str> = vec![".."; from_dir.len() - common];
    out.extend_from_slice(&to_parts[common..]);
    out.join("/")
}

/// Waits until the media playlist at `url` lists `n` complete segments;
/// panics with the last answer after `timeout`.
pub fn wait_for_segments(url: &str, n: usize, timeout: Duration) -> String {
    let f = Fetch::new();
    let t = std::time::Instant::now();
    loop {
        let last = match f.get(url) {
            Ok(a) if a.status == 200 => {
                let text = a.text();
                if parse_media(&text).complete().count() >= n {
                    return text;
                }
                text
            }
            Ok(a) => format!("status {}", a.status),
            Err(e) => e,
        };
        assert!(
            t.elapsed() < timeout,
            "{url} did not list {n} complete segments in {timeout:?}; last answer:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
