//! H.264 decoding on NVDEC (issue 4): the cuvid parser and decoder, NV12 pictures in
//! pooled device memory, in presentation order.
//!
//! Input is what ingest produces, as for the CPU decoder (`pipeline::cpu::decode`): the
//! publisher's avcC record (ISO/IEC 14496-15 §5.3.3), whose SPS and PPS are fed to the
//! parser as an Annex B byte stream (ITU-T H.264 Annex B), and access units in AVCC
//! form, rewritten with start codes. Each access unit is fed with its decode-order
//! number as the packet timestamp (`CUVID_PKT_TIMESTAMP`); the parser hands it back on
//! the picture after reordering, and it is mapped back to the exact source pts.
//!
//! # Lifecycle (NVDEC programming guide, "Video Decoder Pipeline")
//!
//! - The parser (`cuvidCreateVideoParser`) is made with the decoder; its callbacks are
//!   `extern "C"` trampolines into [`DecodeState`] (`nvdec::ParserHandler`), every one
//!   under `catch_unwind`.
//! - The sequence callback checks the format (8-bit 4:2:0, size within
//!   `cuvidGetDecoderCaps`), then creates the hardware decoder, or, on a sequence
//!   change, reconfigures it (`cuvidReconfigureDecoder`, when the new coded size fits the
//!   maximum it was created with and no more surfaces are needed) or re-creates it.
//! - The decode callback submits the picture (`cuvidDecodePicture`).
//! - The display callback asks `cuvidGetDecodeStatus`, maps the picture
//!   (`cuvidMapVideoFrame64`), copies it (`cuMemcpy2D`, device to device) into a
//!   surface from a bounded [`SurfacePool`], unmaps it, and queues a [`GpuPicture`].
//!   Nothing refers to the decoder's own surfaces once the callback returns, so the
//!   decoder can be re-created at any sequence change.
//! - A new [`VideoConfig`] ([`NvdecDecoder::set_config`]) flushes the held pictures
//!   (end of stream), replaces the parser and keeps the decoder for the sequence
//!   callback to reconfigure.
//!
//! # Errors
//!
//! A picture NVDEC reports as damaged (`cuvidDecodeStatus_Error`, `_Error_Concealed`)
//! is still returned and counted in [`GpuDecodeStats`]; a failed decode or map call is
//! counted and the picture dropped; the caller reads the counts after each call
//! ([`NvdecDecoder::stats`]) and the last error text ([`NvdecDecoder::take_errors`]).
//! An unsupported format stops the stream with [`GpuDecodeError::Unsupported`]. Nothing
//! here panics on input.
//!
//! # Threads
//!
//! Callbacks run inside `cuvidParseVideoData`, on the calling thread, which has the CUDA
//! context current ([`CurrentContext`] is borrowed for the decoder's lifetime, and is
//! not `Send`): no context lock is needed. Surfaces may be read and dropped on other
//! threads (`driver::DevicePitched` pushes its context).
//!
//! No `unsafe` here: the FFI is in `nvdec` (cuvid) and `driver` (CUDA memory).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::media::avc::{nal_units, AvcDecoderConfig, AvcError};
use crate::media::{Timestamp, VideoCodec, VideoConfig, VideoFrame};
use crate::pipeline::frame::Picture;

use super::driver::{CurrentContext, DevicePitched, GpuError};
use super::nvdec::{
    DecodeCodec, DecodeStatus, DecoderCaps, DecoderParams, DisplayInfo, Nvcuvid, NvdecError,
    ParserHandler, PictureParams, VideoDecoder, VideoFormat, VideoParser,
};

/// Device surfaces one decoder may have out at once (decoded pictures waiting in the
/// graph's queues or being scaled). Beyond it a picture is dropped and counted
/// ([`GpuDecodeStats::pool_exhausted`]): the consumers are not keeping up.
pub const SURFACE_POOL_CAPACITY: usize = 16;

/// Decode surfaces beyond the stream's minimum (its DPB): lets NVDEC decode ahead
/// while a picture is mapped. NVDEC's limit is 32.
pub const EXTRA_DECODE_SURFACES: u32 = 4;

/// The parser's display delay. 0: a picture is handed over as soon as presentation
/// order allows (the parser still reorders B-frames); mapping then waits for its
/// decode to finish, which costs throughput, not latency.
pub const MAX_DISPLAY_DELAY: u32 = 0;

/// Access units whose timing is kept while waiting for their picture (as the CPU
/// decoder's `MAX_PENDING`).
pub const MAX_PENDING: usize = 64;

