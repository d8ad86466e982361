//! The segment store: what the packager writes and the origin (and later restream)
//! reads, all in memory.
//!
//! One [`ChannelStore`] per channel holds its tracks (renditions): init segments,
//! and a sliding window of segments made of parts (CMAF chunks). Writers never
//! block on readers: the state sits behind a short-held `RwLock`, and every change
//! bumps a `watch` generation counter that parked blocking requests wait on (no
//! polling, no thread per request).
//!
//! Naming (the packager chooses names, SPEC.md): under `/live/<channel>/`
//! - `<track>/init-<init_id>.mp4`: init segment
//! - `<track>/seg-<msn>.m4s`: media segment (grows chunk by chunk while open)
//! - `<track>/part-<part_seq>.m4s`: one part; `part_seq` counts parts of the
//!   track across segments, so a preload hint never has to guess whether the next
//!   part starts a new segment.
//!
//! Memory: each channel's store holds at most [`StoreConfig::max_bytes`]
//! (`[packaging] max_channel_mib`, default [`DEFAULT_MAX_CHANNEL_BYTES`]) of
//! init segments and parts, all renditions together. Over it, the overflow
//! policy of [`ChannelState::add_part`] applies: the oldest complete segments
//! go first (the window gets shorter than configured); when the open segments
//! alone fill the cap (huge frames, or a GOP that never ends so the segment
//! never closes), they are closed where they are and parts are dropped until
//! the next segment opens, at the next IDR. Counted in [`CapStats`] and
//! logged, naming the channel.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;
use tokio::sync::watch;
use tracing::warn;

/// How many segments beyond the playlist window stay downloadable: a player that
/// fetched the playlist just before the window slid can still get what it lists.
pub const RETAINED_BEYOND_WINDOW: usize = 4;

/// Default cap on the bytes one channel's store holds: init segments and the
/// parts of every rendition's segments ([`StoreConfig::max_bytes`], `[packaging]
/// max_channel_mib`). Attack: a publisher sending huge frames (8 MiB video
/// messages, the chunk layer's limit, at 60 fps are 480 MB/s) or a GOP that
/// never ends, so that a segment never closes and the window never slides.
/// 512 MiB holds the default window (8 listed + 4 retained + the open segment,
/// 2 s each: 26 s) at 160 Mbit/s summed over the renditions: a 100 Mbit/s 4K60
/// source passed through beside a 60 Mbit/s ladder. Overflow policy: see
/// [`ChannelState::add_part`] (oldest segments dropped first).
pub const DEFAULT_MAX_CHANNEL_BYTES: usize = 512 * MIB;

/// Bytes in a mebibyte (`max_channel_mib`).
pub const MIB: usize = 1024 * 1024;

/// Packaging targets, from `[packaging]` in the config.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreConfig {
    /// Segment target in seconds; segments start at IDR so a longer GOP wins.
    pub segment_target: f64,
    /// Part (CMAF chunk) target in seconds.
    pub part_target: f64,
    /// Complete segments listed in the playlists.
    pub window_segments: usize,
    /// Bytes the channel's store may hold (init segments and parts, every
    /// rendition); over it, the oldest segments go first
    /// ([`ChannelState::add_part`]).
    pub max_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            segment_target: 2.0,
            part_target: 0.5,
            window_segments: 8,
            max_bytes: DEFAULT_MAX_CHANNEL_BYTES,
        }
    }
}

/// What the channel's byte cap ([`StoreConfig::max_bytes`]) did, since the
/// channel was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapStats {
    /// Complete segments dropped before their time (one per msn, however
    /// many renditions had it).
    pub segments_dropped: u64,
    /// Open segments closed before their next IDR, the open segments alone
    /// filling the cap (one per cut, however many renditions were cut).
    pub segments_cut: u64,
    /// Parts refused: at the cap, or for a segment the cap had cut.
    pub parts_dropped: u64,
}

