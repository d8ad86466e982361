//! AV1 encoding of one ladder rung with rav1e.
//!
//! One [`Av1Encoder`] per rung: it takes scaled I420 [`Picture`]s and returns
//! AV1 samples (AV1-ISOBMFF §2.4: a temporal unit's OBUs, temporal delimiters
//! removed) with their timestamps, ready for the CMAF fragmenter, plus the
//! `av1C` record for the rung's init segment ([`Av1Encoder::video_config`]).
//!
//! # Why rav1e
//!
//! rav1e (0.8, the xiph encoder) is Rust with nasm-built x86 kernels: no C
//! library to ship or bind, no `unsafe` here, and an API that takes per-frame
//! key frame overrides and opaque per-frame data. Its speed presets run from
//! 0 (slowest) to 10; live needs 10 (see docs/PERFORMANCE.md, "AV1 (rav1e)
//! real time", and [`REALTIME_MAX_PIXELS_30FPS`]). It is reached through the
//! `ladder-rav1e` crate (crates/ladder-rav1e), which instantiates its generic
//! encoder for 8-bit pixels where dev and test builds optimise it.
//!
//! # rav1e settings, and why
//!
//! Names are `rav1e::EncoderConfig` fields (rav1e CLI option in brackets).
//!
//! - Speed (`--speed`): [`Av1Settings::speed`], default [`DEFAULT_SPEED`]
//!   (10, the fastest), then two overrides for live: `rdo_lookahead_frames =
//!   1` (the preset's 10 would hold ten pictures, a third of a second at 30
//!   fps, before the first packet) and `scene_detection_mode = None` (key
//!   frames only where the caller forces them, below).
//! - Low latency (`--low-latency`): `low_latency = true`, no frame
//!   reordering, so every temporal unit is one shown frame, `dts == pts`, and
//!   packets come out in input order. rav1e still decides key frame placement
//!   a few pictures ahead (its key frame lookahead is fixed), so output lags
//!   input by [`PICTURES_HELD`] pictures, 133 ms at 30 fps (x264's
//!   zerolatency rungs: one picture); [`Av1Encoder::flush`] returns the last
//!   ones.
//! - Timestamps: each picture's pts travels with it through rav1e as the
//!   frame's opaque data and comes back on its packet, so the output pts is
//!   the input pts exactly (no timebase round trip). rav1e itself counts
//!   frames, not time: its rate control assumes the nominal `fps`
//!   (`time_base`), so a source that drops frames gets proportionally fewer
//!   bits, as with x264 without `b_vfr_input`.
//! - Rate control (`--bitrate`, `--reservoir-frame-delay`): one-pass bitrate
//!   mode at `bitrate_kbps`, `quantizer = 255` (in bitrate mode the
//!   quantizer is the ceiling; rav1e's CLI also lifts it to 255 so a hard
//!   scene can get as coarse as it needs), and a reservoir of one second of
//!   frames (rounded, at least rav1e's minimum of 12): the bits of any one
//!   second stay near the target, like the x264 rungs' one-second VBV. rav1e
//!   has no hard VBV; the reservoir is its closest control.
//! - Key frames (`--keyint 0`, `--min-keyint 0`): no cadence of rav1e's own
//!   (`max_key_frame_interval` infinite) and no scene cuts: IDR placement is
//!   the caller's ([`Av1Encoder::encode`]'s `force_idr`, through
//!   `FrameTypeOverride::Key`), so every rendition cuts segments at the same
//!   pictures. A forced key frame starts a new coded video sequence: rav1e
//!   writes the sequence header OBU before it, and it is a random access
//!   point (a CMAF sync sample).
//! - Level (`--level`): the lowest AV1 level whose picture size, sample rate,
//!   header rate and Main-tier bitrate fit the rung
//!   ([`crate::media::av1::level_for`]), signalled in the sequence header and
//!   so in the codec string (`av01.0.01M.08` for 360p30 at 800 kbit/s, level
//!   2.1). rav1e does not enforce a level's bitrate; the target is below it.
//!   Nothing fits beyond 6.3 or 160 Mbit/s: level 31 ("unconstrained").
//! - Tiles and threads (`--tile-cols`, `--tile-rows`, `--threads`): rav1e
//!   encodes the tiles of a frame in parallel and, in low-latency mode with
//!   one frame of RDO lookahead, that is its main parallelism. Tile columns and rows are each the largest
//!   power of two that keeps tiles at least [`MIN_TILE_SIDE`] pixels a side
//!   (360p: 2x1, 480p: 2x1, 720p: 4x2, 1080p: 4x4), within the level's
//!   `MaxTileCols`/`MaxTiles`. Tiles cost a little efficiency (no prediction
//!   across them) which 256-pixel tiles keep small. With `threads = 0` the
//!   encoder gets one thread per tile, at most the machine's cores and
//!   [`MAX_AUTO_THREADS`]; each encoder has its own pool of that size.
//! - Colour: 8-bit 4:2:0, limited range, colour description absent
//!   (unspecified), like the x264 rungs.
//!
//! # Sequence header and `av1C`
//!
//! The `av1C` must exist before the first picture (the init segment is
//! written first). rav1e writes the sequence header OBU only into key frame
//! packets, so [`Av1Encoder::new`] encodes one grey picture with a throwaway
//! context of the same configuration (one thread; in a release build on 2
//! cores, with opening the encoder, about 50 ms at 360p and 0.5 s at 1080p,
//! once per rung start) and takes the sequence header from it; it depends only on the
//! configuration. Every key frame the real encoder writes is checked against
//! it ([`Av1Error::SequenceHeaderChanged`]).
//!
//! # Errors and panics
//!
//! Bad settings and pictures are refused before rav1e sees them (rav1e
//! asserts on some of them). Parsing our own output never panics (see
//! [`crate::media::av1`]).

