//! Packager throughput and playlist rendering (criterion).
//!
//! `cargo bench --bench packaging`. What each group measures is in
//! benches/README.md; the figures are in docs/PERFORMANCE.md.
//!
//! The stream is 1080p30-like: an IDR of 150 KB every 60 frames (2 s), 20 KB
//! for every other frame, B-frame composition offsets (I/P frames shown 100 ms
//! after decode, B frames 33 ms), and 48 kHz AAC-LC (1024 samples, 341 bytes
//! a frame, about 128 kbit/s) interleaved by time. Timestamps are in
//! milliseconds, as RTMP carries them. Frame payloads are `Bytes` made once:
//! in Ladder they come from the demuxer the same way, and what the packager
//! does to them (copying them into a CMAF chunk) is the cost measured.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ladder::media::{
    AudioCodec, AudioConfig, AudioFrame, MediaEvent, Timestamp, VideoCodec, VideoConfig, VideoFrame,
};
use ladder::packaging::packager::Packager;
use ladder::packaging::store::{ChannelStore, StoreConfig};
use ladder::packaging::{dash, hls};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const FPS: i64 = 30;
const GOP: i64 = 60;
const IDR_BYTES: usize = 150_000;
const P_BYTES: usize = 20_000;
const AAC_BYTES: usize = 341;
const AUDIO_RATE: i64 = 48_000;
const AAC_FRAME: i64 = 1024;
/// Media seconds pushed per iteration of the throughput benchmark.
const SECONDS: i64 = 10;

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn video_config() -> Arc<VideoConfig> {
    Arc::new(VideoConfig {
        codec: VideoCodec::H264,
        // avcC header for High@4.0 (the packager copies it into the init segment)
        record: Bytes::from_static(&[1, 0x64, 0, 0x28, 0xff, 0xe0, 0]),
        width: 1920,
        height: 1080,
        codec_string: "avc1.640028".into(),
        nal_length_size: 4,
        frame_rate: Some(30.0),
        profile_idc: 100,
        level_idc: 40,
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

/// `secs` of interleaved media events starting at media time 0, with the wall
/// clock each arrives at.
struct Stream {
    events: Vec<(SystemTime, MediaEvent)>,
    video_frames: u64,
    audio_frames: u64,
    bytes: u64,
}

fn stream(secs: i64) -> Stream {
    let idr = Bytes::from(vec![0x65u8; IDR_BYTES]);
    let p = Bytes::from(vec![0x41u8; P_BYTES]);
    let aac = Bytes::from(vec![0x21u8; AAC_BYTES]);
    let mut timed: Vec<(i64, MediaEvent)> = Vec::new();
    let (mut video_frames, mut audio_frames, mut bytes) = (0, 0, 0);
    for i in 0..secs * FPS {
        let dts = i * 1000 / FPS;
        let key = i % GOP == 0;
        // decode order I P B B P B B ...: references are shown later than B frames
        let cts = if i % 3 == 0 { 100 } else { 33 };
        let data = if key { idr.clone() } else { p.clone() };
        bytes += data.len() as u64;
        video_frames += 1;
        timed.push((
            dts,
            MediaEvent::Video(VideoFrame {
                dts: Timestamp::from_millis(dts),
                pts: Timestamp::from_millis(dts + cts),
                keyframe: key,
                data,
            }),
        ));
    }
    for i in 0..secs * AUDIO_RATE / AAC_FRAME {
        let dts = i * AAC_FRAME * 1000 / AUDIO_RATE;
        bytes += aac.len() as u64;
        audio_frames += 1;
        timed.push((
            dts,
            MediaEvent::Audio(AudioFrame {
                dts: Timestamp::from_millis(dts),
                data: aac.clone(),
            }),
        ));
    }
    timed.sort_by_key(|(t, _)| *t);
    Stream {
        events: timed
            .into_iter()
            .map(|(t, e)| (t0() + Duration::from_millis(t as u64), e))
            .collect(),
        video_frames,
        audio_frames,
        bytes,
    }
}

/// A channel with its configurations pushed, ready for media.
fn channel(config: StoreConfig) -> (Arc<ChannelStore>, Packager) {
    let store = ChannelStore::new("bench", config);
    let mut p = Packager::new(store.clone(), "source", t0());
    p.start_session(t0());
    p.push(MediaEvent::VideoConfig(video_config()), t0())
        .unwrap();
    p.push(MediaEvent::AudioConfig(audio_config()), t0())
        .unwrap();
    (store, p)
}

fn packager_throughput(c: &mut Criterion) {
    let s = stream(SECONDS);
    eprintln!(
        "packager input: {} s of media, {} video + {} audio frames, {:.1} MB ({:.2} Mbit/s)",
        SECONDS,
        s.video_frames,
        s.audio_frames,
        s.bytes as f64 / 1e6,
        s.bytes as f64 * 8.0 / SECONDS as f64 / 1e6
    );
    // Sanity: everything pushed comes out as parts in the store.
    {
        let (store, mut p) = channel(StoreConfig::default());
        for (wall, e) in s.events.clone() {
            p.push(e, wall).unwrap();
        }
        let st = p.stats();
        let state = store.read();
        let stored: usize = state
            .tracks
            .iter()
            .flat_map(|t| t.segments.iter())
            .map(|seg| seg.bytes)
            .sum();
        eprintln!(
            "packager output: {} video + {} audio frames taken, {} segments, {} parts, {:.1} MB of CMAF in the store",
            st.video_frames,
            st.audio_frames,
            st.segments,
            st.parts,
            stored as f64 / 1e6
        );
        assert_eq!(st.video_frames, s.video_frames);
    }
    let mut g = c.benchmark_group("packager");
    g.sample_size(30);
    // The same work twice, reported as frames/s (video + audio) and as bytes/s.
    for (name, throughput) in [
        (
            "push_10s_1080p30/frames",
            Throughput::Elements(s.video_frames + s.audio_frames),
        ),
        ("push_10s_1080p30/bytes", Throughput::Bytes(s.bytes)),
    ] {
        g.throughput(throughput);
        g.bench_function(name, |b| {
            b.iter_batched(
                || (channel(StoreConfig::default()), s.events.clone()),
                |((store, mut p), events)| {
                    for (wall, e) in events {
                        p.push(e, wall).unwrap();
                    }
                    black_box(store)
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn playlists(c: &mut Criterion) {
    // 8 segments x 4 parts in the window (2 s / 0.5 s), 4 more retained, and an
    // open segment with 2 parts: 37 s of media.
    let config = StoreConfig {
        segment_target: 2.0,
        part_target: 0.5,
        window_segments: 8,
        ..StoreConfig::default()
    };
    let (store, mut p) = channel(config);
    for (wall, e) in stream(37).events {
        p.push(e, wall).unwrap();
    }
    let state = store.read();
    let video = state.track_index("source").unwrap();
    let now = t0() + Duration::from_secs(37);
    eprintln!(
        "playlist sizes: media {} B, media skip {} B, master {} B, mpd {} B",
        hls::media_playlist(&state, video, hls::Skip::No).len(),
        hls::media_playlist(&state, video, hls::Skip::Yes).len(),
        hls::master_playlist(&state).len(),
        dash::mpd(&state, now).len()
    );
    let mut g = c.benchmark_group("render");
    g.bench_function("hls_media_playlist", |b| {
        b.iter(|| hls::media_playlist(black_box(&state), video, hls::Skip::No))
    });
    g.bench_function("hls_media_playlist_skip", |b| {
        b.iter(|| hls::media_playlist(black_box(&state), video, hls::Skip::Yes))
    });
    g.bench_function("hls_master_playlist", |b| {
        b.iter(|| hls::master_playlist(black_box(&state)))
    });
    g.bench_function("dash_mpd", |b| b.iter(|| dash::mpd(black_box(&state), now)));
    g.finish();
}

criterion_group!(benches, packager_throughput, playlists);
criterion_main!(benches);