/// Annex B start code.
const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Errors of the NVDEC decode stage.
#[derive(Debug, thiserror::Error)]
pub enum GpuDecodeError {
    /// The source is not something NVDEC decodes here (worded as the CPU decoder's).
    #[error(
        "unsupported source video: {found}; Ladder's NVDEC decoder accepts 8-bit 4:2:0 H.264 \
         (Baseline, Main or High profile), HEVC (Main) or AV1 (Main): configure the encoder \
         for yuv420p 8-bit"
    )]
    Unsupported { found: String },
    /// The picture size is outside what this GPU's NVDEC decodes.
    #[error("source picture {width}x{height} is outside NVDEC's limits on this GPU ({limits})")]
    Size {
        width: u32,
        height: u32,
        limits: String,
    },
    /// The avcC record or an access unit's NAL lengths are broken.
    #[error("malformed H.264 input: {0}")]
    Bitstream(#[from] AvcError),
    /// The HEVC or AV1 decoder configuration record is broken.
    #[error("malformed {codec} decoder configuration: {detail}")]
    Record { codec: VideoCodec, detail: String },
    /// An NVDEC call failed.
    #[error(transparent)]
    Nvdec(#[from] NvdecError),
    /// A CUDA call failed (memory, copies).
    #[error(transparent)]
    Cuda(#[from] GpuError),
    /// A parser callback panicked (caught; a bug here).
    #[error("NVDEC {0} callback panicked (caught); the stream stopped")]
    Panicked(&'static str),
}

/// Counters for one decoder, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuDecodeStats {
    /// Access units fed.
    pub access_units: u64,
    /// Pictures returned.
    pub pictures: u64,
    /// Pictures NVDEC decoded with uncorrected errors (returned anyway).
    pub errors: u64,
    /// Pictures NVDEC decoded with concealed errors (returned).
    pub concealed: u64,
    /// Pictures lost: a decode, map or copy call failed.
    pub failed: u64,
    /// Pictures dropped because every surface was out.
    pub pool_exhausted: u64,
    /// Pictures whose access unit timing was unknown (dropped).
    pub untimed: u64,
    /// Decoders created (1 + re-creations at sequence changes).
    pub decoders_created: u64,
    /// Sequence changes handled by `cuvidReconfigureDecoder`.
    pub reconfigured: u64,
}

impl GpuDecodeStats {
    /// Pictures with any decode error (uncorrected or concealed) or lost.
    pub fn damaged(&self) -> u64 {
        self.errors + self.concealed + self.failed
    }
}

// ---------------------------------------------------------------------------
// AVCC -> Annex B
// ---------------------------------------------------------------------------

/// The avcC record's SPS and PPS as an Annex B byte stream (start code before each).
pub fn parameter_sets_annexb(record: &bytes::Bytes) -> Result<Vec<u8>, AvcError> {
    let avcc = AvcDecoderConfig::parse(record)?;
    let mut out = Vec::new();
    for nal in avcc.sps.iter().chain(avcc.pps.iter()) {
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
    }
    Ok(out)
}

/// Appends an AVCC access unit (NAL units prefixed by `length_size`-byte lengths) to
/// `out` as Annex B (a 4-byte start code before each NAL unit). Every length is checked;
/// on error `out` holds the NAL units before the bad one.
pub fn avcc_to_annexb(data: &[u8], length_size: u8, out: &mut Vec<u8>) -> Result<(), AvcError> {
    for nal in nal_units(data, length_size) {
        let nal = nal?;
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
    }
    Ok(())
}

/// The NVDEC codec for a source, and the parameter sets (Annex B) or sequence
/// header OBU to feed before its first access unit: the avcC's SPS and PPS, the
/// hvcC's VPS, SPS and PPS, the av1C's sequence header.
pub fn stream_setup(config: &VideoConfig) -> Result<(DecodeCodec, Vec<u8>), GpuDecodeError> {
    let record = |detail: String| GpuDecodeError::Record {
        codec: config.codec,
        detail,
    };
    Ok(match config.codec {
        VideoCodec::H264 => (DecodeCodec::H264, parameter_sets_annexb(&config.record)?),
        VideoCodec::Hevc => {
            let hvcc = crate::media::hevc::HevcDecoderConfig::parse(&config.record)
                .map_err(|e| record(e.to_string()))?;
            (DecodeCodec::Hevc, hvcc.parameter_sets_annexb())
        }
        VideoCodec::Av1 => {
            let av1c = crate::media::av1::Av1Config::parse(&config.record)
                .map_err(|e| record(e.to_string()))?;
            (DecodeCodec::Av1, av1c.sequence_header_obu.to_vec())
        }
    })
}

/// Refuses what NVDEC is not set up for here, with what was found (the same wording
/// as the CPU decoder).
pub fn check_config(config: &VideoConfig) -> Result<(), GpuDecodeError> {
    let found = |what: String| GpuDecodeError::Unsupported {
        found: format!("{what}, {} ({})", config.codec, config.codec_string),
    };
    match config.chroma_format_idc {
        1 => {}
        0 => return Err(found("4:0:0 (monochrome) chroma".into())),
        2 => return Err(found("4:2:2 chroma".into())),
        3 => return Err(found("4:4:4 chroma".into())),
        n => return Err(found(format!("chroma_format_idc {n}"))),
    }
    if config.bit_depth_luma != 8 || config.bit_depth_chroma != 8 {
        return Err(found(format!(
            "{}-bit luma / {}-bit chroma 4:2:0",
            config.bit_depth_luma, config.bit_depth_chroma
        )));
    }
    Ok(())
}

/// The parser's view of a format, refused as [`check_config`] refuses a config.
fn check_format(format: &VideoFormat) -> Result<(), GpuDecodeError> {
    let unsupported = |what: String| GpuDecodeError::Unsupported {
        found: format!("{what} (in-band sequence header)"),
    };
    match format.chroma_format {
        1 => {}
        0 => return Err(unsupported("4:0:0 (monochrome) chroma".into())),
        2 => return Err(unsupported("4:2:2 chroma".into())),
        3 => return Err(unsupported("4:4:4 chroma".into())),
        n => return Err(unsupported(format!("cudaVideoChromaFormat {n}"))),
    }
    if format.bit_depth_luma != 8 || format.bit_depth_chroma != 8 {
        return Err(unsupported(format!(
            "{}-bit luma / {}-bit chroma",
            format.bit_depth_luma, format.bit_depth_chroma
        )));
    }
    if format.width() == 0 || format.height() == 0 {
        return Err(unsupported(format!(
            "an empty display area {}x{}",
            format.width(),
            format.height()
        )));
    }
    Ok(())
}

/// Checks the coded size against `cuvidGetDecoderCaps`.
fn check_caps(format: &VideoFormat, caps: &DecoderCaps) -> Result<(), GpuDecodeError> {
    let (w, h) = (format.coded_width, format.coded_height);
    let mbs = u64::from(w.div_ceil(16)) * u64::from(h.div_ceil(16));
    if !caps.supported
        || w > caps.max_width
        || h > caps.max_height
        || w < caps.min_width
        || h < caps.min_height
        || (caps.max_mb_count > 0 && mbs > u64::from(caps.max_mb_count))
    {
        return Err(GpuDecodeError::Size {
            width: w,
            height: h,
            limits: if caps.supported {
                format!(
                    "{}x{} to {}x{}, at most {} macroblocks",
                    caps.min_width,
                    caps.min_height,
                    caps.max_width,
                    caps.max_height,
                    caps.max_mb_count
                )
            } else {
                "H.264 8-bit 4:2:0 not supported".into()
            },
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The surface pool
// ---------------------------------------------------------------------------

/// The pool's shared state.
#[derive(Debug)]
struct PoolInner<B> {
    free: Vec<B>,
    /// Buffers taken and not yet back.
    outstanding: usize,
    capacity: usize,
}

/// A bounded pool of buffers (device NV12 surfaces in the decoder; any `B` in tests):
/// at most `capacity` exist at once, idle or out. A buffer goes back when its
/// [`PoolBuffer`] drops.
#[derive(Debug)]
pub struct SurfacePool<B> {
    inner: Arc<Mutex<PoolInner<B>>>,
}

/// The pool had no buffer to give.
#[derive(Debug, thiserror::Error)]
pub enum PoolError<E> {
    /// Every buffer is out.
    #[error("all {0} surfaces are in use")]
    Exhausted(usize),
    /// Allocating a new buffer failed.
    #[error(transparent)]
    Alloc(E),
}

impl<B> SurfacePool<B> {
    /// A pool of at most `capacity` buffers.
    pub fn new(capacity: usize) -> Self {
        SurfacePool {
            inner: Arc::new(Mutex::new(PoolInner {
                free: Vec::new(),
                outstanding: 0,
                capacity,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolInner<B>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle buffer that `fits`, or a new one from `alloc` while under capacity (an
    /// idle buffer that does not fit is freed to make room, after a size change).
    pub fn take<E>(
        &self,
        fits: impl Fn(&B) -> bool,
        alloc: impl FnOnce() -> Result<B, E>,
    ) -> Result<PoolBuffer<B>, PoolError<E>> {
        let mut inner = self.lock();
        let buffer = if let Some(i) = inner.free.iter().position(&fits) {
            inner.free.swap_remove(i)
        } else {
            if inner.outstanding + inner.free.len() >= inner.capacity {
                if inner.free.is_empty() {
                    return Err(PoolError::Exhausted(inner.capacity));
                }
                // Too many idle buffers of another size: free one (outside the lock).
                let stale = inner.free.pop();
                drop(inner);
                drop(stale);
                inner = self.lock();
            }
            inner.outstanding += 1;
            drop(inner);
            return match alloc() {
                Ok(b) => Ok(PoolBuffer {
                    buffer: Some(b),
                    pool: self.inner.clone(),
                }),
                Err(e) => {
                    self.lock().outstanding -= 1;
                    Err(PoolError::Alloc(e))
                }
            };
        };
        inner.outstanding += 1;
        Ok(PoolBuffer {
            buffer: Some(buffer),
            pool: self.inner.clone(),
        })
    }

    /// Buffers out (taken, not dropped).
    pub fn outstanding(&self) -> usize {
        self.lock().outstanding
    }

    /// Buffers idle in the pool.
    pub fn idle(&self) -> usize {
        self.lock().free.len()
    }

    /// The most buffers that exist at once.
    pub fn capacity(&self) -> usize {
        self.lock().capacity
    }
}

/// A buffer from a [`SurfacePool`]; back in the pool on drop.
#[derive(Debug)]
pub struct PoolBuffer<B> {
    buffer: Option<B>,
    pool: Arc<Mutex<PoolInner<B>>>,
}

impl<B> std::ops::Deref for PoolBuffer<B> {
    type Target = B;
    fn deref(&self) -> &B {
        self.buffer.as_ref().expect("present until drop")
    }
}

impl<B> std::ops::DerefMut for PoolBuffer<B> {
    fn deref_mut(&mut self) -> &mut B {
        self.buffer.as_mut().expect("present until drop")
    }
}

impl<B> Drop for PoolBuffer<B> {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            let mut inner = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            inner.outstanding -= 1;
            if inner.free.len() + inner.outstanding < inner.capacity {
                inner.free.push(b);
            }
        }
    }
}

/// A device NV12 surface from the decoder's pool.
pub type Surface = PoolBuffer<DevicePitched>;

/// A decoded picture in device memory: NV12, luma rows `0..height`, interleaved chroma
/// rows `height..height + (height + 1) / 2`, each `pitch` bytes apart.
#[derive(Debug, Clone)]
pub struct GpuPicture {
    /// Shared by every rung that reads it; back in the pool when the last drops.
    pub surface: Arc<Surface>,
    pub width: u32,
    pub height: u32,
    pub pitch: usize,
    /// Presentation time of the source access unit.
    pub pts: Timestamp,
    /// Decode-order number of the source access unit.
    pub seq: u64,
    /// The source access unit was an IDR.
    pub source_idr: bool,
    /// NVDEC reported errors (concealed or not) in this picture.
    pub damaged: bool,
}

/// Copies a device NV12 picture to a host I420 [`Picture`] (tests, and the hybrid
/// path that encodes on the CPU).
pub fn download_i420(picture: &GpuPicture) -> Result<Picture, GpuError> {
    let (w, h) = (picture.width as usize, picture.height as usize);
    let row_bytes = w.div_ceil(2) * 2;
    let luma = picture.surface.download(w, h, 0)?;
    let chroma = picture.surface.download(row_bytes, h.div_ceil(2), h)?;
    let mut out = nv12_to_i420(&luma, &chroma, picture.width, picture.height);
    out.pts = Some(picture.pts);
    out.seq = picture.seq;
    out.source_idr = picture.source_idr;
    Ok(out)
}

/// Tight NV12 planes (luma `width` x `height`, chroma `2 * ceil(width/2)` x
/// `ceil(height/2)`) to an I420 [`Picture`].
pub fn nv12_to_i420(luma: &[u8], chroma: &[u8], width: u32, height: u32) -> Picture {
    let mut p = Picture::new(width, height);
    let (w, h) = (width as usize, height as usize);
    for y in 0..h {
        p.planes[0]
            .row_mut(y)
            .copy_from_slice(&luma[y * w..(y + 1) * w]);
    }
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    for y in 0..ch {
        let row = &chroma[y * cw * 2..(y + 1) * cw * 2];
        for x in 0..cw {
            p.planes[1].row_mut(y)[x] = row[2 * x];
            p.planes[2].row_mut(y)[x] = row[2 * x + 1];
        }
    }
    p
}

// ---------------------------------------------------------------------------
// The decoder
// ---------------------------------------------------------------------------

/// Timing of an access unit waiting for its picture.
#[derive(Clone, Copy, Debug)]
struct Pending {
    seq: u64,
    pts: Timestamp,
    idr: bool,
}

/// The parser callbacks' state: the hardware decoder, the pool, the output queue.
pub struct DecodeState<'a> {
    nv: &'a Nvcuvid,
    ctx: &'a CurrentContext<'a>,
    caps: Option<DecoderCaps>,
    decoder: Option<VideoDecoder<'a>>,
    pool: SurfacePool<DevicePitched>,
    pending: VecDeque<Pending>,
    ready: Vec<GpuPicture>,
    stats: GpuDecodeStats,
    /// Errors that stop the stream (unsupported format, panics).
    fatal: Option<GpuDecodeError>,
    /// The stream's codec (the caps asked for, the decoder made).
    codec: DecodeCodec,
    /// Per-picture errors since the last [`NvdecDecoder::take_errors`].
    errors: Vec<String>,
}

impl<'a> DecodeState<'a> {
    fn note(&mut self, e: impl std::fmt::Display) {
        if self.errors.len() < 16 {
            self.errors.push(e.to_string());
        }
    }

    fn on_sequence(&mut self, format: &VideoFormat) -> Result<u32, GpuDecodeError> {
        check_format(format)?;
        if self.caps.is_none() {
            self.caps = Some(self.nv.decoder_caps(self.ctx, self.codec)?);
        }
        if let Some(caps) = &self.caps {
            check_caps(format, caps)?;
        }
        let surfaces = (u32::from(format.min_decode_surfaces) + EXTRA_DECODE_SURFACES).min(32);
        let wanted = DecoderParams {
            codec: self.codec,
            coded_width: format.coded_width,
            coded_height: format.coded_height,
            max_width: format.coded_width,
            max_height: format.coded_height,
            display: (format.left, format.top, format.right, format.bottom),
            decode_surfaces: surfaces,
            output_surfaces: 2,
        };
        if let Some(decoder) = &mut self.decoder {
            let have = *decoder.params();
            let same = |p: &DecoderParams| {
                (p.coded_width, p.coded_height, p.display, p.decode_surfaces)
                    == (
                        wanted.coded_width,
                        wanted.coded_height,
                        wanted.display,
                        wanted.decode_surfaces,
                    )
            };
            if same(&have) {
                return Ok(have.decode_surfaces);
            }
            let fits = wanted.coded_width <= have.max_width
                && wanted.coded_height <= have.max_height
                && wanted.decode_surfaces <= have.decode_surfaces.max(surfaces);
            if fits && wanted.decode_surfaces <= have.decode_surfaces {
                // Keep the surface count it was created with (a reconfigure may not
                // raise it); the parser gets that count.
                let params = DecoderParams {
                    decode_surfaces: have.decode_surfaces,
                    ..wanted
                };
                if decoder.reconfigure(params)? {
                    self.stats.reconfigured += 1;
                    tracing::info!(
                        "NVDEC reconfigured for {}x{}",
                        params.width(),
                        params.height()
                    );
                    return Ok(have.decode_surfaces);
                }
            }
        }
        // First sequence, or one the decoder cannot be reconfigured for.
        self.decoder = None;
        self.decoder = Some(VideoDecoder::create(self.nv, self.ctx, wanted)?);
        self.stats.decoders_created += 1;
        tracing::info!(
            "NVDEC decoder created for {}x{} ({} decode surfaces)",
            wanted.width(),
            wanted.height(),
            surfaces
        );
        Ok(surfaces)
    }

    fn on_display(&mut self, info: DisplayInfo) {
        let Some(decoder) = self.decoder.as_mut() else {
            self.stats.failed += 1;
            self.note("a picture to display before any decoder was created");
            return;
        };
        let mut damaged = false;
        match decoder.status(info.picture_index) {
            Ok(DecodeStatus::Error) => {
                self.stats.errors += 1;
                damaged = true;
                self.errors
                    .push(format!("NVDEC decode error in picture {}", info.timestamp));
            }
            Ok(DecodeStatus::Concealed) => {
                self.stats.concealed += 1;
                damaged = true;
            }
            Ok(_) => {}
            // Not every driver answers for every picture; mapping will tell.
            Err(e) => tracing::debug!("{e}"),
        }
        let seq = u64::try_from(info.timestamp).ok();
        let timing = seq
            .and_then(|s| self.pending.iter().position(|p| p.seq == s))
            .and_then(|i| self.pending.remove(i));
        let Some(timing) = timing else {
            self.stats.untimed += 1;
            self.note(format!(
                "dropped a picture with unknown timing ({})",
                info.timestamp
            ));
            return;
        };
        let (width, height) = (decoder.params().width(), decoder.params().height());
        let row_bytes = (width as usize).div_ceil(2) * 2;
        let rows = height as usize + (height as usize).div_ceil(2);
        let ctx = self.ctx;
        let surface = self.pool.take(
            |s| s.row_bytes() == row_bytes && s.rows() == rows,
            || ctx.alloc_pitched(row_bytes, rows),
        );
        let mut surface = match surface {
            Ok(s) => s,
            Err(PoolError::Exhausted(n)) => {
                self.stats.pool_exhausted += 1;
                self.note(format!("picture dropped: all {n} surfaces are in use"));
                return;
            }
            Err(PoolError::Alloc(e)) => {
                self.stats.failed += 1;
                self.note(e);
                return;
            }
        };
        let copied = match decoder.map(&info) {
            Ok(mapped) => mapped
                .copy_nv12_to(&mut surface)
                .map_err(GpuDecodeError::from),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = copied {
            self.stats.failed += 1;
            self.note(e);
            return;
        }
        self.stats.pictures += 1;
        self.ready.push(GpuPicture {
            pitch: surface.pitch(),
            surface: Arc::new(surface),
            width,
            height,
            pts: timing.pts,
            seq: timing.seq,
            source_idr: timing.idr,
            damaged,
        });
    }
}

impl ParserHandler for DecodeState<'_> {
    fn sequence(&mut self, format: &VideoFormat) -> i32 {
        match self.on_sequence(format) {
            Ok(n) => i32::try_from(n).unwrap_or(1),
            Err(e) => {
                self.fatal = Some(e);
                0
            }
        }
    }

    fn decode(&mut self, picture: PictureParams<'_>) -> i32 {
        let Some(decoder) = self.decoder.as_mut() else {
            self.stats.failed += 1;
            self.note("a picture to decode before any decoder was created");
            return 1;
        };
        if let Err(e) = decoder.decode(picture) {
            // Counted; the stream goes on (its display callback finds the error).
            self.stats.failed += 1;
            self.note(e);
        }
        1
    }

    fn display(&mut self, info: Option<DisplayInfo>) -> i32 {
        if let Some(info) = info {
            self.on_display(info);
        }
        1
    }

    fn panicked(&mut self, callback: &'static str) {
        self.fatal = Some(GpuDecodeError::Panicked(callback));
    }
}

/// An NVDEC decoder (H.264, HEVC or AV1) for one channel, used on the thread whose
/// context is current.
pub struct NvdecDecoder<'a> {
    nv: &'a Nvcuvid,
    parser: Option<VideoParser<'a, DecodeState<'a>>>,
    codec: DecodeCodec,
    /// NAL unit length prefix size (H.264, HEVC); AV1 samples go as they are.
    length_size: u8,
    next_seq: u64,
    /// Reused Annex B buffer.
    annexb: Vec<u8>,
    /// The SPS and PPS to feed before the next access unit (after a config change).
    parameter_sets: Vec<u8>,
}

impl<'a> NvdecDecoder<'a> {
    /// A decoder for `config` (8-bit 4:2:0 H.264). The hardware decoder is created at
    /// the first sequence header the parser sees.
    pub fn new(
        nv: &'a Nvcuvid,
        ctx: &'a CurrentContext<'a>,
        config: &VideoConfig,
    ) -> Result<Self, GpuDecodeError> {
        check_config(config)?;
        let (codec, parameter_sets) = stream_setup(config)?;
        let state = Box::new(DecodeState {
            nv,
            ctx,
            caps: None,
            decoder: None,
            pool: SurfacePool::new(SURFACE_POOL_CAPACITY),
            pending: VecDeque::with_capacity(MAX_PENDING + 1),
            ready: Vec::new(),
            stats: GpuDecodeStats::default(),
            fatal: None,
            errors: Vec::new(),
            codec,
        });
        let parser = VideoParser::new(nv, codec, MAX_DISPLAY_DELAY, state)?;
        Ok(NvdecDecoder {
            nv,
            parser: Some(parser),
            codec,
            length_size: config.nal_length_size,
            next_seq: 0,
            annexb: Vec::new(),
            parameter_sets,
        })
    }

    fn parser(&mut self) -> &mut VideoParser<'a, DecodeState<'a>> {
        self.parser.as_mut().expect("a parser between calls")
    }

    fn state(&mut self) -> &mut DecodeState<'a> {
        self.parser().handler()
    }

    /// Decodes one access unit; returns the pictures that became ready, in
    /// presentation order. Damaged pictures are returned and counted (see
    /// [`NvdecDecoder::stats`]); an `Err` stops the stream (unsupported format, a
    /// parser failure, a caught panic).
    pub fn decode(&mut self, frame: &VideoFrame) -> Result<Vec<GpuPicture>, GpuDecodeError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut annexb = std::mem::take(&mut self.annexb);
        annexb.clear();
        annexb.append(&mut self.parameter_sets);
        let converted = match self.codec {
            // OBUs with their own sizes: as they are
            DecodeCodec::Av1 => {
                annexb.extend_from_slice(&frame.data);
                Ok(())
            }
            DecodeCodec::H264 | DecodeCodec::Hevc => {
                avcc_to_annexb(&frame.data, self.length_size, &mut annexb)
            }
        };
        let state = self.state();
        state.stats.access_units += 1;
        state.pending.push_back(Pending {
            seq,
            pts: frame.pts,
            idr: frame.keyframe,
        });
        while state.pending.len() > MAX_PENDING {
            state.pending.pop_front();
        }
        if let Err(e) = converted {
            // Feed what was intact; the damage is counted where NVDEC sees it.
            state.note(format!("access unit {seq}: {e}"));
        }
        let seq_ts = i64::try_from(seq).unwrap_or(i64::MAX);
        let parsed = self.parser().parse(&annexb, Some(seq_ts), false);
        self.annexb = annexb;
        self.finish(parsed)
    }

    /// End of stream: the pictures still held for reordering. The decoder then takes
    /// a new stream (starting at an IDR).
    pub fn flush(&mut self) -> Result<Vec<GpuPicture>, GpuDecodeError> {
        let parsed = self.parser().parse(&[], None, true);
        let out = self.finish(parsed);
        self.state().pending.clear();
        out
    }

    /// A new publisher configuration (a new sequence header): returns the held
    /// pictures, then starts a new parser; the hardware decoder is kept, and
    /// reconfigured or re-created when the new stream's sequence header differs.
    pub fn set_config(&mut self, config: &VideoConfig) -> Result<Vec<GpuPicture>, GpuDecodeError> {
        check_config(config)?;
        let (codec, parameter_sets) = stream_setup(config)?;
        let held = self.flush()?;
        let mut state = self
            .parser
            .take()
            .expect("a parser between calls")
            .into_handler();
        if state.codec != codec {
            // another codec: its own caps and a new hardware decoder
            state.codec = codec;
            state.caps = None;
            state.decoder = None;
        }
        self.parser = Some(VideoParser::new(self.nv, codec, MAX_DISPLAY_DELAY, state)?);
        self.codec = codec;
        self.length_size = config.nal_length_size;
        self.parameter_sets = parameter_sets;
        Ok(held)
    }

    fn finish(
        &mut self,
        parsed: Result<(), NvdecError>,
    ) -> Result<Vec<GpuPicture>, GpuDecodeError> {
        let state = self.state();
        if let Some(e) = state.fatal.take() {
            return Err(e);
        }
        let out = std::mem::take(&mut state.ready);
        parsed?;
        Ok(out)
    }

    /// Counters since the decoder was made.
    pub fn stats(&mut self) -> GpuDecodeStats {
        self.state().stats
    }

    /// The per-picture errors noted since the last call (at most 16 kept).
    pub fn take_errors(&mut self) -> Vec<String> {
        std::mem::take(&mut self.state().errors)
    }

    /// Surfaces out of the pool now.
    pub fn surfaces_out(&mut self) -> usize {
        self.state().pool.outstanding()
    }
}

impl Drop for NvdecDecoder<'_> {
    fn drop(&mut self) {
        // The parser (and with it the state, the decoder and the idle surfaces) goes
        // first, while the context is still current on this thread.
        self.parser = None;
    }
}

// ---------------------------------------------------------------------------
// Self-test checks (`ladder-gpu-selftest`, docs/GPU-TESTS.md)
// ---------------------------------------------------------------------------

use super::reference::{self, Fixture, RefPicture, Segment};
use super::selftest::{Check, Env, Outcome};

/// NVDEC loaded and a context, or why the check cannot run.
fn nvdec_for<'e>(env: &'e Env<'_>) -> Result<(Nvcuvid, &'e CurrentContext<'e>), String> {
    let ctx = env.context().map_err(str::to_owned)?;
    let nv = Nvcuvid::load().map_err(|e| e.to_string())?;
    Ok((nv, ctx))
}

/// Decodes `segments` on NVDEC (a new config per segment, as ingest would), downloading
/// every picture to I420 at once (so surfaces go back to the pool).
fn nvdec_decode(
    nv: &Nvcuvid,
    ctx: &CurrentContext<'_>,
    segments: &[Segment],
) -> Result<(Vec<Picture>, GpuDecodeStats), GpuDecodeError> {
    let mut out = Vec::new();
    let first = segments
        .first()
        .ok_or_else(|| GpuDecodeError::Unsupported {
            found: "an empty fixture".into(),
        })?;
    let mut decoder = NvdecDecoder::new(nv, ctx, &first.config)?;
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            for p in decoder.set_config(&segment.config)? {
                out.push(download_i420(&p)?);
            }
        }
        for frame in &segment.frames {
            for p in decoder.decode(frame)? {
                out.push(download_i420(&p)?);
            }
        }
    }
    for p in decoder.flush()? {
        out.push(download_i420(&p)?);
    }
    Ok((out, decoder.stats()))
}

/// Compares decoded pictures with a reference: count, then size and md5 per picture
/// (the first mismatch named, with its PSNR when the reference YUV is at hand).
fn compare(fixture: &Fixture, pictures: &[Picture], env: &Env<'_>) -> Outcome {
    let refs = match reference::parse_reference(fixture.reference) {
        Ok(r) => r,
        Err(e) => return Outcome::Fail(format!("reference unreadable: {e}")),
    };
    let ours: Vec<RefPicture> = pictures.iter().map(reference::ref_picture).collect();
    let mismatches: Vec<usize> = (0..refs.len().min(ours.len()))
        .filter(|&i| refs[i] != ours[i])
        .collect();
    if ours.len() == refs.len() && mismatches.is_empty() {
        return Outcome::Pass(format!(
            "{} pictures, md5 of every picture equal to libavcodec's",
            refs.len()
        ));
    }
    let mut text = format!(
        "{} pictures decoded, reference has {}; {} differ",
        ours.len(),
        refs.len(),
        mismatches.len()
    );
    if let Some(&i) = mismatches.first() {
        let (r, o) = (&refs[i], &ours[i]);
        text += &format!(
            "; first: picture {i} (ours pts {} ms {}x{}, reference pts {} ms {}x{})",
            o.pts_ms, o.width, o.height, r.pts_ms, r.width, r.height
        );
        match reference_yuv(env, fixture.name, &refs, i) {
            Some(bytes) => match reference::psnr(&pictures[i], &bytes) {
                Some(db) => text += &format!(", PSNR {db:.2} dB"),
                None => text += ", sizes differ (no PSNR)",
            },
            None => text += ", PSNR: no reference YUV (run from the bundle: docs/GPU-TESTS.md)",
        }
    }
    Outcome::Fail(text)
}

/// Picture `index` of `<yuv_dir>/<name>.yuv` (tight I420 frames, sizes from `refs`).
fn reference_yuv(env: &Env<'_>, name: &str, refs: &[RefPicture], index: usize) -> Option<Vec<u8>> {
    let size = |r: &RefPicture| {
        let (w, h) = (r.width as usize, r.height as usize);
        w * h + 2 * w.div_ceil(2) * h.div_ceil(2)
    };
    let offset: usize = refs[..index].iter().map(size).sum();
    let file = std::fs::read(env.yuv_dir.as_ref()?.join(format!("{name}.yuv"))).ok()?;
    file.get(offset..offset + size(&refs[index]))
        .map(<[u8]>::to_vec)
}

/// `nvdec/<fixture>-bit-exact`, one per fixture: NVDEC's pictures equal libavcodec's.
pub fn check_bit_exact(env: &Env<'_>) -> Vec<Check> {
    reference::FIXTURES
        .iter()
        .map(|f| {
            let name = format!("nvdec/{}-bit-exact", f.name);
            let (nv, ctx) = match nvdec_for(env) {
                Ok(x) => x,
                Err(why) => return Check::new(name, Outcome::Skip(why)),
            };
            let outcome = match reference::read_flv(f.flv) {
                Err(e) => Outcome::Fail(format!("fixture unreadable: {e}")),
                Ok(segments) => match nvdec_decode(&nv, ctx, &segments) {
                    Ok((pictures, stats)) if stats.damaged() > 0 => Outcome::Fail(format!(
                        "NVDEC reported damage on a clean stream: {stats:?}; {}",
                        match compare(f, &pictures, env) {
                            Outcome::Pass(t) | Outcome::Fail(t) | Outcome::Skip(t) => t,
                        }
                    )),
                    Ok((pictures, _)) => compare(f, &pictures, env),
                    Err(e) => Outcome::Fail(e.to_string()),
                },
            };
            Check::new(name, outcome)
        })
        .collect()
}

/// Cuts the second half out of the slice data of every 7th non-IDR access unit
/// (fixing the NAL length), so the pictures that use them are damaged.
pub fn corrupt(segments: &[Segment]) -> (Vec<Segment>, usize) {
    let mut cut = 0;
    let out = segments
        .iter()
        .map(|s| {
            let len = s.config.nal_length_size;
            let frames = s
                .frames
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    if f.keyframe || i % 7 != 3 {
                        return f.clone();
                    }
                    let mut data = Vec::new();
                    for nal in nal_units(&f.data, len).flatten() {
                        let nal = match nal.first().map(|b| b & 0x1f) {
                            Some(1) if nal.len() > 16 => {
                                cut += 1;
                                &nal[..nal.len() / 2]
                            }
                            _ => nal,
                        };
                        let n = nal.len() as u32;
                        data.extend_from_slice(&n.to_be_bytes()[4 - usize::from(len)..]);
                        data.extend_from_slice(nal);
                    }
                    VideoFrame {
                        data: data.into(),
                        ..f.clone()
                    }
                })
                .collect();
            Segment {
                config: s.config.clone(),
                frames,
            }
        })
        .collect();
    (out, cut)
}

