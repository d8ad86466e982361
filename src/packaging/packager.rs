//! The packager: access units in, CMAF segments and parts into the store.
//!
//! One `Packager` per channel, alive across publisher sessions so that sequence
//! numbers never go back and a reconnect continues the same playlists behind a
//! discontinuity (RFC 8216bis §6.2.2; CMAF ISO/IEC 23000-19 §7.3.2).
//!
//! Cutting rules:
//! - Segments start at an IDR (CMAF §7.3.2.2). The video track drives the cuts:
//!   a segment closes at the first IDR at least `segment_target` after its start,
//!   so a longer source GOP makes longer segments (logged once per session).
//! - Parts never exceed the part target (EXT-X-PART-INF:PART-TARGET is a maximum):
//!   a part closes before the sample that would take it past the target.
//! - The audio track cuts its segments at the first audio frame at or after the
//!   video segment's start, so every track has the same sequence numbers. A
//!   session that ends a frame or two after a keyframe, before any audio
//!   reached the segment it began, loses those frames rather than leave a
//!   number to the video alone.
//! - A sample's duration is known when the next one arrives, so a part is written
//!   when the first sample of the next part arrives (one frame interval).
//! - A different decoder configuration, or a new publisher session, gives every
//!   track a new init segment and flags the next segment (same msn on every
//!   track) as a discontinuity.
//!
//! Numbering: msn, part sequence and init ids start from the wall clock when the
//! channel is created, so URLs never repeat across restarts of the process and a
//! CDN may cache media as immutable.

use super::cmaf::{self, ChunkHeader, CodecSetup, ProducerReference, Sample, TrackSetup};
use super::store::{ChannelStore, StoreConfig, TrackInfo, TrackKind};
use crate::media::{
    AudioConfig, AudioFrame, MediaEvent, Timestamp, VideoConfig, VideoFrame, MILLIS,
    VIDEO_TIMESCALE,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Track id (URL component) of the audio rendition.
pub const AUDIO_TRACK: &str = "audio";
/// Slack when comparing a part's length with the part target, in ms: RTMP's
/// millisecond timestamps make 30 fps frames 33 or 34 ms long.
const PART_SLACK_MS: i64 = 2;
/// Slack when deciding that a segment has reached its target, in ms.
const SEGMENT_SLACK_MS: i64 = 50;
/// Audio timestamps are counted in samples; when the publisher's timestamp is
/// further than this from the count (a gap, a jump), the count is re-anchored.
const AUDIO_RESYNC_MS: i64 = 100;
/// Audio frames held while waiting for the first video segment of a session
/// (publishers send audio before the first keyframe): about 5 s of AAC. Over
/// it, the oldest is dropped and counted.
pub const MAX_AUDIO_PREROLL: usize = 256;
/// Bytes of audio held waiting for the first video segment, at most; over
/// it, the oldest frames are dropped and counted, as over
/// [`MAX_AUDIO_PREROLL`]. Attack: audio messages of up to 8 MiB (the chunk
/// layer's limit) before any keyframe: 256 of them are 2 GiB. 256 AAC frames
/// at 320 kbit/s are about 220 KB.
pub const MAX_AUDIO_PREROLL_BYTES: usize = 1024 * 1024;
/// Bytes of samples one part may hold; a sample that would take it past this
/// starts the next part (PART-TARGET is a maximum, parts have no minimum).
/// Attack: huge frames a millisecond apart (8 MiB video messages with
/// repeated timestamps, which the timeline spaces 1 ms apart), so that a
/// 0.5 s part would hold 500 of them (4 GB) before reaching the store and its
/// byte cap (`store::DEFAULT_MAX_CHANNEL_BYTES`). 16 MiB is a 1.3 s part at
/// 100 Mbit/s: no sane stream's part reaches it.
pub const MAX_PART_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PackagerError {
    #[error("video frame has a composition offset of {0} ms, beyond what CMAF can carry")]
    CompositionOffset(i64),
}

/// What the packager has done, for logs and metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PackagerStats {
    pub video_frames: u64,
    pub audio_frames: u64,
    pub bytes: u64,
    pub segments: u64,
    pub parts: u64,
    /// Video frames dropped while waiting for the first IDR of a session.
    pub dropped_before_keyframe: u64,
    /// Audio frames dropped before the first video segment began.
    pub dropped_audio_before_video: u64,
    /// Video frames dropped at the end of a session: the last keyframe's
    /// segment, shorter than a part, that no audio reached (see
    /// `Packager::end_session`).
    pub dropped_video_without_audio: u64,
    /// Encoded rung frames packaged.
    pub rung_frames: u64,
    /// Rung frames dropped: before the rung's first IDR at a segment cut, or
    /// from a publisher session that already ended.
    pub rung_dropped: u64,
    /// Segment cuts a rung could not follow (no IDR before the next cut).
    pub rung_missed_segments: u64,
}

/// Things the caller should log (with the channel name).
#[derive(Clone, Debug, PartialEq)]
pub enum PackagerNotice {
    /// The source GOP is longer than the segment target.
    LongGop { gop_secs: f64, target_secs: f64 },
    /// A discontinuity starts at this msn.
    Discontinuity { msn: u64, reason: &'static str },
    /// A rung had no IDR between two segment cuts (its encoder is more than
    /// its input queue behind): it has no segment `msn` (`None`: a number
    /// already forgotten), and its playlist skips that number.
    RungMissedSegment { rung: String, msn: Option<u64> },
}

/// Most notices held between two [`Packager::take_notices`]; more are dropped
/// (the counters in [`PackagerStats`] still count them).
const MAX_NOTICES: usize = 64;

/// Queue a notice for the log, unless [`MAX_NOTICES`] already wait.
fn push_notice(notices: &mut Vec<PackagerNotice>, notice: PackagerNotice) {
    if notices.len() < MAX_NOTICES {
        notices.push(notice);
    }
}

/// Which track a fragmenter operation is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// The leading video track (the source, passed through or hidden).
    Video,
    Audio,
    /// An encoded rung, by index in `Packager::rungs`.
    Rung(usize),
}

impl From<TrackKind> for Slot {
    fn from(kind: TrackKind) -> Slot {
        match kind {
            TrackKind::Video => Slot::Video,
            TrackKind::Audio => Slot::Audio,
        }
    }
}