impl CapStats {
    /// Whether going from `before` to `self` deserves a log line: the count
    /// of either action reached a power of two (1, 2, 4, 8...).
    fn worth_logging(&self, before: &CapStats) -> bool {
        let reached = |from: u64, to: u64| (from + 1..=to).any(u64::is_power_of_two);
        reached(before.segments_dropped, self.segments_dropped)
            || reached(before.segments_cut, self.segments_cut)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackKind {
    Video,
    Audio,
}

/// One part: a CMAF chunk (moof + mdat, with prft; the first of a segment starts
/// with styp).
#[derive(Clone, Debug)]
pub struct Part {
    /// Track-wide part number (URL `part-<seq>.m4s`).
    pub seq: u64,
    /// Duration in track ticks.
    pub duration: u64,
    /// Starts with a sync sample (INDEPENDENT=YES).
    pub independent: bool,
    pub data: Bytes,
}

/// One media segment: starts with an IDR (video), made of parts.
#[derive(Clone, Debug)]
pub struct Segment {
    /// Media sequence number (URL `seg-<msn>.m4s`; DASH `$Number$`).
    pub msn: u64,
    /// Which init segment decodes it.
    pub init_id: u32,
    /// First segment after a discontinuity (reconnect, configuration change).
    pub discontinuity: bool,
    /// baseMediaDecodeTime of the first sample, in track ticks (tfdt).
    pub start: u64,
    /// Sum of part durations so far, in track ticks.
    pub duration: u64,
    /// Wall-clock time of the first sample's ingest (EXT-X-PROGRAM-DATE-TIME, prft).
    pub program_date_time: SystemTime,
    pub parts: Vec<Part>,
    /// No more parts will be added.
    pub complete: bool,
    /// Total size of the parts, in bytes.
    pub bytes: usize,
}

impl Segment {
    /// The whole segment as one buffer (the parts back to back).
    pub fn data(&self) -> Bytes {
        if self.parts.len() == 1 {
            return self.parts[0].data.clone();
        }
        let mut v = Vec::with_capacity(self.bytes);
        for p in &self.parts {
            v.extend_from_slice(&p.data);
        }
        Bytes::from(v)
    }
}

/// Static description of a track, for manifests.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackInfo {
    /// URL path component and rendition name: `source`, `720p`, `audio`.
    pub id: String,
    pub kind: TrackKind,
    /// Ticks per second of `Segment::start`, `Segment::duration`, `Part::duration`.
    pub timescale: u32,
    /// RFC 6381 codec string.
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub frame_rate: Option<f64>,
    pub sample_rate: u32,
    pub channels: u8,
    /// Configured or estimated bitrate, bits/s (used until measured).
    pub nominal_bandwidth: u64,
}

/// A track's state: its init segments and segment window.
#[derive(Clone, Debug)]
pub struct Track {
    pub info: TrackInfo,
    /// (init_id, bytes); older ones kept while a retained segment refers to them.
    pub inits: Vec<(u32, Bytes)>,
    /// Oldest first; the back may be open (`complete == false`).
    pub segments: VecDeque<Segment>,
    /// Next part sequence number to be assigned.
    pub next_part_seq: u64,
    /// Largest bitrate of any complete segment seen, bits/s (BANDWIDTH).
    pub peak_bandwidth: u64,
    /// Bits/s over the complete segments in the window (AVERAGE-BANDWIDTH).
    pub average_bandwidth: u64,
    /// The channel's byte cap closed the last segment before its end: parts
    /// for it are dropped until the next segment opens.
    pub cut_by_cap: bool,
}

impl Track {
    pub fn new(info: TrackInfo) -> Self {
        Track {
            info,
            inits: Vec::new(),
            segments: VecDeque::new(),
            next_part_seq: 0,
            peak_bandwidth: 0,
            average_bandwidth: 0,
            cut_by_cap: false,
        }
    }

