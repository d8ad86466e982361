use super::*;
use crate::media::{AudioCodec, VideoCodec};
use crate::packaging::store::ChannelStore;
use bytes::Bytes;

const T0: u64 = 1_800_000_000;

fn wall(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0) + Duration::from_millis(ms as u64)
}

fn video_config(width: u32) -> Arc<VideoConfig> {
    Arc::new(VideoConfig {
        codec: VideoCodec::H264,
        record: Bytes::from_static(&[1, 0x64, 0, 0x1f, 0xff, 0xe0, 0]),
        width,
        height: 720,
        codec_string: "avc1.64001f".into(),
        nal_length_size: 4,
        frame_rate: Some(30.0),
        profile_idc: 100,
        level_idc: 31,
        interlaced: false,
        sample_aspect: (1, 1),
        chroma_format_idc: 1,
        bit_depth_luma: 8,
        bit_depth_chroma: 8,
    })
}

fn audio_config() -> Arc<AudioConfig> {
    Arc::new(AudioConfig {
        codec: AudioCodec::Aac,
        asc: Bytes::from_static(&[0x11, 0x90]),
        object_type: 2,
        sample_rate: 48_000,
        channels: 2,
        frame_samples: 1024,
        codec_string: "mp4a.40.2".into(),
    })
}

/// Feed `secs` of 30 fps video (IDR every `gop` frames, ms timestamps as RTMP
/// has them) and 48 kHz AAC, interleaved by time, starting at media `start_ms`.
fn feed(p: &mut Packager, start_ms: i64, secs: f64, gop: u32, with_bframes: bool) {
    feed_arriving(p, start_ms, secs, gop, with_bframes, |_| 0);
}

/// [`feed`], the `n`th event arriving `late(n)` ms after its timestamp.
fn feed_arriving(
    p: &mut Packager,
    start_ms: i64,
    secs: f64,
    gop: u32,
    with_bframes: bool,
    late: impl Fn(usize) -> i64,
) {
    let frames = (secs * 30.0) as i64;
    let audio_frames = (secs * 48_000.0 / 1024.0) as i64;
    let mut events: Vec<(i64, MediaEvent)> = Vec::new();
    for i in 0..frames {
        let dts = start_ms + i * 1000 / 30;
        let cts = if with_bframes && i % 3 != 0 { 67 } else { 0 };
        events.push((
            dts,
            MediaEvent::Video(VideoFrame {
                dts: Timestamp::from_millis(dts),
                pts: Timestamp::from_millis(dts + cts),
                keyframe: i % gop as i64 == 0,
                data: Bytes::from(vec![0u8; 1000]),
            }),
        ));
    }
    for i in 0..audio_frames {
        let dts = start_ms + i * 1024 * 1000 / 48_000;
        events.push((
            dts,
            MediaEvent::Audio(AudioFrame {
                dts: Timestamp::from_millis(dts),
                data: Bytes::from(vec![1u8; 300]),
            }),
        ));
    }
    events.sort_by_key(|(t, _)| *t);
    for (n, (t, e)) in events.into_iter().enumerate() {
        p.push(e, wall(t + late(n))).unwrap();
    }
}

fn setup() -> (Arc<ChannelStore>, Packager) {
    setup_ladder(Some("source"), &[])
}

fn setup_ladder(source: Option<&str>, rungs: &[(&str, u32)]) -> (Arc<ChannelStore>, Packager) {
    let store = ChannelStore::new("news", StoreConfig::default());
    let mut p = Packager::new(store.clone(), "source", wall(0));
    let rungs: Vec<(String, u32)> = rungs.iter().map(|(n, b)| (n.to_string(), *b)).collect();
    p.set_ladder(source, &rungs);
    let start = p.start_session(wall(0));
    assert_eq!(start, Timestamp::from_millis(0));
    p.push(MediaEvent::VideoConfig(video_config(1280)), wall(0))
        .unwrap();
    p.push(MediaEvent::AudioConfig(audio_config()), wall(0))
        .unwrap();
    (store, p)
}

#[test]
fn segments_start_at_idr_and_parts_respect_the_target() {
    let (store, mut p) = setup();
    feed(&mut p, 0, 10.0, 60, false);
    let s = store.read();
    let v = s.track("source").unwrap();
    let complete: Vec<_> = v.segments.iter().filter(|s| s.complete).collect();
    assert_eq!(complete.len(), 4, "10 s of 2 s GOPs: 4 complete, 1 open");
    for seg in &complete {
        // 2.000 s at 90 kHz, within the 1 ms a part written early may move an
        // IDR's decode time (its presentation time stays exact)
        assert!(
            seg.duration.abs_diff(180_000) <= 90,
            "{} ticks",
            seg.duration
        );
        assert_eq!(seg.parts.len(), 4);
        assert!(seg.parts[0].independent, "segment starts with an IDR");
        for part in &seg.parts {
            assert!(
                part.duration <= 45_000 + 180,
                "part {} ticks > target",
                part.duration
            );
        }
        assert!(!seg.discontinuity);
    }
    // tfdt continuity
    for w in v.segments.iter().collect::<Vec<_>>().windows(2) {
        assert_eq!(w[0].start + w[0].duration, w[1].start);
    }
    // parts numbered across segments
    let seqs: Vec<u64> = v
        .segments
        .iter()
        .flat_map(|s| s.parts.iter().map(|p| p.seq))
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    // audio has the same msns, each segment starting at or just after the video's
    let a = s.track("audio").unwrap();
    let vm: Vec<u64> = v.segments.iter().map(|s| s.msn).collect();
    let am: Vec<u64> = a.segments.iter().map(|s| s.msn).collect();
    assert_eq!(vm, am);
    for (vs, as_) in v.segments.iter().zip(a.segments.iter()) {
        let vt = vs.start as f64 / 90_000.0;
        let at = as_.start as f64 / 48_000.0;
        assert!((at - vt).abs() < 0.022, "audio segment {at} vs video {vt}");
        for part in &as_.parts {
            assert!(
                part.duration <= 24_000,
                "audio part {} > 0.5 s",
                part.duration
            );
        }
    }
    assert_eq!(s.target_duration, 2);
    assert!(v.init(v.segments[0].init_id).is_some());
    assert!(a.init(a.segments[0].init_id).is_some());
    assert!(vm[0] >= T0, "msn counts from the wall clock");
}