/// Most cut points kept for rungs that lag behind the source. A rung is at
/// most a few pictures behind (its input queue is short), so this is minutes
/// of parts; beyond it the oldest are forgotten and a rung that far behind
/// skips to the newest.
const MAX_PLAN: usize = 2048;

/// Where the leading video track cut a segment, for the rungs to cut at the
/// same picture with the same numbers.
#[derive(Clone, Debug, PartialEq)]
struct SegmentMark {
    /// Presentation time of the segment's first picture (ticks).
    pts: i64,
    msn: u64,
    init_id: u32,
    discontinuity: bool,
    /// Composition offset of the leader's first sample (ticks): rung samples
    /// take `dts = pts - offset`, so a rung segment's tfdt equals the source's.
    offset: i64,
    /// Wall clock of the segment's first sample (EXT-X-PROGRAM-DATE-TIME).
    wall: SystemTime,
}

/// An encoded rung: a video track that cuts its segments where the leader
/// did, and its parts on a grid of the part target from each segment's
/// first picture (so every rung of a channel has the same parts, and a part
/// is never longer than the target because of B-frame reordering in the
/// source).
#[derive(Debug)]
struct RungState {
    track: TrackState,
    /// Absolute index (see `Packager::plan_base`) of the next segment cut.
    next_cut: u64,
    /// Presentation time (ticks) at or after which the next part starts.
    next_part: i64,
    /// A segment cut was passed and waits for the rung's next IDR.
    pending_segment: Option<SegmentMark>,
    /// `dts = pts - offset` for this segment's samples.
    offset: i64,
    /// Wall clock and start (ticks) of the open segment, for part prft.
    segment_wall: SystemTime,
    /// Configured bitrate, bits/s, until one is measured.
    nominal_bandwidth: u64,
}

/// What [`Packager::push`] did with a video frame, for the transcoding
/// pipeline: whether the frame entered the timeline, and whether it starts a
/// segment (every rung must put an IDR there).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// The frame was packaged (not dropped waiting for a keyframe).
    pub accepted: bool,
    /// The frame opened a segment.
    pub segment_start: bool,
}

/// A sample waiting for its successor to know its duration.
#[derive(Clone, Debug)]
struct Pending {
    dts: i64,
    cts: i32,
    keyframe: bool,
    data: bytes::Bytes,
    wall: SystemTime,
}

/// One track's fragmenter state.
#[derive(Debug)]
struct TrackState {
    id: String,
    kind: TrackKind,
    timescale: u32,
    setup: TrackSetup,
    init_id: u32,
    /// The next segment this track opens is a discontinuity.
    discontinuity: bool,
    /// msn of the open segment, if one is open.
    open_msn: Option<u64>,
    segment_start: i64,
    /// Samples of the part being built, with its start time and wall clock.
    part: Vec<Sample>,
    part_start: i64,
    part_wall: SystemTime,
    part_is_segment_start: bool,
    pending: Option<Pending>,
    /// The last three sample durations (video), newest last: the newest is
    /// the estimate for the next sample, the shortest a conservative one.
    recent: [i64; 3],
    /// The last part was written before the next sample arrived, with an
    /// estimated duration for its last sample: the next sample continues the
    /// timeline at `end` (its composition offset keeps its presentation time).
    early: bool,
    /// This track's init segment for `init_id` is in the store.
    init_written: bool,
    /// msn of the last segment this track opened.
    last_msn: Option<u64>,
    /// A segment opened here and not yet in the store: it is published with
    /// its first part, so playlists never list an empty segment.
    /// (msn, init_id, discontinuity, start)
    unpublished: Option<(u64, u32, bool, u64)>,
    /// mfhd sequence number.
    chunk_seq: u32,
    /// End of the last sample written (ticks).
    end: i64,
}

impl TrackState {
    fn new(id: &str, kind: TrackKind, setup: TrackSetup, init_id: u32) -> Self {
        TrackState {
            id: id.to_string(),
            kind,
            timescale: setup.timescale,
            setup,
            init_id,
            discontinuity: false,
            open_msn: None,
            segment_start: 0,
            part: Vec::new(),
            part_start: 0,
            part_wall: UNIX_EPOCH,
            part_is_segment_start: false,
            pending: None,
            recent: [0; 3],
            early: false,
            init_written: false,
            last_msn: None,
            unpublished: None,
            chunk_seq: 1,
            end: 0,
        }
    }

    fn ms(&self, ms: i64) -> i64 {
        Timestamp::from_millis(ms).rescale(self.timescale).ticks
    }

    fn part_duration(&self) -> i64 {
        self.part.iter().map(|s| s.duration as i64).sum()
    }

    /// Would a sample of `bytes` take the part past [`MAX_PART_BYTES`]?
    fn part_full(&self, bytes: usize) -> bool {
        let held: usize = self.part.iter().map(|s| s.data.len()).sum();
        held.saturating_add(bytes) > MAX_PART_BYTES
    }
}

/// The per-channel packager.
pub struct Packager {
    store: Arc<ChannelStore>,
    config: StoreConfig,
    /// Rendition name of the passed-through video (the "source" rung).
    video_id: String,
    video: Option<TrackState>,
    audio: Option<TrackState>,
    video_config: Option<Arc<VideoConfig>>,
    audio_config: Option<Arc<AudioConfig>>,
    next_msn: u64,
    next_init_id: u32,
    /// Audio sample counter anchor: (ticks of the next frame).
    audio_next: Option<i64>,
    /// A decoder configuration changed (or a session began): the leading
    /// track's next segment renews every init and is a discontinuity.
    init_dirty: bool,
    /// Some segment was ever opened on this channel.
    produced_any: bool,
    /// Media end (ms) and wall clock of the last sample, for the next session.
    last_end_ms: Option<(i64, SystemTime)>,
    /// AST has been set for this channel.
    anchored: bool,
    long_gop_logged: bool,
    /// First part number of a track (tenths of a second since the epoch).
    part_base: u64,
    /// Audio that arrived before the first video segment of the session.
    audio_preroll: std::collections::VecDeque<(AudioFrame, SystemTime)>,
    /// Configured bitrate of each encoded rung, bits/s (nominal BANDWIDTH).
    rung_bitrates: Vec<(String, u64)>,
    /// The leading video track is published (a passthrough source rung);
    /// false: it only decides cut points for the encoded rungs.
    source_published: bool,
    /// Rendition names in playlist order (source first when published).
    order: Vec<String>,
    /// Encoded rungs, created by [`Packager::rung_config`].
    rungs: Vec<RungState>,
    /// Segment cuts of the leading track not yet passed by every rung.
    plan: VecDeque<SegmentMark>,
    /// Absolute index of `plan[0]`.
    plan_base: u64,
    /// Publisher session number; rung output from an older session is late
    /// and dropped.
    session: u64,
    notices: Vec<PackagerNotice>,
    stats: PackagerStats,
}