use crate::media::av1::{self as obu, Level, ObuError};
use crate::media::{Timestamp, VideoConfig, VideoFrame};
use crate::pipeline::cpu::x264::fps_fraction;
use crate::pipeline::frame::{Picture, PictureMismatch};
use bytes::Bytes;
use ladder_rav1e::rav1e::prelude::{
    Config, EncoderConfig, EncoderStatus, FrameParameters, FrameTypeOverride, Opaque, Rational,
    SceneDetectionSpeed,
};
use ladder_rav1e::{Encoder as Rav1e, PlaneRef};
use std::sync::Arc;
use thiserror::Error;

/// The speed preset when a rung names none: rav1e's fastest.
pub const DEFAULT_SPEED: u8 = 10;

/// rav1e's slowest preset is 0, its fastest 10.
pub const MAX_SPEED: u8 = 10;

/// Largest width or height accepted, in pixels (the ladder's ceiling, as for
/// x264).
pub const MAX_DIMENSION: u32 = 8192;

/// Smallest width or height rav1e takes for video (not still pictures).
pub const MIN_DIMENSION: u32 = 16;

/// Highest bitrate accepted, in kbit/s (1 Gbit/s, as for x264; rav1e takes
/// bit/s in an `i32`).
pub const MAX_KBPS: u32 = 1_000_000;

/// Highest nominal frame rate accepted.
pub const MAX_FPS: f64 = crate::media::avc::MAX_FRAME_RATE;

/// Most threads per encoder when set explicitly.
pub const MAX_THREADS: usize = 64;

/// Most threads per encoder when chosen automatically (`threads = 0`).
pub const MAX_AUTO_THREADS: usize = 8;

/// Smallest tile side aimed at, in pixels (see module docs).
pub const MIN_TILE_SIDE: u32 = 256;

/// Pictures rav1e holds before the first packet comes out (and so how far
/// output lags input; measured, and checked by the tests): its key frame
/// lookahead in low-latency mode.
pub const PICTURES_HELD: usize = 4;

/// Most `receive_packet` calls per `encode` or `flush`: a bound on a loop
/// that ends by itself within a few calls, so a misbehaving library cannot
/// spin us forever.
const MAX_DRAIN_CALLS: usize = 1024;

/// Measured encode speed of [`Av1Encoder`] alone, in frames per second, on
/// the 2-core development machine (AMD EPYC VM, shared): the median of three
/// `cargo bench --bench av1` runs, each the median of 5 runs of 90 frames of
/// `testsrc2` at speed 10, tiles and threads as chosen here (2 threads). The
/// runs spread by about ±10 %; figures and command in docs/PERFORMANCE.md,
/// "AV1 (rav1e) real time". `(width, height, fps)`, smallest first.
pub const MEASURED_FPS: [(u32, u32, f64); 4] = [
    (640, 360, 30.2),
    (854, 480, 18.8),
    (1280, 720, 11.1),
    (1920, 1080, 6.0),
];

/// The largest rung, in pixels, that rav1e at speed 10 encoded at 30 fps or
/// faster on the 2-core machine ([`MEASURED_FPS`]): 640x360, and only just
/// (30.2 fps, runs from 25 to 32, with nothing else running). Decoding and
/// scaling share those cores, so [`realtime_warning`] also flags rungs
/// within [`REALTIME_HEADROOM`] of their measured speed.
pub const REALTIME_MAX_PIXELS_30FPS: u64 = 640 * 360;

/// The largest rung, in pixels, that rav1e at speed 10 encoded at 60 fps or
/// faster on the 2-core machine ([`MEASURED_FPS`]): none (360p made 30).
pub const REALTIME_MAX_PIXELS_60FPS: u64 = 0;

/// How much faster than its frame rate a rung should have encoded alone for
/// [`realtime_warning`] to say nothing: 20 %, for the decoding, scaling and
/// other rungs that share the machine and for run-to-run noise (±10 %).
pub const REALTIME_HEADROOM: f64 = 1.2;

