//! The input of `ladder bench`: one loop of H.264 + AAC held in memory as FLV
//! tag bodies (what an RTMP publisher sends, and what the demuxer of the real
//! publish path takes), made at start from synthetic pictures, or read from a
//! user's file ([`super::avformat`]).
//!
//! # The synthetic source
//!
//! [`SYNTHETIC`] names the sizes (`1080p30`, `720p30`, `360p30`). Every one is
//! [`LOOP_SECONDS`] of 30 fps pictures drawn by [`draw`]: a detailed
//! background (a diagonal ramp, 16-pixel blocks and a per-pixel texture, all
//! from an integer hash) panning by an eighth of the width per second, a
//! block with its own texture crossing it the other way, and a little
//! temporal noise on every picture, so that no two pictures are alike and
//! motion search and residuals cost what camera content costs. The pictures
//! are encoded by x264 (`pipeline::cpu::x264`, preset `veryfast`, High
//! profile, an IDR every [`GOP_FRAMES`]) at the size's bitrate, tuned for low
//! latency as a live contribution encoder is: no B-frames
//! ([`SOURCE_LOW_LATENCY`]). Source B-frames make a decoder hold pictures
//! for reordering (two pictures, 67 ms at 30 fps, with x264's two), which
//! every rung's parts then wait for: a file source with B-frames measures
//! that too. The audio is a 440 Hz tone
//! with a slow tremolo, stereo 48 kHz, through libavcodec's native `aac`
//! encoder at [`AUDIO_KBPS`].
//!
//! # Looping
//!
//! The loop is replayed with continuous timestamps: loop `k` adds `k` times
//! the loop's length to every tag's timestamp. The synthetic loop is 8 s: 240
//! pictures (four whole GOPs, so the loop restarts on an IDR) and exactly 375
//! AAC frames of 1024 samples, so neither track jumps at the seam.

use crate::media::{Timestamp, VideoConfig, MILLIS};
use crate::pipeline::cpu::x264::{EncodeError, Encoder, EncoderSettings};
use crate::pipeline::frame::Picture;
use bytes::{BufMut, Bytes, BytesMut};
use ffmpeg_next as ffmpeg;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

/// Length of the synthetic loop, seconds: whole GOPs of [`GOP_FRAMES`] at 30
/// fps and whole AAC frames at 48 kHz (8 s = 240 pictures = 375 frames).
pub const LOOP_SECONDS: u32 = 8;

/// Frame rate of the synthetic sources.
pub const SYNTHETIC_FPS: u32 = 30;

/// IDR interval of the synthetic sources, in pictures (2 s at 30 fps, the
/// default segment target).
pub const GOP_FRAMES: u32 = 60;

/// Audio of the synthetic sources: sample rate, channels, bitrate, samples
/// per AAC frame.
pub const AUDIO_RATE: u32 = 48_000;
/// Audio channels of the synthetic sources.
pub const AUDIO_CHANNELS: u16 = 2;
/// AAC bitrate of the synthetic sources, kbit/s.
pub const AUDIO_KBPS: u32 = 128;
/// Samples per AAC frame.
pub const AAC_FRAME_SAMPLES: u32 = 1024;

/// The x264 preset of the synthetic sources (a contribution encoder's usual
/// choice).
pub const SOURCE_PRESET: &str = "veryfast";

/// The synthetic sources are encoded with x264's low-latency tuning (no
/// B-frames, no lookahead), as live contribution encoders usually are: with
/// B-frames the decoder's reordering delay (two pictures) would be measured
/// in every rung's part availability (see the module docs).
pub const SOURCE_LOW_LATENCY: bool = true;

/// One synthetic source size: `--source NAME`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Synthetic {
    /// `1080p30`, `720p30`, `360p30`.
    pub name: &'static str,
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Video bitrate (x264 ABR, VBV at the same rate).
    pub kbps: u32,
}

/// The synthetic sources, largest first.
pub const SYNTHETIC: [Synthetic; 3] = [
    Synthetic {
        name: "1080p30",
        width: 1920,
        height: 1080,
        kbps: 6000,
    },
    Synthetic {
        name: "720p30",
        width: 1280,
        height: 720,
        kbps: 3000,
    },
    Synthetic {
        name: "360p30",
        width: 640,
        height: 360,
        kbps: 800,
    },
];