    /// Bytes held: init segments and parts.
    pub fn bytes(&self) -> usize {
        let inits: usize = self.inits.iter().map(|(_, b)| b.len()).sum();
        let segments: usize = self.segments.iter().map(|s| s.bytes).sum();
        inits + segments
    }

    pub fn init(&self, init_id: u32) -> Option<&Bytes> {
        self.inits
            .iter()
            .find(|(id, _)| *id == init_id)
            .map(|(_, b)| b)
    }

    /// The segment numbered `msn`, if held. Numbers are consecutive in the
    /// usual case (found at `msn - first`), but a rung that missed a segment
    /// cut has a hole, so the position is checked and the deque searched
    /// (numbers only increase) otherwise: never another segment's bytes.
    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        let first = self.segments.front()?.msn;
        let idx = usize::try_from(msn.checked_sub(first)?).ok()?;
        match self.segments.get(idx) {
            Some(seg) if seg.msn == msn => Some(seg),
            _ => {
                let i = self.segments.binary_search_by_key(&msn, |s| s.msn).ok()?;
                self.segments.get(i)
            }
        }
    }

    /// Find a part by its track-wide sequence number: (segment, index in segment).
    pub fn part(&self, seq: u64) -> Option<(&Segment, usize)> {
        // parts are numbered in order, so binary search over segments
        let segs = &self.segments;
        let pos = segs.partition_point(|s| s.parts.last().map(|p| p.seq < seq).unwrap_or(true));
        let seg = segs.get(pos)?;
        let first = seg.parts.first()?.seq;
        let idx = usize::try_from(seq.checked_sub(first)?).ok()?;
        if idx < seg.parts.len() {
            Some((seg, idx))
        } else {
            None
        }
    }

    /// The last segment, complete or not.
    pub fn last_segment(&self) -> Option<&Segment> {
        self.segments.back()
    }

    /// The segments a playlist lists: the last `window` complete ones and the open one.
    pub fn window(&self, window: usize) -> impl Iterator<Item = &Segment> {
        let complete = self.segments.iter().filter(|s| s.complete).count();
        let skip = complete.saturating_sub(window);
        self.segments.iter().skip(skip)
    }

    /// The (msn, part index) the next part will have if it continues the open
    /// segment; `None` before the first segment.
    pub fn last_part_position(&self) -> Option<(u64, usize)> {
        let seg = self.segments.iter().rev().find(|s| !s.parts.is_empty())?;
        Some((seg.msn, seg.parts.len() - 1))
    }
}

/// Everything a channel's manifests are made from. Read it through
/// [`ChannelStore::read`]; only the packager writes it.
#[derive(Clone, Debug)]
pub struct ChannelState {
    pub config: StoreConfig,
    /// A publisher is attached (between publish and unpublish).
    pub live: bool,
    /// Tracks in manifest order: video renditions first, then audio.
    pub tracks: Vec<Track>,
    /// EXT-X-DISCONTINUITY-SEQUENCE of the first listed segment: discontinuities
    /// that slid out of the window. Shared by all tracks.
    pub discontinuity_sequence: u64,
    /// Wall-clock time of media time zero (DASH availabilityStartTime).
    pub availability_start: SystemTime,
    /// EXT-X-TARGETDURATION: ceil of the segment target and of the longest segment
    /// seen; never decreases.
    pub target_duration: u64,
    /// Bumped on every change; what `changed` carries.
    pub generation: u64,
    /// What the byte cap did.
    pub cap: CapStats,
}

impl ChannelState {
    pub fn new(config: StoreConfig, availability_start: SystemTime) -> Self {
        let target_duration = config.segment_target.ceil().max(1.0) as u64;
        ChannelState {
            config,
            live: false,
            tracks: Vec::new(),
            discontinuity_sequence: 0,
            availability_start,
            target_duration,
            generation: 0,
            cap: CapStats::default(),
        }
    }