#[test]
fn a_longer_gop_makes_longer_segments_and_is_reported() {
    let (store, mut p) = setup();
    feed(&mut p, 0, 13.0, 120, false);
    let s = store.read();
    let v = s.track("source").unwrap();
    let complete: Vec<_> = v.segments.iter().filter(|s| s.complete).collect();
    assert_eq!(complete.len(), 3);
    assert!(complete.iter().all(|s| s.duration.abs_diff(360_000) <= 90));
    assert_eq!(s.target_duration, 4);
    drop(s);
    assert!(p.take_notices().iter().any(
        |n| matches!(n, PackagerNotice::LongGop { gop_secs, .. } if (*gop_secs - 4.0).abs() < 0.01)
    ));
}

#[test]
fn composition_offsets_survive() {
    let (store, mut p) = setup();
    feed(&mut p, 0, 3.0, 60, true);
    let s = store.read();
    let v = s.track("source").unwrap();
    assert!(v.segments[0].parts[0].data.len() >= 15 * 1000);
}

#[test]
fn video_before_the_first_idr_is_dropped() {
    let store = ChannelStore::new("news", StoreConfig::default());
    let mut p = Packager::new(store.clone(), "source", wall(0));
    p.start_session(wall(0));
    p.push(MediaEvent::VideoConfig(video_config(1280)), wall(0))
        .unwrap();
    for i in 0..5 {
        p.push(
            MediaEvent::Video(VideoFrame {
                dts: Timestamp::from_millis(i * 33),
                pts: Timestamp::from_millis(i * 33),
                keyframe: false,
                data: Bytes::from_static(b"x"),
            }),
            wall(i * 33),
        )
        .unwrap();
    }
    assert_eq!(p.stats().dropped_before_keyframe, 5);
    assert!(!store.read().has_media());
}

#[test]
fn reconnect_continues_with_a_discontinuity() {
    let (store, mut p) = setup();
    feed(&mut p, 0, 4.5, 60, false);
    p.end_session();
    let (last_msn, first_init, end) = {
        let s = store.read();
        assert!(!s.live);
        let v = s.track("source").unwrap();
        assert!(v.segments.iter().all(|s| s.complete));
        let last = v.segments.back().unwrap();
        (last.msn, v.segments[0].init_id, last.start + last.duration)
    };
    let start = p.start_session(wall(6000));
    assert!(
        start.as_millis() * 90 >= end as i64,
        "new session starts after the old end"
    );
    p.push(MediaEvent::VideoConfig(video_config(1280)), wall(6000))
        .unwrap();
    p.push(MediaEvent::AudioConfig(audio_config()), wall(6000))
        .unwrap();
    feed(&mut p, start.as_millis(), 4.5, 60, false);
    let s = store.read();
    for id in ["source", "audio"] {
        let t = s.track(id).unwrap();
        let next = t.segments.iter().find(|s| s.msn == last_msn + 1).unwrap();
        assert!(next.discontinuity, "{id}: discontinuity after reconnect");
        assert_ne!(next.init_id, first_init, "{id}: new init segment");
        assert!(t.init(next.init_id).is_some());
        let msns: Vec<u64> = t.segments.iter().map(|s| s.msn).collect();
        assert!(msns.windows(2).all(|w| w[1] == w[0] + 1), "{id}: {msns:?}");
        assert_eq!(t.segments.iter().filter(|s| s.discontinuity).count(), 1);
    }
}

/// A publisher killed just after a keyframe, before any audio frame of the
/// segment it began: that segment is dropped, and the next session's first
/// segment takes its number on every track, so video and audio list the
/// same sequence numbers.
#[test]
fn a_session_ending_just_after_a_keyframe_leaves_no_number_to_audio_alone() {
    let (store, mut p) = setup();
    // 2 s of both (one segment), then the IDR at 2000 ms and nothing after
    // it: the last audio frame is at 1984 ms
    let mut events: Vec<(i64, MediaEvent)> = (0..=60i64)
        .map(|i| {
            let dts = i * 1000 / 30;
            let frame = VideoFrame {
                dts: Timestamp::from_millis(dts),
                pts: Timestamp::from_millis(dts),
                keyframe: i % 30 == 0,
                data: Bytes::from(vec![0u8; 1000]),
            };
            (dts, MediaEvent::Video(frame))
        })
        .collect();
    events.extend((0..94i64).map(|i| {
        let dts = i * 1024 * 1000 / 48_000;
        let frame = AudioFrame {
            dts: Timestamp::from_millis(dts),
            data: Bytes::from(vec![1u8; 300]),
        };
        (dts, MediaEvent::Audio(frame))
    }));
    events.sort_by_key(|(t, _)| *t);
    for (t, e) in events {
        p.push(e, wall(t)).unwrap();
    }
    p.end_session();
    assert_eq!(p.stats().dropped_video_without_audio, 1);
    let start = p.start_session(wall(3000));
    p.push(MediaEvent::VideoConfig(video_config(1280)), wall(3000))
        .unwrap();
    p.push(MediaEvent::AudioConfig(audio_config()), wall(3000))
        .unwrap();
    feed(&mut p, start.as_millis(), 4.5, 60, false);
    p.end_session();
    let s = store.read();
    let msns = |id: &str| -> Vec<u64> {
        s.track(id)
            .unwrap()
            .segments
            .iter()
            .map(|x| x.msn)
            .collect()
    };
    let (video, audio) = (msns("source"), msns("audio"));
    assert!(video.windows(2).all(|w| w[1] == w[0] + 1), "{video:?}");
    assert_eq!(video, audio);
    let v = s.track("source").unwrap();
    assert!(
        v.segments[1].discontinuity,
        "the next session follows at once"
    );
}