/// `nvdec/corrupt-stream-errors-surfaced`: a stream with slices cut short decodes to
/// the end, and NVDEC's errors come back counted.
pub fn check_errors_surfaced(env: &Env<'_>) -> Check {
    let name = "nvdec/corrupt-stream-errors-surfaced";
    let (nv, ctx) = match nvdec_for(env) {
        Ok(x) => x,
        Err(why) => return Check::new(name, Outcome::Skip(why)),
    };
    let Some(f) = reference::fixture("high-bframes") else {
        return Check::new(name, Outcome::Fail("no high-bframes fixture".into()));
    };
    let segments = match reference::read_flv(f.flv) {
        Ok(s) => s,
        Err(e) => return Check::new(name, Outcome::Fail(e.to_string())),
    };
    let (damaged, cut) = corrupt(&segments);
    let outcome = match nvdec_decode(&nv, ctx, &damaged) {
        Err(e) => Outcome::Fail(format!("the stream stopped: {e}")),
        Ok((pictures, stats)) if stats.damaged() == 0 => Outcome::Fail(format!(
            "{cut} slices cut short, {} pictures out, but no error reported: {stats:?}",
            pictures.len()
        )),
        Ok((pictures, stats)) => Outcome::Pass(format!(
            "{cut} slices cut short: {} pictures out, {} with errors, {} concealed, {} lost",
            pictures.len(),
            stats.errors,
            stats.concealed,
            stats.failed
        )),
    };
    Check::new(name, outcome)
}