/// Errors from configuring or running the encoder.
///
/// Whose fault: `InvalidSettings` is the rung's configuration; `Picture*`,
/// `MissingPts`, `PtsNotIncreasing` the caller's (the picture is refused,
/// the encoder is untouched and the next picture may be encoded); `Config`,
/// `Encoder`, `Bitstream`, `NoSequenceHeader`, `SequenceHeaderChanged` and
/// `LostTimestamp` are internal (rav1e failed or wrote what we did not
/// expect).
#[derive(Debug, Error)]
pub enum Av1Error {
    #[error("invalid encoder setting {field}: {reason}")]
    InvalidSettings { field: &'static str, reason: String },
    #[error("rav1e rejected the configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Picture(#[from] PictureMismatch),
    #[error("picture has no presentation timestamp")]
    MissingPts,
    #[error("picture pts {pts:?} is not after the previous one ({previous:?})")]
    PtsNotIncreasing { pts: Timestamp, previous: Timestamp },
    #[error("rav1e failed: {0}")]
    Encoder(EncoderStatus),
    #[error("rav1e wrote OBUs we cannot read: {0}")]
    Bitstream(#[from] ObuError),
    #[error("rav1e wrote no sequence header for the first key frame")]
    NoSequenceHeader,
    #[error("rav1e wrote a key frame with a sequence header other than the av1C's")]
    SequenceHeaderChanged,
    #[error("rav1e returned a packet without its picture's timestamp")]
    LostTimestamp,
    #[error("the encoder was flushed and takes no more pictures")]
    Flushed,
}

/// One AV1 rung's encoding parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Av1Settings {
    /// Output size (the pictures' size); both even (4:2:0), at least 16.
    pub width: u32,
    pub height: u32,
    /// Nominal frame rate (rate control and level).
    pub fps: f64,
    /// Target average bitrate.
    pub bitrate_kbps: u32,
    /// Encoder threads; 0 = one per tile, capped (see module docs).
    pub threads: usize,
    /// rav1e speed preset 0..=10; `None` = [`DEFAULT_SPEED`] (10, fastest).
    pub speed: Option<u8>,
}

impl Av1Settings {
    fn validate(&self) -> Result<(), Av1Error> {
        let bad = |field, reason: String| Err(Av1Error::InvalidSettings { field, reason });
        for (field, v) in [("width", self.width), ("height", self.height)] {
            if v < MIN_DIMENSION || v % 2 != 0 || v > MAX_DIMENSION {
                return bad(
                    field,
                    format!("{v} is not an even size in {MIN_DIMENSION}..={MAX_DIMENSION}"),
                );
            }
        }
        if !(self.fps.is_finite() && self.fps >= 0.001 && self.fps <= MAX_FPS) {
            return bad("fps", format!("{} is not in 0.001..={MAX_FPS}", self.fps));
        }
        if self.bitrate_kbps == 0 || self.bitrate_kbps > MAX_KBPS {
            return bad(
                "bitrate_kbps",
                format!("{} is not in 1..={MAX_KBPS}", self.bitrate_kbps),
            );
        }
        if self.threads > MAX_THREADS {
            return bad(
                "threads",
                format!("{} is above {MAX_THREADS}", self.threads),
            );
        }
        if let Some(speed) = self.speed.filter(|&s| s > MAX_SPEED) {
            return bad("speed", format!("{speed} is not in 0..={MAX_SPEED}"));
        }
        Ok(())
    }
}

/// Largest power of two at most `n` (1 for 0).
fn floor_pow2(n: u32) -> u32 {
    if n <= 1 {
        1
    } else {
        1 << (31 - n.leading_zeros())
    }
}

/// Tile columns and rows for a rung (see module docs): each a power of two,
/// tiles at least [`MIN_TILE_SIDE`] a side, within the level's limits.
pub fn tiles_for(width: u32, height: u32, level: Option<&Level>) -> (u32, u32) {
    let mut cols = floor_pow2(width / MIN_TILE_SIDE);
    let mut rows = floor_pow2(height / MIN_TILE_SIDE);
    if let Some(level) = level {
        cols = cols.min(floor_pow2(level.max_tile_cols));
        while cols * rows > level.max_tiles && rows > 1 {
            rows /= 2;
        }
        while cols * rows > level.max_tiles && cols > 1 {
            cols /= 2;
        }
    }
    // rav1e takes at most 64 of each.
    (cols.min(64), rows.min(64))
}

/// Threads for `tiles` tiles when the rung leaves it to us.
fn auto_threads(tiles: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    tiles.min(cores).clamp(1, MAX_AUTO_THREADS)
}

/// How one encoder was set up (for logs and the benchmark).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Av1Layout {
    pub speed: u8,
    pub tile_cols: u32,
    pub tile_rows: u32,
    pub threads: usize,
    /// `seq_level_idx[0]`.
    pub level_idx: u8,
}

/// The rav1e configuration of a rung (see module docs for each choice).
fn encoder_config(s: &Av1Settings, layout: &Av1Layout) -> EncoderConfig {
    let mut c = EncoderConfig::with_speed_preset(layout.speed);
    c.width = s.width as usize;
    c.height = s.height as usize;
    let (fps_num, fps_den) = fps_fraction(s.fps);
    c.time_base = Rational::new(u64::from(fps_den), u64::from(fps_num));
    c.bit_depth = 8;
    c.low_latency = true;
    c.speed_settings.rdo_lookahead_frames = 1;
    c.speed_settings.scene_detection_mode = SceneDetectionSpeed::None;
    c.set_key_frame_interval(0, 0);
    // Validated: at most 1e9, well inside i32.
    c.bitrate = i32::try_from(u64::from(s.bitrate_kbps) * 1000).unwrap_or(i32::MAX);
    c.quantizer = 255;
    c.reservoir_frame_delay = Some((s.fps.round() as i32).clamp(12, 131_072));
    c.level_idx = Some(layout.level_idx);
    c.tile_cols = layout.tile_cols as usize;
    c.tile_rows = layout.tile_rows as usize;
    c
}

/// One rung's AV1 encoder. `Send`, not `Sync`.
pub struct Av1Encoder {
    ctx: Rav1e,
    config: Arc<VideoConfig>,
    /// The sequence header OBU of the av1C, which every key frame must repeat.
    sequence_header_obu: Bytes,
    layout: Av1Layout,
    width: u32,
    height: u32,
    last_pts: Option<Timestamp>,
    flushed: bool,
}

impl std::fmt::Debug for Av1Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Av1Encoder")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("codec", &self.config.codec_string)
            .field("layout", &self.layout)
            .field("flushed", &self.flushed)
            .finish()
    }
}

