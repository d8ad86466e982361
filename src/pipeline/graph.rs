//! The per-channel pipeline graph: one decode per channel, shared by every
//! encoded rung.
//!
//! ```text
//! caller (tokio task)      decode thread                          one thread per rung
//!
//! video_config ─┐                                               ┌─► [RUNG_QUEUE] DropNewestKeepForced ─► fps cap ─► scale ─► x264/rav1e ─► RungSink
//! video_frame ──┴─► [DECODE_QUEUE] ─► libavcodec ─► PictureRef ─┤
//! (try_send only)   DropUntilKeyframe  force_idr by pts         └─► [RUNG_QUEUE] DropNewestKeepForced ─► fps cap ─► scale ─► x264/rav1e ─► RungSink
//!                                                   (pooled, shared)
//! ```
//!
//! With [`DecodeBackend::Nvdec`] (the `hybrid` placement) the decode thread is
//! NVDEC, and it also scales on the GPU: each rung gets its own picture at
//! its size (the rung's swscale step is skipped), downloaded to the host for
//! x264. A GPU failure switches the thread to libavcodec at the next
//! keyframe (`gpu::hybrid`).
//!
//! # Stages and threads
//!
//! Each stage runs on a dedicated OS thread (never a tokio worker; ARCHITECTURE
//! convention 2): one decode thread per channel, named `ladder-<channel>-dec`,
//! and one thread per encoded rung, `ladder-<channel>-<rung>` (shortened to the
//! 15 bytes Linux keeps, see [`thread_name`]). Stages are joined by bounded
//! crossbeam queues. The caller's per-frame calls ([`ChannelPipeline::video_config`],
//! [`ChannelPipeline::video_frame`]) only `try_send`: they never wait for a stage.
//!
//! # Queues and overflow policies (convention 3)
//!
//! - Decode input, [`DECODE_QUEUE`] access units, [`OverflowPolicy::DropUntilKeyframe`]:
//!   when the queue is full the access unit is dropped, and so is every
//!   following one until the next keyframe that fits (a decoder cannot skip a
//!   reference picture). Counted in [`DecodeStageStats::dropped_queue_full`].
//!   A new configuration that finds the queue full is kept aside and sent
//!   before the next access unit that fits; it is never lost.
//! - Rung input, [`RUNG_QUEUE`] pictures, [`OverflowPolicy::DropNewestKeepForced`]:
//!   a slow rung loses whole pictures at its own input (counted in
//!   [`RungStats::dropped_queue_full`]) and never holds back the decoder or the
//!   other rungs. A picture that must be an IDR (a segment starts there) is
//!   not the one lost: the oldest queued picture that is not forced makes room
//!   for it, so the rung's IDRs stay on the source's, one per segment, even
//!   when the rung is a segment or more behind.
//!
//! Pictures come from one [`PicturePool`] per channel, sized for every queue
//! of every rung ([`pool_capacity`]), and are fanned out as [`PictureRef`]s:
//! the steady state allocates no picture.
//!
//! # IDR placement (`force_idr`)
//!
//! IDRs on every rung go exactly where the caller asks ([`EncoderSettings::source_idrs`]:
//! x264's own GOP cadence and scene cuts are off), so that all renditions share
//! segment boundaries. The flag travels with the access unit; the decode stage
//! remembers the pts of forced access units (at most [`MAX_FORCED_PENDING`])
//! and sets [`Picture::force_idr`] on the picture with that pts when the
//! decoder returns it (pictures come out in presentation order, so B-frame
//! reordering does not matter). The flag is never lost on the way:
//!
//! - an access unit dropped at the decode input passes its flag to the next
//!   access unit that is queued;
//! - a forced access unit that yields no picture (corrupt, or forgotten beyond
//!   the bound) passes it to the next picture out, as does one pending when
//!   the decoder is replaced;
//! - a forced picture dropped at a rung's full queue, or refused by the rung's
//!   encoder, passes it to the next picture that rung encodes.
//!
//! `Picture::source_idr` (the source access unit was an IDR) is not used to
//! place IDRs.
//!
//! # Frame-rate cap (`fps_max`)
//!
//! A rung keeps a picture when its pts is at least `last kept pts + 3/4 of
//! 1/fps_max`: 60 fps capped to 30 keeps exactly every other picture, and
//! jitter of up to a quarter of the interval neither drops a picture that
//! should stay nor keeps one too many. A forced picture is always kept and
//! becomes the new anchor; a pts that goes backwards re-anchors too. Dropped
//! pictures are counted in [`RungStats::dropped_fps_cap`]. The encoder's
//! nominal rate is the source's (`VideoConfig::frame_rate`, [`DEFAULT_FPS`]
//! when the SPS does not say) capped by `fps_max`.
//!
//! # Source changes
//!
//! A configuration equal to the current one is a no-op. A different one
//! flushes the old decoder (its last pictures go out first) and opens a new
//! one. Rungs follow the pictures they get, not the configuration: when the
//! decoded size or the sample aspect ratio changes, a rung flushes its encoder
//! (its last frames are delivered), then builds a new scaler and encoder for
//! the new size ([`scale::rung_size`]: aspect kept, even, never upscaled) and
//! calls [`RungSink::rung_config`] before the new encoder's first frame.
//!
//! # GPU decoding (the hybrid backend)
//!
//! With [`DecodeBackend::Nvdec`] the decode thread makes the GPU's context
//! current and drives a [`FrontEnd`] ([`hybrid::NvdecFront`]: NVDEC, then CUDA
//! scaling) instead of libavcodec: each decoded picture is rendered once per
//! rung size ([`scale::rung_size`], as a rung would scale it) into a pooled
//! host I420 picture, and each rung is sent its own picture with the same
//! fan-out as the CPU stage (`send_to_port`: queues, overflow, forced IDRs).
//! A rung does not rescale a picture already at its size.
//!
//! The CPU decoder stays in the stage as the fallback, counted in
//! [`DecodeStageStats::gpu_fallbacks`] and logged once: when the GPU cannot be
//! used at start, the stage is the CPU one from the first configuration; when
//! the front end fails with [`FrontError::Device`] in mid-stream, it is
//! dropped and access units are dropped (`dropped_no_decoder`) until the next
//! keyframe, where the CPU decoder starts. Its pictures come at the source's
//! size and the rungs scale them (same source format: same encoders, no new
//! configuration); pending IDR requests pass to the next picture, so every
//! rung's IDRs stay on the source's. Viewers see the picture hold until that
//! keyframe. [`FrontError::Stream`] (malformed input) costs the access unit
//! only, as a CPU decode error does.
//!
//! # GPU encoding (the gpu backend)
//!
//! With [`DecodeBackend::Gpu`] the decode stage is the hybrid one, and each
//! H.264 rung encodes on the same GPU's NVENC (`gpu::device`): the decode
//! stage renders the rung's picture as NV12 in device memory
//! ([`FrontEnd::render_device`], pooled buffers), and the rung copies it,
//! device to device, into NVENC's registered input. No raw picture crosses to
//! the host. AV1 rungs stay on rav1e with host pictures, as in the hybrid
//! backend. Everything else in the rung (queue, overflow, frame-rate cap,
//! forced IDRs, counters) is as for x264.
//!
//! A rung leaves the GPU for x264 on its own, logged once and counted in
//! [`RungStats::gpu_fallbacks`]: when its NVENC session cannot be opened (no
//! NVENC, the session cap) it starts on x264 at once; when NVENC fails in
//! mid-stream, the encoder is flushed and x264 starts at the next forced
//! picture (a segment start, so its IDRs and its new init segment stay on
//! the source's boundaries; the pictures in between are counted as
//! `errors`), or at once when the failing picture is itself forced. The
//! rung tells the decode stage to send it host pictures from then on
//! (pictures already queued on the device are copied out). When the decode
//! stage itself leaves the GPU, its host pictures reach the NVENC rungs,
//! which move to x264 the same way.
//!
//! # Errors
//!
//! Nothing reachable from input panics. A configuration the decoder refuses
//! (10-bit, 4:2:2, too large) is reported once through
//! [`RungSink::pipeline_error`] and the channel's frames are dropped
//! ([`DecodeStageStats::dropped_no_decoder`]) until a new configuration.
//! A corrupt access unit, a failed scale or encode are counted (`errors`),
//! logged once per kind with the channel name (later ones at debug level), and
//! cost that access unit or picture only. A rung whose encoder cannot be opened
//! is reported through `pipeline_error` once and drops its pictures (as
//! `errors`) until the source size changes. A stage that panics anyway is
//! caught (`app::contain`), counted ([`PipelineStats::panics`]) and reported
//! once through [`RungSink::pipeline_panicked`] (by default an error line
//! and `pipeline_error`); the pipeline is then [`ChannelPipeline::failed`]
//! and its owner restarts it (`ingest::publish` rebuilds it in place behind
//! a discontinuity). Until then the other stages go on.
//!
//! # End of stream and drop
//!
//! [`ChannelPipeline::finish`] drains in order: decode input closed, decoder
//! flushed, its pictures delivered, rung queues closed, encoders flushed,
//! their frames delivered, threads joined. It gives up after
//! [`FINISH_TIMEOUT`] if a stage is wedged (a sink that never returns): the
//! stages are told to stop, left to exit on their own, and that is logged.
//! Dropping a pipeline without `finish` tells the stages to stop without
//! flushing and does not wait for them.

use crate::app::contain::{self, TestPanics};
use crate::media::{Timestamp, VideoConfig, VideoFrame};
use crate::pipeline::cpu::av1::{Av1Encoder, Av1Error, Av1Settings};
use crate::pipeline::cpu::decode::{DecodeError, Decoder};
use crate::pipeline::cpu::scale::{self, Scaler};
use crate::pipeline::cpu::x264::{self, Encoder, EncoderSettings};
use crate::pipeline::frame::{Picture, PicturePool, PictureRef};
use crate::pipeline::gpu::device::{
    DeviceEncoders, DevicePicture, DeviceRungEncoder, NvencEncoders,
};
use crate::pipeline::gpu::hybrid::{self, FrontEnd, FrontError};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Capacity of a channel's decode input, in access units: 4 s at 30 fps,
/// 2 s at 60. Decoding is several times faster than real time, so the queue
/// only fills when the decode thread is starved of CPU; beyond it the policy
/// is [`DECODE_OVERFLOW`].
pub const DECODE_QUEUE: usize = 120;

/// Capacity of each rung's input, in pictures: about 0.4 s at 30 fps. Enough
/// to ride out a stall of a few frame intervals (an encoder opening, another
/// process taking the CPU, the burst a publisher sends when it connects),
/// short enough that a rung that cannot keep up drops pictures now
/// ([`RUNG_OVERFLOW`]) rather than fall seconds behind live; every queued
/// picture is a pool buffer held. (With 4, a 2-core machine dropped two or
/// three pictures at every publish start.)
pub const RUNG_QUEUE: usize = 12;

/// What the decode input does when full.
pub const DECODE_OVERFLOW: OverflowPolicy = OverflowPolicy::DropUntilKeyframe;

/// What a rung's input does when full.
pub const RUNG_OVERFLOW: OverflowPolicy = OverflowPolicy::DropNewestKeepForced;

/// How long [`ChannelPipeline::finish`] waits for the stages to drain before
/// giving up on a wedged one. Draining is a few queued pictures per rung
/// plus the encoders' delay, well under a second on a healthy box.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Most forced access units remembered while waiting for their picture (the
/// H.264 reorder buffer holds at most 16; the decoder's own bound is
/// `decode::MAX_PENDING`). Beyond it the oldest is forgotten and its flag
/// passes to the next picture out.
pub const MAX_FORCED_PENDING: usize = 64;

/// Slice threads for the decoder: one. Slice threading only helps with
/// multi-slice sources, and frame threading would add latency (see
/// `cpu::decode`); throughput comes from running channels in parallel.
pub const DECODE_THREADS: usize = 1;

/// Nominal frame rate for the encoders when the source's SPS does not state
/// one.
pub const DEFAULT_FPS: f64 = 30.0;

/// Most encoder threads chosen automatically ([`auto_threads`]).
pub const MAX_AUTO_THREADS: usize = 4;

/// Largest gap between consecutive pictures counted as content in
/// [`RungStats::media_seconds`]; a longer one is a stall of the source.
pub const MAX_MEDIA_STEP: Duration = Duration::from_secs(1);

/// x264's IDR interval: unused with `source_idrs` (IDRs only where forced)
/// but it must be a valid value.
const KEYINT_MAX: u32 = 250;

/// What a full queue does with what does not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Drop the access unit and every following one until the next keyframe
    /// (a decoder cannot skip a reference picture).
    DropUntilKeyframe,
    /// Drop the picture that does not fit (the queue keeps the older ones),
    /// except a picture that must be an IDR: the oldest queued picture that
    /// is not forced is dropped to make room for it (the oldest forced one
    /// only when every queued picture is forced; its flag passes on).
    DropNewestKeepForced,
}

pub use super::plan::{RungCodec, RungPlan};

/// Where encoded output goes (the packager, in the caller). Called from the
/// rung threads (and `pipeline_error` from any stage): implementations should
/// return quickly; a slow one makes its rung drop pictures, never the others.
pub trait RungSink: Send + Sync + 'static {
    /// A rung's encoder was (re)created: its decoder configuration (avcC...),
    /// before its first frame.
    fn rung_config(&self, rung: &str, config: Arc<VideoConfig>);

    /// One encoded access unit, in order; `dts == pts ==` the source
    /// picture's pts exactly.
    fn rung_frame(&self, rung: &str, frame: VideoFrame);

    /// The source's configuration could not be decoded (10-bit, 4:2:2, a
    /// decoder error), a rung's encoder could not be opened, or a stage
    /// failed: a message for the log, naming what.
    fn pipeline_error(&self, message: String) {
        let _ = message;
    }

    /// A stage thread panicked (caught; the pipeline is now
    /// [`ChannelPipeline::failed`]). Called once per panic, from the stage's
    /// thread. By default: an error line and [`RungSink::pipeline_error`].
    fn pipeline_panicked(&self, panic: &StagePanic) {
        tracing::error!(channel = %panic.channel, "{panic}");
        self.pipeline_error(panic.to_string());
    }
}

/// A stage thread's panic, as [`RungSink::pipeline_panicked`] hears of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagePanic {
    /// The channel's name.
    pub channel: String,
    /// The stage: `decode`, or `encode <rung>`.
    pub stage: String,
    /// The OS thread's name ([`thread_name`]).
    pub thread: String,
    /// The panic's message (and where, with `app::contain::install_hook`).
    pub message: String,
}

impl std::fmt::Display for StagePanic {
    /// `channel C: pipeline thread 'encode 720p' (C-720p) panicked: ...`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "channel {}: pipeline thread '{}' ({}) panicked: {}",
            self.channel, self.stage, self.thread, self.message
        )
    }
}

/// Queue sizes and the drain bound; [`Default`] is the named constants.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineOptions {
    /// Decode input capacity in access units ([`DECODE_QUEUE`]); at least 1.
    pub decode_queue: usize,
    /// Each rung's input capacity in pictures ([`RUNG_QUEUE`]); at least 1.
    pub rung_queue: usize,
    /// How long `finish` waits for the stages ([`FINISH_TIMEOUT`]).
    pub finish_timeout: Duration,
    /// What decodes (and scales): libavcodec, or NVDEC and CUDA (hybrid).
    pub decode: DecodeBackend,
    /// Test only: panics to inject into the stages (`app::contain`'s
    /// `LADDER_TEST_PANIC`, already narrowed to this channel). Empty by
    /// default.
    #[doc(hidden)]
    pub test_panics: TestPanics,
}

/// What the decode stage runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DecodeBackend {
    /// libavcodec; each rung scales on the CPU (swscale).
    #[default]
    Cpu,
    /// NVDEC and CUDA scaling on GPU `gpu`, each rung handed its picture at its
    /// size (the hybrid backend; see "GPU decoding" in the module docs).
    Nvdec { gpu: u32 },
    /// As `Nvdec`, and the H.264 rungs encode on the same GPU's NVENC from device
    /// pictures (the gpu backend; see "GPU encoding" in the module docs).
    Gpu { gpu: u32 },
}

impl std::fmt::Display for DecodeBackend {
    /// What runs, for logs: `cpu`, `hybrid (GPU n)`, `gpu (GPU n)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeBackend::Cpu => f.write_str("cpu"),
            DecodeBackend::Nvdec { gpu } => write!(f, "hybrid (GPU {gpu})"),
            DecodeBackend::Gpu { gpu } => write!(f, "gpu (GPU {gpu})"),
        }
    }
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            decode_queue: DECODE_QUEUE,
            rung_queue: RUNG_QUEUE,
            finish_timeout: FINISH_TIMEOUT,
            decode: DecodeBackend::Cpu,
            test_panics: TestPanics::default(),
        }
    }
}

/// A snapshot of a pipeline's counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PipelineStats {
    pub decode: DecodeStageStats,
    /// One per rung, in the order given to [`ChannelPipeline::start`].
    pub rungs: Vec<RungStats>,
    /// Stage threads that panicked (caught and logged).
    pub panics: u64,
}

