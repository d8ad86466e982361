//! One channel of a `ladder bench` trial, built as a publish session builds
//! one (`ingest::publish`), with no socket: a segment store and a packager
//! with the ladder's renditions, a packager session, the transcoding pipeline
//! (`pipeline::graph`) on the placement's decode backend with a rung sink into
//! the packager (as `app`'s `RungWriter`), and a feeder thread in place of
//! the RTMP connection.
//!
//! # The feeder
//!
//! One thread per channel hands the source's FLV tag bodies to a
//! [`Demuxer`] at exactly real-time pace (each tag at the channel's start +
//! its timestamp, on the monotonic clock), then does what
//! `Publish::media` does with each event: the packager first (with the wall
//! clock), then the pipeline with the packager's decision (`force_idr` =
//! the frame starts a segment). The loop repeats with continuous timestamps.
//! How late each tag is handed over is recorded while the window is open.
//!
//! # Part availability
//!
//! Every thread that writes to the packager (the feeder for the source and
//! the audio, the rung threads through the sink) looks at the channel's store
//! right after its write, under a [`Tracker`]. The first look that finds a new
//! part stamps it with the wall clock: that is when the part became
//! available. A part's media started at its segment's program date time plus
//! the durations of the parts before it in the segment: the packager stamps a
//! segment with the wall clock at which its first source frame was fed, and
//! the feeder keeps media time and wall time in step, so that is when the
//! part's first sample was fed. Availability latency = available − started,
//! recorded for the parts whose media started inside the measuring window.

use super::source::{Source, TagKind};
use crate::media::flv::Demuxer;
use crate::media::{MediaEvent, RtmpTimestamp};
use crate::packaging::packager::{Packager, PackagerStats};
use crate::packaging::store::{ChannelStore, StoreConfig};
use crate::pipeline::admission::Grant;
use crate::pipeline::graph::{
    thread_name, ChannelPipeline, DecodeBackend, PipelineOptions, PipelineStats, RungPlan, RungSink,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// Most availability samples kept per track per window (a part every 0.1 s at
/// the smallest part target is 600 a minute); beyond it samples are counted
/// and not kept. Bounds the tracker's memory on a long `--duration`.
pub const MAX_SAMPLES_PER_TRACK: usize = 100_000;

/// Most feeder lateness samples kept per window (about a minute of a 60 fps
/// source with audio); beyond it they are counted and not kept.
pub const MAX_FEED_SAMPLES: usize = 100_000;

/// Most pipeline error messages kept per channel (for the report); the rest
/// are counted.
pub const MAX_ERRORS_KEPT: usize = 8;

/// Longest single sleep of the feeder, so that a stop is seen quickly.
const FEED_SLEEP_SLICE: Duration = Duration::from_millis(50);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The measuring window, on the wall clock (availability) and the monotonic
/// clock (feeder lateness).
#[derive(Clone, Copy, Debug, Default)]
struct Window {
    start: Option<(SystemTime, Instant)>,
    end: Option<(SystemTime, Instant)>,
}

impl Window {
    fn contains_wall(&self, t: SystemTime) -> bool {
        match (self.start, self.end) {
            (Some((s, _)), None) => t >= s,
            (Some((s, _)), Some((e, _))) => t >= s && t < e,
            _ => false,
        }
    }

    fn contains_instant(&self, t: Instant) -> bool {
        match (self.start, self.end) {
            (Some((_, s)), None) => t >= s,
            (Some((_, s)), Some((_, e))) => t >= s && t < e,
            _ => false,
        }
    }
}

/// What the tracker knows of one track.
#[derive(Debug, Default)]
struct Seen {
    /// The last segment looked at and how many of its parts were seen.
    msn: u64,
    parts: usize,
    started: bool,
}

#[derive(Debug, Default)]
struct TrackerState {
    /// The store generation last looked at.
    generation: u64,
    seen: BTreeMap<String, Seen>,
    window: Window,
    /// Per track: availability latencies (ms) of parts started in the window.
    latencies: BTreeMap<String, Vec<f64>>,
    /// Parts and bytes that started in the window (every track).
    parts: u64,
    bytes: u64,
    /// Samples not kept ([`MAX_SAMPLES_PER_TRACK`]).
    overflow: u64,
}

/// Stamps each new part of a channel's store with the time it was first seen.
#[derive(Debug)]
pub struct Tracker {
    store: Arc<ChannelStore>,
    state: Mutex<TrackerState>,
}

/// What a tracker measured over a window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Availability {
    /// Per track id: latencies in ms, in the order the parts appeared.
    pub latencies: BTreeMap<String, Vec<f64>>,
    /// Parts that started in the window, every track.
    pub parts: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Samples not kept ([`MAX_SAMPLES_PER_TRACK`]).
    pub overflow: u64,
}