impl Av1Encoder {
    /// Open an encoder for one rung (see the module docs on the sequence
    /// header: this encodes one throwaway picture).
    pub fn new(s: &Av1Settings) -> Result<Av1Encoder, Av1Error> {
        s.validate()?;
        let level = obu::level_for(s.width, s.height, s.fps, s.bitrate_kbps);
        let (tile_cols, tile_rows) = tiles_for(s.width, s.height, level.as_ref());
        let tiles = (tile_cols * tile_rows) as usize;
        let layout = Av1Layout {
            speed: s.speed.unwrap_or(DEFAULT_SPEED),
            tile_cols,
            tile_rows,
            threads: if s.threads == 0 {
                auto_threads(tiles)
            } else {
                s.threads
            },
            level_idx: level.map_or(obu::LEVEL_UNCONSTRAINED, |l| l.seq_level_idx),
        };
        let enc = encoder_config(s, &layout);
        let open = |threads: usize| -> Result<Rav1e, Av1Error> {
            let config = Config::new()
                .with_encoder_config(enc.clone())
                .with_threads(threads);
            Rav1e::new(&config).map_err(|e| Av1Error::Config(e.to_string()))
        };
        let sequence_header_obu = probe_sequence_header(open(1)?, s)?;
        let record = obu::build_av1c(&sequence_header_obu)?;
        let mut config = obu::video_config(record)?;
        config.frame_rate = Some(s.fps);
        Ok(Av1Encoder {
            ctx: open(layout.threads)?,
            config: Arc::new(config),
            sequence_header_obu,
            layout,
            width: s.width,
            height: s.height,
            last_pts: None,
            flushed: false,
        })
    }

    /// The decoder configuration for the rung's CMAF init segment: the av1C
    /// built from rav1e's sequence header, parsed back with
    /// [`obu::video_config`] (codec string `av01.P.LLT.DD`, `profile_idc` =
    /// `seq_profile`, `level_idc` = `seq_level_idx[0]`, `nal_length_size` 0:
    /// AV1 samples are OBUs with their own sizes). `frame_rate` is the
    /// nominal `fps` (the sequence header carries no timing info).
    pub fn video_config(&self) -> Arc<VideoConfig> {
        self.config.clone()
    }

    /// Tiles, threads, speed and level in use.
    pub fn layout(&self) -> Av1Layout {
        self.layout
    }

    /// Encode one picture; `force_idr` makes it a key frame that starts a
    /// coded video sequence (a CMAF sync sample, usable as a segment start).
    ///
    /// Returns the samples rav1e finished, oldest first: none for the first
    /// [`PICTURES_HELD`] pictures, then normally one per picture.
    /// [`Av1Encoder::flush`] returns the rest. Each sample's `pts` is its
    /// picture's timestamp exactly, `dts == pts` (no reordering), `keyframe`
    /// means a random access point (checked in the bitstream), and `data` is
    /// its OBUs without temporal delimiters (AV1-ISOBMFF §2.4), the sequence
    /// header only in key frames.
    ///
    /// A picture of the wrong size, or without a pts after the previous one,
    /// is refused with an error and the encoder is unchanged: the caller drops
    /// it and goes on.
    pub fn encode(
        &mut self,
        picture: &Picture,
        force_idr: bool,
    ) -> Result<Vec<VideoFrame>, Av1Error> {
        if self.flushed {
            return Err(Av1Error::Flushed);
        }
        self.check_picture(picture)?;
        let pts = picture.pts.ok_or(Av1Error::MissingPts)?;
        if let Some(previous) = self.last_pts {
            if pts <= previous {
                return Err(Av1Error::PtsNotIncreasing { pts, previous });
            }
        }
        let (w, h) = (self.width as usize, self.height as usize);
        let plane = |i: usize, width, height| PlaneRef {
            data: &picture.planes[i].data,
            stride: picture.planes[i].stride,
            width,
            height,
        };
        let planes = [
            plane(0, w, h),
            plane(1, w / 2, h / 2),
            plane(2, w / 2, h / 2),
        ];
        let params = FrameParameters {
            frame_type_override: if force_idr {
                FrameTypeOverride::Key
            } else {
                FrameTypeOverride::No
            },
            opaque: Some(Opaque::new(pts)),
            ..Default::default()
        };
        self.ctx.send(planes, params).map_err(Av1Error::Encoder)?;
        self.last_pts = Some(pts);
        self.drain()
    }

    /// Drain what rav1e still holds. The encoder takes no pictures afterwards.
    pub fn flush(&mut self) -> Result<Vec<VideoFrame>, Av1Error> {
        if self.flushed {
            return Ok(Vec::new());
        }
        self.flushed = true;
        self.ctx.flush().map_err(Av1Error::Encoder)?;
        self.drain()
    }

    /// Every packet rav1e has ready, as samples.
    fn drain(&mut self) -> Result<Vec<VideoFrame>, Av1Error> {
        let mut out = Vec::new();
        for _ in 0..MAX_DRAIN_CALLS {
            match self.ctx.receive() {
                Ok(packet) => {
                    let pts = packet
                        .opaque
                        .and_then(|o| o.downcast::<Timestamp>().ok())
                        .map(|b| *b)
                        .ok_or(Av1Error::LostTimestamp)?;
                    out.push(self.sample(&packet.data, pts)?);
                }
                Err(EncoderStatus::Encoded) => continue,
                Err(EncoderStatus::NeedMoreData | EncoderStatus::LimitReached) => break,
                Err(status) => return Err(Av1Error::Encoder(status)),
            }
        }
        Ok(out)
    }

    /// A temporal unit from rav1e as a sample.
    fn sample(&self, tu: &[u8], pts: Timestamp) -> Result<VideoFrame, Av1Error> {
        let sample = obu::sample_from_temporal_unit(tu, false)?;
        if sample.random_access_point
            && sample.sequence_header_obu != Some(&self.sequence_header_obu[..])
        {
            return Err(Av1Error::SequenceHeaderChanged);
        }
        Ok(VideoFrame {
            dts: pts,
            pts,
            keyframe: sample.random_access_point,
            data: sample.data,
        })
    }