/// Sequence numbers start from the wall clock so that URLs never repeat when
/// the process restarts and CDNs may cache media as immutable: each counter
/// starts at the time since the epoch in units shorter than the thing counted
/// can be on average (segments are at least ~0.45 s, parts at least 0.1 s
/// apart from the odd short one at a segment end or reconnect).
const MSN_UNIT_MS: u64 = 400;
const PART_UNIT_MS: u64 = 50;

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

impl Packager {
    /// `video_id`: the rendition name the source video is published under.
    pub fn new(store: Arc<ChannelStore>, video_id: &str, now: SystemTime) -> Self {
        let config = store.read().config.clone();
        let ms = unix_millis(now);
        Packager {
            store,
            config,
            video_id: video_id.to_string(),
            video: None,
            audio: None,
            video_config: None,
            audio_config: None,
            next_msn: ms / MSN_UNIT_MS,
            // one new init per discontinuity; seconds keep them apart across restarts
            next_init_id: (ms / 1000) as u32,
            audio_next: None,
            init_dirty: true,
            produced_any: false,
            last_end_ms: None,
            anchored: false,
            long_gop_logged: false,
            part_base: ms / PART_UNIT_MS,
            audio_preroll: std::collections::VecDeque::new(),
            rung_bitrates: Vec::new(),
            source_published: true,
            order: vec![video_id.to_string()],
            rungs: Vec::new(),
            plan: VecDeque::new(),
            plan_base: 0,
            session: 0,
            notices: Vec::new(),
            stats: PackagerStats::default(),
        }
    }

    pub fn stats(&self) -> &PackagerStats {
        &self.stats
    }

    pub fn take_notices(&mut self) -> Vec<PackagerNotice> {
        std::mem::take(&mut self.notices)
    }

    /// The channel's ladder: `source` is the passthrough rendition's name
    /// (None: the source video is not published, and the leading track only
    /// decides where every rung cuts, at a fixed cadence), `rungs` the encoded
    /// renditions with their configured bitrate (kbit/s), in playlist order.
    /// Call before the first session.
    pub fn set_ladder(&mut self, source: Option<&str>, rungs: &[(String, u32)]) {
        self.source_published = source.is_some();
        // a name no rendition can have (config names are URL-safe)
        self.video_id = source.unwrap_or("\u{0}leader").to_string();
        if let Some(v) = self.video.as_mut() {
            v.id = self.video_id.clone();
        }
        self.order = source.map(str::to_string).into_iter().collect();
        self.order.extend(rungs.iter().map(|(n, _)| n.clone()));
        self.rung_bitrates = rungs
            .iter()
            .map(|(n, kbps)| (n.clone(), u64::from(*kbps) * 1000))
            .collect();
    }

    /// The current publisher session's number, to pass back with rung output.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// Record a segment cut of the leading track for the rungs.
    fn add_cut(&mut self, b: SegmentMark) {
        if self.rungs.is_empty() && self.rung_bitrates.is_empty() {
            return;
        }
        self.plan.push_back(b);
        // forget what every rung has passed, and anything beyond the bound
        let passed = self
            .rungs
            .iter()
            .map(|r| r.next_cut)
            .min()
            .unwrap_or(self.plan_base);
        while (self.plan_base < passed && !self.plan.is_empty()) || self.plan.len() > MAX_PLAN {
            self.plan.pop_front();
            self.plan_base += 1;
        }
    }

    /// A rung's encoder was (re)created: its decoder configuration. From the
    /// pipeline, before the rung's first frame; `session` as from
    /// [`Packager::session`] when the pipeline started.
    pub fn rung_config(&mut self, session: u64, rung: &str, c: Arc<VideoConfig>) {
        if session != self.session {
            return;
        }
        let nominal = self
            .rung_bitrates
            .iter()
            .find(|(n, _)| n == rung)
            .map(|(_, b)| *b)
            .unwrap_or(0);
        let (setup, info) = video_track(rung, &c, nominal);
        let i = match self.rungs.iter().position(|r| r.track.id == rung) {
            Some(i) => {
                if self.rungs[i].track.setup == setup {
                    return;
                }
                // what the old encoder made ends here
                self.end_rung(i);
                let r = &mut self.rungs[i];
                r.track.setup = setup;
                r.track.init_written = false;
                i
            }
            None => {
                let next_cut = self.plan_base + self.plan.len() as u64;
                self.rungs.push(RungState {
                    track: TrackState::new(rung, TrackKind::Video, setup, 0),
                    // cuts already made are for pictures before this rung's first
                    next_cut,
                    next_part: 0,
                    pending_segment: None,
                    offset: 0,
                    segment_wall: UNIX_EPOCH,
                    nominal_bandwidth: nominal,
                });
                // the segment being written: the rung joins at its next cut,
                // unless the cut is for a picture still to come
                if !self.plan.is_empty() {
                    if let Some(r) = self.rungs.last_mut() {
                        r.next_cut = self.plan_base + self.plan.len() as u64 - 1;
                    }
                }
                self.rungs.len() - 1
            }
        };
        let nominal = self.rungs[i].nominal_bandwidth;
        let info = TrackInfo {
            nominal_bandwidth: nominal,
            ..info
        };
        let part_base = self.part_base;
        let order = self.order.clone();
        self.store.write(|s| {
            let i = s.upsert_track(info);
            s.tracks[i].next_part_seq = s.tracks[i].next_part_seq.max(part_base);
            s.order_tracks(&order);
        });
    }