/// What `--source` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceChoice {
    /// Made at start (see the module docs).
    Synthetic(Synthetic),
    /// A file with H.264 video and (optionally) AAC audio: MP4, FLV, MPEG-TS.
    File(PathBuf),
}

impl SourceChoice {
    /// A synthetic source by name, else a path to an existing file.
    pub fn parse(text: &str) -> Result<SourceChoice, String> {
        if let Some(s) = SYNTHETIC.iter().find(|s| s.name == text) {
            return Ok(SourceChoice::Synthetic(*s));
        }
        let path = PathBuf::from(text);
        if path.is_file() {
            Ok(SourceChoice::File(path))
        } else {
            let names: Vec<&str> = SYNTHETIC.iter().map(|s| s.name).collect();
            Err(format!(
                "{text:?} is neither a synthetic source ({}) nor a file",
                names.join(", ")
            ))
        }
    }
}

/// Why a source could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// x264 refused the settings or failed.
    #[error("x264 cannot encode the synthetic source: {0}")]
    Encode(#[from] EncodeError),
    /// libavcodec's AAC encoder failed.
    #[error("the AAC encoder failed: {0}")]
    Audio(String),
    /// The file cannot be read, or is not H.264 (+ AAC).
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Which track a tag belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagKind {
    /// An FLV video tag.
    Video,
    /// An FLV audio tag.
    Audio,
}

/// One FLV tag of the loop.
#[derive(Clone, Debug)]
pub struct Tag {
    /// Video or audio.
    pub kind: TagKind,
    /// RTMP timestamp (decode time, ms) within the loop; loop `k` adds
    /// `k * loop_ms`.
    pub ts_ms: u32,
    /// The FLV tag body (video or audio tag header included).
    pub body: Bytes,
}

/// The audio of a source, as reported.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AudioInfo {
    /// RFC 6381, e.g. `mp4a.40.2`.
    pub codec: String,
    /// Hz.
    pub sample_rate: u32,
    /// Channels of the AAC decoder.
    pub channels: u8,
    /// Measured over the loop.
    pub kbps: f64,
}

/// What the bench fed, as reported (the JSON's `source`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceInfo {
    /// `synthetic` or `file`.
    pub kind: &'static str,
    /// The synthetic source's name, or the file's name.
    pub name: String,
    /// The file, for a file source.
    pub path: Option<String>,
    /// Coded size after cropping (from the SPS).
    pub width: u32,
    /// See `width`.
    pub height: u32,
    /// Pictures per second of media time.
    pub fps: f64,
    /// RFC 6381, e.g. `avc1.640028`.
    pub video_codec: String,
    /// Measured over the loop.
    pub video_kbps: f64,
    /// Composition offsets present (B-frames).
    pub b_frames: bool,
    /// Mean distance between IDRs.
    pub gop_seconds: f64,
    /// Length of the loop.
    pub loop_seconds: f64,
    /// The AAC track, when there is one.
    pub audio: Option<AudioInfo>,
}

/// One loop of a source, ready to feed.
#[derive(Debug)]
pub struct Source {
    /// What is reported of it.
    pub info: SourceInfo,
    /// The video configuration (avcC) as the demuxer will see it.
    pub video_config: Arc<VideoConfig>,
    /// FLV AVC sequence header tag body, sent first.
    pub video_header: Bytes,
    /// FLV AAC sequence header tag body, when there is audio.
    pub audio_header: Option<Bytes>,
    /// The loop's tags in timestamp order; the first is a video IDR at 0.
    pub tags: Vec<Tag>,
    /// Length of the loop in ms: loop `k` starts at `k * loop_ms`.
    pub loop_ms: u32,
}

/// A video access unit on the way to becoming a tag: times in ms.
#[derive(Clone, Debug)]
pub struct VideoSample {
    /// Decode time.
    pub dts_ms: i64,
    /// Presentation time.
    pub pts_ms: i64,
    /// An IDR.
    pub keyframe: bool,
    /// AVCC NAL units with the record's length size.
    pub data: Bytes,
}

/// An AAC frame (raw) with its time in ms.
#[derive(Clone, Debug)]
pub struct AudioSample {
    /// Time of the frame.
    pub ts_ms: i64,
    /// The raw AAC frame.
    pub data: Bytes,
}