    /// Bytes held by every track: what [`StoreConfig::max_bytes`] caps.
    pub fn bytes(&self) -> usize {
        self.tracks.iter().map(Track::bytes).sum()
    }

    pub fn track(&self, id: &str) -> Option<&Track> {
        self.tracks.iter().find(|t| t.info.id == id)
    }

    pub fn track_index(&self, id: &str) -> Option<usize> {
        self.tracks.iter().position(|t| t.info.id == id)
    }

    /// Can a player start: has every track produced a part? Audio often runs
    /// ahead of video (encoder lookahead), and a master playlist offered before
    /// the video playlist exists sends players to a 404.
    pub fn has_media(&self) -> bool {
        !self.tracks.is_empty() && self.tracks.iter().all(|t| t.last_part_position().is_some())
    }

    /// Add or replace a track's description; returns its index.
    pub fn upsert_track(&mut self, info: TrackInfo) -> usize {
        if let Some(i) = self.track_index(&info.id) {
            self.tracks[i].info = info;
            i
        } else {
            let id = info.id.clone();
            self.tracks.push(Track::new(info));
            // video first, then audio; stable within a kind
            self.tracks.sort_by_key(|t| match t.info.kind {
                TrackKind::Video => 0,
                TrackKind::Audio => 1,
            });
            self.track_index(&id).unwrap_or(0)
        }
    }

    /// Order the tracks as the ladder lists its renditions (video first, then
    /// audio; names not in `order` after those that are). The multivariant
    /// playlist and the MPD list them in this order.
    pub fn order_tracks(&mut self, order: &[String]) {
        self.tracks.sort_by_key(|t| {
            let kind = match t.info.kind {
                TrackKind::Video => 0,
                TrackKind::Audio => 1,
            };
            let pos = order
                .iter()
                .position(|n| *n == t.info.id)
                .unwrap_or(usize::MAX);
            (kind, pos)
        });
    }

    /// Register an init segment for a track.
    pub fn add_init(&mut self, track: usize, init_id: u32, data: Bytes) {
        if let Some(t) = self.tracks.get_mut(track) {
            t.inits.retain(|(id, _)| *id != init_id);
            t.inits.push((init_id, data));
        }
    }

    /// Open a new segment on a track (closing the open one, if any).
    #[allow(clippy::too_many_arguments)]
    pub fn open_segment(
        &mut self,
        track: usize,
        msn: u64,
        init_id: u32,
        discontinuity: bool,
        start: u64,
        program_date_time: SystemTime,
    ) {
        self.close_segment(track);
        let Some(t) = self.tracks.get_mut(track) else {
            return;
        };
        t.cut_by_cap = false;
        t.segments.push_back(Segment {
            msn,
            init_id,
            discontinuity,
            start,
            duration: 0,
            program_date_time,
            parts: Vec::new(),
            complete: false,
            bytes: 0,
        });
    }

    /// Append a part to a track's open segment; returns its part sequence
    /// number, or `None` when the part is not stored.
    ///
    /// Overflow policy of the channel's byte cap ([`StoreConfig::max_bytes`]):
    /// 1. the oldest complete segments are dropped (every rendition's at one
    ///    msn together, the discontinuity sequence kept right) until the part
    ///    fits: the window gets shorter than configured;
    /// 2. when the open segments alone fill the cap, every track's open
    ///    segment is closed where it is, and this part and the parts after
    ///    it are dropped until the track's next segment opens (at the next
    ///    IDR). A part that would open a segment is still taken, so that no
    ///    segment is listed empty (over the cap by at most that one part,
    ///    which the packager bounds).
    pub fn add_part(
        &mut self,
        track: usize,
        duration: u64,
        independent: bool,
        data: Bytes,
    ) -> Option<u64> {
        let t = self.tracks.get(track)?;
        let seg = match t.segments.back() {
            Some(s) if !s.complete => s,
            _ => {
                if t.cut_by_cap {
                    self.cap.parts_dropped += 1;
                }
                return None;
            }
        };
        let first_part = seg.parts.is_empty();
        if !self.make_room(data.len()) {
            if !first_part {
                self.cap.parts_dropped += 1;
                self.cut_open_segments();
                return None;
            }
            let seq = self.append_part(track, duration, independent, data);
            self.cut_open_segments();
            return seq;
        }
        self.append_part(track, duration, independent, data)
    }