    /// One encoded access unit of a rung (no B-frames: presentation order),
    /// with the picture's source presentation time. Cut where the leading
    /// track cut: a segment at the rung's first IDR at or after the leader's
    /// segment picture, a part at the first picture at or after the leader's
    /// part picture.
    pub fn push_rung(&mut self, session: u64, rung: &str, f: VideoFrame) {
        if session != self.session {
            self.stats.rung_dropped += 1;
            return;
        }
        let Some(i) = self.rungs.iter().position(|r| r.track.id == rung) else {
            return;
        };
        let pts = Timestamp::from_millis(f.pts.as_millis())
            .rescale(VIDEO_TIMESCALE)
            .ticks;
        let end = self.plan_base + self.plan.len() as u64;
        let part_target = Timestamp::from_millis((self.config.part_target * MILLIS as f64) as i64)
            .rescale(VIDEO_TIMESCALE)
            .ticks
            .max(1);
        let r = &mut self.rungs[i];
        let mut idx = r.next_cut.max(self.plan_base);
        if idx > r.next_cut {
            self.stats.rung_missed_segments += 1;
            push_notice(
                &mut self.notices,
                PackagerNotice::RungMissedSegment {
                    rung: rung.to_owned(),
                    msn: None,
                },
            );
        }
        let mut segment_cut = false;
        while idx < end {
            let b = &self.plan[(idx - self.plan_base) as usize];
            if b.pts > pts {
                break;
            }
            if let Some(old) = &r.pending_segment {
                self.stats.rung_missed_segments += 1;
                push_notice(
                    &mut self.notices,
                    PackagerNotice::RungMissedSegment {
                        rung: rung.to_owned(),
                        msn: Some(old.msn),
                    },
                );
            }
            r.pending_segment = Some(b.clone());
            segment_cut = true;
            idx += 1;
        }
        r.next_cut = idx;
        let mut part_cut = segment_cut;
        if r.track.open_msn.is_some() && pts >= r.next_part {
            part_cut = true;
            while r.next_part <= pts {
                r.next_part += part_target;
            }
        }
        let mark = if f.keyframe {
            r.pending_segment.take()
        } else {
            None
        };
        if mark.is_none() && r.track.open_msn.is_none() {
            // waiting for an IDR at a segment cut
            self.stats.rung_dropped += 1;
            return;
        }
        let offset = mark
            .as_ref()
            .map(|m| rung_offset(&r.track.setup, m.offset))
            .unwrap_or(r.offset);
        let mut dts = pts - offset;
        if let Some(p) = r.track.pending.take() {
            dts = dts.max(p.dts + 1);
            let d = dts - p.dts;
            r.track.recent = [r.track.recent[1], r.track.recent[2], d];
            push_sample(&mut r.track, p, d);
        }
        self.stats.rung_frames += 1;
        if let Some(m) = mark {
            self.open_rung_segment(i, m, dts);
        } else if part_cut {
            // (a segment cut without an IDR here, after a dropped picture,
            // keeps at least the part boundary)
            self.write_part(Slot::Rung(i), false);
        }
        let r = &mut self.rungs[i];
        let since = Timestamp::new((dts - r.track.segment_start).max(0), VIDEO_TIMESCALE);
        let sample_wall = r.segment_wall + Duration::from_millis(since.as_millis() as u64);
        if r.track.part.is_empty() {
            r.track.part_start = dts;
            r.track.part_wall = sample_wall;
        }
        r.track.pending = Some(Pending {
            dts,
            cts: i32::try_from(pts - dts).unwrap_or(0),
            keyframe: f.keyframe,
            data: f.data,
            wall: sample_wall,
        });
    }

    /// Open rung `i`'s segment for the leader's cut `m`, at `dts`.
    fn open_rung_segment(&mut self, i: usize, m: SegmentMark, dts: i64) {
        self.write_part(Slot::Rung(i), false);
        let mut fresh_init = None;
        {
            let t = &self.rungs[i].track;
            // a new encoder configuration without a new init id from the
            // leader: never overwrite an init that older segments refer to
            if !t.init_written && t.init_id == m.init_id && t.last_msn.is_some() {
                fresh_init = Some(self.next_init_id);
                self.next_init_id = self.next_init_id.wrapping_add(1);
            }
        }
        let r = &mut self.rungs[i];
        let init_id = fresh_init.unwrap_or(m.init_id);
        let t = &mut r.track;
        let new_init = if !t.init_written || t.init_id != init_id {
            t.init_id = init_id;
            t.init_written = true;
            Some(cmaf::init_segment(&t.setup))
        } else {
            None
        };
        let offset = rung_offset(&t.setup, m.offset);
        r.offset = offset;
        r.segment_wall = m.wall;
        let part_target = Timestamp::from_millis((self.config.part_target * MILLIS as f64) as i64)
            .rescale(VIDEO_TIMESCALE)
            .ticks
            .max(1);
        r.next_part = dts + offset + part_target;
        t.open_msn = Some(m.msn);
        t.last_msn = Some(m.msn);
        t.segment_start = dts;
        t.part_start = dts;
        t.part_wall = m.wall;
        t.part_is_segment_start = true;
        t.unpublished = Some((m.msn, init_id, m.discontinuity, dts.max(0) as u64));
        let id = t.id.clone();
        self.store.write(|s| {
            if let Some(i) = s.track_index(&id) {
                if let Some(data) = new_init {
                    s.add_init(i, init_id, data);
                }
                s.close_segment(i);
            }
        });
    }

    /// Write what rung `i` holds and close its segment.
    fn end_rung(&mut self, i: usize) {
        self.flush_track(Slot::Rung(i));
        let Some(r) = self.rungs.get_mut(i) else {
            return;
        };
        r.pending_segment = None;
        let t = &mut r.track;
        t.pending = None;
        t.unpublished = None;
        if t.open_msn.take().is_some() {
            let id = t.id.clone();
            self.store.write(|s| {
                if let Some(i) = s.track_index(&id) {
                    s.close_segment(i);
                }
            });
        }
    }

    /// The pipeline of `session` has delivered everything: close the rungs'
    /// segments.
    pub fn end_rungs(&mut self, session: u64) {
        if session != self.session {
            return;
        }
        for i in 0..self.rungs.len() {
            self.end_rung(i);
        }
    }