/// FLV video tag body of an AVC sequence header (Adobe FLV spec 10.1, E.4.3.1).
pub fn video_header_tag(avcc: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(avcc.len() + 5);
    b.put_slice(&[0x17, 0, 0, 0, 0]);
    b.put_slice(avcc);
    b.freeze()
}

/// FLV video tag body of one AVC access unit: frame type (1 key, 2 inter),
/// codec 7, NALU packet, composition time (signed 24-bit ms).
pub fn video_frame_tag(keyframe: bool, cts_ms: i32, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + 5);
    b.put_u8(if keyframe { 0x17 } else { 0x27 });
    b.put_u8(1);
    let cts = cts_ms.clamp(-(1 << 23), (1 << 23) - 1);
    b.put_slice(&cts.to_be_bytes()[1..]);
    b.put_slice(data);
    b.freeze()
}

/// FLV audio tag body of an AAC sequence header (AudioSpecificConfig).
pub fn audio_header_tag(asc: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(asc.len() + 2);
    b.put_slice(&[0xAF, 0]);
    b.put_slice(asc);
    b.freeze()
}

/// FLV audio tag body of one raw AAC frame.
pub fn audio_frame_tag(data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + 2);
    b.put_slice(&[0xAF, 1]);
    b.put_slice(data);
    b.freeze()
}

/// The AudioSpecificConfig of AAC-LC at `rate` Hz with `channels` (ISO/IEC
/// 14496-3 §1.6.2.1: object type 2, the sampling frequency index, the
/// channel configuration), what libavcodec's `aac` encoder writes as its
/// extradata. `None` for a rate without an index.
pub fn aac_lc_config(rate: u32, channels: u8) -> Option<[u8; 2]> {
    const RATES: [u32; 13] = [
        96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025,
        8_000, 7_350,
    ];
    let index = RATES.iter().position(|r| *r == rate)? as u8;
    let object_type = 2u8;
    Some([
        (object_type << 3) | (index >> 1),
        ((index & 1) << 7) | ((channels & 0xF) << 3),
    ])
}

impl Source {
    /// The loop from decoded-order video samples and audio samples (times in
    /// ms on one clock), `loop_ms` long. Samples are shifted so that the
    /// first video sample's decode time is 0 (audio before it is dropped);
    /// samples at or beyond `loop_ms` after it are dropped.
    pub fn from_samples(
        mut info: SourceInfo,
        video_config: VideoConfig,
        video: &[VideoSample],
        audio: Option<(Bytes, &[AudioSample])>,
        loop_ms: u32,
    ) -> Source {
        let base = video.first().map_or(0, |v| v.dts_ms);
        let end = i64::from(loop_ms);
        let mut tags: Vec<Tag> = Vec::with_capacity(video.len() * 2);
        let mut video_bytes = 0u64;
        let mut keyframes = 0u32;
        let mut b_frames = false;
        for v in video {
            let dts = v.dts_ms - base;
            if !(0..end).contains(&dts) {
                continue;
            }
            let cts = i32::try_from(v.pts_ms - v.dts_ms).unwrap_or(0);
            b_frames |= cts != 0;
            keyframes += u32::from(v.keyframe);
            video_bytes += v.data.len() as u64;
            tags.push(Tag {
                kind: TagKind::Video,
                ts_ms: dts as u32,
                body: video_frame_tag(v.keyframe, cts, &v.data),
            });
        }
        let pictures = tags.len();
        let mut audio_header = None;
        if let Some((asc, frames)) = audio {
            let mut bytes = 0u64;
            for a in frames {
                let ts = a.ts_ms - base;
                if !(0..end).contains(&ts) {
                    continue;
                }
                bytes += a.data.len() as u64;
                tags.push(Tag {
                    kind: TagKind::Audio,
                    ts_ms: ts as u32,
                    body: audio_frame_tag(&a.data),
                });
            }
            if let Some(a) = info.audio.as_mut() {
                a.kbps = bytes as f64 * 8.0 / f64::from(loop_ms.max(1));
            }
            audio_header = Some(audio_header_tag(&asc));
        }
        // decode order per track is kept (a stable sort); video first at a tie
        tags.sort_by_key(|t| (t.ts_ms, t.kind == TagKind::Audio));
        let seconds = f64::from(loop_ms) / 1000.0;
        info.video_kbps = video_bytes as f64 * 8.0 / f64::from(loop_ms.max(1));
        info.b_frames = b_frames;
        info.gop_seconds = if keyframes > 0 {
            seconds / f64::from(keyframes)
        } else {
            seconds
        };
        info.loop_seconds = seconds;
        if info.fps <= 0.0 && seconds > 0.0 {
            info.fps = pictures as f64 / seconds;
        }
        info.video_codec = video_config.codec_string.clone();
        info.width = video_config.width;
        info.height = video_config.height;
        Source {
            info,
            video_header: video_header_tag(&video_config.record),
            video_config: Arc::new(video_config),
            audio_header,
            tags,
            loop_ms,
        }
    }