    fn append_part(
        &mut self,
        track: usize,
        duration: u64,
        independent: bool,
        data: Bytes,
    ) -> Option<u64> {
        let t = self.tracks.get_mut(track)?;
        let seg = t.segments.back_mut().filter(|s| !s.complete)?;
        let seq = t.next_part_seq;
        t.next_part_seq += 1;
        seg.duration += duration;
        seg.bytes += data.len();
        seg.parts.push(Part {
            seq,
            duration,
            independent,
            data,
        });
        Some(seq)
    }

    /// Mark a track's open segment complete, update bandwidth and target duration,
    /// and slide the window.
    pub fn close_segment(&mut self, track: usize) {
        let window = self.config.window_segments;
        let Some(t) = self.tracks.get_mut(track) else {
            return;
        };
        // The first listed segment before this one counts as complete (marking
        // it complete is what slides the window).
        let before_first_listed = t.window(window).next().map(|s| s.msn);
        let Some(seg) = t.segments.back_mut().filter(|s| !s.complete) else {
            return;
        };
        if seg.parts.is_empty() {
            // nothing was written: forget it rather than list an empty segment
            t.segments.pop_back();
            return;
        }
        seg.complete = true;
        let secs = seg.duration as f64 / t.info.timescale.max(1) as f64;
        if secs > 0.0 {
            let bps = (seg.bytes as f64 * 8.0 / secs) as u64;
            t.peak_bandwidth = t.peak_bandwidth.max(bps);
            let td = secs.round().max(1.0) as u64;
            // RFC 8216 §4.4.3.1: rounded segment duration <= target duration
            if td > self.target_duration {
                self.target_duration = td;
            }
        }
        // average over the complete segments in the window
        let (bytes, ticks) = t
            .segments
            .iter()
            .filter(|s| s.complete)
            .rev()
            .take(window)
            .fold((0usize, 0u64), |(b, d), s| (b + s.bytes, d + s.duration));
        if ticks > 0 {
            t.average_bandwidth =
                (bytes as f64 * 8.0 / (ticks as f64 / t.info.timescale.max(1) as f64)) as u64;
        }
        self.slide(track, before_first_listed);
    }

    /// Drop the oldest complete segments until `extra` more bytes fit under
    /// the cap; false when they do not fit even with none left.
    fn make_room(&mut self, extra: usize) -> bool {
        loop {
            if self.bytes().saturating_add(extra) <= self.config.max_bytes {
                return true;
            }
            if !self.drop_oldest() {
                return false;
            }
        }
    }

    /// Drop the oldest complete segment of every track that has it (the
    /// smallest msn among the tracks' oldest complete segments); false when
    /// no track has a complete segment.
    fn drop_oldest(&mut self) -> bool {
        let oldest = self
            .tracks
            .iter()
            .filter_map(|t| t.segments.front().filter(|s| s.complete).map(|s| s.msn))
            .min();
        let Some(msn) = oldest else {
            return false;
        };
        let window = self.config.window_segments;
        for i in 0..self.tracks.len() {
            let t = &mut self.tracks[i];
            if !t
                .segments
                .front()
                .is_some_and(|s| s.complete && s.msn <= msn)
            {
                continue;
            }
            let before_first_listed = t.window(window).next().map(|s| s.msn);
            t.segments.pop_front();
            let after_first_listed = t.window(window).next().map(|s| s.msn);
            if i == 0 {
                self.discontinuity_sequence +=
                    discontinuities_between(t, before_first_listed, after_first_listed);
            }
            forget_unused_inits(t);
        }
        self.cap.segments_dropped += 1;
        true
    }