    /// A publisher session begins. Returns the media time (ms) its first
    /// timestamp should map to: where the previous session ended plus the
    /// wall-clock gap, so the timeline keeps pace with the wall clock.
    pub fn start_session(&mut self, now: SystemTime) -> Timestamp {
        if self.tracks().any(|t| t.open_msn.is_some()) {
            // the previous publisher was replaced before it could finish
            self.end_session();
        }
        // rungs of the previous session that never got their end
        for i in 0..self.rungs.len() {
            self.end_rung(i);
        }
        self.session += 1;
        let end = self.plan_base + self.plan.len() as u64;
        for r in &mut self.rungs {
            r.next_cut = end;
        }
        self.init_dirty = true;
        self.long_gop_logged = false;
        self.audio_next = None;
        self.audio_preroll.clear();
        self.video_config = None;
        self.audio_config = None;
        self.store.write(|s| s.live = true);
        // Re-anchor to the wall clock: media time = time since the channel's
        // availabilityStartTime, so a previous publisher that ran slower than
        // real time (or a clock that drifted) does not skew DASH timing for
        // good (DASH-IF timing model: clock drift is forbidden). Never back.
        let start = match self.last_end_ms {
            Some((end, _)) => {
                let ast = self.store.read().availability_start;
                let wall = now
                    .duration_since(ast)
                    .unwrap_or(Duration::ZERO)
                    .as_millis() as i64;
                wall.max(end + 1)
            }
            None => 0,
        };
        Timestamp::from_millis(start)
    }

    /// The publisher session ended: write what is pending and close segments.
    pub fn end_session(&mut self) {
        self.drop_video_tail_without_audio();
        for kind in [TrackKind::Video, TrackKind::Audio] {
            self.flush_track(kind);
        }
        let store = self.store.clone();
        let ids: Vec<String> = self.tracks().map(|t| t.id.clone()).collect();
        store.write(|s| {
            for id in &ids {
                if let Some(i) = s.track_index(id) {
                    s.close_segment(i);
                }
            }
            s.live = false;
        });
        let mut dropped = Vec::new();
        for t in self.tracks_mut() {
            t.open_msn = None;
            t.pending = None;
            t.early = false;
            dropped.extend(t.unpublished.take().map(|u| u.0));
        }
        self.reclaim_msn(dropped);
        let end = self
            .tracks()
            .map(|t| Timestamp::new(t.end, t.timescale).as_millis())
            .max();
        if let Some(end) = end {
            self.last_end_ms = Some((end, SystemTime::now()));
        }
    }

    fn track_mut(&mut self, slot: impl Into<Slot>) -> Option<&mut TrackState> {
        match slot.into() {
            Slot::Video => self.video.as_mut(),
            Slot::Audio => self.audio.as_mut(),
            Slot::Rung(i) => self.rungs.get_mut(i).map(|r| &mut r.track),
        }
    }

    fn tracks(&self) -> impl Iterator<Item = &TrackState> {
        self.video.iter().chain(self.audio.iter())
    }

    fn tracks_mut(&mut self) -> impl Iterator<Item = &mut TrackState> {
        self.video.iter_mut().chain(self.audio.iter_mut())
    }

    /// Feed one demuxed event, with the wall-clock time it arrived. For a
    /// video frame, says whether it was packaged and whether it opened a
    /// segment (the transcoding pipeline forces an IDR there).
    pub fn push(&mut self, event: MediaEvent, wall: SystemTime) -> Result<Pushed, PackagerError> {
        match event {
            MediaEvent::VideoConfig(c) => self.on_video_config(c),
            MediaEvent::AudioConfig(c) => self.on_audio_config(c),
            MediaEvent::Video(f) => return self.on_video(f, wall),
            MediaEvent::Audio(f) => self.on_audio(f, wall),
        }
        Ok(Pushed::default())
    }

    /// Renew every track's init segment (new init id) and, when media came
    /// before, flag each track's next segment as a discontinuity.
    fn begin_discontinuity(&mut self) {
        let init_id = self.next_init_id;
        self.next_init_id = self.next_init_id.wrapping_add(1);
        let produced_any = self.produced_any;
        let mut inits = Vec::new();
        for t in self.tracks_mut() {
            t.init_id = init_id;
            t.discontinuity = produced_any;
            t.init_written = true;
            inits.push((t.id.clone(), cmaf::init_segment(&t.setup)));
        }
        self.store.write(|s| {
            for (id, data) in inits {
                if let Some(i) = s.track_index(&id) {
                    s.add_init(i, init_id, data);
                }
            }
        });
    }

    /// Close a track's open segment in the store (a configuration change: what
    /// follows must not be decoded with the old init).
    fn end_track_segment(&mut self, kind: TrackKind) {
        self.flush_track(kind);
        let t = self.track_mut(kind);
        let Some(t) = t else { return };
        t.pending = None;
        t.early = false;
        let dropped: Vec<u64> = t.unpublished.take().map(|u| u.0).into_iter().collect();
        self.reclaim_msn(dropped);
        let t = self.track_mut(kind);
        let Some(t) = t else { return };
        if t.open_msn.take().is_some() {
            let id = t.id.clone();
            self.store.write(|s| {
                if let Some(i) = s.track_index(&id) {
                    s.close_segment(i);
                }
            });
        }
    }

    /// A publisher that stops just after a keyframe leaves a video segment of
    /// a frame or two, not yet published (less than a part), that no audio
    /// frame reached: the audio track can never have a segment with its
    /// number, and every rendition must list the same numbers (RFC 8216bis
    /// §6.2.4; a player switching or syncing by sequence number would be
    /// off by one for the rest of the window). Those frames are dropped
    /// (counted) and the number given back. Not when a rung already cut
    /// there.
    fn drop_video_tail_without_audio(&mut self) {
        if self.audio_next.is_none() {
            return; // no audio in this session: nothing to agree with
        }
        let audio_last = self.audio.as_ref().and_then(|a| a.last_msn);
        let Some(msn) = self.video.as_ref().and_then(|v| v.unpublished).map(|u| u.0) else {
            return;
        };
        let reached = |last: Option<u64>| last.is_some_and(|l| l >= msn);
        if reached(audio_last) || self.rungs.iter().any(|r| reached(r.track.last_msn)) {
            return;
        }
        let Some(v) = self.video.as_mut() else {
            return;
        };
        let frames = v.part.len() + usize::from(v.pending.is_some());
        v.part.clear();
        v.pending = None;
        v.unpublished = None;
        v.open_msn = None;
        v.early = false;
        self.stats.dropped_video_without_audio += frames as u64;
        if self.plan.back().is_some_and(|m| m.msn == msn) {
            self.plan.pop_back();
        }
        self.reclaim_msn(vec![msn]);
    }