    /// Make a synthetic source (see the module docs). Takes a few seconds
    /// at 1080p (x264 encodes 240 pictures).
    pub fn synthetic(s: &Synthetic) -> Result<Source, SourceError> {
        let frames = LOOP_SECONDS * SYNTHETIC_FPS;
        let video = encode_synthetic_video(s, frames)?;
        let (config, samples) = video;
        let audio_frames = LOOP_SECONDS * AUDIO_RATE / AAC_FRAME_SAMPLES;
        let (asc, audio) = encode_synthetic_audio(audio_frames)?;
        let info = SourceInfo {
            kind: "synthetic",
            name: s.name.to_owned(),
            path: None,
            width: s.width,
            height: s.height,
            fps: f64::from(SYNTHETIC_FPS),
            video_codec: String::new(),
            video_kbps: 0.0,
            b_frames: false,
            gop_seconds: 0.0,
            loop_seconds: 0.0,
            audio: Some(AudioInfo {
                codec: "mp4a.40.2".into(),
                sample_rate: AUDIO_RATE,
                channels: AUDIO_CHANNELS as u8,
                kbps: 0.0,
            }),
        };
        // The audio's media time 0 is the first picture's presentation time.
        let first_pts = samples.first().map_or(0, |v| v.pts_ms);
        let audio: Vec<AudioSample> = audio
            .into_iter()
            .enumerate()
            .map(|(i, data)| AudioSample {
                ts_ms: first_pts
                    + (i as i64 * i64::from(AAC_FRAME_SAMPLES) * 1000) / i64::from(AUDIO_RATE),
                data,
            })
            .collect();
        // Shifted so that the first decode time is 0, the loop still ends
        // LOOP_SECONDS after it: the next loop's first picture decodes there.
        Ok(Source::from_samples(
            info,
            config,
            &samples,
            Some((Bytes::copy_from_slice(&asc), &audio)),
            LOOP_SECONDS * 1000,
        ))
    }

    /// One loop as an FLV file (header, the sequence headers, every tag), for
    /// ffmpeg to read the very same source in `make bench`'s comparison.
    pub fn flv_file(&self) -> Vec<u8> {
        let size: usize = self.tags.iter().map(|t| t.body.len() + 15).sum();
        let mut out = Vec::with_capacity(size + 1024);
        let flags = if self.audio_header.is_some() { 5 } else { 1 };
        out.extend_from_slice(&[b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]);
        let mut put = |kind: TagKind, ts: u32, body: &[u8]| {
            let tag_type = match kind {
                TagKind::Audio => 8u8,
                TagKind::Video => 9u8,
            };
            let len = body.len() as u32;
            out.push(tag_type);
            out.extend_from_slice(&len.to_be_bytes()[1..]);
            out.extend_from_slice(&ts.to_be_bytes()[1..]);
            out.push((ts >> 24) as u8);
            out.extend_from_slice(&[0, 0, 0]);
            out.extend_from_slice(body);
            out.extend_from_slice(&(len + 11).to_be_bytes());
        };
        put(TagKind::Video, 0, &self.video_header);
        if let Some(a) = &self.audio_header {
            put(TagKind::Audio, 0, a);
        }
        for t in &self.tags {
            put(t.kind, t.ts_ms, &t.body);
        }
        out
    }
}