impl Tracker {
    /// A tracker of `store`'s parts; nothing is recorded before [`BenchChannel::open_window`].
    pub fn new(store: Arc<ChannelStore>) -> Tracker {
        Tracker {
            store,
            state: Mutex::new(TrackerState::default()),
        }
    }

    /// Look for new parts (after a write to the store); stamp them `now`.
    pub fn scan(&self) {
        let mut st = lock(&self.state);
        let now = SystemTime::now();
        let s = self.store.read();
        if s.generation == st.generation {
            return;
        }
        st.generation = s.generation;
        let st = &mut *st;
        for track in &s.tracks {
            let timescale = u64::from(track.info.timescale.max(1));
            let seen = st.seen.entry(track.info.id.clone()).or_default();
            for seg in &track.segments {
                if seen.started && seg.msn < seen.msn {
                    continue;
                }
                let from = if seen.started && seg.msn == seen.msn {
                    seen.parts.min(seg.parts.len())
                } else {
                    0
                };
                let mut offset: u64 = seg.parts[..from].iter().map(|p| p.duration).sum();
                for part in &seg.parts[from..] {
                    let start = seg.program_date_time
                        + Duration::from_nanos(
                            (u128::from(offset) * 1_000_000_000 / u128::from(timescale)) as u64,
                        );
                    offset += part.duration;
                    if !st.window.contains_wall(start) {
                        continue;
                    }
                    let latency = match now.duration_since(start) {
                        Ok(d) => d.as_secs_f64() * 1000.0,
                        Err(e) => -e.duration().as_secs_f64() * 1000.0,
                    };
                    st.parts += 1;
                    st.bytes += part.data.len() as u64;
                    let samples = st.latencies.entry(track.info.id.clone()).or_default();
                    if samples.len() < MAX_SAMPLES_PER_TRACK {
                        samples.push(latency);
                    } else {
                        st.overflow += 1;
                    }
                }
                seen.started = true;
                seen.msn = seg.msn;
                seen.parts = seg.parts.len();
            }
        }
    }

    fn open(&self, wall: SystemTime, mono: Instant) {
        let mut st = lock(&self.state);
        st.window = Window {
            start: Some((wall, mono)),
            end: None,
        };
        st.latencies.clear();
        st.parts = 0;
        st.bytes = 0;
        st.overflow = 0;
    }

    fn close(&self, wall: SystemTime, mono: Instant) {
        lock(&self.state).window.end = Some((wall, mono));
    }

    /// What was measured for the parts that started in the window (parts
    /// that appear after the window closed are still counted when they
    /// started in it).
    pub fn availability(&self) -> Availability {
        let st = lock(&self.state);
        Availability {
            latencies: st.latencies.clone(),
            parts: st.parts,
            bytes: st.bytes,
            overflow: st.overflow,
        }
    }
}

/// The feeder's shared state: stop flag, window, lateness samples.
#[derive(Debug, Default)]
struct FeedState {
    stop: AtomicBool,
    inner: Mutex<FeedInner>,
}