    /// Segments opened but never published (no part was written) give back
    /// their sequence number, so playlists stay contiguous.
    fn reclaim_msn(&mut self, dropped: Vec<u64>) {
        if let Some(&m) = dropped.iter().min() {
            if self.next_msn == m + 1
                && self
                    .tracks()
                    .all(|t| t.last_msn.map(|l| l <= m).unwrap_or(true))
            {
                self.next_msn = m;
                for t in self.tracks_mut() {
                    if t.last_msn == Some(m) {
                        t.last_msn = m.checked_sub(1);
                    }
                }
            }
        }
    }

    fn on_video_config(&mut self, c: Arc<VideoConfig>) {
        if self.video_config.as_deref() == Some(&*c) {
            return;
        }
        if self.video_config.is_some() {
            push_notice(
                &mut self.notices,
                PackagerNotice::Discontinuity {
                    msn: self.next_msn,
                    reason: "video configuration changed",
                },
            );
        }
        // What the old configuration produced ends here; the next IDR starts a
        // segment with the new init.
        self.end_track_segment(TrackKind::Video);
        self.video_config = Some(c.clone());
        let (setup, info) = video_track(&self.video_id, &c, 0);
        let part_base = self.part_base;
        let order = self.order.clone();
        if self.source_published {
            self.store.write(|s| {
                let i = s.upsert_track(info);
                s.tracks[i].next_part_seq = s.tracks[i].next_part_seq.max(part_base);
                s.order_tracks(&order);
            });
        }
        match &mut self.video {
            Some(t) => {
                t.setup = setup;
                t.init_written = false;
            }
            None => self.video = Some(TrackState::new(&self.video_id, TrackKind::Video, setup, 0)),
        }
        self.init_dirty = true;
    }

    fn on_audio_config(&mut self, c: Arc<AudioConfig>) {
        if self.audio_config.as_deref() == Some(&*c) {
            return;
        }
        if self.audio_config.is_some() {
            push_notice(
                &mut self.notices,
                PackagerNotice::Discontinuity {
                    msn: self.next_msn,
                    reason: "audio configuration changed",
                },
            );
        }
        self.end_track_segment(TrackKind::Audio);
        self.audio_config = Some(c.clone());
        let setup = TrackSetup {
            track_id: 1,
            timescale: c.sample_rate,
            codec: CodecSetup::Aac {
                asc: c.asc.clone(),
                sample_rate: c.sample_rate,
                channels: c.channels,
            },
        };
        let info = TrackInfo {
            id: AUDIO_TRACK.to_string(),
            kind: TrackKind::Audio,
            timescale: c.sample_rate,
            codec: c.codec_string.clone(),
            width: 0,
            height: 0,
            frame_rate: None,
            sample_rate: c.sample_rate,
            channels: c.channels,
            nominal_bandwidth: 0,
        };
        let part_base = self.part_base;
        self.store.write(|s| {
            let i = s.upsert_track(info);
            s.tracks[i].next_part_seq = s.tracks[i].next_part_seq.max(part_base);
        });
        match &mut self.audio {
            Some(t) => {
                t.timescale = c.sample_rate;
                t.setup = setup;
                t.init_written = false;
            }
            None => self.audio = Some(TrackState::new(AUDIO_TRACK, TrackKind::Audio, setup, 0)),
        }
        self.audio_next = None;
        self.init_dirty = true;
    }

    fn on_video(&mut self, f: VideoFrame, wall: SystemTime) -> Result<Pushed, PackagerError> {
        let Some(t) = self.video.as_ref() else {
            return Ok(Pushed::default());
        };
        let pts_ticks = t.ms(f.pts.as_millis());
        let hidden = !self.source_published;
        let mut dts = t.ms(f.dts.as_millis());
        let cts_ms = f.pts.as_millis() - f.dts.as_millis();
        let mut cts =
            i32::try_from(t.ms(cts_ms)).map_err(|_| PackagerError::CompositionOffset(cts_ms))?;
        if t.early && t.open_msn.is_some() {
            // continue exactly where the early part ended; keep pts
            let shift = dts - t.end;
            cts = i32::try_from(cts as i64 + shift)
                .map_err(|_| PackagerError::CompositionOffset(cts_ms))?;
            dts = t.end;
        }
        let part_target = t.ms((self.config.part_target * MILLIS as f64) as i64);
        let seg_target = t.ms((self.config.segment_target * MILLIS as f64) as i64);
        let part_slack = t.ms(PART_SLACK_MS);
        let seg_slack = t.ms(SEGMENT_SLACK_MS);
        let open = t.open_msn.is_some();
        if !open && !f.keyframe {
            self.stats.dropped_before_keyframe += 1;
            return Ok(Pushed::default());
        }
        self.stats.video_frames += 1;
        self.stats.bytes += f.data.len() as u64;

        // Give the pending sample its duration and add it to the part.
        let t = self.video.as_mut().expect("checked above");
        t.early = false;
        if let Some(p) = t.pending.take() {
            let d = (dts - p.dts).max(1);
            t.recent = [t.recent[1], t.recent[2], d];
            push_sample(t, p, d);
        }
        let est = if t.recent[2] > 0 {
            t.recent[2]
        } else {
            t.ms(33)
        };
        let elapsed = dts - t.segment_start;
        // A hidden leader (no source rung) cuts at a fixed cadence: the rungs
        // are all re-encoded and put their IDRs where it cuts.
        let cut_segment = if open {
            (f.keyframe || hidden) && elapsed + seg_slack >= seg_target
        } else {
            f.keyframe
        };
        let part_len = t.part_duration();
        let cut_part = !t.part.is_empty()
            && (part_len + est > part_target + part_slack || t.part_full(f.data.len()));

        if cut_segment {
            if open && elapsed > seg_target + seg_target / 2 && !self.long_gop_logged {
                self.long_gop_logged = true;
                push_notice(
                    &mut self.notices,
                    PackagerNotice::LongGop {
                        gop_secs: elapsed as f64 / t.timescale as f64,
                        target_secs: self.config.segment_target,
                    },
                );
            }
            // audio follows at its first frame at or after `dts`
            self.open_segment(TrackKind::Video, dts, wall);
            let v = self.video.as_ref().expect("video track");
            if let Some((msn, init_id, discontinuity, _)) = v.unpublished {
                let offset = if hidden { 0 } else { i64::from(cts).max(0) };
                self.add_cut(SegmentMark {
                    pts: pts_ticks,
                    msn,
                    init_id,
                    discontinuity,
                    offset,
                    wall,
                });
            }
            // audio that came before this first segment can now be placed
            for (frame, w) in std::mem::take(&mut self.audio_preroll) {
                self.on_audio(frame, w);
            }
        } else if cut_part {
            self.write_part(TrackKind::Video, false);
            let t = self.video.as_mut().expect("video track");
            t.part_start = dts;
            t.part_wall = wall;
        }
        let t = self.video.as_mut().expect("video track");
        if t.part.is_empty() {
            t.part_start = dts;
            t.part_wall = wall;
        }
        t.pending = Some(Pending {
            dts,
            cts,
            keyframe: f.keyframe,
            data: f.data,
            wall,
        });
        // If the next frame will close this part whatever it is, write the part
        // now rather than one frame interval later: the last frame's duration
        // is estimated low (the shortest recent interval) so the next frame's
        // decode time moves back, never forward, and its offset grows.
        let shortest = t.recent.iter().copied().filter(|d| *d > 0).min();
        if let Some(d) = shortest {
            let full = t.part_duration() + d + est > part_target + part_slack;
            if full {
                if let Some(p) = t.pending.take() {
                    // the estimate is this sample's duration: recorded, so
                    // that a gap's interval (far above the part target)
                    // leaves `recent` and parts go back to the target
                    // instead of one part per frame from then on
                    t.recent = [t.recent[1], t.recent[2], d];
                    push_sample(t, p, d);
                    self.write_part(TrackKind::Video, false);
                    if let Some(t) = self.video.as_mut() {
                        t.early = true;
                    }
                }
            }
        }
        self.anchor(dts, VIDEO_TIMESCALE, wall);
        Ok(Pushed {
            accepted: true,
            segment_start: cut_segment,
        })
    }