/// `nvdec/sequence-change`: 320x240 -> 480x270 -> 240x180 decodes bit-exact, with the
/// decoder re-created for the larger size and reconfigured (or re-created, on drivers
/// without `cuvidReconfigureDecoder`) for the smaller.
pub fn check_sequence_change(env: &Env<'_>) -> Check {
    let name = "nvdec/sequence-change";
    let (nv, ctx) = match nvdec_for(env) {
        Ok(x) => x,
        Err(why) => return Check::new(name, Outcome::Skip(why)),
    };
    let Some(f) = reference::fixture("size-change") else {
        return Check::new(name, Outcome::Fail("no size-change fixture".into()));
    };
    let outcome = match reference::read_flv(f.flv) {
        Err(e) => Outcome::Fail(e.to_string()),
        Ok(segments) => match nvdec_decode(&nv, ctx, &segments) {
            Err(e) => Outcome::Fail(e.to_string()),
            Ok((pictures, stats)) => {
                let changes = stats.decoders_created + stats.reconfigured;
                match compare(f, &pictures, env) {
                    Outcome::Pass(_) if changes == 3 => Outcome::Pass(format!(
                        "3 sizes, {} pictures bit-exact; {} decoder(s) created, {} \
                         reconfigure(s)",
                        pictures.len(),
                        stats.decoders_created,
                        stats.reconfigured
                    )),
                    Outcome::Pass(_) => Outcome::Fail(format!(
                        "pictures bit-exact but {changes} decoder set-ups for 3 sequences: \
                         {stats:?}"
                    )),
                    other => other,
                }
            }
        },
    };
    Check::new(name, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::avc::{build_avcc, video_config};

    const SPS: &[u8] = &[
        0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10,
    ];
    const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

    #[test]
    fn avcc_access_units_become_annexb() {
        let au = [0, 0, 0, 2, 0x09, 0xf0, 0, 0, 0, 3, 0x65, 0x88, 0x84];
        let mut out = vec![0xaa];
        avcc_to_annexb(&au, 4, &mut out).unwrap();
        assert_eq!(
            out,
            [0xaa, 0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x65, 0x88, 0x84]
        );
        let mut two = Vec::new();
        avcc_to_annexb(&[0, 1, 0x41, 0, 2, 0x41, 0x42], 2, &mut two).unwrap();
        assert_eq!(two, [0, 0, 0, 1, 0x41, 0, 0, 0, 1, 0x41, 0x42]);
        // A length past the end: the intact NAL units are kept, then the error.
        let mut cut = Vec::new();
        let e = avcc_to_annexb(&[0, 0, 0, 1, 0x41, 0, 0, 0, 9, 0x41], 4, &mut cut);
        assert!(e.is_err());
        assert_eq!(cut, [0, 0, 0, 1, 0x41]);
    }

    #[test]
    fn avcc_record_parameter_sets_become_annexb() {
        let record = build_avcc(&[SPS], &[PPS]);
        let out = parameter_sets_annexb(&record).unwrap();
        let mut want = vec![0, 0, 0, 1];
        want.extend_from_slice(SPS);
        want.extend_from_slice(&[0, 0, 0, 1]);
        want.extend_from_slice(PPS);
        assert_eq!(out, want);
        assert!(parameter_sets_annexb(&bytes::Bytes::from_static(&[1, 2])).is_err());
        // The fixtures' records too (what the self-test feeds NVDEC).
        for f in reference::FIXTURES {
            for s in reference::read_flv(f.flv).unwrap() {
                let ps = parameter_sets_annexb(&s.config.record).unwrap();
                assert_eq!(&ps[..5], &[0, 0, 0, 1, 0x67], "{}", f.name);
            }
        }
    }

    #[test]
    fn unsupported_sources_are_refused_like_the_cpu_decoder() {
        let config = video_config(build_avcc(&[SPS], &[PPS])).unwrap();
        check_config(&config).unwrap();
        let ten = VideoConfig {
            bit_depth_luma: 10,
            bit_depth_chroma: 10,
            ..config.clone()
        };
        let e = check_config(&ten).unwrap_err().to_string();
        assert!(e.contains("10-bit luma / 10-bit chroma"), "{e}");
        assert!(e.contains("accepts 8-bit 4:2:0 H.264"), "{e}");
        let c422 = VideoConfig {
            chroma_format_idc: 2,
            ..config.clone()
        };
        assert!(check_config(&c422)
            .unwrap_err()
            .to_string()
            .contains("4:2:2"));
        let c444 = VideoConfig {
            chroma_format_idc: 3,
            ..config
        };
        assert!(check_config(&c444)
            .unwrap_err()
            .to_string()
            .contains("4:4:4"));
    }

    #[test]
    fn each_codec_gets_its_nvdec_codec_and_parameter_sets() {
        let config = video_config(build_avcc(&[SPS], &[PPS])).unwrap();
        let (codec, ps) = stream_setup(&config).unwrap();
        assert_eq!(codec, DecodeCodec::H264);
        assert_eq!(ps, parameter_sets_annexb(&config.record).unwrap());
        // AV1: the av1C's sequence header OBU, as it is
        let obu = crate::media::av1::RAV1E_SEQUENCE_HEADER_360P;
        let av1c = crate::media::av1::build_av1c(obu).unwrap();
        let av1 = VideoConfig {
            codec: VideoCodec::Av1,
            record: av1c,
            nal_length_size: 0,
            ..config.clone()
        };
        let (codec, ps) = stream_setup(&av1).unwrap();
        assert_eq!(codec, DecodeCodec::Av1);
        assert_eq!(ps, obu);
        check_config(&av1).unwrap();
        // broken records are errors naming the codec, never panics
        for codec in [VideoCodec::Hevc, VideoCodec::Av1] {
            let broken = VideoConfig {
                codec,
                record: bytes::Bytes::from_static(&[1, 2, 3]),
                ..config.clone()
            };
            let e = stream_setup(&broken).unwrap_err().to_string();
            assert!(e.contains(&format!("malformed {codec}")), "{e}");
        }
        let ten = VideoConfig {
            codec: VideoCodec::Hevc,
            bit_depth_luma: 10,
            bit_depth_chroma: 10,
            ..config
        };
        let e = check_config(&ten).unwrap_err().to_string();
        assert!(e.contains("10-bit") && e.contains("HEVC"), "{e}");
    }

    fn format(w: u32, h: u32, chroma: u32, depth: u8) -> VideoFormat {
        VideoFormat {
            codec: 4,
            coded_width: w.div_ceil(16) * 16,
            coded_height: h.div_ceil(16) * 16,
            left: 0,
            top: 0,
            right: w as i32,
            bottom: h as i32,
            chroma_format: chroma,
            bit_depth_luma: depth,
            bit_depth_chroma: depth,
            min_decode_surfaces: 5,
            progressive: true,
        }
    }

    #[test]
    fn in_band_formats_and_sizes_are_checked() {
        check_format(&format(480, 270, 1, 8)).unwrap();
        assert!(check_format(&format(480, 270, 2, 8)).is_err());
        assert!(check_format(&format(480, 270, 1, 10)).is_err());
        let caps = DecoderCaps {
            codec: DecodeCodec::H264,
            supported: true,
            max_width: 4096,
            max_height: 4096,
            max_mb_count: 65536,
            min_width: 48,
            min_height: 16,
            engines: 7,
            output_format_mask: 1,
        };
        check_caps(&format(1920, 1080, 1, 8), &caps).unwrap();
        let e = check_caps(&format(8192, 64, 1, 8), &caps).unwrap_err();
        assert!(e.to_string().contains("48x16 to 4096x4096"), "{e}");
        assert!(check_caps(&format(32, 32, 1, 8), &caps).is_err());
        let none = DecoderCaps {
            supported: false,
            ..caps
        };
        assert!(check_caps(&format(320, 240, 1, 8), &none).is_err());
    }

    #[test]
    fn surface_pool_is_bounded_and_reuses() {
        let pool: SurfacePool<(usize, u32)> = SurfacePool::new(3);
        let mut made = 0u32;
        let mut alloc = |size: usize| {
            made += 1;
            Ok::<_, ()>((size, made))
        };
        let fits = |want: usize| move |b: &(usize, u32)| b.0 == want;
        let a = pool.take(fits(10), || alloc(10)).unwrap();
        let b = pool.take(fits(10), || alloc(10)).unwrap();
        let c = pool.take(fits(10), || alloc(10)).unwrap();
        assert_eq!((pool.outstanding(), pool.idle()), (3, 0));
        assert!(matches!(
            pool.take(fits(10), || alloc(10)),
            Err(PoolError::Exhausted(3))
        ));
        let id = b.1;
        drop(b);
        assert_eq!((pool.outstanding(), pool.idle()), (2, 1));
        let again = pool.take(fits(10), || alloc(10)).unwrap();
        assert_eq!(again.1, id, "reused, not allocated");
        drop((a, c, again));
        assert_eq!((pool.outstanding(), pool.idle()), (0, 3));
        // A size change: idle buffers of the old size make room for the new size.
        let big = pool.take(fits(20), || alloc(20)).unwrap();
        assert_eq!(big.0, 20);
        assert_eq!((pool.outstanding(), pool.idle()), (1, 2));
        assert_eq!(made, 4);
        // A failed allocation gives its slot back.
        let failed = pool.take(fits(30), || Err::<(usize, u32), _>("no memory"));
        assert!(matches!(failed, Err(PoolError::Alloc("no memory"))));
        assert_eq!(pool.outstanding(), 1);
        // A buffer dropped after its pool still goes back to the shared state.
        drop(pool);
        drop(big);
    }

    #[test]
    fn nv12_becomes_i420() {
        // 3x3: chroma 2x2, NV12 rows of 4 bytes (UVUV).
        let luma: Vec<u8> = (0..9).collect();
        let chroma = [10, 20, 11, 21, 12, 22, 13, 23];
        let p = nv12_to_i420(&luma, &chroma, 3, 3);
        assert_eq!(p.planes[0].row(2), &[6, 7, 8]);
        assert_eq!(p.planes[1].row(0), &[10, 11]);
        assert_eq!(p.planes[1].row(1), &[12, 13]);
        assert_eq!(p.planes[2].row(1), &[22, 23]);
    }

    #[test]
    fn corrupted_fixture_has_short_slices() {
        let f = reference::fixture("high-bframes").unwrap();
        let segments = reference::read_flv(f.flv).unwrap();
        let (damaged, cut) = corrupt(&segments);
        assert!(cut >= 5, "{cut}");
        let len = |s: &[Segment]| s[0].frames.iter().map(|f| f.data.len()).sum::<usize>();
        assert!(len(&damaged) < len(&segments));
        // Still well-formed AVCC (only slice data is cut).
        for frame in &damaged[0].frames {
            assert!(nal_units(&frame.data, 4).all(|n| n.is_ok()));
        }
    }
}