    /// Close every track's open segment before its end (the cap is reached
    /// with nothing older left to drop); parts for them are dropped until each
    /// track's next segment opens.
    fn cut_open_segments(&mut self) {
        let mut cut = false;
        for i in 0..self.tracks.len() {
            if self.tracks[i].segments.back().is_some_and(|s| !s.complete) {
                self.close_segment(i);
                self.tracks[i].cut_by_cap = true;
                cut = true;
            }
        }
        if cut {
            self.cap.segments_cut += 1;
        }
    }

    /// Drop segments beyond the window and retention, and init segments no longer
    /// referred to. Advances the discontinuity sequence when a discontinuity leaves
    /// the window of the first (reference) track.
    fn slide(&mut self, track: usize, before_first_listed: Option<u64>) {
        let keep = self.config.window_segments + RETAINED_BEYOND_WINDOW;
        let window = self.config.window_segments;
        let Some(t) = self.tracks.get_mut(track) else {
            return;
        };
        while t.segments.iter().filter(|s| s.complete).count() > keep {
            t.segments.pop_front();
        }
        let after_first_listed = t.window(window).next().map(|s| s.msn);
        // Count discontinuities that left the playlist window, on the reference
        // track only (track 0) so all playlists share the sequence.
        if track == 0 {
            self.discontinuity_sequence +=
                discontinuities_between(t, before_first_listed, after_first_listed);
        }
        forget_unused_inits(&mut self.tracks[track]);
    }
}

/// Discontinuities that left the playlist when its first listed segment went
/// from `before` to `after`: the flagged segments with msn in `(before, after]`
/// (the first listed segment's own discontinuity is counted in the sequence,
/// not tagged).
fn discontinuities_between(t: &Track, before: Option<u64>, after: Option<u64>) -> u64 {
    match (before, after) {
        (Some(a), Some(b)) => t
            .segments
            .iter()
            .filter(|s| s.msn > a && s.msn <= b && s.discontinuity)
            .count() as u64,
        _ => 0,
    }
}

/// Drop the init segments no held segment refers to (the newest stays: the
/// next segment uses it).
fn forget_unused_inits(t: &mut Track) {
    let used: Vec<u32> = t.segments.iter().map(|s| s.init_id).collect();
    let newest = t.inits.iter().map(|(id, _)| *id).max();
    t.inits
        .retain(|(id, _)| used.contains(id) || Some(*id) == newest);
}

/// One channel's store: state plus change notification.
#[derive(Debug)]
pub struct ChannelStore {
    /// Public channel name (appears in URLs).
    pub name: String,
    state: RwLock<ChannelState>,
    changed: watch::Sender<u64>,
}

impl ChannelStore {
    pub fn new(name: impl Into<String>, config: StoreConfig) -> Arc<Self> {
        let (changed, _) = watch::channel(0);
        Arc::new(ChannelStore {
            name: name.into(),
            state: RwLock::new(ChannelState::new(config, SystemTime::now())),
            changed,
        })
    }

    /// Read the state. Hold the guard only while rendering or copying out.
    pub fn read(&self) -> RwLockReadGuard<'_, ChannelState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Change the state and wake everyone waiting on it. When the change
    /// made the byte cap act, one log line says so, naming the channel, at
    /// the 1st, 2nd, 4th, 8th... segment dropped or cut (a publisher over the
    /// cap would otherwise log every segment).
    pub fn write<R>(&self, f: impl FnOnce(&mut ChannelState) -> R) -> R {
        let r;
        let gen;
        let capped;
        {
            let mut g: RwLockWriteGuard<'_, ChannelState> =
                self.state.write().unwrap_or_else(|e| e.into_inner());
            let before = g.cap;
            r = f(&mut g);
            g.generation += 1;
            gen = g.generation;
            capped = g
                .cap
                .worth_logging(&before)
                .then(|| (g.cap, g.bytes(), g.config.max_bytes));
        }
        self.changed.send_replace(gen);
        if let Some((cap, held, limit)) = capped {
            warn!(
                channel = %self.name,
                limit_mib = limit / MIB,
                held_mib = held / MIB,
                segments_dropped = cap.segments_dropped,
                segments_cut = cap.segments_cut,
                parts_dropped = cap.parts_dropped,
                "channel memory cap reached: oldest segments dropped, or open segments cut and parts dropped until the next keyframe (publisher bitrate or keyframe interval too large for max_channel_mib)"
            );
        }
        r
    }