#[test]
fn a_new_resolution_starts_a_new_init_and_a_discontinuity() {
    let (store, mut p) = setup();
    feed(&mut p, 0, 3.0, 60, false);
    p.push(MediaEvent::VideoConfig(video_config(640)), wall(3000))
        .unwrap();
    feed(&mut p, 3000, 3.0, 60, false);
    let s = store.read();
    let v = s.track("source").unwrap();
    assert_eq!(v.info.width, 640);
    let disc: Vec<_> = v.segments.iter().filter(|s| s.discontinuity).collect();
    assert_eq!(disc.len(), 1);
    assert_ne!(disc[0].init_id, v.segments[0].init_id);
    assert!(disc[0].start >= 3000 * 90);
    let a = s.track("audio").unwrap();
    assert_eq!(a.segments.iter().filter(|s| s.discontinuity).count(), 1);
}

#[test]
fn audio_sent_before_the_first_keyframe_is_kept() {
    let (store, mut p) = setup();
    // ffmpeg sends a few AAC frames before the first (delayed) video frame
    for i in 0..3i64 {
        let dts = i * 21;
        p.push(
            MediaEvent::Audio(AudioFrame {
                dts: Timestamp::from_millis(dts),
                data: Bytes::from(vec![1u8; 300]),
            }),
            wall(dts),
        )
        .unwrap();
    }
    assert!(!store.read().has_media());
    p.push(
        MediaEvent::Video(VideoFrame {
            dts: Timestamp::from_millis(0),
            pts: Timestamp::from_millis(67),
            keyframe: true,
            data: Bytes::from(vec![0u8; 1000]),
        }),
        wall(70),
    )
    .unwrap();
    p.end_session();
    let s = store.read();
    let a = s.track("audio").unwrap();
    assert_eq!(a.segments[0].start, 0, "audio starts with the video");
    assert_eq!(a.segments[0].duration, 3 * 1024, "all three frames kept");
    assert_eq!(p.stats().dropped_audio_before_video, 0);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Whatever the frame rate, GOP and part target: after every frame the
        /// store lists no empty segment, playback never disappears once it
        /// started, parts stay within the target, every segment starts with an
        /// IDR, tfdt is continuous and sequence numbers are contiguous.
        #[test]
        fn invariants_hold_after_every_frame(
            fps in prop::sample::select(vec![24u32, 25, 30, 50, 60]),
            gop_frames in 10u32..150,
            part_ms in prop::sample::select(vec![200u32, 333, 500, 1000]),
            seconds in 3u32..9,
        ) {
            let config = StoreConfig { segment_target: 2.0, part_target: part_ms as f64 / 1000.0, window_segments: 6, ..StoreConfig::default() };
            let store = ChannelStore::new("p", config);
            let mut p = Packager::new(store.clone(), "source", wall(0));
            p.start_session(wall(0));
            p.push(MediaEvent::VideoConfig(video_config(1280)), wall(0)).unwrap();
            p.push(MediaEvent::AudioConfig(audio_config()), wall(0)).unwrap();
            let frames = (seconds * fps) as i64;
            let audio_frames = (seconds as i64 * 48_000) / 1024;
            let mut events: Vec<(i64, MediaEvent)> = Vec::new();
            for i in 0..frames {
                let dts = i * 1000 / fps as i64;
                events.push((dts, MediaEvent::Video(VideoFrame {
                    dts: Timestamp::from_millis(dts),
                    pts: Timestamp::from_millis(dts + 40),
                    keyframe: i % gop_frames as i64 == 0,
                    data: Bytes::from(vec![0u8; 100]),
                })));
            }
            for i in 0..audio_frames {
                let dts = i * 1024 * 1000 / 48_000;
                events.push((dts, MediaEvent::Audio(AudioFrame { dts: Timestamp::from_millis(dts), data: Bytes::from(vec![1u8; 10]) })));
            }
            events.sort_by_key(|(t, _)| *t);
            let mut started = false;
            for (t, e) in events {
                p.push(e, wall(t)).unwrap();
                let s = store.read();
                for tr in &s.tracks {
                    prop_assert!(tr.segments.iter().all(|seg| !seg.parts.is_empty()), "empty segment listed");
                }
                if started {
                    prop_assert!(s.has_media(), "playback disappeared at {t} ms");
                }
                started |= s.has_media();
            }
            p.end_session();
            let s = store.read();
            let part_ticks = |ts: u32| (part_ms as u64 * ts as u64).div_ceil(1000) + (2 * ts as u64).div_ceil(1000);
            for tr in &s.tracks {
                let ts = tr.info.timescale;
                let msns: Vec<u64> = tr.segments.iter().map(|x| x.msn).collect();
                prop_assert!(msns.windows(2).all(|w| w[1] == w[0] + 1), "{}: {:?}", tr.info.id, msns);
                for w in tr.segments.iter().collect::<Vec<_>>().windows(2) {
                    prop_assert_eq!(w[0].start + w[0].duration, w[1].start, "{} tfdt gap", tr.info.id);
                }
                for seg in &tr.segments {
                    prop_assert!(seg.complete);
                    if tr.info.kind == TrackKind::Video {
                        prop_assert!(seg.parts[0].independent, "segment {} starts without IDR", seg.msn);
                    }
                    for part in &seg.parts {
                        // a single frame longer than the target is the only excuse
                        let one_frame = (ts as u64).div_ceil(fps as u64).max(1024);
                        prop_assert!(part.duration <= part_ticks(ts).max(one_frame), "{} part {} > target", tr.info.id, part.duration);
                    }
                }
            }
        }
    }
}