    /// Check a picture's geometry against the encoder's.
    fn check_picture(&self, picture: &Picture) -> Result<(), Av1Error> {
        Ok(picture.check_i420(self.width, self.height)?)
    }
}

/// The sequence header OBU rav1e writes for this configuration: one grey
/// picture through a throwaway context (see module docs).
fn probe_sequence_header(mut ctx: Rav1e, s: &Av1Settings) -> Result<Bytes, Av1Error> {
    let (w, h) = (s.width as usize, s.height as usize);
    let grey = vec![128u8; w * h];
    let plane = |width, height| PlaneRef {
        data: &grey,
        stride: width,
        width,
        height,
    };
    let planes = [plane(w, h), plane(w / 2, h / 2), plane(w / 2, h / 2)];
    ctx.send(planes, FrameParameters::default())
        .map_err(Av1Error::Encoder)?;
    ctx.flush().map_err(Av1Error::Encoder)?;
    for _ in 0..MAX_DRAIN_CALLS {
        match ctx.receive() {
            Ok(packet) => {
                let sample = obu::sample_from_temporal_unit(&packet.data, false)?;
                return sample
                    .sequence_header_obu
                    .map(Bytes::copy_from_slice)
                    .ok_or(Av1Error::NoSequenceHeader);
            }
            Err(EncoderStatus::Encoded | EncoderStatus::NeedMoreData) => continue,
            Err(EncoderStatus::LimitReached) => break,
            Err(status) => return Err(Av1Error::Encoder(status)),
        }
    }
    Err(Av1Error::NoSequenceHeader)
}