    fn on_audio(&mut self, f: AudioFrame, wall: SystemTime) {
        let Some(a) = self.audio.as_ref() else {
            return;
        };
        let frame = self
            .audio_config
            .as_ref()
            .map(|c| c.frame_samples as i64)
            .unwrap_or(1024);
        let reported = a.ms(f.dts.as_millis());
        let dts = match self.audio_next {
            Some(n) if (n - reported).abs() <= a.ms(AUDIO_RESYNC_MS) => n,
            _ => reported,
        };
        // Where does this frame go?
        let video_msn = self.video.as_ref().and_then(|v| v.open_msn);
        let has_video = self.video.is_some();
        let video_seg_start = self.video.as_ref().map(|v| v.segment_start);
        let part_target = a.ms((self.config.part_target * MILLIS as f64) as i64);
        let seg_target = a.ms((self.config.segment_target * MILLIS as f64) as i64);
        let part_slack = a.ms(PART_SLACK_MS);
        let audio_open = a.open_msn;
        let audio_last = a.last_msn;
        let audio_segment_start = a.segment_start;
        let timescale = a.timescale;

        let new_segment = if has_video {
            let Some(v) = video_msn else {
                // no video segment yet: hold the frame until one opens
                self.audio_preroll.push_back((f, wall));
                let bytes = |q: &VecDeque<(AudioFrame, SystemTime)>| {
                    q.iter().map(|(f, _)| f.data.len()).sum::<usize>()
                };
                while self.audio_preroll.len() > MAX_AUDIO_PREROLL
                    || bytes(&self.audio_preroll) > MAX_AUDIO_PREROLL_BYTES
                {
                    self.audio_preroll.pop_front();
                    self.stats.dropped_audio_before_video += 1;
                }
                return;
            };
            let vs = Timestamp::new(video_seg_start.unwrap_or(0), VIDEO_TIMESCALE)
                .rescale(timescale)
                .ticks;
            let follows = audio_last.map(|l| v > l).unwrap_or(true);
            if audio_open.is_none() && (!follows || dts + frame / 2 < vs) {
                // before the video segment it would belong to
                self.stats.dropped_audio_before_video += 1;
                return;
            }
            follows && dts + frame / 2 >= vs
        } else {
            audio_open.is_none() || self.init_dirty || dts - audio_segment_start >= seg_target
        };
        self.stats.audio_frames += 1;
        self.stats.bytes += f.data.len() as u64;
        if new_segment {
            self.open_segment(TrackKind::Audio, dts, wall);
        } else {
            let a = self.audio.as_ref().expect("audio track");
            if !a.part.is_empty()
                && (a.part_duration() + frame > part_target + part_slack
                    || a.part_full(f.data.len()))
            {
                self.write_part(TrackKind::Audio, false);
            }
        }
        let a = self.audio.as_mut().expect("audio track");
        if a.part.is_empty() {
            a.part_start = dts;
            a.part_wall = wall;
        }
        let p = Pending {
            dts,
            cts: 0,
            keyframe: true,
            data: f.data,
            wall,
        };
        push_sample(a, p, frame);
        self.audio_next = Some(dts + frame);
        self.anchor(dts, timescale, wall);
    }

    /// Set the channel's availabilityStartTime from the first sample ever.
    fn anchor(&mut self, dts: i64, timescale: u32, wall: SystemTime) {
        if self.anchored {
            return;
        }
        self.anchored = true;
        let media = Timestamp::new(dts, timescale).as_secs_f64().max(0.0);
        let ast = wall
            .checked_sub(Duration::from_secs_f64(media))
            .unwrap_or(wall);
        self.store.write(|s| s.availability_start = ast);
    }