#[test]
fn numbers_never_repeat_across_a_restart() {
    // 0.5 s segments and 0.1 s parts: the fastest the config allows
    let config = StoreConfig {
        segment_target: 0.5,
        part_target: 0.1,
        window_segments: 100,
        ..StoreConfig::default()
    };
    let a = ChannelStore::new("r", config.clone());
    let mut p = Packager::new(a.clone(), "source", wall(0));
    p.start_session(wall(0));
    p.push(MediaEvent::VideoConfig(video_config(1280)), wall(0))
        .unwrap();
    p.push(MediaEvent::AudioConfig(audio_config()), wall(0))
        .unwrap();
    feed(&mut p, 0, 10.0, 15, false);
    p.end_session();
    // the process restarts the moment the old one stopped
    let b = ChannelStore::new("r", config);
    let mut q = Packager::new(b.clone(), "source", wall(10_000));
    q.start_session(wall(10_000));
    q.push(MediaEvent::VideoConfig(video_config(1280)), wall(10_000))
        .unwrap();
    q.push(MediaEvent::AudioConfig(audio_config()), wall(10_000))
        .unwrap();
    feed(&mut q, 0, 2.0, 15, false);
    let (a, b) = (a.read(), b.read());
    for id in ["source", "audio"] {
        let (ta, tb) = (a.track(id).unwrap(), b.track(id).unwrap());
        let last_a = ta.segments.back().unwrap();
        let first_b = tb.segments.front().unwrap();
        assert!(first_b.msn > last_a.msn, "{id}: msn {} reused", first_b.msn);
        assert!(
            first_b.parts[0].seq > last_a.parts.last().unwrap().seq,
            "{id}: part reused"
        );
        assert!(first_b.init_id > last_a.init_id, "{id}: init reused");
    }
}

#[test]
fn a_new_session_re_anchors_to_the_wall_clock_after_a_slow_one() {
    let (store, mut p) = setup();
    // 3 s of media that took 12 s of wall clock to arrive (a starved publisher)
    let mut events = Vec::new();
    for i in 0..90i64 {
        events.push((
            i * 33,
            MediaEvent::Video(VideoFrame {
                dts: Timestamp::from_millis(i * 33),
                pts: Timestamp::from_millis(i * 33),
                keyframe: i % 30 == 0,
                data: Bytes::from(vec![0u8; 100]),
            }),
        ));
    }
    for (t, e) in events {
        p.push(e, wall(t * 4)).unwrap();
    }
    p.end_session();
    let start = p.start_session(wall(12_500));
    assert_eq!(
        start.as_millis(),
        12_500,
        "media time follows the wall clock since availabilityStartTime"
    );
    let ast = store.read().availability_start;
    assert_eq!(ast, wall(0));
}

#[test]
fn a_full_part_is_written_when_its_last_frame_arrives() {
    let store = ChannelStore::new("e", StoreConfig::default());
    let mut p = Packager::new(store.clone(), "source", wall(0));
    p.start_session(wall(0));
    p.push(MediaEvent::VideoConfig(video_config(1280)), wall(0))
        .unwrap();
    // 30 fps with RTMP's millisecond timestamps: 0, 33, 67, 100, ... 467
    for i in 0..15i64 {
        let dts = i * 1000 / 30;
        p.push(
            MediaEvent::Video(VideoFrame {
                dts: Timestamp::from_millis(dts),
                pts: Timestamp::from_millis(dts),
                keyframe: i == 0,
                data: Bytes::from(vec![0u8; 10]),
            }),
            wall(dts),
        )
        .unwrap();
    }
    // frame 15 (at 500 ms) has not arrived, yet the 0.5 s part is servable
    {
        let s = store.read();
        let v = s.track("source").unwrap();
        assert_eq!(v.segments.len(), 1);
        assert_eq!(
            v.segments[0].parts.len(),
            1,
            "part written with its last frame"
        );
        let d = v.segments[0].parts[0].duration;
        assert!(d.abs_diff(45_000) <= 90 && d <= 45_000 + 180, "{d}");
    }
    // the next frame continues the timeline exactly
    p.push(
        MediaEvent::Video(VideoFrame {
            dts: Timestamp::from_millis(500),
            pts: Timestamp::from_millis(500),
            keyframe: false,
            data: Bytes::from(vec![0u8; 10]),
        }),
        wall(500),
    )
    .unwrap();
    p.end_session();
    let s = store.read();
    let seg = &s.track("source").unwrap().segments[0];
    assert_eq!(seg.parts.len(), 2);
    assert_eq!(
        seg.duration,
        seg.parts.iter().map(|p| p.duration).sum::<u64>()
    );
}

// ---- encoded rungs following the leader's cuts ----

/// A stand-in for the transcoding pipeline: every accepted source picture
/// comes back for each rung `lag` pictures later, in presentation order, as
/// an IDR where the packager asked for one (or where the source had one).
struct Ladder {
    rungs: Vec<String>,
    lag: usize,
    /// (pts ms, force IDR) of pictures not yet "encoded".
    waiting: std::collections::BTreeMap<i64, bool>,
}

impl Ladder {
    fn new(rungs: &[&str], lag: usize) -> Self {
        Ladder {
            rungs: rungs.iter().map(|s| s.to_string()).collect(),
            lag,
            waiting: Default::default(),
        }
    }

    fn config(&self, p: &mut Packager, width: u32) {
        for r in &self.rungs {
            let mut c = (*video_config(width)).clone();
            c.codec_string = format!("avc1.4d40{:02x}", r.len());
            c.record = Bytes::from(vec![1, 0x4d, 0x40, 0x1e, 0xff, 0xe0, r.len() as u8]);
            p.rung_config(p.session(), r, Arc::new(c));
        }
    }

    /// The rungs as AV1 (a made-up av1C: the packager carries it verbatim).
    fn config_av1(&self, p: &mut Packager, width: u32) {
        for r in &self.rungs {
            let mut c = (*video_config(width)).clone();
            c.codec = crate::media::VideoCodec::Av1;
            c.codec_string = "av01.0.04M.08".to_owned();
            c.record = Bytes::from_static(&[0x81, 0x04, 0x0c, 0x00]);
            p.rung_config(p.session(), r, Arc::new(c));
        }
    }