/// The decode stage's counters. Every access unit offered is counted once:
/// in `access_units`, `dropped_queue_full` or `dropped_no_decoder`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStageStats {
    /// Access units given to a decoder.
    pub access_units: u64,
    /// Pictures decoded and fanned out to the rungs.
    pub pictures: u64,
    /// Decode errors (corrupt access units, pictures in a format the ladder
    /// cannot take, decoder failures).
    pub errors: u64,
    /// Access units dropped at the decode input ([`DECODE_OVERFLOW`]).
    pub dropped_queue_full: u64,
    /// Access units dropped because there was no usable decoder: before the
    /// first configuration, after one the decoder refused, or with the
    /// decode stage gone, or after a GPU failure until the next keyframe.
    pub dropped_no_decoder: u64,
    /// Times the GPU decode stage moved to the CPU decoder (at most 1: at start
    /// when the GPU could not be used, or at a mid-stream GPU failure).
    pub gpu_fallbacks: u64,
    /// Pictures the channel's pool has allocated: the most decoded pictures
    /// alive at once (queued for or held by a rung), since the pool keeps
    /// every one for reuse ([`pool_capacity`]). Its memory is this times a
    /// source picture.
    pub pool_pictures: u64,
}

/// One rung's counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RungStats {
    pub name: String,
    /// Current output size (0 before the first encoder).
    pub width: u32,
    pub height: u32,
    /// Pictures taken from the rung's queue. Each is then dropped by the
    /// frame-rate cap, refused by an error, or encoded.
    pub pictures_in: u64,
    /// Access units delivered to the sink.
    pub encoded: u64,
    /// Pictures dropped at the rung's full input ([`RUNG_OVERFLOW`]); not in
    /// `pictures_in`.
    pub dropped_queue_full: u64,
    /// Pictures dropped by the frame-rate cap.
    pub dropped_fps_cap: u64,
    /// Pictures refused because of an error (scaler, encoder, no encoder for
    /// this source), plus failed encoder flushes.
    pub errors: u64,
    /// Wall-clock time spent scaling and encoding (including the encoder's
    /// own threads' work only as far as the calling thread waits for it).
    pub encode_seconds: f64,
    /// Content encoded: the sum of the pts gaps between consecutive encoded
    /// pictures, each at most [`MAX_MEDIA_STEP`]. `encode_seconds /
    /// media_seconds` is the rung's share of real time.
    pub media_seconds: f64,
    /// Times the rung's GPU encoder failed (at open or in mid-stream) and the
    /// rung moved to x264.
    pub gpu_fallbacks: u64,
    /// The encoder in use: `x264`, `rav1e`, `nvenc`, or empty before the first.
    pub encoder: &'static str,
}

/// Encoder threads for a rung of `width` x `height` when its plan says 0:
/// one up to 720p (1280x720 = 921,600 pixels), two up to 1080p, and
/// [`MAX_AUTO_THREADS`] above. Few threads on purpose: a box runs many
/// rungs at once, and with low latency each thread is one more slice per
/// picture (a few percent of bitrate each).
pub fn auto_threads(width: u32, height: u32) -> usize {
    let pixels = u64::from(width) * u64::from(height);
    if pixels <= 1280 * 720 {
        1
    } else if pixels <= 1920 * 1080 {
        2
    } else {
        MAX_AUTO_THREADS
    }
}

/// Encoder threads for a plan at a size: its own number, or [`auto_threads`].
fn encoder_threads(plan: &RungPlan, width: u32, height: u32) -> usize {
    if plan.threads == 0 {
        auto_threads(width, height)
    } else {
        plan.threads
    }
}

/// The pictures a channel's pool keeps for reuse: every rung's queue full,
/// plus the one each rung is encoding, plus what one access unit can return
/// at once from the decoder (a few, when a reordering stream resumes).
pub fn pool_capacity(rungs: usize, rung_queue: usize) -> usize {
    rungs.max(1) * (rung_queue + 1) + 4
}

/// An OS thread name for a stage: `ladder-<channel>-<stage>`, or when that
/// is over the 15 bytes Linux keeps (`TASK_COMM_LEN`), `<channel>-<stage>`
/// with the stage cut to 7 bytes and the channel to what is left, at
/// character boundaries.
pub fn thread_name(channel: &str, stage: &str) -> String {
    const MAX: usize = 15;
    let full = format!("ladder-{channel}-{stage}");
    if full.len() <= MAX {
        return full;
    }
    let short = format!("{channel}-{stage}");
    if short.len() <= MAX {
        return short;
    }
    let stage = truncate(stage, 7);
    let channel = truncate(channel, MAX - 1 - stage.len());
    format!("{channel}-{stage}")
}

/// The longest prefix of `s` of at most `max` bytes, at a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The nominal rate for a rung's encoder: the source's (default
/// [`DEFAULT_FPS`]) capped by `fps_max`, within x264's bounds.
fn rung_fps(source: Option<f64>, fps_max: Option<f64>) -> f64 {
    let source = source.filter(|f| usable_rate(*f)).unwrap_or(DEFAULT_FPS);
    let fps = match fps_max.filter(|f| usable_rate(*f)) {
        Some(cap) => source.min(cap),
        None => source,
    };
    fps.clamp(0.001, x264::MAX_FPS)
}

fn usable_rate(fps: f64) -> bool {
    fps.is_finite() && fps > 0.0
}

/// Lock a mutex, taking it over if a panicking thread poisoned it (the
/// protected state stays consistent: every critical section here is a few
/// field writes).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::SeqCst);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::SeqCst)
}

/// The decode stage's shared counters.
#[derive(Debug, Default)]
struct DecodeCounters {
    access_units: AtomicU64,
    pictures: AtomicU64,
    errors: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_no_decoder: AtomicU64,
    gpu_fallbacks: AtomicU64,
}

/// A rung's shared counters.
#[derive(Debug, Default)]
struct RungCounters {
    width: AtomicU32,
    height: AtomicU32,
    pictures_in: AtomicU64,
    encoded: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_fps_cap: AtomicU64,
    errors: AtomicU64,
    encode_nanos: AtomicU64,
    media_micros: AtomicU64,
    gpu_fallbacks: AtomicU64,
    /// Index into [`ENCODER_NAMES`] plus one; 0 before the first encoder.
    encoder: AtomicU32,
}

/// Names of the rung encoders, for [`RungStats::encoder`].
const ENCODER_NAMES: [&str; 3] = ["x264", "rav1e", "nvenc"];

/// What every stage and the handle share.
#[derive(Debug)]
struct Shared {
    channel: String,
    decode: DecodeCounters,
    /// (rung name, counters), in plan order.
    rungs: Vec<(String, RungCounters)>,
    panics: AtomicU64,
    /// A stage panicked: the pipeline needs a restart
    /// ([`ChannelPipeline::failed`]).
    failed: AtomicBool,
    /// Set when the handle is dropped or `finish` gives up: stages exit
    /// without flushing at their next item.
    stop: AtomicBool,
    /// The channel's picture pool (the decode stage takes from it).
    pool: Arc<PicturePool>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn stats(&self) -> PipelineStats {
        let d = &self.decode;
        PipelineStats {
            decode: DecodeStageStats {
                access_units: get(&d.access_units),
                pictures: get(&d.pictures),
                errors: get(&d.errors),
                dropped_queue_full: get(&d.dropped_queue_full),
                dropped_no_decoder: get(&d.dropped_no_decoder),
                gpu_fallbacks: get(&d.gpu_fallbacks),
                pool_pictures: self.pool.allocated(),
            },
            rungs: self
                .rungs
                .iter()
                .map(|(name, r)| RungStats {
                    name: name.clone(),
                    width: r.width.load(Ordering::SeqCst),
                    height: r.height.load(Ordering::SeqCst),
                    pictures_in: get(&r.pictures_in),
                    encoded: get(&r.encoded),
                    dropped_queue_full: get(&r.dropped_queue_full),
                    dropped_fps_cap: get(&r.dropped_fps_cap),
                    errors: get(&r.errors),
                    encode_seconds: get(&r.encode_nanos) as f64 / 1e9,
                    media_seconds: get(&r.media_micros) as f64 / 1e6,
                    gpu_fallbacks: get(&r.gpu_fallbacks),
                    encoder: match r.encoder.load(Ordering::SeqCst) {
                        0 => "",
                        n => ENCODER_NAMES.get(n as usize - 1).copied().unwrap_or(""),
                    },
                })
                .collect(),
            panics: get(&self.panics),
        }
    }
}

/// What the caller sends to the decode stage.
enum DecodeInput {
    Config(Arc<VideoConfig>),
    Frame { frame: VideoFrame, force_idr: bool },
}

/// The caller's side of the decode input.
struct InputState {
    /// `None` once closed (finish or drop).
    tx: Option<Sender<DecodeInput>>,
    /// The last configuration given (to make a repeat a no-op).
    last_config: Option<Arc<VideoConfig>>,
    /// A configuration that found the queue full, sent before the next frame.
    pending_config: Option<Arc<VideoConfig>>,
    /// Dropping access units until a keyframe fits ([`DECODE_OVERFLOW`]).
    dropping: bool,
    /// A dropped access unit was forced: the next one queued carries it.
    pending_force: bool,
}

/// Whether a message went into the decode queue.
enum Offer {
    Sent,
    Full,
    Gone,
}

impl InputState {
    fn offer(&self, message: DecodeInput) -> Offer {
        let Some(tx) = &self.tx else {
            return Offer::Gone;
        };
        match tx.try_send(message) {
            Ok(()) => Offer::Sent,
            Err(TrySendError::Full(_)) => Offer::Full,
            Err(TrySendError::Disconnected(_)) => Offer::Gone,
        }
    }

    /// Send the pending configuration, if any; whether frames may follow.
    fn send_pending_config(&mut self) -> Offer {
        let Some(config) = self.pending_config.take() else {
            return Offer::Sent;
        };
        let offer = self.offer(DecodeInput::Config(config.clone()));
        if !matches!(offer, Offer::Sent) {
            self.pending_config = Some(config);
        }
        offer
    }
}

/// The source format a rung's scaler and encoder are built for: the decoded
/// picture's size, and from the configuration its SAR and frame rate.
#[derive(Clone, Debug, PartialEq)]
struct SourceFormat {
    width: u32,
    height: u32,
    sar: (u32, u32),
    frame_rate: Option<f64>,
}

/// What re-creates a rung's scaler and encoder when it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SourceKey {
    width: u32,
    height: u32,
    sar: (u32, u32),
}

impl SourceFormat {
    fn key(&self) -> SourceKey {
        SourceKey {
            width: self.width,
            height: self.height,
            sar: self.sar,
        }
    }
}

/// A decoded picture as a rung gets it.
#[derive(Clone)]
enum RungPicture {
    /// On the host (I420): the CPU decoder's at the source's size, or the
    /// hybrid front end's at the rung's.
    Host(PictureRef),
    /// In GPU memory at the rung's size, for its NVENC (the gpu backend).
    Device {
        frame: Arc<dyn DevicePicture>,
        pts: Timestamp,
        force_idr: bool,
    },
}

impl RungPicture {
    fn pts(&self) -> Option<Timestamp> {
        match self {
            RungPicture::Host(p) => p.pts,
            RungPicture::Device { pts, .. } => Some(*pts),
        }
    }

    fn force_idr(&self) -> bool {
        match self {
            RungPicture::Host(p) => p.force_idr,
            RungPicture::Device { force_idr, .. } => *force_idr,
        }
    }

    fn is_device(&self) -> bool {
        matches!(self, RungPicture::Device { .. })
    }
}

/// One picture on its way to a rung.
struct RungItem {
    picture: RungPicture,
    /// An earlier forced picture was dropped at this rung's full queue.
    carried_force: bool,
    format: Arc<SourceFormat>,
}

/// The decode stage's end of a rung queue.
struct RungPort {
    tx: Sender<RungItem>,
    /// The same queue's far end, to drop its oldest picture for a forced one
    /// ([`RUNG_OVERFLOW`]). Since it keeps the queue connected, the rung
    /// stage's end is seen through `alive` instead.
    oldest: Receiver<RungItem>,
    /// Cleared when the rung stage is dropped (returned, panicked, or never
    /// started).
    alive: Arc<AtomicBool>,
    /// A forced picture was dropped here; the next one sent carries the flag.
    pending_force: bool,
    /// The rung thread is gone (panicked or never started).
    gone: bool,
    /// The rung's requested size (its plan's), for a decoder that scales.
    size: (Option<u32>, Option<u32>),
    /// The rung encodes on the GPU and wants device pictures; cleared by the
    /// rung when its GPU encoder fails.
    device: Arc<AtomicBool>,
}