    /// A receiver that sees every later change; `changed().await` parks cheaply.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// All channels by public name.
#[derive(Debug, Default)]
pub struct Registry {
    channels: RwLock<HashMap<String, Arc<ChannelStore>>>,
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Registry::default())
    }

    pub fn get(&self, name: &str) -> Option<Arc<ChannelStore>> {
        self.channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The channel's store, created on first use.
    pub fn get_or_create(&self, name: &str, config: &StoreConfig) -> Arc<ChannelStore> {
        if let Some(c) = self.get(name) {
            return c;
        }
        let mut map = self.channels.write().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_string())
            .or_insert_with(|| ChannelStore::new(name, config.clone()))
            .clone()
    }

    /// Forget a channel (the origin answers 404 for it from now on).
    pub fn remove(&self, name: &str) -> Option<Arc<ChannelStore>> {
        self.channels
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packaging::hls::tests::Fx;
    use crate::packaging::hls::{media_playlist, Skip};

    fn capped(max_bytes: usize) -> Fx {
        Fx::with(StoreConfig {
            max_bytes,
            ..StoreConfig::default()
        })
    }

    fn msns(t: &Track) -> Vec<u64> {
        t.segments.iter().map(|s| s.msn).collect()
    }

    #[test]
    fn a_segment_is_found_by_its_number_across_a_hole() {
        let mut fx = Fx::new(10);
        for _ in 0..5 {
            fx.segment(2);
        }
        // a rung that missed the cut of segment 2: its track has no seg-2
        let t = &mut fx.st.tracks[0];
        t.segments.retain(|s| s.msn != 2);
        assert_eq!(msns(t), [0, 1, 3, 4]);
        for msn in [0, 1, 3, 4] {
            assert_eq!(t.segment(msn).map(|s| s.msn), Some(msn));
        }
        for msn in [2, 5, u64::MAX] {
            assert!(t.segment(msn).is_none(), "{msn}");
        }
    }

    #[test]
    fn the_cap_drops_the_oldest_segments_of_every_track_first() {
        // a segment is 4 parts of 1000 bytes on each of two tracks: 8000 bytes
        let mut fx = capped(30_000);
        fx.segment(4);
        fx.discontinuity(4);
        fx.segment(4);
        assert_eq!(fx.st.cap, CapStats::default());
        assert_eq!(msns(&fx.st.tracks[0]), [0, 1, 2]);

        let mut sequence = Vec::new();
        for _ in 0..6 {
            fx.segment(4);
            assert!(fx.st.bytes() <= 30_000, "{} held", fx.st.bytes());
            let p = media_playlist(&fx.st, 0, Skip::No);
            sequence.push((
                fx.st.tracks[0].segments[0].msn,
                fx.st.discontinuity_sequence,
                p.contains("#EXT-X-DISCONTINUITY\n"),
            ));
        }
        // at most three 8000-byte segments fit under 30,000: each new one
        // pushes out the oldest, on both tracks at once
        assert_eq!(msns(&fx.st.tracks[0]), [6, 7, 8]);
        assert_eq!(msns(&fx.st.tracks[1]), [6, 7, 8]);
        assert_eq!(fx.st.cap.segments_dropped, 6);
        assert_eq!(fx.st.cap.segments_cut, 0);
        assert_eq!(fx.st.cap.parts_dropped, 0);
        // seg-1 (the discontinuity) became first listed when seg-0 went: it
        // is counted in the sequence from then on and no longer tagged
        assert_eq!(sequence[0], (1, 1, false));
        assert!(sequence
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(fx.st.discontinuity_sequence, 1);
        // init 0 went with the last segment that used it
        assert_eq!(
            fx.st.tracks[0]
                .inits
                .iter()
                .map(|(id, _)| *id)
                .collect::<Vec<_>>(),
            [1]
        );
    }

    #[test]
    fn a_segment_that_never_ends_is_cut_at_the_cap_until_the_next_one_opens() {
        let mut fx = capped(10_000);
        fx.open(false);
        // parts of 1000 bytes on two tracks: the fifth pair does not fit
        for _ in 0..4 {
            fx.part();
        }
        assert_eq!(fx.st.cap.segments_cut, 0);
        fx.part();
        assert_eq!(fx.st.cap.segments_cut, 1);
        assert!(fx.st.bytes() <= 10_000, "{} held", fx.st.bytes());
        for t in &fx.st.tracks {
            let last = t.segments.back().unwrap();
            assert!(last.complete, "cut segments are complete");
            assert!(t.cut_by_cap);
        }
        // what follows for the cut segment is dropped and counted
        let dropped = fx.st.cap.parts_dropped;
        for _ in 0..10 {
            assert_eq!(
                fx.st.add_part(0, 45_000, false, Bytes::from(vec![0; 1000])),
                None
            );
        }
        assert_eq!(fx.st.cap.parts_dropped, dropped + 10);
        assert!(fx.st.bytes() <= 10_000);
        // the playlist lists the cut segment, complete
        let p = media_playlist(&fx.st, 0, Skip::No);
        assert!(p.contains("seg-0.m4s"), "{p}");

        // the next segment (the next IDR) takes parts again: the cut one
        // goes to make room
        fx.open(false);
        fx.part();
        fx.part();
        let t = &fx.st.tracks[0];
        assert!(!t.cut_by_cap);
        assert_eq!(t.segments.back().unwrap().parts.len(), 2);
        fx.part();
        fx.part();
        assert_eq!(msns(&fx.st.tracks[0]), [1]);
        assert_eq!(fx.st.cap.segments_cut, 1);
        assert_eq!(fx.st.cap.segments_dropped, 1);
        assert!(fx.st.bytes() <= 10_000);
    }

    #[test]
    fn a_part_over_the_cap_still_opens_its_segment_then_the_segment_is_cut() {
        let mut fx = capped(1000);
        fx.open(false);
        let seq = fx.st.add_part(0, 90_000, true, Bytes::from(vec![0; 5000]));
        assert!(seq.is_some(), "the first part of a segment is taken");
        let t = &fx.st.tracks[0];
        let seg = t.segments.back().unwrap();
        assert_eq!((seg.parts.len(), seg.complete), (1, true));
        assert_eq!(fx.st.cap.segments_cut, 1);
        assert_eq!(
            fx.st.add_part(0, 90_000, false, Bytes::from(vec![0; 10])),
            None
        );
        // the next segment's first part pushes the old one out
        fx.open(false);
        assert!(fx
            .st
            .add_part(0, 90_000, true, Bytes::from(vec![0; 10]))
            .is_some());
        assert_eq!(msns(&fx.st.tracks[0]), [1]);
        assert!(fx.st.bytes() <= 1000);
    }

    #[test]
    fn under_the_cap_nothing_changes() {
        let mut fx = Fx::new(3);
        for _ in 0..20 {
            fx.segment(4);
        }
        assert_eq!(fx.st.cap, CapStats::default());
        // window 3 + 4 retained
        assert_eq!(fx.st.tracks[0].segments.len(), 3 + RETAINED_BEYOND_WINDOW);
    }
}