    fn push(&mut self, p: &mut Packager, e: MediaEvent, t: i64) {
        let video = match &e {
            MediaEvent::Video(f) => Some((f.pts.as_millis(), f.keyframe)),
            _ => None,
        };
        let pushed = p.push(e, wall(t)).unwrap();
        if let Some((pts, key)) = video {
            if pushed.accepted {
                self.waiting.insert(pts, pushed.segment_start || key);
            }
        }
        while self.waiting.len() > self.lag {
            self.deliver_one(p);
        }
    }

    fn deliver_one(&mut self, p: &mut Packager) {
        let Some((pts, idr)) = self.waiting.pop_first() else {
            return;
        };
        for r in &self.rungs {
            p.push_rung(
                p.session(),
                r,
                VideoFrame {
                    dts: Timestamp::from_millis(pts),
                    pts: Timestamp::from_millis(pts),
                    keyframe: idr,
                    data: Bytes::from(vec![2u8; 400]),
                },
            );
        }
    }

    fn finish(&mut self, p: &mut Packager) {
        p.end_session();
        while !self.waiting.is_empty() {
            self.deliver_one(p);
        }
        p.end_rungs(p.session());
    }
}

/// Video frames of a 30 fps source with an IDR every `gop` frames; with
/// `bframes`, x264's closed-GOP `bframes=2` order (I P B B P B B ... P P),
/// decode times two frames behind so that every IDR has the same offset.
fn source_frames(secs: f64, gop: i64, bframes: bool) -> Vec<(i64, VideoFrame)> {
    let n = (secs * 30.0) as i64;
    let ms = |i: i64| i * 1000 / 30;
    // presentation index of each frame, in decode order
    let mut order = Vec::new();
    let mut g = 0;
    while g < n {
        let end = (g + gop).min(n);
        order.push(g);
        if bframes {
            let mut k = 1;
            while g + 3 * k < end {
                order.extend([g + 3 * k, g + 3 * k - 2, g + 3 * k - 1]);
                k += 1;
            }
            order.extend((g + 3 * (k - 1) + 1)..end);
        } else {
            order.extend((g + 1)..end);
        }
        g = end;
    }
    order
        .into_iter()
        .enumerate()
        .map(|(d, pi)| {
            let delay = if bframes { 67 } else { 0 };
            let (dts, pts) = (100 + ms(d as i64) - delay, 100 + ms(pi));
            (
                dts,
                VideoFrame {
                    dts: Timestamp::from_millis(dts),
                    pts: Timestamp::from_millis(pts),
                    keyframe: pi % gop == 0,
                    data: Bytes::from(vec![0u8; 1000]),
                },
            )
        })
        .collect()
}

fn run_ladder(p: &mut Packager, ladder: &mut Ladder, frames: Vec<(i64, VideoFrame)>) {
    let audio_frames = ((frames.len() as f64 / 30.0) * 48_000.0 / 1024.0) as i64;
    let mut events: Vec<(i64, MediaEvent)> = frames
        .into_iter()
        .map(|(t, f)| (t, MediaEvent::Video(f)))
        .collect();
    for i in 0..audio_frames {
        let dts = 100 + i * 1024 * 1000 / 48_000;
        events.push((
            dts,
            MediaEvent::Audio(AudioFrame {
                dts: Timestamp::from_millis(dts),
                data: Bytes::from(vec![1u8; 300]),
            }),
        ));
    }
    events.sort_by_key(|(t, _)| *t);
    for (t, e) in events {
        ladder.push(p, e, t);
    }
    ladder.finish(p);
}

/// (msn, init, discontinuity, start, duration, part durations, independent)
type SegmentShape = (u64, u32, bool, u64, u64, Vec<u64>, bool);

/// A rung against the source: the same segments (numbers, inits,
/// discontinuities, start times) and parts; part durations may differ by the
/// millisecond the source's RTMP timestamps round to (the source's parts are
/// cut on its own rounded decode times, the rungs' on presentation times).
fn assert_follows(rung: &[SegmentShape], source: &[SegmentShape]) {
    assert_eq!(rung.len(), source.len(), "segments");
    for (r, s) in rung.iter().zip(source) {
        assert_eq!(
            (r.0, r.1, r.2, r.3, r.6),
            (s.0, s.1, s.2, s.3, s.6),
            "segment {}",
            s.0
        );
        assert_eq!(r.5.len(), s.5.len(), "parts of segment {}", s.0);
        for (a, b) in r.5.iter().zip(&s.5) {
            assert!(
                a.abs_diff(*b) <= 90,
                "segment {}: parts {:?} vs {:?}",
                s.0,
                r.5,
                s.5
            );
        }
    }
}

fn shape(s: &crate::packaging::store::ChannelState, id: &str) -> Vec<SegmentShape> {
    s.track(id)
        .unwrap_or_else(|| panic!("track {id}"))
        .segments
        .iter()
        .map(|g| {
            (
                g.msn,
                g.init_id,
                g.discontinuity,
                g.start,
                g.duration,
                g.parts.iter().map(|p| p.duration).collect(),
                g.parts[0].independent,
            )
        })
        .collect()
}

#[test]
fn rungs_have_the_source_segments_and_parts_exactly() {
    let (store, mut p) = setup_ladder(Some("source"), &[("720p", 3000), ("360p", 700)]);
    let mut ladder = Ladder::new(&["720p", "360p"], 3);
    ladder.config(&mut p, 1280);
    run_ladder(&mut p, &mut ladder, source_frames(9.0, 60, false));
    let s = store.read();
    let ids: Vec<&str> = s.tracks.iter().map(|t| t.info.id.as_str()).collect();
    assert_eq!(ids, ["source", "720p", "360p", "audio"], "ladder order");
    let source = shape(&s, "source");
    assert_eq!(source.len(), 5, "9 s of 2 s GOPs");
    assert_follows(&shape(&s, "720p"), &source);
    // encoded rungs are identical to each other
    assert_eq!(shape(&s, "360p"), shape(&s, "720p"));
    assert!(s
        .tracks
        .iter()
        .all(|t| t.segments.iter().all(|g| g.complete)));
    assert_eq!(p.stats().rung_dropped, 0);
    assert_eq!(p.stats().rung_frames, 2 * 270);
}