#[derive(Debug, Default)]
struct FeedInner {
    window: Window,
    /// Lateness of tags due in the window, ms.
    lateness: Vec<f64>,
    overflow: u64,
    /// Frames the packager refused (counted, as publish logs them).
    packager_errors: u64,
    /// Demuxer errors (should not happen: the tags are ours).
    demux_errors: u64,
}

/// What the feeder measured over a window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Feed {
    /// How late each tag due in the window was handed over, ms.
    pub lateness_ms: Vec<f64>,
    /// Lateness samples not kept ([`MAX_FEED_SAMPLES`]).
    pub overflow: u64,
    /// Frames the packager refused.
    pub packager_errors: u64,
    /// Tags the demuxer refused (none expected: the tags are ours).
    pub demux_errors: u64,
}

/// Where the pipeline's output goes: the channel's packager, for one session
/// (what `app`'s `RungWriter` does), then a look for new parts.
struct Sink {
    packager: Arc<Mutex<Packager>>,
    session: u64,
    tracker: Arc<Tracker>,
    errors: Arc<Mutex<(Vec<String>, u64)>>,
}

impl RungSink for Sink {
    fn rung_config(&self, rung: &str, config: Arc<crate::media::VideoConfig>) {
        lock(&self.packager).rung_config(self.session, rung, config);
    }

    fn rung_frame(&self, rung: &str, frame: crate::media::VideoFrame) {
        lock(&self.packager).push_rung(self.session, rung, frame);
        self.tracker.scan();
    }

    fn pipeline_error(&self, message: String) {
        tracing::warn!("bench: transcoding: {message}");
        let mut e = lock(&self.errors);
        if e.0.len() < MAX_ERRORS_KEPT {
            e.0.push(message);
        } else {
            e.1 += 1;
        }
    }
}

/// How to build one channel.
pub struct ChannelSetup {
    /// `b0`, `b1`, ...: short, so that thread names keep the rung's name.
    pub name: String,
    /// The loop to feed (shared by every channel).
    pub source: Arc<Source>,
    /// Packaging targets, from the configuration's `[packaging]`.
    pub store: StoreConfig,
    /// The passthrough rendition's name, if the ladder has one.
    pub passthrough: Option<String>,
    /// The encoded rungs.
    pub rungs: Vec<RungPlan>,
    /// Where decode (and scaling) runs.
    pub decode: DecodeBackend,
    /// Admission's grant, held until the channel stops (`None`: CPU, or
    /// placed beyond what admission would take).
    pub grant: Option<Grant>,
    /// When the feeder hands over the first tag.
    pub start_at: Instant,
}

/// A snapshot of a channel's counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    /// The pipeline's counters (`None`: no encoded rung).
    pub pipeline: Option<PipelineStats>,
    /// The packager's counters.
    pub packager: PackagerStats,
}

/// A running bench channel.
pub struct BenchChannel {
    name: String,
    rungs: Vec<String>,
    packager: Arc<Mutex<Packager>>,
    session: u64,
    pipeline: Option<Arc<ChannelPipeline>>,
    tracker: Arc<Tracker>,
    feed: Arc<FeedState>,
    feeder: Option<JoinHandle<()>>,
    errors: Arc<Mutex<(Vec<String>, u64)>>,
    _grant: Option<Grant>,
}