/// Clears its flag when dropped: a rung stage's "I am gone" for its port.
#[derive(Debug)]
struct Alive(Arc<AtomicBool>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// "Log once per kind": remembers the kinds already logged at warning level.
#[derive(Debug, Default)]
struct Warned(Vec<String>);

impl Warned {
    /// Whether `kind` is new (and remember it). Kinds are error variants, so
    /// the list stays short.
    fn first(&mut self, kind: String) -> bool {
        if self.0.contains(&kind) {
            false
        } else {
            self.0.push(kind);
            true
        }
    }
}

/// A stable name for an error's variant, for [`Warned`].
fn kind_of<E>(prefix: &str, error: &E) -> String {
    format!("{prefix} {:?}", std::mem::discriminant(error))
}

/// A cheap clone of a pipeline's shared counters
/// ([`ChannelPipeline::stats_handle`]): live figures for readers that do not
/// own the pipeline. It keeps the counters (and the channel's picture pool)
/// alive, not the stages: drop it when the session ends.
#[derive(Clone, Debug)]
pub struct PipelineStatsHandle(Arc<Shared>);

impl PipelineStatsHandle {
    /// A snapshot of the counters, as [`ChannelPipeline::stats`].
    pub fn stats(&self) -> PipelineStats {
        self.0.stats()
    }
}

/// A running pipeline for one channel. Created with [`ChannelPipeline::start`].
pub struct ChannelPipeline {
    shared: Arc<Shared>,
    input: Mutex<InputState>,
    /// (thread name, handle), every stage.
    threads: Vec<(String, JoinHandle<()>)>,
    /// Disconnected once every stage thread has exited; `None` after finish.
    done: Option<Receiver<()>>,
    options: PipelineOptions,
}

impl std::fmt::Debug for ChannelPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelPipeline")
            .field("channel", &self.shared.channel)
            .field("stages", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl ChannelPipeline {
    /// Start the stages for `channel` with the default queue sizes.
    pub fn start(channel: &str, rungs: Vec<RungPlan>, sink: Arc<dyn RungSink>) -> ChannelPipeline {
        ChannelPipeline::start_with(channel, rungs, sink, PipelineOptions::default())
    }

    /// [`ChannelPipeline::start`] with other queue sizes, drain bound or decode
    /// backend.
    pub fn start_with(
        channel: &str,
        rungs: Vec<RungPlan>,
        sink: Arc<dyn RungSink>,
        options: PipelineOptions,
    ) -> ChannelPipeline {
        match options.decode {
            DecodeBackend::Cpu => {
                Self::start_decoding(channel, rungs, sink, options, None, |stage| stage.run())
            }
            DecodeBackend::Nvdec { gpu } => {
                Self::start_decoding(channel, rungs, sink, options, None, move |stage| {
                    hybrid::with_front(gpu, |front| stage.run_front(gpu, front))
                })
            }
            DecodeBackend::Gpu { gpu } => {
                let encoders = match NvencEncoders::load(gpu) {
                    Ok(e) => Some(Arc::new(e) as Arc<dyn DeviceEncoders>),
                    Err(why) => {
                        tracing::warn!(channel = %channel, gpu, "NVENC cannot be used: {why}; the rungs encode with x264");
                        None
                    }
                };
                Self::start_decoding(channel, rungs, sink, options, encoders, move |stage| {
                    hybrid::with_front(gpu, |front| stage.run_front(gpu, front))
                })
            }
        }
    }

    /// The stages, with `decode` as the decode thread's body; the rungs that
    /// `device` takes encode from device pictures.
    fn start_decoding(
        channel: &str,
        rungs: Vec<RungPlan>,
        sink: Arc<dyn RungSink>,
        options: PipelineOptions,
        device: Option<Arc<dyn DeviceEncoders>>,
        decode: impl FnOnce(DecodeStage) + Send + 'static,
    ) -> ChannelPipeline {
        let rung_queue = options.rung_queue.max(1);
        let shared = Arc::new(Shared {
            channel: channel.to_owned(),
            decode: DecodeCounters::default(),
            rungs: rungs
                .iter()
                .map(|plan| (plan.name.clone(), RungCounters::default()))
                .collect(),
            panics: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            pool: PicturePool::new(pool_capacity(rungs.len(), rung_queue)),
        });
        let (done_tx, done_rx) = bounded::<()>(1);
        let mut threads = Vec::with_capacity(rungs.len() + 1);
        let mut ports = Vec::with_capacity(rungs.len());

        for (index, plan) in rungs.into_iter().enumerate() {
            let (tx, rx) = bounded(rung_queue);
            let alive = Arc::new(AtomicBool::new(true));
            let device = device.clone().filter(|d| d.takes(&plan));
            let wants_device = Arc::new(AtomicBool::new(device.is_some()));
            ports.push(RungPort {
                tx,
                oldest: rx.clone(),
                alive: alive.clone(),
                pending_force: false,
                gone: false,
                size: (plan.width, plan.height),
                device: wants_device.clone(),
            });
            let name = thread_name(channel, &plan.name);
            let stage = RungStage {
                shared: shared.clone(),
                sink: sink.clone(),
                index,
                plan,
                rx,
                _alive: Alive(alive),
                active: None,
                broken: None,
                device,
                wants_device,
                awaiting_forced: false,
                download: Picture::default(),
                carry_force: false,
                last_kept: None,
                last_encoded: None,
                scratch: Picture::default(),
                warned: Warned::default(),
                test_panics: options.test_panics.clone(),
            };
            let label = format!("encode {}", stage.plan.name);
            if let Some(handle) =
                spawn_stage(&name, label, &shared, &sink, &done_tx, move || stage.run())
            {
                threads.push((name, handle));
            }
        }

        let (input_tx, input_rx) = bounded(options.decode_queue.max(1));
        let name = thread_name(channel, "dec");
        let stage = DecodeStage {
            shared: shared.clone(),
            sink: sink.clone(),
            rx: input_rx,
            pool: shared.pool.clone(),
            ports,
            config: None,
            decoder: None,
            format: None,
            forced: VecDeque::with_capacity(MAX_FORCED_PENDING),
            carry_force: false,
            reported_picture_format: false,
            awaiting_keyframe: false,
            warned: Warned::default(),
            test_panics: options.test_panics.clone(),
            units: 0,
        };
        let label = "decode".to_owned();
        if let Some(handle) = spawn_stage(&name, label, &shared, &sink, &done_tx, move || {
            decode(stage)
        }) {
            threads.push((name, handle));
        }

        ChannelPipeline {
            shared,
            input: Mutex::new(InputState {
                tx: Some(input_tx),
                last_config: None,
                pending_config: None,
                dropping: false,
                pending_force: false,
            }),
            threads,
            done: Some(done_rx),
            options,
        }
    }

    /// New source decoder configuration (non-blocking). A different one
    /// re-creates the decoder; when the decoded size or SAR changes, the
    /// rungs' scalers and encoders are re-created too (old encoder flushed
    /// first and its frames delivered, then `rung_config` for the new one).
    /// The same configuration again is a no-op.
    pub fn video_config(&self, config: Arc<VideoConfig>) {
        let mut input = lock(&self.input);
        if input.last_config.as_deref() == Some(&*config) {
            return;
        }
        input.last_config = Some(config.clone());
        input.pending_config = Some(config);
        if let Offer::Full = input.send_pending_config() {
            // Frames of the old configuration queued behind a full queue
            // are worthless once it changes, and the new one starts at a
            // keyframe anyway.
            input.dropping = true;
        }
    }

    /// One source access unit in decode order (non-blocking). `force_idr`:
    /// every rung puts an IDR (sync sample) at the picture with this frame's
    /// pts (or, if that picture is lost on the way, the next one; see the
    /// module docs).
    pub fn video_frame(&self, frame: VideoFrame, force_idr: bool) {
        let mut input = lock(&self.input);
        let force_idr = force_idr || input.pending_force;
        let keyframe = frame.keyframe;
        let offer = match input.send_pending_config() {
            Offer::Sent if input.dropping && !keyframe => Offer::Full,
            Offer::Sent => input.offer(DecodeInput::Frame { frame, force_idr }),
            other => other,
        };
        match offer {
            Offer::Sent => {
                input.dropping = false;
                input.pending_force = false;
            }
            Offer::Full => {
                input.dropping = true;
                input.pending_force = force_idr;
                add(&self.shared.decode.dropped_queue_full, 1);
            }
            Offer::Gone => {
                input.pending_force = force_idr;
                add(&self.shared.decode.dropped_no_decoder, 1);
            }
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> PipelineStats {
        self.shared.stats()
    }

    /// A handle that reads the counters while the pipeline runs, without
    /// owning it (the admin API and the metrics hold one per live channel).
    pub fn stats_handle(&self) -> PipelineStatsHandle {
        PipelineStatsHandle(self.shared.clone())
    }

    /// The channel's name.
    pub fn channel(&self) -> &str {
        &self.shared.channel
    }

    /// Whether a stage panicked ([`RungSink::pipeline_panicked`]): what it
    /// fed has stopped (a decode stage's rungs, or that rung), so the owner
    /// should replace the pipeline.
    pub fn failed(&self) -> bool {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// End of stream (blocking; async callers use `spawn_blocking`): close
    /// the input, flush the decoder and the encoders, deliver everything to
    /// the sink and join the threads, giving up after the options'
    /// `finish_timeout` (default [`FINISH_TIMEOUT`]) if a stage is wedged.
    /// Returns the final counters.
    pub fn finish(mut self) -> PipelineStats {
        lock(&self.input).tx = None;
        let Some(done) = self.done.take() else {
            return self.stats();
        };
        let timeout = self.options.finish_timeout;
        let deadline = Instant::now() + timeout;
        let finished = loop {
            match done.recv_deadline(deadline) {
                // Nobody sends; only the disconnection matters.
                Ok(()) => continue,
                Err(RecvTimeoutError::Disconnected) => break true,
                Err(RecvTimeoutError::Timeout) => break false,
            }
        };
        if finished {
            for (name, handle) in self.threads.drain(..) {
                if handle.join().is_err() {
                    // Only a panic outside the stage's own catch (its
                    // error report) gets here.
                    add(&self.shared.panics, 1);
                    tracing::error!(channel = %self.shared.channel, thread = %name, "pipeline thread panicked");
                }
            }
        } else {
            self.shared.stop.store(true, Ordering::SeqCst);
            let stuck: Vec<&str> = self
                .threads
                .iter()
                .filter(|(_, handle)| !handle.is_finished())
                .map(|(name, _)| name.as_str())
                .collect();
            tracing::error!(
                channel = %self.shared.channel,
                ?stuck,
                "pipeline did not drain within {timeout:?}; its stages were told to stop and are left to exit on their own"
            );
            self.threads.clear();
        }
        self.stats()
    }
}

impl Drop for ChannelPipeline {
    /// Without `finish`: tell the stages to stop (no flush), close the input
    /// and detach the threads; never waits.
    fn drop(&mut self) {
        if self.done.take().is_some() {
            self.shared.stop.store(true, Ordering::SeqCst);
            lock(&self.input).tx = None;
            self.threads.clear();
        }
    }
}

/// Spawn a stage thread that reports a panic instead of vanishing
/// (`label` names the stage in the report). The thread holds a clone of
/// `done` until it exits.
fn spawn_stage(
    name: &str,
    label: String,
    shared: &Arc<Shared>,
    sink: &Arc<dyn RungSink>,
    done: &Sender<()>,
    body: impl FnOnce() + Send + 'static,
) -> Option<JoinHandle<()>> {
    let (shared_in, sink_in, done_in) = (shared.clone(), sink.clone(), done.clone());
    let thread = name.to_owned();
    let spawned = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _done = done_in;
            if let Err(message) = contain::catch(body) {
                add(&shared_in.panics, 1);
                shared_in.failed.store(true, Ordering::SeqCst);
                let panic = StagePanic {
                    channel: shared_in.channel.clone(),
                    stage: label,
                    thread,
                    message,
                };
                // The sink may be what panicked; do not let it do so twice.
                if contain::catch(|| sink_in.pipeline_panicked(&panic)).is_err() {
                    tracing::error!(channel = %panic.channel, "{panic}");
                }
            }
        });
    match spawned {
        Ok(handle) => Some(handle),
        Err(e) => {
            let message = format!(
                "channel {}: could not start pipeline thread {name}: {e}",
                shared.channel
            );
            tracing::error!(channel = %shared.channel, "{message}");
            sink.pipeline_error(message);
            None
        }
    }
}

/// The decode stage, run on its own thread.
struct DecodeStage {
    shared: Arc<Shared>,
    sink: Arc<dyn RungSink>,
    rx: Receiver<DecodeInput>,
    ports: Vec<RungPort>,
    pool: Arc<PicturePool>,
    /// The configuration in force (even if refused).
    config: Option<Arc<VideoConfig>>,
    /// `None` before the first configuration and after a refused one.
    decoder: Option<Decoder>,
    /// The format of the last picture out, shared with the rungs.
    format: Option<Arc<SourceFormat>>,
    /// Pts of forced access units whose picture has not come out yet.
    forced: VecDeque<Timestamp>,
    /// A forced access unit produced no picture: the next picture is forced.
    carry_force: bool,
    /// This decoder's pictures were refused as a format the ladder cannot
    /// take, and the sink was told.
    reported_picture_format: bool,
    /// The GPU failed mid-stream: access units are dropped until a keyframe,
    /// where the CPU decoder starts.
    awaiting_keyframe: bool,
    warned: Warned,
    /// Test only: panics to inject (stage `decode`).
    test_panics: TestPanics,
    /// Access units taken from the input, for `test_panics`.
    units: u64,
}

impl DecodeStage {
    fn run(mut self) {
        while let Ok(message) = self.rx.recv() {
            if self.shared.stopping() {
                return;
            }
            match message {
                DecodeInput::Config(config) => self.configure(config),
                DecodeInput::Frame { frame, force_idr } => {
                    self.inject_panic();
                    self.access_unit(&frame, force_idr)
                }
            }
        }
        if self.shared.stopping() {
            return;
        }
        self.drain();
        // Dropping `self` drops the rung senders: the rungs flush and exit.
    }

    /// Test only: count an access unit and panic if `test_panics` says so.
    fn inject_panic(&mut self) {
        if !self.test_panics.is_empty() {
            self.units += 1;
            self.test_panics.check("decode", self.units);
        }
    }

    fn configure(&mut self, config: Arc<VideoConfig>) {
        if self.config.as_deref() == Some(&*config) {
            return;
        }
        self.drain();
        self.decoder = None;
        self.config = Some(config);
        self.open_decoder();
    }

    /// A CPU decoder for the configuration in force.
    fn open_decoder(&mut self) {
        self.reported_picture_format = false;
        let Some(config) = self.config.as_deref() else {
            return;
        };
        match Decoder::new(config, DECODE_THREADS) {
            Ok(decoder) => self.decoder = Some(decoder),
            Err(e) => {
                let message = format!("channel {}: {e}", self.shared.channel);
                tracing::warn!(channel = %self.shared.channel, "source video cannot be decoded: {e}");
                self.sink.pipeline_error(message);
            }
        }
    }

    fn access_unit(&mut self, frame: &VideoFrame, force_idr: bool) {
        if self.awaiting_keyframe && frame.keyframe {
            // After a GPU failure, the CPU decoder starts here.
            self.awaiting_keyframe = false;
            if self.decoder.is_none() {
                self.open_decoder();
            }
        }
        let decoder = match self.decoder.as_mut() {
            Some(decoder) if !self.awaiting_keyframe => decoder,
            _ => {
                add(&self.shared.decode.dropped_no_decoder, 1);
                self.carry_force |= force_idr;
                return;
            }
        };
        Self::push_forced(
            &mut self.forced,
            &mut self.carry_force,
            frame.pts,
            force_idr,
        );
        let result = decoder.decode(frame, &self.pool);
        match result {
            Ok(pictures) => pictures.into_iter().for_each(|p| self.emit(p)),
            Err(e) => self.decode_error(e),
        }
        // After the fan-out: once `access_units` counts a frame, its
        // pictures are counted and queued.
        add(&self.shared.decode.access_units, 1);
    }

    /// Flush the decoder and send what it held.
    fn drain(&mut self) {
        if let Some(decoder) = self.decoder.as_mut() {
            match decoder.flush(&self.pool) {
                Ok(pictures) => pictures.into_iter().for_each(|p| self.emit(p)),
                Err(e) => self.decode_error(e),
            }
        }
        if !self.forced.is_empty() {
            self.forced.clear();
            self.carry_force = true;
        }
    }

    fn decode_error(&mut self, e: DecodeError) {
        add(&self.shared.decode.errors, 1);
        let channel = &self.shared.channel;
        if self.warned.first(kind_of("decode", &e)) {
            tracing::warn!(channel = %channel, "{e} (further errors of this kind are logged at debug level)");
        } else {
            tracing::debug!(channel = %channel, "{e}");
        }
        if matches!(e, DecodeError::PictureFormat { .. }) && !self.reported_picture_format {
            self.reported_picture_format = true;
            self.sink.pipeline_error(format!("channel {channel}: {e}"));
        }
    }

    /// Remember a forced access unit's pts until its picture comes out.
    fn push_forced(
        forced: &mut VecDeque<Timestamp>,
        carry_force: &mut bool,
        pts: Timestamp,
        force_idr: bool,
    ) {
        if force_idr {
            if forced.len() >= MAX_FORCED_PENDING {
                forced.pop_front();
                *carry_force = true;
            }
            forced.push_back(pts);
        }
    }

    /// Whether the picture with this pts must be an IDR (and forget the
    /// forced pts it answers).
    fn take_force(&mut self, pts: Option<Timestamp>) -> bool {
        let mut force = std::mem::take(&mut self.carry_force);
        if let Some(pts) = pts {
            // Output is in presentation order: a forced pts at or before
            // this one will not come out later.
            let before = self.forced.len();
            self.forced.retain(|forced| *forced > pts);
            force |= self.forced.len() != before;
        }
        force
    }

    /// The source format of a decoded picture of this size (shared while it
    /// stays the same).
    fn source_format(&mut self, width: u32, height: u32) -> Arc<SourceFormat> {
        let (sar, frame_rate) = self
            .config
            .as_deref()
            .map_or(((1, 1), None), |c| (c.sample_aspect, c.frame_rate));
        let format = SourceFormat {
            width,
            height,
            sar,
            frame_rate,
        };
        match &self.format {
            Some(current) if **current == format => current.clone(),
            _ => {
                let new = Arc::new(format);
                self.format = Some(new.clone());
                new
            }
        }
    }

    /// Mark a decoded picture's IDR request and send it to every rung.
    fn emit(&mut self, mut picture: Picture) {
        let force = self.take_force(picture.pts);
        picture.force_idr = force;
        let format = self.source_format(picture.width, picture.height);

        add(&self.shared.decode.pictures, 1);
        let picture = RungPicture::Host(self.pool.share(picture));
        for (index, port) in self.ports.iter_mut().enumerate() {
            send_to_port(&self.shared, index, port, &picture, force, &format);
        }
    }
}

/// The decode stage on a [`FrontEnd`] (NVDEC and CUDA scaling), falling back to
/// its own CPU decoder (see "GPU decoding" in the module docs).
impl DecodeStage {
    /// Run on `front` (GPU `gpu`), or on the CPU decoder from the start when
    /// `front` is the reason there is none.
    fn run_front<F: FrontEnd>(mut self, gpu: u32, front: Result<&mut F, String>) {
        let mut front = match front {
            Ok(front) => Some(front),
            Err(why) => {
                self.fall_back(gpu, &format!("GPU {gpu} cannot be used: {why}"), false);
                None
            }
        };
        while let Ok(message) = self.rx.recv() {
            if self.shared.stopping() {
                return;
            }
            if let DecodeInput::Frame { .. } = message {
                self.inject_panic();
            }
            let Some(f) = front.as_deref_mut() else {
                match message {
                    DecodeInput::Config(config) => self.configure(config),
                    DecodeInput::Frame { frame, force_idr } => self.access_unit(&frame, force_idr),
                }
                continue;
            };
            let result = match message {
                DecodeInput::Config(config) => self.front_configure(f, config),
                DecodeInput::Frame { frame, force_idr } => {
                    self.front_access_unit(f, &frame, force_idr)
                }
            };
            if let Err(why) = result {
                front = None;
                self.fall_back(gpu, &why, true);
            }
        }
        if self.shared.stopping() {
            return;
        }
        match front {
            Some(f) => {
                if let Err(why) = self.front_drain(f) {
                    // Nothing left to decode: the held pictures are lost.
                    self.fall_back(gpu, &why, true);
                }
            }
            None => self.drain(),
        }
    }

    /// Move to the CPU decoder: at once (`mid_stream` false: the GPU could
    /// not be used at all), or from the next keyframe on (the GPU failed
    /// while decoding). Logged once with the channel, GPU and error; counted.
    fn fall_back(&mut self, gpu: u32, why: &str, mid_stream: bool) {
        add(&self.shared.decode.gpu_fallbacks, 1);
        let channel = &self.shared.channel;
        if mid_stream {
            tracing::warn!(channel = %channel, gpu, "GPU decoding failed: {why}; the channel moves to the CPU decoder from the next keyframe (viewers see the picture hold until then)");
            self.awaiting_keyframe = true;
        } else {
            tracing::warn!(channel = %channel, gpu, "{why}; the channel decodes and scales on the CPU");
        }
        self.decoder = None;
        if !self.forced.is_empty() {
            // Their pictures will not come: the next picture out is forced.
            self.forced.clear();
            self.carry_force = true;
        }
    }

    fn front_configure<F: FrontEnd>(
        &mut self,
        front: &mut F,
        config: Arc<VideoConfig>,
    ) -> Result<(), String> {
        if self.config.as_deref() == Some(&*config) {
            return Ok(());
        }
        let held = front.configure(&config);
        let result = match held {
            // The old configuration's pictures go out with its format.
            Ok(held) => self.front_emit_all(front, held),
            Err(e) => Err(e.to_string()),
        };
        if !self.forced.is_empty() {
            self.forced.clear();
            self.carry_force = true;
        }
        self.reported_picture_format = false;
        self.config = Some(config);
        result
    }

    fn front_access_unit<F: FrontEnd>(
        &mut self,
        front: &mut F,
        frame: &VideoFrame,
        force_idr: bool,
    ) -> Result<(), String> {
        if self.config.is_none() {
            add(&self.shared.decode.dropped_no_decoder, 1);
            self.carry_force |= force_idr;
            return Ok(());
        }
        Self::push_forced(
            &mut self.forced,
            &mut self.carry_force,
            frame.pts,
            force_idr,
        );
        let result = match front.decode(frame) {
            Ok(sources) => self.front_emit_all(front, sources),
            Err(FrontError::Stream(message)) => {
                add(&self.shared.decode.errors, 1);
                let channel = &self.shared.channel;
                if self.warned.first("gpu stream".to_owned()) {
                    tracing::warn!(channel = %channel, "{message} (further errors of this kind are logged at debug level)");
                } else {
                    tracing::debug!(channel = %channel, "{message}");
                }
                Ok(())
            }
            Err(FrontError::Device(message)) => Err(message),
        };
        // pictures the decoder damaged or concealed: counted, logged once
        for message in front.take_errors() {
            add(&self.shared.decode.errors, 1);
            let channel = &self.shared.channel;
            if self.warned.first("gpu picture".to_owned()) {
                tracing::warn!(channel = %channel, "{message} (further errors of this kind are logged at debug level)");
            } else {
                tracing::debug!(channel = %channel, "{message}");
            }
        }
        add(&self.shared.decode.access_units, 1);
        result
    }

    fn front_drain<F: FrontEnd>(&mut self, front: &mut F) -> Result<(), String> {
        let held = front.flush().map_err(|e| e.to_string())?;
        self.front_emit_all(front, held)
    }

    fn front_emit_all<F: FrontEnd>(
        &mut self,
        front: &mut F,
        sources: Vec<F::Source>,
    ) -> Result<(), String> {
        sources
            .into_iter()
            .try_for_each(|source| self.front_emit(front, &source))
    }

    /// Mark a decoded picture's IDR request and send every rung its picture at
    /// its size ([`scale::rung_size`], as the rung would scale it), rendered
    /// once per size and place (host I420, or device NV12 for a rung that
    /// encodes on the GPU). A rendering failure is the GPU's: the rungs not
    /// served keep the picture's IDR request for their next picture.
    fn front_emit<F: FrontEnd>(&mut self, front: &mut F, source: &F::Source) -> Result<(), String> {
        let info = front.info(source);
        let force = self.take_force(Some(info.pts));
        let format = self.source_format(info.width, info.height);
        add(&self.shared.decode.pictures, 1);
        let mut rendered: Vec<((u32, u32), bool, RungPicture)> =
            Vec::with_capacity(self.ports.len());
        for index in 0..self.ports.len() {
            let port = &self.ports[index];
            if port.gone {
                continue;
            }
            let size = scale::rung_size(
                info.width,
                info.height,
                format.sar,
                port.size.0,
                port.size.1,
            );
            let on_device = port.device.load(Ordering::Acquire);
            let made = rendered
                .iter()
                .find(|(s, d, _)| *s == size && *d == on_device);
            let picture = match made {
                Some((_, _, picture)) => picture.clone(),
                None => match self.render(front, source, &info, size, on_device, force) {
                    Ok(picture) => {
                        rendered.push((size, on_device, picture.clone()));
                        picture
                    }
                    Err(e) => {
                        for port in &mut self.ports[index..] {
                            port.pending_force |= force;
                        }
                        return Err(e.to_string());
                    }
                },
            };
            send_to_port(
                &self.shared,
                index,
                &mut self.ports[index],
                &picture,
                force,
                &format,
            );
        }
        Ok(())
    }
}

impl DecodeStage {
    /// One rendering of a decoded picture at `size`: host I420 from the
    /// stage's pool, or NV12 in device memory.
    fn render<F: FrontEnd>(
        &self,
        front: &mut F,
        source: &F::Source,
        info: &hybrid::SourceInfo,
        size: (u32, u32),
        on_device: bool,
        force: bool,
    ) -> Result<RungPicture, FrontError> {
        if on_device {
            let frame = front.render_device(source, size)?;
            return Ok(RungPicture::Device {
                frame,
                pts: info.pts,
                force_idr: force,
            });
        }
        let mut picture = front.render(source, size, &self.pool)?;
        picture.pts = Some(info.pts);
        picture.seq = info.seq;
        picture.source_idr = info.source_idr;
        picture.force_idr = force;
        Ok(RungPicture::Host(self.pool.share(picture)))
    }
}

/// Send a rung its picture (the decode stages' fan-out), with [`RUNG_OVERFLOW`]
/// when its queue is full. `force`: the picture must be an IDR.
fn send_to_port(
    shared: &Shared,
    index: usize,
    port: &mut RungPort,
    picture: &RungPicture,
    force: bool,
    format: &Arc<SourceFormat>,
) {
    if port.gone {
        return;
    }
    let item = RungItem {
        picture: picture.clone(),
        carried_force: port.pending_force,
        format: format.clone(),
    };
    let forced = force || port.pending_force;
    if !port.alive.load(Ordering::Acquire) {
        // the stage is gone: free what its queue holds, say so once
        while port.oldest.try_recv().is_ok() {}
        port.gone = true;
        let rung = shared.rungs.get(index).map_or("?", |(n, _)| n);
        tracing::error!(channel = %shared.channel, rung, "rung stage has stopped; its pictures are dropped");
        return;
    }
    let sent = match port.tx.try_send(item) {
        // RUNG_OVERFLOW: DropNewestKeepForced. A forced picture takes
        // the place of the oldest one that is not forced.
        Err(TrySendError::Full(item)) if forced => make_room_for_forced(shared, index, port, item),
        other => other,
    };
    match sent {
        Ok(()) => port.pending_force = false,
        Err(TrySendError::Full(_)) => {
            // RUNG_OVERFLOW: the newest picture is the one dropped.
            port.pending_force |= force;
            if let Some((_, counters)) = shared.rungs.get(index) {
                add(&counters.dropped_queue_full, 1);
            }
        }
        Err(TrySendError::Disconnected(_)) => {
            port.gone = true;
            let rung = shared.rungs.get(index).map_or("?", |(n, _)| n);
            tracing::error!(channel = %shared.channel, rung, "rung stage has stopped; its pictures are dropped");
        }
    }
}

/// [`RUNG_OVERFLOW`] for a forced picture that finds its rung's queue full:
/// the oldest queued picture that is not forced is dropped to make room. A
/// rung more than a segment behind holds earlier forced pictures in its queue;
/// dropping one of those would cost its segment (the rung would have no IDR
/// at that cut, and the packager no segment of that number for it). Only when
/// every queued picture is forced (the rung is a queue's worth of segments
/// behind) does the oldest go, its flag passing to the next.
///
/// The queue is emptied and refilled in order: the rung stage only takes from
/// the front, so it still sees the pictures in order.
fn make_room_for_forced(
    shared: &Shared,
    index: usize,
    port: &mut RungPort,
    item: RungItem,
) -> Result<(), TrySendError<RungItem>> {
    let mut held: VecDeque<RungItem> = std::iter::from_fn(|| port.oldest.try_recv().ok()).collect();
    let is_forced = |i: &RungItem| i.carried_force || i.picture.force_idr();
    if held.len() >= port.tx.capacity().unwrap_or(usize::MAX) {
        let victim = held.iter().position(|i| !is_forced(i)).unwrap_or(0);
        if let Some(dropped) = held.remove(victim) {
            if let Some((_, counters)) = shared.rungs.get(index) {
                add(&counters.dropped_queue_full, 1);
            }
            if is_forced(&dropped) {
                // the next picture after it (in the queue, or this one) carries it
                match held.get_mut(victim) {
                    Some(next) => next.carried_force = true,
                    None => port.pending_force = true,
                }
            }
        }
    }
    let carried = std::mem::take(&mut port.pending_force);
    held.push_back(RungItem {
        carried_force: item.carried_force || carried,
        ..item
    });
    let mut result = Ok(());
    for i in held {
        if let Err(e) = port.tx.try_send(i) {
            // cannot happen (one producer, and room was made); the caller
            // counts the newest as dropped and carries its force
            result = Err(e);
        }
    }
    result
}

/// Encoder errors, as the graph needs them: a kind (to log once) and a
/// message.
#[derive(Debug)]
struct EncoderFailure {
    kind: String,
    message: String,
}

impl From<x264::EncodeError> for EncoderFailure {
    fn from(e: x264::EncodeError) -> Self {
        EncoderFailure {
            kind: kind_of("x264", &e),
            message: e.to_string(),
        }
    }
}

impl From<Av1Error> for EncoderFailure {
    fn from(e: Av1Error) -> Self {
        EncoderFailure {
            kind: kind_of("rav1e", &e),
            message: e.to_string(),
        }
    }
}

/// What a rung needs from an encoder, whatever the codec.
trait RungEncoder: Send {
    /// The decoder configuration of the output (for the init segment).
    fn video_config(&self) -> Arc<VideoConfig>;
    /// Encode one picture; the access units that became ready.
    fn encode(
        &mut self,
        picture: &Picture,
        force_idr: bool,
    ) -> Result<Vec<VideoFrame>, EncoderFailure>;
    /// End of stream: everything still held.
    fn flush(&mut self) -> Result<Vec<VideoFrame>, EncoderFailure>;
}

impl RungEncoder for Encoder {
    fn video_config(&self) -> Arc<VideoConfig> {
        Encoder::video_config(self)
    }

    fn encode(
        &mut self,
        picture: &Picture,
        force_idr: bool,
    ) -> Result<Vec<VideoFrame>, EncoderFailure> {
        Ok(Encoder::encode(self, picture, force_idr)?
            .into_iter()
            .collect())
    }

    fn flush(&mut self) -> Result<Vec<VideoFrame>, EncoderFailure> {
        Ok(Encoder::flush(self)?)
    }
}

impl RungEncoder for Av1Encoder {
    fn video_config(&self) -> Arc<VideoConfig> {
        Av1Encoder::video_config(self)
    }

    fn encode(
        &mut self,
        picture: &Picture,
        force_idr: bool,
    ) -> Result<Vec<VideoFrame>, EncoderFailure> {
        Ok(Av1Encoder::encode(self, picture, force_idr)?)
    }

    fn flush(&mut self) -> Result<Vec<VideoFrame>, EncoderFailure> {
        Ok(Av1Encoder::flush(self)?)
    }
}

/// Open the encoder for a rung at `width` x `height` and nominal `fps`.
fn open_encoder(
    plan: &RungPlan,
    width: u32,
    height: u32,
    fps: f64,
) -> Result<Box<dyn RungEncoder>, String> {
    let threads = encoder_threads(plan, width, height);
    match plan.codec {
        RungCodec::H264 => {
            let settings = EncoderSettings {
                width,
                height,
                fps,
                bitrate_kbps: plan.bitrate_kbps,
                maxrate_kbps: plan.maxrate_kbps,
                bufsize_kbits: None,
                profile: plan.profile.clone(),
                preset: plan.preset.clone(),
                threads,
                keyint_max: KEYINT_MAX,
                source_idrs: true,
                low_latency: true,
            };
            match Encoder::new(&settings) {
                Ok(encoder) => Ok(Box::new(encoder)),
                Err(e) => Err(e.to_string()),
            }
        }
        RungCodec::Av1 => {
            let settings = Av1Settings {
                width,
                height,
                fps,
                bitrate_kbps: plan.bitrate_kbps,
                // rav1e sizes its threads to its tiles unless told
                threads: plan.threads,
                speed: None,
            };
            match Av1Encoder::new(&settings) {
                Ok(encoder) => Ok(Box::new(encoder)),
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

/// A rung's encoder, by where its input lives.
enum Coder {
    /// x264 or rav1e, from host pictures.
    Host(Box<dyn RungEncoder>),
    /// NVENC, from device pictures.
    Device(Box<dyn DeviceRungEncoder>),
}

/// A rung's scaler and encoder for one source format.
struct Active {
    key: SourceKey,
    /// The rung's output size for this source.
    size: (u32, u32),
    /// `None` when the rung is the source's size.
    scaler: Option<Scaler>,
    coder: Coder,
}

impl Active {
    fn on_device(&self) -> bool {
        matches!(self.coder, Coder::Device(_))
    }
}

/// Why a picture was not encoded.
enum Failure {
    /// Scaler or host encoder: costs this picture.
    Host { kind: String, message: String },
    /// The GPU encoder (or the copy out of GPU memory): the rung leaves the GPU.
    Gpu { kind: String, message: String },
}

/// One rung's stage, run on its own thread.
struct RungStage {
    shared: Arc<Shared>,
    sink: Arc<dyn RungSink>,
    index: usize,
    plan: RungPlan,
    rx: Receiver<RungItem>,
    /// Tells the decode stage when this stage is gone.
    _alive: Alive,
    active: Option<Active>,
    /// The source format (and input place) whose encoder could not be
    /// opened: its pictures are refused until the format changes (no
    /// reopening per picture).
    broken: Option<(SourceKey, bool)>,
    /// Opens the rung's GPU encoder; `None` for a host rung, and from the
    /// moment the GPU encoder fails.
    device: Option<Arc<dyn DeviceEncoders>>,
    /// Shared with the decode stage's port: whether to send device pictures.
    wants_device: Arc<AtomicBool>,
    /// The encoder changed place in mid-stream: pictures are dropped until
    /// the next forced one, where the new encoder starts (so its IDRs, and
    /// its new init segment, stay on the source's segment boundaries).
    awaiting_forced: bool,
    /// A device picture copied to the host, for x264 after a GPU failure.
    download: Picture,
    /// A forced picture was not encoded (error): the next encoded one is.
    carry_force: bool,
    /// Pts of the last picture kept by the frame-rate cap.
    last_kept: Option<Timestamp>,
    /// Pts of the last picture given to this encoder (for media time).
    last_encoded: Option<Timestamp>,
    /// Scaled output, reused for every picture.
    scratch: Picture,
    warned: Warned,
    /// Test only: panics to inject (stage: the rung's name).
    test_panics: TestPanics,
}

impl RungStage {
    fn counters(&self) -> &RungCounters {
        &self.shared.rungs[self.index].1
    }

    fn run(mut self) {
        while let Ok(item) = self.rx.recv() {
            if self.shared.stopping() {
                return;
            }
            self.picture(item);
        }
        if self.shared.stopping() {
            return;
        }
        self.close_encoder();
    }

    fn picture(&mut self, item: RungItem) {
        add(&self.counters().pictures_in, 1);
        if !self.test_panics.is_empty() {
            self.test_panics
                .check(&self.plan.name, get(&self.counters().pictures_in));
        }
        let force =
            item.picture.force_idr() || item.carried_force || std::mem::take(&mut self.carry_force);
        let Some(pts) = item.picture.pts() else {
            self.refuse("pts", "decoded picture without a pts".to_owned(), force);
            return;
        };
        if !self.keep_for_cap(pts, force) {
            add(&self.counters().dropped_fps_cap, 1);
            return;
        }
        let key = item.format.key();
        // device pictures go to the GPU encoder while it works
        let on_device = item.picture.is_device() && self.device.is_some();
        if !force {
            let moved = self
                .active
                .as_ref()
                .is_some_and(|a| a.key == key && a.on_device() != on_device);
            if moved {
                // The decoder left the GPU (or the GPU encoder did) between
                // two segment starts: the encoder for the new place starts
                // at the next one.
                self.close_encoder();
                self.awaiting_forced = true;
            }
            if self.awaiting_forced {
                add(&self.counters().errors, 1);
                return;
            }
        }
        self.awaiting_forced = false;

        let started = Instant::now();
        let mut result = self.encode_at(&item, key, on_device, pts, force);
        if let Err(Failure::Gpu { message, .. }) = &result {
            let message = message.clone();
            self.leave_gpu(&message, true);
            // A forced picture starts the x264 encoder at once (it is a
            // segment start); any other waits for the next one.
            result = if force {
                self.encode_at(&item, key, false, pts, force)
            } else {
                self.awaiting_forced = true;
                Err(Failure::Host {
                    kind: "gpu fallback".to_owned(),
                    message: format!("picture at {pts:?} lost while the rung leaves the GPU"),
                })
            };
        }
        add(
            &self.counters().encode_nanos,
            u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
        );
        match result {
            Ok(frames) => {
                if let Some(last) = self.last_encoded {
                    let gap = (pts - last).as_secs_f64();
                    if gap > 0.0 && gap <= MAX_MEDIA_STEP.as_secs_f64() {
                        add(&self.counters().media_micros, (gap * 1e6).round() as u64);
                    }
                }
                self.last_encoded = Some(pts);
                self.deliver(frames);
            }
            Err(Failure::Host { kind, message } | Failure::Gpu { kind, message }) => {
                let carry = force && !self.awaiting_forced;
                self.refuse(&kind, message, carry)
            }
        }
    }

    /// Make sure the encoder for `key` on `on_device` is open, then encode.
    fn encode_at(
        &mut self,
        item: &RungItem,
        key: SourceKey,
        on_device: bool,
        pts: Timestamp,
        force: bool,
    ) -> Result<Vec<VideoFrame>, Failure> {
        if self.active.as_ref().map(|a| (a.key, a.on_device())) != Some((key, on_device)) {
            self.close_encoder();
            if self.broken != Some((key, on_device)) {
                self.open(&item.format, on_device);
            }
        }
        self.encode(&item.picture, pts, force)
    }

    /// Scale (unless the picture is already at the rung's size) and encode.
    fn encode(
        &mut self,
        picture: &RungPicture,
        pts: Timestamp,
        force: bool,
    ) -> Result<Vec<VideoFrame>, Failure> {
        let Some(active) = self.active.as_mut() else {
            return Err(Failure::Host {
                kind: "no encoder".to_owned(),
                message: "no encoder for this source size".to_owned(),
            });
        };
        let host = |kind: String, message: String| Failure::Host { kind, message };
        let encoder = match &mut active.coder {
            Coder::Device(encoder) => {
                let RungPicture::Device { frame, .. } = picture else {
                    return Err(host(
                        "gpu input".to_owned(),
                        "a host picture reached the GPU encoder".to_owned(),
                    ));
                };
                return encoder
                    .encode(frame.as_ref(), pts, force)
                    .map_err(|e| Failure::Gpu {
                        kind: e.kind,
                        message: e.message,
                    });
            }
            Coder::Host(encoder) => encoder,
        };
        let picture: &Picture = match picture {
            RungPicture::Host(p) => p,
            RungPicture::Device { frame, .. } => {
                // queued for the GPU encoder before it failed
                frame
                    .download(&mut self.download)
                    .map_err(|message| Failure::Gpu {
                        kind: "gpu download".to_owned(),
                        message: format!("copying a picture out of GPU memory: {message}"),
                    })?;
                self.download.pts = Some(pts);
                self.download.force_idr = force;
                &self.download
            }
        };
        // A picture already at the rung's size (the hybrid decode stage
        // scales on the GPU) is encoded as it is; one at the source's size
        // is scaled here.
        let prescaled = (picture.width, picture.height) == active.size;
        let input = match &mut active.scaler {
            Some(scaler) if !prescaled => {
                scaler
                    .scale(picture, &mut self.scratch)
                    .map_err(|e| host(kind_of("scale", &e), e.to_string()))?;
                &self.scratch
            }
            _ => picture,
        };
        encoder
            .encode(input, force)
            .map_err(|e| host(e.kind, e.message))
    }

    /// The rung's GPU encoder failed (at open, or in mid-stream): x264 from
    /// now on, and the decode stage sends host pictures. Counted, logged once.
    fn leave_gpu(&mut self, why: &str, mid_stream: bool) {
        self.device = None;
        self.wants_device.store(false, Ordering::Release);
        add(&self.counters().gpu_fallbacks, 1);
        let (channel, rung) = (&self.shared.channel, &self.plan.name);
        if mid_stream {
            tracing::warn!(channel = %channel, rung = %rung, "GPU encoding failed: {why}; the rung moves to x264 at the next segment (its viewers see the picture hold until then)");
            self.close_encoder();
        } else {
            tracing::warn!(channel = %channel, rung = %rung, "GPU encoder cannot be opened: {why}; the rung encodes with x264");
        }
    }

    /// A picture not encoded because of an error.
    fn refuse(&mut self, kind: &str, message: String, force: bool) {
        add(&self.counters().errors, 1);
        self.carry_force |= force;
        self.log_error(kind, &message);
    }

    fn log_error(&mut self, kind: &str, message: &str) {
        let (channel, rung) = (&self.shared.channel, &self.plan.name);
        if self.warned.first(kind.to_owned()) {
            tracing::warn!(channel = %channel, rung = %rung, "{message} (further errors of this kind are logged at debug level)");
        } else {
            tracing::debug!(channel = %channel, rung = %rung, "{message}");
        }
    }

    /// The frame-rate cap: whether to keep a picture (see the module docs).
    fn keep_for_cap(&mut self, pts: Timestamp, force: bool) -> bool {
        let Some(cap) = self.plan.fps_max.filter(|f| usable_rate(*f)) else {
            return true;
        };
        let keep = force
            || self.last_kept.is_none_or(|last| {
                let gap = (pts - last).as_secs_f64();
                gap < 0.0 || gap >= 0.75 / cap
            });
        if keep {
            self.last_kept = Some(pts);
        }
        keep
    }

    /// Build the scaler and encoder for a source format (the GPU encoder when
    /// `on_device`; x264 when that cannot be opened) and announce the
    /// encoder's configuration.
    fn open(&mut self, format: &SourceFormat, on_device: bool) {
        let key = format.key();
        let (width, height) = scale::rung_size(
            key.width,
            key.height,
            key.sar,
            self.plan.width,
            self.plan.height,
        );
        let fps = rung_fps(format.frame_rate, self.plan.fps_max);
        let device = match self.device.clone().filter(|_| on_device) {
            Some(encoders) => match encoders.open(&self.plan, width, height, fps) {
                Ok(encoder) => Some(encoder),
                Err(why) => {
                    self.leave_gpu(&why, false);
                    None
                }
            },
            None => None,
        };
        let opened = match device {
            // device pictures come at the rung's size: no scaler
            Some(encoder) => Ok((None, Coder::Device(encoder))),
            None => {
                let scaler = if (width, height) == (key.width, key.height) {
                    Ok(None)
                } else {
                    Scaler::new(key.width, key.height, width, height)
                        .map(Some)
                        .map_err(|e| e.to_string())
                };
                scaler.and_then(|scaler| {
                    Ok((
                        scaler,
                        Coder::Host(open_encoder(&self.plan, width, height, fps)?),
                    ))
                })
            }
        };
        match opened {
            Ok((scaler, coder)) => {
                if scaler.is_some() {
                    self.scratch.resize(width, height);
                }
                let counters = self.counters();
                counters.width.store(width, Ordering::SeqCst);
                counters.height.store(height, Ordering::SeqCst);
                let (config, name) = match &coder {
                    Coder::Device(e) => (e.video_config(), "nvenc"),
                    Coder::Host(e) => (
                        e.video_config(),
                        match self.plan.codec {
                            RungCodec::H264 => "x264",
                            RungCodec::Av1 => "rav1e",
                        },
                    ),
                };
                let slot = ENCODER_NAMES.iter().position(|n| *n == name).unwrap_or(0) + 1;
                counters.encoder.store(slot as u32, Ordering::SeqCst);
                self.broken = None;
                self.last_encoded = None;
                self.sink.rung_config(&self.plan.name, config);
                self.active = Some(Active {
                    key,
                    size: (width, height),
                    scaler,
                    coder,
                });
            }
            Err(e) => {
                self.broken = Some((key, on_device && self.device.is_some()));
                let message = format!(
                    "channel {}: rung {}: cannot encode {}x{} (from a {}x{} source): {e}",
                    self.shared.channel, self.plan.name, width, height, key.width, key.height
                );
                tracing::error!(channel = %self.shared.channel, rung = %self.plan.name, "{message}");
                self.sink.pipeline_error(message);
            }
        }
    }

    /// Flush the current encoder, if any, and deliver what it held.
    fn close_encoder(&mut self) {
        let Some(active) = self.active.take() else {
            return;
        };
        let flushed = match active.coder {
            Coder::Host(mut e) => e.flush().map_err(|e| (e.kind, e.message)),
            Coder::Device(mut e) => e.flush().map_err(|e| (e.kind, e.message)),
        };
        match flushed {
            Ok(frames) => self.deliver(frames),
            Err((kind, message)) => {
                add(&self.counters().errors, 1);
                self.log_error(&kind, &message);
            }
        }
    }

    fn deliver(&self, frames: Vec<VideoFrame>) {
        for frame in frames {
            add(&self.counters().encoded, 1);
            self.sink.rung_frame(&self.plan.name, frame);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Real H.264 made by ffmpeg, demuxed as ingest would (the decoder's test
    //! helpers), through real decode, scale and x264.
    //!
    //! Most tests feed the pipeline "paced": after each access unit they
    //! wait (polling the counters, with a generous bound) until the decoder
    //! has taken it and the rungs have taken its pictures, so that the small
    //! rung queues never overflow on a loaded test box and every count is
    //! exact. The overflow tests make the overflow happen deterministically
    //! instead (a sink that blocks or sleeps). No test asserts on elapsed time.

    use super::*;
    use crate::pipeline::cpu::decode::tests::{demux, encode_at, have_ffmpeg, Stream, TempDir};
    use std::collections::BTreeSet;

    #[derive(Debug)]
    enum Event {
        Config(String, Arc<VideoConfig>),
        Frame(String, VideoFrame),
        Error(String),
    }

    /// A sink that records everything; optionally slow, blocking or
    /// panicking on one rung.
    #[derive(Default)]
    struct Collect {
        events: Mutex<Vec<Event>>,
        /// Sleep this long in `rung_frame` for this rung.
        slow: Option<(String, Duration)>,
        /// Block in `rung_frame` for this rung until the sender is dropped.
        block: Option<(String, Mutex<Receiver<()>>)>,
        /// Block in `pipeline_error` until the sender is dropped.
        block_errors: Option<Mutex<Receiver<()>>>,
        /// Panic in `rung_frame` for this rung.
        panic_on: Option<String>,
    }

    impl RungSink for Collect {
        fn rung_config(&self, rung: &str, config: Arc<VideoConfig>) {
            lock(&self.events).push(Event::Config(rung.to_owned(), config));
        }

        fn rung_frame(&self, rung: &str, frame: VideoFrame) {
            if self.panic_on.as_deref() == Some(rung) {
                panic!("test sink refuses frames for {rung}");
            }
            if let Some((name, wait)) = &self.slow {
                if name == rung {
                    std::thread::sleep(*wait);
                }
            }
            if let Some((name, release)) = &self.block {
                if name == rung {
                    let _ = lock(release).recv();
                }
            }
            lock(&self.events).push(Event::Frame(rung.to_owned(), frame));
        }

        fn pipeline_error(&self, message: String) {
            if let Some(release) = &self.block_errors {
                let _ = lock(release).recv();
            }
            lock(&self.events).push(Event::Error(message));
        }
    }

    impl Collect {
        fn frames(&self, rung: &str) -> Vec<VideoFrame> {
            lock(&self.events)
                .iter()
                .filter_map(|e| match e {
                    Event::Frame(r, f) if r == rung => Some(f.clone()),
                    _ => None,
                })
                .collect()
        }

        fn configs(&self, rung: &str) -> Vec<Arc<VideoConfig>> {
            lock(&self.events)
                .iter()
                .filter_map(|e| match e {
                    Event::Config(r, c) if r == rung => Some(c.clone()),
                    _ => None,
                })
                .collect()
        }

        fn errors(&self) -> Vec<String> {
            lock(&self.events)
                .iter()
                .filter_map(|e| match e {
                    Event::Error(m) => Some(m.clone()),
                    _ => None,
                })
                .collect()
        }

        /// A rung's events as segments: each configuration with the frames
        /// that followed it. Fails if a frame comes before any configuration.
        fn segments(&self, rung: &str) -> Vec<(Arc<VideoConfig>, Vec<VideoFrame>)> {
            let mut out: Vec<(Arc<VideoConfig>, Vec<VideoFrame>)> = Vec::new();
            for e in lock(&self.events).iter() {
                match e {
                    Event::Config(r, c) if r == rung => out.push((c.clone(), Vec::new())),
                    Event::Frame(r, f) if r == rung => out
                        .last_mut()
                        .expect("rung_config before the first frame")
                        .1
                        .push(f.clone()),
                    _ => {}
                }
            }
            out
        }
    }

    fn plan(name: &str, height: Option<u32>) -> RungPlan {
        RungPlan {
            name: name.to_owned(),
            codec: RungCodec::H264,
            width: None,
            height,
            bitrate_kbps: 300,
            maxrate_kbps: None,
            fps_max: None,
            profile: None,
            preset: Some("ultrafast".to_owned()),
            threads: 0,
        }
    }

    /// Poll until `done`, failing after a bound far beyond what it needs.
    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Access units the pipeline has dealt with (decoded or dropped).
    fn handled(s: &PipelineStats) -> u64 {
        s.decode.access_units + s.decode.dropped_queue_full + s.decode.dropped_no_decoder
    }

    /// Feed `frames` one at a time (forced where `force` says), waiting after
    /// each until it is handled and the rungs in `pace` have taken every
    /// picture decoded so far.
    fn feed_paced(
        pipeline: &ChannelPipeline,
        frames: &[VideoFrame],
        force: impl Fn(usize) -> bool,
        pace: &[usize],
    ) {
        let start = handled(&pipeline.stats());
        for (i, frame) in frames.iter().enumerate() {
            pipeline.video_frame(frame.clone(), force(i));
            let fed = start + i as u64 + 1;
            wait_until("the stages to take an access unit", || {
                let s = pipeline.stats();
                handled(&s) == fed
                    && pace.iter().all(|&r| {
                        s.rungs[r].pictures_in + s.rungs[r].dropped_queue_full == s.decode.pictures
                    })
            });
        }
    }

    fn sorted_pts(frames: &[VideoFrame]) -> Vec<Timestamp> {
        let mut pts: Vec<Timestamp> = frames.iter().map(|f| f.pts).collect();
        pts.sort();
        pts
    }

    fn keyframe_pts(frames: &[VideoFrame]) -> BTreeSet<Timestamp> {
        frames
            .iter()
            .filter(|f| f.keyframe)
            .map(|f| f.pts)
            .collect()
    }

    /// Output frames are in presentation order with dts == pts.
    fn assert_timing(frames: &[VideoFrame]) {
        for f in frames {
            assert_eq!(f.dts, f.pts, "dts == pts");
        }
        assert!(frames.windows(2).all(|w| w[0].pts < w[1].pts));
    }

    fn stream(
        dir: &TempDir,
        name: &str,
        size: (u32, u32),
        rate: u32,
        frames: usize,
        x264: &str,
    ) -> Stream {
        let path = encode_at(
            dir,
            name,
            size,
            rate,
            frames,
            &[
                "-pix_fmt",
                "yuv420p",
                "-preset",
                "ultrafast",
                "-x264-params",
                x264,
            ],
        );
        demux(&path)
    }

    #[test]
    fn b_frame_source_to_two_rungs_with_idrs_where_forced() {
        if !have_ffmpeg() {
            return;
        }
        let dir = TempDir::new("graph-bframes");
        let source = stream(
            &dir,
            "src",
            (640, 360),
            30,
            60,
            "keyint=30:min-keyint=30:scenecut=0:bframes=2:b-pyramid=none",
        );
        assert!(source.frames.iter().any(|f| f.pts > f.dts), "B-frames");
        let idrs: Vec<usize> = (0..source.frames.len())
            .filter(|&i| source.frames[i].keyframe)
            .collect();
        assert_eq!(idrs, [0, 30], "the source's IDRs, in decode order");

        let sink = Arc::new(Collect::default());
        let pipeline = ChannelPipeline::start(
            "bframes",
            vec![plan("360p", Some(360)), plan("180p", Some(180))],
            sink.clone(),
        );
        pipeline.video_config(source.config.clone());
        // Forced on the IDR access units (every 30th in decode order).
        feed_paced(&pipeline, &source.frames, |i| i % 30 == 0, &[0, 1]);
        let stats = pipeline.finish();

        let forced: BTreeSet<Timestamp> = idrs.iter().map(|&i| source.frames[i].pts).collect();
        for (rung, size) in [("360p", (640, 360)), ("180p", (320, 180))] {
            let segments = sink.segments(rung);
            assert_eq!(segments.len(), 1, "{rung}: one encoder");
            let (config, frames) = &segments[0];
            assert_eq!((config.width, config.height), size, "{rung}");
            assert_eq!(
                sorted_pts(frames),
                sorted_pts(&source.frames),
                "{rung}: every picture, exact pts"
            );
            assert_timing(frames);
            assert_eq!(
                keyframe_pts(frames),
                forced,
                "{rung}: IDRs exactly where forced"
            );
        }
        assert_eq!(stats.decode.access_units, 60);
        assert_eq!(stats.decode.pictures, 60);
        assert_eq!(stats.decode.errors + stats.decode.dropped_queue_full, 0);
        for rung in &stats.rungs {
            assert_eq!((rung.pictures_in, rung.encoded), (60, 60), "{rung:?}");
            assert_eq!(
                rung.dropped_queue_full + rung.dropped_fps_cap + rung.errors,
                0
            );
            assert!(rung.encode_seconds > 0.0);
            // 59 gaps of 1/30 s (ms timestamps: 33 or 34 ms each).
            assert!((rung.media_seconds - 59.0 / 30.0).abs() < 0.01, "{rung:?}");
        }
        assert_eq!((stats.rungs[1].width, stats.rungs[1].height), (320, 180));
        assert!(sink.errors().is_empty());
    }

    /// A stand-in for NVDEC + CUDA scaling (no GPU here): libavcodec decodes,
    /// swscale renders each rung's size, and a "GPU failure" can be injected
    /// at one access unit. Records the sizes it rendered and the pts of the
    /// pictures it gave out.
    struct FakeFront {
        decoder: Option<Decoder>,
        pool: Arc<PicturePool>,
        /// Fail (`FrontError::Device`) at this access unit (0-based).
        fail_at: Option<usize>,
        /// Report a damaged picture (`take_errors`) after these access units.
        damaged_at: Vec<usize>,
        damaged: Vec<String>,
        access_units: usize,
        rendered: Arc<Mutex<Vec<(u32, u32)>>>,
        rendered_device: Arc<Mutex<Vec<(u32, u32)>>>,
        emitted: Arc<Mutex<Vec<Timestamp>>>,
    }

    impl FakeFront {
        fn new(fail_at: Option<usize>) -> FakeFront {
            FakeFront {
                decoder: None,
                pool: PicturePool::new(8),
                fail_at,
                damaged_at: Vec::new(),
                damaged: Vec::new(),
                access_units: 0,
                rendered: Arc::default(),
                rendered_device: Arc::default(),
                emitted: Arc::default(),
            }
        }

        fn out(&self, pictures: Vec<Picture>) -> Vec<Picture> {
            lock(&self.emitted).extend(pictures.iter().filter_map(|p| p.pts));
            pictures
        }
    }

    impl FrontEnd for FakeFront {
        type Source = Picture;

        fn configure(&mut self, config: &VideoConfig) -> Result<Vec<Picture>, FrontError> {
            let held = match self.decoder.as_mut() {
                Some(d) => d
                    .flush(&self.pool)
                    .map_err(|e| FrontError::Device(e.to_string()))?,
                None => Vec::new(),
            };
            self.decoder =
                Some(Decoder::new(config, 1).map_err(|e| FrontError::Device(e.to_string()))?);
            Ok(self.out(held))
        }

        fn decode(&mut self, frame: &VideoFrame) -> Result<Vec<Picture>, FrontError> {
            let n = self.access_units;
            self.access_units += 1;
            if self.fail_at == Some(n) {
                return Err(FrontError::Device(
                    "CUDA_ERROR_LAUNCH_FAILED (injected)".into(),
                ));
            }
            if self.damaged_at.contains(&n) {
                self.damaged
                    .push(format!("picture {n} decoded with errors (injected)"));
            }
            let decoder = self.decoder.as_mut().expect("configured");
            let pictures = decoder
                .decode(frame, &self.pool)
                .map_err(|e| FrontError::Stream(e.to_string()))?;
            Ok(self.out(pictures))
        }

        fn flush(&mut self) -> Result<Vec<Picture>, FrontError> {
            let held = match self.decoder.as_mut() {
                Some(d) => d
                    .flush(&self.pool)
                    .map_err(|e| FrontError::Device(e.to_string()))?,
                None => Vec::new(),
            };
            Ok(self.out(held))
        }

        fn info(&self, source: &Picture) -> hybrid::SourceInfo {
            hybrid::SourceInfo {
                width: source.width,
                height: source.height,
                pts: source.pts.expect("decoded pts"),
                seq: source.seq,
                source_idr: source.source_idr,
            }
        }

        fn render(
            &mut self,
            source: &Picture,
            size: (u32, u32),
            pool: &Arc<PicturePool>,
        ) -> Result<Picture, FrontError> {
            lock(&self.rendered).push(size);
            let mut out = pool.take(size.0, size.1);
            if size == (source.width, source.height) {
                for (o, s) in out.planes.iter_mut().zip(&source.planes) {
                    o.data.copy_from_slice(&s.data);
                }
            } else {
                Scaler::new(source.width, source.height, size.0, size.1)
                    .and_then(|mut sc| sc.scale(source, &mut out))
                    .map_err(|e| FrontError::Device(e.to_string()))?;
            }
            Ok(out)
        }

        fn take_errors(&mut self) -> Vec<String> {
            std::mem::take(&mut self.damaged)
        }

        fn render_device(
            &mut self,
            source: &Picture,
            size: (u32, u32),
        ) -> Result<Arc<dyn DevicePicture>, FrontError> {
            let pool = PicturePool::new(1);
            let picture = self.render(source, size, &pool)?;
            // `render` recorded it as a host rendering
            lock(&self.rendered).pop();
            lock(&self.rendered_device).push(size);
            Ok(Arc::new(FakeDevice(picture.clone())))
        }
    }

    /// A stand-in for a picture in GPU memory: a host picture behind the trait.
    struct FakeDevice(Picture);

    impl DevicePicture for FakeDevice {
        fn size(&self) -> (u32, u32) {
            (self.0.width, self.0.height)
        }

        fn download(&self, into: &mut Picture) -> Result<(), String> {
            into.resize(self.0.width, self.0.height);
            for (o, s) in into.planes.iter_mut().zip(&self.0.planes) {
                o.data.copy_from_slice(&s.data);
            }
            Ok(())
        }

        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    /// A stand-in for NVENC: x264 reading [`FakeDevice`] pictures, failing
    /// (as a lost GPU would) at one picture of one rung, or at open.
    #[derive(Default)]
    struct FakeEncoders {
        /// (rung, 0-based picture) where `encode` fails.
        fail_at: Option<(String, usize)>,
        fail_open: bool,
        /// Pictures encoded "on the GPU", per rung.
        encoded: Arc<Mutex<Vec<(String, Timestamp)>>>,
    }

    struct FakeDeviceEncoder {
        rung: String,
        x264: Encoder,
        fail_at: Option<usize>,
        pictures: usize,
        encoded: Arc<Mutex<Vec<(String, Timestamp)>>>,
    }

    impl DeviceEncoders for FakeEncoders {
        fn takes(&self, plan: &RungPlan) -> bool {
            plan.codec == RungCodec::H264
        }

        fn open(
            &self,
            plan: &RungPlan,
            width: u32,
            height: u32,
            fps: f64,
        ) -> Result<Box<dyn DeviceRungEncoder>, String> {
            if self.fail_open {
                return Err("no NVENC on GPU 0 (injected)".into());
            }
            let settings = EncoderSettings {
                width,
                height,
                fps,
                bitrate_kbps: plan.bitrate_kbps,
                maxrate_kbps: None,
                bufsize_kbits: None,
                profile: None,
                preset: Some("ultrafast".into()),
                threads: 1,
                keyint_max: KEYINT_MAX,
                source_idrs: true,
                low_latency: true,
            };
            Ok(Box::new(FakeDeviceEncoder {
                rung: plan.name.clone(),
                x264: Encoder::new(&settings).map_err(|e| e.to_string())?,
                fail_at: self
                    .fail_at
                    .as_ref()
                    .filter(|(r, _)| *r == plan.name)
                    .map(|(_, n)| *n),
                pictures: 0,
                encoded: self.encoded.clone(),
            }))
        }
    }

    impl DeviceRungEncoder for FakeDeviceEncoder {
        fn video_config(&self) -> Arc<VideoConfig> {
            self.x264.video_config()
        }

        fn encode(
            &mut self,
            picture: &dyn DevicePicture,
            pts: Timestamp,
            force_idr: bool,
        ) -> Result<Vec<VideoFrame>, crate::pipeline::gpu::device::DeviceEncodeError> {
            let n = self.pictures;
            self.pictures += 1;
            if self.fail_at == Some(n) {
                return Err(crate::pipeline::gpu::device::DeviceEncodeError {
                    kind: "nvenc lost".into(),
                    message: "NVENC: NV_ENC_ERR_DEVICE_NOT_EXIST (injected)".into(),
                });
            }
            let Some(FakeDevice(p)) = picture.as_any().downcast_ref::<FakeDevice>() else {
                panic!("not a device picture");
            };
            let mut p = p.clone();
            p.pts = Some(pts);
            lock(&self.encoded).push((self.rung.clone(), pts));
            Ok(self
                .x264
                .encode(&p, force_idr)
                .expect("x264")
                .into_iter()
                .collect())
        }

        fn flush(
            &mut self,
        ) -> Result<Vec<VideoFrame>, crate::pipeline::gpu::device::DeviceEncodeError> {
            Ok(self.x264.flush().expect("x264 flush"))
        }
    }

    /// A pipeline on a [`FakeFront`] whose H.264 rungs encode on `encoders`.
    fn start_fake_gpu(
        name: &str,
        rungs: Vec<RungPlan>,
        sink: Arc<Collect>,
        front: FakeFront,
        encoders: FakeEncoders,
    ) -> ChannelPipeline {
        ChannelPipeline::start_decoding(
            name,
            rungs,
            sink,
            PipelineOptions::default(),
            Some(Arc::new(encoders)),
            move |stage| {
                let mut front = front;
                stage.run_front(0, Ok(&mut front))
            },
        )
    }

    fn config_sizes(sink: &Collect, rung: &str) -> Vec<(u32, u32)> {
        sink.configs(rung)
            .iter()
            .map(|c| (c.width, c.height))
            .collect()
    }

    #[test]
    fn gpu_rungs_encode_from_device_pictures_with_the_source_idrs() {
        if !have_ffmpeg() {
            return;
        }
        let dir = TempDir::new("graph-gpu-encode");
        let source = stream(
            &dir,
            "src",
            (640, 360),
            30,
            60,
            "keyint=30:min-keyint=30:scenecut=0:bframes=2:b-pyramid=none",
        );
        let front = FakeFront::new(None);
        let (rendered, rendered_device) = (front.rendered.clone(), front.rendered_device.clone());
        let encoders = FakeEncoders::default();
        let encoded = encoders.encoded.clone();
        let sink = Arc::new(Collect::default());
        let pipeline = start_fake_gpu(
            "gpuenc",
            vec![plan("360p", Some(360)), plan("180p", Some(180))],
            sink.clone(),
            front,
            encoders,
        );
        pipeline.video_config(source.config.clone());
        feed_paced(&pipeline, &source.frames, |i| i % 30 == 0, &[0, 1]);
        let stats = pipeline.finish();

        assert!(lock(&rendered).is_empty(), "no host picture was made");
        let device = lock(&rendered_device).clone();
        assert_eq!(device.len(), 120, "one device picture per rung size");
        let forced: BTreeSet<Timestamp> = [0, 30].iter().map(|&i| source.frames[i].pts).collect();
        for (rung, size) in [("360p", (640, 360)), ("180p", (320, 180))] {
            let frames = sink.frames(rung);
            assert_timing(&frames);
            assert_eq!(sorted_pts(&frames), sorted_pts(&source.frames), "{rung}");
            assert_eq!(keyframe_pts(&frames), forced, "{rung}");
            assert_eq!(config_sizes(&sink, rung), [size], "{rung}");
            let on_gpu = lock(&encoded).iter().filter(|(r, _)| r == rung).count();
            assert_eq!(on_gpu, 60, "{rung}: every picture on the GPU encoder");
        }
        for r in &stats.rungs {
            assert_eq!((r.encoded, r.errors, r.gpu_fallbacks), (60, 0, 0), "{r:?}");
            assert_eq!(r.encoder, "nvenc", "{r:?}");
        }
        assert!(sink.errors().is_empty(), "{:?}", sink.errors());
    }

    #[test]
    fn a_gpu_encoder_failure_moves_the_rung_to_x264_at_the_next_segment() {
        if !have_ffmpeg() {
            return;
        }
        let dir = TempDir::new("graph-gpu-encode-fail");
        let source = stream(
            &dir,
            "src",
            (640, 360),
            30,
            90,
            "keyint=30:min-keyint=30:scenecut=0:bframes=0",
        );
        let front = FakeFront::new(None);
        let rendered = front.rendered.clone();
        let encoders = FakeEncoders {
            fail_at: Some(("180p".into(), 40)),
            ..FakeEncoders::default()
        };
        let encoded = encoders.encoded.clone();
        let sink = Arc::new(Collect::default());
        let pipeline = start_fake_gpu(
            "gpuencfail",
            vec![plan("360p", Some(360)), plan("180p", Some(180))],
            sink.clone(),
            front,
            encoders,
        );
        pipeline.video_config(source.config.clone());
        feed_paced(&pipeline, &source.frames, |i| i % 30 == 0, &[0, 1]);
        let stats = pipeline.finish();

        let forced: BTreeSet<Timestamp> =
            [0, 30, 60].iter().map(|&i| source.frames[i].pts).collect();
        // 360p never noticed
        let frames = sink.frames("360p");
        assert_eq!(sorted_pts(&frames), sorted_pts(&source.frames));
        assert_eq!(keyframe_pts(&frames), forced);
        assert_eq!(config_sizes(&sink, "360p"), [(640, 360)]);
        // 180p: the GPU's pictures up to the failure, nothing until the
        // segment at 60, then x264's, behind a new configuration (a new
        // init segment), its IDRs still on the source's
        let frames = sink.frames("180p");
        assert_timing(&frames);
        let want: Vec<Timestamp> = source.frames[..40]
            .iter()
            .chain(&source.frames[60..])
            .map(|f| f.pts)
            .collect();
        assert_eq!(sorted_pts(&frames), want);
        assert_eq!(keyframe_pts(&frames), forced);
        assert_eq!(config_sizes(&sink, "180p"), [(320, 180), (320, 180)]);
        let on_gpu = lock(&encoded).iter().filter(|(r, _)| r == "180p").count();
        assert_eq!(on_gpu, 40);
        // after the failure the decode stage renders 180p on the host
        assert!(lock(&rendered).iter().all(|s| *s == (320, 180)));
        assert!(lock(&rendered).len() >= 30, "{}", lock(&rendered).len());
        let r = &stats.rungs[1];
        assert_eq!((r.encoded, r.errors, r.gpu_fallbacks), (70, 20, 1), "{r:?}");
        assert_eq!(r.encoder, "x264");
        let r = &stats.rungs[0];
        assert_eq!((r.encoded, r.errors, r.gpu_fallbacks), (90, 0, 0), "{r:?}");
        assert_eq!(r.encoder, "nvenc");
    }

    #[test]
    fn a_gpu_encoder_failing_at_a_segment_start_hands_that_picture_to_x264() {
        if !have_ffmpeg() {
            return;
        }
        let dir = TempDir::new("graph-gpu-encode-fail-idr");
        let source = stream(&dir, "src", (320, 180), 30, 60, "keyint=30:scenecut=0");
        let encoders = FakeEncoders {
            fail_at: Some(("90p".into(), 30)),
            ..FakeEncoders::default()
        };
        let sink = Arc::new(Collect::default());
        let pipeline = start_fake_gpu(
            "gpuencidr",
            vec![plan("90p", Some(90))],
            sink.clone(),
            FakeFront::new(None),
            encoders,
        );
        pipeline.video_config(source.config.clone());
        feed_paced(&pipeline, &source.frames, |i| i % 30 == 0, &[0]);
        let stats = pipeline.finish();
        let frames = sink.frames("90p");
        assert_eq!(sorted_pts(&frames), sorted_pts(&source.frames), "none lost");
        let forced: BTreeSet<Timestamp> = [0, 30].iter().map(|&i| source.frames[i].pts).collect();
        assert_eq!(keyframe_pts(&frames), forced);
        assert_eq!(sink.configs("90p").len(), 2);
        let r = &stats.rungs[0];
        assert_eq!((r.encoded, r.errors, r.gpu_fallbacks), (60, 0, 1), "{r:?}");
    }

    #[test]
    fn a_gpu_encoder_that_cannot_open_leaves_the_rung_on_x264() {
        if !have_ffmpeg() {
            return;
        }
        let dir = TempDir::new("graph-gpu-encode-noopen");
        let source = stream(&dir, "src", (320, 180), 30, 30, "keyint=30:scenecut=0");
        let front = FakeFront::new(None);
        let (rendered, rendered_device) = (front.rendered.clone(), front.rendered_device.clone());
        let encoders = FakeEncoders {
            fail_open: true,
            ..FakeEncoders::default()
        };
        let sink = Arc::new(Collect::default());
        let pipeline = start_fake_gpu(
            "gpunoopen",
            vec![plan("90p", Some(90))],
            sink.clone(),
            front,
            encoders,
        );
        pipeline.video_config(source.config.clone());
        feed_paced(&pipeline, &source.frames, |i| i == 0, &[0]);
        let stats = pipeline.finish();
        assert_eq!(sorted_pts(&sink.frames("90p")), sorted_pts(&source.frames));
        assert_eq!(sink.configs("90p").len(), 1, "x264's only");
        let r = &stats.rungs[0];
        assert_eq!((r.encoded, r.errors, r.gpu_fallbacks), (30, 0, 1), "{r:?}");
        assert_eq!(r.encoder, "x264");
        // the first picture went out as a device picture, then host ones
        assert!(!lock(&rendered_device).is_empty());
        assert!(lock(&rendered).len() >= 28);
    }

    /// A pipeline whose decode stage runs on a [`FakeFront`].
    fn start_fake(
        name: &str,
        rungs: Vec<RungPlan>,
        sink: Arc<Collect>,
        front: FakeFront,
    ) -> ChannelPipeline {
        ChannelPipeline::start_decoding(
            name,
            rungs,
            sink,
            PipelineOptions::default(),
            None,
            move |stage| {
                let mut front = front;
                stage.run_front(0, Ok(&mut front))
            },
        )
    }

    /// Per rung: (sorted pts, keyframe pts, configured sizes).
    type RungOutput = Vec<(Vec<Timestamp>, BTreeSet<Timestamp>, Vec<(u32, u32)>)>;

    fn outputs(sink: &Collect, rungs: &[&str]) -> RungOutput {
        rungs
            .iter()
            .map(|r| {
                let frames = sink.frames(r);
                assert_timing(&frames);
                let sizes = sink
                    .configs(r)
                    .iter()
                    .map(|c| (c.width, c.height))
                    .collect();
                (sorted_pts(&frames), keyframe_pts(&frames), sizes)
            })
            .collect()
    }

    #[test]
    fn nvdec_backend_without_a_driver_runs_on_the_cpu_with_the_same_output() {
        if !have_ffmpeg() {
            return;
        }
        let dir = TempDir::new("graph-nvdec-fallback");
        let source = stream(
            &dir,
            "src",
            (640, 360),
            30,
            60,
            "keyint=30:min-keyint=30:scenecut=0:bframes=2:b-pyramid=none",
        );
        let gpu_usable = crate::pipeline::gpu::driver::Driver::init()
            .and_then(|d| d.device_count())
            .is_ok_and(|n| n > 0);
        let mut runs = Vec::new();
        for decode in [DecodeBackend::Cpu, DecodeBackend::Nvdec { gpu: 0 }] {
            let sink = Arc::new(Collect::default());
            let pipeline = ChannelPipeline::start_with(
                "nvdec",
                vec![plan("360p", Some(360)), plan("180p", Some(180))],
                sink.clone(),
                PipelineOptions {
                    decode,
                    ..PipelineOptions::default()
                },
            );
            pipeline.video_config(source.config.clone());
            feed_paced(&pipeline, &source.frames, |i| i % 30 == 0, &[0, 1]);
            let stats = pipeline.finish();
            let fallbacks = match decode {
                DecodeBackend::Nvdec { .. } if !gpu_usable => 1,
                _ => 0,
            };
            assert_eq!(stats.decode.gpu_fallbacks, fallbacks, "{decode}");
            assert_eq!(stats.decode.pictures, 60, "{decode}");
            assert!(sink.errors().is_empty(), "{decode}: {:?}", sink.errors());
            runs.push(outputs(&sink, &["360p", "180p"]));
        }
        let forced: BTreeSet<Timestamp> = [0, 30].iter().map(|&i| source.frames[i].pts).collect();
        assert_eq!(runs[0], runs[1], "same pictures, IDRs and sizes");
        assert_eq!(runs[0][1].1, forced);
        assert_eq!(runs[0][1].2, [(320, 180)]);
        assert_eq!(runs[0][1].0, sorted_pts(&source.frames));
    }

    #[test]
    fn prescaled_pictures_are_encoded_without_rescaling() {
        if !have_ffmpeg() {
            return;
        }
        let dir = TempDir::new("graph-prescaled");
        let source = stream(
            &dir,
            "src",
            (640, 360),
            30,
            60,
            "keyint=30:min-keyint=30:scenecut=0:bframes=2:b-pyramid=none",
        );
        let front = FakeFront::new(None);
        let rendered = front.rendered.clone();
        let sink = Arc::new(Collect::default());
        let rungs = vec![
            plan("360p", Some(360)),
            plan("180p", Some(180)),
            plan("180b", Some(180)),
        ];
        let pipeline = start_fake("prescaled", rungs, sink.clone(), front);
        pipeline.video_config(source.config.clone());
        feed_paced(&pipeline, &source.frames, |i| i % 30 == 0, &[0, 1, 2]);
        let stats = pipeline.finish();

        // One rendering per size per picture: the source size (360p) and
        // 320x180 (shared by the two 180p rungs).
        let rendered = lock(&rendered).clone();
        assert_eq!(rendered.len(), 120);
        assert_eq!(rendered.iter().filter(|s| **s == (320, 180)).count(), 60);
        // A 320x180 picture given to the rung's 640x360 swscale would be
        // refused (errors); none is, so the rung did not scale it again.
        let forced: BTreeSet<Timestamp> = [0, 30].iter().map(|&i| source.frames[i].pts).collect();
        for (rung, size) in [
            ("360p", (640, 360)),
            ("180p", (320, 180)),
            ("180b", (320, 180)),
        ] {
            let frames = sink.frames(rung);
            assert_eq!(sorted_pts(&frames), sorted_pts(&source.frames), "{rung}");
            assert_eq!(keyframe_pts(&frames), forced, "{rung}");
            let sizes: Vec<(u32, u32)> = sink
                .configs(rung)
                .iter()
                .map(|c| (c.width, c.height))
                .collect();
            assert_eq!(sizes, [size], "{rung}");
        }
        for r in &stats.rungs {
            assert_eq!((r.pictures_in, r.encoded, r.errors), (60, 60, 0), "{r:?}");
        }
        assert_eq!(stats.decode.gpu_fallbacks, 0);
        assert!(sink.errors().is_empty(), "{:?}", sink.errors());
    }

    #[test]
    fn a_gpu_failure_moves_to_the_cpu_decoder_at_the_next_keyframe() {
        if !have_ffmpeg() {
            return;
        }
        let dir = TempDir::new("graph-gpu-failure");
        let source = stream(
            &dir,
            "src",
            (640, 360),
            30,
            90,
            "keyint=30:min-keyint=30:scenecut=0:bframes=0",
        );
        let mut front = FakeFront::new(Some(40));
        // two pictures the "GPU" decoded with errors before it failed
        front.damaged_at = vec![5, 12];
        let emitted = front.emitted.clone();
        let sink = Arc::new(Collect::default());
        let pipeline = start_fake(
            "gpufail",
            vec![plan("360p", Some(360)), plan("180p", Some(180))],
            sink.clone(),
            front,
        );
        pipeline.video_config(source.config.clone());
        feed_paced(&pipeline, &source.frames, |i| i % 30 == 0, &[0, 1]);
        let stats = pipeline.finish();

        // Before the failure: what the GPU gave; from the keyframe at 60 on:
        // everything, from the CPU decoder; in between: nothing.
        let mut want: Vec<Timestamp> = lock(&emitted).clone();
        assert!(want.len() >= 38, "{want:?}");
        assert!(want.iter().all(|pts| *pts < source.frames[40].pts));
        want.extend(source.frames[60..].iter().map(|f| f.pts));
        want.sort();
        let forced: BTreeSet<Timestamp> =
            [0, 30, 60].iter().map(|&i| source.frames[i].pts).collect();
        for (rung, size) in [("360p", (640, 360)), ("180p", (320, 180))] {
            let frames = sink.frames(rung);
            assert_timing(&frames);
            assert_eq!(sorted_pts(&frames), want, "{rung}");
            assert_eq!(keyframe_pts(&frames), forced, "{rung}: IDRs stay aligned");
            // Same source format: the rung keeps its encoder (no new init
            // segment) and scales the CPU decoder's pictures itself.
            let sizes: Vec<(u32, u32)> = sink
                .configs(rung)
                .iter()
                .map(|c| (c.width, c.height))
                .collect();
            assert_eq!(sizes, [size], "{rung}");
        }
        assert_eq!(stats.decode.gpu_fallbacks, 1);
        assert_eq!(stats.decode.errors, 2, "the damaged pictures are counted");
        assert_eq!(
            stats.decode.access_units, 71,
            "0..=40 on the GPU, 60.. on the CPU"
        );
        assert_eq!(
            stats.decode.dropped_no_decoder, 19,
            "41..60 waiting for the keyframe"
        );
        for r in &stats.rungs {
            assert_eq!(r.errors, 0, "{r:?}");
            assert_eq!(r.encoded, want.len() as u64, "{r:?}");
        }
    }

    #[test]
    fn a_gpu_that_cannot_start_decodes_on_the_cpu_from_the_first_picture() {
        if !have_ffmpeg() {
            return;
        }
        let dir = TempDir::new("graph-gpu-nostart");
        let source = stream(&dir, "src", (320, 180), 30, 30, "keyint=30:scenecut=0");
        let sink = Arc::new(Collect::default());
        let pipeline = ChannelPipeline::start_decoding(
            "nostart",
            vec![plan("90p", Some(90))],
            sink.clone(),
            PipelineOptions::default(),
            None,
            |stage| stage.run_front::<FakeFront>(3, Err("no NVIDIA driver".into())),
        );
        pipeline.video_config(source.config.clone());
        feed_paced(&pipeline, &source.frames, |i| i == 0, &[0]);
        let stats = pipeline.finish();
        assert_eq!(stats.decode.gpu_fallbacks, 1);
        assert_eq!(stats.decode.pictures, 30);
        assert_eq!(stats.rungs[0].encoded, 30);
        assert_eq!(sink.configs("90p")[0].height, 90);
    }

    #[test]
    fn force_on_non_idr_access_units() {
        if !have_ffmpeg() {
            return;
        }
        let dir = TempDir::new("graph-force");
        let source = stream(
            &dir,
            "src",
            (320, 180),
            30,
            40,
            "keyint=30:min-keyint=30:scenecut=0:bframes=0",
        );
        assert!(source.frames[30].keyframe && !source.frames[10].keyframe);
        let sink = Arc::new(Collect::default());
        let pipeline = ChannelPipeline::start(
            "force",
            vec![plan("full", None), plan("small", Some(90))],
            sink.clone(),
        );
        pipeline.video_config(source.config.clone());
        feed_paced(&pipeline, &source.frames, |i| i == 10 || i == 25, &[0, 1]);
        pipeline.finish();

        // The first picture of an encoder is an IDR; then only the forced
        // ones, and not the source's own unforced IDR at 30.
        let expected: BTreeSet<Timestamp> =
            [0, 10, 25].iter().map(|&i| source.frames[i].pts).collect();
        for (rung, size) in [("full", (320, 180)), ("small", (160, 90))] {
            let segments = sink.segments(rung);
            assert_eq!(segments.len(), 1);
            assert_eq!((segments[0].0.width, segments[0].0.height), size);
            let frames = &segments[0].1;
            assert_eq!(frames.len(), 40);
            assert_timing(frames);
            assert_eq!(keyframe_pts(frames), expected, "{rung}");
        }
    }

    #[test]
    fn fps_cap_keeps_every_other_picture_and_the_forced_ones() {
        if !have_ffmpeg() {
            return;
        }
        let dir = TempDir::new("graph-fps");
        let source = stream(
            &dir,
            "src",
            (320, 180),
            60,
            40,
            "keyint=60:scenecut=0:bframes=0",
        );
        let sink = Arc::new(Collect::default());
        let mut capped = plan("capped", None);
        capped.fps_max = Some(30.0);
        let pipeline = ChannelPipeline::start("fps", vec![capped, plan("all", None)], sink.clone());
        pipeline.video_config(source.config.clone());
        feed_paced(&pipeline, &source.frames, |i| i == 0 || i == 7, &[0, 1]);
        let stats = pipeline.finish();

        // Even pictures up to 6, the forced 7 (which re-anchors), then odd.
        let kept: Vec<usize> = (0..=6).step_by(2).chain((7..40).step_by(2)).collect();
        let expected: Vec<Timestamp> = kept.iter().map(|&i| source.frames[i].pts).collect();
        let frames = sink.frames("capped");
        assert_timing(&frames);
        assert_eq!(sorted_pts(&frames), expected);
        let forced: BTreeSet<Timestamp> = [0, 7].iter().map(|&i| source.frames[i].pts).collect();
        assert_eq!(keyframe_pts(&frames), forced);
        assert_eq!(stats.rungs[0].dropped_fps_cap, 40 - kept.len() as u64);
        assert_eq!(stats.rungs[0].encoded, kept.len() as u64);
        assert_eq!(sink.frames("all").len(), 40);
        assert_eq!(stats.rungs[1].dropped_fps_cap, 0);

        // The encoders' nominal rates: the source's, capped.
        assert_eq!(source.config.frame_rate, Some(60.0));
        assert_eq!(sink.configs("capped")[0].frame_rate, Some(30.0));
        assert_eq!(sink.configs("all")[0].frame_rate, Some(60.0));
    }

    /// A fast rung and a slow one fed a 60-picture 320x180 source paced on
    /// the fast rung (the slow one's queue fills), every `every`th picture
    /// forced.
    struct SlowRun {
        sink: Arc<Collect>,
        stats: PipelineStats,
        source_pts: Vec<Timestamp>,
        forced: BTreeSet<Timestamp>,
    }

    /// [`SlowRun`] with the slow rung taking `slow` a picture; `None` without
    /// ffmpeg.
    fn slow_run(name: &str, slow: Duration, every: usize) -> Option<SlowRun> {
        if !have_ffmpeg() {
            return None;
        }
        let dir = TempDir::new(name);
        let source = stream(
            &dir,
            "src",
            (320, 180),
            30,
            60,
            "keyint=60:scenecut=0:bframes=0",
        );
        let sink = Arc::new(Collect {
            slow: Some(("slow".to_owned(), slow)),
            ..Collect::default()
        });
        let pipeline = ChannelPipeline::start(
            name,
            vec![plan("fast", None), plan("slow", Some(90))],
            sink.clone(),
        );
        pipeline.video_config(source.config.clone());
        let forced_at = |i: usize| i % every == 0;
        feed_paced(&pipeline, &source.frames, forced_at, &[0]);
        let stats = pipeline.finish();
        let forced = (0..60)
            .filter(|&i| forced_at(i))
            .map(|i| source.frames[i].pts)
            .collect();
        Some(SlowRun {
            sink,
            stats,
            source_pts: sorted_pts(&source.frames),
            forced,
        })
    }

    #[test]
    fn slow_rung_drops_pictures_and_keeps_forced_idrs_while_the_other_gets_all() {
        let Some(run) = slow_run("graph-slow", Duration::from_millis(50), 15) else {
            return;
        };
        let fast = run.sink.frames("fast");
        assert_eq!(
            sorted_pts(&fast),
            run.source_pts,
            "the fast rung got everything"
        );
        assert_eq!(run.stats.rungs[0].dropped_queue_full, 0);
        assert_eq!(keyframe_pts(&fast), run.forced);

        let slow = run.sink.frames("slow");
        let s = &run.stats.rungs[1];
        assert!(s.dropped_queue_full > 0, "{s:?}");
        assert_eq!(s.pictures_in + s.dropped_queue_full, 60, "{s:?}");
        assert_eq!(s.encoded as usize, slow.len());
        assert_eq!(slow.len() as u64, s.pictures_in);
        assert_timing(&slow);
        // Every forced picture reached the slow rung (older ones made room
        // for it) and is an IDR there; nothing else is.
        assert_eq!(keyframe_pts(&slow), run.forced);
    }

    /// A rung more than a segment behind (its queue holds an earlier forced
    /// picture when the next arrives) still gets every forced picture: the
    /// newcomer takes a plain picture's place, not the earlier forced one's
    /// (which cost the rung that segment: CI, tests/ladder.rs).
    #[test]
    fn a_rung_a_segment_behind_keeps_every_forced_picture() {
        // 150 ms a picture: the 12-picture queue is 1.8 s deep, so a forced
        // picture (every 5th, 6 a second: fewer than the rung encodes) is
        // still queued, often at the front, when the next ones arrive
        let Some(run) = slow_run("graph-behind", Duration::from_millis(150), 5) else {
            return;
        };
        let slow = run.sink.frames("slow");
        let s = &run.stats.rungs[1];
        assert!(s.dropped_queue_full > 0, "{s:?}");
        assert_eq!(s.pictures_in + s.dropped_queue_full, 60, "{s:?}");
        assert_timing(&slow);
        assert_eq!(keyframe_pts(&slow), run.forced, "{s:?}");
    }

    #[test]
    fn resolution_change_recreates_the_encoders() {
        if !have_ffmpeg() {
            return;
        }
        let dir = TempDir::new("graph-resize");
        let x264 = "keyint=30:scenecut=0:bframes=0";
        let first = stream(&dir, "a", (640, 360), 30, 30, x264);
        let mut second = stream(&dir, "b", (320, 240), 30, 30, x264);
        // The second stream continues the first's timeline.
        let offset = first.frames.last().unwrap().pts + Timestamp::from_millis(33);
        for f in &mut second.frames {
            f.pts = f.pts + offset;
            f.dts = f.dts + offset;
        }
        let sink = Arc::new(Collect::default());
        let pipeline = ChannelPipeline::start(
            "resize",
            vec![plan("full", None), plan("small", Some(180))],
            sink.clone(),
        );
        pipeline.video_config(first.config.clone());
        pipeline.video_config(first.config.clone()); // the same again: no-op
        feed_paced(&pipeline, &first.frames, |i| i == 0, &[0, 1]);
        pipeline.video_config(second.config.clone());
        feed_paced(&pipeline, &second.frames, |i| i == 0, &[0, 1]);
        let stats = pipeline.finish();

        for (rung, sizes) in [
            ("full", [(640, 360), (320, 240)]),
            ("small", [(320, 180), (240, 180)]),
        ] {
            let segments = sink.segments(rung);
            assert_eq!(segments.len(), 2, "{rung}: rung_config twice");
            for ((config, frames), (size, source)) in
                segments.iter().zip(sizes.iter().zip([&first, &second]))
            {
                assert_eq!((config.width, config.height), *size, "{rung}");
                assert_eq!(
                    sorted_pts(frames),
                    sorted_pts(&source.frames),
                    "{rung} {size:?}"
                );
                assert!(frames[0].keyframe);
                assert_timing(frames);
            }
        }
        assert_eq!((stats.rungs[1].width, stats.rungs[1].height), (240, 180));
        assert_eq!(stats.decode.pictures, 60);
    }

    #[test]
    fn ten_bit_and_422_sources_are_reported_and_a_good_one_recovers() {
        if !have_ffmpeg() {
            return;
        }
        let dir = TempDir::new("graph-refused");
        let ten = demux(&encode_at(
            &dir,
            "p10",
            (320, 180),
            30,
            3,
            &["-pix_fmt", "yuv420p10le"],
        ));
        let four22 = demux(&encode_at(
            &dir,
            "p422",
            (320, 180),
            30,
            3,
            &["-pix_fmt", "yuv422p"],
        ));
        let good = stream(&dir, "good", (320, 180), 30, 10, "keyint=30:bframes=0");
        let sink = Arc::new(Collect::default());
        let pipeline = ChannelPipeline::start("refused", vec![plan("r", None)], sink.clone());
        for bad in [&ten, &four22] {
            pipeline.video_config(bad.config.clone());
            feed_paced(&pipeline, &bad.frames, |i| i == 0, &[0]);
        }
        let errors = sink.errors();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].contains("10-bit") && errors[0].contains("accepts 8-bit 4:2:0"),
            "{}",
            errors[0]
        );
        assert!(errors[1].contains("4:2:2"), "{}", errors[1]);
        assert!(sink.configs("r").is_empty());

        pipeline.video_config(good.config.clone());
        feed_paced(&pipeline, &good.frames, |i| i == 0, &[0]);
        let stats = pipeline.finish();
        assert_eq!(stats.decode.dropped_no_decoder, 6);
        assert_eq!(stats.decode.access_units, 10);
        assert_eq!(sink.frames("r").len(), 10);
        assert_eq!(sink.errors().len(), 2);
    }

    #[test]
    fn finish_delivers_everything_queued_and_joins() {
        if !have_ffmpeg() {
            return;
        }
        let dir = TempDir::new("graph-finish");
        let source = stream(
            &dir,
            "src",
            (320, 180),
            30,
            45,
            "keyint=15:scenecut=0:bframes=2",
        );
        let sink = Arc::new(Collect::default());
        // Queues big enough for the whole clip: everything is fed at once,
        // and finish must drain the queues, the decoder's reorder buffer and
        // the encoders' delay.
        let options = PipelineOptions {
            decode_queue: 64,
            rung_queue: 64,
            ..PipelineOptions::default()
        };
        let pipeline = ChannelPipeline::start_with(
            "finish",
            vec![plan("a", None), plan("b", Some(90))],
            sink.clone(),
            options,
        );
        let handle = pipeline.stats_handle();
        pipeline.video_config(source.config.clone());
        for (i, frame) in source.frames.iter().enumerate() {
            pipeline.video_frame(frame.clone(), i % 15 == 0);
        }
        let stats = pipeline.finish();
        assert_eq!(stats.decode.access_units, 45);
        for (i, rung) in ["a", "b"].into_iter().enumerate() {
            assert_eq!(sink.frames(rung).len(), 45, "{rung}");
            assert_eq!(stats.rungs[i].encoded, 45);
        }
        // a stats handle reads the same counters, after the pipeline too
        assert_eq!(handle.stats(), stats);
        // Every stage thread has exited: none holds the sink any more.
        assert_eq!(Arc::strong_count(&sink), 1);
    }

    #[test]
    fn full_decode_input_drops_until_a_keyframe_and_keeps_the_force() {
        if !have_ffmpeg() {
            return;
        }
        let dir = TempDir::new("graph-overflow");
        let source = stream(
            &dir,
            "src",
            (320, 180),
            30,
            30,
            "keyint=10:min-keyint=10:scenecut=0:bframes=0",
        );
        let bad = demux(&encode_at(
            &dir,
            "p10",
            (320, 180),
            30,
            1,
            &["-pix_fmt", "yuv420p10le"],
        ));
        let (release, blocked) = bounded::<()>(0);
        let sink = Arc::new(Collect {
            block_errors: Some(Mutex::new(blocked)),
            ..Collect::default()
        });
        // A rung queue that takes the backlog at once when the decoder is
        // released: the overflow under test is the decoder's.
        let options = PipelineOptions {
            decode_queue: 8,
            rung_queue: 32,
            ..PipelineOptions::default()
        };
        let pipeline =
            ChannelPipeline::start_with("overflow", vec![plan("r", None)], sink.clone(), options);
        // The decode thread blocks reporting the refused config...
        pipeline.video_config(bad.config.clone());
        wait_until("the decode thread to take the config", || {
            // `pipeline_error` has not returned: nothing recorded yet, but
            // the queue is empty again once the stage took the message.
            lock(&pipeline.input)
                .tx
                .as_ref()
                .is_some_and(|tx| tx.is_empty())
        });
        // ...so the queue fills: the config and AUs 0-6 fit, 7-14 do not
        // (the keyframe at 10 included, the queue still being full).
        pipeline.video_config(source.config.clone());
        for (i, frame) in source.frames[..15].iter().enumerate() {
            pipeline.video_frame(frame.clone(), i == 0);
        }
        assert_eq!(pipeline.stats().decode.dropped_queue_full, 8);
        drop(release);
        wait_until("the queue to drain", || {
            pipeline.stats().decode.access_units == 7
        });
        // Still dropping until a keyframe: 15-19 go (17 was forced: the flag
        // moves on), 20 is a keyframe and is decoded, and so is the rest.
        let rest = &source.frames[15..];
        feed_paced(&pipeline, rest, |i| i + 15 == 17, &[0]);
        let stats = pipeline.finish();
        assert_eq!(stats.decode.dropped_queue_full, 13);
        assert_eq!(stats.decode.access_units, 17);
        assert_eq!(stats.rungs[0].dropped_queue_full, 0);
        let frames = sink.frames("r");
        let expected: Vec<Timestamp> = (0..7).chain(20..30).map(|i| source.frames[i].pts).collect();
        assert_eq!(sorted_pts(&frames), expected);
        let idrs: BTreeSet<Timestamp> = [0, 20].iter().map(|&i| source.frames[i].pts).collect();
        assert_eq!(
            keyframe_pts(&frames),
            idrs,
            "the force on dropped AU 17 landed on 20"
        );
    }

    #[test]
    fn a_wedged_sink_does_not_hang_finish() {
        if !have_ffmpeg() {
            return;
        }
        let dir = TempDir::new("graph-wedged");
        let source = stream(&dir, "src", (320, 180), 30, 10, "bframes=0");
        let (release, blocked) = bounded::<()>(0);
        let sink = Arc::new(Collect {
            block: Some(("r".to_owned(), Mutex::new(blocked))),
            ..Collect::default()
        });
        let options = PipelineOptions {
            finish_timeout: Duration::from_millis(200),
            ..PipelineOptions::default()
        };
        let pipeline =
            ChannelPipeline::start_with("wedged", vec![plan("r", None)], sink.clone(), options);
        pipeline.video_config(source.config.clone());
        for frame in &source.frames {
            pipeline.video_frame(frame.clone(), false);
        }
        // The rung thread is stuck in the sink: finish gives up and returns.
        let stats = pipeline.finish();
        assert!(stats.rungs[0].encoded <= 1, "{stats:?}");
        // Unblocked, the stopped stage exits without flushing.
        drop(release);
        wait_until("the stage threads to exit", || {
            Arc::strong_count(&sink) == 1
        });
        assert!(sink.frames("r").len() <= 1);
    }

    #[test]
    fn dropping_without_finish_stops_the_stages() {
        if !have_ffmpeg() {
            return;
        }
        let dir = TempDir::new("graph-drop");
        let source = stream(&dir, "src", (320, 180), 30, 20, "bframes=0");
        let sink = Arc::new(Collect::default());
        let pipeline = ChannelPipeline::start("drop", vec![plan("r", None)], sink.clone());
        pipeline.video_config(source.config.clone());
        for frame in &source.frames {
            pipeline.video_frame(frame.clone(), false);
        }
        drop(pipeline);
        wait_until("the stage threads to exit", || {
            Arc::strong_count(&sink) == 1
        });
    }

    #[test]
    fn a_panicking_stage_is_reported_and_the_others_go_on() {
        if !have_ffmpeg() {
            return;
        }
        let dir = TempDir::new("graph-panic");
        let source = stream(&dir, "src", (320, 180), 30, 10, "bframes=0");
        let sink = Arc::new(Collect {
            panic_on: Some("bad".to_owned()),
            ..Collect::default()
        });
        let pipeline = ChannelPipeline::start(
            "panic",
            vec![plan("bad", None), plan("good", Some(90))],
            sink.clone(),
        );
        pipeline.video_config(source.config.clone());
        feed_paced(&pipeline, &source.frames, |i| i == 0, &[1]);
        let stats = pipeline.finish();
        assert_eq!(stats.panics, 1);
        assert_eq!(sink.frames("good").len(), 10);
        let errors = sink.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("panicked") && errors[0].contains("panic-bad"),
            "{}",
            errors[0]
        );
        assert_eq!(Arc::strong_count(&sink), 1);
    }

    /// A stage's panic (here injected, as `LADDER_TEST_PANIC` does) marks
    /// the pipeline failed for its owner to restart, and is reported once,
    /// naming the stage: a rung's leaves the other rung going, the decode
    /// stage's ends every rung's input.
    #[test]
    fn an_injected_panic_fails_the_pipeline_and_is_reported_once() {
        if !have_ffmpeg() {
            return;
        }
        let dir = TempDir::new("graph-inject");
        let source = stream(&dir, "src", (320, 180), 30, 10, "bframes=0");
        for (stage, label) in [("b", "encode b"), ("decode", "decode")] {
            let sink = Arc::new(Collect::default());
            let options = PipelineOptions {
                test_panics: TestPanics::parse(&format!("inject:{stage}@3"))
                    .unwrap()
                    .for_channel("inject"),
                ..PipelineOptions::default()
            };
            let pipeline = ChannelPipeline::start_with(
                "inject",
                vec![plan("a", None), plan("b", Some(90))],
                sink.clone(),
                options,
            );
            pipeline.video_config(source.config.clone());
            assert!(!pipeline.failed());
            for frame in &source.frames {
                pipeline.video_frame(frame.clone(), false);
            }
            wait_until("the injected panic", || pipeline.failed());
            let stats = pipeline.finish();
            assert_eq!(stats.panics, 1, "{stage}");
            let errors = sink.errors();
            assert_eq!(errors.len(), 1, "{errors:?}");
            let injected = format!("panic injected by LADDER_TEST_PANIC (inject:{stage}@3)");
            assert!(
                errors[0].contains(&format!("pipeline thread '{label}'"))
                    && errors[0].contains(&injected),
                "{}",
                errors[0]
            );
            let a = sink.frames("a").len();
            match stage {
                "b" => assert_eq!(a, 10, "the other rung stopped"),
                _ => assert!(a < 10, "{a} pictures encoded without a decoder"),
            }
        }
    }

    #[test]
    fn av1_rung_puts_its_key_frames_where_the_source_asks_beside_an_h264_rung() {
        if !have_ffmpeg() {
            return;
        }
        let dir = TempDir::new("graph-av1");
        let source = stream(&dir, "src", (320, 180), 30, 12, "bframes=0");
        let sink = Arc::new(Collect::default());
        let mut av1 = plan("av1", None);
        av1.codec = RungCodec::Av1;
        let pipeline = ChannelPipeline::start("av1", vec![av1, plan("h264", None)], sink.clone());
        pipeline.video_config(source.config.clone());
        feed_paced(&pipeline, &source.frames, |i| i == 0 || i == 6, &[0, 1]);
        let stats = pipeline.finish();
        assert!(sink.errors().is_empty(), "{:?}", sink.errors());
        assert_eq!(stats.rungs[0].errors, 0);
        assert_eq!(stats.rungs[0].encoded, 12);

        let configs = sink.configs("av1");
        assert_eq!(configs.len(), 1);
        assert_eq!(configs[0].codec, crate::media::VideoCodec::Av1);
        assert!(
            configs[0].codec_string.starts_with("av01.0."),
            "{}",
            configs[0].codec_string
        );
        assert_eq!((configs[0].width, configs[0].height), (320, 180));
        let frames = sink.frames("av1");
        let pts: Vec<_> = frames.iter().map(|f| f.pts).collect();
        let source_pts: Vec<_> = source.frames.iter().map(|f| f.pts).collect();
        assert_eq!(pts, source_pts, "every picture, at the source's time");
        assert!(frames.iter().all(|f| f.dts == f.pts), "no reordering");
        let keys: Vec<usize> = (0..frames.len()).filter(|&i| frames[i].keyframe).collect();
        assert_eq!(keys, vec![0, 6]);
        assert_eq!(sink.frames("h264").len(), 12);
    }

    #[test]
    fn frames_before_any_config_are_dropped_and_counted() {
        let sink = Arc::new(Collect::default());
        let pipeline = ChannelPipeline::start("early", vec![plan("r", None)], sink.clone());
        let frame = VideoFrame {
            dts: Timestamp::from_millis(0),
            pts: Timestamp::from_millis(0),
            keyframe: true,
            data: bytes::Bytes::from_static(&[0, 0, 0, 1, 0x65]),
        };
        feed_paced(&pipeline, &[frame.clone(), frame], |_| true, &[0]);
        let stats = pipeline.finish();
        assert_eq!(stats.decode.dropped_no_decoder, 2);
        assert_eq!(stats.decode.access_units, 0);
        assert!(sink.frames("r").is_empty());
    }

    #[test]
    fn the_handle_can_be_shared_between_tasks() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<ChannelPipeline>();
    }

    #[test]
    fn thread_names_fit_in_15_bytes_and_keep_the_stage() {
        assert_eq!(thread_name("tv", "720p"), "ladder-tv-720p");
        assert_eq!(thread_name("news", "1080p"), "news-1080p");
        let long = thread_name("a-very-long-channel", "1080p60hq");
        assert_eq!(long, "a-very--1080p60");
        assert!(long.len() <= 15);
        // Never cut inside a character.
        let name = thread_name("chaîne-éèé", "ré");
        assert!(name.len() <= 15, "{name}");
        assert!(name.ends_with("-ré"), "{name}");
    }

    #[test]
    fn automatic_encoder_threads() {
        assert_eq!(auto_threads(1280, 720), 1);
        assert_eq!(auto_threads(640, 360), 1);
        assert_eq!(auto_threads(1920, 1080), 2);
        assert_eq!(auto_threads(3840, 2160), MAX_AUTO_THREADS);
        let mut p = plan("x", None);
        assert_eq!(encoder_threads(&p, 1920, 1080), 2);
        p.threads = 3;
        assert_eq!(encoder_threads(&p, 640, 360), 3);
    }

    #[test]
    fn rung_frame_rate() {
        assert_eq!(rung_fps(None, None), DEFAULT_FPS);
        assert_eq!(rung_fps(Some(60.0), Some(30.0)), 30.0);
        assert_eq!(rung_fps(Some(25.0), Some(30.0)), 25.0);
        assert_eq!(rung_fps(Some(f64::NAN), Some(-1.0)), DEFAULT_FPS);
        assert_eq!(rung_fps(None, Some(24.0)), 24.0);
    }
}