/// A 32-bit integer hash of two coordinates (a multiply-xorshift mix): the
/// texture of the synthetic pictures, the same wherever it is drawn.
fn hash(x: i32, y: i32) -> u32 {
    let mut h = (x as u32).wrapping_mul(0x9E37_79B1) ^ (y as u32).wrapping_mul(0x85EB_CA77);
    h ^= h >> 15;
    h = h.wrapping_mul(0x2C1B_3C6D);
    h ^= h >> 12;
    h = h.wrapping_mul(0x297A_2D39);
    h ^ (h >> 15)
}

/// Draw synthetic picture `frame` (at `fps`) into `p` (see the module docs).
pub fn draw(p: &mut Picture, frame: u32, fps: u32) {
    let (w, h) = (p.width as i32, p.height as i32);
    let t = f64::from(frame) / f64::from(fps.max(1));
    // camera pan: an eighth of the width and a sixteenth of the height per second
    let pan_x = (t * f64::from(w) / 8.0) as i32;
    let pan_y = (t * f64::from(h) / 16.0) as i32;
    // a block a quarter of the picture, bouncing across it in 6 s the other way
    let (bw, bh) = (w / 4, h / 4);
    let tri = |period: f64, phase: f64| {
        let x = (t / period + phase).fract();
        if x < 0.5 {
            2.0 * x
        } else {
            2.0 - 2.0 * x
        }
    };
    let bx = ((1.0 - tri(6.0, 0.0)) * f64::from(w - bw)) as i32;
    let by = (tri(4.0, 0.25) * f64::from(h - bh)) as i32;
    let noise_seed = frame as i32;
    let y_plane = &mut p.planes[0];
    for y in 0..h {
        let row = y_plane.row_mut(y as usize);
        let sy = y + pan_y;
        let inside_y = (by..by + bh).contains(&y);
        for (x, px) in row.iter_mut().enumerate() {
            let x = x as i32;
            let v = if inside_y && (bx..bx + bw).contains(&x) {
                // the block's own texture moves with it: 8-pixel checks + grain
                let (lx, ly) = (x - bx, y - by);
                let check = if ((lx >> 3) ^ (ly >> 3)) & 1 == 0 {
                    190
                } else {
                    60
                };
                check + (hash(lx, ly) & 31) as i32
            } else {
                let sx = x + pan_x;
                let ramp = ((sx + sy) & 511) - 256;
                let ramp = if ramp < 0 { -ramp } else { ramp } / 4;
                let blocks = (hash(sx >> 4, sy >> 4) & 63) as i32;
                let fine = (hash(sx, sy) & 47) as i32;
                40 + ramp + blocks + fine
            };
            let grain = (hash(x ^ (noise_seed << 12), y + noise_seed) & 7) as i32 - 3;
            *px = (v + grain).clamp(16, 235) as u8;
        }
    }
    let (cw, ch) = (p.planes[1].width as i32, p.planes[1].height as i32);
    for plane in 1..3 {
        let c = &mut p.planes[plane];
        for y in 0..ch {
            let row = c.row_mut(y as usize);
            let sy = y + pan_y / 2;
            let inside_y = (by / 2..(by + bh) / 2).contains(&y);
            for (x, px) in row.iter_mut().enumerate() {
                let x = x as i32;
                let v = if inside_y && (bx / 2..(bx + bw) / 2).contains(&x) {
                    if plane == 1 {
                        90
                    } else {
                        200
                    }
                } else {
                    let sx = x + pan_x / 2;
                    let along = if plane == 1 { sx } else { sy };
                    let wave = ((along >> 2) & 127) - 64;
                    let wave = if wave < 0 { -wave } else { wave } - 32;
                    128 + wave + (hash(sx >> 3, sy >> 3) & 15) as i32 - 8
                };
                *px = v.clamp(16, 240) as u8;
            }
        }
    }
    let _ = cw;
}