impl std::fmt::Debug for BenchChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchChannel")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl BenchChannel {
    /// Build the channel and start its pipeline and feeder. `Err`: the feeder
    /// thread could not be started.
    pub fn start(setup: ChannelSetup) -> std::io::Result<BenchChannel> {
        let ChannelSetup {
            name,
            source,
            store: store_config,
            passthrough,
            rungs,
            decode,
            grant,
            start_at,
        } = setup;
        let store = ChannelStore::new(name.clone(), store_config);
        let now = SystemTime::now();
        let mut packager = Packager::new(
            store.clone(),
            passthrough.as_deref().unwrap_or("source"),
            now,
        );
        let bitrates: Vec<(String, u32)> = rungs
            .iter()
            .map(|r| (r.name.clone(), r.bitrate_kbps))
            .collect();
        packager.set_ladder(passthrough.as_deref(), &bitrates);
        let start = packager.start_session(now);
        let session = packager.session();
        let packager = Arc::new(Mutex::new(packager));
        let tracker = Arc::new(Tracker::new(store));
        let errors = Arc::new(Mutex::new((Vec::new(), 0)));
        let rung_names = rungs.iter().map(|r| r.name.clone()).collect();
        let pipeline = (!rungs.is_empty()).then(|| {
            let sink = Arc::new(Sink {
                packager: packager.clone(),
                session,
                tracker: tracker.clone(),
                errors: errors.clone(),
            });
            let options = PipelineOptions {
                decode,
                ..PipelineOptions::default()
            };
            Arc::new(ChannelPipeline::start_with(&name, rungs, sink, options))
        });
        let feed = Arc::new(FeedState::default());
        let feeder = {
            let feeder = Feeder {
                source,
                packager: packager.clone(),
                pipeline: pipeline.clone(),
                tracker: tracker.clone(),
                feed: feed.clone(),
                demuxer: Demuxer::new(start),
                start_at,
            };
            std::thread::Builder::new()
                .name(thread_name(&name, "feed"))
                .spawn(move || feeder.run())?
        };
        Ok(BenchChannel {
            name,
            rungs: rung_names,
            packager,
            session,
            pipeline,
            tracker,
            feed,
            feeder: Some(feeder),
            errors,
            _grant: grant,
        })
    }

    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The encoded rungs' names, in ladder order.
    pub fn rungs(&self) -> &[String] {
        &self.rungs
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        Counters {
            pipeline: self.pipeline.as_ref().map(|p| p.stats()),
            packager: lock(&self.packager).stats().clone(),
        }
    }

    /// Open the measuring window now.
    pub fn open_window(&self, wall: SystemTime, mono: Instant) {
        self.tracker.open(wall, mono);
        let mut f = lock(&self.feed.inner);
        f.window = Window {
            start: Some((wall, mono)),
            end: None,
        };
        f.lateness.clear();
        f.overflow = 0;
        f.packager_errors = 0;
        f.demux_errors = 0;
    }

    /// Close the measuring window now (parts that started in it are still
    /// stamped when they appear later).
    pub fn close_window(&self, wall: SystemTime, mono: Instant) {
        self.tracker.close(wall, mono);
        lock(&self.feed.inner).window.end = Some((wall, mono));
    }

    /// Part availability over the window.
    pub fn availability(&self) -> Availability {
        self.tracker.availability()
    }

    /// The feeder's lateness over the window.
    pub fn feed(&self) -> Feed {
        let f = lock(&self.feed.inner);
        Feed {
            lateness_ms: f.lateness.clone(),
            overflow: f.overflow,
            packager_errors: f.packager_errors,
            demux_errors: f.demux_errors,
        }
    }

    /// The pipeline's error messages (at most [`MAX_ERRORS_KEPT`]) and how
    /// many more there were.
    pub fn errors(&self) -> (Vec<String>, u64) {
        lock(&self.errors).clone()
    }

    /// Stop as a publish session ends: the feeder stops, the packager session
    /// closes, the pipeline drains and the rungs' segments close. Blocking
    /// (up to the pipeline's finish timeout).
    pub fn stop(mut self) {
        self.feed.stop.store(true, Ordering::SeqCst);
        if let Some(feeder) = self.feeder.take() {
            if feeder.join().is_err() {
                tracing::error!(channel = %self.name, "bench feeder panicked");
            }
        }
        lock(&self.packager).end_session();
        if let Some(pipeline) = self.pipeline.take() {
            match Arc::try_unwrap(pipeline) {
                Ok(p) => {
                    p.finish();
                }
                // the feeder is joined and the sink holds no pipeline: not
                // reached; dropping tells the stages to stop
                Err(p) => drop(p),
            }
            lock(&self.packager).end_rungs(self.session);
        }
    }
}