    /// Close the track's open segment (writing its last part) and open a new
    /// one starting at `dts`. The video track allocates the msn; audio takes
    /// the video's (or allocates its own when there is no video).
    fn open_segment(&mut self, kind: TrackKind, dts: i64, wall: SystemTime) {
        self.write_part(kind, false);
        let msn = match kind {
            TrackKind::Video => {
                let m = self.next_msn;
                self.next_msn += 1;
                m
            }
            TrackKind::Audio => match self.video.as_ref().and_then(|v| v.open_msn) {
                Some(m) => m,
                None => {
                    let m = self.next_msn;
                    self.next_msn += 1;
                    m
                }
            },
        };
        let leader = kind == TrackKind::Video || self.video.is_none();
        if leader && self.init_dirty {
            self.init_dirty = false;
            self.begin_discontinuity();
        }
        self.produced_any = true;
        let fallback_init = self.next_init_id.wrapping_sub(1);
        let t = self.track_mut(kind);
        let Some(t) = t else { return };
        let discontinuity = std::mem::take(&mut t.discontinuity);
        let mut new_init = None;
        if !t.init_written {
            // a track that appeared (or changed) after the leader's segment began
            t.init_id = fallback_init;
            t.init_written = true;
            new_init = Some(cmaf::init_segment(&t.setup));
        }
        t.open_msn = Some(msn);
        t.last_msn = Some(msn);
        t.segment_start = dts;
        t.part_start = dts;
        t.part_wall = wall;
        t.part_is_segment_start = true;
        let (id, init_id) = (t.id.clone(), t.init_id);
        t.unpublished = Some((msn, init_id, discontinuity, dts.max(0) as u64));
        self.stats.segments += u64::from(leader);
        // The previous segment is complete now; this one enters the store with
        // its first part (write_part).
        self.store.write(|s| {
            if let Some(i) = s.track_index(&id) {
                if let Some(data) = new_init {
                    s.add_init(i, init_id, data);
                }
                s.close_segment(i);
            }
        });
    }

    /// Write the track's current part (if any) as a CMAF chunk into the store.
    /// With `with_pending`, the pending sample is added first (end of stream).
    fn write_part(&mut self, slot: impl Into<Slot>, with_pending: bool) {
        let slot = slot.into();
        // The leader of a ladder without a source rung only decides cuts.
        let hidden = slot == Slot::Video && !self.source_published;
        let t = self.track_mut(slot);
        let Some(t) = t else { return };
        if with_pending {
            if let Some(p) = t.pending.take() {
                let d = if t.recent[2] > 0 {
                    t.recent[2]
                } else {
                    t.ms(33)
                };
                push_sample(t, p, d);
            }
        }
        if t.part.is_empty() || t.open_msn.is_none() {
            return;
        }
        let samples = std::mem::take(&mut t.part);
        let duration: u64 = samples.iter().map(|s| u64::from(s.duration)).sum();
        let independent = samples.first().map(|s| s.keyframe).unwrap_or(false);
        let header = ChunkHeader {
            sequence_number: t.chunk_seq,
            track_id: t.setup.track_id,
            base_media_decode_time: t.part_start.max(0) as u64,
            segment_start: std::mem::take(&mut t.part_is_segment_start),
            producer_reference: Some(ProducerReference {
                wall_clock: t.part_wall,
                media_time: t.part_start.max(0) as u64,
            }),
            video: t.kind == TrackKind::Video,
        };
        t.chunk_seq = t.chunk_seq.wrapping_add(1);
        t.end = t.part_start + duration as i64;
        t.part_start = t.end;
        if hidden {
            t.unpublished = None;
            return;
        }
        let data = cmaf::chunk(&header, &samples);
        let id = t.id.clone();
        let unpublished = t.unpublished.take();
        self.stats.parts += 1;
        self.store.write(|s| {
            if let Some(i) = s.track_index(&id) {
                if let Some((msn, init_id, discontinuity, start)) = unpublished {
                    let date = media_date(s.availability_start, start, s.tracks[i].info.timescale);
                    s.open_segment(i, msn, init_id, discontinuity, start, date);
                }
                s.add_part(i, duration, independent, data);
                // Until a segment is complete, estimate the bitrate from what we have.
                let tr = &mut s.tracks[i];
                if tr.peak_bandwidth == 0 {
                    if let Some(seg) = tr.segments.back() {
                        let secs = seg.duration as f64 / tr.info.timescale.max(1) as f64;
                        if secs > 0.0 {
                            tr.info.nominal_bandwidth = (seg.bytes as f64 * 8.0 / secs) as u64;
                        }
                    }
                }
            }
        });
    }

    /// Write everything the track holds (end of session, configuration change).
    fn flush_track(&mut self, slot: impl Into<Slot>) {
        self.write_part(slot, true);
    }
}

/// A video track (the source's or a rung's) for decoder configuration `c`:
/// its init segment's setup and what the playlists say of it.
fn video_track(id: &str, c: &VideoConfig, nominal_bandwidth: u64) -> (TrackSetup, TrackInfo) {
    let setup = TrackSetup {
        track_id: 1,
        timescale: VIDEO_TIMESCALE,
        codec: CodecSetup::video(c),
    };
    let info = TrackInfo {
        id: id.to_string(),
        kind: TrackKind::Video,
        timescale: VIDEO_TIMESCALE,
        codec: c.codec_string.clone(),
        width: c.width,
        height: c.height,
        frame_rate: c.frame_rate,
        sample_rate: 0,
        channels: 0,
        nominal_bandwidth,
    };
    (setup, info)
}

/// A segment's EXT-X-PROGRAM-DATE-TIME: its start on the channel's media
/// clock (`availabilityStartTime` + media time, as DASH maps it), not the wall
/// clock at which its first frame arrived. Consecutive segments' dates then
/// differ by exactly their durations, on every rendition and after every
/// playlist reload: players that place segments by their dates (Shaka) saw
/// each reload move them by the arrival jitter. The session re-anchoring in
/// `start_session` keeps the media clock on the wall clock.
fn media_date(availability_start: SystemTime, start: u64, timescale: u32) -> SystemTime {
    let nanos = u128::from(start) * 1_000_000_000 / u128::from(timescale.max(1));
    availability_start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The composition offset a rung's samples take in the leader's segment
/// `mark_offset`: H.264 rungs take the source IDR's (`dts = pts - offset`,
/// so a rung segment's tfdt equals the source's); AV1 rungs take none, since
/// AV1 has no reordering between temporal units and AV1-ISOBMFF §2.4 has
/// every sample presented at its decode time.
fn rung_offset(setup: &TrackSetup, mark_offset: i64) -> i64 {
    match setup.codec {
        CodecSetup::Av1 { .. } => 0,
        _ => mark_offset,
    }
}

fn push_sample(t: &mut TrackState, p: Pending, duration: i64) {
    let d = u32::try_from(duration.max(1)).unwrap_or(u32::MAX);
    if t.part.is_empty() {
        t.part_start = p.dts;
        t.part_wall = p.wall;
    }
    t.part.push(Sample {
        duration: d,
        composition_offset: p.cts,
        keyframe: p.keyframe,
        data: p.data,
    });
}

#[cfg(test)]
mod tests;