/// x264-encode `frames` synthetic pictures (see the module docs): the
/// configuration and the access units in decode order, times in ms.
fn encode_synthetic_video(
    s: &Synthetic,
    frames: u32,
) -> Result<(VideoConfig, Vec<VideoSample>), SourceError> {
    let settings = EncoderSettings {
        width: s.width,
        height: s.height,
        fps: f64::from(SYNTHETIC_FPS),
        bitrate_kbps: s.kbps,
        maxrate_kbps: None,
        bufsize_kbits: None,
        profile: Some("high".into()),
        preset: Some(SOURCE_PRESET.into()),
        threads: 0,
        keyint_max: GOP_FRAMES,
        source_idrs: false,
        low_latency: SOURCE_LOW_LATENCY,
    };
    let mut encoder = Encoder::new(&settings)?;
    let config = (*encoder.video_config()).clone();
    let mut picture = Picture::new(s.width, s.height);
    let mut out = Vec::with_capacity(frames as usize);
    let take = |f: crate::media::VideoFrame| VideoSample {
        dts_ms: f.dts.as_millis(),
        pts_ms: f.pts.as_millis(),
        keyframe: f.keyframe,
        data: f.data,
    };
    for i in 0..frames {
        draw(&mut picture, i, SYNTHETIC_FPS);
        let ms = (i64::from(i) * 1000 + i64::from(SYNTHETIC_FPS) / 2) / i64::from(SYNTHETIC_FPS);
        picture.pts = Some(Timestamp::from_millis(ms));
        if let Some(f) = encoder.encode(&picture, i % GOP_FRAMES == 0)? {
            out.push(take(f));
        }
    }
    for f in encoder.flush()? {
        out.push(take(f));
    }
    Ok((config, out))
}

/// AAC-encode `frames` frames of a 440 Hz stereo tone with a tremolo:
/// the AudioSpecificConfig and the raw frames (the encoder's priming frame
/// first; every frame 1024 samples).
fn encode_synthetic_audio(frames: u32) -> Result<([u8; 2], Vec<Bytes>), SourceError> {
    let err = |what: &str, e: ffmpeg::Error| SourceError::Audio(format!("{what}: {e}"));
    let codec = ffmpeg::encoder::find(ffmpeg::codec::Id::AAC)
        .ok_or_else(|| SourceError::Audio("libavcodec has no AAC encoder".into()))?;
    let format = ffmpeg::format::Sample::F32(ffmpeg::format::sample::Type::Planar);
    let layout = ffmpeg::ChannelLayout::STEREO;
    let mut context = ffmpeg::codec::Context::new_with_codec(codec)
        .encoder()
        .audio()
        .map_err(|e| err("audio encoder", e))?;
    context.set_rate(AUDIO_RATE as i32);
    context.set_channel_layout(layout);
    context.set_channels(i32::from(AUDIO_CHANNELS));
    context.set_format(format);
    context.set_bit_rate(AUDIO_KBPS as usize * 1000);
    context.set_time_base((1, AUDIO_RATE as i32));
    let mut encoder = context.open_as(codec).map_err(|e| err("open", e))?;
    let asc = aac_lc_config(AUDIO_RATE, AUDIO_CHANNELS as u8)
        .ok_or_else(|| SourceError::Audio("no AAC sampling index for the rate".into()))?;
    let mut out = Vec::with_capacity(frames as usize + 2);
    let mut packet = ffmpeg::Packet::empty();
    let mut drain = |encoder: &mut ffmpeg::encoder::Audio, out: &mut Vec<Bytes>| {
        while encoder.receive_packet(&mut packet).is_ok() {
            if let Some(data) = packet.data() {
                out.push(Bytes::copy_from_slice(data));
            }
        }
    };
    let n = AAC_FRAME_SAMPLES as usize;
    for i in 0..frames {
        let mut frame = ffmpeg::frame::Audio::new(format, n, layout);
        frame.set_rate(AUDIO_RATE);
        for ch in 0..usize::from(AUDIO_CHANNELS) {
            let plane = frame.plane_mut::<f32>(ch);
            for (k, s) in plane.iter_mut().enumerate() {
                let t = (f64::from(i) * n as f64 + k as f64) / f64::from(AUDIO_RATE);
                let tremolo = 0.6 + 0.4 * (std::f64::consts::TAU * 0.5 * t).sin();
                let tone = (std::f64::consts::TAU * (440.0 + 110.0 * ch as f64) * t).sin();
                *s = (0.3 * tremolo * tone) as f32;
            }
        }
        frame.set_pts(Some(i64::from(i) * n as i64));
        encoder.send_frame(&frame).map_err(|e| err("encode", e))?;
        drain(&mut encoder, &mut out);
    }
    encoder.send_eof().map_err(|e| err("flush", e))?;
    drain(&mut encoder, &mut out);
    // The loop needs exactly `frames`; the encoder's last (padding) frames go.
    out.truncate(frames as usize);
    if out.len() < frames as usize {
        return Err(SourceError::Audio(format!(
            "the encoder returned {} frames of {frames}",
            out.len()
        )));
    }
    Ok((asc, out))
}