/// A warning when an AV1 rung may not keep real time, from what rav1e
/// managed on the 2-core reference machine ([`MEASURED_FPS`]); `None` when
/// it had [`REALTIME_HEADROOM`] to spare.
///
/// A rung is judged by the measured speed of the smallest measured size at
/// least as large (so, conservatively); beyond 1080p nothing was measured and
/// the warning says so. Two messages: below the measured speed it "will not
/// keep real time", within the headroom it is "at the limit".
pub fn realtime_warning(width: u32, height: u32, fps: f64) -> Option<String> {
    let pixels = u64::from(width) * u64::from(height);
    let measured = MEASURED_FPS
        .iter()
        .find(|&&(w, h, _)| u64::from(w) * u64::from(h) >= pixels);
    let advice = "use a smaller size, a lower frame rate, or H.264 for this rung";
    match measured {
        Some(&(_, _, measured_fps)) if measured_fps >= fps * REALTIME_HEADROOM => None,
        Some(&(w, h, measured_fps)) => {
            let verdict = if measured_fps >= fps {
                "is at the limit of real time"
            } else {
                "will not keep real time"
            };
            Some(format!(
                "AV1 rung {width}x{height} at {fps} fps {verdict}: rav1e at speed {DEFAULT_SPEED} \
                 encoded {w}x{h} at {measured_fps} fps on 2 cores with nothing else running \
                 (docs/PERFORMANCE.md); {advice}"
            ))
        }
        None => {
            let &(w, h, measured_fps) = MEASURED_FPS.last()?;
            Some(format!(
                "AV1 rung {width}x{height} at {fps} fps is larger than any measured and will \
                 not keep real time: rav1e at speed {DEFAULT_SPEED} encoded {w}x{h} at \
                 {measured_fps} fps on 2 cores (docs/PERFORMANCE.md); {advice}"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    //! Real encodes at 640x360 (the smallest rung) and 64x48, checked in the
    //! bitstream, as CMAF with ffprobe, and decoded by dav1d through ffmpeg.

    use super::*;
    use crate::media::av1::{obus, Av1Config, OBU_SEQUENCE_HEADER, OBU_TEMPORAL_DELIMITER};
    use crate::media::{VideoCodec, MILLIS, VIDEO_TIMESCALE};
    use crate::packaging::cmaf::{self, ChunkHeader, CodecSetup, Sample, TrackSetup};
    use std::collections::BTreeSet;
    use std::process::Command;

    const W: u32 = 640;
    const H: u32 = 360;
    const FPS: f64 = 30.0;

    fn settings() -> Av1Settings {
        Av1Settings {
            width: W,
            height: H,
            fps: FPS,
            bitrate_kbps: 800,
            threads: 0,
            speed: None,
        }
    }

    /// Millisecond pts of frame `i` at 30 fps (0, 33, 67, 100...: uneven
    /// steps, and not a multiple of anything rav1e counts in).
    fn pts_of(i: usize) -> Timestamp {
        Timestamp::new((i as f64 * 1000.0 / FPS).round() as i64, MILLIS)
    }

    /// A moving test pattern: a diagonal luma ramp sliding 4 pixels a frame,
    /// a bright square crossing it, chroma ramps.
    fn moving_pictures(width: u32, height: u32, frames: usize) -> Vec<Picture> {
        (0..frames)
            .map(|i| {
                let mut p = Picture::new(width, height);
                let square = (i * 8) % (width as usize).saturating_sub(64).max(1);
                for y in 0..p.planes[0].height {
                    for (x, v) in p.planes[0].row_mut(y).iter_mut().enumerate() {
                        let inside = (square..square + 64).contains(&x) && (32..96).contains(&y);
                        *v = if inside {
                            235
                        } else {
                            ((x + y + 4 * i) % 200 + 16) as u8
                        };
                    }
                }
                for (k, plane) in p.planes[1..].iter_mut().enumerate() {
                    for y in 0..plane.height {
                        for (x, v) in plane.row_mut(y).iter_mut().enumerate() {
                            *v = (64 + (x * (k + 1) + y + i) % 128) as u8;
                        }
                    }
                }
                p.pts = Some(pts_of(i));
                p.seq = i as u64;
                p
            })
            .collect()
    }

    /// Runs a tool; `None` when it is not installed.
    fn run(name: &str, args: &[&str]) -> Option<std::process::Output> {
        match Command::new(name).args(args).output() {
            Ok(out) => Some(out),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("{name}: {e}"),
        }
    }

    fn stdout_of(name: &str, args: &[&str]) -> String {
        let out = run(name, args).expect("tool present");
        assert!(
            out.status.success(),
            "{name} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Init segment plus one segment per key frame, three chunks each, as a
    /// player would append them; 90 kHz media time from the samples' pts.
    fn cmaf_file(config: &VideoConfig, frames: &[VideoFrame]) -> (Vec<u8>, Vec<i64>) {
        let track = TrackSetup {
            track_id: 1,
            timescale: VIDEO_TIMESCALE,
            codec: CodecSetup::video(config),
        };
        let dts: Vec<i64> = frames
            .iter()
            .map(|f| f.dts.rescale(VIDEO_TIMESCALE).ticks)
            .collect();
        let samples: Vec<Sample> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| Sample {
                duration: dts.get(i + 1).map_or(3000, |next| (next - dts[i]) as u32),
                composition_offset: 0,
                keyframe: f.keyframe,
                data: f.data.clone(),
            })
            .collect();
        let starts: Vec<usize> = (0..frames.len()).filter(|&i| frames[i].keyframe).collect();
        let mut file = cmaf::init_segment(&track).to_vec();
        let mut sequence_number = 1;
        for (s, &start) in starts.iter().enumerate() {
            let end = starts.get(s + 1).copied().unwrap_or(frames.len());
            let per_chunk = (end - start).div_ceil(3);
            for (c, first) in (start..end).step_by(per_chunk).enumerate() {
                let header = ChunkHeader {
                    sequence_number,
                    track_id: track.track_id,
                    base_media_decode_time: dts[first] as u64,
                    segment_start: c == 0,
                    producer_reference: None,
                    video: true,
                };
                let last = (first + per_chunk).min(end);
                file.extend_from_slice(&cmaf::chunk(&header, &samples[first..last]));
                sequence_number += 1;
            }
        }
        (file, dts)
    }

    #[test]
    fn key_frames_where_forced_exact_pts_clean_samples_and_cmaf_that_dav1d_decodes() {
        const FRAMES: usize = 30;
        let forced: BTreeSet<usize> = [0, 15].into();
        let mut enc = Av1Encoder::new(&settings()).expect("encoder opens");
        assert_eq!(
            enc.layout(),
            Av1Layout {
                speed: 10,
                tile_cols: 2,
                tile_rows: 1,
                threads: auto_threads(2),
                level_idx: 1,
            }
        );
        let config = enc.video_config();
        let pictures = moving_pictures(W, H, FRAMES);
        let mut out = Vec::new();
        for (i, pic) in pictures.iter().enumerate() {
            let got = enc.encode(pic, forced.contains(&i)).expect("encodes");
            // rav1e holds PICTURES_HELD pictures, then one out per picture in.
            assert_eq!(got.len(), usize::from(i >= PICTURES_HELD), "picture {i}");
            out.extend(got);
        }
        let rest = enc.flush().expect("flushes");
        assert_eq!(rest.len(), PICTURES_HELD);
        out.extend(rest);
        assert_eq!(out.len(), FRAMES);

        for (i, (frame, pic)) in out.iter().zip(&pictures).enumerate() {
            let pts = pic.pts.expect("test pictures have pts");
            assert_eq!(
                (frame.pts.ticks, frame.pts.timescale),
                (pts.ticks, pts.timescale),
                "pts of frame {i} round-trips exactly, in order"
            );
            assert_eq!(
                (frame.dts.ticks, frame.dts.timescale),
                (pts.ticks, pts.timescale),
                "no reordering: dts == pts"
            );
        }
        let keyframes: BTreeSet<usize> = (0..FRAMES).filter(|&i| out[i].keyframe).collect();
        assert_eq!(keyframes, forced);

        // The av1C describes the stream and holds the sequence header that
        // starts every key frame sample.
        assert_eq!(config.codec, VideoCodec::Av1);
        assert_eq!((config.width, config.height), (W, H));
        assert_eq!(
            config.codec_string, "av01.0.01M.08",
            "Main, level 2.1, 8-bit"
        );
        assert_eq!((config.profile_idc, config.level_idc), (0, 1));
        assert_eq!(config.chroma_format_idc, 1);
        assert_eq!((config.bit_depth_luma, config.bit_depth_chroma), (8, 8));
        assert_eq!(config.frame_rate, Some(FPS));
        assert_eq!(config.nal_length_size, 0);
        let av1c = Av1Config::parse(&config.record).expect("av1C parses");
        assert_eq!(&config.record[..4], &[0x81, 0x01, 0x0C, 0x00]);
        assert_eq!(
            (
                av1c.sequence_header.max_frame_width,
                av1c.sequence_header.max_frame_height
            ),
            (W, H)
        );
        assert_eq!(av1c.sequence_header.timing, None);

        for (i, f) in out.iter().enumerate() {
            let units: Vec<_> = obus(&f.data)
                .collect::<Result<_, _>>()
                .expect("samples are well-formed OBUs");
            let types: Vec<u8> = units.iter().map(|o| o.obu_type).collect();
            assert!(
                !types.contains(&OBU_TEMPORAL_DELIMITER),
                "frame {i}: no temporal delimiter in samples, got {types:?}"
            );
            assert!(units.iter().all(|o| o.has_size_field));
            let headers: Vec<_> = units
                .iter()
                .filter(|o| o.obu_type == OBU_SEQUENCE_HEADER)
                .collect();
            if f.keyframe {
                assert_eq!(types[0], OBU_SEQUENCE_HEADER, "frame {i}");
                assert_eq!(headers.len(), 1);
                assert_eq!(headers[0].bytes, &av1c.sequence_header_obu[..]);
            } else {
                assert!(
                    headers.is_empty(),
                    "frame {i}: sequence header off key frames"
                );
            }
        }

        // As CMAF: ffprobe and dav1d see 30 AV1 640x360 frames, key frames
        // where forced, and the pts as written.
        if run("ffprobe", &["-version"]).is_none() || run("ffmpeg", &["-version"]).is_none() {
            eprintln!("SKIPPED: ffmpeg/ffprobe not found on PATH; AV1 CMAF decode check not run");
            return;
        }
        let (file, dts) = cmaf_file(&config, &out);
        let dir = std::env::temp_dir().join(format!("ladder-av1-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("rung.mp4");
        std::fs::write(&path, &file).expect("write file");
        let file_arg = path.to_str().expect("utf-8 temp path");

        let stream = stdout_of(
            "ffprobe",
            &[
                "-v",
                "error",
                "-count_packets",
                "-show_entries",
                "stream=codec_name,width,height,nb_read_packets",
                "-of",
                "default=nw=1",
                file_arg,
            ],
        );
        for line in [
            "codec_name=av1",
            "width=640",
            "height=360",
            "nb_read_packets=30",
        ] {
            assert!(stream.lines().any(|l| l == line), "{line} in {stream}");
        }
        let packets = stdout_of(
            "ffprobe",
            &[
                "-v",
                "error",
                "-show_entries",
                "packet=pts,flags",
                "-of",
                "csv=p=0",
                file_arg,
            ],
        );
        let packets: Vec<(i64, bool)> = packets
            .lines()
            .map(|l| {
                let (pts, flags) = l.split_once(',').expect("pts,flags");
                (pts.parse().expect("pts"), flags.starts_with('K'))
            })
            .collect();
        let expected: Vec<(i64, bool)> =
            (0..FRAMES).map(|i| (dts[i], forced.contains(&i))).collect();
        assert_eq!(packets, expected);

        // dav1d decodes every frame without a word, and finds key frames in
        // the bitstream exactly where forced.
        let decode = |extra: &[&str]| {
            let mut args = vec![
                "-hide_banner",
                "-nostats",
                "-c:v",
                "libdav1d",
                "-i",
                file_arg,
            ];
            args.extend_from_slice(extra);
            args.extend_from_slice(&["-f", "null", "-"]);
            let out = run("ffmpeg", &args).expect("ffmpeg present");
            assert!(
                out.status.success(),
                "dav1d decode: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stderr).into_owned()
        };
        assert_eq!(decode(&["-v", "error"]), "", "decode errors");
        let info = decode(&["-v", "info", "-vf", "showinfo"]);
        let shown: Vec<&str> = info
            .split("[Parsed_showinfo")
            .filter(|s| s.contains(" n:"))
            .collect();
        assert_eq!(shown.len(), FRAMES, "frames decoded");
        let decoded_keys: BTreeSet<usize> = (0..FRAMES)
            .filter(|&i| shown[i].contains("iskey:1"))
            .collect();
        assert_eq!(decoded_keys, forced);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_pictures_are_refused_and_the_encoder_carries_on() {
        let s = Av1Settings {
            width: 64,
            height: 48,
            ..settings()
        };
        let mut enc = Av1Encoder::new(&s).expect("encoder opens");
        let picture = |i: usize| {
            let mut p = Picture::new(64, 48);
            p.pts = Some(pts_of(i));
            p
        };

        let mut wrong_size = Picture::new(64, 32);
        wrong_size.pts = Some(pts_of(0));
        assert!(matches!(
            enc.encode(&wrong_size, false),
            Err(Av1Error::Picture(PictureMismatch::Size {
                got_width: 64,
                got_height: 32,
                width: 64,
                height: 48
            }))
        ));

        let mut short = picture(0);
        short.planes[2].data.truncate(10);
        assert!(matches!(
            enc.encode(&short, false),
            Err(Av1Error::Picture(PictureMismatch::Plane { plane: 2, .. }))
        ));

        let mut no_pts = picture(0);
        no_pts.pts = None;
        assert!(matches!(
            enc.encode(&no_pts, false),
            Err(Av1Error::MissingPts)
        ));

        assert!(enc.encode(&picture(5), true).expect("encodes").is_empty());
        for stale in [5, 4] {
            assert!(matches!(
                enc.encode(&picture(stale), false),
                Err(Av1Error::PtsNotIncreasing { .. })
            ));
        }
        // A pts in another timescale is fine as long as it moves forward,
        // and comes back in its own timescale.
        let mut later = picture(0);
        later.pts = Some(Timestamp::new(90_000, VIDEO_TIMESCALE));
        assert!(enc.encode(&later, false).expect("encodes").is_empty());

        let out = enc.flush().expect("flushes");
        assert_eq!(out.len(), 2, "the refusals left exactly two pictures in");
        assert_eq!((out[0].pts.ticks, out[0].pts.timescale), (167, MILLIS));
        assert!(out[0].keyframe);
        assert_eq!(
            (out[1].pts.ticks, out[1].pts.timescale),
            (90_000, VIDEO_TIMESCALE)
        );
        assert!(!out[1].keyframe);
        assert!(matches!(
            enc.encode(&picture(10), false),
            Err(Av1Error::Flushed)
        ));
        assert!(enc.flush().expect("flushing twice is harmless").is_empty());
    }

    #[test]
    fn settings_are_checked_before_rav1e_sees_them() {
        let small = || Av1Settings {
            width: 64,
            height: 48,
            ..settings()
        };
        let invalid = |s: Av1Settings| match Av1Encoder::new(&s) {
            Err(Av1Error::InvalidSettings { field, .. }) => field,
            other => panic!("expected InvalidSettings, got {other:?}"),
        };
        for (s, field) in [
            (
                Av1Settings {
                    width: 65,
                    ..small()
                },
                "width",
            ),
            (
                Av1Settings {
                    width: 8,
                    ..small()
                },
                "width",
            ),
            (
                Av1Settings {
                    width: 8194,
                    ..small()
                },
                "width",
            ),
            (
                Av1Settings {
                    height: 0,
                    ..small()
                },
                "height",
            ),
            (
                Av1Settings {
                    fps: f64::NAN,
                    ..small()
                },
                "fps",
            ),
            (
                Av1Settings {
                    fps: 0.0,
                    ..small()
                },
                "fps",
            ),
            (
                Av1Settings {
                    bitrate_kbps: 0,
                    ..small()
                },
                "bitrate_kbps",
            ),
            (
                Av1Settings {
                    bitrate_kbps: MAX_KBPS + 1,
                    ..small()
                },
                "bitrate_kbps",
            ),
            (
                Av1Settings {
                    threads: MAX_THREADS + 1,
                    ..small()
                },
                "threads",
            ),
            (
                Av1Settings {
                    speed: Some(11),
                    ..small()
                },
                "speed",
            ),
        ] {
            assert_eq!(invalid(s), field);
        }
        let slow = Av1Encoder::new(&Av1Settings {
            speed: Some(9),
            threads: 1,
            ..small()
        })
        .expect("speed 9, one thread, opens");
        assert_eq!(slow.layout().speed, 9);
        assert_eq!(slow.layout().threads, 1);
        assert_eq!(slow.layout().level_idx, 0, "64x48 fits level 2.0");
        assert_eq!(slow.video_config().codec_string, "av01.0.00M.08");
    }

    #[test]
    fn tiles_are_at_least_256_pixels_a_side_within_the_level() {
        let tiles = |w, h, fps, kbps| tiles_for(w, h, obu::level_for(w, h, fps, kbps).as_ref());
        assert_eq!(tiles(640, 360, 30.0, 800), (2, 1));
        assert_eq!(tiles(854, 480, 30.0, 1200), (2, 1));
        assert_eq!(tiles(1280, 720, 30.0, 2500), (4, 2));
        assert_eq!(tiles(1920, 1080, 30.0, 4500), (4, 4));
        assert_eq!(tiles(3840, 2160, 30.0, 12000), (8, 8));
        assert_eq!(tiles(64, 48, 30.0, 100), (1, 1));
        // Level 2.0 allows 4 tile columns and 8 tiles.
        let level = obu::LEVELS[0];
        assert_eq!(tiles_for(4096, 2304, Some(&level)), (4, 2));
        assert_eq!(tiles_for(4096, 2304, None), (16, 8));
    }

    #[test]
    fn realtime_warnings_follow_the_measurements() {
        // Well within: 360p at 15 fps (30.2 measured, 2x).
        assert_eq!(realtime_warning(640, 360, 15.0), None);
        assert_eq!(realtime_warning(426, 240, 24.0), None);
        // 360p30: encoded at 30.2 fps alone, no headroom.
        let at_limit = realtime_warning(640, 360, 30.0).expect("a warning");
        assert!(at_limit.contains("at the limit"), "{at_limit}");
        assert!(at_limit.contains("640x360 at 30.2 fps"), "{at_limit}");
        // Beyond: 720p30 (11.1 measured), 360p60, and 1080p judged by 1080p.
        for (w, h, fps) in [(1280, 720, 30.0), (640, 360, 60.0), (1920, 1080, 25.0)] {
            let msg = realtime_warning(w, h, fps).expect("a warning");
            assert!(msg.contains("will not keep real time"), "{msg}");
        }
        // 960x540 is judged by the next measured size up, 720p.
        let msg = realtime_warning(960, 540, 30.0).expect("a warning");
        assert!(msg.contains("1280x720 at 11.1 fps"), "{msg}");
        let msg = realtime_warning(3840, 2160, 30.0).expect("a warning");
        assert!(msg.contains("larger than any measured"), "{msg}");
        // The constants agree with the table.
        let fastest = |target: f64| {
            MEASURED_FPS
                .iter()
                .filter(|&&(_, _, fps)| fps >= target)
                .map(|&(w, h, _)| u64::from(w) * u64::from(h))
                .max()
                .unwrap_or(0)
        };
        assert_eq!(REALTIME_MAX_PIXELS_30FPS, fastest(30.0));
        assert_eq!(REALTIME_MAX_PIXELS_60FPS, fastest(60.0));
    }

    #[test]
    fn encoder_is_send() {
        fn send<T: Send>() {}
        send::<Av1Encoder>();
    }
}