impl Drop for BenchChannel {
    /// Without [`BenchChannel::stop`] (a trial that failed to start every
    /// channel): the feeder is told to stop, and the pipeline stops when the
    /// last handle to it goes with the feeder; nothing waits.
    fn drop(&mut self) {
        self.feed.stop.store(true, Ordering::SeqCst);
    }
}

/// The feeder thread's state (see the module docs).
struct Feeder {
    source: Arc<Source>,
    packager: Arc<Mutex<Packager>>,
    pipeline: Option<Arc<ChannelPipeline>>,
    tracker: Arc<Tracker>,
    feed: Arc<FeedState>,
    demuxer: Demuxer,
    start_at: Instant,
}

impl Feeder {
    fn stopping(&self) -> bool {
        self.feed.stop.load(Ordering::SeqCst)
    }

    /// Sleep until `due`; false when told to stop first.
    fn wait_until(&self, due: Instant) -> bool {
        loop {
            if self.stopping() {
                return false;
            }
            let now = Instant::now();
            if now >= due {
                return true;
            }
            std::thread::sleep((due - now).min(FEED_SLEEP_SLICE));
        }
    }

    fn run(mut self) {
        if !self.wait_until(self.start_at) {
            return;
        }
        let source = self.source.clone();
        self.tag(TagKind::Video, 0, source.video_header.clone());
        if let Some(a) = &source.audio_header {
            self.tag(TagKind::Audio, 0, a.clone());
        }
        let loop_ms = u64::from(source.loop_ms.max(1));
        for round in 0u64.. {
            for t in &source.tags {
                let ts = round * loop_ms + u64::from(t.ts_ms);
                let due = self.start_at + Duration::from_millis(ts);
                if !self.wait_until(due) {
                    return;
                }
                let now = Instant::now();
                {
                    let mut f = lock(&self.feed.inner);
                    if f.window.contains_instant(due) {
                        let late = (now - due).as_secs_f64() * 1000.0;
                        if f.lateness.len() < MAX_FEED_SAMPLES {
                            f.lateness.push(late);
                        } else {
                            f.overflow += 1;
                        }
                    }
                }
                // RTMP timestamps are 32-bit and wrap (after 49 days)
                self.tag(t.kind, ts as u32, t.body.clone());
            }
        }
    }