/// Milliseconds of `ticks` at `num/den` seconds per tick, rounded to nearest.
pub fn ticks_to_ms(ticks: i64, num: i32, den: i32) -> i64 {
    if den == 0 {
        return 0;
    }
    let n = i128::from(ticks) * i128::from(num) * i128::from(MILLIS);
    let d = i128::from(den);
    let q = if (n >= 0) == (d > 0) {
        (n + d / 2) / d
    } else {
        (n - d / 2) / d
    };
    q.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::flv::Demuxer;
    use crate::media::{MediaEvent, RtmpTimestamp};

    #[test]
    fn source_names_parse() {
        assert_eq!(
            SourceChoice::parse("360p30"),
            Ok(SourceChoice::Synthetic(SYNTHETIC[2]))
        );
        assert_eq!(
            SourceChoice::parse("1080p30").map(|s| matches!(s, SourceChoice::Synthetic(_))),
            Ok(true)
        );
        let e = SourceChoice::parse("/no/such/file.mp4").unwrap_err();
        assert_eq!(
            e,
            "\"/no/such/file.mp4\" is neither a synthetic source (1080p30, 720p30, 360p30) nor a file"
        );
        let file = std::env::current_exe().unwrap();
        assert_eq!(
            SourceChoice::parse(file.to_str().unwrap()),
            Ok(SourceChoice::File(file))
        );
    }

    #[test]
    fn the_aac_config_is_what_libavcodec_writes() {
        // AAC-LC, 48 kHz (index 3), stereo: 0x11 0x90
        assert_eq!(aac_lc_config(48_000, 2), Some([0x11, 0x90]));
        // 44.1 kHz (index 4), mono: 00010 0100 0001 000
        assert_eq!(aac_lc_config(44_100, 1), Some([0x12, 0x08]));
        assert_eq!(aac_lc_config(47_999, 2), None);
    }

    #[test]
    fn the_loop_lengths_are_whole_gops_and_whole_aac_frames() {
        let ms = LOOP_SECONDS * 1000;
        assert_eq!((LOOP_SECONDS * SYNTHETIC_FPS) % GOP_FRAMES, 0);
        assert_eq!((LOOP_SECONDS * AUDIO_RATE) % AAC_FRAME_SAMPLES, 0);
        assert_eq!(ms, 8000);
    }

    #[test]
    fn ticks_convert_to_rounded_milliseconds() {
        assert_eq!(ticks_to_ms(3003, 1, 90_000), 33);
        assert_eq!(ticks_to_ms(1024, 1, 48_000), 21);
        assert_eq!(ticks_to_ms(-3000, 1, 90_000), -33);
        assert_eq!(ticks_to_ms(5, 1, 0), 0);
        assert_eq!(ticks_to_ms(2, 1001, 30_000), 67);
    }

    #[test]
    fn pictures_move_and_are_detailed() {
        let mut a = Picture::new(64, 36);
        let mut b = Picture::new(64, 36);
        draw(&mut a, 0, 30);
        draw(&mut b, 1, 30);
        let (ya, yb) = (&a.planes[0], &b.planes[0]);
        let rows = |p: &crate::pipeline::frame::Plane| -> Vec<u8> {
            (0..p.height).flat_map(|y| p.row(y).to_vec()).collect()
        };
        let (ra, rb) = (rows(ya), rows(yb));
        assert_ne!(ra, rb, "consecutive pictures differ");
        let mut distinct = ra.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 60, "{} luma levels", distinct.len());
        assert!(ra.iter().all(|v| (16..=235).contains(v)));
    }

    /// A tiny synthetic-like loop through the real demuxer: the tags are what
    /// an RTMP publisher sends.
    #[test]
    fn tags_demux_to_the_samples_they_were_made_from() {
        let settings = EncoderSettings {
            width: 64,
            height: 36,
            fps: 30.0,
            bitrate_kbps: 200,
            maxrate_kbps: None,
            bufsize_kbits: None,
            profile: None,
            preset: Some("veryfast".into()),
            threads: 1,
            keyint_max: 10,
            source_idrs: false,
            low_latency: false,
        };
        let mut encoder = Encoder::new(&settings).unwrap();
        let config = (*encoder.video_config()).clone();
        let mut picture = Picture::new(64, 36);
        let mut samples = Vec::new();
        for i in 0..20u32 {
            draw(&mut picture, i, 30);
            picture.pts = Some(Timestamp::from_millis(i64::from(i) * 100));
            if let Some(f) = encoder.encode(&picture, i % 10 == 0).unwrap() {
                samples.push(f);
            }
        }
        samples.extend(encoder.flush().unwrap());
        let video: Vec<VideoSample> = samples
            .iter()
            .map(|f| VideoSample {
                dts_ms: f.dts.as_millis(),
                pts_ms: f.pts.as_millis(),
                keyframe: f.keyframe,
                data: f.data.clone(),
            })
            .collect();
        let audio: Vec<AudioSample> = (0..10)
            .map(|i| AudioSample {
                ts_ms: video[0].dts_ms + i * 200,
                data: Bytes::from_static(&[0x21, 0x10, 0x04]),
            })
            .collect();
        let info = SourceInfo {
            kind: "synthetic",
            name: "tiny".into(),
            path: None,
            width: 0,
            height: 0,
            fps: 0.0,
            video_codec: String::new(),
            video_kbps: 0.0,
            b_frames: false,
            gop_seconds: 0.0,
            loop_seconds: 0.0,
            audio: Some(AudioInfo {
                codec: "mp4a.40.2".into(),
                sample_rate: 48_000,
                channels: 2,
                kbps: 0.0,
            }),
        };
        let source = Source::from_samples(
            info,
            config.clone(),
            &video,
            Some((Bytes::from_static(&[0x11, 0x90]), &audio)),
            2000,
        );
        assert_eq!(source.info.width, 64);
        assert_eq!(source.info.height, 36);
        assert!(source.info.b_frames, "the preset's B-frames are kept");
        assert_eq!(source.info.gop_seconds, 1.0);
        assert_eq!(source.info.fps, 10.0);
        let first = &source.tags[0];
        assert_eq!((first.kind, first.ts_ms), (TagKind::Video, 0));
        assert!(source.tags.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));

        let mut demuxer = Demuxer::new(Timestamp::from_millis(0));
        let Ok(Some(MediaEvent::VideoConfig(c))) =
            demuxer.video(RtmpTimestamp(0), source.video_header.clone())
        else {
            panic!("no video config");
        };
        assert_eq!(c.record, config.record);
        assert!(matches!(
            demuxer.audio(RtmpTimestamp(0), source.audio_header.clone().unwrap()),
            Ok(Some(MediaEvent::AudioConfig(_)))
        ));
        let shift = video[0].dts_ms;
        let mut got = Vec::new();
        for t in &source.tags {
            let e = match t.kind {
                TagKind::Video => demuxer.video(RtmpTimestamp(t.ts_ms), t.body.clone()),
                TagKind::Audio => demuxer.audio(RtmpTimestamp(t.ts_ms), t.body.clone()),
            };
            if let Ok(Some(MediaEvent::Video(f))) = e {
                got.push((f.dts.as_millis(), f.pts.as_millis(), f.keyframe, f.data));
            }
        }
        let want: Vec<_> = video
            .iter()
            .map(|v| {
                (
                    v.dts_ms - shift,
                    v.pts_ms - shift,
                    v.keyframe,
                    v.data.clone(),
                )
            })
            .collect();
        assert_eq!(got, want);
        assert_eq!(demuxer.stats().audio.frames, 10);

        // the FLV file holds the same tags, after a 13-byte header
        let flv = source.flv_file();
        assert_eq!(&flv[..5], b"FLV\x01\x05");
        let body = &source.video_header;
        assert_eq!(flv[13], 9);
        assert_eq!(&flv[14..17], &(body.len() as u32).to_be_bytes()[1..]);
        assert_eq!(&flv[24..24 + body.len()], &body[..]);
    }
}