#[test]
fn rung_segments_start_where_a_b_frame_source_presents_its_idr() {
    let (store, mut p) = setup_ladder(Some("source"), &[("480p", 1200)]);
    let mut ladder = Ladder::new(&["480p"], 4);
    ladder.config(&mut p, 1280);
    run_ladder(&mut p, &mut ladder, source_frames(9.0, 60, true));
    let s = store.read();
    let source = shape(&s, "source");
    let rung = shape(&s, "480p");
    assert_eq!(source.len(), 5);
    assert_eq!(rung.len(), source.len());
    for (a, b) in source.iter().zip(&rung) {
        assert_eq!((a.0, a.1, a.2), (b.0, b.1, b.2), "msn, init, discontinuity");
        // the rung's samples are offset like the source's IDR: same tfdt
        assert_eq!(a.3, b.3, "segment {} starts at the same decode time", a.0);
        assert!(b.6, "rung segment {} starts with an IDR", b.0);
    }
    // complete segments last as long on both (2 s of pictures each)
    for (a, b) in source.iter().zip(&rung).take(4) {
        assert_eq!(a.4, b.4, "segment {} duration", a.0);
    }
}

#[test]
fn av1_rungs_of_a_b_frame_source_present_at_their_decode_time() {
    let (store, mut p) = setup_ladder(Some("source"), &[("av1", 700)]);
    let mut ladder = Ladder::new(&["av1"], 4);
    ladder.config_av1(&mut p, 640);
    run_ladder(&mut p, &mut ladder, source_frames(9.0, 60, true));
    let s = store.read();
    let source = shape(&s, "source");
    let rung = shape(&s, "av1");
    assert_eq!(source.len(), 5);
    assert_eq!(rung.len(), source.len());
    // the source's IDRs decode 67 ms before they are presented; the AV1
    // rung's samples carry no composition offset, so its segments start
    // (tfdt) at the source IDRs' presentation times: 100 ms + 2 s per GOP
    for (k, (a, b)) in source.iter().zip(&rung).enumerate() {
        assert_eq!((a.0, a.1, a.2), (b.0, b.1, b.2), "msn, init, discontinuity");
        assert_eq!(b.3, (100 + 2000 * k as u64) * 90, "segment {} start", a.0);
        assert!(b.3 > a.3, "presented after the source decodes its IDR");
        assert!(b.6, "rung segment {} starts with a key frame", b.0);
    }
    for (a, b) in source.iter().zip(&rung).take(4) {
        assert_eq!(b.4, 2000 * 90, "segment {} duration", a.0);
        assert_eq!(a.5.len(), b.5.len(), "segment {} parts", a.0);
    }
    let track = s.track("av1").unwrap();
    assert_eq!(track.info.codec, "av01.0.04M.08");
    // and in the bytes: every trun sample's composition offset is zero
    let mut samples = 0;
    for g in &track.segments {
        for part in &g.parts {
            for (_, cts) in trun_samples(&part.data) {
                assert_eq!(cts, 0, "segment {}", g.msn);
                samples += 1;
            }
        }
    }
    assert_eq!(samples, 270);
}

#[test]
fn without_a_source_rung_the_rungs_cut_at_a_fixed_cadence() {
    let (store, mut p) = setup_ladder(None, &[("720p", 3000), ("360p", 700)]);
    let mut ladder = Ladder::new(&["720p", "360p"], 2);
    ladder.config(&mut p, 1280);
    // a 4 s source GOP; segments stay at the 2 s target
    run_ladder(&mut p, &mut ladder, source_frames(10.0, 120, false));
    let s = store.read();
    let ids: Vec<&str> = s.tracks.iter().map(|t| t.info.id.as_str()).collect();
    assert_eq!(
        ids,
        ["720p", "360p", "audio"],
        "no source track is published"
    );
    let a = shape(&s, "720p");
    assert_eq!(a.len(), 6, "cuts at 0, 2, 4, 6, 8 and 10 s");
    for g in &a[..5] {
        assert!(
            g.4.abs_diff(180_000) <= 3_060,
            "2 s segments, within a frame: {}",
            g.4
        );
        assert!(g.6, "each starts with a (forced) IDR");
    }
    assert_eq!(shape(&s, "360p"), a);
    // audio keeps the same numbers
    let audio: Vec<u64> = s
        .track("audio")
        .unwrap()
        .segments
        .iter()
        .map(|g| g.msn)
        .collect();
    assert_eq!(audio, a.iter().map(|g| g.0).collect::<Vec<_>>());
}

#[test]
fn a_reconnect_renews_rung_inits_and_drops_late_output_of_the_old_session() {
    let (store, mut p) = setup_ladder(Some("source"), &[("360p", 700)]);
    let mut ladder = Ladder::new(&["360p"], 2);
    ladder.config(&mut p, 1280);
    let old = p.session();
    run_ladder(&mut p, &mut ladder, source_frames(4.0, 60, false));
    // the second session starts; output of the first arriving late is dropped
    let start = p.start_session(wall(6000)).as_millis();
    p.push_rung(
        old,
        "360p",
        VideoFrame {
            dts: Timestamp::from_millis(4000),
            pts: Timestamp::from_millis(4000),
            keyframe: true,
            data: Bytes::from_static(&[9]),
        },
    );
    assert_eq!(p.stats().rung_dropped, 1);
    p.push(MediaEvent::VideoConfig(video_config(1280)), wall(6000))
        .unwrap();
    p.push(MediaEvent::AudioConfig(audio_config()), wall(6000))
        .unwrap();
    ladder.config(&mut p, 1280);
    let frames = source_frames(4.0, 60, false)
        .into_iter()
        .map(|(t, mut f)| {
            f.dts = Timestamp::from_millis(f.dts.as_millis() + start);
            f.pts = Timestamp::from_millis(f.pts.as_millis() + start);
            (t + start, f)
        })
        .collect();
    run_ladder(&mut p, &mut ladder, frames);
    let s = store.read();
    let source = shape(&s, "source");
    let rung = shape(&s, "360p");
    assert_follows(&rung, &source);
    let disc: Vec<&SegmentShape> = rung.iter().filter(|g| g.2).collect();
    assert_eq!(disc.len(), 1, "one discontinuity, at the reconnect");
    let inits: std::collections::BTreeSet<u32> = rung.iter().map(|g| g.1).collect();
    assert_eq!(inits.len(), 2);
    for id in inits {
        assert!(s.track("360p").unwrap().init(id).is_some());
    }
}