    /// One tag through the demuxer, the packager and the pipeline, as
    /// `Publish::media` does.
    fn tag(&mut self, kind: TagKind, ts: u32, body: bytes::Bytes) {
        let event = match kind {
            TagKind::Video => self.demuxer.video(RtmpTimestamp(ts), body),
            TagKind::Audio => self.demuxer.audio(RtmpTimestamp(ts), body),
        };
        let event = match event {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(_) => {
                lock(&self.feed.inner).demux_errors += 1;
                return;
            }
        };
        let forward = match (&self.pipeline, &event) {
            (Some(_), MediaEvent::VideoConfig(c)) => Some(MediaEvent::VideoConfig(c.clone())),
            (Some(_), MediaEvent::Video(f)) => Some(MediaEvent::Video(f.clone())),
            _ => None,
        };
        let pushed = {
            let mut p = lock(&self.packager);
            let pushed = p.push(event, SystemTime::now());
            p.take_notices();
            pushed
        };
        let pushed = match pushed {
            Ok(p) => p,
            Err(_) => {
                lock(&self.feed.inner).packager_errors += 1;
                Default::default()
            }
        };
        self.tracker.scan();
        if let Some(pipeline) = &self.pipeline {
            match forward {
                Some(MediaEvent::VideoConfig(c)) => pipeline.video_config(c),
                Some(MediaEvent::Video(f)) if pushed.accepted => {
                    pipeline.video_frame(f, pushed.segment_start)
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packaging::store::{TrackInfo, TrackKind};
    use bytes::Bytes;

    fn store() -> Arc<ChannelStore> {
        let store = ChannelStore::new("t", StoreConfig::default());
        store.write(|s| {
            s.upsert_track(TrackInfo {
                id: "720p".into(),
                kind: TrackKind::Video,
                timescale: 1000,
                codec: "avc1.64001f".into(),
                width: 1280,
                height: 720,
                frame_rate: Some(30.0),
                sample_rate: 0,
                channels: 0,
                nominal_bandwidth: 0,
            })
        });
        store
    }

    #[test]
    fn parts_are_stamped_once_from_their_segment_time_and_offset() {
        let store = store();
        let tracker = Tracker::new(store.clone());
        let t0 = SystemTime::now() - Duration::from_secs(10);
        tracker.open(t0, Instant::now());
        // segment 7 started 10 s ago; its parts of 500 ms appear now
        store.write(|s| {
            s.open_segment(0, 7, 1, false, 0, t0);
            s.add_part(0, 500, true, Bytes::from_static(b"aa"));
            s.add_part(0, 500, false, Bytes::from_static(b"bbb"));
        });
        tracker.scan();
        tracker.scan(); // nothing new: nothing stamped twice
        let a = tracker.availability();
        let l = &a.latencies["720p"];
        assert_eq!(l.len(), 2);
        assert_eq!((a.parts, a.bytes), (2, 5));
        // started at t0 and t0 + 500 ms, seen about 10 s after t0
        assert!(l[0] >= 10_000.0 && l[0] < 11_000.0, "{l:?}");
        assert!((l[0] - l[1] - 500.0).abs() < 50.0, "{l:?}");

        // a third part in the same segment, then a new segment
        store.write(|s| {
            s.add_part(0, 500, false, Bytes::from_static(b"c"));
            s.open_segment(0, 8, 1, false, 1500, t0 + Duration::from_millis(1500));
            s.add_part(0, 400, true, Bytes::from_static(b"d"));
        });
        tracker.scan();
        let l = tracker.availability().latencies["720p"].clone();
        assert_eq!(l.len(), 4);
        // the third part started at t0 + 1 s, the new segment at t0 + 1.5 s
        assert!((l[1] - l[2] - 500.0).abs() < 50.0, "{l:?}");
        assert!((l[2] - l[3] - 500.0).abs() < 50.0, "{l:?}");
    }

    #[test]
    fn only_parts_that_started_in_the_window_count() {
        let store = store();
        let tracker = Tracker::new(store.clone());
        let now = SystemTime::now();
        // before the window opens: seen, not counted
        store.write(|s| {
            s.open_segment(0, 1, 1, false, 0, now - Duration::from_secs(3));
            s.add_part(0, 500, true, Bytes::from_static(b"x"));
        });
        tracker.scan();
        tracker.open(now - Duration::from_secs(2), Instant::now());
        store.write(|s| {
            s.add_part(0, 500, false, Bytes::from_static(b"y")); // started 2.5 s ago
            s.open_segment(0, 2, 1, false, 1000, now - Duration::from_secs(1));
            s.add_part(0, 500, true, Bytes::from_static(b"z")); // started 1 s ago
        });
        tracker.close(now, Instant::now());
        store.write(|s| {
            s.open_segment(0, 3, 1, false, 2000, now + Duration::from_secs(1));
            s.add_part(0, 500, true, Bytes::from_static(b"w")); // after the window
        });
        tracker.scan();
        let a = tracker.availability();
        assert_eq!(a.latencies["720p"].len(), 1);
        assert_eq!(a.parts, 1);
    }
}