/// (index, composition offset) of every sample in the `trun`s of a CMAF
/// chunk's `moof`s (0 where the trun carries no offsets).
fn trun_samples(data: &[u8]) -> Vec<(usize, i32)> {
    fn boxes(d: &[u8]) -> Vec<([u8; 4], &[u8])> {
        let mut out = Vec::new();
        let mut i = 0;
        while i + 8 <= d.len() {
            let size = u32::from_be_bytes(d[i..i + 4].try_into().unwrap()) as usize;
            assert!(size >= 8 && i + size <= d.len(), "box size {size} at {i}");
            out.push((d[i + 4..i + 8].try_into().unwrap(), &d[i + 8..i + size]));
            i += size;
        }
        out
    }
    let be = |d: &[u8], i: usize| u32::from_be_bytes(d[i..i + 4].try_into().unwrap());
    let mut out = Vec::new();
    for (_, moof) in boxes(data).into_iter().filter(|b| &b.0 == b"moof") {
        for (_, traf) in boxes(moof).into_iter().filter(|b| &b.0 == b"traf") {
            for (_, trun) in boxes(traf).into_iter().filter(|b| &b.0 == b"trun") {
                let flags = be(trun, 0) & 0xFF_FFFF;
                let count = be(trun, 4) as usize;
                let mut at = 8;
                at += if flags & 0x1 != 0 { 4 } else { 0 };
                at += if flags & 0x4 != 0 { 4 } else { 0 };
                for _ in 0..count {
                    for bit in [0x100, 0x200, 0x400] {
                        at += if flags & bit != 0 { 4 } else { 0 };
                    }
                    let cts = if flags & 0x800 != 0 {
                        at += 4;
                        be(trun, at - 4) as i32
                    } else {
                        0
                    };
                    out.push((out.len(), cts));
                }
            }
        }
    }
    out
}

/// Huge frames a millisecond apart in a GOP that never ends: the part being
/// built never holds more than `MAX_PART_BYTES` (plus one frame), and the
/// store never more than its cap plus one part; the next IDR starts a
/// segment that is stored again.
#[test]
fn huge_frames_in_an_endless_gop_stay_under_the_part_and_channel_caps() {
    const FRAME: usize = 1024 * 1024;
    const CAP: usize = 40 * 1024 * 1024;
    let config = StoreConfig {
        max_bytes: CAP,
        ..StoreConfig::default()
    };
    let store = ChannelStore::new("huge", config);
    let mut p = Packager::new(store.clone(), "source", wall(0));
    p.start_session(wall(0));
    p.push(MediaEvent::VideoConfig(video_config(1280)), wall(0))
        .unwrap();
    let frame = |i: i64, keyframe: bool| {
        MediaEvent::Video(VideoFrame {
            dts: Timestamp::from_millis(i),
            pts: Timestamp::from_millis(i),
            keyframe,
            data: Bytes::from(vec![0u8; FRAME]),
        })
    };
    let mut largest_part = 0;
    let mut largest_held = 0;
    for i in 0..200 {
        p.push(frame(i, i == 0), wall(i)).unwrap();
        let building: usize = p
            .video
            .as_ref()
            .unwrap()
            .part
            .iter()
            .map(|s| s.data.len())
            .sum();
        largest_part = largest_part.max(building);
        largest_held = largest_held.max(store.read().bytes());
    }
    assert!(
        largest_part <= MAX_PART_BYTES,
        "{largest_part} bytes in one part"
    );
    assert!(
        largest_held <= CAP + MAX_PART_BYTES,
        "{largest_held} bytes held"
    );
    {
        let s = store.read();
        assert_eq!(s.cap.segments_cut, 1, "{:?}", s.cap);
        assert!(s.cap.parts_dropped > 0, "{:?}", s.cap);
        let v = s.track("source").unwrap();
        assert!(v.segments.iter().all(|s| s.complete));
        for seg in &v.segments {
            for part in &seg.parts {
                assert!(
                    part.data.len() <= MAX_PART_BYTES + 4096,
                    "{} bytes",
                    part.data.len()
                );
            }
        }
    }
    // the next IDR opens a segment that is stored; the cut one makes room
    // (past the segment target: 2.5 s)
    for i in 2500..2540 {
        p.push(frame(i, i == 2500), wall(i)).unwrap();
        largest_held = largest_held.max(store.read().bytes());
    }
    let s = store.read();
    assert!(
        largest_held <= CAP + MAX_PART_BYTES,
        "{largest_held} bytes held"
    );
    let v = s.track("source").unwrap();
    let last = v.segments.back().unwrap();
    assert!(!last.complete && !last.parts.is_empty());
    assert!(s.cap.segments_dropped >= 1, "{:?}", s.cap);
}

/// A gap in the publisher's timestamps longer than the part target (a
/// stalled encoder, a scene switch) does not leave the track cutting a part
/// per frame afterwards: parts go back to the part target.
#[test]
fn parts_return_to_the_target_after_a_timestamp_gap() {
    let (store, mut p) = setup();
    let frame = |ms: i64, keyframe: bool| {
        MediaEvent::Video(VideoFrame {
            dts: Timestamp::from_millis(ms),
            pts: Timestamp::from_millis(ms),
            keyframe,
            data: Bytes::from(vec![0u8; 100]),
        })
    };
    // 3 s at 30 fps, a 1.5 s gap, then 6 s more, an IDR every 2 s
    let mut times: Vec<i64> = (0..90).map(|i| i * 1000 / 30).collect();
    times.extend((0..180).map(|i| 4500 + i * 1000 / 30));
    for (n, ms) in times.iter().enumerate() {
        p.push(frame(*ms, n % 60 == 0), wall(*ms)).unwrap();
    }
    let s = store.read();
    let v = s.track("source").unwrap();
    // the parts of the last complete segment (well after the gap)
    let last = v.segments.iter().rev().find(|s| s.complete).unwrap();
    assert!(last.start >= 4500 * 90 + 180_000, "{}", last.start);
    let parts: Vec<u64> = last.parts.iter().map(|p| p.duration).collect();
    assert!(parts.len() <= 5, "{} parts: {parts:?}", parts.len());
}

/// Huge audio frames before the first keyframe: the audio held for the
/// first video segment stays under `MAX_AUDIO_PREROLL_BYTES`, the oldest
/// dropped and counted.
#[test]
fn audio_held_before_the_first_keyframe_is_capped_in_bytes() {
    let (_store, mut p) = setup();
    for i in 0..100 {
        let f = MediaEvent::Audio(AudioFrame {
            dts: Timestamp::from_millis(i * 21),
            data: Bytes::from(vec![1u8; 256 * 1024]),
        });
        p.push(f, wall(i * 21)).unwrap();
        let held: usize = p.audio_preroll.iter().map(|(f, _)| f.data.len()).sum();
        assert!(held <= MAX_AUDIO_PREROLL_BYTES, "{held} bytes held");
    }
    assert_eq!(p.audio_preroll.len(), 4);
    assert_eq!(p.stats().dropped_audio_before_video, 96);
    // normal frames: the count cap, as before
    let (_store, mut p) = setup();
    for i in 0..300 {
        let f = MediaEvent::Audio(AudioFrame {
            dts: Timestamp::from_millis(i * 21),
            data: Bytes::from(vec![1u8; 300]),
        });
        p.push(f, wall(i * 21)).unwrap();
    }
    assert_eq!(p.audio_preroll.len(), MAX_AUDIO_PREROLL);
    assert_eq!(
        p.stats().dropped_audio_before_video,
        300 - MAX_AUDIO_PREROLL as u64
    );
}

/// Segments are dated on the media clock: consecutive dates differ by exactly
/// the segment's duration whatever the arrival jitter, on every track, and a
/// date is availabilityStartTime + the segment's start (as DASH maps it).
#[test]
fn segment_dates_follow_the_media_clock_not_the_arrival_jitter() {
    let (store, mut p) = setup();
    // frames arrive in bursts: up to 90 ms late, never in step
    feed_arriving(&mut p, 0, 10.0, 60, false, |n| (n as i64 * 37) % 90);
    let s = store.read();
    for id in ["source", "audio"] {
        let t = s.track(id).unwrap();
        let ts = u128::from(t.info.timescale);
        assert!(t.segments.len() >= 4, "{id}");
        for seg in &t.segments {
            let nanos = u128::from(seg.start) * 1_000_000_000 / ts;
            let expected = s.availability_start + Duration::from_nanos(nanos as u64);
            assert_eq!(seg.program_date_time, expected, "{id} seg {}", seg.msn);
        }
        for w in t.segments.iter().collect::<Vec<_>>().windows(2) {
            if !w[0].complete {
                continue;
            }
            let step = w[1]
                .program_date_time
                .duration_since(w[0].program_date_time)
                .unwrap();
            let duration = u128::from(w[0].duration) * 1_000_000_000 / ts;
            assert!(
                step.as_nanos().abs_diff(duration) <= 1,
                "{id}: seg {} dated {step:?} after seg {}, which lasts {duration} ns",
                w[1].msn,
                w[0].msn
            );
        }
    }
}

/// A rung whose encoder never made the IDR of one segment cut (its picture
/// lost) has no segment of that number: counted, and a notice for the log
/// names the rung and the number.
#[test]
fn a_rung_without_the_idr_of_a_cut_misses_that_segment_and_says_so() {
    let (store, mut p) = setup_ladder(Some("source"), &[("720p", 1000)]);
    let ladder = Ladder::new(&["720p"], 0);
    ladder.config(&mut p, 1280);
    for (t, f) in source_frames(8.0, 60, false) {
        let pts = f.pts.as_millis();
        let pushed = p.push(MediaEvent::Video(f), wall(t)).unwrap();
        assert!(pushed.accepted);
        // the rung's picture for the cut at 2.1 s came out as a P-frame, and
        // so did every other until the next cut
        let idr = pushed.segment_start && !(2000..4000).contains(&(pts - 100));
        p.push_rung(
            p.session(),
            "720p",
            VideoFrame {
                dts: Timestamp::from_millis(pts),
                pts: Timestamp::from_millis(pts),
                keyframe: idr,
                data: Bytes::from(vec![2u8; 400]),
            },
        );
    }
    let s = store.read();
    let source: Vec<u64> = s
        .track("source")
        .unwrap()
        .segments
        .iter()
        .map(|s| s.msn)
        .collect();
    let rung: Vec<u64> = s
        .track("720p")
        .unwrap()
        .segments
        .iter()
        .map(|s| s.msn)
        .collect();
    assert_eq!(source.len(), 4, "{source:?}");
    let missing = source[1];
    assert_eq!(rung, [source[0], source[2], source[3]]);
    assert_eq!(p.stats().rung_missed_segments, 1);
    assert!(
        p.take_notices()
            .contains(&PackagerNotice::RungMissedSegment {
                rung: "720p".to_owned(),
                msn: Some(missing),
            }),
        "no notice for seg-{missing}"
    );
    // the origin's lookup finds each of the rung's segments by its number
    let t = s.track("720p").unwrap();
    for msn in &rung {
        assert_eq!(t.segment(*msn).map(|s| s.msn), Some(*msn));
    }
    assert!(t.segment(missing).is_none());
}
